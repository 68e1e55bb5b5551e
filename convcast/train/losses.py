"""Training losses, each `loss(pred, target, mask=None, *, scale=None) -> scalar`, averaged over
valid pixels.

The radar losses (`rainrate_mse`, `bmse`, `bmae`, `bmse+bmae`, `csi`) weigh errors by rain rate,
so they convert model values to dBZ and mm/h. `scale` is what converts: the training data's
description (`convcast.data.description.DataDescription`, whose `to_dbz` / `to_physical` know the
archive's dBZ range and Z-R relation), which `ForecastSystem` passes for a radar archive; None is
HKO-7's pixels (dBZ = 70 p - 10, Z = 58.53 R^1.56), the values of the synthetic radar sets. The
other losses take `scale` and ignore it, so every loss is called the same way.

Ensemble losses (`ENSEMBLE_LOSSES`: `crps`, `fair_crps`, `rainrate_fair_crps`) take members
`[B, M, T, C, H, W]` (a forecast `[B, T, C, H, W]` is one member); `exceedance_bce` takes
exceedance logits `[B, T, K, C, H, W]` (or a forecast, by its soft exceedance).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from convcast.data.units import HKO_ZR
from convcast.metrics.balanced import (
    HKO_THRESHOLDS,
    HKO_WEIGHTS,
    balanced_weights,
    hko_pixel_to_rainrate,
)
from convcast.metrics.frame import ssim_frames

Loss = Callable[..., torch.Tensor]


class RadarScale(Protocol):
    """Model values -> reflectivity (dBZ) and rain rate (mm/h), differentiably; `zr` is the
    (a, b) of the data's Z = a R^b."""

    zr: tuple[float, float]

    def to_dbz(self, model_values: Tensor) -> Tensor: ...

    def to_physical(self, model_values: Tensor) -> Tensor: ...


class HKO7Scale:
    """HKO-7 pixels in [0, 1]: dBZ = 70 p - 10, Z = 58.53 R^1.56 (the default `scale`)."""

    zr = HKO_ZR

    def to_dbz(self, model_values: Tensor) -> Tensor:
        from convcast.data.units import pixel_to_dbz

        return pixel_to_dbz(model_values)

    def to_physical(self, model_values: Tensor) -> Tensor:
        return hko_pixel_to_rainrate(model_values)


HKO7 = HKO7Scale()


def _masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def mse(pred: Tensor, target: Tensor, mask: Tensor | None = None,
        scale: RadarScale | None = None) -> Tensor:
    """Mean squared error per pixel."""
    return _masked_mean((pred - target) ** 2, mask)


def l1(pred: Tensor, target: Tensor, mask: Tensor | None = None,
       scale: RadarScale | None = None) -> Tensor:
    """Mean absolute error per pixel: its optimum is the median, so unlikely pixels stay empty."""
    return _masked_mean((pred - target).abs(), mask)


def l1_l2(pred: Tensor, target: Tensor, mask: Tensor | None = None,
          scale: RadarScale | None = None) -> Tensor:
    """L1 + L2 per pixel, the PredRNN training loss."""
    d = pred - target
    return _masked_mean(d.abs() + d**2, mask)


def bce(pred: Tensor, target: Tensor, mask: Tensor | None = None,
        scale: RadarScale | None = None) -> Tensor:
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
             scale: RadarScale | None = None, ssim_weight: float = SSIM_WEIGHT) -> Tensor:
    """BCE + w * (1 - SSIM): BCE tracks the digits; the SSIM term forbids a faint haze over
    empty background (SSIM punishes a mean of 0.02 where the target is empty by a factor of 5)."""
    return bce(pred, target, mask) + ssim_weight * _dssim(pred, target, mask)


def mse_ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None,
             scale: RadarScale | None = None, ssim_weight: float = SSIM_WEIGHT) -> Tensor:
    """MSE + w * (1 - SSIM)."""
    return mse(pred, target, mask) + ssim_weight * _dssim(pred, target, mask)


