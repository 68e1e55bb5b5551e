"""Your own data: videos, frame folders or arrays cut into sliding windows `(x, y)`.

`FramesDataModule(path=...)` reads, as sequences:
- a video file, or a folder of videos (each video one sequence, decoded per window);
- a folder of frames (one sequence) or a folder of frame folders (each one sequence);
- a `.npy` / `.npz` / HDF5 array of one sequence or of many (`layout`: `data.sources.layout`).
- any other kind a registered frame source reads (`reader=` a kind of
  `convcast.data.sources.list_sources()`, with `reader_kwargs`).
Each sequence gives windows of `input_frames + output_frames` frames every `stride` frames.
Videos and image folders are decoded, converted and resized once into the decoded-frame cache
(`convcast.data.cache`, `cache="auto"`), so later epochs and runs read prepared frames from disk.

Splits never share a frame. `split="time"` cuts every sequence at the fractions of its length and
drops the windows that would straddle a cut; `split="file"` gives whole sequences to one split
(shuffled by `seed`). Normalisation statistics come from training frames only (at most
`stats_frames` of them, evenly spaced) and are stored in checkpoints by `describe()`.

A ready-made split: `val_path` / `test_path` give that stage every window of their own sequences,
in order; `path` then serves the remaining stages, its fractions renormalised over them (with
both given, all of `path` is training data and `split` / `split_fractions` are unused).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from convcast.data.augment import VideoAugment
from convcast.data.cache import PreparedFrames, prepare_sources
from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription
from convcast.data.normalize import Normalization, fit_normalization
from convcast.data.sources import (
    FrameSource,
    detect_kind,
    get_method,
    list_images,
    list_sources,
    natural_key,
    open_sources,
)
from convcast.data.splits import SPLITS
from convcast.data.transform import as_size, describe_scale, dtype_scale, source_scale
from convcast.data.windows import Windows

Window = tuple[int, int]  # (source index, first frame)


def discover_sources(path: str | Path, key: str | None = None, layout: str | None = None,
                     cache_frames: int = 64, reader: str = "auto",
                     reader_kwargs: dict | None = None) -> list[FrameSource]:
    """The sequences under `path` (see the module docstring), in natural name order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path {path} not found")
    options = {"key": key, "layout": layout, "cache_frames": cache_frames, **(reader_kwargs or {})}
    if reader != "auto":  # the user named the reader: it reads `path` itself, strictly
        get_method(reader)
        return open_sources(path, reader, **{"key": key, "layout": layout,
                                             **(reader_kwargs or {})})
    if path.is_file() or list_images(path) or detect_or_none(path) == "zarr":
        kind = detect_kind(path)
        sources = open_sources(path, kind, strict=False, **options)
        arrays = [s for s in sources if getattr(s, "file", None) is not None]
        if arrays and arrays[0].file.guessed:
            f = arrays[0].file
            rank_zero_info(f"{path}: layout {f.layout} guessed from shape {f.shape} "
                           "(set layout to override)")
        return sources
    sources: list[FrameSource] = []
    for entry in sorted(path.iterdir(), key=natural_key):
        if detect_or_none(entry) is not None:
            sources.extend(discover_sources(entry, key, layout, cache_frames, reader,
                                            reader_kwargs))
    if not sources:
        raise ValueError(f"{path} holds no sequences: expected files or folders that a frame "
                         f"source reads ({', '.join(list_sources())}): videos, arrays, images, "
                         "or folders of frames")
    return sources


def detect_or_none(path: Path) -> str | None:
    """The reader kind of `path`, or None where no reader takes it."""
    try:
        return detect_kind(path)
    except ValueError:
        return None


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1) > 1e-6 or f[0] == 0:
        raise ValueError(f"split_fractions must be three fractions (train, val, test) >= 0 "
                         f"summing to 1 with train > 0, got {tuple(fractions)}")
    return f  # type: ignore[return-value]


