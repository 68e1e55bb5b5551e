"""Forecasters (each `forward(x [B,T_in,C,H,W], horizon) -> [B,horizon,C,H,W]`), video
classifiers (`forward(x [B,T,C,H,W]) -> logits`) and their registry.

Importing this package registers every built-in model: each module of this folder is imported,
so a new model is one new file here whose class carries `@register_model(...)` (see
`convcast/models/registry.py` for a worked example).
"""

import importlib
import pkgutil

from convcast.models.base import Forecaster
from convcast.models.registry import (
    create_model,
    get_model_class,
    is_baseline,
    list_models,
    list_variants,
    model_info,
    model_kind,
    register_model,
    register_variant,
    resolve,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # importing registers the models

__all__ = ["Forecaster", "create_model", "get_model_class", "is_baseline", "list_models",
           "list_variants", "model_info", "model_kind", "register_model", "register_variant",
           "resolve"]
