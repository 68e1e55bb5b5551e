"""Motion fields for the data pipeline: optical flow per window, computed in DataLoader workers.

A forecaster anchored on extrapolation (`convcast.models.anchored`) needs the motion of each input
window, `motion [2, H, W]` (x then y component, pixels per step, pysteps' convention). Estimating
it (pysteps Lucas-Kanade by default) costs far more than advecting with it, so it is done here,
once per window and off the training loop's main thread: `MotionDataset` wraps any dataset of
`(x, y)`, `(x, y, mask)` or `{"x", "y", ...}` items and returns dicts `{"x", "y", "mask"?,
"motion"}`, and `MotionDataModule` wraps a whole datamodule so its loaders (with `num_workers`
worker processes) serve such batches. Where the data is fixed the field is computed once: in
memory for sets of fixed size (validation, test), on disk with `cache_dir` (any split, keyed by
the datamodule's class and hyperparameters, the split, the window index and the motion settings).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from convcast.atomic import atomic_write
from convcast.data.datamodule import SequenceDataModule
from convcast.data.loader import resumable_loader
from convcast.motion.estimate import check_method, window_motion

MEMORY_CACHE_MAX = 20_000  # windows: larger sets are not kept in memory (use cache_dir)


def as_dict(item: Any) -> dict[str, Any]:
    """A dataset item `(x, y)`, `(x, y, mask)` or a mapping with "x" and "y", as a dict."""
    if isinstance(item, Mapping):
        if "x" not in item or "y" not in item:
            raise ValueError(f"dataset items that are mappings need keys 'x' and 'y', got "
                             f"{sorted(item)}")
        return dict(item)
    if isinstance(item, (list, tuple)) and len(item) in (2, 3):
        out = {"x": item[0], "y": item[1]}
        if len(item) == 3:
            out["mask"] = item[2]
        return out
    raise ValueError(f"dataset items must be (x, y), (x, y, mask) or a dict with 'x' and 'y', got "
                     f"{type(item).__name__}")


class MotionDataset(Dataset):
    """Items of `dataset` as dicts `{"x", "y", "mask"?, "motion" [2, H, W]}`.

    Args:
        dataset: any dataset of forecasting windows (see `as_dict`).
        motion_frames / method / method_kwargs: as the `optical_flow` baseline's.
        memory_cache: keep computed fields in this process (each DataLoader worker has its own,
            kept across epochs by persistent workers); only for sets of fixed items.
        cache_dir: a folder for one `.npy` per window, written atomically; reused by later runs.
            The data behind the key must not change: delete the folder if it does.

    A dataset whose items change with the epoch (`epoch_indices`: augmentation drawn per epoch,
    the loader passing `epoch * len + i`) is wrapped as such, and its fields are never cached:
    each epoch's window gets its own.
    """

    def __init__(self, dataset: Dataset, motion_frames: int = 3, method: str = "lucaskanade",
                 method_kwargs: dict | None = None, memory_cache: bool = False,
                 cache_dir: str | Path | None = None) -> None:
        check_method(method, motion_frames)
        self.dataset, self.motion_frames, self.method = dataset, motion_frames, method
        self.method_kwargs = dict(method_kwargs or {})
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.epoch_indices = bool(getattr(dataset, "epoch_indices", False))
        if self.epoch_indices:  # items drawn per epoch: a cached field would be another item's
            memory_cache, self.cache_dir = False, None
        self.memory: dict[int, torch.Tensor] | None = {} if memory_cache else None

    def __len__(self) -> int:
        return len(self.dataset)

    def motion(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The field of window `index` (input `x`): from a cache, or computed and cached."""
        if self.memory is not None and index in self.memory:
            return self.memory[index]
        path = self.cache_dir / f"{index}.npy" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            v = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            v = window_motion(x, self.motion_frames, self.method, self.method_kwargs)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as f:  # a reader sees a whole file or none
                    np.save(f, v.numpy(), allow_pickle=False)
        if self.memory is not None:
            self.memory[index] = v
        return v

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = as_dict(self.dataset[index])
        x = item["x"]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"MotionDataset: item {index} has x of shape "
                             f"{tuple(getattr(x, 'shape', ()))}; expected [T_in, C, H, W]")
        item["motion"] = self.motion(index, x)  # [2, H, W]
        return item


