"""pysteps' probability nowcasts as baselines: the local Lagrangian probability
(`lagrangian_probability`) and STEPS noise around any deterministic nowcast (`steps_noise`).

Both read convcast values as `convcast.models.pysteps_nowcasts` does (HKO-7 pixels, linear in
dBZ, by default; `transform="db"` for a rain rate), with Lucas–Kanade motion estimated as the
`optical_flow` baseline does, one batch item and channel at a time; nothing is learned.

- `lagrangian_probability` (Germann and Zawadzki 2004): pysteps'
  `nowcasts.get_method("lagrangian_probability")`, the exceedance probability of a threshold in a
  neighbourhood of the extrapolated field that grows with lead time (`slope` pixels per step,
  pysteps' default 5). It is not an ensemble (registry `ensemble=False`): `forward` is its
  extrapolation (the last frame advected by pysteps' `extrapolation.forecast`, as it does inside),
  so `sample` is that ensemble of one, and `probabilities(x, horizon, thresholds)` gives its
  probabilities `[B, horizon, P, H, W]` for thresholds in the input's values.
- `steps_noise`: pysteps' blended STEPS (`pysteps.blending.steps.forecast`) with
  `nowcasting_method="external_nowcast"`: the cascade of a deterministic nowcast (`base`, any
  registered deterministic baseline such as `optical_flow`, or a forecaster module, e.g. a
  trained model) takes the place of STEPS' autoregressive extrapolation and pysteps adds its
  noise cascade, weighted by the skill of the observed cascade's autoregression as it decays
  with lead time, as STEPS weighs its own. pysteps' blending also needs an NWP forecast: a field
  of no rain stands in for it, whose skill (its correlation with the latest frame) is zero, so it
  gets no weight and only the nowcast and the noise are blended; the climatological skill pysteps
  keeps on disk lives in a temporary folder per call. The nowcast is not perturbed by an
  autoregression as STEPS' extrapolation is, so the spread grows more slowly with lead time
  than `steps`' does. `sample` draws the members; `forward` is the base nowcast itself (the
  unperturbed member).

Pixels advected in from outside the frame (pysteps' NaN) are no rain, and a probability of 0.
pysteps is an optional dependency (`pip install convcast[nowcast]`), imported on first use;
`steps_noise` needs a pysteps whose blending takes an external nowcast (`has_external_nowcast`;
pysteps 1.21 does), and says so when built with an older one.
"""

from __future__ import annotations

import datetime
import inspect
import tempfile
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from convcast.metrics.checks import check_thresholds
from convcast.models.base import check_size
from convcast.models.pysteps_nowcasts import (
    FAILURES,
    FIXED,
    STEPS_OWN,
    PystepsNowcast,
    check_choice,
    check_number,
    quiet,
)
from convcast.models.registry import register_model
from convcast.pysteps_modules import pysteps_module

ISSUE_TIME = datetime.datetime(2000, 1, 1)  # blending names its skill file by it; any time does


def import_blending() -> SimpleNamespace:
    """pysteps' blended STEPS (`pysteps.blending.steps`), imported quietly."""
    return SimpleNamespace(steps=pysteps_module("blending.steps",
                                                needed_by="the steps_noise baseline"))


def has_external_nowcast() -> bool:
    """Whether the installed pysteps' blended STEPS takes an external nowcast (`precip_nowcast`,
    `nowcasting_method`; added in 2025, pySTEPS/pysteps#500; 1.21 has it)."""
    params = inspect.signature(import_blending().steps.forecast).parameters
    return "precip_nowcast" in params and "nowcasting_method" in params


