"""Ship the pretrained radar nowcaster: a run of `configs/radar-pretrained.yaml` -> the package.

Takes the best checkpoint of `--run` (a `convcast fit` run on every provider of the radar pool),
writes its weights and card to `convcast/assets/radar_nowcaster.pt` (weights-only, loaded by
`create_model("radar_nowcaster", pretrained=True)`), and puts on the card what it was trained on
(the pool's archives, pixel sizes and steps), for how long, on what machine, and, with `--scores`
(the JSON of `benchmarks/real_radar.py`), the leave-one-provider-out scores.

    python benchmarks/ship_radar_nowcaster.py --run runs/radar-pretrained --minutes 60 \
        [--scores benchmarks/real_radar.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import date
from pathlib import Path

import numpy as np

from convcast.data.radar.pool import RadarPoolDataModule
from convcast.models.pretrained import ASSETS, PRETRAINED, save_pretrained
from convcast.train.checkpoint import find_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MEANS = ("csi@0.5", "csi@2", "csi@5", "fss20km@2", "rainfall_mse", "rainfall_mae")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def scores(path: Path) -> dict:
    """Mean over lead times of each case's held-out pretrained model and its rivals."""
    cases = json.loads(path.read_text())["cases"]
    out = {}
    for case, c in cases.items():
        out[case] = {m: {k: round(float(np.nanmean(v[k])), 4) for k in MEANS if k in v}
                     for m, v in c["metrics"].items() if m != "shipped (seen)"}
        out[case]["goal_met"] = (c.get("goal") or {}).get("met")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the convcast fit run folder")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock training minutes")
    p.add_argument("--samples", type=Path, default=Path(os.environ.get(
        "CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples")))
    p.add_argument("--scores", type=Path, default=None, help="benchmarks/real_radar.json")
    p.add_argument("--note", default="", help="anything else the card should say")
    p.add_argument("--out", type=Path, default=ASSETS / PRETRAINED["radar_nowcaster"])
    args = p.parse_args()
    ckpt = find_checkpoint("best", args.run)
    if ckpt is None:
        raise SystemExit(f"no best checkpoint under {args.run}")
    tm = load_checkpoint(ckpt)
    pool = RadarPoolDataModule(str(args.samples))
    card = {
        "name": "radar_nowcaster",
        "what": "anchored ConvLSTM (2x32, 3x3, patch 2) correcting optical-flow extrapolation, "
                "with a monotone intensity map per lead time; 5 frames in, 12 out",
        "values": "HKO-7 pixels (dBZ + 10) / 70 of each archive's own units and Z-R relation",
        "pixel_km": [2.0, 4.0], "step_minutes": [5.0, 15.0],
        "input_frames": 5, "output_frames": 12,
        "trained_on": pool.summary(),
        "training": {"config": "configs/radar-pretrained.yaml", "steps": tm.global_step,
                     "minutes": args.minutes, "machine": cpu_model(), "threads": 1,
                     "checkpoint": ckpt.name, "date": date.today().isoformat()},
        "note": args.note,
    }
    if args.scores is not None:
        card["leave_one_provider_out"] = scores(args.scores)
    path = save_pretrained(args.out, tm.model, card)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) from {ckpt}:\n"
          f"{json.dumps(card['training'])}")


if __name__ == "__main__":
    main()
