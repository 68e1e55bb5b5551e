"""Windows over a radar time line: gaps, the day-block split of Shi et al., the latest frames.

Shi et al. (2015, section 4.2) cut each day (240 frames at 6 minutes) into non-overlapping blocks
of 40 frames (240 minutes) and assign them at random, 4 to training, 1 to validation and 1 to test;
sequences are 20-frame sliding windows inside a block. A window never spans a block boundary, so
no window leaks across splits, and never spans a gap: two consecutive frames further apart than
the expected step (plus a tolerance) end one run of windows.
The draw for a day depends only on `(seed, day)`: adding days to an archive leaves the split of
the other days unchanged. `split_by_times` cuts by dates instead (train, then validation, then
test), for archives of a few events or an operational hold-out period.
"""

from __future__ import annotations

import numpy as np

from convcast.data.splits import SPLITS

DAY = np.timedelta64(1, "D")


def infer_step(timestamps: np.ndarray) -> np.timedelta64:
    """The expected interval between frames: the median of the positive differences."""
    if len(timestamps) < 2:
        raise ValueError("need at least two frames to infer the time step; pass step_minutes")
    d = np.diff(timestamps.astype("datetime64[s]")).astype(np.int64)
    return np.timedelta64(int(np.median(d[d > 0])), "s")


def as_step(step_minutes: float | None, timestamps: np.ndarray) -> np.timedelta64:
    """`step_minutes` as a timedelta64[s], or the step inferred from the timestamps."""
    if step_minutes is None:
        return infer_step(timestamps)
    if step_minutes <= 0:
        raise ValueError(f"step_minutes must be positive, got {step_minutes}")
    return np.timedelta64(int(round(step_minutes * 60)), "s")


def gap_after(timestamps: np.ndarray, step: np.timedelta64, tolerance: float = 0.25
              ) -> np.ndarray:
    """Bool `[T-1]`: True where frame t+1 does not follow frame t by `step` (± tolerance·step)."""
    d = np.diff(timestamps.astype("datetime64[s]")).astype(np.int64)
    s = step.astype("timedelta64[s]").astype(np.int64)
    return np.abs(d - s) > tolerance * s


def block_keys(timestamps: np.ndarray, block_minutes: float) -> np.ndarray:
    """Block of each frame `[T]` int64: day number × blocks per day + block within the day."""
    ts = timestamps.astype("datetime64[s]")
    day = ts.astype("datetime64[D]")
    seconds = (ts - day).astype(np.int64)
    per_day = blocks_per_day(block_minutes)
    return day.astype(np.int64) * per_day + seconds // int(round(block_minutes * 60))


def blocks_per_day(block_minutes: float) -> int:
    if block_minutes <= 0:
        raise ValueError(f"block_minutes must be positive, got {block_minutes}")
    return int(np.ceil(1440 / block_minutes))


def split_counts(n: int, ratios: tuple[float, ...]) -> np.ndarray:
    """How many of `n` blocks each split gets: cumulative rounding of the ratios."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or len(r) != len(SPLITS) or (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"split_ratios must be three non-negative numbers (train, val, test) "
                         f"with a positive sum, got {ratios!r}")
    edges = np.round(np.cumsum(r) / r.sum() * n).astype(np.int64)
    return np.diff(np.concatenate([[0], edges]))


def block_splits(keys: np.ndarray, block_minutes: float, ratios: tuple[float, ...] = (4, 1, 1),
                 seed: int = 0) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of each block key: per day a seeded shuffle of its
    blocks, cut by `ratios` (Shi et al.: 4:1:1 of the six 240-minute blocks)."""
    per_day = blocks_per_day(block_minutes)
    counts = split_counts(per_day, ratios)
    labels = np.repeat(np.arange(len(SPLITS)), counts)  # [per_day]
    out = np.empty(len(keys), dtype=np.int64)
    days = keys // per_day
    for day in np.unique(days):
        perm = np.random.default_rng([seed, int(day) + 10**6]).permutation(per_day)
        sel = days == day
        out[sel] = labels[perm[keys[sel] - day * per_day]]
    return out


