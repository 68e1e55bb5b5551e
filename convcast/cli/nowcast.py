"""`convcast nowcast`: forecast the next radar frames from the latest frames of an archive.

    convcast nowcast --ckpt_path model.ckpt --input radar/ --out nowcast/ [--horizon 15]
    convcast nowcast --model optical_flow --input radar/ --out nowcast/   (no training needed)
    convcast nowcast --model optical_flow --importer fmi_pgm --importer_kwargs '{"gzipped": true}'
        --input fmi/pgm/20160928 --out nowcast/      (an operational archive, via pysteps)
    convcast nowcast --ckpt_path model.ckpt --watch radar/ --out nowcast/
        (a new forecast for each new file of the folder: `convcast.cli.watch`)

The latest `input_frames` frames of the archive (a folder of images, .npy/.npz, HDF5, NetCDF, any
frame source, or with `--importer` any format a pysteps importer reads, the time of each file
from its name by `--fn_pattern`; see `convcast.data.radar.archive`) must be consecutive; they go
through the one inference path (`convcast.train.inference`): prepared as the model's training
data was (units, Z-R, crop, downsampling, disk filter, resize, masks, and the importer: stored in
the checkpoint, overridable here), the model forecasts `horizon` frames, and the forecast is
written on the model's grid (the archive's own when nothing crops or resamples it):
`OUT/forecast.nc` (CF NetCDF: rain rate in mm/h, or for an accumulation archive mm per its
accumulation time, with the projection, x/y and lat/lon, the valid time of each frame, the model
and checkpoint), `OUT/forecast.npz` (`forecast` [K, C, H, W] float32 in the input's units,
`physical` in mm/h or mm, `timestamps` ISO strings, `units`, `input_timestamps`, `step_minutes`,
`model`) and `OUT/forecast.gif` (the latest input frames, then the forecast, in mm/h with a
colour scale and each frame's time). NaN marks pixels outside the radar's domain. Forecast frame
k is valid at the last input time + k·step.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

from convcast.atomic import atomic_path
from convcast.data.radar.archive import UNITS
from convcast.data.radar.export import write_forecast_netcdf
from convcast.data.sources import list_sources
from convcast.models import create_model, is_baseline, list_models
from convcast.train.inference import Forecast, forecast
from convcast.viz.radar import write_rain_animation

RADAR_OPTIONS = ("format", "units", "variable", "time_variable", "time_format", "time_regex",
                 "start_time", "step_minutes", "nodata", "crop", "crop_box", "downsample",
                 "disk_radius", "resize", "zr", "accutime", "importer", "importer_kwargs",
                 "fn_pattern", "fn_ext")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="convcast nowcast", description=__doc__.split("\n")[0])
    p.add_argument("--input", type=Path | None, default=None,
                   help="radar archive: folder of images, .npy, .npz, .h5, .nc or .zarr, or with "
                        "--importer a folder of a provider's files")
    p.add_argument("--watch", type=Path | None, default=None,
                   help="instead of --input: watch this folder (one file per frame) and forecast "
                        "again for each new file (convcast.cli.watch)")
    p.add_argument("--once", action="store_true",
                   help="--watch: take the files that are there, write the forecast and exit")
    p.add_argument("--max_files", type=int | None, default=None,
                   help="--watch: stop after this many new files")
    p.add_argument("--poll_seconds", type=float, default=10.0,
                   help="--watch: seconds between looks at the folder")
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
    p.add_argument("--importer", type=str | None, default=None,
                   help="read the archive with this pysteps importer: fmi_pgm, knmi_hdf5, "
                        "bom_rf3, odim_hdf5, opera_hdf5, mch_gif, mch_hdf5, mrms_grib, dwd_hdf5, "
                        "... (default: the checkpoint's)")
    p.add_argument("--importer_kwargs", type=dict | None, default=None,
                   help='JSON keyword arguments of the importer, e.g. \'{"gzipped": true}\'')
    p.add_argument("--fn_pattern", type=str | None, default=None,
                   help="file names of the archive, pysteps style: strftime codes and ? for any "
                        "character, e.g. AQC%%y%%j%%H%%M?_00005.801 (default: pysteps' pattern "
                        "for the importer)")
    p.add_argument("--fn_ext", type=str | None, default=None, help="file extension, e.g. h5")
    p.add_argument("--crop", type=int | list[int] | None, default=None,
                   help="override the crop: a centre crop h or [h, w], or a pixel window "
                        "[top, left, bottom, right]")
    p.add_argument("--crop_box", type=list[float] | None, default=None,
                   help="crop to [x1, y1, x2, y2] in the archive's projected coordinates (m)")
    p.add_argument("--downsample", type=int | None, default=None,
                   help="block-mean factor, e.g. 4: a 1-km grid forecast on 4 km")
    p.add_argument("--disk_radius", type=float | None, default=None)
    p.add_argument("--resize", type=int | None, default=None, help="override the output size")
    p.add_argument("--zr", type=list[float] | None, default=None,
                   help="Z-R relation [a, b] of Z = a R^b (default: the checkpoint's, else the "
                        "archive's own, else Marshall-Palmer [200, 1.6])")
    p.add_argument("--accutime", type=float | None, default=None,
                   help="minutes an accumulation sums, where the archive does not say")
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
    """Run the nowcast on parsed `args` (see `parser`); returns what was written: the paths
    (`nc`, None where NetCDF cannot be written here, `npz`, `gif`) and the valid times
    (`timestamps`, ISO strings)."""
    if args.input is None:
        raise ValueError("give --input ARCHIVE (forecast from its latest frames), or --watch "
                         "FOLDER (a new forecast for each new file)")
    check_outputs(args)
    fc = forecast(load_model(args), args.input, args.horizon, input_frames=args.input_frames,
                  radar=radar_options(args))
    for note in fc.notes:
        _say(note)
    minutes, iso = fc.step_minutes, np.datetime_as_string(fc.valid_times, unit="s")
    _say(f"{fc.model_name}: {len(fc.input_times)} frames {fc.input_times[0]} .. "
         f"{fc.input_times[-1]} ({minutes:g}-min step) -> {len(iso)} frames")
    out = Path(args.out)
    written = write_outputs(out, fc, args)
    for k, t in enumerate(iso, start=1):
        print(f"+{k * minutes:g} min\t{t}")
    nc = written["nc"]
    _say(f"wrote {out / 'forecast.npz'} ({fc.frames.shape}, {fc.units}), "
         + (f"{nc} ({fc.physical_units}), " if nc else "") + f"{out / 'forecast.gif'}")
    return written


def radar_options(args) -> dict:
    """The radar reading and preparation options of parsed `args`, for `forecast(radar=...)`."""
    radar = {k: getattr(args, k, None) for k in RADAR_OPTIONS}
    if isinstance(radar["crop"], list) and len(radar["crop"]) == 1:
        radar["crop"] = radar["crop"][0]
    return radar


def check_outputs(args) -> None:
    """Refuse output settings that would fail once writing has begun."""
    if not args.fps > 0:
        raise ValueError(f"--fps must be positive (frames per second of forecast.gif), got "
                         f"{args.fps:g}")


def write_outputs(out: Path, fc: Forecast, args) -> dict:
    """Write `fc` as OUT/forecast.npz, forecast.nc and forecast.gif, each atomically; returns
    the paths (`nc` None where NetCDF cannot be written here) and the valid times. The
    settings are checked beforehand (`check_outputs`), before any work is done."""
    iso = np.datetime_as_string(fc.valid_times, unit="s")
    with atomic_path(out / "forecast.npz") as tmp:
        np.savez(tmp, forecast=fc.frames, timestamps=iso, units=np.array(fc.units),
                 physical=fc.physical, physical_units=np.array(fc.physical_units),
                 step_minutes=np.float64(fc.step_minutes),
                 input_timestamps=np.datetime_as_string(fc.input_times, unit="s"),
                 model=np.array(fc.model_name))
    nc = write_netcdf(out / "forecast.nc", fc, args)
    write_gif(out / "forecast.gif", fc, args.fps)
    return {"nc": nc, "npz": out / "forecast.npz", "gif": out / "forecast.gif",
            "timestamps": list(iso)}


def write_netcdf(path: Path, fc: Forecast, args) -> Path | None:
    """`forecast.nc` of the first channel (None, said, where xarray or netCDF4 is missing)."""
    attrs = {"title": f"convcast nowcast by {fc.model_name}", "source": "convcast",
             "model": fc.model_name,
             "checkpoint": str(args.ckpt_path) if args.ckpt_path else "none (baseline)",
             "input": str(args.input), "step_minutes": float(fc.step_minutes),
             "history": f"{datetime.now().astimezone():%Y-%m-%dT%H:%M:%S%z} convcast nowcast"}
    try:
        return write_forecast_netcdf(path, fc.physical[:, 0], fc.valid_times, fc.grid,
                                     fc.physical_units, fc.accutime, fc.input_times[-1], attrs)
    except ImportError as err:
        _say(f"{path.name} not written: {err}")
        return None


def write_gif(path: Path, fc: Forecast, fps: float) -> Path:
    """The latest input frames, then the forecast, in mm/h, each labelled with its time."""
    per_hour = 60.0 / fc.accutime if fc.physical_units == "mm" else 1.0  # mm per accutime -> mm/h
    rain = np.concatenate([fc.input_physical[:, 0], fc.physical[:, 0]]) * per_hour  # [T+K, h, w]
    labels = [f"observed {_hm(t)}" for t in fc.input_times]
    labels += [f"+{k * fc.step_minutes:g} min, valid {_hm(t)}"
               for k, t in enumerate(fc.valid_times, start=1)]
    return write_rain_animation(path, rain, labels, fps=fps)


def _hm(t: np.datetime64) -> str:
    return np.datetime_as_string(t, unit="m").replace("T", " ")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.watch is not None:
        from convcast.cli.watch import watch

        return watch(args)
    nowcast(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
