"""The benchmark harness: speed, utilisation, precision and memory, measured side by side.

    python benchmarks/run.py                        # every CPU case at 1 and 2 threads -> run.json
    python benchmarks/run.py --cases reference,memory --threads 1 --rounds 7
    python benchmarks/run.py --device cuda          # on a GPU: bf16, compiled gates, CUDA graphs
    python benchmarks/run.py --markdown             # RESULTS.md's throughput section from run.json
    python benchmarks/run.py --quick --out /tmp/q.json   # smoke run on tiny sizes (the tests)

Protocol. Candidates of a case run in turn (A B A B ...) after a warm-up round, for `--rounds`
rounds, so a change of load hits all of them alike; each round gives one ratio per candidate and
the table shows min / median / max over rounds. A training step is complete: zero_grad, forward,
MSE loss, backward, Adam step. Every timed case runs at each `--threads` count (the ranking can
change between 1 and 2 threads); the CPU model, its speed flags, the cores, torch's version and
the load average before and after each case are recorded beside the figures.

Cases (`--cases`, comma-separated; default: all for the device):
    peak        matmul throughput (fp32, and bf16 where native): the roof for MFU
    reference   convcast's demo model vs the same network written plainly (one conv over
                cat[x, h] per step, tutorial style; identical weights, outputs compared) at
                2x64 3x3, batch 16; MFU of both from analytically counted FLOPs
    convlstm_s  the same at OpenSTL's ConvLSTM-S size (4x128, 5x5, batch 4)
    layout      one conv over cat[x_t, h_{t-1}] per step (convcast) vs W_x over the whole
                sequence in one call first, then W_h per step
    precision   the demo model's training step in float32 vs bf16 autocast
    fused       eager vs compiled (`set_compiled_gates`) gate arithmetic, demo model
    models      every registered learned model: train and inference sequences/s
    memory      peak tensor memory of a training step: convcast vs reference (10 -> 10), and
                plain vs gradient checkpointing for 10 -> 90 (demo model, batch 4)
    data        Moving MNIST generation (one worker) vs what training consumes
    infer_s     (GPU) ConvLSTM-S inference at batch 100: eager vs CUDA graphs vs channels_last
Memory on the CPU is the peak of torch's CPU allocator events (torch.profiler, profile_memory),
so it counts tensors only and does not depend on the machine's speed; on CUDA it is
`torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import convcast
from convcast.atomic import write_text
from convcast.layers import set_checkpointing, set_compiled_gates
from convcast.train.precision import (
    cpu_info,
    interleaved_times,
    native_bf16,
    peak_memory,
    ratio_summary,
    sync,
    train_step,
)

HERE = Path(__file__).resolve().parent
CPU_CASES = ("peak", "reference", "convlstm_s", "layout", "precision", "fused", "models",
             "memory", "data")
GPU_CASES = ("peak", "reference", "convlstm_s", "precision", "fused", "models", "memory",
             "infer_s")
OPENSTL_CONVLSTM_S_V100 = 113.0  # seq/s, ConvLSTM-S inference on a V100, batch 100 (OpenSTL)
FULL = dict(frame=64, t_in=10, t_out=10, long=90, batch=16, batch_s=4, batch_models=4,
            batch_infer=100, peak_n=2048, demo={}, s=dict(hidden_channels=[128] * 4,
            kernel_size=5), layout=(16, 64, 16), models={})
QUICK = dict(frame=16, t_in=3, t_out=3, long=9, batch=2, batch_s=2, batch_models=2,
             batch_infer=2, peak_n=128, demo=dict(hidden_channels=[4, 4]),
             s=dict(hidden_channels=[4] * 2, kernel_size=5), layout=(4, 4, 8),
             models=dict(hidden_channels=4))
QUICK_MODEL_KWARGS = {"seq2seq": dict(nf=4), "fc_lstm": dict(hidden_sizes=[8]),
                      "predrnn": dict(hidden_channels=4, num_layers=2),
                      "predrnn_v2": dict(hidden_channels=4, num_layers=2),
                      "encoder_forecaster": dict(hidden_channels=[4, 4]),
                      "next_frame": dict(hidden_channels=4),
                      "anchored": dict(base_kwargs=dict(hidden_channels=[4, 4]))}


# ---- the plain reference network ------------------------------------------------------------
class PlainCell(nn.Module):
    """A ConvLSTM cell as tutorials write it: one Conv2d over cat([x, h]) -> the four gates."""

    def __init__(self, in_channels: int, hidden: int, k: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, k, padding=k // 2)

    def forward(self, x: torch.Tensor | None, h: torch.Tensor, c: torch.Tensor):
        xh = h if x is None else torch.cat([x, h], dim=1)  # [B, C_in + hid, H, W]
        i, f, o, g = torch.split(self.conv(xh), self.hidden, dim=1)  # each [B, hid, H, W]
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class PlainEncoderForecaster(nn.Module):
    """convcast's encoder_forecaster (feedback variant) written plainly: encoder cells over the
    patch-reshaped inputs, forecaster cells started from their states and fed the previous
    frame, a 1x1 conv over all forecaster states, sigmoid."""

    def __init__(self, hidden: list[int], k: int, patch: int = 4, channels: int = 1) -> None:
        super().__init__()
        pc = channels * patch * patch
        ins = [pc] + hidden[:-1]
        self.patch = patch
        self.encoder = nn.ModuleList(PlainCell(i, h, k) for i, h in zip(ins, hidden, strict=True))
        self.forecaster = nn.ModuleList(PlainCell(i, h, k)
                                        for i, h in zip(ins, hidden, strict=True))
        self.head = nn.Conv2d(sum(hidden), pc, 1)

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        B, T = x.shape[:2]
        xp = F.pixel_unshuffle(x.flatten(0, 1), self.patch).unflatten(0, (B, T))  # [B,T,pc,h,w]
        hw = xp.shape[-2:]
        states = [(xp.new_zeros(B, c.hidden, *hw), xp.new_zeros(B, c.hidden, *hw))
                  for c in self.encoder]
        for t in range(T):
            inp = xp[:, t]
            for i, cell in enumerate(self.encoder):
                states[i] = cell(inp, *states[i])
                inp = states[i][0]
        frame, preds = xp[:, -1], []
        for _ in range(horizon):
            inp = frame
            for i, cell in enumerate(self.forecaster):
                states[i] = cell(inp, *states[i])
                inp = states[i][0]
            frame = torch.sigmoid(self.head(torch.cat([h for h, _ in states], dim=1)))
            preds.append(frame)
        y = torch.stack(preds, dim=1)  # [B, horizon, pc, h, w]
        return F.pixel_shuffle(y.flatten(0, 1), self.patch).unflatten(0, (B, horizon))

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Take the weights of a convcast encoder_forecaster (W_x and W_h side by side)."""
        pairs = [*zip(self.encoder, model.encoder.cells, strict=True),
                 *zip(self.forecaster, model.forecaster, strict=True)]
        for mine, theirs in pairs:
            mine.conv.weight.copy_(theirs.conv_weight())
            mine.conv.bias.copy_(theirs.conv_x.bias)
        self.head.load_state_dict(model.head.state_dict())


