"""Datasets and LightningDataModules. Batches are `(x [B,T_in,C,H,W], y [B,T_out,C,H,W])`
(radar: `(x, y, mask)`).

    sources/     one frame-source interface and a registry of readers by kind
    windows      one windowing dataset over frame sequences (own data, KTH, radar share it)
    own/         your own videos, frame folders and arrays: FramesDataModule
    radar/       radar archives: RadarDataModule (Shi et al.'s experiment)
    synthetic/   generated data: Moving MNIST, moving shapes, synthetic radar
    description  DataDescription, the typed description saved in checkpoints
    cache        the decoded-frame cache; transform, normalize, units: value conversions
"""

from convcast.data.datamodule import SequenceDataModule
from convcast.data.description import DataDescription, RadarValues
from convcast.data.normalize import Normalization
from convcast.data.own import FramesDataModule, WindowDataset
from convcast.data.radar import RadarDataModule, RadarWindows, open_radar
from convcast.data.sources import (
    FrameSource,
    get_method,
    list_sources,
    open_source,
    open_sources,
    register_source,
)
from convcast.data.synthetic import (
    MovingMNIST,
    MovingMNISTDataModule,
    MovingMNISTTestFile,
    MovingShapes,
    MovingShapesDataModule,
    StepsRadar,
    StepsRadarDataModule,
    SyntheticRadar,
    SyntheticRadarDataModule,
    load_digits,
)
from convcast.data.windows import ArrayFrames, Windows

__all__ = ["ArrayFrames", "DataDescription", "FrameSource", "FramesDataModule", "MovingMNIST",
           "MovingMNISTDataModule", "MovingMNISTTestFile", "MovingShapes",
           "MovingShapesDataModule", "Normalization", "RadarDataModule", "RadarValues",
           "RadarWindows", "SequenceDataModule", "StepsRadar", "StepsRadarDataModule",
           "SyntheticRadar", "SyntheticRadarDataModule", "WindowDataset", "Windows", "get_method",
           "list_sources", "load_digits", "open_radar", "open_source", "open_sources",
           "register_source"]
