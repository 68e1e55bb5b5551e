"""MIM, Memory In Memory (Wang et al., CVPR 2019).

PredRNN's stack with its upper layers replaced by MIM blocks (`convcast.layers.mim`): the bottom
layer is a spatiotemporal LSTM, every layer above a MIM block whose temporal memory is carried on
by a stationary module (MIM-S) steered by a non-stationary one (MIM-N) that reads how the hidden
state below changed between steps. The first MIM-N reads H^0_t - H^0_{t-1}, each higher one the
output of the MIM-N below (the authors' cascade of differences). Everything else is PredRNN's
(`convcast.models.predrnn`): patch-reshaped frames, the spatiotemporal memory M climbing the stack
and passing from the top layer at t to the bottom layer at t + 1, a 1×1 read-out of the top H fed
back as the next input (autoregressive; `teacher`/`teacher_mask`), `encode` reading every frame but
the newest (which waits in the state as `last`), reverse scheduled sampling by `input_mask
[B, T_in - 1]`, condition frames beside the bottom layer's input (`condition_channels = C`), and
the `context` extra loss (`context_weight` × MSE of the predictions of input frames 2..T_in).

The state holds, besides PredRNN's `last`, `m`, `h{i}`, `c{i}`, each block's MIM-N output `d{i}`
and memory `n{i}` and its MIM-S memory `s{i}` (i >= 1), and `started` (`[B, 1, 1, 1]` bool: a step
has run, so there is an earlier hidden state to difference; the first step runs MIM-N on nothing).

`frame_size=(H, W)` gives the authors' per-position Hadamard peephole weights of MIM-N and MIM-S
(the model then reads frames of that size only); None (the default) one weight per channel, any
frame size. The variant `mim_mmnist` is OpenSTL's Moving MNIST size: 37.95M parameters against
their 38.0M, which count three 1×1 convolutions their MIM-N modules never use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers.mim import MIMBlock
from convcast.layers.st_lstm import SpatioTemporalLSTMCell
from convcast.models.base import (
    State,
    make_activation,
)
from convcast.models.registry import register_model, register_variant
from convcast.models.zigzag import ZigzagForecaster


@register_model("mim", inputs=("condition", "teacher", "teacher_mask", "input_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2})
class MIM(ZigzagForecaster):
    """ST-LSTM + MIM blocks forecaster. Defaults are small; the paper uses 4×128, kernel 5."""


    def __init__(
        self,
        in_channels: int = 1,
        *,
        hidden_channels: int = 64,
        num_layers: int = 4,
        kernel_size: int = 5,
        patch_size: int = 4,
        layer_norm: bool = False,
        output_activation: str = "sigmoid",
        context_weight: float = 0.0,
        condition_channels: int = 0,
        frame_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.check_stack(in_channels=in_channels, hidden_channels=hidden_channels,
                         num_layers=num_layers, kernel_size=kernel_size, patch_size=patch_size,
                         context_weight=context_weight, min_layers=2,
                         why="an ST-LSTM layer, then at least one MIM block; use predrnn for one "
                             "layer")
        name = type(self).model_name
        self.frame_size = self._check_frame_size(name, frame_size, patch_size)
        cc = self.set_condition_channels(condition_channels)
        self.shared_anchor(in_channels, cc)
        self.in_channels, self.patch_size = in_channels, patch_size
        self.hidden_channels, self.num_layers = hidden_channels, num_layers
        self.context_weight = context_weight
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        grid = (None if self.frame_size is None
                else (self.frame_size[0] // patch_size, self.frame_size[1] // patch_size))
        self.cells = nn.ModuleList([
            SpatioTemporalLSTMCell(pc + cc * patch_size**2, hidden_channels, kernel_size,
                                   layer_norm),
            *(MIMBlock(hidden_channels, hidden_channels, kernel_size, peephole_size=grid,
                       layer_norm=layer_norm) for _ in range(num_layers - 1)),
        ])
        self.head = nn.Conv2d(hidden_channels, pc, kernel_size=1)
        self.act = make_activation(output_activation)
    @staticmethod
    def _check_frame_size(name: str, frame_size: int | Sequence[int] | None,
                          patch_size: int) -> tuple[int, int] | None:
        if frame_size is None:
            return None
        size = ((frame_size, frame_size) if isinstance(frame_size, int)
                else tuple(frame_size) if isinstance(frame_size, (list, tuple)) else ())
        if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                  for v in size)):
            raise ValueError(f"{name}: frame_size must be (H, W) of the frames (or one int, or "
                             f"None for per-channel peepholes and any size), got {frame_size!r}")
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"{name}: frame_size {size[0]}×{size[1]} is not divisible by "
                             f"patch_size={patch_size}; choose a patch size that divides both")
        return size  # type: ignore[return-value]

    def state_keys(self) -> list[str]:
        return (["last", "m", "started"]
                + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]
                + [f"{n}{i}" for i in range(1, self.num_layers) for n in "dns"])

    def check_grid(self, xp: torch.Tensor) -> None:
        if self.frame_size is None:
            return
        got = (xp.shape[-2] * self.patch_size, xp.shape[-1] * self.patch_size)
        if got != self.frame_size:
            raise ValueError(
                f"{type(self).__name__} was built for {self.frame_size[0]}×{self.frame_size[1]} "
                f"frames (frame_size: per-position peephole weights) but got {got[0]}×{got[1]}; "
                "resize the frames or build it with frame_size=None (any size)")

    def fresh_state(self, xp: torch.Tensor) -> State:
        st = self.zero_state(xp, self.cells[1], "cmns")  # C, M, N, S: >= float32
        st["started"] = torch.zeros_like(st["h0"][:, :1, :1, :1], dtype=torch.bool)  # [B,1,1,1]
        return st

    def _step(self, inp: torch.Tensor, st: State) -> torch.Tensor:
        """One time step of the stack on `inp` (a patch frame, with its condition frame);
        updates `st` and returns the top layer's H. M climbs the stack, then goes on to layer 0
        at the next step (the zigzag); the MIM-N inputs cascade up from H^0_t - H^0_{t-1}."""
        m, started = st["m"], st["started"]  # [B, hid, hp, wp], [B, 1, 1, 1] bool
        h_prev = st["h0"]
        st["h0"], st["c0"], m = self.cells[0](inp, h_prev, st["c0"], m)
        x, delta = st["h0"], st["h0"] - h_prev  # [B, hid, hp, wp]
        for i in range(1, self.num_layers):
            k = [f"{n}{i}" for n in "hcdns"]
            h, c, m, d, n, s = self.cells[i](x, delta, h=st[k[0]], c=st[k[1]], m=m, d=st[k[2]],
                                             n=st[k[3]], s=st[k[4]], has_diff=started)
            st[k[0]], st[k[1]], st[k[2]], st[k[3]], st[k[4]] = h, c, d, n, s
            x, delta = h, d
        st["m"], st["started"] = m, torch.ones_like(started)
        return x  # [B, hid, hp, wp]


register_variant(
    "mim_mmnist", "mim",
    "OpenSTL's MIM on Moving MNIST 10->10: ST-LSTM + 3 MIM blocks x 128, 5x5, patch 4, "
    "per-position peepholes on 64x64 frames (38.0M)",
    hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4, frame_size=[64, 64])
