"""Radar archives as `(x, y, mask)` windows, and the `RadarDataModule` of Shi et al.'s experiment.

`RadarWindows` serves window `i` of an archive: `x [T_in,C,h,w]`, `y [T_out,C,h,w]` pixels in
[0, 1] and `mask [T_out,C,h,w]` bool, True on valid target pixels (not missing, not clutter,
inside the radar range); NaN in x and y is replaced by 0 after the mask is made, and losses and
scores leave masked pixels out. Each item reads its 20 frames from disk, so memory stays constant
whatever the archive's length; an archive read by a pysteps importer (one compressed file per
frame, slow to decode) is preprocessed once into the decoded-frame cache (`convcast.data.cache`)
and later reads slice that. See the modules beside this one: formats and units (`archive`), gaps,
the day-block split and the split by dates (`timeline`), normalisation, crop, block-mean
downsampling, disk filter, resize and clutter (`preprocess`), the georeference (`geo`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from convcast.atomic import atomic_write
from convcast.data.cache import PreparedFrames
from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription, RadarValues
from convcast.data.radar.archive import RadarSource, archive_grid, archive_values, open_radar
from convcast.data.radar.preprocess import (
    CLUTTER_METHODS,
    Crop,
    EchoStatistics,
    RadarPreprocess,
    Size,
    circle_mask,
    clutter_by_frequency,
    clutter_by_kmeans,
)
from convcast.data.radar.timeline import as_step, split_by_day_blocks, split_by_times
from convcast.data.sources import FrameSource
from convcast.data.splits import SPLITS


class ProcessedFrames(FrameSource):
    """A radar source's frames preprocessed, static mask aside: what the frame cache holds.
    Frames are processed one at a time, so memory stays that of one raw frame."""

    kind = "radar-processed"

    def __init__(self, source: RadarSource, preprocess: RadarPreprocess) -> None:
        self.source, self.preprocess = source, preprocess
        self.name, self.path, self.metadata = source.name, source.path, source.metadata
        self.num_frames, self.timestamps = source.num_frames, source.timestamps
        self.frame_shape = preprocess.output_shape(source.frame_shape)
        self.dtype = np.dtype(np.float32)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.concatenate([self.preprocess(self.source.read(i, i + 1), static=False)
                               for i in range(start, stop)])  # [n, C, h, w]

    def fingerprint(self) -> dict:
        p = self.preprocess
        settings = (p.units, p.dbz_range, p.crop, p.downsample, p.disk_radius, p.resize, p.zr,
                    p.accutime, p.threshold)
        return {**self.source.fingerprint(), "preprocess": repr(settings)}


class RadarWindows(Dataset):
    """Windows of `input_frames + output_frames` frames starting at `starts` in `source`
    (`frames`: its preprocessed frames, e.g. cached, read instead of preprocessing each time)."""

    def __init__(self, source: RadarSource, starts: np.ndarray, preprocess: RadarPreprocess,
                 input_frames: int = 5, output_frames: int = 15,
                 frames: PreparedFrames | None = None) -> None:
        self.source, self.starts, self.preprocess = source, np.asarray(starts), preprocess
        self.input_frames, self.output_frames, self.frames = input_frames, output_frames, frames

    def __len__(self) -> int:
        return len(self.starts)

    def times(self, index: int) -> np.ndarray:
        """Timestamps `[T_in + T_out]` (datetime64[s]) of window `index`."""
        s = int(self.starts[index])
        return self.source.timestamps[s:s + self.input_frames + self.output_frames]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = int(self.starts[index])
        e = s + self.input_frames + self.output_frames
        if self.frames is not None:
            pixels = self.preprocess.apply_valid(self.frames.read(s, e))  # [T, C, h, w]
        else:
            pixels = self.preprocess(self.source.read(s, e))  # [T, C, H, W] -> [T, C, h, w]
        seq = torch.from_numpy(pixels)  # NaN = invalid
        x, y = seq[: self.input_frames], seq[self.input_frames:]
        mask = torch.isfinite(y)  # [T_out, C, h, w]
        return torch.nan_to_num(x, nan=0.0), torch.nan_to_num(y, nan=0.0), mask


class RadarDataModule(SequenceDataModule):
    """A radar archive split by day blocks into train/val/test windows (Shi et al. 2015).

    Reading (see `convcast.data.radar.archive`): `path` (folder of images, .npy, .npz, .h5, .nc,
    .zarr, or anything a registered frame source reads), `format` (a frame-source kind, or
    auto), `units` (auto, gray, pixel, dbz, rainrate, mm), `variable`, `time_variable`,
    `time_format` / `time_regex` (image file names), `start_time` + `step_minutes` (arrays with
    no time axis), `nodata` (a raw value meaning missing), `reader_kwargs` (more reader options).
    Operational archives: `importer` (a pysteps importer: fmi_pgm, knmi_hdf5, bom_rf3,
    odim_hdf5, mch_gif, ...), `importer_kwargs`, `fn_pattern` / `fn_ext` (the time in each file
    name; default: pysteps' pattern for the provider); `accutime` overrides the minutes an
    accumulation sums where the metadata lacks it.
    Windows: `input_frames`/`output_frames` (5/15), `stride`; the expected `step_minutes` is
    inferred if not given, and a difference off by more than `gap_tolerance`·step is a gap.
    Split: each day is cut into `block_minutes` blocks drawn into train/val/test by
    `split_ratios` with `split_seed` (Shi et al.: 240 minutes, 4:1:1); or `split_times`
    (val_start, test_start): by date, training first, then validation, then test.
    Preprocessing (`RadarPreprocess`): `dbz_range`, `crop` (centre (h, w), or a pixel window
    (top, left, bottom, right)) or `crop_box` (x1, y1, x2, y2 in the archive's projected
    coordinates, metres), `downsample` (block mean, e.g. 4: 1 km -> 4 km), `disk_radius`,
    `resize`, `zr` (Z = a R^b; default: the archive's own, else Marshall-Palmer, HKO-7's for
    HKO-7 gray levels). `cache` (auto: importer archives) keeps the preprocessed frames on
    disk (`cache_dir`, default `$CONVCAST_CACHE/frames`).
    Masks: `valid_mask` (path to a .npy/.png of the raw grid, nonzero = valid), `circle`
    (only the inscribed circle is valid) and `clutter`: "frequency" (pixels with echoes
    (>= `clutter_dbz`) anomalously often), "kmeans" (Shi et al.'s K-means on monthly means) or
    "none", from up to `clutter_frames` training frames; `clutter_cache` saves/loads the mask
    (.npy). The mask is also kept in checkpoints, so `convcast nowcast` reuses it.
    """

    def __init__(
        self, path: str, format: str = "auto", units: str = "auto", variable: str | None = None,
        time_variable: str | None = None, time_format: str | None = None,
        time_regex: str | None = None, start_time: str | None = None,
        step_minutes: float | None = None, nodata: float | None = None,
        input_frames: int = 5, output_frames: int = 15, stride: int = 1,
        gap_tolerance: float = 0.25, block_minutes: float = 240.0,
        split_ratios: tuple[float, float, float] = (4.0, 1.0, 1.0), split_seed: int = 0,
        dbz_range: tuple[float, float] | None = None, crop: Crop = None,
        disk_radius: float = 0.0, resize: Size = None,
        zr: tuple[float, float] | None = None, valid_mask: str | None = None,
        circle: bool = False,
        clutter: str = "none", clutter_dbz: float = 15.0, clutter_k: float = 5.0,
        clutter_clusters: int = 2, clutter_frames: int = 2000, clutter_cache: str | None = None,
        batch_size: int = 8, num_workers: int = 0, reader_kwargs: dict | None = None,
        importer: str | None = None, importer_kwargs: dict | None = None,
        fn_pattern: str | None = None, fn_ext: str | None = None,
        crop_box: tuple[float, float, float, float] | None = None, downsample: int = 1,
        accutime: float | None = None, split_times: tuple[str, str] | None = None,
        cache: bool | str = "auto", cache_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if clutter not in CLUTTER_METHODS:
            raise ValueError(f"unknown clutter method {clutter!r}; valid: "
                             f"{', '.join(CLUTTER_METHODS)}")
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be true, false or auto, got {cache!r}")
        if crop is not None and crop_box is not None:
            raise ValueError("give either crop (pixels) or crop_box (projected coordinates), "
                             "not both")
        self.save_hyperparameters()
        self.source: RadarSource | None = None
        self.preprocess: RadarPreprocess | None = None
        self.clutter_mask: np.ndarray | None = None  # [C, h, w] bool, True = clutter
        self.windows: dict[str, np.ndarray] = {}

    # ---- building blocks (also used by `convcast nowcast`) -----------------------------------
    def open_source(self) -> RadarSource:
        hp = self.hparams
        names = ("format", "units", "variable", "time_variable", "time_format", "time_regex",
                 "start_time", "step_minutes", "nodata", "reader_kwargs", "importer",
                 "importer_kwargs", "fn_pattern", "fn_ext")
        return open_radar(hp.path, **{k: hp[k] for k in names})

    def base_preprocess(self, source: RadarSource) -> RadarPreprocess:
        """The preprocessing of this archive's values and grid, without static masks."""
        hp = self.hparams
        values = archive_values(source, None if hp.zr is None else tuple(hp.zr))
        crop = hp.crop
        if hp.crop_box is not None:
            grid = archive_grid(source)
            if grid is None:
                raise ValueError(f"crop_box needs a georeferenced archive, and {hp.path} has no "
                                 "projection in its metadata; crop by pixels instead (crop: "
                                 "[top, left, bottom, right])")
            crop = grid.window_of(tuple(hp.crop_box))
        return RadarPreprocess(source.units, dbz_range=hp.dbz_range, crop=crop,
                               disk_radius=hp.disk_radius, resize=hp.resize, zr=values["zr"],
                               valid=None, downsample=hp.downsample,
                               accutime=hp.accutime or values["accutime"],
                               threshold=values["threshold"], zerovalue=values["zerovalue"])

    def make_preprocess(self, source: RadarSource) -> RadarPreprocess:
        """The preprocessing with the static masks (user mask, circle, clutter) folded in."""
        hp = self.hparams
        pre = self.base_preprocess(source)
        _, h, w = pre.output_shape(source.frame_shape)
        valid = np.ones((h, w), dtype=bool)
        if hp.valid_mask is not None:
            valid &= pre.regrid_mask(load_mask(hp.valid_mask))
        if hp.circle:
            valid &= circle_mask(h, w)
        if self.clutter_mask is not None:
            if self.clutter_mask.shape[-2:] != (h, w):
                raise ValueError(f"the clutter mask is {self.clutter_mask.shape[-2:]} but frames "
                                 f"are {(h, w)}; delete clutter_cache to recompute it")
            valid = valid & ~self.clutter_mask
        pre.valid = None if valid.all() else valid
        return pre

    def setup(self, stage: str | None = None) -> None:
        if self.source is not None:
            return
        hp = self.hparams
        self.source = self.open_source()
        ts = self.source.timestamps
        step = as_step(hp.step_minutes, ts)
        self.step_minutes = step.astype("timedelta64[s]").astype(np.int64) / 60
        if hp.split_times is not None:
            self.windows = split_by_times(ts, tuple(hp.split_times), hp.input_frames,
                                          hp.output_frames, step, hp.gap_tolerance, hp.stride)
            inside = f"one period of split_times {tuple(hp.split_times)}"
        else:
            self.windows = split_by_day_blocks(
                ts, input_frames=hp.input_frames, output_frames=hp.output_frames, step=step,
                tolerance=hp.gap_tolerance, block_minutes=hp.block_minutes,
                ratios=tuple(hp.split_ratios), seed=hp.split_seed, stride=hp.stride)
            inside = f"one {hp.block_minutes:g}-minute block"
        if not any(len(w) for w in self.windows.values()):
            raise ValueError(f"{self.source} has no gap-free run of "
                             f"{hp.input_frames + hp.output_frames} frames inside {inside} "
                             f"(step {self.step_minutes:g} min)")
        if hp.clutter != "none" and self.clutter_mask is None:
            self.clutter_mask = self._clutter()
        self.preprocess = self.make_preprocess(self.source)
        frames = None
        if hp.cache is True or (hp.cache == "auto" and self.source.kind == "pysteps"):
            frames = PreparedFrames(ProcessedFrames(self.source, self.preprocess), cache=True,
                                    cache_dir=hp.cache_dir)
        sets = {name: RadarWindows(self.source, self.windows[name], self.preprocess,
                                   hp.input_frames, hp.output_frames, frames) for name in SPLITS}
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

    # ---- clutter -----------------------------------------------------------------------------
    def _clutter(self) -> np.ndarray:
        hp = self.hparams
        cache = Path(hp.clutter_cache) if hp.clutter_cache else None
        if cache is not None and cache.exists():
            return np.load(cache).astype(bool)
        pre = self.base_preprocess(self.source)
        # frames of the training windows, evenly sampled: the test period stays unseen
        starts = self.windows["train"]
        frames = np.unique((starts[:, None] + np.arange(hp.input_frames + hp.output_frames))
                           .ravel()) if len(starts) else np.arange(len(self.source))
        frames = frames[np.linspace(0, len(frames) - 1, min(hp.clutter_frames, len(frames)))
                        .round().astype(int)]
        stats = EchoStatistics(float(pre.dbz_to_model(np.float32(hp.clutter_dbz))))
        months = self.source.timestamps.astype("datetime64[M]").astype(np.int64) % 12
        for i in frames:
            stats.update(pre.frames(self.source.read(i, i + 1), static=False), months[i:i + 1])
        if hp.clutter == "frequency":
            mask = clutter_by_frequency(stats.frequency(), hp.clutter_k)
        else:
            means = stats.monthly_means()  # [M, C, h, w]
            mask = clutter_by_kmeans(means.reshape(len(means), -1).T, hp.clutter_clusters)
            mask = mask.reshape(means.shape[1:])
        if mask.mean() > 0.25:
            warnings.warn(f"the {hp.clutter} clutter mask blanks {mask.mean():.0%} of the "
                          "pixels; check it (clutter_cache saves it) or tune clutter_k / "
                          "clutter_clusters", stacklevel=2)
        if cache is not None:
            save_array(cache, mask)
        return mask

    # ---- checkpoints: the clutter mask travels with the model ---------------------------------
    def state_dict(self) -> dict:
        if self.clutter_mask is None:
            return {}
        return {"clutter_mask": torch.from_numpy(self.clutter_mask.copy())}  # tensors load safely

    def load_state_dict(self, state: dict) -> None:
        if "clutter_mask" in state:
            self.clutter_mask = torch.as_tensor(state["clutter_mask"]).numpy().astype(bool)

    def describe(self) -> DataDescription:
        """What a checkpoint stores so `convcast nowcast` prepares new frames the same way."""
        if self.preprocess is None:
            self.setup()
        hp, pre = self.hparams, self.preprocess
        C, h, w = pre.output_shape(self.source.frame_shape)
        inner = self.source.source
        reader = None if hp.importer is None else {
            "importer": hp.importer, "importer_kwargs": dict(inner.importer_kwargs),
            "fn_pattern": inner.fn_pattern, "fn_ext": inner.fn_ext}
        radar = RadarValues.of_preprocess(pre, nodata=hp.nodata, grid=archive_grid(self.source),
                                          reader=reader)
        return DataDescription(hp.input_frames, hp.output_frames, C, (h, w), radar=radar,
                               step_minutes=float(self.step_minutes), source=str(hp.path),
                               datamodule=f"{type(self).__module__}.{type(self).__name__}")

    # ---- conversions for scores and outputs ---------------------------------------------------
    def to_rainrate(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model pixels to rain rate in mm/h, inverting this archive's normalisation."""
        if self.preprocess is None:
            raise RuntimeError("call setup() first")
        return self.preprocess.to_rainrate(pixels)


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A static mask from .npy or an image (nonzero = valid) as bool `[H, W]`."""
    p = Path(path)
    if p.suffix == ".npy":
        m = np.load(p)
    else:
        import cv2

        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise OSError(f"cannot read mask image {p}")
    m = np.asarray(m)
    if m.ndim != 2:
        raise ValueError(f"{p}: a valid-pixel mask must be 2-D [H, W], got shape {m.shape}")
    return m != 0


def save_array(path: Path, a: np.ndarray) -> None:
    """np.save atomically."""
    with atomic_write(path) as f:
        np.save(f, a)
