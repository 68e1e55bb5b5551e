"""The causal LSTM cell and the gradient highway unit of PredRNN++ (Wang et al., ICML 2018).

A causal LSTM keeps PredRNN's two memories but cascades them: the temporal memory C is updated
first, and the spatiotemporal memory M is then updated from the new C (equation 1 of the paper).
With `*` a 2-D convolution, `∘` the Hadamard product and M the memory entering this cell (from the
layer below, or from the top layer at the previous step):

    (g, i, f)    = (tanh, σ, σ)(W_1 * [X_t, H_{t-1}, C_{t-1}])
    C_t          = f ∘ C_{t-1} + i ∘ g
    (g', i', f') = (tanh, σ, σ)(W_2 * [X_t, C_t, M])
    M_t          = f' ∘ tanh(W_3 * M) + i' ∘ g'
    o            = tanh(W_4 * [X_t, C_t, M_t])
    H_t          = o ∘ tanh(W_5 * [C_t, M_t])                 (W_5 a 1×1 convolution)

As in the authors' code (and OpenSTL's port), g' reads X_t and C_t only (M enters i' and f'), and
o also reads H_{t-1}. The gradient highway unit (equation 4) is a gated shortcut through time that
the forecaster places between the first and the second causal LSTM layer, X_t being the first
layer's H_t:

    P_t = tanh(W_px * X_t + W_pz * Z_{t-1})
    S_t = σ(W_sx * X_t + W_sz * Z_{t-1})
    Z_t = S_t ∘ P_t + (1 - S_t) ∘ Z_{t-1}

C, M and Z are kept in at least float32 (they carry information over many steps); what enters a
convolution is cast to the convolutions' dtype, so the cells run under autocast and in bf16 alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers.checkpoint import maybe_checkpoint
from convcast.layers.convlstm import _pair

X_GATES = ("i", "f", "g", "i'", "f'", "g'", "o")  # blocks of conv_x's output channels
H_GATES = ("i", "f", "g", "o")  # conv_h, on H_{t-1}
C_GATES = ("i", "f", "g")  # conv_c, on C_{t-1}
M_GATES = ("i'", "f'", "m")  # conv_m, on M ("m": W_3 * M, inside the tanh)
C2M_GATES = ("i'", "f'", "g'", "o")  # conv_c2m, on the new C_t
GHU_GATES = ("p", "s")  # blocks of the highway unit's two convolutions


def _memory_zeros(batch: int, channels: int, height: int, width: int,
                  like: torch.Tensor, memory: bool) -> torch.Tensor:
    """Zeros `[batch, channels, height, width]` on `like`'s device, in its dtype or (a memory)
    in at least float32."""
    dtype = torch.promote_types(like.dtype, torch.float32) if memory else like.dtype
    return like.new_zeros(batch, channels, height, width, dtype=dtype)


def _check_sizes(name: str, in_channels: int, hidden_channels: int) -> None:
    if in_channels < 1 or hidden_channels < 1:
        raise ValueError(f"{name}: need in_channels >= 1 and hidden_channels >= 1, got "
                         f"{in_channels}, {hidden_channels}")


class CausalLSTMCell(nn.Module):
    """One causal LSTM step: `forward(x, h, c, m) -> (h, c, m)` (all `[B, ·, H, W]`).

    `h`, `c`, `m` may be None (zeros). Only the input convolution carries gate biases;
    `layer_norm=True` normalises each gate's pre-activation over (channels, H, W) per sample
    (GroupNorm, one group per gate) and the input norm carries the biases instead. Works at any
    frame size.

    Initialisation: PyTorch's default for the weights but W_3, which starts as the identity; the
    gate biases at 0 but the forget gates f, f' (1, the authors' forget bias) and the output gate
    o (1). From the plain default start activations shrink about tenfold per layer (H is the
    product of two tanh's of small sums, and M passes through W_3 in every layer), so a 4-layer
    stack begins with a forecast almost independent of its input; with W_3 = I (M_t = f' ∘
    tanh(M) + i' ∘ g', PredRNN's path for M) and o ≈ tanh(1) they keep their size.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int] = 5,
        *,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, in_channels, hidden_channels)
        k = _pair(kernel_size)
        pad = (k[0] // 2, k[1] // 2)
        hid = hidden_channels
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hid, k
        self.layer_norm = layer_norm

        def conv(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, padding=pad, bias=bias)

        self.conv_x = conv(in_channels, 7 * hid, bias=not layer_norm)  # W_x· of every gate
        self.conv_h = conv(hid, 4 * hid)  # H_{t-1} -> i, f, g, o
        self.conv_c = conv(hid, 3 * hid)  # C_{t-1} -> i, f, g
        self.conv_m = conv(hid, 3 * hid)  # M -> i', f', and W_3 * M
        self.conv_c2m = conv(hid, 4 * hid)  # C_t -> i', f', g', o
        self.conv_om = conv(hid, hid)  # M_t -> o
        self.conv_last = nn.Conv2d(2 * hid, hid, 1, bias=False)  # W_5, the 1×1 fusion of [C, M]
        if layer_norm:  # one group per gate, so each gate is normalised on its own
            self.norm_x = nn.GroupNorm(7, 7 * hid)
            self.norm_h = nn.GroupNorm(4, 4 * hid)
            self.norm_c = nn.GroupNorm(3, 3 * hid)
            self.norm_m = nn.GroupNorm(3, 3 * hid)
            self.norm_c2m = nn.GroupNorm(4, 4 * hid)
            self.norm_om = nn.GroupNorm(1, hid)
        self._init_gates()
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)

    def _init_gates(self, forget_bias: float = 1.0, output_bias: float = 1.0) -> None:
        # every gate bias starts at 0, the forget gates' (f, f') at `forget_bias` and the output
        # gate's at `output_bias`, added once: by the input convolution, or with layer norm by the
        # input norm; W_3 (the "m" block of conv_m) starts as the identity
        hid = self.hidden_channels
        norms = ("norm_x", "norm_h", "norm_c", "norm_m", "norm_c2m", "norm_om")
        biases = [getattr(self, n).bias for n in norms] if self.layer_norm else [self.conv_x.bias]
        carrier = biases[0]
        with torch.no_grad():
            for b in biases:
                b.zero_()
            for gate, value in (("f", forget_bias), ("f'", forget_bias), ("o", output_bias)):
                j = X_GATES.index(gate)
                carrier[j * hid:(j + 1) * hid] = value
            j = M_GATES.index("m")
            nn.init.dirac_(self.conv_m.weight[j * hid:(j + 1) * hid])  # [hid, hid, kh, kw]

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor,
                   memory: bool = False) -> torch.Tensor:
        """A zero `[batch, hidden, height, width]` tensor on `like`'s device and dtype; a memory
        (C or M, `memory=True`) in at least float32, since it accumulates over every step."""
        return _memory_zeros(batch, self.hidden_channels, height, width, like, memory)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        m: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(H_t, C_t, M_t)` from the input `x` and the states (None: zeros)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input [B, {self.in_channels}, H, W]"
                             f", got {tuple(x.shape)}; build the cell with in_channels="
                             f"{x.shape[1] if x.dim() == 4 else '...'} or fix the input")
        B, _, H, W = x.shape
        h = self.init_state(B, H, W, x) if h is None else h
        c = self.init_state(B, H, W, x, memory=True) if c is None else c
        m = self.init_state(B, H, W, x, memory=True) if m is None else m
        for name, t in (("h", h), ("c", c), ("m", m)):
            if t.shape != (B, self.hidden_channels, H, W):
                raise ValueError(f"{type(self).__name__}: state {name} must be "
                                 f"[{B}, {self.hidden_channels}, {H}, {W}] like the input frame, "
                                 f"got {tuple(t.shape)}; input frame and state differ in size")
        return maybe_checkpoint(self, self._step, x, h, c, m)

    def _step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = self.conv_x.weight.dtype  # what enters a convolution is in the weights' dtype
        x, h, c_in, m_in = (t if t.dtype == dtype else t.to(dtype) for t in (x, h, c, m))
        xg, hg = self.conv_x(x), self.conv_h(h)  # [B, 7*hid, H, W], [B, 4*hid, H, W]
        cg, mg = self.conv_c(c_in), self.conv_m(m_in)  # [B, 3*hid, H, W] each
        if self.layer_norm:
            xg, hg = self.norm_x(xg), self.norm_h(hg)
            cg, mg = self.norm_c(cg), self.norm_m(mg)
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = xg.chunk(7, dim=1)  # each [B, hid, H, W]
        i_h, f_h, g_h, o_h = hg.chunk(4, dim=1)
        i_c, f_c, g_c = cg.chunk(3, dim=1)
        i_m, f_m, w3m = mg.chunk(3, dim=1)
        # the temporal memory first ...
        i = torch.sigmoid(i_x + i_h + i_c)
        f = torch.sigmoid(f_x + f_h + f_c)
        g = torch.tanh(g_x + g_h + g_c)
        c_next = f.to(c.dtype) * c + (i * g).to(c.dtype)  # [B, hid, H, W], >= float32
        # ... then the spatiotemporal memory, from the new C (the cascade)
        c2m = self.conv_c2m(c_next.to(dtype))  # [B, 4*hid, H, W]
        if self.layer_norm:
            c2m = self.norm_c2m(c2m)
        i_cm, f_cm, g_cm, o_c = c2m.chunk(4, dim=1)
        i2 = torch.sigmoid(i_xm + i_m + i_cm)
        f2 = torch.sigmoid(f_xm + f_m + f_cm)
        g2 = torch.tanh(g_xm + g_cm)
        m_next = (f2 * torch.tanh(w3m)).to(m.dtype) + (i2 * g2).to(m.dtype)  # [B, hid, H, W]
        o_m = self.conv_om(m_next.to(dtype))
        if self.layer_norm:
            o_m = self.norm_om(o_m)
        o = torch.tanh(o_x + o_h + o_c + o_m)
        mem = torch.cat([c_next, m_next], dim=1).to(dtype)  # [B, 2*hid, H, W]
        h_next = o * torch.tanh(self.conv_last(mem))  # [B, hid, H, W]
        return h_next, c_next, m_next

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"layer_norm={self.layer_norm}")


class GradientHighwayUnit(nn.Module):
    """The gradient highway unit: `forward(x, z) -> z` (both `[B, ·, H, W]`, `z` None: zeros).

    The input convolution carries the (zero) gate biases; `layer_norm=True` normalises each
    gate's pre-activations like the causal LSTM does. The weights start uniform in
    ±`init_range` (0.001, as in the authors' code): Z starts as a slow leak of H, so the highway
    opens as it learns. Z is kept in at least float32.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int] = 5,
        *,
        layer_norm: bool = False,
        init_range: float = 0.001,
    ) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, in_channels, hidden_channels)
        if not init_range > 0:
            raise ValueError(f"GradientHighwayUnit: init_range must be > 0, got {init_range}")
        k = _pair(kernel_size)
        pad = (k[0] // 2, k[1] // 2)
        hid = hidden_channels
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hid, k
        self.layer_norm = layer_norm
        self.conv_x = nn.Conv2d(in_channels, 2 * hid, k, padding=pad, bias=not layer_norm)
        self.conv_z = nn.Conv2d(hid, 2 * hid, k, padding=pad, bias=False)
        if layer_norm:
            self.norm_x = nn.GroupNorm(2, 2 * hid)
            self.norm_z = nn.GroupNorm(2, 2 * hid)
        with torch.no_grad():
            for conv in (self.conv_x, self.conv_z):
                conv.weight.uniform_(-init_range, init_range)
            for b in ((self.norm_x.bias, self.norm_z.bias) if layer_norm else (self.conv_x.bias,)):
                b.zero_()
        self.checkpointing = False

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """A zero Z `[batch, hidden, height, width]` in at least float32, on `like`'s device."""
        return _memory_zeros(batch, self.hidden_channels, height, width, like, memory=True)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Z_t from the input `x` (the first layer's H_t) and Z_{t-1} (None: zeros)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input [B, {self.in_channels}, H, W]"
                             f", got {tuple(x.shape)}")
        B, _, H, W = x.shape
        z = self.init_state(B, H, W, x) if z is None else z
        if z.shape != (B, self.hidden_channels, H, W):
            raise ValueError(f"{type(self).__name__}: z must be [{B}, {self.hidden_channels}, "
                             f"{H}, {W}] like the input frame, got {tuple(z.shape)}; input "
                             "frame and state differ in size")
        return maybe_checkpoint(self, self._step, x, z)

    def _step(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = self.conv_x.weight.dtype
        xg = self.conv_x(x if x.dtype == dtype else x.to(dtype))  # [B, 2*hid, H, W]
        zg = self.conv_z(z if z.dtype == dtype else z.to(dtype))
        if self.layer_norm:
            xg, zg = self.norm_x(xg), self.norm_z(zg)
        p_x, s_x = xg.chunk(2, dim=1)  # each [B, hid, H, W]
        p_z, s_z = zg.chunk(2, dim=1)
        p, s = torch.tanh(p_x + p_z), torch.sigmoid(s_x + s_z)
        s = s.to(z.dtype)
        return s * p.to(z.dtype) + (1 - s) * z  # [B, hid, H, W], >= float32

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"layer_norm={self.layer_norm}")
