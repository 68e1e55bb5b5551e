"""Throughput benchmark: data generation vs training, ConvLSTM convolution layout, bf16.

Prints a table and writes JSON (`--out`, default `benchmarks/throughput.json`). Everything is
measured side by side in one run, so the ratios hold even on a busy machine:

1. Moving MNIST generation (sequences/s, one worker) against what one training step of the demo
   model consumes (sequences/s): the generator must never starve training.
2. A training step of the ConvLSTM stack, which runs one convolution over `cat([x_t, h_{t-1}])`
   per step, against applying the input convolution to the whole sequence in one batched call
   first (same maths, same weights), in float32 and bf16 autocast.
3. A training step of the demo model in float32 against bf16 autocast (`--precision bf16-mixed`
   in `convcast demo`, `--trainer.precision bf16-mixed` in `convcast fit`).
4. Forward+backward time per sequence of every registered learned model at 64×64.

    python benchmarks/throughput.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn as nn

import convcast
from convcast.data import MovingMNIST
from convcast.layers import ConvLSTM


def batched_input_forward(stack: ConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """Reference: W_x applied to all T frames in one call, then only W_h per step (same maths)."""
    B, T, _, H, W = x.shape
    seq = x  # [B, T, C, H, W]
    for cell in stack.cells:
        xg = cell.conv_x(seq.flatten(0, 1)).view(B, T, -1, H, W)  # [B, T, 4*hid, H, W]
        h, c = cell.init_state(B, H, W, x)
        outs = []
        for t in range(T):
            i, f, o, g = (cell.conv_h(h) + xg[:, t]).chunk(4, 1)  # each [B, hid, H, W]
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        seq = torch.stack(outs, 1)  # [B, T, hid, H, W]
    return seq


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def seq_step(fn, module: nn.Module, x: torch.Tensor, bf16: bool = False):
    """One training step (zero grad, forward `fn(x)` under optional bf16 autocast, backward)."""
    def step() -> None:
        module.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = fn(x)  # [B, T, ...]
        out.float().square().mean().backward()
    return step


def train_step(model: nn.Module, x: torch.Tensor, horizon: int, bf16: bool = False):
    """A forecaster's training step: `model(x, horizon)` -> [B, horizon, C, H, W]."""
    return seq_step(lambda v: model(v, horizon), model, x, bf16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("throughput.json"))
    args = ap.parse_args()
    dev, B, R = args.device, args.batch, args.repeats
    rows: list[dict] = []

    # 1. data generation vs consumption by the demo model
    ds = MovingMNIST("train", 10_000)
    n = 400
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    gen_rate = n / (time.perf_counter() - t)
    demo = convcast.create_model("encoder_forecaster_demo").to(dev)
    x = torch.rand(B, 10, 1, 64, 64, device=dev)
    step_s = timed(train_step(demo, x, 10), R, dev)
    rows.append({"what": "Moving MNIST generation (1 worker)", "value": gen_rate,
                 "unit": "seq/s"})
    rows.append({"what": "demo model training consumes", "value": B / step_s, "unit": "seq/s"})
    rows.append({"what": "generation / consumption", "value": gen_rate * step_s / B,
                 "unit": "x"})

    # 2. one conv over cat([x, h]) per step (ours) vs a batched input conv first: training step
    for hidden, cin, size in [(64, 16, 16), (128, 16, 16), (64, 1, 64)]:
        xs = torch.rand(B, 10, cin, size, size, device=dev)
        stack = ConvLSTM(cin, hidden, 3, 2).to(dev)
        for bf16 in (False, True):
            ours = lambda v, m=stack: m(v)[0][0]  # noqa: E731  [B, T, hid, H, W]
            ref = lambda v, m=stack: batched_input_forward(m, v)  # noqa: E731
            t_ours = timed(seq_step(ours, stack, xs, bf16), R, dev)
            t_ref = timed(seq_step(ref, stack, xs, bf16), R, dev)
            rows.append({"what": f"ConvLSTM 2x{hidden} on {size}x{size}x{cin} train step, "
                                 f"{'bf16' if bf16 else 'float32'}: batched-input time / ours",
                         "value": t_ref / t_ours, "unit": "x", "ours_s": t_ours,
                         "reference_s": t_ref})

    # 3. mixed precision: the demo model's training step in float32 and in bf16 autocast
    t_bf16 = timed(train_step(demo, x, 10, bf16=True), R, dev)
    rows.append({"what": "demo model train step: float32 time / bf16-mixed time",
                 "value": step_s / t_bf16, "unit": "x", "float32_s": step_s, "bf16_s": t_bf16})

    # 4. every learned model: forward+backward seconds per sequence, 10 -> 10 frames at 64×64
    for name in convcast.list_models(baselines=False):
        try:
            model = convcast.create_model(name).to(dev)
        except TypeError as err:  # a model that needs more arguments than in_channels
            rows.append({"what": f"{name}: skipped ({err})", "value": float("nan"), "unit": ""})
            continue
        xb = torch.rand(4, 10, 1, 64, 64, device=dev)
        s = timed(train_step(model, xb, 10), max(1, R - 1), dev)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"what": f"{name} (default size, {params / 1e6:.2f}M weights) train step",
                     "value": s / 4, "unit": "s/seq"})

    width = max(len(r["what"]) for r in rows)
    print(f"{'measurement'.ljust(width)}  {'value':>10}  unit")
    for r in rows:
        print(f"{r['what'].ljust(width)}  {r['value']:>10.3g}  {r['unit']}")
    meta = {"device": dev, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown"}
    if dev == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