def batched_input_stack(stack: convcast.layers.ConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """The other layout: W_x over all T frames in one call, then only W_h per step."""
    B, T, _, H, W = x.shape
    seq = x  # [B, T, C, H, W]
    for cell in stack.cells:
        xg = cell.conv_x(seq.flatten(0, 1)).view(B, T, -1, H, W)  # [B, T, 4*hid, H, W]
        h, c = cell.init_state(B, H, W, x)
        hs = []
        for t in range(T):
            i, f, o, g = (cell.conv_h(h) + xg[:, t]).chunk(4, 1)  # each [B, hid, H, W]
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        seq = torch.stack(hs, 1)  # [B, T, hid, H, W]
    return seq


class StackForecaster(nn.Module):
    """A ConvLSTM stack as `forward(x, horizon)` (its last layer's outputs) for `train_step`."""

    def __init__(self, stack: nn.Module, batched: bool) -> None:
        super().__init__()
        self.stack, self.batched = stack, batched

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        return batched_input_stack(self.stack, x) if self.batched else self.stack(x)[0][0]


# ---- measuring helpers ----------------------------------------------------------------------
def step_flops(model: nn.Module, batch: tuple) -> int:
    """FLOPs of one forward + backward (convolutions and matmuls, counted by torch)."""
    x, y = batch
    counter = FlopCounterMode(display=False)
    with counter:
        F.mse_loss(model(x, y.shape[1]), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def inference(model: nn.Module, batch: tuple) -> Callable[[], None]:
    x, y = batch

    def run() -> None:
        with torch.no_grad():
            model(x, y.shape[1])
    return run


def make_batch(b: int, t_in: int, t_out: int, size: int, device: str) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, t_in, 1, size, size, generator=g)
    y = torch.rand(b, t_out, 1, size, size, generator=g)
    return x.to(device), y.to(device)


def summarise(times: dict[str, list[float]], base: str) -> dict:
    """Median seconds of each candidate and the ratios base-time / candidate-time (speed-ups)."""
    out = {"seconds": {k: statistics.median(v) for k, v in times.items()},
           "rounds": len(times[base])}
    out["speedup_vs_" + base] = {k: ratio_summary(times[base], v) for k, v in times.items()
                                 if k != base}
    return out


def train_memory(model: nn.Module, batch: tuple, device: str,
                 autocast: torch.dtype | None = None) -> int:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = train_step(model, batch, opt, autocast)
    step()  # the optimizer's state exists from here on, as in a training run
    opt.zero_grad(set_to_none=True)
    gc.collect()
    return peak_memory(step, device)


# ---- cases ----------------------------------------------------------------------------------
def case_peak(ctx: dict) -> dict:
    """Dense throughput (GFLOP/s, best of the rounds) of a square matmul and of a large 3x3
    convolution, in fp32 and, where native, bf16. The roof for MFU is the faster of the two:
    on a CPU torch's matmul (MKL/BLAS) and its convolutions (oneDNN) are different libraries."""
    n, dev = ctx["sizes"]["peak_n"], ctx["device"]
    c, hw, b = (512, 32, 8) if n >= 1024 else (16, 8, 2)
    out = {}
    dtypes = {"fp32": torch.float32}
    if native_bf16(dev):
        dtypes["bf16"] = torch.bfloat16
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, device=dev, dtype=dtype)
        m = torch.randn(n, n, device=dev, dtype=dtype)
        x = torch.randn(b, c, hw, hw, device=dev, dtype=dtype)
        w = torch.randn(c, c, 3, 3, device=dev, dtype=dtype)
        times = interleaved_times({"matmul": lambda a=a, m=m: a @ m,
                                   "conv": lambda x=x, w=w: F.conv2d(x, w, padding=1)},
                                  rounds=ctx["rounds"] + 2, device=dev)
        out[name + "_matmul_gflops"] = 2 * n**3 / min(times["matmul"]) / 1e9
        out[name + "_conv_gflops"] = 2 * b * c * c * 9 * hw * hw / min(times["conv"]) / 1e9
        out[name + "_gflops"] = max(out[name + "_matmul_gflops"], out[name + "_conv_gflops"])
    ctx["peak"][ctx["threads"]] = out
    return out


