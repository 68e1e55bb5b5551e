"""TrajGRU cell (Shi et al., NIPS 2017, "Deep Learning for Precipitation Nowcasting: A Benchmark
and a New Model", section 3.3): a ConvGRU whose state-to-state connections follow L flow fields
that a small subnetwork computes from the input and the state at every step.

With `*` a 2-D convolution, `∘` the Hadamard product, f the new-memory activation and γ the flow
subnetwork:

    U_t, V_t = γ(X_t, H_{t-1})                        L flow fields (U_{t,l}, V_{t,l}), l = 1..L
    Z_t  = σ(W_xz * X_t + Σ_l W_hz^l * warp(H_{t-1}, U_{t,l}, V_{t,l}))
    R_t  = σ(W_xr * X_t + Σ_l W_hr^l * warp(H_{t-1}, U_{t,l}, V_{t,l}))
    H'_t = f(W_xh * X_t + R_t ∘ (Σ_l W_hh^l * warp(H_{t-1}, U_{t,l}, V_{t,l})))
    H_t  = (1 - Z_t) ∘ H'_t + Z_t ∘ H_{t-1}

The W_h·^l are 1x1 kernels: the L warped copies of H_{t-1} are stacked along the channels and one
1x1 convolution (`conv_h`, [3*hid, L*hid]) computes the three sums at once. γ is, as in the
authors' HKO-7 code, F = f(W_xf * X_t + W_hf * H_{t-1}) with `flow_channels` (32) channels, then
(U, V) = W_f * F (`flow_x`, `flow_h`, `flow_out`, all `flow_kernel_size` (5x5) kernels).
`flow_out` starts at zero (HKO-7's INIT_GRID), so an untrained cell's links all read the state
where it is: a ConvGRU with 1x1 state-to-state kernels.

warp is bilinear sampling, M(p) = Σ_q H(q) max(0, 1 - |p_x - u - q_x|) max(0, 1 - |p_y - v - q_y|):
`warp(h, flows)` samples H at p - (u, v), in pixels, and reads zeros outside the frame. So a flow
is the motion of the state: a flow of (+1, 0) moves it one pixel to the right. This is the
authors' code (it warps by the negated flow, GridGenerator(-flow) + BilinearSampler); the paper's
printed warp equation samples at p + (U, V), i.e. its flows are the negatives of these. Being
learned, the two conventions train alike; weights from the authors' code copy across as they are.
Pixel coordinates map to grid_sample's [-1, 1] with `align_corners=True` (pixel 0 at -1, pixel
W-1 at 1), as MXNet's BilinearSampler does; the flow of output channels (2l, 2l+1) is link l's
(u, v), u along the width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers.checkpoint import maybe_checkpoint
from convcast.layers.conv_gru import GRUCellBase, activation_fn, gru_update, kernel_pair


def warp(h: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """The L links' warped copies of `h [B, C, H, W]` along `flows [B, 2L, H, W]` (pixels;
    channels (2l, 2l+1) = link l's (u, v), u along the width): `[B, L*C, H, W]`, channels
    `l*C + c` = h[c] sampled at p - flow_l(p), bilinear, zero outside the frame. All L links are
    sampled by one grid_sample (their sampling grids stacked along the height)."""
    B, C, H, W = h.shape
    L = flows.shape[1] // 2
    if flows.shape[1] != 2 * L or flows.shape[-2:] != (H, W):
        raise ValueError(f"flows must be [B, 2L, {H}, {W}] for a state {tuple(h.shape)}, got "
                         f"{tuple(flows.shape)}")
    dtype = torch.promote_types(flows.dtype, torch.float32)  # bf16 would misplace the samples
    ys = torch.linspace(-1.0, 1.0, H, dtype=dtype, device=flows.device)
    xs = torch.linspace(-1.0, 1.0, W, dtype=dtype, device=flows.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2], (x, y)
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], dtype=dtype,
                         device=flows.device)  # pixels -> grid_sample's [-1, 1]
    uv = flows.to(dtype).reshape(-1, L, 2, H, W).permute(0, 1, 3, 4, 2)  # [B, L, H, W, 2]
    grid = (base - uv * scale).reshape(-1, L * H, W, 2)  # [B, L*H, W, 2]
    out = F.grid_sample(h.to(dtype), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)  # [B, C, L*H, W]
    return out.to(h.dtype).reshape(-1, C, L, H, W).transpose(1, 2).reshape(-1, L * C, H, W)


class TrajGRUCell(GRUCellBase):
    """One TrajGRU step: `forward(x [B, C_in, H, W] or None, h [B, hid, H, W] or None) -> h`.

    `links` is L, the number of flow fields; `input_kernel_size` the input-to-state kernel (3x3
    in HKO-7); `flow_kernel_size` / `flow_channels` size the flow subnetwork γ (5x5, 32).
    `in_channels=0` makes an input-less cell (γ then reads the state only). `flows(x, h)` gives
    the flow fields of one step, `[B, 2L, H, W]` in pixels.
    """

    def __init__(self, in_channels: int, hidden_channels: int, links: int = 5, *,
                 input_kernel_size: int | Sequence[int] = 3,
                 flow_kernel_size: int | Sequence[int] = 5, flow_channels: int = 32,
                 activation: str = "leaky") -> None:
        super().__init__()
        if in_channels < 0 or hidden_channels < 1 or links < 1 or flow_channels < 1:
            raise ValueError(f"need in_channels >= 0, hidden_channels, links and flow_channels "
                             f">= 1, got {in_channels}, {hidden_channels}, {links}, "
                             f"{flow_channels}")
        ki = kernel_pair(input_kernel_size, "input_kernel_size")
        kf = kernel_pair(flow_kernel_size, "flow_kernel_size")
        pi, pf = (ki[0] // 2, ki[1] // 2), (kf[0] // 2, kf[1] // 2)
        self.in_channels, self.hidden_channels, self.links = in_channels, hidden_channels, links
        self.input_kernel_size, self.flow_kernel_size = ki, kf
        self.flow_channels, self.activation = flow_channels, activation
        self.act = activation_fn(activation)
        gates = 3 * hidden_channels
        self.conv_x = (nn.Conv2d(in_channels, gates, ki, padding=pi)
                       if in_channels else None)  # W_xr, W_xz, W_xh
        self.flow_x = nn.Conv2d(in_channels, flow_channels, kf, padding=pf) if in_channels else None
        self.flow_h = nn.Conv2d(hidden_channels, flow_channels, kf, padding=pf)
        self.flow_out = nn.Conv2d(flow_channels, 2 * links, kf, padding=pf)  # (u_l, v_l) per link
        self.conv_h = nn.Conv2d(links * hidden_channels, gates, 1)  # W_h·^l of all links, 1x1
        self.checkpointing = False  # recompute the step in backward (set_checkpointing)
        with torch.no_grad():  # zero flows at start: every link reads the state where it is
            self.flow_out.weight.zero_()
            self.flow_out.bias.zero_()

    def prepare(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """The input parts of frames `x [N, C_in, H, W]` (any number at once):
        `[N, 3*hid + flow_channels, H, W]`, W_x·*X then W_xf*X; None for no input."""
        if x is None:
            return None
        if self.conv_x is None:
            raise ValueError("this cell has in_channels=0 and reads no input; pass x=None")
        return torch.cat([self.conv_x(x), self.flow_x(x)], dim=1)

    def _flows(self, prepared: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        f = self.flow_h(h)  # [B, flow_channels, H, W]
        if prepared is not None:
            f = f + prepared[:, 3 * self.hidden_channels:]
        return self.flow_out(self.act(f))  # [B, 2L, H, W]

    def flows(self, x: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """The flow fields γ(X_t, H_{t-1}) of one step, `[B, 2L, H, W]` in pixels."""
        return self._flows(self.prepare(x), h)

    def step(self, prepared: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        """Advance H by one step from a `prepare`d input (None: no input); recomputed in the
        backward pass under gradient checkpointing (`convcast.layers.set_checkpointing`)."""
        return maybe_checkpoint(self, self._step, prepared, h)

    def _step(self, prepared: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
        warped = warp(h, self._flows(prepared, h))  # [B, L*hid, H, W]
        x_gates = None if prepared is None else prepared[:, :3 * self.hidden_channels]
        return gru_update(x_gates, self.conv_h(warped), h, self.act)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.hidden_channels}, links={self.links}, "
                f"input_kernel_size={self.input_kernel_size}, "
                f"flow_kernel_size={self.flow_kernel_size}, flow_channels={self.flow_channels}, "
                f"activation={self.activation!r}")
