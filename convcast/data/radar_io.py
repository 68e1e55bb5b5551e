"""Readers of radar archives: time-stamped frames, read lazily so any archive size streams.

Every reader is a `FrameSource`: `timestamps` (datetime64[s], ascending), `units`, `frame_shape`
`(C, H, W)` and `read(start, stop) -> float32 [n, C, H, W]` (NaN where data is missing). Formats:
- a folder of images (HKO-7 style gray PNG; any image OpenCV reads), the time parsed from each
  file name: by default the first run of 12 or 14 digits as YYYYMMDDHHMM[SS]; or give a `strptime`
  `time_format` for the whole file stem (e.g. "RAD%y%m%d%H%M00") and/or a `time_regex` whose first
  group (else whole match) is the time string. Files are read on demand.
- `.npy` (memory-mapped; needs `start_time` + `step_minutes`), `.npz` (frames + optional
  timestamps array; uncompressed members are memory-mapped, compressed ones loaded whole),
- HDF5 (h5py, sliced lazily), NetCDF / Zarr (xarray, lazily; time from the time coordinate,
  else `start_time` + `step_minutes`; Zarr needs the `zarr` package).
Arrays are `[T, H, W]` or `[T, C, H, W]`, time first. Timestamps in arrays may be datetime64,
ISO strings, or numbers (seconds since 1970-01-01 unless a CF `units` attribute says otherwise).
Units: `gray` (0–255 levels, HKO-7 PNG), `pixel` ([0, 1], HKO-7), `dbz`, `rainrate` (mm/h);
`auto` reads a `units` attribute, else 8-bit data is `gray`.
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from convcast.data.frames_io import npz_member

UNITS = ("gray", "pixel", "dbz", "rainrate")
FORMATS = ("auto", "png", "npy", "npz", "hdf5", "netcdf", "zarr")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIME_NAMES = ("timestamps", "timestamp", "time", "times")
FRAME_NAMES = ("frames", "data", "radar", "reflectivity", "dbz", "rainrate", "precip")
UNIT_ALIASES = {"dbz": "dbz", "mm/h": "rainrate", "mmh-1": "rainrate", "mm/hr": "rainrate",
                "mmhr-1": "rainrate", "mmh^-1": "rainrate", "kgm-2h-1": "rainrate",
                "gray": "gray", "grey": "gray", "pixel": "pixel", "rainrate": "rainrate"}
DEFAULT_TIME_REGEX = r"(?<!\d)(\d{14}|\d{12})(?!\d)"


def parse_units(text: str | bytes | None) -> str | None:
    """A units attribute (e.g. 'dBZ', 'mm h-1') as one of `UNITS`, or None if unknown."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode(errors="ignore")
    return UNIT_ALIASES.get(re.sub(r"\s+", "", str(text)).lower())


def check_units(units: str) -> str:
    if units not in (*UNITS, "auto"):
        raise ValueError(f"unknown units {units!r}; valid: auto, {', '.join(UNITS)}")
    return units


def _resolve_units(units: str, attr: str | bytes | None, dtype: np.dtype, where: str) -> str:
    check_units(units)
    if units != "auto":
        return units
    found = parse_units(attr)
    if found:
        return found
    if dtype == np.uint8:
        return "gray"
    raise ValueError(f"cannot tell the units of {where} ({dtype} data, units attribute "
                     f"{attr!r}); pass units= one of {', '.join(UNITS)}")


# ----------------------------------------------------------------------------- timestamps