@register_model("lagrangian_probability", baseline=True)
class LagrangianProbability(PystepsNowcast):
    """The local Lagrangian probability nowcast (Germann and Zawadzki 2004), pysteps'
    `lagrangian_probability` with its defaults, on Lucas–Kanade motion.

    `probabilities(x, horizon, thresholds)` -> `[B, horizon, P, H, W]`: for each threshold (in
    the input's values), pysteps' probability that the extrapolated field is >= it in a disk of
    `slope` * lead-time pixels. `forward(x, horizon)` is the extrapolation it is computed from,
    the last frame advected (input values); `sample` gives it as an ensemble of one.

    Args:
        in_channels: channels of the frames (`forward` forecasts each on its own;
            `probabilities` needs one channel).
        slope: pixels of neighbourhood per step of lead time (pysteps' default 5).
        transform: "none" (values already logarithmic: convcast pixels, dBZ, dBR) or "db" (a
            rain rate, dB-transformed; thresholds then in the same rain rate).
        threshold: the smallest rain in input units (default 0.1 mm/h, as an HKO-7 pixel for
            "none"); values below it are no rain.
        zerovalue: no rain in the method's space (default 0 for "none", threshold - 5 dB for "db").
        motion_frames: how many of the latest frames the motion is estimated from.
        nowcast_kwargs: other keyword arguments for pysteps' `lagrangian_probability`
            (`extrap_method`, `extrap_kwargs`; also used by `forward`).
    """

    transforms = ("none", "db")
    own = {"slope": "slope", "threshold": "thresholds of probabilities()"}

    def __init__(self, in_channels: int = 1, *, slope: float = 5.0, transform: str = "none",
                 threshold: float | None = None, zerovalue: float | None = None,
                 motion_frames: int = 3, nowcast_kwargs: dict | None = None,
                 **ignored: Any) -> None:
        super().__init__(in_channels, transform=transform, threshold=threshold,
                         zerovalue=zerovalue, ar_order=1, n_cascade_levels=3,
                         motion_frames=motion_frames, nowcast_kwargs=nowcast_kwargs)
        self.slope = check_number("lagrangian_probability", "slope", slope, positive=True)

    @property
    def frames_needed(self) -> int:
        return 1  # the latest frame (one frame: no motion, i.e. persistence)

    @property
    def needs_why(self) -> str:
        return "the latest frame"

    def extrapolation(self, field: np.ndarray, velocity: np.ndarray, horizon: int) -> np.ndarray:
        """pysteps' extrapolation `[horizon, H, W]` of the last frame of `field [T, H, W]`
        (method space, NaN outside), as `lagrangian_probability` makes it."""
        kw = self.nowcast_kwargs
        with quiet():
            return self.pysteps.nowcasts.get_method("extrapolation")(
                field[-1], velocity, horizon, extrap_method=kw.get("extrap_method",
                                                                   "semilagrangian"),
                extrap_kwargs=kw.get("extrap_kwargs"))

    def forecast_field(self, frames: np.ndarray, horizon: int,
                       members: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The extrapolation `[members, horizon, H, W]` (input values), its motion, its route."""
        field, velocity = self.field_and_motion(frames)
        out = self.from_method(self.extrapolation(field, velocity, horizon))  # [horizon, H, W]
        return np.broadcast_to(out, (members, *out.shape)), velocity, "pysteps"

    def field_and_motion(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input frames `[T, H, W]` -> the method's field `[T, H, W]` and motion `[2, H, W]`."""
        from convcast.motion import estimate_motion

        field = self.to_method(frames)
        return field, estimate_motion(self.motion_input(frames, field)[-self.motion_frames:])

    def method_thresholds(self, thresholds: float | Sequence[float]) -> list[float]:
        """Thresholds in input values -> the method's space (dB for "db")."""
        values = check_thresholds("lagrangian_probability.probabilities", thresholds)
        if self.transform != "db":
            return values
        if min(values) <= 0:
            raise ValueError(f"lagrangian_probability: with transform='db' the thresholds are a "
                             f"rain rate and must be positive, got {values}")
        return [10 * float(np.log10(v)) for v in values]

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, horizon: int,
                      thresholds: float | Sequence[float]) -> torch.Tensor:
        """Exceedance probabilities `[B, horizon, P, H, W]` in [0, 1] of `thresholds` (P of them,
        input values) for one-channel frames `x [B, T_in, 1, H, W]`."""
        self.check_input(x, horizon)
        thr = self.method_thresholds(thresholds)
        B, _, C, H, W = x.shape
        if C != 1:
            raise ValueError(f"lagrangian_probability.probabilities reads one-channel frames "
                             f"[B, T_in, 1, H, W], got {C} channels; call it once per channel "
                             "(x[:, :, c:c + 1])")
        frames = x[:, -self.window:, 0].detach().double().cpu().numpy()  # [B, t, H, W]
        lprob = self.pysteps.nowcasts.get_method("lagrangian_probability")
        out = np.empty((B, horizon, len(thr), H, W))
        vel = np.zeros((B, 1, 2, H, W))
        for b in range(B):
            field, vel[b, 0] = self.field_and_motion(frames[b])
            for p, t in enumerate(thr):
                with quiet():
                    prob = lprob(field[-1], vel[b, 0], horizon, t, slope=self.slope,
                                 **self.nowcast_kwargs)  # [horizon, H, W], NaN outside
                out[b, :, p] = np.nan_to_num(prob, nan=0.0)
        self.last_velocity, self.last_route = vel, np.full((B, 1), "pysteps", dtype=object)
        return self.as_tensor(out, x)


