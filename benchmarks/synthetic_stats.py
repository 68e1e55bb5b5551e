"""Do the synthetic radars have real rain's statistics? Measures `rain_statistics` (power-spectrum
slope, wet-area fraction, wet intensities, Lagrangian decorrelation time per scale) on the real
composites of the radar-samples folder (FMI, KNMI, BoM, OPERA, read through convcast's
`RadarDataModule`), their median over providers, the old generator (`SyntheticRadarDataModule`)
and the statistics-matched one (`StepsRadarDataModule`), and writes synthetic_stats.json plus a
Markdown table.

Run:  OMP_NUM_THREADS=1 python benchmarks/synthetic_stats.py [--samples DIR] [--sequences 32]
(`--samples` defaults to $CONVCAST_RADAR_SAMPLES, else the radar-samples folder beside the
checkout; the first read of an archive decodes it into convcast's frame cache, minutes for BoM.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from convcast.data.radar import RadarDataModule
from convcast.data.synthetic.radar import SyntheticRadarDataModule
from convcast.data.synthetic.radar_steps import REAL_MEDIAN, TOLERANCES, StepsRadarDataModule
from convcast.data.synthetic.stats import compare, median_summary, rain_statistics, summary

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples"))
OUT = ROOT / "benchmarks" / "synthetic_stats.json"
NEVER = ("2100-01-01T00:00", "2100-01-01T00:00")  # split_times: every window in train

# archive -> (provider, folder, RadarDataModule settings); every grid ends at ~4 km but BoM's (2 km)
ARCHIVES = {
    "fmi-20160928": ("FMI", "fmi/pgm/20160928", dict(
        importer="fmi_pgm", importer_kwargs={"gzipped": True}, crop=[0, 0, 1224, 760],
        downsample=4)),
    "fmi-20170509": ("FMI", "fmi/pgm/20170509", dict(
        importer="fmi_pgm", importer_kwargs={"gzipped": True}, crop=[0, 0, 1224, 760],
        downsample=4)),
    "knmi-20100826": ("KNMI", "KNMI/2010/08", dict(
        importer="knmi_hdf5", crop=[0, 0, 760, 696], downsample=4)),
    "bom-20201031": ("BoM", "bom/prcp-c10/66/2020/10/31", dict(
        importer="bom_rf3", fn_pattern="66_%Y%m%d_%H%M%S.prcp-c10", downsample=4)),
    "opera-20180824": ("OPERA", "OPERA/20180824", dict(importer="opera_hdf5", downsample=2)),
}


def real_frames(samples: Path, name: str) -> tuple[np.ndarray, float, float]:
    """An archive's rain rate `[T, H, W]` (mm/h, NaN = no data), step (minutes), pixel (km).

    Frame t > 0 is the target of window t - 1 (1 frame in, 1 out) with its validity mask; the
    first frame (an input, whose mask items do not carry) takes the second frame's mask."""
    _, folder, kwargs = ARCHIVES[name]
    dm = RadarDataModule(str(samples / folder), input_frames=1, output_frames=1,
                         split_times=NEVER, **kwargs)
    dm.setup()
    items = [dm.train_set[i] for i in range(len(dm.train_set))]  # (x, y, mask) [1, 1, h, w]
    pixels = torch.stack([items[0][0][0, 0]] + [y[0, 0] for _, y, _ in items])  # [T, h, w]
    valid = torch.stack([items[0][2][0, 0]] + [m[0, 0] for _, _, m in items])
    rain = dm.to_rainrate(pixels).double().numpy()
    rain[~valid.numpy()] = np.nan
    grid = dm.describe().radar.grid
    pixel_km = float(grid.xpixelsize) / 1000.0 * dm.hparams.downsample
    return rain, float(dm.step_minutes), pixel_km


