"""Training from a video against training from the same frames as a 64x64 `.npy`, side by side.

    python benchmarks/video_vs_npy.py --video path/to/vtest.avi     # table + video_vs_npy.json

A user who trains on a video (e.g. OpenCV's 768x576 pedestrian sample `vtest.avi`) should not pay
for decoding and resizing at every step. This runs the same training (`next_frame` of
`configs/next_frame-cpu-small.yaml`, batch 8, 64x64 gray, `--steps` steps through
`FramesDataModule` and a Lightning Trainer) from the video and from its frames saved once as a
64x64 float32 `.npy`; the first video run fills the decoded-frame cache (decodes each frame once),
then warm video runs and `.npy` runs alternate (A B A B ...) for `--rounds` rounds. The ratio is
steps/s of the video over steps/s of the `.npy` per round (min / median / max). One thread by
default; the CPU, its flags, the thread count and the load are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

from convcast.data import FramesDataModule
from convcast.data.cache import PreparedFrames
from convcast.data.sources.video import VideoSource
from convcast.train import ForecastSystem
from convcast.train.precision import cpu_info, ratio_summary

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "next_frame-cpu-small.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--video", type=Path, required=True, help="a video file (e.g. vtest.avi)")
    p.add_argument("--steps", type=int, default=80, help="training steps per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved warm rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=64, help="frame size the model trains on")
    p.add_argument("--out", type=Path, default=HERE / "video_vs_npy.json")
    return p.parse_args(argv)


def fit_seconds(path: Path, steps: int, size: int, cache_dir: Path) -> float:
    """Wall seconds of `steps` training steps of the config's model on `path` (setup included)."""
    model = yaml.safe_load(CONFIG.read_text())["model"]
    L.seed_everything(0, verbose=False)
    dm = FramesDataModule(str(path), input_frames=9, output_frames=1, frame_size=size,
                          channels=1, split_fractions=(1.0, 0.0, 0.0), batch_size=8,
                          cache_dir=str(cache_dir))
    system = ForecastSystem(**model)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    t = time.perf_counter()
    trainer.fit(system, datamodule=dm)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = PreparedFrames(VideoSource(args.video), 1, args.size)
        arr = frames.read(0, len(frames))  # [T, 1, size, size] float32 in [0, 1]
        np.save(tmp / "frames.npy", arr)
        cold = fit_seconds(args.video, args.steps, args.size, tmp / "cache")  # fills the cache
        video, npy = [], []
        for _ in range(args.rounds):
            video.append(fit_seconds(args.video, args.steps, args.size, tmp / "cache"))
            npy.append(fit_seconds(tmp / "frames.npy", args.steps, args.size, tmp / "cache"))
    rate = lambda s: args.steps / s  # noqa: E731  steps per second
    result = {
        "video": args.video.name, "frames": int(arr.shape[0]), "steps": args.steps,
        "frame_size": args.size, "threads": args.threads, "cpu": cpu_info(),
        "torch": torch.__version__, "load_before": load_before, "load_after": os.getloadavg(),
        "cold_video_steps_s": rate(cold), "video_steps_s": [rate(s) for s in video],
        "npy_steps_s": [rate(s) for s in npy],
        "video_over_npy": ratio_summary(npy, video),  # time ratio npy/video = speed video/npy
        "cold_over_npy": rate(cold) / float(np.median([rate(s) for s in npy])),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    r = result["video_over_npy"]
    print(f"| run | steps/s |\n|---|---|\n| video, first run (fills the cache) | "
          f"{result['cold_video_steps_s']:.2f} |\n| video, later runs (median) | "
          f"{np.median(result['video_steps_s']):.2f} |\n| .npy (median) | "
          f"{np.median(result['npy_steps_s']):.2f} |\n\nvideo / npy speed: median "
          f"{r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}) over {args.rounds} "
          f"rounds; first run {result['cold_over_npy']:.2f}; {args.threads} thread(s), "
          f"{result['cpu']['model']}, load {load_before[0]:.2f} -> {result['load_after'][0]:.2f}",
          file=sys.stdout)
    return result


if __name__ == "__main__":
    main()
