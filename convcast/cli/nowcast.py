"""`convcast nowcast`: forecast the next radar frames from the latest frames of an archive.

    convcast nowcast --ckpt_path model.ckpt --input radar/ --out nowcast/ [--horizon 15]
    convcast nowcast --model optical_flow --input radar/ --out nowcast/   (no training needed)
    convcast nowcast --model optical_flow --importer fmi_pgm --importer_kwargs '{"gzipped": true}'
        --input fmi/pgm/20160928 --out nowcast/      (an operational archive, via pysteps)
    convcast nowcast --ckpt_path model.ckpt --watch radar/ --out nowcast/
        (a new forecast for each new file of the folder: `convcast.inference.watch`)

The latest `input_frames` frames of the archive (a folder of images, .npy/.npz, HDF5, NetCDF, any
frame source, or with `--importer` any format a pysteps importer reads, the time of each file
from its name by `--fn_pattern`; see `convcast.data.radar.archive`) must be consecutive; they go
through the one inference path (`convcast.inference.forecast`): prepared as the model's training
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

    convcast nowcast --model steps --input radar/ --out nowcast/ --members 20 \
        --probability_thresholds 0.5 2 5

`--members N` also draws an ensemble (`model.sample`: N members from an ensemble model such as
`steps` or `steps_noise`, one from a deterministic model) and `--probability_thresholds` (mm/h)
the exceedance probabilities of its members: `forecast.nc` gets the members over the CF
`realization` dimension and `probability_of_precipitation_above_threshold` over a `threshold`
coordinate (mm/h), `forecast.npz` gets `members`, `members_physical`, `probabilities`,
`probability_thresholds`, and `OUT/forecast_probability.gif` shows the probabilities (0..1) of
every threshold at each valid time. Every output path is checked before the forecast is made, and
every file is written atomically.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser
from jsonargparse.typing import PositiveInt

from convcast.atomic import check_output_folder
from convcast.data.radar.archive import UNITS
from convcast.data.sources import list_sources
from convcast.inference import RadarOptions, forecast
from convcast.inference.outputs import OutputOptions, check_outputs, write_outputs
from convcast.models import create_model, is_baseline, list_models
from convcast.models.pretrained import list_pretrained


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="convcast nowcast", description=__doc__.split("\n")[0])
    p.add_argument("--input", type=Path | None, default=None,
                   help="radar archive: folder of images, .npy, .npz, .h5, .nc or .zarr, or with "
                        "--importer a folder of a provider's files")
    p.add_argument("--watch", type=Path | None, default=None,
                   help="instead of --input: watch this folder (one file per frame) and forecast "
                        "again for each new file (convcast.inference.watch)")
    p.add_argument("--once", action="store_true",
                   help="--watch: take the files that are there, write the forecast and exit")
    p.add_argument("--max_files", type=int | None, default=None,
                   help="--watch: stop after this many new files")
    p.add_argument("--poll_seconds", type=float, default=10.0,
                   help="--watch: seconds between looks at the folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--ckpt_path", type=Path | None, default=None, help="trained checkpoint")
    p.add_argument("--model", type=str | None, default=None,
                   help="a baseline or a pretrained model instead of a checkpoint: "
                        f"{', '.join([*baselines(), *list_pretrained()])}")
    p.add_argument("--method", type=str, default="lucaskanade",
                   help="optical_flow motion method (lucaskanade, vet, darts, proesmans, ...)")
    p.add_argument("--horizon", type=int | None, default=None,
                   help="frames to forecast (default: the checkpoint's output frames, else 15)")
    p.add_argument("--input_frames", type=int | None, default=None,
                   help="frames the model reads (default: the checkpoint's, else 5)")
    p.add_argument("--format", type=str, default="auto",
                   help=f"reader of the archive: auto or one of {', '.join(list_sources())}")
    p.add_argument("--units", type=str | None, default=None,
                   help=f"units of the archive: auto, {', '.join(UNITS)} (default: what the "
                        "archive's metadata says, else the checkpoint's training units); units "
                        "that contradict the metadata are refused: force:UNITS overrides it")
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
    p.add_argument("--members", type=PositiveInt | None, default=None,
                   help="also draw an ensemble of this many members (ensemble models such as "
                        "steps; a deterministic model gives one) into forecast.nc and .npz")
    p.add_argument("--probability_thresholds", type=float, default=None,
                   nargs="+", help="exceedance probabilities of these rain rates (mm/h) from "
                                   "the members (needs --members): forecast.nc, .npz and "
                                   "forecast_probability.gif")
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
    ready = [*baselines(), *list_pretrained()]
    if args.model is None:
        raise ValueError(f"give --ckpt_path model.ckpt, or --model one of {', '.join(ready)}")
    if args.model in list_pretrained():
        return create_model(args.model, pretrained=True)
    if args.model not in baselines():
        raise ValueError(f"--model {args.model!r} is not a baseline or a pretrained model; "
                         f"valid: {', '.join(ready)} (trained models come with --ckpt_path)")
    if args.model == "optical_flow":
        return create_model("optical_flow", method=args.method)
    return create_model(args.model)


def radar_options(args) -> RadarOptions:
    """The radar reading and preparation options of parsed `args`."""
    return RadarOptions.of({k: getattr(args, k, None) for k in RadarOptions.__dataclass_fields__})


def output_options(args, input_path: Path) -> OutputOptions:
    """The writers' options of parsed `args` (checked here, before any work is done)."""
    check_output_folder(args.out)  # an existing file is refused before any forecast
    return OutputOptions(fps=args.fps, input=str(input_path),
                         checkpoint=str(args.ckpt_path) if args.ckpt_path else "none (baseline)")


