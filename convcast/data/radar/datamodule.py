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

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from convcast.data.cache import PreparedFrames
from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription, RadarValues
from convcast.data.radar.archive import RadarSource, archive_grid
from convcast.data.radar.parts import RadarArchive, RadarClutter, RadarPreparation, RadarSplit
from convcast.data.radar.preprocess import Crop, RadarPreprocess, Size
from convcast.data.radar.timeline import as_step
from convcast.data.sources import FrameSource
from convcast.data.splits import SPLITS
from convcast.data.windows import Windows


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


class PreparedRadar:
    """An archive's frames as the model reads them: `read(start, stop)` -> `[T, C, h, w]`
    (NaN = invalid), sliced from the decoded-frame cache where there is one (`frames`: processed
    but for the static mask), else read from `source` and preprocessed."""

    def __init__(self, source: RadarSource, preprocess: RadarPreprocess,
                 frames: PreparedFrames | None = None) -> None:
        self.source, self.preprocess, self.frames = source, preprocess, frames

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.frames is not None:
            return self.preprocess.apply_valid(self.frames.read(start, stop))
        return self.preprocess(self.source.read(start, stop))


class RadarWindows(Windows):
    """Windows of `input_frames + output_frames` frames starting at `starts` in `source`
    (`frames`: its preprocessed frames, e.g. cached, read instead of preprocessing each time),
    as `(x, y, mask)` (see the module docstring)."""

    def __init__(self, source: RadarSource, starts: np.ndarray, preprocess: RadarPreprocess,
                 input_frames: int = 5, output_frames: int = 15,
                 frames: PreparedFrames | None = None) -> None:
        self.source, self.starts, self.preprocess = source, np.asarray(starts), preprocess
        self.frames = frames
        self.prepared = PreparedRadar(source, preprocess, frames)
        super().__init__([self.prepared], [(0, s) for s in self.starts],
                         input_frames=input_frames, output_frames=output_frames, masked=True)

    def times(self, index: int) -> np.ndarray:
        """Timestamps `[T_in + T_out]` (datetime64[s]) of window `index`."""
        s = int(self.starts[index])
        return self.source.timestamps[s:s + self.input_frames + self.output_frames]


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

    The module is an archive, a preparation, a split and a clutter mask
    (`convcast.data.radar.parts`: `dm.archive`, `dm.preparation`, `dm.split`, `dm.clutter`,
    frozen and keyword-only); the flat arguments above fill them in as configs spell them, and
    `RadarDataModule.of(archive, preparation=..., split=..., clutter=...)` takes them typed.
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
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be true, false or auto, got {cache!r}")
        self.save_hyperparameters()
        hp = dict(self.hparams)
        # the parts, each frozen and keyword-only (bad options fail here, before any reading)
        self.archive = RadarArchive.pick(hp)
        self.preparation = RadarPreparation.pick(hp)
        self.split = RadarSplit.pick({**hp, "ratios": split_ratios, "seed": split_seed,
                                      "times": split_times})
        self.clutter = RadarClutter.pick({**hp, "clutter_method": clutter}, prefix="clutter_")
        self.source: RadarSource | None = None
        self.preprocess: RadarPreprocess | None = None
        self.clutter_mask: np.ndarray | None = None  # [C, h, w] bool, True = clutter
        self.windows: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, archive: RadarArchive, *, preparation: RadarPreparation | None = None,
           split: RadarSplit | None = None, clutter: RadarClutter | None = None,
           **options: Any) -> RadarDataModule:
        """The datamodule of typed parts (`options`: batch_size, num_workers, cache,
        cache_dir)."""
        split = split or RadarSplit()
        c = asdict(clutter or RadarClutter())
        flat = {**asdict(archive), **asdict(preparation or RadarPreparation()),
                **{k: v for k, v in asdict(split).items()
                   if k not in ("ratios", "seed", "times")},
                "split_ratios": split.ratios, "split_seed": split.seed,
                "split_times": split.times, "clutter": c.pop("method"),
                **{f"clutter_{k}": v for k, v in c.items()}}
        return cls(**flat, **options)

    def setup(self, stage: str | None = None) -> None:
        if self.source is not None:
            return
        hp, split = self.hparams, self.split
        self.source = self.archive.open()
        ts = self.source.timestamps
        step = as_step(self.archive.step_minutes, ts)
        self.step_minutes = step.astype("timedelta64[s]").astype(np.int64) / 60
        self.windows, inside = split.windows(ts, step)
        if not any(len(w) for w in self.windows.values()):
            raise ValueError(f"{self.source} has no gap-free run of "
                             f"{split.input_frames + split.output_frames} frames inside {inside} "
                             f"(step {self.step_minutes:g} min)")
        if self.clutter.method != "none" and self.clutter_mask is None:
            self.clutter_mask = self.clutter.mask(
                self.source, self.preparation.base(self.source), self.windows["train"],
                split.input_frames + split.output_frames)
        self.preprocess = self.preparation.build(self.source, self.clutter_mask)
        frames = None
        if hp.cache is True or (hp.cache == "auto" and self.source.kind == "pysteps"):
            frames = PreparedFrames(ProcessedFrames(self.source, self.preprocess), cache=True,
                                    cache_dir=hp.cache_dir)
        sets = {name: RadarWindows(self.source, self.windows[name], self.preprocess,
                                   split.input_frames, split.output_frames, frames)
                for name in SPLITS}
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

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
        archive, split, pre = self.archive, self.split, self.preprocess
        C, h, w = pre.output_shape(self.source.frame_shape)
        inner = self.source.source
        reader = None if archive.importer is None else {
            "importer": archive.importer, "importer_kwargs": dict(inner.importer_kwargs),
            "fn_pattern": inner.fn_pattern, "fn_ext": inner.fn_ext}
        radar = RadarValues.of_preprocess(pre, nodata=archive.nodata,
                                          grid=archive_grid(self.source), reader=reader)
        return DataDescription(split.input_frames, split.output_frames, C, (h, w), radar=radar,
                               step_minutes=float(self.step_minutes), source=str(archive.path),
                               datamodule=f"{type(self).__module__}.{type(self).__name__}")

    # ---- conversions for scores and outputs ---------------------------------------------------
    def to_rainrate(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model pixels to rain rate in mm/h, inverting this archive's normalisation."""
        if self.preprocess is None:
            raise RuntimeError("call setup() first")
        return self.preprocess.to_rainrate(pixels)
