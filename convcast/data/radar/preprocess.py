"""The preprocessing of Shi et al. (2015, section 4.2) as options, and clutter from statistics.

The paper: intensities to gray levels by min–max normalisation P = (Z − min Z) / (max Z − min Z),
crop the central 330×330 region, apply "the disk filter with radius 10" (a pillbox mean over a disk,
MATLAB's `fspecial('disk', 10)`: it smooths speckle), resize to 100×100, and blank noisy regions
found from long-term pixel statistics (they used K-means on monthly pixel means).
Here, in that order: crop (on raw values: a centre crop (h, w), or a window (top, left, bottom,
right) of the grid), units -> dBZ, block-mean downsampling (`downsample` k: k×k blocks averaged
as rain rate, the linear quantity, e.g. 1 km -> 4 km), dBZ -> pixels in [0, 1] (by default
HKO-7's (dBZ + 10) / 70, so `convcast.data.units` converts back; or min–max over a `dbz_range`),
disk filter, resize, then the static masks (a user mask, the circle of radar range, clutter) set
invalid pixels to NaN. NaN pixels (missing data) stay out of every average: the block mean, the
disk filter and the resize are normalised over valid pixels, and a pixel with less than half
valid support becomes NaN. `output_grid` maps the georeference (`convcast.data.radar.geo`) as the
frames are mapped.
"""

from __future__ import annotations

import numpy as np
import torch

from convcast.data.radar.archive import UNITS
from convcast.data.radar.geo import Grid, Window
from convcast.data.units import (
    HKO_ZR,
    dbz_to_pixel,
    dbz_to_rainrate,
    pixel_to_dbz,
    rainrate_to_dbz,
)

CLUTTER_METHODS = ("none", "frequency", "kmeans")
Size = int | tuple[int, int] | list[int] | None
Crop = int | tuple[int, ...] | list[int] | None  # centre (h, w), or (top, left, bottom, right)


DRY_MMH = 0.1  # mm/h: no rain below this where an archive states no threshold (pysteps' usual)


