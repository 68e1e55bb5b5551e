"""Score several forecasters on the same batches: per model, per metric, per lead time.

`evaluate` streams every batch of a dataloader through every model once, feeding the same targets
to one `FrameMetrics` (and, with thresholds, one `SkillScores`) per model, so the table and the
lead-time plots compare models on identical data. Used by `convcast test`, the demo and the radar
workflow.

With `members=N` every model is also scored as an ensemble (`convcast.metrics.probabilistic`):
its `sample(x, horizon, members=N)` `[B, M, T, C, H, W]` (a deterministic forecaster, or a plain
callable, is an ensemble of one, its forecast; a model that draws members gives M = N), in the
units of the skill scores (`to_physical`). That adds `crps`, `fair_crps` and `spread_skill` (M >=
2 only) `[T]` and, with thresholds, `brier`, `bss` (against the sample climatology) and `roc_auc`
`[K, T]` to the model's metrics; `run_evaluation` also returns the curves pooled over lead times
(reliability diagram, ROC curve, rank histogram) that `convcast test` plots. With thresholds the
rank histogram is pysteps' `rankhist` with `X_min` the smallest threshold: values below it are
no rain, and pixels where the observation and every member are dry are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from convcast.metrics import FrameMetrics, SkillScores
from convcast.metrics.probabilistic import (
    CRPS,
    ProbabilisticMetrics,
    RankHistogram,
    SpreadSkillRatio,
)

ForecastFn = Callable[[Tensor, int], Tensor]  # model(x, horizon) -> forecast
CURVES = ("reliability_forecast_probability", "reliability_observed_frequency",
          "reliability_counts", "reliability_bin_edges", "roc_pod", "roc_pofd", "roc_area",
          "roc_prob_thresholds", "rank_histogram")
THRESHOLD_SCORES = ("brier", "bss", "roc_auc")  # ensemble scores [K, T]; the others are [T]


def split_batch(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """`(x, y)`, `(x, y, mask)` or `{"x", "y", "mask"}` -> `(x, y, mask or None)`."""
    if isinstance(batch, Mapping):
        return batch["x"], batch["y"], batch.get("mask")
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    raise ValueError("expected batches (x, y) or (x, y, mask) with x [B,T_in,C,H,W] and y "
                     f"[B,T_out,C,H,W], got {type(batch).__name__}")


@dataclass
class Evaluation:
    """What `run_evaluation` measured: `metrics` `{model: {metric: [T] or [K, T]}}` (what
    `evaluate` returns); with `members`, `curves` `{model: {name: tensor}}` pooled over lead
    times (`reliability_*` `[K, n_bins]`, `roc_pod` / `roc_pofd` `[K, P]`, `roc_area` `[K]`,
    `rank_histogram` `[M + 1]`, with `roc_prob_thresholds` and `reliability_bin_edges`; the
    threshold curves only with thresholds) and `members` `{model: M}`, the size of its
    ensembles."""

    metrics: dict[str, dict[str, Tensor]]
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)


@torch.no_grad()
def evaluate(
    models: Mapping[str, ForecastFn],
    dataloader: Iterable,
    *,
    thresholds: Sequence[float] | None = None,
    to_physical: Callable[[Tensor], Tensor] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    data_range: float = 1.0,
    denormalize: Callable[[Tensor], Tensor] | None = None,
    members: int | None = None,
    scales: Sequence[int] = (),
) -> dict[str, dict[str, Tensor]]:
    """Metrics of every model: `{model: {metric: [T] (frame metrics) or [K, T] (skill)}}`.

    Each model is called as `model(x, horizon)` with `horizon = y.shape[1]`; `nn.Module`s are put
    in eval mode on `device`. `denormalize` (e.g. the inverse of the training normalisation) is
    applied to forecasts and targets before every metric; `to_physical` then maps both to the
    units of `thresholds` (e.g. `convcast.data.units.pixel_to_rainrate`) for the skill scores.
    Masks of `(x, y, mask)` batches exclude pixels; SSIM/PSNR are skipped for masked data.
    `members=N` adds the ensemble scores (see the module docstring); `scales` (pixels, with
    thresholds) adds the fractions skill score `fss_{s}px` `[K, T]` per neighbourhood size.
    """
    return run_evaluation(models, dataloader, thresholds=thresholds, to_physical=to_physical,
                          device=device, max_batches=max_batches, data_range=data_range,
                          denormalize=denormalize, members=members, scales=scales).metrics


@torch.no_grad()
def run_evaluation(
    models: Mapping[str, ForecastFn],
    dataloader: Iterable,
    *,
    thresholds: Sequence[float] | None = None,
    to_physical: Callable[[Tensor], Tensor] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    data_range: float = 1.0,
    denormalize: Callable[[Tensor], Tensor] | None = None,
    members: int | None = None,
    scales: Sequence[int] = (),
) -> Evaluation:
    """`evaluate`, with the ensemble curves and sizes of `members=N` (an `Evaluation`)."""
    if not models:
        raise ValueError("evaluate needs at least one model")
    if members is not None and (isinstance(members, bool) or not isinstance(members, int)
                                or members < 1):
        raise ValueError(f"evaluate: members must be a positive int (ensemble members per "
                         f"forecast), got {members!r}")
    if thresholds is not None and len(thresholds) == 0:
        thresholds = None
    device = torch.device(device)
    for m in models.values():
        if isinstance(m, nn.Module):
            m.eval().to(device)
    frame: dict[str, FrameMetrics] = {}
    skill: dict[str, SkillScores] = {}
    ensembles: dict[str, EnsembleScores] = {}
    seen = 0
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        x, y, mask = split_batch(batch)
        x, y = x.to(device).float(), y.to(device).float()  # [B,T_in,C,H,W], [B,T_out,C,H,W]
        mask = mask.to(device) if mask is not None else None
        target = denormalize(y) if denormalize is not None else y
        physical = thresholds or members is not None
        target_phys = to_physical(target) if physical and to_physical is not None else target
        for name, model in models.items():
            raw = model(x, y.shape[1])  # [B, T_out, C, H, W]
            if raw.shape != y.shape:
                raise ValueError(f"model {name!r} returned {tuple(raw.shape)} for a target of "
                                 f"{tuple(y.shape)}")
            pred = (denormalize(raw) if denormalize is not None else raw).float()
            if name not in frame:
                frame[name] = FrameMetrics(data_range=data_range, ssim_psnr=mask is None).to(device)
            frame[name].update(pred, target, mask)
            if thresholds:
                if name not in skill:
                    skill[name] = SkillScores(list(thresholds), scales=scales).to(device)
                phys = to_physical(pred) if to_physical is not None else pred
                skill[name].update(phys, target_phys, mask)
            if members is not None:
                ens = draw_members(name, model, x, raw, members)  # [B, M, T, C, H, W]
                B, M = ens.shape[:2]
                ens = ens.flatten(0, 1)  # [B * M, T, C, H, W] through the per-frame conversions
                ens = denormalize(ens) if denormalize is not None else ens
                ens = (to_physical(ens) if to_physical is not None else ens).float()
                if name not in ensembles:
                    ensembles[name] = EnsembleScores(name, thresholds, device)
                ensembles[name].update(ens.unflatten(0, (B, M)), target_phys, mask)
        seen += 1
    if not seen:
        raise ValueError("the dataloader gave no batch to evaluate on")
    out = Evaluation(metrics={})
    for name in models:
        metrics = {k: _lead_time_shape(v, None) for k, v in frame[name].compute().items()}
        if thresholds:
            metrics.update({k: _lead_time_shape(v, None if k in PER_LEAD_TIME else len(thresholds))
                            for k, v in skill[name].compute().items()})
        if name in ensembles:
            scores, curves = ensembles[name].compute()
            metrics.update(scores)
            out.curves[name], out.members[name] = curves, ensembles[name].members
        out.metrics[name] = metrics
    return out


# skill metrics without a threshold axis
PER_LEAD_TIME = ("rainfall_mse", "rainfall_mae", "correlation")


def _lead_time_shape(value: Tensor, thresholds: int | None) -> Tensor:
    """`[T]` or `[K, T]` on the CPU: torchmetrics squeezes one-element results to a scalar."""
    value = value.detach().cpu()
    if value.dim() == 0:
        value = value.reshape(1) if thresholds is None else value.reshape(thresholds, 1)
    return value


def draws_members(model: Any) -> bool:
    """Whether `model` draws its own members (overrides `Forecaster.sample`); a deterministic
    forecaster or a plain callable is an ensemble of one, its forecast."""
    from convcast.models.base import Forecaster

    sample = getattr(type(model), "sample", None)
    return callable(sample) and sample is not Forecaster.sample


def set_grids(models: Iterable[Any], description: Any | None) -> None:
    """Tell every model that measures in km and minutes (`set_grid`: STEPS, the learned
    ensemble's motion perturbations) the data's pixel size and step, where both are known."""
    km = getattr(description, "pixel_km", None)
    step = getattr(description, "step_minutes", None)
    if not (km and step):
        return
    for model in models:
        if callable(getattr(model, "set_grid", None)):
            model.set_grid(kmperpixel=km, timestep=step)


def draw_members(name: str, model: Any, x: Tensor, pred: Tensor, members: int) -> Tensor:
    """`model`'s ensemble `[B, M, T, C, H, W]` for input `x`: `model.sample(x, T,
    members=members)` where it draws members, else its forecast `pred` `[B, T, C, H, W]` as an
    ensemble of one."""
    if not draws_members(model):
        return pred.unsqueeze(1)
    ens = model.sample(x, pred.shape[1], members=members)
    if ens.dim() != 6 or ens.shape[:1] + ens.shape[2:] != pred.shape:
        raise ValueError(f"model {name!r}: sample(x, {pred.shape[1]}, members={members}) returned "
                         f"{tuple(ens.shape)}; the ensemble contract is [B, M, horizon, C, H, W] "
                         f"with B, horizon, C, H, W as its forecast {tuple(pred.shape)}")
    return ens


class EnsembleScores:
    """The probabilistic scores of one model's ensembles `[B, M, T, C, H, W]`, streamed: all of
    `ProbabilisticMetrics` with thresholds; CRPS, fair CRPS, spread-skill ratio and the rank
    histogram without."""

    def __init__(self, name: str, thresholds: Sequence[float] | None,
                 device: torch.device) -> None:
        self.name, self.device = name, device
        self.thresholds = list(thresholds) if thresholds else None
        self.members: int | None = None
        self.metrics: dict[str, Any] = {}

    def _build(self, members: int) -> None:
        self.members = members
        if self.thresholds:
            # rank histogram as pysteps': values below the smallest threshold are no rain (they
            # tie), and pixels where the observation and every member are dry are left out
            self.metrics = {"all": ProbabilisticMetrics(self.thresholds,
                                                        x_min=min(self.thresholds))}
        else:
            self.metrics = {"crps": CRPS(), "rank_histogram": RankHistogram(reduction="pooled")}
            if members > 1:
                self.metrics.update(fair_crps=CRPS(fair=True), spread_skill=SpreadSkillRatio())
        self.metrics = {k: m.to(self.device) for k, m in self.metrics.items()}

    def update(self, ensemble: Tensor, target: Tensor, mask: Tensor | None) -> None:
        M = ensemble.shape[1]
        if self.members is None:
            self._build(M)
        elif self.members != M:
            raise ValueError(f"model {self.name!r} gave {self.members} members for one batch and "
                             f"{M} for another; an ensemble is scored at one size")
        for metric in self.metrics.values():
            metric.update(ensemble, target, mask)

    def compute(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(scores `{name: [T] or [K, T]}`, curves pooled over lead times)."""
        two = (self.members or 0) > 1
        if not self.thresholds:
            scores = {k: m.compute() for k, m in self.metrics.items() if k != "rank_histogram"}
            curves = {"rank_histogram": self.metrics["rank_histogram"].compute()}
        else:
            metric = self.metrics["all"]
            r = metric.compute()
            scores = {"crps": r["crps"], "brier": r["brier_score"],
                      "bss": r["brier_skill_score"], "roc_auc": r["roc_area"]}
            if two:
                scores.update(fair_crps=r["fair_crps"], spread_skill=r["spread_skill_ratio"])
            pooled = _pooled(metric)
            curves = {k: pooled[k] for k in CURVES}
        K = len(self.thresholds or ())
        scores = {k: _lead_time_shape(v, K if k in THRESHOLD_SCORES else None)
                  for k, v in scores.items()}
        return scores, {k: v.detach().cpu() for k, v in curves.items()}


def _pooled(metric: ProbabilisticMetrics) -> dict[str, Tensor]:
    """`metric`'s scores of its sums pooled over lead times (its own `compute` is kept per lead
    time and cached by torchmetrics, so the unwrapped one is called on the same states)."""
    per_lead = metric.reduction
    metric.reduction = "pooled"
    try:
        return type(metric).compute(metric)
    finally:
        metric.reduction = per_lead
