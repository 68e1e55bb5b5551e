"""Streaming inference: frames arrive one at a time and a forecast is wanted after each.

Re-running a recurrent forecaster over its whole input window for every new frame repeats the work
of all earlier frames. A `Stream` keeps the model's encoded state instead: `update(frames)`
advances it by the new frames only (`model.encode(frames, state)`), and `forecast(horizon)`
decodes from it without changing it (`model.decode(state, horizon)`), so after frames
x_1..x_T the forecast equals `model(x[:, :T], horizon)`.

Models without a state (the baselines, or any forecaster without `encode` / `decode`) are streamed
from a window of their latest frames: `window` frames (the model's own `window` attribute, or the
`input_frames` a checkpoint was trained with, or the `window=` argument), and each forecast is
`model(window_frames, horizon)`. `window=` also puts a recurrent model in that mode, when forecasts
should see only the latest frames rather than everything since `reset()`.

Everything runs under `torch.inference_mode()`. `state_dict()` is a dict of tensors, ints and
strings: `torch.save` it and restore it with `torch.load(..., weights_only=True)` and
`load_state_dict`.

    s = convcast.stream("model.ckpt")
    for frame in frames:           # each [C, H, W], or [B, k, C, H, W] for B streams at once
        s.update(frame)
        y = s.forecast(10)         # [B, 10, C, H, W]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from convcast.layers import keep_weights, pad_to_multiple

KINDS = ("state", "window")


def is_recurrent(model: nn.Module) -> bool:
    """Whether `model` keeps a state (has `encode` and `decode`); else a stream keeps a window."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


