"""A training pool of real radar archives: every window of every archive, at several grid sizes
and time steps, cut into random crops under the eight rotations and flips of the square.

A handful of real composites gives far more training material than its frame count suggests:
each window of `input_frames + output_frames` frames, at each pixel size and each step the
archive allows, yields thousands of distinct crops, and rain looks the same rotated by 90° or
mirrored. `RadarPool` serves such crops, with the motion field of the window (pysteps
Lucas-Kanade on the whole prepared frame, as the `optical_flow` baseline estimates it at
inference, computed once per window) cropped and turned with the frames. Every archive is
prepared the same way (`convcast.data.radar.preprocess`: its own units and Z-R relation, rain
rate block-averaged, dBZ -> pixels in [0, 1] on HKO-7's scale), so one model reads them all.

One model for any archive, by training on a mixture: each `PoolArchive` lists the `downsample`
factors (pixel sizes) and the temporal `strides` (steps) it is seen at, e.g. a 1-km, 5-minute
archive at 2 and 4 km and at 5, 10 and 15 minutes. A model trained so takes archives from 2 to 4
km and 5 to 15 minutes as they are (`convcast.models.pretrained` says its range); finer grids are
block-averaged into the range at inference.

Or one model per kind of archive: `RadarPoolDataModule(step_minutes=[5], pixel_km=[4])` keeps
only the windows at those steps and pixel sizes. What a forecast's spread should be per lead
time depends on both (an ensemble trained on the mixture is too wide on 5-minute archives and
too narrow on 10-minute ones, benchmarks/RESULTS.md); a model trained on one step records it in
its data description.

A baseline's forecast per crop: `anchor="consensus"` (any deterministic baseline of the registry)
gives each item the baseline's forecast `[T_out, 1, s, s]` of the window, computed once on the
whole frame (pysteps' cascades need the whole field, not a crop; kept in `anchor_cache`) and
cropped and turned with the frames: what an anchored model on that baseline trains with.

Leave-one-provider-out: `RadarPoolDataModule(exclude=["knmi"])` trains on the other providers;
its validation crops come from the providers it trains on, so the held-out one stays unseen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription, RadarValues
from convcast.data.units import MARSHALL_PALMER_ZR
from convcast.motion.estimate import window_motion

ALL_TRAIN = ("2100-01-01T00:00", "2100-01-01T00:00")  # split_times putting every window in train


@dataclass(frozen=True)
class PoolArchive:
    """One archive of the pool: where it is, how pysteps reads it, and the pixel sizes
    (`downsample` factors) and steps (`strides`, in frames) it is served at."""

    name: str
    provider: str
    path: str
    _: KW_ONLY
    importer: str | None = None
    importer_kwargs: dict[str, Any] = field(default_factory=dict)
    fn_pattern: str | None = None
    crop: tuple[int, int, int, int] | None = None
    downsample: tuple[int, ...] = (1,)
    strides: tuple[int, ...] = (1,)

    def options(self, downsample: int) -> dict[str, Any]:
        """The `RadarDataModule` keyword arguments that read it at one pixel size."""
        out: dict[str, Any] = {"path": self.path, "downsample": downsample}
        for key in ("importer", "fn_pattern"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.importer_kwargs:
            out["importer_kwargs"] = dict(self.importer_kwargs)
        if self.crop is not None:
            out["crop"] = list(self.crop)
        return out


def shared_archives(root: str | Path) -> list[PoolArchive]:
    """The public example composites of pysteps' data collection under `root` (FMI, KNMI, BoM,
    OPERA, each in its provider's own format), at 2-4 km and 5-15 minutes; the ones missing
    under `root` are left out."""
    root = Path(root)
    fmi = {"importer": "fmi_pgm", "importer_kwargs": {"gzipped": True},
           "crop": (0, 0, 1224, 760), "downsample": (2, 4), "strides": (1, 2)}
    archives = [
        PoolArchive("fmi-20160928", "fmi", str(root / "fmi/pgm/20160928"), **fmi),
        PoolArchive("fmi-20170509", "fmi", str(root / "fmi/pgm/20170509"), **fmi),
        PoolArchive("knmi", "knmi", str(root / "KNMI"), importer="knmi_hdf5",
                    crop=(0, 0, 760, 696), downsample=(2, 4), strides=(1, 2, 3)),
        PoolArchive("bom", "bom", str(root / "bom"), importer="bom_rf3",
                    fn_pattern="66_%Y%m%d_%H%M%S.prcp-c10", downsample=(4, 8)),
        PoolArchive("opera-20180824", "opera", str(root / "OPERA/20180824"),
                    importer="opera_hdf5", downsample=(1, 2)),
    ]
    return [a for a in archives if Path(a.path).is_dir()]


@dataclass
class _Frames:
    """The prepared frames of one archive at one pixel size, and the windows they hold."""

    archive: PoolArchive
    downsample: int
    frames: np.ndarray  # [N, 1, h, w] float32, NaN = no data
    starts: list[tuple[int, int]]  # (first frame, stride) of each gap-free window
    pixel_km: float | None
    step_minutes: float


def _gap_free_starts(times: np.ndarray, length: int, strides: tuple[int, ...]
                     ) -> tuple[list[tuple[int, int]], float]:
    """(start, stride) of every window of `length` frames, `stride` apart, with no gap."""
    secs = times.astype("datetime64[s]").astype(np.int64)
    step = float(np.median(np.diff(secs)))
    ok = np.isclose(np.diff(secs), step)  # ok[i]: frames i and i+1 are one step apart
    good = np.concatenate([[0], np.cumsum(ok)])
    out = []
    for stride in strides:
        span = stride * (length - 1)
        for s in range(len(secs) - span):
            if good[s + span] - good[s] == span:
                out.append((s, stride))
    return out, step / 60


def load_frames(archive: PoolArchive, downsample: int, length: int) -> _Frames:
    """Read and prepare every frame of `archive` at `downsample` (cached on disk as pysteps
    archives are)."""
    from convcast.data.radar.datamodule import RadarDataModule

    dm = RadarDataModule(**archive.options(downsample), input_frames=1, output_frames=1,
                         split_times=ALL_TRAIN, batch_size=1)
    dm.setup()
    frames = dm.train_set.prepared.read(0, len(dm.source))  # [N, 1, h, w], NaN = no data
    starts, step = _gap_free_starts(dm.source.timestamps, length, archive.strides)
    grid = dm.describe().radar.output_grid()
    return _Frames(archive, downsample, frames.astype(np.float32), starts,
                   None if grid is None else grid.pixel_km, step)


def keep_only(f: _Frames, step_minutes: Sequence[float] | None,
              pixel_km: Sequence[float] | None) -> _Frames:
    """`f` with only its windows at one of `step_minutes` (the archive's step times the stride,
    within 2%) and none unless its pixel size is one of `pixel_km` (within 10%: FMI's 3.9987-km
    grid is a 4-km one); None keeps every step or size."""
    def near(value: float | None, wanted: Sequence[float], tol: float) -> bool:
        return value is not None and any(abs(value - w) <= tol * w for w in wanted)

    if pixel_km is not None and not near(f.pixel_km, pixel_km, 0.1):
        return replace(f, starts=[])
    if step_minutes is None:
        return f
    return replace(f, starts=[(s, k) for s, k in f.starts
                              if near(f.step_minutes * k, step_minutes, 0.02)])


def turn(a: torch.Tensor, k: int) -> torch.Tensor:
    """Element `k` (0-7) of the square's symmetry group on the last two axes: bit 0 transposes,
    bit 1 flips the rows (y), bit 2 flips the columns (x)."""
    if k & 1:
        a = a.transpose(-1, -2)
    if k & 2:
        a = a.flip(-2)
    if k & 4:
        a = a.flip(-1)
    return a


def turn_motion(v: torch.Tensor, k: int) -> torch.Tensor:
    """A motion field `[2, H, W]` (x then y component, pixels per step) under `turn(., k)`: the
    field is moved as the frames are and its vectors rotate with them."""
    u, w = v[0], v[1]
    if k & 1:
        u, w = w, u
    if k & 2:
        w = -w
    if k & 4:
        u = -u
    return turn(torch.stack([u, w]), k)


def save_array(path: Path, array: np.ndarray) -> None:
    """`array` as `path` (.npy), written atomically (a cache a killed run never leaves half)."""
    from convcast.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        np.save(fh, array, allow_pickle=False)


class RadarPool(Dataset):
    """Random crops of the windows of several archives (see the module docstring).

    Item `i` is drawn from `np.random.default_rng((seed, i))`: the same index always gives the
    same crop (resumable, reproducible), and a `length` of many thousands never repeats one. An
    archive is picked with probability proportional to the square root of its number of windows
    times its area (large archives count more, small ones are not drowned), then a window, a
    symmetry and a crop holding at least `min_wet` of rainy pixels (the best of 20 tries).

    Items are dicts `{"x" [T_in,1,s,s], "y" [T_out,1,s,s], "mask" (y valid), "motion" [2,s,s],
    "grid" [2]}` (grid: the window's pixel size in km, NaN without a georeference, and its step
    in minutes), and `"anchor" [T_out,1,s,s]` with `anchor=` (a baseline's name, built with
    `anchor_kwargs`).
    """

    def __init__(self, frames: list[_Frames], *, input_frames: int, output_frames: int,
                 size: int, length: int, seed: int = 0, min_wet: float = 0.05,
                 wet_pixel: float = 0.25, motion_cache: str | Path | None = None,
                 anchor: str | None = None, anchor_kwargs: dict[str, Any] | None = None,
                 anchor_cache: str | Path | None = None) -> None:
        self.sets = [f for f in frames if f.starts and min(f.frames.shape[-2:]) >= size]
        if not self.sets:
            raise ValueError(f"no archive of the pool has a gap-free window of "
                             f"{input_frames + output_frames} frames at least {size} pixels "
                             "wide; add archives or lower the crop size")
        self.input_frames, self.output_frames, self.size = input_frames, output_frames, size
        self.length, self.seed, self.min_wet, self.wet_pixel = length, seed, min_wet, wet_pixel
        weight = np.array([np.sqrt(len(f.starts) * f.frames.shape[-1] * f.frames.shape[-2])
                           for f in self.sets])
        self.p = weight / weight.sum()
        self.motion_cache = None if motion_cache is None else Path(motion_cache)
        self._motion: dict[tuple[int, int, int], torch.Tensor] = {}
        self.anchor, self.anchor_kwargs = anchor, dict(anchor_kwargs or {})
        self.anchor_cache = None if anchor_cache is None else Path(anchor_cache)
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        self._anchor_model: torch.nn.Module | None = None
        if anchor is not None:
            from convcast.models import create_model, model_info

            if not model_info(anchor).baseline:
                raise ValueError(f"RadarPool: anchor must name a baseline of the registry (its "
                                 f"forecast is computed once per window), got {anchor!r}")
            self._anchor_model = create_model(anchor, **self.anchor_kwargs).eval()

    def __len__(self) -> int:
        return self.length

    def window(self, a: int, w: int, box: tuple[slice, slice] = (slice(None), slice(None))
               ) -> torch.Tensor:
        """Frames `[T, 1, h, w]` of window `w` of set `a` within `box` (NaN = no data)."""
        f = self.sets[a]
        s, stride = f.starts[w]
        idx = s + stride * np.arange(self.input_frames + self.output_frames)
        return torch.from_numpy(f.frames[idx, :, box[0], box[1]])

    def motion(self, a: int, w: int) -> torch.Tensor:
        """The Lucas-Kanade motion `[2, h, w]` of window `w` of set `a` on the whole frame."""
        key = (a, w, self.input_frames)
        if key in self._motion:
            return self._motion[key]
        path = None
        if self.motion_cache is not None:
            path = self.cache_file(self.motion_cache, a, w, [])
        if path is not None and path.is_file():
            v = torch.from_numpy(np.load(path))
        else:
            x = torch.nan_to_num(self.window(a, w)[: self.input_frames], nan=0.0)
            v = window_motion(x, 3, "lucaskanade", {}).float()
            if path is not None:
                save_array(path, v.numpy())
        self._motion[key] = v
        return v

    def cache_file(self, folder: Path, a: int, w: int, what: list) -> Path:
        """Where window `w` of set `a` keeps a field computed on it (`what` names it)."""
        f = self.sets[a]
        s, stride = f.starts[w]
        tag = hashlib.sha1(json.dumps([asdict(f.archive), f.downsample, s, stride,
                                       self.input_frames, *what]).encode()).hexdigest()[:16]
        return folder / f"{f.archive.name}-{tag}.npy"

    def anchor_field(self, a: int, w: int) -> np.ndarray:
        """The anchor's forecast `[T_out, 1, h, w]` of window `w` of set `a` on the whole frame
        (read from `anchor_cache` where it was computed before)."""
        key = (a, w)
        if key in self._anchors:
            return self._anchors[key]
        path = None
        if self.anchor_cache is not None:
            path = self.cache_file(self.anchor_cache, a, w, [
                "anchor", self.anchor, self.anchor_kwargs, self.output_frames])
        if path is not None and path.is_file():
            field_ = np.load(path, mmap_mode="r")  # read crop by crop
        else:
            x = torch.nan_to_num(self.window(a, w)[: self.input_frames], nan=0.0)[None]
            with torch.no_grad():
                field_ = self._anchor_model(x, self.output_frames)[0].float().numpy()
            if path is not None:
                save_array(path, field_)
        self._anchors[key] = field_
        return field_

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, int(i)))
        a = int(rng.choice(len(self.sets), p=self.p))
        w = int(rng.integers(len(self.sets[a].starts)))
        f = self.sets[a]
        H, W, s = f.frames.shape[-2], f.frames.shape[-1], self.size
        start, stride = f.starts[w]
        last = f.frames[start + stride * (self.input_frames - 1), 0]  # [H, W]: the newest input
        wet = torch.from_numpy(np.nan_to_num(last, nan=0.0) > self.wet_pixel)
        best, best_frac = (0, 0), -1.0
        for _ in range(20):
            top, left = int(rng.integers(H - s + 1)), int(rng.integers(W - s + 1))
            frac = float(wet[top:top + s, left:left + s].float().mean())
            if frac > best_frac:
                best, best_frac = (top, left), frac
            if frac >= self.min_wet:
                break
        top, left = best
        k = int(rng.integers(8))
        box = (slice(top, top + s), slice(left, left + s))
        seq = turn(self.window(a, w, box), k)  # [T, 1, s, s]
        motion = turn_motion(self.motion(a, w)[(slice(None), *box)], k)
        x, y = seq[: self.input_frames], seq[self.input_frames:]
        grid = torch.tensor([f.pixel_km or float("nan"), f.step_minutes * stride])  # km, min
        item = {"x": torch.nan_to_num(x, nan=0.0), "y": torch.nan_to_num(y, nan=0.0),
                "mask": torch.isfinite(y), "motion": motion, "grid": grid}
        if self.anchor is not None:
            crop = np.ascontiguousarray(self.anchor_field(a, w)[(slice(None), slice(None), *box)])
            item["anchor"] = turn(torch.from_numpy(crop), k)  # [T_out, 1, s, s]
        return item


class RadarPoolDataModule(SequenceDataModule):
    """The training pool as a datamodule: `RadarPool` crops for training and a fixed set of
    `val_size` crops (another seed) for validation, from the archives under `root` (default: the
    shared example composites, `shared_archives`) minus the providers in `exclude`.

    Args:
        root: the folder of the example composites (`CONVCAST_RADAR_SAMPLES` by default).
        exclude: providers left out (leave-one-provider-out training).
        include: only these archives (by name, e.g. "fmi-20170509"); default: all.
        input_frames / output_frames: the window (5 / 12).
        crop: the side of the square crops, in pixels.
        train_size / val_size: crops per training epoch / in the validation set.
        motion_cache: a folder keeping each window's motion field (default: none).
        anchor / anchor_kwargs: a baseline whose forecast of each window every item carries
            (`RadarPool`), e.g. "consensus" for `anchored(anchor="consensus")`; default: none.
        anchor_cache: a folder keeping each window's anchor forecast (default: none).
        step_minutes / pixel_km: only the windows at these steps (minutes) and pixel sizes (km);
            default: every one the archives are served at.
    """

    def __init__(self, root: str | None = None, exclude: list[str] | None = None, *,
                 include: list[str] | None = None, input_frames: int = 5,
                 output_frames: int = 12, crop: int = 64,
                 train_size: int = 100_000, val_size: int = 64, batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0, motion_cache: str | None = None,
                 step_minutes: list[float] | None = None,
                 pixel_km: list[float] | None = None, anchor: str | None = None,
                 anchor_kwargs: dict[str, Any] | None = None,
                 anchor_cache: str | None = None) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.sets: list[_Frames] | None = None

    def archives(self) -> list[PoolArchive]:
        import os

        hp = self.hparams
        root = hp.root or os.environ.get("CONVCAST_RADAR_SAMPLES")
        if not root or not Path(root).is_dir():
            raise ValueError(f"RadarPoolDataModule: no radar archive folder at {root!r}; pass "
                             "root= (or set CONVCAST_RADAR_SAMPLES) to the folder holding the "
                             "fmi/, KNMI/, bom/ and OPERA/ example composites")
        excluded = set(hp.exclude or [])
        archives = [a for a in shared_archives(root) if a.provider not in excluded
                    and (hp.include is None or a.name in hp.include)]
        if not archives:
            names = ", ".join(a.name for a in shared_archives(root)) or "none"
            raise ValueError(f"RadarPoolDataModule: no archive left under {root} after "
                             f"excluding {sorted(excluded)} and including {hp.include} "
                             f"(archives there: {names})")
        return archives

    def setup(self, stage: str | None = None) -> None:
        if self.sets is not None:
            return
        hp = self.hparams
        length = hp.input_frames + hp.output_frames
        loaded = [load_frames(a, k, length) for a in self.archives() for k in a.downsample]
        self.sets = [f for f in (keep_only(f, hp.step_minutes, hp.pixel_km) for f in loaded)
                     if f.starts]
        if not self.sets:
            served = sorted({(round(f.step_minutes * k, 1), round(f.pixel_km or 0, 1))
                             for f in loaded for _, k in f.starts})
            raise ValueError(f"RadarPoolDataModule: no window at step_minutes={hp.step_minutes} "
                             f"and pixel_km={hp.pixel_km}; the archives are served at (minutes, "
                             f"km) {served}: pick from those or leave the filter out (None)")
        common = {"input_frames": hp.input_frames, "output_frames": hp.output_frames,
                  "size": hp.crop, "motion_cache": hp.motion_cache, "anchor": hp.anchor,
                  "anchor_kwargs": hp.anchor_kwargs, "anchor_cache": hp.anchor_cache}
        self.train_set = RadarPool(self.sets, length=hp.train_size, seed=hp.seed, **common)
        self.val_set = RadarPool(self.sets, length=hp.val_size, seed=hp.seed + 1, **common)
        self.test_set = self.val_set

    def summary(self) -> list[dict[str, Any]]:
        """Per archive and pixel size: windows, grid, pixel size, step."""
        self.setup()
        return [{"archive": f.archive.name, "provider": f.archive.provider,
                 "downsample": f.downsample, "windows": len(f.starts),
                 "grid": list(f.frames.shape[-2:]), "pixel_km": f.pixel_km,
                 "step_minutes": f.step_minutes, "strides": list(f.archive.strides)}
                for f in self.sets]

    def describe(self) -> DataDescription:
        """Pixels on HKO-7's dBZ scale, rain by Marshall-Palmer: what the losses convert by.
        (At inference every archive is prepared by its own units and Z-R relation.)"""
        hp = self.hparams
        names = ", ".join(sorted({f.archive.name for f in self.sets or []}))
        steps = hp.step_minutes or []
        return DataDescription(hp.input_frames, hp.output_frames, 1, (hp.crop, hp.crop),
                               radar=RadarValues("dbz", zr=MARSHALL_PALMER_ZR),
                               step_minutes=float(steps[0]) if len(steps) == 1 else None,
                               source=f"radar pool: {names}",
                               datamodule=f"{type(self).__module__}.{type(self).__name__}")
