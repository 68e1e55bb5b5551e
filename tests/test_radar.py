"""RadarDataModule: (x, y, mask) windows, preprocessing, NaN and clutter masks, checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from convcast.data.radar import RadarDataModule, RadarWindows
from convcast.data.radar.archive import open_radar, write_image_folder
from convcast.data.radar.preprocess import (
    RadarPreprocess,
    circle_mask,
    clutter_by_frequency,
    clutter_by_kmeans,
    disk_kernel,
)
from convcast.data.units import dbz_to_pixel

STEP = np.timedelta64(6, "m")


def archive(tmp_path, n: int = 100, size: int = 12, seed: int = 0, clutter=None) -> str:
    """An .npz of `n` dBZ frames every 6 min from midnight; a frame is missing at index 50."""
    rng = np.random.default_rng(seed)
    dbz = rng.uniform(0, 40, size=(n, size, size)).astype(np.float32)
    if clutter is not None:
        dbz[:, clutter[0], clutter[1]] = 55.0  # ground clutter: an echo in every frame
    t = np.datetime64("2021-06-01T00:00", "s") + STEP * np.arange(n)
    keep = np.arange(n) != 50
    np.savez(tmp_path / "radar.npz", frames=dbz[keep], timestamps=t[keep])
    return str(tmp_path / "radar.npz")


def test_windows_are_x_y_mask_with_nan_masked_and_zeroed(tmp_path):
    path = archive(tmp_path)
    z = dict(np.load(path))
    z["frames"][30, 2, 3] = np.nan  # a missing pixel
    np.savez(path, **z)
    dm = RadarDataModule(path, units="dbz", input_frames=2, output_frames=3, block_minutes=1440,
                         split_ratios=(1, 0, 0), batch_size=4)
    dm.setup()
    ds = dm.train_set
    assert len(dm.val_set) == len(dm.test_set) == 0
    i = int(np.nonzero(ds.starts == 28)[0][0])  # frames 28..32: the NaN is target frame 0
    x, y, mask = ds[i]
    assert x.shape == (2, 1, 12, 12) and y.shape == mask.shape == (3, 1, 12, 12)
    assert mask.dtype == torch.bool and not mask[0, 0, 2, 3] and mask.sum() == mask.numel() - 1
    assert y[0, 0, 2, 3] == 0 and torch.isfinite(x).all() and torch.isfinite(y).all()
    np.testing.assert_allclose(y[1, 0], dbz_to_pixel(z["frames"][31]), atol=1e-6)
    for s in ds.starts:  # no window spans the missing frame (index 50 of the original series)
        times = ds.source.timestamps[s:s + 5]
        assert (np.diff(times) == STEP).all()
    x, y, mask = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 2, 1, 12, 12) and mask.shape == (4, 3, 1, 12, 12)


def test_preprocessing_crop_disk_resize_and_circle():
    raw = np.random.default_rng(0).uniform(0, 255, size=(3, 1, 40, 40)).astype(np.float32)
    raw[0, 0, 20, 20] = np.nan
    pre = RadarPreprocess("gray", crop=30, disk_radius=2, resize=10)
    out = pre(raw)
    assert out.shape == (3, 1, 10, 10) and pre.output_shape((1, 40, 40)) == (1, 10, 10)
    assert np.isfinite(out).all()  # one NaN is averaged around by the normalised filters
    assert out.std() < np.nanstd(raw / 255) / 2  # the disk filter and area resize smooth noise
    flat = RadarPreprocess("gray", disk_radius=3)(np.full((1, 1, 9, 9), 100.0, np.float32))
    np.testing.assert_allclose(flat, 100 / 255, atol=1e-6)  # a mean filter keeps flat fields
    k = disk_kernel(2)
    assert k.shape == (5, 5) and k.sum() == pytest.approx(1) and k[0, 0] == 0
    m = circle_mask(10, 10)
    assert m[5, 5] and not m[0, 0] and m.mean() == pytest.approx(np.pi / 4, abs=0.1)
    pre.valid = circle_mask(10, 10)
    assert np.isnan(pre(raw)[:, :, 0, 0]).all()


def test_datamodule_preprocessing_and_circle_mask(tmp_path):
    dm = RadarDataModule(archive(tmp_path, size=20), units="dbz", crop=16, disk_radius=1,
                         resize=8, circle=True, input_frames=2, output_frames=2)
    dm.setup()
    x, y, mask = dm.train_set[0]
    assert x.shape == (2, 1, 8, 8)
    assert not mask[:, :, 0, 0].any() and mask[:, :, 4, 4].all()
    assert (x[:, :, 0, 0] == 0).all()
    d = dm.describe()  # the typed description a checkpoint stores
    assert d.frame_size == (8, 8) and d.radar.resize == (8, 8)
    assert not d.radar.valid[0][0] and d.step_minutes == 6.0


def test_frequency_clutter_is_found_masked_cached_and_checkpointed(tmp_path):
    path = archive(tmp_path, clutter=(4, 7))
    cache = tmp_path / "clutter.npy"
    dm = RadarDataModule(path, units="dbz", clutter="frequency", clutter_dbz=45,
                         clutter_cache=str(cache), input_frames=2, output_frames=2)
    dm.setup()
    assert dm.clutter_mask.shape == (1, 12, 12)
    assert dm.clutter_mask[0, 4, 7] and dm.clutter_mask.sum() == 1
    _, _, mask = dm.train_set[0]
    assert not mask[:, 0, 4, 7].any() and mask.sum() == mask.numel() - 2
    assert np.load(cache)[0, 4, 7]
    state = dm.state_dict()
    fresh = RadarDataModule(path, units="dbz", clutter="frequency", input_frames=2,
                            output_frames=2)
    fresh.load_state_dict(state)  # as Lightning restores a checkpoint
    assert fresh.clutter_mask[0, 4, 7] and fresh.clutter_mask.sum() == 1


def test_clutter_rules():
    freq = np.full((20, 20), 0.1)
    freq[3, 3] = 0.95
    freq[5, 5] = 0.2  # a little more rain than elsewhere is weather, not clutter
    m = clutter_by_frequency(freq)
    assert m[3, 3] and m.sum() == 1
    feats = np.concatenate([np.full((50, 3), 0.1), np.full((3, 3), 0.9)])
    feats += np.random.default_rng(0).normal(0, 0.01, feats.shape)
    noisy = clutter_by_kmeans(feats, clusters=2)
    assert noisy[50:].all() and not noisy[:50].any()


def test_png_archive_end_to_end_with_gaps_and_splits(tmp_path):
    t = np.datetime64("2021-06-01T00:00", "s") + STEP * np.arange(480)  # two days
    t = np.delete(t, [100, 300])
    gray = np.random.default_rng(0).integers(0, 200, size=(len(t), 8, 8), dtype=np.uint8)
    write_image_folder(tmp_path / "png", gray, t)
    dm = RadarDataModule(str(tmp_path / "png"), batch_size=2)
    dm.setup()
    assert dm.source.units == "gray" and dm.step_minutes == 6
    starts = {k: set(v.tolist()) for k, v in dm.windows.items()}
    frames = {k: {s + i for s in v for i in range(20)} for k, v in starts.items()}
    assert not frames["train"] & frames["test"] and not frames["val"] & frames["test"]
    assert len(dm.train_set) > len(dm.test_set) > 0
    x, y, mask = dm.test_set[0]
    assert x.shape == (5, 1, 8, 8) and y.shape == (15, 1, 8, 8) and mask.all()


def test_no_window_is_a_clear_error(tmp_path):
    path = archive(tmp_path, n=10)
    with pytest.raises(ValueError, match="gap-free"):
        RadarDataModule(path, units="dbz").setup()
    with pytest.raises(ValueError, match="clutter"):
        RadarDataModule(path, clutter="magic")


def test_windows_dataset_times(tmp_path):
    src = open_radar(archive(tmp_path), units="dbz")
    ds = RadarWindows(src, np.array([3]), RadarPreprocess("dbz"), 2, 2)
    assert (ds.times(0) == src.timestamps[3:7]).all()


def test_paper_config_data_section_builds_on_a_png_archive(tmp_path):
    """configs/radar-convlstm.yaml's data arguments (path and sizes swapped for a tiny
    archive) build a RadarDataModule: every key is a real argument."""
    config = Path(__file__).resolve().parent.parent / "configs" / "radar-convlstm.yaml"
    data = yaml.safe_load(config.read_text())["data"]
    assert data["class_path"] == "convcast.data.radar.RadarDataModule"
    t = np.datetime64("2021-06-01T00:00", "s") + STEP * np.arange(240)
    gray = np.random.default_rng(0).integers(0, 200, size=(240, 40, 40), dtype=np.uint8)
    write_image_folder(tmp_path / "png", gray, t)
    args = dict(data["init_args"], path=str(tmp_path / "png"), crop=30, disk_radius=2, resize=10,
                clutter_cache=str(tmp_path / "clutter.npy"), num_workers=0)
    dm = RadarDataModule(**args)
    dm.setup()
    x, y, mask = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 5, 1, 10, 10) and y.shape == mask.shape == (16, 15, 1, 10, 10)
    assert len(dm.train_set) == 4 * 21 and len(dm.val_set) == len(dm.test_set) == 21
    assert (tmp_path / "clutter.npy").exists()


def test_dry_stays_dry_a_hair_above_the_floor():
    """A forecast a hair above the value floor (-10 dBZ for HKO-7 pixels is 0.017 mm/h) is no
    rain: below the archive's rain/no-rain threshold, else 0.1 mm/h."""
    from convcast.data.radar.preprocess import DRY_MMH

    hair = np.full((1, 1, 2, 2), 1e-3, np.float32)  # pixel: -9.93 dBZ, 0.017 mm/h
    for pre in (RadarPreprocess("pixel"), RadarPreprocess("rainrate"),
                RadarPreprocess("dbz", zerovalue=-32.0)):
        assert pre.to_rainrate(hair).min() > 0.01  # what the values alone would say
        rain, units = pre.physical(hair)
        assert units == "mm/h" and not rain.any()
    assert not RadarPreprocess("rainrate").from_pixel(hair).any()
    assert (RadarPreprocess("dbz", zerovalue=-32.0).from_pixel(hair) == -32.0).all()
    assert RadarPreprocess("rainrate").rain_threshold == DRY_MMH
    assert RadarPreprocess("rainrate", threshold=0.5).rain_threshold == DRY_MMH
    assert RadarPreprocess("rainrate", threshold=0.05).rain_threshold == 0.05
    assert RadarPreprocess("mm", accutime=5.0, threshold=0.001).rain_threshold == \
        pytest.approx(0.012)
    wet = RadarPreprocess("rainrate").dbz_to_model(np.array([[[[30.0]]]]))  # 30 dBZ
    assert RadarPreprocess("rainrate").physical(wet)[0].min() > 1.0  # rain is kept
