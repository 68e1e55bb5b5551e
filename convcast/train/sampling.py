"""Scheduled sampling (Bengio et al., NeurIPS 2015) and reverse scheduled sampling (PredRNN-v2).

An autoregressive forecaster feeds its own prediction of future frame k back as the input that
produces frame k + 1. Training with the true frame instead (teacher forcing) is easy but unlike test
time; scheduled sampling feeds the truth with a probability ε that decays with the training step,
drawn per sample and per frame. `ForecastSystem` calls `masks(step, batch, input_frames, horizon,
device)` in `training_step` only (never at validation or test) and passes the returned dict to the
model as keyword arguments, with `teacher=` the true future.

Reverse scheduled sampling (Wang et al., TPAMI 2022, PredRNN-v2) also samples on the *input* side:
the true input frames are replaced by the model's own predictions of them with a probability that
falls to 0 (the input-side truth probability rises from 0.5 to 1), while the output side goes from
0.5 truth to none; the model must read `input_mask` (its registry entry says so: `predrnn`,
`predrnn_v2`, `predrnn_pp`, `mim`).

Use from a LightningCLI YAML:
    sampling: {class_path: convcast.train.sampling.ScheduledSampling,
               init_args: {schedule: linear, decay_steps: 50000}}
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "exponential", "inverse_sigmoid")
INPUT_SCHEDULES = ("exponential", "linear")
FLOOR = 0.01  # the truth probability that exponential and inverse-sigmoid reach at decay_steps


def _bernoulli(p: float, rows: int, cols: int, device: torch.device | str | None) -> torch.Tensor:
    """A `[rows, cols]` bool mask, each entry True with probability `p`."""
    return torch.rand(rows, cols, device=device) < p


def _inverse_sigmoid_k(decay_steps: int) -> float:
    """The k with k / (k + exp(decay_steps / k)) = FLOOR, found by bisection (k >= 1)."""
    target = lambda k: k * math.log((1 - FLOOR) / FLOOR * k) - decay_steps  # noqa: E731
    lo, hi = 1.0, max(2.0, float(decay_steps))
    if target(lo) >= 0:  # decay_steps too short for k >= 1: the fastest decay allowed
        return 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if target(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


class Sampling:
    """Base class: `probability(step)` of feeding a true future frame and the masks it draws."""

    def probability(self, step: int) -> float:
        raise NotImplementedError

    def masks(self, step: int, batch: int, input_frames: int, horizon: int,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Keyword arguments for `model(x, horizon, teacher=y, **masks)`."""
        p = self.probability(step)
        return {"teacher_mask": _bernoulli(p, batch, max(horizon - 1, 0), device)}


class ScheduledSampling(Sampling):
    """Feed the true frame k with probability ε(step), decaying from about 1 to `end`.

    Schedules (i = training step, D = `decay_steps`):
        linear:          ε = max(end, 1 - i / D)                  (0 at D; Bengio's k=1, c=1/D)
        exponential:     ε = max(end, k^i), k < 1                 (default k = 0.01^(1/D))
        inverse_sigmoid: ε = max(end, k / (k + exp(i / k))), k≥1  (default: ε = 0.01 at D)
    `k` overrides the default of the last two. PredRNN's recipe is linear with D = 50000 (ε falls
    by 2e-5 per step).
    """

    def __init__(self, schedule: str = "linear", decay_steps: int = 50000,
                 k: float | None = None, end: float = 0.0) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")
        if not 0.0 <= end <= 1.0:
            raise ValueError(f"end must be a probability in [0, 1], got {end}")
        if k is not None and schedule == "linear":
            raise ValueError("k sets the exponential or inverse_sigmoid schedule; the linear one "
                             "is set by decay_steps")
        if k is not None and schedule == "exponential" and not 0.0 < k < 1.0:
            raise ValueError(f"the exponential schedule needs 0 < k < 1, got k={k}")
        if k is not None and schedule == "inverse_sigmoid" and k < 1.0:
            raise ValueError(f"the inverse_sigmoid schedule needs k >= 1, got k={k}")
        if k is None and schedule == "exponential":
            k = FLOOR ** (1.0 / decay_steps)
        elif k is None and schedule == "inverse_sigmoid":
            k = _inverse_sigmoid_k(decay_steps)
        self.schedule, self.decay_steps, self.k, self.end = schedule, decay_steps, k, end

    def probability(self, step: int) -> float:
        i = max(0, int(step))
        if self.schedule == "linear":
            eps = 1.0 - i / self.decay_steps
        elif self.schedule == "exponential":
            eps = self.k**i
        else:
            z = i / self.k
            eps = 0.0 if z > 700 else self.k / (self.k + math.exp(z))  # exp overflows past ~709
        return max(self.end, eps)

    def __repr__(self) -> str:
        return (f"ScheduledSampling(schedule={self.schedule!r}, decay_steps={self.decay_steps}, "
                f"k={self.k}, end={self.end})")


