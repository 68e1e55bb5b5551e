"""A consensus of deterministic nowcasts: their mean in rain rate (S-PROG and ANVIL by default).

Each member (a deterministic baseline of the registry: `sprog`, `anvil`, `optical_flow`,
`persistence`) forecasts the same input with its own defaults; the consensus is, pixel by pixel
and lead by lead, their weighted power mean in rain rate,

    ŷ_k = ( Σ_i w_i r_{i,k}^p )^{1/p},   Σ_i w_i = 1,   r_{i,k} = member i's rain rate at lead k,

the arithmetic mean for p = 1 (the default), leaning towards the wetter member for p > 1.

Why: pysteps' two deterministic nowcasts err differently. S-PROG filters each scale of its
cascade by how predictable it is, so its forecast smooths and loses the peaks of heavy cells;
ANVIL models the growth and decay of the rain rate itself and keeps them, placing a peak where
S-PROG has none, at a larger squared error. Their mean keeps what both agree on: on five events
of four providers' real composites its rainfall MSE is below both of theirs on every event
(0.91-1.05x optical flow's where S-PROG and ANVIL have 1.01-1.25x) and its CSI at 2 mm/h above
both on four (benchmarks/RESULTS.md, "A consensus of S-PROG and ANVIL"). Nothing is learned: it
is a baseline.

Values. `transform="rainrate"` (default): the inputs are pixels over `dbz_range` (HKO-7's by
default), each member's forecast is turned into a rain rate by Z = a R^b (`zr`), combined and
turned back, with `threshold` (0.1 mm/h) the smallest rain, as the `anvil` baseline does;
`"none"`: the inputs are a rain rate (mm/h) and the members are built for one (`sprog` with
`transform="db"`, `anvil` with `transform="none"`). `member_kwargs` passes other arguments to a
member, e.g. `{"anvil": {"ar_window_radius": 25}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from convcast.data.units import HKO_ZR
from convcast.models.base import Forecaster, check_size
from convcast.models.pysteps_nowcasts import (
    check_choice,
    check_number,
    pixels_to_rain,
    rain_to_pixels,
)
from convcast.models.registry import create_model, register_model

MEMBERS = ("sprog", "anvil", "optical_flow", "persistence")  # deterministic baselines
# what each member needs to read a rain rate (transform "none" of the consensus)
RAIN_RATE_KWARGS = {"sprog": {"transform": "db"}, "anvil": {"transform": "none"}}
# what each member needs to read HKO-7-style pixels (transform "rainrate"), given the consensus'
# own dbz_range and zr (ANVIL converts with them too)
PIXEL_KWARGS = {"anvil": ("dbz_range", "zr")}


@register_model("consensus", baseline=True, tiny={"member_kwargs": {"anvil": {"ar_order": 1}}})
class Consensus(Forecaster):
    """The power mean in rain rate of deterministic nowcasts (see the module docstring).

    Args:
        in_channels: channels of the frames (each is forecast on its own by every member).
        members: names of deterministic baselines (`MEMBERS`), at least two, each once.
        weights: one weight per member (normalised to sum 1); default equal.
        power: p of the power mean (>= 1; 1 is the arithmetic mean).
        transform: "rainrate" (inputs are pixels over `dbz_range`) or "none" (a rain rate).
        threshold: the smallest rain rate (mm/h); less is no rain.
        dbz_range: dBZ of pixel 0 and pixel 1, for "rainrate".
        zr: (a, b) of Z = a R^b, for "rainrate".
        member_kwargs: `{member: {argument: value}}` for the members' own arguments.
    """

    transforms = ("rainrate", "none")

    def __init__(self, in_channels: int = 1, *, members: Sequence[str] = ("sprog", "anvil"),
                 weights: Sequence[float] | None = None, power: float = 1.0,
                 transform: str = "rainrate", threshold: float = 0.1,
                 dbz_range: tuple[float, float] = (-10.0, 60.0),
                 zr: tuple[float, float] = HKO_ZR,
                 member_kwargs: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.in_channels = check_size("consensus", "in_channels", in_channels)
        members = [members] if isinstance(members, str) else list(members)
        if len(members) < 2 or len(set(members)) != len(members):
            raise ValueError(f"consensus: members must name at least two different baselines, "
                             f"got {members!r}; e.g. members=['sprog', 'anvil']")
        for m in members:
            check_choice("consensus", "member", m, MEMBERS)
        weights = [1.0] * len(members) if weights is None else list(weights)
        if len(weights) != len(members):
            raise ValueError(f"consensus: {len(weights)} weights for {len(members)} members "
                             f"{members!r}; give one weight per member")
        weights = [check_number("consensus", "weights", w) for w in weights]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"consensus: weights must be >= 0 with a positive sum, got "
                             f"{weights!r}")
        self.weights = [w / sum(weights) for w in weights]
        self.power = check_number("consensus", "power", power)
        if self.power < 1:
            raise ValueError(f"consensus: power must be >= 1 (1: the arithmetic mean), got "
                             f"{power!r}")
        check_choice("consensus", "transform", transform, self.transforms)
        self.transform = transform
        self.threshold = check_number("consensus", "threshold", threshold, positive=True)
        lo, hi = (check_number("consensus", "dbz_range", v) for v in dbz_range)
        if not lo < hi:
            raise ValueError(f"consensus: dbz_range must be (low, high) dBZ with low < high, "
                             f"got {dbz_range!r}")
        self.dbz_range = (lo, hi)
        self.zr = tuple(check_number("consensus", "zr", v, positive=True) for v in zr)
        member_kwargs = dict(member_kwargs or {})
        unknown = sorted(set(member_kwargs) - set(members))
        if unknown:
            raise ValueError(f"consensus: member_kwargs for {', '.join(unknown)}, which are not "
                             f"members ({', '.join(members)})")
        self.members = nn.ModuleDict({m: create_model(m, in_channels=in_channels,
                                                      **self.member_arguments(m, member_kwargs))
                                      for m in members})

    def member_arguments(self, name: str, given: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """A member's arguments: what reading the consensus' values needs, then the user's."""
        if self.transform == "none":
            own = dict(RAIN_RATE_KWARGS.get(name, {}))
        else:
            own = {k: getattr(self, k) for k in PIXEL_KWARGS.get(name, ())}
        return {**own, **given.get(name, {})}

    @property
    def window(self) -> int:
        """How many of the latest frames a forecast reads: the most any member reads."""
        return max(getattr(m, "window", 1) for m in self.members.values())

    @property
    def last_velocity(self) -> np.ndarray | None:
        """The motion of the last call (every member estimates the same from the same frames)."""
        for m in self.members.values():
            if getattr(m, "last_velocity", None) is not None:
                return m.last_velocity
        return None

    # ---- values -------------------------------------------------------------------------------
    def to_rain(self, v: np.ndarray) -> np.ndarray:
        """Forecast values -> rain rate (mm/h), 0 below `threshold`."""
        if self.transform == "rainrate":
            return pixels_to_rain(v, self.dbz_range, self.zr, self.threshold)
        v = np.nan_to_num(v, nan=0.0)
        return np.where(v >= self.threshold, v, 0.0)

    def from_rain(self, r: np.ndarray) -> np.ndarray:
        """Rain rate -> the input's values (no rain: 0)."""
        if self.transform == "none":
            return np.where(r >= self.threshold, r, 0.0)
        return rain_to_pixels(r, self.dbz_range, self.zr, self.threshold)

    # ---- forecasting --------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        self.check_input(x, horizon)
        p = self.power
        total = 0.0
        for w, member in zip(self.weights, self.members.values(), strict=True):
            rain = self.to_rain(member(x, horizon).double().cpu().numpy())  # [B, K, C, H, W]
            total = total + w * rain ** p
        out = self.from_rain(total ** (1.0 / p))
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def set_grid(self, *, kmperpixel: float | None, timestep: float | None) -> None:
        """Pass the frames' pixel size (km) and step (minutes) to the members that use them."""
        for m in self.members.values():
            if hasattr(m, "set_grid"):
                m.set_grid(kmperpixel=kmperpixel, timestep=timestep)
