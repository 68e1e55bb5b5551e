"""Watch-mode latency: a new radar file into `convcast nowcast --watch` vs a full `nowcast` call.

For each case a model is trained for one step on a synthetic gray-PNG archive (the timing does
not depend on the weights) and the watcher warms up on its first frames. Then, each round, one new
file is dropped into the folder and (A) the watcher takes it (`Watcher.poll`: scan, read and
prepare the file, one `Stream.update`, one `Stream.forecast`, forecast.npz/.nc/.gif, state save),
then (B) a full `convcast nowcast --input FOLDER` runs on the same folder (open the archive, read
and prepare the latest `input_frames` frames, the model on all of them, the same writers). A and B
alternate, so a busy machine slows both alike; the table gives min / median / max over rounds and
the watcher's time per phase. Writes `benchmarks/watch_latency.json`.

    OMP_NUM_THREADS=1 python benchmarks/watch_latency.py [--rounds 12] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from streaming import machine

from convcast.atomic import write_text
from convcast.cli.nowcast import main as nowcast_main
from convcast.data.radar import RadarDataModule
from convcast.data.radar.archive import write_image_folder
from convcast.inference.watch import WatchConfig, Watcher
from convcast.train import ForecastSystem

STEP = np.timedelta64(6, "m")
CASES = {  # name: (model, kwargs, T_in, K, frame size)
    "radar-convlstm-cpu-small, 5 -> 15, 32x32": (
        "encoder_forecaster", {"hidden_channels": [32, 32], "kernel_size": 3, "patch_size": 2},
        5, 15, 32),
    "encoder_forecaster_shi2015_radar, 5 -> 15, 100x100": (
        "encoder_forecaster_shi2015_radar", {}, 5, 15, 100),
}
QUICK = {"tiny, 3 -> 2, 16x16": ("encoder_forecaster", {"hidden_channels": [4],
                                                         "kernel_size": 3, "patch_size": 2},
                                 3, 2, 16)}


def levels(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 gray frames `[n, size, size]` of smooth blobs that drift (radar-like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx = rng.uniform(0.2, 0.8, 2)
    out = [np.exp(-((yy - cy - 0.01 * t) ** 2 + (xx - cx - 0.02 * t) ** 2) * 20) * 200
           for t in range(n)]
    return np.stack(out).astype(np.uint8)


def checkpoint(work: Path, name: str, kwargs: dict, t_in: int, k: int, size: int) -> Path:
    """One training step on a synthetic archive; the checkpoint knows how frames are prepared."""
    t = np.datetime64("2021-05-01T00:00", "s") + STEP * np.arange(4 * (t_in + k))
    write_image_folder(work / "train", levels(len(t), size, 0), t)
    dm = RadarDataModule(str(work / "train"), input_frames=t_in, output_frames=k,
                         block_minutes=1440, split_ratios=(1, 0, 0), batch_size=2)
    system = ForecastSystem(name, kwargs, loss="bce")
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(system, datamodule=dm)
    trainer.save_checkpoint(work / "model.ckpt")
    return work / "model.ckpt"


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run_case(work: Path, spec: tuple, rounds: int) -> dict:
    name, kwargs, t_in, k, size = spec
    ckpt = checkpoint(work, name, kwargs, t_in, k, size)
    radar = work / "radar"
    t = np.datetime64("2021-06-01T10:00", "s") + STEP * np.arange(t_in + rounds + 1)
    frames = levels(len(t), size, 1)
    write_image_folder(radar, frames[:t_in], t[:t_in])
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet, contextlib.redirect_stdout(io.StringIO()):
        w = Watcher(WatchConfig(folder=radar, out=work / "watch", model=ckpt))
        w.warm_up()
        nowcast = ["--ckpt_path", str(ckpt), "--input", str(radar), "--out", str(work / "now")]
        nowcast_main(nowcast)  # first-call imports (netCDF4, matplotlib) out of the timing
    watch_s, full_s, phases = [], [], {p: [] for p in ("read", "update", "forecast", "write")}
    for r in range(t_in, t_in + rounds):
        write_image_folder(radar, frames[r:r + 1], t[r:r + 1])
        with contextlib.redirect_stderr(io.StringIO()):
            t0 = time.perf_counter()
            assert w.poll() == 1
            watch_s.append(time.perf_counter() - t0)
        for p in phases:
            phases[p].append(w.timing[p])
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            assert nowcast_main(nowcast) == 0
            full_s.append(time.perf_counter() - t0)
    ratio = [a / b for a, b in zip(watch_s, full_s, strict=True)]
    return {"watch_s": stats(watch_s), "nowcast_s": stats(full_s), "ratio": stats(ratio),
            "phases_s": {p: stats(v) for p, v in phases.items()},
            "weights": sum(p.numel() for p in w.tm.model.parameters()), "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one tiny case, 3 rounds (smoke test)")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("watch_latency.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cases, rounds = (QUICK, 3) if a.quick else (CASES, a.rounds)
    result = {"machine": machine(a.threads), "load_before": os.getloadavg()[0], "cases": {}}
    for label, spec in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            result["cases"][label] = r = run_case(Path(tmp), spec, rounds)
        ph = r["phases_s"]
        print(f"{label} ({r['weights']:,} weights): watcher {r['watch_s']['median'] * 1e3:.0f} ms"
              f" per file (read+prepare {ph['read']['median'] * 1e3:.1f}, update "
              f"{ph['update']['median'] * 1e3:.1f}, forecast {ph['forecast']['median'] * 1e3:.1f}"
              f", write {ph['write']['median'] * 1e3:.0f}), nowcast "
              f"{r['nowcast_s']['median'] * 1e3:.0f} ms, ratio min/median/max "
              + " / ".join(f"{r['ratio'][s]:.2f}" for s in ("min", "median", "max")))
    result["load_after"] = os.getloadavg()[0]
    print(f"load average {result['load_before']:.2f} before, {result['load_after']:.2f} after")
    if not a.quick:
        write_text(a.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
