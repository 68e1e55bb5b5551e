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

What a model *is* lives in its registry entry (`model_info(name) -> ModelInfo`): its kind, whether
it is a baseline, which optional inputs of the one forecaster call it reads (`INPUTS`), whether it
is recurrent (streams by state), which export formats it supports, and a tiny configuration that
the generic tests build it with. Adding a model is one new file in `convcast/models/`:

    @register_model("my_gru", inputs=("condition", "teacher", "teacher_mask"),
                    tiny={"hidden_channels": 4})
    class MyGRU(RecurrentForecaster):
        ...  # encode(x, state) -> state, decode(state, horizon, ...) -> [B, horizon, C, H, W]

and every generic test (shapes, gradients, streaming, export, condition frames, checkpoints)
takes it from the registry.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_BASELINES: set[str] = set()
_VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {}  # name -> (architecture, kwargs, doc)
_KINDS: dict[str, str] = {}  # architecture -> kind
_INFO: dict[str, ModelInfo] = {}
_WEIGHTS: dict[str, Callable[..., nn.Module]] = {}  # name -> loader of its shipped weights
KINDS = ("forecaster", "classifier")
# the optional keyword inputs of the one forecaster call, `model(x, horizon, **inputs)`:
#   condition    [B, horizon, Cc, H, W]  frames known per lead time (a baseline's forecast, ...)
#   teacher      [B, horizon, C, H, W]   true future frames, for teacher forcing while training
#   teacher_mask [B, horizon - 1]        where teacher frame k replaces predicted frame k
#   input_mask   [B, T_in - 1]           reverse scheduled sampling over the input frames
#   motion       [B, 2, H, W]            a motion field (pixels per step) computed outside
#   grid         [B, 2]                  each window's pixel size (km) and step (minutes)
#   anchor       [B, horizon, C, H, W]   an anchored model's anchor forecast computed outside
INPUTS = ("condition", "teacher", "teacher_mask", "input_mask", "motion", "grid", "anchor")
EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")


@dataclass(frozen=True)
class ModelInfo:
    """What a registered architecture is and can do (see the module docstring).

    `inputs`: the optional inputs of `INPUTS` it reads (giving it another one is an error);
    `arguments`: its constructor's keyword arguments; `recurrent`: it has `encode`/`decode` (a
    stream keeps its state, not a window of frames);
    `export`: the formats of `convcast export` it supports (empty: none, with `export_note` saying
    why); `tiny`: keyword arguments of a small configuration for tests; `ensemble`: it draws
    `members` itself (others are an ensemble of one).
    """

    name: str
    kind: str
    baseline: bool
    inputs: frozenset[str]
    arguments: tuple[str, ...]
    recurrent: bool
    export: tuple[str, ...]
    export_note: str
    tiny: dict[str, Any] = field(default_factory=dict)
    ensemble: bool = False

    @property
    def conditionable(self) -> bool:
        """It can be built with `condition_channels > 0` and then reads condition frames."""
        return "condition" in self.inputs


def register_model(
    name: str, baseline: bool = False, kind: str = "forecaster", *,
    inputs: Iterable[str] = (), tiny: dict[str, Any] | None = None,
    export: Iterable[str] | None = None, export_note: str = "", ensemble: bool = False,
) -> Callable:
    """Class decorator adding a model of `kind` (see `KINDS`) to the registry under `name`.

    `inputs` names the optional inputs (of `INPUTS`) its forward reads, `tiny` a small
    configuration for tests, `export` the formats it exports to (default: every format for a
    learned forecaster, none for a baseline or classifier; say why in `export_note`).
    """
    if kind not in KINDS:
        raise ValueError(f"model {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    inputs = frozenset(inputs)
    if inputs - set(INPUTS):
        raise ValueError(f"model {name!r}: unknown inputs {sorted(inputs - set(INPUTS))}; "
                         f"valid: {', '.join(INPUTS)}")
    if export is None:
        export = EXPORT_FORMATS if kind == "forecaster" and not baseline else ()
    export = tuple(export)
    if set(export) - set(EXPORT_FORMATS):
        raise ValueError(f"model {name!r}: unknown export formats {export}; valid: "
                         f"{', '.join(EXPORT_FORMATS)}")

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS or name in _VARIANTS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = cls
        _KINDS[name] = kind
        if baseline:
            _BASELINES.add(name)
        cls.model_name = name
        cls.inputs = inputs
        _INFO[name] = ModelInfo(
            name=name, kind=kind, baseline=baseline, inputs=inputs,
            arguments=tuple(p.name for p in inspect.signature(cls).parameters.values()
                            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)),
            recurrent=callable(getattr(cls, "encode", None)) and callable(
                getattr(cls, "decode", None)) and not getattr(cls, "stateless", False),
            export=export, export_note=export_note, tiny=dict(tiny or {}), ensemble=ensemble)
        return cls

    return wrap


def model_info(name: str) -> ModelInfo:
    """The registry entry of the architecture behind a model or variant name."""
    return _INFO[resolve(name)[0]]


def register_variant(name: str, architecture: str, doc: str = "", **kwargs: Any) -> None:
    """Name one configuration of a registered architecture (e.g. a paper's size)."""
    if name in _MODELS or name in _VARIANTS:
        raise ValueError(f"model {name!r} is registered twice")
    if architecture not in _MODELS:
        raise ValueError(f"variant {name!r}: unknown architecture {architecture!r}")
    _VARIANTS[name] = (architecture, dict(kwargs), doc)


def register_weights(name: str, load: Callable[..., nn.Module]) -> None:
    """`create_model(name, pretrained=True)` returns `load(**kwargs)` (shipped weights)."""
    _WEIGHTS[name] = load


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
    names = list_models(variants=True, kind=None)
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown model {name!r}; {hint}valid names: {', '.join(names)}")


def model_kind(name: str) -> str:
    """The kind (`forecaster` or `classifier`) of a registered model or variant."""
    return _KINDS[resolve(name)[0]]


def is_baseline(name: str) -> bool:
    """True for a registered forecaster with nothing to train (persistence, optical flow, ...)."""
    return name in _BASELINES or (name in _VARIANTS and _VARIANTS[name][0] in _BASELINES)


def get_model_class(name: str) -> Callable[..., nn.Module]:
    return _MODELS[resolve(name)[0]]


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build the registered model (or variant) `name`, of any kind; `kwargs` override a
    variant's. `pretrained=True` loads the weights shipped with the package (offline; see
    `convcast.models.pretrained`), in eval mode."""
    if pretrained:
        if name not in _WEIGHTS:
            have = ", ".join(sorted(_WEIGHTS)) or "none"
            raise ValueError(f"no pretrained weights for {name!r}; models with shipped weights: "
                             f"{have} (others start from random weights: pretrained=False)")
        return _WEIGHTS[name](**kwargs)
    arch, base = resolve(name)
    kwargs = {**base, **kwargs}
    try:
        model = _MODELS[arch](**kwargs)
    except TypeError as err:
        raise TypeError(f"create_model({name!r}): {err}") from err
    model.model_spec = {"name": arch, "kwargs": dict(kwargs)}  # what a checkpoint needs to rebuild
    return model
