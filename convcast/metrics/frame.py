"""Frame metrics of video prediction: MSE, MAE (two conventions), SSIM and PSNR per lead time.

All take `[B, T, C, H, W]` tensors and return `[T]` (one value per lead time), or the mean over
lead times with `reduction="mean"`. Conventions, so numbers compare with published tables:
- `mse`, `mae` (per frame, PredRNN / OpenSTL tables): the error summed over a frame's pixels and
  channels, averaged over the frames (sequences) at that lead time. Values in [0, 1] data.
- `mse_pixel`, `mae_pixel`: the plain mean over every pixel and channel at that lead time.
- `ssim`: per frame (mean over channels), then mean over frames. Default as scikit-image's
  `structural_similarity` defaults, which the field's tables use: 7x7 uniform window, sample
  covariance, K1=0.01, K2=0.03, the (win-1)/2 border cropped before averaging (computed in
  float64, so it matches scikit-image on CPU and GPU alike).
  `gaussian=True`: the 11x11 sigma=1.5 Gaussian window with population covariance (Wang et al.).
- `psnr`: per frame 10*log10(data_range**2 / mse_pixel_of_frame), then mean over frames; a
  perfect frame (error 0) would be +inf and is capped at `max_db` (default 100 dB).
With a mask (True = valid), MSE/MAE sum only valid pixels; per frame they still divide by every
frame (HKO-7's masked MSE), per pixel by the valid pixel count (NaN if none).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio

from convcast.metrics.checks import (
    LEAD_DIMS,
    Reduction,
    check_data_range,
    check_pair,
    reduce_lead_time,
    safe_div,
)
from convcast.metrics.streaming import LeadTimeMetric

MAX_PSNR_DB = 100.0  # cap for a perfect frame, whose PSNR is infinite


# ----------------------------------------------------------------------------- per-batch sums

def _error_sums(pred: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """Squared and absolute error sums, valid-pixel and frame counts, each `[T]` float64."""
    diff = pred - target  # [B, T, C, H, W]
    if mask is not None:
        diff = torch.where(mask, diff, torch.zeros_like(diff))
        n_pix = mask.sum(dim=LEAD_DIMS, dtype=torch.float64)  # [T]
    else:
        n_pix = torch.full((pred.shape[1],), pred[:, 0].numel(), dtype=torch.float64,
                           device=pred.device)  # [T]
    return {
        "sq": (diff * diff).sum(dim=LEAD_DIMS, dtype=torch.float64),  # [T]
        "ab": diff.abs().sum(dim=LEAD_DIMS, dtype=torch.float64),  # [T]
        "n_pix": n_pix,
        "n_frames": torch.full_like(n_pix, pred.shape[0]),  # [T]
    }


def _window(gaussian: bool, win_size: int, sigma: float, like: Tensor) -> Tensor:
    """The 1-D separable SSIM window: uniform of `win_size`, or Gaussian 2*int(3.5*sigma+0.5)+1."""
    if gaussian:
        if not sigma > 0 or not math.isfinite(sigma):
            raise ValueError(f"ssim: sigma of the Gaussian window must be positive, got {sigma}")
        radius = int(3.5 * sigma + 0.5)  # scipy.ndimage's truncate=3.5, as skimage uses
        x = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
        g = torch.exp(-0.5 * (x / sigma) ** 2)
        return g / g.sum()
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be odd and positive, got {win_size}")
    return torch.full((win_size,), 1.0 / win_size, dtype=like.dtype, device=like.device)


def ssim_frames(pred: Tensor, target: Tensor, data_range: float, gaussian: bool = False,
                 win_size: int = 7, sigma: float = 1.5,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """SSIM of every frame `[B, T]`: mean of the SSIM map over the valid (cropped) area and
    over channels. Differentiable; `dtype=torch.float32` for a fast training loss."""
    B, T, C, H, W = pred.shape
    # float64: E[x^2] - E[x]^2 cancels, and GPU convolutions may otherwise run in TF32
    x = pred.reshape(B * T * C, 1, H, W).to(dtype)  # [N, 1, H, W]
    y = target.reshape(B * T * C, 1, H, W).to(dtype)
    g = _window(gaussian, win_size, sigma, x)  # [k]
    k = g.numel()
    if min(H, W) < k:
        raise ValueError(f"ssim: frames of {H}x{W} are smaller than the {k}x{k} window; use a "
                         "smaller win_size")
    cov_norm = 1.0 if gaussian else k * k / (k * k - 1)  # sample covariance for uniform window
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    gh = g.view(1, 1, k, 1).repeat(5, 1, 1, 1)  # [5, 1, k, 1] vertical pass, one per map
    gw = g.view(1, 1, 1, k).repeat(5, 1, 1, 1)  # [5, 1, 1, k] horizontal pass
    chunk = max(1, 2**23 // (H * W))  # frames per chunk: bounds the memory of the 5 maps
    out = []
    for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
        maps = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=1)  # [n, 5, H, W]
        # a "valid" convolution is the filtered image with the (k-1)/2 border already cropped
        m = F.conv2d(F.conv2d(maps, gh, groups=5), gw, groups=5)  # [n, 5, H-k+1, W-k+1]
        ux, uy, uxx, uyy, uxy = m.unbind(dim=1)  # each [n, H-k+1, W-k+1]
        vx = cov_norm * (uxx - ux * ux)
        vy = cov_norm * (uyy - uy * uy)
        vxy = cov_norm * (uxy - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        out.append(s.mean(dim=(1, 2)))  # [n]
    return torch.cat(out).view(B, T, C).mean(dim=2)  # [B, T]


def _psnr_frames(pred: Tensor, target: Tensor, data_range: float,
                 max_db: float | None = MAX_PSNR_DB) -> Tensor:
    """PSNR of every frame `[B, T]` in dB (torchmetrics, per frame), capped at `max_db`."""
    B, T = pred.shape[:2]
    p = peak_signal_noise_ratio(pred.flatten(0, 1), target.flatten(0, 1), data_range=data_range,
                                reduction="none", dim=(1, 2, 3))  # [B*T]
    if max_db is not None:
        p = p.clamp(max=max_db)
    return p.view(B, T)


# ----------------------------------------------------------------------------- one pair per score

@dataclass(frozen=True)
class Score:
    """One frame metric: the per-lead-time sums it streams (`states`) and its value from them.
    The functional, its `Metric` class and `FrameMetrics` all go through `batch_sums` and
    `value`, so the three cannot disagree."""

    states: tuple[str, ...]
    value: Callable[[dict[str, Tensor]], Tensor]  # {state: [T]} -> [T]
    whole_frames: bool = False  # SSIM and PSNR: no mask
    higher_is_better: bool = False


SCORES: dict[str, Score] = {
    "mse": Score(("sq", "n_frames"), lambda s: s["sq"] / s["n_frames"]),
    "mae": Score(("ab", "n_frames"), lambda s: s["ab"] / s["n_frames"]),
    "mse_pixel": Score(("sq", "n_pix"), lambda s: safe_div(s["sq"], s["n_pix"])),
    "mae_pixel": Score(("ab", "n_pix"), lambda s: safe_div(s["ab"], s["n_pix"])),
    "ssim": Score(("ssim", "n_frames"), lambda s: s["ssim"] / s["n_frames"], True, True),
    "psnr": Score(("psnr", "n_frames"), lambda s: s["psnr"] / s["n_frames"], True, True),
}


SumsFn = Callable[[Tensor, Tensor, "Tensor | None"], dict[str, Tensor]]
_EXTRA_SUMS: dict[tuple[str, ...], SumsFn] = {}  # states -> what computes them


def register_score(name: str, score: Score, sums: SumsFn | None = None) -> None:
    """Add a frame metric: its function is `_score(name, ...)`, and `FrameMetrics` streams it
    from then on with the built-in ones. `sums(pred, target, mask) -> {state: [T] float64}`
    computes the states `score` needs beyond the built-in ones (sq, ab, n_pix, n_frames).

    A new metric is one file in `convcast/metrics/` (the package imports every module), e.g.
    the largest absolute error of each frame, averaged over frames::

        def _max_error(pred, target, mask):
            err = (pred - target).abs().flatten(2).amax(dim=2)  # [B, T]
            return {"max_err": err.sum(dim=0, dtype=torch.float64)}

        register_score("max_error", Score(("max_err", "n_frames"),
                                          lambda s: s["max_err"] / s["n_frames"]), _max_error)
    """
    if name in SCORES:
        raise ValueError(f"frame metric {name!r} is registered twice")
    own = tuple(st for st in score.states if st not in ("sq", "ab", "n_pix", "n_frames"))
    if own and sums is None:
        raise ValueError(f"frame metric {name!r} needs states {own}: give sums= that computes "
                         "them")
    SCORES[name] = score
    if own:
        _EXTRA_SUMS[own] = sums


@dataclass(frozen=True)
class SSIMOptions:
    """SSIM's window: skimage's 7x7 uniform (default) or `gaussian` (sigma; size from sigma)."""

    gaussian: bool = False
    win_size: int = 7
    sigma: float = 1.5


def batch_sums(pred: Tensor, target: Tensor, mask: Tensor | None, states: set[str], *,
               data_range: float | None, ssim: SSIMOptions = SSIMOptions(),
               max_db: float | None = MAX_PSNR_DB) -> dict[str, Tensor]:
    """The per-lead-time sums `[T]` (float64) of one batch that `states` name."""
    out = _error_sums(pred, target, mask)  # cheap next to SSIM; always has the counts
    if "ssim" in states:
        out["ssim"] = ssim_frames(pred, target, data_range, ssim.gaussian, ssim.win_size,
                                  ssim.sigma).sum(dim=0, dtype=torch.float64)  # [T]
    if "psnr" in states:
        out["psnr"] = _psnr_frames(pred, target, data_range, max_db).sum(
            dim=0, dtype=torch.float64)  # [T]
    for provides, fn in _EXTRA_SUMS.items():
        if states.intersection(provides):
            out.update(fn(pred, target, mask))
    return {k: v for k, v in out.items() if k in states}


def _score(name: str, pred: Tensor, target: Tensor, mask: Tensor | None,
           data_range: float | None, reduction: Reduction, **options: Any) -> Tensor:
    """A functional: checks, this batch's sums, the score's value."""
    pred, target, mask = check_pair(name, pred, target, mask, data_range)
    score = SCORES[name]
    sums = batch_sums(pred, target, mask, set(score.states), data_range=data_range, **options)
    return reduce_lead_time(score.value(sums), reduction)


# ----------------------------------------------------------------------------- functionals

def mse(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
        data_range: float | None = 1.0, reduction: Reduction = "none") -> Tensor:
    """Per-frame MSE (PredRNN/OpenSTL): squared error summed over each frame, mean over frames.
    `data_range` only sets the range check (None skips it)."""
    return _score("mse", pred, target, mask, data_range, reduction)


def mae(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
        data_range: float | None = 1.0, reduction: Reduction = "none") -> Tensor:
    """Per-frame MAE (PredRNN/OpenSTL): absolute error summed over each frame, mean over frames."""
    return _score("mae", pred, target, mask, data_range, reduction)


def mse_pixel(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
              data_range: float | None = 1.0, reduction: Reduction = "none") -> Tensor:
    """Per-pixel MSE: mean squared error over all (valid) pixels and channels of a lead time."""
    return _score("mse_pixel", pred, target, mask, data_range, reduction)


def mae_pixel(pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
              data_range: float | None = 1.0, reduction: Reduction = "none") -> Tensor:
    """Per-pixel MAE: mean absolute error over all (valid) pixels and channels of a lead time."""
    return _score("mae_pixel", pred, target, mask, data_range, reduction)


def ssim(pred: Tensor, target: Tensor, *, data_range: float = 1.0, gaussian: bool = False,
         win_size: int = 7, sigma: float = 1.5, reduction: Reduction = "none") -> Tensor:
    """SSIM per frame, mean over frames: skimage defaults (7x7 uniform, sample covariance), or
    `gaussian=True` for Wang et al.'s window (size from sigma; win_size then unused)."""
    return _score("ssim", pred, target, None, data_range, reduction,
                  ssim=SSIMOptions(gaussian, win_size, sigma))


