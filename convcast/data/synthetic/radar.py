"""Synthetic radar echoes: power-law rain fields advected by smooth motion, growing and decaying.

A stand-in for a radar archive (tests, demo, the CPU benchmark), built from the statistics that
make nowcasting what it is:
- Space: a Gaussian field with the power-law spectrum of rain, P(k) ∝ (k² + k0²)^(-β/2), β = 3
  (radar rain fields show β ≈ 2.5–3.5; pysteps and STEPS model them this way); the outer scale
  1/k0 is the frame size. Thresholding the field (`g > g0`) makes the intermittent cells, and
  reflectivity rises linearly in `g` above the threshold (dBZ is a logarithm, so rain rate grows
  exponentially with `g`), clipped to 0–60 dBZ; no rain is 0 dBZ.
- Time (Lagrangian): every Fourier mode of the field follows its own AR(1) process with a lifetime
  proportional to its wavelength (τ = `lifetime` × λ / frame size steps), so small cells
  decorrelate within a few frames while large systems persist, as in STEPS. On top, a smooth
  growth/decay field (moving with the rain) shifts intensity linearly in time: the trend is in the
  input frames, so a learned model can extrapolate it and pure advection cannot.
- Motion: a steady linear flow V(x) = u + A (x − c) per sequence: translation u, rotation and
  area-preserving deformation in A. Frame t samples the Lagrangian field at the exact departure
  points of the flow (RK4 backwards from the frame grid) with one bilinear interpolation, so
  advection adds no cumulative blur. The field lives on a padded grid, so rain enters the frame.
Sizes are given for 64×64 frames and scale with `image_size` (a 32×32 sequence is a coarser view
of the same weather). Sequence `i` comes from its own stream seeded by `(seed, split, i)`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import torch
from scipy.ndimage import map_coordinates

from convcast.data.description import DataDescription, RadarValues
from convcast.data.synthetic.base import GeneratedDataModule, GeneratedSequences
from convcast.data.units import HKO_ZR, dbz_to_pixel, pixel_to_rainrate

MAX_DBZ = 60.0
STEP_MINUTES = 6.0  # the nominal time between frames, as the HKO radar


def spectral_filter(shape: tuple[int, int], beta: float, outer: float) -> np.ndarray:
    """Amplitude filter `[H, W//2+1]` on the rfft2 grid: (k² + k0²)^(-β/4), k0 = 1/outer,
    scaled so that filtered unit white noise has unit variance."""
    ky = sfft.fftfreq(shape[0])[:, None]  # cycles per pixel
    kx = sfft.fftfreq(shape[1])[None, :]
    k2 = ky**2 + kx**2  # [H, W] full grid, for the normalisation
    amp = (k2 + outer**-2) ** (-beta / 4)
    amp /= math.sqrt(np.mean(amp**2))  # var of ifft2(amp * fft2(noise)) = mean(amp²)
    return amp[:, : shape[1] // 2 + 1]


def mode_persistence(shape: tuple[int, int], lifetime: float, frame: float,
                     exponent: float = 1.0) -> np.ndarray:
    """AR(1) coefficient per rfft2 mode `[H, W//2+1]`: exp(-1/τ), τ = lifetime·(λ/frame)^exponent
    steps for wavelength λ (capped at the frame size, the scale of whole systems)."""
    ky = sfft.fftfreq(shape[0])[:, None]
    kx = sfft.rfftfreq(shape[1])[None, :]
    wavelength = 1.0 / np.maximum(np.sqrt(ky**2 + kx**2), 1.0 / frame)  # [H, W//2+1] px
    tau = lifetime * (wavelength / frame) ** exponent
    return np.exp(-1.0 / np.maximum(tau, 1e-3))


def flow(points: np.ndarray, u: np.ndarray, A: np.ndarray, centre: float) -> np.ndarray:
    """Velocity `[2, ...]` (row, col) px/step of V(x) = u + A (x - c) at `points` `[2, ...]`."""
    y = points - centre
    return u.reshape(2, *([1] * (points.ndim - 1))) + np.tensordot(A, y, axes=1)


def departure_points(size: int, steps: int, u: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Where the rain at each pixel at time t was at time 0: `[steps, 2, size, size]`, by RK4
    integration of the steady flow backwards one step at a time."""
    c = (size - 1) / 2
    p = np.stack(np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64),
                             indexing="ij"))  # [2, size, size]
    out = np.empty((steps, 2, size, size))
    out[0] = p
    for t in range(1, steps):
        k1 = flow(p, u, A, c)
        k2 = flow(p - 0.5 * k1, u, A, c)
        k3 = flow(p - 0.5 * k2, u, A, c)
        k4 = flow(p - k3, u, A, c)
        p = p - (k1 + 2 * k2 + 2 * k3 + k4) / 6
        out[t] = p
    return out


