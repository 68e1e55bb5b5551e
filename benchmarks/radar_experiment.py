"""The radar experiment of Shi et al. (2015, sec. 4.2), small and on CPU: ConvLSTM vs optical flow.

Trains the encoder-forecaster of `configs/radar-convlstm-cpu-small.yaml` on synthetic radar
(`convcast.data.synthetic_radar`) for a few minutes, then scores it, the `optical_flow` baseline
(pysteps Lucas-Kanade + semi-Lagrangian extrapolation, the open analogue of the paper's ROVER) and
`persistence` on the same test sequences: CSI, POD, FAR at the paper's 0.5 mm/h and HKO-7's
0.5/2/5/10/30 mm/h, correlation and rainfall MSE (mm/h)², per lead time (6-minute steps).
Writes the metrics per lead time and the run's facts to `--json` (default
`benchmarks/radar_experiment.json`), and `OUT/table.md`, `OUT/plots/*.png` (lead-time plots) and
the trained `OUT/convlstm.ckpt` (usable by `convcast nowcast --ckpt_path`) to `--out`.

    python benchmarks/radar_experiment.py [--minutes 12] [--max_steps 800] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

from convcast.data.synthetic.radar import SyntheticRadarDataModule
from convcast.data.units import pixel_to_rainrate
from convcast.metrics import format_table, write_metrics_json
from convcast.metrics.report import atomic_path, expand_thresholds
from convcast.models import create_model
from convcast.models import optical_flow as _optical_flow  # noqa: F401  (registers the baseline)
from convcast.train import ForecastSystem
from convcast.train.evaluate import evaluate
from convcast.viz.plots import plot_lead_time

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.5, 2.0, 5.0, 10.0, 30.0)  # mm/h: HKO-7's; 0.5 is Shi et al.'s
PER_LEAD = ("csi@0.5", "pod@0.5", "far@0.5", "correlation", "rainfall_mse")
SUMMARY = ("mse", "mae", "rainfall_mse", "correlation")
LEADS = (1, 5, 10, 15)  # lead times (frames) shown in the per-lead table


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs/radar-convlstm-cpu-small.yaml")
    p.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    p.add_argument("--max_steps", type=int, default=800, help="training steps (or the budget)")
    p.add_argument("--test_size", type=int, default=None, help="default: the config's")
    p.add_argument("--threads", type=int, default=1, help="torch threads (shared CPUs: 1)")
    p.add_argument("--out", type=Path, default=ROOT / "runs/radar_experiment")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/radar_experiment.json")
    return p.parse_args()


def markdown(rows: list[list[str]]) -> str:
    """A Markdown table from rows of cells, the first row the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), rule, *map(line, rows[1:])])


def per_lead_table(results: dict, leads: tuple[int, ...] = LEADS) -> str:
    """Markdown: one row per model and metric, one column per lead time (minutes)."""
    head = ["model", "metric", *[f"+{6 * k} min" for k in leads], "mean"]
    rows = [head]
    for model, metrics in results.items():
        flat = expand_thresholds(metrics, THRESHOLDS)
        for name in PER_LEAD:
            v = flat[name]
            rows.append([model, name, *[f"{v[k - 1]:.3f}" for k in leads],
                         f"{np.nanmean(v):.3f}"])
    return markdown(rows)


def threshold_table(results: dict) -> str:
    """Markdown: CSI / POD / FAR averaged over the 15 lead times, per threshold."""
    head = ["model", *[f"{s}@{t:g}" for t in THRESHOLDS for s in ("csi", "pod", "far")]]
    rows = [head]
    for model, metrics in results.items():
        flat = expand_thresholds(metrics, THRESHOLDS)
        rows.append([model, *[f"{np.nanmean(flat[f'{s}@{t:g}']):.3f}" for t in THRESHOLDS
                              for s in ("csi", "pod", "far")]])
    return markdown(rows)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(args.config.read_text())
    L.seed_everything(cfg.get("seed_everything", 0), verbose=False)
    data_args = dict(cfg["data"]["init_args"])
    if args.test_size is not None:
        data_args["test_size"] = args.test_size
    dm = SyntheticRadarDataModule(**data_args)
    dm.setup()
    system = ForecastSystem(**cfg["model"])
    max_steps = args.max_steps
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=-1,
                        max_time=timedelta(minutes=args.minutes), limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False)
    t0 = time.monotonic()
    trainer.fit(system, datamodule=dm)
    train_min = (time.monotonic() - t0) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(args.out / "convlstm.ckpt")

    models = {"convlstm": system.model.eval(), "optical_flow": create_model("optical_flow"),
              "persistence": create_model("persistence")}
    t0 = time.monotonic()
    results = evaluate(models, dm.test_dataloader(), thresholds=THRESHOLDS,
                       to_physical=pixel_to_rainrate)
    eval_min = (time.monotonic() - t0) / 60
    results = {m: {k: v for k, v in r.items() if k not in ("ssim", "psnr")}
               for m, r in results.items()}

    write_metrics_json(args.out / "metrics.json", results, THRESHOLDS)
    plot_lead_time(results, args.out / "plots", THRESHOLDS, minutes_per_step=dm.step_minutes)
    run = {"config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT)
                         else args.config),
           "max_steps": max_steps, "minutes_budget": args.minutes,
           "train_steps": trainer.global_step, "train_minutes": round(train_min, 2),
           "eval_minutes": round(eval_min, 2), "test_sequences": len(dm.test_set),
           "image_size": dm.hparams.image_size, "threads": args.threads}
    metrics = json.loads((args.out / "metrics.json").read_text())
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps({"run": run, "metrics": metrics}, indent=2) + "\n")
    text = "\n\n".join([
        f"Synthetic radar {dm.hparams.image_size}x{dm.hparams.image_size}, "
        f"{len(dm.test_set)} test sequences, 5 -> 15 frames (6 min); ConvLSTM trained "
        f"{trainer.global_step} steps in {train_min:.1f} min on CPU.",
        "Per lead time (thresholds in mm/h; rainfall_mse in (mm/h)^2):",
        per_lead_table(results),
        "Mean over the 15 lead times, per threshold:",
        threshold_table(results),
        "Other metrics, mean over lead times (mse/mae per frame in [0, 1] pixels):",
        format_table({m: {k: r[k] for k in SUMMARY} for m, r in results.items()}, digits=3),
    ])
    with atomic_path(args.out / "table.md") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.json} and {args.out}/: metrics.json, table.md, plots/, convlstm.ckpt")


if __name__ == "__main__":
    main()
