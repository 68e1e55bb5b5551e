"""Radar readers: every format from small files, timestamps, units and their round trips."""

import pickle
import sys
import warnings

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

from convcast.data.radar.archive import detect_format, open_radar, write_image_folder
from convcast.data.radar.preprocess import RadarPreprocess
from convcast.data.sources.arrays import ArraySource
from convcast.data.sources.times import parse_time, to_datetime64
from convcast.data.sources.xarray import XarraySource
from convcast.data.units import dbz_to_pixel, pixel_to_dbz, rainrate_to_dbz

T, H, W = 6, 8, 10
STEP = np.timedelta64(6, "m")
START = np.datetime64("2021-06-01T23:48", "s")  # the series crosses midnight


@pytest.fixture
def dbz() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-10, 60, size=(T, H, W)).astype(np.float32)


@pytest.fixture
def times() -> np.ndarray:
    return START + STEP * np.arange(T)


def rain_dataset(dbz: np.ndarray, times: np.ndarray | None) -> xr.Dataset:
    """Rain rate (mm/h) from `dbz` as an xarray dataset, with a time coordinate unless None."""
    rain = np.where(dbz > 5, 10 ** ((dbz - 17.67) / 15.6), 0.0).astype(np.float32)
    coords = {} if times is None else {"time": times.astype("datetime64[ns]")}
    return xr.Dataset({"precip": (("time", "y", "x"), rain, {"units": "mm h-1"})}, coords)


