"""Time to quality: Moving MNIST test MSE against minutes of CPU training, recipe beside recipe.

Every recipe trains the demo's model (`encoder_forecaster_demo`) from scratch for `--minutes`
of training time; at the minutes of `--at` the training clock stops, the model forecasts the
same `--test_size` held-out sequences (10 -> 10) and their MSE per frame (summed over pixels, the
demo's convention) and SSIM are recorded. The recipes run at once, one process and `--threads`
threads each (2 recipes fill a 2-core machine), so a busy machine slows them alike; steps are
recorded too, since they do not depend on the machine. Writes `--json` (default
`benchmarks/time_to_quality.json`) and prints the Markdown table of `benchmarks/RESULTS.md`.

    python benchmarks/time_to_quality.py [--minutes 30] [--recipes demo small_batch]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from convcast.atomic import write_text
from convcast.data import MovingMNISTDataModule
from convcast.models import resolve
from convcast.train import ForecastSystem
from convcast.train.evaluate import evaluate
from convcast.train.precision import choose_precision, cpu_info

ROOT = Path(__file__).resolve().parent.parent
RECIPES: dict[str, dict[str, Any]] = {  # name: ForecastSystem settings + batch size
    # the demo's from-scratch defaults (stage 1 of the shipped weights)
    "demo": {"loss": "bce", "lr": 2e-3, "horizon_curriculum": 400, "batch_size": 16},
    # half the batch: twice the updates per minute, noisier gradients
    "small_batch": {"loss": "bce", "lr": 2e-3, "horizon_curriculum": 400, "batch_size": 8},
    # a larger step size on the demo's batch
    "high_lr": {"loss": "bce", "lr": 4e-3, "horizon_curriculum": 400, "batch_size": 16},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="+", default=["demo", "small_batch"], choices=list(RECIPES))
    p.add_argument("--minutes", type=float, default=30.0, help="training time per recipe")
    p.add_argument("--at", type=float, nargs="+", default=[2, 5, 10, 15, 20, 25, 30],
                   help="training minutes at which the test MSE is measured")
    p.add_argument("--test_size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="per recipe")
    p.add_argument("--precision", default="auto", choices=["auto", "32-true", "bf16-mixed"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/time_to_quality.json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this recipe, print JSON
    return p.parse_args(argv)


class Curve(Callback):
    """Stops the training clock at each of `at` minutes to measure the test set, and stops the
    run at `minutes` of training time (evaluation not counted)."""

    def __init__(self, dm: MovingMNISTDataModule, at: list[float], minutes: float) -> None:
        self.dm, self.at, self.minutes = dm, sorted(m for m in at if m <= minutes), minutes
        self.points: list[dict[str, float]] = []
        self.start, self.paused = 0.0, 0.0

    def train_minutes(self) -> float:
        return (time.monotonic() - self.start - self.paused) / 60

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        m = self.train_minutes()
        if self.at and m >= self.at[0]:
            target = self.at.pop(0)
            t = time.monotonic()
            res = evaluate({"model": pl_module.model}, self.dm.test_dataloader())["model"]
            pl_module.model.train()
            self.points.append({"at": target, "minutes": round(m, 2),
                                "steps": trainer.global_step,
                                "mse": float(res["mse"].mean()),
                                "ssim": float(res["ssim"].mean())})
            print(f"{m:5.1f} min, step {trainer.global_step}: mse {self.points[-1]['mse']:.1f}",
                  file=sys.stderr, flush=True)
            self.paused += time.monotonic() - t
        if m >= self.minutes:
            trainer.should_stop = True


def run_one(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Train recipe `name` in this process; its facts and curve."""
    torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    recipe = dict(RECIPES[name])
    batch = recipe.pop("batch_size")
    dm = MovingMNISTDataModule(batch_size=batch, train_size=200_000, val_size=16,
                               test_size=args.test_size, seed=args.seed)
    dm.setup()
    system = ForecastSystem("encoder_forecaster", resolve("encoder_forecaster_demo")[1],
                            **recipe)
    precision, why = args.precision, "--precision"
    if precision == "auto":
        sample = next(iter(dm.train_dataloader()))
        precision, why = choose_precision(system.model, sample)
    curve = Curve(dm, list(args.at), args.minutes)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, max_epochs=-1,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[curve])
    trainer.fit(system, datamodule=dm)
    return {"recipe": name, "settings": RECIPES[name], "precision": precision,
            "precision_why": why, "threads": args.threads, "steps": trainer.global_step,
            "curve": curve.points}


def markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]
    head = "| training time | " + " | ".join(f"{r['recipe']} (steps)" for r in runs) + " |\n"
    lines = [head, "|---|" + "---|" * len(runs) + "\n"]
    for k in range(max(len(r["curve"]) for r in runs)):
        cells = []
        for r in runs:
            p = r["curve"][k] if k < len(r["curve"]) else None
            cells.append(f"{p['mse']:.1f} ({p['steps']})" if p else "")
        at = next(r["curve"][k]["at"] for r in runs if k < len(r["curve"]))
        lines.append(f"| {at:g} min | " + " | ".join(cells) + " |\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    base = [sys.executable, __file__, "--minutes", str(args.minutes), "--test_size",
            str(args.test_size), "--threads", str(args.threads), "--precision", args.precision,
            "--seed", str(args.seed), "--at", *map(str, args.at)]
    load_before = os.getloadavg()
    procs = {name: subprocess.Popen([*base, "--one", name], env=env, stdout=subprocess.PIPE,
                                    text=True) for name in args.recipes}
    runs = []
    for name, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"recipe {name} failed (exit {proc.returncode})")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    report = {"machine": {**cpu_info(), "torch": torch.__version__}, "load_before": load_before,
              "load_after": os.getloadavg(), "minutes": args.minutes,
              "test_size": args.test_size, "runs": runs}
    write_text(args.json, json.dumps(report, indent=1) + "\n")
    print(markdown(report), end="")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
