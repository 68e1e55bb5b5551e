"""NetCDF files and Zarr stores, read lazily with xarray; time from the time coordinate.

The frames are the one variable with 3 or 4 dimensions (or a usual name such as `precip`, or
`key`); the time dimension is `time` (or `time_key`). Without a time coordinate the times come from
`start_time` + `step_minutes`. Zarr needs the `zarr` package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convcast.data.sources.arrays import FRAME_NAMES
from convcast.data.sources.base import FrameSource, register_source
from convcast.data.sources.times import check_sorted, regular_timestamps, to_datetime64


def _pick_name(names: list[str], where: str) -> str:
    if len(names) == 1:
        return names[0]
    for p in FRAME_NAMES:
        if p in names:
            return p
    raise ValueError(f"{where} holds several arrays {names}; choose the frames with key=... (the "
                     "`variable` option of radar archives)")


class XarraySource(FrameSource):
    """A NetCDF file or Zarr store (see the module docstring)."""

    zarr = False

    def __init__(self, path: str | Path, key: str | None = None, time_key: str | None = None,
                 start_time: str | None = None, step_minutes: float | None = None) -> None:
        self.path, self.name, self.metadata = Path(path), Path(path).name, {}
        self.consolidated: bool | None = None  # Zarr: has consolidated metadata (first open)
        self.time_dim = time_key or "time"
        with self._open_dataset() as ds:
            names = [k for k, v in ds.data_vars.items() if v.ndim in (3, 4)]
            self.key = key or _pick_name(names, str(self.path))
            if self.key not in ds.data_vars:
                raise KeyError(f"{self.path} has no variable {self.key!r}; "
                               f"variables: {list(ds.data_vars)}")
            v = ds[self.key]
            if self.time_dim not in v.dims:
                raise ValueError(f"{self.path}:{self.key} has dims {v.dims} and no "
                                 f"{self.time_dim!r}; name the time dimension with time_key= "
                                 "(time_variable= of radar archives)")
            v = v.transpose(self.time_dim, ...)
            if v.ndim not in (3, 4):
                raise ValueError(f"{self.path}:{self.key} has shape {v.shape}; expected frames "
                                 "[T, H, W] or [T, C, H, W] with time first")
            self.dims, self.num_frames, self.dtype = v.dims, v.shape[0], np.dtype(v.dtype)
            self.frame_shape = (1, *v.shape[1:]) if v.ndim == 3 else tuple(v.shape[1:])
            self.units = v.attrs.get("units")
            if self.time_dim in v.coords:  # a bare dimension would read as 0, 1, 2... seconds
                ts = to_datetime64(v[self.time_dim].values, where=str(self.path))
            else:
                ts = regular_timestamps(v.shape[0], start_time, step_minutes,
                                        f"{self.path} (no {self.time_dim!r} coordinate)")
        self.timestamps = check_sorted(ts, str(self.path))

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
        v = self._h_ds[self.key].transpose(*self.dims)
        a = v.isel({self.time_dim: slice(start, stop)}).values
        return a.reshape(stop - start, *self.frame_shape)


@register_source("netcdf", (".nc", ".nc4", ".netcdf", ".cdf"))
class NetCDFSource(XarraySource):
    """A NetCDF file."""


@register_source("zarr", (".zarr",))
class ZarrSource(XarraySource):
    """A Zarr store (a folder)."""

    zarr = True

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return path.is_dir() and (path.suffix.lower() == ".zarr" or (path / ".zgroup").exists()
                                  or (path / "zarr.json").exists())
