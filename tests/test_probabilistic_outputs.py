"""Probabilistic nowcasts end to end: `convcast test --members`, `convcast nowcast --members
--probability_thresholds`, `convcast.forecast(..., members=N)`, and the pysteps probability
baselines (`lagrangian_probability`, `steps_noise`) against pysteps' own calls."""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli

import convcast
from convcast.cli.nowcast import main as nowcast
from convcast.data.radar.archive import write_image_folder
from convcast.metrics.probabilistic import brier_score, crps, roc_curve
from convcast.models import create_model, model_info
from convcast.models.base import Forecaster
from convcast.models.pysteps_nowcasts import quiet
from convcast.motion import estimate_motion
from convcast.train.evaluate import run_evaluation

pytest.importorskip("pysteps")
ROOT = Path(__file__).resolve().parent.parent
STEP = np.timedelta64(6, "m")


def moving_rain(n: int = 6, size: int = 24, seed: int = 0) -> np.ndarray:
    """`[n, size, size]` uint8 gray levels: a textured rain cell moving right, 1 px per frame."""
    rng = np.random.default_rng(seed)
    gray = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        gray[i, 5:15, 3 + i:13 + i] = 110 + rng.integers(0, 70, (10, 10))
    return gray


def rain_folder(path: Path, n: int = 6) -> Path:
    t = np.datetime64("2021-06-01T10:00", "s") + STEP * np.arange(n)
    write_image_folder(path, moving_rain(n), t)
    return path


def pixel_frames(b: int = 1, t: int = 3, size: int = 24) -> torch.Tensor:
    """`[b, t, 1, size, size]` HKO-7 pixels of the moving cell."""
    gray = moving_rain(t, size)[None, :, None].repeat(b, 0)
    return torch.from_numpy(gray.astype(np.float32) / 255)


# ---------------------------------------------------------------------------- convcast test

def test_test_members_scores_every_model_as_an_ensemble(tmp_path, one_thread) -> None:
    config = ROOT / "configs/radar-convlstm-cpu-small.yaml"
    small = ["--data.init_args.train_size", 2, "--data.init_args.val_size", 2,
             "--data.init_args.test_size", 2, "--data.init_args.batch_size", 2,
             "--data.init_args.image_size", 16, "--data.init_args.input_frames", 3,
             "--data.init_args.output_frames", 3, "--model.model_kwargs.hidden_channels", "[4]",
             "--trainer.default_root_dir", tmp_path, *FIT_QUIET]
    cli("fit", "--config", config, *small, "--trainer.max_steps", 1,
        "--trainer.limit_val_batches", 0)
    out = tmp_path / "report"
    cli("test", "--config", config, *small, "--ckpt_path", "last", "--members", 4,
        "--compare", "steps", "optical_flow", "--thresholds", 0.5, 2, 5,
        "--animation", "none", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"encoder_forecaster", "steps", "optical_flow"}
    for name, entry in metrics.items():
        keys = ["crps", *(f"{s}@{t}" for s in ("brier", "bss", "roc_auc") for t in (0.5, 2, 5))]
        for key in keys:  # the mean and the curve against lead time, as the other metrics
            assert key in entry and len(entry["per_lead_time"][key]) == 3, (name, key)
        assert entry["probabilistic_units"] == entry["threshold_units"] == "mm/h"
        ensemble = name == "steps"
        assert entry["members"] == (4 if ensemble else 1)
        for key in ("fair_crps", "spread_skill"):  # ensembles of 2 or more only
            assert (key in entry) == ensemble and (key in entry["per_lead_time"]) == ensemble
    assert 0 <= metrics["steps"]["brier@0.5"] <= 1 and metrics["steps"]["crps"] >= 0
    for png in ("reliability.png", "roc.png", "rank_histogram.png"):
        image = iio.imread(out / png)
        assert image.ndim == 3 and image.shape[0] > 100, png
    assert (out / "plots" / "crps.png").exists()  # lead-time plots of the new scores too


class _Noisy(Forecaster):
    """A tiny ensemble: persistence plus seeded noise per member."""

    in_channels, inputs = 1, frozenset()

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        return x[:, -1:].expand(-1, horizon, -1, -1, -1)

    def sample(self, x: torch.Tensor, horizon: int, members: int = 1, **inputs) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        base = self(x, horizon).unsqueeze(1)
        return base + 0.3 * torch.rand(x.shape[0], members, *base.shape[2:], generator=g)


