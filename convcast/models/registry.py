"""Model registry: `create_model(name, **kwargs)` and `list_models()` name every forecaster.

An architecture registers its class under a name (`register_model`); a *variant* names one size
of an architecture, the size a paper or the demo uses (`register_variant`), as timm does:
`create_model("encoder_forecaster_shi2015")` is `create_model("encoder_forecaster", **sizes)`,
and keyword arguments given to `create_model` override the variant's. A model built from a variant
records its architecture and the merged keyword arguments (`model_spec`), so checkpoints rebuild it
without the variant table. `list_models()` lists architectures; `list_models(variants=True)` adds
the variants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_BASELINES: set[str] = set()
_VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {}  # name -> (architecture, kwargs, doc)


def register_model(name: str, baseline: bool = False) -> Callable:
    """Class decorator adding a forecaster to the registry under `name`."""

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS or name in _VARIANTS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        if baseline:
            _BASELINES.add(name)
        cls.model_name = name
        return cls

    return wrap


def register_variant(name: str, architecture: str, doc: str = "", **kwargs: Any) -> None:
    """Name one configuration of a registered architecture (e.g. a paper's size)."""
    if name in _MODELS or name in _VARIANTS:
        raise ValueError(f"model {name!r} is registered twice")
    if architecture not in _MODELS:
        raise ValueError(f"variant {name!r}: unknown architecture {architecture!r}")
    _VARIANTS[name] = (architecture, dict(kwargs), doc)


def list_models(baselines: bool = True, variants: bool = False) -> list[str]:
    """Sorted names of the registered architectures (learned ones only with `baselines=False`;
    with `variants=True` the named variants too)."""
    names = [n for n in _MODELS if baselines or n not in _BASELINES]
    if variants:
        names += [n for n, (arch, _, _) in _VARIANTS.items() if baselines or arch not in _BASELINES]
    return sorted(names)


def list_variants() -> dict[str, tuple[str, dict[str, Any], str]]:
    """`{variant: (architecture, kwargs, description)}` of every named variant."""
    return {n: (a, dict(k), d) for n, (a, k, d) in sorted(_VARIANTS.items())}


def resolve(name: str) -> tuple[str, dict[str, Any]]:
    """(architecture, keyword arguments) behind a model or variant name."""
    if name in _VARIANTS:
        arch, kwargs, _ = _VARIANTS[name]
        return arch, dict(kwargs)
    if name in _MODELS:
        return name, {}
    raise ValueError(f"unknown model {name!r}; valid names: "
                     f"{', '.join(list_models(variants=True))}")


def is_baseline(name: str) -> bool:
    """True for a registered forecaster with nothing to train (persistence, optical flow, ...)."""
    return name in _BASELINES or (name in _VARIANTS and _VARIANTS[name][0] in _BASELINES)


def get_model_class(name: str) -> Callable[..., nn.Module]:
    return _MODELS[resolve(name)[0]]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered forecaster (or variant) `name`; `kwargs` override a variant's."""
    arch, base = resolve(name)
    kwargs = {**base, **kwargs}
    try:
        model = _MODELS[arch](**kwargs)
    except TypeError as err:
        raise TypeError(f"create_model({name!r}): {err}") from err
    model.model_spec = {"name": arch, "kwargs": dict(kwargs)}  # what a checkpoint needs to rebuild
    return model
