"""Reports of evaluation results: a JSON file and a text table (the CLI calls these).

`results` is `{model_name: {metric_name: values}}` where values are per lead time `[T]`, or
`[K, T]` for thresholded skill scores; those are split into one metric per threshold named
`csi@0.5` (so `thresholds` must be given); the ensemble scores of `convcast test --members`
(`crps`, `fair_crps`, `spread_skill` `[T]`; `brier`, `bss`, `roc_auc` `[K, T]`, hence
`brier@0.5`, ...) are metrics like the others. The "mean" of a metric is the mean over lead times
that skips NaN ones (a skill score is NaN at a lead time without events); it is NaN (null in
JSON) only if every lead time is. Files are written atomically (temporary file + os.replace).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convcast.atomic import atomic_path

Values = torch.Tensor | np.ndarray | Sequence[float]
Results = Mapping[str, Mapping[str, Values]]


def threshold_name(metric: str, threshold: float) -> str:
    """The name of a thresholded score, e.g. `csi@0.5`."""
    return f"{metric}@{threshold:g}"


def expand_thresholds(metrics: Mapping[str, Values],
                      thresholds: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """`{name: [T]}` float64 arrays; a `[K, T]` entry becomes K entries `name@threshold`."""
    out: dict[str, np.ndarray] = {}
    for name, values in metrics.items():
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            out[name] = arr
        elif arr.ndim == 2:
            if thresholds is None or len(thresholds) != arr.shape[0]:
                n = "no" if thresholds is None else len(thresholds)
                raise ValueError(f"metric {name!r} has shape {arr.shape} ([thresholds, T]) but "
                                 f"{n} thresholds were given; pass thresholds=[...]")
            for thr, row in zip(thresholds, arr, strict=True):
                out[threshold_name(name, thr)] = row
        else:
            raise ValueError(f"metric {name!r} has shape {arr.shape}; expected [T] per lead time "
                             "or [thresholds, T]")
    return out


def lead_time_mean(values: np.ndarray) -> float:
    """Mean over lead times skipping NaN; NaN if all are NaN."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def summarize(results: Results, thresholds: Sequence[float] | None = None
              ) -> dict[str, dict[str, Any]]:
    """`{model: {metric: mean, ..., "per_lead_time": {metric: [float, ...]}}}` (plain Python).

    The means sit at the top so `summary[model]["mse"]` is the headline number; the curves
    against lead time are beside them under `per_lead_time`.
    """
    out: dict[str, dict[str, Any]] = {}
    for model, metrics in results.items():
        expanded = expand_thresholds(metrics, thresholds)
        entry: dict[str, Any] = {name: lead_time_mean(v) for name, v in expanded.items()}
        entry["per_lead_time"] = {name: [float(x) for x in v] for name, v in expanded.items()}
        out[model] = entry
    return out


def _json_safe(x: Any) -> Any:
    """NaN/inf become null: strict JSON has no NaN."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_metrics_json(path: str | os.PathLike, results: Results,
                       thresholds: Sequence[float] | None = None,
                       about: Mapping[str, Any] | None = None, *,
                       per_model: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write `summarize(results)` as JSON (NaN as null) and return the path; `about` (e.g. the
    value space the metrics were computed in) is added to every model's entry, `per_model[name]`
    (e.g. its ensemble size, `members`) to that model's."""
    data = summarize(results, thresholds)
    for model, entry in data.items():
        entry.update(about or {})
        entry.update((per_model or {}).get(model, {}))
    data = _json_safe(data)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return Path(path)


def format_table(results: Results, thresholds: Sequence[float] | None = None,
                 digits: int = 4) -> str:
    """A Markdown table: one row per model, one column per metric's mean over lead times."""
    summary = summarize(results, thresholds)
    columns: list[str] = []
    for metrics in summary.values():
        columns += [name for name in metrics["per_lead_time"] if name not in columns]
    rows = [["model", *columns]]
    for model, metrics in summary.items():
        cells = [f"{metrics[c]:.{digits}g}" if c in metrics else "-" for c in columns]
        rows.append([model, *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:])])