def test_run_evaluation_matches_the_functional_scores() -> None:
    x = torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.rand(2, 2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    noisy = _Noisy()

    def blurred(x: torch.Tensor, horizon: int) -> torch.Tensor:  # a plain callable: one member
        return x[:, -1:].expand(-1, horizon, -1, -1, -1) * 0.9

    got = run_evaluation({"noisy": noisy, "blurred": blurred}, [(x, y)], thresholds=[0.5, 0.8],
                         members=5)
    ens = noisy.sample(x, 2, members=5)
    assert got.members == {"noisy": 5, "blurred": 1}
    m = got.metrics
    torch.testing.assert_close(m["noisy"]["crps"], crps(ens, y))
    torch.testing.assert_close(m["noisy"]["brier"], brier_score(ens, y, [0.5, 0.8]))
    torch.testing.assert_close(m["noisy"]["roc_auc"], roc_curve(ens, y, [0.5, 0.8])["area"])
    mae = (blurred(x, 2) - y).abs().double().mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(m["blurred"]["crps"], mae)  # CRPS of one member = MAE
    assert "fair_crps" not in m["blurred"] and m["noisy"]["fair_crps"].shape == (2,)
    curves = got.curves["noisy"]
    assert curves["reliability_counts"].shape == (2, 10) and curves["roc_area"].shape == (2,)
    assert curves["rank_histogram"].shape == (6,)
    assert "mse" in m["noisy"] and m["noisy"]["bss"].shape == (2, 2)
    with pytest.raises(ValueError, match="members must be a positive int"):
        run_evaluation({"noisy": noisy}, [(x, y)], members=0)
    mask = torch.rand(2, 2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.3
    plain = run_evaluation({"noisy": noisy}, [(x, y, mask)], members=5)  # no thresholds
    torch.testing.assert_close(plain.metrics["noisy"]["crps"], crps(ens, y, mask=mask))
    assert {"crps", "fair_crps", "spread_skill"} <= set(plain.metrics["noisy"])
    assert "brier" not in plain.metrics["noisy"] and set(plain.curves["noisy"]) == \
        {"rank_histogram"}


# ---------------------------------------------------------------------------- nowcast

def test_nowcast_writes_members_probabilities_and_their_animation(tmp_path) -> None:
    rain_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert nowcast(["--input", str(tmp_path / "in"), "--out", str(out), "--model", "steps",
                    "--horizon", "3", "--members", "3",
                    "--probability_thresholds", "0.5", "2"]) == 0
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(out / "forecast.nc") as ds:
        assert ds.sizes["realization"] == 3 and ds["realization"].attrs["standard_name"] == \
            "realization"
        members = ds["precip_intensity_members"]
        assert members.dims == ("realization", "time", "y", "x")
        assert members.attrs["units"] == ds["precip_intensity"].attrs["units"] == "mm h-1"
        prob = ds["probability_of_precipitation_above_threshold"]
        assert prob.dims == ("threshold", "time", "y", "x") and prob.attrs["units"] == "1"
        thr = ds["threshold"]
        assert thr.values.tolist() == [0.5, 2.0] and thr.attrs["units"] == "mm h-1"
        assert thr.attrs["standard_name"] == "lwe_precipitation_rate"
        want = np.stack([(members.values >= t).mean(axis=0) for t in (0.5, 2.0)])
        np.testing.assert_allclose(prob.values, want, atol=1e-6)
        assert 0 < float(prob.max()) <= 1
    z = np.load(out / "forecast.npz")
    assert z["members"].shape == (3, 3, 1, 24, 24) and z["probabilities"].shape == \
        (2, 3, 1, 24, 24)
    assert z["probability_thresholds"].tolist() == [0.5, 2.0]
    assert str(z["probability_units"]) == "mm/h"
    gif = iio.imread(out / "forecast_probability.gif", index=None)
    assert gif.shape[0] == 3  # one frame per lead time, both thresholds side by side
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_nowcast_ensemble_options_are_checked_before_the_work(tmp_path) -> None:
    rain_folder(tmp_path / "in")
    args = ["--input", str(tmp_path / "in"), "--model", "persistence", "--horizon", "1"]
    with pytest.raises(ValueError, match="give --members N too"):
        nowcast([*args, "--out", str(tmp_path / "o"), "--probability_thresholds", "1"])
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is an existing file"):
        nowcast([*args, "--out", str(tmp_path / "file"), "--members", "2"])
    (tmp_path / "o2" / "forecast_probability.gif").mkdir(parents=True)
    with pytest.raises(ValueError, match="is a folder"):
        nowcast([*args, "--out", str(tmp_path / "o2"), "--members", "2",
                 "--probability_thresholds", "1"])
    assert not (tmp_path / "o2" / "forecast.npz").exists()


# ---------------------------------------------------------------------------- forecast API

def test_forecast_returns_members_and_probabilities(tmp_path) -> None:
    folder = rain_folder(tmp_path / "in")
    fc = convcast.forecast(create_model("steps"), folder, 2, members=3,
                           probability_thresholds=(0.5, 2), radar={})
    assert fc.frames.shape == (2, 1, 24, 24)
    assert fc.members.shape == fc.members_physical.shape == (3, 2, 1, 24, 24)
    assert fc.probabilities.shape == (2, 2, 1, 24, 24) and fc.probability_units == "mm/h"
    assert fc.members.max() <= 255 and fc.units == "gray"  # the input's own values
    np.testing.assert_allclose(fc.probabilities[1], (fc.members_physical >= 2).mean(axis=0))
    one = convcast.forecast(create_model("optical_flow"), folder, 2, members=3,
                            probability_thresholds=[0.5], radar={})
    assert one.members.shape == (1, 2, 1, 24, 24)  # deterministic: an ensemble of one
    np.testing.assert_allclose(one.members[0], one.frames)
    assert set(np.unique(one.probabilities)) <= {0.0, 1.0}
    plain = convcast.forecast(create_model("persistence"), folder, 2, radar={})
    assert plain.members is None and plain.probabilities is None
    video = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    own = convcast.forecast(create_model("persistence"), video, 2, members=2,
                            probability_thresholds=[0.5])
    np.testing.assert_array_equal(own.probabilities[0], (video[-1:] >= 0.5).astype(np.float32)
                                  .repeat(2, 0))  # the input's own values, no radar
    with pytest.raises(ValueError, match="give members=N too"):
        convcast.forecast(create_model("persistence"), video, 2, probability_thresholds=[0.5])


# ---------------------------------------------------------------------------- baselines

def test_lagrangian_probability_is_pysteps_own_call() -> None:
    from pysteps import nowcasts

    model = create_model("lagrangian_probability")
    assert model_info("lagrangian_probability").ensemble is False
    x = pixel_frames()
    frames = x[0, :, 0].double().numpy()
    prob = model.probabilities(x, 3, [0.4, 0.6])  # [B, horizon, P, H, W]
    assert prob.shape == (1, 3, 2, 24, 24) and prob.min() >= 0 and prob.max() <= 1
    field = model.to_method(frames)
    velocity = estimate_motion(frames)  # the optical_flow baseline's motion on pixels
    np.testing.assert_array_equal(model.last_velocity[0, 0], velocity)
    for p, thr in enumerate((0.4, 0.6)):
        with quiet():
            want = nowcasts.get_method("lagrangian_probability")(field[-1], velocity, 3, thr,
                                                                 slope=5)
        np.testing.assert_allclose(prob[0, :, p].double().numpy(), np.nan_to_num(want),
                                   atol=1e-6)
    extrapolated = nowcasts.get_method("extrapolation")(field[-1], velocity, 3)
    np.testing.assert_allclose(model(x, 3)[0, :, 0].double().numpy(),
                               model.from_method(extrapolated), atol=1e-6)
    assert model.sample(x, 3, members=5).shape == (1, 1, 3, 1, 24, 24)  # an ensemble of one
    with pytest.raises(ValueError, match="one-channel"):
        create_model("lagrangian_probability", in_channels=2).probabilities(
            x.repeat(1, 1, 2, 1, 1), 2, 0.5)


def test_steps_noise_is_pysteps_blending_around_the_nowcast() -> None:
    from pysteps.blending import steps as blending

    from convcast.models.pysteps_probability import has_external_nowcast

    assert has_external_nowcast()  # pysteps 1.21 takes an external nowcast
    assert model_info("steps_noise").ensemble is True
    model = create_model("steps_noise", seed=3)
    x = pixel_frames(t=4)
    got = model.sample(x, 3, members=4)  # [B, M, horizon, C, H, W]
    assert got.shape == (1, 4, 3, 1, 24, 24) and model.last_route[0, 0] == "pysteps"
    torch.testing.assert_close(model(x, 3), create_model("optical_flow")(x, 3))
    frames = x[0, :, 0].double().numpy()
    field = model.to_method(frames)
    velocity = estimate_motion(frames[-3:])
    det = model.to_method(create_model("optical_flow")(x, 3)[0, :, 0].double().numpy())
    stack = np.concatenate([field[-1:], det])[None]
    with tempfile.TemporaryDirectory() as skill, quiet():
        want = blending.forecast(
            field[-3:], np.zeros_like(stack), velocity,
            np.broadcast_to(velocity, (1, 4, 2, 24, 24)).copy(), 3, 5.0,
            datetime.datetime(2000, 1, 1), 4, precip_nowcast=stack,
            nowcasting_method="external_nowcast", precip_thr=model.method_threshold,
            kmperpixel=2.0, seed=3, outdir_path_skill=skill)
    np.testing.assert_allclose(got[0, :, :, 0].double().numpy(), model.from_method(want),
                               atol=1e-6)
    assert got.std(dim=1).max() > 0  # the members differ
    with pytest.raises(ValueError, match="deterministic baseline"):
        create_model("steps_noise", base="steps")
