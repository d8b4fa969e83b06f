"""The ABAW expression criterion: 0.67 x macro F1 + 0.33 x accuracy.

The weights are the ABAW 2020 expression track's (Kollias et al., "Analysing Affective Behavior in
the First ABAW 2020 Competition", FG 2020), which Cafarelli et al. select models by.

F1 is the unweighted mean of the per-class F1 over *all* classes, as the ABAW papers define it (the
mean over the 7 expressions): a class that is neither predicted nor present scores 0 and still
counts, exactly ``sklearn.metrics.f1_score(labels=range(C), average="macro", zero_division=0)``.
torchmetrics'
own macro F1 leaves such classes out of the mean, which inflates the score on small or
unbalanced validation splits, so the scores here are computed from a confusion matrix. The
confusion matrix is also the metric's only state: summing integer counts across ranks makes the
DDP result exactly that of one process over all frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

F1_WEIGHT = 0.67
ACCURACY_WEIGHT = 0.33


def scores_from_confusion(confusion: Tensor | np.ndarray) -> dict[str, Tensor]:
    """All scores of one confusion matrix (rows = target, columns = prediction).

    Returns scalars ``criterion``, ``f1``, ``acc`` (float64) and per class ``f1_per_class``,
    ``precision``, ``recall`` (float64), ``support`` (frames per target class) and ``confusion``.
    A ratio with a zero denominator is 0 (sklearn's ``zero_division=0``); with no frames at all
    every score is therefore 0 rather than NaN, so an empty split cannot win model selection.
    """
    counts = torch.as_tensor(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"expected a square (C, C) confusion matrix, got {tuple(counts.shape)}")
    c = counts.to(torch.float64)
    true_positives = c.diagonal()
    support = c.sum(dim=1)
    predicted = c.sum(dim=0)
    precision = _divide(true_positives, predicted)
    recall = _divide(true_positives, support)
    f1_per_class = _divide(2 * true_positives, predicted + support)
    f1 = f1_per_class.mean()
    acc = _divide(true_positives.sum(), c.sum())
    return {
        "criterion": F1_WEIGHT * f1 + ACCURACY_WEIGHT * acc,
        "f1": f1,
        "acc": acc,
        "f1_per_class": f1_per_class,
        "precision": precision,
        "recall": recall,
        "support": counts.sum(dim=1),
        "confusion": counts,
    }


def _divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    defined = denominator > 0
    return torch.where(defined, numerator / torch.where(defined, denominator, 1.0), 0.0)


class ExpressionCriterion(Metric):
    """The ABAW expression criterion over all frames seen since the last reset.

    ``update(preds, target)`` takes logits or probabilities (N, C), or predicted labels (N,), and
    target labels (N,); ``compute()`` returns :func:`scores_from_confusion`'s dict.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confusion: Tensor

    def __init__(self, num_classes: int, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.validate_args = validate_args
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.validate_args:
            _check_update(preds, target, self.num_classes)
        self.confusion += multiclass_confusion_matrix(
            preds, target, self.num_classes, validate_args=False
        )

    def compute(self) -> dict[str, Tensor]:
        return scores_from_confusion(self.confusion)


def _check_update(preds: Tensor, target: Tensor, num_classes: int) -> None:
    """Shapes and label range; torchmetrics' own check misses a label >= C when few are present."""
    if target.ndim != 1 or target.is_floating_point():
        raise ValueError(
            f"target must be integer labels (N,), got {target.dtype} {tuple(target.shape)}"
        )
    n = target.shape[0]
    if preds.shape == (n, num_classes):
        labels = target
    elif preds.shape == (n,) and not preds.is_floating_point():
        labels = torch.cat([preds, target])
    else:
        raise ValueError(
            f"preds must be scores ({n}, {num_classes}) or integer labels ({n},) to match target, "
            f"got {preds.dtype} {tuple(preds.shape)}"
        )
    if n:
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must be in [0, {num_classes}), got values from {low} to {high}"
            )
