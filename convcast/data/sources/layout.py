"""Axis layouts of frame arrays, named by letters: N (sequence), T (time), C (channel), H, W.

A layout is guessed from the shape where the channel axis can be told by its size (1 or 3);
otherwise pass `layout` (e.g. `TNHW` for the standard `mnist_test_seq.npy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHANNEL_SIZES = (1, 3)
HINT = ("pass the layout explicitly (letters N sequence, T time, C channel, H, W; e.g. TCHW, "
        "THWC, NTHW, TNHW)")


def guess_layout(shape: Sequence[int], sequences: bool = True) -> str:
    """The layout of an array shape, telling the channel axis by its size (1 or 3).

    3-D: THW. 4-D: TCHW or THWC when exactly one of axis 1 / axis 3 has size 1 or 3, else NTHW
    (several gray sequences; only with `sequences=True`). 5-D: NTCHW or NTHWC.
    Raises with a hint where the shape is ambiguous.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return "THW"
    if len(shape) == 4:
        c1, c3 = shape[1] in CHANNEL_SIZES, shape[3] in CHANNEL_SIZES
        if c1 and not c3:
            return "TCHW"
        if c3 and not c1:
            return "THWC"
        if not c1 and not c3 and sequences:
            return "NTHW"
        what = "both axis 1 and axis 3 could be" if c1 else "neither axis 1 nor axis 3 is"
        raise ValueError(f"cannot tell the layout of an array of shape {shape}: {what} a channel "
                         f"axis of size 1 or 3; {HINT}")
    if len(shape) == 5 and sequences:
        c2, c4 = shape[2] in CHANNEL_SIZES, shape[4] in CHANNEL_SIZES
        if c2 != c4:
            return "NTCHW" if c2 else "NTHWC"
        raise ValueError(f"cannot tell the channel axis of an array of shape {shape}; {HINT}")
    valid = "[T,H,W], [T,C,H,W], [T,H,W,C]" + (", [N,T,H,W], [N,T,C,H,W]" if sequences else "")
    raise ValueError(f"an array of shape {shape} is not a sequence of frames; expected {valid}")


def time_first_layout(shape: Sequence[int], where: str) -> str:
    """The layout of an archive stored time first: `[T, H, W]` or `[T, C, H, W]`."""
    if len(shape) == 3:
        return "THW"
    if len(shape) == 4:
        return "TCHW"
    raise ValueError(f"{where} has shape {tuple(shape)}; expected frames [T, H, W] or "
                     "[T, C, H, W] with time first")


def check_layout(layout: str, ndim: int) -> str:
    layout = layout.upper()
    if (len(layout) != ndim or len(set(layout)) != ndim or not set(layout) <= set("NTCHW")
            or not {"T", "H", "W"} <= set(layout)):
        raise ValueError(f"layout {layout!r} does not fit a {ndim}-D array: use each of T, H, W "
                         "once, and optionally N (sequence) and C (channel)")
    return layout


def frame_shape(layout: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """`(C, H, W)` of the frames of an array of `shape` in `layout`."""
    sizes = dict(zip(layout, shape, strict=True))
    return sizes.get("C", 1), sizes["H"], sizes["W"]


def index_sequence(arr, layout: str, n: int | None, start: int, stop: int) -> np.ndarray:
    """Frames `start:stop` of sequence `n` of an array-like in `layout`, as `[T, C, H, W]`.

    Only the window is read: a memory map or an HDF5 dataset loads just those frames.
    """
    index = tuple(n if a == "N" else slice(start, stop) if a == "T" else slice(None)
                  for a in layout)
    window = np.asarray(arr[index])
    kept = [a for a in layout if a != "N"]
    if "C" not in kept:
        window, kept = window[..., None], [*kept, "C"]
    return window.transpose([kept.index(a) for a in "TCHW"])
