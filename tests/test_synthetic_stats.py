"""Rain statistics (convcast.data.synthetic.stats) on fields of known properties, and the
statistics-matched synthetic radar (radar_steps) against the real composites' numbers: stored
constants always, recomputed on the real samples where they exist (`$CONVCAST_RADAR_SAMPLES`,
by default the radar-samples folder beside the checkout)."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli
from scipy.special import ndtr, ndtri

pytest.importorskip("pysteps")

from convcast.data.synthetic.radar_steps import (
    REAL_MEDIAN,
    TOLERANCES,
    StepsRadar,
    StepsRadarDataModule,
    noise_filter,
    rain_from_gaussian,
    simulate_steps_radar,
)
from convcast.data.synthetic.stats import (
    compare,
    median_summary,
    rain_statistics,
    summary,
)
from convcast.data.units import MARSHALL_PALMER_ZR, dbz_to_rainrate
from convcast.pysteps_modules import pysteps_module

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples"))


def power_law_rain(beta: float, frames: int = 3, size: int = 128, seed: int = 0) -> np.ndarray:
    """Rain `[frames, size, size]` (mm/h), wet everywhere, whose dBR is pysteps noise with
    P(k) ∝ k^-beta (no outer scale), so the dBR spectrum's slope is beta."""
    fft = pysteps_module("noise.fftgenerators", needed_by="this test")
    filt = noise_filter(size, beta, outer=1e6)
    state = np.random.RandomState(seed)
    g = np.stack([fft.generate_noise_2d_fft_filter(filt, randstate=state) for _ in range(frames)])
    return 10 ** ((5.0 + 2.0 * g) / 10)  # dBR = 5 + 2 g >= -10 dB: all wet


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_spectral_slope_of_power_law_noise(beta: float) -> None:
    stats = rain_statistics(power_law_rain(beta), step_minutes=5, pixel_km=1)
    assert stats["spectral_slope"] == pytest.approx(beta, abs=0.15)
    assert stats["wet_fraction"] == 1.0


def test_wet_fraction_and_intensities_leave_no_data_out() -> None:
    rain = np.zeros((4, 40, 50))
    values = np.arange(1, 201, dtype=np.float64) / 10  # 0.1 ... 20 mm/h
    rain[:, :4, :] = values.reshape(4, 50)  # 200 wet pixels per frame
    rain[:, 4:6, :] = 0.05  # drizzle below the wet threshold
    rain[:, 20:, :] = np.nan  # half the frame has no data
    stats = rain_statistics(rain, step_minutes=5, pixel_km=1)
    assert stats["wet_fraction"] == pytest.approx(200 / (20 * 50))
    assert stats["wet_q50"] == pytest.approx(np.quantile(values, 0.5))
    assert stats["wet_q99"] == pytest.approx(np.quantile(values, 0.99))
    assert stats["wet_mean"] == pytest.approx(values.mean())


def test_decorrelation_time_of_an_ar1_field() -> None:
    """Frames evolving in place by AR(1) with lag-1 correlation rho: every scale decorrelates
    with tau = -step / ln(rho), and lag 2 is rho² (lag-2 exponent 2)."""
    rho, step = 0.9, 5.0
    base = power_law_rain(2.5, frames=12, size=96, seed=1)
    g = (10 * np.log10(base) - 5.0) / 2.0  # the unit Gaussian noise behind it
    for t in range(1, len(g)):
        g[t] = rho * g[t - 1] + math.sqrt(1 - rho**2) * g[t]
    stats = rain_statistics(10 ** ((5.0 + 2.0 * g) / 10), step_minutes=step, pixel_km=4)
    expected = -step / math.log(rho)  # 47 minutes
    tau = np.array(stats["level_tau_minutes"][1:-1])  # the levels between the extremes
    assert np.all(np.abs(np.log(tau / expected)) < 0.3), tau
    assert stats["lag2_exponent"] == pytest.approx(2.0, abs=0.3)


def test_rain_from_gaussian_has_the_wet_fraction_and_median() -> None:
    g = np.random.default_rng(0).standard_normal((4, 100, 100))
    rain = rain_from_gaussian(g, 0.2, median=1.0, log_sd=1.0, wet_mm_h=0.1)
    wet = rain[rain > 0]
    assert len(wet) == 0.2 * g.size
    assert wet.min() >= 0.1
    assert np.all((rain > 0) == (g > np.quantile(g, 0.8)))  # the wettest where g is highest
    # the wet pixels follow LN(0, 1) truncated at 0.1 mm/h: its median is slightly above 1
    f0 = ndtr(math.log(0.1))
    assert np.median(wet) == pytest.approx(math.exp(ndtri(f0 + 0.5 * (1 - f0))), rel=0.01)


