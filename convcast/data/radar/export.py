"""A radar forecast as CF-compliant NetCDF: on its projected grid, with valid times and units.

`write_forecast_netcdf(path, rain, valid_times, grid, ...)` writes one variable over
`(time, y, x)`: `precip_intensity` (rain rate, mm h-1, CF standard name
`lwe_precipitation_rate`) or, for an accumulation archive, `precip_accum` (mm summed over
`accutime` minutes, `lwe_thickness_of_precipitation_amount`), NaN where there is no data. The
coordinates are the pixel centres in the projection (`projection_x_coordinate`, metres) with the
grid mapping of the projection (CF attributes and WKT from pyproj, and the PROJ string that
pysteps uses), 2-D `lat` / `lon`, the valid `time` of each frame and the
`forecast_reference_time` (the last input frame); global attributes say which model and which
checkpoint made it. xarray writes it, atomically (`convcast.atomic`); GIS tools (QGIS, GDAL),
xarray and pysteps' readers place it on the map.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convcast.atomic import atomic_path
from convcast.data.radar.geo import Grid

VARIABLES = {  # physical unit -> (name, CF standard name, CF units, long name)
    "mm/h": ("precip_intensity", "lwe_precipitation_rate", "mm h-1", "precipitation rate"),
    "mm": ("precip_accum", "lwe_thickness_of_precipitation_amount", "mm",
           "precipitation accumulation"),
}


def grid_mapping(grid: Grid) -> dict[str, Any]:
    """CF grid-mapping attributes of `grid`'s projection (pyproj), with its PROJ string."""
    crs = grid.crs()
    attrs = {k: v for k, v in crs.to_cf().items() if v is not None}
    if attrs.get("grid_mapping_name") == "polar_stereographic" and \
            "latitude_of_projection_origin" not in attrs:  # CF requires it: the pole, +-90
        m = re.search(r"\+lat_0=([-+0-9.]+)([NnSs]?)", grid.projection)
        lat0 = float(m.group(1)) * (-1 if m.group(2) in ("S", "s") else 1) if m else 90.0
        attrs["latitude_of_projection_origin"] = lat0
    attrs["proj4_params"] = grid.projection
    return attrs


def forecast_dataset(rain: np.ndarray, valid_times: np.ndarray, grid: Grid | None,
                     units: str = "mm/h", accutime: float | None = None,
                     reference_time: np.datetime64 | None = None,
                     attrs: Mapping[str, Any] | None = None):
    """The `xarray.Dataset` of a forecast `rain` `[K, H, W]` (see the module docstring)."""
    import xarray as xr

    rain = np.asarray(rain, dtype=np.float32)
    if rain.ndim != 3:
        raise ValueError(f"expected a forecast [K, H, W], got shape {rain.shape}")
    if units not in VARIABLES:
        raise ValueError(f"units must be one of {', '.join(VARIABLES)}, got {units!r}")
    if units == "mm" and not accutime:
        raise ValueError("an accumulation forecast needs its accutime (minutes per value)")
    times = np.asarray(valid_times, dtype="datetime64[ns]")
    if times.shape != (rain.shape[0],):
        raise ValueError(f"{rain.shape[0]} frames but {times.size} valid times")
    name, standard, cf_units, long_name = VARIABLES[units]
    var = {"standard_name": standard, "long_name": long_name, "units": cf_units}
    if units == "mm":
        var.update(accutime=float(accutime),
                   cell_methods=f"time: sum (interval: {float(accutime):g} minutes)")
    coords: dict[str, Any] = {"time": ("time", times, {"standard_name": "time",
                                                       "long_name": "valid time"})}
    if reference_time is not None:
        coords["forecast_reference_time"] = ((), np.datetime64(reference_time, "ns"),
                                             {"standard_name": "forecast_reference_time"})
    data_vars: dict[str, Any] = {}
    if grid is not None:
        if grid.shape != rain.shape[1:]:
            raise ValueError(f"the grid is {grid.shape} but the forecast {rain.shape[1:]}")
        coords["x"] = ("x", grid.x(), {"standard_name": "projection_x_coordinate",
                                       "long_name": "x of pixel centre", "units": "m",
                                       "axis": "X"})
        coords["y"] = ("y", grid.y(), {"standard_name": "projection_y_coordinate",
                                       "long_name": "y of pixel centre", "units": "m",
                                       "axis": "Y"})
        lon, lat = grid.lonlat()
        coords["lon"] = (("y", "x"), lon.astype(np.float32),
                         {"standard_name": "longitude", "units": "degrees_east"})
        coords["lat"] = (("y", "x"), lat.astype(np.float32),
                         {"standard_name": "latitude", "units": "degrees_north"})
        data_vars["crs"] = ((), np.int32(0), grid_mapping(grid))
        var.update(grid_mapping="crs")
    data_vars[name] = (("time", "y", "x"), rain, var)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({"Conventions": "CF-1.8", **{k: _attr(v) for k, v in (attrs or {}).items()}})
    return ds


def _attr(v: Any) -> Any:
    """A value NetCDF stores as an attribute (None and other objects as text)."""
    return v if isinstance(v, (str, int, float, np.number)) else str(v)


def write_forecast_netcdf(path: str | os.PathLike, rain: np.ndarray, valid_times: np.ndarray,
                          grid: Grid | None, *, units: str = "mm/h", accutime: float | None = None,
                          reference_time: np.datetime64 | None = None,
                          attrs: Mapping[str, Any] | None = None) -> Path:
    """Write a forecast `[K, H, W]` as CF NetCDF (see the module docstring), atomically."""
    ds = forecast_dataset(rain, valid_times, grid, units, accutime, reference_time, attrs)
    name = VARIABLES[units][0]
    encoding = {name: {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)},
                "time": {"units": "minutes since 1970-01-01 00:00:00", "dtype": "float64"}}
    if "forecast_reference_time" in ds.coords:
        encoding["forecast_reference_time"] = dict(encoding["time"])
    for c in ("x", "y", "lon", "lat"):
        if c in ds.coords:
            encoding[c] = {"_FillValue": None}
    with atomic_path(path) as tmp:
        try:
            ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        except (ImportError, ValueError) as err:
            if "netcdf4" not in str(err).lower():
                raise
            raise ImportError("writing forecast.nc needs netCDF4: pip install "
                              "'convcast[nowcast]'") from err
    return Path(path)
