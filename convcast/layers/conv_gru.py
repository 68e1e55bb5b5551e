"""ConvGRU cell (Shi et al., NIPS 2017, "Deep Learning for Precipitation Nowcasting: A Benchmark
and a New Model", section 3.2), the baseline of the HKO-7 benchmark.

With `*` a 2-D convolution, `∘` the Hadamard product and f the activation of the new memory:

    Z_t  = σ(W_xz * X_t + W_hz * H_{t-1})
    R_t  = σ(W_xr * X_t + W_hr * H_{t-1})
    H'_t = f(W_xh * X_t + R_t ∘ (W_hh * H_{t-1}))
    H_t  = (1 - Z_t) ∘ H'_t + Z_t ∘ H_{t-1}

Each of the two convolutions has a bias, and the recurrent one's sits inside the reset product,
R_t ∘ (W_hh * H_{t-1} + b_hh), as in the authors' code. HKO-7's models use f = leaky ReLU with
slope 0.2 (`activation="leaky"`, the default); `"tanh"` gives the usual GRU.

The input weights W_x· (`conv_x`, kernel `input_kernel_size`) and the recurrent ones W_h·
(`conv_h`, kernel `kernel_size`) are stored apart: an input-less cell (the top of the HKO-7
forecaster reads nothing) has no `conv_x`. Their output channels hold the blocks in the order
`GATES` = (r, z, h), the order of the authors' weights, so weights copy across as they are.
A sequence's input convolution can run on all frames at once (`prepare`), then `step` advances
the state frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers.checkpoint import maybe_checkpoint

GATES = ("r", "z", "h")  # order of the three blocks in the convolutions' output channels
ACTIVATIONS = ("leaky", "tanh")
LEAKY_SLOPE = 0.2  # HKO-7's "leaky" activation


Activation = Callable[[torch.Tensor], torch.Tensor]


def activation_fn(name: str) -> Activation:
    """The new-memory activation f: `leaky` (leaky ReLU, slope 0.2, as HKO-7) or `tanh`."""
    if name == "leaky":
        return lambda t: F.leaky_relu(t, LEAKY_SLOPE)
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def kernel_pair(kernel_size: int | Sequence[int], name: str = "kernel_size") -> tuple[int, int]:
    """A positive odd kernel size (int or (kh, kw)) as a pair; a ValueError naming `name` else."""
    k = [kernel_size] * 2 if isinstance(kernel_size, int) else list(kernel_size)
    if len(k) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 or v % 2 == 0
                          for v in k):
        raise ValueError(f"{name} must be a positive odd int or a pair of them (e.g. 3 or 5: an "
                         f"odd kernel keeps the frame size with symmetric padding), got "
                         f"{kernel_size!r}")
    return k[0], k[1]


def gru_update(x_gates: torch.Tensor | None, h_gates: torch.Tensor, h: torch.Tensor,
               act: Activation) -> torch.Tensor:
    """H_t from the input part W_x·*X_t `[B, 3*hid, H, W]` (None: no input), the recurrent part
    `[B, 3*hid, H, W]` (blocks r, z, h; for TrajGRU the sums over the warped links) and H_{t-1}.

        R = σ(x_r + h_r),  Z = σ(x_z + h_z),  H' = f(x_h + R ∘ h_h),  H_t = (1 - Z) ∘ H' + Z ∘ H
    """
    hr, hz, hh = h_gates.chunk(3, dim=1)  # each [B, hid, H, W]
    if x_gates is None:
        r, z = torch.sigmoid(hr), torch.sigmoid(hz)
        new = act(r * hh)
    else:
        xr, xz, xh = x_gates.chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        new = act(xh + r * hh)
    return z * h + (1 - z) * new  # [B, hid, H, W]


class GRUCellBase(nn.Module):
    """What the GRU cells share: a zero state and one checked step, `forward(x, h) -> h`, on
    top of the cell's `prepare(x)` (its input convolutions) and `step(prepared, h)`."""

    in_channels: int
    hidden_channels: int
    conv_x: nn.Module | None

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Zero H for frames of the given size, in `like`'s dtype and on its device."""
        return like.new_zeros(batch, self.hidden_channels, height, width)

    def forward(self, x: torch.Tensor | None, h: torch.Tensor | None = None) -> torch.Tensor:
        if x is None and h is None:
            raise ValueError("an input-less step needs a state to know the batch and frame size")
        if x is not None and self.conv_x is None:
            raise ValueError("this cell has in_channels=0 and reads no input; pass x=None")
        if x is not None and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(f"expected input [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if h is None:
            h = self.init_state(x.shape[0], x.shape[2], x.shape[3], x)
        return self.step(self.prepare(x), h)


class ConvGRUCell(GRUCellBase):
    """One ConvGRU step: `forward(x [B, C_in, H, W] or None, h [B, hid, H, W] or None) -> h`.

    `in_channels=0` makes an input-less cell (call it with `x=None` and a state).
    `kernel_size` is the state-to-state kernel, `input_kernel_size` the input-to-state one
    (HKO-7: 5x5 / 5x5 / 3x3 and 3x3).
    """

    def __init__(self, in_channels: int, hidden_channels: int,
                 kernel_size: int | Sequence[int] = 5, *,
                 input_kernel_size: int | Sequence[int] = 3, activation: str = "leaky") -> None:
        super().__init__()
        if in_channels < 0 or hidden_channels < 1:
            raise ValueError(f"need in_channels >= 0 and hidden_channels >= 1, got "
                             f"{in_channels}, {hidden_channels}")
        kh, ki = kernel_pair(kernel_size), kernel_pair(input_kernel_size, "input_kernel_size")
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.kernel_size, self.input_kernel_size, self.activation = kh, ki, activation
        self.act = activation_fn(activation)
        gates = 3 * hidden_channels
        self.conv_x = (nn.Conv2d(in_channels, gates, ki, padding=(ki[0] // 2, ki[1] // 2))
                       if in_channels else None)  # W_xr, W_xz, W_xh (+ their biases)
        self.conv_h = nn.Conv2d(hidden_channels, gates, kh,
                                padding=(kh[0] // 2, kh[1] // 2))  # W_hr, W_hz, W_hh (+ b_h·)
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)

    def prepare(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """The input part W_x·*X `[N, 3*hid, H, W]` of frames `x [N, C_in, H, W]` (any number
        of them at once, e.g. a whole sequence); None for no input."""
        if x is None:
            return None
        if self.conv_x is None:
            raise ValueError("this cell has in_channels=0 and reads no input; pass x=None")
        return self.conv_x(x)

    def step(self, prepared: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """Advance H by one step from a `prepare`d input (None: no input); recomputed in the
        backward pass under gradient checkpointing (`convcast.layers.set_checkpointing`)."""
        return maybe_checkpoint(self, self._step, prepared, h)

    def _step(self, prepared: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        return gru_update(prepared, self.conv_h(h), h, self.act)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"input_kernel_size={self.input_kernel_size}, activation={self.activation!r}")
