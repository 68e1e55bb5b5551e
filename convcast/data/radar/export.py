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

An ensemble forecast adds, beside the deterministic variable, its members as `<name>_members`
(e.g. `precip_intensity_members`, the same units) over `(realization, time, y, x)`, with the
CF `realization` coordinate (standard name `realization`, the member's number 0..M-1), and
exceedance probabilities as `probability_of_precipitation_above_threshold` (units 1: the
fraction of members at or above the threshold) over `(threshold, time, y, x)`, whose
`threshold` coordinate is the rain rate (standard name `lwe_precipitation_rate`, mm h-1) with
`spp__relative_to_threshold = "greater_than_or_equal_to"` (the convention of the Met Office's
IMPROVER probability files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convcast.atomic import atomic_path
from convcast.data.radar.geo import Grid

PROBABILITY = "probability_of_precipitation_above_threshold"
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
                     attrs: Mapping[str, Any] | None = None, *,
                     members: np.ndarray | None = None, probabilities: np.ndarray | None = None,
                     thresholds: Sequence[float] | None = None):
    """The `xarray.Dataset` of a forecast `rain` `[K, H, W]` (see the module docstring), with
    its ensemble `members` `[M, K, H, W]` (units as `rain`) and exceedance `probabilities`
    `[P, K, H, W]` of `thresholds` (P of them, mm/h) where given."""
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
    if members is not None:
        members = _frames(members, rain.shape, "members", "[M, K, H, W]")
        coords["realization"] = ("realization", np.arange(len(members), dtype=np.int32),
                                 {"standard_name": "realization", "units": "1",
                                  "long_name": "ensemble member"})
        data_vars[f"{name}_members"] = (("realization", "time", "y", "x"), members,
                                        {**var, "long_name": f"{long_name} of each ensemble "
                                                             "member"})
    if (probabilities is None) != (thresholds is None):
        raise ValueError("give exceedance probabilities [P, K, H, W] together with their P "
                         "thresholds (mm/h), or neither")
    if probabilities is not None:
        probabilities = _frames(probabilities, rain.shape, "probabilities", "[P, K, H, W]")
        thr = np.asarray(list(thresholds), dtype=np.float64)
        if thr.shape != (len(probabilities),):
            raise ValueError(f"{len(probabilities)} probability fields but {thr.size} "
                             "thresholds; give one threshold (mm/h) per field")
        coords["threshold"] = ("threshold", thr, {
            "standard_name": "lwe_precipitation_rate", "long_name": "precipitation rate "
            "threshold", "units": "mm h-1", "spp__relative_to_threshold":
            "greater_than_or_equal_to"})
        prob = {"long_name": "probability of a precipitation rate at or above the threshold",
                "units": "1", "valid_min": np.float32(0), "valid_max": np.float32(1),
                "comment": "fraction of the ensemble members at or above the threshold"}
        if grid is not None:
            prob["grid_mapping"] = "crs"
        data_vars[PROBABILITY] = (("threshold", "time", "y", "x"), probabilities, prob)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({"Conventions": "CF-1.8", **{k: _attr(v) for k, v in (attrs or {}).items()}})
    return ds


def _frames(a: np.ndarray, shape: tuple[int, ...], what: str, layout: str) -> np.ndarray:
    """`a` as float32 `[N, K, H, W]` with K, H, W of the forecast `shape`, or a clear error."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 4 or a.shape[1:] != shape:
        raise ValueError(f"{what} must be {layout} with K, H, W of the forecast {shape}, got "
                         f"shape {a.shape}")
    return a


def _attr(v: Any) -> Any:
    """A value NetCDF stores as an attribute (None and other objects as text)."""
    return v if isinstance(v, (str, int, float, np.number)) else str(v)


def write_forecast_netcdf(path: str | os.PathLike, rain: np.ndarray, valid_times: np.ndarray,
                          grid: Grid | None, *, units: str = "mm/h", accutime: float | None = None,
                          reference_time: np.datetime64 | None = None,
                          attrs: Mapping[str, Any] | None = None,
                          members: np.ndarray | None = None,
                          probabilities: np.ndarray | None = None,
                          thresholds: Sequence[float] | None = None) -> Path:
    """Write a forecast `[K, H, W]` as CF NetCDF (see the module docstring), atomically; with
    its ensemble `members` `[M, K, H, W]` and exceedance `probabilities` `[P, K, H, W]` of
    `thresholds` (mm/h) where given."""
    ds = forecast_dataset(rain, valid_times, grid, units, accutime, reference_time, attrs,
                          members=members, probabilities=probabilities, thresholds=thresholds)
    name = VARIABLES[units][0]
    field = {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)}
    encoding = {v: dict(field) for v in (name, f"{name}_members", PROBABILITY) if v in ds}
    encoding["time"] = {"units": "minutes since 1970-01-01 00:00:00", "dtype": "float64"}
    if "forecast_reference_time" in ds.coords:
        encoding["forecast_reference_time"] = dict(encoding["time"])
    for c in ("x", "y", "lon", "lat", "realization", "threshold"):
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
