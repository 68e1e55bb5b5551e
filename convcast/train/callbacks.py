"""Training callbacks: prediction images in TensorBoard, the run's config in every checkpoint,
checkpoints that never hold non-finite weights."""

from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from convcast.atomic import atomic_path
from convcast.models import create_model
from convcast.train.checkpoint import CONFIG_KEY, read_checkpoint
from convcast.train.system import NonFiniteLossError, nonfinite_parameters
from convcast.viz import frame_grid


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["x"], batch["y"]
    return batch[0], batch[1]


def prediction_grid(x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor,
                    max_samples: int = 4) -> np.ndarray:
    """uint8 `[H, W, 3]` image: per sample the rows input / truth / forecast / |error|.

    x `[B,T_in,C,H,W]`, y and pred `[B,T_out,C,H,W]`; the grey scale spans the data's range.
    """
    x, y, pred = (t[:max_samples].detach().float().cpu() for t in (x, y, pred))
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    lo, hi = (0.0, 1.0) if lo >= 0 and hi <= 1 else (lo, max(hi, lo + 1e-6))
    rows = []
    for i in range(x.shape[0]):
        err = (pred[i] - y[i]).abs() + lo  # |error| drawn on the same scale, 0 = black
        rows += [x[i], y[i], pred[i], err]
    labels = ["input", "truth", "forecast", "|error|"] * x.shape[0]
    return frame_grid(rows, vmin=lo, vmax=hi, labels=labels)


class PredictionImages(L.Callback):
    """Log an input / truth / forecast / |error| grid to TensorBoard.

    Every `every_n_steps` training steps (from the current training batch, one extra forward pass
    without gradients) and, with `on_validation`, for the first batch of every validation run.
    Does nothing without a TensorBoardLogger.
    """

    def __init__(self, every_n_steps: int = 250, max_samples: int = 4,
                 on_validation: bool = True) -> None:
        if every_n_steps < 0 or max_samples < 1:
            raise ValueError("every_n_steps must be >= 0 (0: never) and max_samples >= 1")
        self.every_n_steps, self.max_samples = every_n_steps, max_samples
        self.on_validation = on_validation
        self._last_step = -1

    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> Any:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def _log(self, trainer: L.Trainer, tag: str, grid: np.ndarray) -> None:
        tb = self._tensorboard(trainer)
        if tb is not None:
            tb.add_image(tag, grid, trainer.global_step, dataformats="HWC")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if (not self.every_n_steps or step % self.every_n_steps or step == self._last_step
                or not trainer.is_global_zero or self._tensorboard(trainer) is None):
            return
        self._last_step = step
        x, y = _split(batch)
        x, y = x[: self.max_samples], y[: self.max_samples]
        with torch.no_grad():
            pred = pl_module(x, y.shape[1])  # [b, T_out, C, H, W]
        self._log(trainer, "train/prediction", prediction_grid(x, y, pred, self.max_samples))

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if (not self.on_validation or batch_idx != 0 or trainer.sanity_checking
                or not trainer.is_global_zero or not isinstance(outputs, dict)
                or "pred" not in outputs):
            return
        x, y = _split(batch)
        self._log(trainer, "val/prediction", prediction_grid(x, y, outputs["pred"],
                                                             self.max_samples))


