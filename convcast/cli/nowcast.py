"""`convcast nowcast`: forecast the next radar frames from the latest frames of an archive.

    convcast nowcast --ckpt_path model.ckpt --input radar/ --out nowcast/ [--horizon 15]
    convcast nowcast --model optical_flow --input radar/ --out nowcast/   (no training needed)

The latest `input_frames` frames of the archive (a folder of images, .npy/.npz, HDF5, NetCDF, or
any frame source; see `convcast.data.radar.archive`) must be consecutive; they go through the one
inference path (`convcast.train.inference`): prepared as the model's training data was (units,
crop, disk filter, resize, masks: stored in the checkpoint, overridable here), the model
forecasts `horizon` frames, and the forecast is written in the input's units on the model's grid:
`OUT/forecast.npz` (`forecast` [K, C, H, W] float32, `timestamps` ISO strings, `units`,
`input_timestamps`, `step_minutes`, `model`) and `OUT/forecast.gif` (the input frames, then the
forecast). Forecast frame k is valid at the last input time + k·step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

from convcast.atomic import atomic_path
from convcast.data.radar.archive import UNITS
from convcast.data.sources import list_sources
from convcast.models import create_model, is_baseline, list_models
from convcast.train.inference import forecast
from convcast.viz import write_animation


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="convcast nowcast", description=__doc__.split("\n")[0])
    p.add_argument("--input", type=Path, required=True,
                   help="radar archive: folder of images, .npy, .npz, .h5, .nc or .zarr")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--ckpt_path", type=Path | None, default=None, help="trained checkpoint")
    p.add_argument("--model", type=str | None, default=None,
                   help=f"a baseline instead of a checkpoint: {', '.join(baselines())}")
    p.add_argument("--method", type=str, default="lucaskanade",
                   help="optical_flow motion method (lucaskanade, vet, darts, proesmans, ...)")
    p.add_argument("--horizon", type=int | None, default=None,
                   help="frames to forecast (default: the checkpoint's output frames, else 15)")
    p.add_argument("--input_frames", type=int | None, default=None,
                   help="frames the model reads (default: the checkpoint's, else 5)")
    p.add_argument("--format", type=str, default="auto",
                   help=f"reader of the archive: auto or one of {', '.join(list_sources())}")
    p.add_argument("--units", type=str | None, default=None,
                   help=f"units of the archive: auto, {', '.join(UNITS)} (default: the "
                        "checkpoint's training units, else auto)")
    p.add_argument("--variable", type=str | None, default=None, help="array/variable name")
    p.add_argument("--time_variable", type=str | None, default=None)
    p.add_argument("--time_format", type=str | None, default=None,
                   help="strptime pattern of image file stems, e.g. RAD%%y%%m%%d%%H%%M00")
    p.add_argument("--time_regex", type=str | None, default=None)
    p.add_argument("--start_time", type=str | None, default=None,
                   help="time of the first frame of an array with no timestamps")
    p.add_argument("--step_minutes", type=float | None, default=None,
                   help="minutes between frames (default: inferred from the timestamps)")
    p.add_argument("--nodata", type=float | None, default=None, help="raw value for missing")
    p.add_argument("--crop", type=int | None, default=None, help="override the centre crop")
    p.add_argument("--disk_radius", type=float | None, default=None)
    p.add_argument("--resize", type=int | None, default=None, help="override the output size")
    p.add_argument("--fps", type=float, default=4.0, help="animation frames per second")
    return p


def baselines() -> list[str]:
    """The registry's baselines, which forecast with no checkpoint."""
    return [n for n in list_models() if is_baseline(n)]


def _say(msg: str) -> None:
    print(f"convcast nowcast: {msg}", file=sys.stderr)


def load_model(args) -> torch.nn.Module | Path:
    """The checkpoint to forecast with, or a baseline built from the registry."""
    if args.ckpt_path is not None:
        if args.model is not None:
            raise ValueError("give either --ckpt_path or --model, not both")
        return args.ckpt_path
    if args.model is None:
        raise ValueError(f"give --ckpt_path model.ckpt, or --model one of {', '.join(baselines())}")
    if args.model not in baselines():
        raise ValueError(f"--model {args.model!r} is not a baseline; valid: "
                         f"{', '.join(baselines())} (trained models come with --ckpt_path)")
    if args.model == "optical_flow":
        return create_model("optical_flow", method=args.method)
    return create_model(args.model)


def nowcast(args) -> dict:
    """Run the nowcast; returns what was written (paths, timestamps)."""
    radar = {k: getattr(args, k) for k in ("format", "units", "variable", "time_variable",
                                           "time_format", "time_regex", "start_time",
                                           "step_minutes", "nodata", "crop", "disk_radius",
                                           "resize")}
    fc = forecast(load_model(args), args.input, args.horizon, input_frames=args.input_frames,
                  radar=radar)
    for note in fc.notes:
        _say(note)
    minutes, iso = fc.step_minutes, np.datetime_as_string(fc.valid_times, unit="s")
    _say(f"{fc.model_name}: {len(fc.input_times)} frames {fc.input_times[0]} .. "
         f"{fc.input_times[-1]} ({minutes:g}-min step) -> {len(iso)} frames")
    out = Path(args.out)
    with atomic_path(out / "forecast.npz") as tmp:
        np.savez(tmp, forecast=fc.frames, timestamps=iso, units=np.array(fc.units),
                 step_minutes=np.float64(minutes),
                 input_timestamps=np.datetime_as_string(fc.input_times, unit="s"),
                 model=np.array(fc.model_name))
    frames = np.concatenate([fc.inputs, np.clip(fc.forecast_data, 0, 1)])  # [T_in + K, C, h, w]
    scale = max(1, 256 // max(frames.shape[-2:]))
    write_animation(out / "forecast.gif", frames, fps=args.fps, scale=scale)
    for k, t in enumerate(iso, start=1):
        print(f"+{k * minutes:g} min\t{t}")
    _say(f"wrote {out / 'forecast.npz'} ({fc.frames.shape}, {fc.units}) and "
         f"{out / 'forecast.gif'}")
    return {"npz": out / "forecast.npz", "gif": out / "forecast.gif", "timestamps": list(iso)}


def main(argv: list[str]) -> int:
    nowcast(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
