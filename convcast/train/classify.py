"""The Lightning system of video classification: cross-entropy, optimizer, schedule, metrics.

Like `ForecastSystem` it holds no architecture: the classifier comes from the registry
(`model_name`, `model_kwargs`; a model of kind "classifier"). What the data looks like (class
names, channels, frame size) is read from the datamodule when a run starts, unless given, and
kept in the hyperparameters (`data_shape`), so `ClassificationSystem.load_from_checkpoint(path)`
and `convcast classify` rebuild the classifier from the checkpoint alone; the checkpoint also
records the clip length and how frames were prepared (`convcast_data`).

Training minimises the cross-entropy of the logits, optionally label-smoothed; validation logs
`val/loss` and `val/acc`; testing adds the confusion matrix (rows: true class, columns:
predicted), which `write_classification_report` writes with the accuracy to `metrics.json`.
The optimizer and schedule are the forecasting system's (`configure_optimization`): by default
Adam at 3e-3 with a cosine schedule after 200 warm-up steps, as the KTH ConvLSTM tutorial trains.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.metrics import Accuracy, ConfusionMatrix
from convcast.metrics.report import atomic_path
from convcast.models import create_model, list_models, model_kind, resolve
from convcast.train.checkpoint import (
    DATA_KEY,
    check_architecture,
    checkpoint_model_spec,
    read_checkpoint,
    refuse_unsafe_load,
)
from convcast.train.system import OPTIMIZERS, SCHEDULERS, configure_optimization

BATCHES = ("ClassificationSystem needs batches (clip [B, T, C, H, W], label [B]) such as "
           "convcast.data.kth.KTHDataModule or LabelledVideoDataModule serve")


class ClassificationSystem(L.LightningModule):
    """Train and evaluate a registered video classifier.

    Args:
        model_name / model_kwargs: the classifier, as `create_model(model_name, **model_kwargs)`;
            `num_classes`, `in_channels` and `frame_size` come from the data unless given.
        data_shape: what the data looks like, `{class_names: [...], channels: C, frame_size:
            [H, W]}` (default: read from the datamodule when a run starts; checkpoints store it).
        label_smoothing: of the cross-entropy (0: none).
        optimizer, lr, weight_decay, scheduler, warmup_steps, max_steps: as `ForecastSystem`.
    """

    def __init__(
        self,
        model_name: str = "convlstm_classifier_kth",
        model_kwargs: dict | None = None,
        data_shape: dict | None = None,
        label_smoothing: float = 0.0,
        optimizer: str = "adam",
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        scheduler: str = "cosine",
        warmup_steps: int = 200,
        max_steps: int | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if model_kind(model_name) != "classifier":
            raise ValueError(
                f"model_name {model_name!r} is a {model_kind(model_name)}, not a classifier; "
                "train forecasters with ForecastSystem (the forecasting configs); classifiers: "
                f"{', '.join(list_models(variants=True, kind='classifier'))}")
        self.save_hyperparameters()
        self.model: nn.Module | None = None
        self._data_info: dict | None = None  # what the training data looked like, for checkpoints
        self.test_results: dict | None = None
        if data_shape is not None:
            self._build(data_shape["class_names"], data_shape.get("channels"),
                        data_shape.get("frame_size"))

    # ---- the classifier, shaped by the data ---------------------------------------------------
    def _build(self, classes: list[str], channels: int | None, size: list[int] | None) -> None:
        hp = self.hparams
        given = {**resolve(hp.model_name)[1], **(hp.model_kwargs or {})}
        derived = {"num_classes": len(classes), "in_channels": channels,
                   "frame_size": list(size) if size is not None else None}
        for key, value in derived.items():
            if value is None or key not in given:
                continue
            mine = list(given[key]) if isinstance(given[key], (list, tuple)) else given[key]
            if key == "frame_size" and isinstance(mine, int):
                mine = [mine, mine]
            if mine != value:
                raise ValueError(f"model_kwargs {key}={given[key]} but the data has {key} "
                                 f"{value}; drop {key} from model_kwargs (the data sets it) or "
                                 "change the data (frame_size, channels, classes)")
        kwargs = {k: v for k, v in derived.items() if v is not None and k not in given}
        self.model = create_model(hp.model_name, **kwargs, **(hp.model_kwargs or {}))
        n = len(classes)
        self.val_acc, self.test_acc = Accuracy(n), Accuracy(n)
        self.test_confusion = ConfusionMatrix(n)
        hp.data_shape = {"class_names": list(classes), "channels": channels,
                         "frame_size": list(size) if size is not None else None}

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike | IO, map_location: Any = None,
        hparams_file: str | os.PathLike | None = None, strict: bool | None = None,
        weights_only: bool | None = True, **kwargs: Any,
    ) -> ClassificationSystem:
        """Lightning's `load_from_checkpoint`, always weights-only (no code in the file can run,
        whatever torch's default); a missing, truncated or foreign file is an error naming it."""
        refuse_unsafe_load(weights_only, "ClassificationSystem")
        if isinstance(checkpoint_path, (str, os.PathLike)):
            read_checkpoint(checkpoint_path)  # a clear error for a missing or broken file
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location,
                                            hparams_file=hparams_file, strict=strict,
                                            weights_only=True, **kwargs)

    def configure_model(self) -> None:
        try:
            dm = self.trainer.datamodule
        except RuntimeError:  # no trainer (load_from_checkpoint): the checkpoint shaped the model
            dm = None
        classes = getattr(dm, "classes", None)
        if self.model is not None:  # given or loaded: the data must agree
            known = self.hparams.data_shape["class_names"]
            if classes is not None and list(classes) != list(known):
                raise ValueError(f"the model was trained on classes {known} "
                                 f"but the data has {list(classes)}; use data with the same "
                                 "class folders (or the classes argument of the datamodule)")
            return
        if classes is None or not callable(getattr(dm, "data_info", None)):
            what = (f"{type(dm).__name__} does not tell its classes" if dm is not None
                    else "no datamodule tells the classes")
            raise ValueError(f"{what}; {BATCHES}, or give "
                             "--model.data_shape '{class_names: [...], channels: 1, "
                             "frame_size: [H, W]}'")
        info = dm.data_info()
        self._build(list(classes), info.get("channels"), info.get("frame_size"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ---- steps ----------------------------------------------------------------------------------
    def _loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not (isinstance(batch, (list, tuple)) and len(batch) == 2 and batch[1].dim() == 1):
            got = ([tuple(getattr(b, "shape", ())) for b in batch]
                   if isinstance(batch, (list, tuple)) else type(batch).__name__)
            raise ValueError(f"{BATCHES}; the datamodule gives {got}")
        x, y = batch  # [B, T, C, H, W], [B]
        logits = self.model(x)  # [B, num_classes]
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing), logits, y

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._loss(batch)
        self.val_acc.update(logits, y)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute(), prog_bar=True)
        self.val_acc.reset()

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._loss(batch)
        self.test_acc.update(logits, y)
        self.test_confusion.update(logits, y)
        self.log("test/loss", loss, sync_dist=True)
        return loss

    def on_test_epoch_end(self) -> None:
        acc, cm = self.test_acc.compute(), self.test_confusion.compute()  # [], [K, K]
        self.log("test/acc", acc)
        self.test_results = {"model": self.hparams.model_name, "accuracy": float(acc),
                             "classes": list(self.hparams.data_shape["class_names"]),
                             "confusion_matrix": cm.long().tolist()}
        self.test_acc.reset()
        self.test_confusion.reset()

    def write_test_report(self, out: str | Path) -> Path:
        """`metrics.json` and `confusion.md` of the last test run in `out` (see the module)."""
        if self.test_results is None:
            raise RuntimeError("no test results yet; run the test loop first")
        return write_classification_report(self.test_results, out)

    # ---- checkpoints ----------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._data_info is None:  # describe the training data once, from its first batch
            x = batch[0]  # [B, T, C, H, W]
            dm = self.trainer.datamodule
            self._data_info = {**(dm.data_info() if hasattr(dm, "data_info") else {}),
                               "clip_frames": int(x.shape[1]), "channels": int(x.shape[2]),
                               "frame_size": [int(x.shape[3]), int(x.shape[4])],
                               "datamodule": f"{type(dm).__module__}.{type(dm).__name__}"}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._data_info is not None:  # what `convcast classify` needs to prepare a video
            checkpoint[DATA_KEY] = self._data_info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_architecture(checkpoint, self.hparams.model_name)
        self._data_info = checkpoint.get(DATA_KEY, self._data_info)

    def configure_optimizers(self) -> Any:
        return configure_optimization(self)


