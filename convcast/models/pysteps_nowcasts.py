"""pysteps' nowcasts as baselines: S-PROG (`sprog`), ANVIL (`anvil`), the STEPS ensemble (`steps`).

Each forecast is pysteps' own call (`pysteps.nowcasts.get_method(name)`) with pysteps' defaults,
made once per batch item and channel on the latest frames, with Lucas–Kanade motion estimated as
the `optical_flow` baseline does (`convcast.motion.estimate_motion` on the last
`motion_frames` frames, logarithmic ones as in pysteps' examples: on convcast pixels it is
`optical_flow`'s motion). Nothing is learned: they are registered baselines, scored like every
other forecaster.

Values. pysteps runs S-PROG and STEPS on a logarithmic rain field (dB) and ANVIL on rain rate; a
convcast radar model sees pixels in [0, 1] that are linear in dBZ (HKO-7's `dBZ = 70 p - 10` by
default, `convcast.data.units`), 0 being no echo. `transform` says what the input is, and the
forecast comes back in the input's own value space:

- `sprog`, `steps`: "none" (default): the values are already logarithmic (convcast pixels, dBZ,
  dBR) and are used as they are; "db": the values are a rain rate (mm/h), transformed as pysteps'
  examples do (`dB_transform`: 10 log10 R, R < threshold -> zerovalue dB) and back.
- `anvil`: "rainrate" (default): the values are pixels over `dbz_range` in dBZ; ANVIL runs on the
  rain rate of Z = a R^b (`zr`) and the forecast is turned back into pixels (clipped to [0, 1]);
  "none": the values are a rain rate (or VIL) and are used as they are.

Everywhere `threshold` is the smallest rain in input units (pysteps' 0.1 mm/h: as an HKO-7 pixel,
about 0.172, for "none" of `sprog` / `steps`): input values below it, and non-finite ones (let
through by `nonfinite="warn"` / `"ignore"`), become `zerovalue` (no rain), and so do forecast
values below it and pixels advected in from outside the frame (pysteps' NaN).

Dry and degenerate windows: a window whose last frame has no rain gets a dry forecast (what
pysteps returns when it notices). Where pysteps cannot fit its model, the last frame is
extrapolated along the motion instead (persistence when nothing moves): for rain frozen in place
(identical frames: ANVIL would return a dry field, S-PROG and STEPS raise), and where pysteps
raises (S-PROG and STEPS on a window with a dry or constant frame, ...), with a RuntimeWarning
unless a frame of the window was constant. `last_route` says which forecast each field got.
pysteps is an optional dependency (`pip install convcast[nowcast]`), imported on first use.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from convcast.data.units import HKO_ZR, dbz_to_rainrate, rainrate_to_dbz, rainrate_to_pixel
from convcast.models.base import Forecaster, check_size
from convcast.models.registry import register_model
from convcast.pysteps_modules import pysteps_module

PIXEL_RAIN = float(rainrate_to_pixel(0.1))  # pysteps' 0.1 mm/h as an HKO-7 pixel (HKO Z-R), ~0.172
ROUTES = ("pysteps", "dry", "extrapolation")
# pysteps' arguments a baseline sets itself (from its own arguments, or fixed: the fields, the
# output as an array): `nowcast_kwargs` may not set them
FIXED = ("precip", "vil", "velocity", "timesteps", "rainrate", "measure_time", "callback",
         "return_output")
# pysteps' STEPS arguments the `steps` and `steps_noise` baselines set from their own
STEPS_OWN = {"n_ens_members": "members", "precip_thr": "threshold", **{k: k for k in (
    "n_cascade_levels", "kmperpixel", "timestep", "noise_method", "ar_order", "vel_pert_method",
    "mask_method", "seed")}}
# what pysteps raises on fields it cannot model (non-finite cascade statistics, singular AR fits)
FAILURES = (ValueError, IndexError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError)


def import_nowcasts() -> SimpleNamespace:
    """pysteps' nowcasts, extrapolation and transformation modules, imported quietly."""
    need = "the sprog, anvil and steps baselines"
    return SimpleNamespace(nowcasts=pysteps_module("nowcasts", needed_by=need),
                           extrapolation=pysteps_module("extrapolation", needed_by=need),
                           transformation=pysteps_module("utils.transformation", needed_by=need))


