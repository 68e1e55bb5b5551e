"""`convcast fit / test / predict` through the real CLI, in-process, on a tiny video."""

from __future__ import annotations

import json
import math
import signal

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from conftest import FIT_QUIET, cli, write_frame_folder, write_video

from convcast.cli.main import main
from convcast.data.normalize import Normalization
from convcast.train import ForecastSystem
from convcast.train.checkpoint import CONFIG_KEY, DATA_KEY, load_forecaster, read_checkpoint


def test_help_and_unknown_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("fit", "validate", "test", "predict", "demo", "nowcast"))
    assert main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err
    assert main([]) == 2


def test_fit_saves_config_checkpoints_and_logs(trained_run: dict) -> None:
    log_dir = trained_run["log_dir"]
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["model"]["model_name"] == "next_frame"
    assert config["data"]["class_path"] == "convcast.data.FramesDataModule"
    ckpts = sorted(p.name for p in (log_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) >= 2, ckpts  # best (val/loss) and last
    ckpt = read_checkpoint(trained_run["last"])
    assert ckpt["global_step"] == 4
    stored = yaml.safe_load(ckpt[CONFIG_KEY])
    assert stored["model"]["model_kwargs"] == {"hidden_channels": 4}
    assert stored["data"]["init_args"]["frame_size"] == 16
    info = ckpt[DATA_KEY]
    assert (info["input_frames"], info["output_frames"], info["channels"]) == (4, 2, 1)
    assert info["frame_size"] == [16, 16] and info["value_scale"] == 255.0
    assert info["normalization"]["kind"] == "minmax"
    assert 0 <= info["normalization"]["low"] < info["normalization"]["high"] <= 1

    # the checkpoint alone rebuilds the model, by both routes, with the same weights
    system = ForecastSystem.load_from_checkpoint(trained_run["last"], map_location="cpu")
    model, meta = load_forecaster(trained_run["last"])
    assert meta["model_name"] == "next_frame" and meta["frame_size"] == [16, 16]
    x = torch.rand(2, 4, 1, 16, 16)
    torch.testing.assert_close(system.model.eval()(x, 3), model(x, 3))

    # TensorBoard: losses, learning rate and prediction images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    scalars, images = set(ea.Tags()["scalars"]), set(ea.Tags()["images"])
    assert {"train/loss", "val/loss", "val/mse", "lr-Adam"} <= scalars, scalars
    assert {"train/prediction", "val/prediction"} <= images, images
    img = ea.Images("train/prediction")[0]
    assert img.width >= 16 * 4 and img.height >= 16 * 4 * 2  # 4 rows per sample, >= 2 samples


def _unit_frames(video, last: int) -> np.ndarray:
    """The last frames of a video as the documented pipeline prepares them (independently coded):
    RGB -> gray by BT.601 luma, /255, area-resized to 16x16 -> `[T, 1, 16, 16]`."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    gray = [cv2.cvtColor(f.astype(np.float32) / 255, cv2.COLOR_BGR2GRAY) for f in frames[-last:]]
    return np.stack([cv2.resize(g, (16, 16), interpolation=cv2.INTER_AREA) for g in gray])[:, None]


def test_test_command_writes_report(trained_run: dict, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    # no --config: the config stored in the checkpoint is used
    cli("test", "--ckpt_path", trained_run["last"], "--compare", "persistence",
        trained_run["last"], "--out", out, *FIT_QUIET)
    table = capsys.readouterr().out
    run = f"{trained_run['root'].name}/version_0"  # a compared checkpoint is named by its run
    assert "| next_frame" in table and "| persistence" in table and f"| {run}" in table
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"next_frame", "persistence", run}
    assert len(metrics["next_frame"]["per_lead_time"]["mse"]) == 2  # output_frames
    assert metrics[run] == metrics["next_frame"]  # the same checkpoint on the same data
    assert metrics[run]["space"] == "stored values / 255 (in [0, 1])"
    for name in ("mse.png", "ssim.png", "psnr.png"):
        assert (out / "plots" / name).stat().st_size > 0
    gif = iio.imread(out / "forecast.gif", index=None)
    assert gif.shape[0] == 4 + 2  # input then future
    assert (out / "strip.png").stat().st_size > 0

    # the reported per-frame MSE is that of the model on the test windows, in [0, 1] gray values
    from convcast.data.own import FramesDataModule

    model, info = load_forecaster(trained_run["last"])
    dm = FramesDataModule(trained_run["video"], input_frames=4, output_frames=2, stride=2,
                          frame_size=16, channels=1, normalization="minmax",
                          split_fractions=(0.6, 0.2, 0.2), batch_size=4)
    dm.setup()
    norm = Normalization.from_dict(info["normalization"])
    sq, n = torch.zeros(2, dtype=torch.float64), 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            err = norm.invert(model(x, 2)) - norm.invert(y)  # [B, 2, 1, 16, 16]
            sq += (err.double() ** 2).sum(dim=(0, 2, 3, 4))
            n += x.shape[0]
    expected = (sq / n).tolist()
    np.testing.assert_allclose(metrics["next_frame"]["per_lead_time"]["mse"], expected, rtol=1e-4)


def test_validate_and_test_best_with_the_saved_config(trained_run: dict, tmp_path, capsys) -> None:
    """The run's config.yaml reproduces it; `--ckpt_path best` finds the best checkpoint."""
    cli("validate", "--ckpt_path", trained_run["last"], *FIT_QUIET)
    assert "val/loss" in capsys.readouterr().out
    cli("test", "--config", trained_run["log_dir"] / "config.yaml", "--ckpt_path", "best",
        "--out", tmp_path, "--animation", "none", *FIT_QUIET)
    err = capsys.readouterr().err
    assert "best checkpoint is" in err and "epoch=" in err
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "forecast.gif").exists()


