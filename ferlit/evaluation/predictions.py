"""The predictions table of an evaluation, and the scores explored from it.

``python -m ferlit.evaluate`` writes one row per frame (``predictions.parquet``): ``video``,
``frame``, ``target`` (-1 when unknown, as in the Aff-Wild2 annotation files), ``pred``, one
``prob_<class>`` column per class and, with smoothing on, ``pred_smoothed``. The functions here
read that table and score it with the training metric (:mod:`ferlit.metrics`), so that the
notebooks and ``evaluate`` agree to the last digit. ``criterion`` is the score of the run's
challenge, as in training: the ABAW 2020 formula for 7 classes, the mean F1 for 8 (ABAW 2022+).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ferlit.data.index import FrameIndex
from ferlit.errors import DataError
from ferlit.evaluation.smoothing import AUTO_WINDOWS, smooth_predictions
from ferlit.expressions import class_names, metric_key
from ferlit.metrics import (
    CRITERIA,
    ExpressionCriterion,
    challenge_of,
    per_class_scores,
    scores_from_confusion,
)

#: Where ``make evaluate`` writes the sample run's evaluation, under the repository root.
SAMPLE_EVALUATION = Path("runs/sample-eval")


def sample_predictions_path() -> Path:
    """The sample run's ``predictions.parquet`` in the repository ferlit is imported from.

    Found from the package's location rather than the current folder, because Jupyter starts a
    notebook in ``notebooks/`` while ``make evaluate`` runs from the repository root.
    """
    return Path(__file__).resolve().parents[2] / SAMPLE_EVALUATION / "predictions.parquet"


def predictions_frame(index: FrameIndex, probs: np.ndarray, names: tuple[str, ...]) -> pd.DataFrame:
    """The predictions table: one row per frame, in the index's order, with the path of the face
    image it was predicted from (``image``, :meth:`FrameIndex.image_path`), so that a notebook can
    show the faces behind the errors."""
    videos = np.asarray([os.path.basename(str(g)) for g in index.group_names], dtype=object)
    frame = pd.DataFrame(
        {
            "video": pd.Categorical(videos[index.groups]),
            "frame": index.frames.astype(np.int32),
            "image": [index.image_path(i) for i in range(len(index))],
            "target": index.labels.astype(np.int8),
            "pred": probs.argmax(axis=1).astype(np.int8),
        }
    )
    for c, name in enumerate(names):
        frame[f"prob_{metric_key(name)}"] = probs[:, c].astype(np.float32)
    return frame


def load_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A ``predictions.parquet`` written by ``python -m ferlit.evaluate``, its columns checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no predictions file; write one with python -m ferlit.evaluate "
            "(make evaluate for the sample run)"
        )
    frame = pd.read_parquet(path)
    probs = prob_columns(frame)
    expected = ["video", "frame", "target", "pred"]
    if len(probs) in (7, 8):
        expected += [f"prob_{metric_key(name)}" for name in class_names(len(probs))]
    missing = [c for c in expected if c not in frame.columns]
    if missing or len(probs) not in (7, 8):
        raise DataError(
            f"{path}: not a ferlit predictions file; expected the columns {', '.join(expected)} "
            f"and 7 or 8 prob_<class> columns, found {', '.join(map(str, frame.columns))}"
        )
    return frame


def run_description(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """The data and the checkpoint a predictions file came from, as ``predict`` recorded them in
    the ``metrics.json`` beside it (``data``, ``checkpoint``); ``(None, None)`` without one, so
    that figures then say "unknown" rather than guess."""
    metrics = Path(path).with_name("metrics.json")
    if not metrics.is_file():
        return None, None
    try:
        report = json.loads(metrics.read_text())
        return str(report["data"]), str(report["checkpoint"])
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{metrics}: not predict's metrics.json (expected JSON with data and checkpoint): "
            f"{error}"
        ) from None


def prob_columns(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if str(c).startswith("prob_")]


def names_of(predictions: pd.DataFrame) -> tuple[str, ...]:
    """The class names of a predictions table, from its ``prob_<class>`` columns."""
    return class_names(len(prob_columns(predictions)))


def scores_from_labels(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, Any]:
    """The training metric (:class:`ExpressionCriterion`) over labelled frames, as numpy arrays.

    The frames are all here already (gathered on rank 0 under DDP), so the metric must not wait
    for other processes to sum their share as it does in training.
    """
    metric = ExpressionCriterion(num_classes, sync_on_compute=False)
    metric.update(
        torch.as_tensor(np.asarray(preds, np.int64)), torch.as_tensor(np.asarray(targets, np.int64))
    )
    return {k: v.numpy() for k, v in metric.compute().items()}


def labelled(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows with a known target (``target`` >= 0)."""
    return predictions[predictions["target"] >= 0]


