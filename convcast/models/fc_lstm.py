"""The fully connected LSTM encoder–predictor of Srivastava et al. (ICML 2015).

The baseline the ConvLSTM paper beats (Shi et al. 2015, table 1, "FC-LSTM-2048-2048"): frames are
flattened to vectors, an encoder LSTM stack reads the inputs, and a predictor stack of the same
widths starts from the encoder's final states (copied layer by layer) and unrolls for `horizon`
steps; a linear read-out of the top predictor layer gives each frame, then the output activation.

The predictor is *unconditioned* by default (it reads no input, as in Shi et al.'s comparison);
`conditional=True` feeds it the previous frame (the last input frame first), which makes the model
autoregressive and open to teacher forcing. `peephole=True` adds the peephole weights of Graves
(2013); with it, widths (2048, 2048) on 64×64 frames give Shi et al.'s 142,667,776 weights.

The layers touching a frame vector need the frame size: give `frame_size=(H, W)`, or leave it None
and the model sizes those layers on its first forward call (before that, `parameters()` holds
uninitialised placeholders: run one batch before counting weights or wrapping in DDP). Either way a
later input of another size is refused with a clear error.

With `condition_channels > 0` the first predictor layer also reads the flattened condition frame
of the lead time it produces (beside the previous frame when `conditional=True`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parameter import UninitializedParameter

from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_size,
    check_sizes,
    make_activation,
)
from convcast.models.registry import register_model

LayerState = tuple[torch.Tensor, torch.Tensor]


class _MaybeLazy(nn.Module):
    """Loads a state dict into still-uninitialised parameters by sizing them from it first."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, param in self._parameters.items():
            key = prefix + name
            if isinstance(param, UninitializedParameter) and key in state_dict:
                with torch.no_grad():
                    param.materialize(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FCLSTMLayer(_MaybeLazy):
    """One fully connected LSTM layer (`in_features=0`: no input; None: sized on first input)."""

    def __init__(self, in_features: int | None, hidden: int, peephole: bool = False) -> None:
        super().__init__()
        self.hidden, self.peephole = hidden, peephole
        self.has_input = in_features != 0
        self.w_x = None
        if in_features is None:
            self.w_x = UninitializedParameter()
        elif in_features > 0:
            self.w_x = nn.Parameter(torch.empty(4 * hidden, in_features))
        self.w_h = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(4 * hidden))  # blocks i, f, o, g
        if peephole:
            self.w_c = nn.Parameter(torch.zeros(3, hidden))  # i, f, o peepholes, per unit
        bound = 1 / math.sqrt(hidden)  # as torch.nn.LSTM
        with torch.no_grad():
            self.w_h.uniform_(-bound, bound)
            if self.w_x is not None and not isinstance(self.w_x, UninitializedParameter):
                self.w_x.uniform_(-bound, bound)
            self.bias[hidden:2 * hidden] = 1.0  # forget gate starts open, like ConvLSTMCell

    def materialize(self, in_features: int, device: torch.device | None = None) -> None:
        """Size a lazy input weight for `in_features` (no-op once sized)."""
        if isinstance(self.w_x, UninitializedParameter):
            with torch.no_grad():
                self.w_x.materialize((4 * self.hidden, in_features), device=device)
                self.w_x.uniform_(-1 / math.sqrt(self.hidden), 1 / math.sqrt(self.hidden))

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """W_x x for any batch of vectors `[..., in_features]` -> `[..., 4*hidden]`."""
        return F.linear(x, self.w_x)

    def step(self, xg: torch.Tensor | None, state: LayerState) -> LayerState:
        h, c = state  # each [B, hidden]
        gates = F.linear(h, self.w_h, self.bias)  # [B, 4*hidden]
        if xg is not None:
            gates = gates + xg
        i, f, o, g = gates.chunk(4, dim=1)
        if self.peephole:
            i, f = i + self.w_c[0] * c, f + self.w_c[1] * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole:
            o = o + self.w_c[2] * c
        return torch.sigmoid(o) * torch.tanh(c), c


@register_model("fc_lstm", inputs=("condition", "teacher", "teacher_mask"),
                tiny={"hidden_sizes": [8]})
