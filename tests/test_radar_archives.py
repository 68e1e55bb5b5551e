"""Operational radar archives through pysteps' importers: file-name times, units, georeference,
crop and block-mean downsampling, training and CF NetCDF nowcasts.

Tiny FMI PGM and ODIM HDF5 files written here always run; the real composites of
`$CONVCAST_RADAR_SAMPLES` (by default the radar-samples folder beside the checkout) are read
where they exist.
"""

from __future__ import annotations

import gzip
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from test_nowcast_cli import tiny_fit

from convcast.data.description import DataDescription, RadarValues
from convcast.data.radar import RadarDataModule, open_radar
from convcast.data.radar.archive import archive_grid, archive_values
from convcast.data.radar.geo import Grid
from convcast.data.radar.preprocess import RadarPreprocess, block_mean
from convcast.data.radar.timeline import split_by_times
from convcast.data.sources import get_method, open_source
from convcast.data.sources.pysteps_importer import pattern_regex, provider_defaults, time_of

pytest.importorskip("pysteps")
pyproj = pytest.importorskip("pyproj")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples"))
FMI_PROJ = ("+proj=stere  +lon_0=25E +lat_0=90N +lat_ts=60 +a=6371288 +x_0=380886.310 "
            "+y_0=3395677.920 +no_defs")
FMI_NAME = "%Y%m%d%H%M_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz"
STEP = np.timedelta64(5, "m")


def samples(*parts: str) -> Path:
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"the real radar samples are not here ({path}); set CONVCAST_RADAR_SAMPLES "
                    "to the radar-samples folder to run this test")
    return path


# ---- tiny archives in the providers' own formats -------------------------------------------------
def write_fmi_pgm(path: Path, levels: np.ndarray, when: datetime, pixel: float = 1000.0) -> Path:
    """A gzipped FMI PGM: 8-bit levels (dBZ = (level - 64) / 2, 255 = no data) under FMI's header,
    the corners of the grid as longitude/latitude of the projection above."""
    H, W = levels.shape
    proj = pyproj.Proj(FMI_PROJ)
    (lon1, lon2), (lat1, lat2) = proj([0.0, W * pixel], [0.0, H * pixel], inverse=True)
    header = "\n".join([
        "P5", f"# obstime {when:%Y%m%d%H%M}", f"# metersperpixel_x {pixel}",
        f"# metersperpixel_y {pixel}", "# projection radar {", "# type stereographic",
        "# centrallongitude 25", "# centrallatitude 90", "# truelatitude 60",
        f"# bottomleft {lon1:.6f} {lat1:.6f}", f"# topright {lon2:.6f} {lat2:.6f}", "# }",
        f"{W} {H}", "255", ""]).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + levels.astype(np.uint8).tobytes())
    return path


def fmi_levels(n: int, H: int = 24, W: int = 20) -> np.ndarray:
    """`[n, H, W]` uint8: a 38-dBZ block moving one pixel east per frame, the top-right corner
    outside the radar's domain (255)."""
    a = np.zeros((n, H, W), np.uint8)  # level 0: -32 dBZ, no echo
    for t in range(n):
        a[t, 8:16, 2 + t:10 + t] = 140  # (140 - 64) / 2 = 38 dBZ
    a[:, :4, -4:] = 255
    return a


def fmi_archive(folder: Path, n: int = 8, start: str = "2016-09-28T14:45") -> np.ndarray:
    t0 = datetime.fromisoformat(start)
    levels = fmi_levels(n)
    for i, lv in enumerate(levels):
        when = t0 + i * STEP.astype(datetime)
        write_fmi_pgm(folder / when.strftime(FMI_NAME), lv, when)
    return levels