def test_items_are_reproducible_pixels_in_range() -> None:
    a = StepsRadar("train", 6, input_frames=3, output_frames=4, image_size=24, seed=2)
    b = StepsRadar("train", 6, input_frames=3, output_frames=4, image_size=24, seed=2)
    xa, ya = a[5]
    _ = b[1]
    xb, yb = b[5]
    assert xa.shape == (3, 1, 24, 24) and ya.shape == (4, 1, 24, 24)
    assert xa.dtype == torch.float32
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[4][0], xa)
    assert not torch.equal(StepsRadar("train", 6, 3, 4, 24, seed=3)[5][0], xa)
    seq = torch.cat([xa, ya])
    assert seq.min() >= 0.0 and seq.max() <= 1.0
    rain = a.to_rainrate(seq)
    assert (rain >= 0.1).any() and (rain < 0.1).any()  # intermittent


def test_marshall_palmer_round_trip() -> None:
    dbz, params = simulate_steps_radar(np.random.default_rng(0), 4, 32)
    dm = StepsRadarDataModule(image_size=32)
    pixels = torch.from_numpy((dbz + 10.0) / 70.0)
    rain = dm.to_rainrate(pixels).double().numpy()
    assert np.allclose(rain, dbz_to_rainrate(dbz.astype(np.float64), *MARSHALL_PALMER_ZR),
                       rtol=1e-4)
    d = dm.describe()
    assert d.zr == MARSHALL_PALMER_ZR and d.step_minutes == 6.0
    assert torch.allclose(d.data_to_physical(pixels), dm.to_rainrate(pixels), rtol=1e-4)
    assert params["pixel_km"] == 8.0  # 256 km over 32 pixels


def generated_median(sequences: int, seed: int = 0) -> dict[str, float]:
    dm = StepsRadarDataModule(test_size=sequences, seed=seed)
    dm.setup()
    rows = []
    for i in range(sequences):
        x, y = dm.test_set[i]
        rain = dm.to_rainrate(torch.cat([x, y])[:, 0]).double().numpy()
        rows.append(summary(rain_statistics(rain, step_minutes=6.0, pixel_km=4.0)))
    return median_summary(rows)


def test_generator_statistics_match_the_real_median() -> None:
    """The defaults land within the stated tolerances of the real composites' median."""
    result = compare(generated_median(8), REAL_MEDIAN, TOLERANCES)
    missed = {k: v for k, v in result.items() if not v["ok"]}
    assert not missed, missed


def test_yaml_config_trains_on_it(tmp_path: Path) -> None:
    """As configs/radar-anchored-cpu-small.yaml uses SyntheticRadarDataModule: the anchored model
    on windows that carry their motion fields, for one step."""
    config = tmp_path / "steps.yaml"
    config.write_text("""\
model:
  model_name: anchored
  model_kwargs:
    in_channels: 1
    anchor: optical_flow
    base: encoder_forecaster
    base_kwargs: {hidden_channels: [4], kernel_size: 3, patch_size: 2}
data:
  class_path: convcast.data.motion.MotionDataModule
  init_args:
    num_workers: 0
    data:
      class_path: convcast.data.StepsRadarDataModule
      init_args: {batch_size: 1, train_size: 2, val_size: 1, test_size: 1, input_frames: 3,
                  output_frames: 2, image_size: 16}
""")
    cli("fit", "--config", config, *FIT_QUIET, "--trainer.fast_dev_run", 1,
        "--trainer.default_root_dir", tmp_path)


def bench():
    spec = importlib.util.spec_from_file_location(
        "convcast_bench_synthetic_stats", ROOT / "benchmarks" / "synthetic_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_real_median_recomputed_on_the_samples() -> None:
    """The stored real median is what the real composites give: KNMI's statistics recomputed
    from its files (~12 s) equal the benchmark's stored row, and the stored rows (FMI's, BoM's
    and OPERA's too: 15 s, 1 and 3 minutes to decode, `python benchmarks/synthetic_stats.py`
    recomputes every row) give the median."""
    if not SAMPLES.is_dir():
        pytest.skip(f"no radar samples at {SAMPLES}: set CONVCAST_RADAR_SAMPLES to the "
                    "radar-samples folder to recompute the real statistics")
    import json

    b = bench()
    stored = json.loads((ROOT / "benchmarks" / "synthetic_stats.json").read_text())["real"]
    names = ("knmi-20100826",)
    for name, row in b.real_statistics(SAMPLES, names).items():
        for k, v in row["summary"].items():
            assert v == pytest.approx(stored[name]["summary"][k], rel=0.02, nan_ok=True), (name, k)
    median = b.provider_median(stored)
    assert median.keys() == REAL_MEDIAN.keys()
    for k, v in median.items():
        assert v == pytest.approx(REAL_MEDIAN[k], rel=0.02), k