def to_datetime64(values, units_attr: str | bytes | None = None, where: str = "") -> np.ndarray:
    """Timestamps as datetime64[s]: from datetime64, ISO strings/bytes, or numbers (seconds since
    the epoch, or a CF units string like 'minutes since 2020-01-01 00:00')."""
    a = np.asarray(values)
    if np.issubdtype(a.dtype, np.datetime64):
        return a.astype("datetime64[s]")
    if a.dtype.kind in "SUO":
        return np.array([np.datetime64(v.decode() if isinstance(v, bytes) else str(v), "s")
                         for v in a.ravel()], dtype="datetime64[s]")
    if a.dtype.kind in "iuf":
        unit, origin = "s", np.datetime64("1970-01-01T00:00:00", "s")
        if units_attr is not None:
            text = units_attr.decode() if isinstance(units_attr, bytes) else str(units_attr)
            m = re.match(r"\s*(second|minute|hour|day)s?\s+since\s+(.+)", text, re.IGNORECASE)
            if not m:
                raise ValueError(f"{where}: time units {text!r} are not '<unit> since <date>'")
            unit = {"second": "s", "minute": "m", "hour": "h", "day": "D"}[m.group(1).lower()]
            origin = np.datetime64(m.group(2).strip().replace(" ", "T").rstrip("Z"), "s")
        seconds = a.astype(np.float64) * {"s": 1, "m": 60, "h": 3600, "D": 86400}[unit]
        return origin + np.round(seconds).astype("timedelta64[s]")
    raise ValueError(f"{where}: cannot read timestamps of dtype {a.dtype}")


def regular_timestamps(n: int, start_time: str | None, step_minutes: float | None,
                       where: str) -> np.ndarray:
    """`n` timestamps from `start_time` every `step_minutes` (for arrays with no time axis)."""
    if start_time is None or step_minutes is None:
        raise ValueError(f"{where} holds no timestamps; pass start_time='2020-06-01T00:00' and "
                         "step_minutes=6 (the time of the first frame and the interval)")
    step = np.timedelta64(int(round(step_minutes * 60)), "s")
    return np.datetime64(start_time, "s") + step * np.arange(n)


def parse_time(name: str, time_format: str | None = None, time_regex: str | None = None
               ) -> datetime | None:
    """The time in a file stem, or None if it holds none (see the module docstring)."""
    text = name
    if time_regex is not None or time_format is None:
        m = re.search(time_regex or DEFAULT_TIME_REGEX, name)
        if m is None:
            return None
        text = m.group(1) if m.groups() else m.group(0)
    fmt = time_format or ("%Y%m%d%H%M%S" if len(text) == 14 else "%Y%m%d%H%M")
    try:
        return datetime.strptime(text, fmt)
    except ValueError:
        return None


def _check_sorted(ts: np.ndarray, where: str) -> np.ndarray:
    d = np.diff(ts)
    if (d <= np.timedelta64(0, "s")).any():
        i = int(np.argmax(d <= np.timedelta64(0, "s")))
        raise ValueError(f"{where}: timestamps must be strictly increasing, but frame {i + 1} "
                         f"({ts[i + 1]}) does not follow frame {i} ({ts[i]}); sort the archive "
                         "along time and drop duplicates")
    return ts


# ----------------------------------------------------------------------------- sources

class FrameSource:
    """A time-ordered archive of frames read lazily. Subclasses set `timestamps`, `units`,
    `frame_shape` and implement `_read(start, stop)`; handles reopen in each worker process."""

    timestamps: np.ndarray
    units: str
    frame_shape: tuple[int, int, int]
    nodata: float | None = None
    path: Path

    def __len__(self) -> int:
        return len(self.timestamps)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames `start:stop` as float32 `[n, C, H, W]`, NaN where `nodata` or NaN."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"frames {start}:{stop} out of range for {len(self)} frames")
        a = np.asarray(self._read(start, stop))
        a = a.reshape(stop - start, *self.frame_shape).astype(np.float32)  # [n, C, H, W]
        if self.nodata is not None:
            a[a == self.nodata] = np.nan
        return a

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def __getstate__(self) -> dict:  # workers reopen files themselves: pickle no handles
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h")}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, {len(self)} frames "
                f"{self.frame_shape}, units={self.units!r})")


