"""Datasets and LightningDataModules. Batches are `(x [B,T_in,C,H,W], y [B,T_out,C,H,W])`."""

from convcast.data.datamodule import MovingMNISTDataModule, SequenceDataModule
from convcast.data.mnist import load_digits
from convcast.data.moving_mnist import MovingMNIST, MovingMNISTTestFile

__all__ = ["MovingMNIST", "MovingMNISTDataModule", "MovingMNISTTestFile", "SequenceDataModule",
           "load_digits"]
