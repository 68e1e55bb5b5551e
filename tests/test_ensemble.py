"""Probabilistic learned nowcasts: the learned ensemble (`anchored_ensemble`), its fair-CRPS
training, and the exceedance-probability heads (`exceedance_heads`)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import FIT_QUIET, cli
from torch.utils.data import DataLoader, TensorDataset

from convcast.metrics import probabilistic as prob
from convcast.models import create_model, model_info
from convcast.models.ensemble import AnchoredEnsemble
from convcast.models.probability import TemperatureFit, threshold_values
from convcast.train import ForecastSystem
from convcast.train.losses import crps, exceedance_bce, fair_crps, rainrate_fair_crps

pytestmark = pytest.mark.usefixtures("one_thread")

T_IN, H, SIZE = 3, 4, 16
ENSEMBLE = model_info("anchored_ensemble").tiny
HEADS = model_info("exceedance_heads").tiny
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _x(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, T_IN, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _motion(b: int = 2) -> torch.Tensor:
    m = torch.empty(b, 2, SIZE, SIZE)
    m[:, 0], m[:, 1] = 0.7, -0.4  # px/step: x then y (pysteps' convention)
    return m


def _perturb(model: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Every weight moved off its initial value, as training would (corrections, noise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# ---- the learned ensemble -----------------------------------------------------------------
NOISE = {"state": {"noise_at": "state"}, "output": {"noise_at": "output"},
         "output+regime": {"noise_at": "output", "regime": True},
         "output+hindcast": {"noise_at": "output", "hindcast_spread": True}}


@pytest.mark.parametrize("noise", NOISE)
@pytest.mark.parametrize("anchor", ["persistence", "optical_flow"])
def test_untrained_members_are_the_anchor_exactly(anchor, noise):
    model = create_model("anchored_ensemble", **ENSEMBLE, anchor=anchor,
                         calibrate_leads=H, **NOISE[noise]).eval()
    x, m = _x(), _motion()
    with torch.no_grad():
        a = model.anchor_forecast(x, H, m)  # [B, H, C, H, W]
        members = model.sample(x, H, members=3, seed=0, motion=m)  # [B, 3, H, C, H, W]
        zero = model(x, H, motion=m)
    assert members.shape == (2, 3, H, 1, SIZE, SIZE)
    assert torch.equal(members, a.unsqueeze(1).expand_as(members))
    assert torch.equal(zero, a)


def test_a_trained_anchored_model_is_every_member_of_its_ensemble():
    anchored = create_model("anchored", base_kwargs=ENSEMBLE["base_kwargs"],
                            anchor="optical_flow").eval()
    _perturb(anchored)
    model = AnchoredEnsemble.from_anchored(anchored, noise_channels=2).eval()
    x, m = _x(), _motion()
    with torch.no_grad():
        want = anchored(x, H, motion=m)
        members = model.sample(x, H, members=4, seed=0, motion=m)
        assert not torch.equal(want, model.anchor_forecast(x, H, m))  # the correction acts
        assert torch.equal(model(x, H, motion=m), want)  # forward: the zero-noise member
    torch.testing.assert_close(members, want.unsqueeze(1).expand_as(members), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="from_anchored needs an `anchored` model"):
        AnchoredEnsemble.from_anchored(create_model("encoder_forecaster"))


@pytest.mark.parametrize("noise_at", ["state", "output"])
def test_frames_the_patches_do_not_divide_are_padded_for_the_base_as_anchored_does(noise_at):
    """A 4-pixel patch on 18x22 frames: the members and the zero-noise member keep the frame's
    size, and untrained noise gives the anchored model of the same weights exactly."""
    kwargs = {"hidden_channels": [4, 4], "kernel_size": 3, "patch_size": 4}
    anchored = create_model("anchored", base_kwargs=kwargs, anchor="optical_flow").eval()
    _perturb(anchored)
    model = AnchoredEnsemble.from_anchored(anchored, noise_channels=2, noise_at=noise_at).eval()
    x = torch.rand(2, T_IN, 1, 18, 22, generator=torch.Generator().manual_seed(4))
    m = torch.zeros(2, 2, 18, 22)
    m[:, 0] = 0.6
    with torch.no_grad():
        want = anchored(x, H, motion=m)  # [2, H, 1, 18, 22]
        members = model.sample(x, H, members=3, seed=0, motion=m)
        torch.testing.assert_close(model(x, H, motion=m), want)
    assert members.shape == (2, 3, H, 1, 18, 22)
    torch.testing.assert_close(members, want.unsqueeze(1).expand_as(members))


@pytest.mark.parametrize("noise_at", ["state", "output"])
def test_injected_noise_spreads_members_and_seeds_reproduce_them(noise_at):
    torch.manual_seed(0)
    model = create_model("anchored_ensemble", **ENSEMBLE, noise_at=noise_at,
                         noise_scale=2).eval()
    _perturb(model)
    x = _x()
    with torch.no_grad():
        s0 = model.sample(x, H, members=5, seed=0)
        again = model.sample(x, H, members=5, generator=torch.Generator().manual_seed(0))
        other = model.sample(x, H, members=5, seed=1)
        short = model.sample(x, 2, members=5, seed=0)
        one = model.sample(x.double(), H, seed=0)
        zero = model(x, H)
    assert s0.shape == (2, 5, H, 1, SIZE, SIZE) and one.shape == (2, 1, H, 1, SIZE, SIZE)
    assert one.dtype == torch.float64
    assert torch.equal(s0, again) and not torch.equal(s0, other)
    assert (s0[:, 0] - s0[:, 1]).abs().max() > 1e-3  # members differ ...
    assert (s0 - zero.unsqueeze(1)).abs().max() > 1e-3  # ... and from the zero-noise member
    assert torch.equal(short, s0[:, :, :2])  # a longer horizon extends a shorter one
    with pytest.raises(ValueError, match="members must be an int >= 1"):
        model.sample(x, H, members=0)
    with pytest.raises(ValueError, match="generator or seed, not both"):
        model.sample(x, H, members=2, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="reads no condition"):
        model.sample(x, H, members=2, condition=torch.rand(2, H, 1, SIZE, SIZE))


def test_the_ensemble_needs_a_recurrent_base_and_a_known_noise():
    with pytest.raises(ValueError, match="no spatial hidden states.*encoder_forecaster"):
        create_model("anchored_ensemble", base="fc_lstm", base_kwargs={"hidden_sizes": (8,)})
    with pytest.raises(ValueError, match="noise_at must be one of state, output, got 'input'"):
        create_model("anchored_ensemble", **ENSEMBLE, noise_at="input")
    with pytest.raises(ValueError, match="give an anchor"):
        create_model("anchored_ensemble", **ENSEMBLE, noise_at="output", anchor="none")


def test_output_noise_is_shared_work_and_a_spread_field_per_member():
    """noise_at="output": members are the one deterministic forecast plus A ⊙ z upsampled; the
    field of a member is the same random field at every lead, scaled by that lead's A."""
    torch.manual_seed(0)
    model = create_model("anchored_ensemble", **ENSEMBLE, noise_at="output", noise_scale=4,
                         value_range=None).eval()
    _perturb(model)
    x = _x()
    calls = []
    decode = model.net.decode
    model.net.decode = lambda *a, **k: calls.append(a[0]["h0"].shape[0]) or decode(*a, **k)
    with torch.no_grad():
        members = model.sample(x, H, members=6, seed=0)  # [2, 6, H, 1, 16, 16]
        zero = model(x, H)
    assert calls[0] == 2  # one decoding of the B inputs, not of B*M states
    spread = members - zero.unsqueeze(1)
    assert spread.abs().max() > 1e-3
    # the field is smooth at the noise scale: 4x4 cells, bilinear: neighbours close
    assert (spread[..., 1:] - spread[..., :-1]).abs().mean() < spread.abs().mean()
    model2 = AnchoredEnsemble.from_anchored(
        create_model("anchored", base_kwargs=ENSEMBLE["base_kwargs"]), noise_channels=2,
        noise_at="output")
    assert model2.amplitude is not None and not model2.inject


