"""Semi-Lagrangian extrapolation in torch: pysteps' backward scheme, batched and differentiable.

A field moving with a steady motion V (pixels per step) is, at lead time t, the last observed
field sampled at the point each pixel came from: F_t(p) = F_0(p + D_t(p)). The displacement D_t
is integrated backwards one step at a time with the midpoint rule (Germann and Zawadzki 2002, as
`pysteps.extrapolation.semilagrangian.extrapolate` with its default `n_iter=1`):

    d = V(p + D_{t-1} - d / 2),   D_t = D_{t-1} - d,   then d = V(p + D_t) for the next step.

Conventions are pysteps': `motion[:, 0]` is the x (column) component and `motion[:, 1]` the y
(row) component, in pixels per time step; the motion is read bilinearly with edge values
continued outside the frame (scipy's `nearest` mode), the field bilinearly with `outval` for any
departure point outside the frame (scipy's `constant` mode), or with its edge values continued
(`outval="edge"`, scipy's `nearest` mode: a camera's scene goes on beyond the frame).
`torch.nn.functional.grid_sample` does the sampling, so the forecast is differentiable in both
the field and the motion and runs wherever the tensors live (CPU or GPU), for a whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _sample(field: Tensor, coords: Tensor, padding: str) -> Tensor:
    """Bilinear samples of `field` [B, K, H, W] at pixel coordinates `coords` [B, 2, H, W]
    (x, y) -> [B, K, H, W]; `padding` is grid_sample's (`border`: edge values continued)."""
    H, W = field.shape[-2:]
    gx = coords[:, 0] * (2.0 / (W - 1)) - 1.0  # [B, H, W] in [-1, 1] inside the frame
    gy = coords[:, 1] * (2.0 / (H - 1)) - 1.0  # [B, H, W]
    grid = torch.stack([gx, gy], dim=-1)  # [B, H, W, 2]
    return F.grid_sample(field, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def pixel_grid(height: int, width: int, like: Tensor) -> Tensor:
    """Pixel coordinates `[1, 2, H, W]` (x then y, as pysteps' `xy_coords`)."""
    ys = torch.arange(height, dtype=like.dtype, device=like.device)
    xs = torch.arange(width, dtype=like.dtype, device=like.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack([gx, gy]).unsqueeze(0)  # [1, 2, H, W]


def displacements(motion: Tensor, horizon: int, n_iter: int = 1) -> Tensor:
    """Backward displacements D_1..D_horizon `[B, horizon, 2, H, W]` of a motion `[B, 2, H, W]`
    (pysteps' scheme: midpoint rule with `n_iter` inner iterations, 0 for forward Euler)."""
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    B, _, H, W = motion.shape
    xy = pixel_grid(H, W, motion)  # [1, 2, H, W]

    def velocity_at(disp: Tensor) -> Tensor:
        v = _sample(motion, xy + disp, "border")  # [B, 2, H, W]
        return v / n_iter if n_iter > 1 else v

    disp = torch.zeros_like(motion)  # [B, 2, H, W]
    inc = motion  # [B, 2, H, W] first guess of one step's displacement
    out = []
    for t in range(horizon):
        if n_iter > 0:
            for _ in range(n_iter):
                inc = velocity_at(disp - inc / 2)  # velocity at the midpoint of the step
                disp = disp - inc
                inc = velocity_at(disp)
        else:
            inc = motion if t == 0 else velocity_at(disp)  # velocity at the arrival point
            disp = disp - inc
        out.append(disp)
    return torch.stack(out, dim=1)  # [B, horizon, 2, H, W]


OUTVALS = ("min", "edge")  # the named fills: the field's minimum, its edge values continued


def check_outval(owner: str, outval: float | str) -> None:
    """Refuse an `outval` that is neither a number nor one of `OUTVALS`, naming `owner`."""
    if not (outval in OUTVALS or isinstance(outval, (int, float))):
        raise ValueError(f"{owner}: outval must be a number, 'min' or 'edge', got {outval!r}")


def fill_value(frame: Tensor, outval: float | str | Tensor) -> Tensor:
    """The value of pixels advected in from outside, `[B, C, 1, 1]`: a number, a tensor that
    broadcasts to `[B, C]`, or "min" for the minimum of each field (pysteps' `outval="min"`)."""
    B, C = frame.shape[:2]
    if isinstance(outval, str):
        if outval != "min":
            raise ValueError(f"outval must be a number, a tensor, 'min' or 'edge', got "
                             f"{outval!r}")
        return frame.detach().amin(dim=(-2, -1), keepdim=True)  # [B, C, 1, 1]
    fill = torch.as_tensor(outval, dtype=frame.dtype, device=frame.device)
    return fill.expand(B, C).reshape(B, C, 1, 1) if fill.dim() <= 2 else fill


def advect(frame: Tensor, motion: Tensor, horizon: int, outval: float | str | Tensor = "min",
           n_iter: int = 1, compute_dtype: torch.dtype | None = torch.float64) -> Tensor:
    """Extrapolate `frame` `[B, C, H, W]` along `motion` `[B, 2, H, W]` (x, y px/step; every
    channel moves alike) for `horizon` steps -> `[B, horizon, C, H, W]` in `frame`'s dtype.

    Matches `pysteps.extrapolation.semilagrangian.extrapolate(frame[b, c], motion[b], horizon,
    outval=...)` to float64 precision (`outval="edge"`: edge values continued instead of a
    fill). The sampling runs in `compute_dtype` (None: the frame's):
    float64 by default, because grid_sample's normalised coordinates lose ~1e-6 px in float32;
    computed in float64, an integer translation moves a float32 frame by exact pixels (and a
    float64 one to 1e-14).
    """
    if frame.dim() != 4:
        raise ValueError(f"advect: frame must be [B, C, H, W], got {tuple(frame.shape)}")
    B, C, H, W = frame.shape
    if motion.shape != (B, 2, H, W):
        raise ValueError(f"advect: motion must be [B, 2, H, W] = [{B}, 2, {H}, {W}] (x then y "
                         f"component per pixel), got {tuple(motion.shape)}")
    if H < 2 or W < 2:
        raise ValueError(f"advect: frames must be at least 2x2 pixels, got {H}x{W}")
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"advect: horizon must be a positive int, got {horizon!r}")
    dtype = frame.dtype
    if compute_dtype is not None:
        frame = frame.to(compute_dtype)
    motion = motion.to(frame.dtype)
    disp = displacements(motion, horizon, n_iter)  # [B, horizon, 2, H, W]
    coords = pixel_grid(H, W, frame).unsqueeze(1) + disp  # [B, horizon, 2, H, W]
    src = frame.unsqueeze(1).expand(B, horizon, C, H, W).flatten(0, 1)  # [B*h, C, H, W]
    if not (isinstance(outval, str) and outval == "edge"):  # each window's fill, every lead
        outval = fill_value(frame, outval).unsqueeze(1).expand(B, horizon, C, 1, 1).flatten(0, 1)
    out = resample(src, coords.flatten(0, 1), outval)  # [B*h, C, H, W]
    return out.view(B, horizon, C, H, W).to(dtype)


def resample(field: Tensor, coords: Tensor, outval: float | str | Tensor = "min") -> Tensor:
    """`field` `[N, C, H, W]` read bilinearly at pixel coordinates `coords` `[N, 2, H, W]` (x, y):
    `outval` for points outside the frame (a number, a tensor broadcasting to `[N, C]`, "min":
    each field's minimum), or the edge values continued (`"edge"`)."""
    H, W = field.shape[-2:]
    coords = coords.to(field.dtype)
    warped = _sample(field, coords, "border")  # [N, C, H, W]
    if isinstance(outval, str) and outval == "edge":  # a camera's scene goes on beyond the frame
        return warped
    fill = fill_value(field, outval)  # [N, C, 1, 1]
    inside = ((coords[:, 0] >= 0) & (coords[:, 0] <= W - 1)
              & (coords[:, 1] >= 0) & (coords[:, 1] <= H - 1)).unsqueeze(1)  # [N, 1, H, W]
    return torch.where(inside, warped, fill)  # [N, C, H, W]
