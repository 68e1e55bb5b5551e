"""A training DataLoader whose batches are a function of how many batches were trained on.

Epoch e's order is a permutation seeded by `seed + e`, split over the DDP ranks like
`DistributedSampler` (it is one, so Lightning keeps it). When it runs under a Trainer, every new
iteration asks the trainer how many training batches it has processed in all (Lightning saves that
count in checkpoints) and starts at that point of the stream: epoch = done // batches_per_epoch,
skipping the batches of that epoch already trained on. So a fit resumed from any checkpoint, even
one taken mid-epoch or when `max_steps` stopped a run, sees exactly the batches an uninterrupted
fit sees, and its weights come out the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import lightning as L
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` whose position comes from `position()` (batches trained so far) when
    given, so that a new iteration starts where the training stream stands."""

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, batch_size: int = 1,
                 batches_per_epoch: int | None = None,
                 position: Callable[[], int] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.batch_size, self.position = batch_size, position
        self.batches_per_epoch = batches_per_epoch or -(-self.num_samples // batch_size)

    def __iter__(self) -> Iterator[int]:
        start = 0
        if self.position is not None:  # the epoch and offset follow from the batches trained
            self.epoch, start = divmod(self.position(), self.batches_per_epoch)
        indices = list(super().__iter__())  # [num_samples], the order of epoch self.epoch
        if getattr(self.dataset, "epoch_indices", False):  # e.g. augmentation drawn per epoch
            n = len(self.dataset)
            indices = [self.epoch * n + i for i in indices]  # the dataset takes i % n
        return iter(indices[start * self.batch_size:])


def _limit(trainer: L.Trainer, batches: int) -> int:
    """Batches per epoch under `limit_train_batches`, as Lightning counts them."""
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return max(1, min(batches, limit))
    if isinstance(limit, float):
        return max(1, int(batches * limit))
    return batches


def resumable_loader(datamodule: L.LightningDataModule, dataset: Dataset, batch_size: int,
                     num_workers: int = 0, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """The training loader of `datamodule` over `dataset` (see the module docstring)."""
    trainer = datamodule.trainer
    world = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    per_rank = -(-len(dataset) // world)
    drop_last = per_rank >= batch_size
    batches = per_rank // batch_size if drop_last else 1
    position = per_epoch = None
    if trainer is not None:
        per_epoch = _limit(trainer, batches)
        loop = trainer.fit_loop.epoch_loop  # its progress is restored from checkpoints

        def position() -> int:
            return loop.batch_progress.total.processed
    sampler = ResumableSampler(dataset, world, rank, shuffle, seed, batch_size=batch_size,
                               batches_per_epoch=per_epoch, position=position)
    # spawn, not fork: a forked worker deadlocks on OpenCV's (and OpenMP's) thread pools
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, drop_last=drop_last,
                      multiprocessing_context="spawn" if num_workers > 0 else None)