def write_odim(path: Path, rate: np.ndarray, gain: float = 0.1) -> Path:
    """A tiny ODIM HDF5 composite of rain rate (mm/h) on a polar stereographic grid."""
    import h5py

    H, W = rate.shape
    projdef = "+proj=stere +lat_0=90 +lon_0=10 +lat_ts=60 +ellps=WGS84"
    proj = pyproj.Proj(projdef)
    x0, y0 = 500_000.0, -3_800_000.0
    (lon1, lon2), (lat1, lat2) = proj([x0, x0 + W * 2000.0], [y0, y0 + H * 2000.0], inverse=True)
    with h5py.File(path, "w") as f:
        f.create_group("what").attrs.update({"object": np.bytes_(b"COMP")})
        where = f.create_group("where")
        where.attrs.update({"projdef": projdef.encode(), "LL_lon": lon1, "LL_lat": lat1,
                            "UR_lon": lon2, "UR_lat": lat2, "xscale": 2000.0,
                            "yscale": 2000.0})
        data = f.create_group("dataset1").create_group("data1")
        data.create_group("what").attrs.update({"quantity": np.bytes_(b"RATE"), "gain": gain,
                                                "offset": 0.0, "nodata": 65535.0,
                                                "undetect": 0.0})
        raw = np.where(np.isnan(rate), 65535, np.round(np.nan_to_num(rate) / gain))
        data.create_dataset("data", data=raw.astype(np.uint16))
    return path


# ---- file-name patterns, pysteps' defaults -------------------------------------------------------
def test_fn_patterns_read_times_with_wildcards_and_day_of_year():
    regex, codes = pattern_regex("AQC%y%j%H%M?_00005.801", "gif")  # MeteoSwiss
    assert time_of("AQC161932100F_00005.801.gif", regex, codes) == datetime(2016, 7, 11, 21, 0)
    assert time_of("AQC161932100F_00005.801.tif", regex, codes) is None  # another extension
    regex, codes = pattern_regex("RAD_NL25_RAP_5min_%Y%m%d%H%M", None)  # any extension
    assert time_of("RAD_NL25_RAP_5min_201008260005.h5", regex, codes) == \
        datetime(2010, 8, 26, 0, 5)
    assert time_of("RAD_NL25_RAP_5min_2010082600.h5", regex, codes) is None
    with pytest.raises(ValueError, match="no time code"):
        pattern_regex("radar_latest", None)
    with pytest.raises(ValueError, match="%B is not supported"):
        pattern_regex("radar_%B", None)


def test_provider_defaults_come_from_the_installed_pystepsrc():
    fmi = provider_defaults("fmi_pgm")
    assert fmi["fn_pattern"] == "%Y%m%d%H%M_fmi.radar.composite.lowest_FIN_SUOMI1"
    assert fmi["fn_ext"] == "pgm.gz" and fmi["importer_kwargs"] == {"gzipped": True}
    assert provider_defaults("mch_gif")["fn_pattern"] == "AQC%y%j%H%M?_00005.801"
    assert provider_defaults("knmi_hdf5")["importer_kwargs"]["qty"] == "ACRR"
    assert provider_defaults("fmi_geotiff")["fn_ext"] == "tif"  # listed as "geotiff" there


# ---- a tiny FMI archive: always runs -------------------------------------------------------------
def test_fmi_pgm_archive_through_the_source_registry(tmp_path):
    levels = fmi_archive(tmp_path / "fmi", n=6)
    (tmp_path / "fmi" / "README.txt").write_text("not a frame")  # other files are passed over
    src = open_source(tmp_path / "fmi", "pysteps", importer="fmi_pgm")
    assert type(src) is get_method("pysteps") and len(src) == 6
    assert src.frame_shape == (1, 24, 20) and src.units == "dBZ"
    assert src.importer_kwargs["gzipped"] is True  # followed the .gz names
    np.testing.assert_array_equal(np.diff(src.timestamps), STEP)
    frames = src.read(1, 3)  # [2, 1, H, W] dBZ, NaN = no data
    expected = np.where(levels[1:3] == 255, np.nan, (levels[1:3] - 64.0) / 2)
    np.testing.assert_array_equal(frames[:, 0], expected.astype(np.float32))
    grid = archive_grid(src)
    assert grid.shape == (24, 20) and grid.yorigin == "upper"
    assert grid.x1 == pytest.approx(0, abs=1) and grid.x2 == pytest.approx(20_000, abs=1)
    assert grid.xpixelsize == 1000.0
    radar = open_radar(tmp_path / "fmi", importer="fmi_pgm")
    assert radar.units == "dbz" and radar.read(0, 1).dtype == np.float32
    assert archive_values(radar)["zr"] == (223.0, 1.53)  # FMI's own Z-R, from the importer