def scores_of(predictions: pd.DataFrame, column: str = "pred") -> dict[str, Any]:
    """Scores of a predictions table's labelled rows for one prediction column."""
    rows = labelled(predictions)
    num_classes = len(prob_columns(predictions))
    return scores_from_labels(rows["target"].to_numpy(), rows[column].to_numpy(), num_classes)


#: ``metrics.json``'s per-class keys and the :func:`ferlit.metrics.per_class_scores` score each
#: holds (``f1_per_class`` as in :func:`ferlit.metrics.scores_from_confusion`).
REPORT_KEYS = {
    "f1_per_class": "f1",
    "precision": "precision",
    "recall": "recall",
    "support": "support",
}


def scores_json(scores: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Scores as JSON: scalars, ``{class: value}`` per class (rates as floats, support as an
    int: :func:`ferlit.metrics.per_class_scores`), the confusion as rows (target).

    ``criterion`` is the score of the run's challenge (named by :func:`criterion_of`);
    ``abaw2020`` the 2020 formula, the same number for a 7-class run.
    """
    report: dict[str, Any] = {k: float(scores[k]) for k in ("criterion", "abaw2020", "f1", "acc")}
    table = per_class_scores(scores, names)
    for key, score in REPORT_KEYS.items():
        report[key] = {name: row[score] for name, row in table.items()}
    report["confusion"] = np.asarray(scores["confusion"]).astype(int).tolist()
    return report


def criterion_of(num_classes: int) -> dict[str, str]:
    """Which score ``criterion`` is for a run of ``num_classes`` classes, for ``metrics.json``:
    ``{"challenge": "abaw2022", "criterion": "abaw2022: mean F1 over 8 classes"}``."""
    challenge = challenge_of(num_classes)
    return {"challenge": challenge, "criterion": CRITERIA[challenge]}


def per_class_table(
    predictions: pd.DataFrame, columns: tuple[str, ...] = ("pred",)
) -> pd.DataFrame:
    """Support, and F1, precision and recall per prediction column (``F1``, ``F1 (<column>)``
    for a column other than ``pred``), one row per class, indexed by class name: the labelled
    rows' :func:`ferlit.metrics.per_class_scores`."""
    names = names_of(predictions)
    table = pd.DataFrame(index=pd.Index(names, name="class"))
    for column in columns:
        scores = pd.DataFrame.from_dict(
            per_class_scores(scores_of(predictions, column), names), orient="index"
        )
        if column == columns[0]:
            table["support"] = scores["support"]
        suffix = "" if column == "pred" else f" ({column})"
        for key, title in (("f1", "F1"), ("precision", "precision"), ("recall", "recall")):
            table[title + suffix] = scores[key]
    return table


def smoothing_sweep(
    predictions: pd.DataFrame, windows: tuple[int, ...] = AUTO_WINDOWS, kernel: str = "box"
) -> pd.DataFrame:
    """Criterion, macro-F1 and accuracy of the labelled frames for each smoothing window.

    As in ``evaluate``, every row (unannotated frames too) is smoothed and the labelled rows
    are scored, so that the sweep's numbers are those ``--smooth W`` reports.
    """
    probs = predictions[prob_columns(predictions)].to_numpy()
    videos, frames, targets = (predictions[c].to_numpy() for c in ("video", "frame", "target"))
    scored = targets >= 0
    sweep = []
    for window in windows:
        smoothed = smooth_predictions(videos, frames, probs, window, kernel)
        scores = scores_from_labels(targets[scored], smoothed[scored], probs.shape[1])
        sweep.append(
            {"window": window, **{k: float(scores[k]) for k in ("criterion", "f1", "acc")}}
        )
    return pd.DataFrame(sweep)


def per_video_scores(predictions: pd.DataFrame, column: str = "pred") -> pd.DataFrame:
    """Criterion, F1 and accuracy of each video, hardest (lowest criterion) first.

    F1 here is the mean over the classes that occur in the video as target or prediction: over
    all classes, as the ABAW score is defined for a whole split, a video showing only Neutral
    could never exceed F1 1/7 however well it is predicted. The criterion is still the run's
    challenge's (mean F1 alone for an 8-class run), whatever classes a video shows.
    """
    num_classes = len(prob_columns(predictions))
    challenge = challenge_of(num_classes)
    rows = []
    for video, part in labelled(predictions).groupby("video", observed=True):
        scores = scores_from_labels(part["target"].to_numpy(), part[column].to_numpy(), num_classes)
        confusion = scores["confusion"]
        present = np.flatnonzero(confusion.sum(axis=0) + confusion.sum(axis=1))
        within = scores_from_confusion(confusion[np.ix_(present, present)], challenge)
        rows.append(
            {
                "video": video,
                "frames": len(part),
                "classes": len(present),
                **{k: float(within[k]) for k in ("criterion", "f1", "acc")},
            }
        )
    return pd.DataFrame(rows).sort_values("criterion", ignore_index=True)