def mfu(ctx: dict, flops: int, seconds: float, dtype: str = "fp32") -> float | None:
    """Achieved FLOP/s over the roof measured by `case_peak` at the same thread count."""
    peak = ctx["peak"].get(ctx["threads"], {}).get(dtype + "_gflops")
    return flops / seconds / 1e9 / peak if peak else None


def versus_reference(ctx: dict, kwargs: dict, batch_size: int) -> dict:
    sz, dev = ctx["sizes"], ctx["device"]
    torch.manual_seed(0)
    ours = convcast.create_model("encoder_forecaster_demo", **kwargs).to(dev)
    ref = PlainEncoderForecaster(list(ours.encoder.hidden_channels),
                                 ours.encoder.cells[0].kernel_size[0]).to(dev)
    ref.copy_from(ours)
    batch = make_batch(batch_size, sz["t_in"], sz["t_out"], sz["frame"], dev)
    with torch.no_grad():
        diff = float((ours(batch[0], sz["t_out"]) - ref(batch[0], sz["t_out"])).abs().max())
    flops = step_flops(ours, batch)
    fns = {"reference": train_step(ref, batch), "convcast": train_step(ours, batch)}
    if dev == "cuda":  # the GPU path: bf16 autocast, then compiled gates too
        fast = copy.deepcopy(ours)
        fns["convcast_bf16"] = train_step(fast, batch, autocast=torch.bfloat16)
        fused = copy.deepcopy(ours)
        set_compiled_gates(fused)
        fns["convcast_bf16_compiled"] = train_step(fused, batch, autocast=torch.bfloat16)
        fns["convcast_bf16_compiled_channels_last"] = train_step(
            copy.deepcopy(fused).to(memory_format=torch.channels_last), batch,
            autocast=torch.bfloat16)
    times = interleaved_times(fns, ctx["rounds"], ctx["warmup"], device=dev)
    out = summarise(times, "reference")
    out.update(batch=batch_size, weights=sum(p.numel() for p in ours.parameters()),
               hidden=list(ours.encoder.hidden_channels),
               kernel=ours.encoder.cells[0].kernel_size[0], max_abs_output_diff=diff,
               gflop_per_step=flops / 1e9,
               mfu={k: mfu(ctx, flops, s, "bf16" if "bf16" in k else "fp32")
                    for k, s in out["seconds"].items()})
    return out


