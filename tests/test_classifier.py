"""Video classification: the registry's classifier kind, the ConvLSTM classifier, its Lightning
system, `convcast fit/test` with the KTH config on a tiny KTH-shaped tree, `convcast classify`
and the errors between classifiers and forecasters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli, write_video

from convcast.cli.main import main
from convcast.data.kth import write_synthetic_kth
from convcast.data.kth.synthetic import action_frames
from convcast.models import create_model, list_models, list_variants, model_kind, register_model
from convcast.train.checkpoint import DATA_KEY, read_checkpoint
from convcast.train.classify import ClassificationSystem, load_classifier

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "kth_classifier-cpu-small.yaml"
CLASSES = ["boxing", "handwaving", "walking"]


# ---- registry and model --------------------------------------------------------------------
def test_classifiers_are_their_own_kind() -> None:
    assert "convlstm_classifier" not in list_models(variants=True)  # forecasters only
    assert list_models(kind="classifier", variants=True) == ["convlstm_classifier",
                                                             "convlstm_classifier_kth"]
    assert "convlstm_classifier_kth" not in list_variants()
    assert "convlstm_classifier_kth" in list_variants(kind="classifier")
    assert {"convlstm_classifier", "encoder_forecaster"} <= set(list_models(kind=None))
    assert model_kind("convlstm_classifier_kth") == "classifier"
    assert model_kind("encoder_forecaster_demo") == "forecaster"
    with pytest.raises(ValueError, match="unknown kind 'regressor'"):
        register_model("my_regressor", kind="regressor")


def test_the_seeds_classifier_size_and_shapes() -> None:
    torch.manual_seed(0)
    m = create_model("convlstm_classifier_kth")
    # 2 ConvLSTM layers of 32 (3x3) and a linear layer over 30x40x32 pooled features to 6
    assert sum(p.numel() for p in m.parameters()) == 38_144 + 73_856 + 230_406
    assert m.model_spec["name"] == "convlstm_classifier"
    logits = m(torch.rand(2, 15, 1, 60, 80))
    assert logits.shape == (2, 6) and torch.isfinite(logits).all()
    logits.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_classifier_refuses_clips_it_cannot_read() -> None:
    m = create_model("convlstm_classifier", num_classes=3, frame_size=(24, 32))
    with pytest.raises(ValueError, match="3 channels.*built for 1"):
        m(torch.rand(1, 4, 3, 24, 32))
    with pytest.raises(ValueError, match="16x16.*built for 24x32.*resize"):
        m(torch.rand(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        m(torch.rand(4, 1, 24, 32))


def test_system_errors() -> None:
    with pytest.raises(ValueError, match="'next_frame' is a forecaster.*convlstm_classifier"):
        ClassificationSystem(model_name="next_frame")
    shape = {"class_names": CLASSES, "channels": 1, "frame_size": [24, 32]}
    with pytest.raises(ValueError, match="num_classes=6 but the data has num_classes 3"):
        ClassificationSystem(model_name="convlstm_classifier", model_kwargs={"num_classes": 6},
                             data_shape=shape)
    system = ClassificationSystem(model_name="convlstm_classifier", data_shape=shape)
    forecast_batch = (torch.rand(2, 4, 1, 24, 32), torch.rand(2, 2, 1, 24, 32))
    with pytest.raises(ValueError, match="batches \\(clip.*label.*KTHDataModule"):
        system.training_step(forecast_batch, 0)


# ---- training through the CLI on a tiny KTH-shaped tree -------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes that differ in motion (still, left-right, up-down) x 6 persons, 20 frames."""
    return write_synthetic_kth(tmp_path_factory.mktemp("kth") / "kth")


