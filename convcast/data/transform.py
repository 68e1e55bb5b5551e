"""From stored frames to what a model reads, and back: the value and size conversions of frames.

`prepare_frames` turns frames as a source stores them (`[T, C, H, W]`, any dtype) into float32
`[T, C, h, w]`: integer frames are divided by a scale so values lie in [0, 1] (or [-1, 1]), float
frames keep their values; channels are converted (RGB -> gray by luminance, gray -> RGB by copy)
and frames are resized (area averaging when shrinking). Radar archives have their own
preprocessing (`convcast.data.radar.preprocess`).

The scale of integer frames (`unit_scale`): for types of at most 16 bits their type's maximum
(uint8: 255, uint16: 65535); for wider ones (int32, int64: what `np.array` makes of Python ints)
never the type's maximum (9.22e18 for int64 would turn every frame into zeros) but the values'
own range (`range_scale`): 255 where they fit 8 bits, 65535 where they fit 16, else their
largest magnitude. `source_scale` finds it over whole sequences, so every window of a data set is
divided alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Size = int | Sequence[int] | None


NARROW_BITS = 16  # integer types up to this wide are scaled by their maximum
SCAN_BYTES = 64 * 2**20  # frames read at a time by `source_scale`


def dtype_scale(dtype: np.dtype) -> float | None:
    """The scale a type fixes: 1 for floats and booleans, the maximum of an integer type of at
    most 16 bits (uint8: 255); None for wider integers, whose scale comes from their values."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        return 1.0
    if dtype.itemsize * 8 <= NARROW_BITS:
        return float(np.iinfo(dtype).max)
    return None


def value_peak(values: np.ndarray) -> float:
    """The largest magnitude among `values` (0 for none)."""
    a = np.asarray(values)
    if a.size == 0:
        return 0.0
    return float(max(abs(int(a.min())), abs(int(a.max())))) if np.issubdtype(
        a.dtype, np.integer) else float(np.nanmax(np.abs(a)))


def range_scale(peak: float) -> float:
    """The scale of wide integer values whose largest magnitude is `peak`: 255 where they fit
    8 bits, 65535 where they fit 16 (so they read as uint8 / uint16 frames would), else `peak`."""
    for bits in (8, 16):
        if peak <= 2**bits - 1:
            return float(2**bits - 1)
    return float(peak)


def unit_scale(dtype: np.dtype, values: np.ndarray | None = None) -> float:
    """What integer frames are divided by to lie in [0, 1] (1 for floats and booleans): the
    maximum of a type of at most 16 bits, else (int32, int64) the `range_scale` of `values`."""
    fixed = dtype_scale(dtype)
    if fixed is not None:
        return fixed
    if values is None:
        raise ValueError(f"{np.dtype(dtype)} frames have no fixed scale (the type's maximum, "
                         f"{float(np.iinfo(dtype).max):.3g}, would turn them into zeros): give "
                         "their values, or the scale a model was trained on")
    return range_scale(value_peak(values))


def describe_scale(dtype: np.dtype, scale: float, peak: float | None = None) -> str:
    """Where `scale` comes from, in words, for a log line."""
    dtype = np.dtype(dtype)
    if dtype_scale(dtype) == scale:
        return f"the maximum of {dtype}"
    if dtype_scale(dtype) is None and peak is not None and range_scale(peak) == scale:
        fits = {255.0: ", which fit 8 bits", 65535.0: ", which fit 16 bits"}.get(scale, "")
        return (f"from the values present: largest magnitude {peak:g}{fits}; never the "
                f"maximum of {dtype}")
    return "the scale given"


def source_scale(sources: Sequence, peak: bool = False) -> float | tuple[float, float]:
    """The `unit_scale` of the frames of every source in `sources` (objects with `dtype`,
    `num_frames`, `frame_shape` and `read(start, stop)`, such as `FrameSource`s): for a wide
    integer type, the `range_scale` of all their values, read a few frames at a time. With
    `peak=True`, `(scale, largest magnitude)` (the magnitude is NaN where the type fixes the
    scale)."""
    wide = [s for s in sources if dtype_scale(s.dtype) is None]
    if not wide:  # the type fixes the scale (sources of other types are refused elsewhere)
        scale = max((dtype_scale(s.dtype) for s in sources), default=1.0)
        return (scale, float("nan")) if peak else scale
    top = 0.0
    for s in wide:
        step = max(1, SCAN_BYTES // max(1, int(np.prod(s.frame_shape)) * s.dtype.itemsize))
        for i in range(0, s.num_frames, step):
            top = max(top, value_peak(s.read(i, min(i + step, s.num_frames))))
    scale = range_scale(top)
    return (scale, top) if peak else scale


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

    `scale` is what the values are divided by (default: `unit_scale` of their dtype, for a type
    wider than 16 bits of these frames' own values: give the scale of the whole data instead,
    `source_scale`, so that every window is divided alike).
    """
    scale = unit_scale(frames.dtype, frames) if scale is None else scale
    out = frames.astype(np.float32)
    if scale != 1.0:
        out /= scale
    return np.ascontiguousarray(resize_frames(convert_channels(out, channels), size))
