"""Classification metrics: accuracy and confusion matrix, thin wrappers of torchmetrics' multiclass
ones. `pred` is class indices `[N, ...]` or scores/logits `[N, num_classes, ...]`; `target` is
class indices `[N, ...]`. Accuracy is micro-averaged by default (the fraction of correct labels);
the confusion matrix has rows = true class, columns = predicted class.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
)

Average = Literal["micro", "macro", "weighted", "none"]
Normalize = Literal["true", "pred", "all", "none"]


def accuracy(pred: Tensor, target: Tensor, num_classes: int, *, average: Average = "micro",
             ignore_index: int | None = None) -> Tensor:
    """Fraction of correct labels (micro), or per-class recall averaged (macro/weighted/none)."""
    return multiclass_accuracy(pred, target, num_classes=num_classes, average=average,
                               ignore_index=ignore_index)


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, *,
                     normalize: Normalize | None = None,
                     ignore_index: int | None = None) -> Tensor:
    """`[num_classes, num_classes]` counts (rows true, columns predicted), optionally normalised."""
    return multiclass_confusion_matrix(pred, target, num_classes=num_classes,
                                       normalize=normalize, ignore_index=ignore_index)


class Accuracy(MulticlassAccuracy):
    """Streaming `accuracy`: torchmetrics' MulticlassAccuracy with micro averaging by default."""

    def __init__(self, num_classes: int, average: Average = "micro", **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, average=average, **kwargs)


class ConfusionMatrix(MulticlassConfusionMatrix):
    """Streaming `confusion_matrix` (torchmetrics' MulticlassConfusionMatrix)."""

    def __init__(self, num_classes: int, normalize: Normalize | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, normalize=normalize, **kwargs)
