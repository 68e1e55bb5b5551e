"""HKO-7's balanced errors B-MSE and B-MAE (Shi et al. 2017), which weight heavy rain more.

The weight of a pixel comes from the TRUE rain rate r (mm/h): `weights[0]` below
`thresholds[0]`, `weights[i]` for `thresholds[i-1] <= r < thresholds[i]`, `weights[-1]` from
the last threshold up (HKO-7: 1, 1, 2, 5, 10, 30 at 0.5, 2, 5, 10, 30 mm/h). As in HKO-7's
benchmark the error is taken on the inputs as given (HKO-7 pixel values in [0, 1]), multiplied by
the weight, summed over each frame's (valid) pixels and channels, and averaged over frames:
one value per lead time `[T]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from convcast.metrics.checks import LEAD_DIMS, Reduction, check_pair, reduce_lead_time
from convcast.metrics.streaming import LeadTimeMetric

HKO_THRESHOLDS = (0.5, 2.0, 5.0, 10.0, 30.0)  # mm/h
HKO_WEIGHTS = (1.0, 1.0, 2.0, 5.0, 10.0, 30.0)


def hko_pixel_to_rainrate(pixels: Tensor) -> Tensor:
    """HKO-7 pixel values to mm/h (`convcast.data.units.pixel_to_rainrate`), imported on use so
    that importing convcast.metrics does not load convcast.data (whose init loads Lightning)."""
    from convcast.data.units import pixel_to_rainrate

    return pixel_to_rainrate(pixels)


def balanced_weights(rainrate: Tensor, thresholds: Sequence[float] = HKO_THRESHOLDS,
                     weights: Sequence[float] = HKO_WEIGHTS) -> Tensor:
    """Per-pixel weight from the rain rate: `weights[i]` where i thresholds are <= the rate."""
    if thresholds is None or weights is None:
        raise ValueError("balanced_weights: thresholds and weights must be sequences of numbers "
                         f"(got {thresholds!r}, {weights!r}); the defaults are HKO-7's")
    if len(weights) != len(thresholds) + 1:
        raise ValueError(f"balanced_weights: need len(thresholds) + 1 = {len(thresholds) + 1} "
                         f"weights, got {len(weights)}")
    bounds = torch.as_tensor(thresholds, dtype=rainrate.dtype, device=rainrate.device)
    if len(thresholds) > 1 and not bool((bounds[1:] > bounds[:-1]).all()):
        raise ValueError(f"balanced_weights: thresholds must increase, got {list(thresholds)}")
    table = torch.as_tensor(weights, dtype=rainrate.dtype, device=rainrate.device)
    rate = torch.nan_to_num(rainrate, nan=float("-inf"))  # NaN (masked) pixels: lowest weight
    return table[torch.bucketize(rate, bounds, right=True)]  # same shape as rainrate


def _balanced_sums(pred: Tensor, target: Tensor, rainrate: Tensor | None, mask: Tensor | None,
                   thresholds: Sequence[float], weights: Sequence[float],
                   power: int) -> tuple[Tensor, Tensor]:
    """Weighted error summed over the batch `[T]` and the frame count `[T]`, float64."""
    rate = hko_pixel_to_rainrate(target) if rainrate is None else rainrate
    if rate.shape != target.shape:
        raise ValueError(f"balanced error: target_rainrate has shape {tuple(rate.shape)}, "
                         f"target {tuple(target.shape)}; they must match")
    err = (pred - target).abs() ** power * balanced_weights(rate, thresholds, weights)
    if mask is not None:
        err = torch.where(mask, err, torch.zeros_like(err))  # [B, T, C, H, W]
    total = err.sum(dim=LEAD_DIMS, dtype=torch.float64)  # [T]
    return total, torch.full_like(total, pred.shape[0])


def _balanced(name: str, power: int, pred: Tensor, target: Tensor, *,
              thresholds: Sequence[float], weights: Sequence[float], mask: Tensor | None,
              target_rainrate: Tensor | None, reduction: Reduction) -> Tensor:
    pred, target, mask = check_pair(name, pred, target, mask)
    total, frames = _balanced_sums(pred, target, target_rainrate, mask, thresholds, weights,
                                   power)
    return reduce_lead_time(total / frames, reduction)


def balanced_mse(pred: Tensor, target: Tensor, *, thresholds: Sequence[float] = HKO_THRESHOLDS,
                 weights: Sequence[float] = HKO_WEIGHTS, mask: Tensor | None = None,
                 target_rainrate: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """HKO-7 B-MSE `[T]`: weights from the true rain rate (`target_rainrate`, by default
    `pixel_to_rainrate(target)`), weighted squared error summed per frame, mean over frames."""
    return _balanced("balanced_mse", 2, pred, target, thresholds=thresholds, weights=weights,
                     mask=mask, target_rainrate=target_rainrate, reduction=reduction)


def balanced_mae(pred: Tensor, target: Tensor, *, thresholds: Sequence[float] = HKO_THRESHOLDS,
                 weights: Sequence[float] = HKO_WEIGHTS, mask: Tensor | None = None,
                 target_rainrate: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """HKO-7 B-MAE `[T]`: as `balanced_mse` with the absolute error."""
    return _balanced("balanced_mae", 1, pred, target, thresholds=thresholds, weights=weights,
                     mask=mask, target_rainrate=target_rainrate, reduction=reduction)


class _BalancedMetric(LeadTimeMetric):
    power = 2
    higher_is_better = False

    def __init__(self, thresholds: Sequence[float] = HKO_THRESHOLDS,
                 weights: Sequence[float] = HKO_WEIGHTS,
                 to_rainrate: Callable[[Tensor], Tensor] = hko_pixel_to_rainrate,
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds, self.weights, self.to_rainrate = thresholds, weights, to_rainrate
        self._add_sum("total")
        self._add_sum("frames")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        pred, target, mask = check_pair(type(self).__name__, pred, target, mask)
        total, frames = _balanced_sums(pred, target, self.to_rainrate(target), mask,
                                       self.thresholds, self.weights, self.power)
        self._accumulate(total=total, frames=frames)

    def compute(self) -> Tensor:
        return self._reduce(self.total / self.frames)


class BalancedMSE(_BalancedMetric):
    """Streaming HKO-7 B-MSE (see `balanced_mse`); `to_rainrate` maps target to mm/h."""

    power = 2


class BalancedMAE(_BalancedMetric):
    """Streaming HKO-7 B-MAE (see `balanced_mae`); `to_rainrate` maps target to mm/h."""

    power = 1

