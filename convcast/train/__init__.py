"""Lightning systems that train and evaluate forecasters."""

from convcast.train.losses import get_loss
from convcast.train.system import ForecastSystem

__all__ = ["ForecastSystem", "get_loss"]
