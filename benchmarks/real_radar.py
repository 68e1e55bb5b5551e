"""Real radar: learned and extrapolation nowcasts on three providers' composites, every window.

The real composites of pysteps' example data in `--samples` (FMI reflectivity, two events;
KNMI 5-minute and BoM 10-minute accumulations) are read by pysteps' importers through
`RadarDataModule(importer=...)` and block-averaged to a coarser grid (FMI and KNMI 1 -> 4 km,
BoM 0.5 -> 2 km). Every gap-free window of 5 input and 12 output frames is forecast by
`persistence`, `optical_flow` (pysteps Lucas-Kanade + semi-Lagrangian extrapolation), the
ConvLSTM of `configs/radar-convlstm-cpu-small.yaml` and the anchored ConvLSTM of
`configs/radar-anchored-cpu-small.yaml` (a learned correction on top of optical flow), each
trained `--minutes` on synthetic radar and, for FMI, also fine-tuned `--finetune_minutes` on
random crops of the other event. Scores are in rain rate by the archive's own conversion
(reflectivity by FMI's Z-R; accumulations per hour), pixels outside the radar's domain left
out: CSI, POD and FAR at 0.5 / 2 / 5 mm/h, rainfall MSE and correlation, per lead time.

Writes `--json` (default `benchmarks/real_radar.json`: the run's facts and every metric per lead
time), lead-time plots per case in `--plots` (default `benchmarks/real_radar/`) and checkpoints
in `--out`; prints the Markdown tables of `benchmarks/RESULTS.md`. One thread by default; run
it under `flock /tmp/convcast-heavy.lock` on a shared machine.

    python benchmarks/real_radar.py [--minutes 10] [--finetune_minutes 5] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from convcast.atomic import atomic_path
from convcast.data.radar import RadarDataModule
from convcast.metrics.report import expand_thresholds
from convcast.models import create_model
from convcast.train import ForecastSystem
from convcast.train.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from radar_experiment import build, config_callbacks, load_config, markdown

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.5, 2.0, 5.0)  # mm/h
ALL = ("2100-01-01T00:00", "2100-01-01T00:00")  # split_times that make every window "train"
PROVIDERS = {  # what each archive needs; crops keep the grid a multiple of 2 x downsample
    "fmi": {"path": "fmi/pgm", "importer": "fmi_pgm", "importer_kwargs": {"gzipped": True},
            "crop": [0, 0, 1224, 760], "downsample": 4, "events": ["20160928", "20170509"]},
    "knmi": {"path": "KNMI", "importer": "knmi_hdf5", "crop": [0, 0, 760, 696],
             "downsample": 4},
    "bom": {"path": "bom", "importer": "bom_rf3", "fn_pattern": "66_%Y%m%d_%H%M%S.prcp-c10",
            "downsample": 4},
}
LEADS = (1, 3, 6, 12)
SCORES = ("csi@0.5", "csi@2", "csi@5", "pod@0.5", "far@0.5", "rainfall_mse", "correlation")
HIGHER_IS_BETTER = {"rainfall_mse": False, "far@0.5": False}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, default=Path(os.environ.get(
        "CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples")))
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS))
    p.add_argument("--models", nargs="+", default=["convlstm", "anchored"],
                   choices=["convlstm", "anchored"], help="learned models to train")
    p.add_argument("--minutes", type=float, default=10.0, help="synthetic training per model")
    p.add_argument("--finetune_minutes", type=float, default=5.0, help="per model and event")
    p.add_argument("--finetune_lr", type=float, default=3e-4)
    p.add_argument("--crop", type=int, default=96, help="fine-tuning crop (pixels)")
    p.add_argument("--input_frames", type=int, default=5)
    p.add_argument("--output_frames", type=int, default=12)
    p.add_argument("--max_windows", type=int, default=None, help="per case (smoke tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="load checkpoints left in --out")
    p.add_argument("--out", type=Path, default=ROOT / "runs/real_radar")
    p.add_argument("--plots", type=Path, default=ROOT / "benchmarks/real_radar")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/real_radar.json")
    return p.parse_args()


# ---- data --------------------------------------------------------------------------------------
def windows(args: argparse.Namespace, provider: str, event: str | None = None
            ) -> RadarDataModule:
    """Every window of a provider's archive (or of one event of it), set up."""
    spec = {k: v for k, v in PROVIDERS[provider].items() if k not in ("path", "events")}
    path = args.samples / PROVIDERS[provider]["path"] / (event or "")
    dm = RadarDataModule(str(path), input_frames=args.input_frames,
                         output_frames=args.output_frames, split_times=ALL, batch_size=4,
                         **spec)
    dm.setup()
    return dm


