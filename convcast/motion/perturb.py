"""Motion perturbations: the uncertainty of the motion itself, as STEPS draws it for its members.

An ensemble whose members differ only in their values cannot move an echo; at long lead times
most of a nowcast's error is where the rain is, not how much. STEPS (Bowler, Pierce and Seed
2006, "BPS") gives each member its own error of the motion vectors: two numbers per member,

    ε_par, ε_perp ~ Laplace(0, 1/√2)   (unit variance),

scale the unit vectors along the motion, V_par = V/|V|, and across it, V_perp = (-V_par,y,
V_par,x), with standard deviations (km/h) that grow with the lead time t (minutes),

    f_par(t) = a_par t^b_par + c_par,   f_perp(t) = a_perp t^b_perp + c_perp,

(the defaults fitted by BPS and used by pysteps: `PAR = (10.88, 0.23, -7.68)`, `PERP = (5.76,
0.31, -2.72)`), and the member moves with V + f_par ε_par V_par + f_perp ε_perp V_perp (pysteps'
`noise.motion.generate_bps`). Summed over the steps to lead k, the member's extra displacement
(pixels) is

    D_k = S_par(k) ε_par V_par + S_perp(k) ε_perp V_perp,   S(k) = Σ_{i≤k} f(i Δt) Δt / (60 Δx),

Δt the step (minutes) and Δx the pixel size (km): `bps_sums` gives S, `bps_displacement` D_k, and
`shift` moves a forecast by it (the field at p is taken from p - D_k, bilinear, as `advect`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from convcast.motion.advect import pixel_grid, resample

PAR = (10.88, 0.23, -7.68)  # BPS: std (km/h) along the motion, a t^b + c with t in minutes
PERP = (5.76, 0.31, -2.72)  # BPS: std (km/h) across the motion


def _check_params(name: str, p: Sequence[float]) -> tuple[float, float, float]:
    if len(p) != 3 or not all(isinstance(v, (int, float)) for v in p):
        raise ValueError(f"bps: {name} must be three numbers (a, b, c) of a t^b + c, got {p!r}")
    return float(p[0]), float(p[1]), float(p[2])


def bps_sums(horizon: int, *, kmperpixel: float, timestep: float,
             p_par: Sequence[float] = PAR, p_perp: Sequence[float] = PERP) -> Tensor:
    """S(k) `[horizon, 2]` (along, across; float64): the displacement in pixels at leads 1..horizon
    per unit ε, i.e. the sum over the steps of pysteps' `generate_bps` magnitude at t = i Δt."""
    if not kmperpixel > 0 or not timestep > 0:
        raise ValueError(f"bps: kmperpixel and timestep must be positive (the pixel size in km "
                         f"and the step in minutes), got {kmperpixel!r} and {timestep!r}")
    t = torch.arange(1, horizon + 1, dtype=torch.float64) * timestep  # [K] minutes
    f = [a * t.pow(b) + c for a, b, c in (_check_params("p_par", p_par),
                                          _check_params("p_perp", p_perp))]  # km/h each
    per_step = torch.stack(f, 1) * timestep / (60.0 * kmperpixel)  # [K, 2] pixels per step
    return per_step.cumsum(0)  # [K, 2]


def laplace(shape: Sequence[int], generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> Tensor:
    """Laplace(0, 1/√2) draws (unit variance, as BPS' ε) by inverse transform, float64."""
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64,
                   device=generator.device if generator is not None else device) - 0.5
    return -(1 / 2 ** 0.5) * u.sign() * torch.log1p(-2 * u.abs().clamp(max=0.5 - 1e-12))


def directions(motion: Tensor) -> tuple[Tensor, Tensor]:
    """The unit vectors along and across `motion` `[B, 2, H, W]` (x, y), 0 where it is still."""
    speed = motion.norm(dim=1, keepdim=True)  # [B, 1, H, W]
    par = torch.where(speed > 1e-12, motion / speed.clamp(min=1e-12), torch.zeros_like(motion))
    perp = torch.stack([-par[:, 1], par[:, 0]], 1)  # [B, 2, H, W]
    return par, perp


def bps_displacement(par: Tensor, perp: Tensor, eps: Tensor, sums: Tensor) -> Tensor:
    """D_k `[B, M, 2, H, W]` of M members at one lead: `par`, `perp` `[B, 2, H, W]`
    (`directions`), `eps` `[B, M, 2]` (ε_par, ε_perp), `sums` `[2]` (S_par(k), S_perp(k)) or
    `[B, 2]` (each window's own grid)."""
    sums = sums.to(eps)
    e = (eps * (sums.unsqueeze(-2) if sums.dim() == 2 else sums)).to(par.dtype)  # [B, M, 2]
    return (e[:, :, 0, None, None, None] * par.unsqueeze(1)
            + e[:, :, 1, None, None, None] * perp.unsqueeze(1))  # [B, M, 2, H, W]


def shift(field: Tensor, displacement: Tensor, outval: float | str | Tensor = "min") -> Tensor:
    """`field` `[N, C, H, W]` moved by `displacement` `[N, 2, H, W]` (x, y pixels): the value at
    p is the field's at p - D(p), bilinear; from outside the frame `outval` (as `advect`)."""
    H, W = field.shape[-2:]
    coords = pixel_grid(H, W, displacement) - displacement  # [N, 2, H, W]
    return resample(field, coords, outval)
