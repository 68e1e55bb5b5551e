"""Checkpoints that carry everything `convcast predict` needs: model, data description, config.

A checkpoint written by `ForecastSystem` holds, beside Lightning's own keys:
- `hyper_parameters`: `model_name`, `model_kwargs` (the registry rebuilds the forecaster);
- `convcast_data`: the training data's `DataDescription` (`convcast.data.description`) as plain
  types: frames, channels, frame size, value transform (normalisation; radar units, dBZ range,
  Z-R), time step. Checkpoints written before the typed description hold an untyped dictionary
  of the same facts; `DataDescription.from_dict` reads both;
- `convcast_config`: the resolved LightningCLI config as YAML text (runs started by `convcast fit`).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PosixPath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any

import torch
import torch.nn as nn

from convcast.data.description import DataDescription
from convcast.models import create_model, model_kind

CONFIG_KEY = "convcast_config"
DATA_KEY = "convcast_data"


def describe_data(datamodule: Any, x: torch.Tensor, y: torch.Tensor) -> DataDescription:
    """The description of the training data: the datamodule's own (`describe()`), else what the
    batches show (any LightningDataModule)."""
    describe = getattr(datamodule, "describe", None)
    found = describe() if callable(describe) else None
    if found is None:
        return DataDescription.from_batch(x, y, datamodule)
    if (found.input_frames, found.channels, *found.frame_size) != (x.shape[1], *x.shape[2:]):
        raise ValueError(f"{type(datamodule).__name__}.describe() says {found.describe()}, but "
                         f"its batches are x {tuple(x.shape)}; fix describe()")
    return found


def read_description(ckpt: dict, path: str | Path = "checkpoint") -> DataDescription | None:
    """The data description a checkpoint holds (None: it records none, or too little of one:
    `load_forecaster` then passes on what there is)."""
    stored = ckpt.get(DATA_KEY)
    if not stored or not {"input_frames", "output_frames", "channels", "frame_size"} <= set(stored):
        return None
    try:
        return DataDescription.from_dict(stored)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: its data description cannot be read ({err}); the checkpoint "
                         "may come from a newer convcast") from err


# plain data that Lightning checkpoints may hold (a datamodule's path hyperparameter); never code
torch.serialization.add_safe_globals([PosixPath, PurePosixPath, WindowsPath, PureWindowsPath])


def refuse_unsafe_load(weights_only: bool | None, owner: str) -> None:
    """The one rule of every `load_from_checkpoint`: weights only, whatever torch's default."""
    if weights_only is False:
        raise ValueError(f"{owner}.load_from_checkpoint loads weights only (weights_only=False "
                         "would let the file run code); drop the weights_only argument")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """`torch.load` a checkpoint weights-only (its pickle may rebuild tensors and plain data, never
    run code), with a clear error when it is missing, truncated or not a checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a folder; give the .ckpt file in it "
                                "(e.g. checkpoints/last.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any unpickling failure means "not a checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {unreadable_reason(path, err)}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def unreadable_reason(path: Path, err: BaseException) -> str:
    """Why `torch.load(path, weights_only=True)` failed, in words (torch's own message advises
    `weights_only=False`, which would let the file run code)."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes); it was not written completely"
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        return (f"the file is truncated or damaged ({size} bytes, an incomplete archive): it was "
                "not written or copied completely; use another checkpoint of the run")
    if "cuda" in str(err).lower() and "device" in str(err).lower():
        return ("its tensors cannot be placed on a CUDA device: this machine has none; load it "
                "on the CPU (map_location='cpu', --device cpu)")
    if "Weights only load failed" in str(err) and head[:2] == b"PK":
        what = re.search(r"GLOBAL (\S+)", str(err))
        what = f" ({what.group(1)})" if what else ""
        return (f"it holds a Python object{what} that is not loaded: checkpoints are read "
                "weights-only (tensors and plain data), so no code in the file can run; it was "
                "not written by convcast fit, or it comes from an untrusted source")
    if head[:2] != b"PK":
        return "it is not a PyTorch checkpoint (a .ckpt written by convcast fit / Lightning)"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"the file is damaged ({first})"


def checkpoint_model_spec(ckpt: dict, path: str | Path = "checkpoint") -> tuple[str, dict]:
    """(model_name, model_kwargs) a checkpoint was trained with."""
    hp = ckpt.get("hyper_parameters") or {}
    name = hp.get("model_name")
    if not name:
        raise ValueError(f"{path} records no registry model name (was the system built from a "
                         "ready nn.Module?); rebuild the model yourself and load its state_dict")
    return name, dict(hp.get("model_kwargs") or {})


