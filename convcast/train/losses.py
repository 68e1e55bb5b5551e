"""Training losses, each `loss(pred, target, mask=None) -> scalar`, averaged over valid pixels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from convcast.metrics.frame import ssim_frames

Loss = Callable[..., torch.Tensor]


def _masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error per pixel."""
    return _masked_mean((pred - target) ** 2, mask)


def l1(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error per pixel: its optimum is the median, so unlikely pixels stay empty."""
    return _masked_mean((pred - target).abs(), mask)


def l1_l2(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """L1 + L2 per pixel, the PredRNN training loss."""
    d = pred - target
    return _masked_mean(d.abs() + d**2, mask)


def bce(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on predictions in [0, 1] (the paper's Moving MNIST loss)."""
    p = pred.float().clamp(1e-6, 1 - 1e-6)
    err = F.binary_cross_entropy(p, target.float().clamp(0, 1), reduction="none")
    return _masked_mean(err, mask)


SSIM_WEIGHT = 0.1  # default weight of the (1 - SSIM) term in bce+ssim / mse+ssim


def _dssim(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Structural dissimilarity, 1 - SSIM (7x7 windows, the evaluation's SSIM), mean per frame."""
    if mask is not None:
        raise ValueError("the SSIM loss needs whole frames and takes no mask; use mse or bce "
                         "with masked data")
    with torch.autocast(pred.device.type, enabled=False):  # variances cancel badly in bf16
        return 1 - ssim_frames(pred.float(), target.float(), 1.0, dtype=torch.float32).mean()


def bce_ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None,
             ssim_weight: float = SSIM_WEIGHT) -> Tensor:
    """BCE + w * (1 - SSIM): BCE tracks the digits; the SSIM term forbids a faint haze over
    empty background (SSIM punishes a mean of 0.02 where the target is empty by a factor of 5)."""
    return bce(pred, target, mask) + ssim_weight * _dssim(pred, target, mask)


def mse_ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None,
             ssim_weight: float = SSIM_WEIGHT) -> Tensor:
    """MSE + w * (1 - SSIM)."""
    return mse(pred, target, mask) + ssim_weight * _dssim(pred, target, mask)


LOSSES: dict[str, Loss] = {"mse": mse, "l1": l1, "l1+l2": l1_l2, "l1l2": l1_l2, "bce": bce,
                           "bce+ssim": bce_ssim, "mse+ssim": mse_ssim}


def get_loss(name: str, ssim_weight: float | None = None) -> Loss:
    """The loss called `name`; `ssim_weight` sets w in the `+ssim` losses (default 0.1)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    if ssim_weight is None:
        return LOSSES[name]
    if not name.endswith("+ssim"):
        raise ValueError(f"ssim_weight is the weight of the SSIM term and applies to bce+ssim "
                         f"or mse+ssim only, not to {name!r}")
    if ssim_weight < 0:
        raise ValueError(f"ssim_weight must be >= 0, got {ssim_weight}")
    return partial(LOSSES[name], ssim_weight=ssim_weight)
