"""Checkpoints that carry everything `convcast predict` needs: model, data description, config.

A checkpoint written by `ForecastSystem` holds, beside Lightning's own keys:
- `hyper_parameters`: `model_name`, `model_kwargs` (the registry rebuilds the forecaster);
- `convcast_data`: what the training data looked like (input/output frames, channels, frame size,
  normalisation, value scale), recorded from the first training batch and the datamodule's
  `data_info()`;
- `convcast_config`: the resolved LightningCLI config as YAML text (runs started by `convcast fit`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PosixPath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any

import torch
import torch.nn as nn

from convcast.models import create_model, model_kind

CONFIG_KEY = "convcast_config"
DATA_KEY = "convcast_data"


def data_info(datamodule: Any, x_shape: torch.Size | None, y_shape: torch.Size | None) -> dict:
    """The data description stored in checkpoints: batch shapes, then the datamodule's own."""
    info: dict[str, Any] = {}
    if x_shape is not None and y_shape is not None:
        info.update(input_frames=int(x_shape[1]), output_frames=int(y_shape[1]),
                    channels=int(x_shape[2]), frame_size=[int(x_shape[3]), int(x_shape[4])])
    describe = getattr(datamodule, "data_info", None)
    if callable(describe):
        info.update(describe())
    if datamodule is not None:
        info.setdefault("datamodule", f"{type(datamodule).__module__}.{type(datamodule).__name__}")
    return info


# plain data that Lightning checkpoints may hold (a datamodule's path hyperparameter); never code
torch.serialization.add_safe_globals([PosixPath, PurePosixPath, WindowsPath, PureWindowsPath])


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
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
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


def load_forecaster(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the trained forecaster of a checkpoint, in eval mode, and describe it.

    Returns `(model, info)`; `info` has `model_name`, `model_kwargs`, the training data's
    `input_frames`, `output_frames`, `channels`, `frame_size` [H, W], `normalization` (dict),
    `value_scale` (where known), `config` (YAML text or None), `global_step`, `epoch` and `path`.
    """
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
    model.eval()
    info = {"model_name": name, "model_kwargs": kwargs, **(ckpt.get(DATA_KEY) or {}),
            "config": ckpt.get(CONFIG_KEY), "global_step": ckpt.get("global_step"),
            "epoch": ckpt.get("epoch"), "path": str(path)}
    info.setdefault("normalization", {"kind": "none"})
    info.setdefault("channels", getattr(model, "in_channels", None))
    return model, info


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
