"""pysteps' S-PROG, ANVIL and STEPS as registry baselines: each is pysteps' own call."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from convcast.models import create_model
from convcast.models.pysteps_nowcasts import PIXEL_RAIN
from convcast.models.registry import model_info

pytestmark = pytest.mark.usefixtures("one_thread")

with contextlib.redirect_stdout(io.StringIO()):
    from pysteps import motion, nowcasts
    from pysteps.io.importers import import_fmi_pgm
    from pysteps.utils import transformation

FMI = Path(__file__).resolve().parents[2] / "shared" / "radar-samples" / "fmi"
SIZE, HORIZON = 64, 3
A, B = 58.53, 1.56  # HKO-7's Z = a R^b


def moving_rain(t: int = 4, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Pixels `[t, size, size]` in [0, 1] of a rain cell moving 1.5 px right, 0.5 px down per step,
    with noisy edges, on a dry background (pixel 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for k in range(t):
        cx, cy = size / 3 + 1.5 * k, size / 2 + 0.5 * k
        cell = np.exp(-(((xx - cx) / (size / 5)) ** 2 + ((yy - cy) / (size / 7)) ** 2))
        cell = cell * (1 + 0.2 * rng.random(cell.shape))
        frames.append(np.where(cell > 0.1, 0.15 + 0.6 * cell / cell.max(), 0.0))
    return np.stack(frames).astype(np.float32).astype(np.float64)  # what a float32 model sees


def radar_pixels() -> np.ndarray:
    """Four real FMI composites (2016-09-28 15:45-16:00), 64×64 of 1 km, as HKO-7 pixels."""
    folder = FMI / "pgm" / "20160928"
    files = [folder / f"2016092815{m}_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz"
             for m in ("45", "50", "55")] + [
        folder / "201609281600_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"real radar samples missing: {FMI} has no FMI PGM composites of "
                    "2016-09-28 15:45-16:00 (the shared radar-samples folder)")
    dbz = np.stack([import_fmi_pgm(str(f), gzipped=True)[0] for f in files])
    dbz = dbz[:, 608:608 + SIZE, 256:256 + SIZE]  # a rain area with its edge
    pixels = np.clip(np.nan_to_num((dbz + 10) / 70, nan=0.0), 0, 1)
    return pixels.astype(np.float32).astype(np.float64)  # what a float32 model sees


def run(model: torch.nn.Module, pixels: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """The model's forecast `[horizon, H, W]` of one field `[T, H, W]`."""
    x = torch.from_numpy(pixels).float()[None, :, None]
    with torch.no_grad():
        return model(x, horizon)[0, :, 0].double().numpy()