def test_odim_hdf5_rain_rates_with_a_pattern_and_wildcard(tmp_path):
    rate = np.zeros((10, 12))
    rate[3:6, 4:8] = 12.5
    rate[0, 0] = np.nan
    for i in range(3):
        write_odim(tmp_path / f"comp_2021060112{i * 5:02d}_X.h5", rate)
    radar = open_radar(tmp_path, importer="odim_hdf5", fn_pattern="comp_%Y%m%d%H%M_?",
                       fn_ext="h5")
    assert radar.units == "rainrate" and radar.frame_shape == (1, 10, 12)
    assert str(radar.timestamps[-1]) == "2021-06-01T12:10:00"
    f = radar.read(0, 1)[0, 0]
    assert np.isnan(f[0, 0]) and f[4, 5] == pytest.approx(12.5) and f[9, 11] == 0
    grid = archive_grid(radar)
    assert grid.xpixelsize == 2000.0 and grid.x2 - grid.x1 == pytest.approx(24_000, rel=1e-6)


def test_archive_errors_name_the_cause_and_the_remedy(tmp_path, monkeypatch):
    fmi_archive(tmp_path / "fmi", n=2)
    with pytest.raises(ValueError, match="no file name matches fn_pattern 'RAD_%Y"):
        open_radar(tmp_path / "fmi", importer="fmi_pgm", fn_pattern="RAD_%Y%m%d%H%M")
    with pytest.raises(ValueError, match="unknown importer 'fmi'.*fmi_pgm"):
        open_radar(tmp_path / "fmi", importer="fmi")
    with pytest.raises(ValueError, match="same time"):  # two files, one time: %H%M cut short
        open_radar(tmp_path / "fmi", importer="fmi_pgm",
                   fn_pattern="%Y%m%d%H??_fmi.radar.composite.lowest_FIN_SUOMI1")
    with pytest.raises(ValueError, match="either format='npz' or importer"):
        open_radar(tmp_path / "fmi", format="npz", importer="fmi_pgm")
    with pytest.raises(ValueError, match="could not read it"):
        open_radar(tmp_path / "fmi", importer="fmi_pgm", importer_kwargs={"gzipped": False})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyproj" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs pyproj.*convcast\[nowcast\]"):
        open_radar(tmp_path / "fmi", importer="fmi_pgm")


# ---- grids, units, downsampling ------------------------------------------------------------------
def test_grid_follows_crop_downsample_and_resize():
    g = Grid("+proj=stere +lat_0=90 +lon_0=0", 0.0, -1000.0, 760.0, 226.0, 1.0, 1.0, (1226, 760),
             unit="km").in_metres()
    assert g.unit == "m" and g.xpixelsize == 1000 and "+a=" not in g.projection
    w = g.window((10, 20, 110, 220))  # rows 10..110 from the top (yorigin upper)
    assert (w.x1, w.x2, w.y2, w.y1, w.shape) == (20_000, 220_000, 216_000, 116_000, (100, 200))
    c = w.coarsen(3)  # 33 x 66 blocks of 3 km; the remainder dropped
    assert c.shape == (33, 66) and c.xpixelsize == 3000 and c.y1 == 216_000 - 99 * 1000
    assert c.x()[0] == 21_500 and c.y()[0] == 214_500  # pixel centres, north first
    assert w.resized((50, 100)).xpixelsize == 2000
    assert g.window_of((20_500, 116_000, 219_500, 215_500)) == (10, 20, 110, 220)
    km = Grid.from_metadata({"projection": "+proj=stere +a=6378.137 +b=6356.752 +x_0=0",
                             "x1": 0, "y1": -4415, "x2": 700, "y2": -3650, "xpixelsize": 1,
                             "ypixelsize": 1, "cartesian_unit": "km"}, (765, 700))
    assert "+a=6378137" in km.projection and km.y1 == -4_415_000  # KNMI's km grid in metres
    centres = Grid.from_metadata({"projection": "+proj=aea +lat_1=-26 +lat_2=-29", "x1": -127750,
                                  "x2": 127750, "y1": -127750, "y2": 127750, "xpixelsize": 500,
                                  "ypixelsize": 500}, (512, 512))
    assert centres.x1 == -128_000 and centres.x2 == 128_000  # BoM gives the end pixels' centres
    assert Grid.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError, match="does not overlap"):
        g.window_of((-5e6, -5e6, -4e6, -4e6))


