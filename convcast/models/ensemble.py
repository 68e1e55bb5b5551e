"""A learned ensemble: the anchored forecaster with a noise field per member.

`anchored_ensemble` is `anchored` (a learned correction on top of persistence or optical-flow
extrapolation, `convcast.models.anchored`) whose recurrent base forecaster starts each member's
decoding from a perturbed state. Member m of input b draws a latent Gaussian field

    z_bm ~ N(0, I)   [noise_channels, H/p, W/p]   (the base's internal resolution, patch p),

and the decoder starts from h_i + U_i * z_bm for every hidden state h_i of the encoder's final
state (`h0`, `h1`, ...; z resampled bilinearly where a layer has another resolution), U_i a
`noise_kernel` x `noise_kernel` convolution initialised to zero. The perturbation then evolves
through the recurrence with the forecast, so a member is coherent over its lead times and its
spread can grow with them; the correction W f and the clip are the anchored model's:

    ŷ_bm,k = clip(g_k(a_b,k + W * f_θ(x_b, a_b | h + U z_bm)_k)).

Zero-initialised U: untrained, or trained as a plain `anchored` and loaded with `from_anchored`,
every member equals the anchored forecast exactly, and training with an ensemble score (the fair
CRPS, `ForecastSystem(members=M)`) moves U away from zero only where spread lowers it.

Cost: `sample(x, horizon, members=M)` encodes the input once and computes the anchor (the motion
estimate included) once; only the decoder runs on B·M states, so a member costs one decoding,
not one forward.

Noise after the decoder (`noise_at="output"`), for members that cost almost nothing: the
deterministic forecast u_k (before the clip) is computed once, and member m adds a Gaussian
field whose amplitude maps the forecast itself sets,

    ŷ_bm,k = clip(g_k(u_b,k) + up_s(Σ_j A_j(g_k(u_b,k), a_b,k, k) ⊙ z_bm,j)),
    z_bm ~ N(0, I) [noise_channels, H/s, W/s],

with A a small convolutional net at 1/s of the resolution (`noise_scale` s) whose output layer
starts at zero, z one field per member shared by its lead times (so a member is coherent in
time, its spread set per lead by A), `up_s` bilinear. One more member is one product and one
upsampling per lead time; A, the encoding, the anchor and the decoding are shared. z = 0 (and
an untrained A) is the deterministic forecast exactly. What it cannot do that the state noise
can: move an echo (a perturbed motion), only raise or lower the values where A puts spread.

The spread of a window depends on how fast its rain evolves per step: a pool of 5-, 10- and
15-minute archives at 2 and 4 km holds windows whose lead k means 5k to 15k minutes, and a
convective field changes faster than a stratiform one. `regime=True` also gives A two maps read
off the input, |x_T - x_{T-1}| and |a_1 - x_T| (`regime_maps`: the last step's change and the
anchor's first), so one model can learn a spread per evolution rate instead of one per lead index
averaged over the pool, with no metadata to pass at forecast time.

A spread learned on other archives can be too wide or too narrow for a new one (another step,
pixel size, climate). `hindcast_spread=True` calibrates each window on its own input when
members are drawn: the frames before the last one forecast the last one (a one-step hindcast,
the same members' noise), and the members' spread at every lead is multiplied by

    s_b = sqrt( mean (x_T - mean_m h_bm)² / mean var_m h_bm )   (clipped to [1/8, 8]),

the hindcast's error over its spread, in the model's units, over the window's pixels. It costs
one more motion estimate (from the frames before the last: the hindcast must not see the frame
it forecasts), one more encoding of T_in - 1 frames and a one-step decoding. Training and
validation never use it (`learned_spread`): the net learns its spread on the training pool as
before, and checkpoints are selected by that spread. Validated with it, on 32-pixel crops whose
hindcast is a few hundred pixels of evidence, every trained state of a leave-FMI-out run scored
worse than the untrained model (fair CRPS 0.386 vs 0.347), and the selection kept the latter.
It needs `noise_at="output"`.

Members that differ only in value cannot move an echo, and at long lead times most of the
error is where the rain goes. `vel_pert_method="bps"` (anchor `optical_flow` or `consensus`)
gives each member its own error of the motion, as STEPS does (`convcast.motion.perturb`:
Bowler, Pierce and Seed 2006, pysteps' defaults): member m is moved at lead k by

    D_mk = S_par(k) ε_m,par V/|V| + S_perp(k) ε_m,perp (V/|V|)^⊥,   ε ~ Laplace(0, 1/√2),

S growing with the lead in km and minutes, so it needs the archive's pixel size and step
(`set_grid`, which `convcast.forecast` and the benchmarks call from the data's description;
without them the members are drawn unmoved, with a warning). Like the hindcast it is a setting
of the forecast unless `vel_pert_train=True`: then the members move in training and validation
too, each window in its own grid (the `grid` input `[B, 2]`, km and minutes, which the radar
pool gives every window), and the amplitude net learns the spread the movement leaves.

`forward(x, horizon)` is the zero-noise member (z = 0), i.e. the anchored forecast of the same
weights; it is deterministic and is what `convcast test`, predict and nowcast use.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers.patch import pad_to_multiple
from convcast.models.anchored import Anchored, _StraightThroughClip
from convcast.models.base import check_kernel, check_size
from convcast.models.registry import create_model, register_model
from convcast.motion import perturb

_HIDDEN = re.compile(r"h\d+")
NOISE_AT = ("state", "output")
VEL_PERT = ("bps",)  # motion perturbations of the members (convcast.motion.perturb)


class Amplitude(nn.Module):
    """Amplitude maps A `[B, T, C, J, h, w]` of the J noise channels from the forecast u and the
    anchor a `[B, T, C, H, W]` pooled by s, and the lead time (and, with `regime` channels, maps
    `[B, R, H, W]` shared by the leads): three convolutions, the last zero-initialised (no
    spread at start)."""

    def __init__(self, channels: int, noise_channels: int, kernel: int, hidden: int = 16,
                 regime: int = 0) -> None:
        super().__init__()
        self.channels, self.noise_channels, self.regime = channels, noise_channels, regime
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels + 1 + regime, hidden, kernel, padding=pad), nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel, padding=2 * pad, dilation=2), nn.GELU(),
            nn.Conv2d(hidden, channels * noise_channels, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, u: torch.Tensor, a: torch.Tensor, scale: int,
                regime: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C, H, W = u.shape
        pool = [F.avg_pool2d(v.reshape(B * T, C, H, W), scale, ceil_mode=True) for v in (u, a)]
        h, w = pool[0].shape[-2:]
        lead = torch.arange(1, T + 1, device=u.device, dtype=u.dtype) / 12  # 1 at lead 12
        lead = lead.view(1, T, 1, 1, 1).expand(B, T, 1, h, w).reshape(B * T, 1, h, w)
        if self.regime:  # the same maps for every lead: [B*T, R, h, w]
            r = F.avg_pool2d(regime.to(u.dtype), scale, ceil_mode=True)  # [B, R, h, w]
            pool.append(r.unsqueeze(1).expand(B, T, *r.shape[1:]).reshape(B * T, -1, h, w))
        amp = self.net(torch.cat([*pool, lead], 1))  # [B*T, C*J, h, w]
        return amp.view(B, T, C, self.noise_channels, h, w)


@contextmanager
def learned_spread(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with its forecast-time settings of the spread off (`hindcast_spread`,
    `vel_pert_method`) for the duration: what training validates (module docstring); any other
    model unchanged."""
    keys = ()
    if isinstance(model, AnchoredEnsemble):  # motion perturbations trained with stay on
        keys = ("hindcast_spread",) + (() if model.vel_pert_train else ("vel_pert_method",))
    saved = {k: getattr(model, k) for k in keys}
    try:
        for k in saved:
            setattr(model, k, None if k == "vel_pert_method" else False)
        yield model
    finally:
        for k, v in saved.items():
            setattr(model, k, v)


