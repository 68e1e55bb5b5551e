"""Motion perturbations (`convcast.motion.perturb`, BPS as pysteps draws them) and the learned
ensemble's members moved by them (`anchored_ensemble(vel_pert_method="bps")`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convcast.models import create_model, model_info
from convcast.motion import perturb

pytestmark = pytest.mark.usefixtures("one_thread")
ENSEMBLE = model_info("anchored_ensemble").tiny
SIZE, K = 24, 6


def test_bps_sums_are_pysteps_generate_bps_summed_over_the_steps():
    """S(k) ε equals the sum over steps of pysteps' `generate_bps` (its ε, its unit vectors)."""
    noise_motion = pytest.importorskip("pysteps.noise.motion")
    V = np.zeros((2, 8, 9))
    V[0], V[1] = 1.5, -2.0  # px/step
    km, step = 2.0, 10.0
    p = noise_motion.initialize_bps(V, 1 / km, step, seed=3)
    want = sum(noise_motion.generate_bps(p, (i + 1) * step) for i in range(K))  # [2, 8, 9]
    sums = perturb.bps_sums(K, kmperpixel=km, timestep=step)  # [K, 2]
    par, perp = perturb.directions(torch.from_numpy(V)[None])
    eps = torch.tensor([[[p["eps_par"], p["eps_perp"]]]], dtype=torch.float64)
    got = perturb.bps_displacement(par, perp, eps, sums[-1])[0, 0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (sums[1:] > sums[:-1]).all()  # the displacement grows with the lead


def test_laplace_draws_have_unit_variance_and_a_seed():
    g = torch.Generator().manual_seed(0)
    e = perturb.laplace((200_000,), g)
    assert abs(e.mean()) < 0.01 and abs(e.var() - 1) < 0.02
    assert abs(e.abs().mean() - 2 ** -0.5) < 0.01  # Laplace(0, b): E|e| = b = 1/sqrt(2)
    again = perturb.laplace((200_000,), torch.Generator().manual_seed(0))
    assert torch.equal(e, again)


def test_shift_moves_a_field_by_whole_pixels_and_fills_from_outside():
    f = torch.rand(1, 1, 10, 12, dtype=torch.float64)
    d = torch.zeros(1, 2, 10, 12, dtype=torch.float64)
    d[:, 0], d[:, 1] = 2.0, -1.0  # x + 2 px, y - 1 px
    out = perturb.shift(f, d, outval=-1.0)
    torch.testing.assert_close(out[0, 0, :-1, 2:], f[0, 0, 1:, :-2])
    assert (out[0, 0, :, :2] == -1).all() and (out[0, 0, -1] == -1).all()


def _window(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A blob moving 1 px per step to the right, and that motion."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    frames = [torch.exp(-((xx - 6 - t) ** 2 + (yy - 12) ** 2) / 8.0) for t in range(3)]
    x = torch.stack(frames)[None, :, None].float()  # [1, 3, 1, S, S]
    motion = torch.zeros(1, 2, SIZE, SIZE)
    motion[:, 0] = 1.0
    return x, motion


def test_untrained_members_are_the_anchor_moved_by_their_own_motion_error():
    """Untrained, every member is the anchored forecast; with BPS each one is that forecast
    shifted by S(k) ε along and across the motion, ε drawn after the value noise."""
    model = create_model("anchored_ensemble", **ENSEMBLE, anchor="optical_flow",
                         noise_at="output", vel_pert_method="bps", kmperpixel=1.0,
                         timestep=15.0).eval()
    x, motion = _window()
    with torch.no_grad():
        zero = model(x, K, motion=motion)  # [1, K, 1, S, S]
        ens = model.sample(x, K, members=4, seed=5, motion=motion)  # [1, 4, K, 1, S, S]
        g = torch.Generator().manual_seed(5)
        model.vel_pert_method = None
        plain = model.sample(x, K, members=4, generator=g, motion=motion)
    torch.testing.assert_close(plain, zero.unsqueeze(1).expand_as(plain))  # untrained: no noise
    eps = perturb.laplace((1, 4, 2), g)  # the draws that follow the members' noise
    sums = perturb.bps_sums(K, kmperpixel=1.0, timestep=15.0)
    for k in range(K):
        shifted = perturb.shift(zero[:, k].double().expand(4, -1, -1, -1),
                                (sums[k, 0] * eps[0, :, 0]).view(4, 1, 1, 1)
                                * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).double()
                                + (sums[k, 1] * eps[0, :, 1]).view(4, 1, 1, 1)
                                * torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).double()
                                * torch.ones(1, 1, SIZE, SIZE, dtype=torch.float64))
        torch.testing.assert_close(ens[0, :, k], shifted.float(), atol=1e-5, rtol=0)
    spread = ens.var(1).flatten(2).mean(2)[0]  # [K]
    assert spread[-1] > spread[0] > 0  # the members part more with the lead


def test_without_the_grid_members_are_drawn_unmoved_with_a_warning():
    model = create_model("anchored_ensemble", **ENSEMBLE, anchor="optical_flow",
                         noise_at="output", vel_pert_method="bps").eval()
    x, motion = _window()
    with torch.no_grad(), pytest.warns(UserWarning, match="set_grid"):
        moved = model.sample(x, K, members=3, seed=1, motion=motion)
    model.vel_pert_method = None
    with torch.no_grad():
        torch.testing.assert_close(moved, model.sample(x, K, members=3, seed=1, motion=motion))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"anchor": "persistence", "vel_pert_method": "bps"}, "has none"),
    ({"anchor": "optical_flow", "vel_pert_method": "gaussian"}, "vel_pert_method must be"),
    ({"anchor": "optical_flow", "vel_pert_method": "bps", "vel_pert_kwargs": {"p": 1}},
     "takes p_par and p_perp"),
    ({"anchor": "optical_flow", "vel_pert_method": "bps", "kmperpixel": 0, "timestep": 5},
     "must be positive"),
])
def test_bad_motion_perturbation_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("anchored_ensemble", **ENSEMBLE, noise_at="output", **kwargs)