def psnr(pred: Tensor, target: Tensor, *, data_range: float = 1.0,
         max_db: float | None = MAX_PSNR_DB, reduction: Reduction = "none") -> Tensor:
    """PSNR per frame in dB (10*log10(range**2 / mse_pixel of the frame)), mean over frames;
    a perfect frame counts as `max_db` (None: +inf)."""
    return _score("psnr", pred, target, None, data_range, reduction, max_db=max_db)


def frame_metrics(pred: Tensor, target: Tensor, *, data_range: float = 1.0,
                  gaussian: bool = False, win_size: int = 7, sigma: float = 1.5,
                  mask: Tensor | None = None, ssim_psnr: bool = True,
                  max_db: float | None = MAX_PSNR_DB) -> dict[str, Tensor]:
    """All frame metrics per lead time, `{name: [T]}`: mse, mae, mse_pixel, mae_pixel, and
    (if `ssim_psnr`) ssim, psnr. SSIM/PSNR need whole frames, so a mask needs ssim_psnr=False."""
    metric = FrameMetrics(data_range=data_range, gaussian=gaussian, win_size=win_size,
                          sigma=sigma, ssim_psnr=ssim_psnr, max_db=max_db,
                          sync_on_compute=False).to(pred.device)
    metric.update(pred, target, mask=mask)
    return metric.compute()