class Stream:
    """The running state of `model` over a batch of frame streams (see the module docstring).

    Args:
        model: a forecaster; it is put in eval mode.
        window: keep the latest `window` frames and re-run the model on them for each forecast
            (default: only for models without `encode`/`decode`, with the model's `window`).
        info: the description of the data the model was trained on (`load_forecaster`'s `info`),
            kept as `stream.info`.
    """

    def __init__(self, model: nn.Module, window: int | None = None,
                 info: dict[str, Any] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"stream() needs a forecaster (nn.Module) or a checkpoint path, got "
                            f"{type(model).__name__}")
        name = getattr(model, "model_name", type(model).__name__)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                                   or window < 1):
            raise ValueError(f"window must be a positive int (frames kept), got {window!r}")
        if window is None and not is_recurrent(model):
            window = getattr(model, "window", None) or (info or {}).get("input_frames")
            if not window:
                raise ValueError(
                    f"{name} cannot stream: it keeps no state (no encode/decode) and does not "
                    "say how many input frames it reads (no `window` attribute); give "
                    "stream(model, window=T_in) to re-run it on the latest T_in frames")
        self.model, self.info, self.name = model.eval(), dict(info or {}), name
        self.kind = "window" if window is not None else "state"
        self.window = int(window) if window is not None else None
        self.reset()

    # ---- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every frame seen: the next `update` starts new streams (any batch, any size)."""
        self.frames_seen = 0
        self._state: dict[str, torch.Tensor] | None = None  # the model's encoded state
        self._frames: torch.Tensor | None = None  # window mode: [B, <= window, C, H, W]
        self._shape: tuple[int, ...] | None = None  # (B, C, H, W) of the frames seen
        self._dtype: torch.dtype | None = None  # forecasts come back in the frames' dtype

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue: plain tensors, ints and strings."""
        out: dict[str, Any] = {"model": self.name, "kind": self.kind,
                               "frames_seen": self.frames_seen}
        if self._shape is not None:
            out["shape"] = list(self._shape)
            out["dtype"] = str(self._dtype).removeprefix("torch.")
        if self._state is not None:
            out["state"] = dict(self._state)
        if self._frames is not None:
            out["frames"] = self._frames
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` of a stream of the same model and kind."""
        if not isinstance(state, dict) or "kind" not in state or "frames_seen" not in state:
            raise ValueError("not a stream state: pass what Stream.state_dict() returned")
        if state.get("model") != self.name or state["kind"] != self.kind:
            raise ValueError(f"this state is of a {state.get('model')!r} stream ({state['kind']}) "
                             f"but this stream runs {self.name!r} ({self.kind}); load it into a "
                             "stream of the same model")
        self.reset()
        if "state" in state:
            enc = state["state"]
            check = getattr(self.model, "check_state", None)
            if callable(check):
                check(enc)  # the keys this model's encode() returns
            self._state = dict(enc)
        if "frames" in state:
            self._frames = state["frames"]
        if "shape" in state:
            self._shape = tuple(int(v) for v in state["shape"])
            self._dtype = getattr(torch, state["dtype"])
        self.frames_seen = int(state["frames_seen"])

    # ---- frames in, forecasts out -----------------------------------------------------------
    def _as_sequence(self, frames: torch.Tensor) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"update() takes a tensor, got {type(frames).__name__}")
        if frames.dim() == 3:
            frames = frames[None, None]  # one frame [C, H, W] of one stream
        elif frames.dim() != 5:
            raise ValueError(
                f"update() takes one frame [C, H, W] or frames [B, k, C, H, W], got shape "
                f"{tuple(frames.shape)}; for one frame of B streams pass frames[:, None], for k "
                "frames of one stream frames[None]")
        if frames.shape[1] < 1:
            raise ValueError("update() got no frames (k = 0)")
        shape = (frames.shape[0], *frames.shape[2:])
        if self._shape is not None and shape != self._shape:
            B, C, H, W = self._shape
            raise ValueError(f"this stream holds {B} stream(s) of {C}×{H}×{W} frames, but the "
                             f"update has {shape[0]} of {'×'.join(map(str, shape[1:]))} (shape "
                             f"{tuple(frames.shape)}); reset() first to start other streams")
        device = next((p.device for p in self.model.parameters()), frames.device)
        return frames.to(device)

    @torch.inference_mode()
    def update(self, frames: torch.Tensor) -> Stream:
        """Advance every stream by new frames `[B, k, C, H, W]` (or one frame `[C, H, W]`)."""
        x = self._as_sequence(frames)  # [B, k, C, H, W]
        if self.kind == "state":
            m = getattr(self.model, "size_multiple", 1)  # sides the patch does not divide: pad
            with keep_weights():  # joined gate weights reused from frame to frame
                self._state = self.model.encode(pad_to_multiple(x, m), self._state)
        else:
            seq = x if self._frames is None else torch.cat([self._frames, x], dim=1)
            if hasattr(self.model, "check_frames"):
                self.model.check_frames(x)
            self._frames = seq[:, -self.window:]  # [B, <= window, C, H, W]
        self._shape, self._dtype = (x.shape[0], *x.shape[2:]), x.dtype
        self.frames_seen += x.shape[1]
        return self

    @torch.inference_mode()
    def forecast(self, horizon: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The next `horizon` frames `[B, horizon, C, H, W]` after every frame seen so far;
        the state is left as it was, so the next `update` continues from it."""
        if self.frames_seen == 0:
            raise ValueError("the stream has seen no frames yet: update() it with at least one "
                             "frame before forecasting")
        kwargs = {} if condition is None else {"condition": condition}
        if self.kind == "state":
            m = getattr(self.model, "size_multiple", 1)
            if condition is not None:
                kwargs["condition"] = pad_to_multiple(condition, m)
            with keep_weights():
                y = self.model.decode(self._state, horizon, **kwargs)
            y = y[..., :self._shape[-2], :self._shape[-1]]  # padded sides cropped back
        else:
            y = self.model(self._frames, horizon, **kwargs)
        return y.to(self._dtype)  # [B, horizon, C, H, W]

    def __repr__(self) -> str:
        how = f"window of {self.window} frames" if self.kind == "window" else "encoded state"
        return f"Stream({self.name}, {how}, frames_seen={self.frames_seen})"


def stream(model_or_ckpt: nn.Module | str | Path, window: int | None = None,
           map_location: Any = "cpu") -> Stream:
    """A `Stream` over a forecaster, or over the one a checkpoint holds (`load_forecaster`)."""
    if isinstance(model_or_ckpt, (str, Path)):
        from convcast.train.checkpoint import load_forecaster

        model, info = load_forecaster(model_or_ckpt, map_location)
        return Stream(model, window, info)
    return Stream(model_or_ckpt, window)
