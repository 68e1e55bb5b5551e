"""The Lightning system: loss, optimizer, schedule, sampling and logging around any forecaster.

It holds no architecture: the forecaster comes from the registry by name (`model_name`,
`model_kwargs`), which is what the checkpoint stores, so `ForecastSystem.load_from_checkpoint(path)`
rebuilds the model with no other file (weights-only: a checkpoint's pickle can rebuild tensors and
plain data, never run code). A ready `nn.Module` can be passed as `model=` too.

A non-finite loss or gradient never reaches the weights: `nonfinite_loss="stop"` (the default)
raises `NonFiniteLossError` naming the step, the loss terms and the likely causes, and the
checkpoint callback keeps the last finite checkpoint as `last.ckpt`; `"skip"` drops such batches.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import warnings
from collections.abc import Mapping
from functools import partial
from typing import IO, Any, Literal

import lightning as L
import torch
import torch.nn as nn

from convcast.data.description import DataDescription
from convcast.layers import set_checkpointing
from convcast.models import create_model, list_models, model_info, model_kind
from convcast.models.ensemble import learned_spread
from convcast.models.registry import INPUTS
from convcast.train.checkpoint import (
    DATA_KEY,
    check_architecture,
    describe_data,
    read_checkpoint,
    read_description,
    refuse_unsafe_load,
)
from convcast.train.evaluate import split_batch as _split_batch
from convcast.train.losses import ENSEMBLE_LOSSES, get_loss
from convcast.train.sampling import Sampling

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
NONFINITE = ("stop", "skip")
MAX_SKIPPED_IN_A_ROW = 25  # "skip" gives up after this many non-finite batches in a row


class NonFiniteLossError(FloatingPointError):
    """Training gave a NaN or infinite loss or gradient (see `ForecastSystem.nonfinite_loss`)."""


def batch_extras(model: nn.Module, batch: Any) -> dict[str, Any]:
    """Entries of a dict batch beyond x, y and mask (e.g. a window's `motion` field) that the
    model reads (its registry entry's `inputs`)."""
    if not isinstance(batch, Mapping):
        return {}
    reads = getattr(model, "inputs", None)
    reads = INPUTS if reads is None else reads  # an unregistered model: every known input
    return {k: v for k, v in batch.items() if k in reads}


def nonfinite_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters of `module` that hold NaN or inf."""
    return [name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())]


def quiet_third_party() -> None:
    """Silence two known-harmless messages of Lightning that every run would print: the
    "litlogger" tip and the `LeafSpec` deprecation of torch's pytree that Lightning triggers."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTip) for f in rank_zero.filters):
        rank_zero.addFilter(_NoTip())


class _NoTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


quiet_third_party()


def _build(name: str, kwargs: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """`create_model`, with a wrong keyword argument named beside the ones the model takes."""
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"model_kwargs must be a mapping of keyword arguments, got {kwargs!r}")
    try:
        if pretrained:  # the shipped weights, to fine-tune
            return create_model(name, pretrained=True, **kwargs).train()
        return create_model(name, **kwargs)
    except TypeError as err:
        try:
            takes = model_info(name).arguments
        except (ValueError, TypeError, KeyError):
            raise err from None
        raise ValueError(f"model_kwargs {dict(kwargs)} do not fit model {name!r} ({err}); "
                         f"its arguments are: {', '.join(takes)}") from None


def scored_output(model: nn.Module, loss: str, members: int) -> str:
    """What the loss scores for `model`: "ensemble" (a learned model whose registry entry has
    `ensemble=True`: `members` members of `model.sample`, for an ensemble loss), "exceedance"
    (a model with exceedance `logits` and `thresholds`: its logits, for `exceedance_bce`) or
    "forecast" (`model(x, horizon)`, every other model). Clear errors for a loss that cannot
    score it."""
    name = getattr(model, "model_name", None)
    try:
        info = model_info(name) if isinstance(name, str) else None
    except (ValueError, KeyError):
        info = None
    terms = {part.strip().rpartition("*")[2] for part in loss.split("+")}
    if info is not None and info.ensemble and not info.baseline:
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise ValueError(f"{name} draws an ensemble and trains on it with the fair CRPS, "
                             f"which needs members >= 2, got members={members!r}")
        if not terms <= set(ENSEMBLE_LOSSES):
            raise ValueError(f"{name} trains on {members} members [B, M, T, C, H, W]: its loss "
                             f"must score an ensemble ({', '.join(ENSEMBLE_LOSSES)}, or a sum of "
                             f"them), got {loss!r}; use --model.loss fair_crps")
        return "ensemble"
    if callable(getattr(model, "logits", None)) and hasattr(model, "thresholds"):
        if loss != "exceedance_bce":
            raise ValueError(f"{type(model).__name__} forecasts exceedance probabilities and "
                             f"trains with loss exceedance_bce (alone), got {loss!r}")
        return "exceedance"
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members must be an int >= 1, got {members!r}")
    return "forecast"


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
        gradient_checkpointing: recompute each recurrent step in the backward pass instead of
            keeping its intermediates (`convcast.layers.set_checkpointing`): same gradients,
            a fraction of the memory for long rollouts, ~30% more compute.
        nonfinite_loss: what a NaN/inf training loss or gradient does: `stop` raises
            NonFiniteLossError (the last finite checkpoint stays `last.ckpt`); `skip` drops the
            batch without an update (and stops after 25 such batches in a row).
        members: ensemble members drawn per window for a learned ensemble model (registry
            `ensemble=True`, e.g. `anchored_ensemble`; >= 2), which trains on them with an
            ensemble loss (`fair_crps`); ignored by other models. Its val/test loss scores
            `members` members drawn with a fixed seed per batch (the fair CRPS is undefined for
            one member); its val/test MSE and predictions are the zero-noise member (`forward`).
            Exceedance heads (`exceedance_heads`) train on their raw logits with
            `exceedance_bce` at the model's thresholds, and are evaluated on the calibrated ones.
        pretrained: start from the weights shipped with the package
            (`create_model(model_name, pretrained=True)`, e.g. `radar_nowcaster`) and fine-tune
            them; a checkpoint of the run holds the weights itself.
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
        gradient_checkpointing: bool = False,
        nonfinite_loss: Literal["stop", "skip"] = "stop",
        members: int = 2,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE:
            raise ValueError(f"unknown nonfinite_loss {nonfinite_loss!r}; valid: "
                             f"{', '.join(NONFINITE)}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if model is not None:  # a ready module: record its registry spec when it has one
            spec = getattr(model, "model_spec", None)
            model_name, model_kwargs = (spec["name"], spec["kwargs"]) if spec else (None, None)
        self.save_hyperparameters(ignore=["model", "sampling"])
        if model is None:
            model = _build(model_name, model_kwargs or {}, pretrained)
        self.model = model
        if gradient_checkpointing and not set_checkpointing(model):
            warnings.warn(f"gradient_checkpointing: {type(model).__name__} has no recurrent cell "
                          "that supports it; training without it", stacklevel=2)
        self.loss_fn = get_loss(loss, ssim_weight)
        self.scored = scored_output(model, loss, members)  # what the loss scores (see there)
        if self.scored == "exceedance":  # the events at the model's own thresholds
            self.loss_fn = partial(self.loss_fn, thresholds=tuple(model.thresholds))
        self._levels_set = False  # exceedance heads: thresholds converted by the data's scale
        self.sampling = sampling
        self.description: DataDescription | None = None  # the data's, saved in checkpoints
        self._skipped_in_a_row = 0
        self.skipped_batches = 0  # batches dropped by nonfinite_loss="skip"

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        return self.model(x, horizon)

    def radar_scale(self) -> DataDescription | None:
        """What converts model values to dBZ and mm/h for the radar losses: the data's own
        description for a radar archive (its dBZ range and Z-R relation), else None (the
        losses' default, HKO-7 pixels)."""
        d = self._data_description()
        return d if d is not None and d.radar is not None else None

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
        kwargs = batch_extras(self.model, batch)  # e.g. the motion field of each window
        if self.sampling is not None and ar:
            kwargs.update(self.sampling.masks(self.global_step, x.shape[0], x.shape[1], horizon,
                                              x.device))
            kwargs.setdefault("teacher", y)
        reads = getattr(self.model, "inputs", None)
        if reads is not None and "input_mask" in kwargs and "input_mask" not in reads:
            able = [n for n in list_models(baselines=False)
                    if "input_mask" in model_info(n).inputs]
            raise ValueError(f"{type(self.model).__name__} does not read the input_mask of "
                             f"{type(self.sampling).__name__}: reverse scheduled sampling needs "
                             f"one of {', '.join(able)}; use ScheduledSampling with other models")
        pred = self.scored_forecast(x, horizon, kwargs)  # [B, horizon, C, H, W] (or see there)
        loss = self.loss_fn(pred, y, mask, scale=self.radar_scale())
        terms = {"forecast": loss}
        # read the model's own losses now: a second forward below would overwrite them
        for name, extra in getattr(self.model, "extra_losses", dict)().items():
            terms[name] = extra
            loss = loss + extra
        if self.hparams.transition_loss and ar and x.shape[1] > 1:
            ctx = self.model(x[:, :1], x.shape[1] - 1, teacher=x[:, 1:])  # [B, T_in-1, C, H, W]
            terms["transition"] = tl = self.loss_fn(ctx, x[:, 1:], scale=self.radar_scale())
            loss = loss + tl
        if not bool(torch.isfinite(loss)):
            return self._nonfinite("loss", terms, x, y)
        self._skipped_in_a_row = 0
        for name, value in terms.items():
            self.log("train/loss_forecast" if name == "forecast" else
                     "train/loss_transition" if name == "transition" else f"train/{name}", value)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/horizon", float(horizon))
        return loss

    def scored_forecast(self, x: torch.Tensor, horizon: int, inputs: dict[str, Any],
                        seed: int | None = None) -> torch.Tensor:
        """What the loss scores (`scored_output`): the forecast `[B, horizon, C, H, W]`; an
        ensemble's `members` members `[B, M, horizon, C, H, W]` (drawn with `seed` when given);
        exceedance heads' logits `[B, horizon, K, C, H, W]` (raw while training)."""
        if self.scored == "ensemble":  # the learned spread: forecast-time settings off
            with learned_spread(self.model):
                return self.model.sample(x, horizon, members=self.hparams.members, seed=seed,
                                         **inputs)
        if self.scored == "exceedance":
            if self.training and not self._levels_set:
                self.model.use_scale(self.radar_scale())
                self._levels_set = True
            return self.model.logits(x, horizon, calibrated=not self.training, **inputs)
        return self.model(x, horizon, **inputs)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if str(self.trainer.precision).startswith("16"):
            return  # fp16's gradient scaler skips steps with inf gradients itself
        bad = [n for n, p in self.model.named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        if bad:
            self._nonfinite("gradient", {}, None, None, bad)
            optimizer.zero_grad(set_to_none=True)  # "skip": no update from this batch

    def _nonfinite(self, what: str, terms: dict[str, torch.Tensor], x: torch.Tensor | None,
                   y: torch.Tensor | None, bad_grads: list[str] | None = None) -> None:
        """Raise NonFiniteLossError (stop) or count the batch as skipped (skip)."""
        hp, step = self.hparams, self.global_step
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        found = f"{what} is NaN/inf at training step {step}"
        found += f" (loss terms: {values})" if values else f" (in {', '.join(bad_grads[:3])})"
        causes = []
        if x is not None and not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())):
            causes.append("the batch itself holds NaN/inf values: check the data, or mask "
                          "missing values")
        broken = nonfinite_parameters(self.model)
        if broken:
            causes.append(f"the weights are already NaN/inf ({broken[0]}, ...): an earlier "
                          "update diverged")
        largest = max((float(p.detach().abs().max()) for p in self.model.parameters()
                       if p.numel()), default=0.0)
        causes.append(f"the learning rate is too high for {hp.optimizer} (lr={hp.lr:g}; the "
                      f"largest weight is now {largest:.3g}): lower --model.lr or clip gradients "
                      "(--trainer.gradient_clip_val 1.0)")
        if "16" in str(self.trainer.precision):
            causes.append(f"{self.trainer.precision} overflows: use --trainer.precision "
                          "bf16-mixed or 32")
        if hp.nonfinite_loss == "skip" and not broken:
            self.skipped_batches += 1
            self._skipped_in_a_row += 1
            if self._skipped_in_a_row < MAX_SKIPPED_IN_A_ROW:
                warnings.warn(f"skipping the batch: {found}", UserWarning, stacklevel=2)
                return None
            found = f"{MAX_SKIPPED_IN_A_ROW} batches in a row were non-finite; the last: {found}"
        raise NonFiniteLossError(
            f"{found}. Likely causes: {'; '.join(causes)}. Training stopped; "
            f"{self._kept(not broken)}. To drop such batches instead, pass "
            "--model.nonfinite_loss skip")

    def _kept(self, finite: bool) -> str:
        """What the checkpoint callback keeps when training stops on a non-finite value."""
        cb = self.trainer.checkpoint_callback
        if cb is None or not getattr(cb, "save_last", False) or not cb.dirpath:
            return "no checkpoint is written for this state"
        last = os.path.join(cb.dirpath, "last.ckpt")
        if os.path.exists(last):
            return f"the last finite checkpoint stays {last} (--ckpt_path last resumes from it)"
        if finite:
            return f"the state before this step is written to {last}"
        return "no checkpoint is written: the weights diverged before the first one"

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

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike | IO, map_location: Any = None,
        hparams_file: str | os.PathLike | None = None, strict: bool | None = None,
        weights_only: bool | None = True, **kwargs: Any,
    ) -> ForecastSystem:
        """Lightning's `load_from_checkpoint`, always weights-only: the file's pickle may rebuild
        tensors and plain data but never run code, whatever torch's default. A missing,
        truncated or foreign file is a ValueError / FileNotFoundError naming it."""
        refuse_unsafe_load(weights_only, "ForecastSystem")
        if isinstance(checkpoint_path, (str, os.PathLike)):
            ckpt = read_checkpoint(checkpoint_path)  # a clear error for a missing/broken file
            hp = ckpt.get("hyper_parameters") or {}
            foreign = sorted(set(hp) - set(inspect.signature(cls.__init__).parameters))
            name = hp.get("model_name")
            if foreign or (isinstance(name, str) and model_kind(name) != "forecaster"):
                raise ValueError(
                    f"{checkpoint_path} was not written by ForecastSystem (it holds "
                    f"{name!r}{', hyperparameters ' + ', '.join(foreign) if foreign else ''}); "
                    "load it with the LightningModule that wrote it (a video classifier: "
                    "convcast.train.classify.ClassificationSystem)")
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location,
                                            hparams_file=hparams_file, strict=strict,
                                            weights_only=True, **kwargs)

    # ---- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: Any, stage: str, batch_idx: int = 0
                   ) -> dict[str, torch.Tensor]:
        x, y, mask = _split_batch(batch)
        inputs = batch_extras(self.model, batch)
        if stage == "val" and self._scores_gate():
            pred = self._gated_val_forecast(x, y, mask, inputs)  # [B, T_out, C, H, W]
        else:
            pred = self.model(x, y.shape[1], **inputs)  # [B, T_out, C, H, W]
        scored = pred if self.scored == "forecast" else self.scored_forecast(
            x, y.shape[1], inputs, seed=batch_idx)  # an ensemble's members, heads' logits
        loss = self.loss_fn(scored, y, mask, scale=self.radar_scale())
        if not bool(torch.isfinite(loss)):
            data = "" if bool(torch.isfinite(x).all() and torch.isfinite(y).all()) else (
                " and the batch holds NaN/inf values (check the data or mask missing values)")
            broken = nonfinite_parameters(self.model)
            weights = f" and the weights hold NaN/inf ({broken[0]}, ...)" if broken else ""
            raise NonFiniteLossError(f"{stage} loss is NaN/inf at batch {batch_idx}{data}"
                                     f"{weights}; a model that gives non-finite forecasts "
                                     "cannot be scored")
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
        return self._eval_step(batch, "val", batch_idx)

    # ---- the gated score (anchored models with a validated gate) ----------------------------
    def _scores_gate(self) -> bool:
        return bool(getattr(self.model, "gated", False)) and getattr(
            self.model, "anchor", "none") != "none"

    def _gated_val_forecast(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                            inputs: dict[str, Any]) -> torch.Tensor:
        """The model's forecast, with the gate's sums (in data values) added to this epoch's:
        `val/gated_mse` is then the MSE of the forecast gated by the γ_k these windows fit."""
        d = self._data_description()
        if getattr(self, "_gate_fit", None) is None:
            self._gate_fit = self.model.new_gate_fit()
        return self.model.gate_step(self._gate_fit, x, y, mask, inputs.get("motion"),
                                    to_data=d.to_data if d is not None else None,
                                    anchor=inputs.get("anchor"))

    def on_validation_epoch_start(self) -> None:
        self._gate_fit = self.model.new_gate_fit() if self._scores_gate() else None

    def on_validation_epoch_end(self) -> None:
        """Log `val/gated_mse` (the forecast shrunk lead by lead towards the gate's reference
        by the least-squares γ_k of these windows: what `Checkpoint(gate=True)` would make of
        this state) and `val/reference_mse` (the reference alone: persistence or the anchor);
        per-frame MSE in data values, as `val/mse`."""
        fit = getattr(self, "_gate_fit", None)
        if fit is None or (fit.sums.shape[1] == 0 and self.trainer.world_size == 1):
            return
        fit.sums = self.trainer.strategy.reduce(fit.sums.to(self.device), reduce_op="sum").cpu()
        self.log("val/gated_mse", fit.mse(fit.compute()))
        self.log("val/reference_mse", fit.mse(0.0))
        self._gate_fit = None

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test", batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):  # inputs only: one step ahead
            return self.model(batch, 1)
        x, y, _ = _split_batch(batch)
        return self.model(x, y.shape[1], **batch_extras(self.model, batch))

    # ---- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return configure_optimization(self)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on weights of rank >= 2 only (convolution and linear
    kernels): biases and norm scales are not decayed, as is standard (decaying the forget-gate
    bias, which starts at 1, would push the LSTMs towards forgetting)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not weight_decay:
        return [{"params": params}]  # one group (and one learning rate in the logs)
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": rest, "weight_decay": 0.0}) if g["params"]]


def configure_optimization(system: L.LightningModule) -> Any:
    """What `configure_optimizers` returns for a system's `model` and its hyperparameters
    `optimizer`, `lr`, `weight_decay`, `scheduler`, `warmup_steps` and `max_steps` (else the
    trainer's estimated steps): the optimizer, and the schedule stepped every batch. Every
    convcast system uses it."""
    hp, params = system.hparams, decay_groups(system.model, system.hparams.weight_decay)
    if hp.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=hp.lr)
    elif hp.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=hp.lr)
    elif hp.optimizer == "rmsprop":  # Shi et al.: lr 1e-3, decay rate 0.9
        opt = torch.optim.RMSprop(params, lr=hp.lr, alpha=0.9)
    else:
        opt = torch.optim.SGD(params, lr=hp.lr, momentum=0.9)
    if hp.scheduler == "none":
        return opt
    total = hp.max_steps or getattr(system.trainer, "estimated_stepping_batches", None)
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