@pytest.fixture(scope="module")
def trained(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`convcast fit` of the KTH cpu-small config on the tree: 42 steps (8-frame clips, 24x32).
    Returns its last.ckpt."""
    run = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli("fit", "--config", CONFIG, "--data.root", tree, *FIT_QUIET,
            "--trainer.default_root_dir", run, "--trainer.max_epochs", 14,
            "--trainer.log_every_n_steps", 1, "--early_stopping", "null",
            "--data.frame_len", 8, "--data.frame_size", "[24, 32]", "--data.batch_size", 8,
            "--model.warmup_steps", 5)
    finally:
        torch.set_num_threads(threads)
    return run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def test_fit_records_classes_and_data(trained: Path) -> None:
    ckpt = read_checkpoint(trained)
    assert ckpt["global_step"] == 42
    assert ckpt["hyper_parameters"]["data_shape"] == {"class_names": CLASSES, "channels": 1,
                                                      "frame_size": [24, 32]}
    info = ckpt[DATA_KEY]
    assert info["classes"] == CLASSES and info["clip_frames"] == 8
    assert info["frame_size"] == [24, 32] and info["value_scale"] == 255.0
    # the checkpoint alone rebuilds the classifier, by both routes, with the same weights
    system = ClassificationSystem.load_from_checkpoint(trained, map_location="cpu").eval()
    model, meta = load_classifier(trained)
    x = torch.rand(2, 8, 1, 24, 32)
    torch.testing.assert_close(system(x), model(x))
    assert meta["classes"] == CLASSES and meta["clip_frames"] == 8


def test_test_writes_accuracy_above_chance_and_confusion(trained: Path, tmp_path: Path,
                                                         one_thread) -> None:
    cli("test", "--ckpt_path", trained, "--out", tmp_path, *FIT_QUIET)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["classes"] == CLASSES and metrics["clips"] == 6  # person 13: 2 clips a class
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum(1).tolist() == [2, 2, 2]  # rows: true class
    assert metrics["accuracy"] == pytest.approx(np.trace(cm) / 6)
    assert metrics["accuracy"] > 0.6  # chance is 1/3
    assert "true \\ predicted" in (tmp_path / "confusion.md").read_text()


def test_classify_prints_probabilities_then_the_label(trained: Path, tree: Path, capsys,
                                                      one_thread) -> None:
    video = tree / "walking" / "person13_walking_d1_uncomp.avi"  # a test person
    assert main(["classify", "--ckpt_path", str(trained), "--input", str(video)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    probs = {line.split()[0]: float(line.split()[1]) for line in out[:-1]}
    assert set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1, abs=1e-3)
    assert out[-1] == "label: walking" == f"label: {max(probs, key=probs.get)}"


def test_classify_resizes_other_videos_and_says_so(trained: Path, tmp_path: Path, capsys,
                                                   one_thread) -> None:
    frames = action_frames(2, 30, (48, 64), np.random.default_rng(5), square=12)  # up-down
    video = write_video(tmp_path / "big.avi", np.repeat(frames[..., None], 3, -1))
    assert main(["classify", "--ckpt_path", str(trained), "--input", str(video),
                 "--stride", "4"]) == 0
    captured = capsys.readouterr()
    assert "resized 48x64 -> 24x32" in captured.err and "3 -> 1 channel" in captured.err
    assert "6 window(s) of 8 frames every 4" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("label: ")
    short = write_video(tmp_path / "short.avi", np.repeat(frames[:5, ..., None], 3, -1))
    assert main(["classify", "--ckpt_path", str(trained), "--input", str(short)]) == 0
    assert "fewer than a training clip's 8" in capsys.readouterr().err


def test_classify_errors(trained: Path, trained_run: dict, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    assert main(["classify", "--ckpt_path", str(trained), "--input", str(bad)]) == 1
    assert "cannot open video" in capsys.readouterr().err
    assert main(["classify", "--ckpt_path", str(trained), "--input",
                 str(tmp_path / "missing.avi")]) == 1
    assert "missing.avi not found" in capsys.readouterr().err
    # a forecaster's checkpoint to classify, a classifier's to predict: each names the other
    assert main(["classify", "--ckpt_path", str(trained_run["last"]), "--input",
                 str(trained_run["video"])]) == 1
    assert "holds the forecaster 'next_frame'" in capsys.readouterr().err
    assert main(["predict", "--ckpt_path", str(trained), "--input", str(trained_run["video"]),
                 "--out", str(tmp_path / "f.gif")]) == 1
    err = capsys.readouterr().err
    assert "holds the classifier 'convlstm_classifier'" in err and "convcast classify" in err
