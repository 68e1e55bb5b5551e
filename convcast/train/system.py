"""The Lightning system: loss, optimizer, schedule, sampling and logging around any forecaster.

It holds no architecture: the forecaster comes from the registry by name (`model_name`,
`model_kwargs`), which is what the checkpoint stores, so `ForecastSystem.load_from_checkpoint(path)`
rebuilds the model with no other file. A ready `nn.Module` can be passed as `model=` too.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn as nn

from convcast.models import create_model
from convcast.data.description import DataDescription
from convcast.train.checkpoint import DATA_KEY, check_architecture, describe_data, read_description
from convcast.train.evaluate import split_batch as _split_batch
from convcast.train.losses import get_loss
from convcast.train.sampling import Sampling

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")


class ForecastSystem(L.LightningModule):
    """Train and evaluate a registered forecaster.

    Args:
        model_name / model_kwargs: the forecaster, as `create_model(model_name, **model_kwargs)`.
        loss: `mse`, `l1`, `l1+l2`, `bce`, `bce+ssim` or `mse+ssim`.
        ssim_weight: weight of the (1 - SSIM) term of the `+ssim` losses (None: 0.1).
        optimizer: `adam`, `adamw`, `rmsprop` (the paper's: lr 1e-3, decay 0.9) or `sgd`.
        scheduler: `none`, `cosine` (linear warmup for `warmup_steps`, then cosine) or `onecycle`.
        horizon_curriculum: train on the first k future frames, k growing linearly from 1 to all
            over this many steps (0: always all).
        transition_loss: for autoregressive models, also predict every input frame from the ones
            before it (teacher-forced) and add that loss: every next-frame transition teaches.
        sampling: a scheduled-sampling object with `masks(step, batch, input_frames, horizon,
            device) -> dict` of keyword arguments for the model (e.g. `teacher_mask`).
    """

    def __init__(
        self,
        model_name: str = "encoder_forecaster",
        model_kwargs: dict | None = None,
        loss: str = "mse",
        ssim_weight: float | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str = "none",
        warmup_steps: int = 0,
        max_steps: int | None = None,
        horizon_curriculum: int = 0,
        transition_loss: bool = False,
        sampling: Sampling | None = None,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if model is not None:  # a ready module: record its registry spec when it has one
            spec = getattr(model, "model_spec", None)
            model_name, model_kwargs = (spec["name"], spec["kwargs"]) if spec else (None, None)
        self.save_hyperparameters(ignore=["model", "sampling"])
        if model is None:
            model = create_model(model_name, **(model_kwargs or {}))
        self.model = model
        self.loss_fn = get_loss(loss, ssim_weight)
        self.sampling = sampling
        self.description: DataDescription | None = None  # the data's, saved in checkpoints

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        return self.model(x, horizon)

    # ---- training ---------------------------------------------------------------------------
    def train_horizon(self, full: int) -> int:
        steps = self.hparams.horizon_curriculum
        if steps <= 0:
            return full
        return min(full, 1 + int(self.global_step * full / steps))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, mask = _split_batch(batch)
        horizon = self.train_horizon(y.shape[1])
        y = y[:, :horizon]  # [B, horizon, C, H, W]
        mask = mask[:, :horizon] if mask is not None else None
        ar = getattr(self.model, "autoregressive", False)
        kwargs = {}
        if self.sampling is not None and ar:
            kwargs = self.sampling.masks(self.global_step, x.shape[0], x.shape[1], horizon,
                                         x.device)
            kwargs.setdefault("teacher", y)
        try:
            pred = self.model(x, horizon, **kwargs)  # [B, horizon, C, H, W]
        except TypeError as err:
            raise TypeError(f"{type(self.model).__name__} does not accept the keyword arguments "
                            f"of {type(self.sampling).__name__} ({', '.join(kwargs)}): {err}. "
                            "Reverse scheduled sampling needs predrnn or predrnn_v2; use "
                            "ScheduledSampling with other models") from err
        loss = self.loss_fn(pred, y, mask)
        self.log("train/loss_forecast", loss, prog_bar=False)
        # read the model's own losses now: a second forward below would overwrite them
        for name, extra in getattr(self.model, "extra_losses", dict)().items():
            self.log(f"train/{name}", extra)
            loss = loss + extra
        if self.hparams.transition_loss and ar and x.shape[1] > 1:
            ctx = self.model(x[:, :1], x.shape[1] - 1, teacher=x[:, 1:])  # [B, T_in-1, C, H, W]
            tl = self.loss_fn(ctx, x[:, 1:])
            self.log("train/loss_transition", tl)
            loss = loss + tl
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/horizon", float(horizon))
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.description is None:  # describe the training data once, from its first batch
            x, y, _ = _split_batch(batch)
            self.description = describe_data(self.trainer.datamodule, x, y)

    # ---- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.description is not None:  # what `convcast predict` needs to prepare frames
            checkpoint[DATA_KEY] = self.description.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_architecture(checkpoint, self.hparams.model_name)
        self.description = read_description(checkpoint) or self.description

    # ---- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: Any, stage: str) -> dict[str, torch.Tensor]:
        x, y, mask = _split_batch(batch)
        pred = self.model(x, y.shape[1])  # [B, T_out, C, H, W]
        loss = self.loss_fn(pred, y, mask)
        d = self._data_description()  # MSE in data values, as the test reports give it
        p, t = (d.to_data(pred), d.to_data(y)) if d is not None else (pred, y)
        err = (p - t) ** 2 if mask is None else (p - t) ** 2 * mask
        # per-frame MSE: squared error summed over a frame's pixels, mean over frames (PredRNN)
        mse_frame = err.flatten(2).sum(-1).mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/mse", mse_frame, sync_dist=True)
        return {"loss": loss, "pred": pred}

    def _data_description(self) -> DataDescription | None:
        """The training data's description, or before training the datamodule's."""
        if self.description is None and self._trainer is not None:
            describe = getattr(self.trainer.datamodule, "describe", None)
            self.description = describe() if callable(describe) else None
        return self.description

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):  # inputs only: one step ahead
            return self.model(batch, 1)
        x, y, _ = _split_batch(batch)
        return self.model(x, y.shape[1])

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = self.model.parameters()
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "rmsprop":  # Shi et al.: lr 1e-3, decay rate 0.9
            opt = torch.optim.RMSprop(params, lr=hp.lr, alpha=0.9, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        total = hp.max_steps or getattr(self.trainer, "estimated_stepping_batches", None)
        if not total or not math.isfinite(total):
            raise ValueError(f"scheduler {hp.scheduler!r} needs max_steps (or a Trainer with a "
                             "finite number of steps)")
        total = int(total)
        if hp.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=total)
        else:
            warm = max(0, hp.warmup_steps)

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                progress = min(1.0, (step - warm) / max(1, total - warm))
                return 0.5 * (1 + math.cos(math.pi * progress))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