def split_windows(lengths: Sequence[int], window: int, stride: int, split: str,
                  fractions: Sequence[float], seed: int = 0,
                  ) -> tuple[dict[str, list[Window]], dict[str, list[tuple[int, int, int]]]]:
    """Windows per split, and the frame ranges `(source, start, stop)` each split owns."""
    if split not in ("time", "file"):
        raise ValueError(f"unknown split {split!r}; valid: time, file")
    if window < 2 or stride < 1:
        raise ValueError(f"need a window of >= 2 frames and stride >= 1, got {window}, {stride}")
    f = _check_fractions(fractions)
    ranges: dict[str, list[tuple[int, int, int]]] = {s: [] for s in SPLITS}
    if split == "time":
        cuts = np.cumsum((0.0, *f))
        for i, n in enumerate(lengths):
            b = [int(round(c * n)) for c in cuts]
            for k, s in enumerate(SPLITS):
                if b[k + 1] > b[k]:
                    ranges[s].append((i, b[k], b[k + 1]))
    else:
        n = len(lengths)
        wanted = [k for k in range(3) if f[k] > 0]
        if n < len(wanted):
            raise ValueError(f"split='file' needs a sequence per split but there are {n}; use "
                             "split='time' or set unused split fractions to 0")
        counts = [int(round(n * f[1])), int(round(n * f[2]))]
        counts = [max(c, 1) if f[k + 1] > 0 else 0 for k, c in enumerate(counts)]
        while n - sum(counts) < 1:  # keep at least one training sequence
            k = int(np.argmax(counts))
            counts[k] -= 1
        order = np.random.default_rng(seed).permutation(n).tolist()
        n_val, n_test = counts
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
                 "train": order[n_val + n_test:]}
        for s in SPLITS:
            ranges[s] = [(i, 0, lengths[i]) for i in sorted(parts[s])]
    windows = {s: [(i, t) for i, lo, hi in ranges[s] for t in range(lo, hi - window + 1, stride)]
               for s in SPLITS}
    return windows, ranges


def all_windows(lengths: Sequence[int], window: int, stride: int) -> list[Window]:
    """Every window of every sequence, in order: a stage read from its own val/test path."""
    return [(i, t) for i, n in enumerate(lengths) for t in range(0, n - window + 1, stride)]


def _frame_kinds(sources: list, frame_size: int | Sequence[int] | None, channels: int | None
                 ) -> dict[str, set]:
    """What every window must share: value scale and, unless converted, frame size and channels."""
    return {"value type": {dtype_scale(s.dtype) or "integer" for s in sources},
            "frame size": set() if frame_size is not None else
            {tuple(s.frame_shape[1:]) for s in sources},
            "channels": set() if channels is not None else {s.frame_shape[0] for s in sources}}


class WindowDataset(Windows):
    """Item `i`: `(x [T_in,C,H,W], y [T_out,C,H,W])` float32 of window `windows[i]` of the
    prepared frames `frames` (`convcast.data.cache.PreparedFrames`), augmented (training) and
    normalised."""

    def __init__(self, frames: Sequence[PreparedFrames], windows: Sequence[Window],
                 input_frames: int, output_frames: int,
                 normalization: Normalization | None = None,
                 augment: VideoAugment | None = None) -> None:
        super().__init__(frames, windows, input_frames=input_frames, output_frames=output_frames,
                         transform=self.prepare, epoch_indices=augment is not None)
        self.frames = self.sequences
        self.normalization = normalization or Normalization()
        self.augment = augment

    def prepare(self, seq: np.ndarray, index: int, epoch: int) -> np.ndarray:
        """Frames `[T, C, H, W]` of window `index` -> checked, augmented, normalised."""
        if not np.isfinite(seq).all():
            s, t = self.windows[index]
            raise ValueError(f"{self.frames[s].name} frames {t}:{t + len(seq)} hold NaN or "
                             "infinite values; fill them (e.g. np.nan_to_num) or give the data "
                             "a mask")
        if self.augment is not None:  # in data values, before the normalisation
            seq = self.augment(torch.from_numpy(seq), index, epoch).numpy()
        return self.normalization.apply(seq).astype(np.float32)


