"""A radar forecast written to a folder: `forecast.npz`, `forecast.nc` and `forecast.gif`.

Each file is written atomically (a hidden temporary file renamed into place), so a reader never
sees half a forecast. `forecast.nc` is CF NetCDF of the first channel (rain rate in mm/h, or mm per
accumulation time) on the model's grid with its projection; `forecast.npz` holds `forecast`
[K, C, H, W] in the input's units, `physical`, `timestamps` (ISO strings), `units`,
`input_timestamps`, `step_minutes` and `model`; `forecast.gif` shows the latest input frames, then
the forecast, in mm/h with a colour scale and each frame's time.

An ensemble forecast (`forecast(..., members=N, probability_thresholds=...)`) adds its members
and exceedance probabilities: to `forecast.nc` as `<variable>_members` over the CF `realization`
dimension and `probability_of_precipitation_above_threshold` over a `threshold` coordinate in
mm/h (`convcast.data.radar.export`); to `forecast.npz` as `members` [M, K, C, H, W] (the input's
units), `members_physical`, `probabilities` [P, K, C, H, W], `probability_thresholds` and
`probability_units`; and `forecast_probability.gif` shows the probabilities of every threshold
side by side on a 0..1 colour scale, each frame under its valid time. `check_outputs` says before
any work whether the files can be written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from convcast.atomic import atomic_path, check_output_folder
from convcast.data.radar.export import write_forecast_netcdf
from convcast.inference.forecast import Forecast
from convcast.viz.probabilistic import write_probability_animation
from convcast.viz.radar import write_rain_animation

FILES = ("forecast.npz", "forecast.nc", "forecast.gif")
PROBABILITY_GIF = "forecast_probability.gif"


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """How the outputs are written and labelled: `fps` of the animation; `checkpoint` and
    `input`, named in forecast.nc's attributes."""

    fps: float = 4.0
    checkpoint: str = "none (baseline)"
    input: str = ""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"--fps must be positive (frames per second of forecast.gif), got "
                             f"{self.fps:g}")


def write_outputs(out: Path, fc: Forecast, options: OutputOptions,
                  say: Callable[[str], None] = print) -> dict:
    """Write `fc` as OUT/forecast.npz, forecast.nc and forecast.gif, each atomically; returns
    the paths (`nc` None where NetCDF cannot be written here, said) and the valid times."""
    out = Path(out)
    iso = np.datetime_as_string(fc.valid_times, unit="s")
    ensemble = {k: v for k, v in (("members", fc.members),
                                  ("members_physical", fc.members_physical),
                                  ("probabilities", fc.probabilities),
                                  ("probability_thresholds", fc.probability_thresholds))
                if v is not None}
    if fc.probabilities is not None:
        ensemble["probability_units"] = np.array(fc.probability_units)
    with atomic_path(out / "forecast.npz") as tmp:
        np.savez(tmp, forecast=fc.frames, timestamps=iso, units=np.array(fc.units),
                 physical=fc.physical, physical_units=np.array(fc.physical_units),
                 step_minutes=np.float64(fc.step_minutes),
                 input_timestamps=np.datetime_as_string(fc.input_times, unit="s"),
                 model=np.array(fc.model_name), **ensemble)
    nc = write_netcdf(out / "forecast.nc", fc, options, say)
    write_gif(out / "forecast.gif", fc, options.fps)
    written = {"nc": nc, "npz": out / "forecast.npz", "gif": out / "forecast.gif",
               "timestamps": list(iso)}
    if fc.probabilities is not None:
        written["probability_gif"] = write_probability_gif(out / PROBABILITY_GIF, fc,
                                                           options.fps)
    return written


def check_outputs(out: Path, *, probabilities: bool = False) -> None:
    """Before any work: a clear error where OUT (`check_output_folder`) or one of the files
    written in it (a folder of that name) cannot be written."""
    out = check_output_folder(out)
    for name in [*FILES, *([PROBABILITY_GIF] if probabilities else [])]:
        if (out / name).is_dir():
            raise ValueError(f"--out {out}: {out / name} is a folder, so {name} cannot be "
                             "written there; move it or give another --out")


def write_netcdf(path: Path, fc: Forecast, options: OutputOptions,
                 say: Callable[[str], None] = print) -> Path | None:
    """`forecast.nc` of the first channel (None, said, where xarray or netCDF4 is missing)."""
    attrs = {"title": f"convcast nowcast by {fc.model_name}", "source": "convcast",
             "model": fc.model_name, "checkpoint": options.checkpoint, "input": options.input,
             "step_minutes": float(fc.step_minutes),
             "history": f"{datetime.now().astimezone():%Y-%m-%dT%H:%M:%S%z} convcast nowcast"}
    if fc.members_physical is not None:
        attrs["members"] = int(fc.members_physical.shape[0])
    probs = fc.probabilities
    try:
        return write_forecast_netcdf(
            path, fc.physical[:, 0], fc.valid_times, fc.grid, units=fc.physical_units,
            accutime=fc.accutime, reference_time=fc.input_times[-1], attrs=attrs,
            members=None if fc.members_physical is None else fc.members_physical[:, :, 0],
            probabilities=None if probs is None else probs[:, :, 0],
            thresholds=None if probs is None else fc.probability_thresholds)
    except ImportError as err:
        say(f"{path.name} not written: {err}")
        return None


def write_gif(path: Path, fc: Forecast, fps: float) -> Path:
    """The latest input frames, then the forecast, in mm/h, each labelled with its time."""
    per_hour = 60.0 / fc.accutime if fc.physical_units == "mm" else 1.0  # mm per accutime -> mm/h
    rain = np.concatenate([fc.input_physical[:, 0], fc.physical[:, 0]]) * per_hour  # [T+K, h, w]
    labels = [f"observed {_hm(t)}" for t in fc.input_times]
    labels += [f"+{k * fc.step_minutes:g} min, valid {_hm(t)}"
               for k, t in enumerate(fc.valid_times, start=1)]
    return write_rain_animation(path, rain, labels, fps=fps)


def write_probability_gif(path: Path, fc: Forecast, fps: float) -> Path:
    """The exceedance probabilities of the first channel, every threshold side by side, each
    frame under its lead and valid time."""
    labels = [f"+{k * fc.step_minutes:g} min, valid {_hm(t)}"
              for k, t in enumerate(fc.valid_times, start=1)]
    return write_probability_animation(path, fc.probabilities[:, :, 0], fc.probability_thresholds,
                                       labels, units=fc.probability_units or "", fps=fps)


def _hm(t: np.datetime64) -> str:
    return np.datetime_as_string(t, unit="m").replace("T", " ")
