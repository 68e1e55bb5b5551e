"""Generated datasets: Moving MNIST (embedded digits), moving shapes, synthetic radar."""

from convcast.data.synthetic.base import GeneratedDataModule, GeneratedSequences
from convcast.data.synthetic.mnist import load_digits
from convcast.data.synthetic.moving_mnist import (
    MovingMNIST,
    MovingMNISTDataModule,
    MovingMNISTTestFile,
)
from convcast.data.synthetic.moving_shapes import MovingShapes, MovingShapesDataModule
from convcast.data.synthetic.radar import SyntheticRadar, SyntheticRadarDataModule

__all__ = ["GeneratedDataModule", "GeneratedSequences", "MovingMNIST", "MovingMNISTDataModule",
           "MovingMNISTTestFile", "MovingShapes", "MovingShapesDataModule", "SyntheticRadar",
           "SyntheticRadarDataModule", "load_digits"]
