"""Optical-flow extrapolation: the open analogue of ROVER, the operational baseline of Shi et al.

Motion is estimated from the last input frames with pysteps (Lucas–Kanade, VET, DARTS, ...) and
the last frame is advected along it by semi-Lagrangian extrapolation (pysteps `semilagrangian`),
one batch item and channel at a time. Nothing is learned: it is a registered baseline.
Works on any intensity scale (e.g. HKO-7 pixels in [0, 1]); the motion only needs the echoes.
pysteps is an optional dependency (`pip install convcast[nowcast]`), imported on first use.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from convcast.models.base import Forecaster, check_size
from convcast.models.registry import register_model
from convcast.motion.advect import check_outval
from convcast.pysteps_modules import pysteps_module

METHODS = ("lucaskanade", "vet", "darts", "proesmans", "farneback")


def import_pysteps() -> SimpleNamespace:
    """pysteps' motion and extrapolation modules, imported quietly (pysteps prints a banner)."""
    return SimpleNamespace(**{m: pysteps_module(m, needed_by="the optical_flow baseline")
                              for m in ("motion", "extrapolation")})


@register_model("optical_flow", baseline=True)
class OpticalFlow(Forecaster):
    """Advect the last input frame along the motion of the last `motion_frames` frames.

    Args:
        method: the pysteps motion method, one of `METHODS` (`lucaskanade` is pysteps' default).
        motion_frames: how many of the latest input frames the motion is estimated from
            (fewer if the input is shorter; one frame gives no motion, i.e. persistence).
        outval: value of pixels advected in from outside the frame: a number, "min" for the
            minimum of the last frame (the "no echo" level of radar data), or "edge" for the
            frame's edge values continued (camera video: `optical_flow_video`).
        method_kwargs: extra keyword arguments for the pysteps motion method.
    """

    def __init__(self, in_channels: int = 1, method: str = "lucaskanade", motion_frames: int = 3,
                 outval: float | str = "min", method_kwargs: dict | None = None,
                 **ignored) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown optical flow method {method!r}; valid: {', '.join(METHODS)}")
        if motion_frames < 2:
            raise ValueError(f"motion_frames must be >= 2 to see any motion, got {motion_frames}")
        check_outval("optical_flow", outval)
        check_size("optical_flow", "in_channels", in_channels)
        self.in_channels, self.method, self.motion_frames = in_channels, method, motion_frames
        self.outval, self.method_kwargs = outval, dict(method_kwargs or {})
        import_pysteps()  # fail at construction, not mid-evaluation
        self.last_velocity: np.ndarray | None = None  # [B, C, 2, H, W] (u, v) px/step, last call

    def velocity(self, frames: np.ndarray) -> np.ndarray:
        """Motion `[2, H, W]` (x then y component, px/step) of frames `[T, H, W]`: the one
        estimate (`convcast.motion`) the data pipeline and the anchored models use too."""
        from convcast.motion import estimate_motion

        return estimate_motion(frames, self.method, self.method_kwargs)

    def extrapolate(self, last: np.ndarray, velocity: np.ndarray, horizon: int) -> np.ndarray:
        """Semi-Lagrangian extrapolation of `last` `[H, W]` -> `[horizon, H, W]` by the one
        advection (`convcast.motion.advect`, equal to pysteps' `extrapolate` to 1e-12 in
        float64), which the anchored forecasters use too."""
        from convcast.motion.advect import advect

        fill = float(last.min()) if self.outval == "min" else self.outval  # a number or "edge"
        field = torch.from_numpy(np.asarray(last, dtype=np.float64))[None, None]  # [1, 1, H, W]
        motion = torch.from_numpy(np.asarray(velocity, dtype=np.float64))[None]  # [1, 2, H, W]
        out = advect(field, motion, horizon, outval=fill)[0, :, 0].numpy()  # [horizon, H, W]
        return out if fill == "edge" else np.nan_to_num(out, nan=float(fill))

    @property
    def window(self) -> int:
        """How many of the latest frames a forecast reads (what a stream keeps)."""
        return self.motion_frames

    @torch.no_grad()
    def forward(self, x: torch.Tensor, horizon: int,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, horizon)
        self.check_condition(condition, horizon, (x.shape[0], *x.shape[-2:]))
        B, T, C, H, W = x.shape
        frames = x[:, -self.motion_frames:].detach().double().cpu().numpy()  # [B, t, C, H, W]
        out = np.empty((B, horizon, C, H, W))
        vel = np.zeros((B, C, 2, H, W))
        for b in range(B):
            for c in range(C):
                vel[b, c] = self.velocity(frames[b, :, c])  # [2, H, W]
                out[b, :, c] = self.extrapolate(frames[b, -1, c], vel[b, c], horizon)
        self.last_velocity = vel
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)  # [B, horizon, C, H, W]
