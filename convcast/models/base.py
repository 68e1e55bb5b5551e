"""The one contract every forecaster keeps, and helpers shared by them.

`forward(x, horizon)` takes `[B, T_in, C, H, W]` and returns `[B, horizon, C, H, W]`.
Autoregressive forecasters (`autoregressive = True`) feed each prediction back as the next input
and also accept `teacher` (the true future `[B, horizon, C, H, W]`) and `teacher_mask`
(`[B, horizon - 1]`, True where true frame k replaces predicted frame k as the input that produces
frame k + 1). The training system uses them for teacher forcing and scheduled sampling; at
inference both are None.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

ACTIVATIONS = ("sigmoid", "identity")


def make_activation(name: str) -> nn.Module:
    """The last nonlinearity: `sigmoid` for data in [0, 1], `identity` for standardised data."""
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown output_activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


class Forecaster(nn.Module):
    """Base class: input checks and the teacher-forcing choice of the next input."""

    autoregressive: ClassVar[bool] = False
    in_channels: int

    def check_input(self, x: torch.Tensor, horizon: int) -> None:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} expects input [B, T_in, C, H, W], got {shape}")
        if x.shape[1] < 1:
            raise ValueError(f"{name} needs at least one input frame, got T_in=0")
        if x.shape[2] != self.in_channels:
            raise ValueError(
                f"{name} was built for in_channels={self.in_channels} but the input has "
                f"{x.shape[2]} channels (shape {tuple(x.shape)}); build it with "
                f"in_channels={x.shape[2]} or convert the frames"
            )
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point input, got {x.dtype}; divide "
                            "uint8 frames by 255 first")

    @staticmethod
    def check_teacher(
        x: torch.Tensor, horizon: int, teacher: torch.Tensor | None,
        teacher_mask: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Validate the teacher inputs; return the mask as a float `[B, horizon-1]` (or None)."""
        if teacher is None:
            if teacher_mask is not None:
                raise ValueError("teacher_mask was given without teacher frames")
            return None
        B, _, C, H, W = x.shape
        if (teacher.shape[0] != B or teacher.shape[1] < horizon - 1
                or teacher.shape[2:] != (C, H, W)):
            raise ValueError(f"teacher must be [B={B}, >= {horizon - 1}, {C}, {H}, {W}], got "
                             f"{tuple(teacher.shape)}")
        if teacher_mask is None:
            return x.new_ones(B, max(horizon - 1, 0))
        if teacher_mask.shape != (B, horizon - 1):
            raise ValueError(
                f"teacher_mask must be [B, horizon-1] = [{B}, {horizon - 1}], "
                f"got {tuple(teacher_mask.shape)}"
            )
        return teacher_mask.to(x.dtype)

    @staticmethod
    def next_input(
        pred: torch.Tensor, k: int, teacher: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Input for the step after future frame k: the prediction, or where masked the truth."""
        if teacher is None:
            return pred
        m = mask[:, k].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        return m * teacher[:, k] + (1 - m) * pred
