"""LightningDataModules over labelled video folders: action classification and KTH prediction.

- `LabelledVideoDataModule`: any `<root>/<class>/<video>` folder; batches `(clip [B,T,C,H,W],
  label [B])`, one clip per window of `frame_len` frames, labelled with its video's class.
- `KTHDataModule`: the same with KTH's defaults (person ids from `personXX_`, the `tutorial`
  split, 15-frame clips at 60x80 gray like the KTH ConvLSTM tutorial), a `scenarios` filter and an
  optional download of the official archives.
- `KTHPredictionDataModule`: KTH as a forecasting dataset, batches `(x [B,T_in,C,H,W],
  y [B,T_out,C,H,W])` (the benchmark's 10 -> 20 frames at 64x64 gray, persons 1-16 / 17-25).

Splits are by group (person), so no person is in two splits. Training windows start every
`stride` frames, validation/test windows every `eval_stride` (both default to the window length:
non-overlapping, as the tutorial cuts them). `flip` mirrors training windows only. Frames are
float32 in [0, 1] (uint8 / 255); checkpoints record it (`describe()` for prediction,
`data_info()` for the classifier's classes and clip length).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription
from convcast.data.kth.download import download_kth
from convcast.data.kth.folder import KTH_GROUP_PATTERN, STAGES, Video, scan_folder, split_groups
from convcast.data.kth.frames import ClipDataset, ForecastWindows, load_video
from convcast.data.transform import as_size

Split = str | dict[str, list[int | str]]
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                "predict": ("test",), None: STAGES}


def _scenario_filter(scenarios: Sequence[str] | None) -> str | None:
    """A file-name regex keeping KTH scenarios such as `d1`, `d4`."""
    if not scenarios:
        return None
    bad = [s for s in scenarios if s not in ("d1", "d2", "d3", "d4")]
    if bad:
        raise ValueError(f"unknown KTH scenario(s) {bad}; valid: d1 (outdoors), d2 (scale "
                         "variation), d3 (different clothes), d4 (indoors)")
    return "_(" + "|".join(scenarios) + ")_"


class VideoFolderData(SequenceDataModule):
    """Shared logic: scan the folder, split its groups, decode each split's videos once."""

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__(batch_size, num_workers)
        self.classes: list[str] | None = None
        self.splits: dict[str, list[Video]] = {}
        self._built: set[str] = set()

    # subclasses: folder arguments, window length, and the dataset of one stage
    def _scan_args(self) -> dict:
        raise NotImplementedError

    def _window(self) -> int:
        raise NotImplementedError

    def _dataset(self, stage: str, frames: list[np.ndarray], labels: list[int],
                 stride: int) -> Dataset:
        raise NotImplementedError

    def _scan(self) -> None:
        hp = self.hparams
        self.classes, videos = scan_folder(hp.root, **self._scan_args())
        groups = split_groups([v.group for v in videos], hp.split,
                              hp.get("split_fractions", (0.7, 0.15, 0.15)), hp.seed)
        self.splits = {s: [v for v in videos if v.group in groups[s]] for s in STAGES}
        rank_zero_info(f"{hp.root}: {len(videos)} videos of {len(self.classes)} classes; "
                       + ", ".join(f"{s} {len(self.splits[s])} videos (groups "
                                   f"{sorted(groups[s], key=str)})" for s in STAGES))

    def setup(self, stage: str | None = None) -> None:
        if self.classes is None:
            self._scan()
        hp = self.hparams
        for s in STAGE_SPLITS.get(stage, STAGES):
            if s in self._built:
                continue  # decoded once; later epochs and stages reuse it
            videos = self.splits[s]
            frames = [load_video(v.path, hp.channels, hp.frame_size) for v in videos]
            sizes = {f.shape[-2:] for f in frames}
            if len(sizes) > 1:
                raise ValueError(f"the {s} videos of {hp.root} differ in frame size "
                                 f"({sorted(sizes)}); set frame_size so that they come out alike")
            stride = (hp.stride if s == "train" else hp.eval_stride) or self._window()
            ds = self._dataset(s, frames, [v.label for v in videos], stride)
            if len(ds) == 0 and (s == "train" or videos):
                longest = max((len(f) for f in frames), default=0)
                raise ValueError(f"no window of {self._window()} frames fits in the {s} videos of "
                                 f"{hp.root} ({len(videos)} videos, the longest has {longest} "
                                 "frames); use shorter windows or longer videos")
            setattr(self, f"{s}_set", ds)
            self._built.add(s)
            rank_zero_info(f"{hp.root}: {s}: {len(videos)} videos decoded, {len(ds)} windows")

    def _frames_info(self) -> dict:
        hp = self.hparams
        if self.classes is None:
            self._scan()
        size = as_size(hp.frame_size)
        if size is None:  # kept as stored: read it off the first video
            size = tuple(load_video(self.splits["train"][0].path, hp.channels).shape[-2:])
        return {"channels": hp.channels, "frame_size": list(size), "value_scale": 255.0,
                "normalization": {"kind": "none"}, "source": str(hp.root)}


