"""The radar experiment of Shi et al. (2015, sec. 4.2), small and on CPU: learned vs extrapolation.

Trains, each for the same budget of training minutes, the anchored ConvLSTM of
`configs/radar-anchored-cpu-small.yaml` (a correction on top of optical-flow extrapolation) and
the plain ConvLSTM of `configs/radar-convlstm-cpu-small.yaml` (and with `--models trajgru` the
TrajGRU of `configs/radar-trajgru-cpu-small.yaml`), on synthetic radar
(`convcast.data.synthetic`), then scores them, `optical_flow` (pysteps Lucas-Kanade +
semi-Lagrangian extrapolation, the open analogue of the paper's ROVER) and `persistence` on the
same 256 test sequences: CSI, POD, FAR at the paper's 0.5 mm/h and HKO-7's 0.5/2/5/10/30 mm/h,
correlation and rainfall MSE (mm/h)², per lead time (6-minute steps). During training each model
is scored on the test set every `--curve_every` minutes (the time spent scoring is not counted):
the training curve. The goal checked at the end: the anchored model beats optical_flow on CSI@0.5
and on rainfall MSE at every lead time, and on mean CSI at 2 and 5 mm/h.

Writes `--json` (default `benchmarks/radar_experiment.json`: the run's facts, the curves and the
metrics per lead time) and, in `--out`, `table.md`, `metrics.json`, `plots/*.png` (lead-time
plots and `curve_*.png`) and one checkpoint per trained model (usable by `convcast nowcast`).

    python benchmarks/radar_experiment.py [--minutes 30] [--models anchored convlstm] \
        [--set anchored.model.loss=bmse] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import WeightAveraging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from convcast.data.units import pixel_to_rainrate
from convcast.metrics import format_table, write_metrics_json
from convcast.metrics.report import atomic_path, expand_thresholds
from convcast.models import create_model
from convcast.train import ForecastSystem
from convcast.train.evaluate import evaluate
from convcast.viz.plots import plot_lead_time

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"anchored": ROOT / "configs/radar-anchored-cpu-small.yaml",
           "convlstm": ROOT / "configs/radar-convlstm-cpu-small.yaml",
           "trajgru": ROOT / "configs/radar-trajgru-cpu-small.yaml"}
DEFAULT_MODELS = ("anchored", "convlstm")
THRESHOLDS = (0.5, 2.0, 5.0, 10.0, 30.0)  # mm/h: HKO-7's; 0.5 is Shi et al.'s
PER_LEAD = ("csi@0.5", "pod@0.5", "far@0.5", "correlation", "rainfall_mse")
SUMMARY = ("mse", "mae", "rainfall_mse", "correlation")
LEADS = (1, 5, 10, 15)  # lead times (frames) shown in the per-lead table
CURVE = ("csi@0.5", "csi@2", "csi@5", "rainfall_mse")  # scored along training


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(CONFIGS),
                   help="which learned models to train")
    p.add_argument("--minutes", type=float, default=30.0, help="training minutes per model")
    p.add_argument("--model_minutes", nargs="*", default=[], metavar="MODEL=MINUTES",
                   help="another budget for one model, e.g. convlstm=10")
    p.add_argument("--curve_every", type=float, default=5.0, help="minutes between test scores")
    p.add_argument("--max_steps", type=int, default=-1, help="steps per model (-1: the budget)")
    p.add_argument("--test_size", type=int, default=None, help="default: the config's (256)")
    p.add_argument("--set", nargs="*", default=[], metavar="MODEL.KEY=VALUE",
                   help="override a config entry, e.g. anchored.model.lr=5e-4 (YAML values)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (shared CPUs: 1)")
    p.add_argument("--out", type=Path, default=ROOT / "runs/radar_experiment")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/radar_experiment.json")
    return p.parse_args()


# ---- configs ------------------------------------------------------------------------------------
def load_config(name: str, overrides: list[str], configs: dict[str, Path] = CONFIGS) -> dict:
    """The YAML config of model `name` with the `--set name.key.path=value` overrides applied."""
    cfg = yaml.safe_load(configs[name].read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        model, _, path = key.partition(".")
        if not sep or not path or model not in configs:
            raise ValueError(f"--set {item!r}: expected MODEL.KEY=VALUE with MODEL one of "
                             f"{', '.join(configs)}, e.g. anchored.model.lr=5e-4")
        if model != name:
            continue
        *parents, leaf = path.split(".")
        node = cfg
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    return cfg


def build(spec: Any) -> Any:
    """Instantiate `{"class_path": ..., "init_args": {...}}`, nested ones too (as LightningCLI)."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: build(v) for k, v in (spec.get("init_args") or {}).items()})
    return spec