def test_predict_video_to_npy_gif_mp4(trained_run: dict, tmp_path, capsys) -> None:
    ckpt, video = trained_run["last"], trained_run["video"]
    cli("predict", "--ckpt_path", ckpt, "--input", video, "--horizon", 7,
        "--out", tmp_path / "fc.npy", "--strip", tmp_path / "strip.png")
    err = capsys.readouterr().err
    assert "resized 24x32 -> 16x16" in err and "3 -> 1 channel" in err and "1/255" in err
    fc = np.load(tmp_path / "fc.npy")
    assert fc.shape == (7, 1, 16, 16) and fc.dtype == np.float32

    # expected: the model on the independently prepared frames, back in the video's 0..255 scale
    model, info = load_forecaster(ckpt)
    norm = Normalization.from_dict(info["normalization"])
    x = torch.from_numpy(norm.apply(_unit_frames(video, 4))).float()[None]
    with torch.no_grad():
        expected = norm.invert(model(x, 7))[0].numpy() * 255
    np.testing.assert_allclose(fc, expected, atol=0.05 * 255 / 100)  # within 0.05 % of 255
    assert iio.imread(tmp_path / "strip.png").ndim == 3

    cli("predict", "--ckpt_path", ckpt, "--input", video, "--horizon", 3,
        "--out", tmp_path / "fc.gif")
    assert iio.imread(tmp_path / "fc.gif", index=None).shape[0] == 4 + 3
    cli("predict", "--ckpt_path", ckpt, "--input", video, "--horizon", 2,
        "--out", tmp_path / "fc.mp4")
    cap = cv2.VideoCapture(str(tmp_path / "fc.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 + 2


def test_predict_frame_folder_and_arrays(trained_run: dict, tmp_path, capsys) -> None:
    ckpt = trained_run["last"]
    rng = np.random.default_rng(0)
    gray = (rng.random((12, 20, 20)) * 255).astype(np.uint8)
    folder = write_frame_folder(tmp_path / "frames", gray)
    cli("predict", "--ckpt_path", ckpt, "--input", folder, "--horizon", 2,
        "--out", tmp_path / "a.npy", "--output_size", "input")
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (2, 1, 20, 20) and a.min() >= 0 and a.max() <= 255 * 1.5
    assert "last 4 of 12 frames" in capsys.readouterr().err

    rgb = rng.random((6, 16, 16, 3)).astype(np.float32)  # [T, H, W, C] in [0, 1]
    np.save(tmp_path / "rgb.npy", rgb)
    cli("predict", "--ckpt_path", ckpt, "--input", tmp_path / "rgb.npy", "--out",
        tmp_path / "b.npy")
    err = capsys.readouterr().err
    assert "layout THWC guessed" in err
    assert np.load(tmp_path / "b.npy").shape == (2, 1, 16, 16)  # default horizon: trained 2

    np.savez(tmp_path / "seq.npz", frames=rgb.transpose(0, 3, 1, 2))  # [T, C, H, W]
    cli("predict", "--ckpt_path", ckpt, "--input", tmp_path / "seq.npz", "--out",
        tmp_path / "c.npy", "--horizon", 1)
    assert "layout TCHW guessed" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("corrupt", "cannot open video"),
    ("nan", "NaN"),
    ("short", "has 2 frames but the model reads 4"),
    ("extension", ".mp4"),
    ("ambiguous", "cannot tell the layout"),
    ("out", "valid: .npy, .gif, .mp4"),
    ("ckpt", "checkpoint"),
])
def test_predict_errors(trained_run: dict, tmp_path, capsys, case: str, message: str) -> None:
    ckpt, out = trained_run["last"], tmp_path / "fc.npy"
    inputs = {"missing": tmp_path / "nope.mp4", "corrupt": tmp_path / "bad.mp4",
              "nan": tmp_path / "nan.npy", "short": tmp_path / "short.npy",
              "extension": tmp_path / "frames.txt", "ambiguous": tmp_path / "amb.npy",
              "out": trained_run["video"], "ckpt": trained_run["video"]}
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "frames.txt").write_text("1 2 3")
    nan = np.zeros((6, 8, 8), np.float32)
    nan[2, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "short.npy", np.zeros((2, 8, 8), np.float32))
    np.save(tmp_path / "amb.npy", np.zeros((6, 3, 8, 3), np.float32))
    if case == "out":
        out = tmp_path / "fc.txt"
    if case == "ckpt":
        ckpt = tmp_path / "missing.ckpt"
    rc = main(["predict", "--ckpt_path", str(ckpt), "--input", str(inputs[case]), "--out",
               str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and message in err, err
    assert not out.exists()


def test_fit_own_frame_folders_bf16_clip_and_schedules(tmp_path) -> None:
    """A folder of frame folders with file split; bf16 autocast, gradient clipping, RMSProp and
    the cosine-with-warmup and OneCycle schedules, all from command-line flags."""
    rng = np.random.default_rng(1)
    for i in range(3):
        write_frame_folder(tmp_path / "data" / f"seq{i}", (rng.random((9, 12, 12)) * 255)
                           .astype(np.uint8))
    common = [*FIT_QUIET, "--model.model_name", "next_frame", "--model.model_kwargs",
              "{hidden_channels: 2}", "--data", "convcast.data.FramesDataModule",
              "--data.path", tmp_path / "data", "--data.input_frames", 3, "--data.output_frames",
              1, "--data.split", "file", "--data.batch_size", 2, "--images", "null"]
    root = tmp_path / "cos"
    cli("fit", *common, "--trainer.default_root_dir", root, "--trainer.max_steps", 3,
        "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", 0.5,
        "--model.optimizer", "rmsprop", "--model.scheduler", "cosine", "--model.warmup_steps", 2,
        "--model.max_steps", 6, "--model.lr", 0.01)
    ckpt = read_checkpoint(next(root.glob("**/last.ckpt")))
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["alpha"] == 0.9  # RMSProp decay 0.9 (Shi et al.)
    assert ckpt["global_step"] == ckpt["lr_schedulers"][0]["last_epoch"] == 3
    # linear warm-up over 2 steps, then cosine over the remaining 4 of 6: a quarter done
    assert group["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.25)))

    root = tmp_path / "onecycle"
    cli("fit", *common, "--trainer.default_root_dir", root, "--trainer.max_steps", 4,
        "--model.scheduler", "onecycle", "--model.lr", 0.01)
    ckpt = read_checkpoint(next(root.glob("**/last.ckpt")))
    ref = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.01), max_lr=0.01,
        total_steps=4)
    for _ in range(ckpt["lr_schedulers"][0]["last_epoch"]):
        ref.optimizer.step()
        ref.step()
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(ref.get_last_lr()[0])


@pytest.mark.parametrize("data", ["own", "moving_mnist"])
def test_resume_from_last_is_exact(tmp_path, monkeypatch, data) -> None:
    """Fit 7 steps in one go, or press Ctrl-C during step 5 (mid-epoch, shuffled data) and
    continue with `--ckpt_path last`: the same weights, optimizer state and global step."""
    from conftest import shapes_array

    if data == "own":
        np.save(tmp_path / "seqs.npy", shapes_array(3, 30))  # [N, T, H, W]
        args = ["--data", "convcast.data.FramesDataModule", "--data.path",
                tmp_path / "seqs.npy", "--data.split_fractions", "[0.6, 0.2, 0.2]"]
    else:  # 40 generated sequences of 32x32
        args = ["--data", "convcast.data.MovingMNISTDataModule", "--data.train_size", 40,
                "--data.val_size", 4, "--data.test_size", 4, "--data.image_size", 32,
                "--data.num_digits", 1]
    common = [*FIT_QUIET, "--model.model_name", "next_frame", "--model.model_kwargs",
              "{hidden_channels: 3}", *args, "--data.input_frames", 3,
              "--data.output_frames", 2, "--data.batch_size", 8, "--images", "null",
              "--trainer.max_steps", 7]
    cli("fit", *common, "--trainer.default_root_dir", tmp_path / "a")  # 5 batches per epoch

    step = ForecastSystem.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 4:
            raise KeyboardInterrupt  # what Ctrl-C raises
        return step(self, batch, batch_idx)

    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after an interrupt
    monkeypatch.setattr(ForecastSystem, "training_step", interrupted)
    try:
        rc = main(["fit", *map(str, common), "--trainer.default_root_dir", str(tmp_path / "b")])
        assert rc == 1
    finally:
        signal.signal(signal.SIGINT, handler)
    monkeypatch.setattr(ForecastSystem, "training_step", step)
    assert read_checkpoint(tmp_path / "b/lightning_logs/version_0/checkpoints/last.ckpt"
                           )["global_step"] == 4
    cli("fit", *common, "--trainer.default_root_dir", tmp_path / "b", "--ckpt_path", "last")

    a = read_checkpoint(tmp_path / "a/lightning_logs/version_0/checkpoints/last.ckpt")
    b = read_checkpoint(tmp_path / "b/lightning_logs/version_0/checkpoints/last.ckpt")
    assert not (tmp_path / "b/lightning_logs/version_1").exists()  # resumed in the same run
    assert a["global_step"] == b["global_step"] == 7
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0, msg=k)
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in sa:
        torch.testing.assert_close(sb[i]["exp_avg_sq"], sa[i]["exp_avg_sq"], rtol=0, atol=0)


def test_corrupt_video_in_data_gives_clear_error(tmp_path, capsys) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    from conftest import squares_rgb

    write_video(folder / "a.avi", squares_rgb(12))
    (folder / "b.mp4").write_bytes(b"\0" * 100)
    rc = main(["fit", *FIT_QUIET, "--trainer.default_root_dir", str(tmp_path), "--data",
               "convcast.data.FramesDataModule", "--data.path", str(folder),
               "--trainer.max_steps", "1"])
    assert rc == 1 and "cannot open video" in capsys.readouterr().err
