"""The recurrent family side by side on Moving MNIST: seconds per step and test MSE after the same
CPU minutes, every member at its `configs/*-cpu-small.yaml` size.

Each member trains from scratch with its cpu-small config's model and training settings (model,
loss, optimizer, learning rate, scheduled sampling) on the same data: Moving MNIST, 2 digits,
64x64, 10 -> 10, batch 8, one fixed seed. Every member gets `--minutes` of training time (the
scoring of the test set is not counted); then it forecasts the same `--test_size` held-out
sequences and their MSE per frame (summed over pixels, the tables' convention) and SSIM are
recorded, with the median seconds per training step. Members run `--parallel` at a time, each in
its own process with `--threads` threads, so a 2-core machine trains two at once and both see
the same load; the machine, its flags and the load before and after are recorded. Writes `--json`
(default `benchmarks/family.json`) and prints the Markdown table of `benchmarks/RESULTS.md`.

    python benchmarks/family.py [--minutes 5] [--members predrnn mim ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from convcast.atomic import write_text
from convcast.data import MovingMNISTDataModule
from convcast.train import ForecastSystem
from convcast.train.evaluate import evaluate
from convcast.train.precision import cpu_info

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = {  # name: its cpu-small config
    "convlstm": "encoder_forecaster-cpu-small.yaml",
    "predrnn": "predrnn-cpu-small.yaml",
    "predrnn_v2": "predrnn_v2-cpu-small.yaml",
    "predrnn_pp": "mmnist-predrnn_pp-cpu-small.yaml",
    "mim": "mmnist-mim-cpu-small.yaml",
    "e3d_lstm": "mmnist-e3d_lstm-cpu-small.yaml",
    "conv_gru": "mmnist-conv_gru-cpu-small.yaml",
    "trajgru": "mmnist-trajgru-cpu-small.yaml",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", nargs="+", default=list(MEMBERS), choices=list(MEMBERS))
    p.add_argument("--minutes", type=float, default=5.0, help="training time per member")
    p.add_argument("--max_steps", type=int, default=-1, help="stop earlier (smoke runs)")
    p.add_argument("--test_size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="per member")
    p.add_argument("--parallel", type=int, default=2, help="members trained at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/family.json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: train this member, print JSON
    return p.parse_args(argv)


def _instantiate(spec: Any) -> Any:
    """A `{class_path, init_args}` mapping of a config as the object it names."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, name = spec["class_path"].rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))
    return spec


def system_of(member: str) -> tuple[ForecastSystem, dict[str, Any]]:
    """The member's `ForecastSystem` as its cpu-small config builds it, and those settings."""
    config = yaml.safe_load((ROOT / "configs" / MEMBERS[member]).read_text())
    settings = {k: _instantiate(v) for k, v in config["model"].items()}
    shown = {k: v for k, v in config["model"].items() if k != "sampling"}
    if "sampling" in config["model"]:
        shown["sampling"] = config["model"]["sampling"]["class_path"].rsplit(".", 1)[1]
    return ForecastSystem(**settings), shown


class Clock(Callback):
    """Stops training at `minutes` of training time; records each step's duration."""

    def __init__(self, minutes: float) -> None:
        self.minutes, self.steps, self.start, self.last = minutes, [], 0.0, 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        self.steps.append(now - self.last)
        self.last = now
        if (now - self.start) / 60 >= self.minutes:
            trainer.should_stop = True


def run_one(args: argparse.Namespace, member: str) -> dict[str, Any]:
    """Train `member` in this process; its facts and scores."""
    torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    dm = MovingMNISTDataModule(batch_size=8, train_size=200_000, val_size=16,
                               test_size=args.test_size, seed=args.seed, num_digits=2,
                               image_size=64, input_frames=10, output_frames=10)
    dm.setup()
    system, settings = system_of(member)
    clock = Clock(args.minutes)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=-1, max_steps=args.max_steps,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, callbacks=[clock])
    trainer.fit(system, datamodule=dm)
    res = evaluate({"model": system.model}, dm.test_dataloader())["model"]
    steps = clock.steps[1:] or clock.steps  # the first step includes warm-up
    return {"member": member, "config": MEMBERS[member], "settings": settings,
            "weights": sum(p.numel() for p in system.model.parameters()),
            "steps": trainer.global_step, "seconds_per_step": statistics.median(steps),
            "train_minutes": round(sum(clock.steps) / 60, 2), "threads": args.threads,
            "mse": float(res["mse"].mean()), "ssim": float(res["ssim"].mean()),
            "mse_per_lead": [float(v) for v in res["mse"]]}


def markdown(report: dict[str, Any]) -> str:
    lines = ["| member | weights | s / step | steps | test MSE | SSIM |\n",
             "|---|---|---|---|---|---|\n"]
    for r in sorted(report["runs"], key=lambda r: r["mse"]):
        lines.append(f"| `{r['member']}` | {r['weights'] / 1e6:.2f}M | "
                     f"{r['seconds_per_step']:.3f} | {r['steps']} | {r['mse']:.1f} | "
                     f"{r['ssim']:.3f} |\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    base = [sys.executable, __file__, "--minutes", str(args.minutes), "--test_size",
            str(args.test_size), "--threads", str(args.threads), "--seed", str(args.seed),
            "--max_steps", str(args.max_steps)]
    load_before, runs = os.getloadavg(), []
    queue = list(args.members)
    while queue:
        batch, queue = queue[:args.parallel], queue[args.parallel:]
        procs = {m: subprocess.Popen([*base, "--one", m], env=env, stdout=subprocess.PIPE,
                                     text=True) for m in batch}
        for member, proc in procs.items():
            out, _ = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"member {member} failed (exit {proc.returncode})")
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{member}: {runs[-1]['steps']} steps, mse {runs[-1]['mse']:.1f}",
                  file=sys.stderr, flush=True)
    report = {"machine": {**cpu_info(), "torch": torch.__version__}, "load_before": load_before,
              "load_after": os.getloadavg(), "minutes": args.minutes, "parallel": args.parallel,
              "test_size": args.test_size, "runs": runs}
    write_text(args.json, json.dumps(report, indent=1) + "\n")
    print(markdown(report), end="")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
