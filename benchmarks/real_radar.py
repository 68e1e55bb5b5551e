"""Real radar, leave one provider out: learned and pysteps nowcasts on four providers' composites.

The real composites of pysteps' example data in `--samples` (FMI reflectivity, two events; KNMI
5-minute and BoM 10-minute accumulations; OPERA's 2-km pan-European rain rate, 15-minute steps)
are read by pysteps' importers through `RadarDataModule(importer=...)` and block-averaged (FMI,
KNMI 1 -> 4 km, BoM 0.5 -> 2 km, OPERA 2 -> 4 km). Every gap-free window of 5 input and 12 output
frames is forecast by `persistence`, `optical_flow` (pysteps Lucas-Kanade + semi-Lagrangian
extrapolation), pysteps' deterministic `sprog` (S-PROG) and `anvil` (ANVIL) with their defaults,
their `consensus` (the mean of the two in rain rate), the anchored ConvLSTM of
`configs/radar-anchored-cpu-small.yaml` trained `--minutes` on synthetic radar, and the
pretrained nowcaster (`configs/radar-pretrained.yaml`, trained on the real radar pool): for
each provider the run of `--lopo DIR` that left that provider out
(`DIR/lopo-<provider>/`, its best checkpoint: "pretrained (held out)"), and the shipped weights
(`create_model("radar_nowcaster", pretrained=True)`, trained on every provider: "shipped (seen)").
Scores are in rain rate by the archive's own conversion (reflectivity by FMI's Z-R,
accumulations per hour), pixels outside the radar's domain left out: CSI at 0.5 / 2 / 5 mm/h,
FSS at 2 mm/h over 10 and 20 km (the nearest window of whole pixels at least that wide), rainfall
MSE and MAE, per lead time; and the goal per provider for every model but the references
(`goal` in the JSON: `{model: ...}`).

Writes `--json` (default `benchmarks/real_radar.json`: the run's facts and every metric per lead
time), lead-time plots per case in `--plots` (default `benchmarks/real_radar/`) and checkpoints
in `--out`; prints the Markdown tables of `benchmarks/RESULTS.md`. One thread by default; run
it under `flock /tmp/convcast-heavy.lock` on a shared machine.

    python benchmarks/real_radar.py [--minutes 10] [--lopo runs/lopo [LABEL=DIR ...]] [--reuse]

Score one more model into an earlier run's JSON (the other models' metrics kept):

    python benchmarks/real_radar.py --models --baselines consensus --update
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from convcast.atomic import atomic_path
from convcast.data.radar import RadarDataModule
from convcast.metrics.report import expand_thresholds
from convcast.models import create_model
from convcast.models.pretrained import list_pretrained
from convcast.train import ForecastSystem
from convcast.train.checkpoint import find_checkpoint, load_checkpoint
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
    "opera": {"path": "OPERA/20180824", "importer": "opera_hdf5", "downsample": 2},
}
LEADS = (1, 3, 6, 12)
FSS_KM = (10, 20)  # FSS neighbourhoods at 2 mm/h
SCORES = ("csi@0.5", "csi@2", "csi@5", "fss10km@2", "fss20km@2", "rainfall_mse",
          "rainfall_mae")
HIGHER_IS_BETTER = {"rainfall_mse": False, "rainfall_mae": False}
PRETRAINED, SHIPPED = "pretrained (held out)", "shipped (seen)"
REFERENCES = ("persistence", "optical_flow", "sprog", "anvil")  # what the goal measures against


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=Path, default=Path(os.environ.get(
        "CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples")))
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS))
    p.add_argument("--models", nargs="*", default=["anchored"],
                   choices=["convlstm", "anchored"], help="models to train on synthetic radar")
    p.add_argument("--minutes", type=float, default=10.0, help="synthetic training per model")
    p.add_argument("--lopo", nargs="*", default=[],
                   help="folders of leave-one-provider-out runs of configs/radar-pretrained.yaml "
                        "(one lopo-<provider>/ each), as DIR (the shipped recipe) or LABEL=DIR "
                        "(another recipe, scored as 'LABEL (held out)')")
    p.add_argument("--baselines", nargs="*", default=["persistence", "optical_flow", "sprog",
                                                      "anvil", "consensus"])
    p.add_argument("--input_frames", type=int, default=5)
    p.add_argument("--output_frames", type=int, default=12)
    p.add_argument("--max_windows", type=int, default=None, help="per case (smoke tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="load checkpoints left in --out")
    p.add_argument("--update", action="store_true",
                   help="keep what --json already holds: the other cases, and in a case scored "
                        "again the models not scored this time (score in parts)")
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


def recipes(args: argparse.Namespace) -> dict[str, Path]:
    """`{model name: folder}` of the `--lopo` runs."""
    out = {}
    for entry in args.lopo:
        label, _, folder = entry.rpartition("=")
        out[f"{label} (held out)" if label else PRETRAINED] = Path(folder)
    return out


def held_out(folder: Path, provider: str) -> tuple[torch.nn.Module | None, dict]:
    """The model of `folder` trained without `provider` (its run's best checkpoint)."""
    run = folder / f"lopo-{provider}"
    ckpt = find_checkpoint("best", run) if run.is_dir() else None
    if ckpt is None:
        print(f"no leave-{provider}-out run with a best checkpoint under {run}", flush=True)
        return None, {}
    tm = load_checkpoint(ckpt)
    return tm.model, {"checkpoint": str(ckpt), "steps": tm.global_step}


def fss_scales(pixel_km: float) -> list[int]:
    """FSS windows (pixels) `FSS_KM` wide, rounded up (1% short counts: 3.9987-km pixels)."""
    return [max(1, math.ceil(0.99 * km / pixel_km)) for km in FSS_KM]


def score(models: dict[str, Any], dm: RadarDataModule, max_windows: int | None,
          scales: list[int]) -> tuple[dict, float]:
    """Every model on every window of `dm` (its rain rates by its own conversion), the FSS
    keys named by their width in km."""
    data = dm.train_set
    if max_windows is not None:
        data = torch.utils.data.Subset(data, range(min(max_windows, len(data))))
    loader = DataLoader(data, batch_size=4, shuffle=False)
    t0 = time.monotonic()
    results = evaluate(models, loader, thresholds=THRESHOLDS, scales=scales,
                       to_physical=dm.describe().data_to_physical)
    for r in results.values():
        for km, s in zip(FSS_KM, scales, strict=True):
            r[f"fss{km}km"] = r.pop(f"fss_{s}px")
    return results, (time.monotonic() - t0) / 60


def curve(results: dict, model: str, key: str) -> np.ndarray:
    return np.asarray(expand_thresholds(results[model], THRESHOLDS)[key], dtype=float)


def ratio(a: float, b: float) -> float:
    """a / b, NaN where b is 0 (e.g. no hit of optical flow's in a one-window smoke run)."""
    return float(a / b) if b else float("nan")


def goal(results: dict, model: str) -> dict[str, Any] | None:
    """`model` against the goal: mean CSI at 0.5 / 2 / 5 mm/h each >= 1.05 x optical flow's and
    >= the best of sprog / anvil at >= 9 of 12 lead times, rainfall MSE <= optical flow's."""
    if model not in results or "optical_flow" not in results:
        return None
    out: dict[str, Any] = {}
    rivals = [m for m in ("sprog", "anvil") if m in results]
    for t in THRESHOLDS:
        key = f"csi@{t:g}"
        ours, of = curve(results, model, key), curve(results, "optical_flow", key)
        best = np.max([curve(results, m, key) for m in rivals], axis=0) if rivals else of
        out[key] = {"ratio_to_optical_flow": ratio(np.nanmean(ours), np.nanmean(of)),
                    "mean_vs_best_pysteps": float(np.nanmean(ours) - np.nanmean(best)),
                    "leads_at_least_both": int(np.sum((ours >= 1.05 * of) & (ours >= best))),
                    "met": bool(np.nanmean(ours) >= 1.05 * np.nanmean(of)
                                and np.nanmean(ours) >= np.nanmean(best)
                                and np.sum((ours >= 1.05 * of) & (ours >= best)) >= 9)}
    mse, of = curve(results, model, "rainfall_mse"), curve(results, "optical_flow",
                                                           "rainfall_mse")
    out["rainfall_mse"] = {"ratio_to_optical_flow": ratio(mse.mean(), of.mean()),
                           "met": bool(mse.mean() <= of.mean())}
    out["met"] = all(v["met"] for v in out.values())
    return out


def goals(results: dict) -> dict[str, dict]:
    """The goal per model, for every model but the references it is measured against."""
    scored = {m: goal(results, m) for m in results if m not in REFERENCES}
    return {m: g for m, g in scored.items() if g is not None}


def earlier_models(args: argparse.Namespace, case: str) -> dict[str, dict]:
    """With `--update`, the metrics of `case` that `--json` already holds (per model)."""
    if not (args.update and args.json.exists()):
        return {}
    return json.loads(args.json.read_text()).get("cases", {}).get(case, {}).get("metrics", {})


# ---- tables and plots --------------------------------------------------------------------------
def figure(results: dict, path: Path, title: str, step: float) -> Path:
    """CSI at 0.5, 2 and 5 mm/h, FSS at 2 mm/h over 20 km, rainfall MSE and MAE against lead
    time, one line per model, in one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = (("csi@0.5", "CSI at 0.5 mm/h"), ("csi@2", "CSI at 2 mm/h"),
              ("csi@5", "CSI at 5 mm/h"), ("fss20km@2", "FSS 2 mm/h, 20 km"),
              ("rainfall_mse", "rainfall MSE (mm/h)²"), ("rainfall_mae", "rainfall MAE (mm/h)"))
    fig = Figure(figsize=(15, 3.2))
    FigureCanvasAgg(fig)
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for model in results:
            v = curve(results, model, key)
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


def means(results: dict) -> str:
    """One row per model: each score's mean over lead times."""
    rows = [["model", *SCORES]]
    for model in results:
        rows.append([model, *[f"{np.nanmean(curve(results, model, k)):.3f}" for k in SCORES]])
    return markdown(rows)


def per_lead(results: dict, step: float) -> str:
    rows = [["model", "metric", *[f"+{step * k:g} min" for k in LEADS], "mean"]]
    for model in results:
        for name in SCORES:
            v = curve(results, model, name)
            rows.append([model, name, *[f"{v[k - 1]:.3f}" for k in LEADS],
                         f"{np.nanmean(v):.3f}"])
    return markdown(rows)


def winners(results: dict, step: float) -> tuple[str, dict]:
    """The best model per score at each shown lead time ("tie" where the best two are equal,
    e.g. all 0), and how many of all leads each model wins outright."""
    rows = [["metric", *[f"+{step * k:g} min" for k in LEADS], "leads won (of all)"]]
    won: dict[str, dict[str, int]] = {}
    for name in SCORES:
        curves = {m: curve(results, m, name) for m in results}
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
    shipped = None
    if "radar_nowcaster" in list_pretrained():
        try:
            shipped = create_model("radar_nowcaster", pretrained=True)
            run["training"][SHIPPED] = shipped.card.get("training", {})
        except (FileNotFoundError, ValueError) as err:
            print(f"no shipped weights: {err}", flush=True)
    cases: dict[str, dict] = {}
    for provider in args.providers:
        lopo = {}
        for label, folder in recipes(args).items():
            lopo[label], facts = held_out(folder, provider)
            if facts:
                run["training"][f"{label}: without {provider}"] = facts
        for event in PROVIDERS[provider].get("events") or [None]:
            dm = windows(args, provider, event)
            case = provider + (f"-{event}" if event else "")
            models: dict[str, Any] = {n: create_model(n) for n in args.baselines}
            models.update({f"{n} (synthetic)": s.model for n, s in learned.items()})
            models.update({label: m for label, m in lopo.items() if m is not None})
            if shipped is not None:
                models[SHIPPED] = shipped
            d = dm.describe()
            pixel_km = d.radar.output_grid().xpixelsize / 1000
            print(f"{case}: scoring {len(models)} models on {len(dm.train_set)} windows",
                  flush=True)
            results, minutes = score(models, dm, args.max_windows, fss_scales(pixel_km))
            results = {**earlier_models(args, case), **results}
            cases[case] = {"results": results, "eval_minutes": round(minutes, 2),
                           "windows": len(dm.train_set), "grid": list(d.frame_size),
                           "step_minutes": d.step_minutes, "pixel_km": pixel_km,
                           "fss_pixels": fss_scales(pixel_km), "units": d.radar.units,
                           "zr": list(d.radar.zr), "goal": goals(results)}
            figure(results, args.plots / f"{case}.png", case, d.step_minutes)
    run["minutes_total"] = round((time.monotonic() - t_start) / 60, 1)
    run["load_after"] = os.getloadavg()
    text, out = [], {"run": run, "cases": {}}
    if args.update and args.json.exists():  # the cases scored by earlier parts stay
        earlier = json.loads(args.json.read_text())
        out["cases"] = earlier.get("cases", {})
        out["earlier_runs"] = [*earlier.get("earlier_runs", []), earlier.get("run")]
    for case, c in cases.items():
        table, won = winners(c["results"], c["step_minutes"])
        what = "reflectivity" if c["units"] == "dbz" else "rain rate" if c["units"] == \
            "rainrate" else "accumulations"
        text += [f"### {case}: {c['windows']} windows, {c['grid'][0]}x{c['grid'][1]} pixels of "
                 f"{c['pixel_km']:g} km, {c['step_minutes']:g}-min steps ({what}, scored in "
                 "mm/h)", means(c["results"]), per_lead(c["results"], c["step_minutes"]),
                 "Best model:", table, f"Goal: {json.dumps(c['goal'])}"]
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
