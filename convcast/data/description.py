"""What a trained model knows about its data: one typed description, saved in every checkpoint.

`DataDescription` says how many frames go in and come out, their channels and size, how stored
values become model values (the unit scale of integer frames and the fitted normalisation; for a
radar archive, its units, dBZ range, Z-R relation, crop, resize and valid-pixel mask) and the time
between frames. Every datamodule produces one (`describe()`); `predict`, `nowcast`, `test` and the
reports read it, so new frames are prepared exactly as the training frames were, and forecasts go
back to the data's own values. Three value spaces, named once here:
- model: what the network reads and writes (after normalisation);
- data: frames in the units they were stored in, integer frames scaled to [0, 1] (radar: pixels
  in [0, 1]); the frame metrics (MSE, SSIM, ...) of validation, test and reports are computed here;
- physical: rain rate in mm/h (radar only), where the skill scores' thresholds live.
Checkpoints store `to_dict()` (plain types, loadable weights-only); `from_dict` also reads the
untyped dictionaries of checkpoints written before this description existed.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convcast.data.normalize import Normalization
from convcast.data.units import HKO_ZR

if TYPE_CHECKING:
    from convcast.data.radar.geo import Grid

VERSION = 2
Pair = tuple[int, int]


def _pair(v: Any) -> Pair | None:
    return None if v is None else (int(v[0]), int(v[1]))


def _ints(v: Any) -> tuple[int, ...] | None:
    return None if v is None else tuple(int(x) for x in v)


def _number(v: Any) -> float | None:
    return None if v is None else float(v)


# the settings RadarValues and RadarPreprocess share, passed by name between them
SHARED = ("dbz_range", "crop", "disk_radius", "resize", "zr", "valid", "downsample", "accutime",
          "threshold", "zerovalue")


@dataclass(frozen=True)
class RadarValues:
    """How a radar archive's values become model pixels in [0, 1] (`convcast.data.radar`).

    `units` are the archive's (gray, pixel, dbz, rainrate, mm); `dbz_range` the min-max bounds
    in dBZ (None: HKO-7's (dBZ + 10) / 70); `zr` the (a, b) of Z = a R^b; `crop` (a centre crop
    (h, w) or a window (top, left, bottom, right)) / `downsample` (block-mean factor) / `resize`
    / `disk_radius` the preprocessing; `valid` the static mask of valid pixels on the model grid
    (None: all); `nodata` the raw value that means missing. From the archive's metadata:
    `accutime` (minutes summed by an accumulation, units mm), `zerovalue` / `threshold` (no rain,
    smallest rain), `grid` (the georeference of the archive's raw grid, `convcast.data.radar.geo`)
    and `reader` (how it was read: importer, importer_kwargs, fn_pattern, fn_ext), so a nowcast
    reads and places new frames alike. Older checkpoints lack these fields: they take defaults.
    """

    units: str
    _: KW_ONLY
    dbz_range: tuple[float, float] | None = None
    zr: tuple[float, float] = HKO_ZR
    crop: tuple[int, ...] | None = None
    disk_radius: float = 0.0
    resize: Pair | None = None
    valid: np.ndarray | None = field(default=None, compare=False, repr=False)
    nodata: float | None = None
    downsample: int = 1
    accutime: float | None = None
    zerovalue: float | None = None
    threshold: float | None = None
    grid: Grid | None = field(default=None, repr=False)
    reader: dict[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["valid"] = None if self.valid is None else self.valid.astype(int).tolist()
        d["grid"] = None if self.grid is None else self.grid.to_dict()
        d["crop"] = None if self.crop is None else list(self.crop)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RadarValues:
        from convcast.data.radar.geo import Grid

        valid = d.get("valid")
        return cls(units=d["units"],
                   dbz_range=None if d.get("dbz_range") is None else
                   (float(d["dbz_range"][0]), float(d["dbz_range"][1])),
                   zr=tuple(float(v) for v in (d.get("zr") or HKO_ZR)),
                   crop=_ints(d.get("crop")), disk_radius=float(d.get("disk_radius") or 0.0),
                   resize=_pair(d.get("resize")),
                   valid=None if valid is None else np.asarray(valid, dtype=bool),
                   nodata=d.get("nodata"), downsample=int(d.get("downsample") or 1),
                   accutime=_number(d.get("accutime")), zerovalue=_number(d.get("zerovalue")),
                   threshold=_number(d.get("threshold")), grid=Grid.from_dict(d.get("grid")),
                   reader=d.get("reader"))

    def preprocess(self, units: str | None = None):
        """The `RadarPreprocess` that prepares frames of this archive (or of `units`)."""
        from convcast.data.radar.preprocess import RadarPreprocess

        return RadarPreprocess(units or self.units, **{k: getattr(self, k) for k in SHARED})

    @classmethod
    def of_preprocess(cls, pre, *, nodata: float | None = None, grid: Grid | None = None,
                      reader: dict[str, Any] | None = None) -> RadarValues:
        """The values a `RadarPreprocess` prepares with, and what the archive says beside."""
        return cls(units=pre.units, nodata=nodata, grid=grid, reader=reader,
                   **{k: getattr(pre, k) for k in SHARED})

    def output_grid(self) -> Grid | None:
        """The georeference of the model grid (the archive's grid after crop and resampling)."""
        return self.preprocess().output_grid(self.grid)


@dataclass(frozen=True)
class DataDescription:
    """The training data of a model (see the module docstring)."""

    input_frames: int
    output_frames: int
    channels: int
    frame_size: Pair
    normalization: Normalization = Normalization()
    value_scale: float = 1.0  # stored integer frames are divided by this (uint8: 255)
    radar: RadarValues | None = None
    step_minutes: float | None = None
    source: str = ""  # where the training frames came from
    datamodule: str = ""  # the datamodule's class path

    def __post_init__(self) -> None:
        if self.input_frames < 1 or self.output_frames < 1 or self.channels < 1:
            raise ValueError(f"a data description needs input_frames, output_frames and channels "
                             f">= 1, got {self.input_frames}, {self.output_frames}, "
                             f"{self.channels}")
        object.__setattr__(self, "frame_size", _pair(self.frame_size))

    # ---- value spaces -------------------------------------------------------------------------
    @property
    def pixel_km(self) -> float | None:
        """The model grid's pixel size in km (georeferenced radar archives), else None."""
        grid = self.radar.output_grid() if self.radar is not None else None
        return None if grid is None else grid.pixel_km

    @property
    def physical_units(self) -> str | None:
        """The units of `to_physical` (None: the data has no physical units)."""
        return "mm/h" if self.radar is not None else None

    @property
    def data_space(self) -> str:
        """What the data values are, in words (for reports)."""
        if self.radar is not None:
            lo, hi = self.radar.dbz_range or (-10.0, 60.0)
            return f"radar pixels in [0, 1] (dBZ {lo:g}..{hi:g})"
        if self.value_scale != 1:
            return f"stored values / {self.value_scale:g} (in [0, 1])"
        return "stored values"

    def to_data(self, model_values):
        """Model values (tensor or array) -> data values (undo the normalisation)."""
        return self.normalization.invert(model_values)

    def to_physical(self, model_values):
        """Model values -> rain rate in mm/h (radar only; else a clear error)."""
        return self.data_to_physical(self.to_data(model_values))

    def to_dbz(self, model_values):
        """Model values -> reflectivity in dBZ (radar only), by this archive's dBZ range."""
        if self.radar is None:
            raise ValueError("this data has no reflectivity (it is not a radar archive)")
        return self.radar.preprocess().to_dbz(self.to_data(model_values))

    @property
    def zr(self) -> tuple[float, float]:
        """The (a, b) of the archive's Z = a R^b (radar only)."""
        if self.radar is None:
            raise ValueError("this data has no Z-R relation (it is not a radar archive)")
        return self.radar.zr

    def data_to_physical(self, data_values):
        """Data values (radar pixels) -> rain rate in mm/h, by this archive's dBZ range and Z-R."""
        if self.radar is None:
            raise ValueError("this data has no physical units (it is not a radar archive); "
                             "score it without --to_physical, or give thresholds in data values")
        return self.radar.preprocess().to_rainrate(data_values)

    def describe(self) -> str:
        """One line for logs: frames, size, values."""
        h, w = self.frame_size
        text = (f"{self.input_frames} -> {self.output_frames} frames of {self.channels}x{h}x{w}, "
                f"{self.data_space}, normalization {self.normalization.describe()}")
        if self.step_minutes:
            text += f", every {self.step_minutes:g} min"
        return text

    def with_frames(self, input_frames: int | None = None, output_frames: int | None = None,
                    ) -> DataDescription:
        return replace(self, input_frames=input_frames or self.input_frames,
                       output_frames=output_frames or self.output_frames)

    # ---- checkpoints --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint holding it loads with `weights_only=True`."""
        return {"version": VERSION, "input_frames": self.input_frames,
                "output_frames": self.output_frames, "channels": self.channels,
                "frame_size": list(self.frame_size), "normalization": self.normalization.to_dict(),
                "value_scale": float(self.value_scale),
                "radar": None if self.radar is None else self.radar.to_dict(),
                "step_minutes": self.step_minutes, "source": self.source,
                "datamodule": self.datamodule}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataDescription:
        """A description from `to_dict()`, or from the untyped dictionary of a checkpoint written
        before descriptions (version 1: the radar step lived inside `radar`)."""
        if not isinstance(d, dict) or "frame_size" not in d or "input_frames" not in d:
            raise ValueError(f"not a data description: {d!r:.200}")
        radar = d.get("radar")
        step = d.get("step_minutes")
        if radar is not None and d.get("version", 1) < 2:
            step = radar.get("step_minutes", step)
            if "units" not in radar:  # v1 synthetic radar stored only its step: HKO-7 pixels
                radar = {"units": "pixel"}
        return cls(input_frames=int(d["input_frames"]), output_frames=int(d["output_frames"]),
                   channels=int(d["channels"]), frame_size=_pair(d["frame_size"]),
                   normalization=Normalization.from_dict(d.get("normalization")),
                   value_scale=float(d.get("value_scale") or 1.0),
                   radar=None if radar is None else RadarValues.from_dict(radar),
                   step_minutes=None if step is None else float(step),
                   source=str(d.get("source") or ""), datamodule=str(d.get("datamodule") or ""))

    @classmethod
    def from_batch(cls, x: torch.Tensor, y: torch.Tensor, datamodule: Any = None
                   ) -> DataDescription:
        """What the batches show (any LightningDataModule): frames, channels, size."""
        dm = "" if datamodule is None else f"{type(datamodule).__module__}." \
                                           f"{type(datamodule).__name__}"
        return cls(int(x.shape[1]), int(y.shape[1]), int(x.shape[2]),
                   (int(x.shape[3]), int(x.shape[4])), datamodule=dm)