# ----------------------------------------------------------------------------- streaming

class FrameMetrics(LeadTimeMetric):
    """Frame metrics streamed over batches; `compute()` gives `{name: [T]}` (or means).

    `metrics`: which of `SCORES` (default: all, or all but SSIM and PSNR with
    `ssim_psnr=False`); SSIM's window options as `ssim`'s.
    """

    higher_is_better = None

    def __init__(self, data_range: float | None = 1.0, gaussian: bool = False,
                 ssim_psnr: bool = True, max_db: float | None = MAX_PSNR_DB,
                 reduction: Reduction = "none", lead_times: int | None = None, *,
                 win_size: int = 7, sigma: float = 1.5, metrics: tuple[str, ...] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(reduction=reduction, lead_times=lead_times, **kwargs)
        if metrics is None:
            metrics = tuple(n for n in SCORES if ssim_psnr or not SCORES[n].whole_frames)
        unknown = [m for m in metrics if m not in SCORES]
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown metrics {unknown}; valid: "
                             f"{', '.join(SCORES)}")
        whole = any(SCORES[m].whole_frames for m in metrics)
        check_data_range(type(self).__name__, data_range, optional=not whole)
        self.metrics, self.data_range, self.max_db = tuple(metrics), data_range, max_db
        self.ssim_options = SSIMOptions(gaussian, win_size, sigma)
        if "ssim" in metrics:
            _window(gaussian, win_size, sigma, torch.zeros(()))  # a bad window fails here
        self.states = sorted({s for m in metrics for s in SCORES[m].states})
        for name in self.states:
            self._add_sum(name)

    def _mask_error(self) -> str:
        return ("FrameMetrics: SSIM and PSNR need whole frames and take no mask; build it with "
                "ssim_psnr=False to stream masked MSE/MAE")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        if mask is not None and any(SCORES[m].whole_frames for m in self.metrics):
            raise ValueError(self._mask_error())
        pred, target, mask = check_pair(type(self).__name__, pred, target, mask,
                                        self.data_range)
        self._accumulate(**batch_sums(pred, target, mask, set(self.states),
                                      data_range=self.data_range, ssim=self.ssim_options,
                                      max_db=self.max_db))

    def compute(self) -> dict[str, Tensor]:
        sums = {name: getattr(self, name) for name in self.states}
        return {m: self._reduce(SCORES[m].value(sums)) for m in self.metrics}


