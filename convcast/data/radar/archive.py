"""Radar archives: time-stamped frames from any frame source, with their units resolved.

`open_radar(path)` opens an archive through the frame-source registry (`convcast.data.sources`:
a folder of images with the time in each file name (HKO-7 style gray PNG), `.npy` / `.npz`,
HDF5, NetCDF, Zarr, or any registered reader) and returns a `RadarSource`: the same source seen as
a radar archive, whose `read(start, stop)` gives float32 `[n, C, H, W]` with NaN where data is
missing (`nodata`, or NaN in the file), whose time stamps are required and ascending, and whose
`units` are one of `UNITS`:
`gray` (0-255 levels, HKO-7 PNG), `pixel` ([0, 1], HKO-7), `dbz`, `rainrate` (mm/h), `mm` (an
accumulation over `accutime` minutes); `auto` reads the file's units attribute, else 8-bit data is
`gray`. Arrays are time first (`[T, H, W]` or `[T, C, H, W]`); image names hold the time (default:
the first run of 12 or 14 digits YYYYMMDDHHMM[SS]; or a `strptime` `time_format` of the whole stem
and/or a `time_regex`). `importer="fmi_pgm"` (any pysteps importer) reads an operational archive,
one file per frame, with the time from each file name by `fn_pattern`
(`convcast.data.sources.pysteps_importer`); `archive_values` then gives what its metadata says
about the values (accumulation time, Z-R, no-rain value and threshold) and `archive_grid` its
georeference.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from convcast.atomic import write_bytes
from convcast.data.radar.geo import Grid
from convcast.data.sources import FrameSource, detect_kind, get_method, list_sources, open_source
from convcast.data.sources.pysteps_importer import suggest_importer
from convcast.data.sources.times import regular_timestamps, to_datetime64
from convcast.data.units import HKO_ZR, MARSHALL_PALMER_ZR

UNITS = ("gray", "pixel", "dbz", "rainrate", "mm")
UNIT_ALIASES = {"dbz": "dbz", "mm/h": "rainrate", "mmh-1": "rainrate", "mm/hr": "rainrate",
                "mmhr-1": "rainrate", "mmh^-1": "rainrate", "kgm-2h-1": "rainrate",
                "gray": "gray", "grey": "gray", "pixel": "pixel", "rainrate": "rainrate",
                "mm": "mm", "kgm-2": "mm"}


def parse_units(text: str | bytes | None) -> str | None:
    """A units attribute (e.g. 'dBZ', 'mm h-1') as one of `UNITS`, or None if unknown."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="ignore")
    return UNIT_ALIASES.get(re.sub(r"\s+", "", str(text)).lower())


def check_units(units: str) -> str:
    """`units`: one of `UNITS`, `auto`, `auto:U` (the file's own, else U) or `force:U` (U even
    where the file's metadata says otherwise)."""
    how, _, unit = units.rpartition(":") if isinstance(units, str) else ("", "", units)
    if how not in ("", "auto", "force") or unit not in (*UNITS, "auto") or (
            how and unit == "auto"):
        raise ValueError(f"unknown units {units!r}; valid: auto, {', '.join(UNITS)} (or "
                         "force:UNITS to override what the archive's metadata says)")
    return units


def resolve_units(units: str, attr: str | bytes | None, dtype: np.dtype, where: str) -> str:
    """The units of an archive: `units` as given, checked against the file's own units
    attribute (a contradiction is refused, naming both, unless given as `force:U`); with `auto`
    the attribute, else `gray` for 8-bit data; with `auto:U` the attribute, else U."""
    check_units(units)
    how, _, unit = units.rpartition(":")
    found = parse_units(attr)
    if how == "force":
        return unit
    if unit != "auto" and how != "auto":
        if found and found != unit:
            raise ValueError(f"{where}: units {unit!r} were given but the archive's metadata "
                             f"says {found!r} ({attr!r}); drop the units option to use the "
                             f"archive's, or pass units force:{unit} if the metadata is wrong")
        return unit
    if found:
        return found
    if how == "auto":
        return unit
    if dtype == np.uint8:
        return "gray"
    raise ValueError(f"cannot tell the units of {where} ({dtype} data, units attribute "
                     f"{attr!r}); pass units= one of {', '.join(UNITS)}")


class RadarSource(FrameSource):
    """A frame source seen as a radar archive (see the module docstring)."""

    def __init__(self, source: FrameSource, units: str = "auto", nodata: float | None = None
                 ) -> None:
        if source.timestamps is None:
            regular_timestamps(len(source), None, None, str(source.path or source.name))  # raises
        self.source, self.nodata = source, nodata
        self.kind, self.name, self.path = source.kind, source.name, source.path
        self.num_frames, self.frame_shape = source.num_frames, source.frame_shape
        self.timestamps, self.metadata = source.timestamps, source.metadata
        self.dtype = np.dtype(np.float32)
        where = str(source.path or source.name) + (f":{self.variable}" if self.variable else "")
        self.units = resolve_units(units, source.units, source.dtype, where)

    @property
    def variable(self) -> str | None:
        """The array or variable of the file that holds the frames (None: the file is one)."""
        inner = getattr(self.source, "file", self.source)
        return getattr(inner, "key", None)

    def fingerprint(self) -> dict[str, Any]:
        return {**self.source.fingerprint(), "units": self.units, "nodata": self.nodata}

    def _read(self, start: int, stop: int) -> np.ndarray:
        a = self.source.read(start, stop).astype(np.float32)  # [n, C, H, W]
        if self.nodata is not None:
            a[a == self.nodata] = np.nan
        return a

    def close(self) -> None:
        self.source.close()


