"""`convcast fit | validate | test`: LightningCLI over `ForecastSystem` and any LightningDataModule.

Every Trainer option is a flag (`--trainer.devices 2 --trainer.precision bf16-mixed`), the model's
arguments are `--model.*`, the data is any LightningDataModule given by class path (`--data
convcast.data.MovingShapesDataModule --data.batch_size 16`), and YAML configs hold the same keys.
Defaults that a forecasting run wants are on, each configurable or removable (`--early_stopping
null`): best (`val/loss`) and last checkpoints, early stopping on `val/loss`, the learning rate
and prediction images in TensorBoard. `--ckpt_path last|best` finds the newest run's checkpoint
under `trainer.default_root_dir` and resumes in its log folder. `convcast test` also writes
`metrics.json`, lead-time plots and an animation, optionally scoring `--compare` models alongside.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from convcast.cli.report import add_test_arguments, write_test_report
from convcast.train import ForecastSystem
from convcast.train.callbacks import Checkpoint, ConfigSaver, PredictionImages
from convcast.train.checkpoint import find_checkpoint

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
DESCRIPTION = ("Train (fit), validate and test forecasters. Configs: configs/*.yaml; every Trainer "
               "flag works, e.g. --trainer.devices 2 --trainer.precision bf16-mixed.")


class ConvcastCLI(LightningCLI):
    """LightningCLI with convcast's defaults (see the module docstring)."""

    def __init__(self, args: list[str] | None = None) -> None:
        self._resume_log_dir: Path | None = None
        super().__init__(
            ForecastSystem, L.LightningDataModule, subclass_mode_data=True,
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
        parser.add_class_arguments(ForecastSystem, "model", fail_untyped=False, sub_configs=True,
                                   skip={"model"})
        parser.add_lightning_class_args(L.LightningDataModule, "data", subclass_mode=True)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key, (cls, defaults) in DEFAULT_CALLBACKS.items():
            parser.add_subclass_arguments(cls, key, required=False, fail_untyped=False,
                                          help=f"{cls.__name__} callback, on by default; null "
                                               "removes it")
            parser.set_defaults({key: {"class_path": f"{cls.__module__}.{cls.__name__}",
                                       "init_args": defaults}})

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
        which = cfg.get("ckpt_path")
        if which not in ("last", "best"):
            return
        root = cfg.trainer.default_root_dir or os.path.join(os.getcwd(), "lightning_logs")
        found = find_checkpoint(which, root)
        if found is None:
            if sub == "fit" and which == "last":
                print(f"convcast: no last checkpoint under {root}; starting a new run",
                      file=sys.stderr)
                cfg.ckpt_path = None
                return
            raise ValueError(f"no {which} checkpoint found under {root} (trainer.default_root_dir);"
                             " give --ckpt_path PATH or the run's --trainer.default_root_dir")
        print(f"convcast: {which} checkpoint is {found}", file=sys.stderr)
        cfg.ckpt_path = str(found)
        if sub == "fit" and found.parent.name == "checkpoints":
            self._resume_log_dir = found.parent.parent  # go on logging into the same run

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        callbacks = trainer_cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        no_logger = trainer_cfg.get("logger") is False
        for key in DEFAULT_CALLBACKS:
            cb = self._get(self.config_init, key)
            if cb is not None and not (no_logger and key in ("lr_monitor", "images")):
                callbacks.append(cb)
        kwargs["callbacks"] = callbacks
        if self._resume_log_dir is not None and trainer_cfg.get("logger") in (None, True):
            d = self._resume_log_dir
            kwargs["logger"] = TensorBoardLogger(save_dir=d.parent.parent, name=d.parent.name,
                                                 version=d.name)
        return super().instantiate_trainer(**kwargs)

    def after_test(self) -> None:
        if self.trainer.is_global_zero:
            write_test_report(self.trainer, self.model, self.datamodule, self.config["test"])


def run(argv: list[str]) -> int:
    """Run `fit`, `validate` or `test` with LightningCLI; `argv` starts with the subcommand."""
    ConvcastCLI(args=argv)
    return 0
