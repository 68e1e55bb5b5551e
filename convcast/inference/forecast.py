"""The one inference path: latest window -> prepare as trained -> forecast -> back to data units.

`forecast(model_or_ckpt, frames, horizon)` is what `convcast predict`, `convcast nowcast` and
Python users call. `frames` is a path (read through the frame-source registry), a `FrameSource`
or an array `[T, C, H, W]`. The latest `input_frames` frames are taken (checked to be consecutive
where the frames carry time stamps), prepared exactly as the model's training data was (its
`DataDescription`: channels, size, unit scale and normalisation; for radar, units, dBZ range,
crop, disk filter, resize and mask), forecast, and converted back to the input's own values
(video and images: 0..255 for 8-bit input; radar: the archive's units). The `Forecast` it returns
also carries the valid time of each frame and what was done, in words, for the command line; for
radar also the forecast as rain rate in mm/h (an accumulation archive: in its mm per accutime
minutes), NaN outside the radar's domain, and the georeference of its grid, when the archive
has one (`convcast.data.radar.geo`), so it can be written where a GIS places it.

`forecast(..., members=N)` also draws an ensemble, `model.sample(x, horizon, members=N)` (a model
whose registry entry is `ensemble=True` draws N members; a deterministic one is an ensemble of
one, its forecast): `members` `[M, K, C, h, w]` in the input's own values beside the
deterministic `frames` (for radar `members_physical` as `physical`), and with
`probability_thresholds=(...)` the exceedance probabilities `[P, K, C, h, w]`, the fraction of
members at or above each threshold (radar: rain rate in mm/h, an accumulation archive's mm per
`accutime` turned into mm/h; other data: the input's own values), NaN outside the radar's domain.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from convcast.data.description import DataDescription, RadarValues
from convcast.data.radar.archive import RadarSource, archive_grid, archive_values, open_radar
from convcast.data.radar.geo import Grid
from convcast.data.radar.preprocess import RadarPreprocess
from convcast.data.radar.timeline import as_step, latest_window
from convcast.data.sources import FrameSource, open_source
from convcast.data.sources.times import regular_timestamps
from convcast.data.sources.video import VideoSource
from convcast.data.transform import (
    describe_scale,
    dtype_scale,
    prepare_frames,
    range_scale,
    resize_frames,
    unit_scale,
    value_peak,
)
from convcast.models.pretrained import grid_factor
from convcast.train.checkpoint import TrainedModel, load_checkpoint

Frames = str | os.PathLike | FrameSource | np.ndarray | torch.Tensor


@dataclass(frozen=True, kw_only=True)
class RadarOptions:
    """How to read and prepare a radar input; None everywhere means "as the checkpoint's
    archive was" (else the archive's own metadata, else the defaults of `open_radar`).

    Reading: `format` (a frame-source kind or auto), `units`, `variable`, `time_variable`,
    `time_format`, `time_regex`, `start_time`, `step_minutes`, `nodata`; or a pysteps `importer`
    with `importer_kwargs`, `fn_pattern`, `fn_ext`. Preparation overrides: `crop` (centre h,
    (h, w) or a window (top, left, bottom, right)), `crop_box` ((x1, y1, x2, y2) in the archive's
    projected metres), `downsample`, `disk_radius`, `resize`, `zr` ((a, b) of Z = a R^b),
    `accutime` (minutes an accumulation sums).
    """

    format: str | None = None
    units: str | None = None
    variable: str | None = None
    time_variable: str | None = None
    time_format: str | None = None
    time_regex: str | None = None
    start_time: str | None = None
    step_minutes: float | None = None
    nodata: float | None = None
    crop: int | tuple[int, ...] | None = None
    crop_box: tuple[float, float, float, float] | None = None
    downsample: int | None = None
    disk_radius: float | None = None
    resize: int | tuple[int, int] | None = None
    zr: tuple[float, float] | None = None
    accutime: float | None = None
    importer: str | None = None
    importer_kwargs: dict[str, Any] | None = None
    fn_pattern: str | None = None
    fn_ext: str | None = None

    @classmethod
    def of(cls, options: RadarOptions | dict[str, Any] | None) -> RadarOptions:
        """`options` as a `RadarOptions` (from a dict of its fields; an unknown key is named)."""
        if isinstance(options, RadarOptions):
            return options
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown radar options {unknown}; valid: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        if isinstance(options.get("crop"), list) and len(options["crop"]) == 1:
            options["crop"] = options["crop"][0]
        for key in ("crop", "crop_box", "resize", "zr"):
            if isinstance(options.get(key), list):
                options[key] = tuple(options[key])
        return cls(**options)

    def value_options(self) -> dict[str, Any]:
        """The options that change the prepared values (what a saved stream must match)."""
        return {k: getattr(self, k) for k in VALUE_OPTIONS}


VALUE_OPTIONS = ("units", "nodata", "variable", "crop", "crop_box", "downsample", "disk_radius",
                 "resize", "zr", "accutime", "importer", "importer_kwargs")


class ArrayFrames(FrameSource):
    """Frames already in memory, `[T, C, H, W]`, seen as a source."""

    kind = "array"

    def __init__(self, frames: np.ndarray | torch.Tensor, timestamps: np.ndarray | None = None,
                 units: str | None = None, name: str = "frames") -> None:
        a = (frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor)
             else np.asarray(frames))
        if a.ndim != 4:
            raise ValueError(f"{name}: expected frames [T, C, H, W], got shape {a.shape}")
        self.frames, self.name, self.metadata = a, name, {}
        self.num_frames, self.frame_shape, self.dtype = a.shape[0], tuple(a.shape[1:]), a.dtype
        self.timestamps, self.units = timestamps, units

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.frames[start:stop]


@dataclass
class Forecast:
    """A forecast and what it came from (see the module docstring)."""

    frames: np.ndarray  # [K, C, h, w] float32 in the input's own values (radar: its units)
    inputs: np.ndarray  # [T, C, h, w] float32 the prepared input frames, in data values
    forecast_data: np.ndarray  # [K, C, h, w] float32 the forecast in data values
    description: DataDescription  # of the frames as the model read them
    model_name: str
    input_size: tuple[int, int]  # (H, W) of the input frames before any resize
    input_scale: float  # integer input frames were divided by this (1: float input, radar)
    units: str | None = None  # the units of `frames` (radar archives), else None
    valid_times: np.ndarray | None = None  # datetime64[s] [K], where the input has times
    input_times: np.ndarray | None = None  # datetime64[s] [T]
    step_minutes: float | None = None
    notes: list[str] = field(default_factory=list)  # what was read and done, for the user
    physical: np.ndarray | None = None  # [K, C, h, w] radar: mm/h (accumulations: mm), NaN = none
    input_physical: np.ndarray | None = None  # [T, C, h, w] the inputs alike
    physical_units: str | None = None  # "mm/h", or "mm" (per `accutime` minutes)
    accutime: float | None = None  # minutes an accumulation sums (physical_units "mm")
    grid: Grid | None = None  # georeference of the forecast's grid, where the input has one
    members: np.ndarray | None = None  # [M, K, C, h, w] float32 ensemble members, as `frames`
    members_physical: np.ndarray | None = None  # [M, K, C, h, w] radar: as `physical`
    probabilities: np.ndarray | None = None  # [P, K, C, h, w] in [0, 1], NaN = no data
    probability_thresholds: np.ndarray | None = None  # [P] float64 of `probability_units`
    probability_units: str | None = None  # "mm/h" (radar), else the input's units or None


def trained_model(model_or_ckpt: nn.Module | TrainedModel | str | os.PathLike, device: str
                  ) -> TrainedModel:
    """A `TrainedModel` from a checkpoint path (loaded weights-only), a module or itself."""
    if isinstance(model_or_ckpt, TrainedModel):
        return model_or_ckpt
    if isinstance(model_or_ckpt, nn.Module):
        spec = getattr(model_or_ckpt, "model_spec", {})
        name = spec.get("name") or getattr(model_or_ckpt, "model_name", None) or \
            type(model_or_ckpt).__name__
        return TrainedModel(model=model_or_ckpt.eval(), model_name=name,
                            model_kwargs=dict(spec.get("kwargs") or {}), description=None,
                            config=None, global_step=None, epoch=None, path="")
    return load_checkpoint(model_or_ckpt, map_location=device)


def _latest(source: FrameSource, need: int, step_minutes: float | None
            ) -> tuple[np.ndarray, int, float | None]:
    """The last `need` frames `[need, C, H, W]`, the index of the first, and the step in minutes.

    Frames with time stamps must be consecutive: every `step_minutes` (default: inferred from
    the time stamps)."""
    n = len(source)
    minutes = step_minutes
    if source.timestamps is not None:
        step = as_step(step_minutes, source.timestamps)
        minutes = step.astype("timedelta64[s]").astype(np.int64) / 60
        start = latest_window(source.timestamps, need, step)
    elif n < need:
        raise ValueError(f"{source.name} has {n} frames but the model reads {need}; give a "
                         f"longer input or --input_frames {n} (fewer frames than trained on)")
    else:
        start = n - need
    try:
        return source.read(start, n), start, minutes
    except ValueError:
        if not isinstance(source, VideoSource):
            raise
    # a video whose header counts more frames than it holds: count them by decoding
    recount = VideoSource(source.path, count_frames=True)
    if len(recount) < need:
        raise ValueError(f"{source.name} has {len(recount)} frames but the model reads {need}; "
                         f"give a longer input or --input_frames {len(recount)}") from None
    return recount.read(len(recount) - need, len(recount)), len(recount) - need, minutes


def _frame_scale(raw: np.ndarray, d: DataDescription, notes: list[str], *,
                 trained: bool = True) -> tuple[float, str]:
    """What integer input frames are divided by, and why (for the log): the training data's
    scale where the values fit it (e.g. int64 frames holding 0..255 for a model trained on 8-bit
    video), else the maximum of a type of at most 16 bits, else (int32, int64) the values' own
    range; never the maximum of a type wider than 16 bits (`convcast.data.transform`)."""
    fixed = dtype_scale(raw.dtype)
    if fixed == 1.0:
        return 1.0, ""
    peak = value_peak(raw)
    if trained and d.value_scale != 1.0 and peak <= d.value_scale:
        return d.value_scale, "the scale of the model's training data, which the values fit"
    own = fixed if fixed is not None else range_scale(peak)
    why = describe_scale(raw.dtype, own, peak)
    if trained and d.value_scale != 1.0:
        notes.append(f"warning: the input's values reach {peak:g}, above the training data's "
                     f"{d.value_scale:g}: scaled by {own:g} ({why})")
    return own, why


def forecast(model_or_ckpt: nn.Module | TrainedModel | str | os.PathLike, frames: Frames,
             horizon: int | None = None, *, input_frames: int | None = None,
             description: DataDescription | None = None, device: str = "cpu",
             reader: str = "auto", reader_kwargs: dict[str, Any] | None = None,
             radar: RadarOptions | dict[str, Any] | None = None, members: int | None = None,
             probability_thresholds: Sequence[float] | None = None) -> Forecast:
    """Forecast the frames that follow `frames` (see the module docstring).

    Args:
        model_or_ckpt: a checkpoint path, a `TrainedModel`, or a forecaster module (baselines need
            no training; give `description` for a learned module without a checkpoint).
        frames: a path, a `FrameSource` or an array `[T, C, H, W]`.
        horizon: frames to forecast (default: the training output frames).
        input_frames: how many of the latest frames the model reads (default: as trained).
        reader / reader_kwargs: the frame-source kind and options for a path.
        radar: read the input as a radar archive, with these `RadarOptions` (or a dict of
            them); given a radar checkpoint, its settings (and the importer it was trained
            through) are the defaults.
        members: also draw an ensemble of this many members (`Forecast.members`).
        probability_thresholds: exceedance probabilities of these thresholds (radar: mm/h; else
            the input's values) from the members (`Forecast.probabilities`); needs `members`.
    """
    thresholds = check_ensemble_options(members, probability_thresholds)
    tm = trained_model(model_or_ckpt, device)
    d = description or tm.description
    notes: list[str] = []
    is_radar = radar is not None or (d is not None and d.radar is not None)
    radar = RadarOptions.of(radar)
    source = open_input(frames, is_radar, d, reader, reader_kwargs, radar, notes)
    need = input_frames if input_frames is not None else (d.input_frames if d else 5 if
                                                           is_radar else len(source))
    k = horizon if horizon is not None else (d.output_frames if d else 15 if is_radar else 1)
    if k < 1 or need < 1:
        raise ValueError(f"horizon and input_frames must be positive, got {k}, {need}")
    step = radar.step_minutes
    if step is None and len(source) < 2 and d is not None:  # one frame: the step trained on
        step = d.step_minutes
    raw, start, minutes = _latest(source, need, step)
    if is_radar:
        check_coverage(raw, source, start)
    if d is not None and d.step_minutes and minutes and abs(d.step_minutes - minutes) > 1e-6:
        notes.append(f"warning: the input's step is {minutes:g} min but the model was trained "
                     f"on {d.step_minutes:g}-minute steps")
    what = f"{source.kind} {source.path or source.name}"
    last = "the last" if start + len(raw) == len(source) else "the latest consecutive"
    notes.append(f"read {last} {len(raw)} of {len(source)} frames (frames {start}.."
                 f"{start + len(raw) - 1}) of {what}"
                 + (" (sorted by name)" if source.kind == "images" and source.timestamps is None
                    else ""))
    if is_radar:
        radar = within_card(tm.model, source, radar, minutes, notes)
        prep = Preparation.for_radar(source, d, radar, input_frames=need, horizon=k,
                                     model=tm.model, notes=notes)
    else:
        prep = Preparation.for_frames(raw, d, input_frames=need, horizon=k, notes=notes)
    prepared = prep.prepare(raw)  # [T, C, h, w] model values, NaN = missing
    model_in = torch.from_numpy(np.nan_to_num(prepared, nan=0.0))[None].to(device)
    model = tm.model.to(device).eval()
    grid = prep.radar.output_grid(prep.grid) if prep.radar is not None else None
    if grid is not None and minutes and callable(getattr(model, "set_grid", None)):
        model.set_grid(kmperpixel=grid.pixel_km, timestep=minutes)  # this input's grid
    with torch.inference_mode():
        pred = model(model_in, k)  # [1, K, C, h, w]
        ens = None if members is None else draw_members(model, model_in, pred, members)[0]
    times = None if source.timestamps is None else source.timestamps[start:]
    fc = assemble(pred[0].float().cpu().numpy(), prepared, prep, model_name=tm.model_name,
                  input_size=tuple(raw.shape[-2:]), input_times=times, minutes=minutes,
                  notes=notes)
    if ens is not None:
        add_members(fc, ens.float().cpu().numpy(), prepared, prep, thresholds=thresholds)
    return fc


def check_ensemble_options(members: int | None, thresholds: Sequence[float] | None
                            ) -> list[float] | None:
    """The ensemble options of `forecast`, checked before any work; the thresholds as a list."""
    if members is not None and (isinstance(members, bool) or not isinstance(members, int)
                                or members < 1):
        raise ValueError(f"members must be a positive int (ensemble members to draw), got "
                         f"{members!r}")
    if thresholds is None:
        return None
    if members is None:
        raise ValueError("probability_thresholds are exceedance probabilities of the ensemble's "
                         "members: give members=N too (e.g. members=20)")
    from convcast.metrics.checks import check_thresholds

    return check_thresholds("probability_thresholds", thresholds)


def draw_members(model: nn.Module, x: torch.Tensor, pred: torch.Tensor,
                 members: int) -> torch.Tensor:
    """`model`'s ensemble `[B, M, K, C, h, w]` of input `x`: its `sample(x, K, members=...)`
    where it draws members, else its forecast `pred` `[B, K, C, h, w]` as an ensemble of one."""
    from convcast.train.evaluate import draws_members

    if not draws_members(model):
        return pred.unsqueeze(1)
    ens = model.sample(x, pred.shape[1], members=members)
    if ens.dim() != 6 or ens.shape[:1] + ens.shape[2:] != pred.shape:
        raise ValueError(f"{type(model).__name__}.sample returned {tuple(ens.shape)}; the "
                         f"ensemble contract is [B, M, horizon, C, H, W] with B, horizon, C, H, "
                         f"W as its forecast {tuple(pred.shape)}")
    return ens


def add_members(fc: Forecast, ens: np.ndarray, prepared: np.ndarray, prep: Preparation, *,
                thresholds: Sequence[float] | None = None) -> Forecast:
    """Fill `fc`'s ensemble fields from the model's members `ens` `[M, K, C, h, w]` (model
    values) on the prepared input `[T, C, h, w]`: `members` (the input's values), for radar
    `members_physical`, and with `thresholds` the exceedance `probabilities` (see the module
    docstring). Returns `fc`."""
    if ens.ndim != 5 or ens.shape[1:] != fc.forecast_data.shape:
        raise ValueError(f"members must be [M, K, C, h, w] with K, C, h, w as the forecast "
                         f"{fc.forecast_data.shape}, got {ens.shape}")
    if not np.isfinite(ens).all():
        raise ValueError("the model produced NaN or infinite members; is the checkpoint trained?")
    M = ens.shape[0]
    flat = ens.reshape(-1, *ens.shape[2:])  # [M * K, C, h, w]
    missing = prep.missing(prepared)  # [C, h, w] or None
    fc.members = prep.restore(flat, missing).astype(np.float32).reshape(ens.shape)
    values, fc.probability_units = fc.members, fc.units
    if prep.radar is not None:
        rain, _ = prep.to_physical(flat)
        fc.members_physical = np.where(missing, np.nan, rain).astype(np.float32).reshape(
            ens.shape)
        per_hour = 60.0 / fc.accutime if fc.physical_units == "mm" else 1.0  # mm -> mm/h
        values, fc.probability_units = fc.members_physical * per_hour, "mm/h"
    if M == 1:
        fc.notes.append(f"{fc.model_name} is deterministic: an ensemble of one member")
    if thresholds:
        thr = np.asarray(list(thresholds), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            prob = np.stack([(values >= t).mean(axis=0) for t in thr])  # [P, K, C, h, w]
        nodata = ~np.isfinite(values).all(axis=0)  # [K, C, h, w]
        fc.probabilities = np.where(nodata, np.nan, prob).astype(np.float32)
        fc.probability_thresholds = thr
    return fc


def check_coverage(raw: np.ndarray, source: FrameSource, start: int) -> None:
    """Refuse radar input whose frames hold no data at all (an outage): the forecast would be
    NaN everywhere. Names the frames and their times."""
    empty = [i for i in range(len(raw)) if not np.isfinite(raw[i]).any()]
    if not empty:
        return
    times = source.timestamps
    which = ", ".join(str(times[start + i])[:16] if times is not None else f"#{start + i}"
                      for i in empty)
    newest = len(raw) - 1 in empty
    what = ("the newest frame" if newest and len(empty) == 1 else
            "input frames, the newest among them," if newest else "input frames")
    verb = "holds" if len(empty) == 1 else "hold"
    raise ValueError(f"{source.name}: {what} ({which}) {verb} no data at all (NaN or no-data "
                     "everywhere: a radar outage?); forecast from the frames before the outage "
                     "(an earlier window) or wait for the next frame")


def assemble(pred: np.ndarray, prepared: np.ndarray, prep: Preparation, *, model_name: str,
             input_size: tuple[int, int], input_times: np.ndarray | None,
             minutes: float | None, notes: list[str]) -> Forecast:
    """The `Forecast` of the model's output `pred` `[K, C, h, w]` on the prepared input frames
    `[T, C, h, w]` (model values, NaN = missing), turned back by `prep`; also for frames
    prepared one at a time (a stream)."""
    if not np.isfinite(pred).all():
        raise ValueError("the model produced NaN or infinite values; is the checkpoint trained?")
    valid = None
    if input_times is not None and minutes:
        step64 = np.timedelta64(int(round(minutes * 60)), "s")
        valid = input_times[-1] + step64 * np.arange(1, len(pred) + 1)
    d = prep.description
    missing = prep.missing(prepared)  # [C, h, w] outside the radar's domain now, or None
    fc = Forecast(frames=prep.restore(pred, missing).astype(np.float32),
                  inputs=np.nan_to_num(d.to_data(prepared)).astype(np.float32),
                  forecast_data=np.asarray(d.to_data(pred), dtype=np.float32), description=d,
                  model_name=model_name, input_size=input_size, input_scale=prep.scale,
                  units=prep.units, valid_times=valid, input_times=input_times,
                  step_minutes=minutes, notes=notes)
    if prep.radar is not None:
        rain, fc.physical_units = prep.to_physical(pred)  # [K, C, h, w]
        fc.physical = np.where(missing, np.nan, rain).astype(np.float32)
        fc.input_physical = prep.to_physical(prepared)[0].astype(np.float32)  # [T, C, h, w]
        fc.accutime = prep.radar.accutime if fc.physical_units == "mm" else None
        fc.grid = prep.radar.output_grid(prep.grid)
        if fc.grid is not None:
            notes.append(f"grid {fc.grid.shape[0]}x{fc.grid.shape[1]} pixels of "
                         f"{fc.grid.xpixelsize / 1000:g} km")
    return fc


def open_input(frames: Frames, is_radar: bool, d: DataDescription | None, reader: str,
               reader_kwargs: dict | None, radar: RadarOptions, notes: list[str]
               ) -> FrameSource:
    """The input as a frame source (a radar archive where the model is a radar model)."""
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        times = None
        if is_radar and (radar.start_time is not None or radar.step_minutes is not None):
            n = frames.shape[0] if frames.ndim == 4 else 0  # a bad shape is named below
            step = radar.step_minutes or (d.step_minutes if d is not None else None)
            times = regular_timestamps(n, radar.start_time, step, "the array")
        source = ArrayFrames(frames, timestamps=times)
    elif isinstance(frames, FrameSource):
        source = frames
    elif is_radar:
        fmt = radar.format or "auto"
        read = reader_options(d, radar, notes)
        # an importer says its units; other files may not: then the training archive's
        units = radar.units or ("auto" if read["importer"] else
                                f"auto:{d.radar.units}" if d is not None and d.radar else "auto")
        return open_radar(frames, format=fmt, units=units, variable=radar.variable,
                          time_variable=radar.time_variable, time_format=radar.time_format,
                          time_regex=radar.time_regex, start_time=radar.start_time,
                          step_minutes=radar.step_minutes, nodata=radar.nodata,
                          reader_kwargs=reader_kwargs, **read)
    else:
        if not Path(frames).exists():
            raise FileNotFoundError(f"input {frames} not found")
        source = open_source(frames, reader, **(reader_kwargs or {}))
        f = getattr(source, "file", None)
        if f is not None:
            notes.append(f"layout {f.layout} {'guessed' if f.guessed else 'given'} from shape "
                         f"{f.shape}")
    if is_radar and not isinstance(source, RadarSource):
        units = radar.units or (f"auto:{d.radar.units}" if d is not None and d.radar else "auto")
        source = RadarSource(source, units, radar.nodata)
    return source


def reader_options(d: DataDescription | None, radar: RadarOptions, notes: list[str]
                   ) -> dict[str, Any]:
    """How a radar input is read (importer, importer_kwargs, fn_pattern, fn_ext): as given, else
    (format auto, no importer given) through the importer the checkpoint's archive was read by."""
    read = {k: getattr(radar, k) for k in ("importer", "importer_kwargs", "fn_pattern",
                                           "fn_ext")}
    trained = d.radar.reader if d is not None and d.radar is not None else None
    if read["importer"] is None and (radar.format or "auto") == "auto" and trained:
        read = {**trained, **{k: v for k, v in read.items() if v is not None}}
        notes.append(f"read with the training archive's importer {read['importer']}")
    return read


@dataclass(frozen=True, kw_only=True)
class Preparation:
    """Raw input frames <-> model values, as the model's training data was prepared.

    Made once per model and input (`for_frames`, `for_radar`) from the checkpoint's
    `DataDescription`: `prepare(raw)` gives model values (NaN where a radar has no data),
    `restore(pred)` the input's own values (8-bit video: 0..255; radar: the archive's units) and
    `to_physical(values)` rain rate in mm/h (radar). `scale` divides integer frames; `radar` is
    the radar preprocessing, `grid` the input's georeference.
    """

    description: DataDescription
    scale: float = 1.0
    radar: RadarPreprocess | None = None
    grid: Grid | None = None
    units: str | None = None  # the input's units (radar archives)

    @classmethod
    def for_frames(cls, raw: np.ndarray, d: DataDescription | None, *, input_frames: int,
                   horizon: int, notes: list[str]) -> Preparation:
        """Video, images, arrays: `raw [T, C, H, W]` prepared as trained (scale, channels, size,
        normalisation); the steps are said in `notes`."""
        T, c, h, w = raw.shape
        if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
            bad = int((~np.isfinite(raw)).sum())
            raise ValueError(f"the input has {bad} NaN or infinite values; fill them (e.g. with "
                             "np.nan_to_num) before forecasting")
        trained = d is not None
        if d is None:  # an untrained baseline: the frames as they are, [0, 1]-scaled
            d = DataDescription(input_frames, horizon, c, (h, w),
                                value_scale=unit_scale(raw.dtype, raw))
        scale, why = _frame_scale(raw, d, notes, trained=trained)
        steps = [f"scaled {raw.dtype} by 1/{scale:g} ({why})"] if scale != 1 else []
        if d.channels != c:
            steps.append(f"converted {c} -> {d.channels} channel(s)")
        if tuple(d.frame_size) != (h, w):
            steps.append(f"resized {h}x{w} -> {d.frame_size[0]}x{d.frame_size[1]}")
        if d.normalization.kind != "none":
            steps.append(f"normalised {d.normalization.describe()}")
        notes.append("prepared input: " + (", ".join(steps) or "used as is"))
        prep = cls(description=d, scale=scale)
        _check_range(prep.prepare(raw), d, notes)
        return prep

    @classmethod
    def for_radar(cls, source: FrameSource, d: DataDescription | None, radar: RadarOptions, *,
                  input_frames: int, horizon: int, model: nn.Module,
                  notes: list[str]) -> Preparation:
        """Radar: the training preprocessing (overridable by `radar`), for `source`'s frames."""
        rv, grid = _radar_values(source, d, radar, notes)
        pre = rv.preprocess(source.units)
        C, h, w = pre.output_shape(source.frame_shape)
        if d is not None and (h, w) != tuple(d.frame_size):
            raise ValueError(f"the prepared frames are {h}x{w} but the model was trained on "
                             f"{d.frame_size[0]}x{d.frame_size[1]}; pass --resize/--crop to "
                             "match")
        channels = getattr(model, "in_channels", C)
        if channels != C:
            raise ValueError(f"the archive has {C} channels, the model reads {channels}")
        if d is None:
            d = DataDescription(input_frames, horizon, C, (h, w), radar=rv, step_minutes=None)
        return cls(description=d, radar=pre, grid=grid, units=source.units)

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """Raw frames `[T, C, H, W]` -> model values `[T, C, h, w]` float32 (NaN: no data)."""
        if self.radar is not None:
            return self.radar(raw).astype(np.float32)  # pixels in [0, 1], NaN = invalid
        d = self.description
        unit = prepare_frames(raw, d.channels, d.frame_size, self.scale)  # data values
        return d.normalization.apply(unit).astype(np.float32)

    def missing(self, prepared: np.ndarray) -> np.ndarray | None:
        """Where the newest prepared frame has no data `[C, h, w]` (radar; else None)."""
        return None if self.radar is None else ~np.isfinite(prepared[-1])

    def restore(self, pred: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
        """Model values `[K, C, h, w]` -> the input's own values (NaN where `missing`)."""
        if self.radar is None:
            return self.description.normalization.invert(pred) * self.scale
        out = self.radar.from_pixel(np.clip(pred, 0, 1))  # [K, C, h, w] in the archive's units
        return out if missing is None else np.where(missing, np.nan, out)

    def to_physical(self, values: np.ndarray) -> tuple[np.ndarray, str]:
        """Model values -> (rain in mm/h, or mm per accumulation time; its unit). Radar only."""
        if self.radar is None:
            raise ValueError("this input has no physical units (it is not a radar archive)")
        return self.radar.physical(np.clip(values, 0, 1))  # NaN (no data) stays NaN


def _check_range(model_in: np.ndarray, d: DataDescription, notes: list[str]) -> None:
    """Warn when the prepared input lies far outside the values the model was trained on."""
    lo, hi = float(model_in.min()), float(model_in.max())
    if d.normalization.kind == "standard":
        bad = max(abs(lo), abs(hi)) > 10
    elif d.normalization.kind == "minmax" or d.value_scale != 1:  # training values in [0, 1]
        bad = lo < -0.5 or hi > 1.5
    else:
        return
    if bad:
        notes.append(f"warning: the prepared input spans [{lo:.3g}, {hi:.3g}], far from what the "
                     "model was trained on; is it the same kind of data (units, value scale)?")


def within_card(model: nn.Module, source: FrameSource, radar: RadarOptions,
                minutes: float | None, notes: list[str]) -> RadarOptions:
    """A pretrained model's card states the pixel sizes and steps it was trained on: an archive
    finer than that is block-averaged into the range (unless `downsample`/`resize` is given),
    and one outside it otherwise is warned about."""
    card = getattr(model, "card", None) or {}
    name = getattr(model, "pretrained_name", "the model")
    grid = archive_grid(source)
    px = None if grid is None else grid.pixel_km
    lo_hi = card.get("pixel_km")
    if lo_hi and px:
        k = radar.downsample or 1
        if radar.downsample is None and radar.resize is None:
            k = grid_factor(card, px)
            if k > 1:
                notes.append(f"block-averaging the {px:.3g}-km archive by {k} to {px * k:.3g} km: "
                             f"{name} was trained on {lo_hi[0]:g}-{lo_hi[1]:g} km pixels "
                             "(--downsample overrides)")
                radar = replace(radar, downsample=k)
        if radar.resize is None and not lo_hi[0] * 0.9 <= px * k <= lo_hi[1] * 1.1:
            notes.append(f"warning: pixels of {px * k:.3g} km, outside the {lo_hi[0]:g}-"
                         f"{lo_hi[1]:g} km {name} was trained on")
    steps = card.get("step_minutes")
    if steps and minutes and not steps[0] * 0.9 <= minutes <= steps[1] * 1.1:
        notes.append(f"warning: {minutes:g}-minute steps, outside the {steps[0]:g}-{steps[1]:g} "
                     f"minutes {name} was trained on")
    return radar


def _radar_values(source: FrameSource, d: DataDescription | None, radar: RadarOptions,
                  notes: list[str]) -> tuple[RadarValues, Grid | None]:
    """How to prepare this input: the checkpoint's settings (else the archive's own), the
    command's overrides, and the input's own accumulation time, no-rain value and threshold;
    and the input's georeference."""
    own = archive_values(source, radar.zr and tuple(radar.zr))
    grid = archive_grid(source)
    rv = d.radar if d is not None and d.radar is not None else \
        RadarValues(source.units, zr=own["zr"], grid=grid)
    over = {key: getattr(radar, key) for key in ("crop", "disk_radius", "resize", "downsample")
            if getattr(radar, key) is not None}
    if radar.crop_box is not None:
        if grid is None:
            raise ValueError(f"--crop_box needs a georeferenced archive; {source.name} has no "
                             "projection in its metadata: crop by pixels (--crop) instead")
        over["crop"] = grid.window_of(tuple(radar.crop_box))
    if rv.grid is not None and grid is not None and not rv.grid.same_as(grid):
        notes.append("warning: the input's grid differs from the training archive's grid "
                     f"({grid.shape[0]}x{grid.shape[1]} vs {rv.grid.shape[0]}x"
                     f"{rv.grid.shape[1]} pixels, or another extent or projection)")
    regridded = any(key in over for key in ("crop", "resize", "downsample"))
    pick = {key: own[key] if own[key] is not None else getattr(rv, key)
            for key in ("accutime", "zerovalue", "threshold")}
    rv = RadarValues(units=rv.units, dbz_range=rv.dbz_range,
                     zr=tuple(radar.zr) if radar.zr else rv.zr,
                     crop=over.get("crop", rv.crop),
                     disk_radius=over.get("disk_radius", rv.disk_radius),
                     resize=over.get("resize", rv.resize),
                     valid=None if regridded else rv.valid, nodata=rv.nodata,
                     downsample=over.get("downsample", rv.downsample),
                     accutime=radar.accutime or pick["accutime"], zerovalue=pick["zerovalue"],
                     threshold=pick["threshold"], grid=grid, reader=rv.reader)
    return rv, grid


def resize_back(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`[T, C, h, w]` frames resized to `size` (H, W), e.g. a forecast back to the input's size."""
    return resize_frames(np.asarray(frames, dtype=np.float32), size)
