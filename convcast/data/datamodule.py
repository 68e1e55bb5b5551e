"""LightningDataModules serving `(x [B,T_in,C,H,W], y [B,T_out,C,H,W])` batches."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from convcast.data.description import DataDescription
from convcast.data.loader import resumable_loader


class SequenceDataModule(L.LightningDataModule):
    """Shared loader logic: subclasses set `self.train_set`, `self.val_set`, `self.test_set`
    in `setup` and say what their data is in `describe()` (saved in checkpoints).

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

    def describe(self) -> DataDescription | None:
        """The typed description of this data (None: the system reads it off the batches)."""
        return None

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