class RandomCrops(Dataset):
    """The windows of a dataset cut to random `size` x `size` squares: cheaper training steps
    that still see the whole archive over an epoch."""

    def __init__(self, data: Dataset, size: int, seed: int = 0) -> None:
        self.data, self.size, self.rng = data, size, np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        x, y, mask = self.data[i]  # [T, C, H, W] each
        H, W = x.shape[-2:]
        top = int(self.rng.integers(0, H - self.size + 1))
        left = int(self.rng.integers(0, W - self.size + 1))
        window = (..., slice(top, top + self.size), slice(left, left + self.size))
        return x[window], y[window], mask[window]


# ---- models --------------------------------------------------------------------------------------
def trainer(minutes: float, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_time={"seconds": round(minutes * 60)},
                     max_epochs=-1, limit_val_batches=0, logger=False,
                     enable_checkpointing=False, enable_model_summary=False,
                     enable_progress_bar=False, callbacks=callbacks)


def synthetic(name: str, args: argparse.Namespace) -> tuple[ForecastSystem, dict]:
    """Model `name` trained `args.minutes` on synthetic radar (or loaded with `--reuse`)."""
    ckpt = args.out / f"{name}-synthetic.ckpt"
    cfg = load_config(name, [])
    if args.reuse and ckpt.exists():
        system = ForecastSystem.load_from_checkpoint(ckpt, map_location="cpu")
        return system, {"checkpoint": str(ckpt), "reused": True}
    L.seed_everything(cfg.get("seed_everything", 0), verbose=False)
    system = ForecastSystem(**{k: build(v) for k, v in cfg["model"].items()})
    t0, tr = time.monotonic(), trainer(args.minutes, config_callbacks(cfg))
    tr.fit(system, datamodule=build(cfg["data"]))
    args.out.mkdir(parents=True, exist_ok=True)
    tr.save_checkpoint(ckpt)
    return system, {"checkpoint": str(ckpt), "steps": tr.global_step,
                    "minutes": round((time.monotonic() - t0) / 60, 2)}


def finetune(base: ForecastSystem, data: Dataset, args: argparse.Namespace
             ) -> tuple[ForecastSystem, dict]:
    """A copy of `base` trained further on random crops of real windows."""
    L.seed_everything(0, verbose=False)
    system = ForecastSystem(**{**dict(base.hparams), "lr": args.finetune_lr})
    system.model.load_state_dict(base.model.state_dict())
    loader = DataLoader(RandomCrops(data, args.crop), batch_size=4, shuffle=True)
    t0, tr = time.monotonic(), trainer(args.finetune_minutes)
    tr.fit(system, train_dataloaders=loader)
    return system, {"steps": tr.global_step, "windows": len(data),
                    "minutes": round((time.monotonic() - t0) / 60, 2)}


def score(models: dict[str, Any], dm: RadarDataModule, max_windows: int | None
          ) -> tuple[dict, float]:
    """Every model on every window of `dm` (its rain rates by its own conversion)."""
    data = dm.train_set
    if max_windows is not None:
        data = torch.utils.data.Subset(data, range(min(max_windows, len(data))))
    loader = DataLoader(data, batch_size=4, shuffle=False)
    t0 = time.monotonic()
    results = evaluate(models, loader, thresholds=THRESHOLDS,
                       to_physical=dm.describe().data_to_physical)
    return results, (time.monotonic() - t0) / 60