# ---- radar: errors that weight heavy rain, in the data's own units (see the module docstring) ---
def rainrate_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None,
                 scale: RadarScale | None = None) -> Tensor:
    """MSE in rain rate, (R(pred) - R(target))² in (mm/h)², R by the data's dBZ range and Z-R
    relation: the error the rainfall-MSE score measures. R grows exponentially with dBZ, so a
    pixel at 50 dBZ weighs ~10⁴ times one at 20 dBZ: heavy rain dominates."""
    scale = scale or HKO7
    with torch.autocast(pred.device.type, enabled=False):  # R(p) overflows bf16 precision
        err = (scale.to_physical(pred.float()) - scale.to_physical(target.float())) ** 2
    return _masked_mean(err, mask)


def _balanced(pred: Tensor, target: Tensor, mask: Tensor | None, power: int,
              scale: RadarScale | None) -> Tensor:
    scale = scale or HKO7
    with torch.autocast(pred.device.type, enabled=False):
        w = balanced_weights(scale.to_physical(target.float()), HKO_THRESHOLDS, HKO_WEIGHTS)
    return _masked_mean(w * (pred - target).abs() ** power, mask)


def bmse(pred: Tensor, target: Tensor, mask: Tensor | None = None,
         scale: RadarScale | None = None) -> Tensor:
    """HKO-7's balanced MSE (Shi et al. 2017) per pixel: w(r) (pred - target)² with w 1, 1, 2, 5,
    10, 30 from the TRUE rain rate r at 0.5, 2, 5, 10, 30 mm/h, so missing heavy rain costs up
    to 30 times more than a false alarm of the same size."""
    return _balanced(pred, target, mask, 2, scale)


def bmae(pred: Tensor, target: Tensor, mask: Tensor | None = None,
         scale: RadarScale | None = None) -> Tensor:
    """HKO-7's balanced MAE per pixel: w(r) |pred - target| (weights as `bmse`)."""
    return _balanced(pred, target, mask, 1, scale)


def bmse_bmae(pred: Tensor, target: Tensor, mask: Tensor | None = None,
              scale: RadarScale | None = None) -> Tensor:
    """B-MSE + B-MAE, the training loss of HKO-7's TrajGRU benchmark."""
    return _balanced(pred, target, mask, 2, scale) + _balanced(pred, target, mask, 1, scale)


CSI_THRESHOLDS = (0.5, 2.0, 5.0)  # mm/h, the thresholds of the soft CSI loss
CSI_TEMPERATURE = 2.0  # dBZ: the width of the soft exceedance step


def soft_csi(pred: Tensor, target: Tensor, mask: Tensor | None = None,
             scale: RadarScale | None = None) -> Tensor:
    """1 - CSI with the forecast's exceedance made differentiable, averaged over lead times and
    the thresholds 0.5, 2, 5 mm/h: p = sigmoid((dBZ(pred) - dBZ(t)) / 2 dBZ), o = [truth >= t],
    CSI = Σpo / (Σpo + Σ(1-p)o + Σp(1-o)) per lead time. It rewards hits of the rain areas
    directly, where an MSE shrinks peaks it is unsure of (and so loses the heavy thresholds).
    dBZ(t) is found on the data's own scale (its Z-R relation), so the step sits at t mm/h."""
    from convcast.data.units import rainrate_to_dbz

    scale = scale or HKO7
    with torch.autocast(pred.device.type, enabled=False):
        dp, dt = scale.to_dbz(pred.float()), scale.to_dbz(target.float())
        m = mask.to(dp.dtype).expand_as(dp) if mask is not None else torch.ones_like(dp)
        dims = [d for d in range(dp.dim()) if d != 1]  # all but the lead time
        out = []
        for t in CSI_THRESHOLDS:
            z = float(rainrate_to_dbz(t, *scale.zr))
            p = torch.sigmoid((dp - z) / CSI_TEMPERATURE) * m  # [B, T, C, H, W]
            o = (dt >= z).to(dp.dtype) * m
            hits = (p * o).sum(dims)  # [T]
            total = hits + ((m - p) * o).sum(dims) + (p * (1 - o) * m).sum(dims)
            out.append(1 - (hits / total.clamp_min(1e-6)).mean())
    return torch.stack(out).mean()


