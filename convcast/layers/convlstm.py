"""ConvLSTM cell and stack (Shi et al., NIPS 2015).

The cell follows equation (3) of the paper, with `*` a 2-D convolution and `∘` the Hadamard product:

    i_t = σ(W_xi * X_t + W_hi * H_{t-1} + W_ci ∘ C_{t-1} + b_i)
    f_t = σ(W_xf * X_t + W_hf * H_{t-1} + W_cf ∘ C_{t-1} + b_f)
    C_t = f_t ∘ C_{t-1} + i_t ∘ tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)
    o_t = σ(W_xo * X_t + W_ho * H_{t-1} + W_co ∘ C_t + b_o)
    H_t = o_t ∘ tanh(C_t)

The peephole weights W_c· are per channel (shape [hidden, 1, 1]), so one cell serves any frame size.
The input weights W_x· (`conv_x`) and the recurrent ones W_h· (`conv_h`) are stored apart, so an
input-less cell (the paper's forecaster) simply has no `conv_x`; a step runs them as ONE convolution
over cat([X_t, H_{t-1}]) with the two weights side by side (`benchmarks/run.py --cases layout`
times it against applying W_x to the whole sequence first; benchmarks/RESULTS.md).

After the convolution the step is pointwise (`convcast.layers.fused`: eager, or compiled with
`set_compiled_gates`). Under autocast the gates are computed in bf16/fp16 while the cell state C
stays float32. `set_checkpointing` makes every step recompute its intermediates in the backward
pass instead of keeping them (`convcast.layers.checkpoint`): long rollouts train in a fraction of
the memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers.checkpoint import maybe_checkpoint
from convcast.layers.fused import compiled_pointwise, lstm_pointwise

State = tuple[torch.Tensor, torch.Tensor]
GATES = ("i", "f", "o", "g")  # order of the four blocks in the gate convolutions' output channels


_KEPT = threading.local()  # how deep this thread is inside `keep_weights()`


@contextlib.contextmanager
def keep_weights() -> Iterator[None]:
    """Inside this scope, without autograd, each cell keeps its joined W_x|W_h between calls
    (one frame at a time, as a stream runs, would otherwise join them on every frame). The kept
    copy follows in-place updates, loads, moves and casts, but not writes through `.data`
    (as weight-averaging callbacks swap weights), which leave no trace to see: so it is used
    only while a caller asks for it (`convcast.train.Stream` does) and dropped by the next call
    outside the scope. Change no weight through `.data` while a stream runs on the model."""
    _KEPT.depth = getattr(_KEPT, "depth", 0) + 1
    try:
        yield
    finally:
        _KEPT.depth -= 1


def _keeping() -> bool:
    return getattr(_KEPT, "depth", 0) > 0


def _tracing() -> bool:
    """Inside torch.jit tracing, ONNX export or torch.compile: weights must stay in the graph."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def _pair(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(k) != 2 or any(int(v) != v or v < 1 for v in k):
        raise ValueError(f"kernel_size must be a positive int or a pair, got {kernel_size!r}")
    if any(v % 2 == 0 for v in k):
        raise ValueError(
            f"kernel_size {kernel_size!r} has an even side: an even kernel cannot keep the frame's "
            "'same' size with symmetric padding. Use an odd size such as 3 or 5."
        )
    return int(k[0]), int(k[1])


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: `forward(x [B,C_in,H,W], state=(h, c) or None) -> (h, c)`.

    `in_channels=0` makes an input-less cell (the forecaster of Shi et al. reads no frames);
    call it with `x=None`. `layer_norm=True` normalises each gate's pre-activation over
    (channels, H, W) per sample (GroupNorm with one group per gate), which works at any frame size.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int] = 3,
        bias: bool = True,
        peephole: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 0 or hidden_channels < 1:
            raise ValueError(
                f"need in_channels >= 0 and hidden_channels >= 1, got {in_channels}, "
                f"{hidden_channels}"
            )
        k = _pair(kernel_size)
        pad = (k[0] // 2, k[1] // 2)
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hidden_channels, k
        self.peephole, self.layer_norm = peephole, layer_norm
        gates = 4 * hidden_channels
        self.conv_x = (nn.Conv2d(in_channels, gates, k, padding=pad, bias=bias) if in_channels
                       else None)
        # the recurrent conv has a bias only in an input-less cell (else the input conv has it)
        self.conv_h = nn.Conv2d(hidden_channels, gates, k, padding=pad,
                                bias=bias and not in_channels)
        if peephole:
            self.w_ci = nn.Parameter(torch.zeros(hidden_channels, 1, 1))
            self.w_cf = nn.Parameter(torch.zeros(hidden_channels, 1, 1))
            self.w_co = nn.Parameter(torch.zeros(hidden_channels, 1, 1))
        # one GroupNorm group per gate: each gate's pre-activation is normalised on its own
        self.norm = nn.GroupNorm(4, gates) if layer_norm else None
        self._init_forget_bias(1.0)
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)
        self.compiled_gates = False  # torch.compile the gate arithmetic (set_compiled_gates)

    def _init_forget_bias(self, value: float) -> None:
        # gate biases start at 0, the forget gate's at `value`; exactly one bias carries it: the
        # norm's if any, else the input conv's, else (input-less cell) the recurrent conv's
        carrier = (self.norm.bias if self.norm is not None
                   else self.conv_x.bias if self.conv_x is not None else self.conv_h.bias)
        with torch.no_grad():
            for b in (self.conv_x.bias if self.conv_x is not None else None, self.conv_h.bias,
                      self.norm.bias if self.norm is not None else None):
                if b is not None:
                    b.zero_()
            if carrier is not None:
                f = GATES.index("f")
                carrier[f * self.hidden_channels:(f + 1) * self.hidden_channels] = value

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor) -> State:
        """Zero (h, c) for a batch of frames of the given size, on `like`'s device; h in `like`'s
        dtype, c in at least float32 (the cell state accumulates over every step, see
        `convcast.layers.fused`)."""
        shape = (batch, self.hidden_channels, height, width)
        return (like.new_zeros(shape),
                like.new_zeros(shape, dtype=torch.promote_types(like.dtype, torch.float32)))

    def conv_weight(self) -> torch.Tensor | None:
        """W_x and W_h side by side, [4*hid, C_in + hid, kh, kw]: one conv over cat([x, h])
        (None for an input-less cell). A stack builds it once per sequence, not per step.

        Inside `keep_weights()` without autograd (a stream, one frame at a time) the result is
        kept and rebuilt only when a weight changes (in-place update, load, move or cast);
        elsewhere it is built on each call, so gradients reach W_x and W_h and no write to the
        weights can be missed."""
        if self.conv_x is None:
            return None
        wx, wh = self.conv_x.weight, self.conv_h.weight
        if torch.is_grad_enabled() or _tracing() or not _keeping():
            self.__dict__.pop("_weight_cache", None)
            return torch.cat([wx, wh], dim=1)  # [4*hid, C_in + hid, kh, kw]
        key = (wx._version, wh._version, wx.data_ptr(), wh.data_ptr(), wx.dtype, wx.device)
        cached = self.__dict__.get("_weight_cache")
        if cached is None or cached[0] != key:
            cached = (key, torch.cat([wx, wh], dim=1))  # [4*hid, C_in + hid, kh, kw]
            self.__dict__["_weight_cache"] = cached
        return cached[1]

    def step(self, x: torch.Tensor | None, state: State,
             weight: torch.Tensor | None = None) -> State:
        """Advance one step; `weight` is `conv_weight()` when the caller already has it. With
        `checkpointing` set the step keeps only its inputs for the backward pass and recomputes
        the rest (`convcast.layers.set_checkpointing`)."""
        return maybe_checkpoint(self, self._step, x, state[0], state[1], weight)

    def _step(self, x: torch.Tensor | None, h: torch.Tensor, c: torch.Tensor,
              weight: torch.Tensor | None) -> State:
        if x is None:
            gates = self.conv_h(h)  # [B, 4*hid, H, W]
        else:
            w = self.conv_weight() if weight is None else weight
            xh = torch.cat([x, h], dim=1)  # [B, C_in + hid, H, W]
            gates = F.conv2d(xh, w, self.conv_x.bias, padding=self.conv_h.padding)  # [B,4*hid,H,W]
        if self.norm is not None:
            gates = self.norm(gates)
        peep = (self.w_ci, self.w_cf, self.w_co) if self.peephole else (None, None, None)
        pointwise = compiled_pointwise if self.compiled_gates else lstm_pointwise
        return pointwise(gates, c, *peep)  # (h, c), each [B, hid, H, W]

    def check_input(self, x: torch.Tensor | None, state: State | None) -> None:
        """Clear errors for an input that does not fit this cell or its state."""
        if x is None:
            if state is None:
                raise ValueError("an input-less step needs a state to know the batch and frame "
                                 "size")
            return
        if self.conv_x is None:
            raise ValueError("this cell has in_channels=0 and reads no input; call it with x=None")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if state is not None and (x.shape[0], *x.shape[-2:]) != (state[0].shape[0],
                                                                  *state[0].shape[-2:]):
            raise ValueError(f"input {tuple(x.shape)} and state {tuple(state[0].shape)} differ in "
                             "batch or frame size")

    def forward(self, x: torch.Tensor | None, state: State | None = None) -> State:
        self.check_input(x, state)
        if state is None:
            b, _, hh, ww = x.shape
            state = self.init_state(b, hh, ww, x)
        return self.step(x, state)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"peephole={self.peephole}, layer_norm={self.layer_norm}")