# ---- tables and plots --------------------------------------------------------------------------
def figure(results: dict, path: Path, title: str, step: float) -> Path:
    """CSI at 0.5 and 2 mm/h, rainfall MSE and correlation against lead time, one line per
    model, in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2))
    FigureCanvasAgg(fig)
    panels = (("csi@0.5", "CSI at 0.5 mm/h"), ("csi@2", "CSI at 2 mm/h"),
              ("rainfall_mse", "rainfall MSE (mm/h)²"), ("correlation", "correlation"))
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for model, r in results.items():
            v = np.asarray(expand_thresholds(r, THRESHOLDS)[key], dtype=float)
            ax.plot(step * np.arange(1, len(v) + 1), v, label=model, lw=1.5)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("lead time (min)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def per_lead(results: dict, step: float) -> str:
    rows = [["model", "metric", *[f"+{step * k:g} min" for k in LEADS], "mean"]]
    for model, m in results.items():
        flat = expand_thresholds(m, THRESHOLDS)
        for name in SCORES:
            v = np.asarray(flat[name], dtype=float)
            rows.append([model, name, *[f"{v[k - 1]:.3f}" for k in LEADS],
                         f"{np.nanmean(v):.3f}"])
    return markdown(rows)


def winners(results: dict, step: float) -> tuple[str, dict]:
    """The best model per score at each shown lead time ("tie" where the best two are equal,
    e.g. all 0), and how many of all leads each model wins outright."""
    rows = [["metric", *[f"+{step * k:g} min" for k in LEADS], "leads won (of all)"]]
    won: dict[str, dict[str, int]] = {}
    for name in SCORES:
        curves = {m: np.asarray(expand_thresholds(r, THRESHOLDS)[name], dtype=float)
                  for m, r in results.items()}
        sign = 1 if HIGHER_IS_BETTER.get(name, True) else -1
        stack = np.stack([np.nan_to_num(sign * c, nan=-np.inf) for c in curves.values()])
        top2 = np.sort(stack, axis=0)[-2:]  # [2, T]
        tie = np.isclose(top2[0], top2[1], rtol=1e-6, atol=1e-9)
        best = ["tie" if t else list(curves)[i] for i, t in zip(stack.argmax(0), tie,
                                                                  strict=True)]
        won[name] = {m: best.count(m) for m in curves if best.count(m)}
        rows.append([name, *[best[k - 1] for k in LEADS],
                     ", ".join(f"{m} {n}" for m, n in won[name].items())])
    return markdown(rows), won


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # DataLoader workers
    if not args.samples.exists():
        raise SystemExit(f"no radar samples at {args.samples}; pass --samples or set "
                         "CONVCAST_RADAR_SAMPLES")
    run: dict[str, Any] = {"machine": platform.processor() or platform.machine(),
                           "cpus": os.cpu_count(), "threads": args.threads,
                           "load_before": os.getloadavg(), "args": {
                               k: str(v) for k, v in vars(args).items()}}
    t_start = time.monotonic()
    learned, run["training"] = {}, {}
    for name in args.models:
        print(f"training {name} on synthetic radar for {args.minutes:g} min", flush=True)
        learned[name], run["training"][f"{name} (synthetic)"] = synthetic(name, args)
    cases: dict[str, dict] = {}
    for provider in args.providers:
        events = PROVIDERS[provider].get("events") or [None]
        dms = {e: windows(args, provider, e) for e in events}
        for event, dm in dms.items():
            case = provider + (f"-{event}" if event else "")
            models = {"persistence": create_model("persistence"),
                      "optical_flow": create_model("optical_flow")}
            models.update({f"{n} (synthetic)": s.model for n, s in learned.items()})
            for other in (e for e in events if e != event):  # fine-tune on the other event
                for n, s in learned.items():
                    print(f"{case}: fine-tuning {n} on {provider}-{other}", flush=True)
                    tuned, facts = finetune(s, dms[other].train_set, args)
                    models[f"{n} (fine-tuned)"] = tuned.model
                    run["training"][f"{n} fine-tuned on {provider}-{other}"] = facts
            print(f"{case}: scoring {len(models)} models on {len(dm.train_set)} windows",
                  flush=True)
            results, minutes = score(models, dm, args.max_windows)
            d = dm.describe()
            cases[case] = {"results": results, "eval_minutes": round(minutes, 2),
                           "windows": len(dm.train_set), "grid": list(d.frame_size),
                           "step_minutes": d.step_minutes,
                           "pixel_km": d.radar.output_grid().xpixelsize / 1000,
                           "units": d.radar.units, "zr": list(d.radar.zr)}
            figure(results, args.plots / f"{case}.png", case, d.step_minutes)
    run["minutes_total"] = round((time.monotonic() - t_start) / 60, 1)
    run["load_after"] = os.getloadavg()
    text, out = [], {"run": run, "cases": {}}
    for case, c in cases.items():
        table, won = winners(c["results"], c["step_minutes"])
        what = "reflectivity" if c["units"] == "dbz" else "accumulations"
        text += [f"### {case}: {c['windows']} windows, {c['grid'][0]}x{c['grid'][1]} pixels of "
                 f"{c['pixel_km']:g} km, {c['step_minutes']:g}-min steps ({what}, scored in "
                 "mm/h)",
                 per_lead(c["results"], c["step_minutes"]), "Best model:", table]
        out["cases"][case] = {**{k: v for k, v in c.items() if k != "results"}, "won": won,
                              "metrics": {m: {k: np.asarray(v, dtype=float).tolist()
                                              for k, v in expand_thresholds(
                                                  r, THRESHOLDS).items()}
                                          for m, r in c["results"].items()}}
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print("\n\n".join(text))
    print(f"\n{json.dumps(run, default=str)}\nwrote {args.json} and {args.plots}/")


if __name__ == "__main__":
    main()
