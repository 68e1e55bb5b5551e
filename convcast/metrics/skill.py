"""Nowcasting skill scores (Shi et al. 2015; HKO-7; pysteps) per threshold and lead time.

Inputs are `[B, T, C, H, W]` fields in the units of the thresholds (rain rate in mm/h for the
HKO-7 thresholds 0.5, 2, 5, 10, 30: convert pixels with `convcast.data.units.pixel_to_rainrate`).
An event is `value >= threshold` by default (HKO-7, SEVIR); `rule=">"` is pysteps' det_cat_fct.
Aggregation as HKO-7: at each lead time the contingency table (hits, misses, false alarms,
correct negatives) is summed over the batch, channels and pixels, and over streamed batches and
DDP ranks, and the score is computed once from that table; it is not a mean of per-frame scores.
A score whose denominator is 0 (e.g. no event observed nor forecast) is NaN, never 0 or inf.
Continuous scores use the same pooled sums per lead time: `rainfall_mse` (per-pixel MSE of the
field) and Shi et al.'s `correlation` sum(P*T) / sqrt(sum(P**2) * sum(T**2) + 1e-9).
FSS is pysteps' `fss` (event `>=`, square window of `scale` pixels, zero outside the frame),
with its three sums pooled per lead time like pysteps' fss_accum over frames.
Masked pixels (mask False) are left out of tables and sums; for FSS they count as no event in
both fields, as pysteps treats NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convcast.metrics.checks import (
    LEAD_DIMS,
    Reduction,
    check_pair,
    check_rule,
    check_thresholds,
    reduce_lead_time,
    safe_div,
)
from convcast.metrics.streaming import LeadTimeMetric

SKILL_SCORES = ("csi", "pod", "far", "hss", "ets", "bias")
CORRELATION_EPS = 1e-9  # Shi et al. 2015's epsilon under the square root
Thresholds = float | Sequence[float]


# ----------------------------------------------------------------------------- per-batch sums

def _events(x: Tensor, threshold: float, rule: str) -> Tensor:
    return x >= threshold if rule == ">=" else x > threshold


def _table(pred: Tensor, target: Tensor, thresholds: list[float], rule: str,
           mask: Tensor | None) -> Tensor:
    """Contingency table `[K, T, 4]` (hits, misses, false alarms, correct negatives), int64."""
    rows = []
    for thr in thresholds:
        p, o = _events(pred, thr, rule), _events(target, thr, rule)  # [B, T, C, H, W] bool
        cells = (p & o, ~p & o, p & ~o, ~p & ~o)
        if mask is not None:
            cells = tuple(c & mask for c in cells)
        rows.append(torch.stack([c.sum(dim=LEAD_DIMS) for c in cells], dim=-1))  # [T, 4]
    return torch.stack(rows)  # [K, T, 4]


def _rain_sums(pred: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """Pooled sums per lead time `[T]` for rainfall MSE, MAE and correlation, float64."""
    if mask is not None:
        pred = torch.where(mask, pred, torch.zeros_like(pred))
        target = torch.where(mask, target, torch.zeros_like(target))
        n_pix = mask.sum(dim=LEAD_DIMS, dtype=torch.float64)  # [T]
    else:
        n_pix = torch.full((pred.shape[1],), pred[:, 0].numel(), dtype=torch.float64,
                           device=pred.device)  # [T]
    diff = pred - target  # [B, T, C, H, W]

    def total(x: Tensor) -> Tensor:
        return x.sum(dim=LEAD_DIMS, dtype=torch.float64)  # [T]

    return {"sq": total(diff * diff), "ab": total(diff.abs()), "n_pix": n_pix,
            "pt": total(pred * target),
            "pp": total(pred * pred), "tt": total(target * target)}


def _fss_sums(pred: Tensor, target: Tensor, thresholds: list[float], scales: list[int],
              rule: str, mask: Tensor | None) -> Tensor:
    """FSS sums `[K, S, T, 3]` (sum f**2, sum f*o, sum o**2 of the neighbourhood fractions)."""
    B, T, C, H, W = pred.shape
    out = torch.zeros(len(thresholds), len(scales), T, 3, dtype=torch.float64,
                      device=pred.device)
    for i, thr in enumerate(thresholds):
        f, o = _events(pred, thr, rule), _events(target, thr, rule)  # [B, T, C, H, W]
        if mask is not None:
            f, o = f & mask, o & mask  # a masked pixel is no event, as pysteps does for NaN
        f = f.to(pred.dtype).transpose(1, 2).reshape(B * C, T, H, W)  # [B*C, T, H, W]
        o = o.to(pred.dtype).transpose(1, 2).reshape(B * C, T, H, W)
        for j, s in enumerate(scales):
            # scipy's uniform_filter(size=s, mode="constant"): window [i - s//2, i + (s-1)//2]
            pad = (s // 2, (s - 1) // 2, s // 2, (s - 1) // 2)
            sf = F.avg_pool2d(F.pad(f, pad), s, stride=1)  # [B*C, T, H, W]
            so = F.avg_pool2d(F.pad(o, pad), s, stride=1)
            dims = (0, 2, 3)
            out[i, j] = torch.stack([(sf * sf).sum(dims, dtype=torch.float64),
                                     (sf * so).sum(dims, dtype=torch.float64),
                                     (so * so).sum(dims, dtype=torch.float64)], dim=-1)  # [T, 3]
    return out


def _check_scales(scales: Sequence[int]) -> list[int]:
    scales = [scales] if isinstance(scales, int) else list(scales)
    if any(not isinstance(s, int) or s < 1 for s in scales):
        raise ValueError(f"fss: scales are window sizes in pixels (positive ints), got {scales}")
    return scales


# ----------------------------------------------------------------------------- from sums

def scores_from_table(table: Tensor) -> dict[str, Tensor]:
    """CSI, POD, FAR, HSS, ETS (= GSS) and frequency bias from a table `[..., 4]` (float64)."""
    H, M, F_, R = table.double().unbind(dim=-1)  # hits, misses, false alarms, correct negatives
    N = H + M + F_ + R
    hits_random = safe_div((H + M) * (H + F_), N)  # hits expected by chance, for ETS
    return {
        "csi": safe_div(H, H + M + F_),
        "pod": safe_div(H, H + M),
        "far": safe_div(F_, H + F_),
        "hss": safe_div(2 * (H * R - F_ * M), (H + M) * (M + R) + (H + F_) * (F_ + R)),
        "ets": safe_div(H - hits_random, H + M + F_ - hits_random),
        "bias": safe_div(H + F_, H + M),
    }


def _correlation(sums: dict[str, Tensor], eps: float = CORRELATION_EPS) -> Tensor:
    return sums["pt"] / torch.sqrt(sums["pp"] * sums["tt"] + eps)


def _fss_from_sums(sums: Tensor) -> Tensor:
    ff, fo, oo = sums.unbind(dim=-1)
    return 1.0 - safe_div(ff - 2 * fo + oo, ff + oo)


# ----------------------------------------------------------------------------- functionals

def contingency_table(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
                      mask: Tensor | None = None) -> Tensor:
    """Per threshold and lead time `[K, T, 4]`: hits, misses, false alarms, correct negatives,
    summed over batch, channels and (valid) pixels."""
    pred, target, mask = check_pair("contingency_table", pred, target, mask)
    return _table(pred, target, check_thresholds("contingency_table", thresholds),
                  check_rule("contingency_table", rule), mask)


def _score(name: str, pred: Tensor, target: Tensor, thresholds: Thresholds, rule: str,
           mask: Tensor | None, reduction: Reduction) -> Tensor:
    table = contingency_table(pred, target, thresholds, rule=rule, mask=mask)
    return reduce_lead_time(scores_from_table(table)[name], reduction)


def csi(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
        mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Critical success index H / (H + M + F), `[K, T]`."""
    return _score("csi", pred, target, thresholds, rule, mask, reduction)


