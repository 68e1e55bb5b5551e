"""What `convcast test` writes after Lightning's test loop: metrics, plots, an animation.

The tested model and every `--compare` entry (a registry baseline such as `persistence`, or a
`.ckpt` of another run) are scored by `convcast.train.evaluate` on the same test batches:
`metrics.json`, a Markdown table (printed and saved as `metrics.md`), one lead-time plot per
metric, and a GIF/MP4 plus a PNG strip of the first test sequence, all in `--out`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from jsonargparse import ArgumentParser

from convcast.data import units
from convcast.metrics import format_table, write_metrics_json
from convcast.metrics.report import atomic_path
from convcast.models import create_model, is_baseline, list_models
from convcast.train.checkpoint import load_forecaster
from convcast.train.evaluate import evaluate, split_batch
from convcast.viz import write_animation, write_strip
from convcast.viz.plots import plot_lead_time

CONVERSIONS = ("pixel_to_dbz", "pixel_to_rainrate")
ANIMATIONS = ("gif", "mp4", "none")


def add_test_arguments(parser: ArgumentParser) -> None:
    """The report options of `convcast test`."""
    g = parser.add_argument_group("report", "metrics.json, table, lead-time plots, animation")
    g.add_argument("--out", type=str | None, default=None,
                   help="folder for the report (default: the test run's log folder)")
    g.add_argument("--compare", type=str, nargs="+", default=[],
                   help="more models scored on the same batches: baseline names "
                        f"({', '.join(b for b in list_models() if is_baseline(b))}) or .ckpt paths")
    g.add_argument("--thresholds", type=float, nargs="+", default=None,
                   help="skill-score thresholds (CSI, POD, FAR, HSS, ...), in the units of "
                        "--to_physical")
    g.add_argument("--to_physical", type=str | None, default=None,
                   help=f"convert model values before thresholds: {', '.join(CONVERSIONS)}")
    g.add_argument("--data_range", type=float, default=1.0,
                   help="value range of the (denormalised) frames for SSIM and PSNR")
    g.add_argument("--max_batches", type=int | None, default=None,
                   help="score at most this many test batches")
    g.add_argument("--animation", type=str, default="gif",
                   help=f"animation of the first test sequence: {', '.join(ANIMATIONS)}")


def compare_model(spec: str, channels: int) -> tuple[str, nn.Module]:
    """A `--compare` entry as (name, forecaster): a registry baseline or a checkpoint path."""
    path = Path(spec)
    if path.suffix == ".ckpt" or path.is_file():
        model, _ = load_forecaster(path)
        return path.stem, model
    if spec in list_models():
        if not is_baseline(spec):
            raise ValueError(f"--compare {spec}: a {spec!r} model must be trained first; give "
                             "the checkpoint of a run instead")
        return spec, create_model(spec, in_channels=channels)
    baselines = ", ".join(n for n in list_models() if is_baseline(n))
    raise ValueError(f"--compare {spec}: neither a checkpoint file nor a baseline; valid "
                     f"baselines: {baselines}, or a path to a .ckpt")


def _unique(name: str, taken: dict) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


def write_test_report(trainer: L.Trainer, system: nn.Module, datamodule: Any, cfg: Any) -> Path:
    """Score the tested system and the `--compare` models; write the report files."""
    if cfg.to_physical is not None and cfg.to_physical not in CONVERSIONS:
        raise ValueError(f"unknown --to_physical {cfg.to_physical!r}; valid: "
                         f"{', '.join(CONVERSIONS)}")
    if cfg.animation not in ANIMATIONS:
        raise ValueError(f"unknown --animation {cfg.animation!r}; valid: {', '.join(ANIMATIONS)}")
    out = Path(cfg.out or trainer.log_dir or ".")
    loader = datamodule.test_dataloader()
    x, y, _ = split_batch(next(iter(loader)))
    models: dict[str, nn.Module] = {getattr(system.hparams, "model_name", None) or "model":
                                    system.model}
    for spec in cfg.compare:
        name, model = compare_model(spec, x.shape[2])
        models[_unique(name, models)] = model
    norm = getattr(datamodule, "normalization", None)
    denorm = norm.invert if norm is not None and hasattr(norm, "invert") else None
    to_phys = getattr(units, cfg.to_physical) if cfg.to_physical else None
    device = trainer.strategy.root_device
    results = evaluate(models, loader, thresholds=cfg.thresholds, to_physical=to_phys,
                       device=device, max_batches=cfg.max_batches, data_range=cfg.data_range,
                       denormalize=denorm)
    write_metrics_json(out / "metrics.json", results, cfg.thresholds)
    table = format_table(results, cfg.thresholds)
    with atomic_path(out / "metrics.md") as tmp:
        tmp.write_text(table + "\n")
    plot_lead_time(results, out / "plots", cfg.thresholds)
    if cfg.animation != "none":
        _write_pictures(models, x[:1].to(device), y[:1].to(device), denorm, out, cfg.animation)
    print(table)
    print(f"convcast test: wrote metrics.json, metrics.md, plots/ and pictures to {out}",
          file=sys.stderr)
    return out


@torch.no_grad()
def _write_pictures(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, denorm: Any,
                    out: Path, fmt: str) -> None:
    """Animation (input then truth / each forecast, side by side) and strip of one sequence."""
    d = denorm or (lambda t: t)
    xs, ys = d(x[0]).cpu(), d(y[0]).cpu()  # [T_in, C, H, W], [T_out, C, H, W]
    preds = {name: d(m.to(x.device).eval()(x, y.shape[1])[0]).cpu() for name, m in models.items()}
    lo = float(min(xs.min(), ys.min()))
    hi = float(max(xs.max(), ys.max()))
    lo, hi = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, max(hi, lo + 1e-6))
    panels = {"truth": torch.cat([xs, ys])} | {n: torch.cat([xs, p]) for n, p in preds.items()}
    scale = max(1, 128 // max(xs.shape[-2:]))
    write_animation(out / f"forecast.{fmt}", panels, vmin=lo, vmax=hi, scale=scale)
    write_strip(out / "strip.png", {"input": xs, "truth": ys, **preds}, vmin=lo, vmax=hi,
                scale=scale)
