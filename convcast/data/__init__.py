"""Datasets and LightningDataModules. Batches are `(x [B,T_in,C,H,W], y [B,T_out,C,H,W])`."""

from convcast.data.datamodule import MovingMNISTDataModule, SequenceDataModule
from convcast.data.frames_io import read_frames
from convcast.data.mnist import load_digits
from convcast.data.moving_mnist import MovingMNIST, MovingMNISTTestFile
from convcast.data.moving_shapes import MovingShapes, MovingShapesDataModule
from convcast.data.normalize import Normalization
from convcast.data.own_data import FramesDataModule, WindowDataset
from convcast.data.radar import RadarDataModule, RadarWindows
from convcast.data.radar_io import open_radar
from convcast.data.synthetic_radar import SyntheticRadar, SyntheticRadarDataModule

__all__ = ["FramesDataModule", "MovingMNIST", "MovingMNISTDataModule", "MovingMNISTTestFile",
           "MovingShapes", "MovingShapesDataModule", "Normalization", "RadarDataModule",
           "RadarWindows", "SequenceDataModule", "SyntheticRadar", "SyntheticRadarDataModule",
           "WindowDataset", "load_digits", "open_radar", "read_frames"]