@contextlib.contextmanager
def quiet():
    """pysteps prints its settings and warns on degenerate fields: keep both out of the output."""
    with (contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(),
          np.errstate(all="ignore")):
        warnings.simplefilter("ignore")
        yield


def check_choice(model: str, name: str, value: object, valid: tuple) -> None:
    """A ValueError naming the model, the argument and its valid values."""
    if value not in valid:
        raise ValueError(f"{model}: unknown {name} {value!r}; valid: "
                         f"{', '.join(map(repr, valid))}")


def check_number(model: str, name: str, value: object, positive: bool = False) -> float:
    """`value` as a finite float (> 0 with `positive`), or a ValueError naming it."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not np.isfinite(value) or (positive and value <= 0)):
        need = "a positive number" if positive else "a finite number"
        raise ValueError(f"{model}: {name} must be {need}, got {value!r}")
    return float(value)


def pixels_to_rain(x: np.ndarray, dbz_range: tuple[float, float], zr: tuple[float, float],
                   threshold: float) -> np.ndarray:
    """Pixels over `dbz_range` -> rain rate (mm/h) by Z = a R^b (`zr`); below `threshold`, at or
    under pixel 0, or not finite: 0."""
    lo, hi = dbz_range
    with np.errstate(all="ignore"):
        rain = dbz_to_rainrate(lo + x * (hi - lo), *zr)
    return np.where(np.isfinite(x) & (x > 0) & (rain >= threshold), rain, 0.0)


def rain_to_pixels(y: np.ndarray, dbz_range: tuple[float, float], zr: tuple[float, float],
                   threshold: float) -> np.ndarray:
    """Rain rate (mm/h, finite) -> pixels over `dbz_range` in [0, 1]; below `threshold`: 0."""
    lo, hi = dbz_range
    with np.errstate(all="ignore"):
        p = (rainrate_to_dbz(y, *zr) - lo) / (hi - lo)
    return np.where(y >= threshold, np.clip(np.nan_to_num(p), 0.0, 1.0), 0.0)


class PystepsNowcast(Forecaster):
    """One pysteps nowcast per batch item and channel (see the module docstring).

    Subclasses set `transforms` (the first is the default), implement `nowcast` (pysteps' call on
    one field in its own space) and `frames_needed`.
    """

    transforms: ClassVar[tuple[str, ...]]
    own: ClassVar[dict[str, str]] = {}  # pysteps' arguments set from the baseline's (its name)

    def __init__(self, in_channels: int, *, transform: str, threshold: float | None,
                 zerovalue: float | None, ar_order: int, n_cascade_levels: int,
                 motion_frames: int, nowcast_kwargs: dict | None) -> None:
        super().__init__()
        name = self.model_name
        self.in_channels = check_size(name, "in_channels", in_channels)
        check_choice(name, "transform", transform, self.transforms)
        self.transform = transform
        self.ar_order = check_size(name, "ar_order", ar_order)
        self.n_cascade_levels = check_size(name, "n_cascade_levels", n_cascade_levels, minimum=3)
        self.motion_frames = check_size(name, "motion_frames", motion_frames, minimum=2)
        self.nowcast_kwargs = self.check_nowcast_kwargs(nowcast_kwargs)  # imports pysteps
        default_thr = PIXEL_RAIN if transform == "none" and name != "anvil" else 0.1
        self.threshold = check_number(name, "threshold", default_thr if threshold is None
                                      else threshold, positive=transform != "none")
        if zerovalue is None:  # pysteps' dB_transform: 5 dB under the threshold
            zerovalue = 10 * np.log10(self.threshold) - 5 if transform == "db" else 0.0
        self.zerovalue = check_number(name, "zerovalue", zerovalue)
        if self.zerovalue >= self.method_threshold:
            raise ValueError(f"{name}: zerovalue ({self.zerovalue:g}) must be below the rain "
                             f"threshold ({self.method_threshold:g} in the method's values), or "
                             "no rain would count as rain; lower zerovalue or raise threshold")
        self.last_velocity: np.ndarray | None = None  # [B, C, 2, H, W] px/step, last call
        self.last_route: np.ndarray | None = None  # [B, C] of ROUTES, last call

    @property
    def pysteps(self) -> SimpleNamespace:
        """pysteps' modules (not kept on the model, so that it copies and pickles)."""
        return import_nowcasts()

    def check_nowcast_kwargs(self, kwargs: dict | None) -> dict:
        """Extra keyword arguments of pysteps' method: a dict of its arguments, none of those the
        baseline sets itself."""
        name = self.model_name
        takes = inspect.signature(self.pysteps.nowcasts.get_method(name)).parameters
        if kwargs is None:
            return {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"{name}: nowcast_kwargs must be a dict of keyword arguments for "
                             f"pysteps' {name}, got {kwargs!r}")
        unknown = sorted(set(kwargs) - set(takes))
        if unknown:
            raise ValueError(f"{name}: pysteps' {name} takes no argument {', '.join(unknown)} "
                             f"(nowcast_kwargs); its arguments: {', '.join(takes)}")
        taken = sorted(set(kwargs) & (set(FIXED) | set(self.own)))
        if taken:
            how = [f"{k} (set by its argument {self.own[k]})" if k in self.own else f"{k} (fixed)"
                   for k in taken]
            raise ValueError(f"{name}: nowcast_kwargs may not set {', '.join(how)}")
        return dict(kwargs)

    # ---- what a forecast reads ----------------------------------------------------------------
    @property
    def frames_needed(self) -> int:
        """Input frames pysteps needs."""
        raise NotImplementedError

    @property
    def window(self) -> int:
        """How many of the latest frames a forecast reads (what a stream keeps)."""
        return max(self.frames_needed, self.motion_frames)

    # ---- values -------------------------------------------------------------------------------
    @property
    def method_threshold(self) -> float:
        """`threshold` in the space the method runs in."""
        return 10 * np.log10(self.threshold) if self.transform == "db" else self.threshold

    @property
    def no_rain(self) -> float:
        """The value of no rain in the method's space."""
        return self.zerovalue

    def to_method(self, x: np.ndarray) -> np.ndarray:
        """Input values `[T, H, W]` -> the field the method runs on."""
        if self.transform == "db":
            x = np.where(np.isfinite(x), x, 0.0)
            with quiet():
                return self.pysteps.transformation.dB_transform(
                    x, threshold=self.threshold, zerovalue=self.zerovalue)[0]
        return np.where(np.isfinite(x) & (x >= self.threshold), x, self.zerovalue)

    def from_method(self, y: np.ndarray) -> np.ndarray:
        """The method's forecast -> input values (NaN, i.e. advected in from outside: no rain)."""
        y = np.where(np.isfinite(y), y, self.no_rain)
        if self.transform == "db":
            with quiet():
                return self.pysteps.transformation.dB_transform(
                    y, threshold=self.method_threshold, inverse=True)[0]
        return np.where(y >= self.threshold, y, self.zerovalue)

    def motion_input(self, x: np.ndarray, field: np.ndarray) -> np.ndarray:
        """The frames the motion is estimated on: logarithmic ones, as in pysteps' examples; for
        "none" the input itself (so the motion is the `optical_flow` baseline's), for "db" the
        dB field."""
        return np.where(np.isfinite(x), x, self.zerovalue) if self.transform == "none" else field

    # ---- forecasting --------------------------------------------------------------------------
    def nowcast(self, field: np.ndarray, velocity: np.ndarray, horizon: int,
                members: int) -> np.ndarray:
        """pysteps' forecast `[members, horizon, H, W]` of `field [T, H, W]` (method space)."""
        raise NotImplementedError

    def extrapolate(self, field: np.ndarray, velocity: np.ndarray, horizon: int) -> np.ndarray:
        """The last frame advected along `velocity`: `[horizon, H, W]` (method space)."""
        with quiet():
            return self.pysteps.extrapolation.get_method("semilagrangian")(
                field[-1], velocity, horizon, outval=self.no_rain)

    def forecast_field(self, frames: np.ndarray, horizon: int,
                       members: int) -> tuple[np.ndarray, np.ndarray, str]:
        """One field's forecast `[members, horizon, H, W]` (input values), its motion
        `[2, H, W]` and its route (one of `ROUTES`)."""
        from convcast.motion import estimate_motion

        field = self.to_method(frames)  # [T, H, W]
        velocity = estimate_motion(self.motion_input(frames, field)[-self.motion_frames:])
        H, W = field.shape[1:]
        if not (field[-1] >= self.method_threshold).any():
            out = np.full((members, horizon, H, W), self.no_rain)
            return self.from_method(out), velocity, "dry"
        window = field[-self.frames_needed:]
        if (window == window[-1]).all():  # rain frozen in place: no change for the AR models
            return self.fallback(field, velocity, horizon, members), velocity, "extrapolation"
        try:
            with quiet():
                out = self.nowcast(window, velocity, horizon, members)
        except FAILURES as err:
            if all(np.ptp(f) > 0 for f in window):  # a constant frame is a known limitation
                warnings.warn(f"{self.model_name}: pysteps could not forecast a field "
                              f"({type(err).__name__}: {err}); it was extrapolated instead",
                              RuntimeWarning, stacklevel=4)
            return self.fallback(field, velocity, horizon, members), velocity, "extrapolation"
        return self.from_method(out.reshape(members, horizon, H, W)), velocity, "pysteps"

    def fallback(self, field: np.ndarray, velocity: np.ndarray, horizon: int,
                 members: int) -> np.ndarray:
        """The last frame extrapolated, for every member: `[members, horizon, H, W]` (input
        values)."""
        out = self.from_method(self.extrapolate(field, velocity, horizon))  # [horizon, H, W]
        return np.broadcast_to(out, (members, *out.shape))

    def run(self, x: torch.Tensor, horizon: int, members: int) -> np.ndarray:
        """Check the input and forecast every field: `[B, members, horizon, C, H, W]` float64."""
        self.check_input(x, horizon)
        B, t_in, C, H, W = x.shape
        if t_in < self.frames_needed:
            raise ValueError(
                f"{self.model_name} needs at least {self.frames_needed} input frames "
                f"({self.needs_why}), got T_in={t_in}; give it more input frames or build it with "
                f"a smaller ar_order")
        frames = x[:, -self.window:].detach().double().cpu().numpy()  # [B, t, C, H, W]
        out = np.empty((B, members, horizon, C, H, W))
        vel, routes = np.zeros((B, C, 2, H, W)), np.empty((B, C), dtype=object)
        for b in range(B):
            for c in range(C):
                out[b, :, :, c], vel[b, c], routes[b, c] = self.forecast_field(
                    frames[b, :, c], horizon, members)
        self.last_velocity, self.last_route = vel, routes
        return out

    @property
    def needs_why(self) -> str:
        return f"ar_order + 1 with ar_order={self.ar_order}"

    @staticmethod
    def as_tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        return self.as_tensor(self.run(x, horizon, 1)[:, 0], x)  # [B, horizon, C, H, W]

    def set_grid(self, *, kmperpixel: float | None, timestep: float | None) -> None:
        """The frames' pixel size (km) and step (minutes), where this method measures its noise
        and motion perturbations in them (`kmperpixel`, `timestep`); None keeps a value."""
        name = type(self).__name__
        if hasattr(self, "kmperpixel") and kmperpixel is not None:
            self.kmperpixel = check_number(name, "kmperpixel", kmperpixel, positive=True)
        if hasattr(self, "timestep") and timestep is not None:
            self.timestep = check_number(name, "timestep", timestep, positive=True)