def case_reference(ctx: dict) -> dict:
    return versus_reference(ctx, ctx["sizes"]["demo"], ctx["sizes"]["batch"])


def case_convlstm_s(ctx: dict) -> dict:
    return versus_reference(ctx, ctx["sizes"]["s"], ctx["sizes"]["batch_s"])


def case_layout(ctx: dict) -> dict:
    cin, hidden, size = ctx["sizes"]["layout"]
    dev, b, t = ctx["device"], ctx["sizes"]["batch"], ctx["sizes"]["t_in"]
    torch.manual_seed(0)
    stack = convcast.layers.ConvLSTM(cin, hidden, 3, 2).to(dev)
    x = torch.rand(b, t, cin, size, size, device=dev)
    batch = (x, torch.rand(b, t, hidden, size, size, device=dev))
    fns = {"batched_input": train_step(StackForecaster(stack, True), batch),
           "convcast": train_step(StackForecaster(stack, False), batch)}
    out = summarise(interleaved_times(fns, ctx["rounds"], ctx["warmup"], device=dev),
                    "batched_input")
    out.update(what=f"2x{hidden} ConvLSTM on {size}x{size}x{cin}, batch {b}, {t} steps")
    return out


def case_precision(ctx: dict) -> dict:
    dev, sz = ctx["device"], ctx["sizes"]
    if not native_bf16(dev):
        return {"skipped": "no native bf16 on this device (emulated bf16 is slower)"}
    torch.manual_seed(0)
    model = convcast.create_model("encoder_forecaster_demo", **sz["demo"]).to(dev)
    batch = make_batch(sz["batch"], sz["t_in"], sz["t_out"], sz["frame"], dev)
    flops = step_flops(model, batch)
    fns = {"fp32": train_step(model, batch),
           "bf16_autocast": train_step(model, batch, autocast=torch.bfloat16)}
    out = summarise(interleaved_times(fns, ctx["rounds"], ctx["warmup"], device=dev), "fp32")
    out["mfu"] = {"fp32": mfu(ctx, flops, out["seconds"]["fp32"]),
                  "bf16_autocast": mfu(ctx, flops, out["seconds"]["bf16_autocast"], "bf16")}
    return out


