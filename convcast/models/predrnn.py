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

from convcast.layers.st_lstm import SpatioTemporalLSTMCell
from convcast.models.base import State, make_activation
from convcast.models.registry import register_model
from convcast.models.zigzag import ZigzagForecaster


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
class PredRNN(ZigzagForecaster):
    """Stacked ST-LSTM forecaster (PredRNN). Defaults are small; the paper uses 4×128, kernel 5."""

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
        self.check_stack(in_channels=in_channels, hidden_channels=hidden_channels,
                         num_layers=num_layers, kernel_size=kernel_size, patch_size=patch_size,
                         context_weight=context_weight)
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
        self._trace: dict | None = None  # the memory increments a training forward collects

    def __getstate__(self) -> dict:  # the stored losses hold a graph: never copy or pickle them
        return {**super().__getstate__(), "_trace": None}

    def state_keys(self) -> list[str]:
        return ["last", "m"] + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]

    def fresh_state(self, xp: torch.Tensor) -> State:
        return self.zero_state(xp, self.cells[0], "cm")  # C and M: >= float32

    def _step(self, inp: torch.Tensor, st: State) -> torch.Tensor:
        """One time step of the stack on `inp` (a patch frame, with its condition frame);
        updates `st` and returns the top layer's H. M climbs the stack, then goes on to layer 0
        at the next step (the zigzag)."""
        trace = self._trace
        track = trace is not None
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

    def _begin_extras(self) -> None:
        track = self.training and self.adapter is not None and self.decouple_beta > 0
        self._trace = {"dc": [], "dm": []} if track else None

    def _finish_extras(self) -> None:
        trace = self._trace
        if trace is not None and trace["dc"]:
            a = self.adapter(torch.cat(trace["dc"]))  # [(T·L)·B, hid, hp, wp]
            b = self.adapter(torch.cat(trace["dm"]))
            self._extra["decouple"] = self.decouple_beta * decoupling_loss(a, b)

    def _end_extras(self) -> None:
        self._trace = None


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