class _OneScore(FrameMetrics):
    """`FrameMetrics` of one score; `compute()` gives its `[T]` (or mean)."""

    score: str

    def __init__(self, data_range: float | None = 1.0, reduction: Reduction = "none",
                 lead_times: int | None = None, **kwargs: Any) -> None:
        super().__init__(data_range=data_range, reduction=reduction, lead_times=lead_times,
                         metrics=(self.score,), **kwargs)

    def _mask_error(self) -> str:
        what = "the window needs whole frames" if self.score == "ssim" else \
            "it is defined on whole frames"
        return f"{self.score.upper()} takes no mask: {what}"

    def compute(self) -> Tensor:
        return super().compute()[self.score]


class MSE(_OneScore):
    """Streaming per-frame MSE (see `mse`)."""

    score, higher_is_better = "mse", False


class MAE(_OneScore):
    """Streaming per-frame MAE (see `mae`)."""

    score, higher_is_better = "mae", False


class MSEPixel(_OneScore):
    """Streaming per-pixel MSE (see `mse_pixel`)."""

    score, higher_is_better = "mse_pixel", False


class MAEPixel(_OneScore):
    """Streaming per-pixel MAE (see `mae_pixel`)."""

    score, higher_is_better = "mae_pixel", False


class SSIM(_OneScore):
    """Streaming per-frame SSIM (see `ssim`); takes no mask."""

    score, higher_is_better = "ssim", True

    def __init__(self, data_range: float = 1.0, gaussian: bool = False, win_size: int = 7,
                 sigma: float = 1.5, **kwargs: Any) -> None:
        super().__init__(data_range=data_range, gaussian=gaussian, win_size=win_size,
                         sigma=sigma, **kwargs)


class PSNR(_OneScore):
    """Streaming per-frame PSNR in dB (see `psnr`); takes no mask."""

    score, higher_is_better = "psnr", True

    def __init__(self, data_range: float = 1.0, max_db: float | None = MAX_PSNR_DB,
                 **kwargs: Any) -> None:
        super().__init__(data_range=data_range, max_db=max_db, **kwargs)
