"""Anchored forecasters: a learned correction on top of a baseline forecast.

A trained model that cannot beat persistence or optical-flow extrapolation is of little use, yet
a network trained from scratch first spends its budget relearning what they give for free (the
static background of a video, the advection of a radar echo). `anchored` starts from the
baseline instead: for lead time k,

    ŷ_k = clip(a_k + W * f_θ(x, a)_k),    a_k = anchor forecast (persistence or extrapolation),

where f_θ is any registered learned forecaster, built with `condition_channels = C` so that the
step producing frame k reads a_k beside its usual input, and W is a 1×1 convolution initialised
to zero. An untrained anchored model IS its baseline, exactly, and training moves away from it
only where that lowers the loss. The inner forecaster's output activation is set to `identity`
(a correction is signed); no other knowledge of the inner model is needed.

Output range: the sum is clipped to `value_range` (the data's valid range, (0, 1) for HKO-7
pixels and min-max-scaled video; None for standardised data). Clipping to a range that holds the
target never increases any pixel's error, and it keeps an untrained model equal to its anchor,
whose values already lie in the range. The clip is straight-through for gradients (forward
clipped, backward identity): a plain clamp would give a pixel pushed below the range no gradient
to climb back, e.g. rain that the anchor lacks and the correction first pushed down.
A correction applied before a final sigmoid (logit space) was the alternative; it saturates where
the anchor is 0 or 1 (black video pixels), where adding anything then takes huge corrections.

Motion (anchor `optical_flow`): `forward(x, horizon, motion=None)` advects the last frame along
`motion [B, 2, H, W]` (pysteps' convention, px/step) with the torch semi-Lagrangian scheme
(`convcast.models.extrapolation`). Training batches carry it, computed in DataLoader workers
(`convcast.data.motion.MotionDataModule`); without it the model estimates it itself (pysteps
Lucas-Kanade on the last `motion_frames` frames, as the `optical_flow` baseline), so evaluation,
`convcast test --compare`, predict and nowcast work unchanged. `anchor="none"` is the inner model
alone (the un-anchored reference, trained the same way).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.models.base import Forecaster
from convcast.models.extrapolation import advect
from convcast.models.registry import create_model, get_model_class, is_baseline, register_model

ANCHORS = ("persistence", "optical_flow", "none")


class _StraightThroughClip(torch.autograd.Function):
    """clamp(v, lo, hi) forward, identity backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return v.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


@register_model("anchored")
class Anchored(Forecaster):
    """A registered learned forecaster trained as a correction on top of a baseline.

    Args:
        in_channels: channels of the frames.
        base / base_kwargs: the inner forecaster, `create_model(base, **base_kwargs)` (any
            learned model or variant; `condition_channels` and `in_channels` are set here).
        anchor: `persistence`, `optical_flow` or `none` (the inner model alone).
        value_range: (low, high) the forecast is clipped to, or None.
        motion_frames / method / method_kwargs: the motion estimate when no `motion` is given
            (as the `optical_flow` baseline's: pysteps Lucas-Kanade on the last 3 frames).
        outval: value advected in from outside the frame ("min": the last frame's minimum).
    """

    def __init__(self, in_channels: int = 1, base: str = "encoder_forecaster",
                 base_kwargs: dict | None = None, anchor: str = "persistence",
                 value_range: Sequence[float] | None = (0.0, 1.0), motion_frames: int = 3,
                 method: str = "lucaskanade", method_kwargs: dict | None = None,
                 outval: float | str = "min") -> None:
        super().__init__()
        if anchor not in ANCHORS:
            raise ValueError(f"anchored: unknown anchor {anchor!r}; valid: {', '.join(ANCHORS)}")
        if base == "anchored" or is_baseline(base):
            raise ValueError(f"anchored: base must be a learned forecaster, got {base!r}; the "
                             "baseline goes in anchor=")
        kwargs = dict(base_kwargs or {})
        if kwargs.get("in_channels", in_channels) != in_channels:
            raise ValueError(f"anchored: base_kwargs in_channels={kwargs['in_channels']} differs "
                             f"from in_channels={in_channels}; give it once")
        if value_range is not None:
            value_range = [float(v) for v in value_range]
            if len(value_range) != 2 or not value_range[0] < value_range[1]:
                raise ValueError(f"anchored: value_range must be (low, high) with low < high, or "
                                 f"None, got {value_range}")
        if anchor == "optical_flow":
            from convcast.data.motion import check_method

            check_method(method, motion_frames)
        self.in_channels, self.anchor, self.value_range = in_channels, anchor, value_range
        self.motion_frames, self.method = motion_frames, method
        self.method_kwargs, self.outval = dict(method_kwargs or {}), outval
        kwargs["in_channels"] = in_channels
        if anchor != "none":
            kwargs["condition_channels"] = in_channels
            takes = inspect.signature(get_model_class(base)).parameters
            if "output_activation" in takes:
                kwargs.setdefault("output_activation", "identity")  # a correction is signed
        self.net = create_model(base, **kwargs)
        self.correction = None
        if anchor != "none":
            self.correction = nn.Conv2d(in_channels, in_channels, kernel_size=1)
            nn.init.zeros_(self.correction.weight)
            nn.init.zeros_(self.correction.bias)

    def anchor_forecast(self, x: torch.Tensor, horizon: int,
                        motion: torch.Tensor | None = None) -> torch.Tensor:
        """The baseline's forecast `[B, horizon, C, H, W]` (no gradient: it reads only data)."""
        x = x.detach()
        if self.anchor == "persistence":
            return x[:, -1:].expand(-1, horizon, -1, -1, -1)  # [B, horizon, C, H, W]
        if motion is None:
            from convcast.data.motion import batch_motion

            motion = batch_motion(x, self.motion_frames, self.method, self.method_kwargs)
        B, _, _, H, W = x.shape
        if motion.shape != (B, 2, H, W):
            raise ValueError(f"anchored: motion must be [B, 2, H, W] = [{B}, 2, {H}, {W}] for "
                             f"input {tuple(x.shape)}, got {tuple(motion.shape)}")
        return advect(x[:, -1], motion.to(x.device), horizon, self.outval)  # [B, h, C, H, W]

    def forward(self, x: torch.Tensor, horizon: int,
                motion: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, horizon)
        if self.anchor == "none":
            return self.net(x, horizon)  # [B, horizon, C, H, W]
        a = self.anchor_forecast(x, horizon, motion)  # [B, horizon, C, H, W]
        f = self.net(x, horizon, condition=a)  # [B, horizon, C, H, W]
        B, _, C, H, W = f.shape
        corr = self.correction(f.reshape(B * horizon, C, H, W)).view(B, horizon, C, H, W)
        out = a + corr  # [B, horizon, C, H, W]
        if self.value_range is not None:
            out = _StraightThroughClip.apply(out, *self.value_range)
        return out