def config_callbacks(cfg: dict) -> list[L.Callback]:
    """The config's `trainer.callbacks` (e.g. the EMA of the weights), built."""
    return [build(c) for c in (cfg.get("trainer") or {}).get("callbacks") or []]


def set_test_size(cfg: dict, test_size: int | None) -> None:
    """Set the test size of the (possibly wrapped) synthetic radar data in place."""
    args = cfg["data"]["init_args"]
    while "data" in args and isinstance(args["data"], dict):  # a wrapper such as MotionDataModule
        args = args["data"]["init_args"]
    if test_size is not None:
        args["test_size"] = test_size


# ---- training with a curve ----------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (DataLoader workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Budget(L.Callback):
    """Stop after `minutes` of training and score the model every `every` minutes of it. The
    clock starts at the first batch (worker start-up is reported apart) and stops while scoring."""

    def __init__(self, minutes: float, every: float, score: Callable[[torch.nn.Module], dict]
                 ) -> None:
        self.minutes, self.every, self.score = minutes, every, score
        self.curve: list[dict] = []
        self.paused = 0.0

    def train_minutes(self) -> float:
        return (time.monotonic() - self.t0 - self.paused) / 60

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.t0, self.next = time.monotonic(), None, self.every

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
                             ) -> None:
        if self.t0 is None:
            self.t0 = time.monotonic()
            self.startup = self.t0 - self.started  # spawning the DataLoader workers

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        t, start = self.train_minutes(), time.monotonic()
        averaging = [c for c in trainer.callbacks if isinstance(c, WeightAveraging)]
        for c in averaging:  # score the averaged weights, as validation would
            c.on_validation_epoch_start(trainer, pl_module)
        pl_module.eval()
        point = {"minutes": round(t, 2), "steps": trainer.global_step,
                 **self.score(pl_module.model)}
        pl_module.train()
        for c in averaging:
            c.on_validation_epoch_end(trainer, pl_module)
        self.curve.append(point)
        print(f"  {t:5.1f} min, step {trainer.global_step}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in point.items() if isinstance(v, float) and k != "minutes"),
            flush=True)
        self.paused += time.monotonic() - start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
                           ) -> None:
        t = self.train_minutes()
        if t >= self.minutes:
            trainer.should_stop = True
        if t >= self.next and t < self.minutes:
            self.record(trainer, pl_module)
            self.next += self.every


def curve_scores(results: dict) -> dict:
    """Lead-time means of the curve metrics (and rainfall MSE per lead) of one model."""
    flat = expand_thresholds(results, THRESHOLDS)
    out = {k: float(np.nanmean(flat[k])) for k in CURVE}
    out["csi@0.5_per_lead"] = [round(float(v), 4) for v in flat["csi@0.5"]]
    out["rainfall_mse_per_lead"] = [round(float(v), 3) for v in flat["rainfall_mse"]]
    return out


def train(name: str, cfg: dict, args: argparse.Namespace,
          score: Callable[[torch.nn.Module], dict]) -> tuple[Any, dict]:
    """Train model `name` of config `cfg` for `args.minutes` (scored by `score` every
    `args.curve_every`); save `args.out/NAME.ckpt`; return the system and the run's facts."""
    L.seed_everything(cfg.get("seed_everything", 0), verbose=False)
    dm = build(cfg["data"])
    system = ForecastSystem(**{k: build(v) for k, v in cfg["model"].items()})
    if (cfg.get("checkpoint") or {}).get("gate") and getattr(system.model, "gated", False):
        system.model.gate = system.model.gate.new_ones(0)  # trained ungated, as convcast fit
    budget = Budget(args.minutes, args.curve_every, score)
    extra = config_callbacks(cfg)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.max_steps, max_epochs=-1,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False,
                        callbacks=[budget, *extra])
    cpu0 = cpu_seconds()
    trainer.fit(system, datamodule=dm)
    wall = budget.train_minutes()
    cpu = (cpu_seconds() - cpu0) / 60  # includes scoring and the (finished) workers
    budget.record(trainer, system)  # the final point
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(args.out / f"{name}.ckpt")
    facts = {"model": cfg["model"],
             "train_steps": trainer.global_step, "train_minutes": round(wall, 2),
             "startup_seconds": round(budget.startup, 1),
             "cpu_minutes_incl_scoring": round(cpu, 2),
             "batch_size": dm.batch_size, "curve": budget.curve}
    return system.eval(), facts