# ---- ensembles and exceedance probabilities --------------------------------------------------
def _ensemble_score(pred: Tensor, target: Tensor, mask: Tensor | None, fair: bool) -> Tensor:
    """The (fair) CRPS of members `[B, M, T, C, H, W]` (a forecast `[B, T, C, H, W]` is one
    member) against `target [B, T, C, H, W]`, per pixel, averaged over valid pixels."""
    ens = pred.unsqueeze(1) if pred.dim() == target.dim() else pred  # [B, M, T, C, H, W]
    if ens.dim() != 6 or ens.shape[:1] + ens.shape[2:] != target.shape:
        raise ValueError(f"the CRPS losses take members [B, M, T, C, H, W] (or one forecast "
                         f"[B, T, C, H, W]) with B, T, C, H, W as the target's "
                         f"{tuple(target.shape)}, got {tuple(pred.shape)}")
    M = ens.shape[1]
    with torch.autocast(pred.device.type, enabled=False):  # sums of differences: float32
        x = ens.float().sort(dim=1).values  # [B, M, T, C, H, W]
        error = (x - target.float().unsqueeze(1)).abs().mean(dim=1)  # (1/M) Σ_i |x_i - y|
        coef = 2 * torch.arange(M, dtype=x.dtype, device=x.device) - (M - 1)  # [M]
        pairs = (coef.view(1, M, 1, 1, 1, 1) * x).sum(dim=1)  # Σ_{i<j} |x_i - x_j|, x sorted
        spread = pairs / (M * (M - 1)) if fair and M > 1 else pairs / M**2
        return _masked_mean(error - spread, mask)  # of [B, T, C, H, W]


def crps(pred: Tensor, target: Tensor, mask: Tensor | None = None,
         scale: RadarScale | None = None) -> Tensor:
    """CRPS of an ensemble `[B, M, T, C, H, W]` per pixel, in model values (Hersbach 2000):

        CRPS = (1/M) Σ_i |x_i - y| - 1/(2 M²) Σ_{i,j} |x_i - x_j|,

    the metric `convcast.metrics.probabilistic.crps`, pooled. One member (or a forecast
    `[B, T, C, H, W]`) gives the MAE. As a training loss it rewards under-dispersion for finite
    M (its minimum is not at the true distribution); use `fair_crps` to train ensembles."""
    return _ensemble_score(pred, target, mask, fair=False)


def fair_crps(pred: Tensor, target: Tensor, mask: Tensor | None = None,
              scale: RadarScale | None = None) -> Tensor:
    """Fair CRPS (Ferro 2014) of an ensemble `[B, M, T, C, H, W]` per pixel, in model values:

        fCRPS = (1/M) Σ_i |x_i - y| - 1/(2 M (M - 1)) Σ_{i,j} |x_i - x_j|,

    unbiased for the CRPS of the distribution the M members are drawn from, so its expectation
    is least when they are drawn from the truth's distribution, for any M >= 2 (the ensemble
    training loss of `ForecastSystem(members=M)`). It equals
    `convcast.metrics.probabilistic.fair_crps` pooled (`reduction="pooled"`). With one member
    the spread term is undefined; a forecast `[B, T, C, H, W]` (or M = 1) is scored by the
    CRPS, i.e. the MAE."""
    return _ensemble_score(pred, target, mask, fair=True)


def rainrate_fair_crps(pred: Tensor, target: Tensor, mask: Tensor | None = None,
                       scale: RadarScale | None = None) -> Tensor:
    """`fair_crps` in rain rate (mm/h), members and truth converted by the data's dBZ range and
    Z-R relation (`scale`): heavy rain weighs as in `rainrate_mse`."""
    scale = scale or HKO7
    with torch.autocast(pred.device.type, enabled=False):
        return _ensemble_score(scale.to_physical(pred.float()), scale.to_physical(target.float()),
                               mask, fair=True)


