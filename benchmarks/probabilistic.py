"""Probabilistic nowcasts on real radar: learned ensemble and probability heads vs pysteps.

The real composites of `benchmarks/real_radar.py` (FMI reflectivity, two events; KNMI 5-minute and
BoM 10-minute accumulations; and an OPERA 15-minute rain-rate composite, a 2048 x 2048 km region
block-averaged to 8 km), read the same way: every gap-free window of 5 input and 12 output frames
(`RadarDataModule(importer=..., split_times=ALL)`), of which `--windows` spread evenly over each
archive are forecast (0: all) by

- `anchored_ensemble` (the learned ensemble of `configs/radar-ensemble-cpu-small.yaml`,
  checkpoint `--ensemble`) and `steps` (pysteps' STEPS at the archive's pixel size and time
  step), `--members` members each;
- `exceedance_heads` (the probability heads of `configs/radar-probability-cpu-small.yaml`,
  checkpoint `--heads`, their thresholds set to the archive's own rain rates) and
  `lagrangian_probability` (pysteps' local Lagrangian probability) at each of `--slopes`;
- `optical_flow` and `persistence`, ensembles of one.

`--ensemble` / `--heads` take one checkpoint (trained on synthetic radar: no archive seen) or a
folder of leave-one-provider-out runs `lopo-<provider>/` (`configs/radar-ensemble-real.yaml`,
`configs/radar-probability-real.yaml` on the real radar pool with `--data.init_args.exclude`):
each provider is then scored by the best checkpoint of the run that never saw it.

Scored in rain rate (mm/h) by each archive's own conversion, pixels outside the radar's domain
left out, per case and lead time: CRPS (one member: the MAE), fair CRPS and spread-skill ratio
(M >= 2); at 0.5, 2 and 5 mm/h the Brier score, Brier skill score against the sample base rate,
ROC area (an ensemble's probability: its fraction of members at or above the threshold), and the
reliability diagram pooled over lead times (its deviation: the largest |observed frequency -
forecast probability| over the bins holding >= 1% of the pixels); rank histograms (ensembles,
values below 0.1 mm/h tie). The time of one member (seconds per member and window) of the learned
ensemble and of STEPS is measured on one window per case, the two interleaved for
`--timing_rounds` rounds, with the CPU, its flags, the threads and the load.

The goal (printed, and `goal` in the JSON), on every case: the learned ensemble's CRPS (mean over
lead times) below STEPS'; the heads' or the ensemble's Brier skill score (mean over lead times)
above both STEPS' and lagrangian_probability's at its best slope, at each threshold; the heads or
the ensemble reliable within ±0.1 in every bin holding >= 1% of the pixels, at each threshold;
one member of the learned ensemble at most 1/10 of the time of one STEPS member.

Writes `--json` (default `benchmarks/probabilistic.json`) and PNGs in `--plots` (default
`benchmarks/probabilistic/`: CRPS per lead time, Brier skill score per lead time, reliability
diagrams, rank histograms); prints the Markdown tables of `benchmarks/RESULTS.md`. One thread by
default; run it under `flock /tmp/convcast-heavy.lock` on a shared machine.

    python benchmarks/probabilistic.py --ensemble CKPT|DIR --heads CKPT|DIR [--members 8]
        [--windows 8] [--providers fmi knmi bom opera] [--samples DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from convcast.atomic import atomic_path
from convcast.data.radar import RadarDataModule
from convcast.metrics.probabilistic import (
    BrierScore,
    BrierSkillScore,
    ProbabilisticMetrics,
    ReliabilityDiagram,
    ROCCurve,
)
from convcast.models import create_model, list_models
from convcast.models.probability import threshold_values
from convcast.train.checkpoint import find_checkpoint, load_forecaster
from convcast.train.precision import cpu_info, interleaved_times, ratio_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from radar_experiment import markdown
from real_radar import ALL, LEADS, THRESHOLDS
from real_radar import PROVIDERS as REAL_PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = {**REAL_PROVIDERS,  # OPERA: a rainy 1024 x 1024-pixel region of the 2-km composite
             "opera": {"path": "OPERA/20180824", "importer": "opera_hdf5",
                       "crop": [512, 512, 1536, 1536], "downsample": 4}}
RAIN = 0.1  # mm/h: no rain below it (pysteps' threshold; the rank histogram's ties)
N_BINS = 10  # reliability bins
BIN_SHARE = 0.01  # a reliability bin counts where it holds at least this share of the pixels
RELIABLE = 0.1  # the goal's largest |observed - forecast| in such a bin
SPEEDUP = 10.0  # the goal: a learned member at most 1/SPEEDUP of a STEPS member
ENSEMBLE, STEPS, HEADS, LPROB = ("anchored_ensemble", "steps", "exceedance_heads",
                                 "lagrangian_probability")
UNMOVED = "anchored_ensemble without motion perturbations"  # beside ENSEMBLE with --vel_pert
SMOKE = {"windows": 1, "members": 2, "timing_rounds": 1, "slopes": [1.0, 5.0],
         "crop": [128, 128]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ensemble", type=Path, required=True,
                   help="checkpoint of anchored_ensemble (configs/radar-ensemble-cpu-small.yaml), "
                        "or a folder of leave-one-provider-out runs lopo-<provider>/ "
                        "(configs/radar-ensemble-real.yaml): each provider scored by the run "
                        "that left it out")
    p.add_argument("--heads", type=Path, required=True,
                   help="checkpoint of exceedance_heads (configs/radar-probability-cpu-small"
                        ".yaml), or a folder of lopo-<provider>/ runs "
                        "(configs/radar-probability-real.yaml)")
    p.add_argument("--members", type=int, default=None, help="ensemble members (default 8)")
    p.add_argument("--windows", type=int, default=None,
                   help="windows per case, spread evenly over the archive; 0: all (default 8)")
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS))
    p.add_argument("--samples", type=Path, default=Path(os.environ.get(
        "CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples")))
    p.add_argument("--slopes", nargs="+", type=float, default=None,
                   help="lagrangian_probability's slopes, pixels per step (default 1 3 5)")
    p.add_argument("--timing_rounds", type=int, default=None,
                   help="interleaved rounds of the member timing per case (default 3)")
    p.add_argument("--crop", nargs="+", type=int, default=None, metavar="PIXELS",
                   help="crop every archive instead of its own crop: H W (centred) or TOP LEFT "
                        "BOTTOM RIGHT, raw pixels, multiples of 2 x its downsampling")
    p.add_argument("--seed", type=int, default=0, help="of the learned ensemble's noise")
    p.add_argument("--hindcast_spread", action="store_true",
                   help="scale the learned ensemble's spread per window by a one-step hindcast "
                        "on its input (anchored_ensemble(hindcast_spread=True))")
    p.add_argument("--no_hindcast_spread", action="store_true",
                   help="the learned ensemble's spread as trained, without the hindcast's "
                        "scaling, on a checkpoint trained with hindcast_spread: true")
    p.add_argument("--vel_pert", action="store_true",
                   help="move each learned member by its own motion error (BPS, pysteps' "
                   "defaults, in the archive's km and minutes)")
    p.add_argument("--input_frames", type=int, default=5)
    p.add_argument("--output_frames", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true",
                   help="a quick check: 1 window, 2 members, slopes 1 5, one timing round, "
                        "every archive cropped to its central 128 x 128 raw pixels")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/probabilistic.json")
    p.add_argument("--plots", type=Path, default=ROOT / "benchmarks/probabilistic")
    args = p.parse_args(argv)
    defaults = {"windows": 8, "members": 8, "timing_rounds": 3, "slopes": [1.0, 3.0, 5.0],
                "crop": None}
    for key, value in (SMOKE if args.smoke else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.members < 1 or args.windows < 0 or args.timing_rounds < 1:
        p.error(f"--members and --timing_rounds must be >= 1 and --windows >= 0, got "
                f"{args.members}, {args.timing_rounds} and {args.windows}")
    if args.crop is not None and len(args.crop) not in (2, 4):
        p.error(f"--crop takes 2 (H W, centred) or 4 (TOP LEFT BOTTOM RIGHT) pixel counts, got "
                f"{args.crop}")
    return args


# ---- data --------------------------------------------------------------------------------------
def open_archive(args: argparse.Namespace, provider: str, event: str | None) -> RadarDataModule:
    """Every window of a provider's archive (or of one event of it), set up (as real_radar.py)."""
    spec = {k: v for k, v in PROVIDERS[provider].items() if k not in ("path", "events")}
    if args.crop is not None:
        spec["crop"] = list(args.crop)
    path = args.samples / PROVIDERS[provider]["path"] / (event or "")
    if not path.is_dir():
        raise SystemExit(f"{provider}: no archive at {path}; pass --samples (the radar-samples "
                         "folder) or leave the provider out with --providers")
    dm = RadarDataModule(str(path), input_frames=args.input_frames,
                         output_frames=args.output_frames, split_times=ALL, batch_size=1, **spec)
    dm.setup()
    return dm


