"""The `convcast` command: dispatches its subcommands.

    convcast fit | validate | test   LightningCLI (configs/*.yaml, every Trainer flag)
    convcast predict                 forecast a video, frame folder or array from a checkpoint
    convcast demo | nowcast          the Moving MNIST demo and the radar nowcasting workflow
    convcast classify                the class of a video from a classifier checkpoint
    convcast export                  a forecaster as ONNX, TorchScript or an exported program
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

COMMANDS = {
    "fit": "train a model (LightningCLI: --config configs/NAME.yaml, --trainer.* flags)",
    "validate": "score a checkpoint on the validation set (--ckpt_path)",
    "test": "score a checkpoint on the test set; write metrics.json, plots, animation",
    "predict": "forecast a video, frame folder or array with a checkpoint",
    "demo": "train and score a model on Moving MNIST in minutes",
    "nowcast": "forecast the next radar frames from the latest ones of an archive",
    "classify": "the class of a video (class probabilities, then label: NAME) from a classifier",
    "export": "a checkpoint's forecaster as ONNX, TorchScript or a torch.export program",
}
DELEGATED = {"demo": "convcast.cli.demo", "nowcast": "convcast.cli.nowcast",
             "classify": "convcast.cli.classify", "export": "convcast.cli.export"}
# errors that describe a bad input or a failed run (cause and remedy): printed without a
# traceback. OSError covers unreadable and unwritable files; FloatingPointError a diverged fit.
USER_ERRORS = (ValueError, OSError, FloatingPointError)
SIGTERM_STATUS = 128 + signal.SIGTERM  # a run stopped by SIGTERM: never 0, as a shell reports it


def _is_sigterm(exit_: SystemExit) -> bool:
    """Whether `exit_` is Lightning's `SIGTERMException` (a run stopped by SIGTERM, which
    carries no exit status: left alone it would exit 0, as if the run had finished)."""
    module = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return module is not None and isinstance(exit_, module.SIGTERMException)


def usage() -> str:
    lines = ["usage: convcast COMMAND [options]   (convcast COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _config_values(argv: list[str]) -> list[str]:
    """The values of every `--config X` / `--config=X` / `-c X` in `argv`."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-c", "--config")]
    return values + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def _check_configs(argv: list[str]) -> None:
    """Each `--config` must be a readable YAML mapping: a clear error naming the file (and the
    line) instead of the parser's deep traceback."""
    import yaml

    for value in _config_values(argv):
        inline = "\n" in value or ": " in value or value.lstrip().startswith("{")
        if not inline and not os.path.isfile(value):
            raise FileNotFoundError(f"config file {value} not found; give the path of a YAML "
                                    "file, e.g. --config configs/seq2seq-cpu-small.yaml")
        name = "the inline --config" if inline else f"config file {value}"
        try:
            text = value if inline else Path(value).read_text()
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{name} is not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{name} is not a text (YAML) file") from None
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{name} holds a {type(data).__name__}, not a mapping of options "
                             "(trainer:, model:, data:, ...)")


# datamodules whose modules moved, as class paths stored in older checkpoints name them
MOVED_CLASSES = {
    "convcast.data.own_data.FramesDataModule": "convcast.data.FramesDataModule",
    "convcast.data.datamodule.MovingMNISTDataModule": "convcast.data.MovingMNISTDataModule",
    "convcast.data.moving_shapes.MovingShapesDataModule": "convcast.data.MovingShapesDataModule",
    "convcast.data.synthetic_radar.SyntheticRadarDataModule":
        "convcast.data.SyntheticRadarDataModule",
    "convcast.data.radar.RadarDataModule": "convcast.data.RadarDataModule",
}


def _with_stored_config(argv: list[str]) -> list[str]:
    """`convcast fit|validate|test --ckpt_path X` without `--config`: use the config inside X."""
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in argv):
        return argv
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
    path = path or next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
    if not path or not os.path.isfile(path):
        return argv
    from convcast.train.checkpoint import CONFIG_KEY, read_checkpoint

    config = read_checkpoint(path).get(CONFIG_KEY)
    if not config:
        return argv
    for old, new in MOVED_CLASSES.items():  # checkpoints written before the data layout
        config = config.replace(f"class_path: {old}\n", f"class_path: {new}\n")
    print(f"convcast: using the config stored in {path}", file=sys.stderr)
    return [argv[0], "--config", config, *argv[1:]]


def _dispatch(cmd: str, rest: list[str]) -> int:
    if cmd in DELEGATED:
        try:
            module = importlib.import_module(DELEGATED[cmd])
        except ModuleNotFoundError as err:
            if err.name != DELEGATED[cmd]:
                raise
            print(f"convcast {cmd}: not available in this installation ({DELEGATED[cmd]} is "
                  "missing)", file=sys.stderr)
            return 2
        return int(module.main(rest) or 0)
    if cmd == "predict":
        from convcast.cli.predict import main as predict_main

        return predict_main(rest)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from convcast.cli.lightning_cli import run

    argv = [cmd, *rest]
    _check_configs(argv)
    if cmd in ("fit", "validate", "test"):
        argv = _with_stored_config(argv)
    try:
        return run(argv)
    except MisconfigurationException as err:  # Lightning's own "bad setting" error
        raise ValueError(f"invalid setting: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `convcast` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"convcast: unknown command {cmd!r}; valid: {', '.join(COMMANDS)}\n\n{usage()}",
              file=sys.stderr)
        return 2
    try:
        return _dispatch(cmd, rest)
    except SystemExit as exit_:  # argument errors and --help of the subcommand parsers
        if _is_sigterm(exit_):  # Lightning's stop on SIGTERM (a SystemExit with no status)
            print(f"convcast {cmd}: stopped by SIGTERM; exiting with status {SIGTERM_STATUS}",
                  file=sys.stderr)
            return SIGTERM_STATUS
        code = exit_.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            return 1
        return int(code or 0)
    except USER_ERRORS as err:
        if os.environ.get("CONVCAST_DEBUG"):
            raise
        print(f"convcast {cmd}: error: {err}\n(set CONVCAST_DEBUG=1 to see the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