def test_block_mean_leaves_missing_pixels_out():
    a = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    a[0, 0, 0] = np.nan  # one missing of four: the mean of the other three
    a[0, 2:, 2:] = np.nan  # a whole missing block: missing
    out = block_mean(a, 2)
    assert out[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3) and np.isnan(out[0, 1, 1])
    assert out[0, 0, 1] == pytest.approx((2 + 3 + 6 + 7) / 4)


def test_accumulations_and_downsampling_in_rain_rate():
    acc = np.full((1, 1, 8, 8), 0.5, np.float32)  # 0.5 mm in 5 min = 6 mm/h
    acc[..., :4, :4] = 0.0
    pre = RadarPreprocess("mm", accutime=5.0, zr=(200.0, 1.6), downsample=4)
    pix = pre(acc)
    assert pix.shape == (1, 1, 2, 2)
    rain = pre.to_rainrate(pix)  # block means of rain rate, not of dBZ
    assert rain[0, 0, 0, 0] < 0.01 and rain[0, 0, 1, 1] == pytest.approx(6.0, rel=1e-4)
    assert pre.from_pixel(pix)[0, 0, 1, 1] == pytest.approx(0.5, rel=1e-4)  # back in mm
    assert pre.physical(pix)[1] == "mm"
    mixed = RadarPreprocess("rainrate", downsample=2, zr=(200.0, 1.6))
    half = np.zeros((1, 1, 2, 2), np.float32)
    half[..., 0, :] = 10.0  # half the block at 10 mm/h: 5 mm/h
    assert mixed.to_rainrate(mixed(half))[0, 0, 0, 0] == pytest.approx(5.0, rel=1e-4)
    with pytest.raises(ValueError, match="accutime"):
        RadarPreprocess("mm")
    dbz = RadarPreprocess("dbz", threshold=-31.5, zerovalue=-32.0)
    assert dbz.from_pixel(np.zeros(1))[0] == -32.0  # no rain comes back as the archive's own


def test_radar_values_round_trip_and_older_dictionaries():
    grid = Grid(FMI_PROJ, 0.0, 0.0, 760e3, 1226e3, 1000.0, 1000.0, (1226, 760))
    rv = RadarValues("mm", zr=(200.0, 1.6), crop=(0, 0, 1224, 760), downsample=4, accutime=5.0,
                     zerovalue=0.0, threshold=0.01, grid=grid,
                     reader={"importer": "knmi_hdf5", "importer_kwargs": {"qty": "ACRR"},
                             "fn_pattern": None, "fn_ext": None})
    d = DataDescription(5, 12, 1, (306, 190), radar=rv, step_minutes=5.0)
    back = DataDescription.from_dict(d.to_dict())
    assert back == d and back.radar.reader == rv.reader and back.radar.grid == grid
    assert back.radar.output_grid().shape == (306, 190)
    old = RadarValues.from_dict({"units": "dbz", "crop": [330, 330], "zr": [200, 1.6]})
    assert old.crop == (330, 330) and old.downsample == 1 and old.grid is None


