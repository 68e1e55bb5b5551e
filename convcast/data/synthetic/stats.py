"""The statistics that make rain look like rain, for comparing generated and real radar fields.

`rain_statistics` measures, on a sequence of rain-rate frames (mm/h), what the STEPS family of
models (and `radar_steps`) is built on: the power-spectrum slope of the dBR field, the wet-area
fraction, the intensity distribution of wet pixels and the decorrelation time of each spatial
scale in the Lagrangian frame. All the heavy lifting is pysteps' (`pysteps.utils.spectral.rapsd`,
`pysteps.cascade`, `pysteps.motion` Lucas-Kanade, `pysteps.extrapolation.semilagrangian`,
`pysteps.timeseries.correlation`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from convcast.pysteps_modules import pysteps_module

REFERENCE_KM = (16.0, 32.0, 64.0, 128.0)  # wavelengths at which decorrelation times are compared
NEEDED_BY = "convcast.data.synthetic.stats"


def _pysteps(name: str):
    return pysteps_module(name, needed_by=NEEDED_BY)


def to_dbr(frames: np.ndarray, wet_mm_h: float) -> tuple[np.ndarray, float]:
    """Rain rate `[..., H, W]` (mm/h, NaN kept) to dBR = 10 log10 R, rain below `wet_mm_h` set
    to pysteps' zero value (10 log10 `wet_mm_h` - 5); returns the field and the zero value."""
    dbr, meta = _pysteps("utils.transformation").dB_transform(
        np.asarray(frames, dtype=np.float64), threshold=wet_mm_h)
    return dbr, float(meta["zerovalue"])