class ReverseScheduledSampling(Sampling):
    """PredRNN-v2's reverse scheduled sampling; returns `teacher_mask` and `input_mask`.

    With s1 = `r_sampling_step_1`, s2 = `r_sampling_step_2`, α = `r_exp_alpha`, i = step:
        input side (truth probability of input frame t + 1), rising from 0.5 to 1:
            i < s1: 0.5;  s1 <= i < s2: 1 - 0.5·exp(-(i - s1)/α) (exponential)
                                        or 0.5 + 0.5·(i - s1)/(s2 - s1) (linear);  i >= s2: 1
        output side (truth probability of future frame k), falling linearly from 0.5 to 0:
            i < s1: 0.5;  s1 <= i < s2: 0.5 - 0.5·(i - s1)/(s2 - s1);  i >= s2: 0
    The official Moving MNIST script uses s1 = 25000, s2 = 50000, α = 2500 (code default 5000).
    """

    def __init__(self, r_sampling_step_1: int = 25000, r_sampling_step_2: int = 50000,
                 r_exp_alpha: float = 5000.0, input_schedule: str = "exponential") -> None:
        if not 0 <= r_sampling_step_1 < r_sampling_step_2:
            raise ValueError("need 0 <= r_sampling_step_1 < r_sampling_step_2, got "
                             f"{r_sampling_step_1}, {r_sampling_step_2}")
        if r_exp_alpha <= 0:
            raise ValueError(f"r_exp_alpha must be > 0, got {r_exp_alpha}")
        if input_schedule not in INPUT_SCHEDULES:
            raise ValueError(f"unknown input_schedule {input_schedule!r}; valid: "
                             f"{', '.join(INPUT_SCHEDULES)}")
        self.s1, self.s2, self.alpha = r_sampling_step_1, r_sampling_step_2, r_exp_alpha
        self.input_schedule = input_schedule

    def input_probability(self, step: int) -> float:
        """Probability of feeding the true input frame (rather than the model's prediction)."""
        if step < self.s1:
            return 0.5
        if step >= self.s2:
            return 1.0
        if self.input_schedule == "exponential":
            return 1.0 - 0.5 * math.exp(-(step - self.s1) / self.alpha)
        return 0.5 + 0.5 * (step - self.s1) / (self.s2 - self.s1)

    def probability(self, step: int) -> float:
        """Probability of feeding the true future frame (rather than the model's prediction)."""
        if step < self.s1:
            return 0.5
        if step >= self.s2:
            return 0.0
        return 0.5 - 0.5 * (step - self.s1) / (self.s2 - self.s1)

    def masks(self, step: int, batch: int, input_frames: int, horizon: int,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        out = super().masks(step, batch, input_frames, horizon, device)
        out["input_mask"] = _bernoulli(self.input_probability(step), batch,
                                       max(input_frames - 1, 0), device)
        return out

    def __repr__(self) -> str:
        return (f"ReverseScheduledSampling(r_sampling_step_1={self.s1}, r_sampling_step_2="
                f"{self.s2}, r_exp_alpha={self.alpha}, input_schedule={self.input_schedule!r})")
