"""KTH actions and any labelled video folder: classification clips and prediction windows.

`KTHDataModule` / `LabelledVideoDataModule` serve `(clip [B,T,C,H,W], label [B])` batches,
`KTHPredictionDataModule` serves forecasting batches `(x, y)`; `write_synthetic_kth` writes a
small folder in KTH's layout.
"""

from convcast.data.kth.datamodules import (
    KTHDataModule,
    KTHPredictionDataModule,
    LabelledVideoDataModule,
)
from convcast.data.kth.download import download_kth
from convcast.data.kth.folder import KTH_ACTIONS, SPLITS, Video, scan_folder, split_groups
from convcast.data.kth.frames import ClipDataset, ForecastWindows, load_video
from convcast.data.kth.synthetic import write_synthetic_kth

__all__ = ["KTH_ACTIONS", "SPLITS", "ClipDataset", "ForecastWindows", "KTHDataModule",
           "KTHPredictionDataModule", "LabelledVideoDataModule", "Video", "download_kth",
           "load_video", "scan_folder", "split_groups", "write_synthetic_kth"]
