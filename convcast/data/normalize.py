"""Value normalisation of frames, fitted on training data and stored with a checkpoint.

`none` keeps values; `minmax` maps [low, high] to [0, 1] (the data's min/max, or a given range);
`standard` subtracts the mean and divides by the standard deviation. The fitted numbers travel in
`to_dict()` so `convcast predict` applies exactly the training transform and can invert it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

KINDS = ("none", "minmax", "standard")


@dataclass(frozen=True)
class Normalization:
    kind: str = "none"
    low: float = 0.0
    high: float = 1.0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown normalization {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "minmax" and not self.high > self.low:
            raise ValueError(f"minmax normalization needs high > low, got "
                             f"[{self.low}, {self.high}]")
        if self.kind == "standard" and not self.std > 0:
            raise ValueError(f"standard normalization needs std > 0, got {self.std}")

    def _affine(self) -> tuple[float, float]:
        """(shift, scale) with normalised = (x - shift) / scale."""
        if self.kind == "minmax":
            return self.low, self.high - self.low
        if self.kind == "standard":
            return self.mean, self.std
        return 0.0, 1.0

    def apply(self, x):
        """Data values -> model values (numpy array or tensor)."""
        shift, scale = self._affine()
        return x if self.kind == "none" else (x - shift) / scale

    def invert(self, x):
        """Model values -> data values."""
        shift, scale = self._affine()
        return x if self.kind == "none" else x * scale + shift

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalization:
        return cls(**(d or {}))

    def describe(self) -> str:
        if self.kind == "minmax":
            return f"minmax [{self.low:g}, {self.high:g}] -> [0, 1]"
        if self.kind == "standard":
            return f"standard (mean {self.mean:g}, std {self.std:g})"
        return "none"


def fit_normalization(kind: str, frames: Iterable[np.ndarray | torch.Tensor],
                      value_range: tuple[float, float] | None = None) -> Normalization:
    """Fit `kind` on an iterable of frame arrays (any shape), streaming: constant memory.

    `value_range` fixes minmax's [low, high] without reading the data.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown normalization {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "none":
        return Normalization()
    if kind == "minmax" and value_range is not None:
        return Normalization("minmax", low=float(value_range[0]), high=float(value_range[1]))
    lo, hi, n, s, s2 = np.inf, -np.inf, 0, 0.0, 0.0
    for f in frames:
        a = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
        a = a.astype(np.float64, copy=False)
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        n, s, s2 = n + a.size, s + float(a.sum()), s2 + float((a * a).sum())
    if n == 0:
        raise ValueError("no training frames to fit the normalization on")
    if kind == "minmax":
        if hi <= lo:
            raise ValueError(f"the training frames are constant ({lo:g}); minmax needs a range: "
                             "give value_range or use normalization 'none'")
        return Normalization("minmax", low=lo, high=hi)
    mean = s / n
    std = max(s2 / n - mean * mean, 0.0) ** 0.5
    if std == 0:
        raise ValueError("the training frames are constant; standard normalization needs variance")
    return Normalization("standard", mean=mean, std=std)