def _per_layer(value, num_layers: int, name: str, per_layer_types: tuple) -> list:
    values = list(value) if isinstance(value, per_layer_types) else [value] * num_layers
    if len(values) != num_layers:
        raise ValueError(
            f"{name} has {len(values)} entries but num_layers={num_layers}: give one value for "
            "all layers or a list of exactly one per layer"
        )
    return values


class ConvLSTM(nn.Module):
    """A stack of ConvLSTM layers run over a sequence.

    `forward(x, state=None) -> (layer_outputs, last_states)`: `x` is `[B,T,C,H,W]` (or `[T,B,C,H,W]`
    with `batch_first=False`, and the outputs then come back in that layout). `layer_outputs`
    holds each layer's hidden sequence `[B,T,hid,H,W]` — the last layer only unless
    `return_all_layers` — and `last_states` always holds every layer's final `(h, c)`. Pass
    `state=last_states` to continue a sequence where it stopped: running 20 frames equals running
    10, then 10 more with the state.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int | Sequence[int],
        kernel_size: int | Sequence = 3,
        num_layers: int = 1,
        batch_first: bool = True,
        bias: bool = True,
        return_all_layers: bool = False,
        peephole: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        hidden = _per_layer(hidden_channels, num_layers, "hidden_channels", (list, tuple))
        # a tuple is one (kh, kw) kernel for every layer; a list gives one kernel per layer
        kernels = _per_layer(kernel_size, num_layers, "kernel_size", (list,))
        self.hidden_channels, self.num_layers = hidden, num_layers
        self.batch_first, self.return_all_layers = batch_first, return_all_layers
        self.cells = nn.ModuleList(
            ConvLSTMCell(in_channels if i == 0 else hidden[i - 1], hidden[i], kernels[i], bias,
                         peephole, layer_norm)
            for i in range(num_layers)
        )
        self.checkpointing = False  # also recompute the whole stack (set_checkpointing)

    def forward(
        self, x: torch.Tensor, state: list[State] | None = None
    ) -> tuple[list[torch.Tensor], list[State]]:
        if x.dim() != 5:
            layout = "[B,T,C,H,W]" if self.batch_first else "[T,B,C,H,W]"
            raise ValueError(f"ConvLSTM expects a 5-D sequence {layout}, got {tuple(x.shape)}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        if state is not None and len(state) != self.num_layers:
            raise ValueError(f"state has {len(state)} layers, this stack has {self.num_layers}")
        if x.shape[1] > 1:  # checkpointed, the stack keeps only its input; its cell steps
            # (checkpointed too) keep only their states while it is recomputed in the backward
            outputs, last_states = maybe_checkpoint(self, self._run, x, state)
        else:  # one step: the cell's own checkpoint already keeps no more than that
            outputs, last_states = self._run(x, state)
        if not self.return_all_layers:
            outputs = outputs[-1:]
        if not self.batch_first:
            outputs = [o.transpose(0, 1) for o in outputs]
        return outputs, last_states

    def _run(self, x: torch.Tensor, state: list[State] | None
             ) -> tuple[list[torch.Tensor], list[State]]:
        B, T, C, H, W = x.shape
        outputs, last_states = [], []
        seq = x  # [B, T, C, H, W]
        for i, cell in enumerate(self.cells):
            s = state[i] if state is not None else cell.init_state(B, H, W, x)
            cell.check_input(seq[:, 0], s)
            w = cell.conv_weight()  # [4*hid, C_l + hid, kh, kw], built once for all T steps
            hs = []
            for t in range(T):
                s = cell.step(seq[:, t], s, w)
                hs.append(s[0])
            seq = torch.stack(hs, dim=1)  # [B, T, hid, H, W]
            outputs.append(seq)
            last_states.append(s)
        return outputs, last_states
