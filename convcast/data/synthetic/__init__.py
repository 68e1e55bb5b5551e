"""Generated datasets: Moving MNIST (embedded digits), moving shapes, synthetic radar (hand-made,
and STEPS-like with real rain's statistics: `radar_steps`, measured by `stats`)."""

from convcast.data.synthetic.base import GeneratedDataModule, GeneratedSequences
from convcast.data.synthetic.mnist import load_digits
from convcast.data.synthetic.moving_mnist import (
    MovingMNIST,
    MovingMNISTDataModule,
    MovingMNISTTestFile,
)
from convcast.data.synthetic.moving_shapes import MovingShapes, MovingShapesDataModule
from convcast.data.synthetic.radar import SyntheticRadar, SyntheticRadarDataModule
from convcast.data.synthetic.radar_steps import StepsRadar, StepsRadarDataModule

__all__ = ["GeneratedDataModule", "GeneratedSequences", "MovingMNIST", "MovingMNISTDataModule",
           "MovingMNISTTestFile", "MovingShapes", "MovingShapesDataModule", "StepsRadar",
           "StepsRadarDataModule", "SyntheticRadar", "SyntheticRadarDataModule", "load_digits"]