def chosen(total: int, wanted: int) -> list[int]:
    """`wanted` window indices spread evenly over `total` (all for 0)."""
    if wanted == 0 or wanted >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, wanted).round()})


# ---- models ------------------------------------------------------------------------------------
def learned(path: Path, name: str, provider: str | None = None) -> tuple[nn.Module, dict]:
    """The `name` model of a checkpoint, in eval mode, and its facts; for a folder of
    leave-one-provider-out runs, the best checkpoint of `path/lopo-<provider>/` (its last
    without a validated best)."""
    if path.is_dir():
        run = path / f"lopo-{provider}"
        found = (find_checkpoint("best", run) or find_checkpoint("last", run)
                 if run.is_dir() else None)
        if found is None:
            raise SystemExit(f"no leave-{provider}-out run with a checkpoint under {run}: train "
                             f"one with `convcast fit --config configs/radar-"
                             f"{'ensemble' if name == ENSEMBLE else 'probability'}-real.yaml "
                             f"--data.init_args.exclude '[{provider}]' "
                             f"--trainer.default_root_dir {run}`")
        path = Path(found)
    if not path.is_file():
        raise SystemExit(f"checkpoint {path} not found: train one with `convcast fit --config "
                         f"configs/radar-{'ensemble' if name == ENSEMBLE else 'probability'}"
                         "-cpu-small.yaml` and pass its last.ckpt")
    model, info = load_forecaster(path)
    if info["model_name"] != name:
        raise SystemExit(f"{path} holds a {info['model_name']!r} model, not {name!r}; pass "
                         f"--{'ensemble' if name == ENSEMBLE else 'heads'} a checkpoint of "
                         f"{name}")
    if name == HEADS and tuple(model.thresholds) != THRESHOLDS:
        raise SystemExit(f"{path}: the heads forecast {list(model.thresholds)} mm/h, this "
                         f"benchmark scores {list(THRESHOLDS)}; train them with "
                         "configs/radar-probability-cpu-small.yaml")
    facts = {"path": str(path), "model_kwargs": info["model_kwargs"],
             "global_step": info["global_step"]}
    return model.eval(), facts


