"""The consensus baseline: the power mean in rain rate of pysteps' own S-PROG and ANVIL calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pysteps_nowcasts import (
    SIZE,
    anvil_pysteps,
    moving_rain,
    radar_pixels,
    run,
    sprog_db_pysteps,
    sprog_pysteps,
    to_rainrate,
)

from convcast.models import create_model, model_info

pytestmark = pytest.mark.usefixtures("one_thread")


def rain_close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal rain rates up to the float32 round trip of the pixels (and its rounding at the
    0.1 mm/h threshold)."""
    assert got.shape == want.shape and want.max() > 1.0  # a forecast with rain in it
    both = (got > 0) & (want > 0)
    assert both.mean() > 0.2 and (both == ((got > 0) | (want > 0))).mean() > 0.999
    np.testing.assert_allclose(got[both], want[both], rtol=2e-4)


@pytest.mark.parametrize("source", ["synthetic", "fmi"])
def test_consensus_is_the_mean_rain_rate_of_pysteps_sprog_and_anvil(source):
    pixels = moving_rain() if source == "synthetic" else radar_pixels()
    model = create_model("consensus")
    mean = (to_rainrate(sprog_pysteps(pixels)) + to_rainrate(anvil_pysteps(pixels))) / 2
    rain_close(to_rainrate(run(model, pixels)), np.where(mean >= 0.1, mean, 0.0))
    flow = create_model("optical_flow")
    flow(torch.from_numpy(pixels).float()[None, :, None], 1)
    np.testing.assert_array_equal(model.last_velocity, flow.last_velocity)
    assert model.window == 4  # ANVIL reads ar_order + 2 frames


def test_power_and_weights():
    pixels = moving_rain()
    s, a = to_rainrate(sprog_pysteps(pixels)), to_rainrate(anvil_pysteps(pixels))
    p2 = to_rainrate(run(create_model("consensus", power=2.0), pixels))
    want = np.sqrt((s ** 2 + a ** 2) / 2)
    rain_close(p2, np.where(want >= 0.1, want, 0.0))
    mean = to_rainrate(run(create_model("consensus"), pixels))
    wet = mean > 1
    assert (p2[wet] >= mean[wet] * (1 - 1e-4)).all()  # leans towards the wetter member
    assert (p2[wet] <= np.maximum(s, a)[wet] * (1 + 1e-4)).all()
    only_sprog = create_model("consensus", weights=[1.0, 0.0])
    rain_close(to_rainrate(run(only_sprog, pixels)), s)


def test_rain_rate_inputs_build_members_for_rain_rates():
    rain = to_rainrate(moving_rain()).astype(np.float32).astype(np.float64)  # mm/h
    model = create_model("consensus", transform="none")
    assert model.members["sprog"].transform == "db" and model.members["anvil"].transform == "none"
    anvil = create_model("anvil", transform="none")
    want = (sprog_db_pysteps(rain) + run(anvil, rain)) / 2
    rain_close(run(model, rain), np.where(want >= 0.1, want, 0.0))


def test_members_and_their_arguments():
    model = create_model("consensus", members=["optical_flow", "anvil"],
                         member_kwargs={"anvil": {"ar_window_radius": 10}}, dbz_range=(0, 70))
    assert list(model.members) == ["optical_flow", "anvil"]
    assert model.members["anvil"].ar_window_radius == 10
    assert model.members["anvil"].dbz_range == (0.0, 70.0)  # reads the consensus' pixels
    assert model_info("consensus").baseline


@pytest.mark.parametrize("kwargs, match", [
    ({"members": ["sprog"]}, "at least two different"),
    ({"members": ["sprog", "sprog"]}, "at least two different"),
    ({"members": ["sprog", "steps"]}, "unknown member 'steps'"),
    ({"weights": [1.0]}, "1 weights for 2 members"),
    ({"weights": [1.0, -1.0]}, "weights must be >= 0"),
    ({"power": 0.5}, "power must be >= 1"),
    ({"transform": "db"}, "unknown transform"),
    ({"dbz_range": (60, -10)}, "low < high"),
    ({"member_kwargs": {"optical_flow": {}}}, "not members"),
])
def test_bad_arguments_say_what_and_how(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("consensus", **kwargs)


def test_an_untrained_model_anchored_on_the_consensus_is_the_consensus():
    pixels = moving_rain()
    x = torch.from_numpy(pixels).float()[None, :, None]
    small = {"base_kwargs": {"hidden_channels": [4], "kernel_size": 3, "patch_size": 2},
             "anchor_kwargs": {"member_kwargs": {"anvil": {"ar_order": 1}}}}
    model = create_model("anchored", anchor="consensus", **small).eval()
    consensus = create_model("consensus", member_kwargs={"anvil": {"ar_order": 1}})
    with torch.no_grad():
        want = consensus(x, 3)
        torch.testing.assert_close(model(x, 3), want)
        given = torch.rand_like(want)  # the anchor computed outside (the radar pool's)
        torch.testing.assert_close(model(x, 3, anchor=given), given)
    with pytest.raises(ValueError, match=r"anchor must be the consensus forecast"):
        model(x, 3, anchor=given[:, :2])
    with pytest.raises(ValueError, match="anchor_kwargs set the consensus"):
        create_model("anchored", anchor="optical_flow", anchor_kwargs={"power": 2.0})
    assert "anchor" in model_info("anchored").inputs


def test_an_untrained_ensemble_on_the_consensus_draws_the_consensus():
    """`anchored_ensemble(anchor="consensus")`: untrained, every member is the consensus; the
    pool's anchor input is used; the one-step hindcast forecasts from the frames before the last
    (the consensus of four frames: ANVIL's minimum)."""
    x = torch.from_numpy(moving_rain(t=5)).float()[None, :, None]
    model = create_model("anchored_ensemble", anchor="consensus", noise_at="output",
                         hindcast_spread=True, vel_pert_method="bps", kmperpixel=1.0,
                         timestep=5.0, **model_info("anchored_ensemble").tiny).eval()
    with torch.no_grad():
        want = create_model("consensus")(x, 3)
        members = model.sample(x, 3, members=3, seed=0)
        assert members.shape == (1, 3, 3, 1, SIZE, SIZE)
        torch.testing.assert_close(model(x, 3), want)
        given = torch.rand_like(want)
        torch.testing.assert_close(model(x, 3, anchor=given), given)
        assert model.hindcast_scale(x, 3, None) is not None
        unmoved = create_model("anchored_ensemble", anchor="consensus", noise_at="output",
                               **model_info("anchored_ensemble").tiny).eval()
        for m in range(3):  # untrained: the members are the consensus, moved by BPS
            torch.testing.assert_close(unmoved.sample(x, 3, members=3, seed=m)[0, m], want[0])
    assert "anchor" in model_info("anchored_ensemble").inputs