def detect_format(path: str | os.PathLike) -> str:
    """The reader kind of a radar archive, from its path."""
    try:
        return detect_kind(path)
    except ValueError as err:
        raise ValueError(f"cannot tell the format of {path}; pass format= one of "
                         f"{', '.join(list_sources())}") from err


def open_radar(path: str | os.PathLike, *, format: str = "auto", units: str = "auto",
               variable: str | None = None, time_variable: str | None = None,
               time_format: str | None = None, time_regex: str | None = None,
               start_time: str | None = None, step_minutes: float | None = None,
               nodata: float | None = None, reader_kwargs: dict | None = None,
               importer: str | None = None, importer_kwargs: dict | None = None,
               fn_pattern: str | None = None, fn_ext: str | None = None) -> RadarSource:
    """Open a radar archive lazily (see the module docstring). `format` is a frame-source kind
    (`auto`: from the path; `png` is the image-folder reader); `reader_kwargs` go to the reader;
    `importer` (a pysteps importer name) reads the archive with pysteps, `importer_kwargs`
    going to it and `fn_pattern` / `fn_ext` giving the time of each file from its name."""
    check_units(units)
    if importer is not None:
        if format not in ("auto", "pysteps", "importer"):
            raise ValueError(f"give either format={format!r} or importer={importer!r}, not both "
                             "(an importer reads the archive itself)")
        if not Path(path).exists():
            raise FileNotFoundError(f"radar archive {path} does not exist")
        source = open_source(path, "pysteps", importer=importer, importer_kwargs=importer_kwargs,
                             fn_pattern=fn_pattern, fn_ext=fn_ext, **(reader_kwargs or {}))
        return RadarSource(source, units, nodata)
    if format != "auto":
        try:
            get_method(format)
        except ValueError as err:
            raise ValueError(f"unknown format {format!r}; valid: auto, "
                             f"{', '.join(list_sources())}") from err
    options = {"key": variable, "time_key": time_variable, "time_format": time_format,
               "time_regex": time_regex, "start_time": start_time, "step_minutes": step_minutes,
               "time_first": True, "require_times": True, "recursive": True, "gray": True}
    try:
        kind = detect_format(path) if format == "auto" else format
        source = open_source(path, kind, strict=False, **{**options, **(reader_kwargs or {})})
    except ValueError as err:
        found = suggest_importer(path) if Path(path).exists() else None
        if found is None:
            raise
        raise ValueError(f"{err}. Its file names follow pysteps' pattern for {found[0]} "
                         f"({found[1]}): read it with --importer {found[0]} (importer= in "
                         "Python)") from err
    return RadarSource(source, units, nodata)


def archive_values(source: FrameSource, zr: tuple[float, float] | None = None) -> dict[str, Any]:
    """What an archive's metadata says about its values: `accutime` (minutes of an accumulation),
    `zerovalue` and `threshold` (the no-rain value and the smallest rain value, in its units),
    and the Z-R relation `zr`: the one given, else the metadata's (`zr_a`, `zr_b`), else
    Marshall-Palmer for physical units and HKO-7's for HKO-7 gray levels and pixels."""
    meta = source.metadata or {}
    units = source.units if source.units in UNITS else None

    def number(key: str) -> float | None:
        v = meta.get(key)
        try:
            return None if v is None or not np.isfinite(float(v)) else float(v)
        except (TypeError, ValueError):
            return None

    if zr is None:
        if number("zr_a") is not None and number("zr_b") is not None:
            zr = (number("zr_a"), number("zr_b"))
        else:
            zr = HKO_ZR if units in ("gray", "pixel") else MARSHALL_PALMER_ZR
    return {"accutime": number("accutime"), "zerovalue": number("zerovalue"),
            "threshold": number("threshold"), "zr": (float(zr[0]), float(zr[1]))}


def archive_grid(source: FrameSource) -> Grid | None:
    """The georeference of an archive's frames (None where its metadata has none)."""
    return Grid.from_metadata(source.metadata, source.frame_shape[-2:])


def write_image_folder(folder: str | os.PathLike, frames: np.ndarray, timestamps: np.ndarray,
                       name_format: str = "%Y%m%d%H%M.png") -> list[Path]:
    """Write gray frames `[T, H, W]` (uint8 levels, or uint16) as one image per frame named by
    its time (`strftime` pattern), HKO-7 style; each file is written atomically."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8/uint16 frames [T, H, W], got {frames.dtype} "
                         f"{frames.shape}")
    paths = []
    for frame, t in zip(frames, to_datetime64(timestamps), strict=True):
        path = Path(folder) / t.astype(datetime).strftime(name_format)
        ok, buf = cv2.imencode(path.suffix, frame)
        if not ok:
            raise OSError(f"cannot encode {path}")
        paths.append(write_bytes(path, buf.tobytes()))
    return paths
