"""What `convcast test` writes after Lightning's test loop: metrics, plots, an animation.

The tested model and every `--compare` entry (a registry baseline such as `persistence`, or a
`.ckpt` of another run) are scored by `convcast.train.evaluate` on the same test batches:
`metrics.json`, a Markdown table (printed and saved as `metrics.md`), one lead-time plot per
metric, and a GIF/MP4 plus a PNG strip of the first test sequence, all in `--out`.
Frame metrics are computed in the data's own values (the normalisation undone), as validation
logs them; skill-score thresholds are in the data's physical units where it has them (radar: rain
rate in mm/h, by the archive's own dBZ range and Z-R, from the checkpoint's data description).
`metrics.json` says both in each model's entry (`space`, `threshold_units`).

`--members N` scores every model as an ensemble of N too (`model.sample`; a deterministic model is
an ensemble of one), in the skill scores' units (`probabilistic_units`): `crps`, `fair_crps` and
`spread_skill` (ensembles of 2 or more members), and with `--thresholds` `brier@T`, `bss@T`
(Brier skill score against the sample climatology) and `roc_auc@T`, each per lead time and as
the mean, with each model's ensemble size (`members`); with thresholds `reliability.png` and
`roc.png` (one panel per threshold, one line per model), and `rank_histogram.png` (one panel per
ensemble model; values below the smallest threshold count as no rain, and all-dry pixels are
left out, as pysteps' `rankhist` with `X_min`), all pooled over lead times.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from jsonargparse import ArgumentParser
from jsonargparse.typing import PositiveInt

from convcast.atomic import write_text
from convcast.data import units
from convcast.data.description import DataDescription
from convcast.metrics import format_table, write_metrics_json
from convcast.models import create_model, is_baseline, list_models
from convcast.train.checkpoint import load_forecaster
from convcast.train.evaluate import Evaluation, run_evaluation, set_grids, split_batch
from convcast.viz import write_animation, write_strip
from convcast.viz.plots import plot_lead_time
from convcast.viz.probabilistic import plot_rank_histograms, plot_reliability, plot_roc

CONVERSIONS = ("auto", "none", "pixel_to_dbz", "pixel_to_rainrate")
ANIMATIONS = ("gif", "mp4", "none")


def add_test_arguments(parser: ArgumentParser) -> None:
    """The report options of `convcast test`."""
    g = parser.add_argument_group("report", "metrics.json, table, lead-time plots, animation")
    g.add_argument("--out", type=str | None, default=None,
                   help="folder for the report (default: <default_root_dir>/test/<run>)")
    g.add_argument("--compare", type=str, nargs="+", default=[],
                   help="more models scored on the same batches: baseline names "
                        f"({', '.join(b for b in list_models(variants=True) if is_baseline(b))})"
                        " or .ckpt paths")
    g.add_argument("--thresholds", type=float, nargs="+", default=None,
                   help="skill-score thresholds (CSI, POD, FAR, HSS, ...), in the units of "
                        "--to_physical (radar: mm/h)")
    g.add_argument("--to_physical", type=str, default="auto",
                   help="convert data values before thresholds: auto (the data description's "
                        "physical units: radar to mm/h by its own dBZ range and Z-R; else none), "
                        "none, or the fixed HKO-7 pixel_to_dbz / pixel_to_rainrate")
    g.add_argument("--data_range", type=float, default=1.0,
                   help="value range of the (denormalised) frames for SSIM and PSNR")
    g.add_argument("--max_batches", type=int | None, default=None,
                   help="score at most this many test batches")
    g.add_argument("--animation", type=str, default="gif",
                   help=f"animation of the first test sequence: {', '.join(ANIMATIONS)}")
    g.add_argument("--members", type=PositiveInt | None, default=None,  # refused when parsed
                   help="also score every model as an ensemble of this many members (CRPS, "
                        "Brier, ROC, reliability, rank histogram; deterministic models are "
                        "ensembles of one)")


def run_name(path: Path) -> str:
    """A checkpoint's row name: its run (`root/version_3` for `root/lightning_logs/version_3/
    checkpoints/last.ckpt`), not its file name."""
    if path.parent.name != "checkpoints":
        return path.stem
    run = path.parent.parent
    root = run.parent.parent if run.parent.name == "lightning_logs" else run.parent
    return f"{root.name}/{run.name}" if root.name else run.name


def compare_model(spec: str, channels: int) -> tuple[str, nn.Module]:
    """A `--compare` entry as (name, forecaster): a registry baseline or a checkpoint path."""
    path = Path(spec)
    if path.suffix == ".ckpt" or path.is_file():
        model, _ = load_forecaster(path)
        return run_name(path.resolve()), model
    if spec in list_models(variants=True):
        if not is_baseline(spec):
            raise ValueError(f"--compare {spec}: a {spec!r} model must be trained first; give "
                             "the checkpoint of a run instead")
        return spec, create_model(spec, in_channels=channels)
    baselines = ", ".join(n for n in list_models(variants=True) if is_baseline(n))
    raise ValueError(f"--compare {spec}: neither a checkpoint file nor a baseline; valid "
                     f"baselines: {baselines}, or a path to a .ckpt")


def _unique(name: str, taken: dict) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


def write_test_report(trainer: L.Trainer, system: nn.Module, datamodule: Any, cfg: Any) -> Path:
    """Score the tested system and the `--compare` models; write the report files."""
    if cfg.to_physical not in CONVERSIONS:
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
    d = description_of(system, datamodule)
    set_grids(models.values(), d)  # STEPS and motion perturbations: the data's km and minutes
    denorm = d.to_data if d is not None else None
    to_phys, phys_units = physical(cfg.to_physical, d)
    device = trainer.strategy.root_device
    members = getattr(cfg, "members", None)
    if members is not None and (isinstance(members, bool) or members < 1):
        raise ValueError(f"--members must be a positive number of ensemble members, got "
                         f"{members}")
    scored = run_evaluation(models, loader, thresholds=cfg.thresholds, to_physical=to_phys,
                            device=device, max_batches=cfg.max_batches,
                            data_range=cfg.data_range, denormalize=denorm, members=members)
    results = scored.metrics
    about = {"space": d.data_space if d is not None else "model values"}
    if cfg.thresholds:
        about["threshold_units"] = phys_units
    if members is not None:
        about["probabilistic_units"] = phys_units
    write_metrics_json(out / "metrics.json", results, cfg.thresholds, about,
                       per_model={n: {"members": m} for n, m in scored.members.items()})
    table = format_table(results, cfg.thresholds)
    write_text(out / "metrics.md", table + "\n")
    plot_lead_time(results, out / "plots", cfg.thresholds)
    pictures = (_write_probabilistic(scored, cfg.thresholds, out, phys_units)
                if members is not None else [])
    if cfg.animation != "none":
        _write_pictures(models, x[:1].to(device), y[:1].to(device), denorm, out, cfg.animation)
    print(table)
    extra = "".join(f" {p.name}," for p in pictures)
    print(f"convcast test: wrote metrics.json, metrics.md, plots/,{extra} and pictures to {out}",
          file=sys.stderr)
    return out


def description_of(system: nn.Module, datamodule: Any) -> DataDescription | None:
    """The tested model's data description: its checkpoint's, else its datamodule's."""
    d = getattr(system, "description", None)
    if d is None and callable(getattr(datamodule, "describe", None)):
        d = datamodule.describe()
    return d


def physical(choice: str, d: DataDescription | None):
    """(data values -> threshold units, the units' name) for `--to_physical choice`."""
    if choice == "auto":
        if d is not None and d.physical_units is not None:
            return d.data_to_physical, d.physical_units
        return None, d.data_space if d is not None else "model values"
    if choice == "none":
        return None, d.data_space if d is not None else "model values"
    return getattr(units, choice), "dBZ" if choice == "pixel_to_dbz" else "mm/h"


def _write_probabilistic(scored: Evaluation, thresholds: list[float] | None, out: Path,
                         units: str) -> list[Path]:
    """reliability.png and roc.png (with thresholds), rank_histogram.png (ensemble models);
    returns the paths written."""
    unit = units if units in ("mm/h", "mm", "dBZ") else None  # not a data space's long name
    written = []
    if thresholds:
        written += [plot_reliability(scored.curves, thresholds, out / "reliability.png",
                                     units=unit),
                    plot_roc(scored.curves, thresholds, out / "roc.png", units=unit)]
    else:
        print("convcast test: no --thresholds, so no reliability.png or roc.png", file=sys.stderr)
    ensembles = {n: c for n, c in scored.curves.items() if scored.members.get(n, 1) > 1}
    if ensembles:
        written.append(plot_rank_histograms(ensembles, out / "rank_histogram.png"))
    else:
        print("convcast test: no model drew 2 or more members, so no rank_histogram.png",
              file=sys.stderr)
    return written


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
    write_animation(out / f"forecast.{fmt}", panels, vmin=lo, vmax=hi, scale=scale,
                    input_frames=len(xs))
    write_strip(out / "strip.png", {"input": xs, "truth": ys, **preds}, vmin=lo, vmax=hi,
                scale=scale)
