"""Pretrained weights shipped in the package: `create_model(name, pretrained=True)`.

A pretrained model is a named variant (`register_variant`) whose weights travel in
`convcast/assets/` as one file, loaded weights-only (`torch.load(weights_only=True)`: tensors,
numbers and strings, never code), with no download:

    {"format": "convcast-pretrained-v1",
     "model_spec": {"name": <architecture>, "kwargs": {...}},   # what create_model builds
     "state_dict": {...},
     "card": {...}}                                              # what it is, for people

The card says what the model was trained on, for how long, on what machine, and how it scored
(`model.card`, `convcast.models.pretrained.card(name)`, and the README). A card may also state
the data the model takes, e.g. `"pixel_km": [2, 4]` and `"step_minutes": [5, 15]` for a radar
nowcaster: `convcast nowcast` block-averages finer archives into that range and warns outside
it (`grid_factor`).

Producing one: `save_pretrained(path, model, card)` from any trained model (e.g. a checkpoint's
`system.model`); registering one: an entry in `PRETRAINED` below and the variant it names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convcast.models.registry import create_model, register_variant, register_weights

FORMAT = "convcast-pretrained-v1"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
PRETRAINED: dict[str, str] = {}  # variant name -> asset file name


def register_pretrained(name: str, architecture: str, asset: str, doc: str = "",
                        **kwargs: Any) -> None:
    """A variant `name` of `architecture` (sizes `kwargs`) whose weights are `asset`."""
    register_variant(name, architecture, doc, **kwargs)
    PRETRAINED[name] = asset
    register_weights(name, lambda **overrides: load_pretrained(name, **overrides))


register_pretrained(
    "radar_nowcaster", "anchored", "radar_nowcaster.pt",
    "a pretrained radar nowcaster: a 2x32 ConvLSTM correction on top of optical flow, trained on "
    "real composites of four providers at 2-4 km and 5-15 minutes (see its card)",
    in_channels=1, anchor="optical_flow", calibrate_leads=12, base="encoder_forecaster",
    base_kwargs={"hidden_channels": [32, 32], "kernel_size": 3, "patch_size": 2})

register_pretrained(
    "video_nowcaster", "anchored", "video_nowcaster.pt",
    "a generic pretrained video model: a 2x32 ConvLSTM correction on top of persistence, 64x64 "
    "gray, 10 -> 10, trained on real clips and moving digits (see its card); fine-tune it on "
    "your own video with --model.pretrained true",
    in_channels=1, anchor="persistence", base="encoder_forecaster",
    base_kwargs={"hidden_channels": [32, 32], "kernel_size": 3, "patch_size": 4})

register_pretrained(
    "video_flow_nowcaster", "anchored", "video_flow_nowcaster.pt",
    "a generic pretrained video model of the flow recipe: a 2x32 ConvLSTM correction on top of "
    "optical-flow extrapolation (edges continued, an activity map, a gate towards persistence), "
    "64x64 gray, 10 -> 10, trained on real clips and moving digits (see its card); fine-tune it "
    "on your own video with --model.pretrained true",
    in_channels=1, anchor="optical_flow", outval="edge", activity=0.02, activity_radius=4,
    gate_reference="persistence", base="encoder_forecaster",
    base_kwargs={"hidden_channels": [32, 32], "kernel_size": 3, "patch_size": 4})


def list_pretrained() -> list[str]:
    """Names of the models with shipped weights."""
    return sorted(PRETRAINED)


def _asset(name: str) -> dict[str, Any]:
    if name not in PRETRAINED:
        have = ", ".join(list_pretrained()) or "none"
        raise ValueError(f"no pretrained weights for {name!r}; models with shipped weights: "
                         f"{have} (others start from random weights: pretrained=False)")
    path = ASSETS / PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"the weights of {name!r} are missing at {path}; reinstall "
                                "convcast (they ship with the package)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or not a weights-only file
        raise ValueError(f"the weights of {name!r} at {path} are unreadable "
                         f"({type(err).__name__}); reinstall convcast") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a convcast pretrained file ({FORMAT}); reinstall "
                         "convcast")
    return blob


def card(name: str) -> dict[str, Any]:
    """The card of pretrained model `name`: its training data, time, machine and scores."""
    return dict(_asset(name)["card"])


def load_pretrained(name: str, **overrides: Any) -> nn.Module:
    """Pretrained model `name` in eval mode, `model.card` set. `overrides` may change
    inference-only settings (e.g. `method_kwargs`); a size change that the weights do not fit
    is an error."""
    blob = _asset(name)
    spec = blob["model_spec"]
    model = create_model(spec["name"], **{**spec["kwargs"], **overrides})
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"the pretrained weights of {name!r} do not fit the model built with "
                         f"{overrides}: {err}") from err
    model.card = dict(blob["card"])
    model.pretrained_name = name
    return model.eval()


def save_pretrained(path: str | Path, model: nn.Module, card: dict[str, Any]) -> Path:
    """Write `model` (built by `create_model`) and its `card` as a pretrained file, atomically."""
    from convcast.atomic import atomic_path

    spec = getattr(model, "model_spec", None)
    if spec is None:
        raise ValueError("save_pretrained: the model has no model_spec; build it with "
                         "convcast.create_model")
    blob = {"format": FORMAT, "model_spec": {"name": spec["name"], "kwargs": spec["kwargs"]},
            "state_dict": {k: v.detach().cpu().contiguous()
                           for k, v in model.state_dict().items()},
            "card": card}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    torch.load(path, map_location="cpu", weights_only=True)  # what users will load must load
    return path


def grid_factor(card: dict[str, Any], pixel_km: float | None) -> int:
    """The block-mean factor that brings an archive of `pixel_km` into the card's pixel range
    (1: as it is, or unknown); 5% short of the range counts as in it (grids of 0.9997 km)."""
    rng = card.get("pixel_km")
    if not rng or not pixel_km or pixel_km <= 0:
        return 1
    return max(1, math.ceil(float(rng[0]) / pixel_km / 1.05))
