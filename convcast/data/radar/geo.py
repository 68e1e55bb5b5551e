"""The georeference of a radar grid, carried through crop, block-mean downsampling and resize.

A `Grid` is pysteps' description of a composite (`pysteps.io.importers` metadata): a PROJ string,
the outer edges `x1, y1, x2, y2` of the grid in its cartesian unit, the pixel size, and
`yorigin` ("upper": row 0 is the northern edge y2, as in most composites; "lower": row 0 is y1).
Each preprocessing step maps the grid as it maps the frames, so a forecast on a cropped 4-km grid
is placed on the map as exactly as the 1-km archive it came from. Grids in km (KNMI) are
converted to metres once, projection included, so every output speaks metres.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

Window = tuple[int, int, int, int]  # (top, left, bottom, right) rows and columns, end exclusive


@dataclass(frozen=True)
class Grid:
    """A regular projected grid of `shape` (H, W) pixels (see the module docstring)."""

    projection: str
    x1: float
    y1: float
    x2: float
    y2: float
    xpixelsize: float
    ypixelsize: float
    shape: tuple[int, int]
    yorigin: str = "upper"
    unit: str = "m"

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None, shape: tuple[int, int]) -> Grid | None:
        """The grid of pysteps importer metadata for frames of `shape` (None: not georeferenced).

        Some importers give the centres of the edge pixels as x1..x2 (BoM rf3); that is detected
        by the extent spanning W - 1 pixels instead of W, and widened by half a pixel."""
        meta = meta or {}
        keys = ("projection", "x1", "y1", "x2", "y2")
        if any(meta.get(k) is None for k in keys) or not str(meta["projection"]).strip():
            return None
        H, W = int(shape[0]), int(shape[1])
        x1, y1, x2, y2 = (float(meta[k]) for k in keys[1:])
        xs = float(meta.get("xpixelsize") or (x2 - x1) / W)
        ys = float(meta.get("ypixelsize") or (y2 - y1) / H)
        x1, x2 = _edges(x1, x2, xs, W)
        y1, y2 = _edges(y1, y2, ys, H)
        grid = cls(projection=str(meta["projection"]).strip(), x1=x1, y1=y1, x2=x2, y2=y2,
                   xpixelsize=xs, ypixelsize=ys, shape=(H, W),
                   yorigin=str(meta.get("yorigin") or "upper"),
                   unit=str(meta.get("cartesian_unit") or "m"))
        if grid.yorigin not in ("upper", "lower"):
            raise ValueError(f"unknown yorigin {grid.yorigin!r} in the archive's metadata; "
                             "expected 'upper' or 'lower'")
        return grid.in_metres()

    @property
    def pixel_km(self) -> float:
        """The pixel size in km (the x spacing of a grid in metres)."""
        return abs(self.xpixelsize) / 1000

    def in_metres(self) -> Grid:
        """The same grid with coordinates in metres (km grids and their PROJ string scaled)."""
        if self.unit in ("m", "metre", "meter", "metres", "meters"):
            return replace(self, unit="m")
        if self.unit != "km":
            raise ValueError(f"grid unit {self.unit!r} is not supported; expected m or km")
        proj = re.sub(r"\+(a|b|x_0|y_0)=([-+0-9.eE]+)",
                      lambda m: f"+{m.group(1)}={float(m.group(2)) * 1000:.12g}", self.projection)
        k = 1000.0
        return Grid(projection=proj, x1=self.x1 * k, y1=self.y1 * k, x2=self.x2 * k,
                    y2=self.y2 * k, xpixelsize=self.xpixelsize * k,
                    ypixelsize=self.ypixelsize * k, shape=self.shape, yorigin=self.yorigin,
                    unit="m")

    # ---- the preprocessing steps -------------------------------------------------------------
    def window(self, win: Window) -> Grid:
        """The grid of pixels `rows top:bottom, columns left:right`."""
        top, left, bottom, right = win
        H, W = self.shape
        if not (0 <= top < bottom <= H and 0 <= left < right <= W):
            raise ValueError(f"window {win} (top, left, bottom, right) is outside the {H}x{W} "
                             "grid")
        x1, x2 = self.x1 + left * self.xpixelsize, self.x1 + right * self.xpixelsize
        if self.yorigin == "upper":
            y1, y2 = self.y2 - bottom * self.ypixelsize, self.y2 - top * self.ypixelsize
        else:
            y1, y2 = self.y1 + top * self.ypixelsize, self.y1 + bottom * self.ypixelsize
        return replace(self, x1=x1, y1=y1, x2=x2, y2=y2, shape=(bottom - top, right - left))

    def coarsen(self, factor: int) -> Grid:
        """The grid of `factor` x `factor` block means (a remainder of rows/columns dropped)."""
        if factor == 1:
            return self
        H, W = self.shape
        g = self.window((0, 0, H - H % factor, W - W % factor))
        return replace(g, xpixelsize=g.xpixelsize * factor, ypixelsize=g.ypixelsize * factor,
                       shape=(g.shape[0] // factor, g.shape[1] // factor))

    def resized(self, shape: tuple[int, int]) -> Grid:
        """The same extent seen as `shape` (H, W) pixels."""
        h, w = int(shape[0]), int(shape[1])
        return replace(self, xpixelsize=(self.x2 - self.x1) / w,
                       ypixelsize=(self.y2 - self.y1) / h, shape=(h, w))

    def window_of(self, box: tuple[float, float, float, float]) -> Window:
        """The pixel window covering `box` (x1, y1, x2, y2) in the grid's coordinates (edges
        within a thousandth of a pixel of a pixel edge count as on it)."""
        bx1, by1, bx2, by2 = (float(v) for v in box)
        if not (bx1 < bx2 and by1 < by2):
            raise ValueError(f"crop_box must be (x1, y1, x2, y2) with x1 < x2 and y1 < y2, got "
                             f"{box}")
        H, W = self.shape
        left = max(0, math.floor((bx1 - self.x1) / self.xpixelsize + 1e-3))
        right = min(W, math.ceil((bx2 - self.x1) / self.xpixelsize - 1e-3))
        if self.yorigin == "upper":
            top = max(0, math.floor((self.y2 - by2) / self.ypixelsize + 1e-3))
            bottom = min(H, math.ceil((self.y2 - by1) / self.ypixelsize - 1e-3))
        else:
            top = max(0, math.floor((by1 - self.y1) / self.ypixelsize + 1e-3))
            bottom = min(H, math.ceil((by2 - self.y1) / self.ypixelsize - 1e-3))
        if left >= right or top >= bottom:
            raise ValueError(f"crop_box {box} does not overlap the grid ({self.x1:g}, "
                             f"{self.y1:g}, {self.x2:g}, {self.y2:g}) {self.unit}")
        return top, left, bottom, right

    # ---- coordinates -------------------------------------------------------------------------
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates `[W]`, in column order."""
        return self.x1 + (np.arange(self.shape[1]) + 0.5) * self.xpixelsize

    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates `[H]`, in row order (descending for yorigin upper)."""
        rows = (np.arange(self.shape[0]) + 0.5) * self.ypixelsize
        return self.y2 - rows if self.yorigin == "upper" else self.y1 + rows

    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Longitude and latitude of every pixel centre, `[H, W]` each (needs pyproj)."""
        crs = self.crs()
        from pyproj import Transformer

        xx, yy = np.meshgrid(self.x(), self.y())
        t = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        return t.transform(xx, yy)

    def crs(self):
        """The projection as a `pyproj.CRS`."""
        try:
            from pyproj import CRS
        except ImportError as err:
            raise ImportError("georeferenced output needs pyproj: pip install 'convcast[nowcast]'"
                              ) from err
        return CRS.from_proj4(self.projection)

    def same_as(self, other: Grid, tol: float = 1e-3) -> bool:
        """Whether `other` is this grid (projection, shape and extent within `tol` pixels)."""
        return (self.projection.split() == other.projection.split()
                and self.shape == other.shape and self.yorigin == other.yorigin
                and all(abs(a - b) <= tol * self.xpixelsize for a, b in
                        zip((self.x1, self.y1, self.x2, self.y2),
                            (other.x1, other.y1, other.x2, other.y2), strict=True)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Grid | None:
        if not d:
            return None
        return cls(str(d["projection"]), *(float(d[k]) for k in ("x1", "y1", "x2", "y2",
                                                                   "xpixelsize", "ypixelsize")),
                   (int(d["shape"][0]), int(d["shape"][1])), str(d.get("yorigin", "upper")),
                   str(d.get("unit", "m")))


def _edges(lo: float, hi: float, size: float, n: int) -> tuple[float, float]:
    """Outer edges from `lo..hi`, which are either the edges or the centres of the end pixels."""
    lo, hi = min(lo, hi), max(lo, hi)
    if n > 1 and abs((hi - lo) - (n - 1) * size) < 0.01 * size < abs((hi - lo) - n * size):
        return lo - size / 2, hi + size / 2
    return lo, hi
