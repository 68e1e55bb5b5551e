"""`convcast nowcast`: forecast the next radar frames from the latest frames of an archive.

    convcast nowcast --ckpt_path model.ckpt --input radar/ --out nowcast/ [--horizon 15]
    convcast nowcast --model optical_flow --input radar/ --out nowcast/   (no training needed)

The latest `input_frames` frames of the archive (a folder of images, .npy/.npz, HDF5, NetCDF; see
`convcast.data.radar_io`) must be consecutive; they are prepared as the model's training data was
(units, crop, disk filter, resize, masks: stored in the checkpoint, overridable here), the model
forecasts `horizon` frames, and the forecast is written in the input's units on the model's grid:
`OUT/forecast.npz` (`forecast` [K, C, H, W] float32, `timestamps` ISO strings, `units`,
`input_timestamps`, `step_minutes`, `model`) and `OUT/forecast.gif` (the input frames, then the
forecast). Forecast frame k is valid at the last input time + k·step.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

from convcast.data.radar_io import FORMATS, UNITS, open_radar
from convcast.data.radar_preprocess import RadarPreprocess
from convcast.data.radar_windows import as_step, latest_window
from convcast.data.units import HKO_ZR
from convcast.viz import write_animation

BASELINES = ("optical_flow", "persistence")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="convcast nowcast", description=__doc__.split("\n")[0])
    p.add_argument("--input", type=Path, required=True,
                   help="radar archive: folder of images, .npy, .npz, .h5, .nc or .zarr")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--ckpt_path", type=Path | None, default=None, help="trained checkpoint")
    p.add_argument("--model", type=str | None, default=None,
                   help=f"a baseline instead of a checkpoint: {', '.join(BASELINES)}")
    p.add_argument("--method", type=str, default="lucaskanade",
                   help="optical_flow motion method (lucaskanade, vet, darts, proesmans, ...)")
    p.add_argument("--horizon", type=int | None, default=None,
                   help="frames to forecast (default: the checkpoint's output frames, else 15)")
    p.add_argument("--input_frames", type=int | None, default=None,
                   help="frames the model reads (default: the checkpoint's, else 5)")
    p.add_argument("--format", type=str, default="auto", choices=list(FORMATS))
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


def _say(msg: str) -> None:
    print(f"convcast nowcast: {msg}", file=sys.stderr)


def load_model(args) -> tuple[torch.nn.Module, dict, str]:
    """The forecaster, the training data description and a name for the outputs."""
    if args.ckpt_path is not None:
        if args.model is not None:
            raise ValueError("give either --ckpt_path or --model, not both")
        from convcast.train.checkpoint import load_forecaster

        model, info = load_forecaster(args.ckpt_path)
        return model, info, info.get("model_name", "model")
    if args.model is None:
        raise ValueError(f"give --ckpt_path model.ckpt, or --model one of {', '.join(BASELINES)}")
    if args.model not in BASELINES:
        raise ValueError(f"--model {args.model!r} is not a baseline; valid: "
                         f"{', '.join(BASELINES)} (trained models come with --ckpt_path)")
    from convcast.models import create_model

    if args.model == "optical_flow":
        import convcast.models.optical_flow  # noqa: F401  (registers the baseline)

        return create_model("optical_flow", method=args.method), {}, args.model
    return create_model(args.model), {}, args.model


def _atomic_npz(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def nowcast(args) -> dict:
    """Run the nowcast; returns what was written (paths, timestamps)."""
    model, info, name = load_model(args)
    radar = info.get("radar") or {}
    n_in = args.input_frames or info.get("input_frames") or 5
    horizon = args.horizon or info.get("output_frames") or 15
    units = args.units or radar.get("units") or "auto"
    source = open_radar(args.input, args.format, units, args.variable, args.time_variable,
                        args.time_format, args.time_regex, args.start_time, args.step_minutes,
                        args.nodata)
    step_minutes = args.step_minutes
    if step_minutes is None and len(source) < 2:  # one frame: the step the model knows
        step_minutes = radar.get("step_minutes")
    step = as_step(step_minutes, source.timestamps)
    start = latest_window(source.timestamps, n_in, step)
    minutes = step.astype("timedelta64[s]").astype(np.int64) / 60
    trained = radar.get("step_minutes")
    if trained and abs(trained - minutes) > 1e-6:
        _say(f"warning: the archive's step is {minutes:g} min but the model was trained on "
             f"{trained:g}-minute steps")
    pre = RadarPreprocess(
        source.units, radar.get("dbz_range"),
        args.crop if args.crop is not None else radar.get("crop"),
        args.disk_radius if args.disk_radius is not None else radar.get("disk_radius", 0.0),
        args.resize if args.resize is not None else radar.get("resize"),
        tuple(radar.get("zr") or HKO_ZR))
    if radar.get("valid") is not None and args.crop is None and args.resize is None:
        pre.valid = np.asarray(radar["valid"], dtype=bool)
    x = pre(source.read(start, len(source)))  # [T_in, C, h, w], NaN = invalid
    size = info.get("frame_size")
    if size and list(x.shape[-2:]) != list(size):
        raise ValueError(f"the prepared frames are {x.shape[-2]}x{x.shape[-1]} but the model was "
                         f"trained on {size[0]}x{size[1]}; pass --resize/--crop to match")
    channels = getattr(model, "in_channels", x.shape[1])
    if x.shape[1] != channels:
        raise ValueError(f"the archive has {x.shape[1]} channels, the model reads {channels}")
    xt = torch.from_numpy(np.nan_to_num(x, nan=0.0))[None]  # [1, T_in, C, h, w]
    _say(f"{name}: {n_in} frames {source.timestamps[start]} .. {source.timestamps[-1]} "
         f"({minutes:g}-min step) -> {horizon} frames")
    with torch.no_grad():
        pred = model.eval()(xt, horizon).clamp(0, 1)[0].numpy()  # [K, C, h, w] pixels
    forecast = pre.from_pixel(pred).astype(np.float32)  # [K, C, h, w] in the input's units
    times = source.timestamps[-1] + step * np.arange(1, horizon + 1)
    iso = np.datetime_as_string(times, unit="s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_npz(out / "forecast.npz", forecast=forecast, timestamps=iso,
                units=np.array(source.units), step_minutes=np.float64(minutes),
                input_timestamps=np.datetime_as_string(source.timestamps[start:], unit="s"),
                model=np.array(name))
    frames = np.concatenate([np.nan_to_num(x, nan=0.0), pred])  # [T_in + K, C, h, w]
    scale = max(1, 256 // max(frames.shape[-2:]))
    write_animation(out / "forecast.gif", frames, fps=args.fps, scale=scale)
    for k, t in enumerate(iso, start=1):
        print(f"+{k * minutes:g} min\t{t}")
    _say(f"wrote {out / 'forecast.npz'} ({forecast.shape}, {source.units}) and "
         f"{out / 'forecast.gif'}")
    return {"npz": out / "forecast.npz", "gif": out / "forecast.gif", "timestamps": list(iso)}


def main(argv: list[str]) -> int:
    nowcast(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
