"""PredRNN (Wang et al., NIPS 2017) and PredRNN-v2 (Wang et al., TPAMI 2022).

A stack of spatiotemporal LSTM cells runs over patch-reshaped frames (`patch_size=4`: 64×64×1 ->
16×16×16). Each layer's temporal memory C flows along time; the spatiotemporal memory M climbs the
stack and goes from the top layer at step t to the bottom layer at step t + 1 (the zigzag). At every
step a 1×1 convolution of the top layer's H predicts the next frame, which is fed back as the next
input once the true inputs run out (autoregressive; `teacher`/`teacher_mask` as in `base.py`).
The step that reads the last input frame produces the first forecast, so `encode` reads all frames
but the newest, which waits in the state (`last`) for `decode`. With `condition_channels = C` the
bottom layer reads each frame beside a condition frame: the condition frame of lead time k at the
step producing future frame k, and while reading an input frame that frame itself (the observation
is its own condition).

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
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    make_activation,
)
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


@register_model("predrnn", inputs=("condition", "teacher", "teacher_mask", "input_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2})
class PredRNN(RecurrentForecaster):
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
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).model_name
        check_size(name, "in_channels", in_channels)
        check_size(name, "num_layers", num_layers)
        if not isinstance(hidden_channels, int):
            raise ValueError(
                f"hidden_channels must be one int (got {hidden_channels!r}): the spatiotemporal "
                "memory passes through every layer, so all layers have the same width"
            )
        check_size(name, "hidden_channels", hidden_channels)
        check_kernel(name, kernel_size)
        check_size(name, "patch_size", patch_size)
        if context_weight < 0:
            raise ValueError(f"context_weight must be >= 0, got {context_weight}")
        cc = self.set_condition_channels(condition_channels)
        self.shared_anchor(in_channels, cc)
        self.in_channels, self.patch_size = in_channels, patch_size
        self.hidden_channels, self.num_layers = hidden_channels, num_layers
        self.context_weight = context_weight
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        self.cells = nn.ModuleList(
            SpatioTemporalLSTMCell(pc + cc * patch_size**2 if i == 0 else hidden_channels,
                                   hidden_channels, kernel_size, layer_norm)
            for i in range(num_layers)
        )
        self.head = nn.Conv2d(hidden_channels, pc, kernel_size=1)
        self.act = make_activation(output_activation)
        self.adapter: nn.Module | None = None  # PredRNN-v2's 1×1 decoupling adapter
        self.decouple_beta = 0.0
        self._extra: dict[str, torch.Tensor] = {}
        self._trace: dict | None = None  # what a training forward collects for its extra losses

    def extra_losses(self) -> dict[str, torch.Tensor]:
        """Weighted extra losses of the last training-mode forward (empty in eval mode)."""
        return dict(self._extra) if self.training else {}

    def __getstate__(self) -> dict:  # the stored losses hold a graph: never copy or pickle them
        return {**self.__dict__, "_extra": {}, "_trace": None}

    def state_keys(self) -> list[str]:
        return ["last", "m"] + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]

    @staticmethod
    def _check_input_mask(x: torch.Tensor, input_mask: torch.Tensor | None) -> torch.Tensor | None:
        if input_mask is None:
            return None
        B, T = x.shape[:2]
        if input_mask.shape != (B, T - 1):
            raise ValueError(f"input_mask must be [B, T_in-1] = [{B}, {T - 1}], got "
                             f"{tuple(input_mask.shape)}")
        return input_mask.to(x.dtype)

    def _step(self, inp: torch.Tensor, st: State) -> torch.Tensor:
        """One time step of the stack on `inp` (a patch frame, with its condition frame);
        updates `st` and returns the top layer's H. M climbs the stack, then goes on to layer 0
        at the next step (the zigzag)."""
        trace = self._trace
        track = trace is not None and trace["track"]
        m = st["m"]  # [B, hid, hp, wp]
        for i, cell in enumerate(self.cells):
            out = cell(inp, st[f"h{i}"], st[f"c{i}"], m, return_increments=track)
            st[f"h{i}"], st[f"c{i}"], m = out[:3]
            if track:
                trace["dc"].append(out[3])
                trace["dm"].append(out[4])
            inp = out[0]
        st["m"] = m
        return inp  # [B, hid, hp, wp]

    def encode(
        self, x: torch.Tensor, state: State | None = None, input_mask: torch.Tensor | None = None,
    ) -> State:
        """Read every frame of `x [B, k, C, H, W]` but the newest, which waits in `last` (the step
        that reads it produces the first forecast). `input_mask [B, k-1]` (reverse scheduled
        sampling, only from a fresh state): 0 replaces input frame t + 1 by its prediction."""
        self.check_frames(x)
        x = self.cast(x)
        imask = self._check_input_mask(x, input_mask)
        xp = space_to_depth(x, self.patch_size)  # [B, k, C*p*p, H/p, W/p]
        if state is None:
            B, _, _, hp, wp = xp.shape
            h = self.cells[0].init_state(B, hp, wp, xp)  # zeros [B, hid, hp, wp]
            mem = self.cells[0].init_state(B, hp, wp, xp, memory=True)  # C and M: >= float32
            st = {k: mem if k[0] in "cm" else h for k in self.state_keys()[1:]}
            frames = list(xp.unbind(1))
        else:
            if imask is not None:
                raise ValueError("input_mask applies to a fresh sequence only; encode without a "
                                 "state or drop input_mask")
            self.check_state(state)
            st = {k: v for k, v in state.items() if k != "last"}  # a copy: state stays
            frames = [state["last"], *xp.unbind(1)]
        ctx = self._trace["ctx"] if self._trace is not None and self._trace["want_ctx"] else None
        frame = frames[0]  # [B, C*p*p, hp, wp]
        for t in range(len(frames) - 1):
            top = self._step(torch.cat([frame, frame], 1) if self.condition_channels else frame, st)
            frame = frames[t + 1]  # the next input: true frame t + 1 ...
            if imask is not None or ctx is not None:
                pred = self.act(self.head(top))  # the prediction of input frame t + 1
                if ctx is not None:
                    ctx.append(pred)
                if imask is not None:  # ... or, where the mask is 0, its prediction
                    w = imask[:, t].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
                    frame = w * frame + (1 - w) * pred
        st["last"] = frame
        return st

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Roll out `horizon` frames from (a copy of) `state`, feeding each prediction back."""
        cp, tp, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        st = dict(state)  # a copy: state stays
        frame = st.pop("last")  # [B, C*p*p, hp, wp]
        preds = []
        for k in range(horizon):  # step k reads frame k - 1 (the last input for k = 0)
            inp = frame if cp is None else torch.cat([frame, cp[:, k]], dim=1)
            pred = self.act(self.head(self._step(inp, st)))  # [B, C*p*p, hp, wp]
            preds.append(pred)
            if k < horizon - 1:
                frame = self.next_input(pred, k, tp, mask)
        return depth_to_space(torch.stack(preds, dim=1), self.patch_size)  # [B,K,C,H,W]

    def forward(
        self,
        x: torch.Tensor,
        horizon: int,
        teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_horizon(horizon)
        self._extra = {}
        track = self.training and self.adapter is not None and self.decouple_beta > 0
        want_ctx = self.training and self.context_weight > 0
        self._trace = ({"track": track, "want_ctx": want_ctx, "dc": [], "dm": [], "ctx": []}
                       if track or want_ctx else None)
        try:
            state = self.encode(x, input_mask=input_mask)
            y = self.decode(state, horizon, condition, teacher, teacher_mask)
            trace = self._trace
            if trace is not None and trace["dc"]:
                a = self.adapter(torch.cat(trace["dc"]))  # [(T·L)·B, hid, hp, wp]
                b = self.adapter(torch.cat(trace["dm"]))
                self._extra["decouple"] = self.decouple_beta * decoupling_loss(a, b)
            if trace is not None and trace["ctx"]:
                xp = space_to_depth(self.cast(x), self.patch_size)  # [B, T_in, C*p*p, hp, wp]
                err = F.mse_loss(torch.stack(trace["ctx"], dim=1), xp[:, 1:])  # either layout
                self._extra["context"] = self.context_weight * err
        finally:
            self._trace = None
        return y.to(x.dtype)  # [B, horizon, C, H, W]


@register_model("predrnn_v2", inputs=("condition", "teacher", "teacher_mask", "input_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2})
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
        condition_channels: int = 0,
    ) -> None:
        super().__init__(in_channels=in_channels, hidden_channels=hidden_channels,
                         num_layers=num_layers, kernel_size=kernel_size, patch_size=patch_size,
                         layer_norm=layer_norm, output_activation=output_activation,
                         context_weight=context_weight, condition_channels=condition_channels)
        if decouple_beta < 0:
            raise ValueError(f"decouple_beta must be >= 0, got {decouple_beta}")
        self.decouple_beta = decouple_beta
        # shared by all layers and steps, so every layer's increments are compared in one space
        self.adapter = nn.Conv2d(hidden_channels, hidden_channels, 1, bias=False)