def lagrangian(slope: float, rain: float) -> nn.Module:
    """pysteps' local Lagrangian probability with `slope`, reading HKO-7-style pixels."""
    if LPROB not in list_models():
        raise SystemExit(f"the {LPROB} baseline is not registered in this convcast "
                         "(convcast/models/pysteps_probability.py); update convcast")
    return create_model(LPROB, slope=slope, threshold=rain)


def one_member(model: nn.Module, horizon: int) -> Callable[[Tensor, int], Tensor]:
    """A deterministic forecaster as an ensemble of one `[B, 1, horizon, C, H, W]`."""
    return lambda x, i: model(x, horizon).unsqueeze(1)


def exceedance(model: nn.Module, horizon: int, thresholds: list[float]
               ) -> Callable[[Tensor, int], Tensor]:
    """lagrangian_probability's probabilities `[B, horizon, K, H, W]` of `thresholds` (pixels)."""
    return lambda x, i: model.probabilities(x, horizon, thresholds)


def unmoved(ensemble: nn.Module, horizon: int, members: int, seed: int
            ) -> Callable[[Tensor, int], Tensor]:
    """The learned ensemble's members without their motion perturbations, the same draws."""
    def forecast(x: Tensor, i: int) -> Tensor:
        saved, ensemble.vel_pert_method = ensemble.vel_pert_method, None
        try:
            return ensemble.sample(x, horizon, members=members, seed=seed + i)
        finally:
            ensemble.vel_pert_method = saved
    return forecast


def short(name: str) -> str:
    """`lagrangian_probability (slope 3)` -> `lprob@3` (progress lines and narrow tables)."""
    return name.replace(f"{LPROB} (slope ", "lprob@").rstrip(")") if name.startswith(LPROB) \
        else name


# ---- scores ------------------------------------------------------------------------------------
def pooled(metric: ProbabilisticMetrics) -> dict[str, Tensor]:
    """The metric's scores of its sums pooled over lead times (its own per-lead-time `compute`
    is cached by torchmetrics, so the unwrapped one is called on the same states)."""
    per_lead = metric.reduction
    metric.reduction = "pooled"
    try:
        return type(metric).compute(metric)
    finally:
        metric.reduction = per_lead


def floats(v: Tensor | np.ndarray) -> list:
    """Nested lists of floats (NaN stays NaN; json writes it as NaN)."""
    return np.asarray(v.detach().cpu().double() if isinstance(v, Tensor) else v,
                      dtype=float).tolist()