# ---- tables and plots ---------------------------------------------------------------------------
def markdown(rows: list[list[str]]) -> str:
    """A Markdown table from rows of cells, the first row the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), rule, *map(line, rows[1:])])


def per_lead_table(results: dict, leads: tuple[int, ...] = LEADS,
                   metrics: tuple[str, ...] = PER_LEAD) -> str:
    """Markdown: one row per model and metric, one column per lead time (minutes)."""
    rows = [["model", "metric", *[f"+{6 * k}" for k in leads], "mean"]]
    for model, m in results.items():
        flat = expand_thresholds(m, THRESHOLDS)
        for name in metrics:
            v = flat[name]
            rows.append([model, name, *[f"{v[k - 1]:.3f}" for k in leads],
                         f"{np.nanmean(v):.3f}"])
    return markdown(rows)


def threshold_table(results: dict) -> str:
    """Markdown: CSI / POD / FAR averaged over the 15 lead times, per threshold."""
    rows = [["model", *[f"{s}@{t:g}" for t in THRESHOLDS for s in ("csi", "pod", "far")]]]
    for model, m in results.items():
        flat = expand_thresholds(m, THRESHOLDS)
        rows.append([model, *[_nanmean(flat[f"{s}@{t:g}"]) for t in THRESHOLDS
                              for s in ("csi", "pod", "far")]])
    return markdown(rows)


def _nanmean(values) -> str:
    """The mean over lead times where a score is defined; n/a where it never is (no rain)."""
    v = np.asarray(values, dtype=float)
    return f"{np.nanmean(v):.3f}" if np.isfinite(v).any() else "n/a"


def curve_table(runs: dict) -> str:
    """Markdown: test scores against training minutes, per trained model."""
    rows = [["model", "minutes", "steps", *CURVE, "leads csi@0.5 > optical_flow"]]
    for name, facts in runs.items():
        for p in facts["curve"]:
            rows.append([name, f"{p['minutes']:.1f}", str(p["steps"]),
                         *[f"{p[k]:.3f}" for k in CURVE], str(p.get("leads_won", ""))])
    return markdown(rows)


def plot_curves(runs: dict, reference: dict, out_dir: Path, metrics: tuple[str, ...] = CURVE,
                leads: int = 15) -> None:
    """`curve_<metric>.png`: test score against training minutes, baselines as lines."""
    for metric in metrics:
        fig = Figure(figsize=(5, 3.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, facts in runs.items():
            ax.plot([p["minutes"] for p in facts["curve"]], [p[metric] for p in facts["curve"]],
                    marker="o", markersize=3, label=name)
        for i, (name, scores) in enumerate(reference.items()):
            ax.axhline(scores[metric], color=f"C{len(runs) + i}", linestyle="--", label=name)
        ax.set_xlabel("training minutes (1 thread)")
        ax.set_ylabel(f"{metric} (mean over {leads} leads)")
        ax.grid(alpha=0.3)
        ax.legend()
        with atomic_path(out_dir / f"curve_{metric.replace('@', '_')}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)


def goal(results: dict, model: str = "anchored", ref: str = "optical_flow") -> dict:
    """Does `model` beat `ref` on CSI@0.5 and rainfall MSE at every lead and on mean CSI@2/5?"""
    a, b = expand_thresholds(results[model], THRESHOLDS), expand_thresholds(results[ref],
                                                                            THRESHOLDS)
    csi_won = int(np.sum(np.asarray(a["csi@0.5"]) > np.asarray(b["csi@0.5"])))
    mse_won = int(np.sum(np.asarray(a["rainfall_mse"]) < np.asarray(b["rainfall_mse"])))
    leads = len(a["csi@0.5"])
    out = {"leads": leads, "csi@0.5_leads_won": csi_won, "rainfall_mse_leads_won": mse_won,
           "mean_csi@2": [float(np.mean(a["csi@2"])), float(np.mean(b["csi@2"]))],
           "mean_csi@5": [float(np.mean(a["csi@5"])), float(np.mean(b["csi@5"]))]}
    out["met"] = bool(csi_won == leads and mse_won == leads
                      and out["mean_csi@2"][0] > out["mean_csi@2"][1]
                      and out["mean_csi@5"][0] > out["mean_csi@5"][1])
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # for the DataLoader workers
    configs = {name: load_config(name, args.set) for name in args.models}
    for cfg in configs.values():
        set_test_size(cfg, args.test_size)
    plain = load_config("convlstm", [])
    set_test_size(plain, args.test_size)
    dm = build(plain["data"])  # plain synthetic radar: the test windows every model is scored on
    dm.setup("test")
    loader = dm.test_dataloader()
    t0 = time.monotonic()
    baselines = {"optical_flow": create_model("optical_flow"),
                 "persistence": create_model("persistence")}
    base_results = evaluate(baselines, loader, thresholds=THRESHOLDS,
                            to_physical=pixel_to_rainrate)
    base_min = (time.monotonic() - t0) / 60
    reference = {n: curve_scores(r) for n, r in base_results.items()}
    of_csi = np.asarray(reference["optical_flow"]["csi@0.5_per_lead"])

    models, runs = {}, {}
    for name, cfg in configs.items():
        budgets = dict(item.split("=", 1) for item in args.model_minutes)
        model_args = argparse.Namespace(**{**vars(args),
                                           "minutes": float(budgets.get(name, args.minutes))})
        print(f"training {name} for {model_args.minutes:g} min", flush=True)

        def score(model: torch.nn.Module, name: str = name) -> dict:
            res = evaluate({name: model}, loader, thresholds=THRESHOLDS,
                           to_physical=pixel_to_rainrate)[name]
            return curve_scores(res)

        models[name], runs[name] = train(name, cfg, model_args, score)
        runs[name]["minutes_budget"] = model_args.minutes
        runs[name]["config"] = str(CONFIGS[name].relative_to(ROOT))
        for p in runs[name]["curve"]:
            p["leads_won"] = int(np.sum(np.asarray(p["csi@0.5_per_lead"]) > of_csi))
    t0 = time.monotonic()
    results = evaluate(models, loader, thresholds=THRESHOLDS, to_physical=pixel_to_rainrate)
    eval_min = (time.monotonic() - t0) / 60 + base_min
    results = {**results, **base_results}
    results = {m: {k: v for k, v in r.items() if k not in ("ssim", "psnr")}
               for m, r in results.items()}

    args.out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(args.out / "metrics.json", results, THRESHOLDS)
    plot_lead_time(results, args.out / "plots", THRESHOLDS, minutes_per_step=dm.step_minutes)
    plot_curves(runs, reference, args.out / "plots")
    verdict = goal(results) if "anchored" in results else None
    run = {"minutes_budget": args.minutes, "threads": args.threads, "eval_minutes":
           round(eval_min, 2), "test_sequences": len(dm.test_set),
           "image_size": dm.hparams.image_size, "load_before": os.getloadavg(),
           "models": runs, "goal": verdict}
    metrics = json.loads((args.out / "metrics.json").read_text())
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps({"run": run, "metrics": metrics}, indent=2) + "\n")
    trained = ", ".join(f"{n} {f['train_steps']} steps in {f['train_minutes']:.1f} min"
                        for n, f in runs.items())
    text = "\n\n".join([
        f"Synthetic radar {dm.hparams.image_size}x{dm.hparams.image_size}, "
        f"{len(dm.test_set)} test sequences, 5 -> 15 frames (6 min); trained on CPU "
        f"({args.threads} thread): {trained}.",
        "Per lead time (thresholds in mm/h; rainfall_mse in (mm/h)^2):",
        per_lead_table(results),
        "CSI@0.5 and rainfall MSE at every lead time:",
        per_lead_table(results, tuple(range(1, 16)), ("csi@0.5", "rainfall_mse")),
        "Mean over the 15 lead times, per threshold:",
        threshold_table(results),
        "Other metrics, mean over lead times (mse/mae per frame in [0, 1] pixels):",
        format_table({m: {k: r[k] for k in SUMMARY} for m, r in results.items()}, digits=3),
        "Training curve (test scores, means over the 15 leads):",
        curve_table(runs),
        f"Goal (anchored beats optical_flow on CSI@0.5 and rainfall MSE at every lead, mean "
        f"CSI@2 and @5): {json.dumps(verdict)}",
    ])
    with atomic_path(args.out / "table.md") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.json} and {args.out}/: metrics.json, table.md, plots/, *.ckpt")


if __name__ == "__main__":
    main()