def window_starts(timestamps: np.ndarray, length: int, step: np.timedelta64,
                  tolerance: float = 0.25, block_minutes: float | None = 240.0,
                  stride: int = 1) -> np.ndarray:
    """Start indices of the windows of `length` frames with no gap and inside one block."""
    if length < 1 or stride < 1:
        raise ValueError(f"need length >= 1 and stride >= 1, got {length}, {stride}")
    n = len(timestamps)
    if n < length:
        return np.zeros(0, dtype=np.int64)
    bad = np.concatenate([[0], np.cumsum(gap_after(timestamps, step, tolerance))])  # [n]
    starts = np.arange(n - length + 1)
    ok = bad[starts + length - 1] == bad[starts]  # no gap between first and last frame
    if block_minutes is not None:
        keys = block_keys(timestamps, block_minutes)
        ok &= keys[starts] == keys[starts + length - 1]  # sorted times: same block throughout
    return starts[ok] if stride == 1 else _strided(starts[ok], stride)


def _strided(starts: np.ndarray, stride: int) -> np.ndarray:
    """Keep windows whose start is a multiple of `stride` frames into their run."""
    if len(starts) == 0:
        return starts
    run = np.concatenate([[0], np.cumsum(np.diff(starts) != 1)])  # run id of each start
    first = starts[np.flatnonzero(np.diff(run, prepend=-1))][run]  # first start of each run
    return starts[(starts - first) % stride == 0]


def split_by_day_blocks(timestamps: np.ndarray, *, input_frames: int = 5, output_frames: int = 15,
                  step: np.timedelta64 | None = None, tolerance: float = 0.25,
                  block_minutes: float = 240.0, ratios: tuple[float, ...] = (4, 1, 1),
                  seed: int = 0, stride: int = 1) -> dict[str, np.ndarray]:
    """Window start indices per split `{"train": [...], "val": [...], "test": [...]}`."""
    step = infer_step(timestamps) if step is None else step
    starts = window_starts(timestamps, input_frames + output_frames, step, tolerance,
                           block_minutes, stride)
    keys = block_keys(timestamps[starts], block_minutes)
    split = block_splits(keys, block_minutes, ratios, seed)
    return {name: starts[split == i] for i, name in enumerate(SPLITS)}


def split_by_times(timestamps: np.ndarray, boundaries: tuple[str, str], input_frames: int = 5,
                   output_frames: int = 15, step: np.timedelta64 | None = None,
                   tolerance: float = 0.25, stride: int = 1) -> dict[str, np.ndarray]:
    """Window start indices per split, cut by time: `boundaries = (val_start, test_start)`
    (ISO times); training before val_start, validation until test_start, test from then on. A
    window lies wholly inside one period (and never spans a gap)."""
    if len(boundaries) != 2:
        raise ValueError(f"split_times must be (val_start, test_start), got {boundaries!r}")
    try:
        edges = np.array([np.datetime64(str(b), "s") for b in boundaries])
    except ValueError as err:
        raise ValueError(f"split_times {boundaries!r}: not ISO times such as "
                         "'2017-05-09T12:00'") from err
    if edges[1] < edges[0]:
        raise ValueError(f"split_times must be (val_start, test_start) with val_start <= "
                         f"test_start, got {boundaries!r}")
    step = infer_step(timestamps) if step is None else step
    length = input_frames + output_frames
    starts = window_starts(timestamps, length, step, tolerance, None, stride)
    ts = timestamps.astype("datetime64[s]")
    first = np.searchsorted(edges, ts[starts], side="right")  # period of the first frame
    last = np.searchsorted(edges, ts[starts + length - 1], side="right")
    return {name: starts[(first == i) & (last == i)] for i, name in enumerate(SPLITS)}


def latest_window(timestamps: np.ndarray, frames: int, step: np.timedelta64,
                  tolerance: float = 0.25) -> int:
    """Start index of the last `frames` frames, checked to be gap-free (the nowcast's input)."""
    n = len(timestamps)
    if n < frames:
        raise ValueError(f"need the latest {frames} frames but the archive holds {n}; add "
                         "frames or use a model with fewer input frames")
    start = n - frames
    gaps = gap_after(timestamps[start:], step, tolerance)
    if gaps.any():
        i = start + int(np.nonzero(gaps)[0][-1])
        minutes = step.astype("timedelta64[s]").astype(np.int64) / 60
        raise ValueError(
            f"the latest {frames} frames are not consecutive: {timestamps[i]} is followed by "
            f"{timestamps[i + 1]} (expected every {minutes:g} min); a nowcast needs "
            f"{frames} gap-free frames ending at the latest one. Fill the gap or wait for more "
            "frames (or pass step_minutes if the step was inferred wrongly)")
    return start
