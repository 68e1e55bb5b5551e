"""LightningDataModules serving `(x [B,T_in,C,H,W], y [B,T_out,C,H,W])` batches."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from convcast.data.loader import resumable_loader
from convcast.data.moving_mnist import MovingMNIST, MovingMNISTTestFile


class SequenceDataModule(L.LightningDataModule):
    """Shared loader logic: subclasses set `self.train_set`, `self.val_set`, `self.test_set`.

    The training loader is resumable (`convcast.data.loader`): its order is seeded by the `seed`
    hyperparameter and epoch, and a fit resumed from a mid-epoch checkpoint sees the same batches
    as an uninterrupted one.
    """

    train_set: Dataset | None = None
    val_set: Dataset | None = None
    test_set: Dataset | None = None

    def __init__(self, batch_size: int = 16, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers = batch_size, num_workers

    def _loader(self, ds: Dataset | None, stage: str) -> DataLoader:
        """An evaluation loader: in order, every sequence (training uses `resumable_loader`)."""
        if ds is None:
            raise RuntimeError(f"{type(self).__name__} has no {stage} set; call setup() first")
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          # spawn, not fork: forked workers can deadlock on OpenCV/OpenMP pools
                          multiprocessing_context="spawn" if self.num_workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__} has no train set; call setup() first")
        hp = getattr(self, "hparams", {})
        return resumable_loader(self, self.train_set, self.batch_size, self.num_workers,
                                hp.get("shuffle", True), hp.get("seed", 0))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test")


class MovingMNISTDataModule(SequenceDataModule):
    """Moving MNIST generated on the fly (train/val/test digit pools are disjoint).

    `test_file` replaces the generated test set with the standard `mnist_test_seq.npy`: a path, or
    `"download"` to fetch it once (online only).
    """

    def __init__(
        self, batch_size: int = 16, num_workers: int = 0, train_size: int = 10000,
        val_size: int = 500, test_size: int = 1000, input_frames: int = 10,
        output_frames: int = 10, num_digits: int = 2, test_num_digits: int | None = None,
        image_size: int = 64, source: str = "embedded", seed: int = 0,
        test_file: str | Path | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        common = dict(input_frames=hp.input_frames, output_frames=hp.output_frames,
                      image_size=hp.image_size, seed=hp.seed, source=hp.source)
        self.train_set = MovingMNIST("train", hp.train_size, num_digits=hp.num_digits, **common)
        self.val_set = MovingMNIST("val", hp.val_size, num_digits=hp.num_digits, **common)
        if hp.test_file is not None:
            path = None if str(hp.test_file) == "download" else hp.test_file
            self.test_set = MovingMNISTTestFile(path, hp.input_frames, hp.output_frames)
        else:  # `test_num_digits=3` gives the paper's out-of-domain test
            self.test_set = MovingMNIST("test", hp.test_size,
                                        num_digits=hp.test_num_digits or hp.num_digits, **common)
