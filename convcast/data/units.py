"""Radar unit conversions: HKO-7 pixel values, reflectivity (dBZ) and rain rate (mm/h).

- HKO-7 pixels: a value p in [0, 1] is dBZ = 70 * p - 10 (Shi et al. 2017).
- Z-R relation: Z = a * R**b with Z = 10**(dBZ / 10) in mm^6/m^3 and R in mm/h. HKO-7 uses
  a=58.53, b=1.56; Marshall-Palmer is a=200, b=1.6.
Every function takes numpy arrays, Python floats or torch tensors and returns the same kind.
Rain rate 0 is dBZ -inf (and pixel -inf): the logarithm is kept exact, clamp it if needed.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

HKO_ZR = (58.53, 1.56)  # (a, b) of Z = a R^b used by HKO-7
MARSHALL_PALMER_ZR = (200.0, 1.6)

DBZ_SCALE, DBZ_OFFSET = 70.0, -10.0  # HKO-7: dBZ = 70 * pixel - 10

Array = TypeVar("Array", np.ndarray, torch.Tensor, float)


def _log10(x):
    return torch.log10(x) if isinstance(x, torch.Tensor) else np.log10(x)


def _pow10(x):
    return torch.pow(10.0, x) if isinstance(x, torch.Tensor) else np.power(10.0, x)


def pixel_to_dbz(p: Array) -> Array:
    """HKO-7 pixel value in [0, 1] to reflectivity in dBZ (70 p - 10)."""
    return p * DBZ_SCALE + DBZ_OFFSET


def dbz_to_pixel(d: Array) -> Array:
    """Reflectivity in dBZ to HKO-7 pixel value ((dBZ + 10) / 70)."""
    return (d - DBZ_OFFSET) / DBZ_SCALE


def dbz_to_rainrate(dbz: Array, a: float = HKO_ZR[0], b: float = HKO_ZR[1]) -> Array:
    """Reflectivity in dBZ to rain rate in mm/h: R = (10**(dBZ/10) / a) ** (1/b)."""
    return _pow10((dbz - 10.0 * math.log10(a)) / (10.0 * b))


def rainrate_to_dbz(r: Array, a: float = HKO_ZR[0], b: float = HKO_ZR[1]) -> Array:
    """Rain rate in mm/h to reflectivity in dBZ: 10 log10(a R**b)."""
    return 10.0 * math.log10(a) + 10.0 * b * _log10(r)


def pixel_to_rainrate(p: Array, a: float = HKO_ZR[0], b: float = HKO_ZR[1]) -> Array:
    """HKO-7 pixel value to rain rate in mm/h (via dBZ and Z = a R**b)."""
    return dbz_to_rainrate(pixel_to_dbz(p), a, b)


def rainrate_to_pixel(r: Array, a: float = HKO_ZR[0], b: float = HKO_ZR[1]) -> Array:
    """Rain rate in mm/h to HKO-7 pixel value (via dBZ and Z = a R**b)."""
    return dbz_to_pixel(rainrate_to_dbz(r, a, b))
