"""The one contract every forecaster keeps, and helpers shared by them.

`forward(x, horizon)` takes `[B, T_in, C, H, W]` and returns `[B, horizon, C, H, W]`. Every
forecaster is called the same way, `model(x, horizon, **inputs)`, with optional inputs from
`convcast.models.registry.INPUTS` (condition, teacher, teacher_mask, input_mask, motion, grid); its
registry entry says which it reads, and giving one it does not read is an error. Ensembles:
`model.sample(x, horizon, members=M)` -> `[B, M, horizon, C, H, W]` (a deterministic forecaster
is an ensemble of one, `M = 1`).
Autoregressive forecasters (`autoregressive = True`) feed each prediction back as the next input
and also accept `teacher` (the true future `[B, horizon, C, H, W]`) and `teacher_mask`
(`[B, horizon - 1]`, True where true frame k replaces predicted frame k as the input that produces
frame k + 1). The training system uses them for teacher forcing and scheduled sampling; at
inference both are None.

Condition frames: a learned forecaster built with `condition_channels=Cc > 0` also takes
`condition [B, horizon, Cc, H, W]`, frames known in advance for each lead time (e.g. a baseline's
forecast for that lead); the step that produces future frame k reads `condition[:, k]` beside its
usual input.

Recurrent forecasters split `forward` into `encode(x, state=None) -> state`, which advances a plain
dict of tensors by the frames `x`, and `decode(state, horizon, condition, teacher, teacher_mask)`,
which forecasts from a state without changing it; `forward(x, horizon)` is
`decode(encode(x), horizon)`. Streaming inference (`convcast.inference.stream`) is built on the two.

Inputs are computed in the model's parameter dtype (a float64 or bfloat16 input is cast, and the
forecast comes back in the input's dtype; `encode` casts its frames alike). A non-finite input
value is handled by the model's `nonfinite` policy: "raise" (the default), "warn" (once per
model) or "ignore"; `model.nonfinite = "warn"` sets it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn

from convcast.layers.patch import pad_to_multiple, space_to_depth
from convcast.models.registry import INPUTS

ACTIVATIONS = ("sigmoid", "identity")
NONFINITE = ("raise", "warn", "ignore")
State = dict[str, torch.Tensor]


def make_activation(name: str) -> nn.Module:
    """The last nonlinearity: `sigmoid` for data in [0, 1], `identity` for standardised data."""
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown output_activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def check_size(model: str, name: str, value: object, minimum: int = 1) -> int:
    """`value` as an int >= `minimum`, or a ValueError naming the model and the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{model}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def check_sizes(model: str, name: str, value: int | Sequence[int], minimum: int = 1) -> None:
    """Check one size or a list of sizes (one per layer), each an int >= `minimum`."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{model}: {name} is empty; give one value or one per layer")
    for v in values:
        check_size(model, name, v, minimum)


def check_kernel(model: str, value: int | Sequence) -> None:
    """A kernel size (int, (kh, kw) pair or a list of those per layer) must be positive and odd."""
    values = list(value) if isinstance(value, list) else [value]
    for v in values:
        sides = list(v) if isinstance(v, (list, tuple)) else [v]
        if not sides or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 or s % 2 == 0
                            for s in sides):
            raise ValueError(f"{model}: kernel_size must be a positive odd int, a pair of them or "
                             f"one per layer (e.g. 3 or 5), got {value!r}")


class Forecaster(nn.Module):
    """Base class: input checks, condition frames, the teacher-forcing choice of the next input."""

    autoregressive: ClassVar[bool] = False
    inputs: ClassVar[frozenset[str] | None] = None  # optional inputs read (registry entry)
    condition_channels: int = 0  # channels of the per-lead-time condition frames (0: none)
    in_channels: int
    _nonfinite: str = "raise"
    _warned_nonfinite: bool = False

    # ---- policies ---------------------------------------------------------------------------
    @property
    def nonfinite(self) -> str:
        """What a NaN or infinite input value does: "raise", "warn" (once per model), "ignore"."""
        return self._nonfinite

    @nonfinite.setter
    def nonfinite(self, policy: str) -> None:
        if policy not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {', '.join(NONFINITE)}, got {policy!r}")
        for m in self.modules():  # a forecaster wrapping another one sets both
            if isinstance(m, Forecaster):
                m._nonfinite, m._warned_nonfinite = policy, False

    def set_condition_channels(self, condition_channels: int) -> int:
        """Record (and validate) the constructor's `condition_channels`."""
        self.condition_channels = check_size(type(self).__name__, "condition_channels",
                                             condition_channels, minimum=0)
        return self.condition_channels

    def compute_dtype(self) -> torch.dtype | None:
        """The dtype the model computes in: its parameters' (None for a model without any)."""
        for p in self.parameters():
            if p.dtype.is_floating_point:
                return p.dtype
        return None

    def __call__(self, *args, **kwargs):
        """The one forecaster call, `model(x, horizon, **inputs)` with `inputs` from
        `registry.INPUTS`: an input the model does not read (its registry entry's `inputs`) is an
        error when given, and dropped when None. `forward` runs in the parameters' dtype: a
        float64 or bfloat16 input (and its other float tensors: teacher, condition, ...) is
        cast, and the forecast cast back."""
        kwargs = self._read_inputs(kwargs)
        x = args[0] if args else kwargs.get("x")
        m = self.size_multiple
        if (m > 1 and isinstance(x, torch.Tensor) and x.dim() == 5
                and (x.shape[-2] % m or x.shape[-1] % m)):
            return self._padded_call(m, args, kwargs)
        dtype = self.compute_dtype()
        if (dtype is None or not isinstance(x, torch.Tensor) or not x.is_floating_point()
                or x.dtype == dtype):
            return super().__call__(*args, **kwargs)

        def cast(v: object) -> object:
            return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

        y = super().__call__(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
        return y.to(x.dtype)  # [B, horizon, C, H, W]

    @property
    def size_multiple(self) -> int:
        """Frame sides must be multiples of this (the patch size); others are padded."""
        p = getattr(self, "patch_size", 1)
        return p if isinstance(p, int) and p > 1 else 1

    def _padded_call(self, m: int, args: tuple, kwargs: dict) -> torch.Tensor:
        """A call on frames whose sides `m` does not divide: every spatial input padded at the
        bottom and right to the next multiple (reflected; edge values where the frame is too
        small), the forecast cropped back to the input's size."""
        x = args[0] if args else kwargs["x"]
        H, W = x.shape[-2:]

        def pad(t: object) -> object:
            return pad_to_multiple(t, m, (H, W)) if isinstance(t, torch.Tensor) else t

        y = self(*map(pad, args), **{k: pad(v) for k, v in kwargs.items()})
        return y[..., :H, :W]  # [B, horizon, C, H, W]

    def sample(self, x: torch.Tensor, horizon: int, members: int = 1,
               **inputs: torch.Tensor | None) -> torch.Tensor:
        """The ensemble contract: `members` forecasts `[B, members, horizon, C, H, W]`.

        A deterministic forecaster is an ensemble of one: its forecast, once (`[B, 1, ...]`,
        whatever `members` asks). A model that draws members itself (registry entry
        `ensemble=True`) overrides this; its `forward` stays the one deterministic call (e.g.
        its ensemble mean or its unperturbed member).
        """
        check_size(type(self).__name__, "members", members)
        return self(x, horizon, **inputs).unsqueeze(1)  # [B, 1, horizon, C, H, W]

    def _read_inputs(self, kwargs: dict) -> dict:
        """Check the optional inputs of one call against what the model reads; drop unread Nones."""
        reads = self.inputs
        if reads is None:  # an unregistered subclass that declares nothing: passed through
            return kwargs
        name = type(self).__name__
        for key in list(kwargs):
            if key in ("x", "horizon") or key in reads:
                continue
            if key not in INPUTS:
                raise TypeError(f"{name}: unknown input {key!r}; a forecaster is called as "
                                f"model(x, horizon, **inputs) with inputs from {', '.join(INPUTS)}")
            if kwargs[key] is None:
                del kwargs[key]
            elif key == "condition":
                raise ValueError(f"{name} reads no condition frames (condition_channels=0) but "
                                 "got a condition; build a learned model with "
                                 "condition_channels=Cc or drop the condition")
            else:
                raise ValueError(f"{name} reads no {key!r} (it reads: "
                                 f"{', '.join(sorted(reads)) or 'x and horizon only'}); drop it")
        return kwargs

    def cast(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """`t` in the model's compute dtype (unchanged when it has none or already is)."""
        dtype = self.compute_dtype()
        return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)

    # ---- checks -----------------------------------------------------------------------------
    def check_frames(self, x: torch.Tensor) -> None:
        """Clear errors for input frames that do not fit the model (`[B, T, C, H, W]`, float)."""
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
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point input, got {x.dtype}; divide "
                            "uint8 frames by 255 first")
        self.check_finite(x, "input")

    def check_finite(self, t: torch.Tensor, what: str) -> None:
        """Apply the `nonfinite` policy to `t` (one `isfinite().all()`)."""
        if self._nonfinite == "ignore" or bool(torch.isfinite(t).all()):
            return
        msg = (f"{type(self).__name__}: the {what} holds NaN or infinite values "
               f"({int((~torch.isfinite(t)).sum())} of {t.numel()}), which make the forecast NaN; "
               "fill them (e.g. torch.nan_to_num) or set model.nonfinite = 'warn' / 'ignore'")
        if self._nonfinite == "raise":
            raise ValueError(msg)
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    @staticmethod
    def check_horizon(horizon: int) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")

    def check_input(self, x: torch.Tensor, horizon: int) -> None:
        self.check_frames(x)
        self.check_horizon(horizon)

    def check_condition(
        self, condition: torch.Tensor | None, horizon: int, frame: Sequence[int],
    ) -> torch.Tensor | None:
        """Validate `condition` for frames `frame = (B, H, W)`; return it in the compute dtype.

        It must be `[B, >= horizon, condition_channels, H, W]` (frames beyond `horizon` are not
        read), given exactly when the model was built with `condition_channels > 0`.
        """
        name, cc = type(self).__name__, self.condition_channels
        if condition is None:
            if cc:
                raise ValueError(f"{name} was built with condition_channels={cc} and needs "
                                 f"condition frames [B, horizon, {cc}, H, W] for every forecast; "
                                 "pass condition=... (or build it with condition_channels=0)")
            return None
        if not cc:
            got = tuple(condition.shape) if isinstance(condition, torch.Tensor) else condition
            raise ValueError(f"{name} reads no condition frames (condition_channels=0) but got "
                             f"condition {got}; build a learned model with condition_channels=Cc "
                             "or drop the condition")
        B, H, W = frame
        if (not isinstance(condition, torch.Tensor) or condition.dim() != 5
                or condition.shape[0] != B or condition.shape[1] < horizon
                or condition.shape[2:] != (cc, H, W)):
            shape = tuple(condition.shape) if isinstance(condition, torch.Tensor) else condition
            raise ValueError(f"{name}: condition must be [B={B}, horizon={horizon}, "
                             f"condition_channels={cc}, H={H}, W={W}], got {shape}")
        if not condition.is_floating_point():
            raise TypeError(f"{name}: condition must be floating point, got {condition.dtype}")
        self.check_finite(condition, "condition")
        return self.cast(condition[:, :horizon])

    def check_teacher(
        self, frame: Sequence[int], horizon: int, teacher: torch.Tensor | None,
        teacher_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Validate the teacher inputs for frames `frame = (B, C, H, W)`; return the teacher in the
        compute dtype and the mask as a float `[B, horizon-1]` (both None without a teacher)."""
        if teacher is None:
            if teacher_mask is not None:
                raise ValueError("teacher_mask was given without teacher frames")
            return None, None
        if not self.autoregressive:
            raise ValueError(f"{type(self).__name__} reads no previous frames while forecasting, "
                             "so teacher forcing does not apply; build it autoregressive "
                             "(feedback=True / conditional=True) or drop teacher")
        B, C, H, W = frame
        if (teacher.dim() != 5 or teacher.shape[0] != B or teacher.shape[1] < horizon - 1
                or teacher.shape[2:] != (C, H, W)):
            raise ValueError(f"teacher must be [B={B}, >= {horizon - 1}, {C}, {H}, {W}], got "
                             f"{tuple(teacher.shape)}")
        teacher = self.cast(teacher)
        if teacher_mask is None:
            return teacher, teacher.new_ones(B, max(horizon - 1, 0))
        if teacher_mask.shape != (B, horizon - 1):
            raise ValueError(
                f"teacher_mask must be [B, horizon-1] = [{B}, {horizon - 1}], "
                f"got {tuple(teacher_mask.shape)}"
            )
        return teacher, teacher_mask.to(teacher.dtype)

    @staticmethod
    def next_input(
        pred: torch.Tensor, k: int, teacher: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Input for the step after future frame k: the prediction, or where masked the truth."""
        if teacher is None:
            return pred
        m = mask[:, k].view(-1, *[1] * (pred.dim() - 1))  # [B, 1, ...]
        return m * teacher[:, k] + (1 - m) * pred


class RecurrentForecaster(Forecaster):
    """A forecaster with a state: `forward(x, horizon) = decode(encode(x), horizon)`.

    Subclasses implement `encode(x, state=None) -> state` (a dict of tensors, never modified in
    place) and `decode(state, horizon, condition=None, teacher=None, teacher_mask=None)`.
    """

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        raise NotImplementedError

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, horizon: int, teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None, condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_horizon(horizon)
        y = self.decode(self.encode(x), horizon, condition, teacher, teacher_mask)
        return y.to(x.dtype)  # [B, horizon, C, H, W]

    def state_keys(self) -> list[str]:
        """The keys of the state dict `encode` returns."""
        raise NotImplementedError

    def state_frames(self, state: State) -> tuple[int, int, int]:
        """(B, H, W) of the frames a state was encoded from (its `last` frame, patch-reshaped
        by `patch_size` where the model has one)."""
        p = getattr(self, "patch_size", 1)
        last = state["last"]  # [B, C*p*p, H/p, W/p]
        return last.shape[0], last.shape[-2] * p, last.shape[-1] * p

    def decode_inputs(
        self, state: State, horizon: int, condition: torch.Tensor | None,
        teacher: torch.Tensor | None, teacher_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Check a decode's arguments; return the condition and teacher frames (patch-reshaped
        like the frames where the model has a `patch_size`) and the teacher mask."""
        self.check_horizon(horizon)
        self.check_state(state)
        B, H, W = self.state_frames(state)
        cond = self.check_condition(condition, horizon, (B, H, W))  # [B, horizon, Cc, H, W]
        teacher, mask = self.check_teacher((B, self.in_channels, H, W), horizon, teacher,
                                           teacher_mask)
        p = getattr(self, "patch_size", 1)
        if p > 1:
            cond = space_to_depth(cond, p) if cond is not None else None  # [B, K, Cc*p*p, ...]
            teacher = space_to_depth(teacher, p) if teacher is not None else None
        return cond, teacher, mask

    def check_state(self, state: State) -> None:
        """A state must come from this model's `encode` (same keys, all tensors)."""
        keys = self.state_keys()
        if (not isinstance(state, dict) or sorted(state) != sorted(keys)
                or not all(isinstance(v, torch.Tensor) for v in state.values())):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{type(self).__name__}: not a state of this model (expected keys "
                             f"{sorted(keys)}, got {got}); pass what encode() returned")

    def shared_anchor(self, in_channels: int, condition_channels: int) -> None:
        """Models that read observed frames and forecast frames with the same cells put the
        observed frame itself in the condition slot while encoding, so Cc must equal C."""
        if condition_channels not in (0, in_channels):
            raise ValueError(
                f"{type(self).__name__}: condition_channels must be 0 or in_channels "
                f"({in_channels}), got {condition_channels}: its cells read observed frames and "
                "forecast steps alike, and an observed frame is its own condition frame")
