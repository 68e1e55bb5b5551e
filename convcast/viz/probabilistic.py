"""Pictures of probabilistic verification: reliability diagrams, ROC curves, rank histograms.

Each takes the curves of several models pooled over lead times, as
`convcast.train.evaluate.run_evaluation` returns them (`{model: {name: tensor}}`, from
`convcast.metrics.ProbabilisticMetrics`), and writes one PNG, drawn on matplotlib's Agg canvas
(no display, no pyplot state) and written atomically:

- `plot_reliability`: one panel per threshold, one line per model (mean forecast probability
  against observed frequency per probability bin; bins with too few samples are left out), and
  the diagonal of a perfectly reliable forecast;
- `plot_roc`: one panel per threshold, one line per model (POFD against POD at each probability
  threshold, its area in the legend), and the no-skill diagonal;
- `plot_rank_histograms`: one panel per ensemble model (M >= 2): the frequency of each rank of
  the observation among the members, and the flat line of a reliable ensemble.

`write_probability_animation` writes exceedance probabilities `[P, K, H, W]` as a GIF or MP4: one
frame per lead time, one panel per threshold side by side, each under its threshold, the frame's
label (e.g. its valid time) above them and a colour bar of 0..1 beside them (missing data grey).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from convcast.atomic import atomic_path
from convcast.viz.animation import FONT, text_band, write_animation

Curves = Mapping[str, Mapping[str, torch.Tensor | np.ndarray]]  # {model: {curve name: values}}


def _array(v: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


def _panels(n: int, width: float = 3.6, height: float = 3.4, cols: int = 3):
    """A figure of `n` square-ish panels (at most `cols` per row) and its axes."""
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def _check(curves: Curves, keys: Sequence[str], what: str) -> None:
    if not curves:
        raise ValueError(f"{what}: no model to plot (curves is empty)")
    for model, c in curves.items():
        missing = [k for k in keys if k not in c]
        if missing:
            raise ValueError(f"{what}: the curves of {model!r} lack {', '.join(missing)}; score "
                             "it with thresholds (ProbabilisticMetrics) to get them")


def _threshold_title(threshold: float, units: str | None) -> str:
    return f"≥ {threshold:g} {units}" if units else f"≥ {threshold:g}"


def plot_reliability(curves: Curves, thresholds: Sequence[float], path: str | os.PathLike, *,
                     units: str | None = None, dpi: int = 110) -> Path:
    """Reliability diagrams (see the module docstring): `curves[model]` holds
    `reliability_forecast_probability` and `reliability_observed_frequency` `[K, n_bins]`
    (NaN: too few samples) and `reliability_counts`; `thresholds` (K of them) in `units`."""
    keys = ("reliability_forecast_probability", "reliability_observed_frequency")
    _check(curves, keys, "plot_reliability")
    fig, axes = _panels(len(thresholds))
    for k, (ax, thr) in enumerate(zip(axes, thresholds, strict=True)):
        ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect")
        for model, c in curves.items():
            p, f = _array(c[keys[0]])[k], _array(c[keys[1]])[k]  # [n_bins]
            ok = np.isfinite(p) & np.isfinite(f)
            ax.plot(p[ok], f[ok], marker="o", markersize=3, label=model)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="forecast probability",
               ylabel="observed frequency", title=_threshold_title(thr, units), aspect="equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("reliability (pooled over lead times)")
    return _save(fig, path, dpi)


def plot_roc(curves: Curves, thresholds: Sequence[float], path: str | os.PathLike, *,
             units: str | None = None, dpi: int = 110) -> Path:
    """ROC curves (see the module docstring): `curves[model]` holds `roc_pod` and `roc_pofd`
    `[K, P]` (one point per probability threshold) and `roc_area` `[K]`."""
    _check(curves, ("roc_pod", "roc_pofd", "roc_area"), "plot_roc")
    fig, axes = _panels(len(thresholds))
    for k, (ax, thr) in enumerate(zip(axes, thresholds, strict=True)):
        ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="no skill")
        for model, c in curves.items():
            pod, pofd = _array(c["roc_pod"])[k], _array(c["roc_pofd"])[k]  # [P]
            area = float(_array(c["roc_area"]).reshape(len(thresholds), -1)[k, 0])
            ok = np.isfinite(pod) & np.isfinite(pofd)
            x = np.concatenate([[1.0], pofd[ok], [0.0]])  # from "always yes" to "never"
            y = np.concatenate([[1.0], pod[ok], [0.0]])
            ax.plot(x, y, marker="o", markersize=3,
                    label=f"{model} (area {area:.3f})" if np.isfinite(area) else model)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="probability of false detection",
               ylabel="probability of detection", title=_threshold_title(thr, units),
               aspect="equal")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("ROC (pooled over lead times)")
    return _save(fig, path, dpi)


def plot_rank_histograms(curves: Curves, path: str | os.PathLike, *,
                         dpi: int = 110) -> Path:
    """Rank histograms (see the module docstring): `curves[model]["rank_histogram"]` `[M + 1]`
    (normalised); give ensemble models only (M >= 2)."""
    _check(curves, ("rank_histogram",), "plot_rank_histograms")
    fig, axes = _panels(len(curves))
    for ax, (model, c) in zip(axes, curves.items(), strict=True):
        h = _array(c["rank_histogram"]).reshape(-1)  # [M + 1]
        ranks = np.arange(1, len(h) + 1)
        ax.bar(ranks, h, width=0.85, color="tab:blue")
        ax.axhline(1 / len(h), color="0.3", linestyle="--", linewidth=1, label="reliable")
        ax.set(xlabel="rank of the observation", ylabel="frequency",
               title=f"{model} ({len(h) - 1} members)")
        ax.set_xticks(ranks if len(h) <= 12 else ranks[:: math.ceil(len(h) / 12)])
        ax.legend(fontsize=7)
    fig.suptitle("rank histograms (pooled over lead times)")
    return _save(fig, path, dpi)


PROBABILITY_CMAP = "YlGnBu"
NO_DATA = (150, 150, 150)


def probability_rgb(prob: np.ndarray) -> np.ndarray:
    """Probabilities `[..., H, W]` in [0, 1] (NaN = no data) -> uint8 RGB `[..., H, W, 3]`."""
    import matplotlib

    cmap = matplotlib.colormaps[PROBABILITY_CMAP].with_extremes(bad=np.array(NO_DATA) / 255)
    return cmap(np.ma.masked_invalid(np.clip(prob, 0, 1)), bytes=True)[..., :3]


def probability_bar(height: int, width: int = 46) -> np.ndarray:
    """uint8 `[height, width, 3]`: the probability colour scale bottom-up, 0 to 1, labelled."""
    top, bottom = 8, 8
    bar = np.full((height, width, 3), 255, np.uint8)
    span = max(2, height - top - bottom)
    ramp = probability_rgb(np.linspace(1, 0, span)[:, None])  # [span, 1, 3], 1 at the top
    bar[top:top + span, 3:13] = ramp
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + round((1 - v) * (span - 1))
        cv2.putText(bar, f"{v:g}", (15, min(height - 2, max(8, y + 3))), FONT, 0.3, (0, 0, 0),
                    thickness=1, lineType=cv2.LINE_AA)
    return bar


def _scale(rgb: np.ndarray, max_size: int, min_size: int) -> np.ndarray:
    """Frames `[T, H, W, 3]` shrunk (area mean) to at most `max_size` pixels on the long side, or
    enlarged (nearest) by a whole factor to at least `min_size`."""
    H, W = rgb.shape[1:3]
    if max(H, W) > max_size:
        f = max_size / max(H, W)
        size = (max(1, round(W * f)), max(1, round(H * f)))
        return np.stack([cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in rgb])
    k = max(1, min_size // max(H, W))
    return rgb.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else rgb


def write_probability_animation(path: str | os.PathLike, probabilities: np.ndarray,
                                thresholds: Sequence[float], labels: Sequence[str], *,
                                units: str = "mm/h", fps: float = 4.0, max_size: int = 400,
                                min_size: int = 192) -> Path:
    """Write exceedance probabilities `[P, K, H, W]` (NaN = no data) as `.gif` / `.mp4`: frame k
    shows the P thresholds side by side, each under "P(>= threshold units)", below `labels[k]`
    (e.g. the valid time), beside a 0..1 colour bar."""
    prob = np.asarray(probabilities, dtype=np.float32)
    if prob.ndim != 4:
        raise ValueError(f"expected probabilities [P, K, H, W], got shape {prob.shape}")
    P, K = prob.shape[:2]
    if len(thresholds) != P:
        raise ValueError(f"{P} probability fields but {len(thresholds)} thresholds")
    if len(labels) != K:
        raise ValueError(f"{len(labels)} labels for {K} lead times")
    panels = [_scale(probability_rgb(p), max_size, min_size) for p in prob]  # P x [K, h, w, 3]
    h, w = panels[0].shape[1:3]
    gap = np.full((K, h, 4, 3), 255, np.uint8)
    body = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=2)  # [K, h, W', 3]
    body = np.concatenate([body, np.repeat(probability_bar(h)[None], K, axis=0)], axis=2)
    width = body.shape[2]
    spans = [(i * (w + 4), i * (w + 4) + w, f"P(>= {t:g} {units})".replace(" )", ")"))
             for i, t in enumerate(thresholds)]
    names = text_band(width, spans)
    frames = [np.concatenate([text_band(width, [(0, width, label)], height=18), names, img])
              for label, img in zip(labels, body, strict=True)]
    video = np.stack(frames).astype(np.float32) / 255  # [K, H', W', 3] in [0, 1]
    return write_animation(path, video.transpose(0, 3, 1, 2), fps=fps)