def check_architecture(ckpt: dict, model_name: str | None, path: str | Path = "checkpoint") -> None:
    """Raise naming both architectures when `ckpt` holds another model than `model_name`."""
    stored = (ckpt.get("hyper_parameters") or {}).get("model_name")
    if stored and model_name and stored != model_name:
        raise ValueError(
            f"{path} holds a {stored!r} model but it is being loaded into a {model_name!r} "
            f"model; build a {stored!r} model (or use convcast.train.load_forecaster(path), "
            "which builds the right one)")


def _forecaster_state(ckpt: dict) -> dict[str, torch.Tensor]:
    prefix = "model."
    return {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def load_weights(model: nn.Module, path: str | Path, map_location: Any = "cpu") -> nn.Module:
    """Load a checkpoint's forecaster weights into `model`, which must be the same architecture."""
    ckpt = read_checkpoint(path, map_location)
    check_architecture(ckpt, getattr(model, "model_name", None) or type(model).__name__, path)
    try:
        model.load_state_dict(_forecaster_state(ckpt))
    except RuntimeError as err:
        _, kwargs = checkpoint_model_spec(ckpt, path)
        mine = getattr(model, "model_spec", {}).get("kwargs")
        raise ValueError(f"{path}: the weights do not fit this model: it was trained with "
                         f"model_kwargs {kwargs}, this model has {mine}\n{err}") from err
    return model


@dataclass
class TrainedModel:
    """A checkpoint's forecaster (in eval mode) and what it knows: `load_checkpoint(path)`."""

    model: nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    description: DataDescription | None  # None: the checkpoint records no data description
    config: str | None  # the resolved training config (YAML), where `convcast fit` stored it
    global_step: int | None
    epoch: int | None
    path: str
    stored_data: dict | None = None  # the data dictionary as stored (for partial ones)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> TrainedModel:
    """Rebuild the trained forecaster of a checkpoint (weights-only load) and its description."""
    ckpt = read_checkpoint(path, map_location)
    name, kwargs = checkpoint_model_spec(ckpt, path)
    if model_kind(name) != "forecaster":  # a video classifier reads clips and gives labels
        raise ValueError(f"{path} holds the {model_kind(name)} {name!r}, not a forecaster; "
                         f"classify videos with it: convcast classify --ckpt_path {path} "
                         "--input VIDEO")
    model = create_model(name, **kwargs)
    try:
        model.load_state_dict(_forecaster_state(ckpt))
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit {name!r} with {kwargs}: {err}") from err
    return TrainedModel(model=model.eval(), model_name=name, model_kwargs=kwargs,
                        description=read_description(ckpt, path), config=ckpt.get(CONFIG_KEY),
                        global_step=ckpt.get("global_step"), epoch=ckpt.get("epoch"),
                        path=str(path), stored_data=ckpt.get(DATA_KEY))


def load_forecaster(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """`(model, info)` of a checkpoint: `load_checkpoint` with the facts as a dictionary.

    `info` has `model_name`, `model_kwargs`, `description` (the `DataDescription`, or None), the
    training data's `input_frames`, `output_frames`, `channels`, `frame_size` [H, W],
    `normalization` (dict), `value_scale`, `config`, `global_step`, `epoch` and `path`.
    """
    t = load_checkpoint(path, map_location)
    d = t.description
    info: dict[str, Any] = {"model_name": t.model_name, "model_kwargs": t.model_kwargs,
                            "description": d, "config": t.config, "global_step": t.global_step,
                            "epoch": t.epoch, "path": t.path,
                            "normalization": {"kind": "none"},
                            "channels": getattr(t.model, "in_channels", None)}
    if d is not None:
        info.update({k: v for k, v in d.to_dict().items() if k not in ("version", "radar")})
        info["frame_size"] = list(d.frame_size)
    elif t.stored_data:  # a partial description (hand-made checkpoints): what there is
        info.update(t.stored_data)
    return t.model, info


def find_checkpoint(which: str, root: str | Path) -> Path | None:
    """The newest `last*.ckpt` under `root` (which="last"), or the best checkpoint recorded in it
    by ModelCheckpoint (which="best"); None when there is none."""
    lasts = sorted(Path(root).glob("**/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        return None
    if which == "last":
        return lasts[-1]
    states = read_checkpoint(lasts[-1]).get("callbacks") or {}
    for state in states.values():  # ModelCheckpoint (and subclasses) record the best path
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if best and Path(best).is_file():
            return Path(best)
    return None