def nowcast(args) -> dict:
    """Run the nowcast on parsed `args` (see `parser`); returns what was written: the paths
    (`nc`, None where NetCDF cannot be written here, `npz`, `gif`) and the valid times
    (`timestamps`, ISO strings)."""
    if args.input is None:
        raise ValueError("give --input ARCHIVE (forecast from its latest frames), or --watch "
                         "FOLDER (a new forecast for each new file)")
    outputs = output_options(args, args.input)
    members, thresholds = ensemble_options(args)
    check_outputs(Path(args.out), probabilities=thresholds is not None)
    fc = forecast(load_model(args), args.input, args.horizon, input_frames=args.input_frames,
                  radar=radar_options(args), members=members,
                  probability_thresholds=thresholds)
    for note in fc.notes:
        _say(note)
    minutes, iso = fc.step_minutes, np.datetime_as_string(fc.valid_times, unit="s")
    _say(f"{fc.model_name}: {len(fc.input_times)} frames {fc.input_times[0]} .. "
         f"{fc.input_times[-1]} ({minutes:g}-min step) -> {len(iso)} frames")
    out = Path(args.out)
    written = write_outputs(out, fc, outputs, _say)
    for k, t in enumerate(iso, start=1):
        print(f"+{k * minutes:g} min\t{t}")
    nc = written["nc"]
    _say(f"wrote {out / 'forecast.npz'} ({fc.frames.shape}, {fc.units}), "
         + (f"{nc} ({fc.physical_units}), " if nc else "") + f"{out / 'forecast.gif'}")
    if fc.members is not None:
        _say(f"ensemble: {fc.members.shape[0]} member(s)"
             + (f", exceedance probabilities of {', '.join(f'{t:g}' for t in thresholds)} "
                f"{fc.probability_units} in {written['probability_gif']}" if thresholds else ""))
    return written


def ensemble_options(args) -> tuple[int | None, list[float] | None]:
    """`--members` and `--probability_thresholds` of parsed `args`, checked."""
    members = getattr(args, "members", None)
    thresholds = getattr(args, "probability_thresholds", None)
    if members is not None and members < 1:
        raise ValueError(f"--members must be a positive number of ensemble members, got "
                         f"{members}")
    if thresholds is not None:
        thresholds = [float(t) for t in thresholds]
        if not thresholds:
            raise ValueError("--probability_thresholds needs at least one rain rate (mm/h)")
        if members is None:
            raise ValueError("--probability_thresholds are exceedance probabilities of the "
                             "ensemble's members: give --members N too (e.g. --members 20)")
    return members, thresholds


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.watch is not None:
        from convcast.cli.watch import run

        ensemble_options(args)  # checked before the model loads
        return run(args, model=load_model(args), radar=radar_options(args),
                   outputs=output_options(args, args.watch), say=_say)
    nowcast(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
