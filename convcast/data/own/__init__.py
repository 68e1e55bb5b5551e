"""Your own data: videos, frame folders and arrays cut into sliding windows."""

from convcast.data.own.datamodule import (
    FramesDataModule,
    WindowDataset,
    all_windows,
    discover_sources,
    split_windows,
)

__all__ = ["FramesDataModule", "WindowDataset", "all_windows", "discover_sources",
           "split_windows"]
