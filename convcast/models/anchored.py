"""Anchored forecasters: a learned correction on top of a baseline forecast.

A trained model that cannot beat persistence or optical-flow extrapolation is of little use, yet
a network trained from scratch first spends its budget relearning what they give for free (the
static background of a video, the advection of a radar echo). `anchored` starts from the
baseline instead: for lead time k,

    ŷ_k = clip(g_k(a_k + W * f_θ(x, a)_k)),   a_k = the anchor's forecast (persistence or flow),

where f_θ is any registered learned forecaster, built with `condition_channels = C` so that the
step producing frame k reads a_k beside its usual input, and W is a 1×1 convolution initialised
to zero (g_k is the identity unless an intensity map is learned, below). An untrained anchored
model IS its baseline, exactly, and training moves away from it only where that lowers the
loss. The inner forecaster's output activation is set to `identity` (a correction is signed);
no other knowledge of the inner model is needed.

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
(`convcast.motion.advect`). Training batches carry it, computed in DataLoader workers
(`convcast.data.motion.MotionDataModule`); without it the model estimates it itself (pysteps
Lucas-Kanade on the last `motion_frames` frames, as the `optical_flow` baseline), so evaluation,
`convcast test --compare`, predict and nowcast work unchanged. `anchor="none"` is the inner model
alone (the un-anchored reference, trained the same way).

Consensus (anchor `consensus`): the mean in rain rate of pysteps' S-PROG and ANVIL nowcasts (the
`consensus` baseline, `anchor_kwargs` its arguments), a better start on real radar than plain
extrapolation (higher CSI at every threshold on five events, a lower rainfall MSE on three,
benchmarks/RESULTS.md). pysteps'
cascades need the whole field, not a training crop: `forward(x, horizon, anchor=a)` takes the
anchor's forecast `a [B, horizon, C, H, W]` computed outside (the radar pool computes it on each
whole window and crops it with the frames, `RadarPool(anchor="consensus")`); without it the
model computes it itself, on the field it is given.

Learned motion (`motion_hidden > 0`, anchor `optical_flow`): the extrapolation is only as good as
its motion, and Lucas-Kanade on a few small frames is often off by a third of the speed (on the
synthetic radar of `convcast.data.synthetic`: 0.13 px/step mean error for 0.40 px/step speeds;
advecting with the true flow instead raises CSI@0.5 by 0.04 and lowers rainfall MSE by 12%). A
small convolutional net reads the last `motion_frames` frames and the first-guess motion and adds
a smooth correction, computed at 1/4 resolution and upsampled, its last layer zero at start:

    V' = V_LK + g_φ(x, V_LK),    a_k = advect(x_T, V', k),

trained through the differentiable advection by the same loss, so a motion error is corrected
where it lowers the loss (rather than painted over by the additive correction, which can only
trade hits against misses). On that synthetic radar it did not learn to: 3 CPU-minutes of it
alone left the mean motion error at 0.133 px/step (benchmarks/RESULTS.md).

Intensity map per lead time (`calibrate_leads = N`): before the clip, the sum passes through
`LeadCalibration` (g_k above), a monotone piecewise-linear map of the value range per lead,
identity at start, so the forecast's peaks can shrink with the lead time (what a squared error
in rain rate asks for) while the values near the CSI thresholds stay where the correction put
them.

No change in, no correction out (`activity = τ > 0`): where the last input frames did not change,
the forecast should not either, yet a correction network has biases and paints its habits on a
static background or a black screen it never saw (a trained video correction brightened a clip's
final black frames by 0.03 of the range: MSE 4.1 where persistence is exact). The activity map

    m = 1 - exp(-(s / τ)²),   s = maxpool_r(max_t |x_t - x_{t-1}|)   (last `motion_frames`),

0 where nothing changed within `activity_radius` pixels and 1 where the change exceeds τ, scales
both the correction, a_k + m ⊙ W f_k, and the anchor's motion, V ⊙ m (a static camera's
background stays put where Lucas-Kanade's interpolated flow would smear it). Off by default
(radar, where the change between frames is the signal everywhere it rains).

A validated gate per lead time (`gate`, fitted after training): a model trained on a short clip
can be right at lead 1 and overconfident at lead 10. The gate shrinks the forecast towards the
anchor, lead by lead,

    ŷ'_k = a_k + γ_k (ŷ_k - a_k),   γ_k = clip(Σ (y - a_k)(ŷ_k - a_k) / Σ (ŷ_k - a_k)², 0, 1),

the γ_k that minimises the squared error on held-out windows (`fit_gate`; `Checkpoint(gate=True)`
fits it on the validation windows for the best checkpoint when training ends). γ_k = 0 is the
anchor at that lead, γ_k = 1 the forecast unchanged; a convex blend of two values in the range
stays in it. The gate is a buffer saved with the weights, empty (no gate) until fitted;
checkpoints written before it existed load without one. `gate_reference="persistence"` shrinks
towards the last input frame instead of the anchor (r_k = x_T in place of a_k): a flow-anchored
model, trained or not, then falls back lead by lead to persistence wherever extrapolation itself
does worse on the held-out windows (a static camera whose flow estimate moves the background).

The gated forecast's error follows from the fit's sums, SSE_k(γ) = Σ(y - r)² - 2γ Σ(y - r)(ŷ - r)
+ γ² Σ(ŷ - r)² (`GateFit.mse`), so every validation pass of `ForecastSystem` logs what each state
would score once gated (`val/gated_mse`) beside the reference alone (`val/reference_mse`), and a
run can select its best checkpoint by it (`checkpoint.monitor: val/gated_mse`). A γ fitted on a
few windows is optimistic there: with a margin (`fit_gate(margin=)`, the checkpoint's
`anchor_margin`), the reference itself (γ = 0 at every lead) is kept unless the gated forecast
beats it by that fraction — persistence is then a candidate like any checkpoint.

The squared error asks for blur where the future is uncertain: a correction trained on a short clip
can lower a lead's MSE below persistence's while its SSIM falls below persistence's, the frame's
structure smeared. `gate_ssim=True` fits the gate under a second condition: among the gates whose
SSIM on the validation windows is at least the reference's (γ = 0), the one of least squared
error; the SSIM is measured at γ = 0, 0.1, ..., 1 in the same pass (`GateFit(ssim_grid=)`), the
least-squares γ_k kept where the gates on both sides of it keep the SSIM, else the best of those
grid gates. For frames in [0, 1] without masks (video).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.models.base import Forecaster, check_size
from convcast.models.registry import create_model, is_baseline, model_info, register_model
from convcast.motion.advect import advect, check_outval

ANCHORS = ("persistence", "optical_flow", "consensus", "none")
GATE_REFERENCES = ("anchor", "persistence")  # what the validated gate shrinks towards


class MotionCorrection(nn.Module):
    """A smooth motion increment `[B, 2, H, W]` from frames and a first-guess motion, zero at
    start: two stride-2 convolutions (1/4 resolution, where motion is smooth), a dilated one for
    context, a zero-initialised 1x1 output, bilinear upsampling back to the frame."""

    def __init__(self, in_channels: int, hidden: int = 32) -> None:
        super().__init__()
        layers = [
            nn.Conv2d(in_channels + 2, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2), nn.GELU(),
            nn.Conv2d(hidden, 2, 1)]
        self.net = nn.Sequential(*layers)  # keys net.0 ... net.8, as saved weights have them
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, frames: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = frames.shape
        inp = torch.cat([frames.reshape(B, T * C, H, W), motion.to(frames.dtype)], 1)
        d = self.net(inp)  # [B, 2, ~H/4, ~W/4] px/step
        return F.interpolate(d, size=(H, W), mode="bilinear", align_corners=False)  # [B, 2, H, W]


class LeadCalibration(nn.Module):
    """A piecewise-linear intensity map per lead time, identity at start:

        g_k(v) = v + Σ_j δ_kj · clamp(v - v_j, 0, v_{j+1} - v_j),   knots v_j even in the range,

    so δ_kj changes the slope of segment j at lead k (slopes kept >= 0: the map stays monotone).
    What it is for: under growing position uncertainty the forecast that minimises a squared
    error in rain rate shaves the peaks (a few pixels at 50 dBZ dominate it), while a CSI at
    0.5-5 mm/h needs the values around those thresholds kept; a per-lead map of the upper
    segments does the first without touching the second, learned from a dozen values per lead
    rather than from every pixel's correction. Leads beyond `leads` use the last one's map."""

    def __init__(self, leads: int, low: float, high: float, segments: int = 12) -> None:
        super().__init__()
        self.register_buffer("knots", torch.linspace(low, high, segments + 1), persistent=False)
        self.delta = nn.Parameter(torch.zeros(leads, segments))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = v.shape
        idx = torch.arange(T, device=v.device).clamp(max=self.delta.shape[0] - 1)
        delta = self.delta[idx].clamp(min=-1.0).to(v.dtype)  # [T, S], slope 1 + δ >= 0
        lo, width = self.knots[:-1].to(v.dtype), self.knots.diff().to(v.dtype)  # [S] each
        pieces = (v.unsqueeze(-1) - lo).clamp(min=0).minimum(width)  # [B, T, C, H, W, S]
        return v + (pieces * delta.view(1, T, 1, 1, 1, -1)).sum(-1)  # [B, T, C, H, W]


SSIM_GATES = 11  # gates 0, 0.1, ..., 1 at which `gate_ssim` measures the SSIM


class GateFit:
    """The per-lead sums of the gate's least-squares fit, streamed over batches:
    `num_k = Σ (y - r)(ŷ - r)`, `den_k = Σ (ŷ - r)²`, `ref_k = Σ (y - r)²` (r: what the gate
    shrinks towards; masked pixels left out) and `n_k`, the frames seen; plain sums, so
    processes add them (DDP). The gated forecast's squared error follows from them exactly,
    `SSE_k(γ) = ref_k - 2 γ num_k + γ² den_k`, so a validation pass scores the gated model
    without a second pass over the windows.

    With `ssim_grid=G` (G >= 2) the sums also hold, per lead, the SSIM of the gated forecast at
    G gates evenly spaced over [0, 1] (frames in [0, `data_range`]), and `compute` keeps each
    lead's SSIM at least the reference's: the squared error's least-squares γ_k shrinks a
    blurred correction less than its loss of structure asks (module docstring)."""

    def __init__(self, ssim_grid: int = 0, data_range: float = 1.0) -> None:
        if ssim_grid == 1 or ssim_grid < 0:
            raise ValueError(f"GateFit: ssim_grid must be 0 (no SSIM) or at least 2 gates over "
                             f"[0, 1], got {ssim_grid}")
        self.grid = torch.linspace(0.0, 1.0, ssim_grid, dtype=torch.float64)  # [G]
        self.data_range = float(data_range)
        self.sums = torch.zeros(4 + ssim_grid, 0, dtype=torch.float64)  # [4 + G, leads]

    def update(self, anchor: torch.Tensor, forecast: torch.Tensor, target: torch.Tensor,
               mask: torch.Tensor | None = None) -> None:
        """Add one batch, each `[B, T, C, H, W]` (mask broadcastable to it); `anchor` is the
        reference r the gate shrinks towards."""
        a, d = anchor.detach().double(), (forecast - anchor).detach().double()
        r = target.double() - a
        w = torch.ones_like(d) if mask is None else mask.double().expand_as(d)
        dims = [0, *range(2, d.dim())]
        n = torch.full((d.shape[1],), float(d.shape[0]), dtype=torch.float64)
        sums = [(r * d * w).sum(dims).cpu(), (d * d * w).sum(dims).cpu(),
                (r * r * w).sum(dims).cpu(), n]  # 4 x [T]
        if len(self.grid):
            if mask is not None:
                raise ValueError("GateFit: the SSIM-keeping gate (ssim_grid, the model's "
                                 "gate_ssim) needs whole frames, and these windows come with a "
                                 "mask of missing pixels; turn gate_ssim off for masked data")
            from convcast.metrics.frame import ssim_frames

            G, (B, T) = len(self.grid), d.shape[:2]
            gated = a + self.grid.to(d.device).view(G, 1, 1, 1, 1, 1) * d  # [G, B, T, C, H, W]
            y = target.detach().double().expand_as(gated)
            ssim = ssim_frames(gated.flatten(0, 1), y.flatten(0, 1), self.data_range)  # [G*B, T]
            sums += list(ssim.view(G, B, T).sum(1).cpu())  # G x [T]
        sums = torch.stack(sums)  # [4 + G, T]
        if sums.shape[1] > self.sums.shape[1]:
            self.sums = F.pad(self.sums, (0, sums.shape[1] - self.sums.shape[1]))
        self.sums[:, :sums.shape[1]] += sums

    def compute(self, margin: float | None = None) -> torch.Tensor:
        """γ `[leads]` (float32) in [0, 1]; 1 where the forecast never left the reference.
        With `margin`, γ = 0 at every lead (the reference itself) unless the gated forecast's
        MSE beats the reference's by that fraction on these windows: a fit on a few windows is
        optimistic about the windows it was fitted on. With an SSIM grid, γ_k is the gate of
        least squared error among those whose SSIM is at least the reference's (γ = 0): the
        grid's gates, and the least-squares γ_k where the two gates around it both are."""
        num, den, _, _ = self.sums[:4]
        gate = torch.where(den > 0, num / den.clamp(min=1e-300), torch.ones_like(num))
        gate = gate.clamp(0.0, 1.0)
        if len(self.grid) and self.sums.shape[1]:
            gate = self._keep_ssim(gate)
        if margin is not None and self.mse(gate) >= (1.0 - margin) * self.mse(0.0):
            gate = torch.zeros_like(gate)
        return gate.float()

    def _keep_ssim(self, gate: torch.Tensor) -> torch.Tensor:
        """The least-squares `gate` `[T]` restricted, lead by lead, to gates whose SSIM is at
        least the reference's."""
        num, den, ref, _ = self.sums[:4]
        ssim = self.sums[4:]  # [G, T], sums over frames: same count per lead
        ok = ssim >= ssim[:1] - 1e-9 * ssim[:1].abs()  # [G, T]; the reference (γ = 0) is ok
        G = len(self.grid)
        upper = torch.searchsorted(self.grid, gate.contiguous()).clamp(1, G - 1)  # [T]
        between = ok.gather(0, upper[None]) & ok.gather(0, (upper - 1)[None])  # [1, T]
        # the least-squares gate first: it wins ties (a forecast that never left the reference)
        candidates = torch.cat([gate[None], self.grid[:, None].expand_as(ssim)])  # [1 + G, T]
        sse = ref - 2 * candidates * num + candidates ** 2 * den
        sse = sse.masked_fill(~torch.cat([between, ok]), float("inf"))
        return candidates.gather(0, sse.argmin(0)[None])[0]

    def ssim(self) -> torch.Tensor | None:
        """Mean SSIM per gate of the grid and lead `[G, leads]`, or None without a grid."""
        if not len(self.grid):
            return None
        return self.sums[4:] / self.sums[3].clamp(min=1)

    def mse(self, gate: torch.Tensor | float) -> float:
        """Per-frame MSE (squared error summed over a frame's pixels, mean over frames) of the
        forecast gated by `gate` (`[leads]` or one value; 0: the reference, 1: ungated)."""
        num, den, ref, n = self.sums[:4]
        gate = torch.as_tensor(gate, dtype=torch.float64)
        return float((ref - 2 * gate * num + gate ** 2 * den).sum() / n.sum().clamp(min=1))


