"""Base class for metrics streamed over batches whose states are sums per lead time.

Every state is a sum (dist_reduce_fx="sum"), so streaming batches, merging states and reducing
over DDP ranks all give the numbers of one big call. The lead-time axis (last) is sized by the
first update unless `lead_times` is given; under DDP every rank must see at least one batch
(Lightning's DistributedSampler ensures it) or the metric must be built with `lead_times`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from convcast.metrics.checks import Reduction, reduce_lead_time


class LeadTimeMetric(Metric):
    """A torchmetrics Metric whose states are per-lead-time sums (float64 or int64)."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, reduction: Reduction = "none", lead_times: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction not in ("none", "mean"):
            raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
        if lead_times is not None and lead_times < 1:
            raise ValueError(f"lead_times must be positive, got {lead_times}")
        self.reduction: Reduction = reduction
        self._lead_times = lead_times or 1

    def _add_sum(self, name: str, prefix: tuple[int, ...] = (), dtype=torch.float64) -> None:
        """Register a sum state of shape `[*prefix, T]`."""
        self.add_state(name, torch.zeros(*prefix, self._lead_times, dtype=dtype),
                       dist_reduce_fx="sum")

    def _accumulate(self, **sums: Tensor) -> None:
        """Add this batch's sums; the first update sizes the lead-time axis."""
        for name, value in sums.items():
            current = getattr(self, name)
            if current.shape != value.shape:
                # still the default (nothing added yet): take the shape of the first batch
                untouched = current.shape == self._defaults[name].shape and not current.any()
                if not untouched:
                    raise ValueError(
                        f"{type(self).__name__}: this batch has state {name} of shape "
                        f"{tuple(value.shape)} but earlier batches gave {tuple(current.shape)} "
                        "(a different number of lead times or thresholds); call reset() first")
                current = torch.zeros_like(value, dtype=current.dtype)
            setattr(self, name, current + value.to(current.dtype))

    def _reduce(self, values: Tensor) -> Tensor:
        return reduce_lead_time(values, self.reduction)