def to_zarr(ds: xr.Dataset, path, **kwargs) -> None:
    """`ds.to_zarr`, quiet about zarr 3's "consolidated metadata is not in the v3 spec yet"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, **kwargs)


def test_png_folder_times_values_and_units(tmp_path, dbz, times):
    gray = np.round(dbz_to_pixel(dbz) * 255).astype(np.uint8)
    write_image_folder(tmp_path / "a", gray, times)
    src = open_radar(tmp_path / "a")
    assert src.units == "gray" and src.frame_shape == (1, H, W) and len(src) == T
    assert (src.timestamps == times).all()
    np.testing.assert_array_equal(src.read(2, 5)[:, 0], gray[2:5])
    pixels = RadarPreprocess(src.units)(src.read(0, T))  # gray -> pixels -> dBZ within 0.5 level
    np.testing.assert_allclose(pixel_to_dbz(pixels[:, 0]), dbz, atol=70 / 255 / 2 + 1e-4)


def test_png_custom_time_format_and_skipped_files(tmp_path, times):
    gray = np.zeros((T, H, W), np.uint8)
    write_image_folder(tmp_path, gray, times, name_format="RAD%y%m%d%H%M00.png")
    (tmp_path / "legend.png").write_bytes((tmp_path / "RAD2106012348" "00.png").read_bytes())
    with pytest.warns(UserWarning, match="no time"):
        src = open_radar(tmp_path, time_format="RAD%y%m%d%H%M00")
    assert (src.timestamps == times).all()
    with pytest.raises(ValueError, match="time_format"):
        open_radar(tmp_path, time_format="%Y-%m-%d")  # no file matches


def test_parse_time_defaults_and_regex():
    assert str(parse_time("radar_202106011230")) == "2021-06-01 12:30:00"
    assert str(parse_time("x20210601123015y")) == "2021-06-01 12:30:15"
    assert parse_time("no digits") is None
    t = parse_time("site7_2021-06-01_1230", "%Y-%m-%d_%H%M", r"(\d{4}-\d\d-\d\d_\d{4})")
    assert str(t) == "2021-06-01 12:30:00"


def test_npy_needs_start_and_step(tmp_path, dbz, times):
    np.save(tmp_path / "a.npy", dbz)
    with pytest.raises(ValueError, match="start_time"):
        open_radar(tmp_path / "a.npy", units="dbz")
    src = open_radar(tmp_path / "a.npy", units="dbz", start_time=str(START), step_minutes=6)
    assert (src.timestamps == times).all()
    np.testing.assert_array_equal(src.read(0, T)[:, 0], dbz)


def test_npz_is_memory_mapped_with_timestamps_inside(tmp_path, dbz, times):
    np.savez(tmp_path / "a.npz", frames=dbz, timestamps=times)
    src = open_radar(tmp_path / "a.npz", units="dbz")
    assert isinstance(src.source, ArraySource) and isinstance(src.source.file.array, np.memmap)
    assert (src.timestamps == times).all()
    np.testing.assert_array_equal(src.read(1, 4)[:, 0], dbz[1:4])
    np.savez_compressed(tmp_path / "c.npz", frames=dbz, timestamps=times.astype(str))
    with pytest.warns(UserWarning, match="compressed"):
        src = open_radar(tmp_path / "c.npz", units="dbz")
    np.testing.assert_array_equal(src.read(0, T)[:, 0], dbz)


def test_npz_with_several_arrays_needs_a_name(tmp_path, dbz, times):
    np.savez(tmp_path / "a.npz", one=dbz, two=dbz, timestamps=times)
    with pytest.raises(ValueError, match="variable"):
        open_radar(tmp_path / "a.npz", units="dbz")
    assert open_radar(tmp_path / "a.npz", units="dbz", variable="two").variable == "two"


def test_hdf5_cf_time_units_and_unit_attribute(tmp_path, dbz, times):
    minutes = (times - np.datetime64("2021-01-01")).astype("timedelta64[m]").astype(np.int64)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("scans/reflectivity", data=dbz[:, None]).attrs["units"] = "dBZ"
        f.create_dataset("time", data=minutes).attrs["units"] = "minutes since 2021-01-01 00:00"
    src = open_radar(tmp_path / "a.h5")
    assert src.units == "dbz" and src.frame_shape == (1, H, W)
    assert (src.timestamps == times).all()
    np.testing.assert_array_equal(src.read(0, 2)[:, 0], dbz[:2])


def test_netcdf_rain_rate_round_trip(tmp_path, dbz, times):
    ds = rain_dataset(dbz, times)
    rain = ds["precip"].values
    ds.to_netcdf(tmp_path / "a.nc")
    src = open_radar(tmp_path / "a.nc")
    assert src.units == "rainrate" and (src.timestamps == times).all()
    pre = RadarPreprocess(src.units)
    pixels = pre(src.read(0, T))
    assert pixels.min() >= 0 and pixels.max() <= 1
    back = pre.from_pixel(pixels)[:, 0]  # pixels -> mm/h: rain above -10 dBZ round-trips
    np.testing.assert_allclose(back, rain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pre.to_rainrate(torch.from_numpy(pixels))[:, 0][rain > 0],
                               rain[rain > 0], rtol=1e-4)


def test_netcdf_without_time_coordinate_needs_start_and_step(tmp_path, dbz, times):
    rain_dataset(dbz, None).to_netcdf(tmp_path / "a.nc")  # a bare time dimension: no times
    with pytest.raises(ValueError, match="start_time"):
        open_radar(tmp_path / "a.nc")
    src = open_radar(tmp_path / "a.nc", start_time=str(START), step_minutes=6)
    assert (src.timestamps == times).all()


def test_zarr_reads_like_netcdf(tmp_path, dbz, times):
    pytest.importorskip("zarr")
    ds = rain_dataset(dbz, times)
    ds.to_netcdf(tmp_path / "a.nc")
    to_zarr(ds, tmp_path / "a.zarr")
    assert detect_format(tmp_path / "a.zarr") == "zarr"
    nc, src = open_radar(tmp_path / "a.nc"), open_radar(tmp_path / "a.zarr")
    assert isinstance(src.source, XarraySource) and src.source.zarr
    assert src.units == nc.units == "rainrate" and src.frame_shape == nc.frame_shape == (1, H, W)
    assert (src.timestamps == times).all() and (src.timestamps == nc.timestamps).all()
    np.testing.assert_array_equal(src.read(0, T), nc.read(0, T))
    np.testing.assert_array_equal(src.read(2, 5)[:, 0], ds["precip"].values[2:5])


def test_zarr_folder_without_suffix_and_unconsolidated(tmp_path, dbz, times):
    pytest.importorskip("zarr")
    to_zarr(rain_dataset(dbz, times), tmp_path / "store", consolidated=False)
    assert detect_format(tmp_path / "store") == "zarr"  # found by its metadata, not its name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "failed to open consolidated metadata" warnings
        src = open_radar(tmp_path / "store")
        assert src.source.consolidated is False and (src.timestamps == times).all()
        copy = pickle.loads(pickle.dumps(src))  # what a DataLoader worker gets: it reopens
        np.testing.assert_array_equal(copy.read(0, T), src.read(0, T))


def test_zarr_missing_package_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "a.zarr").mkdir()
    monkeypatch.setitem(sys.modules, "zarr", None)  # `import zarr` now raises ImportError
    with pytest.raises(ImportError, match="needs the zarr package: pip install zarr"):
        open_radar(tmp_path / "a.zarr")


def test_dbz_round_trip_and_minmax_range(tmp_path, dbz, times):
    np.savez(tmp_path / "a.npz", frames=dbz, timestamps=times)
    src = open_radar(tmp_path / "a.npz", units="dbz")
    pre = RadarPreprocess("dbz", dbz_range=(0.0, 60.0))
    pixels = pre(src.read(0, T))
    inside = dbz >= 0
    np.testing.assert_allclose(pre.to_dbz(pixels[:, 0])[inside], dbz[inside], atol=1e-4)
    assert (pixels[:, 0][~inside] == 0).all()  # below the range: clipped to 0
    np.testing.assert_allclose(pre.from_pixel(pixels)[:, 0][inside], dbz[inside], atol=1e-4)
    hko = RadarPreprocess("dbz")(src.read(0, T))  # default: HKO-7 pixels
    np.testing.assert_allclose(hko, dbz_to_pixel(dbz)[:, None], atol=1e-6)
    assert rainrate_to_dbz(0.5) == pytest.approx(12.97, abs=0.01)


def test_nodata_becomes_nan(tmp_path, dbz, times):
    dbz[2, 3, 4] = -999
    np.savez(tmp_path / "a.npz", frames=dbz, timestamps=times)
    frames = open_radar(tmp_path / "a.npz", units="dbz", nodata=-999).read(0, T)
    assert np.isnan(frames[2, 0, 3, 4]) and np.isfinite(frames).sum() == T * H * W - 1


def test_time_errors_and_formats(tmp_path, dbz, times):
    np.savez(tmp_path / "a.npz", frames=dbz, timestamps=times[::-1])
    with pytest.raises(ValueError, match="strictly increasing"):
        open_radar(tmp_path / "a.npz", units="dbz")
    np.savez(tmp_path / "b.npz", frames=dbz.astype(np.float32), timestamps=times)
    with pytest.raises(ValueError, match="units"):
        open_radar(tmp_path / "b.npz")  # float data with no units: ask
    with pytest.raises(ValueError, match="format"):
        open_radar(tmp_path / "a.npz", format="grib")
    (tmp_path / "x.grib").write_bytes(b"")
    with pytest.raises(ValueError, match="format"):
        detect_format(tmp_path / "x.grib")
    epoch = to_datetime64(np.array([0, 60]))
    assert str(epoch[1]) == "1970-01-01T00:01:00"


def test_sources_pickle_without_file_handles(tmp_path, dbz, times):
    np.savez(tmp_path / "a.npz", frames=dbz, timestamps=times)
    src = open_radar(tmp_path / "a.npz", units="dbz")
    src.read(0, 1)
    copy = pickle.loads(pickle.dumps(src))  # what a spawned DataLoader worker receives
    assert "_h" not in copy.__dict__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(copy.read(0, T), src.read(0, T))


def test_units_that_contradict_the_metadata_are_refused_unless_forced(tmp_path):
    """An archive whose metadata says mm/h, opened as dBZ: refused naming both (a forecast in
    the wrong units would look plausible); `force:dbz` overrides, `auto:dbz` prefers the file."""
    from convcast.data.radar.archive import resolve_units

    with pytest.raises(ValueError, match="units 'dbz' were given but the archive's metadata "
                                         "says 'rainrate'.*force:dbz"):
        resolve_units("dbz", "mm/h", np.dtype("float32"), "a.nc")
    assert resolve_units("force:dbz", "mm/h", np.dtype("float32"), "a.nc") == "dbz"
    assert resolve_units("auto:dbz", "mm/h", np.dtype("float32"), "a.nc") == "rainrate"
    assert resolve_units("auto:dbz", None, np.dtype("float32"), "a.nc") == "dbz"
    assert resolve_units("rainrate", "mm h-1", np.dtype("float32"), "a.nc") == "rainrate"
    with pytest.raises(ValueError, match="unknown units 'force:auto'"):
        resolve_units("force:auto", None, np.dtype("float32"), "a.nc")


def test_a_providers_archive_without_importer_suggests_the_importer(tmp_path):
    """MeteoSwiss GIFs (AQC%y%j%H%M?_00005.801.gif) read as plain images have no time in the
    names the image reader knows: the error names the importer whose pattern they match."""
    import imageio.v3 as iio

    for minute in (0, 5, 10):
        iio.imwrite(tmp_path / f"AQC16193{21}{minute:02d}V_00005.801.gif",
                    np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="pattern for mch_gif.*--importer mch_gif"):
        open_radar(tmp_path)
