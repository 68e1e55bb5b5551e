"""Synthetic radar with real rain's statistics: a STEPS-like generator built on pysteps.

Where `convcast.data.synthetic.radar` is a hand-made stand-in, this generator's defaults are set
so that the statistics of `convcast.data.synthetic.stats.rain_statistics` land near those of real
radar composites (FMI, KNMI, BoM, OPERA; `benchmarks/synthetic_stats.py` measures both):
- Space: every frame starts from pysteps' Fourier-filtered noise
  (`pysteps.noise.fftgenerators.generate_noise_2d_fft_filter`) with a power-law spectrum
  P(k) ∝ (k² + k0²)^(-β/2).
- Time (Lagrangian): the noise is decomposed into a cascade of `n_levels` scales
  (`pysteps.cascade`), and each level evolves by its own AR(2) process
  (`pysteps.timeseries.autoregression`), as STEPS models growth and decay: a level of
  wavelength λ has the lag-1 correlation exp(-step / τ(λ)) with τ(λ) = `tau_100km` ·
  (λ / 100 km)^`tau_exponent` minutes, and lag-2 correlation rho1^`lag2_exponent`.
- Rain: probability matching over the whole sequence: the pixels of the evolving field g (all
  frames together) above its (1 - w) quantile are wet, w the sequence's wet-area fraction, and a
  wet pixel's rank maps onto a log-normal rain-rate distribution (median `wet_median`, log-sd
  `wet_log_sd`) truncated at `wet_mm_h`, so area and intensity still grow and decay between
  frames; rain rate goes to dBZ by Marshall-Palmer, dBZ to HKO-7
  pixels. No rain is `dry_dbz`.
- Motion: the steady linear flow of `radar` (translation, rotation, deformation) with its
  translation perturbed along and across the motion as pysteps' `noise.motion` (Bowler et al.
  2006) perturbs STEPS' motion; frame t samples the Lagrangian field at the exact departure
  points of the flow, on a padded grid so that rain enters the frame.
The domain is `domain_km` wide whatever `image_size` (a 32×32 sequence is a coarser view of the
same weather); steps are `step_minutes` apart. Sequence `i` comes from its own stream seeded by
`(seed, split, i)`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import torch
from scipy.ndimage import map_coordinates
from scipy.special import ndtr, ndtri

from convcast.data.description import DataDescription, RadarValues
from convcast.data.synthetic.base import GeneratedDataModule, GeneratedSequences
from convcast.data.synthetic.radar import MAX_DBZ, draw_motion, flow, spectral_filter
from convcast.data.units import MARSHALL_PALMER_ZR, dbz_to_pixel, pixel_to_rainrate, rainrate_to_dbz
from convcast.pysteps_modules import pysteps_module

STEP_MINUTES = 6.0
# the median over providers of `summary(rain_statistics(...))` on real composites (FMI's two days
# averaged, then FMI, KNMI, BoM, OPERA; ~4 km pixels, BoM 2 km), as benchmarks/synthetic_stats.py
# measured it: slope, wet fraction, wet-pixel quantiles and mean (mm/h), Lagrangian e-folding
# times (minutes) at 16-128 km, lag-2 exponent
REAL_MEDIAN: dict[str, float] = {
    "spectral_slope": 2.39, "wet_fraction": 0.1739,
    "wet_q50": 0.4298, "wet_q90": 2.005, "wet_q99": 6.377, "wet_mean": 0.8694,
    "tau_16km": 21.82, "tau_32km": 52.92, "tau_64km": 159.3, "tau_128km": 391.5,
    "lag2_exponent": 2.415,
}
# how close the generator's defaults land (median over sequences): see `stats.compare`
TOLERANCES: dict[str, tuple[str, float]] = {
    "spectral_slope": ("abs", 0.25), "wet_fraction": ("rel", 0.25),
    "wet_q50": ("rel", 0.25), "wet_q90": ("rel", 0.25), "wet_q99": ("rel", 0.25),
    "wet_mean": ("rel", 0.25), "tau_16km": ("factor", 1.35), "tau_32km": ("factor", 1.35),
    "tau_64km": ("factor", 1.35), "tau_128km": ("factor", 1.35),
    "lag2_exponent": ("abs", 0.4),
}
NEEDED_BY = "the synthetic STEPS radar (convcast.data.synthetic.radar_steps)"


def _pysteps(name: str):
    return pysteps_module(name, needed_by=NEEDED_BY)


def random_state(rng: np.random.Generator) -> np.random.RandomState:
    """A legacy RandomState (what pysteps' generators take) drawn from `rng`."""
    return np.random.RandomState(int(rng.integers(2**32)))


def noise_filter(n: int, beta: float, outer: float) -> dict:
    """pysteps' Fourier filter dict (as `initialize_param_2d_fft_filter` returns) for power-law
    noise on an `n`×`n` grid, P(k) ∝ (k² + k0²)^(-β/2) with k0 = 1/`outer` (pixels)."""
    return {"field": spectral_filter((n, n), beta, outer), "input_shape": (n, n),
            "use_full_fft": False, "model": "power-law", "pars": (beta, outer)}


def level_correlations(wavelength_km: np.ndarray, step_minutes: float, tau_100km: float,
                       tau_exponent: float, lag2_exponent: float,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Lag-1 and lag-2 correlations `[levels]` of cascade levels of the given wavelengths:
    rho1 = exp(-step / τ(λ)), τ(λ) = tau_100km (λ / 100 km)^tau_exponent, rho2 = rho1^e
    adjusted for a stationary AR(2) (`adjust_lag2_corrcoef2`)."""
    ar = _pysteps("timeseries.autoregression")
    tau = tau_100km * (np.asarray(wavelength_km) / 100.0) ** tau_exponent
    rho1 = np.exp(-step_minutes / tau)
    rho2 = np.array([ar.adjust_lag2_corrcoef2(r, r**lag2_exponent) for r in rho1])
    return rho1, rho2


def departure_points(size: int, steps: int, u: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Where the rain at each pixel at time t was at time 0, `[steps, 2, size, size]`, for the
    flow V(x, s) = u[s] + A (x - c) with a translation `u` `[steps, 2]` that changes each step
    (RK4 backwards, one step at a time, from every frame)."""
    c = (size - 1) / 2
    grid = np.stack(np.meshgrid(np.arange(size, dtype=np.float64),
                                np.arange(size, dtype=np.float64), indexing="ij"))
    out = np.empty((steps, 2, size, size))
    for t in range(steps):
        p = grid
        for s in range(t, 0, -1):  # from time s back to s - 1 under the flow of step s
            k1 = flow(p, u[s], A, c)
            k2 = flow(p - 0.5 * k1, u[s], A, c)
            k3 = flow(p - 0.5 * k2, u[s], A, c)
            k4 = flow(p - k3, u[s], A, c)
            p = p - (k1 + 2 * k2 + 2 * k3 + k4) / 6
        out[t] = p
    return out


def perturbed_translation(rng: np.random.Generator, u: np.ndarray, steps: int,
                          step_minutes: float, pixel_km: float, strength: float) -> np.ndarray:
    """The translation `[steps, 2]` (row, col px/step): `u` plus pysteps' BPS motion perturbation
    (`pysteps.noise.motion`, growing with lead time) scaled by `strength` (0: steady)."""
    out = np.repeat(u[None], steps, axis=0)
    if strength <= 0 or not np.any(u):
        return out
    motion = _pysteps("noise.motion")
    V = np.array([u[1], u[0]], dtype=np.float64).reshape(2, 1, 1)  # pysteps: (x, y)
    bps = motion.initialize_bps(V, 1.0 / pixel_km, step_minutes, randstate=random_state(rng))
    for t in range(1, steps):
        dv = motion.generate_bps(bps, t * step_minutes)[:, 0, 0]  # (x, y) px/step
        out[t] += strength * np.array([dv[1], dv[0]])
    return out


def rain_from_gaussian(g: np.ndarray, wet_fraction: float, median: float, log_sd: float,
                       wet_mm_h: float) -> np.ndarray:
    """Rain rate (mm/h) from a field `g` by its ranks over the whole array (probability
    matching): the top `wet_fraction` of the pixels are wet, and a wet pixel's rank among them
    maps to the log-normal distribution LN(ln median, log_sd) truncated at `wet_mm_h`."""
    flat = g.ravel()
    u = np.empty(flat.size)
    u[np.argsort(flat, kind="stable")] = (np.arange(flat.size) + 0.5) / flat.size
    v = (u.reshape(g.shape) - (1.0 - wet_fraction)) / wet_fraction  # rank among the wet, (0, 1)
    f0 = ndtr((math.log(wet_mm_h) - math.log(median)) / log_sd)  # the truncated part
    with np.errstate(invalid="ignore"):
        rain = np.exp(math.log(median) + log_sd * ndtri(f0 + np.clip(v, 0, 1) * (1.0 - f0)))
    return np.where(v > 0, np.maximum(rain, wet_mm_h), 0.0)


def simulate_steps_radar(
    rng: np.random.Generator, seq_len: int = 20, image_size: int = 64, *,
    domain_km: float = 256.0, step_minutes: float = STEP_MINUTES, beta: float = 2.9,
    n_levels: int = 6, tau_100km: float = 600.0, tau_exponent: float = 1.65,
    lag2_exponent: float = 2.6, wet_fraction: tuple[float, float] = (0.1, 0.32),
    wet_median: float = 0.35, wet_log_sd: float = 1.23, wet_mm_h: float = 0.1,
    speed_km_h: tuple[float, float] = (10.0, 50.0), rotation: float = 0.01,
    deformation: float = 0.005, motion_perturbation: float = 0.5, dry_dbz: float = 0.0,
    motion: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """One sequence of reflectivity `[seq_len, image_size, image_size]` float32 in
    [`dry_dbz`, 60] dBZ (Marshall-Palmer) and its parameters.

    `wet_fraction` is the range of the sequence's wet-area fraction (drawn log-uniformly);
    `speed_km_h` is the range of the translation speed; `rotation` (rad) and `deformation` are
    per 6 minutes;
    `motion_perturbation` scales pysteps' BPS perturbation of the translation; `motion=(u, A)`
    (px/step, row/col) fixes the steady flow instead of drawing it.
    """
    pixel_km = domain_km / image_size
    if motion is None:
        u, A = draw_motion(rng, 1.0, (1.0, 1.0), rotation * step_minutes / STEP_MINUTES,
                           deformation * step_minutes / STEP_MINUTES)
        u = u * rng.uniform(*speed_km_h) * step_minutes / 60.0 / pixel_km  # km/h -> px/step
    else:
        u, A = (np.asarray(m, dtype=np.float64) for m in motion)
    uu = perturbed_translation(rng, u, seq_len, step_minutes, pixel_km, motion_perturbation)
    dep = departure_points(image_size, seq_len, uu, A)  # [T, 2, S, S]
    lo, hi = np.floor(dep.min()) - 2, np.ceil(dep.max()) + 2
    n = sfft.next_fast_len(int(max(hi - lo + 1, 2 * image_size)))  # padded Lagrangian grid

    fft_gen = _pysteps("noise.fftgenerators")
    autoregression = _pysteps("timeseries.autoregression")
    bandpass = _pysteps("cascade.bandpass_filters")
    decomposition = _pysteps("cascade.decomposition")
    noise = noise_filter(n, beta, outer=image_size)
    bp = bandpass.filter_gaussian((n, n), n_levels)
    wavelength = pixel_km / np.asarray(bp["central_freqs"])  # km
    rho1, rho2 = level_correlations(wavelength, step_minutes, tau_100km, tau_exponent,
                                    lag2_exponent)
    phi = [autoregression.estimate_ar_params_yw([r1, r2]) for r1, r2 in zip(rho1, rho2,
                                                                              strict=True)]
    state = random_state(rng)

    def draw() -> dict:  # one noise field's normalised cascade
        field = fft_gen.generate_noise_2d_fft_filter(noise, randstate=state)
        return decomposition.decomposition_fft(field, bp, normalize=True, compute_stats=True)

    first = draw()
    stds = np.asarray(first["stds"])  # [levels] the power-law spectrum's share of each level
    x = np.empty((n_levels, 2, n, n))  # AR(2) state per level: (t - 1, t)
    x[:, 1] = first["cascade_levels"]
    x[:, 0] = x[:, 1]
    g = np.empty((seq_len, n, n))
    for t in range(seq_len):
        if t > 0:
            eps = draw()["cascade_levels"]
            for k in range(n_levels):
                if t == 1:  # the second frame: AR(1) with the lag-1 correlation
                    x[k, 0] = x[k, 1]
                    x[k, 1] = rho1[k] * x[k, 1] + math.sqrt(1 - rho1[k] ** 2) * eps[k]
                else:
                    x[k] = autoregression.iterate_ar_model(x[k], phi[k], eps=eps[k])
        g[t] = np.tensordot(stds, x[:, 1], axes=1)  # recomposed: the power-law spectrum
    frames = np.empty((seq_len, image_size, image_size))
    for t in range(seq_len):
        frames[t] = map_coordinates(g[t], dep[t] - lo, order=1, mode="wrap")
    wet = math.exp(rng.uniform(*np.log(wet_fraction)))
    rain = rain_from_gaussian(frames, wet, wet_median, wet_log_sd, wet_mm_h)
    with np.errstate(divide="ignore"):
        dbz = rainrate_to_dbz(rain, *MARSHALL_PALMER_ZR)
    dbz = np.clip(np.where(rain > 0, dbz, dry_dbz), dry_dbz, MAX_DBZ).astype(np.float32)
    return dbz, {"u": u, "A": A, "translation": uu, "wet_fraction": wet, "pixel_km": pixel_km,
                 "level_wavelength_km": wavelength, "rho1": rho1, "rho2": rho2}


class StepsRadar(GeneratedSequences):
    """Item `i` is `(x [T_in,1,H,W], y [T_out,1,H,W])`: HKO-7 pixels (dBZ + 10) / 70 in [0, 1],
    from `simulate_steps_radar` (dBZ by Marshall-Palmer; `to_rainrate` inverts it).
    `sim_kwargs` go to `simulate_steps_radar`."""

    def __init__(self, split: str = "train", num_sequences: int = 1000, input_frames: int = 5,
                 output_frames: int = 15, image_size: int = 64, seed: int = 0,
                 **sim_kwargs) -> None:
        super().__init__(split, num_sequences, input_frames, output_frames, seed)
        self.image_size, self.sim_kwargs = image_size, sim_kwargs

    def simulate(self, index: int) -> tuple[np.ndarray, dict]:
        """The reflectivity `[T, H, W]` (dBZ) behind item `index` and its parameters."""
        return simulate_steps_radar(self.rng(index), self.seq_len, self.image_size,
                                    **self.sim_kwargs)

    def generate(self, rng: np.random.Generator) -> np.ndarray:
        return simulate_steps_radar(rng, self.seq_len, self.image_size, **self.sim_kwargs)[0]

    def to_frames(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(dbz_to_pixel(raw)).unsqueeze(1)  # [T, 1, H, W]

    @staticmethod
    def to_rainrate(pixels: torch.Tensor) -> torch.Tensor:
        """Pixels to rain rate in mm/h (Marshall-Palmer, as generated)."""
        return pixel_to_rainrate(pixels, *MARSHALL_PALMER_ZR)


class StepsRadarDataModule(GeneratedDataModule):
    """Synthetic radar with real rain's statistics (`simulate_steps_radar`), generated on the
    fly; train/val/test draw from disjoint random streams. Values are HKO-7 pixels in [0, 1];
    the data description converts them to rain rate by Marshall-Palmer. Defaults: 5 frames in,
    15 out, 6-minute steps, 64×64 frames over 256 km.
    """

    dataset = StepsRadar
    source_name = "steps_radar"

    def __init__(
        self, batch_size: int = 8, num_workers: int = 0, train_size: int = 4000,
        val_size: int = 200, test_size: int = 400, input_frames: int = 5, output_frames: int = 15,
        image_size: int = 64, seed: int = 0, domain_km: float = 256.0,
        step_minutes: float = STEP_MINUTES, beta: float = 2.9, tau_100km: float = 600.0,
        tau_exponent: float = 1.65, lag2_exponent: float = 2.6,
        wet_fraction: tuple[float, float] = (0.1, 0.32), wet_median: float = 0.35,
        wet_log_sd: float = 1.23, speed_km_h: tuple[float, float] = (10.0, 50.0),
        rotation: float = 0.01, deformation: float = 0.005, motion_perturbation: float = 0.5,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        self.step_minutes = float(step_minutes)

    def dataset_kwargs(self) -> dict:
        hp = self.hparams
        return dict(image_size=hp.image_size, domain_km=hp.domain_km,
                    step_minutes=hp.step_minutes, beta=hp.beta, tau_100km=hp.tau_100km,
                    tau_exponent=hp.tau_exponent, lag2_exponent=hp.lag2_exponent,
                    wet_fraction=tuple(hp.wet_fraction), wet_median=hp.wet_median,
                    wet_log_sd=hp.wet_log_sd, speed_km_h=tuple(hp.speed_km_h),
                    rotation=hp.rotation, deformation=hp.deformation,
                    motion_perturbation=hp.motion_perturbation)

    def frame_size(self) -> tuple[int, int]:
        return self.hparams.image_size, self.hparams.image_size

    @staticmethod
    def to_rainrate(pixels: torch.Tensor) -> torch.Tensor:
        """Model-space pixels to rain rate in mm/h (Marshall-Palmer, as generated)."""
        return pixel_to_rainrate(pixels, *MARSHALL_PALMER_ZR)

    def describe(self) -> DataDescription:
        """HKO-7 pixels with the Marshall-Palmer Z-R relation, so `convcast test` converts them
        to the rain rate they were made from."""
        d = super().describe()
        return DataDescription(d.input_frames, d.output_frames, 1, d.frame_size,
                               radar=RadarValues("pixel", zr=MARSHALL_PALMER_ZR),
                               step_minutes=self.step_minutes, source=d.source,
                               datamodule=d.datamodule)