class LabelledVideoDataModule(VideoFolderData):
    """Action (or any) classification from a labelled video folder (see the module docstring).

    Args:
        root: the folder `<root>/<class>/<video>`.
        classes: class folders, in label order (default: every subfolder with videos, sorted).
        group_pattern: regex whose first group, searched in a file name, is the video's group.
        name_filter: keep only videos whose file name matches this regex.
        split: `tutorial`, `schuldt`, `prediction`, `random` (groups cut by `split_fractions`,
            shuffled by `seed`) or `{train: [...], val: [...], test: [...]}` of groups.
        frame_len: frames per clip; `stride` / `eval_stride`: frames between training /
            evaluation clips (default `frame_len`: non-overlapping).
        frame_size: resize frames to this (int or (H, W)); None keeps the stored size.
        channels: 1 (gray) or 3 (RGB).
        flip: mirror training clips left-right with probability 1/2.
        shuffle / seed: the training order (a function of seed and epoch).
    """

    def __init__(
        self, root: str, classes: list[str] | None = None,
        group_pattern: str = KTH_GROUP_PATTERN, name_filter: str | None = None,
        split: Split = "random", split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        frame_len: int = 15, stride: int | None = None, eval_stride: int | None = None,
        frame_size: int | tuple[int, int] | None = (60, 80), channels: int = 1,
        flip: bool = True, shuffle: bool = True, seed: int = 0, batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
        if frame_len < 1:
            raise ValueError(f"frame_len must be >= 1, got {frame_len}")
        self.save_hyperparameters()

    def _scan_args(self) -> dict:
        hp = self.hparams
        return {"classes": hp.classes, "group_pattern": hp.group_pattern,
                "name_filter": hp.name_filter}

    def _window(self) -> int:
        return self.hparams.frame_len

    def _dataset(self, stage: str, frames: list[np.ndarray], labels: list[int],
                 stride: int) -> Dataset:
        flip = self.hparams.flip and stage == "train"
        return ClipDataset(frames, labels, self.hparams.frame_len, stride, flip)

    def data_info(self) -> dict:
        """What a checkpoint stores so `convcast classify` prepares a video the same way."""
        info = self._frames_info()
        return {"task": "classification", "classes": list(self.classes),
                "clip_frames": self.hparams.frame_len, **info}


class KTHDataModule(LabelledVideoDataModule):
    """KTH action classification: `LabelledVideoDataModule` with KTH's layout and defaults.

    Args (beyond `LabelledVideoDataModule`'s):
        split: `tutorial` (default), `schuldt`, `prediction`, `random` or a mapping of persons.
        scenarios: keep only these of d1, d2, d3, d4 (default: all).
        download: fetch the official archives into `root` first if its action folders are
            missing (online only).
    """

    def __init__(
        self, root: str = "data/kth", split: Split = "tutorial", scenarios: list[str] | None = None,
        download: bool = False, classes: list[str] | None = None, frame_len: int = 15,
        stride: int | None = None, eval_stride: int | None = None,
        frame_size: int | tuple[int, int] | None = (60, 80), channels: int = 1,
        flip: bool = True, shuffle: bool = True, seed: int = 0, batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(root, classes, KTH_GROUP_PATTERN, _scenario_filter(scenarios), split,
                         frame_len=frame_len, stride=stride, eval_stride=eval_stride,
                         frame_size=frame_size, channels=channels, flip=flip, shuffle=shuffle,
                         seed=seed, batch_size=batch_size, num_workers=num_workers)

    def prepare_data(self) -> None:
        if self.hparams.download:
            download_kth(self.hparams.root)


class KTHPredictionDataModule(VideoFolderData):
    """KTH video prediction: `(x [B,T_in,C,H,W], y [B,T_out,C,H,W])` windows of every action.

    Args:
        root: the KTH folder; `download`: fetch it first if missing (online only).
        input_frames / output_frames: frames in x and y (the benchmark: 10 -> 20).
        frame_size: frames resized to this (the benchmark: 64; OpenSTL's tables use 128).
        channels: 1 (gray) or 3.
        stride / eval_stride: frames between training / evaluation windows (default: the
            window length, non-overlapping).
        split: `prediction` (persons 1-14 train, 15-16 val, 17-25 test), another named split,
            `random` or a mapping of persons.
        classes / scenarios: keep only these actions / scenarios (default: all).
        flip: mirror training windows left-right with probability 1/2.
    """

    def __init__(
        self, root: str = "data/kth", input_frames: int = 10, output_frames: int = 20,
        frame_size: int | tuple[int, int] | None = 64, channels: int = 1,
        stride: int | None = None, eval_stride: int | None = None, split: Split = "prediction",
        classes: list[str] | None = None, scenarios: list[str] | None = None,
        flip: bool = False, shuffle: bool = True, seed: int = 0, batch_size: int = 16,
        num_workers: int = 0, download: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if input_frames < 1 or output_frames < 1 or channels not in (1, 3):
            raise ValueError(f"need input_frames, output_frames >= 1 and channels 1 or 3, got "
                             f"{input_frames}, {output_frames}, {channels}")
        self.save_hyperparameters()
        self._filter = _scenario_filter(scenarios)

    def prepare_data(self) -> None:
        if self.hparams.download:
            download_kth(self.hparams.root)

    def _scan_args(self) -> dict:
        return {"classes": self.hparams.classes, "group_pattern": KTH_GROUP_PATTERN,
                "name_filter": self._filter}

    def _window(self) -> int:
        return self.hparams.input_frames + self.hparams.output_frames

    def _dataset(self, stage: str, frames: list[np.ndarray], labels: list[int],
                 stride: int) -> Dataset:
        hp = self.hparams
        return ForecastWindows(frames, hp.input_frames, hp.output_frames, stride,
                               hp.flip and stage == "train")

    def describe(self) -> DataDescription:
        """What a checkpoint stores so `convcast predict` prepares new frames the same way."""
        info, hp = self._frames_info(), self.hparams
        return DataDescription(hp.input_frames, hp.output_frames, info["channels"],
                               tuple(info["frame_size"]), value_scale=info["value_scale"],
                               source=info["source"],
                               datamodule=f"{type(self).__module__}.{type(self).__name__}")