def case_fused(ctx: dict) -> dict:
    dev, sz = ctx["device"], ctx["sizes"]
    torch.manual_seed(0)
    eager = convcast.create_model("encoder_forecaster_demo", **sz["demo"]).to(dev)
    fused = copy.deepcopy(eager)
    set_compiled_gates(fused)
    batch = make_batch(sz["batch"], sz["t_in"], sz["t_out"], sz["frame"], dev)
    t = time.perf_counter()
    train_step(fused, batch)()  # compiles (minutes on a small CPU the first time)
    compile_s = time.perf_counter() - t
    fns = {"eager": train_step(eager, batch), "compiled": train_step(fused, batch)}
    out = summarise(interleaved_times(fns, ctx["rounds"], ctx["warmup"], device=dev), "eager")
    out["first_step_with_compile_s"] = compile_s
    return out


def model_kwargs(name: str, quick: bool) -> dict:
    return QUICK_MODEL_KWARGS.get(name, {}) if quick else {}


def case_models(ctx: dict) -> dict:
    dev, sz = ctx["device"], ctx["sizes"]
    batch = make_batch(sz["batch_models"], sz["t_in"], sz["t_out"], sz["frame"], dev)
    fns, weights = {}, {}
    for name in convcast.list_models(baselines=False):
        torch.manual_seed(0)
        model = convcast.create_model(name, **model_kwargs(name, ctx["quick"])).to(dev)
        model(batch[0][:1], 1)  # sizes lazy layers before counting
        weights[name] = sum(p.numel() for p in model.parameters())
        fns[f"{name}/train"] = train_step(model.train(), batch)
        fns[f"{name}/infer"] = inference(model, batch)
    times = interleaved_times(fns, ctx["rounds"], ctx["warmup"], device=dev)
    b = sz["batch_models"]
    return {name: {"weights": weights[name],
                   "train_seq_s": b / statistics.median(times[f"{name}/train"]),
                   "infer_seq_s": b / statistics.median(times[f"{name}/infer"])}
            for name in weights} | {"batch": b, "rounds": len(next(iter(times.values())))}


def case_memory(ctx: dict) -> dict:
    dev, sz = ctx["device"], ctx["sizes"]
    torch.manual_seed(0)
    ours = convcast.create_model("encoder_forecaster_demo", **sz["demo"]).to(dev)
    ref = PlainEncoderForecaster(list(ours.encoder.hidden_channels), 3).to(dev)
    ref.copy_from(ours)
    short = make_batch(sz["batch"], sz["t_in"], sz["t_out"], sz["frame"], dev)
    out = {"short": {"what": f"{sz['t_in']} -> {sz['t_out']} training step, batch {sz['batch']}",
                     "convcast_bytes": train_memory(ours, short, dev),
                     "reference_bytes": train_memory(ref, short, dev)}}
    long = make_batch(sz["batch_s"], sz["t_in"], sz["long"], sz["frame"], dev)
    plain, ckpt = ours, copy.deepcopy(ours)
    set_checkpointing(ckpt)
    out["long"] = {"what": f"{sz['t_in']} -> {sz['long']} training step, batch {sz['batch_s']}",
                   "plain_bytes": train_memory(plain, long, dev),
                   "checkpointed_bytes": train_memory(ckpt, long, dev)}
    out["long"]["ratio"] = out["long"]["checkpointed_bytes"] / out["long"]["plain_bytes"]
    fns = {"plain": train_step(plain, long), "checkpointed": train_step(ckpt, long)}
    out["long"]["time"] = summarise(interleaved_times(fns, ctx["rounds"], ctx["warmup"],
                                                      device=dev), "plain")
    out["method"] = ("torch.cuda.max_memory_allocated" if dev == "cuda" else
                     "peak of torch's CPU allocator events (torch.profiler, profile_memory)")
    return out


def case_data(ctx: dict) -> dict:
    from convcast.data import MovingMNIST

    ds = MovingMNIST("train", 10_000)
    n = 40 if ctx["quick"] else 400
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    rate = n / (time.perf_counter() - t)
    out = {"generation_seq_s": rate}
    ref = next((r for r in ctx["results"] if r["case"] == "reference"
                and r["threads"] == ctx["threads"]), None)
    if ref is not None:
        consumed = ref["batch"] / ref["seconds"]["convcast"]
        out.update(training_consumes_seq_s=consumed, generation_over_consumption=rate / consumed)
    return out


