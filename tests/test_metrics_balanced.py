"""HKO-7 balanced weights, B-MSE and B-MAE against a numpy version of HKO-7's definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convcast.data.units import pixel_to_rainrate
from convcast.metrics import (
    BalancedMAE,
    BalancedMSE,
    balanced_mae,
    balanced_mse,
    balanced_weights,
)


def hko_weights_numpy(rate, thresholds=(0.5, 2, 5, 10, 30), weights=(1, 1, 2, 5, 10, 30)):
    """HKO-7 style: start from the first weight, add each step where rate >= threshold."""
    w = np.full_like(rate, weights[0], dtype=np.float64)
    for i, thr in enumerate(thresholds):
        w += (weights[i + 1] - weights[i]) * (rate >= thr)
    return w


def pixel_pair(B=3, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, T, 1, 12, 12, generator=g) ** 2  # many low pixels, some heavy rain
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return pred, target


def test_weights_by_rain_rate_band():
    rate = torch.tensor([0.0, 0.49, 0.5, 1.9, 2.0, 4.99, 5.0, 10.0, 29.9, 30.0, 100.0])
    expected = [1, 1, 1, 1, 2, 2, 5, 10, 10, 30, 30]
    assert balanced_weights(rate).tolist() == expected
    assert balanced_weights(rate, thresholds=(1.0,), weights=(0.0, 3.0)).tolist() == [
        0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="weights"):
        balanced_weights(rate, thresholds=(1.0, 2.0), weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="increase"):
        balanced_weights(rate, thresholds=(2.0, 1.0), weights=(1.0, 2.0, 3.0))


def test_balanced_errors_match_hko7_definition():
    pred, target = pixel_pair()
    p, t = pred.double().numpy(), target.double().numpy()
    w = hko_weights_numpy(pixel_to_rainrate(t))
    assert (w > 1).any() and (w == 1).any()  # the data spans several bands
    # weighted error summed over each frame, mean over the batch: one value per lead time
    np.testing.assert_allclose(balanced_mse(pred, target), (w * (p - t) ** 2).sum((2, 3, 4))
                               .mean(0), rtol=1e-5)
    np.testing.assert_allclose(balanced_mae(pred, target), (w * np.abs(p - t)).sum((2, 3, 4))
                               .mean(0), rtol=1e-5)
    explicit = balanced_mse(pred, target, target_rainrate=pixel_to_rainrate(target))
    torch.testing.assert_close(explicit, balanced_mse(pred, target))


def test_balanced_mask_and_streaming():
    pred, target = pixel_pair(B=5, seed=3)
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    p, t, m = pred.double().numpy(), target.double().numpy(), mask.numpy()
    w = hko_weights_numpy(pixel_to_rainrate(t))
    expected = np.where(m, w * (p - t) ** 2, 0).sum((2, 3, 4)).mean(0)
    np.testing.assert_allclose(balanced_mse(pred, target, mask=mask), expected, rtol=1e-5)
    missing = torch.where(mask, target, torch.full_like(target, float("nan")))
    torch.testing.assert_close(balanced_mse(pred, missing, mask=mask),
                               balanced_mse(pred, target, mask=mask))
    for cls, fn in ((BalancedMSE, balanced_mse), (BalancedMAE, balanced_mae)):
        metric = cls()
        for sl in (slice(0, 2), slice(2, 5)):
            metric.update(pred[sl], target[sl], mask=mask[sl])
        torch.testing.assert_close(metric.compute(), fn(pred, target, mask=mask), rtol=1e-10,
                                   atol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        balanced_mae(pred, missing)
