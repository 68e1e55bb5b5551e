"""The base of the generated datasets (Moving MNIST, moving shapes, synthetic radar).

Sequence `i` of split `s` is drawn from its own random stream seeded by `(seed, s, i)`, so any item
is reproducible on its own, in any DataLoader worker or process, and the three splits never share
a sequence. A subclass says how to draw one raw sequence (`generate`) and how it becomes the
model's values (`to_frames`); its datamodule names the dataset class and its settings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription
from convcast.data.splits import SPLIT_IDS, SPLITS, check_split


class GeneratedSequences(Dataset):
    """Item `i`: `(x [T_in,C,H,W], y [T_out,C,H,W])` float32 of generated sequence `i`."""

    def __init__(self, split: str, num_sequences: int, input_frames: int, output_frames: int,
                 seed: int = 0) -> None:
        check_split(split)
        if input_frames < 1 or output_frames < 1:
            raise ValueError("input_frames and output_frames must be >= 1")
        if num_sequences < 0:
            raise ValueError(f"num_sequences must be >= 0, got {num_sequences}")
        self.split, self.num_sequences = split, num_sequences
        self.input_frames, self.output_frames = input_frames, output_frames
        self.seed = (seed, SPLIT_IDS[split])

    def __len__(self) -> int:
        return self.num_sequences

    @property
    def seq_len(self) -> int:
        return self.input_frames + self.output_frames

    def rng(self, index: int) -> np.random.Generator:
        """The random stream of item `index`."""
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"index {index} out of range for {self.num_sequences} sequences")
        return np.random.default_rng([*self.seed, index])

    def generate(self, rng: np.random.Generator) -> np.ndarray:
        """One raw sequence `[T, H, W]` drawn from `rng`."""
        raise NotImplementedError

    def to_frames(self, raw: np.ndarray) -> torch.Tensor:
        """A raw sequence as the model's float32 frames `[T, 1, H, W]`."""
        return torch.from_numpy(np.asarray(raw, dtype=np.float32)).unsqueeze(1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = self.to_frames(self.generate(self.rng(index)))  # [T, 1, H, W]
        return seq[: self.input_frames], seq[self.input_frames:]


class GeneratedDataModule(SequenceDataModule):
    """Train/val/test sets of a `GeneratedSequences` subclass, generated on the fly.

    Subclasses set `dataset` and implement `dataset_kwargs()` (the settings shared by the three
    sets); the hyperparameters must include `train_size`, `val_size`, `test_size`,
    `input_frames`, `output_frames` and `seed`.
    """

    dataset: ClassVar[type[GeneratedSequences]]
    source_name: ClassVar[str] = ""
    step_minutes: float | None = None

    def dataset_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def make_set(self, split: str) -> Dataset:
        hp = self.hparams
        return self.dataset(split, hp[f"{split}_size"], input_frames=hp.input_frames,
                            output_frames=hp.output_frames, seed=hp.seed,
                            **self.dataset_kwargs())

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (self.make_set(s) for s in SPLITS)

    def frame_size(self) -> tuple[int, int]:
        raise NotImplementedError

    def describe(self) -> DataDescription:
        hp = self.hparams
        return DataDescription(hp.input_frames, hp.output_frames, 1, self.frame_size(),
                               step_minutes=self.step_minutes, source=self.source_name,
                               datamodule=f"{type(self).__module__}.{type(self).__name__}")