def test_regime_maps_let_the_spread_follow_how_fast_the_input_evolves():
    """regime=True: two windows with the same last frame (so the same forecast and anchor) but a
    different frame before it get different spreads; without it, the same spread."""
    x = _x()
    x2 = x.clone()
    x2[:, -2] = x[:, -1] * 0.2  # the field changed fast over the last step
    spreads = {}
    for regime in (False, True):
        model = create_model("anchored_ensemble", **ENSEMBLE, noise_at="output",
                             regime=regime).eval()
        _perturb(model)
        torch.nn.init.zeros_(model.correction.weight)  # the forecast: persistence, both inputs
        torch.nn.init.zeros_(model.correction.bias)
        with torch.no_grad():
            spreads[regime] = [model.sample(v, H, members=4, seed=0) - v[:, -1:].unsqueeze(1)
                               for v in (x, x2)]
        maps = model.regime_maps(x2, x2[:, -1:].expand(-1, H, -1, -1, -1))
        assert maps.shape == (2, 2, SIZE, SIZE)
        torch.testing.assert_close(maps[:, 0], (x2[:, -1] - x2[:, -2]).abs()[:, 0])
    torch.testing.assert_close(spreads[False][0], spreads[False][1])
    assert (spreads[True][0] - spreads[True][1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="regime maps feed the amplitude net of noise_at"):
        create_model("anchored_ensemble", **ENSEMBLE, noise_at="state", regime=True)


def test_hindcast_spread_scales_each_window_by_its_own_one_step_error_over_spread():
    """hindcast_spread=True: the members' departures from the zero-noise member are those of
    the same model without it, times s_b = sqrt(mean error² / mean variance) of a one-step
    hindcast of the last input frame from the frames before it (drawn first, same generator)."""
    x, M = torch.rand(2, 4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5)), 6
    x[1] = x[1] * 0.1  # a calmer window: another error, another factor
    model = create_model("anchored_ensemble", **ENSEMBLE, noise_at="output", value_range=None,
                         hindcast_spread=True).eval()
    _perturb(model, 0.1)
    with torch.no_grad():
        zero = model(x, H)  # [B, H, C, S, S]: the zero-noise member, no hindcast
        scaled = model.sample(x, H, members=M, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(0)
        hind = model.rollout(x[:, :-1], 1, M, g, None, draw=True, hindcast=False)[:, :, 0]
        want = ((hind.mean(1) - x[:, -1]).pow(2).flatten(1).mean(1)
                / hind.var(1).flatten(1).mean(1)).sqrt().clamp(1 / 8, 8)  # [B]
        model.hindcast_spread = False
        plain = model.sample(x, H, members=M, generator=g)  # the same draws after the hindcast
    assert not torch.allclose(want[0], want[1], rtol=0.05)
    torch.testing.assert_close(scaled - zero.unsqueeze(1),
                               want.view(2, 1, 1, 1, 1, 1) * (plain - zero.unsqueeze(1)),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="hindcast_spread scales the amplitude maps"):
        create_model("anchored_ensemble", **ENSEMBLE, noise_at="state", hindcast_spread=True)


# ---- the ensemble losses ------------------------------------------------------------------
def test_crps_losses_equal_the_metrics_on_the_same_arrays():
    g = torch.Generator().manual_seed(3)
    ens = torch.rand(2, 4, 3, 1, 8, 8, generator=g, requires_grad=True)
    obs = torch.rand(2, 3, 1, 8, 8, generator=g)
    mask = torch.rand(2, 3, 1, 8, 8, generator=g) > 0.2
    for loss, metric in ((fair_crps, prob.fair_crps), (crps, prob.crps)):
        for m in (None, mask):
            want = metric(ens.detach(), obs, mask=m, reduction="pooled")
            got = float(loss(ens, obs, m).detach())
            assert got == pytest.approx(float(want), rel=1e-5, abs=1e-7)
    mm_h = prob.fair_crps(*(v.double() for v in (_rate(ens.detach()), _rate(obs))),
                          reduction="pooled")
    assert float(rainrate_fair_crps(ens, obs).detach()) == pytest.approx(float(mm_h), rel=1e-4)
    fair_crps(ens, obs, mask).backward()
    assert torch.isfinite(ens.grad).all() and ens.grad.abs().sum() > 0
    # one member, or a plain forecast: the CRPS, i.e. the MAE
    pred = ens.detach()[:, 0]
    assert float(fair_crps(pred, obs)) == pytest.approx(float((pred - obs).abs().mean()))
    with pytest.raises(ValueError, match=r"members \[B, M, T, C, H, W\]"):
        fair_crps(ens[:, :, :2], obs)


def _rate(v: torch.Tensor) -> torch.Tensor:
    from convcast.data.units import pixel_to_rainrate

    return pixel_to_rainrate(v)


def test_the_fair_crps_prefers_a_spread_ensemble_where_the_crps_does_not():
    """Two members drawn from the truth's law beat two copies of its median under the fair CRPS
    (on average), not under the CRPS, which rewards too little spread."""
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(1, 1, 1, 64, 64, generator=g)
    drawn = torch.rand(1, 2, 1, 1, 64, 64, generator=g)  # the truth's law: U(0, 1)
    median = torch.full_like(drawn, 0.5)
    assert fair_crps(drawn, obs) < fair_crps(median, obs)
    assert crps(drawn, obs) > crps(median, obs)


def test_exceedance_bce_by_hand():
    from convcast.data.units import rainrate_to_pixel

    g = torch.Generator().manual_seed(4)
    y = torch.rand(2, 3, 1, 8, 8, generator=g)
    logits = torch.randn(2, 3, 2, 1, 8, 8, generator=g)
    thr = (0.5, 5.0)
    events = torch.stack([(y >= float(rainrate_to_pixel(torch.tensor(t)))).float()
                          for t in thr], dim=2)
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, events)
    assert float(exceedance_bce(logits, y, thresholds=thr)) == pytest.approx(float(want),
                                                                              rel=1e-5)
    with pytest.raises(ValueError, match=r"logits \[B, T, K=3"):
        exceedance_bce(logits, y)  # two maps for the default three thresholds


