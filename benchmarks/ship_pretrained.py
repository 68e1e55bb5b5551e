"""Ship a pretrained model: the best checkpoint of its recipe's run -> the package, with its card.

Takes the best checkpoint of `--run` (a `convcast fit` run of the model's recipe), writes its
weights and card to `convcast/assets/<name>.pt` (weights-only, loaded by
`create_model(name, pretrained=True)`), and puts on the card what it was trained on, for how long,
on what machine, and, with `--scores`, how it scored on data it never saw.

    # the radar nowcaster: configs/radar-pretrained.yaml on every provider of the radar pool;
    # --scores: the JSON of benchmarks/real_radar.py (leave one provider out)
    python benchmarks/ship_pretrained.py radar_nowcaster --run runs/radar-pretrained \
        --minutes 60 [--scores benchmarks/real_radar.json]
    # the generic video model: configs/video-pretrained.yaml on a folder of clips; --scores:
    # the JSONs of benchmarks/video_experiment.py on videos outside that folder
    python benchmarks/ship_pretrained.py video_nowcaster --run runs/video-pretrained \
        --minutes 40 --data FOLDER [--scores benchmarks/video_experiment_*_pretrained.json]
    # the generic video model of the flow recipe: configs/video-pretrained-flow.yaml
    python benchmarks/ship_pretrained.py video_flow_nowcaster --run runs/video-pretrained-flow \
        --minutes 45 --data FOLDER [--scores benchmarks/video_experiment_*_flow_pretrained.json]
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from streaming import machine

from convcast.models.pretrained import ASSETS, save_pretrained
from convcast.train.checkpoint import find_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MEANS = ("csi@0.5", "csi@2", "csi@5", "fss20km@2", "rainfall_mse", "rainfall_mae")


def radar_scores(paths: list[Path]) -> dict:
    """Mean over lead times of each case's held-out pretrained model and its rivals."""
    out = {}
    for path in paths:
        for case, c in json.loads(path.read_text())["cases"].items():
            out[case] = {m: {k: round(float(np.nanmean(v[k])), 4) for k in MEANS if k in v}
                         for m, v in c["metrics"].items() if m != "shipped (seen)"}
            out[case]["goal_met"] = (c.get("goal") or {}).get("met")
    return out


def video_scores(paths: list[Path]) -> dict:
    """Per benchmark video: mean MSE / SSIM of the model as shipped (`pretrained`), of the one
    selected after fine-tuning from it, and of the baselines."""
    out = {}
    for path in paths:
        blob = json.loads(path.read_text())
        run, metrics = blob["run"], blob["metrics"]
        out[run["video"]] = {
            "chosen": run["selection"]["chosen"],
            **{m: {k: round(float(np.mean(metrics[m][k])), 4) for k in ("mse", "ssim")}
               for m in ("pretrained", "selected", "persistence", "optical_flow",
                         "optical_flow_video")
               if m in metrics},
            "goal_met": run["goal"]["selected"]["met"]}
    return out


def radar_card(args: argparse.Namespace) -> dict[str, Any]:
    from convcast.data.radar.pool import RadarPoolDataModule

    samples = args.data or Path(os.environ.get("CONVCAST_RADAR_SAMPLES",
                                               ROOT.parent / "shared" / "radar-samples"))
    card = {
        "what": "anchored ConvLSTM (2x32, 3x3, patch 2) correcting optical-flow extrapolation, "
                "with a monotone intensity map per lead time; 5 frames in, 12 out",
        "values": "HKO-7 pixels (dBZ + 10) / 70 of each archive's own units and Z-R relation",
        "pixel_km": [2.0, 4.0], "step_minutes": [5.0, 15.0],
        "input_frames": 5, "output_frames": 12,
        "trained_on": RadarPoolDataModule(str(samples)).summary(),
        "config": "configs/radar-pretrained.yaml",
    }
    if args.scores:
        card["leave_one_provider_out"] = radar_scores(args.scores)
    return card


VIDEO_MODELS = {  # name: (what it is, its recipe)
    "video_nowcaster": (
        "anchored ConvLSTM (2x32, 3x3, patch 4) correcting persistence; 64x64 gray frames in "
        "[0, 1], 10 in, 10 out", "configs/video-pretrained.yaml"),
    "video_flow_nowcaster": (
        "anchored ConvLSTM (2x32, 3x3, patch 4) correcting Lucas-Kanade extrapolation with the "
        "frame's edges continued, an activity map (0.02, 4 px) and a gate per lead time towards "
        "persistence; 64x64 gray frames in [0, 1], 10 in, 10 out",
        "configs/video-pretrained-flow.yaml"),
}


def video_card(args: argparse.Namespace) -> dict[str, Any]:
    from convcast.data import FramesDataModule

    if args.data is None:
        raise SystemExit(f"{args.name}: --data FOLDER (the clips the run trained on)")
    what, config = VIDEO_MODELS[args.name]
    dm = FramesDataModule(str(args.data), input_frames=10, output_frames=10, frame_size=64,
                          channels=1, split_fractions=(0.85, 0.15, 0.0))
    dm.setup("fit")
    clips = [{"name": getattr(s, "name", None) or Path(str(s.path)).name,
              "frames": int(s.num_frames)} for s in dm.sources]
    card = {
        "what": what,
        "values": "gray levels / 255 (minmax of uint8 video to [0, 1])",
        "frame_size": 64, "input_frames": 10, "output_frames": 10,
        "trained_on": {"clips": clips, "windows": {"train": len(dm.train_set),
                                                   "val": len(dm.val_set)},
                       "split": "time, 85% train / 15% validation per clip",
                       "augment": "flips, crops at 0.6-1 scale, time reversal, brightness"},
        "config": config,
    }
    if args.scores:
        card["unseen_videos"] = video_scores(args.scores)
    return card


CARDS = {"radar_nowcaster": radar_card, **{name: video_card for name in VIDEO_MODELS}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("name", choices=sorted(CARDS), help="the pretrained model to ship")
    p.add_argument("--run", type=Path, required=True, help="the convcast fit run folder")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock training minutes")
    p.add_argument("--data", type=Path, default=None,
                   help="what the run trained on (radar: the samples folder; video: the clips)")
    p.add_argument("--scores", type=Path, nargs="*", default=[],
                   help="benchmark JSONs of the model on data it never saw")
    p.add_argument("--note", default="", help="anything else the card should say")
    p.add_argument("--out", type=Path, default=None, help="default: the package's asset")
    args = p.parse_args()
    ckpt = find_checkpoint("best", args.run)
    if ckpt is None:
        raise SystemExit(f"no best checkpoint under {args.run}")
    tm = load_checkpoint(ckpt)
    card = {"name": args.name, **CARDS[args.name](args)}
    card["training"] = {"config": card.pop("config"), "steps": tm.global_step,
                        "minutes": args.minutes, "machine": machine(1)["cpu"], "threads": 1,
                        "checkpoint": ckpt.name, "date": date.today().isoformat()}
    gate = getattr(tm.model, "gate", None)
    if gate is not None and gate.numel():  # fitted on the run's validation windows
        card["gate"] = {"per_lead": [round(float(g), 3) for g in gate],
                        "towards": getattr(tm.model, "gate_reference", "anchor"),
                        "fitted_on": "the validation windows of the training run"}
    card["note"] = args.note
    out = args.out or ASSETS / f"{args.name}.pt"
    path = save_pretrained(out, tm.model, card)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) from {ckpt}:\n"
          f"{json.dumps(card['training'])}")


if __name__ == "__main__":
    main()