def _hidden_channels(net: nn.Module, in_channels: int) -> dict[str, int]:
    """`{key: channels}` of the hidden states `h0, h1, ...` that `net.encode` returns, found by
    encoding one small blank frame."""
    name = type(net).__name__
    if not (callable(getattr(net, "encode", None)) and callable(getattr(net, "decode", None))):
        raise ValueError(f"anchored_ensemble: the base {name} has no encode/decode, so members "
                         "cannot share one encoding; use a recurrent base such as "
                         "encoder_forecaster")
    side = 8 * getattr(net, "patch_size", 1)
    try:
        with torch.no_grad():
            state = net.encode(torch.zeros(1, 1, in_channels, side, side))
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"anchored_ensemble: could not read the state of the base {name} "
                         f"from a {side}x{side} frame ({err}); use encoder_forecaster") from None
    keys = sorted((k for k in state if _HIDDEN.fullmatch(k)), key=lambda k: int(k[1:]))
    if not keys or any(state[k].dim() != 4 for k in keys):
        raise ValueError(f"anchored_ensemble: the state of the base {name} has no spatial hidden "
                         f"states h0, h1, ... [B, C, H, W] (it has "
                         f"{ {k: tuple(v.shape) for k, v in state.items()} }) for the noise "
                         "fields; use a convolutional recurrent base such as encoder_forecaster")
    return {k: int(state[k].shape[1]) for k in keys}