def confusion_table(classes: list[str], matrix: list[list[int]]) -> str:
    """A Markdown confusion matrix: rows the true class, columns the predicted one."""
    rows = [["true \\ predicted", *classes]]
    rows += [[c, *(str(v) for v in row)] for c, row in zip(classes, matrix, strict=True)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_classification_report(results: dict, out: str | Path) -> Path:
    """Write `metrics.json` (accuracy, per-class recall, confusion matrix) and `confusion.md`
    atomically into `out`; print the table. Returns `out`."""
    out = Path(out)
    classes, cm = results["classes"], results["confusion_matrix"]
    per_class = {c: (row[i] / sum(row) if sum(row) else None) for i, (c, row) in
                 enumerate(zip(classes, cm, strict=True))}
    data = {**results, "per_class_accuracy": per_class, "clips": int(sum(map(sum, cm))),
            "confusion_matrix_layout": "rows: true class, columns: predicted class"}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    table = confusion_table(classes, cm)
    with atomic_path(out / "confusion.md") as tmp:
        tmp.write_text(f"accuracy {results['accuracy']:.4f} on {data['clips']} clips\n\n"
                       f"{table}\n")
    print(f"accuracy {results['accuracy']:.4f} on {data['clips']} test clips\n{table}")
    print(f"convcast test: wrote metrics.json and confusion.md to {out}", file=sys.stderr)
    return out


def load_classifier(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the trained classifier of a checkpoint, in eval mode, and describe it.

    Returns `(model, info)`; `info` has `model_name`, `classes`, `clip_frames`, `channels`,
    `frame_size` [H, W] and the data description stored at training time. A forecaster's
    checkpoint is refused with a pointer to `convcast predict`.
    """
    ckpt = read_checkpoint(path, map_location)
    name, kwargs = checkpoint_model_spec(ckpt, path)
    if model_kind(name) != "classifier":
        raise ValueError(f"{path} holds the forecaster {name!r}, not a classifier; forecast with "
                         f"it: convcast predict --ckpt_path {path} --input VIDEO --out OUT.gif")
    shape = (ckpt.get("hyper_parameters") or {}).get("data_shape") or {}
    data = ckpt.get(DATA_KEY) or {}
    classes = shape.get("class_names") or data.get("classes")
    if not classes:
        raise ValueError(f"{path} records no class names; was it written by "
                         "ClassificationSystem during training?")
    size = shape.get("frame_size") or data.get("frame_size")
    kwargs = {"num_classes": len(classes), "in_channels": shape.get("channels") or 1,
              **({"frame_size": list(size)} if size else {}), **kwargs}
    model = create_model(name, **kwargs)
    try:
        model.load_state_dict({k[len("model."):]: v for k, v in ckpt["state_dict"].items()
                               if k.startswith("model.")})
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit {name!r} with {kwargs}: {err}") from err
    model.eval()
    info = {**data, "model_name": name, "classes": list(classes),
            "channels": kwargs["in_channels"], "frame_size": list(model.frame_size),
            "clip_frames": data.get("clip_frames"), "path": str(path)}
    return model, info
