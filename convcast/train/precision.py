"""Precision and thread count chosen by measurement, not by assumption.

Whether bf16 autocast speeds training up depends on the hardware: on a CPU with native bf16
(AVX512-BF16, AMX) it can, elsewhere it is emulated and several times slower; on a small model
the casts can eat the gain even where it is native. Likewise torch's default thread count can be
far slower than one thread on a busy shared machine. So each is decided by a short probe: a few
complete training steps (forward, backward, optimizer step) of the model on a real batch, the
candidates timed in turn (ABAB...) so that a change of load hits both alike.

    precision, why = choose_precision(model, (x, y))      # "bf16-mixed" or "32-true"
    threads, why = choose_threads(model, (x, y))          # 1 or all cores, unless OMP_NUM_THREADS

The probes train a copy of the model: the model itself is left untouched. The same helpers time
and size the benchmarks (`benchmarks/run.py`): `interleaved_times`, `train_step`, `peak_memory`.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.train.evaluate import split_batch

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> dict[str, Any]:
    """CPU model, the speed-relevant flags it has and its logical cores (Linux /proc/cpuinfo;
    elsewhere torch's capability checks)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), "unknown")
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.split(":", 1)[1].split()) if line else set()
    if not flags:  # not Linux: ask torch which vector units it found
        cpu = torch.cpu
        checks = {"avx2": cpu._is_avx2_supported, "avx512f": cpu._is_avx512_supported,
                  "avx512_bf16": cpu._is_avx512_bf16_supported,
                  "amx_tile": cpu._is_amx_tile_supported}
        flags = {name for name, check in checks.items() if check()}
    return {"model": model, "flags": [f for f in SPEED_FLAGS if f in flags],
            "logical_cores": os.cpu_count() or 1}


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bf16 natively (CPU: AVX512-BF16 or AMX; CUDA: compute 8.0+)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_info()["flags"]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so a timer sees the work done."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]], rounds: int = 5, warmup: int = 1,
    budget_s: float | None = None, device: str | torch.device = "cpu",
) -> dict[str, list[float]]:
    """Seconds of each call of each `fns` entry, run in turn (A B A B ...) for `rounds` rounds
    after `warmup` untimed rounds; with `budget_s`, stop early once it is spent (after at least
    two timed rounds), so a probe stays short on a slow machine."""
    if rounds < 1 or not fns:
        raise ValueError(f"need rounds >= 1 and at least one function, got rounds={rounds}, "
                         f"{len(fns)} functions")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
        if budget_s is not None and r >= 1 and time.perf_counter() - start > budget_s:
            break
    return times


def peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak bytes allocated by torch while `fn()` runs, above what was allocated before it.

    CUDA: the caching allocator's `max_memory_allocated`. CPU: the allocation and free events of
    torch's CPU allocator recorded by `torch.profiler` (`profile_memory=True`), summed in time
    order; memory outside torch's allocator (Python objects, the allocator's own slack) is not
    counted, so this is the tensors' peak, independent of the machine's speed or load. The
    profiler cannot see the size of a block allocated before it started, so free what `fn` would
    free first (e.g. `optimizer.zero_grad(set_to_none=True)` before a training step).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def ratio_summary(slow: list[float], fast: list[float]) -> dict[str, float]:
    """min / median / max over rounds of slow[i] / fast[i] (the rounds were interleaved)."""
    ratios = [a / b for a, b in zip(slow, fast, strict=True)]
    return {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}


def train_step(
    model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer | None = None,
    autocast: torch.dtype | None = None,
) -> Callable[[], float]:
    """A closure running one complete training step of `model` on `batch` ((x, y) or a dict):
    zero_grad, forward (under autocast to `autocast` if given), MSE loss, backward, optimizer
    step (Adam at 1e-4 on `model`'s parameters when none is given)."""
    x, y, _ = split_batch(batch)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=autocast or torch.float32,
                            enabled=autocast is not None):
            pred = model(x, y.shape[1])  # [B, T_out, C, H, W]
        loss = F.mse_loss(pred.float(), y)
        for extra in getattr(model, "extra_losses", dict)().values():
            loss = loss + extra
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _spread(times: dict[str, list[float]], slow: str, fast: str) -> tuple[float, str]:
    """Median time ratio slow / fast, and its range in words."""
    s = ratio_summary(times[slow], times[fast])
    return s["median"], (f"(range {s['min']:.2f}-{s['max']:.2f} over {len(times[slow])} "
                         "interleaved steps each)")


def choose_precision(
    model: nn.Module, sample: Any, device: str | torch.device = "cpu", budget_s: float = 8.0,
    margin: float = 1.1,
) -> tuple[str, str]:
    """`("bf16-mixed" or "32-true", why)`: bf16 autocast only where the device has native bf16
    and a probe of training steps on `sample` ((x, y) on `device`) finds it at least `margin`
    times faster than float32."""
    device = torch.device(device)
    if not native_bf16(device):
        what = "CPU has no AVX512-BF16 or AMX" if device.type == "cpu" else "GPU has no bf16"
        return "32-true", f"float32: this {what}, so bf16 would be emulated (slower); not probed"
    probe = copy.deepcopy(model).to(device).train()
    times = interleaved_times({"32-true": train_step(probe, sample),
                               "bf16-mixed": train_step(probe, sample, autocast=torch.bfloat16)},
                              rounds=5, budget_s=budget_s, device=device)
    speedup, spread = _spread(times, "32-true", "bf16-mixed")
    if speedup >= margin:
        return "bf16-mixed", (f"bf16 autocast: {speedup:.2f}x as fast as float32 {spread} in a "
                              "probe")
    return "32-true", (f"float32: bf16 autocast was {speedup:.2f}x as fast {spread} in a probe "
                       f"(bf16 needs >= {margin:.2f}x)")


def choose_threads(
    model: nn.Module, sample: Any, candidates: list[int] | None = None, budget_s: float = 6.0,
    margin: float = 1.1,
) -> tuple[int, str]:
    """`(threads, why)` for CPU training: OMP_NUM_THREADS when set, else the fastest of
    `candidates` (default: 1 and all logical cores) in a probe of training steps; more threads
    only when at least `margin` times faster (they also slow down everything else running)."""
    if os.environ.get("OMP_NUM_THREADS"):
        n = torch.get_num_threads()
        return n, f"{n} thread(s): OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is set"
    cores = os.cpu_count() or 1
    candidates = sorted(set(candidates or [1, cores]))
    if len(candidates) == 1:
        return candidates[0], f"{candidates[0]} thread(s): the only candidate ({cores} cores)"
    before = torch.get_num_threads()
    probe = copy.deepcopy(model).cpu().train()
    step = train_step(probe, sample)

    def with_threads(n: int) -> Callable[[], float]:
        def run() -> float:
            torch.set_num_threads(n)
            return step()
        return run

    try:
        times = interleaved_times({str(n): with_threads(n) for n in candidates}, rounds=5,
                                  budget_s=budget_s)
    finally:
        torch.set_num_threads(before)
    best = candidates[0]
    for n in candidates[1:]:
        if statistics.median(times[str(best)]) >= margin * statistics.median(times[str(n)]):
            best = n
    parts = []
    for n in (n for n in candidates if n != best):
        ratio, spread = _spread(times, str(n), str(best))
        parts.append(f"{n} took {ratio:.2f}x its time {spread}")
    rule = f"more threads only when >= {margin:.2f}x faster"
    return best, f"{best} thread(s): {'; '.join(parts)} in a probe ({rule})"
