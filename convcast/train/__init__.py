"""Lightning systems that train and evaluate forecasters, and their sampling schedules."""

from convcast.train.checkpoint import load_forecaster, load_weights
from convcast.train.evaluate import evaluate
from convcast.train.losses import get_loss
from convcast.train.sampling import ReverseScheduledSampling, Sampling, ScheduledSampling
from convcast.train.system import ForecastSystem

__all__ = ["ForecastSystem", "ReverseScheduledSampling", "Sampling", "ScheduledSampling",
           "evaluate", "get_loss", "load_forecaster", "load_weights"]
