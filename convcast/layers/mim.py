"""The Memory In Memory block and its two memory modules (Wang et al., CVPR 2019).

A MIM block replaces the forget gate of an ST-LSTM's temporal memory C by two cascaded recurrent
modules: MIM-N (non-stationary) reads the difference between consecutive hidden states of the
layer below, and MIM-S (stationary) uses what MIM-N found to decide how much of C_{t-1} to carry on.
With `*` a 2-D convolution, `∘` the Hadamard product and X = H^{l-1}_t the layer below's output,
the paper's equations (4)-(6) are:

    MIM-N:  D_t = MIM-N(H^{l-1}_t - H^{l-1}_{t-1}, N_{t-1})
    MIM-S:  T_t = MIM-S(D_t, C_{t-1}, S_{t-1})
    block:  g  = tanh(W_xg * X + W_hg * H_{t-1} + b_g)       i  = σ(W_xi * X + W_hi * H_{t-1} + b_i)
            g' = tanh(W'_xg * X + W_mg * M + b'_g)            i' = σ(W'_xi * X + W_mi * M + b'_i)
            f' = σ(W'_xf * X + W_mf * M + b'_f)               M_t = f' ∘ M + i' ∘ g'
            C_t = T_t + i ∘ g
            o  = σ(W_xo * X + W_ho * H_{t-1} + W_co * C_t + W_mo * M_t + b_o)
            H_t = o ∘ tanh(W_1×1 * [C_t, M_t])

M is the spatiotemporal memory entering the block (from the layer below, as in PredRNN's zigzag).
Both modules are written here, as in the authors' code, as peephole ConvLSTMs (Shi et al. 2015)
whose hidden state is the module's output (D for MIM-N, T for MIM-S), see `PeepholeModule`.

The layers follow the authors' code (Yunbo426/MIM, as ported to PyTorch by OpenSTL), which differs
from the equations above in these ways (kept, so trained models and comparisons agree):
  * the block's input terms of i and i' are one convolution (W'_xi = W_xi), likewise g and g';
  * the block's o reads W_mo * M (the memory *entering* the block) and no C_t term:
    o = σ(W_xo * X + W_ho * H_{t-1} + W_mo * M + b_o);
  * MIM-N of the second and higher blocks reads the MIM-N output D^{l-1}_t of the block below, not
    H^{l-1}_t - H^{l-1}_{t-1} (a cascade of differences); the forecaster wires this;
  * at the first step of a sequence there is no earlier hidden state to difference: MIM-N does not
    run (its state stays zero) and MIM-S reads D = 0 (`has_diff=False`).
Where the two references differ among themselves, these layers take OpenSTL's convolutions without
biases except the input convolution's (zero, the forget gates' at 1: OpenSTL adds a constant 1 to
the forget gates, which equals these biases at initialisation), and the authors' per-sequence
MIM-S memory (OpenSTL keeps it on the module across batches and detaches it at every step; here it
is part of the state, starts at zero, and gradients flow through it).

Hadamard peepholes: the authors' W ∘ N weights are per position, `[C, H, W]`, which ties a module
to one state size; `peephole_size=(H, W)` gives those, `peephole_size=None` one weight per channel
(`[C, 1, 1]`, any size). `layer_norm=True` normalises each gate's pre-activation per sample over
(channels, H, W) (GroupNorm, one group per gate; OpenSTL's LayerNorm spans all gates of a
convolution), and the norms carry the biases.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers.checkpoint import maybe_checkpoint
from convcast.layers.convlstm import _pair

PEEP_GATES = ("i", "f", "g", "o")  # blocks of a memory module's conv_x and conv_h outputs
PEEPHOLES = ("i", "f", "o")  # the Hadamard peepholes of a memory module, in `peephole` order
BLOCK_X_GATES = ("i", "f'", "g", "o")  # blocks of MIMBlock.conv_x (i and g shared with i', g')
BLOCK_H_GATES = ("i", "g", "o")  # blocks of MIMBlock.conv_h
BLOCK_M_GATES = ("i'", "f'", "g'", "o")  # blocks of MIMBlock.conv_m


def _memory_dtype(like: torch.Tensor) -> torch.dtype:
    """Memories accumulate over every step: at least float32."""
    return torch.promote_types(like.dtype, torch.float32)


def _init_biases(conv: nn.Conv2d, norm: nn.GroupNorm | None, gates: Sequence[str],
                 forget: Sequence[str], hid: int, value: float = 1.0) -> None:
    """All gate biases 0, the forget gates' `value`; held by the norm with layer norm, else conv."""
    carrier = norm.bias if norm is not None else conv.bias
    with torch.no_grad():
        for b in (conv.bias, None if norm is None else norm.bias):
            if b is not None:
                b.zero_()
        if carrier is not None:
            for gate in forget:
                j = gates.index(gate)
                carrier[j * hid:(j + 1) * hid] = value


