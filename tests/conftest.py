"""Shared fixtures: tiny videos, frame folders and arrays, and one tiny trained run of the CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from convcast.data.synthetic.moving_shapes import render_moving_shapes


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Caches (downloads, decoded frames) go to a folder of this test session, not the user's."""
    import os

    old = os.environ.get("CONVCAST_CACHE")
    os.environ["CONVCAST_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("CONVCAST_CACHE", None)
    else:
        os.environ["CONVCAST_CACHE"] = old


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not stall on a shared, busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def squares_rgb(num_frames: int, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames `[T, H, W, 3]` of a moving coloured square on a dark background."""
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, height, width, 3), 20, np.uint8)
    y, x = rng.integers(0, height - 6), rng.integers(0, width - 6)
    for t in range(num_frames):
        frames[t, y:y + 6, x:x + 6] = (230, 120, 40)
        y, x = (y + 1) % (height - 6), (x + 2) % (width - 6)
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float = 5.0) -> Path:
    """Write uint8 RGB frames `[T, H, W, 3]` as a video with OpenCV (mp4v for .mp4, MJPG else)."""
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))  # RGB -> BGR
    writer.release()
    return path


def write_frame_folder(folder: Path, frames: np.ndarray, ext: str = ".png") -> Path:
    """One image per frame, named so that plain string order would be wrong (1, 2, ..., 10)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        img = f[:, :, ::-1] if f.ndim == 3 and f.shape[2] == 3 else f
        cv2.imwrite(str(folder / f"frame{t + 1}{ext}"), img)
    return folder


def shapes_array(num_sequences: int, num_frames: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """float32 `[N, T, H, W]` moving-squares sequences."""
    rng = np.random.default_rng(seed)
    return np.stack([render_moving_shapes(rng, num_frames, size=4, frame_size=size)
                     for _ in range(num_sequences)])


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 24x32 RGB .mp4 of a moving square."""
    return write_video(tmp_path_factory.mktemp("video") / "squares.mp4", squares_rgb(40))


def cli(*args: str) -> int:
    """Run `convcast ARGS` in this process; fail the test on a nonzero exit status."""
    from convcast.cli.main import main

    rc = main([str(a) for a in args])
    assert rc == 0, f"convcast {' '.join(map(str, args))} exited with {rc}"
    return rc


FIT_QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--trainer.accelerator", "cpu")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_video: Path) -> dict:
    """One tiny `convcast fit` on the video (RGB -> gray, resized to 16x16, minmax-normalised):
    4 steps of a small next_frame model. Returns its paths."""
    root = tmp_path_factory.mktemp("run")
    cli("fit", *FIT_QUIET, "--trainer.default_root_dir", root, "--trainer.max_steps", 4,
        "--trainer.log_every_n_steps", 1,
        "--model.model_name", "next_frame", "--model.model_kwargs", "{hidden_channels: 4}",
        "--data", "convcast.data.FramesDataModule", "--data.path", tiny_video,
        "--data.input_frames", 4, "--data.output_frames", 2, "--data.stride", 2,
        "--data.frame_size", 16, "--data.channels", 1, "--data.normalization", "minmax",
        "--data.split_fractions", "[0.6, 0.2, 0.2]", "--data.batch_size", 4,
        "--images.every_n_steps", 2)
    log_dir = root / "lightning_logs" / "version_0"
    return {"root": root, "log_dir": log_dir, "last": log_dir / "checkpoints" / "last.ckpt",
            "video": tiny_video}
