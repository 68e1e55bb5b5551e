"""Probabilistic verification of ensemble and probability nowcasts (pysteps' scores) per lead time.

Inputs: an ensemble `[B, M, T, C, H, W]` (M members, any M >= 1: a deterministic forecast is
`pred.unsqueeze(1)`, as `Forecaster.sample` returns) or, for the threshold scores (Brier, ROC,
reliability), an exceedance probability `[B, T, C, H, W]` in [0, 1] for one threshold;
observations `[B, T, C, H, W]`; optional `mask` (bool, broadcastable to the observations,
True = valid) that leaves pixels out of every sum. An event is `obs >= threshold`, and an
ensemble's probability is the fraction of members `>= threshold` (pysteps' `excprob`).

Each score is one pair of functions: one turns a batch into sums per lead time (last axis T),
the other turns sums into the score. The functions (`crps`, `brier_score`, ...) apply both to one
call; the metrics (`CRPS`, `BrierScore`, ..., `ProbabilisticMetrics`) add the sums over batches
and DDP ranks (states summed, memory constant in the number of batches) and apply the second at
`compute`, so streaming gives the numbers of one big call. `reduction`: "none" per lead time
`[..., T]`; "mean" the mean of those over lead times (NaN skipped); "pooled" the score of the
sums over all lead times (what pysteps gives on the whole array).

Where this differs from pysteps (1.21), on purpose:
- `crps` is the exact CRPS of the ensemble's empirical CDF. pysteps' `CRPS` drops the two
  intervals next to an observation equal to a member (a dry pixel with some dry members), so it
  is too low on rain fields; `ties="pysteps"` reproduces it.
- `rank_histogram` splits a tie (the observation equal to k members) evenly over its k + 1
  ranks, the expectation of pysteps' random draw: deterministic, and it streams exactly.
- `reliability_diagram` applies `min_count` to the totals at compute; pysteps applies it to each
  accumulated batch (the same for one call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from convcast.metrics.checks import check_mask, check_pair, check_thresholds, safe_div
from convcast.metrics.streaming import LeadTimeMetric

Reduction = Literal["none", "mean", "pooled"]
Ties = Literal["exact", "pysteps"]
Thresholds = float | Sequence[float]
Stats = dict[str, Tensor]
Output = Tensor | dict[str, Tensor]
REDUCTIONS = ("none", "mean", "pooled")
SUM_DIMS = (0, 2, 3, 4)  # of [B, T, C, H, W]: batch, channels, pixels; keep lead time


# ----------------------------------------------------------------------------- checks

def _check_tensor(name: str, label: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(x).__name__}; "
                        "convert it with torch.as_tensor")
    if x.is_complex():
        raise TypeError(f"{name}: {label} must hold real numbers, got {x.dtype}")


def _check_finite(name: str, label: str, x: Tensor, mask: Tensor | None) -> None:
    bad = ~torch.isfinite(x) if mask is None else ~torch.isfinite(x) & mask
    n_bad = int(bad.sum())
    if n_bad:
        where = " at valid (mask=True) pixels" if mask is not None else ""
        raise ValueError(f"{name}: {label} has {n_bad} NaN/inf values{where}; pass "
                         "mask=torch.isfinite(target) (True = valid) to exclude missing data, "
                         "or fix the values")


def _check_ensemble(name: str, ensemble: Tensor, target: Tensor, mask: Tensor | None,
                    min_members: int = 1) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate `[B, M, T, C, H, W]` against `[B, T, C, H, W]`; float64 copies, expanded mask."""
    _check_tensor(name, "ensemble", ensemble)
    _check_tensor(name, "target", target)
    if target.dim() != 5:
        raise ValueError(f"{name}: target must be [B, T, C, H, W], got shape "
                         f"{tuple(target.shape)}")
    if ensemble.dim() != 6 or ensemble.shape[:1] + ensemble.shape[2:] != target.shape:
        raise ValueError(f"{name}: ensemble must be [B, M, T, C, H, W] with B, T, C, H, W as in "
                         f"target {tuple(target.shape)}, got {tuple(ensemble.shape)}; a "
                         "deterministic forecast [B, T, C, H, W] is pred.unsqueeze(1)")
    if ensemble.numel() == 0:
        raise ValueError(f"{name}: ensemble of shape {tuple(ensemble.shape)} is empty (an axis "
                         "of length 0); score at least one member of one frame")
    if ensemble.shape[1] < min_members:
        raise ValueError(f"{name} needs at least {min_members} ensemble members, got M="
                         f"{ensemble.shape[1]}; for a deterministic forecast use crps (= MAE)")
    mask = None if mask is None else check_mask(name, mask, target.shape)
    ensemble, target = ensemble.double(), target.double()
    _check_finite(name, "ensemble", ensemble, None if mask is None else mask.unsqueeze(1))
    _check_finite(name, "target", target, mask)
    return ensemble, target, mask


