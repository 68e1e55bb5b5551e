"""Forecasters (each `forward(x [B,T_in,C,H,W], horizon) -> [B,horizon,C,H,W]`) and their registry.

Importing this package registers every built-in model.
"""

from convcast.models import (  # noqa: F401  (importing registers the models)
    baselines,
    encoder_forecaster,
    fc_lstm,
    next_frame,
    optical_flow,
    predrnn,
    seq2seq,
)
from convcast.models.base import Forecaster
from convcast.models.registry import (
    create_model,
    get_model_class,
    is_baseline,
    list_models,
    register_model,
)

__all__ = ["Forecaster", "create_model", "get_model_class", "is_baseline", "list_models",
           "register_model"]
