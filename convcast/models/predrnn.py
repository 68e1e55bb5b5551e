"""PredRNN (Wang et al., NIPS 2017) and PredRNN-v2 (Wang et al., TPAMI 2022).

A stack of spatiotemporal LSTM cells runs over patch-reshaped frames (`patch_size=4`: 64×64×1 ->
16×16×16). Each layer's temporal memory C flows along time; the spatiotemporal memory M climbs the
stack and goes from the top layer at step t to the bottom layer at step t + 1 (the zigzag). At every
step a 1×1 convolution of the top layer's H predicts the next frame, which is fed back as the next
input once the true inputs run out (autoregressive; `teacher`/`teacher_mask` as in `base.py`).

PredRNN-v2 adds a memory-decoupling loss (the cosine similarity between the increments of C and M,
seen through a shared 1×1 adapter convolution) and is trained with reverse scheduled sampling, which
needs the model to predict its *input* frames too: `input_mask [B, T_in - 1]` (1 = feed the true
input frame t + 1, 0 = feed the model's prediction of it). The schedules live in
`convcast.train.sampling`.

Extra training losses, returned by `extra_losses()` after a training-mode forward and added by
`ForecastSystem` to its loss:
    decouple: `decouple_beta` × mean |cos(adapter(ΔC), adapter(ΔM))| (PredRNN-v2 only);
    context: `context_weight` × MSE of the model's predictions of input frames 2..T_in. The
        original code trains on all T_in + T_out - 1 next-frame predictions; this is that extra
        part (off by default; the configs turn it on).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers import depth_to_space, space_to_depth
from convcast.layers.st_lstm import SpatioTemporalLSTMCell
from convcast.models.base import Forecaster, make_activation
from convcast.models.registry import register_model


def decoupling_loss(delta_c: torch.Tensor, delta_m: torch.Tensor) -> torch.Tensor:
    """Mean |cosine similarity| of two `[N, C, H, W]` tensors, per sample and channel over (H, W).

    This is PredRNN-v2's decoupling term (equation 6 of the TPAMI paper): 0 when the increments of
    the two memories are orthogonal in every channel, 1 when they are parallel.
    """
    if delta_c.shape != delta_m.shape:
        raise ValueError(f"increments differ in shape: {tuple(delta_c.shape)} vs "
                         f"{tuple(delta_m.shape)}")
    cos = F.cosine_similarity(delta_c.flatten(2), delta_m.flatten(2), dim=2)  # [N, C]
    return cos.abs().mean()


@register_model("predrnn")
class PredRNN(Forecaster):
    """Stacked ST-LSTM forecaster (PredRNN). Defaults are small; the paper uses 4×128, kernel 5."""

    autoregressive = True

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: int = 64,
        num_layers: int = 4,
        kernel_size: int = 5,
        patch_size: int = 4,
        layer_norm: bool = False,
        output_activation: str = "sigmoid",
        context_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not isinstance(hidden_channels, int):
            raise ValueError(
                f"hidden_channels must be one int (got {hidden_channels!r}): the spatiotemporal "
                "memory passes through every layer, so all layers have the same width"
            )
        if context_weight < 0:
            raise ValueError(f"context_weight must be >= 0, got {context_weight}")
        self.in_channels, self.patch_size = in_channels, patch_size
        self.hidden_channels, self.num_layers = hidden_channels, num_layers
        self.context_weight = context_weight
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        self.cells = nn.ModuleList(
            SpatioTemporalLSTMCell(pc if i == 0 else hidden_channels, hidden_channels, kernel_size,
                                   layer_norm)
            for i in range(num_layers)
        )
        self.head = nn.Conv2d(hidden_channels, pc, kernel_size=1)
        self.act = make_activation(output_activation)
        self.adapter: nn.Module | None = None  # PredRNN-v2's 1×1 decoupling adapter
        self.decouple_beta = 0.0
        self._extra: dict[str, torch.Tensor] = {}

    def extra_losses(self) -> dict[str, torch.Tensor]:
        """Weighted extra losses of the last training-mode forward (empty in eval mode)."""
        return dict(self._extra) if self.training else {}

    def __getstate__(self) -> dict:  # the stored losses hold a graph: never copy or pickle them
        return {**self.__dict__, "_extra": {}}

    @staticmethod
    def _check_input_mask(x: torch.Tensor, input_mask: torch.Tensor | None) -> torch.Tensor | None:
        if input_mask is None:
            return None
        B, T = x.shape[:2]
        if input_mask.shape != (B, T - 1):
            raise ValueError(f"input_mask must be [B, T_in-1] = [{B}, {T - 1}], got "
                             f"{tuple(input_mask.shape)}")
        return input_mask.to(x.dtype)

    def forward(
        self,
        x: torch.Tensor,
        horizon: int,
        teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_input(x, horizon)
        mask = self.check_teacher(x, horizon, teacher, teacher_mask)
        imask = self._check_input_mask(x, input_mask)
        self._extra = {}
        p, T_in = self.patch_size, x.shape[1]
        xp = space_to_depth(x, p)  # [B, T_in, C*p*p, H/p, W/p]
        tp = space_to_depth(teacher, p) if teacher is not None else None
        B, _, _, hp, wp = xp.shape
        track = self.training and self.adapter is not None and self.decouple_beta > 0
        want_ctx = self.training and self.context_weight > 0 and T_in > 1
        h = [cell.init_state(B, hp, wp, xp) for cell in self.cells]  # per layer [B, hid, hp, wp]
        c = [cell.init_state(B, hp, wp, xp) for cell in self.cells]
        m = self.cells[0].init_state(B, hp, wp, xp)  # the zigzag memory
        preds, ctx, dcs, dms = [], [], [], []
        frame = xp[:, 0]  # [B, C*p*p, hp, wp]
        for t in range(T_in + horizon - 1):
            inp = frame
            for i, cell in enumerate(self.cells):
                out = cell(inp, h[i], c[i], m, return_increments=track)
                h[i], c[i], m = out[:3]  # m goes up the stack, then on to layer 0 at t + 1
                if track:
                    dcs.append(out[3])
                    dms.append(out[4])
                inp = h[i]
            if t < T_in - 1:  # still reading the inputs: the next one is true frame t + 1
                frame = xp[:, t + 1]
                if imask is not None or want_ctx:
                    pred = self.act(self.head(h[-1]))  # the prediction of input frame t + 1
                    if want_ctx:
                        ctx.append(pred)
                    if imask is not None:
                        w = imask[:, t].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
                        frame = w * frame + (1 - w) * pred
            else:
                k = t - (T_in - 1)  # index of the future frame predicted at this step
                pred = self.act(self.head(h[-1]))  # [B, C*p*p, hp, wp]
                preds.append(pred)
                if k < horizon - 1:
                    frame = self.next_input(pred, k, tp, mask)
        if track:
            a = self.adapter(torch.cat(dcs))  # [(T·L)·B, hid, hp, wp]
            b = self.adapter(torch.cat(dms))
            self._extra["decouple"] = self.decouple_beta * decoupling_loss(a, b)
        if want_ctx:
            err = F.mse_loss(torch.stack(ctx, dim=1), xp[:, 1:])  # same mean in either layout
            self._extra["context"] = self.context_weight * err
        return depth_to_space(torch.stack(preds, dim=1), p)  # [B, horizon, C, H, W]


@register_model("predrnn_v2")
class PredRNNv2(PredRNN):
    """PredRNN with the memory-decoupling loss (`decouple_beta`, 0.1 in the paper).

    Train it with `ReverseScheduledSampling` from `convcast.train.sampling` for the paper's recipe.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: int = 64,
        num_layers: int = 4,
        kernel_size: int = 5,
        patch_size: int = 4,
        layer_norm: bool = False,
        output_activation: str = "sigmoid",
        context_weight: float = 0.0,
        decouple_beta: float = 0.1,
    ) -> None:
        super().__init__(in_channels, hidden_channels, num_layers, kernel_size, patch_size,
                         layer_norm, output_activation, context_weight)
        if decouple_beta < 0:
            raise ValueError(f"decouple_beta must be >= 0, got {decouple_beta}")
        self.decouple_beta = decouple_beta
        # shared by all layers and steps, so every layer's increments are compared in one space
        self.adapter = nn.Conv2d(hidden_channels, hidden_channels, 1, bias=False)