@register_model("sprog", baseline=True)
class SProg(PystepsNowcast):
    """S-PROG (Seed 2003): pysteps' `sprog` with its defaults, on Lucas–Kanade motion.

    Args:
        in_channels: channels of the frames (each is forecast on its own).
        transform: "none" (values already logarithmic: convcast pixels, dBZ, dBR) or "db" (a
            rain rate, dB-transformed and back); see the module docstring.
        threshold: the smallest rain, in input units (default: 0.1 mm/h, as an HKO-7 pixel for
            "none"); pysteps' `precip_thr`.
        zerovalue: no rain in the method's space (default 0 for "none", threshold - 5 dB for "db").
        ar_order: order of the AR model per cascade level (needs ar_order + 1 frames).
        n_cascade_levels: cascade levels (pysteps' default 6; at least 3).
        motion_frames: how many of the latest frames the motion is estimated from.
        nowcast_kwargs: other keyword arguments for pysteps' `sprog` (e.g. probmatching_method).
    """

    transforms = ("none", "db")
    own = {"precip_thr": "threshold", "n_cascade_levels": "n_cascade_levels",
           "ar_order": "ar_order"}

    def __init__(self, in_channels: int = 1, *, transform: str = "none",
                 threshold: float | None = None, zerovalue: float | None = None,
                 ar_order: int = 2, n_cascade_levels: int = 6, motion_frames: int = 3,
                 nowcast_kwargs: dict | None = None, **ignored: Any) -> None:
        super().__init__(in_channels, transform=transform, threshold=threshold,
                         zerovalue=zerovalue, ar_order=ar_order,
                         n_cascade_levels=n_cascade_levels, motion_frames=motion_frames,
                         nowcast_kwargs=nowcast_kwargs)

    @property
    def frames_needed(self) -> int:
        return self.ar_order + 1

    def nowcast(self, field: np.ndarray, velocity: np.ndarray, horizon: int,
                members: int) -> np.ndarray:
        out = self.pysteps.nowcasts.get_method("sprog")(
            field, velocity, horizon, precip_thr=self.method_threshold,
            n_cascade_levels=self.n_cascade_levels, ar_order=self.ar_order,
            **self.nowcast_kwargs)  # [horizon, H, W]
        return np.broadcast_to(out, (members, *out.shape))