def real_statistics(samples: Path, names=tuple(ARCHIVES)) -> dict[str, dict]:
    """`rain_statistics` of each archive (with its summary and the seconds taken)."""
    out = {}
    for name in names:
        start = time.perf_counter()
        rain, step, pixel_km = real_frames(samples, name)
        stats = rain_statistics(rain, step_minutes=step, pixel_km=pixel_km)
        out[name] = {"provider": ARCHIVES[name][0], "summary": summary(stats), "full": stats,
                     "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    return out


def provider_median(real: dict[str, dict]) -> dict[str, float]:
    """The median over providers of each scalar; a provider with several archives (FMI) counts
    once, with the mean of its archives."""
    providers: dict[str, list[dict[str, float]]] = {}
    for r in real.values():
        providers.setdefault(r["provider"], []).append(r["summary"])
    means = [{k: float(np.nanmean([s[k] for s in group])) for k in group[0]}
             for group in providers.values()]
    return median_summary(means)


def generated_statistics(dm, sequences: int) -> dict:
    """The median summary over the first `sequences` test sequences of a synthetic datamodule
    (pixels -> rain rate by its own `to_rainrate`), with the per-sequence summaries."""
    dm.setup()
    step = float(dm.describe().step_minutes)
    pixel_km = getattr(dm.hparams, "domain_km", 256.0) / dm.hparams.image_size
    start, rows = time.perf_counter(), []
    for i in range(sequences):
        x, y = dm.test_set[i]  # [T, 1, H, W] pixels
        rain = dm.to_rainrate(torch.cat([x, y])[:, 0]).double().numpy()
        rows.append(summary(rain_statistics(rain, step_minutes=step, pixel_km=pixel_km)))
    return {"median": median_summary(rows), "sequences": rows,
            "seconds": round(time.perf_counter() - start, 1), "step_minutes": step,
            "pixel_km": pixel_km, "image_size": dm.hparams.image_size}


COLUMNS = [("spectral_slope", "β", "{:.2f}"), ("wet_fraction", "wet", "{:.3f}"),
           ("wet_q50", "q50", "{:.2f}"), ("wet_q90", "q90", "{:.2f}"), ("wet_q99", "q99", "{:.1f}"),
           ("wet_mean", "mean", "{:.2f}"), ("tau_16km", "τ16", "{:.0f}"),
           ("tau_32km", "τ32", "{:.0f}"), ("tau_64km", "τ64", "{:.0f}"),
           ("tau_128km", "τ128", "{:.0f}"), ("lag2_exponent", "lag-2 exp.", "{:.2f}")]


def markdown(rows: dict[str, dict[str, float]]) -> str:
    """One row per source: the scalars of `summary`."""
    head = "| source | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for name, s in rows.items():
        lines.append(f"| {name} | " + " | ".join(f.format(s[k]) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    real = real_statistics(args.samples)
    median = provider_median(real)
    size = dict(test_size=args.sequences, image_size=args.image_size)
    old = generated_statistics(SyntheticRadarDataModule(**size), args.sequences)
    new = generated_statistics(StepsRadarDataModule(**size), args.sequences)
    rows = {name: r["summary"] for name, r in real.items()}
    rows.update({"real: median over providers": median,
                 f"old generator (SyntheticRadar, {args.sequences} seq.)": old["median"],
                 f"new generator (StepsRadar, {args.sequences} seq.)": new["median"]})
    table = markdown(rows)
    result = {
        "what": "rain_statistics of real composites, their median over providers (FMI's two "
                "days averaged), the old and the new synthetic radar (median over sequences)",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "numpy": np.__version__,
                    "pysteps": version("pysteps")},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {"wet_mm_h": 0.1, "n_levels": 6, "sequences": args.sequences,
                     "image_size": args.image_size},
        "real": real, "real_median": median,
        "stored_real_median": REAL_MEDIAN,
        "old_generator": old, "new_generator": new,
        "tolerances": {k: list(v) for k, v in TOLERANCES.items()},
        "old_vs_real": compare(old["median"], median, TOLERANCES),
        "new_vs_real": compare(new["median"], median, TOLERANCES),
        "table": table,
    }
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(table)
    for name in ("old_vs_real", "new_vs_real"):
        missed = [k for k, v in result[name].items() if not v["ok"]]
        print(f"{name}: {len(result[name]) - len(missed)}/{len(result[name])} within tolerance"
              + (f"; outside: {', '.join(missed)}" if missed else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