def spectral_slope(dbr: np.ndarray, zerovalue: float, min_pixels: float = 4.0,
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Slope β of the radially averaged PSD P(k) ∝ k^-β of dBR frames `[T, H, W]`.

    Each frame with rain (no data counts as no rain) is tapered by pysteps' Tukey window after
    subtracting its mean where the taper acts (0 for a frame with dry edges, as pysteps shifts
    no rain to 0), padded with zeros to a square and its RAPSD (`rapsd`) taken; the mean RAPSD
    over frames is fitted by least squares in log-log over the radial bins with wavelengths from
    `min_pixels` to half the domain. Returns (β, wavenumbers [cycles/pixel], mean PSD).
    """
    spectral, tapering = _pysteps("utils.spectral"), _pysteps("utils.tapering")
    _, H, W = dbr.shape
    L = max(H, W)
    window = tapering.compute_window_function(H, W, "tukey")
    border = (1.0 - window) / np.sum(1.0 - window)  # weights of the tapered border
    psds = []
    for frame in dbr:
        f = np.nan_to_num(frame - zerovalue, nan=0.0)
        if not f.any():
            continue
        square = np.zeros((L, L))
        square[:H, :W] = (f - np.sum(f * border)) * window
        psds.append(spectral.rapsd(square, fft_method=np.fft))
    if not psds:
        return math.nan, np.empty(0), np.empty(0)
    psd = np.mean(psds, axis=0)
    k = np.arange(len(psd)) / L  # cycles per pixel
    fit = (k >= 2.0 / L) & (k <= 1.0 / min_pixels) & (psd > 0)
    slope = np.polyfit(np.log(k[fit]), np.log(psd[fit]), 1)[0]
    return float(-slope), k, psd


def lagrangian_correlations(dbr: np.ndarray, zerovalue: float, n_levels: int = 6,
                            min_wet: int = 16, wet_level: float | None = None,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lag-1 and lag-2 correlation of each cascade level in the Lagrangian frame.

    For every three consecutive frames (t-2, t-1, t) with `min_wet` wet pixels or more each
    (dBR >= `wet_level`), the motion is estimated by pysteps' Lucas-Kanade on the three, frames
    t-1 and t-2 are advected to time t (semi-Lagrangian, one and two steps), the three fields
    are decomposed into `n_levels` levels by the Gaussian band-pass filters of
    `pysteps.cascade`, and each level's correlations
    (`temporal_autocorrelation`) are taken over the pixels valid in all three. Returns the
    central frequencies of the levels (cycles/pixel) `[n_levels]` and the mean rho1, rho2
    over the triples `[n_levels]` (NaN if no triple had rain).
    """
    motion = _pysteps("motion.lucaskanade")
    extrapolate = _pysteps("extrapolation.semilagrangian").extrapolate
    bandpass = _pysteps("cascade.bandpass_filters")
    decomposition = _pysteps("cascade.decomposition")
    correlation = _pysteps("timeseries.correlation")
    T, H, W = dbr.shape
    bp = bandpass.filter_gaussian((H, W), n_levels)
    wet_level = zerovalue + 5.0 if wet_level is None else wet_level  # the rain threshold in dB
    wet = [int(np.sum(f >= wet_level)) for f in dbr]
    rho = []
    for t in range(2, T):
        if min(wet[t - 2:t + 1]) < min_wet:
            continue
        with warnings.catch_warnings():  # sparse rain: pysteps warns of singular outlier tests
            warnings.filterwarnings("ignore", message=".*during outlier detection")
            V = motion.dense_lucaskanade(dbr[t - 2:t + 1], verbose=False)  # [2, H, W] px/step
        if not np.isfinite(V).all():
            V = np.nan_to_num(V)
        prev1 = extrapolate(dbr[t - 1], V, 1, outval=np.nan, allow_nonfinite_values=True)[0]
        prev2 = extrapolate(dbr[t - 2], V, 2, outval=np.nan, allow_nonfinite_values=True)[-1]
        stack = np.stack([prev2, prev1, dbr[t]])  # [3, H, W], oldest first
        valid = np.isfinite(stack).all(axis=0)
        if valid.sum() < 4 * min_wet:
            continue
        # left out of the correlations, but filled so that no edge rings in the cascade: rain
        # advected in from outside by the frame's own (unmoved) values, no data by no rain
        stack = np.where(np.isfinite(stack), stack, dbr[t - 2:t + 1])
        stack = np.where(np.isfinite(stack), stack, zerovalue)
        levels = np.stack([decomposition.decomposition_fft(f, bp)["cascade_levels"]
                           for f in stack])  # [3, n_levels, H, W]
        rho.append([correlation.temporal_autocorrelation(levels[:, k], mask=valid)[:2]
                    for k in range(n_levels)])  # rho1 = corr(t, t-1), rho2 = corr(t, t-2)
    freqs = np.asarray(bp["central_freqs"], dtype=np.float64)
    if not rho:
        return freqs, np.full(n_levels, np.nan), np.full(n_levels, np.nan)
    r = np.mean(np.asarray(rho), axis=0)  # [n_levels, 2]
    return freqs, r[:, 0], r[:, 1]


def efolding_minutes(rho: np.ndarray, step_minutes: float) -> np.ndarray:
    """The e-folding time tau = -step / ln(rho) in minutes (0 where rho <= 0, inf at rho >= 1)."""
    rho = np.asarray(rho, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = -step_minutes / np.log(np.clip(rho, 1e-12, 1.0))
    return np.where(rho <= 0, 0.0, tau)


def interpolate_loglog(x: np.ndarray, y: np.ndarray, at: tuple[float, ...]) -> list[float]:
    """y at each of `at` by linear interpolation in log x - log y (NaN outside the x range)."""
    ok = np.isfinite(y) & (y > 0) & np.isfinite(x)
    x, y = np.asarray(x)[ok], np.asarray(y)[ok]
    order = np.argsort(x)
    lx, ly = np.log(x[order]), np.log(y[order])
    out = []
    for a in at:
        la = math.log(a)
        inside = len(lx) >= 2 and lx[0] <= la <= lx[-1]
        out.append(float(np.exp(np.interp(la, lx, ly))) if inside else math.nan)
    return out


def rain_statistics(frames: np.ndarray, *, step_minutes: float, pixel_km: float,
                    wet_mm_h: float = 0.1, n_levels: int = 6,
                    reference_km: tuple[float, ...] = REFERENCE_KM) -> dict[str, Any]:
    """The statistics of a sequence of rain-rate frames `[T, H, W]` in mm/h (NaN: no data, left
    out): a dict of plain floats and lists.

    - `spectral_slope`: β of P(k) ∝ k^-β of the dBR field (`spectral_slope`), wavelengths from 4
      pixels to half the domain;
    - `wet_fraction`: the fraction of valid pixels with rain >= `wet_mm_h`;
    - `wet_q50`, `wet_q90`, `wet_q99`, `wet_mean`: quantiles and mean of the wet pixels (mm/h);
    - `level_wavelength_km`, `level_rho1`, `level_rho2`, `level_tau_minutes`: per cascade level
      (`n_levels` Gaussian band-pass levels, largest scale first), its central wavelength, the
      lag-1 and lag-2 correlations and the e-folding time tau = -step / ln(rho1), all in the
      Lagrangian frame (Lucas-Kanade motion, `lagrangian_correlations`);
    - `tau_minutes_at`: tau interpolated (log-log) at the wavelengths `reference_km`, so domains
      of different sizes (whose levels sit at different wavelengths) compare; NaN outside;
    - `lag2_exponent`: the median of ln(rho2) / ln(rho1) over the levels between the smallest
      and largest of `reference_km` (2 for an exponential decay, more where correlation falls
      faster than exponentially).
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {frames.shape}")
    valid = np.isfinite(frames)
    wet = valid & (np.nan_to_num(frames, nan=0.0) >= wet_mm_h)
    rain = frames[wet]
    q = np.quantile(rain, [0.5, 0.9, 0.99]) if rain.size else np.full(3, math.nan)
    dbr, zero = to_dbr(frames, wet_mm_h)
    beta = spectral_slope(dbr, zero)[0]
    freqs, rho1, rho2 = lagrangian_correlations(dbr, zero, n_levels,
                                                wet_level=10 * math.log10(wet_mm_h))
    wavelength = pixel_km / freqs  # km
    tau = efolding_minutes(rho1, step_minutes)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.log(rho2) / np.log(rho1)  # [levels]
    inside = (wavelength >= min(reference_km)) & (wavelength <= max(reference_km))
    inside &= np.isfinite(shape)
    return {
        "spectral_slope": beta,
        "wet_fraction": float(wet.sum() / max(valid.sum(), 1)),
        "wet_q50": float(q[0]), "wet_q90": float(q[1]), "wet_q99": float(q[2]),
        "wet_mean": float(rain.mean()) if rain.size else math.nan,
        "level_wavelength_km": wavelength.tolist(), "level_rho1": rho1.tolist(),
        "level_rho2": rho2.tolist(), "level_tau_minutes": tau.tolist(),
        "tau_minutes_at": dict(zip([f"{r:g}" for r in reference_km],
                                   interpolate_loglog(wavelength, tau, reference_km),
                                   strict=True)),
        "lag2_exponent": float(np.median(shape[inside])) if inside.any() else math.nan,
        "frames": int(len(frames)), "shape": [int(s) for s in frames.shape[1:]],
        "step_minutes": float(step_minutes), "pixel_km": float(pixel_km),
    }


def summary(stats: dict[str, Any]) -> dict[str, float]:
    """The scalars of `rain_statistics` that are compared: slope, wet fraction, intensities,
    `tau_<λ>km` at each reference wavelength and the lag-2 exponent."""
    out = {k: float(stats[k]) for k in ("spectral_slope", "wet_fraction", "wet_q50", "wet_q90",
                                         "wet_q99", "wet_mean")}
    out.update({f"tau_{k}km": float(v) for k, v in stats["tau_minutes_at"].items()})
    out["lag2_exponent"] = float(stats["lag2_exponent"])
    return out


def median_summary(summaries: list[dict[str, float]]) -> dict[str, float]:
    """The median of each scalar over several summaries (NaN left out)."""
    return {k: float(np.nanmedian([s[k] for s in summaries])) for k in summaries[0]}


def compare(measured: dict[str, float], reference: dict[str, float],
            tolerances: dict[str, tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """Each toleranced scalar of `measured` against `reference`: the error and whether it is
    within the tolerance, ("abs", d): |m - r| <= d; ("rel", f): |m / r - 1| <= f;
    ("factor", f): 1/f <= m / r <= f."""
    out = {}
    for key, (kind, tol) in tolerances.items():
        m, r = measured[key], reference[key]
        if kind == "abs":
            err, ok = m - r, abs(m - r) <= tol
        elif kind == "rel":
            err = m / r - 1
            ok = abs(err) <= tol
        elif kind == "factor":
            err = m / r
            ok = 1 / tol <= err <= tol
        else:
            raise ValueError(f"unknown tolerance kind {kind!r} (abs, rel, factor)")
        out[key] = {"measured": m, "reference": r, "error": float(err), "kind": kind,
                    "tolerance": tol, "ok": bool(ok)}
    return out
