"""Frame sources over array files: `.npy`, `.npz` (memory-mapped) and HDF5 (sliced lazily).

One file holds one sequence (`[T,H,W]`, `[T,C,H,W]`, `[T,H,W,C]`) or many (`[N,T,...]`, or any
order named by `layout`); each sequence becomes one source. An archive stored time first
(`time_first=True`: `[T,H,W]` or `[T,C,H,W]`, as radar archives are) needs no layout guess.
Only the frames of a window are read, so data larger than memory trains in constant memory; a
compressed `.npz` member (`np.savez_compressed`) is decompressed into memory on first use, with a
warning when it is large. Time stamps come from an array named like `timestamps` / `time` in the
file (or `time_key`), else from `start_time` + `step_minutes`, else there are none.
"""

from __future__ import annotations

import os
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convcast.data.sources.base import FrameSource, register_source
from convcast.data.sources.layout import (
    check_layout,
    frame_shape,
    guess_layout,
    index_sequence,
    time_first_layout,
)
from convcast.data.sources.times import (
    TIME_NAMES,
    check_sorted,
    regular_timestamps,
    to_datetime64,
)

FRAME_NAMES = ("frames", "data", "radar", "reflectivity", "dbz", "rainrate", "precip")
HDF5_EXTS = (".h5", ".hdf5", ".hdf")


# ---- .npz members ------------------------------------------------------------------------------
def npz_names(path: Path) -> list[str]:
    """The arrays inside an .npz file, with a clear error for a file that is not one."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a readable .npz file ({err}); it may be truncated or "
                         "not written by np.savez") from err


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int | None]:
    """Shape, Fortran order, dtype and (if stored uncompressed) the data's byte offset of the
    array `key` of an .npz file, read from its header alone."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            header = f.tell()  # bytes of the .npy header inside the member
    if info.compress_type != zipfile.ZIP_STORED or dtype.hasobject:
        return shape, fortran, dtype, None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        n_name, n_extra = struct.unpack("<HH", f.read(30)[26:30])  # the zip local file header
    return shape, fortran, dtype, info.header_offset + 30 + n_name + n_extra + header


def npz_member(path: str | Path, key: str, warn_bytes: int = 256 * 2**20) -> np.ndarray:
    """Array `key` of an .npz file: memory-mapped when stored uncompressed (`np.savez`), so only
    the frames read leave the disk; a compressed member (`np.savez_compressed`) is decompressed
    into memory whole, with a warning when it is larger than `warn_bytes`."""
    path = Path(path)
    shape, fortran, dtype, offset = npz_header(path, key)
    if offset is not None:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")
    size = int(np.prod(shape)) * dtype.itemsize
    if size > warn_bytes:
        warnings.warn(f"{path}: array {key!r} is compressed, so its {size / 2**20:.0f} MiB are "
                      "loaded into memory whole; save it with np.savez (not savez_compressed) or "
                      "as .npy to stream it from disk", stacklevel=2)
    with np.load(path) as z:
        return z[key]


