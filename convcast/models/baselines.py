"""Forecasts with nothing to learn: the floor every trained model must clear.

Baselines read no condition frames (`condition_channels = 0`; giving one is an error) and keep no
recurrent state: `window` says how many of the latest frames they look at, which is what a stream
(`convcast.inference.stream`) keeps for them.
"""

from __future__ import annotations

import torch

from convcast.models.base import Forecaster, check_size
from convcast.models.registry import register_model


@register_model("persistence", baseline=True)
class Persistence(Forecaster):
    """Repeats the last input frame for every lead time (the 'no change' forecast)."""

    window = 1

    def __init__(self, in_channels: int = 1, **ignored) -> None:
        super().__init__()
        self.in_channels = check_size(self.model_name, "in_channels", in_channels)

    def forward(self, x: torch.Tensor, horizon: int,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, horizon)
        self.check_condition(condition, horizon, (x.shape[0], *x.shape[-2:]))
        return x[:, -1:].expand(-1, horizon, -1, -1, -1).clone()  # [B, horizon, C, H, W]


@register_model("blank", baseline=True)
class Blank(Forecaster):
    """The all-zero forecast: what a model that learned nothing yields on sparse data."""

    window = 1  # only the frame's shape is read

    def __init__(self, in_channels: int = 1, **ignored) -> None:
        super().__init__()
        self.in_channels = check_size(self.model_name, "in_channels", in_channels)

    def forward(self, x: torch.Tensor, horizon: int,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, horizon)
        self.check_condition(condition, horizon, (x.shape[0], *x.shape[-2:]))
        return x.new_zeros(x.shape[0], horizon, *x.shape[2:])  # [B, horizon, C, H, W]
