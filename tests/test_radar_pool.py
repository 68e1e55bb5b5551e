"""The radar training pool: windows at several steps, crops turned with their motion, provider
exclusion; on the real example composites where they are present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from convcast.data.radar.pool import (
    PoolArchive,
    RadarPool,
    RadarPoolDataModule,
    _Frames,
    _gap_free_starts,
    keep_only,
    turn,
    turn_motion,
)
from convcast.motion.advect import advect

SAMPLES = Path(os.environ.get("CONVCAST_RADAR_SAMPLES",
                              Path(__file__).resolve().parents[2] / "shared" / "radar-samples"))


def _blob(h: int = 24, w: int = 20) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.exp(-((yy - 9) ** 2 / 8 + (xx - 6) ** 2 / 5))[None, None]  # [1, 1, H, W]


@pytest.mark.parametrize("k", range(8))
def test_turned_motion_moves_turned_frames_as_the_original(k: int) -> None:
    frame = _blob()
    motion = torch.zeros(1, 2, *frame.shape[-2:], dtype=torch.float64)
    motion[:, 0], motion[:, 1] = 1.5, -0.75  # x, y pixels per step
    moved = advect(frame, motion, 2, outval=0.0)[:, -1]  # [1, 1, H, W]
    turned = advect(turn(frame, k), turn_motion(motion[0], k)[None], 2, outval=0.0)[:, -1]
    torch.testing.assert_close(turned, turn(moved, k), atol=1e-9, rtol=0)


def test_gap_free_starts_per_stride() -> None:
    t = np.datetime64("2020-01-01T00:00") + np.array([0, 5, 10, 15, 20, 30, 35, 40, 45, 50],
                                                     dtype="timedelta64[m]")
    starts, step = _gap_free_starts(t, 3, (1, 2))
    assert step == 5.0
    assert [s for s, k in starts if k == 1] == [0, 1, 2, 5, 6, 7]
    assert [s for s, k in starts if k == 2] == [0, 5]  # 0-10-20, 30-40-50; none across 25


def _pool(**kw) -> RadarPool:
    rng = np.random.default_rng(0)
    frames = rng.random((12, 1, 40, 30)).astype(np.float32)
    frames[:, :, :5] = np.nan  # a strip with no data
    archive = PoolArchive("toy", "toy", "/nowhere", strides=(1, 2))
    t = np.datetime64("2020-01-01T00:00") + 5 * np.arange(12).astype("timedelta64[m]")
    starts, step = _gap_free_starts(t, 5, (1, 2))
    sets = [_Frames(archive, 1, frames, starts, 1.0, step)]
    pool = RadarPool(sets, input_frames=2, output_frames=3, size=16, length=50, **kw)
    pool._motion = {(0, w, 2): torch.ones(2, 40, 30) for w in range(len(starts))}
    return pool


def test_pool_items_are_deterministic_crops_with_masks() -> None:
    pool = _pool()
    a, b = pool[7], pool[7]
    for key in ("x", "y", "mask", "motion"):
        torch.testing.assert_close(a[key], b[key])
    assert a["x"].shape == (2, 1, 16, 16) and a["y"].shape == (3, 1, 16, 16)
    assert a["motion"].shape == (2, 16, 16) and a["mask"].dtype == torch.bool
    assert torch.isfinite(a["x"]).all() and torch.isfinite(a["y"]).all()
    assert any(not pool[i]["mask"].all() for i in range(50))  # the no-data strip is masked
    assert len({float(pool[i]["x"].sum()) for i in range(20)}) > 10  # different crops


def test_keep_only_the_steps_and_pixel_sizes_asked_for() -> None:
    archive = PoolArchive("toy", "toy", "/nowhere", strides=(1, 2, 3))
    frames = _Frames(archive, 4, np.zeros((20, 1, 8, 8), np.float32),
                     [(0, 1), (1, 1), (0, 2), (0, 3)], 3.9987, 5.0)
    assert keep_only(frames, None, None) is frames
    assert keep_only(frames, [5], [4]).starts == [(0, 1), (1, 1)]  # 3.9987 km is a 4-km grid
    assert keep_only(frames, [10.0, 15.0], None).starts == [(0, 2), (0, 3)]
    assert keep_only(frames, [5], [2]).starts == []  # another pixel size: nothing
    assert keep_only(frames, [7.5], None).starts == []


def test_pool_refuses_archives_without_windows() -> None:
    archive = PoolArchive("toy", "toy", "/nowhere")
    sets = [_Frames(archive, 1, np.zeros((3, 1, 8, 8), np.float32), [], 1.0, 5.0)]
    with pytest.raises(ValueError, match="no archive of the pool"):
        RadarPool(sets, input_frames=2, output_frames=3, size=8, length=5)


def test_pool_datamodule_names_a_missing_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="no radar archive folder"):
        RadarPoolDataModule(str(tmp_path / "missing")).setup()


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"no radar samples at {SAMPLES} (set "
                    "CONVCAST_RADAR_SAMPLES to the example composites to run this test)")
def test_pool_of_real_archives_leaves_a_provider_out(tmp_path) -> None:
    dm = RadarPoolDataModule(str(SAMPLES), exclude=["knmi", "bom", "opera"],
                             include=["fmi-20170509", "knmi"], crop=32, train_size=8,
                             val_size=4, motion_cache=str(tmp_path))
    dm.setup()
    summary = dm.summary()
    assert {s["archive"] for s in summary} == {"fmi-20170509"}  # knmi is excluded
    assert [round(s["pixel_km"]) for s in summary] == [2, 4]
    assert {s["windows"] for s in summary} == {24 + 8}  # 5-minute windows and 10-minute ones
    item = dm.train_set[0]
    assert item["x"].shape == (5, 1, 32, 32) and item["y"].shape == (12, 1, 32, 32)
    assert dm.describe().radar.units == "dbz"
    assert len(list(tmp_path.glob("*.npy"))) >= 1  # motion fields kept for the next run
    assert dm.describe().step_minutes is None  # a mixture of steps

    five = RadarPoolDataModule(str(SAMPLES), include=["fmi-20170509"], crop=32, train_size=8,
                               val_size=4, motion_cache=str(tmp_path), step_minutes=[5],
                               pixel_km=[4])
    five.setup()
    assert [(s["windows"], round(s["pixel_km"])) for s in five.summary()] == [(24, 4)]
    assert five.describe().step_minutes == 5.0  # one step: the checkpoint knows it
    with pytest.raises(ValueError, match=r"no window at step_minutes=\[7\].*\(5.0, 2.0\)"):
        RadarPoolDataModule(str(SAMPLES), include=["fmi-20170509"], crop=32,
                            step_minutes=[7]).setup()


def test_pool_items_carry_the_anchor_of_the_whole_window_cropped_and_turned(tmp_path) -> None:
    """`anchor="optical_flow"`: each item's anchor is the baseline's forecast of the whole
    window (not of the crop), cropped and turned with the frames; kept in `anchor_cache`."""
    from convcast.data.radar.pool import turn
    from convcast.models import create_model

    pool = _pool(anchor="persistence", anchor_cache=tmp_path)
    for i in range(6):
        item = pool[i]
        assert item["anchor"].shape == (3, 1, 16, 16)
        torch.testing.assert_close(item["anchor"], item["x"][-1:].expand(3, -1, -1, -1))
    flow = _pool(anchor="optical_flow", anchor_cache=tmp_path)
    whole = flow.window(0, 2)[:2]  # the input frames of window 2
    want = create_model("optical_flow")(torch.nan_to_num(whole, nan=0.0)[None], 3)[0]
    np.testing.assert_allclose(flow.anchor_field(0, 2), want.numpy(), atol=1e-6)
    assert len(list(tmp_path.glob("toy-*.npy"))) >= 2  # the fields are kept for the next run
    again = _pool(anchor="optical_flow", anchor_cache=tmp_path)
    np.testing.assert_array_equal(again.anchor_field(0, 2), flow.anchor_field(0, 2))
    rng = np.random.default_rng((0, 5))  # item 5's draw, as __getitem__ makes it
    item = flow[5]
    a = int(rng.choice(1, p=flow.p))
    w = int(rng.integers(len(flow.sets[a].starts)))
    field = torch.from_numpy(np.ascontiguousarray(flow.anchor_field(a, w)))
    assert any(torch.equal(item["anchor"], turn(field[..., t:t + 16, c:c + 16], k))
               for t in range(40 - 15) for c in range(30 - 15) for k in range(8))
    with pytest.raises(ValueError, match="must name a baseline"):
        _pool(anchor="anchored")