def cuda_graph(model: nn.Module, batch: tuple) -> Callable[[], None]:
    """Fixed-shape inference captured once as a CUDA graph, then replayed: one launch for the
    whole forecast instead of one per kernel (the input is copied into the captured buffer)."""
    x, y = batch
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):  # warm up (cuDNN picks its algorithms) outside the capture
            model(static_x, y.shape[1])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        model(static_x, y.shape[1])

    def run() -> None:
        static_x.copy_(x)
        graph.replay()
    return run


def case_infer_s(ctx: dict) -> dict:
    """ConvLSTM-S inference: eager, CUDA graphs (captured by hand, and by torch.compile's
    reduce-overhead mode), channels_last. A candidate that fails is recorded, not fatal."""
    dev, sz = ctx["device"], ctx["sizes"]
    torch.manual_seed(0)
    model = convcast.create_model("encoder_forecaster_demo", **sz["s"]).to(dev).eval()
    model.nonfinite = "ignore"  # its input check syncs with the host, which a capture forbids
    batch = make_batch(sz["batch_infer"], sz["t_in"], sz["t_out"], sz["frame"], dev)
    fns, failed = {"eager": inference(model, batch)}, {}
    if dev == "cuda":
        builders = {
            "cuda_graph": lambda: cuda_graph(model, batch),
            "compiled_reduce_overhead": lambda: inference(
                torch.compile(model, mode="reduce-overhead", dynamic=False), batch),
            "channels_last": lambda: inference(
                copy.deepcopy(model).to(memory_format=torch.channels_last), batch)}
        for name, build in builders.items():
            try:
                fns[name] = build()
                fns[name]()
            except Exception as err:  # record why, measure the others
                fns.pop(name, None)
                failed[name] = f"{type(err).__name__}: {err}"[:300]
    out = summarise(interleaved_times(fns, ctx["rounds"], ctx["warmup"] + 2, device=dev), "eager")
    out["failed"] = failed
    out["seq_s"] = {k: sz["batch_infer"] / s for k, s in out["seconds"].items()}
    out["vs_openstl_v100"] = {k: v / OPENSTL_CONVLSTM_S_V100 for k, v in out["seq_s"].items()}
    return out


CASES: dict[str, Callable[[dict], dict]] = {
    "peak": case_peak, "reference": case_reference, "convlstm_s": case_convlstm_s,
    "layout": case_layout, "precision": case_precision, "fused": case_fused,
    "models": case_models, "memory": case_memory, "data": case_data, "infer_s": case_infer_s}
ONCE = ("memory", "data")  # not thread-dependent enough to repeat: run at the first count only


# ---- report ---------------------------------------------------------------------------------
def fmt_ratio(r: dict) -> str:
    return f"**{r['median']:.2f}×** ({r['min']:.2f}–{r['max']:.2f})"


