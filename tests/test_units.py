"""Radar unit conversions: known values, round trips, numpy and torch alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convcast.data.units import (
    HKO_ZR,
    MARSHALL_PALMER_ZR,
    dbz_to_pixel,
    dbz_to_rainrate,
    pixel_to_dbz,
    pixel_to_rainrate,
    rainrate_to_dbz,
    rainrate_to_pixel,
)


def test_constants_and_pixel_dbz_endpoints():
    assert HKO_ZR == (58.53, 1.56) and MARSHALL_PALMER_ZR == (200.0, 1.6)
    assert pixel_to_dbz(0.0) == pytest.approx(-10.0)
    assert pixel_to_dbz(1.0) == pytest.approx(60.0)
    assert dbz_to_pixel(25.0) == pytest.approx(0.5)


def test_rainrate_known_values():
    # Marshall-Palmer: 1 mm/h is Z = 200, i.e. 23.01 dBZ
    assert rainrate_to_dbz(1.0, *MARSHALL_PALMER_ZR) == pytest.approx(10 * math.log10(200))
    assert dbz_to_rainrate(10 * math.log10(200 * 10**1.6), *MARSHALL_PALMER_ZR) == pytest.approx(
        10.0)
    # HKO-7: the 0.5 mm/h threshold, worked from Z = a R^b and dBZ = 70 p - 10
    z = 58.53 * 0.5**1.56
    assert rainrate_to_pixel(0.5) == pytest.approx((10 * math.log10(z) + 10) / 70)
    assert pixel_to_rainrate((10 * math.log10(z) + 10) / 70) == pytest.approx(0.5)
    assert rainrate_to_pixel(0.5) == pytest.approx(0.3283, abs=1e-4)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_round_trips_keep_the_array_kind(kind):
    pixels = np.linspace(0.05, 1.0, 11, dtype=np.float32)
    x = torch.from_numpy(pixels) if kind == "torch" else pixels
    rate = pixel_to_rainrate(x)
    assert type(rate) is type(x) and rate.dtype == x.dtype
    assert (rate[1:] > rate[:-1]).all()  # monotonic
    back = rainrate_to_pixel(rate)
    np.testing.assert_allclose(np.asarray(back), pixels, rtol=1e-5)
    dbz = rainrate_to_dbz(rate, *MARSHALL_PALMER_ZR)
    np.testing.assert_allclose(np.asarray(dbz_to_rainrate(dbz, *MARSHALL_PALMER_ZR)),
                               np.asarray(rate), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(dbz_to_pixel(pixel_to_dbz(x))), pixels, rtol=1e-6)


def test_torch_and_numpy_agree():
    r = np.array([0.1, 0.5, 2.0, 30.0, 120.0])
    np.testing.assert_allclose(rainrate_to_pixel(torch.from_numpy(r)).numpy(),
                               rainrate_to_pixel(r), rtol=1e-12)
    np.testing.assert_allclose(pixel_to_rainrate(torch.from_numpy(r / 200)).numpy(),
                               pixel_to_rainrate(r / 200), rtol=1e-12)
    assert rainrate_to_dbz(torch.tensor([0.0]))[0] == float("-inf")  # zero rain: exact log