class FramesDataModule(SequenceDataModule):
    """Sliding windows over your own videos, frame folders or arrays (see the module docstring).

    Args:
        path: a video, an array file, a folder of frames, or a folder of any of them.
        val_path / test_path: a ready-made validation / test set (same kinds as `path`): that
            stage gets all its windows, in order, and `path` only serves the other stages, the
            fractions of those renormalised (e.g. (0.8, 0.1, 0.1) with `val_path` cuts `path`
            8:1 into train/test; with both given, all of `path` trains). `stride`, `key`,
            `layout` and the frame conversion apply to them too; normalisation never reads them.
        input_frames / output_frames: frames in x and in y; `stride`: frames between windows.
        split: `time` or `file`; `split_fractions`: (train, val, test), summing to 1.
        frame_size: resize to this (int or (H, W)); None keeps the stored size.
        channels: 1 (gray) or 3 (RGB); None keeps the stored channels (videos decode as RGB).
        normalization: `none`, `minmax` (to [0, 1]; from `value_range` if given, else the
            training data's min/max) or `standard` (training mean/std). Integer frames are first
            divided by their type's maximum (uint8: 255, uint16: 65535); int32 / int64 frames
            by their values' range (255 where they fit 8 bits, 65535 where 16, else their
            largest magnitude), never by the type's maximum.
        key / layout: the array inside an `.npz`/HDF5 file, and the array's axis order.
        reader / reader_kwargs: the frame source kind that reads `path` (`auto`: by the path;
            any of `convcast.data.sources.list_sources()`) and its own options.
        cache: keep the prepared frames in the decoded-frame cache (`auto`: videos and image
            folders; true: every source; false: none); `cache_dir` overrides its folder.
        cache_frames: decoded frames a video keeps for overlapping windows.
        stats_frames: at most this many training frames fit the normalisation.
        shuffle / seed: training order (a function of seed and epoch) and the file split.
        augment: augment the training windows (`convcast.data.augment.VideoAugment`): true for
            the defaults (left-right flips), or a mapping of its options, e.g. `{flip: true,
            crop_scale: 0.7, reverse: 0.5, brightness: 0.2}`; validation and test windows are
            never augmented.
    """

    def __init__(
        self, path: str, input_frames: int = 10, output_frames: int = 10, stride: int = 1,
        split: str = "time", split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        frame_size: int | tuple[int, int] | None = None, channels: int | None = None,
        normalization: str = "none", value_range: tuple[float, float] | None = None,
        key: str | None = None, layout: str | None = None, cache_frames: int = 64,
        stats_frames: int = 256, shuffle: bool = True, seed: int = 0, batch_size: int = 16,
        num_workers: int = 0, val_path: str | None = None, test_path: str | None = None,
        reader: str = "auto", reader_kwargs: dict | None = None, cache: bool | str = "auto",
        cache_dir: str | None = None, augment: bool | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers)
        VideoAugment.of(augment)  # bad options fail here, before any data is read
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 (gray), 3 (RGB) or None (as stored), got "
                             f"{channels}")
        if input_frames < 1 or output_frames < 1:
            raise ValueError("input_frames and output_frames must be >= 1")
        self.save_hyperparameters()
        self.normalization: Normalization | None = None
        self.sources: list[FrameSource] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.sources is not None:
            return
        hp = self.hparams
        window = hp.input_frames + hp.output_frames
        sources = self._discover(hp.path)
        own = {s: p for s, p in (("val", hp.val_path), ("test", hp.test_path)) if p is not None}
        extra = {s: self._discover(p, f"{s}_path") for s, p in own.items()}
        self._check_alike(sources, extra)
        self.value_scale = self._value_scale([*sources, *(x for v in extra.values() for x in v)])
        frames = self._prepare(sources)
        extra_frames = {s: self._prepare(srcs) for s, srcs in extra.items()}
        f = _check_fractions(hp.split_fractions)
        f = tuple(0.0 if s in own else v for s, v in zip(SPLITS, f, strict=True))
        fractions = tuple(v / sum(f) for v in f)  # path's share of the stages it still serves
        windows, ranges = split_windows([s.num_frames for s in sources], window, hp.stride,
                                        hp.split, fractions, hp.seed)
        if not windows["train"]:
            raise ValueError(
                f"no training window of {window} frames fits in {hp.path} (sequence lengths "
                f"{sorted({s.num_frames for s in sources})}, split {hp.split} "
                f"{tuple(round(v, 4) for v in fractions)}); use shorter windows or more data")
        stage_frames = {s: frames for s in SPLITS}
        for s, srcs in extra.items():
            stage_frames[s] = extra_frames[s]
            windows[s] = all_windows([x.num_frames for x in srcs], window, hp.stride)
            if not windows[s]:
                raise ValueError(f"no window of {window} frames fits in {s}_path {own[s]} "
                                 f"(sequence lengths {sorted({x.num_frames for x in srcs})}); "
                                 "use shorter windows or longer sequences")
        self.normalization = fit_normalization(  # training frames only, never val/test
            hp.normalization, self._stats_frames(frames, ranges["train"]), hp.value_range)
        common = dict(input_frames=hp.input_frames, output_frames=hp.output_frames,
                      normalization=self.normalization)
        augment = VideoAugment.of(hp.augment)
        if augment is not None and augment.brightness and augment.clip is None \
                and self.value_scale != 1:  # integer frames were scaled to [0, 1]
            augment = VideoAugment(**{**asdict(augment), "clip": 1.0, "seed": hp.seed})
        elif augment is not None:
            augment = VideoAugment(**{**asdict(augment), "seed": hp.seed})
        self.train_set = WindowDataset(frames, windows["train"], **common, augment=augment)
        self.val_set = WindowDataset(stage_frames["val"], windows["val"], **common)
        self.test_set = WindowDataset(stage_frames["test"], windows["test"], **common)
        self.sources, self.dtype = sources, np.dtype(sources[0].dtype)
        where = "".join(f", {s} from {p}" for s, p in own.items())
        rank_zero_info(f"{hp.path}: {len(sources)} sequences{where}, windows train/val/test "
                       f"{len(windows['train'])}/{len(windows['val'])}/{len(windows['test'])}, "
                       f"normalization {self.normalization.describe()}")

    def _discover(self, path: str, name: str = "path") -> list:
        """The sequences under `path`; `name` is the argument it came from, for error messages."""
        if not Path(path).exists():
            hint = "" if name == "path" else (f", or leave {name} unset to cut that stage from "
                                              "path by split_fractions")
            raise FileNotFoundError(f"{name} {path} not found: give a video, an array file or a "
                                    f"folder of frames or videos{hint}")
        hp = self.hparams
        return discover_sources(path, hp.key, hp.layout, hp.cache_frames, hp.reader,
                                hp.reader_kwargs)

    def _prepare(self, sources: list[FrameSource]) -> list[PreparedFrames]:
        hp = self.hparams
        return prepare_sources(sources, hp.channels, hp.frame_size, hp.cache, hp.cache_dir,
                               scale=self.value_scale)

    def _value_scale(self, sources: list[FrameSource]) -> float:
        """What the integer frames of every split are divided by (1 for float frames): their
        type's maximum up to 16 bits, else the range of their values (said on stderr)."""
        scale, peak = source_scale(sources, peak=True)
        dtype = np.dtype(sources[0].dtype)
        if dtype_scale(dtype) is None:
            rank_zero_info(f"{self.hparams.path}: {dtype} frames divided by {scale:g} "
                           f"({describe_scale(dtype, scale, peak)})")
        return scale

    def _check_alike(self, sources: list, extra: dict[str, list]) -> None:
        """Every sequence, in every path, must give windows of one value type, size and channels."""
        hp = self.hparams
        named = {"path": (hp.path, sources)}
        named.update({f"{s}_path": (hp[f"{s}_path"], srcs) for s, srcs in extra.items()})
        kinds, dtypes = {}, {}
        for name, (p, srcs) in named.items():
            k = _frame_kinds(srcs, hp.frame_size, hp.channels)
            dtypes[name] = sorted({str(np.dtype(s.dtype)) for s in srcs})
            if len(k["value type"]) > 1:
                raise ValueError(f"{p} mixes value types {dtypes[name]}; integer and float frames "
                                 "scale differently: convert them to one type")
            if len(k["frame size"]) > 1 or len(k["channels"]) > 1:
                raise ValueError(f"the sequences in {p} differ in frame size or channels "
                                 f"({sorted(k['frame size'])}, {sorted(k['channels'])}); set "
                                 "frame_size and channels so that every window comes out alike")
            kinds[name] = k
        for name, (p, _) in list(named.items())[1:]:
            diff = [f"{k} {dtypes['path'] if k == 'value type' else sorted(v)} vs "
                    f"{dtypes[name] if k == 'value type' else sorted(kinds[name][k])}"
                    for k, v in kinds["path"].items() if v != kinds[name][k]]
            if diff:
                raise ValueError(
                    f"path {hp.path} and {name} {p} hold different frames ({'; '.join(diff)}); "
                    "set frame_size and channels so that every split comes out alike, or convert "
                    "the files to one value type")

    def _stats_frames(self, frames: list[PreparedFrames], ranges: list[tuple[int, int, int]]
                      ) -> Iterator[np.ndarray]:
        """Evenly spaced training frames, prepared like the model's inputs (before normalising)."""
        index = [(i, t) for i, lo, hi in ranges for t in range(lo, hi)]
        take = np.linspace(0, len(index) - 1, min(len(index), self.hparams.stats_frames))
        for k in np.unique(take.round().astype(int)):
            i, t = index[k]
            yield frames[i].read(t, t + 1)

    def describe(self) -> DataDescription:
        """What a checkpoint stores so `convcast predict` prepares new frames the same way."""
        if self.sources is None:
            self.setup()
        c, h, w = self.sources[0].frame_shape
        hp = self.hparams
        return DataDescription(
            hp.input_frames, hp.output_frames, hp.channels or c, as_size(hp.frame_size) or (h, w),
            normalization=self.normalization, value_scale=self.value_scale,
            source=str(hp.path), datamodule=f"{type(self).__module__}.{type(self).__name__}")
