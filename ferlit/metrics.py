"""The ABAW expression scores, and the challenge score a run is selected by.

Each challenge ranks expression entries by its own score, and ``val/criterion`` is the score of
the run's challenge, chosen by its number of classes:

* ``abaw2020`` (7 classes): 0.67 x macro F1 + 0.33 x accuracy. The weights are the ABAW 2020
  expression track's (Kollias et al., "Analysing Affective Behavior in the First ABAW 2020
  Competition", FG 2020), which Cafarelli et al. select models by.
* ``abaw2022`` (8 classes, with Other): the unweighted mean F1 over the 8 classes, with no
  accuracy term. From the 3rd ABAW on (Kollias, "ABAW: Valence-Arousal Estimation, Expression
  Recognition, Action Unit Detection & Multi-Task Learning Challenges", CVPR 2022 workshops,
  arXiv:2202.10659; the 5th, arXiv:2303.01498, CVPR 2023; the 6th, arXiv:2402.19344, CVPR 2024;
  and the 7th's multi-task track, arXiv:2407.03835, ECCV 2024) the expression performance
  measure is the average F1 score across all 8 categories, P = sum_c F1_c / 8.

The 2020 formula is reported as ``abaw2020`` for every run, so that an 8-class run can be compared
with the paper's numbers; on 8 classes it is a comparison only, never the selection score.

F1 is the unweighted mean of the per-class F1 over *all* classes, as the ABAW papers define it: a
class that is neither predicted nor present scores 0 and still counts, exactly
``sklearn.metrics.f1_score(labels=range(C), average="macro", zero_division=0)``. torchmetrics'
own macro F1 leaves such classes out of the mean, which inflates the score on small or
unbalanced validation splits, so the scores here are computed from a confusion matrix. The
confusion matrix is also the metric's only state: summing integer counts across ranks makes the
DDP result exactly that of one process over all frames.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

F1_WEIGHT = 0.67
ACCURACY_WEIGHT = 0.33

Challenge = Literal["abaw2020", "abaw2022"]

#: What ``val/criterion`` is for each challenge, as printed at fit start and written in
#: ``best_validation.json`` and evaluate's ``metrics.json``.
CRITERIA: dict[str, str] = {
    "abaw2020": "abaw2020: 0.67 x mean F1 + 0.33 x accuracy over 7 classes",
    "abaw2022": "abaw2022: mean F1 over 8 classes",
}


def challenge_of(num_classes: int) -> Challenge:
    """The challenge whose score selects a run of ``num_classes`` classes.

    8 classes (with Other) is the layout of the 3rd ABAW (2022) and every later one, all scored
    by mean F1; 7 classes is ABAW 2020's. Any other count (a test's 3 classes) gets the 2020
    formula, which is defined for any number of classes.
    """
    return "abaw2022" if num_classes == 8 else "abaw2020"


def scores_from_confusion(
    confusion: Tensor | np.ndarray, challenge: Challenge | None = None
) -> dict[str, Tensor]:
    """All scores of one confusion matrix (rows = target, columns = prediction).

    Returns scalars ``criterion`` (the score of ``challenge``; None = the challenge of the
    matrix's class count, :func:`challenge_of`), ``abaw2020`` (0.67 x F1 + 0.33 x accuracy),
    ``f1``, ``acc`` (float64) and per class ``f1_per_class``, ``precision``, ``recall``
    (float64), ``support`` (frames per target class) and ``confusion``. ``challenge`` is given
    when the matrix is a part of a run's (e.g. the classes present in one video), whose score
    must still be the run's. A ratio with a zero denominator is 0 (sklearn's
    ``zero_division=0``); with no frames at all every score is therefore 0 rather than NaN, so an
    empty split cannot win model selection.
    """
    counts = torch.as_tensor(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"expected a square (C, C) confusion matrix, got {tuple(counts.shape)}")
    if challenge is None:
        challenge = challenge_of(counts.shape[0])
    if challenge not in CRITERIA:
        raise ValueError(f"challenge must be one of {', '.join(CRITERIA)}, got {challenge!r}")
    c = counts.to(torch.float64)
    true_positives = c.diagonal()
    support = c.sum(dim=1)
    predicted = c.sum(dim=0)
    precision = _divide(true_positives, predicted)
    recall = _divide(true_positives, support)
    f1_per_class = _divide(2 * true_positives, predicted + support)
    f1 = f1_per_class.mean()
    acc = _divide(true_positives.sum(), c.sum())
    abaw2020 = F1_WEIGHT * f1 + ACCURACY_WEIGHT * acc
    return {
        "criterion": abaw2020 if challenge == "abaw2020" else f1,
        "abaw2020": abaw2020,
        "f1": f1,
        "acc": acc,
        "f1_per_class": f1_per_class,
        "precision": precision,
        "recall": recall,
        "support": counts.sum(dim=1),
        "confusion": counts,
    }


#: The per-class scores of :func:`per_class_scores`, in the order tables show them.
PER_CLASS_SCORES = ("f1", "precision", "recall", "support")


def per_class_scores(
    scores: dict[str, Any], class_names: tuple[str, ...]
) -> dict[str, dict[str, float | int]]:
    """``{class name: {"f1", "precision", "recall", "support"}}`` from :func:`scores_from_confusion`'s
    scores: the one per-class table that reports (W&B's ``val/per_class``) are drawn from;
    rates as floats, support (frames of that target class) as an int."""
    columns = [scores[k] for k in ("f1_per_class", "precision", "recall", "support")]
    return {
        name: {
            key: int(value) if key == "support" else float(value)
            for key, value in zip(PER_CLASS_SCORES, values, strict=True)
        }
        for name, *values in zip(class_names, *columns, strict=True)
    }


def summary_rows(challenge: str) -> list[tuple[str, str]]:
    """``(score key, label)`` of the overall scores a report prints below its per-class rows,
    in order: macro-F1, accuracy, ABAW 2020's formula (0.67 F1 + 0.33 acc, the paper's
    criterion, to compare with it) when ``challenge`` is another, then the criterion named by
    its challenge. Keys are :func:`scores_from_confusion`'s; the one list the validation,
    best-validation and evaluation tables share."""
    if challenge not in CRITERIA:
        raise ValueError(f"challenge must be one of {', '.join(CRITERIA)}, got {challenge!r}")
    rows = [("f1", "macro-F1"), ("acc", "accuracy")]
    if challenge != "abaw2020":
        rows.append(("abaw2020", "0.67 F1 + 0.33 acc"))
    rows.append(("criterion", f"criterion ({challenge})"))
    return rows


def _divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    defined = denominator > 0
    return torch.where(defined, numerator / torch.where(defined, denominator, 1.0), 0.0)


class ExpressionCriterion(Metric):
    """The ABAW expression scores over all frames seen since the last reset.

    ``update(preds, target)`` takes logits or probabilities (N, C), or predicted labels (N,), and
    target labels (N,); ``compute()`` returns :func:`scores_from_confusion`'s dict, whose
    ``criterion`` is the score of :attr:`challenge` (:func:`challenge_of` the class count), and
    :attr:`description` says which score that is.
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
        self.challenge: Challenge = challenge_of(num_classes)
        self.description = CRITERIA[self.challenge]
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
        return scores_from_confusion(self.confusion, self.challenge)


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
