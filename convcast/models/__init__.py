"""Forecasters (each `forward(x [B,T_in,C,H,W], horizon) -> [B,horizon,C,H,W]`), video
classifiers (`forward(x [B,T,C,H,W]) -> logits`) and their registry.

Importing this package registers every built-in model.
"""

from convcast.models import (  # noqa: F401  (importing registers the models)
    anchored,
    baselines,
    classifier,
    encoder_forecaster,
    fc_lstm,
    next_frame,
    optical_flow,
    predrnn,
    seq2seq,
    variants,
)
from convcast.models.base import Forecaster
from convcast.models.registry import (
    create_model,
    get_model_class,
    is_baseline,
    list_models,
    list_variants,
    model_kind,
    register_model,
    register_variant,
    resolve,
)

__all__ = ["Forecaster", "create_model", "get_model_class", "is_baseline", "list_models",
           "list_variants", "model_kind", "register_model", "register_variant", "resolve"]
