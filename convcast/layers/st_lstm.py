"""The spatiotemporal LSTM cell of PredRNN (Wang et al., NIPS 2017, equation 3).

Two memories: the temporal memory C flows along time within a layer, the spatiotemporal memory M
flows upward through the layers and from the top layer at t to the bottom layer at t + 1 (the
zigzag, which the forecaster wires). With `*` a 2-D convolution and `∘` the Hadamard product:

    g  = tanh(W_xg * X + W_hg * H_{t-1} + b_g)        g' = tanh(W'_xg * X + W_mg * M + b'_g)
    i  = σ(W_xi * X + W_hi * H_{t-1} + b_i)           i' = σ(W'_xi * X + W_mi * M + b'_i)
    f  = σ(W_xf * X + W_hf * H_{t-1} + b_f)           f' = σ(W'_xf * X + W_mf * M + b'_f)
    C_t = f ∘ C_{t-1} + i ∘ g                         M_t = f' ∘ M + i' ∘ g'
    o  = σ(W_xo * X + W_ho * H_{t-1} + W_co * C_t + W_mo * M_t + b_o)
    H_t = o ∘ tanh(W_1×1 * [C_t, M_t])

`M` on the right is the memory entering this cell (from the layer below, or from the top layer at
the previous step). PredRNN-v2 (Wang et al., TPAMI 2022) adds a loss on the increments
ΔC = i ∘ g and ΔM = i' ∘ g', which `forward(..., return_increments=True)` also returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers.checkpoint import maybe_checkpoint
from convcast.layers.convlstm import _pair

X_GATES = ("i", "f", "g", "i'", "f'", "g'", "o")  # blocks of conv_x's output channels
H_GATES = ("i", "f", "g", "o")  # blocks of conv_h's output channels
M_GATES = ("i'", "f'", "g'")  # blocks of conv_m's output channels


class SpatioTemporalLSTMCell(nn.Module):
    """One ST-LSTM step: `forward(x, h, c, m) -> (h, c, m)` (all `[B, ·, H, W]`).

    `h`, `c`, `m` may be None (zeros). Only the input convolution carries gate biases (zero, the
    two forget gates' at 1); `layer_norm=True` normalises each gate's pre-activation over
    (channels, H, W) per sample (GroupNorm, one group per gate) and the norms carry the biases
    instead. Works at any frame size.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int] = 5,
        layer_norm: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(
                f"need in_channels >= 1 and hidden_channels >= 1, got {in_channels}, "
                f"{hidden_channels}"
            )
        k = _pair(kernel_size)
        pad = (k[0] // 2, k[1] // 2)
        hid = hidden_channels
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hid, k
        self.layer_norm = layer_norm
        self.conv_x = nn.Conv2d(in_channels, 7 * hid, k, padding=pad, bias=bias and not layer_norm)
        self.conv_h = nn.Conv2d(hid, 4 * hid, k, padding=pad, bias=False)
        self.conv_m = nn.Conv2d(hid, 3 * hid, k, padding=pad, bias=False)
        self.conv_o = nn.Conv2d(2 * hid, hid, k, padding=pad, bias=False)  # W_co * C + W_mo * M
        self.conv_last = nn.Conv2d(2 * hid, hid, 1, bias=False)  # the 1×1 fusion of [C, M]
        if layer_norm:  # one group per gate, so each gate is normalised on its own
            self.norm_x = nn.GroupNorm(7, 7 * hid)
            self.norm_h = nn.GroupNorm(4, 4 * hid)
            self.norm_m = nn.GroupNorm(3, 3 * hid)
            self.norm_o = nn.GroupNorm(1, hid)
        self._init_forget_bias(1.0)
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)

    def _init_forget_bias(self, value: float) -> None:
        # all gate biases start at 0 and the forget gates' (f, f') at `value`; only the input conv
        # (or, with layer norm, the input norm) adds the offset, so it is counted once
        carrier = self.norm_x.bias if self.layer_norm else self.conv_x.bias
        hid = self.hidden_channels
        with torch.no_grad():
            for b in (self.conv_x.bias, *(getattr(self, n).bias for n in
                                          ("norm_x", "norm_h", "norm_m", "norm_o")
                                          if self.layer_norm)):
                if b is not None:
                    b.zero_()
            if carrier is not None:
                for gate in ("f", "f'"):
                    j = X_GATES.index(gate)
                    carrier[j * hid:(j + 1) * hid] = value

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor,
                   memory: bool = False) -> torch.Tensor:
        """A zero `[batch, hidden, height, width]` tensor on `like`'s device and dtype; a memory
        (C or M, `memory=True`) in at least float32, since it accumulates over every step."""
        dtype = torch.promote_types(like.dtype, torch.float32) if memory else like.dtype
        return like.new_zeros(batch, self.hidden_channels, height, width, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        m: torch.Tensor | None = None,
        return_increments: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """`(h, c, m)`, or `(h, c, m, ΔC, ΔM)` with `return_increments=True`."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        B, _, H, W = x.shape
        h = self.init_state(B, H, W, x) if h is None else h
        c = self.init_state(B, H, W, x, memory=True) if c is None else c
        m = self.init_state(B, H, W, x, memory=True) if m is None else m
        if h.shape[-2:] != (H, W) or m.shape[-2:] != (H, W):
            raise ValueError(f"input frame {(H, W)} and state {tuple(h.shape[-2:])} differ in size")
        return maybe_checkpoint(self, self._step, x, h, c, m, return_increments)

    def _step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, m: torch.Tensor,
              return_increments: bool) -> tuple[torch.Tensor, ...]:
        # what enters a convolution is in the convolutions' dtype (bf16 / fp16 weights included);
        # the memories C and M keep their own (>= float32) dtype between steps
        dtype = self.conv_x.weight.dtype
        x, h, m_in = (t if t.dtype == dtype else t.to(dtype) for t in (x, h, m))
        xg, hg, mg = self.conv_x(x), self.conv_h(h), self.conv_m(m_in)  # [B, 7|4|3 * hid, H, W]
        if self.layer_norm:
            xg, hg, mg = self.norm_x(xg), self.norm_h(hg), self.norm_m(mg)
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = xg.chunk(7, dim=1)  # each [B, hid, H, W]
        i_h, f_h, g_h, o_h = hg.chunk(4, dim=1)
        i_m, f_m, g_m = mg.chunk(3, dim=1)
        # the gates in the compute precision, both memories updated in their own (float32)
        i, f, g = torch.sigmoid(i_x + i_h), torch.sigmoid(f_x + f_h), torch.tanh(g_x + g_h)
        delta_c = i * g  # [B, hid, H, W]
        c_next = f.to(c.dtype) * c + delta_c.to(c.dtype)
        i2, f2, g2 = torch.sigmoid(i_xm + i_m), torch.sigmoid(f_xm + f_m), torch.tanh(g_xm + g_m)
        delta_m = i2 * g2  # [B, hid, H, W]
        m_next = f2.to(m.dtype) * m + delta_m.to(m.dtype)
        mem = torch.cat([c_next, m_next], dim=1).to(dtype)  # [B, 2*hid, H, W]
        o_mem = self.conv_o(mem)
        if self.layer_norm:
            o_mem = self.norm_o(o_mem)
        o = torch.sigmoid(o_x + o_h + o_mem)
        h_next = o * torch.tanh(self.conv_last(mem))  # [B, hid, H, W]
        if return_increments:
            return h_next, c_next, m_next, delta_c, delta_m
        return h_next, c_next, m_next

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"layer_norm={self.layer_norm}")