def array_info(path: str | Path, key: str | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the frames array of a file, read from headers alone (a compressed .npz
    member is not decompressed)."""
    f = ArrayFile(path, key, layout="", check=False)
    return f.shape, f.dtype


# ---- one array file, shared by the sources of its sequences -----------------------------------
def _hdf5_datasets(path: Path) -> dict[str, tuple[int, ...]]:
    import h5py

    found: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: found.__setitem__(n, o.shape)
                     if isinstance(o, h5py.Dataset) else None)
    return found


class ArrayFile:
    """The frames array (and the time array, if any) of one `.npy` / `.npz` / HDF5 file, opened
    lazily: the shape and dtype come from headers, values only on `read`."""

    def __init__(self, path: str | Path, key: str | None = None, layout: str | None = None,
                 time_first: bool = False, time_key: str | None = None, check: bool = True
                 ) -> None:
        self.path = Path(path)
        self.ext = ".h5" if self.path.suffix.lower() in HDF5_EXTS else self.path.suffix.lower()
        arrays = self._arrays()  # {name: shape}
        self.time_key = time_key or next((k for k in TIME_NAMES if k in arrays), None)
        if self.time_key is not None and self.time_key not in arrays:
            raise KeyError(f"{self.path} has no array {self.time_key!r}; arrays: {list(arrays)}")
        self.key = self._frames_key(arrays, key, time_first)
        self.shape, self.dtype = self._info()
        if not check:  # only the header facts (array_info)
            return
        if layout is not None:
            self.layout, self.guessed = check_layout(layout, len(self.shape)), False
        elif time_first:
            self.layout, self.guessed = time_first_layout(self.shape, self.where), False
        else:
            self.layout, self.guessed = guess_layout(self.shape), True
        if not np.issubdtype(self.dtype, np.number) and self.dtype != np.bool_:
            raise ValueError(f"{self.where} holds {self.dtype} values; frames must be numbers "
                             "(save them as an integer or float array)")
        # an archive read time first is opened now, and says always when it is compressed
        self.warn_bytes = 0 if time_first else 256 * 2**20
        if time_first and self.ext == ".npz":
            self.array  # noqa: B018  (open it: a compressed archive warns here, not mid-training)

    @property
    def where(self) -> str:
        return str(self.path) if self.key is None else f"{self.path}:{self.key}"

    def _arrays(self) -> dict[str, tuple[int, ...]]:
        if self.ext == ".npy":
            return {}
        if self.ext == ".npz":
            return {n: npz_header(self.path, n)[0] for n in npz_names(self.path)}
        try:
            return _hdf5_datasets(self.path)
        except OSError as err:
            raise ValueError(f"{self.path} is not a readable HDF5 file ({err}); it may be "
                             "truncated or not HDF5") from err

    def _frames_key(self, arrays: dict[str, tuple[int, ...]], key: str | None,
                    time_first: bool) -> str | None:
        """The array that holds the frames: `key`, else the only candidate, else (archives) one
        with a usual name; otherwise an error listing the arrays."""
        if self.ext == ".npy":
            return None
        if key is not None:
            if key not in arrays:
                raise ValueError(f"{self.path} has no array {key!r}; it holds: "
                                 f"{', '.join(arrays) or 'none'}")
            return key
        names = [n for n in arrays if n != self.time_key]
        if time_first:  # archives keep other arrays beside the frames: take a frame-shaped one
            names = [n for n in names if len(arrays[n]) in (3, 4)]
        if len(names) == 1:
            return names[0]
        if time_first:
            preferred = [n for n in FRAME_NAMES if n in names]
            if preferred:
                return preferred[0]
        raise ValueError(f"{self.path} holds {len(names)} arrays ({', '.join(names) or 'none'});"
                         " name one with key=... (the `variable` option of radar archives)")

    def _info(self) -> tuple[tuple[int, ...], np.dtype]:
        if self.ext == ".npz":
            shape, _, dtype, _ = npz_header(self.path, self.key)
            return tuple(shape), np.dtype(dtype)
        arr, close = self.open_array(self.key)
        try:
            return tuple(arr.shape), np.dtype(arr.dtype)
        finally:
            close()

    def open_array(self, key: str | None) -> tuple[Any, Callable[[], None]]:
        """`(array-like, closer)`: a memory map, a loaded compressed member or an h5py dataset."""
        if self.ext == ".npy":
            try:
                return np.load(self.path, mmap_mode="r"), lambda: None
            except ValueError as err:  # a truncated file or a bad header
                raise ValueError(f"{self.path} is not a readable .npy file ({err}); it may be "
                                 "truncated") from err
        if self.ext == ".npz":
            return npz_member(self.path, key, getattr(self, "warn_bytes", 256 * 2**20)), \
                lambda: None
        import h5py

        f = h5py.File(self.path, "r")
        return f[key], f.close

    @property
    def array(self):
        """The frames array, opened on first use (and again in each worker process)."""
        if getattr(self, "_h_pid", None) != os.getpid():  # handles do not survive a fork
            self._h_arr, self._h_close = self.open_array(self.key)
            self._h_pid = os.getpid()
        return self._h_arr

    def timestamps(self, num_frames: int, start_time: str | None, step_minutes: float | None
                   ) -> np.ndarray | None:
        """The frames' time stamps (datetime64[s]), or None where the file has none."""
        if self.time_key is not None:
            arr, close = self.open_array(self.time_key)
            try:
                units = arr.attrs.get("units") if hasattr(arr, "attrs") else None
                ts = to_datetime64(arr[()], units, str(self.path))
            finally:
                close()
        elif start_time is not None or step_minutes is not None:
            ts = regular_timestamps(num_frames, start_time, step_minutes, str(self.path))
        else:
            return None
        if len(ts) != num_frames:
            raise ValueError(f"{self.path}: {len(ts)} timestamps for {num_frames} frames")
        return check_sorted(ts, str(self.path))

    def units(self) -> str | None:
        """The `units` attribute of an HDF5 frames dataset, if any."""
        if self.ext != ".h5":
            return None
        arr, close = self.open_array(self.key)
        try:
            u = arr.attrs.get("units")
        finally:
            close()
        return u.decode(errors="ignore") if isinstance(u, bytes) else u

    def close(self) -> None:
        if getattr(self, "_h_close", None) is not None and self._h_pid == os.getpid():
            self._h_close()
        self._h_arr = self._h_close = self._h_pid = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h")}


class ArraySource(FrameSource):
    """Sequence `index` of an `ArrayFile` (None: the file is one sequence)."""

    def __init__(self, path: str | Path, file: ArrayFile | None = None, index: int | None = None,
                 start_time: str | None = None, step_minutes: float | None = None,
                 **file_options: Any) -> None:
        self.file = file if file is not None else ArrayFile(path, **file_options)
        self.path, self.index = self.file.path, index
        self.name = self.file.path.name + (f"[{index}]" if index is not None else "")
        self.num_frames, self.dtype = self.file.shape[self.file.layout.index("T")], self.file.dtype
        self.frame_shape = frame_shape(self.file.layout, self.file.shape)
        self.timestamps = self.file.timestamps(self.num_frames, start_time, step_minutes)
        self.units, self.metadata = self.file.units(), {}

    @classmethod
    def open(cls, path: Path, key: str | None = None, layout: str | None = None,
             time_first: bool = False, time_key: str | None = None,
             start_time: str | None = None, step_minutes: float | None = None
             ) -> list[FrameSource]:
        f = ArrayFile(path, key, layout, time_first, time_key)
        n = f.shape[f.layout.index("N")] if "N" in f.layout else None
        return [cls(path, f, i, start_time, step_minutes)
                for i in (range(n) if n is not None else [None])]

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "key": self.file.key, "layout": self.file.layout,
                "index": self.index}

    def _read(self, start: int, stop: int) -> np.ndarray:
        return index_sequence(self.file.array, self.file.layout, self.index, start, stop)

    def close(self) -> None:
        self.file.close()


@register_source("npy", (".npy",))
class NpySource(ArraySource):
    """A `.npy` array, memory-mapped."""


@register_source("npz", (".npz",))
class NpzSource(ArraySource):
    """A member of an `.npz` file: memory-mapped (np.savez) or loaded (np.savez_compressed)."""


@register_source("hdf5", HDF5_EXTS, aliases=("h5",))
class HDF5Source(ArraySource):
    """An HDF5 dataset, sliced lazily with h5py (reopened in each worker process)."""
