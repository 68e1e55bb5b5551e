"""Motion estimation: the optical flow of the latest frames, by pysteps' motion methods.

One estimate serves every user: the `optical_flow` baseline, the anchored forecasters and the
data pipeline that caches a motion field per training window (`convcast.data.motion`), so they
always see the same motion. Conventions are pysteps': `motion[0]` is the x (column) component and
`motion[1]` the y (row) component, in pixels per time step.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import numpy as np
import torch

from convcast.pysteps_modules import pysteps_module

METHODS = ("lucaskanade", "vet", "darts", "proesmans", "farneback")
MIN_FRAMES = {"darts": 3}  # DARTS fits N_t < T - 1 temporal Fourier modes
MAX_FRAMES = {"proesmans": 2}  # Proesmans' method compares exactly two frames


def pysteps_motion() -> Any:
    """`pysteps.motion`, imported quietly (pysteps prints a banner) with a clear error if absent."""
    return pysteps_module("motion", needed_by="estimating motion fields")


def check_method(method: str, motion_frames: int) -> None:
    """Clear errors for an unknown motion method or too few frames to see motion."""
    if method not in METHODS:
        raise ValueError(f"unknown optical flow method {method!r}; valid: {', '.join(METHODS)}")
    if isinstance(motion_frames, bool) or not isinstance(motion_frames, int) or motion_frames < 2:
        raise ValueError(f"motion_frames must be an int >= 2 to see any motion, got "
                         f"{motion_frames!r}")


def estimate_motion(frames: np.ndarray, method: str = "lucaskanade",
                    method_kwargs: dict | None = None) -> np.ndarray:
    """Motion `[2, H, W]` float64 (x then y, px/step) of frames `[T, H, W]`, by pysteps.

    One frame, or a constant field, has no motion to see: zeros. Sizes that pysteps' DARTS
    defaults do not fit (6 frames, 100 px) are shrunk to the input.
    """
    if frames.ndim != 3:
        raise ValueError(f"estimate_motion: frames must be [T, H, W], got {frames.shape}")
    need = MIN_FRAMES.get(method, 2)
    if frames.shape[0] < need:
        if frames.shape[0] >= 2:
            raise ValueError(f"optical flow method {method!r} needs at least {need} input frames, "
                             f"got {frames.shape[0]}; use 'lucaskanade' or more input frames")
        return np.zeros((2, *frames.shape[1:]))
    if np.ptp(frames) == 0:
        return np.zeros((2, *frames.shape[1:]))
    frames = frames[-MAX_FRAMES.get(method, len(frames)):]
    fn = pysteps_motion().get_method(method)
    kwargs = dict(method_kwargs or {})
    if method == "darts":
        kwargs.setdefault("N_t", min(4, frames.shape[0] - 2))
        kwargs.setdefault("N_y", min(50, frames.shape[1] // 2 - 1))
        kwargs.setdefault("N_x", min(50, frames.shape[2] // 2 - 1))
    if method in ("lucaskanade", "vet", "darts"):
        kwargs.setdefault("verbose", False)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LK on few vectors: singular matrix, covariance
        v = fn(frames, **kwargs)  # VET and DARTS print progress, hence the redirect
    return np.nan_to_num(np.asarray(v, dtype=np.float64))


def window_motion(x: torch.Tensor, motion_frames: int = 3, method: str = "lucaskanade",
                  method_kwargs: dict | None = None) -> torch.Tensor:
    """Motion `[2, H, W]` float32 of an input window `x [T_in, C, H, W]`, from its last
    `motion_frames` frames (the mean over channels when C > 1)."""
    if x.dim() != 4:
        raise ValueError(f"window_motion: x must be [T_in, C, H, W], got {tuple(x.shape)}")
    frames = x[-motion_frames:].detach().double().mean(dim=1).cpu().numpy()  # [t, H, W]
    return torch.from_numpy(estimate_motion(frames, method, method_kwargs)).float()  # [2, H, W]


def batch_motion(x: torch.Tensor, motion_frames: int = 3, method: str = "lucaskanade",
                 method_kwargs: dict | None = None) -> torch.Tensor:
    """Motion `[B, 2, H, W]` of a batch of windows `x [B, T_in, C, H, W]`, on x's device."""
    if x.dim() != 5:
        raise ValueError(f"batch_motion: x must be [B, T_in, C, H, W], got {tuple(x.shape)}")
    return torch.stack([window_motion(w, motion_frames, method, method_kwargs)
                        for w in x]).to(x.device)  # [B, 2, H, W]
