"""`convcast fit | validate | test`: LightningCLI over `ForecastSystem` and any LightningDataModule.

Every Trainer option is a flag (`--trainer.devices 2 --trainer.precision bf16-mixed`), the model's
arguments are `--model.*`, the data is any LightningDataModule given by class path (`--data
convcast.data.MovingShapesDataModule --data.batch_size 16`), and YAML configs hold the same keys.
Defaults that a forecasting run wants are on, each configurable or removable (`--early_stopping
null`): best (`val/loss`) and last checkpoints, early stopping on `val/loss`, the learning rate
and prediction images in TensorBoard. `--ckpt_path last|best` finds the newest run's checkpoint
under `trainer.default_root_dir` (passing over truncated files, with a message) and resumes in its
log folder. Checkpoints are read weights-only, and one that holds another architecture than the
config names is an error naming both. `convcast test` also writes `metrics.json`, lead-time plots
and an animation to `--out` (default `<default_root_dir>/test/<run>`), optionally scoring
`--compare` models alongside; `test` and `validate` write nothing into the run they score.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from convcast.atomic import check_output_folder
from convcast.cli.report import add_test_arguments, run_name, write_test_report
from convcast.models import resolve
from convcast.train import ForecastSystem
from convcast.train.callbacks import Checkpoint, ConfigSaver, PredictionImages
from convcast.train.checkpoint import find_checkpoint, read_checkpoint

DEFAULT_CALLBACKS: dict[str, tuple[type, dict[str, Any]]] = {
    "checkpoint": (Checkpoint, {"monitor": "val/loss", "mode": "min", "save_top_k": 1,
                                     "save_last": True, "save_on_exception": True}),
    # strict=False: a run resumed from a checkpoint taken just before validation has no val/loss
    # until its next validation; that must not stop it
    "early_stopping": (EarlyStopping, {"monitor": "val/loss", "mode": "min", "patience": 10,
                                       "strict": False}),
    "lr_monitor": (LearningRateMonitor, {"logging_interval": "step"}),
    "images": (PredictionImages, {"every_n_steps": 250}),
}
SIGTERM_STATUS = 128 + signal.SIGTERM  # the status a shell reports for a process ended by SIGTERM
RUN_FILES = ("hparams.yaml", "config.yaml", "metrics.csv")  # written before the first step
DESCRIPTION = ("Train (fit), validate and test forecasters. Configs: configs/*.yaml; every Trainer "
               "flag works, e.g. --trainer.devices 2 --trainer.precision bf16-mixed.")


class ConvcastCLI(LightningCLI):
    """LightningCLI with convcast's defaults (see the module docstring)."""

    def __init__(self, args: list[str] | None = None,
                 system: type[L.LightningModule] = ForecastSystem) -> None:
        self.system = system  # ForecastSystem, or another chosen by class path (system_from_args)
        self._resume_log_dir: Path | None = None
        self._run_name = "untrained"
        super().__init__(
            system, L.LightningDataModule, subclass_mode_data=True,
            subclass_mode_model=system is not ForecastSystem,
            save_config_callback=ConfigSaver, save_config_kwargs={"overwrite": True},
            seed_everything_default=0, auto_configure_optimizers=False,
            load_from_checkpoint_support=False, args=args,
            parser_kwargs={"prog": "convcast", "description": DESCRIPTION},
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `convcast predict` is convcast's own (no datamodule), not Trainer.predict
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        # `model=` (a ready nn.Module) is for Python use; configs name a registry model instead
        if self.system is ForecastSystem:
            parser.add_class_arguments(ForecastSystem, "model", fail_untyped=False,
                                       sub_configs=True, skip={"model"})
        else:  # configs name it: model: {class_path: ..., init_args: {...}}
            parser.add_lightning_class_args(self.system, "model", subclass_mode=True)
        parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key, (cls, defaults) in DEFAULT_CALLBACKS.items():
            parser.add_subclass_arguments(cls, key, required=False, fail_untyped=False,
                                          help=f"{cls.__name__} callback, on by default; null "
                                               "removes it")
            parser.set_defaults({key: {"class_path": f"{cls.__module__}.{cls.__name__}",
                                       "init_args": defaults}})
        if self.system is not ForecastSystem:
            parser.set_defaults({"images": None})  # forecast images need a forecaster

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any
                                   ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "test":
            add_test_arguments(parser)
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.config = parser.parse_args(args)  # args come from convcast.cli.main, not sys.argv
        sub = self.config.get("subcommand")
        cfg = self.config[sub]
        if cfg.get("weights_only") is False:
            raise ValueError("--weights_only false: convcast reads checkpoints weights-only (a "
                             "checkpoint's pickle must not run code); drop the flag")
        if "weights_only" in cfg:
            cfg.weights_only = True
        if sub == "test" and cfg.get("out") is not None:
            check_output_folder(cfg.out)  # before scoring: an existing file is refused
        which, ckpt = cfg.get("ckpt_path"), None
        if which in ("last", "best"):
            root = cfg.trainer.default_root_dir or os.getcwd()
            found, ckpt = _intact_checkpoint(which, Path(root))
            if found is None:
                if sub == "fit" and which == "last":
                    print(f"convcast: no last checkpoint under {root}; starting a new run",
                          file=sys.stderr)
                    cfg.ckpt_path = None
                    return
                last = find_checkpoint("last", Path(root)) if which == "best" else None
                if last is not None:
                    raise ValueError(f"no best checkpoint under {root}: the run has not "
                                     f"validated yet; its last checkpoint is {last} (give "
                                     "--ckpt_path last)")
                raise ValueError(f"no {which} checkpoint found under {root} (trainer."
                                 "default_root_dir); give --ckpt_path PATH or the run's "
                                 "--trainer.default_root_dir")
            print(f"convcast: {which} checkpoint is {found}", file=sys.stderr)
            cfg.ckpt_path = str(found)
        if cfg.get("ckpt_path") is None:
            return
        if ckpt is None:
            ckpt = read_checkpoint(cfg.ckpt_path)  # a clear error for a missing or broken file
        _check_same_architecture(cfg, ckpt, cfg.ckpt_path, resume=sub == "fit")
        found = Path(cfg.ckpt_path)
        if sub == "fit" and which in ("last", "best") and found.parent.name == "checkpoints":
            self._resume_log_dir = found.parent.parent  # go on logging into the same run
        self._run_name = run_name(found.resolve())

    def _parse_ckpt_path(self) -> None:
        """Lightning would overwrite the config's model with the checkpoint's hyperparameters;
        here the config rules and a different architecture is an error (parse_arguments)."""

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        callbacks = trainer_cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        no_logger = trainer_cfg.get("logger") is False
        scoring = self.config.get("subcommand") in ("validate", "test")
        for key in DEFAULT_CALLBACKS:  # training callbacks: a scoring run writes no checkpoint
            cb = self._get(self.config_init, key)
            if cb is not None and not scoring and not (no_logger and key in ("lr_monitor",
                                                                              "images")):
                callbacks.append(cb)
        kwargs["callbacks"] = callbacks
        if scoring and trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = False  # no new lightning_logs/version_N beside the scored run
        if self._resume_log_dir is not None and trainer_cfg.get("logger") in (None, True):
            d = self._resume_log_dir
            kwargs["logger"] = TensorBoardLogger(save_dir=d.parent.parent, name=d.parent.name,
                                                 version=d.name)
        trainer = super().instantiate_trainer(**kwargs)
        log_dir = getattr(trainer.logger, "log_dir", None)
        if log_dir and not scoring:  # the folders this run creates (see _drop_empty_run)
            fresh = [d for d in (Path(log_dir), *Path(log_dir).parents) if not d.exists()]
            self._fresh_run_dir = fresh[-1] if fresh else None
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except SIGTERMException:  # Lightning's stop on SIGTERM, a SystemExit with no status
            self._drop_empty_run()
            print(f"convcast {subcommand}: {self._sigterm_message(subcommand)}", file=sys.stderr)
            raise SystemExit(SIGTERM_STATUS) from None
        except BaseException:
            self._drop_empty_run()
            raise

    def _sigterm_message(self, subcommand: str) -> str:
        """What a run stopped by SIGTERM did and left, for stderr."""
        trainer = self.trainer
        end = (f"exiting with status {SIGTERM_STATUS} (128 + SIGTERM) so that a following "
               "command (fit && test) does not go on")
        if subcommand != "fit":
            return f"stopped by SIGTERM before the end; nothing was written; {end}"
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
        if trainer.global_step == 0 or not ckpt:
            saved = ("no checkpoint was saved (no training step had finished)"
                     if trainer.global_step == 0 else "no checkpoint was saved (the checkpoint "
                     "callback is off: --checkpoint null)")
            return f"stopped by SIGTERM at training step {trainer.global_step}; {saved}; {end}"
        return (f"stopped by SIGTERM at training step {trainer.global_step}; the state is saved "
                f"in {ckpt}: continue exactly from it with --ckpt_path last (same "
                f"--trainer.default_root_dir); {end} with a half-trained model")

    def _drop_empty_run(self) -> None:
        """A fit that failed before its first step (bad data, bad setting) leaves no empty run
        folder behind: remove the folder it created if it holds only logger files."""
        top = getattr(self, "_fresh_run_dir", None)
        if top is None or not top.is_dir() or self.trainer.global_step > 0:
            return
        files = [f for f in top.rglob("*") if f.is_file()]
        if all(f.name.startswith("events.out.tfevents") or f.name in RUN_FILES for f in files):
            shutil.rmtree(top, ignore_errors=True)

    def after_test(self) -> None:
        cfg = self.config["test"]
        if cfg.get("out") is None:
            root = cfg.trainer.default_root_dir or os.getcwd()
            cfg.out = str(Path(root) / "test" / self._run_name.replace("/", "-"))
        if self.trainer.is_global_zero:
            if hasattr(self.model, "write_test_report"):  # a system with its own report
                self.model.write_test_report(cfg.out)
            else:
                write_test_report(self.trainer, self.model, self.datamodule, cfg)


def _intact_checkpoint(which: str, root: Path) -> tuple[Path | None, dict | None]:
    """`find_checkpoint` and the checkpoint, passing over files that do not read: for `last`,
    the newest intact `last*.ckpt` or else the newest intact checkpoint of any name (each
    skipped one named on stderr)."""
    found = None
    try:
        found = find_checkpoint(which, root)
        return found, (read_checkpoint(found) if found is not None else None)
    except ValueError as err:
        if which != "last":
            raise ValueError(f"cannot find the best checkpoint under {root}: {err}; give "
                             "--ckpt_path PATH") from err
        print(f"convcast: skipping a checkpoint that does not read: {err}", file=sys.stderr)
    ckpts = sorted(root.glob("**/*.ckpt"), key=lambda p: (p.name.startswith("last"),
                                                           p.stat().st_mtime), reverse=True)
    for path in (p for p in ckpts if p != found):
        try:
            ckpt = read_checkpoint(path)
        except ValueError as err:
            print(f"convcast: skipping a checkpoint that does not read: {err}", file=sys.stderr)
            continue
        print(f"convcast: falling back to the newest intact checkpoint, {path}", file=sys.stderr)
        return path, ckpt
    return None, None


def _spec(name: Any, kwargs: Any) -> tuple[str, str]:
    """An architecture as comparable text: a variant as its architecture and merged keyword
    arguments, tuples and lists alike, keys sorted."""
    try:
        arch, base = resolve(str(name))
    except ValueError:
        arch, base = str(name), {}
    return arch, json.dumps({**base, **(kwargs or {})}, sort_keys=True, default=str)


def _check_same_architecture(cfg: Any, ckpt: dict, path: str, resume: bool = False) -> None:
    """Error when the config names another model (or other model_kwargs) than the checkpoint,
    or, to resume a fit, another optimizer or schedule (whose saved state would not fit)."""
    hp = ckpt.get("hyper_parameters") or {}
    model = cfg.get("model")
    model = model.get("init_args") or model  # a system chosen by class path
    for key in ("optimizer", "scheduler") if resume else ():
        if key in hp and model.get(key) != hp[key]:
            raise ValueError(
                f"the config's {key} is {model.get(key)!r} but checkpoint {path} was trained "
                f"with {hp[key]!r}; a resumed fit continues the saved {key} state, so give "
                f"--model.{key} {hp[key]} (or start a new run: no --ckpt_path)")
    if not hp.get("model_name"):
        return  # built from a ready module: the state_dict load will tell
    mine = _spec(model.get("model_name"), model.get("model_kwargs"))
    stored = _spec(hp.get("model_name"), hp.get("model_kwargs"))
    if mine != stored:
        raise ValueError(
            f"the config names model {model.get('model_name')!r} with model_kwargs "
            f"{model.get('model_kwargs') or {}} but checkpoint {path} holds "
            f"{hp['model_name']!r} with {hp.get('model_kwargs') or {}}; use the config the "
            "checkpoint was trained with (leave out --config: the checkpoint's own config is "
            "used) or another --ckpt_path")


def system_from_args(argv: list[str]) -> type[L.LightningModule]:
    """The system a command line selects by class path (`--model CLASS`, or `model: {class_path:
    CLASS}` in a `--config` file or text; the last one wins), else ForecastSystem."""
    chosen = None
    for i, arg in enumerate(argv):
        key, _, value = arg.partition("=")
        value = value or (argv[i + 1] if i + 1 < len(argv) else "")
        if key in ("-c", "--config") and value:
            text = Path(value).read_text() if os.path.isfile(value) else value
            model = (yaml.safe_load(text) or {}).get("model") if text.strip() else None
            if isinstance(model, dict) and model.get("class_path"):
                chosen = model["class_path"]
        elif key == "--model" and value and not value.startswith(("-", "{")):
            chosen = value
    if chosen is None:
        return ForecastSystem
    module, _, name = chosen.rpartition(".")
    try:
        system = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"model class_path {chosen!r} cannot be imported ({err}); give a "
                         "LightningModule such as convcast.train.classify.ClassificationSystem"
                         ) from err
    if not (isinstance(system, type) and issubclass(system, L.LightningModule)):
        raise ValueError(f"model class_path {chosen!r} is not a LightningModule")
    return system


def run(argv: list[str]) -> int:
    """Run `fit`, `validate` or `test` with LightningCLI; `argv` starts with the subcommand."""
    ConvcastCLI(args=argv, system=system_from_args(argv))
    return 0
