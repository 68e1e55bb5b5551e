"""Streaming benchmark: a new frame into a kept state vs re-encoding the whole input window.

An operational forecaster gets one new frame at a time. Without a state it re-runs the model on
its last T_in frames for every forecast (B); a `convcast.stream` advances its encoded state by the
new frame only and decodes from it (A). Timed for each model:

    update:   A = stream.update(one frame)           B = model.encode(last T_in frames)
    forecast: A = update(one frame) + forecast(K)    B = model(last T_in frames, K)
    cache:    A = the encoder's convolutions in an update's order (layers alternating)
              B = the same convolutions in a re-encode's order (each layer T_in times in a row)

A and B alternate (ABAB...) after a warm-up, so a busy machine slows both alike; each round
gives one ratio A / B and the table shows their min / median / max. The goal for the update is
a ratio <= 1 / T_in. A second part (`--parts export`) times the demo model run eagerly against
its exported files (`convcast export`: onnxruntime, TorchScript, torch.export), in sequences/s at
batch 1 and 8. Writes the tables and `benchmarks/streaming.json`.

    OMP_NUM_THREADS=1 python benchmarks/streaming.py [--rounds 7] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import convcast
from convcast.atomic import write_text
from convcast.models import create_model

SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
CASES = {  # name: (model, kwargs, T_in, K, frame size, batch)
    "demo 10->10 64x64": ("encoder_forecaster_demo", {}, 10, 10, 64, 1),
    "radar 5->15 100x100": ("encoder_forecaster_shi2015_radar", {}, 5, 15, 100, 1),
}
QUICK = {"tiny 4->3 16x16": ("encoder_forecaster", {"hidden_channels": [8, 8],
                                                     "kernel_size": 3}, 4, 3, 16, 1)}


def machine(threads: int) -> dict:
    """CPU model, the flags that matter for speed, cores, threads, torch version, load."""
    info = {"cpu": platform.processor() or platform.machine(), "flags": [],
            "logical_cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["cpu"] = value.strip()
        elif key.strip() == "flags":
            info["flags"] = [f for f in SPEED_FLAGS if f in value.split()]
            break
    return info


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def per_call(fn: Callable[[], object], reps: int) -> float:
    """Seconds per call of `fn`, averaged over `reps` back-to-back calls."""
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int,
                min_seconds: float) -> dict:
    """A and B timed alternately; ratios A / B per round, after a warm-up of both."""
    for _ in range(2):
        a(), b()
    reps = max(1, int(min_seconds / max(per_call(b, 1), 1e-6)))  # each sample >= min_seconds
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(per_call(a, reps))
        tb.append(per_call(b, reps))
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return {"a_ms": [round(1e3 * v, 3) for v in ta], "b_ms": [round(1e3 * v, 3) for v in tb],
            "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
            "ratio_max": max(ratios), "reps": reps}


def weight_reuse(model: torch.nn.Module, state: dict, t_in: int, rounds: int,
                 min_seconds: float) -> dict | None:
    """The encoder's gate convolutions in an update's order (layers alternate, each weight used
    once in turn) against a re-encode's (each layer's weight T_in times in a row): A / B per
    round. Shows what the cache costs an update; None for a model without a ConvLSTM encoder."""
    cells = list(getattr(getattr(model, "encoder", None), "cells", []))
    if not cells or any(c.conv_x is None for c in cells):
        return None
    with torch.inference_mode():
        ws = [c.conv_weight() for c in cells]  # [4*hid, C_l + hid, kh, kw] each
        xs = [torch.rand(1, w.shape[1], *state[f"h{i}"].shape[-2:]) for i, w in enumerate(ws)]
    pads = [c.conv_h.padding for c in cells]
    calls = list(zip(xs, ws, pads, strict=True))

    def alternating() -> None:
        with torch.inference_mode():
            for _ in range(t_in):
                for x, w, pad in calls:
                    F.conv2d(x, w, padding=pad)

    def in_a_row() -> None:
        with torch.inference_mode():
            for x, w, pad in calls:
                for _ in range(t_in):
                    F.conv2d(x, w, padding=pad)

    out = interleaved(alternating, in_a_row, rounds, min_seconds)
    out["weight_mb"] = [round(w.numel() * w.element_size() / 2**20, 2) for w in ws]
    return out


def run_case(name: str, spec: tuple, rounds: int, min_seconds: float) -> dict:
    arch, kwargs, t_in, horizon, size, batch = spec
    torch.manual_seed(0)
    model = create_model(arch, **kwargs).eval()
    frames = torch.rand(batch, t_in + 1, 1, size, size)
    window, new = frames[:, 1:], frames[:, -1:]  # the latest T_in frames; the newest one
    stream = convcast.stream(model).update(frames[:, :t_in])  # primed with T_in frames

    def reencode() -> object:
        with torch.inference_mode():
            return model.encode(window)

    def whole() -> object:
        with torch.inference_mode():
            return model(window, horizon)

    with torch.inference_mode():  # the stream's forecast is the model's on every frame seen
        check = convcast.stream(model).update(window).forecast(horizon)
        err = (check - model(window, horizon)).abs().max().item()
    update = interleaved(lambda: stream.update(new), reencode, rounds, min_seconds)
    fc = interleaved(lambda: stream.update(new).forecast(horizon), whole, rounds, min_seconds)
    reuse = weight_reuse(model, stream.state_dict().get("state", {}), t_in, rounds, min_seconds)
    return {"case": name, "model": arch, "kwargs": kwargs, "input_frames": t_in,
            "horizon": horizon, "frame_size": size, "batch": batch,
            "weights": sum(p.numel() for p in model.parameters()),
            "max_abs_diff_stream_vs_model": err, "goal_update_ratio": 1 / t_in,
            "update_vs_reencode": update, "forecast_vs_whole": fc,
            "convs_alternating_vs_in_a_row": reuse}


def export_speed(rounds: int, threads: int, min_seconds: float, quick: bool) -> list[dict]:
    """Sequences/s of the demo model (10 -> 10, 64×64) run eagerly, from its ONNX file in
    onnxruntime, as a TorchScript trace and as a torch.export program, at batch 1 and 8; the
    four alternate within every round."""
    import tempfile

    import onnxruntime as ort

    from convcast.cli.export import export

    arch, kwargs, t_in, horizon, size, _ = (QUICK["tiny 4->3 16x16"] if quick
                                            else CASES["demo 10->10 64x64"])
    torch.manual_seed(0)
    model = create_model(arch, **kwargs).eval()
    info = {"input_frames": t_in, "channels": 1, "frame_size": [size, size]}
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.ts"),
                          ("exported-program", "m.pt2")):
            export(None, fmt, horizon, Path(tmp, name), model=model, info=info)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(Path(tmp, "m.onnx")), opts,
                                       providers=["CPUExecutionProvider"])
        traced = torch.jit.load(str(Path(tmp, "m.ts")))
        program = torch.export.load(str(Path(tmp, "m.pt2"))).module()
    results = []
    for batch in (1, 8):
        x = torch.rand(batch, t_in, 1, size, size)
        xn = x.numpy()

        def eager(x=x) -> object:
            with torch.inference_mode():
                return model(x, horizon)

        def exported(x=x) -> object:
            with torch.inference_mode():
                return program(x)

        def scripted(x=x) -> object:
            with torch.inference_mode():
                return traced(x)

        runners = {"eager": eager, "onnxruntime": lambda xn=xn: session.run(None, {"x": xn}),
                   "torchscript": scripted, "exported-program": exported}
        for fn in runners.values():  # warm-up
            fn(), fn()
        reps = max(1, int(min_seconds / max(per_call(eager, 1), 1e-6)))
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(rounds):
            for k, fn in runners.items():
                times[k].append(per_call(fn, reps))
        row = {"batch": batch, "reps": reps}
        for k, ts in times.items():
            row[f"{k}_seq_per_s"] = round(batch / statistics.median(ts), 2)
            if k != "eager":
                ratios = [e / t for e, t in zip(times["eager"], ts, strict=True)]
                row[f"{k}_speedup"] = [round(min(ratios), 3), round(statistics.median(ratios), 3),
                                       round(max(ratios), 3)]
        results.append(row)
    return results


def table(results: list[dict]) -> str:
    lines = ["| case | update / re-encode (min / median / max) | goal | update ms | re-encode ms "
             "| update+forecast / whole forecast (min / median / max) "
             "| convs alternating / in a row (min / median / max) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        u, f = r["update_vs_reencode"], r["forecast_vs_whole"]
        c = r.get("convs_alternating_vs_in_a_row")
        reuse = (f"{c['ratio_min']:.3f} / {c['ratio_median']:.3f} / {c['ratio_max']:.3f}" if c
                 else "n/a")
        lines.append(
            f"| {r['case']} | {u['ratio_min']:.3f} / {u['ratio_median']:.3f} / "
            f"{u['ratio_max']:.3f} | {r['goal_update_ratio']:.3f} | "
            f"{statistics.median(u['a_ms']):.2f} | {statistics.median(u['b_ms']):.2f} | "
            f"{f['ratio_min']:.3f} / {f['ratio_median']:.3f} / {f['ratio_max']:.3f} | {reuse} |")
    return "\n".join(lines)


def export_table(rows: list[dict]) -> str:
    names = ("eager", "onnxruntime", "torchscript", "exported-program")
    lines = ["| batch | " + " | ".join(f"{n} seq/s" for n in names)
             + " | onnxruntime / eager (min / median / max) | exported / eager |",
             "|---|" + "---|" * (len(names) + 2)]
    for r in rows:
        o, e = r["onnxruntime_speedup"], r["exported-program_speedup"]
        lines.append(f"| {r['batch']} | " + " | ".join(f"{r[f'{n}_seq_per_s']}" for n in names)
                     + f" | {o[0]} / {o[1]} / {o[2]} | {e[0]} / {e[1]} / {e[2]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min_seconds", type=float, default=1.0,
                        help="each timing sample repeats the call for at least this long")
    parser.add_argument("--quick", action="store_true", help="one tiny case (a smoke run)")
    parser.add_argument("--parts", nargs="+", default=["stream", "export"],
                        choices=["stream", "export"],
                        help="stream: update vs re-encode; export: eager vs exported files")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("streaming.json"))
    args = parser.parse_args(argv)
    if args.rounds < 5 and not args.quick:
        parser.error("--rounds must be >= 5 for a median worth reporting")
    torch.set_num_threads(args.threads)
    before = load()
    cases = QUICK if args.quick else CASES
    min_seconds = 0.01 if args.quick else args.min_seconds
    results = ([run_case(n, s, args.rounds, min_seconds) for n, s in cases.items()]
               if "stream" in args.parts else [])
    speed = (export_speed(args.rounds, args.threads, min_seconds, args.quick)
             if "export" in args.parts else [])
    report = {"machine": machine(args.threads), "load_before": before, "load_after": load(),
              "rounds": args.rounds, "results": results, "export_speed": speed}
    if results:
        print(table(results))
    if speed:
        print(export_table(speed))
    print(f"machine: {report['machine']}; load {before} -> {report['load_after']}")
    write_text(args.out, json.dumps(report, indent=1) + "\n")  # whole or not at all
    return report


if __name__ == "__main__":
    main()