def exceedance_bce(pred: Tensor, target: Tensor, mask: Tensor | None = None,
                   scale: RadarScale | None = None, *,
                   thresholds: tuple[float, ...] = CSI_THRESHOLDS) -> Tensor:
    """Binary cross-entropy of exceedance logits against the events o_k = [R(truth) >= t_k],
    R in mm/h by the data's Z-R relation (`scale`), averaged over thresholds and valid pixels:

        BCE = -mean_k [o_k log σ(z_k) + (1 - o_k) log(1 - σ(z_k))].

    `pred`: logits `[B, T, K, C, H, W]` for the K `thresholds` (mm/h; what
    `ExceedanceHeads.logits` gives, and `ForecastSystem` passes a model's own `thresholds`), or
    a forecast `[B, T, C, H, W]`, whose logits are the soft exceedance of the soft CSI,
    z_k = (dBZ(pred) - dBZ(t_k)) / 2 dBZ."""
    from convcast.data.units import rainrate_to_dbz

    scale, thr = scale or HKO7, tuple(float(t) for t in thresholds)
    with torch.autocast(pred.device.type, enabled=False):
        rate = scale.to_physical(target.float())  # [B, T, C, H, W] mm/h
        events = torch.stack([(rate >= t).float() for t in thr], dim=2)  # [B, T, K, C, H, W]
        if pred.shape == target.shape:  # a forecast: the soft CSI's soft exceedance
            dbz = scale.to_dbz(pred.float())  # [B, T, C, H, W]
            z = torch.stack([(dbz - float(rainrate_to_dbz(t, *scale.zr))) / CSI_TEMPERATURE
                             for t in thr], dim=2)  # [B, T, K, C, H, W]
        elif pred.shape == events.shape:
            z = pred.float()
        else:
            raise ValueError(f"exceedance_bce takes logits [B, T, K={len(thr)}, C, H, W] for the "
                             f"thresholds {thr} mm/h (or a forecast shaped as the target "
                             f"{tuple(target.shape)}), got {tuple(pred.shape)}; give the model's "
                             "thresholds to the loss")
        err = F.binary_cross_entropy_with_logits(z, events, reduction="none")
    return _masked_mean(err, None if mask is None else mask.unsqueeze(2))


ENSEMBLE_LOSSES = ("crps", "fair_crps", "rainrate_fair_crps")  # take members [B, M, T, C, H, W]
LOSSES: dict[str, Loss] = {"mse": mse, "l1": l1, "l1+l2": l1_l2, "l1l2": l1_l2, "bce": bce,
                           "bce+ssim": bce_ssim, "mse+ssim": mse_ssim,
                           "rainrate_mse": rainrate_mse, "bmse": bmse, "bmae": bmae,
                           "bmse+bmae": bmse_bmae, "csi": soft_csi, "crps": crps,
                           "fair_crps": fair_crps, "rainrate_fair_crps": rainrate_fair_crps,
                           "exceedance_bce": exceedance_bce}


class WeightedSum:
    """A sum of named losses, each scaled: `"mse+0.0003*rainrate_mse"` (terms from `LOSSES`)."""

    def __init__(self, name: str) -> None:
        self.terms: list[tuple[float, Loss]] = []
        for part in name.split("+"):
            weight, _, term = part.strip().rpartition("*")
            if term not in LOSSES:
                raise ValueError(f"unknown loss {term!r} in {name!r}; valid: {', '.join(LOSSES)}"
                                 ", or a sum of them such as 'mse+0.0003*rainrate_mse'")
            try:
                w = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"loss {name!r}: the weight of {term!r} must be a number, got "
                                 f"{weight!r}") from None
            if not w >= 0:
                raise ValueError(f"loss {name!r}: weights must be >= 0, got {w} for {term!r}")
            self.terms.append((w, LOSSES[term]))

    def __call__(self, pred: Tensor, target: Tensor, mask: Tensor | None = None,
                 scale: RadarScale | None = None) -> Tensor:
        return sum(w * fn(pred, target, mask, scale) for w, fn in self.terms)


def get_loss(name: str, ssim_weight: float | None = None) -> Loss:
    """The loss called `name` (or a weighted sum of them, see `WeightedSum`); `ssim_weight` sets
    w in the `+ssim` losses (default 0.1)."""
    if name not in LOSSES:
        if ssim_weight is None and ("+" in name or "*" in name):
            return WeightedSum(name)
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}, or a sum of them "
                         "such as 'mse+0.0003*rainrate_mse'")
    if ssim_weight is None:
        return LOSSES[name]
    if not name.endswith("+ssim"):
        raise ValueError(f"ssim_weight is the weight of the SSIM term and applies to bce+ssim "
                         f"or mse+ssim only, not to {name!r}")
    if ssim_weight < 0:
        raise ValueError(f"ssim_weight must be >= 0, got {ssim_weight}")
    return partial(LOSSES[name], ssim_weight=ssim_weight)
