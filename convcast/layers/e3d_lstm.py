"""The Eidetic 3D LSTM cell of E3D-LSTM (Wang et al., ICLR 2019, section 3).

Every tensor of the cell covers a short window of `w` frames, `[B, ·, w, H, W]`, and `*` is a 3-D
convolution over (time, height, width). Besides the temporal memory C (along time, within a layer)
and the spatiotemporal memory M (up the stack), the cell *recalls*: a gate R_t attends over the
layer's last τ cell memories C_{t-τ:t-1}. With `∘` the Hadamard product, the paper's equations:

    R_t  = σ(W_xr * X_t + W_hr * H_{t-1} + b_r)
    I_t  = σ(W_xi * X_t + W_hi * H_{t-1} + b_i)
    G_t  = tanh(W_xg * X_t + W_hg * H_{t-1} + b_g)
    RECALL(R_t, C_{t-τ:t-1}) = softmax(R_t · C_{t-τ:t-1}ᵀ) · C_{t-τ:t-1}
    C_t  = I_t ∘ G_t + LayerNorm(C_{t-1} + RECALL(R_t, C_{t-τ:t-1}))
    I'_t = σ(W'_xi * X_t + W_mi * M + b'_i)
    G'_t = tanh(W'_xg * X_t + W_mg * M + b'_g)
    F'_t = σ(W'_xf * X_t + W_mf * M + b'_f)
    M_t  = I'_t ∘ G'_t + F'_t ∘ M
    O_t  = σ(W_xo * X_t + W_ho * H_{t-1} + W_co * C_t + W_mo * M_t + b_o)
    H_t  = O_t ∘ tanh(W_1×1×1 * [C_t, M_t])

`M` on the right is the memory entering the cell (from the layer below, or from the top layer at
the previous step).

This cell computes what the authors' released code (google/e3d_lstm, `src/layers/rnn_cell.py`)
and its PyTorch port in OpenSTL (`openstl/modules/e3dlstm_modules.py`) compute, which differs from
the equations above in these places:
    - M_t = F'_t ∘ tanh(W_mm * M) + I'_t ∘ G'_t: a fourth convolution of M (the `m` block of
      `conv_m`) inside the forget term;
    - O_t = σ(tanh(W_xo * X_t + W_ho * H_{t-1} + W_co * C_t + W_mo * M_t)): a tanh inside σ;
    - no learned biases: the convolutions have none, and F'_t gets a constant `forget_bias` (1);
    - the recall attends over "tokens" that are the rows of the channel-first `[hid, w, H, W]`
      tensor read as a `[w·H·W, hid]` matrix (OpenSTL's reshape; in the channel-last TensorFlow
      code a token is the channel vector of one position), with no 1/√hid scaling and one softmax
      over the tokens of all τ memories;
    - each convolution's kernel spans the whole window (temporal size `w`, no temporal padding)
      and its single output is repeated over the window (OpenSTL's nearest-neighbour resize);
      the 1×1×1 fusion of [C_t, M_t] keeps the window;
    - with `layer_norm=True` each convolution's output is normalised over all its channels, the
      window and the frame together (one LayerNorm per convolution, after it).
Two differences from that code: its LayerNorm of C carries one gain and shift per element of
`[hid, w, H, W]`, which ties a model to one frame size; here they are per channel (GroupNorm with
one group: the same statistics, and the same function at initialisation) so a cell runs at any
frame size. And the released cells return the memory M they were given instead of M_t, so there
every cell reads M = 0; the forecaster (`convcast.models.e3d_lstm`) does the same unless built with
`memory_flow=True`. The cell itself always returns M_t.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers.checkpoint import maybe_checkpoint
from convcast.layers.convlstm import _pair

X_GATES = ("i", "g", "r", "o", "i'", "g'", "f'")  # blocks of conv_x's output channels
H_GATES = ("i", "g", "r", "o")  # blocks of conv_h's output channels
M_GATES = ("i'", "f'", "g'", "m")  # blocks of conv_m's output channels


def recall(query: torch.Tensor, memories: torch.Tensor) -> torch.Tensor:
    """softmax(Q · Kᵀ) · K with Q the query `[B, hid, w, H, W]` and K the memories
    `[B, n, hid, w, H, W]`, both read as rows of `hid` values (see the module docstring)."""
    B, hid = query.shape[:2]
    q = query.reshape(B, 1, -1, hid)  # [B, 1, w*H*W, hid]: one head
    k = memories.reshape(B, 1, -1, hid)  # [B, 1, n*w*H*W, hid]
    # softmax(q kᵀ) k without the 1/√hid scale; a fused kernel where there is one, which keeps
    # no [w*H*W, n*w*H*W] attention matrix for the backward pass
    return F.scaled_dot_product_attention(q, k, k, scale=1.0).reshape(query.shape)


class Eidetic3DLSTMCell(nn.Module):
    """One E3D-LSTM step: `forward(x, h, memories, m) -> (h, c, m)`.

    `x` is `[B, in, w, H, W]` (a window of `w` frames or the layer below's H), `h` and `m` are
    `[B, hid, w, H, W]`, `memories` the layer's last n cell memories `[B, n, hid, w, H, W]`, the
    newest (C_{t-1}) last; `h`, `memories` and `m` may be None (zeros). Returns H_t, C_t and M_t,
    each `[B, hid, w, H, W]`. Works at any frame size.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        *,
        kernel_size: int | Sequence[int] = 5,
        window: int = 2,
        layer_norm: bool = False,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_channels < 1 or window < 1:
            raise ValueError(
                "need in_channels >= 1, hidden_channels >= 1 and window >= 1, got "
                f"{in_channels}, {hidden_channels}, {window}"
            )
        kh, kw = _pair(kernel_size)
        hid = hidden_channels
        self.in_channels, self.hidden_channels, self.window = in_channels, hid, window
        self.kernel_size, self.layer_norm, self.forget_bias = (kh, kw), layer_norm, forget_bias

        def conv(cin: int, cout: int) -> nn.Conv3d:  # one output step from the whole window
            return nn.Conv3d(cin, cout, (window, kh, kw), padding=(0, kh // 2, kw // 2),
                             bias=False)

        self.conv_x = conv(in_channels, 7 * hid)  # X_GATES
        self.conv_h = conv(hid, 4 * hid)  # H_GATES
        self.conv_m = conv(hid, 4 * hid)  # M_GATES
        self.conv_c = conv(hid, hid)  # W_co * C_t
        self.conv_mo = conv(hid, hid)  # W_mo * M_t
        self.conv_last = nn.Conv3d(2 * hid, hid, 1, bias=False)  # the 1×1×1 fusion of [C, M]
        self.norm_c = nn.GroupNorm(1, hid)  # LayerNorm(C_{t-1} + RECALL), always on
        if layer_norm:
            self.norm_x, self.norm_h = nn.GroupNorm(1, 7 * hid), nn.GroupNorm(1, 4 * hid)
            self.norm_m = nn.GroupNorm(1, 4 * hid)
            self.norm_oc, self.norm_om = nn.GroupNorm(1, hid), nn.GroupNorm(1, hid)
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)

    def init_state(self, batch: int, height: int, width: int, like: torch.Tensor, *,
                   memory: bool = False) -> torch.Tensor:
        """A zero `[batch, hidden, window, height, width]` tensor on `like`'s device and dtype; a
        memory (C or M, `memory=True`) in at least float32, since it accumulates over every step."""
        dtype = torch.promote_types(like.dtype, torch.float32) if memory else like.dtype
        return like.new_zeros(batch, self.hidden_channels, self.window, height, width,
                              dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        h: torch.Tensor | None = None,
        memories: torch.Tensor | None = None,
        m: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(H_t, C_t, M_t)`, each `[B, hid, w, H, W]`."""
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[2] != self.window:
            raise ValueError(f"expected input [B, {self.in_channels}, window={self.window}, H, W], "
                             f"got {tuple(x.shape)}")
        B, _, _, H, W = x.shape
        h = self.init_state(B, H, W, x) if h is None else h
        memories = self.init_state(B, H, W, x, memory=True)[:, None] if memories is None \
            else memories
        m = self.init_state(B, H, W, x, memory=True) if m is None else m
        if h.shape[-2:] != (H, W) or memories.dim() != 6 or memories.shape[-2:] != (H, W):
            raise ValueError(f"input frame {(H, W)} and state {tuple(h.shape[-2:])} differ in "
                             "size, or memories is not [B, n, hid, w, H, W]: pass the states this "
                             "cell returned for frames of this size")
        return maybe_checkpoint(self, self._step, x, h, memories, m)

    @staticmethod
    def _norm(norm: nn.GroupNorm, t: torch.Tensor) -> torch.Tensor:
        """GroupNorm in `t`'s own dtype (a float32 memory under bfloat16 weights stays float32)."""
        w, b = norm.weight.to(t.dtype), norm.bias.to(t.dtype)
        return F.group_norm(t, norm.num_groups, w, b, norm.eps)

    def _step(self, x: torch.Tensor, h: torch.Tensor, memories: torch.Tensor,
              m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w, dtype = self.window, x.dtype
        c = memories[:, -1]  # C_{t-1}: [B, hid, w, H, W]
        xg, hg = self.conv_x(x), self.conv_h(h)  # [B, 7|4 * hid, 1, H, W]
        mg = self.conv_m(m.to(dtype))  # [B, 4*hid, 1, H, W]
        if self.layer_norm:
            xg, hg, mg = self.norm_x(xg), self.norm_h(hg), self.norm_m(mg)
        i_x, g_x, r_x, o_x, i2_x, g2_x, f2_x = xg.chunk(7, dim=1)  # each [B, hid, 1, H, W]
        i_h, g_h, r_h, o_h = hg.chunk(4, dim=1)
        i_m, f_m, g_m, m_m = mg.chunk(4, dim=1)
        i, g = torch.sigmoid(i_x + i_h), torch.tanh(g_x + g_h)
        r = torch.sigmoid(r_x + r_h).expand(-1, -1, w, -1, -1)  # the query, over the window
        # the temporal memory in its own (>= float32) dtype; the gates in the compute dtype
        recalled = recall(r.to(memories.dtype), memories)  # [B, hid, w, H, W]
        c_next = self._norm(self.norm_c, c + recalled) + (i * g).to(c.dtype)
        i2, g2 = torch.sigmoid(i2_x + i_m), torch.tanh(g2_x + g_m)
        f2 = torch.sigmoid(f2_x + f_m + self.forget_bias)
        m_next = (f2 * torch.tanh(m_m) + i2 * g2).to(m.dtype).expand(-1, -1, w, -1, -1)
        o_c, o_m = self.conv_c(c_next.to(dtype)), self.conv_mo(m_next.to(dtype))  # [B,hid,1,H,W]
        if self.layer_norm:
            o_c, o_m = self.norm_oc(o_c), self.norm_om(o_m)
        o = torch.tanh(o_x + o_h + o_c + o_m)
        mem = torch.cat([c_next, m_next], dim=1).to(dtype)  # [B, 2*hid, w, H, W]
        h_next = torch.tanh(self.conv_last(mem)) * torch.sigmoid(o)  # [B, hid, w, H, W]
        return h_next, c_next, m_next

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, kernel_size={self.kernel_size}, "
                f"window={self.window}, layer_norm={self.layer_norm}")