def cache_key(datamodule: L.LightningDataModule, split: str, settings: dict) -> str:
    """A folder name that changes with the datamodule's class, hyperparameters, split and the
    motion settings (so windows of other data never share a cache), and with the size and
    modification time of a `path` that is a file (a video replaced under the same name)."""
    cls = f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"
    hp = dict(getattr(datamodule, "hparams", {}) or {})
    for loader_only in ("batch_size", "num_workers"):  # they do not change the windows
        hp.pop(loader_only, None)
    path = hp.get("path")
    if isinstance(path, (str, Path)) and Path(path).is_file():
        stat = Path(path).stat()
        hp["path_file"] = [stat.st_size, stat.st_mtime_ns]
    text = json.dumps({"class": cls, "hparams": hp, "split": split, **settings}, sort_keys=True,
                      default=str)
    return f"{split}-{hashlib.sha1(text.encode()).hexdigest()[:16]}"


class MotionDataModule(SequenceDataModule):
    """Any datamodule whose batches also carry each window's motion field.

    `data` is a datamodule with `train_set` / `val_set` / `test_set` after `setup()` (every
    convcast datamodule); its batch size, shuffling, seed and description are kept, and anything
    else asked of this module (`normalization`, `step_minutes`, ...) is answered by it.
    `num_workers` worker processes compute the fields (0: in the main process). Validation and
    test fields are kept in memory; `cache_dir` also keeps every field on disk across runs.

        data:
          class_path: convcast.data.motion.MotionDataModule
          init_args:
            data: {class_path: convcast.data.SyntheticRadarDataModule, init_args: {...}}
    """

    def __init__(self, data: L.LightningDataModule, motion_frames: int = 3,
                 method: str = "lucaskanade", method_kwargs: dict | None = None,
                 num_workers: int = 1, cache_dir: str | None = None) -> None:
        check_method(method, motion_frames)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not hasattr(data, "batch_size"):
            raise TypeError(f"MotionDataModule needs a datamodule with a batch_size, got "
                            f"{type(data).__name__}")
        super().__init__(data.batch_size, num_workers)
        self.data, self.motion_frames, self.method = data, motion_frames, method
        self.method_kwargs, self.cache_dir = dict(method_kwargs or {}), cache_dir

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("data")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def describe(self) -> Any:
        """The wrapped data's description: motion fields do not change what the frames are."""
        return self.data.describe() if hasattr(self.data, "describe") else None

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def _wrap(self, split: str, fixed: bool) -> MotionDataset | None:
        ds = getattr(self.data, f"{split}_set", None)
        if ds is None:
            return None
        settings = {"motion_frames": self.motion_frames, "method": self.method,
                    "method_kwargs": self.method_kwargs}
        folder = (Path(self.cache_dir) / cache_key(self.data, split, settings)
                  if self.cache_dir is not None else None)
        return MotionDataset(ds, self.motion_frames, self.method, self.method_kwargs,
                             memory_cache=fixed and len(ds) <= MEMORY_CACHE_MAX, cache_dir=folder)

    def setup(self, stage: str | None = None) -> None:
        self.data.trainer = self.trainer
        self.data.setup(stage)
        if all(getattr(self.data, f"{s}_set", None) is None for s in ("train", "val", "test")):
            raise TypeError(f"MotionDataModule needs a datamodule with train_set / val_set / "
                            f"test_set after setup(); {type(self.data).__name__} has none")
        self.train_set = self._wrap("train", fixed=False)
        self.val_set, self.test_set = self._wrap("val", True), self._wrap("test", True)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError(f"{type(self.data).__name__} has no train set; call setup() first")
        hp = getattr(self.data, "hparams", {}) or {}  # the wrapped data's order
        return resumable_loader(self, self.train_set, self.batch_size, self.num_workers,
                                hp.get("shuffle", True), hp.get("seed", 0))