@register_model("anchored_ensemble", inputs=("motion", "grid", "anchor"), ensemble=True,
                export=(),
                export_note="its members are drawn from a random generator and its optical-flow "
                "anchor is computed by pysteps outside torch; export a deterministic base model "
                "instead",
                tiny={"base_kwargs": {"hidden_channels": [4, 4], "kernel_size": 3,
                                      "patch_size": 2}, "noise_channels": 2})
class AnchoredEnsemble(Anchored):
    """`anchored` with a zero-initialised noise injection per member (see the module docstring).

    Args:
        in_channels, base, base_kwargs, anchor, value_range, motion_frames, method,
            method_kwargs, outval, motion_hidden, calibrate_leads, anchor_kwargs: as
            `anchored`'s (the `anchor` input too: the anchor's forecast computed outside); the
            base must be recurrent (`encode`/`decode` with hidden states `h0, h1, ...`).
        noise_channels: channels of the latent noise field z of each member.
        noise_kernel: kernel size of the convolutions U_i that add z to the hidden states (and
            of the amplitude net A).
        noise_at: "state" (z perturbs the decoder's initial state: a decoding per member) or
            "output" (z scaled by amplitude maps is added to the decoded forecast: one decoding).
        noise_scale: the pixels of the frame per cell of z with `noise_at="output"` (its
            correlation length).
        regime: with `noise_at="output"`, the amplitude net also reads how fast the input
            evolves (`regime_maps`), so the spread can follow the archive's step and the rain's
            regime; False (default): the forecast, the anchor and the lead index only.
        hindcast_spread: with `noise_at="output"`, scale each window's spread in `sample` by
            the error/spread ratio of a one-step hindcast on its own input (module docstring).
        vel_pert_method: "bps" to move each member by its own motion error in `sample` (anchor
            `optical_flow` or `consensus`; module docstring), None (default) for none.
        vel_pert_kwargs: `p_par`, `p_perp` of the BPS standard deviations (default pysteps').
        kmperpixel, timestep: the frames' pixel size (km) and step (minutes) for
            `vel_pert_method` (or `set_grid` later, per archive; a `grid` input `[B, 2]`, as
            the radar pool gives each window, overrides them per window).
        vel_pert_train: move the members in training and validation too, so that the amplitude
            net learns the spread the motion perturbations leave (needs the `grid` input);
            False (default): a setting of the forecast only.
    """

    gated = False  # its forward is its own: no validated gate

    def __init__(self, in_channels: int = 1, base: str = "encoder_forecaster",
                 base_kwargs: dict | None = None, anchor: str = "persistence",
                 value_range: Sequence[float] | None = (0.0, 1.0), motion_frames: int = 3,
                 method: str = "lucaskanade", method_kwargs: dict | None = None,
                 outval: float | str = "min", motion_hidden: int = 0, calibrate_leads: int = 0,
                 noise_channels: int = 8, noise_kernel: int = 3, noise_at: str = "state",
                 noise_scale: int = 4, regime: bool = False,
                 hindcast_spread: bool = False, vel_pert_method: str | None = None,
                 vel_pert_kwargs: dict | None = None, kmperpixel: float | None = None,
                 timestep: float | None = None, vel_pert_train: bool = False,
                 anchor_kwargs: dict | None = None) -> None:
        super().__init__(in_channels=in_channels, base=base, base_kwargs=base_kwargs,
                         anchor=anchor, value_range=value_range, motion_frames=motion_frames,
                         method=method, method_kwargs=method_kwargs, outval=outval,
                         motion_hidden=motion_hidden, calibrate_leads=calibrate_leads,
                         anchor_kwargs=anchor_kwargs)
        self.noise_channels = check_size("anchored_ensemble", "noise_channels", noise_channels)
        check_kernel("anchored_ensemble", noise_kernel)
        if noise_at not in NOISE_AT:
            raise ValueError(f"anchored_ensemble: noise_at must be one of {', '.join(NOISE_AT)}, "
                             f"got {noise_at!r}")
        self.noise_at = noise_at
        self.noise_scale = check_size("anchored_ensemble", "noise_scale", noise_scale)
        hidden = _hidden_channels(self.net, in_channels)
        self.inject = nn.ModuleDict()
        self.amplitude = None
        if noise_at == "output":
            if self.anchor == "none":
                raise ValueError("anchored_ensemble: noise_at='output' sets its spread from the "
                                 "forecast and the anchor; give an anchor (persistence, "
                                 "optical_flow or consensus) or noise_at='state'")
            self.amplitude = Amplitude(in_channels, noise_channels, noise_kernel,
                                       regime=2 * in_channels if regime else 0)
            hidden = {}
        elif regime:
            raise ValueError("anchored_ensemble: regime maps feed the amplitude net of "
                             "noise_at='output'; set noise_at='output' or regime=false")
        self.regime = bool(regime)
        if hindcast_spread and noise_at != "output":
            raise ValueError("anchored_ensemble: hindcast_spread scales the amplitude maps of "
                             "noise_at='output'; set noise_at='output' or hindcast_spread=false")
        self.hindcast_spread = bool(hindcast_spread)
        if vel_pert_method is not None and vel_pert_method not in VEL_PERT:
            raise ValueError(f"anchored_ensemble: vel_pert_method must be None or one of "
                             f"{', '.join(VEL_PERT)}, got {vel_pert_method!r}")
        if vel_pert_method is not None and self.anchor not in ("optical_flow", "consensus"):
            raise ValueError(f"anchored_ensemble: vel_pert_method perturbs the motion of an "
                             f"advected anchor (optical_flow, consensus); anchor "
                             f"{self.anchor!r} has none")
        kw = dict(vel_pert_kwargs or {})
        if set(kw) - {"p_par", "p_perp"}:
            raise ValueError(f"anchored_ensemble: vel_pert_kwargs takes p_par and p_perp, got "
                             f"{sorted(kw)}")
        self.vel_pert_method, self.vel_pert_kwargs = vel_pert_method, kw
        if vel_pert_train and vel_pert_method is None:
            raise ValueError("anchored_ensemble: vel_pert_train trains with the motion "
                             "perturbations of vel_pert_method; set vel_pert_method='bps'")
        self.vel_pert_train = bool(vel_pert_train)
        self.grid: tuple[float, float] | None = None
        if kmperpixel is not None or timestep is not None:
            self.set_grid(kmperpixel=kmperpixel, timestep=timestep)
        for key, channels in hidden.items():
            conv = nn.Conv2d(noise_channels, channels, noise_kernel, padding=noise_kernel // 2,
                             bias=False)
            nn.init.zeros_(conv.weight)  # untrained: every member is the anchored forecast
            self.inject[key] = conv

    @classmethod
    def from_anchored(cls, anchored: Anchored, *, noise_channels: int = 8,
                      noise_kernel: int = 3, noise_at: str = "state",
                      noise_scale: int = 4, regime: bool = False) -> AnchoredEnsemble:
        """An ensemble whose every member is the (trained) `anchored` model's forecast: its
        configuration and weights, and zero noise injections, to fine-tune with the fair CRPS."""
        spec = getattr(anchored, "model_spec", None)
        if not isinstance(anchored, Anchored) or not spec or spec.get("name") != "anchored":
            raise ValueError("from_anchored needs an `anchored` model built by "
                             "create_model('anchored', ...) (or loaded from its checkpoint), "
                             f"got {type(anchored).__name__}")
        model = create_model("anchored_ensemble", **spec["kwargs"],
                             noise_channels=noise_channels, noise_kernel=noise_kernel,
                             noise_at=noise_at, noise_scale=noise_scale, regime=regime)
        missing, unexpected = model.load_state_dict(anchored.state_dict(), strict=False)
        if unexpected or any(not k.startswith(("inject.", "amplitude.")) for k in missing):
            raise ValueError(f"from_anchored: the weights do not fit (missing {missing}, "
                             f"unexpected {unexpected})")
        return model.to(next(anchored.parameters()).device)

    def set_grid(self, *, kmperpixel: float | None, timestep: float | None) -> None:
        """The frames' pixel size (km) and step (minutes), which the motion perturbations
        (`vel_pert_method`) are measured in; None for either keeps the grid as it was."""
        if kmperpixel is None or timestep is None:
            return
        perturb.bps_sums(1, kmperpixel=kmperpixel, timestep=timestep)  # checks both
        self.grid = (float(kmperpixel), float(timestep))

    def forward(self, x: torch.Tensor, horizon: int, motion: torch.Tensor | None = None,
                grid: torch.Tensor | None = None,
                anchor: torch.Tensor | None = None) -> torch.Tensor:
        """The zero-noise member `[B, horizon, C, H, W]` (the anchored forecast of these weights),
        computed through the injection with z = 0 (so its weights get a zero gradient); `grid`
        moves members only, not this one."""
        return self.rollout(x, horizon, 1, None, motion, anchor=anchor)[:, 0]

    def sample(self, x: torch.Tensor, horizon: int, members: int = 1, *,
               generator: torch.Generator | None = None, seed: int | None = None,
               **inputs: torch.Tensor | None) -> torch.Tensor:
        """`members` members `[B, members, horizon, C, H, W]`, each with its own noise field.

        `generator` (or `seed`, which makes one) draws the noise: the same seed gives the same
        members; neither uses torch's global generator. Every member is random (the zero-noise
        member is `forward`). Inputs are cast to the model's dtype and the members come back in
        the input's, as for `model(x, horizon)`.
        """
        check_size("anchored_ensemble", "members", members)
        if seed is not None:
            if generator is not None:
                raise ValueError("anchored_ensemble.sample: give generator or seed, not both")
            generator = torch.Generator().manual_seed(seed)
        inputs = self._read_inputs(dict(inputs))
        motion, grid = inputs.get("motion"), self.window_grid(inputs.get("grid"), x.shape[0])
        if motion is not None and motion.is_floating_point():
            motion = self.cast(motion)
        anchor = inputs.get("anchor")
        anchor = None if anchor is None else self.cast(anchor)
        xc = self.cast(x) if x.is_floating_point() else x
        moved = self.vel_pert_method is not None and (self.vel_pert_train or not self.training)
        if moved and grid is None:
            warnings.warn("anchored_ensemble: vel_pert_method='bps' is in km and minutes, and "
                          "this model does not know the frames' pixel size and step: members "
                          "drawn without motion perturbations; call "
                          "model.set_grid(kmperpixel=..., timestep=...)", stacklevel=2)
            moved = False
        if moved and motion is None:  # estimated once: the anchor and the perturbations
            from convcast.motion import batch_motion

            motion = batch_motion(xc, self.motion_frames, self.method, self.method_kwargs)
        out = self.rollout(xc, horizon, members, generator, motion, draw=True, anchor=anchor)
        if moved:
            out = self.perturb_motion(out, motion, generator, grid)
        return out.to(x.dtype)  # [B, M, horizon, C, H, W]

    def window_grid(self, grid: torch.Tensor | None, batch: int
                    ) -> list[tuple[float, float] | None] | None:
        """Each window's (km, minutes): the `grid` input `[B, 2]` (NaN: unknown, no movement),
        else the model's `set_grid` for all; None where neither says."""
        if grid is None:
            return None if self.grid is None else [self.grid] * batch
        if grid.shape != (batch, 2):
            raise ValueError(f"anchored_ensemble: grid must be [B, 2] = [{batch}, 2] (each "
                             f"window's pixel size in km and step in minutes), got "
                             f"{tuple(grid.shape)}")
        return [None if not (km > 0 and step > 0) else (km, step)
                for km, step in grid.detach().double().cpu().tolist()]

    def perturb_motion(self, members: torch.Tensor, motion: torch.Tensor,
                       generator: torch.Generator | None,
                       grid: list[tuple[float, float] | None]) -> torch.Tensor:
        """`members` `[B, M, K, C, H, W]` each moved by its own BPS motion error along
        `motion` `[B, 2, H, W]` (module docstring), drawn with `generator`, in each window's
        `grid` (km, minutes; None: that window's members unmoved)."""
        B, M, K, C, H, W = members.shape
        sums = torch.stack([torch.zeros(K, 2, dtype=torch.float64) if g is None else
                            perturb.bps_sums(K, kmperpixel=g[0], timestep=g[1],
                                             **self.vel_pert_kwargs)
                            for g in grid], 1)  # [K, B, 2] pixels per unit ε
        eps = perturb.laplace((B, M, 2), generator, device=members.device)  # [B, M, 2]
        eps = eps.to(members.device)  # drawn where the generator lives
        par, perp = perturb.directions(motion.to(members.device, members.dtype))
        out = torch.empty_like(members)
        for k in range(K):
            d = perturb.bps_displacement(par, perp, eps, sums[k])
            out[:, :, k] = perturb.shift(members[:, :, k].flatten(0, 1), d.flatten(0, 1),
                                         self.outval).view(B, M, C, H, W)
        return out

    def rollout(self, x: torch.Tensor, horizon: int, members: int,
                generator: torch.Generator | None, motion: torch.Tensor | None, *,
                draw: bool = False, hindcast: bool = True,
                anchor: torch.Tensor | None = None) -> torch.Tensor:
        """`members` forecasts `[B, M, horizon, C, H, W]` from one encoding and one anchor (the
        `anchor` forecast where given); the noise is drawn with `generator` when `draw`, else
        zero (`hindcast`: the spread calibrated by `hindcast_scale` where the model asks)."""
        self.check_input(x, horizon)
        B, M = x.shape[0], members
        state = self.net.encode(self._to_net(x))  # one encoding, shared by the members
        m = None if self.anchor == "none" else self.activity_map(x)  # [B, 1, 1, H, W] or None
        a = None if self.anchor == "none" else self.anchor_forecast(x, horizon, motion, m,
                                                                    anchor)
        if self.amplitude is not None:
            regime = self.regime_maps(x, a) if self.regime and draw else None
            scale = (self.hindcast_scale(x, members, generator)
                     if draw and hindcast and self.hindcast_spread and not self.training
                     else None)
            return self._output_noise(state, a, horizon, members, generator, draw,
                                      activity=m, regime=regime, scale=scale)
        state = {k: v.repeat_interleave(M, dim=0) for k, v in state.items()}  # [B*M, ...]
        first = state[next(iter(self.inject))]  # [B*M, hid_0, h, w]
        shape = (B * M, self.noise_channels, *first.shape[-2:])
        if draw:
            device = generator.device if generator is not None else x.device
            z = torch.randn(shape, generator=generator, device=device, dtype=first.dtype)
            z = z.to(first.device)  # [B*M, Cz, h, w]
        else:
            z = first.new_zeros(shape)  # [B*M, Cz, h, w]
        for key, conv in self.inject.items():
            s = state[key]  # [B*M, hid_i, h_i, w_i]
            zi = z if s.shape[-2:] == z.shape[-2:] else F.interpolate(
                z, size=s.shape[-2:], mode="bilinear", align_corners=False)
            state[key] = s + conv(zi)
        cond = None if a is None else a.repeat_interleave(M, dim=0)  # [B*M, horizon, C, H, W]
        f = self._from_net(self.net.decode(state, horizon, self._to_net(cond)), x)
        if a is None:
            return f.view(B, M, *f.shape[1:])  # the base alone, as anchored's anchor="none"
        m = None if m is None else m.repeat_interleave(M, dim=0)  # [B*M, 1, 1, H, W]
        return self._clip(self.corrected(cond, f, m)).view(B, M, *f.shape[1:])

    def hindcast_scale(self, x: torch.Tensor, members: int,
                       generator: torch.Generator | None) -> torch.Tensor | None:
        """The spread factor s_b `[B]` of each window (module docstring): the last input frame
        forecast by `members` members from the frames before it (their own motion: a field
        estimated with the last frame would already know where its echoes went), its error over
        its spread. None where the input is too short to hindcast."""
        past = x[:, :-1]  # [B, T_in - 1, C, H, W]
        needs = {"optical_flow": self.motion_frames,
                 "consensus": getattr(self.anchor_model, "window", 1)}.get(self.anchor, 1)
        if past.shape[1] < needs:
            return None
        with torch.no_grad():  # a calibration of the spread, not a path for gradients
            h = self.rollout(past, 1, max(members, 2), generator, None, draw=True,
                             hindcast=False)[:, :, 0]  # [B, M, C, H, W]
        spread = h.var(1, unbiased=True).flatten(1).mean(1)  # [B]
        error = (h.mean(1) - x[:, -1]).pow(2).flatten(1).mean(1)  # [B]
        s = (error / spread.clamp(min=1e-12)).sqrt().clamp(1 / 8, 8)
        return torch.where(spread > 0, s, torch.ones_like(s))  # no spread yet: nothing to scale

    def _to_net(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """Frames `[N, T, C, H, W]` padded for the base's patches (as its own call pads them:
        the base is driven here through encode/decode); the anchor stays on the true frame."""
        m = self.net.size_multiple
        return t if t is None or m == 1 else pad_to_multiple(t, m)

    @staticmethod
    def _from_net(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The base's output cropped back to the frame of `like`: `[N, T, C, H, W]`."""
        return f[..., :like.shape[-2], :like.shape[-1]]

    @staticmethod
    def regime_maps(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """How fast this window's field evolves, `[B, 2C, H, W]`: the last step's change
        |x_T - x_{T-1}| and the anchor's first step |a_1 - x_T| (their difference is what
        extrapolation did not explain). Read off the input, so it tells a 15-minute step from a
        5-minute one, and convective from stratiform rain, with no metadata."""
        last = x[:, -1].detach()  # [B, C, H, W]
        before = x[:, -2].detach() if x.shape[1] > 1 else last
        return torch.cat([(last - before).abs(), (a[:, 0].detach() - last).abs()], 1)

    def _clip(self, out: torch.Tensor) -> torch.Tensor:
        """Forecasts clipped to `value_range` (straight-through), any shape."""
        if self.value_range is not None:
            out = _StraightThroughClip.apply(out, *self.value_range)
        return out

    def _output_noise(self, state: dict, a: torch.Tensor, horizon: int, members: int,
                      generator: torch.Generator | None, draw: bool,
                      activity: torch.Tensor | None = None,
                      regime: torch.Tensor | None = None,
                      scale: torch.Tensor | None = None) -> torch.Tensor:
        """`noise_at="output"`: one decoding u (its intensity map applied), then
        u + up_s(Σ_j s A_j ⊙ z_j) per member (s: `scale` `[B]`, 1 without), clipped:
        `[B, M, horizon, C, H, W]`."""
        f = self._from_net(self.net.decode(state, horizon, self._to_net(a)), a)
        B, _, C, H, W = f.shape  # f: [B, horizon, C, H, W]
        M = members
        u = self.corrected(a, f, activity)  # its intensity map applied once, not per member
        out = u.unsqueeze(1).expand(B, M, horizon, C, H, W)  # z = 0: every member is u
        if draw:
            amp = self.amplitude(u, a, self.noise_scale, regime)  # [B, horizon, C, J, h, w]
            if scale is not None:
                amp = amp * scale.to(amp.dtype).view(B, 1, 1, 1, 1, 1)
            shape = (B, M, self.noise_channels, *amp.shape[-2:])
            device = generator.device if generator is not None else u.device
            z = torch.randn(shape, generator=generator, device=device, dtype=u.dtype)
            field = torch.einsum("btcjhw,bmjhw->bmtchw", amp, z.to(u.device))  # [B,M,T,C,h,w]
            field = F.interpolate(field.reshape(B * M * horizon, C, *amp.shape[-2:]),
                                  size=(H, W), mode="bilinear", align_corners=False)
            out = out + field.view(B, M, horizon, C, H, W)
        return self._clip(out).contiguous()  # [B, M, horizon, C, H, W]
