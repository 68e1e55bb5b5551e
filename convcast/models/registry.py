"""Model registry: `create_model(name, **kwargs)` and `list_models()` name every model.

An architecture registers its class under a name (`register_model`); a *variant* names one size
of an architecture, the size a paper or the demo uses (`register_variant`), as timm does:
`create_model("encoder_forecaster_shi2015")` is `create_model("encoder_forecaster", **sizes)`,
and keyword arguments given to `create_model` override the variant's. A model built from a variant
records its architecture and the merged keyword arguments (`model_spec`), so checkpoints rebuild it
without the variant table. `list_models()` lists architectures; `list_models(variants=True)` adds
the variants.

Each architecture has a *kind*: `forecaster` (`forward(x [B,T_in,C,H,W], horizon) ->
[B,horizon,C,H,W]`, the default) or `classifier` (`forward(x [B,T,C,H,W]) -> logits
[B,num_classes]`). Listings show forecasters unless asked for another kind (`kind="classifier"`,
or `kind=None` for all), so code that forecasts with every listed model never meets a classifier;
`create_model` builds either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_BASELINES: set[str] = set()
_VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {}  # name -> (architecture, kwargs, doc)
_KINDS: dict[str, str] = {}  # architecture -> kind
KINDS = ("forecaster", "classifier")


def register_model(name: str, baseline: bool = False, kind: str = "forecaster") -> Callable:
    """Class decorator adding a model of `kind` (see `KINDS`) to the registry under `name`."""
    if kind not in KINDS:
        raise ValueError(f"model {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS or name in _VARIANTS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        _KINDS[name] = kind
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


def _of_kind(arch: str, kind: str | None) -> bool:
    return kind is None or _KINDS[arch] == kind


def list_models(baselines: bool = True, variants: bool = False,
                kind: str | None = "forecaster") -> list[str]:
    """Sorted names of the registered architectures of `kind` (None: every kind; learned ones
    only with `baselines=False`; with `variants=True` the named variants too)."""
    names = [n for n in _MODELS if (baselines or n not in _BASELINES) and _of_kind(n, kind)]
    if variants:
        names += [n for n, (arch, _, _) in _VARIANTS.items()
                  if (baselines or arch not in _BASELINES) and _of_kind(arch, kind)]
    return sorted(names)


def list_variants(kind: str | None = "forecaster") -> dict[str, tuple[str, dict[str, Any], str]]:
    """`{variant: (architecture, kwargs, description)}` of the named variants of `kind`."""
    return {n: (a, dict(k), d) for n, (a, k, d) in sorted(_VARIANTS.items()) if _of_kind(a, kind)}


def resolve(name: str) -> tuple[str, dict[str, Any]]:
    """(architecture, keyword arguments) behind a model or variant name."""
    if name in _VARIANTS:
        arch, kwargs, _ = _VARIANTS[name]
        return arch, dict(kwargs)
    if name in _MODELS:
        return name, {}
    raise ValueError(f"unknown model {name!r}; valid names: "
                     f"{', '.join(list_models(variants=True, kind=None))}")


def model_kind(name: str) -> str:
    """The kind (`forecaster` or `classifier`) of a registered model or variant."""
    return _KINDS[resolve(name)[0]]


def is_baseline(name: str) -> bool:
    """True for a registered forecaster with nothing to train (persistence, optical flow, ...)."""
    return name in _BASELINES or (name in _VARIANTS and _VARIANTS[name][0] in _BASELINES)


def get_model_class(name: str) -> Callable[..., nn.Module]:
    return _MODELS[resolve(name)[0]]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model (or variant) `name`, of any kind; `kwargs` override a
    variant's."""
    arch, base = resolve(name)
    kwargs = {**base, **kwargs}
    try:
        model = _MODELS[arch](**kwargs)
    except TypeError as err:
        raise TypeError(f"create_model({name!r}): {err}") from err
    model.model_spec = {"name": arch, "kwargs": dict(kwargs)}  # what a checkpoint needs to rebuild
    return model
