"""Exceedance probabilities learned directly: one logit map per rain-rate threshold.

`exceedance_heads` is `anchored` (a learned correction on top of persistence or optical-flow
extrapolation, `convcast.models.anchored`) with heads that turn its unclipped forecast
u = a + W f into a logit per threshold t_k (mm/h) and lead time k:

    z_k = (u - ℓ_k) / s_{lead,k} + b_{lead,k} + r_k(u, a),   P(R >= t_k) = σ(z_k / T_k),

ℓ_k the threshold in model values (a buffer, converted through the data's description: HKO-7
pixels at build time, the training data's dBZ range and Z-R relation once `ForecastSystem` has
trained on it), s (initial `width`, ≈ 2 dBZ in HKO-7 pixels) and b a width and an offset per lead
time and threshold (lead times beyond `leads` use the last one's), and r_k a small convolutional
net over the K soft exceedances and the anchor, its last layer zero at start, that spreads a
probability over the neighbourhood the forecast cannot place. Untrained, the probability is the
anchor's soft exceedance, σ((a - ℓ_k) / s). Training (`ForecastSystem`, loss `exceedance_bce`)
minimises the binary cross-entropy against o_k = [R(truth) >= t_k] through everything, the
inner ConvLSTM included.

T_k is a temperature per threshold fitted on validation data (`TemperatureCalibration`, a
callback, or `calibrate(batches)`), a buffer saved in the checkpoint; 1 until then. Training
reads the raw logits (T = 1); `probabilities` and evaluation use the calibrated ones.

`forward(x, horizon)` keeps the forecaster contract: the anchored deterministic forecast
`[B, horizon, C, H, W]` (clipped u; the untrained model's is its anchor). Heads trained with the
BCE alone do not train it to be a good forecast: use `probabilities`. While gradients are
enabled the heads join it with weight zero, so that every parameter is in the graph of one
forward (DDP, generic gradient checks) without changing a value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.models.anchored import Anchored, _StraightThroughClip
from convcast.models.base import check_size
from convcast.models.registry import register_model

TEMPERATURES = torch.logspace(-3, 3, 61, base=2.0, dtype=torch.float64)  # the fitted T's grid


def _rain_rate(values: torch.Tensor, scale: Any | None) -> torch.Tensor:
    """Model values -> mm/h by `scale` (a data description; None: HKO-7 pixels)."""
    if scale is not None:
        return scale.to_physical(values)
    from convcast.data.units import pixel_to_rainrate

    return pixel_to_rainrate(values)


def threshold_values(thresholds: Sequence[float], scale: Any | None = None) -> torch.Tensor:
    """The model values `[K]` (float64) at which the rain rate reaches each threshold (mm/h):
    closed form for HKO-7 pixels (`scale` None), else bisection of `scale.to_physical`, which
    increases with the value."""
    thr = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
    if scale is None:
        from convcast.data.units import rainrate_to_pixel

        return rainrate_to_pixel(thr)
    lo, hi = torch.full_like(thr, -1.0), torch.full_like(thr, 2.0)
    for _ in range(12):  # widen the bracket until R(lo) < t <= R(hi)
        r_lo, r_hi = _rain_rate(lo, scale), _rain_rate(hi, scale)
        if bool((r_lo < thr).all() and (r_hi >= thr).all()):
            break
        lo, hi = torch.where(r_lo < thr, lo, 2 * lo), torch.where(r_hi >= thr, hi, 2 * hi)
    else:
        raise ValueError(f"exceedance_heads: the data's rain rates never reach the thresholds "
                         f"{thr.tolist()} mm/h within model values ±{float(hi.abs().max()):g}; "
                         "give thresholds within the data's range")
    for _ in range(60):
        mid = (lo + hi) / 2
        up = _rain_rate(mid, scale) >= thr
        lo, hi = torch.where(up, lo, mid), torch.where(up, mid, hi)
    return hi


def exceedance_events(target: torch.Tensor, thresholds: Sequence[float],
                      scale: Any | None = None) -> torch.Tensor:
    """o_k = [R(target) >= t_k] `[B, T, K, C, H, W]` (float) of `target [B, T, C, H, W]`."""
    rate = _rain_rate(target.float(), scale)  # [B, T, C, H, W] mm/h
    return torch.stack([(rate >= float(t)).float() for t in thresholds], dim=2)


class TemperatureFit:
    """The temperature per threshold that minimises the BCE of σ(z / T) on streamed data.

    Sums of the BCE at every temperature of a grid (`TEMPERATURES`, 1/8 to 8) are added batch by
    batch (and across processes: they are plain sums), then the least is refined by a parabola
    in log T through it and its neighbours.
    """

    def __init__(self, thresholds: int) -> None:
        self.sums = torch.zeros(thresholds, len(TEMPERATURES), dtype=torch.float64)

    def update(self, logits: torch.Tensor, events: torch.Tensor,
               mask: torch.Tensor | None = None) -> None:
        """Add logits `[B, T, K, C, H, W]` (raw, T = 1) and events o_k of the same shape."""
        z, o = logits.detach().double(), events.double()
        m = None if mask is None else mask.unsqueeze(2).expand_as(z).double()
        dims = [d for d in range(z.dim()) if d != 2]
        sums = []
        for t in TEMPERATURES.tolist():
            err = F.binary_cross_entropy_with_logits(z / t, o, reduction="none")
            sums.append((err if m is None else err * m).sum(dim=dims))  # [K]
        self.sums += torch.stack(sums, dim=1).cpu()  # [K, G]

    def compute(self) -> torch.Tensor:
        """The fitted temperatures `[K]` (float32; 1 for a threshold without data)."""
        logt = TEMPERATURES.log()
        out = []
        for s in self.sums:
            i = int(s.argmin())
            if not bool(s.any()) or not bool(torch.isfinite(s).all()):
                out.append(1.0)
                continue
            if 0 < i < len(s) - 1:  # vertex of the parabola through the three points
                y0, y1, y2 = s[i - 1], s[i], s[i + 1]
                step = logt[1] - logt[0]
                denom = y0 - 2 * y1 + y2
                shift = 0.5 * (y0 - y2) / denom if denom > 0 else 0.0
                out.append(math.exp(float(logt[i] + step * shift)))
            else:
                out.append(float(TEMPERATURES[i]))
        return torch.tensor(out, dtype=torch.float32)


@register_model("exceedance_heads", inputs=("motion",), export=(),
                export_note="its optical-flow anchor is computed by pysteps outside torch and its "
                "output is probabilities, not the exported forecast; export a base model instead",
                tiny={"base_kwargs": {"hidden_channels": [4, 4], "kernel_size": 3,
                                      "patch_size": 2}, "head_hidden": 4})
class ExceedanceHeads(Anchored):
    """Exceedance-probability heads on top of `anchored` (see the module docstring).

    Args:
        in_channels, base, base_kwargs, anchor, value_range, motion_frames, method,
            method_kwargs, outval, motion_hidden, calibrate_leads: as `anchored`'s.
        thresholds: rain rates (mm/h) whose exceedance is forecast, increasing.
        width: initial width s of the soft step, in model values (0.03 ≈ 2 dBZ in HKO-7 pixels).
        leads: lead times with their own width and offset (later ones use the last's).
        head_hidden: channels of the neighbourhood net r (0: none).
    """

    gated = False  # its forward is its own: no validated gate

    def __init__(self, in_channels: int = 1, base: str = "encoder_forecaster",
                 base_kwargs: dict | None = None, anchor: str = "persistence",
                 value_range: Sequence[float] | None = (0.0, 1.0), motion_frames: int = 3,
                 method: str = "lucaskanade", method_kwargs: dict | None = None,
                 outval: float | str = "min", motion_hidden: int = 0, calibrate_leads: int = 0,
                 thresholds: Sequence[float] = (0.5, 2.0, 5.0), width: float = 0.03,
                 leads: int = 1, head_hidden: int = 16) -> None:
        super().__init__(in_channels=in_channels, base=base, base_kwargs=base_kwargs,
                         anchor=anchor, value_range=value_range, motion_frames=motion_frames,
                         method=method, method_kwargs=method_kwargs, outval=outval,
                         motion_hidden=motion_hidden, calibrate_leads=calibrate_leads)
        try:
            thr = [float(t) for t in thresholds] if not isinstance(thresholds, str) else []
        except (TypeError, ValueError):
            thr = []
        if not thr or any(not t > 0 for t in thr) or thr != sorted(set(thr)):
            raise ValueError(f"exceedance_heads: thresholds must be increasing rain rates > 0 "
                             f"(mm/h), e.g. [0.5, 2, 5], got {thresholds!r}")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ValueError(f"exceedance_heads: width must be a number > 0 (model values), got "
                             f"{width!r}")
        check_size("exceedance_heads", "leads", leads)
        check_size("exceedance_heads", "head_hidden", head_hidden, minimum=0)  # 0: none
        self.thresholds = tuple(thr)
        K, C = len(thr), in_channels
        self.register_buffer("levels", threshold_values(thr).float())  # ℓ_k [K]
        self.register_buffer("temperature", torch.ones(K))  # T_k [K], fitted on validation data
        self.log_width = nn.Parameter(torch.full((leads, K), math.log(width)))  # log s
        self.offset = nn.Parameter(torch.zeros(leads, K))  # b
        self.head = None
        if head_hidden:
            self.head = nn.Sequential(
                nn.Conv2d(K * C + C, head_hidden, 3, padding=1), nn.GELU(),
                nn.Conv2d(head_hidden, head_hidden, 3, padding=2, dilation=2), nn.GELU(),
                nn.Conv2d(head_hidden, K * C, 1))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def use_scale(self, scale: Any | None) -> None:
        """Set the thresholds' model values ℓ_k by the data's description (`scale`, with
        `to_physical`; None: HKO-7 pixels). `ForecastSystem` calls it when training starts."""
        self.levels.copy_(threshold_values(self.thresholds, scale).to(self.levels))

    def events(self, target: torch.Tensor, scale: Any | None = None) -> torch.Tensor:
        """The events o_k = [R(target) >= t_k] `[B, T, K, C, H, W]` the heads forecast."""
        return exceedance_events(target, self.thresholds, scale)

    def _unclipped(self, x: torch.Tensor, horizon: int,
                   motion: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchor a and the corrected forecast u = g(a + W f) before the clip, each
        `[B, horizon, C, H, W]` (anchor "none": u = f and a = 0)."""
        self.check_input(x, horizon)
        if self.anchor == "none":
            f = self.net(x, horizon)  # [B, horizon, C, H, W]
            return torch.zeros_like(f), f
        m = self.activity_map(x)  # [B, 1, 1, H, W] or None
        a = self.anchor_forecast(x, horizon, motion, m)  # [B, horizon, C, H, W]
        f = self.net(x, horizon, condition=a)  # [B, horizon, C, H, W]
        return a, self.corrected(a, f, m)

    def _heads(self, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Raw logits z `[B, horizon, K, C, H, W]` of the anchor and the unclipped forecast."""
        B, h, C, H, W = u.shape
        K = len(self.thresholds)
        lead = torch.arange(h, device=u.device).clamp(max=self.offset.shape[0] - 1)
        s = self.log_width[lead].exp().view(1, h, K, 1, 1, 1)  # [1, h, K, 1, 1, 1]
        b = self.offset[lead].view(1, h, K, 1, 1, 1)
        z = (u.unsqueeze(2) - self.levels.view(1, 1, K, 1, 1, 1).to(u.dtype)) / s + b
        if self.head is not None:
            soft = 5 * torch.tanh(z / 5)  # bounded features [B, h, K, C, H, W]
            feats = torch.cat([soft.reshape(B * h, K * C, H, W), a.reshape(B * h, C, H, W)], 1)
            z = z + self.head(feats).view(B, h, K, C, H, W)
        return z

    def logits(self, x: torch.Tensor, horizon: int, *, motion: torch.Tensor | None = None,
               calibrated: bool = True) -> torch.Tensor:
        """Logits `[B, horizon, K, C, H, W]` of P(R >= t_k), divided by the fitted temperature
        T_k when `calibrated` (training uses the raw ones)."""
        x = self.cast(x) if x.is_floating_point() else x
        motion = self.cast(motion) if motion is not None and motion.is_floating_point() else motion
        z = self._heads(*self._unclipped(x, horizon, motion))  # [B, horizon, K, C, H, W]
        if calibrated:
            z = z / self.temperature.view(1, 1, -1, 1, 1, 1).to(z.dtype)
        return z

    def probabilities(self, x: torch.Tensor, horizon: int, *,
                      motion: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated exceedance probabilities in [0, 1], `[B, horizon, K, H, W]` for one channel
        (C channels: `[B, horizon, K * C, H, W]`, threshold-major), in the input's dtype."""
        z = self.logits(x, horizon, motion=motion)  # [B, horizon, K, C, H, W]
        return torch.sigmoid(z).flatten(2, 3).to(x.dtype)  # [B, horizon, K*C, H, W]

    def forward(self, x: torch.Tensor, horizon: int,
                motion: torch.Tensor | None = None) -> torch.Tensor:
        """The anchored deterministic forecast `[B, horizon, C, H, W]` (clipped u)."""
        a, u = self._unclipped(x, horizon, motion)
        out = u
        if self.value_range is not None:
            out = _StraightThroughClip.apply(u, *self.value_range)
        if torch.is_grad_enabled():  # every parameter in the graph, no value changed
            out = out + 0.0 * self._heads(a, u).sum()
        return out

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Any], scale: Any | None = None) -> torch.Tensor:
        """Fit the temperatures T_k on `batches` of `(x, y)`, `(x, y, mask)` or dicts with "x",
        "y" (and "mask", "motion"), store them (buffer `temperature`) and return them `[K]`."""
        from convcast.train.evaluate import split_batch

        fit = TemperatureFit(len(self.thresholds))
        for batch in batches:
            x, y, mask = split_batch(batch)
            motion = batch.get("motion") if isinstance(batch, dict) else None
            x, y = x.to(self.levels.device), y.to(self.levels.device)
            motion = None if motion is None else motion.to(self.levels.device)
            z = self.logits(x, y.shape[1], motion=motion, calibrated=False)
            fit.update(z, self.events(y, scale), None if mask is None else mask.to(z.device))
        self.temperature.copy_(fit.compute().to(self.temperature))
        return self.temperature.clone()