class _StraightThroughClip(torch.autograd.Function):
    """clamp(v, lo, hi) forward, identity backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return v.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


@register_model("anchored", inputs=("motion", "anchor"), export=(),
                export_note="its optical-flow anchor is computed by pysteps outside torch and its "
                "advection samples with grid_sample; export the base model instead",
                tiny={"base_kwargs": {"hidden_channels": [4, 4], "kernel_size": 3,
                                      "patch_size": 2}})
class Anchored(Forecaster):
    """A registered learned forecaster trained as a correction on top of a baseline.

    Args:
        in_channels: channels of the frames.
        base / base_kwargs: the inner forecaster, `create_model(base, **base_kwargs)` (any
            learned model or variant; `condition_channels` and `in_channels` are set here).
        anchor: `persistence`, `optical_flow`, `consensus` (S-PROG and ANVIL) or `none` (the
            inner model alone).
        value_range: (low, high) the forecast is clipped to, or None.
        motion_frames / method / method_kwargs: the motion estimate when no `motion` is given
            (as the `optical_flow` baseline's: pysteps Lucas-Kanade on the last 3 frames).
        outval: value advected in from outside the frame ("min": the last frame's minimum;
            "edge": the frame's edge values continued, for camera video).
        motion_hidden: channels of the learned motion correction (`MotionCorrection`, anchor
            `optical_flow` only); 0 (default) advects with the estimated motion as it is.
        calibrate_leads: learn an intensity map per lead time for this many leads
            (`LeadCalibration`, over `value_range`); 0 (default): none.
        gate_reference: what the gate shrinks towards: `anchor` (default) or `persistence`.
        gate_ssim: fit the gate so that each lead's SSIM on the validation windows stays at
            least the reference's (`GateFit(ssim_grid=)`; frames in [0, 1], unmasked: video).
        anchor_kwargs: arguments of the `consensus` anchor (e.g. `{"power": 2.0}`).
        activity / activity_radius: τ of the activity map (module docstring), in the data's
            units (video in [0, 1]: 0.02); 0 (default): none. The radius (pixels) is how far a
            change reaches (how far anything moves over the horizon).

    Buffer `gate` `[leads]`: the validated gate γ_k (module docstring), empty until `fit_gate`;
    leads beyond it use its last value.
    """

    gated: bool = True  # forward applies `gate` (variants with their own forward: False)

    def __init__(self, in_channels: int = 1, base: str = "encoder_forecaster",
                 base_kwargs: dict | None = None, anchor: str = "persistence",
                 value_range: Sequence[float] | None = (0.0, 1.0), motion_frames: int = 3,
                 method: str = "lucaskanade", method_kwargs: dict | None = None,
                 outval: float | str = "min", motion_hidden: int = 0,
                 calibrate_leads: int = 0, activity: float = 0.0,
                 activity_radius: int = 4, gate_reference: str = "anchor",
                 anchor_kwargs: dict | None = None, gate_ssim: bool = False) -> None:
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
            from convcast.motion import check_method

            check_method(method, motion_frames)
        check_outval("anchored", outval)
        self.in_channels, self.anchor, self.value_range = in_channels, anchor, value_range
        if anchor_kwargs and anchor != "consensus":
            raise ValueError(f"anchored: anchor_kwargs set the consensus anchor's arguments; "
                             f"anchor {anchor!r} takes none (use anchor='consensus' or leave "
                             "anchor_kwargs out)")
        self.anchor_model = (create_model("consensus", in_channels=in_channels,
                                          **(anchor_kwargs or {}))
                             if anchor == "consensus" else None)
        self.motion_frames, self.method = motion_frames, method
        self.method_kwargs, self.outval = dict(method_kwargs or {}), outval
        check_size("anchored", "motion_hidden", motion_hidden, minimum=0)  # 0: none
        if motion_hidden and anchor != "optical_flow":
            raise ValueError(f"anchored: motion_hidden={motion_hidden} corrects the motion of the "
                             f"optical_flow anchor; anchor {anchor!r} has none (use "
                             "anchor='optical_flow' or motion_hidden=0)")
        self.motion_net = (MotionCorrection(motion_frames * in_channels, motion_hidden)
                           if motion_hidden else None)
        if not (isinstance(activity, (int, float)) and activity >= 0):
            raise ValueError(f"anchored: activity must be a number >= 0 (the change, in data "
                             f"units, that counts as activity; 0: no activity map), got "
                             f"{activity!r}")
        check_size("anchored", "activity_radius", activity_radius, minimum=0)
        if activity and anchor == "none":
            raise ValueError("anchored: activity scales the correction of an anchor; anchor "
                             "'none' has none (give an anchor or activity=0)")
        self.activity, self.activity_radius = float(activity), activity_radius
        if gate_reference not in GATE_REFERENCES:
            raise ValueError(f"anchored: gate_reference must be one of "
                             f"{', '.join(GATE_REFERENCES)}, got {gate_reference!r}")
        self.gate_reference = gate_reference
        if not isinstance(gate_ssim, bool):
            raise ValueError(f"anchored: gate_ssim must be true or false (keep each lead's "
                             f"validation SSIM at least the gate reference's), got {gate_ssim!r}")
        self.gate_ssim = gate_ssim
        check_size("anchored", "calibrate_leads", calibrate_leads, minimum=0)  # 0: none
        if calibrate_leads and (anchor == "none" or value_range is None):
            raise ValueError("anchored: calibrate_leads maps values over value_range on top of an "
                             "anchor; give value_range=(low, high) and an anchor, or "
                             "calibrate_leads=0")
        self.calibration = (LeadCalibration(calibrate_leads, *value_range)
                            if calibrate_leads else None)
        kwargs["in_channels"] = in_channels
        if anchor != "none":
            kwargs["condition_channels"] = in_channels
            if "output_activation" in model_info(base).arguments:
                kwargs.setdefault("output_activation", "identity")  # a correction is signed
        self.net = create_model(base, **kwargs)
        self.correction = None
        self.register_buffer("gate", torch.ones(0))  # γ_k [leads]; empty: no gate
        if anchor != "none":
            self.correction = nn.Conv2d(in_channels, in_channels, kernel_size=1)
            nn.init.zeros_(self.correction.weight)
            nn.init.zeros_(self.correction.bias)

    def activity_map(self, x: torch.Tensor) -> torch.Tensor | None:
        """m `[B, 1, 1, H, W]` in [0, 1] (module docstring) from the input `[B, T, C, H, W]`;
        None without an activity map (or with a single input frame: no change to see)."""
        if not self.activity or x.shape[1] < 2:
            return None
        k = min(self.motion_frames, x.shape[1])
        recent = x.detach()[:, -k:]  # [B, k, C, H, W]
        change = (recent[:, 1:] - recent[:, :-1]).abs().amax(dim=(1, 2))  # [B, H, W]
        r = self.activity_radius
        reach = F.max_pool2d(change.unsqueeze(1), 2 * r + 1, stride=1, padding=r)  # [B,1,H,W]
        m = 1 - torch.exp(-(reach / self.activity) ** 2)  # [B, 1, H, W]
        return m.unsqueeze(1)  # [B, 1, 1, H, W]

    def anchor_forecast(self, x: torch.Tensor, horizon: int,
                        motion: torch.Tensor | None = None,
                        activity: torch.Tensor | None = None,
                        anchor: torch.Tensor | None = None) -> torch.Tensor:
        """The baseline's forecast `[B, horizon, C, H, W]` (`anchor` where the caller computed
        it), its motion corrected first where a motion correction is learned (the only gradient
        it passes: the data are detached) and held still where the input did not change (the
        activity map: `activity` where the caller has it, else computed)."""
        x = x.detach()
        if anchor is not None:
            want = (x.shape[0], horizon, *x.shape[2:])
            if tuple(anchor.shape) != want:
                raise ValueError(f"anchored: anchor must be the {self.anchor} forecast "
                                 f"[B, horizon, C, H, W] = {list(want)} for input "
                                 f"{tuple(x.shape)}, got {tuple(anchor.shape)}")
            return anchor.detach().to(x.device, x.dtype)
        if self.anchor == "persistence":
            return x[:, -1:].expand(-1, horizon, -1, -1, -1)  # [B, horizon, C, H, W]
        if self.anchor_model is not None:
            return self.anchor_model(x, horizon)  # [B, horizon, C, H, W]
        if motion is None:
            from convcast.motion import batch_motion

            motion = batch_motion(x, self.motion_frames, self.method, self.method_kwargs)
        B, _, _, H, W = x.shape
        if motion.shape != (B, 2, H, W):
            raise ValueError(f"anchored: motion must be [B, 2, H, W] = [{B}, 2, {H}, {W}] for "
                             f"input {tuple(x.shape)}, got {tuple(motion.shape)}")
        if self.motion_net is not None:
            if x.shape[1] < self.motion_frames:
                raise ValueError(f"anchored: the learned motion correction reads the last "
                                 f"{self.motion_frames} frames, got an input of {x.shape[1]}; "
                                 f"give at least {self.motion_frames} input frames")
            motion = motion.to(x.dtype)  # [B, 2, H, W]
            motion = motion + self.motion_net(x[:, -self.motion_frames:], motion)  # [B, 2, H, W]
        m = self.activity_map(x) if activity is None else activity
        if m is not None:
            motion = motion.to(x.device, x.dtype) * m[:, 0]  # [B, 2, H, W]: still where static
        return advect(x[:, -1], motion.to(x.device), horizon, self.outval)  # [B, h, C, H, W]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # weights saved before the gate existed hold none (no gate); a fitted one has its size
        key = prefix + "gate"
        state_dict.setdefault(key, torch.ones(0))
        if state_dict[key].shape != self.gate.shape:
            self.gate = torch.ones_like(state_dict[key], device=self.gate.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: torch.Tensor, horizon: int, motion: torch.Tensor | None = None,
                anchor: torch.Tensor | None = None) -> torch.Tensor:
        a, out = self.forward_parts(x, horizon, motion, anchor)
        if self.gate.numel() == 0:
            return out
        return self.apply_gate(self.reference(x, a), out)

    def apply_gate(self, r: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """r + γ_k (ŷ - r) from the reference r and the ungated forecast ŷ, each
        `[B, horizon, C, H, W]` (ŷ itself while no gate is fitted)."""
        if self.gate.numel() == 0:
            return out
        horizon = out.shape[1]
        lead = torch.arange(horizon, device=out.device).clamp(max=self.gate.numel() - 1)
        gate = self.gate[lead].to(out.dtype).view(1, horizon, 1, 1, 1)
        return r + gate * (out - r)  # [B, horizon, C, H, W]

    def reference(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """What the gate shrinks towards `[B, horizon, C, H, W]`: the anchor's forecast a, or
        the last input frame (`gate_reference="persistence"`)."""
        if self.gate_reference == "anchor":
            return a
        return x[:, -1:].to(a.dtype).expand_as(a)

    @property
    def gate_moves_untrained(self) -> bool:
        """Whether a gate changes the untrained model (shrinking towards persistence what is
        not persistence), so a run whose untrained model won still fits one."""
        return self.gate_reference == "persistence" and self.anchor != "persistence"

    def new_gate_fit(self) -> GateFit:
        """An empty `GateFit` for this model's gate (with the SSIM grid where `gate_ssim`)."""
        return GateFit(ssim_grid=SSIM_GATES if self.gate_ssim else 0)

    @torch.no_grad()
    def gate_sums(self, batches: Iterable[Any], *,
                  to_data: Callable[[torch.Tensor], torch.Tensor] | None = None) -> GateFit:
        """The gate's sums (`GateFit`) over `batches` of `(x, y)`, `(x, y, mask)` or dicts with
        "x", "y" (and "mask", "motion"); `to_data` maps model values to data values first (the
        γ of an affine map is the same; its `GateFit.mse` is then in data values)."""
        from convcast.train.evaluate import split_batch

        fit, device = self.new_gate_fit(), self.gate.device
        for batch in batches:
            x, y, mask = split_batch(batch)
            extra = {k: batch.get(k) if isinstance(batch, dict) else None
                     for k in ("motion", "anchor")}
            motion, anchor = (None if v is None else v.to(device) for v in extra.values())
            self.gate_step(fit, x.to(device), y.to(device),
                           None if mask is None else mask.to(device), motion, to_data=to_data,
                           anchor=anchor)
        return fit

    def gate_step(self, fit: GateFit, x: torch.Tensor, y: torch.Tensor,
                  mask: torch.Tensor | None = None, motion: torch.Tensor | None = None, *,
                  to_data: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Add one batch (`y` `[B, T, C, H, W]`, optional mask) to the gate's sums `fit` (in data
        values with `to_data`) and return the forecast as `forward` gives it: one pass for
        both."""
        a, out = self.forward_parts(x, y.shape[1], motion, anchor)  # [B, T, C, H, W] each
        r = self.reference(x, a)
        data = to_data if to_data is not None else (lambda v: v)
        fit.update(data(r), data(out), data(y), mask)
        return self.apply_gate(r, out)  # [B, T, C, H, W]

    def fit_gate(self, batches: Iterable[Any], *,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 margin: float | None = None) -> torch.Tensor:
        """Fit the gate γ_k on `batches` (as `gate_sums`), store it (buffer `gate`) and return
        it `[leads]`. `reduce` adds the sums of the other processes (DDP) before the fit;
        `margin`: the reference alone (γ = 0) unless the gated forecast beats it by that
        fraction (`GateFit.compute`)."""
        fit = self.gate_sums(batches)
        if reduce is not None:
            fit.sums = reduce(fit.sums)
        self.gate = fit.compute(margin).to(self.gate.device)
        return self.gate.clone()

    def forward_parts(self, x: torch.Tensor, horizon: int, motion: torch.Tensor | None = None,
                      anchor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchor's forecast a and the ungated forecast ŷ, each `[B, horizon, C, H, W]`
        (anchor "none": a is the forecast itself)."""
        self.check_input(x, horizon)
        if self.anchor == "none":
            out = self.net(x, horizon)  # [B, horizon, C, H, W]
            return out, out
        m = self.activity_map(x)  # [B, 1, 1, H, W] or None
        a = self.anchor_forecast(x, horizon, motion, m, anchor)  # [B, horizon, C, H, W]
        f = self.net(x, horizon, condition=a)  # [B, horizon, C, H, W]
        out = self.corrected(a, f, m)  # [B, horizon, C, H, W]
        if self.value_range is not None:
            out = _StraightThroughClip.apply(out, *self.value_range)
        return a, out

    def corrected(self, a: torch.Tensor, f: torch.Tensor,
                  activity: torch.Tensor | None = None) -> torch.Tensor:
        """u = g(a + m ⊙ W f) before the clip, from the anchor a and the inner model's output f,
        each `[N, horizon, C, H, W]` (g: the intensity map per lead, where one is learned; m:
        the activity map `[N, 1, 1, H, W]`, where one is given)."""
        N, T, C, H, W = f.shape
        delta = self.correction(f.reshape(N * T, C, H, W)).view(N, T, C, H, W)
        u = a + (delta if activity is None else activity * delta)
        return u if self.calibration is None else self.calibration(u)