def reliability(forecast: Tensor, observed: Tensor, counts: Tensor) -> dict[str, Any]:
    """One threshold's pooled diagram `[n_bins]` and its largest |observed - forecast| over the
    bins holding >= BIN_SHARE of the pixels."""
    counts = counts.double()
    share = counts / counts.sum().clamp(min=1)
    big = (share >= BIN_SHARE) & torch.isfinite(forecast) & torch.isfinite(observed)
    dev = (observed - forecast).abs()[big]
    return {"forecast_probability": floats(forecast), "observed_frequency": floats(observed),
            "share": floats(share),
            "max_deviation": float(dev.max()) if dev.numel() else float("nan")}


class EnsembleScores:
    """Every score of an ensemble `[B, M, T, C, H, W]` in mm/h (M = 1: a deterministic one)."""

    def __init__(self) -> None:
        self.metric = ProbabilisticMetrics(list(THRESHOLDS), n_bins=N_BINS, min_count=1,
                                           x_min=RAIN, sync_on_compute=False)
        self.members = 0

    def update(self, ensemble: Tensor, target: Tensor, mask: Tensor) -> None:
        self.members = ensemble.shape[1]
        self.metric.update(ensemble, target, mask)

    def compute(self) -> dict[str, Any]:
        r, p = self.metric.compute(), pooled(self.metric)
        out: dict[str, Any] = {"members": self.members, "crps": floats(r["crps"]),
                               "rmse": floats(r["rmse"])}
        if self.members > 1:
            out.update(fair_crps=floats(r["fair_crps"]), spread=floats(r["spread"]),
                       spread_skill_ratio=floats(r["spread_skill_ratio"]),
                       rank_histogram=floats(p["rank_histogram"]),
                       rank_histogram_per_lead=floats(r["rank_histogram"].T))
        for key in ("brier_score", "brier_skill_score", "base_rate", "roc_area"):  # [K, T]
            out[key] = {f"{t:g}": floats(r[key][k]) for k, t in enumerate(THRESHOLDS)}
        out["reliability"] = {f"{t:g}": reliability(
            p["reliability_forecast_probability"][k], p["reliability_observed_frequency"][k],
            p["reliability_counts"][k]) for k, t in enumerate(THRESHOLDS)}
        return out


class ProbabilityScores:
    """The threshold scores of exceedance probabilities `[B, T, K, H, W]` (K = THRESHOLDS) against
    observations `[B, T, 1, H, W]` in mm/h."""

    def __init__(self) -> None:
        kw = {"sync_on_compute": False}
        self.metrics = [{"brier_score": BrierScore(t, **kw), "brier_skill_score":
                         BrierSkillScore(t, **kw), "roc": ROCCurve(t, **kw),
                         "reliability": ReliabilityDiagram(t, n_bins=N_BINS, min_count=1,
                                                           reduction="pooled", **kw)}
                        for t in THRESHOLDS]

    def update(self, probs: Tensor, target: Tensor, mask: Tensor) -> None:
        if probs.shape[2] != len(THRESHOLDS):
            raise ValueError(f"expected probabilities of {len(THRESHOLDS)} thresholds "
                             f"[B, T, K, H, W], got {tuple(probs.shape)}")
        for k, metrics in enumerate(self.metrics):
            p = probs[:, :, k:k + 1].double().clamp(0, 1)  # [B, T, 1, H, W]
            for metric in metrics.values():
                metric.update(p, target, mask)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"brier_score": {}, "brier_skill_score": {}, "roc_area": {},
                               "reliability": {}}
        for t, m in zip(THRESHOLDS, self.metrics, strict=True):
            key = f"{t:g}"
            out["brier_score"][key] = floats(m["brier_score"].compute()[0])
            out["brier_skill_score"][key] = floats(m["brier_skill_score"].compute()[0])
            out["roc_area"][key] = floats(m["roc"].compute()["area"][0])
            rel = m["reliability"].compute()
            out["reliability"][key] = reliability(rel["forecast_probability"][0],
                                                  rel["observed_frequency"][0], rel["counts"][0])
        return out


