"""Input checks shared by every metric: shapes, NaN, masks and the data range.

Policy (one place, so every metric behaves alike):
- pred and target must be tensors of the same shape `[B, T, C, H, W]`, none of its axes empty;
  otherwise ValueError (an empty batch has no score: it would be NaN).
- NaN or inf in pred or target at a valid pixel is a ValueError. Pass `mask` (bool, broadcastable
  to pred, True = valid) to exclude missing data; pixels where the mask is False may hold anything.
- Frame metrics check the data range: a target outside `[0, data_range]` by more than
  `RANGE_TOL * data_range` is a ValueError (the data is not normalised as the metric assumes);
  a prediction outside it only warns (models without a sigmoid overshoot; clamp if you want).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

RANGE_TOL = 1e-3  # allowed excursion outside [0, data_range], relative to data_range
LEAD_DIMS = (0, 2, 3, 4)  # of [B, T, C, H, W]: sum over batch, channels, pixels; keep lead time
Reduction = Literal["none", "mean"]


def check_pair(
    name: str, pred: Tensor, target: Tensor, mask: Tensor | None = None,
    data_range: float | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate a `[B, T, C, H, W]` pair; return float tensors and the mask expanded to pred."""
    for label, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(x).__name__}; "
                            "convert it with torch.as_tensor")
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred has shape {tuple(pred.shape)} but target has shape "
                         f"{tuple(target.shape)}; they must match")
    if pred.dim() != 5:
        raise ValueError(f"{name}: expected [B, T, C, H, W] tensors, got shape "
                         f"{tuple(pred.shape)}; add the missing axes with unsqueeze")
    if pred.numel() == 0:
        raise ValueError(f"{name}: pred and target of shape {tuple(pred.shape)} are empty (an "
                         "axis of length 0); score at least one frame of one sequence")
    if pred.is_complex() or target.is_complex():
        raise TypeError(f"{name}: pred and target must be real numbers, got {pred.dtype} and "
                        f"{target.dtype}")
    pred = pred if pred.is_floating_point() else pred.float()
    target = target if target.is_floating_point() else target.float()
    if mask is not None:
        mask = check_mask(name, mask, pred.shape)
    for label, x in (("pred", pred), ("target", target)):
        bad = ~torch.isfinite(x) if mask is None else ~torch.isfinite(x) & mask
        n_bad = int(bad.sum())
        if n_bad:
            where = " at valid (mask=True) pixels" if mask is not None else ""
            raise ValueError(f"{name}: {label} has {n_bad} NaN/inf values{where}; pass "
                             "mask=torch.isfinite(target) (True = valid) to exclude missing data, "
                             "or fix the values")
    if data_range is not None:
        check_range(name, pred, target, data_range, mask)
    return pred, target, mask


def check_mask(name: str, mask: Tensor, shape: torch.Size) -> Tensor:
    """A bool mask broadcastable to `shape`, returned expanded (a view, no copy)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"{name}: mask must be a bool tensor (True = valid), got {got}")
    try:
        return mask.expand(shape)
    except RuntimeError:
        raise ValueError(f"{name}: mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"{tuple(shape)}") from None


def check_data_range(name: str, data_range: float | None, optional: bool = False) -> None:
    """`data_range` must be a positive finite number (or None where `optional`)."""
    if data_range is None and optional:
        return
    if (isinstance(data_range, bool) or not isinstance(data_range, (int, float))
            or not math.isfinite(data_range) or data_range <= 0):
        raise ValueError(f"{name}: data_range must be a positive number (the span of the "
                         f"values, 1.0 for data in [0, 1]), got {data_range!r}")


def check_range(
    name: str, pred: Tensor, target: Tensor, data_range: float, mask: Tensor | None = None,
) -> None:
    """Error if target leaves [0, data_range] (beyond the tolerance); warn if pred does."""
    check_data_range(name, data_range)
    tol = RANGE_TOL * data_range
    for label, x in (("target", target), ("pred", pred)):
        valid = x if mask is None else x[mask]
        if valid.numel() == 0:
            continue
        lo, hi = float(valid.min()), float(valid.max())
        if lo >= -tol and hi <= data_range + tol:
            continue
        msg = (f"{name}: {label} has values in [{lo:.4g}, {hi:.4g}], outside [0, {data_range:g}] "
               f"that data_range={data_range:g} assumes")
        if label == "target":
            raise ValueError(msg + "; normalise the data to [0, data_range] or pass the right "
                             "data_range")
        warnings.warn(msg + "; clamp the prediction (pred.clamp(0, data_range)) if that is not "
                      "intended", UserWarning, stacklevel=3)


def check_thresholds(name: str, thresholds: float | Sequence[float]) -> list[float]:
    """Thresholds (one number or a sequence of numbers) as a non-empty list of finite floats."""
    how = ("give the event thresholds in the units of the fields, e.g. thresholds=[0.5, 2, 5] "
           "(rain rate in mm/h)")
    if thresholds is None or isinstance(thresholds, (str, bytes)):
        raise ValueError(f"{name}: thresholds={thresholds!r} is not a number or a list of "
                         f"numbers; {how}")
    try:
        values = [float(thresholds)]  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        try:
            values = [float(v) for v in thresholds]  # type: ignore[union-attr]
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name}: thresholds={thresholds!r} is not a number or a list of "
                             f"numbers; {how}") from None
    if not values:
        raise ValueError(f"{name}: give at least one threshold (thresholds is empty); {how}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: thresholds must be finite numbers, got {values}")
    return values


def check_rule(name: str, rule: str) -> str:
    """The event rule: `>=` (HKO-7, SEVIR; the default) or `>` (pysteps det_cat_fct)."""
    if rule not in (">=", ">"):
        raise ValueError(f"{name}: rule must be '>=' or '>', got {rule!r}")
    return rule


def reduce_lead_time(values: Tensor, reduction: Reduction) -> Tensor:
    """`none`: per lead time (last axis); `mean`: mean over lead times, skipping NaN ones."""
    if reduction == "none":
        return values
    if reduction == "mean":
        return torch.nanmean(values, dim=-1)
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den with NaN (not inf, not 0) where den == 0: an undefined score stays visible."""
    return torch.where(den == 0, torch.full_like(num, float("nan")), num / den)