def draw_motion(rng: np.random.Generator, scale: float, speed: tuple[float, float],
                rotation: float, deformation: float) -> tuple[np.ndarray, np.ndarray]:
    """A random steady flow: translation u `[2]` (px/step) and the linear part A `[2, 2]`."""
    angle = rng.uniform(0, 2 * np.pi)
    u = rng.uniform(*speed) * scale * np.array([np.sin(angle), np.cos(angle)])
    w = rng.uniform(-rotation, rotation)
    d, s = rng.uniform(-deformation, deformation, size=2)  # stretch and shear, no divergence
    A = np.array([[d, s - w], [s + w, -d]])
    return u, A


def simulate_radar(
    rng: np.random.Generator, seq_len: int = 20, image_size: int = 64, beta: float = 3.0,
    lifetime: float = 200.0, lifetime_exponent: float = 1.0,
    speed: tuple[float, float] = (0.25, 1.25),
    rotation: float = 0.01, deformation: float = 0.005,
    wet_threshold: tuple[float, float] = (0.0, 1.2),
    dbz_slope: tuple[float, float] = (12.0, 20.0), growth: float = 0.03,
    motion: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """One sequence of reflectivity `[seq_len, image_size, image_size]` float32 in [0, 60] dBZ
    and its parameters (`u`, `A` of the flow, `g0`, `slope`, `growth`).

    `speed` (px/step), `rotation` (rad/step), `deformation` (1/step) and the wavelengths behind
    `lifetime` are for 64×64 frames and scale with `image_size`; `growth` is the largest change of
    the rain threshold per step (in standard deviations of the field); `motion=(u, A)` fixes the
    flow instead of drawing it.
    """
    scale = image_size / 64
    u, A = motion if motion is not None else draw_motion(rng, scale, speed, rotation, deformation)
    u, A = np.asarray(u, dtype=np.float64), np.asarray(A, dtype=np.float64)
    dep = departure_points(image_size, seq_len, u, A)  # [T, 2, S, S] frame coordinates
    lo, hi = np.floor(dep.min()) - 2, np.ceil(dep.max()) + 2
    n = sfft.next_fast_len(int(max(hi - lo + 1, 2 * image_size)))  # padded Lagrangian grid
    # space: power-law filtered noise; time: AR(1) per Fourier mode
    amp = spectral_filter((n, n), beta, outer=image_size)  # [n, n//2+1]
    phi = mode_persistence((n, n), lifetime, image_size, lifetime_exponent)  # [n, n//2+1]
    eps = sfft.rfft2(rng.standard_normal((seq_len, n, n)))  # [T, n, n//2+1] white noise
    innov = np.sqrt(1 - phi**2)
    for t in range(1, seq_len):
        eps[t] = phi * eps[t - 1] + innov * eps[t]
    g = sfft.irfft2(amp * eps, s=(n, n))  # [T, n, n] unit-variance fields
    # growth/decay: a smooth field (outer-scale dominated) shifting the threshold per step
    smooth = sfft.irfft2(spectral_filter((n, n), 5.0, outer=image_size)
                         * sfft.rfft2(rng.standard_normal((n, n))), s=(n, n))  # [n, n]
    rate = rng.uniform(-growth, growth) + 0.5 * growth * smooth  # [n, n] std per step
    g += np.arange(seq_len)[:, None, None] * rate  # [T, n, n]
    # Eulerian frames: sample each Lagrangian field at its departure points
    frames = np.empty((seq_len, image_size, image_size), dtype=np.float32)
    for t in range(seq_len):
        frames[t] = map_coordinates(g[t], dep[t] - lo, order=1, mode="wrap")
    g0, slope = rng.uniform(*wet_threshold), rng.uniform(*dbz_slope)
    dbz = np.clip(slope * (frames - g0), 0.0, MAX_DBZ)  # [T, S, S] intermittent rain
    return dbz, {"u": u, "A": A, "g0": g0, "slope": slope, "growth": rate.mean()}


class SyntheticRadar(GeneratedSequences):
    """Item `i` is `(x [T_in,1,H,W], y [T_out,1,H,W])`: HKO-7 pixels (dBZ + 10) / 70 in [0, 1].

    Thresholds in mm/h apply after `to_rainrate` (Z = 58.53 R^1.56 by default, HKO-7).
    `sim_kwargs` go to `simulate_radar` (speed, rotation, lifetime, growth, ...).
    """

    def __init__(self, split: str = "train", num_sequences: int = 1000, input_frames: int = 5,
                 output_frames: int = 15, image_size: int = 64, seed: int = 0,
                 **sim_kwargs) -> None:
        super().__init__(split, num_sequences, input_frames, output_frames, seed)
        self.image_size, self.sim_kwargs = image_size, sim_kwargs

    def simulate(self, index: int) -> tuple[np.ndarray, dict]:
        """The reflectivity `[T, H, W]` (dBZ) behind item `index` and its parameters."""
        return simulate_radar(self.rng(index), self.seq_len, self.image_size, **self.sim_kwargs)

    def generate(self, rng: np.random.Generator) -> np.ndarray:
        return simulate_radar(rng, self.seq_len, self.image_size, **self.sim_kwargs)[0]

    def to_frames(self, raw: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(dbz_to_pixel(raw)).unsqueeze(1)  # [T, 1, H, W] in [1/7, 1]

    @staticmethod
    def to_rainrate(pixels: torch.Tensor, a: float = HKO_ZR[0], b: float = HKO_ZR[1]
                    ) -> torch.Tensor:
        """Model-space pixels to rain rate in mm/h (for the skill-score thresholds)."""
        return pixel_to_rainrate(pixels, a, b)


class SyntheticRadarDataModule(GeneratedDataModule):
    """Synthetic radar generated on the fly; train/val/test draw from disjoint random streams.

    Values are HKO-7 pixels in [0, 1] (so a sigmoid output fits); the data description converts
    them to rain rate for thresholds in mm/h. Defaults follow Shi et al.: 5 frames in, 15 out
    (6-minute steps).
    """

    dataset = SyntheticRadar
    source_name = "synthetic_radar"
    step_minutes = STEP_MINUTES

    def __init__(
        self, batch_size: int = 8, num_workers: int = 0, train_size: int = 4000,
        val_size: int = 200, test_size: int = 400, input_frames: int = 5, output_frames: int = 15,
        image_size: int = 64, seed: int = 0, speed: tuple[float, float] = (0.25, 1.25),
        rotation: float = 0.01, deformation: float = 0.005, lifetime: float = 200.0,
        growth: float = 0.03, beta: float = 3.0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()

    def dataset_kwargs(self) -> dict:
        hp = self.hparams
        return dict(image_size=hp.image_size, speed=tuple(hp.speed), rotation=hp.rotation,
                    deformation=hp.deformation, lifetime=hp.lifetime, growth=hp.growth,
                    beta=hp.beta)

    def frame_size(self) -> tuple[int, int]:
        return self.hparams.image_size, self.hparams.image_size

    @staticmethod
    def to_rainrate(pixels: torch.Tensor) -> torch.Tensor:
        """Model-space pixels to rain rate in mm/h (HKO-7 Z-R relation)."""
        return pixel_to_rainrate(pixels)

    def describe(self) -> DataDescription:
        """HKO-7 pixels (dBZ + 10) / 70, so `convcast nowcast` reads real radar archives (any
        units) into the same scale, and `convcast test` converts to mm/h by HKO-7's Z-R."""
        d = super().describe()
        return DataDescription(d.input_frames, d.output_frames, 1, d.frame_size,
                               radar=RadarValues("pixel"), step_minutes=STEP_MINUTES,
                               source=d.source, datamodule=d.datamodule)