def pod(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
        mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Probability of detection H / (H + M), `[K, T]`."""
    return _score("pod", pred, target, thresholds, rule, mask, reduction)


def far(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
        mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """False alarm ratio F / (H + F), `[K, T]`."""
    return _score("far", pred, target, thresholds, rule, mask, reduction)


def hss(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
        mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Heidke skill score 2(HR - FM) / ((H+M)(M+R) + (H+F)(F+R)), `[K, T]`."""
    return _score("hss", pred, target, thresholds, rule, mask, reduction)


def ets(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
        mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Equitable threat score (Gilbert skill score) (H - Hr) / (H + M + F - Hr),
    Hr = (H+M)(H+F)/N, `[K, T]`."""
    return _score("ets", pred, target, thresholds, rule, mask, reduction)


def bias(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
         mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Frequency bias (H + F) / (H + M), `[K, T]`."""
    return _score("bias", pred, target, thresholds, rule, mask, reduction)


def rainfall_mse(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
                 reduction: Reduction = "none") -> Tensor:
    """Per-pixel MSE of the field (rain rate, Shi et al.'s Rainfall-MSE) per lead time `[T]`."""
    pred, target, mask = check_pair("rainfall_mse", pred, target, mask)
    s = _rain_sums(pred, target, mask)
    return reduce_lead_time(safe_div(s["sq"], s["n_pix"]), reduction)


def rainfall_mae(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
                 reduction: Reduction = "none") -> Tensor:
    """Per-pixel mean absolute error of the field (rain rate) per lead time `[T]`."""
    pred, target, mask = check_pair("rainfall_mae", pred, target, mask)
    s = _rain_sums(pred, target, mask)
    return reduce_lead_time(safe_div(s["ab"], s["n_pix"]), reduction)


def correlation(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
                eps: float = CORRELATION_EPS, reduction: Reduction = "none") -> Tensor:
    """Shi et al. 2015's correlation sum(P*T) / sqrt(sum(P**2) sum(T**2) + eps) per lead time
    `[T]`, the sums pooled over batch, channels and (valid) pixels."""
    pred, target, mask = check_pair("correlation", pred, target, mask)
    return reduce_lead_time(_correlation(_rain_sums(pred, target, mask), eps), reduction)


def fss(pred: Tensor, target: Tensor, thresholds: Thresholds, scales: int | Sequence[int], *,
        rule: str = ">=", mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Fractions skill score (pysteps `fss`) per threshold, scale and lead time `[K, S, T]`;
    `scales` are window sizes in pixels."""
    pred, target, mask = check_pair("fss", pred, target, mask)
    sums = _fss_sums(pred, target, check_thresholds("fss", thresholds), _check_scales(scales),
                     check_rule("fss", rule), mask)
    return reduce_lead_time(_fss_from_sums(sums), reduction)


def skill_scores(pred: Tensor, target: Tensor, thresholds: Thresholds, *, rule: str = ">=",
                 mask: Tensor | None = None, scales: Sequence[int] = ()) -> dict[str, Tensor]:
    """All skill scores per lead time: csi, pod, far, hss, ets, bias `[K, T]`, rainfall_mse,
    rainfall_mae and correlation `[T]`, and `fss_{s}px` `[K, T]` for each scale s in `scales`."""
    metric = SkillScores(thresholds, rule=rule, scales=scales, sync_on_compute=False)
    metric = metric.to(pred.device)
    metric.update(pred, target, mask=mask)
    return metric.compute()


# ----------------------------------------------------------------------------- streaming

class SkillScores(LeadTimeMetric):
    """Streams per-threshold per-lead-time contingency tables, rainfall sums and FSS sums;
    `compute()` gives what `skill_scores` returns (means over lead time if reduction="mean")."""

    higher_is_better = None

    def __init__(self, thresholds: Thresholds, rule: str = ">=", scales: Sequence[int] = (),
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds = check_thresholds("SkillScores", thresholds)
        self.rule = check_rule("SkillScores", rule)
        self.scales = _check_scales(scales)
        K, S, T = len(self.thresholds), len(self.scales), self._lead_times
        self.add_state("table", torch.zeros(K, T, 4, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("sq", "ab", "n_pix", "pt", "pp", "tt"):
            self._add_sum(name)
        self.add_state("fss_sums", torch.zeros(K, S, T, 3, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        pred, target, mask = check_pair("SkillScores", pred, target, mask)
        self._accumulate(table=_table(pred, target, self.thresholds, self.rule, mask),
                         **_rain_sums(pred, target, mask))
        if self.scales:
            self._accumulate(fss_sums=_fss_sums(pred, target, self.thresholds, self.scales,
                                                self.rule, mask))

    def compute(self) -> dict[str, Tensor]:
        out = scores_from_table(self.table)  # each [K, T]
        out["rainfall_mse"] = safe_div(self.sq, self.n_pix)  # [T]
        out["rainfall_mae"] = safe_div(self.ab, self.n_pix)  # [T]
        out["correlation"] = _correlation({"pt": self.pt, "pp": self.pp, "tt": self.tt})  # [T]
        if self.scales:
            values = _fss_from_sums(self.fss_sums)  # [K, S, T]
            for j, s in enumerate(self.scales):
                out[f"fss_{s}px"] = values[:, j]  # [K, T]
        return {name: self._reduce(value) for name, value in out.items()}


class _TableScore(LeadTimeMetric):
    """One contingency-table score streamed per threshold and lead time `[K, T]`."""

    score = ""

    def __init__(self, thresholds: Thresholds, rule: str = ">=", reduction: Reduction = "none",
                 lead_times: int | None = None, **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds = check_thresholds(type(self).__name__, thresholds)
        self.rule = check_rule(type(self).__name__, rule)
        self.add_state("table", torch.zeros(len(self.thresholds), self._lead_times, 4,
                                            dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        pred, target, mask = check_pair(type(self).__name__, pred, target, mask)
        self._accumulate(table=_table(pred, target, self.thresholds, self.rule, mask))

    def compute(self) -> Tensor:
        return self._reduce(scores_from_table(self.table)[self.score])


class CSI(_TableScore):
    """Streaming critical success index (see `csi`)."""

    score, higher_is_better = "csi", True


class POD(_TableScore):
    """Streaming probability of detection (see `pod`)."""

    score, higher_is_better = "pod", True


class FAR(_TableScore):
    """Streaming false alarm ratio (see `far`)."""

    score, higher_is_better = "far", False


class HSS(_TableScore):
    """Streaming Heidke skill score (see `hss`)."""

    score, higher_is_better = "hss", True


class ETS(_TableScore):
    """Streaming equitable threat score / GSS (see `ets`)."""

    score, higher_is_better = "ets", True


class Bias(_TableScore):
    """Streaming frequency bias (see `bias`); 1 is unbiased."""

    score, higher_is_better = "bias", None


class FSS(LeadTimeMetric):
    """Streaming fractions skill score `[K, S, T]` (see `fss`)."""

    higher_is_better = True

    def __init__(self, thresholds: Thresholds, scales: int | Sequence[int], rule: str = ">=",
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds = check_thresholds("FSS", thresholds)
        self.scales = _check_scales(scales)
        self.rule = check_rule("FSS", rule)
        self.add_state("sums", torch.zeros(len(self.thresholds), len(self.scales),
                                           self._lead_times, 3, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        pred, target, mask = check_pair("FSS", pred, target, mask)
        self._accumulate(sums=_fss_sums(pred, target, self.thresholds, self.scales, self.rule,
                                        mask))

    def compute(self) -> Tensor:
        return self._reduce(_fss_from_sums(self.sums))


class _RainMetric(LeadTimeMetric):
    def __init__(self, reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        for name in ("sq", "ab", "n_pix", "pt", "pp", "tt"):
            self._add_sum(name)

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        pred, target, mask = check_pair(type(self).__name__, pred, target, mask)
        self._accumulate(**_rain_sums(pred, target, mask))


class RainfallMSE(_RainMetric):
    """Streaming per-pixel MSE of the rain field `[T]` (see `rainfall_mse`)."""

    higher_is_better = False

    def compute(self) -> Tensor:
        return self._reduce(safe_div(self.sq, self.n_pix))


class RainfallMAE(_RainMetric):
    """Streaming per-pixel mean absolute error of the rain field `[T]` (see `rainfall_mae`)."""

    higher_is_better = False

    def compute(self) -> Tensor:
        return self._reduce(safe_div(self.ab, self.n_pix))


class Correlation(_RainMetric):
    """Streaming Shi et al. correlation `[T]` (see `correlation`)."""

    higher_is_better = True

    def compute(self) -> Tensor:
        return self._reduce(_correlation({"pt": self.pt, "pp": self.pp, "tt": self.tt}))