@register_model("steps_noise", baseline=True, ensemble=True)
class StepsNoise(PystepsNowcast):
    """STEPS noise around a deterministic nowcast: pysteps' blended STEPS with
    `nowcasting_method="external_nowcast"` (see the module docstring), with the settings of the
    `steps` baseline (6 cascade levels, nonparametric noise, "bps" motion perturbations,
    incremental mask, 2 km pixels, 5 min steps, seed 24) and pysteps' blending defaults otherwise.

    `sample(x, horizon, members=M)` gives M members `[B, M, horizon, C, H, W]` in the input's
    values; `forward(x, horizon)` the base nowcast (the unperturbed member). Every field is
    forecast with the same `seed`. Where the latest frame is dry, or pysteps cannot fit its model
    (rain frozen in place, a degenerate field: said by a RuntimeWarning), every member is the base
    nowcast; `last_route` says which ("pysteps", "dry", "nowcast").

    Args:
        in_channels: channels of the frames (each is forecast on its own).
        base: the deterministic nowcast: a registered deterministic baseline's name (built with
            `base_kwargs`) or a forecaster module (e.g. a trained model) reading the same values.
        base_kwargs: keyword arguments of the named base (e.g. {"method": "vet"}).
        seed: pysteps' seed of the noise and motion perturbations (None: random).
        transform / threshold / zerovalue / ar_order / n_cascade_levels / motion_frames /
            kmperpixel / timestep / noise_method / vel_pert_method / mask_method: as `steps`'.
        nowcast_kwargs: other keyword arguments for `pysteps.blending.steps.forecast` (e.g.
            probmatching_method, noise_stddev_adj, weights_method).
    """

    transforms = ("none", "db")
    own = STEPS_OWN  # the STEPS settings it sets itself, as `steps`
    BLEND_FIXED = ("precip_models", "velocity_models", "issuetime", "precip_nowcast",
                   "nowcasting_method", "outdir_path_skill")
    routes = ("pysteps", "dry", "nowcast")

    def __init__(self, in_channels: int = 1, *, base: str | nn.Module = "optical_flow",
                 base_kwargs: dict | None = None, seed: int | None = 24,
                 transform: str = "none", threshold: float | None = None,
                 zerovalue: float | None = None, ar_order: int = 2, n_cascade_levels: int = 6,
                 kmperpixel: float = 2.0, timestep: float = 5.0,
                 noise_method: str | None = "nonparametric", vel_pert_method: str | None = "bps",
                 mask_method: str | None = "incremental", motion_frames: int = 3,
                 nowcast_kwargs: dict | None = None, **ignored: Any) -> None:
        super().__init__(in_channels, transform=transform, threshold=threshold,
                         zerovalue=zerovalue, ar_order=ar_order,
                         n_cascade_levels=n_cascade_levels, motion_frames=motion_frames,
                         nowcast_kwargs=nowcast_kwargs)
        name = "steps_noise"
        if seed is not None:
            check_size(name, "seed", seed, minimum=0)
        self.seed = seed
        self.kmperpixel = check_number(name, "kmperpixel", kmperpixel, positive=True)
        self.timestep = check_number(name, "timestep", timestep, positive=True)
        check_choice(name, "noise_method", noise_method,
                     ("parametric", "nonparametric", "ssft", "nested", None))
        check_choice(name, "vel_pert_method", vel_pert_method, ("bps", None))
        check_choice(name, "mask_method", mask_method, ("obs", "incremental", None))
        self.noise_method, self.vel_pert_method = noise_method, vel_pert_method
        self.mask_method = mask_method
        self.base = self.build_base(base, base_kwargs)

    def build_base(self, base: str | nn.Module, base_kwargs: dict | None) -> nn.Module:
        """The deterministic nowcast: a module as it is, or a registered deterministic baseline."""
        from convcast.models.registry import create_model, is_baseline, list_models, model_info

        if isinstance(base, nn.Module):
            if base_kwargs:
                raise ValueError("steps_noise: base_kwargs are for a base given by name; a base "
                                 "module is used as it is")
            if getattr(base, "in_channels", self.in_channels) != self.in_channels:
                raise ValueError(f"steps_noise: the base reads {base.in_channels} channels but "
                                 f"in_channels={self.in_channels}")
            return base
        valid = [n for n in list_models() if is_baseline(n) and not model_info(n).ensemble]
        if not isinstance(base, str) or base not in valid:
            raise ValueError(f"steps_noise: base must be a deterministic baseline "
                             f"({', '.join(valid)}) or a forecaster module (e.g. a trained "
                             f"model), got {base!r}")
        if base_kwargs is not None and not isinstance(base_kwargs, dict):
            raise ValueError(f"steps_noise: base_kwargs must be a dict of {base}'s keyword "
                             f"arguments, got {base_kwargs!r}")
        return create_model(base, **{**(base_kwargs or {}), "in_channels": self.in_channels})

    def check_nowcast_kwargs(self, kwargs: dict | None) -> dict:
        """Extra keyword arguments of `pysteps.blending.steps.forecast`, none of those the
        baseline sets itself; an error where the installed pysteps takes no external nowcast."""
        if not has_external_nowcast():
            raise ImportError("steps_noise needs pysteps' blending with an external nowcast "
                              "(precip_nowcast, nowcasting_method='external_nowcast'), which the "
                              "installed pysteps lacks: pip install -U pysteps")
        takes = inspect.signature(import_blending().steps.forecast).parameters
        if kwargs is None:
            return {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"steps_noise: nowcast_kwargs must be a dict of keyword arguments "
                             f"for pysteps.blending.steps.forecast, got {kwargs!r}")
        unknown = sorted(set(kwargs) - set(takes))
        if unknown:
            raise ValueError(f"steps_noise: pysteps.blending.steps.forecast takes no argument "
                             f"{', '.join(unknown)} (nowcast_kwargs); its arguments: "
                             f"{', '.join(takes)}")
        taken = sorted(set(kwargs) & (set(FIXED) | set(self.BLEND_FIXED) | set(self.own)))
        if taken:
            how = [f"{k} (set by its argument {self.own[k]})" if k in self.own else f"{k} (fixed)"
                   for k in taken]
            raise ValueError(f"steps_noise: nowcast_kwargs may not set {', '.join(how)}")
        return dict(kwargs)

    @property
    def frames_needed(self) -> int:
        return self.ar_order + 1

    def blend(self, window: np.ndarray, nowcast: np.ndarray, velocity: np.ndarray,
              members: int) -> np.ndarray:
        """pysteps' members `[members, horizon, H, W]` around `nowcast [horizon, H, W]` from the
        observed `window [ar_order + 1, H, W]` (method space)."""
        horizon, H, W = nowcast.shape
        stack = np.concatenate([window[-1:], nowcast])[None]  # [1, horizon + 1, H, W], t0 first
        no_skill = np.full_like(stack, self.no_rain)  # the NWP stand-in: no rain, no skill
        motion = np.broadcast_to(velocity, (1, horizon + 1, 2, H, W)).copy()
        with tempfile.TemporaryDirectory(prefix="convcast-steps-noise-") as skill, quiet():
            return import_blending().steps.forecast(
                precip=window, precip_models=no_skill, velocity=velocity,
                velocity_models=motion, timesteps=horizon, timestep=self.timestep,
                issuetime=ISSUE_TIME, n_ens_members=members, precip_nowcast=stack,
                nowcasting_method="external_nowcast",
                n_cascade_levels=self.n_cascade_levels, precip_thr=self.method_threshold,
                kmperpixel=self.kmperpixel, noise_method=self.noise_method,
                ar_order=self.ar_order, vel_pert_method=self.vel_pert_method,
                mask_method=self.mask_method, seed=self.seed, outdir_path_skill=skill,
                **self.nowcast_kwargs)  # [members, horizon, H, W]

    def noise_field(self, frames: np.ndarray, nowcast: np.ndarray, horizon: int,
                    members: int) -> tuple[np.ndarray, np.ndarray, str]:
        """One field's members `[members, horizon, H, W]` (input values) around its base nowcast
        `[horizon, H, W]` (input values), its motion and its route."""
        from convcast.motion import estimate_motion

        field = self.to_method(frames)  # [T, H, W]
        velocity = estimate_motion(self.motion_input(frames, field)[-self.motion_frames:])
        plain = np.broadcast_to(nowcast, (members, *nowcast.shape))
        if not (field[-1] >= self.method_threshold).any():
            return plain, velocity, "dry"
        window = field[-self.frames_needed:]
        if (window == window[-1]).all():  # rain frozen in place: no autoregression to fit
            return plain, velocity, "nowcast"
        try:
            out = self.blend(window, self.to_method(nowcast), velocity, members)
        except FAILURES as err:
            if all(np.ptp(f) > 0 for f in window):
                warnings.warn(f"steps_noise: pysteps could not add noise to a field "
                              f"({type(err).__name__}: {err}); its members are the base nowcast",
                              RuntimeWarning, stacklevel=4)
            return plain, velocity, "nowcast"
        H, W = nowcast.shape[1:]
        return self.from_method(out.reshape(members, horizon, H, W)), velocity, "pysteps"

    def sample(self, x: torch.Tensor, horizon: int, members: int = 1,
               **inputs: torch.Tensor | None) -> torch.Tensor:
        """`members` members `[B, members, horizon, C, H, W]`, in the input's values."""
        check_size("steps_noise", "members", members)
        self._read_inputs(inputs)  # reads no optional input: only None is accepted
        self.check_input(x, horizon)
        B, t_in, C, H, W = x.shape
        if t_in < self.frames_needed:
            raise ValueError(f"steps_noise needs at least {self.frames_needed} input frames "
                             f"({self.needs_why}), got T_in={t_in}; give it more input frames "
                             "or build it with a smaller ar_order")
        with torch.no_grad():
            det = self.base(x, horizon).detach().double().cpu().numpy()  # [B, horizon, C, H, W]
        frames = x[:, -self.window:].detach().double().cpu().numpy()  # [B, t, C, H, W]
        out = np.empty((B, members, horizon, C, H, W))
        vel, routes = np.zeros((B, C, 2, H, W)), np.empty((B, C), dtype=object)
        for b in range(B):
            for c in range(C):
                out[b, :, :, c], vel[b, c], routes[b, c] = self.noise_field(
                    frames[b, :, c], det[b, :, c], horizon, members)
        self.last_velocity, self.last_route = vel, routes
        return self.as_tensor(out, x)  # [B, M, horizon, C, H, W]

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """The base nowcast `[B, horizon, C, H, W]` (the unperturbed member)."""
        self.check_input(x, horizon)
        with torch.no_grad():
            return self.base(x, horizon)


__all__ = ["LagrangianProbability", "StepsNoise", "has_external_nowcast"]
