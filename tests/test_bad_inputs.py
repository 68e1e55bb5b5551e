"""Bad inputs, faults and untrusted files, tried as a new user would: every one gives a clear error.

Each case names what it feeds in, the error it must raise (Python API) or the exit status it must
give (CLI), the words its message must hold (what is wrong, which input, what to do), and the
files that must not appear. A few check correct behaviour instead of an error (`OK`). CLI cases
run `convcast.cli.main.main` in this process, as the `convcast` command does, and never show a
traceback or torch's advice to load with `weights_only=False`.

Every case runs with `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`, which makes `torch.load` unpickle
anything unless the caller asks for weights only, as torch < 2.6 does by default: a crafted
checkpoint whose pickle would create a marker file proves that no entry point runs its code.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from reliability_media import (
    decode_all,
    dropped_frames_avi,
    full_disk,
    textured,
    truncated_mp4,
)
from torch.utils.data import DataLoader

from convcast.cli.main import main
from convcast.data import FramesDataModule
from convcast.data.sources.video import VideoSource
from convcast.data.transform import unit_scale
from convcast.inference import forecast
from convcast.metrics import (
    MSE,
    SSIM,
    FrameMetrics,
    SkillScores,
    balanced_mse,
    balanced_weights,
    csi,
    format_table,
    frame_metrics,
    fss,
    mse,
    skill_scores,
    ssim,
    write_metrics_json,
)
from convcast.models import create_model
from convcast.train import ForecastSystem, evaluate, load_forecaster, load_weights
from convcast.train.checkpoint import read_checkpoint
from convcast.train.classify import ClassificationSystem
from convcast.train.evaluate import split_batch
from convcast.viz import frame_grid, to_uint8_frames, write_animation, write_strip
from convcast.viz.plots import plot_lead_time

OK = None  # "error" of a case that must succeed
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SEQ2SEQ = CONFIGS / "seq2seq-cpu-small.yaml"


class Evil:
    """Pickles to a call that creates `marker`: loading it must never run that call."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture(autouse=True)