class TemperatureCalibration(L.Callback):
    """Fit the exceedance heads' temperatures T_k on each validation run (not the sanity
    check) and store them in the model, so every checkpoint written after it holds them. Costs
    one extra forward per validation batch. Weight averaging (EMAWeightAveraging) swaps and
    averages buffers too, which would blend the fitted T_k away: do not combine the two."""

    def __init__(self) -> None:
        self.fit: TemperatureFit | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, ExceedanceHeads):
            raise ValueError(f"TemperatureCalibration fits exceedance_heads' temperatures; the "
                             f"model is {type(model).__name__}: drop the callback")
        self.fit = TemperatureFit(len(model.thresholds))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        from convcast.train.evaluate import split_batch
        from convcast.train.system import batch_extras

        model = pl_module.model
        x, y, mask = split_batch(batch)
        with torch.no_grad():
            z = model.logits(x, y.shape[1], calibrated=False, **batch_extras(model, batch))
        self.fit.update(z, model.events(y, pl_module.radar_scale()), mask)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.fit is None:
            return
        sums = trainer.strategy.reduce(self.fit.sums.to(pl_module.device), reduce_op="sum")
        self.fit.sums = sums.cpu()
        temperature = self.fit.compute()
        pl_module.model.temperature.copy_(temperature.to(pl_module.model.temperature))
        for k, t in enumerate(pl_module.model.thresholds):
            pl_module.log(f"val/temperature_{t:g}", float(temperature[k]))
