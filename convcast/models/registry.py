"""Model registry: `create_model(name, **kwargs)` and `list_models()` name every forecaster."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_BASELINES: set[str] = set()


def register_model(name: str, baseline: bool = False) -> Callable:
    """Class decorator adding a forecaster to the registry under `name`."""

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        if baseline:
            _BASELINES.add(name)
        cls.model_name = name
        return cls

    return wrap


def list_models(baselines: bool = True) -> list[str]:
    """Sorted names of the registered forecasters (learned ones only with `baselines=False`)."""
    return sorted(n for n in _MODELS if baselines or n not in _BASELINES)


def is_baseline(name: str) -> bool:
    """True for a registered forecaster with nothing to train (persistence, optical flow, ...)."""
    return name in _BASELINES


def get_model_class(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered forecaster `name` with its keyword arguments."""
    cls = get_model_class(name)
    try:
        model = cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"create_model({name!r}): {err}") from err
    model.model_spec = {"name": name, "kwargs": dict(kwargs)}  # what a checkpoint needs to rebuild
    return model
