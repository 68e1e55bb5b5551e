"""The ConvLSTM gate arithmetic, eager or fused into one kernel by `torch.compile`.

After the convolutions, a ConvLSTM step is pure pointwise work on the four gate blocks (equation 3
of Shi et al. 2015): three sigmoids, two tanhs, the peepholes and the cell-state update. Eager
PyTorch runs each as its own kernel and keeps each result for the backward pass; compiled, they
become one loop over the pixels (Inductor: C++/OpenMP on a CPU, Triton on a GPU), which matters most
on a GPU where the step is otherwise bound by launches and memory traffic.

`set_compiled_gates(model)` switches every ConvLSTM cell of a model to the compiled version. When
`torch.compile` is missing or fails (no C++ compiler, an unsupported platform), the cells warn once
and keep the eager arithmetic, which computes the same values.

Mixed precision: the gates stay in the precision they come in (bf16/fp16 under autocast); the cell
state is updated in the dtype of `c` (float32: `ConvLSTMCell.init_state` makes it so), because it
accumulates over every step and 8 bits of mantissa would round its small increments away.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn as nn

Pointwise = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def lstm_pointwise(
    gates: torch.Tensor, c: torch.Tensor, w_ci: torch.Tensor | None = None,
    w_cf: torch.Tensor | None = None, w_co: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(h_next, c_next)` from the gate pre-activations `[B, 4*hid, H, W]` (blocks i, f, o, g)
    and the cell state `c [B, hid, H, W]`; `w_c*` are the optional peephole weights `[hid, 1, 1]`.

        C_t = σ(f + W_cf ∘ C_{t-1}) ∘ C_{t-1} + σ(i + W_ci ∘ C_{t-1}) ∘ tanh(g)
        H_t = σ(o + W_co ∘ C_t) ∘ tanh(C_t)
    """
    i, f, o, g = gates.chunk(4, dim=1)  # each [B, hid, H, W]
    if w_ci is not None:  # the peephole terms join the gates in the gates' precision
        i = i + (w_ci * c).to(i.dtype)
        f = f + (w_cf * c).to(f.dtype)
    c_next = torch.sigmoid(f).to(c.dtype) * c + (torch.sigmoid(i) * torch.tanh(g)).to(c.dtype)
    if w_co is not None:
        o = o + (w_co * c_next).to(o.dtype)
    h_next = torch.sigmoid(o) * torch.tanh(c_next).to(o.dtype)  # [B, hid, H, W]
    return h_next, c_next


class _Compiled:
    """`torch.compile(lstm_pointwise)`, built on first use; on any failure, warn once and fall
    back to the eager function for the rest of the process."""

    def __init__(self) -> None:
        self.fn: Pointwise | None = None

    def __call__(self, *args: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fn is lstm_pointwise:
            return lstm_pointwise(*args)
        try:
            if self.fn is None:
                self.fn = torch.compile(lstm_pointwise, dynamic=False)
            return self.fn(*args)
        except Exception as err:  # compilers fail in many ways; eager is exact
            warnings.warn(f"compiled ConvLSTM gates unavailable ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); using the eager "
                          "gate arithmetic, which gives the same values", stacklevel=2)
            self.fn = lstm_pointwise
            return lstm_pointwise(*args)


compiled_pointwise = _Compiled()


def set_compiled_gates(model: nn.Module, enabled: bool = True) -> int:
    """Run the gate arithmetic of every ConvLSTM cell in `model` compiled (or eager again);
    returns how many cells were switched."""
    cells = [m for m in model.modules() if hasattr(m, "compiled_gates")]  # ConvLSTM cells
    for cell in cells:
        cell.compiled_gates = enabled
    return len(cells)