def test_models_that_measure_in_km_and_minutes_get_the_data_grid():
    """`set_grids` gives STEPS and the learned ensemble the description's pixel size (its
    georeference after crop and block-averaging) and step; without a grid nothing changes."""
    from convcast.data.description import DataDescription, RadarValues
    from convcast.data.radar.geo import Grid
    from convcast.train.evaluate import set_grids

    grid = Grid(projection="+proj=stere +lat_0=90 +lon_0=25 +lat_ts=60 +ellps=WGS84", x1=0.0,
                y1=0.0, x2=760e3, y2=1226e3, xpixelsize=1000.0, ypixelsize=1000.0,
                shape=(1226, 760))
    rv = RadarValues("mm", zr=(200.0, 1.6), crop=(0, 0, 1224, 760), downsample=4,
                     accutime=5.0, grid=grid)
    d = DataDescription(5, 12, 1, (306, 190), radar=rv, step_minutes=10.0)
    assert d.pixel_km == pytest.approx(4.0)
    steps = create_model("steps", members=2)
    ens = create_model("anchored_ensemble", **ENSEMBLE, anchor="optical_flow",
                       noise_at="output", vel_pert_method="bps")
    sprog = create_model("sprog")
    set_grids([steps, ens, sprog], DataDescription(5, 12, 1, (306, 190)))  # no grid: unchanged
    assert (steps.kmperpixel, steps.timestep, ens.grid) == (2.0, 5.0, None)
    set_grids([steps, ens, sprog], d)
    assert (steps.kmperpixel, steps.timestep) == pytest.approx((4.0, 10.0))
    assert ens.grid == pytest.approx((4.0, 10.0))


def test_validation_scores_the_learned_spread_without_forecast_time_settings():
    """The system validates (and selects checkpoints by) the spread the net learned: the
    hindcast factor and the motion perturbations are off there, and back on afterwards."""
    from convcast.train import ForecastSystem

    system = ForecastSystem("anchored_ensemble", {
        **ENSEMBLE, "anchor": "optical_flow", "noise_at": "output", "hindcast_spread": True,
        "vel_pert_method": "bps", "kmperpixel": 1.0, "timestep": 15.0},
        loss="fair_crps", members=3).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in system.model.amplitude.parameters():  # a spread to scale and move
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        x, motion = _window()
        validated = system.scored_forecast(x, K, {"motion": motion}, seed=4)
        forecast = system.model.sample(x, K, members=3, seed=4, motion=motion)
        system.model.hindcast_spread, system.model.vel_pert_method = False, None
        learned = system.model.sample(x, K, members=3, seed=4, motion=motion)
    torch.testing.assert_close(validated, learned)
    assert not torch.allclose(forecast, learned)


def test_trained_with_the_motion_perturbations_each_window_moves_in_its_own_grid():
    """vel_pert_train: the members move in training too (the amplitude net learns what is
    left), each window by its own `grid` input (km, minutes; NaN: unmoved); validation keeps
    them, as the spread was learned with them."""
    from convcast.models.ensemble import learned_spread

    model = create_model("anchored_ensemble", **ENSEMBLE, anchor="optical_flow",
                         noise_at="output", vel_pert_method="bps", vel_pert_train=True).train()
    x, motion = _window()
    x, motion = x.expand(2, -1, -1, -1, -1), motion.expand(2, -1, -1, -1)
    grid = torch.tensor([[1.0, 15.0], [float("nan"), 5.0]])
    members = model.sample(x, K, members=3, seed=2, motion=motion, grid=grid)
    zero = model(x, K, motion=motion)
    assert not torch.allclose(members[0], zero[0].unsqueeze(0).expand_as(members[0]))
    torch.testing.assert_close(members[1], zero[1].unsqueeze(0).expand_as(members[1]))
    assert members.requires_grad  # the loss reaches the net through the moved members
    with learned_spread(model):
        assert model.vel_pert_method == "bps"
    with pytest.raises(ValueError, match="grid must be"):
        model.sample(x, K, members=2, motion=motion, grid=torch.ones(3))
    with pytest.raises(ValueError, match="set vel_pert_method"):
        create_model("anchored_ensemble", **ENSEMBLE, anchor="optical_flow",
                     noise_at="output", vel_pert_train=True)


def test_the_radar_pool_gives_each_window_its_pixel_size_and_step():
    """A pool item carries `grid` (km, minutes at its stride), NaN where the archive has no
    georeference, so one batch can mix archives."""
    from convcast.data.radar import pool

    rng = np.random.default_rng(0)
    frames = rng.random((12, 1, 16, 16)).astype(np.float32)
    sets = [pool._Frames(archive=None, downsample=1, frames=frames, starts=[(0, 2)],
                         pixel_km=2.0, step_minutes=5.0),
            pool._Frames(archive=None, downsample=1, frames=frames, starts=[(0, 1)],
                         pixel_km=None, step_minutes=15.0)]
    ds = pool.RadarPool(sets, input_frames=3, output_frames=2, size=8, length=40, min_wet=0.0)
    grids = {tuple(ds[i]["grid"].tolist()) for i in range(40)}
    assert (2.0, 10.0) in grids and any(np.isnan(g[0]) and g[1] == 15.0 for g in grids)
