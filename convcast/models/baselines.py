"""Forecasts with nothing to learn: the floor every trained model must clear."""

from __future__ import annotations

import torch

from convcast.models.base import Forecaster
from convcast.models.registry import register_model


@register_model("persistence", baseline=True)
class Persistence(Forecaster):
    """Repeats the last input frame for every lead time (the 'no change' forecast)."""

    def __init__(self, in_channels: int = 1, **ignored) -> None:
        super().__init__()
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        self.check_input(x, horizon)
        return x[:, -1:].expand(-1, horizon, -1, -1, -1).clone()  # [B, horizon, C, H, W]


@register_model("blank", baseline=True)
class Blank(Forecaster):
    """The all-zero forecast: what a model that learned nothing yields on sparse data."""

    def __init__(self, in_channels: int = 1, **ignored) -> None:
        super().__init__()
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        self.check_input(x, horizon)
        return x.new_zeros(x.shape[0], horizon, *x.shape[2:])  # [B, horizon, C, H, W]
