"""Synthetic radar: reproducible, in range, power-law in space, moving with its flow."""

import numpy as np
import pytest
import torch

from convcast.data.synthetic.radar import (
    MAX_DBZ,
    SyntheticRadar,
    SyntheticRadarDataModule,
    departure_points,
    simulate_radar,
    spectral_filter,
)
from convcast.data.units import dbz_to_pixel, pixel_to_dbz


def test_items_are_reproducible_and_independent_of_order():
    a = SyntheticRadar("train", 10, image_size=16, seed=3)
    b = SyntheticRadar("train", 10, image_size=16, seed=3)
    xa, ya = a[7]
    _ = b[2]  # drawing another item first changes nothing
    xb, yb = b[7]
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[6][0], xa)
    assert not torch.equal(SyntheticRadar("test", 10, image_size=16, seed=3)[7][0], xa)
    assert not torch.equal(SyntheticRadar("train", 10, image_size=16, seed=4)[7][0], xa)


def test_shapes_range_and_rain_intermittency():
    ds = SyntheticRadar("val", 4, input_frames=5, output_frames=15, image_size=32)
    x, y = ds[0]
    assert x.shape == (5, 1, 32, 32) and y.shape == (15, 1, 32, 32)
    assert x.dtype == torch.float32
    dbz = torch.cat([pixel_to_dbz(torch.cat(ds[i])) for i in range(4)])
    assert dbz.min() >= -1e-4 and dbz.max() <= MAX_DBZ + 1e-4
    wet = (dbz > 0).float().mean()
    assert 0.02 < wet < 0.9  # intermittent: both dry and rainy pixels
    rain = ds.to_rainrate(torch.cat(ds[0]))
    assert rain.max() > 0.5  # the paper's threshold is crossed


def test_spectral_filter_has_unit_variance_and_power_law_slope():
    amp = spectral_filter((32, 32), beta=3.0, outer=8)
    white = np.random.default_rng(0).standard_normal((400, 32, 32))
    fields = np.fft.irfft2(amp * np.fft.rfft2(white), s=(32, 32))  # [400, 32, 32]
    assert (fields**2).mean() == pytest.approx(1.0, rel=0.15)  # ensemble variance, DC included
    amp = spectral_filter((256, 256), beta=3.0, outer=1024)
    k = np.fft.fftfreq(256)[8:120]  # well above k0: amplitude ∝ k^(-β/2)
    slope = np.polyfit(np.log(k), np.log(amp[0, 8:120]), 1)[0]
    assert slope == pytest.approx(-1.5, abs=0.05)


def test_departure_points_follow_a_known_translation():
    dep = departure_points(8, 4, np.array([0.5, -1.0]), np.zeros((2, 2)))
    assert np.allclose(dep[3, 0] - dep[0, 0], -1.5) and np.allclose(dep[3, 1] - dep[0, 1], 3.0)


def test_frozen_field_translates_by_the_flow():
    """With no evolution and no growth, frame t is frame 0 shifted by t·u (away from edges)."""
    u = np.array([1.0, 2.0])  # rows, cols per step
    dbz, params = simulate_radar(np.random.default_rng(1), seq_len=4, image_size=32,
                                 lifetime=1e9, growth=0.0, motion=(u, np.zeros((2, 2))))
    assert np.allclose(params["u"], u)
    assert np.allclose(dbz[3, 10:20, 10:20], dbz[0, 7:17, 4:14], atol=0.05)


def test_datamodule_serves_pixels_and_describes_itself():
    dm = SyntheticRadarDataModule(batch_size=2, train_size=4, val_size=2, test_size=2,
                                  image_size=16, output_frames=3)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 5, 1, 16, 16) and y.shape == (2, 3, 1, 16, 16)
    assert float(x.min()) >= float(dbz_to_pixel(0.0)) - 1e-6 and float(x.max()) <= 1.0
    d = dm.describe()
    assert d.frame_size == (16, 16) and d.step_minutes == 6.0 and d.physical_units == "mm/h"
