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
import sys
from collections.abc import Sequence

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


def usage() -> str:
    lines = ["usage: convcast COMMAND [options]   (convcast COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


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
    from convcast.cli.lightning_cli import run

    argv = [cmd, *rest]
    if cmd in ("fit", "validate", "test"):
        argv = _with_stored_config(argv)
    return run(argv)


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