# ---- pysteps' own calls, written out as pysteps' examples make them ------------------------
def lucas_kanade(frames: np.ndarray) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.nan_to_num(motion.get_method("lucaskanade")(frames[-3:], verbose=False))


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def sprog_pysteps(pixels: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    field = np.where(pixels >= PIXEL_RAIN, pixels, 0.0)  # pixels are logarithmic already
    out = quiet(nowcasts.get_method("sprog"), field[-3:], lucas_kanade(pixels), horizon,
                precip_thr=PIXEL_RAIN, n_cascade_levels=6)
    out = np.nan_to_num(out, nan=0.0)
    return np.where(out >= PIXEL_RAIN, out, 0.0)


def sprog_db_pysteps(rain: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """plot_steps_nowcast's S-PROG: rain rate -> dBR (0.1 mm/h, -15 dBR) -> S-PROG -> mm/h."""
    dbr = transformation.dB_transform(rain, threshold=0.1, zerovalue=-15.0)[0]
    out = quiet(nowcasts.get_method("sprog"), dbr[-3:], lucas_kanade(dbr), horizon,
                precip_thr=-10.0, n_cascade_levels=6)
    out = transformation.dB_transform(out, threshold=-10.0, inverse=True)[0]
    return np.nan_to_num(out, nan=0.0)


def to_rainrate(pixels: np.ndarray) -> np.ndarray:
    rain = (10 ** ((70 * pixels - 10) / 10) / A) ** (1 / B)
    return np.where((pixels > 0) & (rain >= 0.1), rain, 0.0)


def anvil_pysteps(pixels: np.ndarray, horizon: int = HORIZON, ar_order: int = 2) -> np.ndarray:
    rain = to_rainrate(pixels)
    velocity = lucas_kanade(pixels)  # the motion of the logarithmic field
    out = quiet(nowcasts.get_method("anvil"), rain[-(ar_order + 2):], velocity, horizon,
                ar_order=ar_order)
    out = np.nan_to_num(out, nan=0.0)
    with np.errstate(divide="ignore"):
        back = (10 * np.log10(A * out ** B) + 10) / 70
    return np.where(out >= 0.1, np.clip(back, 0, 1), 0.0)


def steps_pysteps(pixels: np.ndarray, members: int, seed: int = 24,
                  horizon: int = HORIZON) -> np.ndarray:
    """plot_steps_nowcast's STEPS settings, on pixels: `[members, horizon, H, W]`."""
    field = np.where(pixels >= PIXEL_RAIN, pixels, 0.0)
    out = quiet(nowcasts.get_method("steps"), field[-3:], lucas_kanade(pixels), horizon,
                n_ens_members=members, n_cascade_levels=6, precip_thr=PIXEL_RAIN,
                kmperpixel=2.0, timestep=5, noise_method="nonparametric", vel_pert_method="bps",
                mask_method="incremental", seed=seed)
    out = np.nan_to_num(out, nan=0.0)
    return np.where(out >= PIXEL_RAIN, out, 0.0)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.1  # a forecast with rain in it
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)  # float32 round trip only


# ---- each baseline is pysteps' own call ------------------------------------------------------
@pytest.mark.parametrize("source", ["synthetic", "fmi"])
def test_each_baseline_equals_pysteps_own_call(source):
    pixels = moving_rain() if source == "synthetic" else radar_pixels()
    sprog, anvil = create_model("sprog"), create_model("anvil")
    steps = create_model("steps", members=3)
    assert_same(run(sprog, pixels), sprog_pysteps(pixels))
    assert sprog.last_route[0, 0] == "pysteps"
    assert_same(run(anvil, pixels), anvil_pysteps(pixels))
    assert anvil.last_route[0, 0] == "pysteps"
    x = torch.from_numpy(pixels).float()[None, :, None]
    members = steps.sample(x, HORIZON, members=3)[0, :, :, 0].double().numpy()
    assert_same(members, steps_pysteps(pixels, 3))
    np.testing.assert_allclose(run(steps, pixels), members.mean(0), atol=1e-6, rtol=0)
    flow = create_model("optical_flow")
    flow(x, 1)
    for model in (sprog, anvil, steps):  # the motion of pixels is the optical_flow baseline's
        np.testing.assert_array_equal(model.last_velocity, flow.last_velocity)


def test_db_transform_is_pysteps_example_on_rain_rates():
    rain = to_rainrate(moving_rain()).astype(np.float32).astype(np.float64)  # mm/h
    model = create_model("sprog", transform="db")
    assert (model.threshold, model.zerovalue) == (0.1, -15.0)
    assert_same(run(model, rain), sprog_db_pysteps(rain))


def test_anvil_tiny_configuration_reads_three_frames():
    pixels = moving_rain(t=3)
    model = create_model("anvil", **model_info("anvil").tiny)
    assert model.window == 3
    assert_same(run(model, pixels), anvil_pysteps(pixels, ar_order=1))


# ---- shapes, batches and channels ------------------------------------------------------------
@pytest.mark.parametrize("name", ["sprog", "anvil", "steps"])
def test_batches_and_channels_are_forecast_field_by_field(name):
    model = create_model(name, in_channels=2, **({"members": 2} if name == "steps" else {}))
    x = torch.from_numpy(np.stack([moving_rain(size=32, seed=s) for s in range(4)])).float()
    x = x.view(2, 2, 4, 32, 32).transpose(1, 2).contiguous()  # [B=2, T=4, C=2, H, W]
    with torch.no_grad():
        y = model(x, 2)
    assert y.shape == (2, 2, 2, 32, 32) and y.dtype == x.dtype
    one = create_model(name, **({"members": 2} if name == "steps" else {}))
    with torch.no_grad():  # the same seed for every field: a forecast depends on its input only
        torch.testing.assert_close(y[1, :, 0:1], one(x[1:2, :, 0:1], 2)[0], atol=1e-6, rtol=0)
    assert model.last_velocity.shape == (2, 2, 2, 32, 32)
    assert model.last_route.shape == (2, 2)


# ---- dry, degenerate and short inputs --------------------------------------------------------
@pytest.mark.parametrize("name", ["sprog", "anvil", "steps"])
def test_dry_input_gives_a_dry_forecast(name):
    model = create_model(name, **({"members": 2} if name == "steps" else {}))
    drizzle = np.full((4, 32, 32), 0.1) + 0.01 * np.random.default_rng(0).random((4, 32, 32))
    for pixels in (np.zeros((4, 32, 32)), drizzle):  # no rain; rain under the threshold
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not run(model, pixels).any()
        assert model.last_route[0, 0] == "dry"
    rain_then_dry = np.concatenate([moving_rain(t=3, size=32), np.zeros((1, 32, 32))])
    assert not run(model, rain_then_dry).any()


@pytest.mark.parametrize("name", ["sprog", "anvil", "steps"])
def test_frozen_or_constant_rain_is_extrapolated(name):
    """pysteps raises (S-PROG, STEPS) or gives a dry field (ANVIL) on rain that does not change:
    the forecast is then the extrapolated last frame, here persistence."""
    model = create_model(name, **({"members": 2} if name == "steps" else {}))
    for pixels in (np.full((4, 32, 32), 0.5), moving_rain(size=32)[-1:].repeat(4, 0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a known limitation: no warning
            y = run(model, pixels)
        assert model.last_route[0, 0] == "extrapolation"
        np.testing.assert_allclose(y, np.broadcast_to(pixels[-1], y.shape), atol=1e-6)


def test_sprog_with_a_dry_frame_in_its_window_is_extrapolated():
    pixels = moving_rain(size=32)
    pixels[1] = 0  # S-PROG's AR fit cannot use a dry frame (pysteps raises)
    model = create_model("sprog")
    y = run(model, pixels)
    assert model.last_route[0, 0] == "extrapolation" and y.max() > 0.5


@pytest.mark.parametrize(("name", "kw", "need"), [("sprog", {}, 3), ("steps", {}, 3),
                                                  ("anvil", {}, 4), ("sprog", {"ar_order": 1}, 2)])
def test_too_few_frames_are_refused_clearly(name, kw, need):
    model = create_model(name, **kw)
    assert model.window >= need
    x = torch.rand(1, need - 1, 1, 16, 16)
    with pytest.raises(ValueError, match=rf"{name} needs at least {need} input frames .*"
                                         rf"got T_in={need - 1}; give it more input frames"):
        model(x, 2)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="sprog: unknown transform 'log'; valid: 'none', 'db'"):
        create_model("sprog", transform="log")
    with pytest.raises(ValueError, match="anvil: unknown transform 'db'; valid: 'rainrate'"):
        create_model("anvil", transform="db")
    with pytest.raises(ValueError, match="steps: threshold must be a positive number"):
        create_model("steps", transform="db", threshold=0)
    with pytest.raises(ValueError, match="n_cascade_levels must be an int >= 3"):
        create_model("sprog", n_cascade_levels=2)
    with pytest.raises(ValueError, match="steps: unknown noise_method 'pink'"):
        create_model("steps", noise_method="pink")
    with pytest.raises(ValueError, match="anvil: dbz_range must be"):
        create_model("anvil", dbz_range=(60, -10))
    with pytest.raises(ValueError, match="in_channels"):
        create_model("steps", in_channels=0)
    with pytest.raises(ValueError, match=r"sprog: zerovalue \(0\) must be below the rain"):
        create_model("sprog", threshold=-1.0)
    with pytest.raises(ValueError, match="pysteps' steps takes no argument noise_kw "):
        create_model("steps", nowcast_kwargs={"noise_kw": {}})
    with pytest.raises(ValueError, match=r"not set n_ens_members \(set by its argument members"):
        create_model("steps", nowcast_kwargs={"n_ens_members": 5})


# ---- the ensemble contract -------------------------------------------------------------------
def test_steps_keeps_the_ensemble_contract():
    assert model_info("steps").ensemble and not model_info("sprog").ensemble
    model = create_model("steps", in_channels=2, members=3)
    x = torch.from_numpy(np.stack([moving_rain(size=32, seed=s) for s in range(4)])).float()
    x = x.view(2, 2, 4, 32, 32).transpose(1, 2).contiguous()  # [B, T, C, H, W]
    s = model.sample(x, 2, members=3)
    assert s.shape == (2, 3, 2, 2, 32, 32)
    assert not torch.equal(s[:, 0], s[:, 1])  # members differ
    torch.testing.assert_close(model.sample(x, 2, members=3), s, atol=0, rtol=0)  # seeded
    torch.testing.assert_close(model(x, 2), s.mean(1), atol=1e-6, rtol=0)  # forward: the mean
    model.seed = 7
    assert not torch.equal(model.sample(x, 2, members=3), s)
    with pytest.raises(ValueError, match="members must be an int >= 1"):
        model.sample(x, 2, members=0)
    sprog = create_model("sprog", in_channels=2)  # a deterministic forecaster: one member
    assert sprog.sample(x, 2, members=5).shape == (2, 1, 2, 2, 32, 32)


def test_more_members_and_longer_horizons_extend_fewer_and_shorter():
    model = create_model("steps")
    x = torch.from_numpy(moving_rain(size=32)).float()[None, :, None]
    s = model.sample(x, 2, members=3)
    torch.testing.assert_close(model.sample(x, 4, members=4)[:, :3, :2], s, atol=0, rtol=0)
    sprog = create_model("sprog")
    with torch.no_grad():
        torch.testing.assert_close(sprog(x, 4)[:, :2], sprog(x, 2), atol=0, rtol=0)


def test_nonfinite_input_values_count_as_no_rain():
    pixels = moving_rain(size=32)
    pixels[:, 10, 12] = np.nan
    for name in ("sprog", "anvil", "steps"):
        model = create_model(name, **({"members": 2} if name == "steps" else {}))
        model.nonfinite = "ignore"
        y = run(model, pixels)
        assert np.isfinite(y).all() and y.max() > 0.5
