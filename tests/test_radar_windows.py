"""Windows never span a gap or a block, so splits never share a frame; the latest frames."""

import numpy as np
import pytest

from convcast.data.radar.timeline import (
    block_keys,
    block_splits,
    infer_step,
    latest_window,
    split_by_day_blocks,
    split_counts,
    window_starts,
)

STEP = np.timedelta64(6, "m")


def days(n: int, start: str = "2021-06-01") -> np.ndarray:
    return np.datetime64(start, "s") + STEP * np.arange(n * 240)


def test_infer_step_is_robust_to_gaps_and_jitter():
    t = days(1)[:50]
    t = np.delete(t, [10, 11, 30])
    t[5] += np.timedelta64(20, "s")
    assert infer_step(t) == np.timedelta64(360, "s")


def test_windows_never_span_a_gap():
    t = np.delete(days(1), [30, 100, 101, 102])  # missing frames
    t[200:] += np.timedelta64(1, "m")  # a frame arriving 1 min late is no gap (tolerance)
    starts = window_starts(t, 20, STEP, block_minutes=None)
    assert len(starts) > 0
    for s in starts:
        d = np.diff(t[s:s + 20])
        assert (np.abs(d - STEP) <= np.timedelta64(90, "s")).all()
    # every gap-free window is found: count them by brute force
    ok = [s for s in range(len(t) - 19)
          if (np.abs(np.diff(t[s:s + 20]) - STEP) <= np.timedelta64(90, "s")).all()]
    assert list(starts) == ok


def test_windows_stay_inside_blocks_and_splits_share_no_frame():
    t = days(4)
    w = split_by_day_blocks(t, input_frames=5, output_frames=15, step=STEP, block_minutes=240,
                            ratios=(4, 1, 1), seed=0)
    frames = {}
    for name, starts in w.items():
        assert len(starts) > 0
        keys = block_keys(t, 240)
        for s in starts:
            assert keys[s] == keys[s + 19]  # one block per window
        frames[name] = set((starts[:, None] + np.arange(20)).ravel().tolist())
    assert not frames["train"] & frames["val"] and not frames["train"] & frames["test"]
    assert not frames["val"] & frames["test"]
    # Shi et al.: 40-frame blocks, 20-frame windows -> 21 windows per block; 4:1:1 blocks per day
    assert len(w["train"]) == 4 * 4 * 21 and len(w["val"]) == len(w["test"]) == 4 * 21


def test_split_of_a_day_does_not_depend_on_other_days():
    short, long = days(2), days(5, "2021-05-29")  # the long archive contains both short days
    keys_s, keys_l = block_keys(short, 240), block_keys(long, 240)
    split_s, split_l = block_splits(keys_s, 240, seed=1), block_splits(keys_l, 240, seed=1)
    common = np.isin(keys_l, keys_s)
    assert (split_l[common] == split_s).all()
    other_seed = block_splits(keys_l, 240, seed=2)
    assert (other_seed != split_l).any()


def test_split_counts_and_ratio_errors():
    assert list(split_counts(6, (4, 1, 1))) == [4, 1, 1]
    assert split_counts(24, (0.7, 0.15, 0.15)).sum() == 24
    with pytest.raises(ValueError, match="split_ratios"):
        split_counts(6, (1, 1))


def test_stride_keeps_every_kth_window_of_each_run():
    t = np.delete(days(1)[:80], 40)
    all_ = window_starts(t, 10, STEP, block_minutes=None)
    every3 = window_starts(t, 10, STEP, block_minutes=None, stride=3)
    assert set(every3) <= set(all_)
    assert list(every3[:3]) == [0, 3, 6] and 40 in every3  # the second run restarts at 40


def test_latest_window_checks_for_gaps():
    t = days(1)[:12]
    assert latest_window(t, 5, STEP) == 7
    with pytest.raises(ValueError, match="holds 12"):
        latest_window(t, 13, STEP)
    gappy = np.delete(t, 9)
    with pytest.raises(ValueError, match="not consecutive"):
        latest_window(gappy, 5, STEP)
    assert latest_window(gappy, 2, STEP) == len(gappy) - 2