@register_model("anvil", baseline=True, tiny={"ar_order": 1})
class Anvil(PystepsNowcast):
    """ANVIL (Pulkkinen et al. 2020): pysteps' `anvil` with its defaults, on Lucas–Kanade motion.

    ANVIL reads exactly ar_order + 2 frames (4 by default; the registry's tiny configuration,
    ar_order=1, reads 3). Its output is the input field's forecast (no R(VIL) conversion).

    Args:
        in_channels: channels of the frames (each is forecast on its own).
        transform: "rainrate" (pixels over `dbz_range`, run as rain rate and turned back into
            pixels) or "none" (a rain rate or VIL, used as it is); see the module docstring.
        threshold: the smallest rain rate in mm/h (pysteps' 0.1; with "none", in input units);
            rain below it (and no rain) is 0.
        dbz_range: dBZ of pixel 0 and pixel 1 (HKO-7's (-10, 60)), for "rainrate".
        zr: (a, b) of Z = a R^b (HKO-7's), for "rainrate".
        ar_order: order of the ARI model per cascade level (needs ar_order + 2 frames).
        n_cascade_levels: cascade levels (pysteps' default 6; at least 3).
        ar_window_radius: radius of the window of the local AR fits (pysteps' 50; None: global).
        motion_frames: how many of the latest frames the motion is estimated from.
        nowcast_kwargs: other keyword arguments for pysteps' `anvil`.
    """

    transforms = ("rainrate", "none")
    own = {k: k for k in ("n_cascade_levels", "ar_order", "ar_window_radius")}

    def __init__(self, in_channels: int = 1, *, transform: str = "rainrate",
                 threshold: float | None = None, dbz_range: tuple[float, float] = (-10.0, 60.0),
                 zr: tuple[float, float] = HKO_ZR, ar_order: int = 2, n_cascade_levels: int = 6,
                 ar_window_radius: int | None = 50, motion_frames: int = 3,
                 nowcast_kwargs: dict | None = None, **ignored: Any) -> None:
        super().__init__(in_channels, transform=transform, threshold=threshold, zerovalue=0.0,
                         ar_order=ar_order, n_cascade_levels=n_cascade_levels,
                         motion_frames=motion_frames, nowcast_kwargs=nowcast_kwargs)
        if not isinstance(dbz_range, (tuple, list)) or len(dbz_range) != 2:
            raise ValueError(f"anvil: dbz_range must be (low, high) dBZ, got {dbz_range!r}")
        if not isinstance(zr, (tuple, list)) or len(zr) != 2:
            raise ValueError(f"anvil: zr must be (a, b) of Z = a R^b, got {zr!r}")
        lo, hi = (check_number("anvil", "dbz_range", v) for v in dbz_range)
        if not lo < hi:
            raise ValueError(f"anvil: dbz_range must be (low, high) dBZ with low < high, got "
                             f"{dbz_range!r}")
        a, b = (check_number("anvil", "zr", v, positive=True) for v in zr)
        self.dbz_range, self.zr = (lo, hi), (a, b)
        if ar_window_radius is not None:
            check_size("anvil", "ar_window_radius", ar_window_radius)
        self.ar_window_radius = ar_window_radius

    @property
    def frames_needed(self) -> int:
        return self.ar_order + 2

    @property
    def needs_why(self) -> str:
        return f"ar_order + 2 with ar_order={self.ar_order}"

    def to_method(self, x: np.ndarray) -> np.ndarray:
        if self.transform == "none":
            return super().to_method(x)
        return pixels_to_rain(x, self.dbz_range, self.zr, self.threshold)  # zerovalue is 0

    def from_method(self, y: np.ndarray) -> np.ndarray:
        if self.transform == "none":
            return super().from_method(y)
        y = np.where(np.isfinite(y), y, self.no_rain)
        return rain_to_pixels(y, self.dbz_range, self.zr, self.threshold)

    def motion_input(self, x: np.ndarray, field: np.ndarray) -> np.ndarray:
        """Logarithmic frames: for "rainrate" the input pixels (so the motion is the
        `optical_flow` baseline's), for "none" the rain rate in dB (pysteps' ANVIL example)."""
        if self.transform == "rainrate":
            return np.where(np.isfinite(x), x, 0.0)
        with quiet():
            return self.pysteps.transformation.dB_transform(
                np.maximum(field, 0.0), threshold=self.threshold)[0]

    def nowcast(self, field: np.ndarray, velocity: np.ndarray, horizon: int,
                members: int) -> np.ndarray:
        out = self.pysteps.nowcasts.get_method("anvil")(
            field, velocity, horizon, n_cascade_levels=self.n_cascade_levels,
            ar_order=self.ar_order, ar_window_radius=self.ar_window_radius,
            **self.nowcast_kwargs)  # [horizon, H, W]
        return np.broadcast_to(out, (members, *out.shape))