def _check_reduction(name: str, reduction: str) -> Reduction:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {REDUCTIONS} (per lead time, mean "
                         f"over lead times, score of the pooled sums), got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _check_ties(name: str, ties: str) -> Ties:
    if ties not in ("exact", "pysteps"):
        raise ValueError(f"{name}: ties must be 'exact' (the CRPS of the empirical CDF) or "
                         f"'pysteps' (pysteps.verification.probscores.CRPS), got {ties!r}")
    return ties  # type: ignore[return-value]


def _check_count(name: str, label: str, value: int, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}: {label} must be an int >= {least}, got {value!r}")
    return value


def _probabilities(name: str, forecast: Tensor, target: Tensor, thresholds: list[float],
                   mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Forecast probabilities and observed events per threshold `[K, B, T, C, H, W]`."""
    _check_tensor(name, "forecast", forecast)
    if forecast.dim() == 6:
        ensemble, target, mask = _check_ensemble(name, forecast, target, mask)
        probs = _exceedance(ensemble, thresholds)
    elif forecast.dim() == 5:
        if len(thresholds) != 1:
            raise ValueError(f"{name}: a probability forecast [B, T, C, H, W] is for one "
                             f"threshold, got thresholds={thresholds}; call once per threshold "
                             "or pass the ensemble [B, M, T, C, H, W]")
        if isinstance(target, Tensor) and forecast.shape != target.shape:
            raise ValueError(f"{name}: forecast must be an ensemble [B, M, T, C, H, W] or a "
                             f"probability [B, T, C, H, W] of the target's shape "
                             f"{tuple(target.shape)}, got {tuple(forecast.shape)}")
        forecast, target, mask = check_pair(name, forecast, target, mask)
        probs, target = forecast.double().unsqueeze(0), target.double()
        outside = (probs < 0) | (probs > 1)
        n_out = int((outside if mask is None else outside & mask).sum())
        if n_out:
            raise ValueError(f"{name}: {n_out} forecast probabilities are outside [0, 1]; pass "
                             "exceedance probabilities, or an ensemble [B, M, T, C, H, W]")
    else:
        raise ValueError(f"{name}: forecast must be an ensemble [B, M, T, C, H, W] or a "
                         f"probability [B, T, C, H, W], got shape {tuple(forecast.shape)}")
    events = torch.stack([target >= thr for thr in thresholds])  # [K, B, T, C, H, W]
    return probs, events, mask


def _exceedance(ensemble: Tensor, thresholds: list[float]) -> Tensor:
    M = ensemble.shape[1]
    return torch.stack([(ensemble >= thr).sum(dim=1, dtype=torch.float64) / M
                        for thr in thresholds])  # [K, B, T, C, H, W]


# ----------------------------------------------------------------------------- sums

def _lead_sum(x: Tensor, mask: Tensor | None) -> Tensor:
    """Sum of `[..., B, T, C, H, W]` over batch, channels and valid pixels: `[..., T]`."""
    if mask is not None:
        x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    lead = x.dim() - 4  # the axis of T
    return x.sum(dim=(lead - 1, lead + 1, lead + 2, lead + 3), dtype=torch.float64)


def _pixel_count(target: Tensor, mask: Tensor | None) -> Tensor:
    """Valid pixels per lead time `[T]`, float64."""
    if mask is not None:
        return mask.sum(dim=SUM_DIMS, dtype=torch.float64)
    return torch.full((target.shape[1],), target[:, 0].numel(), dtype=torch.float64,
                      device=target.device)


def _binned(index: Tensor, n_bins: int, weights: Sequence[Tensor],
            mask: Tensor | None) -> list[Tensor]:
    """Per `[K, B, T, C, H, W]` bin index, each weight summed per bin: `[K, n_bins, T]`."""
    K, _, T = index.shape[:3]
    k = torch.arange(K, device=index.device).view(K, 1, 1, 1, 1, 1)
    t = torch.arange(T, device=index.device).view(1, 1, T, 1, 1, 1)
    flat = ((k * n_bins + index) * T + t).reshape(-1)  # [K * B * T * C * H * W]
    out = []
    for w in weights:
        w = w.to(torch.float64).expand(index.shape)
        if mask is not None:
            w = torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))
        total = torch.zeros(K * n_bins * T, dtype=torch.float64, device=index.device)
        total.index_put_((flat,), w.reshape(-1), accumulate=True)  # deterministic on CUDA
        out.append(total.view(K, n_bins, T))
    return out


def _crps_stats(ensemble: Tensor, target: Tensor, mask: Tensor | None, ties: Ties) -> Stats:
    """Sums `[T]` of the CRPS and the fair CRPS over valid pixels, and their pixel counts."""
    M = ensemble.shape[1]
    x = ensemble.sort(dim=1).values  # [B, M, T, C, H, W]
    y = target.unsqueeze(1)  # [B, 1, T, C, H, W]
    error = (x - y).abs().mean(dim=1)  # (1/M) sum_i |x_i - y|  [B, T, C, H, W]
    coef = 2 * torch.arange(M, dtype=x.dtype, device=x.device) - (M - 1)
    pairs = (coef.view(1, M, 1, 1, 1, 1) * x).sum(dim=1)  # sum_{i<j} |x_i - x_j|, x sorted
    score = error - pairs / M**2
    if ties == "pysteps":
        score = score - _pysteps_tie_gap(x, y)
    n = _pixel_count(target, mask)
    fair = error - pairs / (M * (M - 1)) if M > 1 else torch.zeros_like(error)
    return {"crps_sum": _lead_sum(score, mask), "crps_n": n,
            "fair_crps_sum": _lead_sum(fair, mask),
            "fair_crps_n": n if M > 1 else torch.zeros_like(n)}


def _pysteps_tie_gap(x: Tensor, y: Tensor) -> Tensor:
    """What pysteps' Hersbach loop leaves out where y equals a sorted member: the interval
    [x_{i-1}, x_i] weighted p_i**2 when y = x_i > x_{i-1}, (1 - p_i)**2 when y = x_{i-1} < x_i,
    p_i = i / M (its strict inequalities miss both cases)."""
    M = x.shape[1]
    lo, hi = x[:, :-1], x[:, 1:]  # [B, M - 1, T, C, H, W]
    p = (torch.arange(1, M, dtype=x.dtype, device=x.device) / M).view(1, M - 1, 1, 1, 1, 1)
    width, zero = hi - lo, torch.zeros((), dtype=x.dtype, device=x.device)
    below = torch.where((hi == y) & (lo < y), width * p**2, zero)
    above = torch.where((lo == y) & (hi > y), width * (1 - p) ** 2, zero)
    return (below + above).sum(dim=1)  # [B, T, C, H, W]


def _crps_from(s: Stats) -> dict[str, Tensor]:
    fair = safe_div(s["fair_crps_sum"], s["fair_crps_n"])
    complete = s["fair_crps_n"] == s["crps_n"]  # every batch had M >= 2
    return {"crps": safe_div(s["crps_sum"], s["crps_n"]),
            "fair_crps": torch.where(complete, fair, torch.full_like(fair, float("nan")))}


def _brier_stats(probs: Tensor, events: Tensor, mask: Tensor | None,
                 reference: Tensor | None = None) -> Stats:
    """Sums `[K, T]` of (p - o)**2, of o, of the reference's (p_ref - o)**2, and counts."""
    o = events.double()  # [K, B, T, C, H, W]
    K = o.shape[0]
    stats = {"brier_sum": _lead_sum((probs - o) ** 2, mask),
             "brier_events": _lead_sum(o, mask),
             "brier_n": _pixel_count(o[0], mask).expand(K, -1).clone()}
    if reference is not None:
        stats["brier_ref_sum"] = _lead_sum((reference - o) ** 2, mask)
    return stats


def _brier_from(s: Stats) -> dict[str, Tensor]:
    bs = safe_div(s["brier_sum"], s["brier_n"])
    base_rate = safe_div(s["brier_events"], s["brier_n"])
    if "brier_ref_sum" in s:
        ref = safe_div(s["brier_ref_sum"], s["brier_n"])
    else:
        ref = base_rate * (1 - base_rate)  # the Brier score of always forecasting the base rate
    return {"brier_score": bs, "brier_skill_score": 1 - safe_div(bs, ref),
            "base_rate": base_rate}


def _prob_thresholds(n: int, device: torch.device | str = "cpu") -> Tensor:
    """pysteps' probability thresholds np.linspace(0, 1, n) (the same floats)."""
    return torch.from_numpy(np.linspace(0.0, 1.0, n)).to(device)


def _bin_edges(n_bins: int, device: torch.device | str = "cpu") -> Tensor:
    """pysteps' reliability bin edges np.linspace(-1e-6, 1 + 1e-6, n_bins + 1)."""
    return torch.from_numpy(np.linspace(-1e-6, 1 + 1e-6, n_bins + 1)).to(device)


def _roc_stats(probs: Tensor, events: Tensor, mask: Tensor | None, n_prob: int) -> Stats:
    """Events and non-events `[K, P + 1, T]` per level j: j probability thresholds <= p."""
    level = torch.bucketize(probs, _prob_thresholds(n_prob, probs.device), right=True)
    ev, non = _binned(level, n_prob + 1, [events, ~events], mask)
    return {"roc_events": ev, "roc_non_events": non}


def _roc_from(s: Stats) -> dict[str, Tensor]:
    def at_or_above(hist: Tensor) -> Tensor:  # [K, P, T]: samples with p >= threshold i
        return hist.flip(1).cumsum(1).flip(1)[:, 1:]

    hits, false_alarms = at_or_above(s["roc_events"]), at_or_above(s["roc_non_events"])
    misses = s["roc_events"].sum(1, keepdim=True) - hits
    corr_neg = s["roc_non_events"].sum(1, keepdim=True) - false_alarms
    pod, pofd = safe_div(hits, hits + misses), safe_div(false_alarms, false_alarms + corr_neg)
    area = ((1 - pofd[:, 0]) * (1 + pod[:, 0]) / 2
            + ((pofd[:, :-1] - pofd[:, 1:]) * (pod[:, 1:] + pod[:, :-1]) / 2).sum(1)
            + pofd[:, -1] * pod[:, -1] / 2)  # pysteps' trapezoids, [K, T]
    return {"pod": pod, "pofd": pofd, "area": area}


def _reliability_stats(probs: Tensor, events: Tensor, mask: Tensor | None, n_bins: int) -> Stats:
    """Samples, events and summed probabilities per bin `[K, n_bins, T]`."""
    index = torch.bucketize(probs, _bin_edges(n_bins, probs.device))  # np.digitize(right=True)
    count, ev, prob = _binned(index, n_bins + 2, [torch.ones((), device=probs.device), events,
                                                  probs], mask)
    return {"rel_count": count[:, 1:-1], "rel_events": ev[:, 1:-1],
            "rel_prob_sum": prob[:, 1:-1]}  # bins 0 and n_bins + 1 lie outside the edges


def _reliability_from(s: Stats, min_count: int) -> dict[str, Tensor]:
    count = s["rel_count"]
    enough = count >= max(min_count, 1)
    nan = torch.full_like(count, float("nan"))
    return {"forecast_probability": torch.where(enough, s["rel_prob_sum"] / count, nan),
            "observed_frequency": torch.where(enough, s["rel_events"] / count, nan),
            "counts": count}


def _rank_stats(ensemble: Tensor, target: Tensor, mask: Tensor | None,
                x_min: float | None) -> Stats:
    """Rank histogram counts `[M + 1, T]`; a tie adds 1 / (k + 1) to each of its k + 1 ranks."""
    M = ensemble.shape[1]
    x, y = ensemble, target.unsqueeze(1)  # [B, M, T, C, H, W], [B, 1, T, C, H, W]
    if x_min is not None:
        wet = (target >= x_min) | (x >= x_min).any(dim=1)  # pysteps skips all-dry pairs
        mask = wet if mask is None else wet & mask
        x = torch.where(x < x_min, x_min - 1.0, x)  # pysteps' tie of everything below x_min
        y = torch.where(y < x_min, x_min - 1.0, y)
    below, equal = (x < y).sum(dim=1), (x == y).sum(dim=1)  # [B, T, C, H, W]
    w = 1.0 / (equal + 1).double()
    start, stop = _binned(torch.stack([below, below + equal + 1]), M + 2, [w], mask)[0]
    return {"rank_counts": (start - stop).cumsum(0)[:-1]}  # [M + 1, T]


def _rank_from(s: Stats, normalize: bool) -> Tensor:
    counts = s["rank_counts"]
    return safe_div(counts, counts.sum(0, keepdim=True)) if normalize else counts


def _spread_stats(ensemble: Tensor, target: Tensor, mask: Tensor | None) -> Stats:
    """Sums `[T]` of (mean - y)**2, of the member variance s**2 and of (M + 1)/M s**2."""
    M = ensemble.shape[1]
    n = _pixel_count(target, mask)
    stats = {"spread_sq_err": _lead_sum((ensemble.mean(dim=1) - target) ** 2, mask),
             "spread_n": n}
    if M > 1:
        var = ensemble.var(dim=1, correction=1)  # [B, T, C, H, W]
        stats.update(spread_var=_lead_sum(var, mask),
                     spread_var_corrected=_lead_sum(var * (M + 1) / M, mask), spread_n_var=n)
    else:
        stats.update(spread_var=torch.zeros_like(n), spread_var_corrected=torch.zeros_like(n),
                     spread_n_var=torch.zeros_like(n))
    return stats


def _spread_from(s: Stats, corrected: bool) -> dict[str, Tensor]:
    var = safe_div(s["spread_var_corrected" if corrected else "spread_var"], s["spread_n_var"])
    complete = s["spread_n_var"] == s["spread_n"]  # every batch had M >= 2
    spread = torch.where(complete, var.sqrt(), torch.full_like(var, float("nan")))
    rmse = safe_div(s["spread_sq_err"], s["spread_n"]).sqrt()
    return {"spread": spread, "rmse": rmse, "spread_skill_ratio": safe_div(spread, rmse)}


def _finish(stats: Stats, score: Callable[[Stats], Output], reduction: Reduction) -> Output:
    """Apply a score to its sums per lead time, to their mean over T, or to the pooled sums."""
    if reduction == "pooled":
        out = score({k: v.sum(dim=-1, keepdim=True) for k, v in stats.items()})
        squeeze = lambda v: v.squeeze(-1)  # noqa: E731
        return squeeze(out) if isinstance(out, Tensor) else {k: squeeze(v) for k, v in
                                                             out.items()}
    out = score(stats)
    if reduction == "mean":
        mean = lambda v: torch.nanmean(v, dim=-1)  # noqa: E731
        return mean(out) if isinstance(out, Tensor) else {k: mean(v) for k, v in out.items()}
    return out


# ----------------------------------------------------------------------------- functionals

def exceedance_probability(ensemble: Tensor, thresholds: Thresholds) -> Tensor:
    """Fraction of members `>= threshold` (pysteps' `excprob`), `[K, B, T, C, H, W]` float64.

    >>> ens = torch.tensor([0.0, 0.4, 1.2, 3.0]).view(1, 4, 1, 1, 1, 1)
    >>> exceedance_probability(ens, [0.5, 2.0]).flatten()
    tensor([0.5000, 0.2500], dtype=torch.float64)
    """
    thr = check_thresholds("exceedance_probability", thresholds)
    _check_tensor("exceedance_probability", "ensemble", ensemble)
    if ensemble.dim() != 6 or ensemble.numel() == 0:
        raise ValueError("exceedance_probability: ensemble must be a non-empty [B, M, T, C, H, "
                         f"W] tensor, got shape {tuple(ensemble.shape)}")
    return _exceedance(ensemble, thr)


def crps(ensemble: Tensor, target: Tensor, *, mask: Tensor | None = None, ties: Ties = "exact",
         reduction: Reduction = "none") -> Tensor:
    """Continuous ranked probability score of an ensemble `[T]` (lower is better):
    CRPS = (1/M) sum_i |x_i - y| - 1/(2 M**2) sum_{i,j} |x_i - x_j|, the integral of
    (F_ens(z) - 1{z >= y})**2 dz (Hersbach 2000), averaged over valid pixels. M = 1 gives the MAE.
    `ties="pysteps"` reproduces pysteps' `CRPS`, which is lower where y equals a member.

    >>> ens = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1, 1)
    >>> obs = torch.zeros(1, 1, 1, 1, 1)
    >>> crps(ens, obs), crps(ens, obs, ties="pysteps")
    (tensor([0.2500], dtype=torch.float64), tensor([0.], dtype=torch.float64))
    """
    ensemble, target, mask = _check_ensemble("crps", ensemble, target, mask)
    stats = _crps_stats(ensemble, target, mask, _check_ties("crps", ties))
    return _finish(stats, _crps_from, _check_reduction("crps", reduction))["crps"]


def fair_crps(ensemble: Tensor, target: Tensor, *, mask: Tensor | None = None,
              reduction: Reduction = "none") -> Tensor:
    """Fair CRPS (Ferro 2014) `[T]`, unbiased for the CRPS of the distribution the M >= 2
    members are drawn from: (1/M) sum_i |x_i - y| - 1/(2 M (M - 1)) sum_{i,j} |x_i - x_j|.

    >>> ens = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1, 1, 1)
    >>> fair_crps(ens, torch.zeros(1, 1, 1, 1, 1))
    tensor([0.], dtype=torch.float64)
    """
    ensemble, target, mask = _check_ensemble("fair_crps", ensemble, target, mask, min_members=2)
    stats = _crps_stats(ensemble, target, mask, "exact")
    return _finish(stats, _crps_from, _check_reduction("fair_crps", reduction))["fair_crps"]


def _brier(name: str, forecast: Tensor, target: Tensor, thresholds: Thresholds,
           reference: Tensor | None, mask: Tensor | None, reduction: str) -> dict[str, Tensor]:
    thr = check_thresholds(name, thresholds)
    probs, events, mask = _probabilities(name, forecast, target, thr, mask)
    ref = None
    if reference is not None:
        ref, _, _ = _probabilities(f"{name} (reference)", reference, target, thr, mask)
    return _finish(_brier_stats(probs, events, mask, ref), _brier_from,
                   _check_reduction(name, reduction))


def brier_score(forecast: Tensor, target: Tensor, thresholds: Thresholds, *,
                mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Brier score per threshold and lead time `[K, T]` (lower is better):
    BS = mean over valid pixels of (p - o)**2, o = 1{y >= threshold}, p the forecast probability
    (an ensemble's fraction of members >= threshold, or the given `[B, T, C, H, W]` one).

    >>> ens = torch.tensor([0.0, 0.0, 1.0, 3.0]).view(1, 4, 1, 1, 1, 1)
    >>> brier_score(ens, torch.full((1, 1, 1, 1, 1), 2.0), [0.5, 2.0])
    tensor([[0.2500],
            [0.5625]], dtype=torch.float64)
    """
    return _brier("brier_score", forecast, target, thresholds, None, mask,
                  reduction)["brier_score"]


def brier_skill_score(forecast: Tensor, target: Tensor, thresholds: Thresholds, *,
                      reference: Tensor | None = None, mask: Tensor | None = None,
                      reduction: Reduction = "none") -> Tensor:
    """Brier skill score `[K, T]` (1 is perfect, 0 no better than the reference):
    BSS = 1 - BS / BS_ref. Without `reference`, BS_ref = o_bar (1 - o_bar), the Brier score of
    the sample climatology (o_bar the observed base rate at that lead time); with it, the Brier
    score of that reference forecast (an ensemble or a probability, as `forecast`).

    >>> ens = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(2, 2, 1, 1, 1, 1)
    >>> obs = torch.tensor([0.0, 3.0]).view(2, 1, 1, 1, 1)
    >>> brier_skill_score(ens, obs, 0.5)
    tensor([[0.5000]], dtype=torch.float64)
    """
    return _brier("brier_skill_score", forecast, target, thresholds, reference, mask,
                  reduction)["brier_skill_score"]


def roc_curve(forecast: Tensor, target: Tensor, thresholds: Thresholds, *,
              n_prob_thresholds: int = 10, mask: Tensor | None = None,
              reduction: Reduction = "none") -> dict[str, Tensor]:
    """ROC curve and area as pysteps' `ROC_curve(..., compute_area=True)`: at probability
    thresholds q_i = linspace(0, 1, n_prob_thresholds), `pod` = H/(H+M) and `pofd` = F/(F+R) of
    the yes-forecast p >= q_i, `[K, P, T]`; `area` `[K, T]` by trapezoids (0.5 is no skill);
    `prob_thresholds` `[P]`. Undefined (no event / no non-event) is NaN."""
    thr = check_thresholds("roc_curve", thresholds)
    n_prob = _check_count("roc_curve", "n_prob_thresholds", n_prob_thresholds, 2)
    probs, events, mask = _probabilities("roc_curve", forecast, target, thr, mask)
    out = _finish(_roc_stats(probs, events, mask, n_prob), _roc_from,
                  _check_reduction("roc_curve", reduction))
    return {**out, "prob_thresholds": _prob_thresholds(n_prob, probs.device)}


def reliability_diagram(forecast: Tensor, target: Tensor, thresholds: Thresholds, *,
                        n_bins: int = 10, min_count: int = 10, mask: Tensor | None = None,
                        reduction: Reduction = "none") -> dict[str, Tensor]:
    """Reliability diagram as pysteps' `reldiag`: probabilities binned on
    linspace(-1e-6, 1 + 1e-6, n_bins + 1) (right-closed); per bin `forecast_probability` (mean p,
    pysteps' r), `observed_frequency` (fraction of events, pysteps' f), both NaN in bins with
    fewer than `min_count` samples, and `counts` (samples per bin), each `[K, n_bins, T]`;
    `bin_edges` `[n_bins + 1]`."""
    thr = check_thresholds("reliability_diagram", thresholds)
    n_bins = _check_count("reliability_diagram", "n_bins", n_bins, 1)
    min_count = _check_count("reliability_diagram", "min_count", min_count, 0)
    probs, events, mask = _probabilities("reliability_diagram", forecast, target, thr, mask)
    out = _finish(_reliability_stats(probs, events, mask, n_bins),
                  lambda s: _reliability_from(s, min_count),
                  _check_reduction("reliability_diagram", reduction))
    return {**out, "bin_edges": _bin_edges(n_bins, probs.device)}


def rank_histogram(ensemble: Tensor, target: Tensor, *, x_min: float | None = None,
                   normalize: bool = True, mask: Tensor | None = None,
                   reduction: Reduction = "none") -> Tensor:
    """Rank histogram (Talagrand) as pysteps' `rankhist`, `[M + 1, T]`: the rank of y among the
    members (number of members < y), normalised to sum 1 unless `normalize=False`. With `x_min`,
    pairs where y and every member are < x_min are skipped and values < x_min tie. A tie (y equal
    to k members) adds 1/(k + 1) to each rank it could take (pysteps draws one at random).

    >>> ens = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1, 1)
    >>> rank_histogram(ens, torch.full((1, 1, 1, 1, 1), 2.0), normalize=False).flatten()
    tensor([0.0000, 0.5000, 0.5000, 0.0000], dtype=torch.float64)
    """
    ensemble, target, mask = _check_ensemble("rank_histogram", ensemble, target, mask)
    return _finish(_rank_stats(ensemble, target, mask, x_min), lambda s: _rank_from(s, normalize),
                   _check_reduction("rank_histogram", reduction))


def spread_skill_ratio(ensemble: Tensor, target: Tensor, *, corrected: bool = True,
                       mask: Tensor | None = None, reduction: Reduction = "none") -> Tensor:
    """Spread-skill ratio `[T]`, 1 for a reliable ensemble: spread / RMSE of the ensemble mean,
    RMSE = sqrt(mean (x_bar - y)**2), spread = sqrt((M + 1)/M * mean s**2) with s**2 the members'
    unbiased variance sum_i (x_i - x_bar)**2 / (M - 1) (Fortin et al. 2014: the (M + 1)/M makes
    a perfect M-member ensemble 1 in expectation). `corrected=False`: sqrt(mean s**2) / RMSE."""
    ensemble, target, mask = _check_ensemble("spread_skill_ratio", ensemble, target, mask,
                                             min_members=2)
    return _finish(_spread_stats(ensemble, target, mask), lambda s: _spread_from(s, corrected),
                   _check_reduction("spread_skill_ratio", reduction))["spread_skill_ratio"]


def probabilistic_metrics(ensemble: Tensor, target: Tensor, thresholds: Thresholds, *,
                          mask: Tensor | None = None, **options: Any) -> dict[str, Tensor]:
    """All scores of an ensemble in one call (see `ProbabilisticMetrics` for the keys and the
    options)."""
    metric = ProbabilisticMetrics(thresholds, sync_on_compute=False, **options)
    metric = metric.to(ensemble.device)
    metric.update(ensemble, target, mask=mask)
    return metric.compute()


# ----------------------------------------------------------------------------- streaming

class _ProbabilisticMetric(LeadTimeMetric):
    """Streams the sums of one score (states `[..., T]`, summed over batches and DDP ranks)."""

    def __init__(self, reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(lead_times=lead_times, **kwargs)
        self.reduction = _check_reduction(type(self).__name__, reduction)  # type: ignore

    def _add_sums(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, prefix in shapes.items():
            self._add_sum(name, prefix)

    def _sums(self, names: Sequence[str]) -> Stats:
        return {name: getattr(self, name) for name in names}


_CRPS_SUMS: dict[str, tuple[int, ...]] = {
    "crps_sum": (), "crps_n": (), "fair_crps_sum": (), "fair_crps_n": ()}
_SPREAD_SUMS: dict[str, tuple[int, ...]] = {
    "spread_sq_err": (), "spread_n": (), "spread_var": (), "spread_var_corrected": (),
    "spread_n_var": ()}


def _brier_sums(K: int, reference: bool) -> dict[str, tuple[int, ...]]:
    sums = {"brier_sum": (K,), "brier_events": (K,), "brier_n": (K,)}
    return {**sums, "brier_ref_sum": (K,)} if reference else sums


def _roc_sums(K: int, n_prob: int) -> dict[str, tuple[int, ...]]:
    return {"roc_events": (K, n_prob + 1), "roc_non_events": (K, n_prob + 1)}


def _reliability_sums(K: int, n_bins: int) -> dict[str, tuple[int, ...]]:
    return {"rel_count": (K, n_bins), "rel_events": (K, n_bins), "rel_prob_sum": (K, n_bins)}


class CRPS(_ProbabilisticMetric):
    """Streaming CRPS `[T]` of an ensemble (see `crps`); `fair=True` streams `fair_crps`."""

    higher_is_better = False

    def __init__(self, *, fair: bool = False, ties: Ties = "exact", reduction: Reduction = "none",
                 lead_times: int | None = None, **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.fair, self.ties = fair, _check_ties("CRPS", ties)
        self._add_sums(_CRPS_SUMS)

    def update(self, ensemble: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        ensemble, target, mask = _check_ensemble("CRPS", ensemble, target, mask,
                                                 min_members=2 if self.fair else 1)
        self._accumulate(**_crps_stats(ensemble, target, mask, self.ties))

    def compute(self) -> Tensor:
        out = _finish(self._sums(_CRPS_SUMS), _crps_from, self.reduction)
        return out["fair_crps" if self.fair else "crps"]


class BrierScore(_ProbabilisticMetric):
    """Streaming Brier score `[K, T]` (see `brier_score`)."""

    higher_is_better = False
    score = "brier_score"

    def __init__(self, thresholds: Thresholds, *, reduction: Reduction = "none",
                 lead_times: int | None = None, **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds = check_thresholds(type(self).__name__, thresholds)
        self.with_reference = False
        self._sum_names = _brier_sums(len(self.thresholds), False)
        self._add_sums(self._sum_names)

    def update(self, forecast: Tensor, target: Tensor, mask: Tensor | None = None, *,
               reference: Tensor | None = None) -> None:
        name = type(self).__name__
        if (reference is not None) != self.with_reference:
            raise ValueError(f"{name}: pass reference= to every update exactly when the metric "
                             "is BrierSkillScore(..., against='reference')")
        probs, events, mask = _probabilities(name, forecast, target, self.thresholds, mask)
        ref = None
        if reference is not None:
            ref, _, _ = _probabilities(f"{name} (reference)", reference, target,
                                       self.thresholds, mask)
        self._accumulate(**_brier_stats(probs, events, mask, ref))

    def compute(self) -> Tensor:
        return _finish(self._sums(self._sum_names), _brier_from, self.reduction)[self.score]


class BrierSkillScore(BrierScore):
    """Streaming Brier skill score `[K, T]` (see `brier_skill_score`) against the sample
    climatology of all streamed batches (`against="climatology"`) or a reference forecast given
    to every `update` (`against="reference"`)."""

    higher_is_better = True
    score = "brier_skill_score"

    def __init__(self, thresholds: Thresholds, *, against: str = "climatology",
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(thresholds, reduction=reduction, lead_times=lead_times, **kwargs)
        if against not in ("climatology", "reference"):
            raise ValueError(f"BrierSkillScore: against must be 'climatology' or 'reference', "
                             f"got {against!r}")
        self.with_reference = against == "reference"
        if self.with_reference:
            self._sum_names = _brier_sums(len(self.thresholds), True)
            self._add_sums({"brier_ref_sum": self._sum_names["brier_ref_sum"]})


class ROCCurve(_ProbabilisticMetric):
    """Streaming ROC curve (see `roc_curve`): dict of pod, pofd `[K, P, T]`, area `[K, T]`,
    prob_thresholds `[P]`."""

    higher_is_better = None

    def __init__(self, thresholds: Thresholds, *, n_prob_thresholds: int = 10,
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds = check_thresholds("ROCCurve", thresholds)
        self.n_prob = _check_count("ROCCurve", "n_prob_thresholds", n_prob_thresholds, 2)
        self._add_sums(_roc_sums(len(self.thresholds), self.n_prob))

    def update(self, forecast: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        probs, events, mask = _probabilities("ROCCurve", forecast, target, self.thresholds, mask)
        self._accumulate(**_roc_stats(probs, events, mask, self.n_prob))

    def compute(self) -> dict[str, Tensor]:
        out = _finish(self._sums(_roc_sums(0, 0)), _roc_from, self.reduction)
        return {**out, "prob_thresholds": _prob_thresholds(self.n_prob, self.device)}


class ReliabilityDiagram(_ProbabilisticMetric):
    """Streaming reliability diagram (see `reliability_diagram`): dict of forecast_probability,
    observed_frequency, counts `[K, n_bins, T]` and bin_edges `[n_bins + 1]`."""

    higher_is_better = None

    def __init__(self, thresholds: Thresholds, *, n_bins: int = 10, min_count: int = 10,
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.thresholds = check_thresholds("ReliabilityDiagram", thresholds)
        self.n_bins = _check_count("ReliabilityDiagram", "n_bins", n_bins, 1)
        self.min_count = _check_count("ReliabilityDiagram", "min_count", min_count, 0)
        self._add_sums(_reliability_sums(len(self.thresholds), self.n_bins))

    def update(self, forecast: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        probs, events, mask = _probabilities("ReliabilityDiagram", forecast, target,
                                             self.thresholds, mask)
        self._accumulate(**_reliability_stats(probs, events, mask, self.n_bins))

    def compute(self) -> dict[str, Tensor]:
        out = _finish(self._sums(_reliability_sums(0, 0)),
                      lambda s: _reliability_from(s, self.min_count), self.reduction)
        return {**out, "bin_edges": _bin_edges(self.n_bins, self.device)}


def _accumulate_ranks(metric: LeadTimeMetric, ensemble: Tensor, target: Tensor,
                      mask: Tensor | None, x_min: float | None) -> None:
    M, seen = ensemble.shape[1], metric.rank_counts.shape[0]
    if metric.rank_counts.any() and seen != M + 1:
        raise ValueError(f"{type(metric).__name__}: this batch has {M} members but earlier "
                         f"batches had {seen - 1}; a rank histogram needs one ensemble size "
                         "(call reset() first)")
    metric._accumulate(**_rank_stats(ensemble, target, mask, x_min))


class RankHistogram(_ProbabilisticMetric):
    """Streaming rank histogram `[M + 1, T]` (see `rank_histogram`); M is set by the first
    batch and must stay the same."""

    higher_is_better = None

    def __init__(self, *, x_min: float | None = None, normalize: bool = True,
                 reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.x_min, self.normalize = x_min, normalize
        self._add_sum("rank_counts", (1,))  # resized to [M + 1, T] by the first update

    def update(self, ensemble: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        ensemble, target, mask = _check_ensemble("RankHistogram", ensemble, target, mask)
        _accumulate_ranks(self, ensemble, target, mask, self.x_min)

    def compute(self) -> Tensor:
        return _finish({"rank_counts": self.rank_counts},
                       lambda s: _rank_from(s, self.normalize), self.reduction)


class SpreadSkillRatio(_ProbabilisticMetric):
    """Streaming spread-skill ratio `[T]` (see `spread_skill_ratio`)."""

    higher_is_better = None

    def __init__(self, *, corrected: bool = True, reduction: Reduction = "none",
                 lead_times: int | None = None, **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        self.corrected = corrected
        self._add_sums(_SPREAD_SUMS)

    def update(self, ensemble: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        ensemble, target, mask = _check_ensemble("SpreadSkillRatio", ensemble, target, mask,
                                                 min_members=2)
        self._accumulate(**_spread_stats(ensemble, target, mask))

    def compute(self) -> Tensor:
        return _finish(self._sums(_SPREAD_SUMS), lambda s: _spread_from(s, self.corrected),
                       self.reduction)["spread_skill_ratio"]


class ProbabilisticMetrics(_ProbabilisticMetric):
    """Every probabilistic score of an ensemble `[B, M, T, C, H, W]` (any M; M = 1 gives NaN for
    fair_crps and the spread) streamed from their sums. `compute()` gives: crps, fair_crps,
    spread, rmse (of the ensemble mean), spread_skill_ratio `[T]`; brier_score,
    brier_skill_score (against the sample climatology), base_rate, roc_area `[K, T]`; roc_pod,
    roc_pofd `[K, P, T]`; reliability_forecast_probability, reliability_observed_frequency,
    reliability_counts `[K, n_bins, T]`; rank_histogram `[M + 1, T]`; and roc_prob_thresholds
    `[P]`, reliability_bin_edges `[n_bins + 1]`. Options as in the single scores."""

    higher_is_better = None

    def __init__(self, thresholds: Thresholds, *, n_prob_thresholds: int = 10, n_bins: int = 10,
                 min_count: int = 10, x_min: float | None = None, ties: Ties = "exact",
                 corrected: bool = True, normalize: bool = True, reduction: Reduction = "none",
                 lead_times: int | None = None, **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        name = "ProbabilisticMetrics"
        self.thresholds = check_thresholds(name, thresholds)
        self.n_prob = _check_count(name, "n_prob_thresholds", n_prob_thresholds, 2)
        self.n_bins = _check_count(name, "n_bins", n_bins, 1)
        self.min_count = _check_count(name, "min_count", min_count, 0)
        self.x_min, self.ties = x_min, _check_ties(name, ties)
        self.corrected, self.normalize = corrected, normalize
        K = len(self.thresholds)
        self._groups = {"crps": _CRPS_SUMS, "brier": _brier_sums(K, False),
                        "roc": _roc_sums(K, self.n_prob),
                        "rel": _reliability_sums(K, self.n_bins), "spread": _SPREAD_SUMS}
        for sums in self._groups.values():
            self._add_sums(sums)
        self._add_sum("rank_counts", (1,))  # resized to [M + 1, T] by the first update

    def update(self, ensemble: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        ensemble, target, mask = _check_ensemble("ProbabilisticMetrics", ensemble, target, mask)
        probs = _exceedance(ensemble, self.thresholds)  # [K, B, T, C, H, W]
        events = torch.stack([target >= thr for thr in self.thresholds])
        _accumulate_ranks(self, ensemble, target, mask, self.x_min)
        self._accumulate(**_crps_stats(ensemble, target, mask, self.ties),
                         **_spread_stats(ensemble, target, mask),
                         **_brier_stats(probs, events, mask),
                         **_roc_stats(probs, events, mask, self.n_prob),
                         **_reliability_stats(probs, events, mask, self.n_bins))

    def compute(self) -> dict[str, Tensor]:
        def sums(group: str) -> Stats:
            return self._sums(self._groups[group])

        r = self.reduction
        roc = _finish(sums("roc"), _roc_from, r)
        rel = _finish(sums("rel"), lambda s: _reliability_from(s, self.min_count), r)
        return {
            **_finish(sums("crps"), _crps_from, r),
            **_finish(sums("spread"), lambda s: _spread_from(s, self.corrected), r),
            **_finish(sums("brier"), _brier_from, r),
            **{f"roc_{k}": v for k, v in roc.items()},
            **{f"reliability_{k}": v for k, v in rel.items()},
            "rank_histogram": _finish({"rank_counts": self.rank_counts},
                                      lambda s: _rank_from(s, self.normalize), r),
            "roc_prob_thresholds": _prob_thresholds(self.n_prob, self.device),
            "reliability_bin_edges": _bin_edges(self.n_bins, self.device),
        }