def _pair(size: Size, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(int(v) != v or v < 1 for v in hw):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _crop_spec(crop: Crop) -> tuple[int, ...] | None:
    """A crop as (h, w) (centre crop) or (top, left, bottom, right) (a window of the grid)."""
    if crop is None:
        return None
    if isinstance(crop, int) or len(crop) == 2:
        return _pair(crop, "crop")
    c = tuple(crop)
    if len(c) != 4 or any(int(v) != v or v < 0 for v in c) or not (c[0] < c[2] and c[1] < c[3]):
        raise ValueError(f"crop must be a size h or (h, w) (centre crop) or a window (top, left, "
                         f"bottom, right) of pixels with top < bottom and left < right, got "
                         f"{crop!r}")
    return tuple(int(v) for v in c)


def crop_window(crop: tuple[int, ...] | None, height: int, width: int) -> Window:
    """The window (top, left, bottom, right) that `crop` cuts from a `height` x `width` frame."""
    if crop is None:
        return 0, 0, height, width
    if len(crop) == 2:
        h, w = crop
        if h > height or w > width:
            raise ValueError(f"crop {crop} is larger than the frames ({height}, {width})")
        top, left = (height - h) // 2, (width - w) // 2
        return top, left, top + h, left + w
    top, left, bottom, right = crop
    if bottom > height or right > width:
        raise ValueError(f"crop window {crop} (top, left, bottom, right) reaches outside the "
                         f"{height}x{width} frames")
    return top, left, bottom, right


def block_mean(frames: np.ndarray, k: int) -> np.ndarray:
    """`[N, H, W]` -> `[N, H//k, W//k]`: the mean of each k×k block over its valid (non-NaN)
    pixels, NaN where under half of the block is valid; a remainder of rows/columns is dropped."""
    N, H, W = frames.shape
    a = frames[:, :H - H % k, :W - W % k].reshape(N, H // k, k, W // k, k)
    valid = np.isfinite(a)
    count = valid.sum((2, 4))
    total = np.where(valid, a, 0).sum((2, 4), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= k * k / 2, total / count, np.nan).astype(np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """Uniform disk (pillbox) kernel of `radius` pixels, summing to 1."""
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = (yy**2 + xx**2 <= radius**2).astype(np.float32)
    return k / k.sum()


def _masked_filter(frames: np.ndarray, op) -> np.ndarray:
    """Apply a linear 2-D `op` to `[N, H, W]` frames with NaN as missing (normalised convolution):
    out = op(values·valid) / op(valid), NaN where under half of the support is valid."""
    valid = np.isfinite(frames)
    if valid.all():
        return np.stack([op(f) for f in frames])
    num = np.stack([op(np.where(v, f, 0).astype(np.float32)) for f, v in zip(frames, valid,
                                                                               strict=True)])
    den = np.stack([op(v.astype(np.float32)) for v in valid])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den >= 0.5, num / np.maximum(den, 1e-6), np.nan).astype(np.float32)


class RadarPreprocess:
    """Raw frames `[n, C, H, W]` in `units` -> model pixels `[n, C, h, w]` in [0, 1], NaN invalid.

    Args:
        units: units of the raw data, one of `UNITS` (see `convcast.data.radar.archive`).
        dbz_range: min–max normalisation bounds in dBZ; None is HKO-7's (-10, 60), which makes
            the pixels exactly `convcast.data.units.dbz_to_pixel`. Values outside are clipped.
        crop: centre crop (h, w) of the raw frame (Shi et al.: 330), or a window (top, left,
            bottom, right) of its pixels.
        downsample: k: average k×k blocks (as rain rate) after the crop; 1 keeps the grid.
        disk_radius: radius of the disk mean filter in pixels of the cropped frame (Shi et al.:
            10); 0 disables it.
        resize: output size (h, w) (Shi et al.: 100), area-averaged when shrinking.
        zr: (a, b) of Z = a R^b for rain-rate data and for `to_rainrate`.
        valid: static mask of valid pixels on the output grid (True = valid), or None.
        accutime: minutes an accumulation (units `mm`) is summed over (mm -> mm/h: × 60/accutime).
        threshold: raw values below it are no rain (pysteps' rain/no-rain threshold).
        zerovalue: the raw value of no rain, given back by `from_pixel` (e.g. -32 dBZ).
    """

    def __init__(self, units: str, *, dbz_range: tuple[float, float] | None = None,
                 crop: Crop = None, disk_radius: float = 0.0, resize: Size = None,
                 zr: tuple[float, float] = HKO_ZR, valid: np.ndarray | None = None,
                 downsample: int = 1, accutime: float | None = None,
                 threshold: float | None = None, zerovalue: float | None = None) -> None:
        if units not in UNITS:
            raise ValueError(f"unknown units {units!r}; valid: {', '.join(UNITS)}")
        if dbz_range is not None and not dbz_range[0] < dbz_range[1]:
            raise ValueError(f"dbz_range must be (low, high) with low < high, got {dbz_range!r}")
        if disk_radius < 0:
            raise ValueError(f"disk_radius must be >= 0, got {disk_radius}")
        if int(downsample) != downsample or downsample < 1:
            raise ValueError(f"downsample must be a whole factor >= 1 (e.g. 4: 1 km -> 4 km), got "
                             f"{downsample!r}")
        if units == "mm" and not (accutime and accutime > 0):
            raise ValueError("an accumulation archive (units mm) needs its accumulation time: "
                             "pass accutime= the minutes each value sums (e.g. 5)")
        self.units, self.dbz_range = units, None if dbz_range is None else tuple(dbz_range)
        self.crop, self.resize = _crop_spec(crop), _pair(resize, "resize")
        self.disk_radius, self.zr = float(disk_radius), tuple(zr)
        self.valid, self.downsample = valid, int(downsample)
        self.accutime = None if accutime is None else float(accutime)
        self.threshold, self.zerovalue = threshold, zerovalue

    # ---- units -------------------------------------------------------------------------------
    def raw_to_dbz(self, raw: np.ndarray) -> np.ndarray:
        if self.threshold is not None and self.units in ("dbz", "rainrate", "mm"):
            no_rain = -np.inf if self.units == "dbz" else 0.0
            raw = np.where(raw < self.threshold, np.float32(no_rain), raw)  # NaN stays NaN
        with np.errstate(divide="ignore"):  # rain rate 0 is -inf dBZ, clipped to 0 below
            if self.units == "gray":
                return pixel_to_dbz(raw / 255.0)
            if self.units == "pixel":
                return pixel_to_dbz(raw)
            if self.units == "rainrate":
                return rainrate_to_dbz(raw, *self.zr)
            if self.units == "mm":
                return rainrate_to_dbz(raw * (60.0 / self.accutime), *self.zr)
            return raw

    def dbz_to_model(self, dbz):
        if self.dbz_range is None:
            p = dbz_to_pixel(dbz)
        else:
            lo, hi = self.dbz_range
            p = (dbz - lo) / (hi - lo)
        return p.clip(0, 1) if isinstance(p, torch.Tensor) else np.clip(p, 0, 1)

    def to_dbz(self, pixels):
        """Model pixels (numpy or torch) to reflectivity in dBZ."""
        if self.dbz_range is None:
            return pixel_to_dbz(pixels)
        lo, hi = self.dbz_range
        return pixels * (hi - lo) + lo

    def to_rainrate(self, pixels):
        """Model pixels (numpy or torch) to rain rate in mm/h (for thresholds such as 0.5)."""
        return dbz_to_rainrate(self.to_dbz(pixels), *self.zr)

    @property
    def rain_threshold(self) -> float:
        """The rain rate (mm/h) below which a forecast value is no rain: pysteps' usual
        0.1 mm/h, or the smallest rain the archive records (its metadata's `threshold`) where
        that is lower. A model's output a hair above the floor of the value range (-10 dBZ for
        HKO-7 pixels: 0.017 mm/h) is no rain, so a dry input stays dry."""
        t = self.threshold
        if t is None or self.units in ("gray", "pixel"):
            return DRY_MMH
        if self.units == "dbz":
            rate = float(dbz_to_rainrate(float(t), *self.zr))
        elif self.units == "mm":
            rate = float(t) * 60.0 / self.accutime
        else:
            rate = float(t)
        return min(DRY_MMH, rate) if rate > 0 else DRY_MMH

    def dry(self, pixels: np.ndarray) -> np.ndarray:
        """Where model pixels are no rain: at or below 0, or below `rain_threshold`."""
        with np.errstate(invalid="ignore"):
            return (pixels <= 0) | (self.to_rainrate(pixels) < self.rain_threshold)

    def from_pixel(self, pixels: np.ndarray) -> np.ndarray:
        """Model pixels back to the raw data's units (no rain, see `dry`, is rain rate 0, and
        the archive's `zerovalue` in dBZ where it has one)."""
        dry = self.dry(pixels)
        dbz = self.to_dbz(pixels)
        if self.units == "gray":
            return dbz_to_pixel(dbz) * 255.0
        if self.units == "pixel":
            return dbz_to_pixel(dbz)
        if self.units in ("rainrate", "mm"):
            rain = np.where(dry, 0.0, dbz_to_rainrate(dbz, *self.zr))
            return rain * (self.accutime / 60.0) if self.units == "mm" else rain
        if self.zerovalue is not None:
            return np.where(dry, self.zerovalue, dbz)
        return dbz

    def physical(self, pixels: np.ndarray) -> tuple[np.ndarray, str]:
        """Model pixels as the archive's physical quantity: its accumulation (mm per accutime
        minutes) for an accumulation archive, else rain rate (mm/h); and that unit."""
        if self.units == "mm":
            return self.from_pixel(pixels), "mm"
        return np.where(self.dry(pixels), 0.0, self.to_rainrate(pixels)), "mm/h"

    # ---- geometry ----------------------------------------------------------------------------
    def _crop(self, a: np.ndarray) -> np.ndarray:
        if self.crop is None:
            return a
        top, left, bottom, right = crop_window(self.crop, *a.shape[-2:])
        return a[..., top:bottom, left:right]

    def _downsample(self, dbz: np.ndarray) -> np.ndarray:
        """`[N, H, W]` dBZ -> block means, averaged as rain rate (the linear quantity)."""
        if self.downsample == 1:
            return dbz
        rain = block_mean(dbz_to_rainrate(dbz, *self.zr), self.downsample)
        with np.errstate(divide="ignore"):
            return rainrate_to_dbz(rain, *self.zr)

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        """`[N, H, W]` -> `[N, h, w]` (area average when shrinking, bilinear when growing)."""
        import cv2

        h, w = self.resize
        interp = cv2.INTER_AREA if h <= frames.shape[1] and w <= frames.shape[2] \
            else cv2.INTER_LINEAR
        return _masked_filter(frames, lambda f: cv2.resize(f, (w, h), interpolation=interp))

    def output_shape(self, frame_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """`(C, h, w)` of processed frames of raw shape `frame_shape` `(C, H, W)`."""
        C, H, W = frame_shape
        top, left, bottom, right = crop_window(self.crop, H, W)
        H, W = (bottom - top) // self.downsample, (right - left) // self.downsample
        if H < 1 or W < 1:
            raise ValueError(f"downsample {self.downsample} leaves no pixel of the "
                             f"{bottom - top}x{right - left} frames")
        return (C, *(self.resize or (H, W)))

    def output_grid(self, grid: Grid | None) -> Grid | None:
        """The georeference of processed frames, given the raw frames' `grid` (None: none)."""
        if grid is None:
            return None
        g = grid.window(crop_window(self.crop, *grid.shape)).coarsen(self.downsample)
        return g.resized(self.resize) if self.resize is not None else g

    def regrid_mask(self, mask: np.ndarray) -> np.ndarray:
        """A static bool mask `[H, W]` on the raw grid, cropped, downsampled and resized like
        the frames."""
        m = self._crop(np.asarray(mask, dtype=np.float32))[None]  # [1, h, w]
        if self.downsample > 1:
            m = block_mean(m, self.downsample)
        if self.resize is not None:
            m = self._resize(m)
        return m[0] >= 0.5

    # ---- frames ------------------------------------------------------------------------------
    def frames(self, raw: np.ndarray, static: bool = True) -> np.ndarray:
        """Raw `[n, C, H, W]` -> pixels `[n, C, h, w]` float32 in [0, 1], NaN where invalid
        (`static=False` leaves the static mask out, for computing clutter statistics)."""
        n, C = raw.shape[:2]
        dbz = self.raw_to_dbz(self._crop(raw).astype(np.float32))  # [n, C, h, w]
        dbz = self._downsample(dbz.reshape(n * C, *dbz.shape[2:]))  # [N, h/k, w/k]
        a = self.dbz_to_model(dbz).astype(np.float32)  # [N, h, w] pixels
        if self.disk_radius > 0:
            import cv2

            k = disk_kernel(self.disk_radius)
            a = _masked_filter(a, lambda f: cv2.filter2D(f, -1, k,
                                                          borderType=cv2.BORDER_REFLECT))
        if self.resize is not None:
            a = self._resize(a)
        a = a.reshape(n, C, *a.shape[1:])  # [n, C, h, w]
        return self.apply_valid(a) if static else a

    def apply_valid(self, pixels: np.ndarray) -> np.ndarray:
        """Processed frames `[n, C, h, w]` with the static mask's invalid pixels set to NaN."""
        if self.valid is None:
            return pixels
        return np.where(self.valid, pixels, np.nan).astype(np.float32)

    __call__ = frames


def circle_mask(height: int, width: int) -> np.ndarray:
    """True inside the circle inscribed in the frame (a radar's range), `[H, W]` bool."""
    yy, xx = np.mgrid[:height, :width]
    cy, cx, r = (height - 1) / 2, (width - 1) / 2, min(height, width) / 2
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


# ----------------------------------------------------------------------------- clutter

class EchoStatistics:
    """Per-pixel long-term statistics streamed over frames: echo frequency and monthly means."""

    def __init__(self, echo_pixel: float) -> None:
        self.echo_pixel = echo_pixel
        self.count = self.echoes = None
        self.monthly: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # month -> (sum, count)

    def update(self, frames: np.ndarray, months: np.ndarray) -> None:
        """Add pixels `[n, C, h, w]` (NaN = missing) taken in calendar `months` `[n]`."""
        valid = np.isfinite(frames)
        values = np.where(valid, frames, 0.0)
        if self.count is None:
            self.count = np.zeros(frames.shape[1:])
            self.echoes = np.zeros(frames.shape[1:])
        self.count += valid.sum(0)
        self.echoes += (values >= self.echo_pixel).sum(0)
        for m in np.unique(months):
            sel = months == m
            s, c = self.monthly.get(int(m), (0.0, 0.0))
            self.monthly[int(m)] = (s + values[sel].sum(0), c + valid[sel].sum(0))

    def frequency(self) -> np.ndarray:
        """Fraction of valid frames with an echo at each pixel `[C, h, w]`."""
        return self.echoes / np.maximum(self.count, 1)

    def monthly_means(self) -> np.ndarray:
        """Mean pixel value per calendar month seen `[M, C, h, w]`."""
        return np.stack([s / np.maximum(c, 1) for s, c in self.monthly.values()])


def clutter_by_frequency(freq: np.ndarray, k: float = 5.0, min_excess: float = 0.2
                         ) -> np.ndarray:
    """Clutter `[...]` bool: pixels whose echo frequency is anomalously high, above the median by
    more than `k` robust standard deviations (1.4826 MAD) and by at least `min_excess`."""
    med = np.median(freq)
    mad = 1.4826 * np.median(np.abs(freq - med))
    return freq > med + max(k * mad, min_excess)


def clutter_by_kmeans(features: np.ndarray, clusters: int = 2, iters: int = 50) -> np.ndarray:
    """Clutter `[P]` bool from per-pixel features `[P, F]` (e.g. monthly means, as Shi et al.):
    K-means (deterministic quantile initialisation); the cluster of the highest mean is noise."""
    x = np.asarray(features, dtype=np.float64)
    order = np.argsort(x.mean(1))
    centres = x[order[np.linspace(0, len(x) - 1, clusters).round().astype(int)]]
    for _ in range(iters):
        label = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)  # [P]
        new = np.stack([x[label == j].mean(0) if (label == j).any() else centres[j]
                        for j in range(clusters)])
        if np.allclose(new, centres):
            break
        centres = new
    return label == int(centres.mean(1).argmax())
