"""Metrics against lead time, one line per model: the figures of the ConvLSTM paper.

Figures are drawn on matplotlib's Agg canvas (no display, no pyplot state) and written
atomically. `results` is as in `convcast.metrics.report`: `{model: {metric: [T] or [K, T]}}`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convcast.metrics.report import Results, atomic_path, expand_thresholds


def _file_name(metric: str) -> str:
    """`csi@0.5` -> `csi_0.5.png`: only letters, digits, dots, dashes and underscores."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_") + ".png"


def plot_lead_time(results: Results, out_dir: str | os.PathLike,
                   thresholds: Sequence[float] | None = None,
                   minutes_per_step: float | None = None, dpi: int = 120) -> list[Path]:
    """One PNG per metric, one line per model; x = lead time 1..T (or minutes). Returns paths."""
    per_model = {model: expand_thresholds(m, thresholds) for model, m in results.items()}
    metrics: list[str] = []
    for m in per_model.values():
        metrics += [name for name in m if name not in metrics]
    out_dir = Path(out_dir)
    paths = []
    for metric in metrics:
        fig = Figure(figsize=(5, 3.5))  # fixed margins: a constrained layout doubles the time
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.14, 0.14, 0.82, 0.76))
        for model, m in per_model.items():
            if metric not in m:
                continue
            y = m[metric]  # [T]
            x = np.arange(1, len(y) + 1, dtype=float)  # lead time index 1..T
            if minutes_per_step is not None:
                x = x * minutes_per_step
            ax.plot(x, y, marker="o", markersize=3, label=model)
        ax.set_xlabel("lead time [min]" if minutes_per_step is not None else "lead time [frames]")
        ax.xaxis.set_major_locator(MaxNLocator(integer=minutes_per_step is None))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} against lead time")
        ax.grid(alpha=0.3)
        ax.legend()
        path = out_dir / _file_name(metric)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        paths.append(path)
    return paths
