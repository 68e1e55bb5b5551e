"""Rain-rate pictures: a colour scale for mm/h and animations that show it with each frame's time.

`rain_colormap()` is a discrete matplotlib colour scale over the usual rain-rate classes (0.1 to
100 mm/h, blue through green and yellow to red and magenta), with no rain left pale and missing
data (outside the radar's domain) grey, so "no rain" and "no data" never look alike.
`write_rain_animation(path, rain, labels)` writes a GIF or MP4 of rain-rate frames `[T, H, W]`,
each under its label (e.g. its valid time) and beside the colour bar; large grids are shrunk to
`max_size` pixels and small ones enlarged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from convcast.viz.animation import FONT, text_band, write_animation

RAIN_LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # mm/h class edges
NO_RAIN = (250, 250, 250)
NO_DATA = (150, 150, 150)


def rain_colormap(levels: Sequence[float] = RAIN_LEVELS):
    """`(cmap, norm)`: a matplotlib `ListedColormap` with one colour per class between
    `levels` (and one above the last) and its `BoundaryNorm`; values under the first level are
    the colormap's "under" colour (no rain), NaN its "bad" colour (no data)."""
    import matplotlib
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = len(levels)  # n - 1 classes between the levels, one above the last
    base = matplotlib.colormaps["turbo"]
    colours = [base(v) for v in np.linspace(0.12, 0.95, n - 1)] + [(0.85, 0.2, 0.85, 1.0)]
    cmap = ListedColormap(colours, name="rain_rate").with_extremes(
        under=np.array(NO_RAIN) / 255, bad=np.array(NO_DATA) / 255, over=colours[-1])
    return cmap, BoundaryNorm(list(levels) + [np.inf], n)


def rain_rgb(rain: np.ndarray, levels: Sequence[float] = RAIN_LEVELS) -> np.ndarray:
    """Rain rates `[T, H, W]` (mm/h, NaN = no data) -> uint8 RGB `[T, H, W, 3]`."""
    cmap, norm = rain_colormap(levels)
    return np.stack([cmap(norm(np.ma.masked_invalid(np.asarray(f, dtype=np.float64))),
                          bytes=True)[..., :3] for f in rain])  # one frame at a time: memory


def colour_bar(height: int, levels: Sequence[float] = RAIN_LEVELS, units: str = "mm/h"
               ) -> np.ndarray:
    """uint8 `[height, w, 3]`: the classes of `rain_colormap` bottom-up, each edge labelled."""
    cmap, _ = rain_colormap(levels)
    n = len(levels)
    top, bottom = 16, 6
    box = max(6, (height - top - bottom) // n)
    width = 58
    bar = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(bar, units, (2, 11), FONT, 0.35, (0, 0, 0), thickness=1, lineType=cv2.LINE_AA)
    for i in range(n):  # class i spans [levels[i], levels[i + 1])
        y1 = height - bottom - i * box
        colour = tuple(int(c * 255) for c in cmap(i)[:3])
        bar[max(top, y1 - box):y1, 2:14] = colour
        text = f"{levels[i]:g}"
        cv2.putText(bar, text, (17, min(height - 2, y1 + 3)), FONT, 0.32, (0, 0, 0),
                    thickness=1, lineType=cv2.LINE_AA)
    return bar


def _fit(rgb: np.ndarray, max_size: int, min_size: int) -> np.ndarray:
    """Frames `[T, H, W, 3]` shrunk (area mean) to at most `max_size` pixels on the long side,
    or enlarged (nearest) by a whole factor to at least `min_size`."""
    H, W = rgb.shape[1:3]
    if max(H, W) > max_size:
        f = max_size / max(H, W)
        size = (max(1, round(W * f)), max(1, round(H * f)))
        return np.stack([cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in rgb])
    k = max(1, min_size // max(H, W))
    return rgb.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else rgb


def write_rain_animation(path: str | Path, rain: np.ndarray, labels: Sequence[str],
                         fps: float = 4.0, levels: Sequence[float] = RAIN_LEVELS,
                         max_size: int = 600, min_size: int = 256) -> Path:
    """Write rain-rate frames `[T, H, W]` (mm/h, NaN = no data) as `.gif` / `.mp4`, each frame
    under its label (e.g. "+10 min  2016-09-28 18:10 UTC") and beside the colour bar."""
    rain = np.asarray(rain, dtype=np.float32)
    if rain.ndim != 3:
        raise ValueError(f"expected rain-rate frames [T, H, W], got shape {rain.shape}")
    if len(labels) != len(rain):
        raise ValueError(f"{len(labels)} labels for {len(rain)} frames")
    rgb = _fit(rain_rgb(rain, levels), max_size, min_size)  # [T, h, w, 3]
    h, w = rgb.shape[1:3]
    bar = colour_bar(h, levels)
    frames = []
    for img, label in zip(rgb, labels, strict=True):
        body = np.concatenate([img, bar], axis=1)
        frames.append(np.concatenate([text_band(body.shape[1], [(0, body.shape[1], label)],
                                                height=18), body]))
    video = np.stack(frames).astype(np.float32) / 255  # [T, H', W', 3] in [0, 1]
    return write_animation(path, video.transpose(0, 3, 1, 2), fps=fps)
