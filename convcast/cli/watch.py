"""`convcast nowcast --watch FOLDER`: the watch options of the parsed nowcast command, handed to
`convcast.inference.watch` (the watcher itself; also `convcast.watch(...)` from Python).

    convcast nowcast --ckpt_path model.ckpt --watch radar/ --out nowcast/ [--poll_seconds 10]
    convcast nowcast --model optical_flow --importer fmi_pgm --watch fmi/ --out nowcast/ --once
    convcast nowcast --model steps --importer fmi_pgm --watch fmi/ --out nowcast/ --members 8 \
        --probability_thresholds 0.5 2 5
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from convcast.inference import RadarOptions
from convcast.inference.outputs import OutputOptions
from convcast.inference.watch import WatchConfig, Watcher


def config(args, *, model: nn.Module | Path, radar: RadarOptions, outputs: OutputOptions,
           say: Callable[[str], None]) -> WatchConfig:
    """The `WatchConfig` of parsed nowcast `args` (`--watch`, `--out`, `--input_frames`,
    `--horizon`, `--members`, `--probability_thresholds`) with the model, radar and output
    options the nowcast command made of them."""
    if args.input is not None:
        raise ValueError("give either --input ARCHIVE (one nowcast) or --watch FOLDER (a "
                         "forecast per new file), not both")
    thresholds = args.probability_thresholds
    return WatchConfig(folder=Path(args.watch), out=Path(args.out), model=model, radar=radar,
                       input_frames=args.input_frames, horizon=args.horizon,
                       members=args.members,
                       probability_thresholds=None if thresholds is None else tuple(thresholds),
                       outputs=outputs, say=say)


def run(args, *, model: nn.Module | Path, radar: RadarOptions, outputs: OutputOptions,
        say: Callable[[str], None]) -> int:
    """Watch as parsed nowcast `args` say (`--once`, `--max_files`, `--poll_seconds`)."""
    cfg = config(args, model=model, radar=radar, outputs=outputs, say=say)
    return Watcher(cfg).run(args.once, args.max_files, args.poll_seconds)
