"""Radar archives: readers with units and time stamps, the paper's preprocessing, windows split
by day blocks, and the `RadarDataModule` of Shi et al.'s experiment."""

from convcast.data.radar.archive import UNITS, RadarSource, open_radar, write_image_folder
from convcast.data.radar.datamodule import RadarDataModule, RadarWindows
from convcast.data.radar.parts import RadarArchive, RadarClutter, RadarPreparation, RadarSplit
from convcast.data.radar.preprocess import RadarPreprocess

__all__ = ["UNITS", "RadarArchive", "RadarClutter", "RadarDataModule", "RadarPreparation",
           "RadarPreprocess", "RadarSource", "RadarSplit", "RadarWindows", "open_radar",
           "write_image_folder"]