def fmt_mfu(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(run: dict) -> str:
    m = run["meta"]
    sz = m["sizes"]
    io = f"{sz['t_in']} -> {sz['t_out']} frames of {sz['frame']}×{sz['frame']}"
    lines = [f"`python benchmarks/run.py` ({m['date']}): {m['cpu']['model']}, "
             f"{m['cpu']['logical_cores']} logical cores, flags {', '.join(m['cpu']['flags'])}; "
             f"torch {m['torch']}, device {m['device']}; {m['rounds']} interleaved rounds after "
             f"{m['warmup']} warm-up; load average {m['load_before'][0]:.1f} before, "
             f"{m['load_after'][0]:.1f} after. Ratios: median (min–max) over rounds.", ""]
    by = {}
    for r in run["results"]:
        by.setdefault(r["case"], []).append(r)
    if "peak" in by:
        kinds = ["matmul", "conv"] if "fp32_conv_gflops" in by["peak"][0] else [""]
        cols = [f"{d}{'_' + k if k else ''}_gflops" for k in kinds for d in ("fp32", "bf16")]
        names = [c.replace("_gflops", "").replace("_", " ") + " GFLOP/s" for c in cols]
        lines += ["| threads | " + " | ".join(names) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {r['threads']} | " + " | ".join(f"{r.get(c, float('nan')):.0f}"
                                                    for c in cols) + " |" for r in by["peak"]]
        roof = ("the faster of matmul and convolution" if kinds[0] else "the matmul")
        lines += ["", f"MFU below: achieved FLOP/s (convolutions and matmuls counted by "
                  f"torch.utils.flop_counter) over {roof} at the same thread count.", ""]
    for case, title in (("reference", "2×64, 3×3"), ("convlstm_s", "ConvLSTM-S size, 4×128, 5×5")):
        if case not in by:
            continue
        r0 = by[case][0]
        lines += [f"Training step, convcast vs the plain reference ({title}, batch {r0['batch']}, "
                  f"{r0['weights'] / 1e6:.2f}M weights, {r0['gflop_per_step']:.1f} GFLOP per "
                  f"step; outputs agree to {r0['max_abs_output_diff']:.1e}):", "",
                  "| threads | candidate | s/step | speed vs reference | MFU |",
                  "|---|---|---|---|---|"]
        for r in by[case]:
            for k, s in r["seconds"].items():
                sp = r["speedup_vs_reference"].get(k)
                lines.append(f"| {r['threads']} | {k} | {s:.3f} | "
                             f"{fmt_ratio(sp) if sp else '1'} | {fmt_mfu(r['mfu'][k])} |")
        lines.append("")
    for case, base, title in (("layout", "batched_input", "Step layout"),
                              ("precision", "fp32", "Precision (demo model, batch "
                               f"{run['meta']['sizes']['batch']})"),
                              ("fused", "eager", "Gate arithmetic, demo model")):
        rows = [r for r in by.get(case, []) if "skipped" not in r]
        if not rows:
            continue
        lines += [f"{title}:", "", f"| threads | candidate | s/step | speed vs {base} |",
                  "|---|---|---|---|"]
        for r in rows:
            for k, s in r["seconds"].items():
                sp = r[f"speedup_vs_{base}"].get(k)
                lines.append(f"| {r['threads']} | {k} | {s:.3f} | "
                             f"{fmt_ratio(sp) if sp else '1'} |")
        lines.append("")
    if "models" in by:
        names = [k for k in by["models"][0] if isinstance(by["models"][0][k], dict)]
        head = " | ".join(f"{r['threads']} thr train / infer" for r in by["models"])
        lines += [f"Every learned model, sequences/s (batch {by['models'][0]['batch']}, "
                  f"{io}, default sizes):", "", f"| model | weights | {head} |",
                  "|---|---|" + "---|" * len(by["models"])]
        for n in names:
            cells = " | ".join(f"{r[n]['train_seq_s']:.2f} / {r[n]['infer_seq_s']:.1f}"
                               for r in by["models"])
            lines.append(f"| `{n}` | {by['models'][0][n]['weights'] / 1e6:.2f}M | {cells} |")
        lines.append("")
    if "memory" in by:
        r = by["memory"][0]
        s, lg = r["short"], r["long"]
        ck = lg["time"]["speedup_vs_plain"]["checkpointed"]
        lines += [f"Memory ({r['method']}):", "", "| step | A | B | B / A |", "|---|---|---|---|",
                  f"| {s['what']} | reference {s['reference_bytes'] / 2**20:.0f} MiB | convcast "
                  f"{s['convcast_bytes'] / 2**20:.0f} MiB | "
                  f"{s['convcast_bytes'] / s['reference_bytes']:.2f} |",
                  f"| {lg['what']} | plain {lg['plain_bytes'] / 2**20:.0f} MiB | checkpointed "
                  f"{lg['checkpointed_bytes'] / 2**20:.0f} MiB | **{lg['ratio']:.2f}** |", "",
                  f"Checkpointing's cost in time: the checkpointed step runs at {fmt_ratio(ck)} "
                  f"the plain step's speed ({r['threads']} thread(s)).", ""]
    if "data" in by:
        r = by["data"][0]
        lines.append(f"Moving MNIST generation (one worker): {r['generation_seq_s']:.0f} seq/s"
                     + (f"; training consumes {r['training_consumes_seq_s']:.1f} seq/s: "
                        f"**{r['generation_over_consumption']:.0f}×** headroom"
                        if "generation_over_consumption" in r else "") + ".")
        lines.append("")
    for r in by.get("infer_s", []):
        lines += [f"ConvLSTM-S inference, batch {sz['batch_infer']} (OpenSTL on a V100: "
                  f"{OPENSTL_CONVLSTM_S_V100:.0f} seq/s):", "",
                  "| candidate | seq/s | × OpenSTL V100 |", "|---|---|---|"]
        lines += [f"| {k} | {v:.0f} | {r['vs_openstl_v100'][k]:.1f} |"
                  for k, v in r["seq_s"].items()]
        lines += [f"| {k} | failed: {why} | |" for k, why in r["failed"].items()] + [""]
    if "infer_s" not in by and m["device"] != "cuda":
        lines += ["GPU rows (bf16 autocast, compiled gates, CUDA graphs, channels_last; goals: "
                  "training >= 2× the plain reference, ConvLSTM-S inference at batch 100 >= 10× "
                  f"OpenSTL's {OPENSTL_CONVLSTM_S_V100:.0f} seq/s on a V100): not measured (no "
                  "GPU lent); `python benchmarks/run.py --device cuda` measures them.", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=None, help="comma-separated; default: all for the device")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", default=None,
                    help="comma-separated CPU thread counts (default: 1 and all cores)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not figures")
    ap.add_argument("--out", type=Path, default=HERE / "run.json")
    ap.add_argument("--markdown", action="store_true",
                    help="print RESULTS.md's section from --out and exit")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())), end="")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here; run on a GPU machine "
                         "with a CUDA build of torch, or use --device cpu")
    known = CPU_CASES if args.device == "cpu" else GPU_CASES
    cases = args.cases.split(",") if args.cases else list(known)
    bad = [c for c in cases if c not in CASES]
    if bad:
        raise SystemExit(f"unknown case(s) {', '.join(bad)}; valid: {', '.join(CASES)}")
    cores = os.cpu_count() or 1
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, cores}) if args.device == "cpu" else [torch.get_num_threads()])
    if args.rounds < 2 or any(t < 1 for t in threads):
        raise SystemExit(f"need --rounds >= 2 and thread counts >= 1, got {args.rounds}, "
                         f"{threads}")
    ctx = {"device": args.device, "rounds": args.rounds, "warmup": args.warmup,
           "quick": args.quick, "sizes": QUICK if args.quick else FULL, "peak": {},
           "results": []}
    meta = {"date": datetime.date.today().isoformat(), "argv": sys.argv[1:] if argv is None
            else argv, "cpu": cpu_info(), "torch": torch.__version__, "device": args.device,
            "threads": threads, "rounds": args.rounds, "warmup": args.warmup,
            "quick": args.quick, "sizes": {k: v for k, v in ctx["sizes"].items()},
            "load_before": list(os.getloadavg())}
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    for n in threads:
        torch.set_num_threads(n)
        ctx["threads"] = n
        for case in cases:
            if case in ONCE and n != threads[0]:
                continue
            load = os.getloadavg()[0]
            t = time.perf_counter()
            result = CASES[case](ctx)
            sync(args.device)
            row = {"case": case, "threads": n, **result, "wall_s": time.perf_counter() - t,
                   "load_before": load, "load_after": os.getloadavg()[0]}
            ctx["results"].append(row)
            print(f"[{n} thread(s)] {case}: {row['wall_s']:.0f} s, load {load:.1f} -> "
                  f"{row['load_after']:.1f}", file=sys.stderr, flush=True)
    meta["load_after"] = list(os.getloadavg())
    run = {"meta": meta, "results": ctx["results"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(run, indent=1) + "\n")  # a reader never sees half a file
    print(markdown(run), end="")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
