"""Side-by-side animations and strips of sequences: GIF and MP4 through imageio, PNG strips.

Every writer builds the file under a temporary name and moves it into place, so a crash never
leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def to_uint8_frames(seq: ArrayLike, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """`[T,C,H,W]`, `[T,H,W]` (float in [vmin, vmax]) -> uint8 `[T,H,W,3]` for writing."""
    a = seq.detach().float().cpu().numpy() if isinstance(seq, torch.Tensor) else np.asarray(seq)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"expected a sequence [T,C,H,W] or [T,H,W], got shape {a.shape}")
    a = np.nan_to_num((a.astype(np.float32) - vmin) / max(vmax - vmin, 1e-12), nan=0.0)
    a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.shape[1] == 1:
        a = np.repeat(a, 3, axis=1)
    elif a.shape[1] != 3:
        a = np.repeat(a[:, :1], 3, axis=1)  # show the first channel of multi-channel data
    return a.transpose(0, 2, 3, 1)  # [T, H, W, 3]


def _panel_rows(panels: Mapping[str, ArrayLike], vmin: float, vmax: float,
                sep: int = 2) -> np.ndarray:
    """Panels side by side, each padded in time to the longest: uint8 `[T, H, W_total, 3]`."""
    frames = [to_uint8_frames(p, vmin, vmax) for p in panels.values()]
    T = max(f.shape[0] for f in frames)
    H = max(f.shape[1] for f in frames)
    cols = []
    for f in frames:
        pad = np.zeros((T, H, f.shape[2], 3), np.uint8)
        pad[: f.shape[0], : f.shape[1]] = f
        if f.shape[0] < T:  # hold the last frame of a shorter panel
            pad[f.shape[0]:, : f.shape[1]] = f[-1]
        cols.append(pad)
        cols.append(np.full((T, H, sep, 3), 128, np.uint8))
    return np.concatenate(cols[:-1], axis=2)


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_animation(path: str | Path, panels: Mapping[str, ArrayLike] | ArrayLike,
                    fps: float = 4.0, vmin: float = 0.0, vmax: float = 1.0,
                    scale: int = 1) -> Path:
    """Write `.gif` or `.mp4` of one sequence or of named panels side by side (e.g. input, truth,
    forecast), each `[T,C,H,W]` or `[T,H,W]`; shorter panels hold their last frame."""
    path = Path(path)
    if not isinstance(panels, Mapping):
        panels = {"": panels}
    video = _panel_rows(panels, vmin, vmax)
    if scale > 1:
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        def write(tmp: str) -> None:
            iio.imwrite(tmp, video, extension=".gif", duration=1000 / fps, loop=0)
    elif suffix == ".mp4":
        h, w = video.shape[1:3]  # codecs want sides in multiples of 16 (macro blocks)
        video = np.pad(video, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)))

        def write(tmp: str) -> None:
            iio.imwrite(tmp, video, extension=".mp4", fps=fps, codec="libx264",
                        plugin="pyav" if _has_pyav() else None)
    else:
        raise ValueError(f"unsupported animation format {path.suffix!r}; use .gif or .mp4")
    return _atomic_write(path, write)


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def write_strip(path: str | Path, rows: Mapping[str, ArrayLike], vmin: float = 0.0,
                vmax: float = 1.0, scale: int = 1) -> Path:
    """PNG with one row per named sequence (e.g. input / truth / forecast), frames left to right."""
    strips = []
    for seq in rows.values():
        f = to_uint8_frames(seq, vmin, vmax)  # [T, H, W, 3]
        strips.append(np.concatenate(list(f), axis=1))
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 2), (0, width - s.shape[1]), (0, 0)), constant_values=128)
              for s in strips]
    img = np.concatenate(strips, axis=0)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    return _atomic_write(Path(path), lambda tmp: iio.imwrite(tmp, img, extension=".png"))


def frame_grid(rows: Sequence[ArrayLike], vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """uint8 `[H_total, W_total, 3]` grid, one row per sequence (for TensorBoard images)."""
    strips = [np.concatenate(list(to_uint8_frames(r, vmin, vmax)), axis=1) for r in rows]
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 2), (0, width - s.shape[1]), (0, 0))) for s in strips]
    return np.concatenate(strips, axis=0)