class FCLSTM(RecurrentForecaster, _MaybeLazy):
    """FC-LSTM encoder–predictor: `hidden_sizes` per layer, frames of `frame_size=(H, W)`."""

    def __init__(
        self,
        in_channels: int = 1,
        hidden_sizes: int | Sequence[int] = (256, 256),
        frame_size: Sequence[int] | None = None,
        conditional: bool = False,
        peephole: bool = False,
        output_activation: str = "sigmoid",
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        check_size("fc_lstm", "in_channels", in_channels)
        check_sizes("fc_lstm", "hidden_sizes", hidden_sizes)
        sizes = [hidden_sizes] if isinstance(hidden_sizes, int) else [int(s) for s in hidden_sizes]
        if frame_size is not None and (len(frame_size) != 2 or min(frame_size) < 1):
            raise ValueError(f"frame_size must be (H, W) or None, got {frame_size!r}")
        cc = self.set_condition_channels(condition_channels)
        self.in_channels, self.hidden_sizes, self.conditional = in_channels, sizes, conditional
        n = in_channels * frame_size[0] * frame_size[1] if frame_size is not None else None
        # what the first predictor layer reads: the previous frame and / or the condition frame
        first = None if n is None and (conditional or cc) else (
            (n if conditional else 0) + (n // in_channels * cc if cc else 0))
        # (H, W) of the frames the model is sized for; (0, 0) until a lazy model sees a frame
        self.register_buffer("frame_hw", torch.tensor(list(frame_size or (0, 0)), dtype=torch.long))
        self._hw: tuple[int, int] | None = None  # frame_hw as ints, read once (export reads none)
        self.encoder = nn.ModuleList(
            FCLSTMLayer(n if i == 0 else sizes[i - 1], s, peephole) for i, s in enumerate(sizes))
        self.predictor = nn.ModuleList(
            FCLSTMLayer(first if i == 0 else sizes[i - 1], s, peephole)
            for i, s in enumerate(sizes))
        self.readout_w = UninitializedParameter() if n is None else nn.Parameter(
            torch.empty(n, sizes[-1]))
        self.readout_b = UninitializedParameter() if n is None else nn.Parameter(torch.zeros(n))
        if n is not None:
            self._init_readout()
        self.act = make_activation(output_activation)

    @property
    def autoregressive(self) -> bool:  # type: ignore[override]
        return self.conditional

    def _init_readout(self) -> None:
        bound = 1 / math.sqrt(self.hidden_sizes[-1])  # as torch.nn.Linear
        with torch.no_grad():
            self.readout_w.uniform_(-bound, bound)
            self.readout_b.uniform_(-bound, bound)

    def frame_size(self) -> tuple[int, int]:
        """(H, W) the model is sized for ((0, 0) while lazy), as Python ints."""
        if self._hw is None:
            self._hw = (int(self.frame_hw[0]), int(self.frame_hw[1]))
        return self._hw

    def state_frames(self, state: State) -> tuple[int, int, int]:
        return (state["last"].shape[0], *self.frame_size())

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._hw = None  # frame_hw may have changed: read it again

    def _fit_frame(self, x: torch.Tensor) -> None:
        """Size a lazy model for `x`'s frames, or refuse frames of another size."""
        _, _, C, H, W = x.shape
        if isinstance(self.readout_w, UninitializedParameter):
            n = C * H * W
            self.encoder[0].materialize(n, x.device)
            if self.predictor[0].has_input:
                first = (n if self.conditional else 0) + H * W * self.condition_channels
                self.predictor[0].materialize(first, x.device)
            with torch.no_grad():
                self.readout_w.materialize((n, self.hidden_sizes[-1]), device=x.device)
                self.readout_b.materialize((n,), device=x.device)
            self._init_readout()
            self.frame_hw.copy_(torch.tensor([H, W]))
            self._hw = None
        fh, fw = self.frame_size()
        if (fh, fw) != (H, W):
            raise ValueError(
                f"fc_lstm was built for {fh}×{fw} frames (frame_size) but got {H}×{W}: its layers "
                f"map whole frame vectors, so resize the frames or build it with "
                f"frame_size=({H}, {W})"
            )

    def state_keys(self) -> list[str]:
        return ["last"] + [f"{n}{i}" for i in range(len(self.encoder)) for n in "hc"]

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        """Advance the encoder stack by frames `x [B, k, C, H, W]` from `state` (None: zeros)."""
        self.check_frames(x)
        x = self.cast(x)
        self._fit_frame(x)
        if state is not None:
            self.check_state(state)
        B, T = x.shape[:2]
        seq = x.reshape(B, T, -1)  # [B, T, N]
        out = {}
        for i, layer in enumerate(self.encoder):
            xg = layer.input_gates(seq)  # [B, T, 4*hid], one batched matmul for all steps
            s = ((state[f"h{i}"], state[f"c{i}"]) if state is not None
                 else (seq.new_zeros(B, layer.hidden), seq.new_zeros(B, layer.hidden)))
            hs = []
            for t in range(T):
                s = layer.step(xg[:, t], s)
                hs.append(s[0])
            seq = torch.stack(hs, dim=1)  # [B, T, hid]
            out[f"h{i}"], out[f"c{i}"] = s  # copied into the predictor layer of the same depth
        out["last"] = x[:, -1].reshape(B, -1)  # [B, N], the conditional predictor's first input
        return out

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unroll the predictor for `horizon` steps from (a copy of) the encoder's `state`."""
        cond, teacher, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        frame = state["last"]  # [B, N]
        B, C, (H, W) = frame.shape[0], self.in_channels, self.frame_size()
        cv = cond.reshape(B, horizon, -1) if cond is not None else None  # [B, horizon, Cc*H*W]
        tv = teacher.reshape(B, teacher.shape[1], -1) if teacher is not None else None
        states = [(state[f"h{i}"], state[f"c{i}"]) for i in range(len(self.predictor))]
        preds = []
        for k in range(horizon):
            inp = frame if self.conditional else None
            if cv is not None:
                inp = cv[:, k] if inp is None else torch.cat([inp, cv[:, k]], dim=1)
            for i, layer in enumerate(self.predictor):
                states[i] = layer.step(layer.input_gates(inp) if inp is not None else None,
                                       states[i])
                inp = states[i][0]
            frame = self.act(F.linear(inp, self.readout_w, self.readout_b))  # [B, N]
            preds.append(frame)
            if self.conditional and k < horizon - 1:
                frame = self.next_input(frame, k, tv, mask)
        return torch.stack(preds, dim=1).view(B, horizon, C, H, W)  # [B, horizon, C, H, W]