def _check_peephole_size(peephole_size: Sequence[int] | None) -> tuple[int, int] | None:
    if peephole_size is None:
        return None
    size = tuple(peephole_size) if isinstance(peephole_size, (list, tuple)) else None
    if size is None or len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int)
                                             or v < 1 for v in size):
        raise ValueError(f"peephole_size must be (H, W) of the state, positive ints, or None for "
                         f"one peephole weight per channel, got {peephole_size!r}")
    return size


class PeepholeModule(nn.Module):
    """A ConvLSTM step with Hadamard peepholes: `forward(x, h, c) -> (h, c)`, the form of MIM-N
    and MIM-S (`[B, ·, H, W]` tensors; `h`, `c` may be None for zeros):

        i = σ(W_xi * x + W_hi * h + W_ci ∘ c + b_i)      f = σ(W_xf * x + W_hf * h + W_cf ∘ c + b_f)
        g = tanh(W_xg * x + W_hg * h + b_g)              c' = f ∘ c + i ∘ g
        o = σ(W_xo * x + W_ho * h + W_co ∘ c' + b_o)     h' = o ∘ tanh(c')

    The peephole weights (`peephole`, `[3, hidden, *peephole_size]` for i, f, o) start at
    zero, as in OpenSTL; the forget gate's bias at 1. `c` is kept in at least float32.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int] = 5,
        *,
        peephole_size: Sequence[int] | None = None,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(f"{type(self).__name__}: need in_channels >= 1 and hidden_channels "
                             f">= 1, got {in_channels}, {hidden_channels}")
        k = _pair(kernel_size)
        pad = (k[0] // 2, k[1] // 2)
        hid = hidden_channels
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hid, k
        self.layer_norm = layer_norm
        self.peephole_size = _check_peephole_size(peephole_size)
        self.conv_x = nn.Conv2d(in_channels, 4 * hid, k, padding=pad, bias=not layer_norm)
        self.conv_h = nn.Conv2d(hid, 4 * hid, k, padding=pad, bias=False)
        self.peephole = nn.Parameter(torch.zeros(3, hid, *(self.peephole_size or (1, 1))))
        self.norm_x = nn.GroupNorm(4, 4 * hid) if layer_norm else None
        self.norm_h = nn.GroupNorm(4, 4 * hid) if layer_norm else None
        _init_biases(self.conv_x, self.norm_x, PEEP_GATES, ("f",), hid)

    def check_size(self, x: torch.Tensor) -> None:
        """Per-position peepholes fit one state size only: say which."""
        if self.peephole_size is not None and tuple(x.shape[-2:]) != self.peephole_size:
            raise ValueError(
                f"{type(self).__name__} was built for states of {self.peephole_size[0]}×"
                f"{self.peephole_size[1]} (per-position peepholes) but got "
                f"{x.shape[-2]}×{x.shape[-1]}; build it with peephole_size={tuple(x.shape[-2:])} "
                "or peephole_size=None (per-channel peepholes, any size)")

    def forward(
        self, x: torch.Tensor, h: torch.Tensor | None = None, c: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input [B, {self.in_channels}, H, "
                             f"W], got {tuple(x.shape)}")
        self.check_size(x)
        B, _, H, W = x.shape
        if h is None:
            h = x.new_zeros(B, self.hidden_channels, H, W)
        if c is None:
            c = x.new_zeros(B, self.hidden_channels, H, W, dtype=_memory_dtype(x))
        xg, hg = self.conv_x(x), self.conv_h(h.to(x.dtype))  # [B, 4*hid, H, W] each
        if self.norm_x is not None:
            xg, hg = self.norm_x(xg), self.norm_h(hg)
        i_x, f_x, g_x, o_x = xg.chunk(4, dim=1)  # each [B, hid, H, W]
        i_h, f_h, g_h, o_h = hg.chunk(4, dim=1)
        w_ci, w_cf, w_co = self.peephole  # each [hid, H, W] or [hid, 1, 1]
        i = torch.sigmoid(i_x + i_h + w_ci * c)
        f = torch.sigmoid(f_x + f_h + w_cf * c)
        g = torch.tanh(g_x + g_h)
        c_next = f.to(c.dtype) * c + (i * g).to(c.dtype)  # [B, hid, H, W], >= float32
        o = torch.sigmoid(o_x + o_h + w_co * c_next)
        h_next = (o * torch.tanh(c_next)).to(xg.dtype)  # [B, hid, H, W]
        return h_next, c_next

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"peephole_size={self.peephole_size}, layer_norm={self.layer_norm}")


class MIMN(PeepholeModule):
    """MIM-N, the non-stationary module: `forward(delta, d, n) -> (D_t, N_t)`.

    Equation (5) of the paper, with ΔH = H^{l-1}_t - H^{l-1}_{t-1} (for the second and higher
    blocks, the D of the block below; see the module docstring), D_{t-1} the module's previous
    output and N its memory; as in the authors' code the gates see N through Hadamard peepholes
    and D_{t-1} through convolutions (the paper writes convolutions of N):

        i = σ(W_xi * ΔH + W_di * D_{t-1} + W_ni ∘ N_{t-1} + b_i)
        f = σ(W_xf * ΔH + W_df * D_{t-1} + W_nf ∘ N_{t-1} + b_f)
        g = tanh(W_xg * ΔH + W_dg * D_{t-1} + b_g)        N_t = f ∘ N_{t-1} + i ∘ g
        o = σ(W_xo * ΔH + W_do * D_{t-1} + W_no ∘ N_t + b_o)   D_t = o ∘ tanh(N_t)
    """


class MIMS(PeepholeModule):
    """MIM-S, the stationary module: `forward(d, c, s) -> (T_t, S_t)`.

    Equation (6) of the paper: D_t from MIM-N, C_{t-1} the block's temporal memory (in the place
    of a ConvLSTM's hidden state), S its own memory; T_t replaces f ∘ C_{t-1} in the block:

        i = σ(W_di * D_t + W_ci * C_{t-1} + W_si ∘ S_{t-1} + b_i)
        f = σ(W_df * D_t + W_cf * C_{t-1} + W_sf ∘ S_{t-1} + b_f)
        g = tanh(W_dg * D_t + W_cg * C_{t-1} + b_g)        S_t = f ∘ S_{t-1} + i ∘ g
        o = σ(W_do * D_t + W_co * C_{t-1} + W_so ∘ S_t + b_o)   T_t = o ∘ tanh(S_t)

    The paper's o reads W_so * S_t, a convolution; the authors' code a Hadamard peephole, as here.
    """


class MIMBlock(nn.Module):
    """One MIM block step (equation 4, with the authors' deviations in the module docstring):

        forward(x, delta, *, h, c, m, d, n, s, has_diff) -> (h, c, m, d, n, s)

    `x` is H^{l-1}_t `[B, in, H, W]`; `delta` the MIM-N input `[B, hid, H, W]` (H^0_t - H^0_{t-1}
    for the first block, the D of the block below for the others); `h`, `c` this block's H and C;
    `m` the spatiotemporal memory entering it; `d`, `n` MIM-N's output and memory; `s` MIM-S's
    memory. Any state may be None (zeros). `has_diff` False (or a bool tensor broadcastable to
    `[B, 1, 1, 1]`, False where) there is no earlier hidden state to difference: the first step of
    a sequence, where MIM-N keeps its state and MIM-S reads the (zero) D it holds. C, M, N and S
    are kept in at least float32.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int] = 5,
        *,
        peephole_size: Sequence[int] | None = None,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(f"MIMBlock: need in_channels >= 1 and hidden_channels >= 1, got "
                             f"{in_channels}, {hidden_channels}")
        k = _pair(kernel_size)
        pad = (k[0] // 2, k[1] // 2)
        hid = hidden_channels
        self.in_channels, self.hidden_channels, self.kernel_size = in_channels, hid, k
        self.layer_norm = layer_norm
        self.conv_x = nn.Conv2d(in_channels, 4 * hid, k, padding=pad, bias=not layer_norm)
        self.conv_h = nn.Conv2d(hid, 3 * hid, k, padding=pad, bias=False)
        self.conv_m = nn.Conv2d(hid, 4 * hid, k, padding=pad, bias=False)
        self.conv_last = nn.Conv2d(2 * hid, hid, 1, bias=False)  # the 1×1 fusion of [C, M]
        self.norm_x = nn.GroupNorm(4, 4 * hid) if layer_norm else None
        self.norm_h = nn.GroupNorm(3, 3 * hid) if layer_norm else None
        self.norm_m = nn.GroupNorm(4, 4 * hid) if layer_norm else None
        _init_biases(self.conv_x, self.norm_x, BLOCK_X_GATES, ("f'",), hid)
        self.mim_n = MIMN(hid, hid, k, peephole_size=peephole_size, layer_norm=layer_norm)
        self.mim_s = MIMS(hid, hid, k, peephole_size=peephole_size, layer_norm=layer_norm)
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor,
                   memory: bool = False) -> torch.Tensor:
        """A zero `[batch, hidden, height, width]` state on `like`'s device; a memory (C, M, N, S:
        `memory=True`) in at least float32, a hidden state (H, D) in `like`'s dtype."""
        dtype = _memory_dtype(like) if memory else like.dtype
        return like.new_zeros(batch, self.hidden_channels, height, width, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        delta: torch.Tensor,
        *,
        h: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        m: torch.Tensor | None = None,
        d: torch.Tensor | None = None,
        n: torch.Tensor | None = None,
        s: torch.Tensor | None = None,
        has_diff: bool | torch.Tensor = True,
    ) -> tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"MIMBlock: expected input [B, {self.in_channels}, H, W], got "
                             f"{tuple(x.shape)}")
        if delta.shape != (x.shape[0], self.hidden_channels, *x.shape[-2:]):
            raise ValueError(f"MIMBlock: delta must be [B, {self.hidden_channels}, H, W] like the "
                             f"input's frame, got {tuple(delta.shape)}")
        self.mim_n.check_size(x)
        B, _, H, W = x.shape
        h = self.init_state(B, H, W, x) if h is None else h
        d = self.init_state(B, H, W, x) if d is None else d
        c, m, n, s = (self.init_state(B, H, W, x, memory=True) if v is None else v
                      for v in (c, m, n, s))
        return maybe_checkpoint(self, self._step, x, delta=delta, h=h, c=c, m=m, d=d, n=n, s=s,
                                has_diff=has_diff)

    def _step(self, x: torch.Tensor, delta: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              m: torch.Tensor, d: torch.Tensor, n: torch.Tensor, s: torch.Tensor,
              has_diff: bool | torch.Tensor) -> tuple[torch.Tensor, ...]:
        # MIM-N: D_t from the difference (kept as it was where there is none yet)
        if has_diff is True:
            d, n = self.mim_n(delta, d, n)  # [B, hid, H, W] each
        elif has_diff is not False:
            d_new, n_new = self.mim_n(delta, d, n)
            d, n = torch.where(has_diff, d_new, d), torch.where(has_diff, n_new, n)
        t, s = self.mim_s(d, c, s)  # T_t [B, hid, H, W]: what MIM-S keeps of C_{t-1}
        xg, hg, mg = self.conv_x(x), self.conv_h(h), self.conv_m(m.to(x.dtype))
        if self.layer_norm:
            xg, hg, mg = self.norm_x(xg), self.norm_h(hg), self.norm_m(mg)
        i_x, f_x, g_x, o_x = xg.chunk(4, dim=1)  # each [B, hid, H, W]
        i_h, g_h, o_h = hg.chunk(3, dim=1)
        i_m, f_m, g_m, o_m = mg.chunk(4, dim=1)
        i, g = torch.sigmoid(i_x + i_h), torch.tanh(g_x + g_h)
        i2, f2, g2 = torch.sigmoid(i_x + i_m), torch.sigmoid(f_x + f_m), torch.tanh(g_x + g_m)
        o = torch.sigmoid(o_x + o_h + o_m)
        c_next = t.to(c.dtype) + (i * g).to(c.dtype)  # [B, hid, H, W], >= float32
        m_next = f2.to(m.dtype) * m + (i2 * g2).to(m.dtype)
        mem = torch.cat([c_next, m_next], dim=1).to(xg.dtype)  # [B, 2*hid, H, W]
        h_next = o * torch.tanh(self.conv_last(mem))  # [B, hid, H, W]
        return h_next, c_next, m_next, d, n, s

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"layer_norm={self.layer_norm}")
