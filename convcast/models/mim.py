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
import torch.nn.functional as F

from convcast.layers import depth_to_space, space_to_depth
from convcast.layers.mim import MIMBlock
from convcast.layers.st_lstm import SpatioTemporalLSTMCell
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    make_activation,
)
from convcast.models.registry import register_model, register_variant


@register_model("mim", inputs=("condition", "teacher", "teacher_mask", "input_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2})
class MIM(RecurrentForecaster):
    """ST-LSTM + MIM blocks forecaster. Defaults are small; the paper uses 4×128, kernel 5."""

    autoregressive = True

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
        name = type(self).model_name
        check_size(name, "in_channels", in_channels)
        check_size(name, "num_layers", num_layers)
        if num_layers < 2:
            raise ValueError(f"{name}: num_layers must be >= 2 (an ST-LSTM layer, then at least "
                             f"one MIM block), got {num_layers}; use predrnn for one layer")
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
        self._extra: dict[str, torch.Tensor] = {}
        self._ctx: list[torch.Tensor] | None = None  # input-frame predictions for `context`

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

    def extra_losses(self) -> dict[str, torch.Tensor]:
        """Weighted extra losses of the last training-mode forward (empty in eval mode)."""
        return dict(self._extra) if self.training else {}

    def __getstate__(self) -> dict:  # the stored losses hold a graph: never copy or pickle them
        return {**self.__dict__, "_extra": {}, "_ctx": None}

    def state_keys(self) -> list[str]:
        return (["last", "m", "started"]
                + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]
                + [f"{n}{i}" for i in range(1, self.num_layers) for n in "dns"])

    def _check_frames_size(self, xp: torch.Tensor) -> None:
        if self.frame_size is None:
            return
        got = (xp.shape[-2] * self.patch_size, xp.shape[-1] * self.patch_size)
        if got != self.frame_size:
            raise ValueError(
                f"{type(self).__name__} was built for {self.frame_size[0]}×{self.frame_size[1]} "
                f"frames (frame_size: per-position peephole weights) but got {got[0]}×{got[1]}; "
                "resize the frames or build it with frame_size=None (any size)")

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
        self._check_frames_size(xp)
        if state is None:
            B, _, _, hp, wp = xp.shape
            cell = self.cells[1]
            h = cell.init_state(B, hp, wp, xp)  # zeros [B, hid, hp, wp]
            mem = cell.init_state(B, hp, wp, xp, memory=True)  # C, M, N, S: >= float32
            st = {k: mem if k[0] in "cmns" else h for k in self.state_keys()[3:]}
            st["m"] = mem
            st["started"] = torch.zeros_like(h[:, :1, :1, :1], dtype=torch.bool)  # [B, 1, 1, 1]
            frames = list(xp.unbind(1))
        else:
            if imask is not None:
                raise ValueError("input_mask applies to a fresh sequence only; encode without a "
                                 "state or drop input_mask")
            self.check_state(state)
            st = {k: v for k, v in state.items() if k != "last"}  # a copy: state stays
            frames = [state["last"], *xp.unbind(1)]
        ctx = self._ctx
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
        self._ctx = [] if self.training and self.context_weight > 0 else None
        try:
            state = self.encode(x, input_mask=input_mask)
            y = self.decode(state, horizon, condition, teacher, teacher_mask)
            if self._ctx:
                xp = space_to_depth(self.cast(x), self.patch_size)  # [B, T_in, C*p*p, hp, wp]
                err = F.mse_loss(torch.stack(self._ctx, dim=1), xp[:, 1:])
                self._extra["context"] = self.context_weight * err
        finally:
            self._ctx = None
        return y.to(x.dtype)  # [B, horizon, C, H, W]


register_variant(
    "mim_mmnist", "mim",
    "OpenSTL's MIM on Moving MNIST 10->10: ST-LSTM + 3 MIM blocks x 128, 5x5, patch 4, "
    "per-position peepholes on 64x64 frames (38.0M)",
    hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4, frame_size=[64, 64])