def unsafe_torch_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, trained_run: dict) -> SimpleNamespace:
    """The files the cases read: a real checkpoint and broken, foreign and crafted ones, frame
    arrays good and bad, configs good and bad."""
    d = tmp_path_factory.mktemp("bad")
    good = trained_run["last"]
    data = good.read_bytes()
    (d / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    (d / "trunc_early.ckpt").write_bytes(data[: len(data) // 8])
    (d / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(5000))
    (d / "empty.ckpt").write_bytes(b"")
    (d / "plain.pkl").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")
    torch.save({"weights": torch.zeros(1)}, d / "nostate.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {"model_name": "convlstm_classifier",
                                                        "label_smoothing": 0.0}},
               d / "classifier.ckpt")
    marker = d / "PWNED"
    evil = torch.load(good, weights_only=True)
    evil["hyper_parameters"]["loss"] = Evil(marker)
    torch.save(evil, d / "evil.ckpt")
    torch.save({"state_dict": {}, "payload": Evil(marker)}, d / "evil.pt")
    nan = torch.load(good, weights_only=True)
    next(iter(nan["state_dict"].values())).fill_(float("nan"))
    torch.save(nan, d / "nan_weights.ckpt")
    (d / "folder.ckpt").mkdir()
    frames = np.random.default_rng(1).integers(0, 256, (12, 16, 16))
    np.save(d / "uint8.npy", frames.astype(np.uint8))
    np.save(d / "int32.npy", frames.astype(np.int32))
    np.save(d / "short.npy", frames[:2].astype(np.uint8))
    np.save(d / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    raw = (d / "uint8.npy").read_bytes()
    (d / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    with h5py.File(d / "good.h5", "w") as f:
        f["frames"] = frames.astype(np.float32) / 255
    raw = (d / "good.h5").read_bytes()
    (d / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    (d / "random.h5").write_bytes(np.random.default_rng(2).bytes(4000))
    (d / "empty_dir").mkdir()
    (d / "bad_yaml.yaml").write_text("trainer:\n  max_steps: [1\n")
    (d / "list.yaml").write_text("- a\n- b\n")
    (d / "unknown_key.yaml").write_text("trainer:\n  max_stepz: 1\n")
    (d / "bad_class.yaml").write_text("data:\n  class_path: convcast.data.NoSuchModule\n")
    (d / "bad_kwargs.yaml").write_text("model:\n  model_name: next_frame\n"
                                       "  model_kwargs: {hiden: 4}\n")
    (d / "bad_model.yaml").write_text("model:\n  model_name: convlstm_xl\n")
    (d / "no_runs").mkdir()
    np.save(d / "int64.npy", frames)  # int64, what np.array makes of Python ints
    dropped_frames_avi(d / "dropped.avi", textured(30))  # header 28 frames, stream 10
    truncated_mp4(d / "trunc.mp4", textured(60))  # header 60 frames, FFmpeg decodes ~25
    (d / "zeros.mp4").write_bytes(b"\0" * 500)
    (d / "folder.npy").mkdir()
    return SimpleNamespace(dir=d, good=good, marker=marker, out=d / "out",
                           video=trained_run["video"], **{
        p.stem.replace("-", "_") + "_" + p.suffix[1:]: p for p in d.iterdir()})


def x5(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, dtype=dtype)


def pair(b: int = 2, t: int = 3, hw: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return x5(b, t, 1, hw, hw), x5(b, t, 1, hw, hw)


def with_nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[3] = float("nan")
    return t


def ef() -> torch.nn.Module:
    return create_model("encoder_forecaster", in_channels=1, patch_size=4, hidden_channels=[8],
                        kernel_size=3)


def streamed_twice(metric: Any, first: int, second: int) -> Any:
    metric.update(*pair(t=first))
    metric.update(*pair(t=second))


def finite_forecast(model: torch.nn.Module, x: torch.Tensor) -> None:
    y = model(x, 2)
    assert y.shape == (*x.shape[:1], 2, *x.shape[2:]) and torch.isfinite(y).all()


def load_system(path: Path, **kwargs: Any) -> ForecastSystem:
    return ForecastSystem.load_from_checkpoint(path, **kwargs)


def int64_trains_as_uint8(c: SimpleNamespace) -> None:
    """int64 frames of 0..255 give the windows uint8 frames give, and the same value scale."""
    mods = [FramesDataModule(str(p), input_frames=3, output_frames=2) for p in
            (c.int64_npy, c.uint8_npy)]
    for dm in mods:
        dm.setup()
    assert torch.equal(mods[0].train_set[0][0], mods[1].train_set[0][0])
    assert mods[0].describe().value_scale == 255


def reads_to_the_end(path: Path, frames: int) -> None:
    """A video reads whole, its last frames included, as FFmpeg decodes them."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "counted by decoding"
        src = VideoSource(path)
    want = decode_all(path)
    assert len(src) == len(want) == frames, (len(src), len(want))
    np.testing.assert_array_equal(src.read(len(src) - 3, len(src)), want[-3:])


def truncated_forecast_names_its_frames(c: SimpleNamespace) -> None:
    import warnings

    n = len(decode_all(c.trunc_mp4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = forecast(create_model("persistence", in_channels=3), c.trunc_mp4, 2, input_frames=4)
    assert f"read the last 4 of {n} frames (frames {n - 4}..{n - 1})" in fc.notes[0], fc.notes


def on_full_disk(write: Any) -> None:
    """`write(folder)` on a full disk (a tmpfs, root only; skipped elsewhere); it must leave
    nothing there."""
    import shutil

    with full_disk() as folder:
        (folder / "filler").write_bytes(b"\0" * max(shutil.disk_usage(folder).free - 4096, 0))
        try:
            write(folder)
        finally:
            assert os.listdir(folder) == ["filler"], os.listdir(folder)


def encoder_fails(path: Path) -> None:
    """The MP4 encoder (ffmpeg) made to fail: its error must be raised."""
    import subprocess
    from unittest import mock

    failed = subprocess.CompletedProcess([], 1, b"", b"[libx264 @ 0x1] cannot allocate\n")
    with mock.patch("convcast.viz.animation.subprocess.run", return_value=failed):
        write_animation(path, x5(3, 1, 8, 8))


def low_precision(name: str, dtype: torch.dtype) -> None:
    """A PredRNN with bf16 / fp16 weights forecasts close to its float32 self."""
    model = create_model(name, hidden_channels=4, num_layers=2, kernel_size=3, patch_size=2)
    x = x5(1, 3, 1, 16, 16)
    with torch.no_grad():
        ref, low = model(x, 2), model.to(dtype)(x.to(dtype), 2)
    assert low.dtype == dtype and (low.float() - ref).abs().max() < 0.05


# (case, call(ctx), error type or OK, words of the message, file that must not appear)
API = [
    # ---- models
    ("model/unknown-name", lambda c: create_model("convlstm_xl"), ValueError,
     ["unknown model", "'convlstm_xl'", "valid names"], None),
    ("model/4d-input", lambda c: ef()(x5(2, 3, 16, 16), 2), ValueError,
     ["[B, T_in, C, H, W]", "(2, 3, 16, 16)"], None),
    ("model/wrong-channels", lambda c: ef()(x5(1, 3, 3, 16, 16), 2), ValueError,
     ["in_channels=1", "3 channels", "convert the frames"], None),
    ("model/horizon-0", lambda c: ef()(x5(1, 3, 1, 16, 16), 0), ValueError,
     ["horizon", "positive"], None),
    ("model/horizon-float", lambda c: ef()(x5(1, 3, 1, 16, 16), 2.5), ValueError,
     ["horizon", "positive int", "2.5"], None),
    ("model/no-input-frames", lambda c: ef()(x5(1, 0, 1, 16, 16), 2), ValueError,
     ["at least one input frame"], None),
    ("model/uint8-input", lambda c: ef()(torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8), 2),
     TypeError, ["floating-point", "uint8", "255"], None),
    ("model/nan-input", lambda c: ef()(with_nan(x5(1, 3, 1, 16, 16)), 2), ValueError,
     ["NaN", "nan_to_num"], None),
    ("model/patch-size-0", lambda c: create_model("encoder_forecaster", patch_size=0),
     ValueError, ["patch_size", ">= 1", "0"], None),
    ("model/frame-not-divisible", lambda c: finite_forecast(ef(), x5(1, 3, 1, 18, 18)), OK,
     [], None),  # padded to 20x20, cropped back
    ("model/encode-frame-not-divisible", lambda c: ef().encode(x5(1, 3, 1, 18, 18)), ValueError,
     ["18", "patch_size=4", "pads and crops back"], None),
    ("model/float64-input", lambda c: finite_forecast(ef(), x5(1, 3, 1, 16, 16,
                                                               dtype=torch.float64)), OK, [], None),
    ("model/bfloat16-input", lambda c: finite_forecast(ef(), x5(1, 3, 1, 16, 16,
                                                                dtype=torch.bfloat16)), OK, [],
     None),
    ("model/teacher-mask-alone", lambda c: create_model("seq2seq", nf=4)(
        x5(1, 3, 1, 16, 16), 3, teacher_mask=torch.ones(1, 2)), ValueError,
     ["teacher_mask", "without teacher"], None),
    ("system/unknown-model", lambda c: ForecastSystem(model_name="convlstm_xl"), ValueError,
     ["unknown model", "convlstm_xl"], None),
    ("system/bad-model-kwargs", lambda c: ForecastSystem(model_name="next_frame",
                                                         model_kwargs={"hiden": 4}),
     ValueError, ["hiden", "'next_frame'", "hidden_channels"], None),
    ("system/unknown-optimizer", lambda c: ForecastSystem(optimizer="adamax"), ValueError,
     ["unknown optimizer", "adamax", "adam, adamw"], None),
    ("system/unknown-scheduler", lambda c: ForecastSystem(scheduler="step"), ValueError,
     ["unknown scheduler", "cosine"], None),
    ("system/unknown-loss", lambda c: ForecastSystem(loss="huber"), ValueError,
     ["huber", "mse"], None),
    ("system/unknown-nonfinite-mode", lambda c: ForecastSystem(nonfinite_loss="ignore"),
     ValueError, ["nonfinite_loss", "'ignore'", "stop, skip"], None),
    # ---- metrics
    ("metrics/shape-mismatch", lambda c: frame_metrics(x5(1, 3, 1, 8, 8), x5(1, 2, 1, 8, 8)),
     ValueError, ["(1, 3, 1, 8, 8)", "(1, 2, 1, 8, 8)", "must match"], None),
    ("metrics/4d", lambda c: mse(x5(3, 1, 8, 8), x5(3, 1, 8, 8)), ValueError,
     ["[B, T, C, H, W]", "unsqueeze"], None),
    ("metrics/numpy-input", lambda c: mse(np.zeros((1, 1, 1, 2, 2)), x5(1, 1, 1, 2, 2)),
     TypeError, ["torch.Tensor", "ndarray", "torch.as_tensor"], None),
    ("metrics/nan-target", lambda c: mse(x5(1, 2, 1, 8, 8), with_nan(x5(1, 2, 1, 8, 8))),
     ValueError, ["target", "NaN", "mask=torch.isfinite"], None),
    ("metrics/target-0..255", lambda c: mse(x5(1, 2, 1, 8, 8), x5(1, 2, 1, 8, 8) * 255),
     ValueError, ["target", "outside [0, 1]", "normalise", "data_range"], None),
    ("metrics/data-range-0", lambda c: mse(*pair(), data_range=0), ValueError,
     ["data_range", "positive", "0"], None),
    ("metrics/data-range-nan", lambda c: ssim(*pair(), data_range=float("nan")), ValueError,
     ["data_range", "positive", "nan"], None),
    ("metrics/empty-batch", lambda c: frame_metrics(*pair(b=0)), ValueError,
     ["empty", "(0, 3, 1, 16, 16)"], None),
    ("metrics/no-lead-times", lambda c: mse(*pair(t=0)), ValueError, ["empty"], None),
    ("metrics/ssim-even-window", lambda c: ssim(*pair(), win_size=4), ValueError,
     ["win_size", "odd", "4"], None),
    ("metrics/ssim-frame-smaller-than-window", lambda c: ssim(*pair(hw=4)), ValueError,
     ["4x4", "7x7 window", "smaller win_size"], None),
    ("metrics/ssim-gaussian-sigma-0", lambda c: ssim(*pair(), gaussian=True, sigma=0.0),
     ValueError, ["sigma", "positive"], None),
    ("metrics/stream-data-range-negative", lambda c: FrameMetrics(data_range=-1), ValueError,
     ["FrameMetrics", "data_range", "-1"], None),
    ("metrics/stream-mask-with-ssim", lambda c: FrameMetrics().update(
        *pair(), mask=torch.ones(2, 3, 1, 16, 16, dtype=torch.bool)), ValueError,
     ["SSIM and PSNR", "ssim_psnr=False"], None),
    ("metrics/ssim-mask", lambda c: SSIM().update(
        *pair(), mask=torch.ones(2, 3, 1, 16, 16, dtype=torch.bool)), ValueError,
     ["SSIM takes no mask"], None),
    ("metrics/float-mask", lambda c: mse(*pair(), mask=torch.ones(2, 3, 1, 16, 16)), TypeError,
     ["mask", "bool tensor", "float32"], None),
    ("metrics/mask-shape", lambda c: mse(*pair(), mask=torch.ones(5, 1, 1, 1, 1,
                                                                   dtype=torch.bool)),
     ValueError, ["mask", "(5, 1, 1, 1, 1)", "does not broadcast"], None),
    ("metrics/unknown-reduction", lambda c: mse(*pair(), reduction="sum"), ValueError,
     ["reduction", "'none' or 'mean'", "'sum'"], None),
    ("metrics/stream-lead-times-change", lambda c: streamed_twice(MSE(), 2, 3), ValueError,
     ["MSE", "lead times", "reset()"], None),
    ("metrics/stream-lead-times-0", lambda c: MSE(lead_times=0), ValueError,
     ["lead_times", "positive"], None),
    ("skill/thresholds-none", lambda c: skill_scores(*pair(), thresholds=None), ValueError,
     ["thresholds=None", "thresholds=[0.5, 2, 5]"], None),
    ("skill/thresholds-empty", lambda c: skill_scores(*pair(), thresholds=[]), ValueError,
     ["at least one threshold"], None),
    ("skill/thresholds-string", lambda c: csi(*pair(), "0.5"), ValueError,
     ["'0.5'", "not a number"], None),
    ("skill/thresholds-not-numbers", lambda c: csi(*pair(), ["low", "high"]), ValueError,
     ["['low', 'high']", "not a number"], None),
    ("skill/thresholds-nan", lambda c: SkillScores([0.5, float("nan")]), ValueError,
     ["thresholds", "finite"], None),
    ("skill/unknown-rule", lambda c: csi(*pair(), 0.5, rule="=>"), ValueError,
     ["rule", "'>='", "'=>'"], None),
    ("skill/empty-batch", lambda c: skill_scores(*pair(b=0), thresholds=[0.5]), ValueError,
     ["empty"], None),
    ("skill/nan-pred", lambda c: skill_scores(with_nan(x5(1, 2, 1, 8, 8)), x5(1, 2, 1, 8, 8),
                                              thresholds=[0.5]), ValueError,
     ["pred", "NaN", "mask"], None),
    ("skill/fss-scale-0", lambda c: fss(*pair(), 0.5, [0]), ValueError,
     ["scales", "positive ints", "[0]"], None),
    ("skill/fss-scale-float", lambda c: fss(*pair(), 0.5, [2.5]), ValueError,
     ["scales", "positive ints"], None),
    ("balanced/weights-count", lambda c: balanced_weights(x5(4), (0.5, 2.0), (1.0, 2.0)),
     ValueError, ["len(thresholds) + 1", "3", "2"], None),
    ("balanced/thresholds-decrease", lambda c: balanced_weights(x5(4), (2.0, 0.5),
                                                                (1.0, 2.0, 3.0)),
     ValueError, ["thresholds must increase"], None),
    ("balanced/thresholds-none", lambda c: balanced_weights(x5(4), None), ValueError,
     ["thresholds and weights", "HKO-7"], None),
    ("balanced/rainrate-shape", lambda c: balanced_mse(*pair(), target_rainrate=x5(1, 1)),
     ValueError, ["target_rainrate", "(1, 1)", "must match"], None),
    ("report/skill-without-thresholds", lambda c: format_table(
        {"m": {"csi": np.zeros((2, 3))}}), ValueError, ["'csi'", "(2, 3)", "thresholds=[...]"],
     None),
    ("report/json-3d-metric", lambda c: write_metrics_json(
        c.out / "metrics.json", {"m": {"x": np.zeros((1, 2, 3))}}), ValueError,
     ["'x'", "(1, 2, 3)", "[T]"], "metrics.json"),
    ("report/json-threshold-count", lambda c: write_metrics_json(
        c.out / "m2.json", {"m": {"csi": np.zeros((2, 3))}}, thresholds=[0.5]), ValueError,
     ["(2, 3)", "1 thresholds"], "m2.json"),
    ("evaluate/no-model", lambda c: evaluate({}, [pair()]), ValueError,
     ["at least one model"], None),
    ("evaluate/empty-loader", lambda c: evaluate({"p": create_model("persistence")}, []),
     ValueError, ["no batch"], None),
    ("evaluate/wrong-forecast-shape", lambda c: evaluate(
        {"bad": lambda x, k: x[:, :1]}, [pair()]), ValueError,
     ["'bad'", "returned", "(2, 1, 1, 16, 16)"], None),
    ("evaluate/bad-batch", lambda c: split_batch(torch.zeros(3)), ValueError,
     ["(x, y)", "Tensor"], None),
    # ---- pictures
    ("viz/animation-extension", lambda c: write_animation(c.out / "a.avi", x5(3, 1, 8, 8)),
     ValueError, ["'.avi'", ".gif or .mp4"], "a.avi"),
    ("viz/fps-0", lambda c: write_animation(c.out / "f.gif", x5(3, 1, 8, 8), fps=0), ValueError,
     ["f.gif", "fps", "positive", "0"], "f.gif"),
    ("viz/5d-sequence", lambda c: write_strip(c.out / "s.png", {"input": x5(1, 3, 1, 8, 8)}),
     ValueError, ["[T,C,H,W]", "(1, 3, 1, 8, 8)"], "s.png"),
    ("viz/uint8-frames-shape", lambda c: to_uint8_frames(x5(8, 8)), ValueError,
     ["[T,C,H,W] or [T,H,W]", "(8, 8)"], None),
    ("viz/grid-label-count", lambda c: frame_grid([x5(2, 1, 4, 4)] * 2, labels=["a"]),
     ValueError, ["1 labels", "2 rows"], None),
    ("viz/plot-skill-without-thresholds", lambda c: plot_lead_time(
        {"m": {"csi": np.zeros((2, 3))}}, c.out / "plots"), ValueError, ["thresholds"], "plots"),
    # ---- checkpoints through the Python API
    ("ckpt/missing", lambda c: read_checkpoint(c.dir / "none.ckpt"), FileNotFoundError,
     ["none.ckpt", "not found"], None),
    ("ckpt/folder", lambda c: read_checkpoint(c.folder_ckpt), FileNotFoundError,
     ["folder.ckpt", "is a folder", "last.ckpt"], None),
    ("ckpt/empty", lambda c: read_checkpoint(c.empty_ckpt), ValueError,
     ["empty.ckpt", "empty", "0 bytes"], None),
    ("ckpt/truncated", lambda c: read_checkpoint(c.trunc_ckpt), ValueError,
     ["trunc.ckpt", "truncated", "another checkpoint"], None),
    ("ckpt/truncated-early", lambda c: read_checkpoint(c.trunc_early_ckpt), ValueError,
     ["trunc_early.ckpt", "truncated"], None),
    ("ckpt/random-bytes", lambda c: read_checkpoint(c.random_ckpt), ValueError,
     ["random.ckpt", "not a PyTorch checkpoint"], None),
    ("ckpt/plain-pickle", lambda c: read_checkpoint(c.plain_pkl), ValueError,
     ["plain.pkl", "not a PyTorch checkpoint"], None),
    ("ckpt/no-state-dict", lambda c: load_forecaster(c.nostate_ckpt), ValueError,
     ["nostate.ckpt", "not a Lightning checkpoint", "state_dict"], None),
    ("ckpt/crafted-read", lambda c: read_checkpoint(c.evil_ckpt), ValueError,
     ["evil.ckpt", "not loaded", "weights-only", "no code"], None),
    ("ckpt/crafted-load_from_checkpoint", lambda c: load_system(c.evil_ckpt), ValueError,
     ["evil.ckpt", "not loaded"], None),
    ("ckpt/crafted-load_forecaster", lambda c: load_forecaster(c.evil_ckpt), ValueError,
     ["evil.ckpt", "not loaded"], None),
    ("ckpt/crafted-load_weights", lambda c: load_weights(create_model("next_frame"),
                                                         c.evil_ckpt), ValueError,
     ["evil.ckpt", "not loaded"], None),
    ("ckpt/truncated-load_from_checkpoint", lambda c: load_system(c.trunc_ckpt), ValueError,
     ["trunc.ckpt", "truncated"], None),
    ("ckpt/load_from_checkpoint-unsafe", lambda c: load_system(c.good, weights_only=False),
     ValueError, ["weights only", "run code"], None),
    ("ckpt/load_from_checkpoint-good", lambda c: load_system(c.good, map_location="cpu"), OK,
     [], None),
    ("ckpt/classifier-load_from_checkpoint", lambda c: load_system(c.classifier_ckpt),
     ValueError, ["classifier.ckpt", "not written by ForecastSystem", "ClassificationSystem"],
     None),
    ("ckpt/crafted-classifier-load_from_checkpoint",
     lambda c: ClassificationSystem.load_from_checkpoint(c.evil_ckpt), ValueError,
     ["evil.ckpt", "not loaded"], None),
    ("ckpt/classifier-load_from_checkpoint-unsafe",
     lambda c: ClassificationSystem.load_from_checkpoint(c.classifier_ckpt, weights_only=False),
     ValueError, ["weights only", "run code"], None),
    ("ckpt/classifier-load_forecaster", lambda c: load_forecaster(c.classifier_ckpt), ValueError,
     ["classifier.ckpt", "not a forecaster", "convcast classify"], None),
    ("ckpt/other-architecture", lambda c: load_weights(create_model("seq2seq", nf=4), c.good),
     ValueError, ["'next_frame' model", "'seq2seq' model", "load_forecaster"], None),
    ("ckpt/other-size", lambda c: load_weights(create_model("next_frame", hidden_channels=8),
                                               c.good), ValueError,
     ["hidden_channels", "do not fit"], None),
    # ---- integer frames: never scaled by the maximum of a type wider than 16 bits
    ("data/int64-scale-without-values", lambda c: unit_scale(np.int64), ValueError,
     ["int64", "no fixed scale", "9.22e+18", "scale a model was trained on"], None),
    ("data/int64-frames-train-as-uint8", int64_trains_as_uint8, OK, [], None),
    # ---- videos: read as FFmpeg decodes them, counted by decoding where header and stream differ
    ("video/dropped-frame-markers", lambda c: reads_to_the_end(c.dropped_avi, 10), OK, [], None),
    ("video/truncated-mp4-forecast", truncated_forecast_names_its_frames, OK, [], None),
    ("video/unreadable", lambda c: VideoSource(c.zeros_mp4), ValueError,
     ["zeros.mp4", "cannot open video", "moov atom not found", "convert it"], None),
    # ---- writers: the encoder's or the disk's failure raised, naming the file, leaving nothing
    ("write/mp4-full-disk", lambda c: on_full_disk(lambda d: write_animation(
        d / "a.mp4", x5(12, 1, 48, 48))), OSError, ["a.mp4", "is full", "free some space"],
     None),
    ("write/gif-full-disk", lambda c: on_full_disk(lambda d: write_animation(
        d / "a.gif", x5(12, 1, 48, 48))), OSError, ["a.gif", "is full"], None),
    ("write/png-full-disk", lambda c: on_full_disk(lambda d: write_strip(
        d / "s.png", {"input": x5(4, 1, 48, 48)})), OSError, ["s.png", "is full"], None),
    ("write/json-full-disk", lambda c: on_full_disk(lambda d: write_metrics_json(
        d / "m.json", {"m": {"mse": np.ones(500)}})), OSError, ["m.json", "is full"], None),
    ("write/mp4-encoder-fails", lambda c: encoder_fails(c.out / "e.mp4"), OSError,
     ["e.mp4", "ffmpeg", "failed with status 1", "cannot allocate"], "e.mp4"),
    # ---- low-precision weights
    ("model/predrnn-bfloat16-weights", lambda c: low_precision("predrnn", torch.bfloat16), OK,
     [], None),
    ("model/predrnn_v2-float16-weights", lambda c: low_precision("predrnn_v2", torch.float16),
     OK, [], None),
]


def _name(case: Any) -> str:
    return case.values[0] if hasattr(case, "marks") else case[0]  # a pytest.param, or a tuple


@pytest.mark.parametrize("name, call, error, words, writes", API, ids=[_name(c) for c in API])
def test_python_api(name: str, call: Any, error: Any, words: list, writes: str | None,
                    ctx: SimpleNamespace, one_thread: None) -> None:
    ctx.out = ctx.dir / "out" / name.replace("/", "_")  # each case its own output folder
    if error is OK:
        call(ctx)
    else:
        with pytest.raises(error) as info:
            call(ctx)
        message = str(info.value)
        for word in words:
            assert word.lower() in message.lower(), f"{name}: {word!r} not in {message!r}"
        assert "weights_only` set to `False" not in message
    assert writes is None or not (ctx.out / writes).exists(), f"{name} wrote {writes}"
    assert not ctx.marker.exists(), f"{name}: the crafted checkpoint ran its code"


def q(c: SimpleNamespace) -> list:
    """Quiet, CPU-only Trainer flags."""
    return ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", "cpu"]


def predict(c: SimpleNamespace, *args: Any, ckpt: Path | None = None, out: str = "fc.npy"
            ) -> list:
    return ["predict", "--ckpt_path", ckpt or c.good, "--out", c.out / out, *args]


def nowcast(c: SimpleNamespace, *args: Any) -> list:
    return ["nowcast", "--out", c.out / "nowcast", *args]


def scoring(c: SimpleNamespace, *args: Any) -> list:
    return ["test", "--ckpt_path", c.good, "--out", c.out / "report", *args, *q(c)]


# (case, argv(ctx), exit status, words of stderr, file or folder that must not appear)
CLI = [
    ("cli/unknown-command", lambda c: ["train"], 2, ["unknown command 'train'", "fit"], None),
    ("config/missing", lambda c: ["fit", "--config", c.dir / "nope.yaml"], 1,
     ["nope.yaml", "not found"], None),
    ("config/not-yaml", lambda c: ["fit", "--config", c.bad_yaml_yaml], 1,
     ["bad_yaml.yaml", "not valid YAML", "line"], None),
    ("config/not-a-mapping", lambda c: ["fit", "--config", c.list_yaml], 1,
     ["list.yaml", "not a mapping"], None),
    ("config/unknown-key", lambda c: ["fit", "--config", SEQ2SEQ, "--config",
                                      c.unknown_key_yaml], 2,
     ["does not accept", "trainer.max_stepz"], None),
    ("config/unknown-data-class", lambda c: ["fit", "--config", SEQ2SEQ, "--config",
                                             c.bad_class_yaml], 2,
     ["convcast.data.NoSuchModule"], None),
    ("config/unknown-model", lambda c: ["fit", "--config", SEQ2SEQ, "--config",
                                        c.bad_model_yaml], 1,
     ["unknown model", "convlstm_xl"], None),
    ("config/bad-model-kwargs", lambda c: ["fit", "--config", SEQ2SEQ, "--config",
                                           c.bad_kwargs_yaml], 1,
     ["hiden", "hidden_channels"], None),
    ("fit/unknown-optimizer", lambda c: ["fit", "--config", SEQ2SEQ, "--model.optimizer",
                                         "adamax"], 1, ["unknown optimizer", "adamax"], None),
    ("fit/unknown-nonfinite-mode", lambda c: ["fit", "--config", SEQ2SEQ,
                                              "--model.nonfinite_loss", "ignore"], 2,
     ["model.nonfinite_loss", "ignore", "stop"], None),
    ("fit/negative-max-steps", lambda c: ["fit", "--config", SEQ2SEQ, "--trainer.max_steps",
                                          -5, "--trainer.default_root_dir", c.out / "neg",
                                          *q(c)], 1, ["max_steps", "-5"], "neg/lightning_logs"),
    ("fit/unsafe-load", lambda c: ["fit", "--config", SEQ2SEQ, "--weights_only", "false"], 1,
     ["--weights_only false", "weights-only"], None),
    ("fit/other-architecture", lambda c: ["fit", "--config", SEQ2SEQ, "--ckpt_path", c.good], 1,
     ["'seq2seq'", "'next_frame'", "leave out --config"], None),
    ("fit/other-optimizer", lambda c: ["fit", "--ckpt_path", c.good, "--model.optimizer",
                                       "sgd"], 1, ["optimizer", "'sgd'", "'adam'",
                                                   "--model.optimizer adam"], None),
    ("fit/crafted-checkpoint", lambda c: ["fit", "--ckpt_path", c.evil_ckpt], 1,
     ["evil.ckpt", "not loaded"], None),
    ("fit/truncated-checkpoint", lambda c: ["fit", "--config", SEQ2SEQ, "--ckpt_path",
                                            c.trunc_ckpt], 1, ["trunc.ckpt", "truncated"], None),
    ("fit/missing-own-data", lambda c: ["fit", "--config", SEQ2SEQ, "--data",
                                        "convcast.data.FramesDataModule", "--data.path",
                                        c.dir / "no_videos", "--trainer.default_root_dir",
                                        c.out / "own", *q(c)], 1, ["no_videos", "not found"],
     "own/lightning_logs"),
    ("validate/other-architecture", lambda c: ["validate", "--config", SEQ2SEQ, "--ckpt_path",
                                               c.good, *q(c)], 1,
     ["'seq2seq'", "'next_frame'"], None),
    ("validate/no-last-run", lambda c: ["validate", "--config", SEQ2SEQ, "--ckpt_path", "last",
                                        "--trainer.default_root_dir", c.no_runs_], 1,
     ["no last checkpoint", "no_runs"], None),
    ("validate/crafted-checkpoint", lambda c: ["validate", "--ckpt_path", c.evil_ckpt], 1,
     ["not loaded"], None),
    ("test/other-architecture", lambda c: ["test", "--config", SEQ2SEQ, "--ckpt_path", c.good,
                                           "--out", c.out / "r1", *q(c)], 1,
     ["'seq2seq'", "'next_frame'"], "r1"),
    ("test/no-best-run", lambda c: ["test", "--config", SEQ2SEQ, "--ckpt_path", "best",
                                    "--trainer.default_root_dir", c.no_runs_], 1,
     ["no best checkpoint", "--ckpt_path PATH"], None),
    ("test/missing-checkpoint", lambda c: ["test", "--config", SEQ2SEQ, "--ckpt_path",
                                           c.dir / "none.ckpt"], 1, ["none.ckpt", "not found"],
     None),
    ("test/folder-checkpoint", lambda c: ["test", "--config", SEQ2SEQ, "--ckpt_path",
                                          c.folder_ckpt], 1, ["is a folder"], None),
    ("test/random-checkpoint", lambda c: ["test", "--ckpt_path", c.random_ckpt], 1,
     ["random.ckpt", "not a PyTorch checkpoint"], None),
    ("test/empty-checkpoint", lambda c: ["test", "--ckpt_path", c.empty_ckpt], 1,
     ["empty.ckpt", "0 bytes"], None),
    ("test/truncated-checkpoint", lambda c: ["test", "--ckpt_path", c.trunc_ckpt], 1,
     ["trunc.ckpt", "truncated"], None),
    ("test/crafted-checkpoint", lambda c: ["test", "--ckpt_path", c.evil_ckpt], 1,
     ["evil.ckpt", "not loaded"], None),
    ("test/nan-weights", lambda c: ["test", "--ckpt_path", c.nan_weights_ckpt, "--out",
                                    c.out / "report", *q(c)], 1,
     ["test loss is NaN/inf", "weights hold NaN"], "report/metrics.json"),
    ("test/unknown-conversion", lambda c: scoring(c, "--to_physical", "pixel_to_mm"), 1,
     ["--to_physical", "pixel_to_mm", "pixel_to_rainrate"], "report/metrics.json"),
    ("test/unknown-animation", lambda c: scoring(c, "--animation", "avi"), 1,
     ["--animation", "'avi'", "gif, mp4, none"], "report/metrics.json"),
    ("test/compare-unknown", lambda c: scoring(c, "--compare", "persistance"), 1,
     ["persistance", "neither a checkpoint file nor a baseline", "persistence"],
     "report/metrics.json"),
    ("test/compare-untrained", lambda c: scoring(c, "--compare", "seq2seq"), 1,
     ["seq2seq", "trained first"], "report/metrics.json"),
    ("test/compare-crafted", lambda c: scoring(c, "--compare", c.evil_ckpt), 1,
     ["evil.ckpt", "not loaded"], "report/metrics.json"),
    ("test/compare-truncated", lambda c: scoring(c, "--compare", c.trunc_ckpt), 1,
     ["trunc.ckpt", "truncated"], "report/metrics.json"),
    ("test/no-batches", lambda c: scoring(c, "--max_batches", 0), 1,
     ["no batch"], "report/metrics.json"),
    ("test/negative-data-range", lambda c: scoring(c, "--data_range", -1), 1,
     ["data_range", "-1"], "report/metrics.json"),
    ("test/nan-threshold", lambda c: scoring(c, "--thresholds", "nan"), 2,
     ["thresholds", "nan", "float"], "report/metrics.json"),
    ("test/bad-threshold", lambda c: scoring(c, "--thresholds", "heavy"), 2,
     ["thresholds", "heavy"], "report/metrics.json"),
    ("predict/crafted-checkpoint", lambda c: predict(c, "--input", c.uint8_npy,
                                                     ckpt=c.evil_ckpt), 1,
     ["evil.ckpt", "not loaded"], "fc.npy"),
    ("predict/random-checkpoint", lambda c: predict(c, "--input", c.uint8_npy,
                                                    ckpt=c.random_ckpt), 1,
     ["not a PyTorch checkpoint"], "fc.npy"),
    ("predict/truncated-checkpoint", lambda c: predict(c, "--input", c.uint8_npy,
                                                       ckpt=c.trunc_ckpt), 1, ["truncated"],
     "fc.npy"),
    ("predict/missing-checkpoint", lambda c: predict(c, "--input", c.uint8_npy,
                                                     ckpt=c.dir / "none.ckpt"), 1,
     ["none.ckpt", "not found"], "fc.npy"),
    pytest.param("predict/cuda-on-cpu", lambda c: predict(c, "--input", c.uint8_npy,
                                                          "--device", "cuda:7"), 1,
                 ["device", "cpu"], "fc.npy",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
    ("predict/nan-weights", lambda c: predict(c, "--input", c.uint8_npy,
                                              ckpt=c.nan_weights_ckpt), 1, ["NaN"], "fc.npy"),
    ("predict/missing-input", lambda c: predict(c, "--input", c.dir / "none.npy"), 1,
     ["none.npy", "not found"], "fc.npy"),
    ("predict/empty-folder", lambda c: predict(c, "--input", c.empty_dir_), 1,
     ["empty_dir", "a folder of images", ".npy"], "fc.npy"),
    ("predict/too-few-frames", lambda c: predict(c, "--input", c.short_npy), 1,
     ["short.npy", "2 frames", "reads 4", "--input_frames 2"], "fc.npy"),
    ("predict/output-extension", lambda c: predict(c, "--input", c.uint8_npy, out="fc.avi"), 1,
     ["fc.avi", "'.avi'", ".npy, .gif, .mp4"], "fc.avi"),
    ("predict/strip-extension", lambda c: predict(c, "--input", c.uint8_npy, "--strip",
                                                  c.out / "s.jpg"), 1, ["s.jpg", "PNG"],
     "fc.npy"),
    ("predict/output-size-choice", lambda c: predict(c, "--input", c.uint8_npy,
                                                     "--output_size", "big"), 2,
     ["output_size", "big", "model"], "fc.npy"),
    ("predict/bad-layout", lambda c: predict(c, "--input", c.uint8_npy, "--layout", "XYZ"), 1,
     ["layout", "'XYZ'", "T, H, W"], "fc.npy"),
    ("predict/fps-0", lambda c: predict(c, "--input", c.uint8_npy, "--fps", 0, out="fc.gif"), 1,
     ["fps", "positive"], "fc.gif"),
    ("predict/negative-horizon", lambda c: predict(c, "--input", c.uint8_npy, "--horizon", -1),
     1, ["horizon", "positive"], "fc.npy"),
    ("predict/horizon-0", lambda c: predict(c, "--input", c.uint8_npy, "--horizon", 0), 1,
     ["horizon", "0"], "fc.npy"),
    ("predict/input-frames-0", lambda c: predict(c, "--input", c.uint8_npy, "--input_frames", 0),
     1, ["input_frames", "0"], "fc.npy"),
    ("predict/object-array", lambda c: predict(c, "--input", c.object_npy), 1,
     ["object.npy", "object"], "fc.npy"),
    ("predict/truncated-npy", lambda c: predict(c, "--input", c.trunc_npy), 1,
     ["trunc.npy", "truncated"], "fc.npy"),
    ("predict/truncated-h5", lambda c: predict(c, "--input", c.trunc_h5), 1,
     ["trunc.h5", "truncated"], "fc.npy"),
    ("predict/random-h5", lambda c: predict(c, "--input", c.random_h5), 1,
     ["random.h5", "HDF5"], "fc.npy"),
    ("nowcast/crafted-checkpoint", lambda c: nowcast(c, "--ckpt_path", c.evil_ckpt, "--input",
                                                     c.uint8_npy), 1,
     ["evil.ckpt", "not loaded"], "nowcast"),
    ("nowcast/model-and-checkpoint", lambda c: nowcast(c, "--ckpt_path", c.good, "--model",
                                                       "persistence", "--input", c.uint8_npy),
     1, ["either --ckpt_path or --model"], "nowcast"),
    ("nowcast/no-model", lambda c: nowcast(c, "--input", c.uint8_npy), 1,
     ["--ckpt_path", "--model", "persistence"], "nowcast"),
    ("nowcast/trained-model-name", lambda c: nowcast(c, "--model", "seq2seq", "--input",
                                                     c.uint8_npy), 1,
     ["seq2seq", "not a baseline", "--ckpt_path"], "nowcast"),
    ("nowcast/missing-input", lambda c: nowcast(c, "--model", "persistence", "--input",
                                                c.dir / "no_radar"), 1,
     ["no_radar", "does not exist"], "nowcast"),
    ("nowcast/unknown-format", lambda c: nowcast(c, "--model", "persistence", "--input",
                                                 c.uint8_npy, "--format", "grib"), 1,
     ["format", "grib", "netcdf"], "nowcast"),
    ("nowcast/no-timestamps", lambda c: nowcast(c, "--model", "persistence", "--input",
                                                c.uint8_npy), 1,
     ["uint8.npy", "no timestamps", "start_time", "step_minutes"], "nowcast"),
    ("nowcast/fps-0", lambda c: nowcast(
        c, "--model", "persistence", "--input", c.uint8_npy, "--start_time", "2021-06-01T00:00",
        "--step_minutes", 6, "--fps", 0), 1, ["fps", "positive"], "nowcast/forecast.npz"),
    ("nowcast/horizon-0", lambda c: nowcast(
        c, "--model", "persistence", "--input", c.uint8_npy, "--start_time",
        "2021-06-01T00:00", "--step_minutes", 6, "--horizon", 0), 1, ["horizon", "0"],
        "nowcast"),
    ("nowcast/input-frames-0", lambda c: nowcast(
        c, "--model", "persistence", "--input", c.uint8_npy, "--start_time",
        "2021-06-01T00:00", "--step_minutes", 6, "--input_frames", 0), 1,
        ["input_frames", "0"], "nowcast"),
    ("export/crafted-checkpoint", lambda c: ["export", "--ckpt_path", c.evil_ckpt, "--format",
                                             "onnx", "--horizon", 2, "--out", c.out / "m.onnx"],
     1, ["evil.ckpt", "not loaded"], "m.onnx"),
    ("export/horizon-0", lambda c: ["export", "--ckpt_path", c.good, "--format", "torchscript",
                                    "--horizon", 0, "--out", c.out / "m.pt"], 1,
     ["--horizon", "positive", "0"], "m.pt"),
    ("export/unknown-format", lambda c: ["export", "--ckpt_path", c.good, "--format", "tflite",
                                         "--horizon", 2, "--out", c.out / "m.tflite"], 2,
     ["--format", "tflite", "onnx"], "m.tflite"),
    ("classify/crafted-checkpoint", lambda c: ["classify", "--ckpt_path", c.evil_ckpt,
                                               "--input", c.video], 1,
     ["evil.ckpt", "not loaded"], None),
    ("classify/forecaster-checkpoint", lambda c: ["classify", "--ckpt_path", c.good, "--input",
                                                  c.video], 1, ["next_frame", "classif"], None),
    ("classify/not-a-video", lambda c: ["classify", "--ckpt_path", c.good, "--input",
                                        c.uint8_npy], 1, ["uint8.npy", "not a video", ".mp4"],
     None),
    ("demo/missing-init", lambda c: ["demo", "--init", c.dir / "none.pt", "--out",
                                     c.out / "demo"], 1, ["none.pt", "not found"], "demo"),
    ("demo/crafted-init", lambda c: ["demo", "--init", c.evil_pt, "--out", c.out / "demo2"], 1,
     ["evil.pt", "not loaded"], "demo2"),
    # ---- integer frames, videos, output paths, SIGTERM
    ("predict/int64-frames", lambda c: predict(c, "--input", c.int64_npy), 0,
     ["scaled int64 by 1/255", "the scale of the model's training data"], None),
    ("predict/video-dropped-frames", lambda c: predict(c, "--input", c.dropped_avi), 0,
     ["read the last 4 of 10 frames (frames 6..9)"], None),
    ("predict/unreadable-video", lambda c: predict(c, "--input", c.zeros_mp4), 1,
     ["zeros.mp4", "cannot open video", "moov atom not found"], "fc.npy"),
    ("predict/out-is-a-folder", lambda c: predict(c, "--input", c.uint8_npy, out=c.folder_npy),
     1, ["folder.npy", "is an existing folder, not a file"], None),
    ("predict/out-inside-a-file", lambda c: predict(c, "--input", c.uint8_npy,
                                                    out=c.plain_pkl / "fc.npy"), 1,
     ["plain.pkl", "lies inside", "an existing file"], None),
    ("nowcast/out-is-a-file", lambda c: ["nowcast", "--model", "persistence", "--input",
                                         c.uint8_npy, "--start_time", "2021-06-01T00:00",
                                         "--step_minutes", 6, "--out", c.plain_pkl], 1,
     ["plain.pkl", "is an existing file, not a folder"], None),
    ("test/out-is-a-file", lambda c: ["test", "--ckpt_path", c.good, "--out", c.plain_pkl,
                                      *q(c)], 1, ["plain.pkl", "is an existing file"], None),
    ("fit/sigterm", lambda c: ["fit", "--config", NEXT_FRAME, "--trainer.default_root_dir",
                               c.out, "--trainer.max_steps", 40, "--trainer.callbacks",
                               "test_bad_inputs.SigtermAt", *TINY_SHAPES, *q(c)], 143,
     ["stopped by SIGTERM at training step 2", "last.ckpt", "--ckpt_path last", "143"], None),
]


class SigtermAt(L.Callback):
    """Sends this process SIGTERM (as a scheduler stopping a job does) after training step
    `step`."""

    def __init__(self, step: int = 2) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("name, argv, code, words, writes", CLI, ids=[_name(c) for c in CLI])
def test_cli(name: str, argv: Any, code: int, words: list, writes: str | None,
             ctx: SimpleNamespace, capsys: pytest.CaptureFixture, one_thread: None,
             monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.out = ctx.dir / "out" / name.replace("/", "_")  # each case its own output folder
    monkeypatch.chdir(ctx.dir)  # nothing may land in the working folder either
    before = set(os.listdir(ctx.dir))
    rc = main([str(a) for a in argv(ctx)])
    err = capsys.readouterr().err
    assert rc == code, f"{name}: exit status {rc}, expected {code}; stderr:\n{err}"
    for word in words:
        assert word.lower() in err.lower(), f"{name}: {word!r} not in stderr:\n{err}"
    assert "Traceback" not in err and "weights_only` set to `False" not in err, err
    assert writes is None or not (ctx.out / writes).exists(), f"{name} wrote {writes}"
    assert not ctx.marker.exists(), f"{name}: the crafted checkpoint ran its code"
    assert set(os.listdir(ctx.dir)) <= before | {"out"}, f"{name} wrote into the working folder"


def test_predict_int32_frames_are_not_silent_garbage(ctx: SimpleNamespace,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = ctx.out / "int32.npy"
    rc = main(["predict", "--ckpt_path", str(ctx.good), "--input", str(ctx.int32_npy),
               "--out", str(out)])
    if rc != 0:  # refused: the message must say why
        assert "int32" in capsys.readouterr().err and not out.exists()
        return
    forecast = np.load(out)
    assert np.isfinite(forecast).all() and forecast.min() >= -1 and forecast.max() <= 2 * 255


def test_corpus_size() -> None:
    """The corpus covers at least 100 cases across models, metrics, readers, configs,
    checkpoints and every CLI entry point."""
    assert len(API) + len(CLI) + 1 >= 100
    areas = {_name(c).split("/")[0] for c in API + CLI}
    assert {"model", "metrics", "skill", "ckpt", "config", "fit", "validate", "test",
            "predict", "nowcast", "demo", "export", "classify"} <= areas


# ---- numerical faults ------------------------------------------------------------------------

NEXT_FRAME = CONFIGS / "next_frame-cpu-small.yaml"
TINY_SHAPES = ["--data.init_args.train_size", 32, "--data.init_args.val_size", 8,
               "--data.init_args.test_size", 8, "--data.init_args.batch_size", 4,
               "--trainer.val_check_interval", 2, "--trainer.log_every_n_steps", 1,
               "--trainer.limit_val_batches", 1]


def test_diverging_fit_exits_nonzero_and_keeps_a_finite_last(
        tmp_path: Path, capsys: pytest.CaptureFixture, one_thread: None) -> None:
    """SGD at lr 1e4 diverges within a few steps: `convcast fit` stops with a message naming
    the step, the loss terms and the causes, exits 1, and every checkpoint left is finite."""
    rc = main([str(a) for a in ["fit", "--config", NEXT_FRAME, "--trainer.default_root_dir",
                                tmp_path, "--trainer.max_steps", 40, "--model.optimizer", "sgd",
                                "--model.lr", 1e4, *TINY_SHAPES, *q(None)]])
    err = capsys.readouterr().err
    assert rc == 1, err
    for words in ("NaN/inf at training step", "loss terms: forecast=", "learning rate",
                  "lr=10000", "--model.nonfinite_loss skip", "last.ckpt"):
        assert words in err, (words, err)
    assert "Traceback" not in err
    ckpts = sorted(tmp_path.glob("**/*.ckpt"))
    assert any(p.name == "last.ckpt" for p in ckpts), ckpts
    for path in ckpts:
        state = read_checkpoint(path)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values()), f"{path} is not finite"


class Toy(torch.nn.Module):
    """A forecaster with one weight whose gradient is NaN at its start value (sqrt at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.in_channels = 1

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        last = x[:, -1:].expand(-1, horizon, -1, -1, -1)  # [B, horizon, C, H, W]
        return last + torch.sqrt(self.w.abs())


def _fit(system: ForecastSystem, batches: list) -> None:
    import lightning as L

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(system, train_dataloaders=DataLoader(batches, batch_size=None))


def _batches(nan_at: int | None = None) -> list:
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(4):
        x, y = torch.rand(2, 3, 1, 8, 8, generator=gen), torch.rand(2, 2, 1, 8, 8, generator=gen)
        out.append((x, with_nan(y) if i == nan_at else y))
    return out


def test_nonfinite_loss_stop_names_the_step_and_the_data(one_thread: None) -> None:
    system = ForecastSystem(model_name="next_frame", model_kwargs={"hidden_channels": 4})
    from convcast.train.system import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"training step 1 .*batch itself holds NaN"):
        _fit(system, _batches(nan_at=1))


def test_nonfinite_loss_skip_drops_the_batch(one_thread: None) -> None:
    system = ForecastSystem(model_name="next_frame", model_kwargs={"hidden_channels": 4},
                            nonfinite_loss="skip")
    with pytest.warns(UserWarning, match="skipping the batch: loss is NaN/inf at training step"):
        _fit(system, _batches(nan_at=2))
    assert system.skipped_batches == 1
    assert all(torch.isfinite(p).all() for p in system.parameters())


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_gradient(mode: str, one_thread: None) -> None:
    """A finite loss with a NaN gradient never reaches the weights."""
    from convcast.train.system import NonFiniteLossError

    system = ForecastSystem(model=Toy(), nonfinite_loss=mode)
    if mode == "stop":
        with pytest.raises(NonFiniteLossError, match=r"gradient is NaN/inf .* \(in w\)"):
            _fit(system, _batches())
        return
    with pytest.warns(UserWarning, match="skipping the batch: gradient"):
        _fit(system, _batches())
    assert system.skipped_batches == 4 and float(system.model.w) == 0.0


# ---- checkpoints on disk ---------------------------------------------------------------------

@pytest.fixture
def run_copy(trained_run: dict, tmp_path: Path) -> dict:
    """A copy of the tiny trained run, to damage and to score."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(trained_run["root"], root)
    log_dir = root / "lightning_logs" / "version_0"
    return {"root": root, "log_dir": log_dir, "last": log_dir / "checkpoints" / "last.ckpt"}


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_last_falls_back_to_the_newest_intact_checkpoint(
        run_copy: dict, capsys: pytest.CaptureFixture, one_thread: None) -> None:
    data = run_copy["last"].read_bytes()
    run_copy["last"].write_bytes(data[: len(data) // 3])  # as a killed copy would leave it
    rc = main([str(a) for a in ["validate", "--config", run_copy["log_dir"] / "config.yaml",
                                "--ckpt_path", "last", "--trainer.default_root_dir",
                                run_copy["root"], *q(None)]])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "skipping a checkpoint that does not read" in err and "truncated" in err
    assert "falling back to the newest intact checkpoint" in err and "epoch=" in err


def test_test_writes_only_where_asked(run_copy: dict, tmp_path: Path,
                                      capsys: pytest.CaptureFixture, one_thread: None) -> None:
    """`convcast test` writes its report to --out and nothing into the run it scores (no
    lightning_logs/version_N, no config, no checkpoint), with no "dirpath has changed"."""
    before = _tree(run_copy["root"])
    rc = main([str(a) for a in ["test", "--ckpt_path", run_copy["last"], "--out",
                                tmp_path / "report", "--trainer.default_root_dir",
                                run_copy["root"], *q(None)]])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert _tree(run_copy["root"]) == before
    assert (tmp_path / "report" / "metrics.json").exists()
    assert "dirpath" not in captured.err and "litlogger" not in captured.out + captured.err
    rc = main([str(a) for a in ["test", "--ckpt_path", run_copy["last"],
                                "--trainer.default_root_dir", run_copy["root"],
                                "--animation", "none", *q(None)]])
    assert rc == 0
    report = run_copy["root"] / "test" / "run-version_0"  # <default_root_dir>/test/<run>
    assert (report / "metrics.json").exists(), sorted(_tree(run_copy["root"]))
    assert set(_tree(run_copy["root"])) - set(before) == {
        "test", "test/run-version_0", *(f"test/run-version_0/{p}" for p in
                                        _tree(report))}
