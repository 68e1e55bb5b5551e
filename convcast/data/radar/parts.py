"""What a radar datamodule is made of: an archive, a preparation, a split (and a clutter mask).

`RadarDataModule` (`convcast.data.radar.datamodule`) is these parts and the windows they give;
its flat keyword arguments (as configs spell them) fill them in, and `RadarDataModule.of(...)`
takes them typed. Each part is frozen and keyword-only, so a swapped argument cannot silently
change how frames are read, prepared or split:

>>> from convcast.data.radar.parts import RadarArchive, RadarPreparation, RadarSplit
>>> archive = RadarArchive(path="radar/", importer="fmi_pgm")
>>> RadarSplit(input_frames=5, output_frames=12, times=("2016-09-28T18:00", "2016-09-28T20:00"))
... # doctest: +ELLIPSIS
RadarSplit(input_frames=5, output_frames=12, ...)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from convcast.atomic import atomic_write
from convcast.data.radar.archive import RadarSource, archive_grid, archive_values, open_radar
from convcast.data.radar.preprocess import (
    CLUTTER_METHODS,
    Crop,
    EchoStatistics,
    RadarPreprocess,
    Size,
    circle_mask,
    clutter_by_frequency,
    clutter_by_kmeans,
)
from convcast.data.radar.timeline import split_by_day_blocks, split_by_times


def _tuple(v: Any) -> Any:
    """YAML lists as tuples (hashable, frozen)."""
    return tuple(_tuple(x) for x in v) if isinstance(v, list | tuple) else v


class _Part:
    """Frozen keyword-only parts built from a flat mapping of options."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, _tuple(getattr(self, f.name)))

    @classmethod
    def pick(cls, options: dict[str, Any], prefix: str = "") -> Any:
        """The part from `options` (keys `prefix + field`; other keys are ignored)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{n: _tuple(options[prefix + n]) for n in names if prefix + n in options})


@dataclass(frozen=True, kw_only=True)
class RadarArchive(_Part):
    """An archive and how to read it (`convcast.data.radar.archive.open_radar`'s options)."""

    path: str
    format: str = "auto"
    units: str = "auto"
    variable: str | None = None
    time_variable: str | None = None
    time_format: str | None = None
    time_regex: str | None = None
    start_time: str | None = None
    step_minutes: float | None = None
    nodata: float | None = None
    reader_kwargs: dict | None = None
    importer: str | None = None
    importer_kwargs: dict | None = None
    fn_pattern: str | None = None
    fn_ext: str | None = None

    def open(self) -> RadarSource:
        return open_radar(self.path, **{f.name: getattr(self, f.name) for f in fields(self)
                                        if f.name != "path"})


@dataclass(frozen=True, kw_only=True)
class RadarPreparation(_Part):
    """How an archive's frames become model pixels in [0, 1]: values (`dbz_range`, `zr`,
    `accutime`), grid (`crop` or `crop_box`, `downsample`, `disk_radius`, `resize`) and static
    masks (`valid_mask` file, `circle`), as `RadarPreprocess` applies them."""

    dbz_range: tuple[float, float] | None = None
    zr: tuple[float, float] | None = None
    accutime: float | None = None
    crop: Crop = None
    crop_box: tuple[float, float, float, float] | None = None
    downsample: int = 1
    disk_radius: float = 0.0
    resize: Size = None
    valid_mask: str | None = None
    circle: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop is not None and self.crop_box is not None:
            raise ValueError("give either crop (pixels) or crop_box (projected coordinates), "
                             "not both")

    def base(self, source: RadarSource) -> RadarPreprocess:
        """The preprocessing of `source`'s values and grid, without static masks."""
        values = archive_values(source, self.zr)
        crop = self.crop
        if self.crop_box is not None:
            grid = archive_grid(source)
            if grid is None:
                raise ValueError(f"crop_box needs a georeferenced archive, and {source.path} has "
                                 "no projection in its metadata; crop by pixels instead (crop: "
                                 "[top, left, bottom, right])")
            crop = grid.window_of(self.crop_box)
        return RadarPreprocess(source.units, dbz_range=self.dbz_range, crop=crop,
                               disk_radius=self.disk_radius, resize=self.resize, zr=values["zr"],
                               valid=None, downsample=self.downsample,
                               accutime=self.accutime or values["accutime"],
                               threshold=values["threshold"], zerovalue=values["zerovalue"])

    def build(self, source: RadarSource, clutter: np.ndarray | None = None) -> RadarPreprocess:
        """The preprocessing with the static masks (user mask, circle, `clutter`) folded in."""
        pre = self.base(source)
        _, h, w = pre.output_shape(source.frame_shape)
        valid = np.ones((h, w), dtype=bool)
        if self.valid_mask is not None:
            valid &= pre.regrid_mask(load_mask(self.valid_mask))
        if self.circle:
            valid &= circle_mask(h, w)
        if clutter is not None:
            if clutter.shape[-2:] != (h, w):
                raise ValueError(f"the clutter mask is {clutter.shape[-2:]} but frames are "
                                 f"{(h, w)}; delete clutter_cache to recompute it")
            valid = valid & ~clutter
        pre.valid = None if valid.all() else valid
        return pre


@dataclass(frozen=True, kw_only=True)
class RadarSplit(_Part):
    """Windows of `input_frames + output_frames` frames every `stride`, gap-free (a step off by
    more than `gap_tolerance`·step is a gap), split into train/val/test: by day blocks of
    `block_minutes` drawn by `ratios` with `seed` (Shi et al.: 240 minutes, 4:1:1), or by date
    with `times = (val_start, test_start)`."""

    input_frames: int = 5
    output_frames: int = 15
    stride: int = 1
    gap_tolerance: float = 0.25
    block_minutes: float = 240.0
    ratios: tuple[float, float, float] = (4.0, 1.0, 1.0)
    seed: int = 0
    times: tuple[str, str] | None = None

    def windows(self, timestamps: np.ndarray, step: np.timedelta64
                ) -> tuple[dict[str, np.ndarray], str]:
        """Window starts per split, and where a window must lie (for an error message)."""
        if self.times is not None:
            return (split_by_times(timestamps, self.times, self.input_frames,
                                   self.output_frames, step, self.gap_tolerance, self.stride),
                    f"one period of split_times {self.times}")
        return (split_by_day_blocks(
            timestamps, input_frames=self.input_frames, output_frames=self.output_frames,
            step=step, tolerance=self.gap_tolerance, block_minutes=self.block_minutes,
            ratios=self.ratios, seed=self.seed, stride=self.stride),
            f"one {self.block_minutes:g}-minute block")


@dataclass(frozen=True, kw_only=True)
class RadarClutter(_Part):
    """A clutter mask learnt from training frames: `method` "frequency" (pixels with echoes of
    at least `dbz` anomalously often, `k` deviations), "kmeans" (Shi et al.'s K-means on monthly
    means, `clusters`) or "none"; from up to `frames` frames; `cache` saves/loads it (.npy)."""

    method: str = "none"
    dbz: float = 15.0
    k: float = 5.0
    clusters: int = 2
    frames: int = 2000
    cache: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in CLUTTER_METHODS:
            raise ValueError(f"unknown clutter method {self.method!r}; valid: "
                             f"{', '.join(CLUTTER_METHODS)}")

    def mask(self, source: RadarSource, base: RadarPreprocess, train_starts: np.ndarray,
             window: int) -> np.ndarray:
        """The mask `[C, h, w]` (True = clutter) from the training windows' frames (evenly
        sampled: the test period stays unseen), or from `cache`."""
        cache = Path(self.cache) if self.cache else None
        if cache is not None and cache.exists():
            return np.load(cache).astype(bool)
        frames = np.unique((train_starts[:, None] + np.arange(window)).ravel()) \
            if len(train_starts) else np.arange(len(source))
        frames = frames[np.linspace(0, len(frames) - 1, min(self.frames, len(frames)))
                        .round().astype(int)]
        stats = EchoStatistics(float(base.dbz_to_model(np.float32(self.dbz))))
        months = source.timestamps.astype("datetime64[M]").astype(np.int64) % 12
        for i in frames:
            stats.update(base.frames(source.read(i, i + 1), static=False), months[i:i + 1])
        if self.method == "frequency":
            mask = clutter_by_frequency(stats.frequency(), self.k)
        else:
            means = stats.monthly_means()  # [M, C, h, w]
            mask = clutter_by_kmeans(means.reshape(len(means), -1).T, self.clusters)
            mask = mask.reshape(means.shape[1:])
        if mask.mean() > 0.25:
            warnings.warn(f"the {self.method} clutter mask blanks {mask.mean():.0%} of the "
                          "pixels; check it (clutter_cache saves it) or tune clutter_k / "
                          "clutter_clusters", stacklevel=3)
        if cache is not None:
            save_array(cache, mask)
        return mask


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A static mask from .npy or an image (nonzero = valid) as bool `[H, W]`."""
    p = Path(path)
    if p.suffix == ".npy":
        m = np.load(p)
    else:
        import cv2

        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise OSError(f"cannot read mask image {p}")
    m = np.asarray(m)
    if m.ndim != 2:
        raise ValueError(f"{p}: a valid-pixel mask must be 2-D [H, W], got shape {m.shape}")
    return m != 0


def save_array(path: Path, a: np.ndarray) -> None:
    """np.save atomically."""
    with atomic_write(path) as f:
        np.save(f, a)