def mean(v: Sequence[float]) -> float:
    """Mean over lead times, NaN skipped (NaN where all are)."""
    a = np.asarray(v, dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


# ---- one case ----------------------------------------------------------------------------------
def score_case(args: argparse.Namespace, dm: RadarDataModule, ensemble: nn.Module,
               heads: nn.Module) -> dict[str, Any]:
    """Forecast and score the chosen windows of one archive; time the members."""
    d = dm.describe()
    K, M = args.output_frames, args.members
    pixel_km = d.radar.output_grid().xpixelsize / 1000
    levels = threshold_values([RAIN, *THRESHOLDS], d).tolist()  # mm/h -> this archive's pixels
    rain, thresholds = levels[0], levels[1:]
    heads.use_scale(d)  # the heads' thresholds: this archive's rain rates
    if callable(getattr(ensemble, "set_grid", None)):  # its motion perturbations' km and minutes
        ensemble.set_grid(kmperpixel=pixel_km, timestep=d.step_minutes)
    steps = create_model(STEPS, members=M, kmperpixel=pixel_km, timestep=d.step_minutes,
                         threshold=rain)
    lprobs = {s: lagrangian(s, rain) for s in args.slopes}
    to_mm = d.data_to_physical

    forecasts: dict[str, Callable[[Tensor, int], Tensor]] = {  # (x, window index) -> forecast
        ENSEMBLE: lambda x, i: ensemble.sample(x, K, members=M, seed=args.seed + i),
        **({UNMOVED: unmoved(ensemble, K, M, args.seed)} if args.vel_pert else {}),
        STEPS: lambda x, i: steps.sample(x, K, members=M),
        "optical_flow": one_member(create_model("optical_flow"), K),
        "persistence": one_member(create_model("persistence"), K),
        HEADS: lambda x, i: heads.probabilities(x, K),
        **{f"{LPROB} (slope {s:g})": exceedance(m, K, thresholds) for s, m in lprobs.items()}}
    is_probability = {name: name == HEADS or name.startswith(LPROB) for name in forecasts}
    scores = {name: ProbabilityScores() if is_probability[name] else EnsembleScores()
              for name in forecasts}
    seconds = dict.fromkeys(forecasts, 0.0)
    data = dm.train_set
    indices = chosen(len(data), args.windows)
    for n, i in enumerate(indices):
        x, y, mask = (v.unsqueeze(0) for v in data[i])  # [1, T, 1, H, W]
        y_mm = to_mm(y).double()
        for name, forecast in forecasts.items():
            t0 = time.perf_counter()
            out = forecast(x, i).detach()
            seconds[name] += time.perf_counter() - t0
            scores[name].update(out.double() if is_probability[name] else to_mm(out).double(),
                                y_mm, mask)
        print(f"  window {n + 1}/{len(indices)} (#{i}): "
              + ", ".join(f"{short(k)} {v / (n + 1):.1f}s" for k, v in seconds.items()),
              flush=True)

    models = {name: {"kind": "probability" if is_probability[name] else
                     "ensemble" if name in (ENSEMBLE, STEPS, UNMOVED) else "deterministic",
                     "seconds_per_window": seconds[name] / len(indices), **s.compute()}
              for name, s in scores.items()}
    lprob = {f"{s:g}": {t: mean(models[f"{LPROB} (slope {s:g})"]["brier_skill_score"][t])
                        for t in models[HEADS]["brier_skill_score"]} for s in args.slopes}
    best = max(lprob, key=lambda s: np.nan_to_num(np.mean(list(lprob[s].values())), nan=-np.inf))

    # the time of one member: the learned ensemble and STEPS, interleaved, on the middle window
    x = data[indices[len(indices) // 2]][0].unsqueeze(0)
    load = os.getloadavg()
    times = interleaved_times({ENSEMBLE: lambda: ensemble.sample(x, K, members=M, seed=0),
                               STEPS: lambda: steps.sample(x, K, members=M),
                               ENSEMBLE + " x2": lambda: ensemble.sample(x, K, members=2 * M,
                                                                         seed=0),
                               STEPS + " x2": lambda: steps.sample(x, K, members=2 * M)},
                              rounds=args.timing_rounds, warmup=0)
    per_member = {k: [t / M for t in times[k]] for k in (ENSEMBLE, STEPS)}
    # one more member: what M more cost beyond the first M (the shared work left out)
    more = {k: [(b - a) / M for a, b in zip(times[k], times[k + " x2"], strict=True)]
            for k in (ENSEMBLE, STEPS)}
    timing = {"members": M, "rounds": args.timing_rounds, "load_before": load,
              "load_after": os.getloadavg(),
              "seconds_per_member": per_member,
              "median_seconds_per_member": {k: statistics.median(v)
                                            for k, v in per_member.items()},
              "steps_over_ensemble": ratio_summary(per_member[STEPS], per_member[ENSEMBLE]),
              "seconds_per_added_member": more,
              "median_seconds_per_added_member": {k: statistics.median(v)
                                                  for k, v in more.items()}}
    return {"windows": len(indices), "windows_total": len(data), "indices": indices,
            "grid": list(d.frame_size), "step_minutes": d.step_minutes, "pixel_km": pixel_km,
            "units": d.radar.units, "zr": list(d.radar.zr),
            "pixel_levels": {f"{t:g}": v for t, v in zip([RAIN, *THRESHOLDS], levels,
                                                          strict=True)},
            "base_rate": models[ENSEMBLE]["base_rate"], "models": models,
            "lagrangian_probability": {"mean_bss_per_slope": lprob, "best_slope": best},
            "timing": timing}


# ---- the goal ----------------------------------------------------------------------------------
def goal(cases: dict[str, dict]) -> dict[str, Any]:
    """The issue's four checks on every case (NaN, e.g. no event at a threshold, fails)."""
    crps, bss, rel, speed, added = {}, {}, {}, {}, {}
    for case, c in cases.items():
        m = c["models"]
        ours, theirs = mean(m[ENSEMBLE]["crps"]), mean(m[STEPS]["crps"])
        crps[case] = {ENSEMBLE: ours, STEPS: theirs, "pass": bool(ours < theirs)}
        bss[case], rel[case] = {}, {}
        for t in m[HEADS]["brier_skill_score"]:
            mine = {k: mean(m[k]["brier_skill_score"][t]) for k in (HEADS, ENSEMBLE)}
            slopes = {s: v[t] for s, v in c["lagrangian_probability"]["mean_bss_per_slope"].items()}
            best_slope = max(slopes, key=lambda s: np.nan_to_num(slopes[s], nan=-np.inf))
            other = {STEPS: mean(m[STEPS]["brier_skill_score"][t]),
                     f"{LPROB} (slope {best_slope})": slopes[best_slope]}
            top, bar = np.nanmax([*mine.values(), -np.inf]), np.nanmax([*other.values(), -np.inf])
            bss[case][t] = {**mine, **other, "pass": bool(np.isfinite(top) and top > bar
                                                          and all(map(math.isfinite,
                                                                      other.values())))}
            dev = {k: m[k]["reliability"][t]["max_deviation"] for k in (HEADS, ENSEMBLE)}
            rel[case][t] = {**dev, "pass": any(v <= RELIABLE for v in dev.values())}
        med = c["timing"]["median_seconds_per_member"]
        speed[case] = {**med, "ratio": med[STEPS] / med[ENSEMBLE],
                       "pass": bool(med[ENSEMBLE] * SPEEDUP <= med[STEPS])}
        add = c["timing"].get("median_seconds_per_added_member")
        if add is not None:
            # None: the learned one's added cost is below the timing noise (<= 0)
            ratio = add[STEPS] / add[ENSEMBLE] if add[ENSEMBLE] > 0 else None
            added[case] = {**add, "ratio": ratio,
                           "pass": bool(add[ENSEMBLE] * SPEEDUP <= add[STEPS])}
    checks = {
        "crps": {"what": f"{ENSEMBLE} CRPS (mean over lead times) < {STEPS}'s", "cases": crps},
        "bss": {"what": f"{HEADS} or {ENSEMBLE} Brier skill score (mean over lead times) > "
                f"{STEPS}'s and {LPROB}'s at its best slope, at each threshold", "cases": bss},
        "reliability": {"what": f"{HEADS} or {ENSEMBLE} within ±{RELIABLE} in every bin holding "
                        f">= {BIN_SHARE:.0%} of the pixels (pooled over lead times), at each "
                        "threshold", "cases": rel},
        "member_time": {"what": f"one {ENSEMBLE} member <= 1/{SPEEDUP:g} of one {STEPS} member "
                        "(median seconds per member over the interleaved rounds)",
                        "cases": speed},
        "added_member_time": {"what": f"one more {ENSEMBLE} member <= 1/{SPEEDUP:g} of one more "
                              f"{STEPS} member (2M members minus M, over M; informative: the "
                              "goal is member_time)", "cases": added}}
    for check in checks.values():
        flat = [v for c in check["cases"].values()
                for v in ([c] if "pass" in c else c.values())]
        check["pass"] = bool(flat) and all(v["pass"] for v in flat)
    return {**checks, "pass": all(c["pass"] for k, c in checks.items()
                                  if k != "added_member_time")}


# ---- tables and plots --------------------------------------------------------------------------
def fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def crps_table(c: dict) -> str:
    step = c["step_minutes"]
    leads = [k for k in LEADS if k <= len(c["models"][ENSEMBLE]["crps"])]
    rows = [["model", "score", *[f"+{step * k:g} min" for k in leads], "mean"]]
    for name, m in c["models"].items():
        for key in ("crps", "fair_crps", "spread_skill_ratio"):
            if key in m:
                rows.append([name, key, *[fmt(m[key][k - 1]) for k in leads], fmt(mean(m[key]))])
    return markdown(rows)


def threshold_table(c: dict) -> str:
    ts = [f"{t:g}" for t in THRESHOLDS]
    rows = [["model", *[f"BSS {t}" for t in ts], *[f"ROC area {t}" for t in ts],
             *[f"rel. dev. {t}" for t in ts]]]
    rows.append(["(base rate)", *[fmt(mean(c["base_rate"][t]), 4) for t in ts], "", "", "",
                 "", "", ""])
    for name, m in c["models"].items():
        rows.append([name, *[fmt(mean(m["brier_skill_score"][t])) for t in ts],
                     *[fmt(mean(m["roc_area"][t])) for t in ts],
                     *[fmt(m["reliability"][t]["max_deviation"]) for t in ts]])
    return markdown(rows)


def timing_table(cases: dict[str, dict]) -> str:
    rows = [["case", "grid", f"{ENSEMBLE} s/member", f"{STEPS} s/member",
             "STEPS / learned (median, min–max)", "s per added member: learned, STEPS",
             "s/window: " + ", ".join(map(short, next(iter(cases.values()))["models"]))]]
    for case, c in cases.items():
        t = c["timing"]
        med, r = t["median_seconds_per_member"], t["steps_over_ensemble"]
        add = t.get("median_seconds_per_added_member")
        rows.append([case, "x".join(map(str, c["grid"])), fmt(med[ENSEMBLE], 4),
                     fmt(med[STEPS], 3), f"{r['median']:.1f} ({r['min']:.1f}–{r['max']:.1f})",
                     f"{fmt(add[ENSEMBLE], 4)}, {fmt(add[STEPS], 3)}" if add else "",
                     ", ".join(f"{m['seconds_per_window']:.2f}" for m in c["models"].values())])
    return markdown(rows)


def goal_table(g: dict) -> str:
    rows = [["check", "case", "values", "pass"]]
    for name in ("crps", "bss", "reliability", "member_time", "added_member_time"):
        for case, c in g.get(name, {"cases": {}})["cases"].items():
            items = [(f"@{t} ", v) for t, v in c.items()] if "pass" not in c else [("", c)]
            for prefix, v in items:
                values = ", ".join(f"{k} {fmt(x, 4)}" for k, x in v.items() if k != "pass")
                rows.append([name, f"{case} {prefix}".strip(), values, "yes" if v["pass"]
                             else "no"])
    rows.append(["all", "", "", "yes" if g["pass"] else "no"])
    return markdown(rows)


def figure(n: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n, 3)
    fig = Figure(figsize=(width * cols, height * math.ceil(n / cols)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(math.ceil(n / cols), cols, i + 1) for i in range(n)]


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plots(cases: dict[str, dict], folder: Path) -> list[Path]:
    """CRPS per lead time (a panel per case); per case the Brier skill score per lead time,
    the reliability diagrams and the rank histograms."""
    from convcast.viz.probabilistic import plot_rank_histograms, plot_reliability

    written = []
    fig, axes = figure(len(cases))
    for ax, (case, c) in zip(axes, cases.items(), strict=True):
        for name, m in c["models"].items():
            if "crps" in m:
                v = np.asarray(m["crps"], dtype=float)
                ax.plot(c["step_minutes"] * np.arange(1, len(v) + 1), v, label=name, lw=1.5)
        ax.set(title=case, xlabel="lead time (min)", ylabel="CRPS (mm/h)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    written.append(save(fig, folder / "crps.png"))
    for case, c in cases.items():
        fig, axes = figure(len(THRESHOLDS))
        for ax, t in zip(axes, THRESHOLDS, strict=True):
            for name, m in c["models"].items():
                v = np.asarray(m["brier_skill_score"][f"{t:g}"], dtype=float)
                ax.plot(c["step_minutes"] * np.arange(1, len(v) + 1), v, label=name, lw=1.2)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set(title=f"{case}: BSS ≥ {t:g} mm/h", xlabel="lead time (min)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=6)
        written.append(save(fig, folder / f"{case}-bss.png"))
        best = f"{LPROB} (slope {c['lagrangian_probability']['best_slope']})"
        curves = {}
        for name in (HEADS, ENSEMBLE, STEPS, best):
            rel = c["models"][name]["reliability"]
            shown = [np.where(np.asarray(rel[f"{t:g}"]["share"]) >= BIN_SHARE, 1.0, np.nan)
                     for t in THRESHOLDS]  # the bins the goal counts
            curves[name] = {f"reliability_{k}": np.stack([
                np.asarray(rel[f"{t:g}"][k], dtype=float) * s
                for t, s in zip(THRESHOLDS, shown, strict=True)])
                for k in ("forecast_probability", "observed_frequency")}
        written.append(plot_reliability(curves, THRESHOLDS, folder / f"{case}-reliability.png",
                                        units="mm/h"))
        ranks = {name: {"rank_histogram": np.asarray(c["models"][name]["rank_histogram"])}
                 for name in (ENSEMBLE, STEPS) if "rank_histogram" in c["models"][name]}
        if ranks:
            written.append(plot_rank_histograms(ranks, folder / f"{case}-rank.png"))
    return written


# ---- main --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not args.samples.is_dir():
        raise SystemExit(f"no radar samples at {args.samples}; pass --samples or set "
                         "CONVCAST_RADAR_SAMPLES")
    def per_provider(path: Path, name: str) -> dict[str, tuple[nn.Module, dict]]:
        """Each provider's model, all checked before hours of scoring (one file: read once)."""
        if path.is_dir():
            return {provider: learned(path, name, provider) for provider in args.providers}
        return dict.fromkeys(args.providers, learned(path, name))

    loaded = {ENSEMBLE: per_provider(args.ensemble, ENSEMBLE),
              HEADS: per_provider(args.heads, HEADS)}
    if args.hindcast_spread:
        for model, facts in loaded[ENSEMBLE].values():
            if getattr(model, "amplitude", None) is None:
                raise SystemExit(f"{facts['path']}: --hindcast_spread needs an ensemble with "
                                 "noise_at: output")
            model.hindcast_spread = True
            facts["hindcast_spread"] = True
    if args.no_hindcast_spread:
        if args.hindcast_spread:
            raise SystemExit("--hindcast_spread and --no_hindcast_spread: give one")
        for model, facts in loaded[ENSEMBLE].values():
            model.hindcast_spread = False
            facts["hindcast_spread"] = False
    if args.vel_pert:
        for model, facts in loaded[ENSEMBLE].values():
            if getattr(model, "anchor", None) not in ("optical_flow", "consensus"):
                raise SystemExit(f"{facts['path']}: --vel_pert perturbs the motion of an "
                                 "ensemble anchored on optical_flow or consensus")
            model.vel_pert_method = "bps"
            facts["vel_pert_method"] = "bps"
    checkpoints = {name: {provider: facts for provider, (_, facts) in models.items()}
                   for name, models in loaded.items()}
    run: dict[str, Any] = {"machine": platform.processor() or platform.machine(),
                           "cpu": cpu_info(), "threads": torch.get_num_threads(),
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                           "load_before": os.getloadavg(),
                           "checkpoints": checkpoints,
                           "args": {k: str(v) for k, v in vars(args).items()}}
    t_start = time.monotonic()
    cases: dict[str, dict] = {}
    with torch.no_grad():
        for provider in args.providers:
            for event in PROVIDERS[provider].get("events") or [None]:
                case = provider + (f"-{event}" if event else "")
                dm = open_archive(args, provider, event)
                print(f"{case}: {min(len(dm.train_set), args.windows or len(dm.train_set))} of "
                      f"{len(dm.train_set)} windows, {args.members} members", flush=True)
                ensemble, heads = loaded[ENSEMBLE][provider][0], loaded[HEADS][provider][0]
                cases[case] = score_case(args, dm, ensemble, heads)
    run["minutes_total"] = round((time.monotonic() - t_start) / 60, 2)
    run["load_after"] = os.getloadavg()
    g = goal(cases)
    out = {"run": run, "thresholds_mm_h": list(THRESHOLDS), "cases": cases, "goal": g}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
    written = plots(cases, args.plots)
    text = []
    for case, c in cases.items():
        what = "reflectivity" if c["units"] == "dbz" else c["units"]
        text += [f"### {case}: {c['windows']} of {c['windows_total']} windows, "
                 f"{c['grid'][0]}x{c['grid'][1]} pixels of {c['pixel_km']:g} km, "
                 f"{c['step_minutes']:g}-min steps ({what}, scored in mm/h), "
                 f"{args.members} members",
                 crps_table(c), "Threshold scores (means over lead times; reliability pooled):",
                 threshold_table(c)]
    cpu = run["cpu"]
    text += [f"### Time per member ({cpu['model']}, {', '.join(cpu['flags']) or 'no flags'}; "
             f"{run['threads']} thread(s), load {run['load_before'][0]:.1f})",
             timing_table(cases), "### Goal", goal_table(g)]
    print("\n\n".join(text))
    print(f"\ngoal {'met' if g['pass'] else 'not met'}; {run['minutes_total']} min; wrote "
          f"{args.json} and {len(written)} plots in {args.plots}/")
    return out


if __name__ == "__main__":
    main()
