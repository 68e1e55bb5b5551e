"""Score several forecasters on the same batches: per model, per metric, per lead time.

`evaluate` streams every batch of a dataloader through every model once, feeding the same targets
to one `FrameMetrics` (and, with thresholds, one `SkillScores`) per model, so the table and the
lead-time plots compare models on identical data. Used by `convcast test`, the demo and the radar
workflow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from convcast.metrics import FrameMetrics, SkillScores

ForecastFn = Callable[[Tensor, int], Tensor]  # model(x, horizon) -> forecast


def split_batch(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """`(x, y)`, `(x, y, mask)` or `{"x", "y", "mask"}` -> `(x, y, mask or None)`."""
    if isinstance(batch, Mapping):
        return batch["x"], batch["y"], batch.get("mask")
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
        return batch[0], batch[1], batch[2] if len(batch) == 3 else None
    raise ValueError("expected batches (x, y) or (x, y, mask) with x [B,T_in,C,H,W] and y "
                     f"[B,T_out,C,H,W], got {type(batch).__name__}")


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
) -> dict[str, dict[str, Tensor]]:
    """Metrics of every model: `{model: {metric: [T] (frame metrics) or [K, T] (skill)}}`.

    Each model is called as `model(x, horizon)` with `horizon = y.shape[1]`; `nn.Module`s are put
    in eval mode on `device`. `denormalize` (e.g. the inverse of the training normalisation) is
    applied to forecasts and targets before every metric; `to_physical` then maps both to the
    units of `thresholds` (e.g. `convcast.data.units.pixel_to_rainrate`) for the skill scores.
    Masks of `(x, y, mask)` batches exclude pixels; SSIM/PSNR are skipped for masked data.
    """
    if not models:
        raise ValueError("evaluate needs at least one model")
    if thresholds is not None and len(thresholds) == 0:
        thresholds = None
    device = torch.device(device)
    for m in models.values():
        if isinstance(m, nn.Module):
            m.eval().to(device)
    frame: dict[str, FrameMetrics] = {}
    skill: dict[str, SkillScores] = {}
    seen = 0
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        x, y, mask = split_batch(batch)
        x, y = x.to(device).float(), y.to(device).float()  # [B,T_in,C,H,W], [B,T_out,C,H,W]
        mask = mask.to(device) if mask is not None else None
        target = denormalize(y) if denormalize is not None else y
        target_phys = to_physical(target) if thresholds and to_physical is not None else target
        for name, model in models.items():
            pred = model(x, y.shape[1])  # [B, T_out, C, H, W]
            if pred.shape != y.shape:
                raise ValueError(f"model {name!r} returned {tuple(pred.shape)} for a target of "
                                 f"{tuple(y.shape)}")
            pred = (denormalize(pred) if denormalize is not None else pred).float()
            if name not in frame:
                frame[name] = FrameMetrics(data_range=data_range, ssim_psnr=mask is None).to(device)
            frame[name].update(pred, target, mask)
            if thresholds:
                if name not in skill:
                    skill[name] = SkillScores(list(thresholds)).to(device)
                phys = to_physical(pred) if to_physical is not None else pred
                skill[name].update(phys, target_phys, mask)
        seen += 1
    if not seen:
        raise ValueError("the dataloader gave no batch to evaluate on")
    results: dict[str, dict[str, Tensor]] = {}
    for name in models:
        metrics = {k: _lead_time_shape(v, None) for k, v in frame[name].compute().items()}
        if thresholds:
            metrics.update({k: _lead_time_shape(v, None if k in PER_LEAD_TIME else len(thresholds))
                            for k, v in skill[name].compute().items()})
        results[name] = metrics
    return results


PER_LEAD_TIME = ("rainfall_mse", "correlation")  # skill metrics without a threshold axis


def _lead_time_shape(value: Tensor, thresholds: int | None) -> Tensor:
    """`[T]` or `[K, T]` on the CPU: torchmetrics squeezes one-element results to a scalar."""
    value = value.detach().cpu()
    if value.dim() == 0:
        value = value.reshape(1) if thresholds is None else value.reshape(thresholds, 1)
    return value
