"""From stored frames to what a model reads, and back: the value and size conversions of frames.

`prepare_frames` turns frames as a source stores them (`[T, C, H, W]`, any dtype) into float32
`[T, C, h, w]`: integer frames are divided by their dtype's maximum (uint8: 255) so values lie in
[0, 1], float frames keep their values; channels are converted (RGB -> gray by luminance, gray ->
RGB by copy) and frames are resized (area averaging when shrinking). Radar archives have their own
preprocessing (`convcast.data.radar.preprocess`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Size = int | Sequence[int] | None


def unit_scale(dtype: np.dtype) -> float:
    """What integer frames are divided by to lie in [0, 1] (1 for floats and booleans)."""
    dtype = np.dtype(dtype)
    if dtype != np.bool_ and np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def as_size(size: Size) -> tuple[int, int] | None:
    """An int or (H, W) as a pair of positive ints (None stays None)."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"frame_size must be a positive int or (height, width), got {size}")
    return size


def convert_channels(frames: np.ndarray, channels: int | None) -> np.ndarray:
    """`[T, C, H, W]` -> `[T, channels, H, W]`: RGB -> gray by luminance, gray -> RGB by copy."""
    c = frames.shape[1]
    if channels is None or channels == c:
        return frames
    if channels == 1 and c == 3:
        w = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma
        return (frames.astype(np.float32).transpose(0, 2, 3, 1) @ w)[:, None]  # [T, 1, H, W]
    if channels == 3 and c == 1:
        return np.repeat(frames, 3, axis=1)
    raise ValueError(f"cannot convert frames with {c} channels to {channels}; only gray (1) <-> "
                     "RGB (3) conversions exist")


def resize_frames(frames: np.ndarray, size: Size) -> np.ndarray:
    """Resize float frames `[T, C, H, W]` to `size` = (h, w) (area average when shrinking)."""
    size = as_size(size)
    if size is None or tuple(frames.shape[2:]) == size:
        return frames
    h, w = size
    interp = cv2.INTER_AREA if h <= frames.shape[2] and w <= frames.shape[3] else cv2.INTER_LINEAR
    out = np.empty((frames.shape[0], frames.shape[1], h, w), dtype=np.float32)
    for t, f in enumerate(frames):  # OpenCV resizes [H, W, C] images
        r = cv2.resize(np.ascontiguousarray(f.transpose(1, 2, 0), dtype=np.float32), (w, h),
                       interpolation=interp)
        out[t] = r.reshape(h, w, -1).transpose(2, 0, 1)
    return out


def prepare_frames(frames: np.ndarray, channels: int | None = None, size: Size = None,
                   scale: float | None = None) -> np.ndarray:
    """Stored `[T, C, H, W]` -> float32 `[T, C', h, w]`: unit scaling, channels, resize.

    `scale` is what the values are divided by (default: `unit_scale` of their dtype).
    """
    scale = unit_scale(frames.dtype) if scale is None else scale
    out = frames.astype(np.float32)
    if scale != 1.0:
        out /= scale
    return np.ascontiguousarray(resize_frames(convert_channels(out, channels), size))