# ---- training through ForecastSystem ------------------------------------------------------
def _loader(n: int = 8, t_out: int = H) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(n, T_IN, 1, SIZE, SIZE, generator=g),
                                    torch.rand(n, t_out, 1, SIZE, SIZE, generator=g)),
                      batch_size=4)


def _fit(system: ForecastSystem, steps: int) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
                        val_check_interval=2)
    trainer.fit(system, _loader(), _loader())
    return trainer


@pytest.mark.parametrize("noise", NOISE)
def test_members_differ_after_a_few_fair_crps_steps(noise):
    torch.manual_seed(0)
    noise_at = NOISE[noise]["noise_at"]
    system = ForecastSystem("anchored_ensemble", {**ENSEMBLE, **NOISE[noise]},
                            loss="fair_crps", members=3, lr=0.02)
    x = _x()
    with torch.no_grad():
        before = system.model.sample(x, H, members=3, seed=0)
    assert torch.equal(before[:, 0], before[:, 1])
    trainer = _fit(system, 6)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    model = system.model.eval()
    noise = model.inject.values() if noise_at == "state" else [model.amplitude.net[-1]]
    assert all(bool(c.weight.abs().sum() > 0) for c in noise)
    with torch.no_grad():
        after = model.sample(x, H, members=3, seed=0)
    assert (after[:, 0] - after[:, 1]).abs().max() > 1e-6


