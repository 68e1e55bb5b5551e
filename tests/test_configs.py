"""Every `configs/*.yaml` parses and trains for one step (fast_dev_run) through `convcast fit`.

The configs are picked up by glob, so new ones are tested as they appear. To keep this fast, the
model's widths are narrowed (`hidden_channels` 8 and `hidden_sizes` 16 per layer, the number of
layers and everything else as written: the paper sizes themselves are built by the registry's
tests), and the data is shrunk through whichever of these arguments the config's DataModule
(and the one it wraps, as MotionDataModule wraps its `data`) accepts: batch 1, 2 -> 2 frames,
32-pixel frames (unless the model pins a frame size), tiny split sizes; caches go to the test's
folder. A config whose data `path` does not exist here (a placeholder for the user's archive)
runs on a tiny generated array through `FramesDataModule` instead (through the wrapped module
where one wraps it), with the config's model and training setup; a missing KTH `root` is
replaced by a tiny synthetic folder in KTH's layout.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FIT_QUIET, cli

from convcast.data.kth import write_synthetic_kth
from convcast.models.registry import model_info, resolve

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
SMALL = {"batch_size": 1, "num_workers": 0, "train_size": 4, "val_size": 2, "test_size": 2,
         "input_frames": 2, "output_frames": 2}
SIZE_KEYS = ("image_size", "frame_size")
NARROW = {"hidden_channels": 8, "hidden_sizes": 16}  # width per layer in the one-step run
SAMPLES = Path(os.environ.get("CONVCAST_RADAR_SAMPLES",
                              Path(__file__).resolve().parents[2] / "shared" / "radar-samples"))


def test_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    for model in ("encoder_forecaster", "seq2seq", "next_frame"):
        assert f"{model}-cpu-small.yaml" in names
    assert {"encoder_forecaster-mnist.yaml", "seq2seq-mnist.yaml",
            "next_frame-squares.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_config_writes_its_runs_to_its_own_folder(path: Path) -> None:
    """Runs of different configs never share (and overwrite) a log/checkpoint folder."""
    config = yaml.safe_load(path.read_text())
    assert config["trainer"]["default_root_dir"] == f"runs/{path.stem}"


def _data_parameters(class_path: str) -> set[str]:
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return set(inspect.signature(cls.__init__).parameters)


def _overrides(config: dict, tmp_path: Path) -> list:
    data = config.get("data") or {}
    args = data.get("init_args") or {}
    path = args.get("path")
    if path is not None and not Path(path).exists():  # placeholder for the user's own archive
        frames = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
        np.save(tmp_path / "frames.npy", frames)
        return ["--data", "convcast.data.FramesDataModule", "--data.path",
                tmp_path / "frames.npy", "--data.input_frames", 2, "--data.output_frames", 2,
                "--data.split_fractions", "[0.5, 0.25, 0.25]", "--data.batch_size", 1,
                "--data.num_workers", 0]
    if data["class_path"].endswith("RadarPoolDataModule"):  # real archives: one small event
        if not SAMPLES.is_dir():
            pytest.skip(f"no radar samples at {SAMPLES} (set CONVCAST_RADAR_SAMPLES)")
        return ["--data.init_args.root", SAMPLES, "--data.init_args.include",
                "[fmi-20170509]", "--data.init_args.crop", 32, "--data.init_args.batch_size",
                1, "--data.init_args.train_size", 4, "--data.init_args.val_size", 2,
                "--data.init_args.motion_cache", "null", "--data.init_args.anchor_cache", "null"]
    inner = args.get("data") if isinstance(args.get("data"), dict) else {}
    inner_path = (inner.get("init_args") or {}).get("path")
    tree = []
    if inner_path is not None and not Path(inner_path).exists():  # wrapped (motion) placeholder
        frames = np.random.default_rng(0).random((24, 32, 32)).astype(np.float32)
        np.save(tmp_path / "frames.npy", frames)
        tree = ["--data.init_args.data.init_args.path", tmp_path / "frames.npy",
                "--data.init_args.data.init_args.split_fractions", "[0.5, 0.25, 0.25]"]
    root = args.get("root")
    if root is not None and not Path(root).exists():  # a KTH-layout folder: a tiny synthetic one
        persons = (1, 2, 3, 4, 5, 13, 15, 17)  # every stage of the tutorial and prediction splits
        tree += ["--data.init_args.root", write_synthetic_kth(tmp_path / "kth", persons=persons)]
    out = list(tree)
    model_kwargs = (config.get("model") or {}).get("model_kwargs") or {}
    prefix = "--data.init_args"
    while data:  # the data module, and the one it wraps (MotionDataModule's `data`)
        accepted = _data_parameters(data["class_path"])
        out += [a for k, v in SMALL.items() if k in accepted for a in (f"{prefix}.{k}", v)]
        if "cache_dir" in accepted:  # caches go to the test's folder, not the working directory
            out += [f"{prefix}.cache_dir", tmp_path / "cache"]
        if not any(k in model_kwargs for k in SIZE_KEYS):  # the model takes any frame size
            out += [a for k in SIZE_KEYS if k in accepted for a in (f"{prefix}.{k}", 32)]
        inner = (data.get("init_args") or {}).get("data")
        data = inner if isinstance(inner, dict) and "class_path" in inner else None
        prefix += ".data.init_args"
    return out


def _narrowed(model: dict) -> list:
    """`--model.model_kwargs` with the widths of `NARROW` (a variant's too), if it has any."""
    name = model.get("model_name")
    if name is None:
        return []
    kwargs = dict(model.get("model_kwargs") or {})
    given = {**resolve(name)[1], **kwargs}
    arguments = model_info(name).arguments
    for key, width in NARROW.items():
        value = given.get(key)
        if key in arguments and isinstance(value, int):
            kwargs[key] = width
        elif key in arguments and isinstance(value, list):
            kwargs[key] = [width] * len(value)
    return ["--model.model_kwargs", json.dumps(kwargs)] if kwargs != (
        model.get("model_kwargs") or {}) else []


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_runs_one_step(path: Path, tmp_path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 20, f"{path.name}: line 1 must name its source"
    config = yaml.safe_load(path.read_text())
    cli("fit", "--config", path, *FIT_QUIET, "--trainer.fast_dev_run", 1,
        "--trainer.limit_val_batches", 1, "--trainer.default_root_dir", tmp_path,
        *_narrowed(config.get("model") or {}), *_overrides(config, tmp_path))