class ConfigSaver(SaveConfigCallback):
    """LightningCLI's config.yaml in the log dir of a fit, plus the same YAML inside every
    checkpoint (`checkpoint["convcast_config"]`), so a checkpoint alone says how it was trained."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # validate / test write nothing beside the run they score
            super().setup(trainer, pl_module, stage)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.parser.dump(self.config, skip_none=False)


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last.ckpt` also holds the final state when training ends, which
    never writes a checkpoint whose weights hold NaN or inf, and for which the untrained model
    is a candidate for the best checkpoint.

    `validate_at_start` (None: for models anchored on a baseline, whose untrained state IS that
    baseline): a new run is validated once before its first step, so the step-0 model competes
    for "best" (`--ckpt_path best`, selected on `val/loss`); training that only hurts on the
    validation windows then leaves the anchor as the best checkpoint, and the end of training
    says so ("no learned improvement on this data"). A run started from shipped weights
    (`pretrained`) has two step-0 candidates: the untrained model first (its anchor's forecast),
    then the shipped weights, which replace it only where they beat it by `anchor_margin`: on a
    clip unlike the shipped model's training data the anchor is kept. `anchor_margin` (e.g.
    0.05) makes a trained state replace the step-0 model only where it beats it by that fraction
    of its score: a few validation windows are noisy, and a short clip's last frames may not be
    like its validation frames, so a small gain is not worth leaving a known-good anchor for.
    `gate` (anchored models):
    when training ends, the validated gate per lead time (`Anchored.fit_gate`: how far towards
    the learned forecast each lead goes, 0 = the anchor) is fitted on the validation windows for
    the best checkpoint and written into it, so `--ckpt_path best` forecasts with it (also where
    that is the step-0 state of a run started from shipped pretrained weights); training itself
    runs ungated (a gate the weights came with is cleared at the start). Where the gated forecast
    does not beat the gate's reference (persistence or the anchor) by `anchor_margin` on those
    windows, the gate written is 0 at every lead: the reference is kept, and the end of training
    says so. With `monitor="val/gated_mse"` the checkpoints compete as they would forecast once
    gated (`ForecastSystem` logs it for gated anchored models).

    Lightning writes `last.ckpt` only beside another checkpoint, so after a run stopped by
    `max_steps` mid-epoch it would hold an older state; here the end of training rewrites it,
    and `--ckpt_path last` continues from where the run really stopped. When training stops on
    a non-finite loss (`NonFiniteLossError`), the state that diverged is not saved: `last.ckpt`
    stays the last finite one (or, when the run has none yet, is the state before that step).
    """

    _train_start_step: int | None = None

    def __init__(self, *args: Any, validate_at_start: bool | None = None,
                 anchor_margin: float = 0.0, gate: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= anchor_margin < 1.0:
            raise ValueError(f"checkpoint anchor_margin is a fraction of the step-0 score, in "
                             f"[0, 1), got {anchor_margin} (e.g. 0.05: 5% better to replace it)")
        self.validate_at_start = validate_at_start
        self.anchor_margin = anchor_margin
        self.gate = gate

    def _anchored(self, pl_module: L.LightningModule) -> bool:
        model = getattr(pl_module, "model", None)
        return getattr(model, "anchor", "none") not in (None, "none")

    def _gated(self, pl_module: L.LightningModule) -> bool:
        """Whether this run fits a gate: `gate` is on and the model has one (an anchored
        forecaster; its ensemble and probability variants have none)."""
        model = getattr(pl_module, "model", None)
        return self.gate and self._anchored(pl_module) and getattr(model, "gated", False)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._train_start_step = trainer.global_step
        if self._gated(pl_module):
            pl_module.model.gate = pl_module.model.gate.new_ones(0)  # trained ungated
        start = self.validate_at_start
        if start is None:
            start = self._anchored(pl_module)
        if (start and trainer.global_step == 0 and self.monitor and not trainer.fast_dev_run
                and trainer.limit_val_batches != 0):
            untrained = self._untrained_state(pl_module)
            if untrained is not None:  # shipped weights: the untrained model competes first
                shipped = copy.deepcopy(pl_module.model.state_dict())
                pl_module.model.load_state_dict(untrained)
                self._validate_start(trainer)
                self._untrained_path = self._anchor_path
                pl_module.model.load_state_dict(shipped)
            if self._validate_start(trainer):  # the model as training starts from it
                self._untrained_path = None  # it replaced the untrained one (maybe its file)

    def _validate_start(self, trainer: L.Trainer) -> bool:
        """Validate the model as it is at step 0 (logs val/*, saves it if the best; after an
        earlier step-0 candidate, only where it beats that one by `anchor_margin`); the best
        so far is then the step-0 checkpoint that trained states must beat by the margin.
        Returns whether this model became the best."""
        before = self.best_model_score
        self._last_global_step_saved = -1  # step 0 may be saved: it is a candidate
        trainer.fit_loop.epoch_loop.val_loop.run()
        self._anchor_path = self.best_model_path  # the step-0 checkpoint
        new = self.best_model_score is not None and (
            before is None or float(self.best_model_score) != float(before))
        if new:
            self._handicap_anchor()
        return new

    def _untrained_state(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor] | None:
        """For an anchored model started from shipped weights (`pretrained`), the weights of
        the same architecture untrained (its forecast: the anchor's); else None."""
        model = getattr(pl_module, "model", None)
        spec = getattr(model, "model_spec", None)
        if (not getattr(pl_module, "hparams", {}).get("pretrained", False) or spec is None
                or not self._anchored(pl_module)):
            return None
        with torch.random.fork_rng(devices=[]):  # the run's random stream stays as it was
            fresh = create_model(spec["name"], **spec["kwargs"])
        device = next(model.parameters()).device
        return {k: v.to(device) for k, v in fresh.state_dict().items()}

    def _handicap_anchor(self) -> None:
        """Rank the step-0 checkpoint as if it scored `anchor_margin` better than it did."""
        score = self.best_k_models.get(self._anchor_path)
        if not self.anchor_margin or score is None:
            return
        shift = self.anchor_margin * score.abs()
        score = score - shift if self.mode == "min" else score + shift
        self.best_k_models[self._anchor_path] = self.best_model_score = self.kth_value = score

    @property
    def anchor_won(self) -> bool:
        """Whether the best checkpoint is a model validated at the start (the untrained model,
        or the shipped weights a run started from)."""
        anchor = getattr(self, "_anchor_path", "")
        return bool(anchor) and self.best_model_path == anchor

    @property
    def untrained_won(self) -> bool:
        """Whether the best checkpoint is the untrained model (its anchor's forecast)."""
        return self.anchor_won and self.best_model_path == getattr(self, "_untrained_path", None)

    def _last_path(self) -> str:
        return os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def _finite(self, trainer: L.Trainer, filepath: str) -> bool:
        broken = nonfinite_parameters(trainer.lightning_module)
        if broken:
            rank_zero_warn(f"not writing checkpoint {filepath}: the weights hold NaN/inf "
                           f"({', '.join(broken[:3])}); the checkpoints already written are kept")
        return not broken

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self._finite(trainer, filepath):
            super()._save_checkpoint(trainer, filepath)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if self._train_start_step in (None, trainer.global_step):
            return  # nothing trained yet (e.g. a failed restore): keep the files as they are
        if not isinstance(exception, NonFiniteLossError):
            super().on_exception(trainer, pl_module, exception)
            return
        if (self.save_last and self.dirpath and not os.path.exists(self._last_path())
                and not trainer.fast_dev_run and self._finite(trainer, self._last_path())):
            trainer.save_checkpoint(self._last_path(), weights_only=self.save_weights_only)
            self.last_model_path = self._last_path()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        pretrained = bool(getattr(pl_module, "hparams", {}).get("pretrained", False))
        if self.anchor_won:
            untrained = self.untrained_won or not pretrained
            start = "untrained model" if untrained else "shipped pretrained model"
            rank_zero_warn(f"the best checkpoint on the validation windows is the {start} "
                           f"({self.best_model_path}, {self.monitor} "
                           f"{float(self.best_model_score):.4g}"
                           + (f" with its {self.anchor_margin:.0%} margin" if self.anchor_margin
                              else "") + "): no learned improvement on this data; --ckpt_path "
                           "best forecasts as " + ("its anchor does" if untrained
                                                   else "the shipped weights do"))
        if (self.save_last and self.dirpath and not trainer.fast_dev_run
                and self._finite(trainer, self._last_path())):
            trainer.save_checkpoint(self._last_path(), weights_only=self.save_weights_only)
            self.last_model_path = self._last_path()
        # the untrained model is its anchor (nothing to gate, unless the gate shrinks towards
        # persistence and the anchor is not persistence); shipped weights are not
        moves = getattr(getattr(pl_module, "model", None), "gate_moves_untrained", False)
        if (self._gated(pl_module) and self.best_model_path and trainer.val_dataloaders
                is not None and (pretrained or moves or not self.anchor_won)):
            self._fit_gate(trainer, pl_module)

    def _fit_gate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Fit the gate of the best checkpoint's weights on the validation windows (sums reduced
        over processes) and write it into that checkpoint (atomically, by rank 0)."""
        ckpt = read_checkpoint(self.best_model_path, map_location=pl_module.device)
        model = copy.deepcopy(pl_module.model).eval()
        prefix = "model."
        model.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items()
                               if k.startswith(prefix)})
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        device = pl_module.device

        def reduce(sums: torch.Tensor) -> torch.Tensor:
            return trainer.strategy.reduce(sums.to(device), reduce_op="sum").cpu()

        fit = model.gate_sums(itertools.chain(*loaders))
        fit.sums = reduce(fit.sums)
        gate = fit.compute(self.anchor_margin)
        reference = "persistence" if model.gate_reference == "persistence" else "the anchor"
        if trainer.is_global_zero:
            ckpt["state_dict"][prefix + "gate"] = gate
            with atomic_path(Path(self.best_model_path)) as tmp:
                torch.save(ckpt, tmp)
            rank_zero_info(f"gate per lead time fitted on the validation windows and written "
                           f"into {self.best_model_path}: "
                           + " ".join(f"{float(g):.2f}" for g in gate)
                           + f" (0: {reference}, 1: the learned forecast)")
            if not bool(gate.any()):
                by = f" by the {self.anchor_margin:.0%} margin" if self.anchor_margin else ""
                rank_zero_warn(
                    f"the best checkpoint, gated, does not beat {reference} on the validation "
                    f"windows{by} (MSE {fit.mse(fit.compute()):.4g} vs {fit.mse(0.0):.4g}): its "
                    f"gate is 0 at every lead, so --ckpt_path best forecasts as {reference} "
                    "does (no learned improvement on this data)")
        trainer.strategy.barrier()