@register_model("steps", baseline=True, ensemble=True, tiny={"members": 2})
class Steps(PystepsNowcast):
    """The STEPS ensemble (Bowler et al. 2006): pysteps' `steps` with the settings of its
    example `plot_steps_nowcast` (6 cascade levels, nonparametric noise, "bps" motion
    perturbations, incremental mask, 2 km pixels, 5 min steps, seed 24).

    `sample(x, horizon, members=M)` gives the M members `[B, M, horizon, C, H, W]`;
    `forward(x, horizon)` their mean over `members` members (20, as the example), in the input's
    value space. Every field is forecast with the same `seed`, so a forecast depends on its own
    input only (not on its place in the batch) and is the same on every call (seed=None: not);
    member k is the same whatever `members`, and a longer horizon extends a shorter one.

    Args:
        in_channels: channels of the frames (each is forecast on its own).
        members: ensemble members whose mean `forward` returns.
        seed: pysteps' seed of the noise and motion perturbations (None: random).
        transform / threshold / zerovalue / ar_order / n_cascade_levels / motion_frames: as
            `sprog`'s.
        kmperpixel / timestep: pixel size (km) and time step (minutes) of the frames, used by
            the motion perturbations and the incremental mask.
        noise_method / vel_pert_method / mask_method: as pysteps' `steps` (None disables).
        nowcast_kwargs: other keyword arguments for pysteps' `steps` (e.g. noise_kwargs).
    """

    transforms = ("none", "db")
    own = STEPS_OWN

    def __init__(self, in_channels: int = 1, *, members: int = 20, seed: int | None = 24,
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
        self.members = check_size("steps", "members", members)
        if seed is not None:
            check_size("steps", "seed", seed, minimum=0)
        self.seed = seed
        self.kmperpixel = check_number("steps", "kmperpixel", kmperpixel, positive=True)
        self.timestep = check_number("steps", "timestep", timestep, positive=True)
        check_choice("steps", "noise_method", noise_method,
                     ("parametric", "nonparametric", "ssft", "nested", None))
        check_choice("steps", "vel_pert_method", vel_pert_method, ("bps", None))
        check_choice("steps", "mask_method", mask_method, ("obs", "sprog", "incremental", None))
        self.noise_method, self.vel_pert_method = noise_method, vel_pert_method
        self.mask_method = mask_method
        if self.nowcast_kwargs.get("noise_kwargs") is not None:  # pysteps reads its win_fun
            self.nowcast_kwargs["noise_kwargs"] = {"win_fun": "tukey",
                                                   **self.nowcast_kwargs["noise_kwargs"]}

    @property
    def frames_needed(self) -> int:
        return self.ar_order + 1

    def nowcast(self, field: np.ndarray, velocity: np.ndarray, horizon: int,
                members: int) -> np.ndarray:
        return self.pysteps.nowcasts.get_method("steps")(
            field, velocity, horizon, n_ens_members=members,
            n_cascade_levels=self.n_cascade_levels, precip_thr=self.method_threshold,
            kmperpixel=self.kmperpixel, timestep=self.timestep, noise_method=self.noise_method,
            ar_order=self.ar_order, vel_pert_method=self.vel_pert_method,
            mask_method=self.mask_method, seed=self.seed,
            **self.nowcast_kwargs)  # [members, horizon, H, W]

    def sample(self, x: torch.Tensor, horizon: int, members: int = 1,
               **inputs: torch.Tensor | None) -> torch.Tensor:
        """`members` STEPS members `[B, members, horizon, C, H, W]`, in the input's values."""
        check_size("steps", "members", members)
        self._read_inputs(inputs)  # steps reads no optional input: only None is accepted
        return self.as_tensor(self.run(x, horizon, members), x)  # [B, M, horizon, C, H, W]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """The mean of `members` members `[B, horizon, C, H, W]`."""
        return self.as_tensor(self.run(x, horizon, self.members).mean(axis=1), x)