def test_the_system_refuses_losses_and_members_that_cannot_train_the_model():
    with pytest.raises(ValueError, match="members >= 2"):
        ForecastSystem("anchored_ensemble", ENSEMBLE, loss="fair_crps", members=1)
    with pytest.raises(ValueError, match="--model.loss fair_crps"):
        ForecastSystem("anchored_ensemble", ENSEMBLE, loss="mse")
    with pytest.raises(ValueError, match="trains with loss exceedance_bce"):
        ForecastSystem("exceedance_heads", HEADS, loss="mse")
    ForecastSystem("anchored", loss="crps")  # a deterministic model: one member (the MAE)


# ---- exceedance heads ----------------------------------------------------------------------
def test_heads_start_at_the_anchors_soft_exceedance_and_stay_in_unit_range():
    model = create_model("exceedance_heads", **HEADS).eval()
    x = _x()
    with torch.no_grad():
        p = model.probabilities(x, H)  # [B, H, K, H, W]
        a = model.anchor_forecast(x, H)[:, :, 0]  # [B, H, H, W]
        forecast = model(x, H)
    assert p.shape == (2, H, 3, SIZE, SIZE) and bool(((p >= 0) & (p <= 1)).all())
    want = torch.sigmoid((a.unsqueeze(2) - model.levels.view(1, 1, 3, 1, 1)) / 0.03)
    torch.testing.assert_close(p, want, atol=1e-5, rtol=0)
    assert torch.equal(forecast, model.anchor_forecast(x, H))  # forward: the anchored forecast