def test_split_by_times_keeps_windows_inside_one_period():
    t = np.datetime64("2016-09-28T14:45", "s") + STEP * np.arange(40)
    t = np.concatenate([t, np.datetime64("2017-05-09T10:45", "s") + STEP * np.arange(40)])
    w = split_by_times(t, ("2017-05-09T00:00", "2017-05-09T12:20"), 5, 12, STEP)
    assert len(w["train"]) == 24 and w["train"].max() + 16 < 40
    assert len(w["val"]) == 3 and len(w["test"]) == 5  # 19 and 21 frames: 17-frame windows
    assert t[w["test"][0]] == np.datetime64("2017-05-09T12:20")
    with pytest.raises(ValueError, match="val_start <= test_start"):
        split_by_times(t, ("2017-05-09T12:00", "2017-01-01T00:00"))


# ---- training and nowcasting on a tiny archive ---------------------------------------------------
def test_datamodule_trains_on_an_importer_archive_and_caches_prepared_frames(tmp_path):
    fmi_archive(tmp_path / "fmi", n=16)
    dm = RadarDataModule(str(tmp_path / "fmi"), importer="fmi_pgm", input_frames=3,
                         output_frames=2, downsample=2, crop=(0, 4, 24, 20),
                         split_times=("2016-09-28T15:20", "2016-09-28T15:30"), batch_size=2,
                         cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert [len(dm.windows[s]) for s in ("train", "val", "test")] == [3, 0, 3]
    x, y, mask = dm.train_set[0]
    assert x.shape == (3, 1, 12, 8) and y.shape == (2, 1, 12, 8)
    assert not mask[:, 0, :2, -2:].any() and mask[:, 0, 4:].all()  # no data is masked, never 0
    assert len(list((tmp_path / "cache").glob("*.f32"))) == 1  # preprocessed once, then sliced
    d = dm.describe()
    assert d.radar.units == "dbz" and d.radar.zr == (223.0, 1.53) and d.radar.downsample == 2
    assert d.radar.reader["importer"] == "fmi_pgm" and d.radar.grid.shape == (24, 20)
    assert d.radar.output_grid().shape == (12, 8) and d.radar.output_grid().xpixelsize == 2000
    tiny_fit(dm).save_checkpoint(tmp_path / "tiny.ckpt")
    from convcast.cli.nowcast import main

    out = tmp_path / "out"  # the checkpoint's importer, crop and downsampling: nothing to say
    assert main(["--input", str(tmp_path / "fmi"), "--out", str(out), "--ckpt_path",
                 str(tmp_path / "tiny.ckpt")]) == 0
    z = np.load(out / "forecast.npz")
    assert z["forecast"].shape == (2, 1, 12, 8) and str(z["physical_units"]) == "mm/h"


def test_nowcast_writes_cf_netcdf_on_the_archive_grid(tmp_path, one_thread):
    xr = pytest.importorskip("xarray")
    fmi_archive(tmp_path / "fmi", n=6)
    from convcast.cli.nowcast import main

    out = tmp_path / "out"
    assert main(["--model", "optical_flow", "--importer", "fmi_pgm", "--importer_kwargs",
                 '{"gzipped": true}', "--input", str(tmp_path / "fmi"), "--out", str(out),
                 "--horizon", "2"]) == 0
    with xr.open_dataset(out / "forecast.nc") as ds:
        rain = ds["precip_intensity"]
        assert rain.shape == (2, 24, 20) and rain.attrs["units"] == "mm h-1"
        assert rain.attrs["grid_mapping"] == "crs"
        assert ds["crs"].attrs["grid_mapping_name"] == "polar_stereographic"
        assert "PROJCRS" in ds["crs"].attrs["crs_wkt"]
        assert [str(t)[:16] for t in ds["time"].values] == ["2016-09-28T15:15",
                                                            "2016-09-28T15:20"]
        assert np.allclose(np.diff(ds["x"].values), 1000) and ds["y"].values[0] > ds["y"].values[-1]
        assert ds.attrs["model"] == "optical_flow" and ds.attrs["checkpoint"] == "none (baseline)"
        assert np.isnan(rain.values[:, :4, -4:]).all()  # outside the domain: no data, not 0
        moved = rain.values[1]  # the 38-dBZ block keeps moving east, ~20 mm/h by FMI's Z-R
        assert np.nanmax(moved) == pytest.approx((10 ** 3.8 / 223) ** (1 / 1.53), rel=0.05)
        lat = ds["lat"].values
        assert 55 < lat.min() < lat.max() < 72
    assert (out / "forecast.gif").stat().st_size > 0


def test_a_synthetic_radar_model_reads_an_archive_in_its_own_units(tmp_path):
    """A model trained on HKO-7 pixels forecasts a dBZ archive: the importer's units, not the
    training archive's, prepare the frames; rain rates come back by the model's Z-R."""
    from convcast.inference import forecast
    from convcast.models import create_model

    fmi_archive(tmp_path / "fmi", n=6)
    d = DataDescription(5, 2, 1, (24, 20), radar=RadarValues("pixel"), step_minutes=6.0)
    fc = forecast(create_model("persistence"), tmp_path / "fmi", 2, description=d,
                  radar={"importer": "fmi_pgm"})
    assert fc.units == "dbz" and fc.physical_units == "mm/h"
    np.testing.assert_allclose(np.nanmax(fc.frames), 38.0, atol=1e-4)  # the last frame's dBZ
    hko = (10 ** 3.8 / 58.53) ** (1 / 1.56)  # 38 dBZ by the model's (HKO-7) Z-R
    assert np.nanmax(fc.physical) == pytest.approx(hko, rel=1e-4)
    assert any("trained on 6-minute steps" in n for n in fc.notes)


def test_crop_box_in_projected_metres_and_transformed_rain_rates(tmp_path):
    fmi_archive(tmp_path / "fmi", n=6)
    dm = RadarDataModule(str(tmp_path / "fmi"), importer="fmi_pgm", input_frames=2,
                         output_frames=1, split_times=("2100-01-01", "2100-01-01"),
                         crop_box=(4_000, 8_000, 20_000, 20_000), cache=False)
    dm.setup()  # x 4..20 km: columns 4..20; y 8..20 km from the bottom: rows 4..16 from the top
    assert dm.preprocess.crop == (4, 4, 16, 20) and dm.train_set[0][0].shape == (2, 1, 12, 16)
    g = dm.describe().radar.output_grid()
    assert (g.x1, g.y1, g.x2, g.y2) == pytest.approx((4_000, 8_000, 20_000, 20_000), abs=1)
    from convcast.data.sources.pysteps_importer import _untransform

    db = np.array([[10.0, -15.0]])  # 10 log10(R): 10 mm/h, and the no-rain value
    rain, meta = _untransform(db, {"transform": "dB", "unit": "mm/h", "zerovalue": -15.0,
                                   "threshold": -10.0})
    assert rain[0, 0] == pytest.approx(10.0) and rain[0, 1] == 0 and meta["transform"] is None


# ---- the real composites of three providers (skipped where absent) -------------------------------
@pytest.mark.parametrize("provider, folder, importer, options, shape, unit, minutes, centre", [
    ("fmi", ("fmi", "pgm", "20160928"), "fmi_pgm", {"importer_kwargs": {"gzipped": True}},
     (1226, 760), "dbz", 5, (63.65, 24.99)),
    ("knmi", ("KNMI",), "knmi_hdf5", {}, (765, 700), "mm", 5, (52.51, 4.97)),
    ("bom", ("bom",), "bom_rf3", {"fn_pattern": "66_%Y%m%d_%H%M%S.prcp-c10"}, (512, 512), "mm",
     10, (-27.72, 153.24)),
], ids=["fmi", "knmi", "bom"])
def test_shared_samples_one_frame_each(provider, folder, importer, options, shape, unit, minutes,
                                       centre):
    radar = open_radar(samples(*folder), importer=importer, **options)
    assert radar.frame_shape == (1, *shape) and radar.units == unit
    assert np.all(np.diff(radar.timestamps) == np.timedelta64(minutes, "m"))
    frame = radar.read(0, 1)
    assert frame.shape == (1, 1, *shape) and np.isfinite(frame).any()
    values = archive_values(radar)
    if unit == "mm":
        assert values["accutime"] == minutes
    grid = archive_grid(radar)
    assert grid.shape == shape and grid.unit == "m"
    lon, lat = grid.lonlat()
    assert lat[shape[0] // 2, shape[1] // 2] == pytest.approx(centre[0], abs=0.02)
    assert lon[shape[0] // 2, shape[1] // 2] == pytest.approx(centre[1], abs=0.02)


def fmi_nowcast(day: str, model: str, horizon: int, out: Path) -> Path:
    """`convcast nowcast --model MODEL` on the shared FMI composites of `day`; `out/forecast.nc`."""
    from convcast.cli.main import main

    assert main(["nowcast", "--model", model, "--importer", "fmi_pgm",
                 "--importer_kwargs", '{"gzipped": true}', "--input",
                 str(samples("fmi", "pgm", day)), "--out", str(out),
                 "--horizon", str(horizon)]) == 0
    return out / "forecast.nc"


def test_shared_fmi_nowcast_keeps_the_archive_grid(tmp_path):
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(fmi_nowcast("20160928", "persistence", 2, tmp_path / "out")) as ds:
        assert ds["precip_intensity"].shape == (2, 1226, 760)
        assert str(ds["time"].values[0])[:16] == "2016-09-28T18:05"
        assert np.isnan(ds["precip_intensity"].values).mean() == pytest.approx(0.243, abs=0.01)


@pytest.mark.slow
def test_real_radar_benchmark_runs_small(tmp_path, monkeypatch, one_thread):
    import json
    import runpy
    import sys

    samples("fmi", "pgm")
    monkeypatch.setattr(sys, "argv", [
        "real_radar.py", "--samples", str(SAMPLES), "--providers", "fmi", "--models", "convlstm",
        "--minutes", "0.05", "--max_windows", "1", "--baselines", "persistence", "optical_flow",
        "sprog", "--out", str(tmp_path / "out"), "--plots", str(tmp_path / "plots"),
        "--json", str(tmp_path / "real_radar.json")])
    runpy.run_path(str(ROOT / "benchmarks" / "real_radar.py"), run_name="__main__")
    out = json.loads((tmp_path / "real_radar.json").read_text())
    case = out["cases"]["fmi-20160928"]
    assert case["windows"] == 24 and case["grid"] == [306, 190] and case["pixel_km"] > 3.9
    assert set(case["metrics"]) == {"persistence", "optical_flow", "sprog",
                                    "convlstm (synthetic)", "shipped (seen)"}
    assert case["fss_pixels"] == [3, 5]  # 10 and 20 km at 4 km
    for key in ("csi@0.5", "csi@5", "fss10km@2", "fss20km@2", "rainfall_mse", "rainfall_mae"):
        assert len(case["metrics"]["optical_flow"][key]) == 12, key
    assert (tmp_path / "plots" / "fmi-20170509.png").exists()


def test_an_ensemble_nowcast_measures_its_members_in_the_archive_km_and_minutes(tmp_path):
    """`forecast(..., members=N)` gives a model that measures in km and minutes (STEPS, the
    learned ensemble's motion perturbations) the input archive's pixel size and step."""
    from convcast.inference import forecast
    from convcast.models import create_model

    fmi_archive(tmp_path / "fmi", n=6)
    steps = create_model("steps", members=2)
    fc = forecast(steps, tmp_path / "fmi", 2, members=2, radar={"importer": "fmi_pgm"})
    assert fc.members.shape[0] == 2
    assert steps.kmperpixel == pytest.approx(1.0)  # the archive's 1000-m pixels (default 2 km)
    assert steps.timestep == pytest.approx(5.0)