def _frame_shape(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return tuple(shape[1:])
    raise ValueError(f"{where} has shape {shape}; expected frames [T, H, W] or [T, C, H, W] "
                     "with time first")


class ImageFolderSource(FrameSource):
    """A folder (searched recursively) of gray images with the time in each file name."""

    def __init__(self, folder: str | os.PathLike, units: str = "auto",
                 time_format: str | None = None, time_regex: str | None = None,
                 nodata: float | None = None) -> None:
        import cv2  # noqa: F401  (fail early if OpenCV is missing)

        self.path, self.nodata = Path(folder), nodata
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a folder of radar images")
        files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{self.path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        stamped = [(parse_time(p.stem, time_format, time_regex), p) for p in files]
        skipped = [p.name for t, p in stamped if t is None]
        stamped = sorted((t, p) for t, p in stamped if t is not None)
        if not stamped:
            how = (f"time_format={time_format!r}" if time_format else "") + \
                  (f" time_regex={time_regex!r}" if time_regex else "")
            raise ValueError(f"no file name in {self.path} holds a time "
                             f"({how or 'default: 12 or 14 digits YYYYMMDDHHMM[SS]'}), e.g. "
                             f"{files[0].name!r}; pass time_format (strptime pattern of the "
                             "stem) and/or time_regex")
        if skipped:
            warnings.warn(f"{len(skipped)} images in {self.path} have no time in their name and "
                          f"are skipped, e.g. {skipped[0]!r}", stacklevel=2)
        self.files = [p for _, p in stamped]
        self.timestamps = _check_sorted(
            np.array([np.datetime64(t, "s") for t, _ in stamped], dtype="datetime64[s]"),
            str(self.path))
        first = self._image(self.files[0])
        self.frame_shape = (1, *first.shape)
        self.units = _resolve_units(units, None, first.dtype, str(self.files[0]))

    @staticmethod
    def _image(path: Path) -> np.ndarray:
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise OSError(f"cannot read image {path}")
        if img.ndim == 3:
            if img.shape[2] >= 3 and np.array_equal(img[..., 0], img[..., 1]) \
                    and np.array_equal(img[..., 1], img[..., 2]):
                return img[..., 0]  # gray stored as RGB
            raise ValueError(f"{path} is a colour image; convert colour-palette radar images "
                             "to gray levels (or dBZ arrays) first")
        return img

    def _read(self, start: int, stop: int) -> np.ndarray:
        frames = [self._image(p) for p in self.files[start:stop]]
        for p, f in zip(self.files[start:stop], frames, strict=True):
            if f.shape != self.frame_shape[1:]:
                raise ValueError(f"{p} is {f.shape}, other frames are {self.frame_shape[1:]}")
        return np.stack(frames)  # [n, H, W]


class ArraySource(FrameSource):
    """`.npy` (memory-mapped) or `.npz` frames; times from an array inside or start + step."""

    def __init__(self, path: str | os.PathLike, units: str = "auto", variable: str | None = None,
                 time_variable: str | None = None, start_time: str | None = None,
                 step_minutes: float | None = None, nodata: float | None = None) -> None:
        self.path, self.nodata = Path(path), nodata
        self.variable, times = variable, None
        if self.path.suffix == ".npy":
            data = np.load(self.path, mmap_mode="r")
        else:
            with np.load(self.path) as z:
                keys = list(z.keys())
                tkey = time_variable or next((k for k in TIME_NAMES if k in keys), None)
                if tkey is not None:
                    if tkey not in keys:
                        raise KeyError(f"{self.path} has no array {tkey!r}; arrays: {keys}")
                    times = z[tkey]
                self.variable = variable or _pick_name(
                    [k for k in keys if k != tkey], FRAME_NAMES, str(self.path), "variable")
                if self.variable not in keys:
                    raise KeyError(f"{self.path} has no array {self.variable!r}; arrays: {keys}")
            data = self._open()
        self.frame_shape = _frame_shape(data.shape, str(self.path))
        self.units = _resolve_units(units, None, data.dtype, str(self.path))
        ts = (to_datetime64(times, where=str(self.path)) if times is not None
              else regular_timestamps(data.shape[0], start_time, step_minutes, str(self.path)))
        if len(ts) != data.shape[0]:
            raise ValueError(f"{self.path}: {len(ts)} timestamps for {data.shape[0]} frames")
        self.timestamps = _check_sorted(ts, str(self.path))
        self._h = data

    def _open(self) -> np.ndarray:
        if self.path.suffix == ".npy":
            return np.load(self.path, mmap_mode="r")
        return npz_member(self.path, self.variable, warn_bytes=0)  # an archive: always say so

    def _read(self, start: int, stop: int) -> np.ndarray:
        if getattr(self, "_h", None) is None:
            self._h = self._open()
        return self._h[start:stop]


def _pick_name(names: list[str], preferred: tuple[str, ...], where: str, arg: str) -> str:
    if len(names) == 1:
        return names[0]
    for p in preferred:
        if p in names:
            return p
    raise ValueError(f"{where} holds several arrays {names}; choose the frames with {arg}=...")


class HDF5Source(FrameSource):
    """An HDF5 dataset of frames, sliced lazily with h5py (reopened in each worker process)."""

    def __init__(self, path: str | os.PathLike, units: str = "auto", variable: str | None = None,
                 time_variable: str | None = None, start_time: str | None = None,
                 step_minutes: float | None = None, nodata: float | None = None) -> None:
        import h5py

        self.path, self.nodata = Path(path), nodata
        with h5py.File(self.path, "r") as f:
            arrays: dict[str, tuple] = {}
            f.visititems(lambda name, obj: arrays.__setitem__(name, obj.shape)
                         if isinstance(obj, h5py.Dataset) else None)
            tkey = time_variable or next((k for k in TIME_NAMES if k in arrays), None)
            if tkey is not None and tkey not in arrays:
                raise KeyError(f"{self.path} has no dataset {tkey!r}; datasets: {list(arrays)}")
            frames = [k for k, s in arrays.items() if len(s) in (3, 4)]
            self.variable = variable or _pick_name(frames, FRAME_NAMES, str(self.path),
                                                   "variable")
            if self.variable not in arrays:
                raise KeyError(f"{self.path} has no dataset {self.variable!r}; "
                               f"datasets: {list(arrays)}")
            ds = f[self.variable]
            self.frame_shape = _frame_shape(ds.shape, f"{self.path}:{self.variable}")
            self.units = _resolve_units(units, ds.attrs.get("units"), ds.dtype,
                                        f"{self.path}:{self.variable}")
            if tkey is not None:
                ts = to_datetime64(f[tkey][()], f[tkey].attrs.get("units"), str(self.path))
            else:
                ts = regular_timestamps(ds.shape[0], start_time, step_minutes, str(self.path))
            if len(ts) != ds.shape[0]:
                raise ValueError(f"{self.path}: {len(ts)} timestamps for {ds.shape[0]} frames")
        self.timestamps = _check_sorted(ts, str(self.path))

    def _read(self, start: int, stop: int) -> np.ndarray:
        import h5py

        if getattr(self, "_h_pid", None) != os.getpid():  # h5py handles do not survive a fork
            self._h_file = h5py.File(self.path, "r")
            self._h_pid = os.getpid()
        return self._h_file[self.variable][start:stop]


class XarraySource(FrameSource):
    """A NetCDF file or Zarr store read lazily with xarray; time from the time coordinate (else
    `start_time` + `step_minutes`)."""

    def __init__(self, path: str | os.PathLike, units: str = "auto", variable: str | None = None,
                 time_variable: str | None = None, nodata: float | None = None,
                 zarr: bool = False, start_time: str | None = None,
                 step_minutes: float | None = None) -> None:
        self.path, self.nodata, self.zarr = Path(path), nodata, zarr
        self.consolidated: bool | None = None  # Zarr: has consolidated metadata (first open)
        self.time_dim = time_variable or "time"
        with self._open_dataset() as ds:
            names = [k for k, v in ds.data_vars.items() if v.ndim in (3, 4)]
            self.variable = variable or _pick_name(names, FRAME_NAMES, str(self.path), "variable")
            if self.variable not in ds.data_vars:
                raise KeyError(f"{self.path} has no variable {self.variable!r}; "
                               f"variables: {list(ds.data_vars)}")
            v = ds[self.variable]
            if self.time_dim not in v.dims:
                raise ValueError(f"{self.path}:{self.variable} has dims {v.dims} and no "
                                 f"{self.time_dim!r}; pass time_variable= the time dimension")
            v = v.transpose(self.time_dim, ...)
            self.dims = v.dims
            self.frame_shape = _frame_shape(v.shape, f"{self.path}:{self.variable}")
            self.units = _resolve_units(units, v.attrs.get("units"), v.dtype,
                                        f"{self.path}:{self.variable}")
            if self.time_dim in v.coords:  # a bare dimension would read as 0, 1, 2... seconds
                ts = to_datetime64(v[self.time_dim].values, where=str(self.path))
            else:
                ts = regular_timestamps(v.shape[0], start_time, step_minutes,
                                        f"{self.path} (no {self.time_dim!r} coordinate)")
        self.timestamps = _check_sorted(ts, str(self.path))

    def _open_dataset(self):
        try:
            import xarray as xr
        except ImportError as err:
            raise ImportError(f"reading {self.path} needs xarray: pip install xarray "
                              "(or pip install 'convcast[nowcast]')") from err
        if not self.zarr:
            return xr.open_dataset(self.path, cache=False)
        try:  # check here: older xarray reports a missing zarr as an unknown engine
            import zarr  # noqa: F401
        except ImportError as err:
            raise ImportError(f"{self.path} is a Zarr store; reading it needs the zarr package: "
                              "pip install zarr (or pip install 'convcast[nowcast]')") from err
        if self.consolidated is None:  # first open: learn whether the store is consolidated
            try:
                ds = xr.open_zarr(self.path, chunks=None, consolidated=True)
            except (KeyError, ValueError):  # not consolidated (zarr 2: KeyError, zarr 3: Value)
                self.consolidated = False
            else:
                self.consolidated = True
                return ds
        # explicit, so reopening in each worker neither retries nor warns about it
        return xr.open_zarr(self.path, chunks=None, consolidated=self.consolidated)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if getattr(self, "_h_pid", None) != os.getpid():  # netCDF handles do not survive a fork
            self._h_ds = self._open_dataset()
            self._h_pid = os.getpid()
        v = self._h_ds[self.variable].transpose(*self.dims)
        return v.isel({self.time_dim: slice(start, stop)}).values


def detect_format(path: str | os.PathLike) -> str:
    """The format of a radar archive from its path (see `FORMATS`)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        if suffix == ".zarr" or (p / ".zgroup").exists() or (p / "zarr.json").exists():
            return "zarr"
        return "png"
    table = {".npy": "npy", ".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
             ".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf", ".cdf": "netcdf"}
    if suffix in table:
        return table[suffix]
    if not p.exists():
        raise FileNotFoundError(f"radar archive {p} does not exist")
    raise ValueError(f"cannot tell the format of {p}; pass format= one of {', '.join(FORMATS[1:])}")


def open_radar(path: str | os.PathLike, format: str = "auto", units: str = "auto",
               variable: str | None = None, time_variable: str | None = None,
               time_format: str | None = None, time_regex: str | None = None,
               start_time: str | None = None, step_minutes: float | None = None,
               nodata: float | None = None) -> FrameSource:
    """Open a radar archive lazily: a folder of images, .npy/.npz, HDF5, NetCDF or Zarr."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")
    check_units(units)
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "png":
        return ImageFolderSource(path, units, time_format, time_regex, nodata)
    if fmt in ("npy", "npz"):
        return ArraySource(path, units, variable, time_variable, start_time, step_minutes, nodata)
    if fmt == "hdf5":
        return HDF5Source(path, units, variable, time_variable, start_time, step_minutes, nodata)
    return XarraySource(path, units, variable, time_variable, nodata, zarr=fmt == "zarr",
                        start_time=start_time, step_minutes=step_minutes)


def write_image_folder(folder: str | os.PathLike, frames: np.ndarray, timestamps: np.ndarray,
                       name_format: str = "%Y%m%d%H%M.png") -> list[Path]:
    """Write gray frames `[T, H, W]` (uint8 levels, or uint16) as one image per frame named by
    its time (`strftime` pattern), HKO-7 style; each file is written atomically."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8/uint16 frames [T, H, W], got {frames.dtype} "
                         f"{frames.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame, t in zip(frames, to_datetime64(timestamps), strict=True):
        path = folder / t.astype(datetime).strftime(name_format)
        ok, buf = cv2.imencode(path.suffix, frame)
        if not ok:
            raise OSError(f"cannot encode {path}")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
        paths.append(path)
    return paths