def test_heads_trained_a_few_steps_move_towards_the_event_frequency():
    torch.manual_seed(0)
    model = create_model("exceedance_heads", **HEADS)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, T_IN, 1, SIZE, SIZE, generator=g)
    y = (torch.rand(4, H, 1, SIZE, SIZE, generator=g) < 0.3).float()  # rain (60 dBZ) or none
    with torch.no_grad():
        start = model.probabilities(x, H).mean(dim=(0, 1, 3, 4))  # [K]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        exceedance_bce(model.logits(x, H, calibrated=False), y).backward()
        opt.step()
    with torch.no_grad():
        end = model.probabilities(x, H).mean(dim=(0, 1, 3, 4))
    assert bool(((end - 0.3).abs() < (start - 0.3).abs()).all()), (start, end)
    assert bool(((end - 0.3).abs() < 0.1).all()), end


def test_temperature_scaling_recovers_a_known_temperature_and_is_a_buffer():
    g = torch.Generator().manual_seed(6)
    z = 4 * torch.randn(1, 1, 2, 1, 100, 100, generator=g)  # raw logits, two thresholds
    truth = torch.tensor([2.0, 0.5]).view(1, 1, 2, 1, 1, 1)  # overconfident, underconfident
    events = (torch.rand(z.shape, generator=g) < torch.sigmoid(z / truth)).float()
    fit = TemperatureFit(2)
    fit.update(z[..., :50], events[..., :50])  # streamed in two parts
    fit.update(z[..., 50:], events[..., 50:])
    torch.testing.assert_close(fit.compute(), truth.flatten(), rtol=0.1, atol=0)
    model = create_model("exceedance_heads", **HEADS).eval()
    x, y = _x(), torch.rand(2, H, 1, SIZE, SIZE)
    t = model.calibrate([(x, y)])
    assert t.shape == (3,) and bool((t > 0).all())
    assert torch.equal(model.state_dict()["temperature"], t)  # saved with the weights
    with torch.no_grad():
        torch.testing.assert_close(model.logits(x, H),
                                   model.logits(x, H, calibrated=False) / t.view(1, 1, 3, 1, 1, 1))


def test_threshold_levels_follow_the_datas_description():
    from convcast.data.description import DataDescription, RadarValues
    from convcast.data.units import MARSHALL_PALMER_ZR

    desc = DataDescription(3, 3, 1, (8, 8), radar=RadarValues(
        units="dbz", dbz_range=(0.0, 70.0), zr=MARSHALL_PALMER_ZR))
    levels = threshold_values((0.5, 2.0, 5.0), desc)
    torch.testing.assert_close(desc.to_physical(levels), torch.tensor([0.5, 2.0, 5.0],
                                                                      dtype=torch.float64),
                               rtol=1e-6, atol=0)
    model = create_model("exceedance_heads", **HEADS)
    model.use_scale(desc)
    torch.testing.assert_close(model.levels, levels.float())


# ---- the configs through `convcast fit` ----------------------------------------------------
@pytest.mark.parametrize("name", ["radar-ensemble-cpu-small", "radar-probability-cpu-small"])
def test_the_configs_fit_a_couple_of_steps(name, tmp_path):
    from test_configs import _overrides

    path = CONFIGS / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    small = [a for k, v in {"batch_size": 2, "train_size": 4, "val_size": 2, "test_size": 2,
                            "output_frames": 3}.items()
             for a in (f"--data.init_args.data.init_args.{k}", v)]  # the wrapped radar data
    cli("fit", "--config", path, *FIT_QUIET, "--trainer.max_steps", 2,
        "--trainer.val_check_interval", 2, "--trainer.limit_val_batches", 1,
        "--trainer.num_sanity_val_steps", 0, "--trainer.default_root_dir", tmp_path,
        *_overrides(config, tmp_path), *small)
    last = next(tmp_path.rglob("last.ckpt"))
    system = ForecastSystem.load_from_checkpoint(last)
    model = system.model.eval()
    x = torch.rand(1, 2, 1, 32, 32)
    with torch.no_grad():
        if name == "radar-ensemble-cpu-small":
            assert system.hparams.members == 8 and model.noise_at == "output"
            assert model.sample(x, 2, members=3, seed=0).shape == (1, 3, 2, 1, 32, 32)
        else:  # the temperatures fitted on the validation batch are in the checkpoint
            assert not torch.equal(model.temperature, torch.ones(3))
            p = model.probabilities(x, 2)
            assert p.shape == (1, 2, 3, 32, 32) and bool(((p >= 0) & (p <= 1)).all())
