"""The predict stage's output: Lightning's ``BasePredictionWriter`` for ferlit's evaluation files.

``python -m ferlit predict`` runs ``trainer.predict`` on the ExpressionDataModule's predict
loaders (the frames to evaluate, then the validation split when ``--smooth auto`` chooses on it).
Each process predicts its shard of the frames (``ShardSampler``, no padding), as validation
does; :class:`EvaluationWriter` keeps every batch's probabilities with their sample numbers,
gathers them on rank 0 at the end of the epoch, puts them back in ``FrameIndex`` order and
writes there (only there) into ``--out``:

* ``predictions.parquet``: one row per frame (``video``, ``frame``, ``target``, ``pred``,
  ``prob_<class>``, ``pred_smoothed`` when smoothing is on; :mod:`ferlit.evaluation.predictions`);
* ``metrics.json``: the scores, raw and smoothed (:mod:`ferlit.metrics`, as in training);
* ``confusion_matrix.png`` (raw predictions), ``confusion_matrix_smoothed.png`` (smoothing on)
  and ``per_class_f1.png``, labelled frames only, each titled with what it shows (raw or
  smoothed), the data and the checkpoint (:func:`ferlit.evaluation.plots.figure_title`);
* with ``--submission``, the ABAW challenge files (:mod:`ferlit.evaluation.submission`).

Every file is written whole or not at all and listed in the folder's ``.ferlit-outputs.json``
(:mod:`ferlit.io`), the only files ``--overwrite`` replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from ferlit.data.index import FrameIndex
from ferlit.errors import DataError, listed
from ferlit.evaluation.plots import (
    PAPER_F1_PER_CLASS,
    confusion_figure,
    figure_title,
    is_sample_data,
    per_class_f1_figure,
)
from ferlit.evaluation.predictions import (
    criterion_of,
    labelled,
    predictions_frame,
    prob_columns,
    scores_json,
    scores_of,
)
from ferlit.evaluation.smoothing import choose_smoothing, gaussian_sigma, smooth_predictions
from ferlit.evaluation.submission import (
    SINGLE_FILE_NAME,
    annotation_frame_counts,
    frame_counts_from_videos,
    read_frame_counts,
    write_single_file,
    write_submission,
)
from ferlit.expressions import EXPRESSIONS_7, class_names
from ferlit.io import atomic_write, claim_outputs, owned_matching, remove_outputs, write_json
from ferlit.metrics import summary_rows

#: The files an evaluation writes into ``--out`` (besides the manifest).
OUTPUTS = (
    "predictions.parquet",
    "metrics.json",
    "confusion_matrix.png",
    "confusion_matrix_smoothed.png",
    "per_class_f1.png",
)
console = Console()


@dataclass
class Submission:
    """Where and how the ABAW submission files are written (checked before predicting by
    :func:`ferlit.evaluation.evaluate.check_submission_options`).

    ``form`` is ``per_video`` (ABAW 2020/2022: ``<video>.txt``) or ``single_file`` (2023/2024:
    ``predictions.txt`` following ``test_list``). Per-video files of test faces take each video's
    frame count from ``frame_counts`` (CSV) or ``videos_dir`` (decoded); those of a labelled
    split from its annotation files (``labelled``).
    """

    folder: Path
    form: str
    labelled: bool
    test_list: str | None = None
    videos_dir: str | None = None
    frame_counts: str | None = None


@dataclass
class Evaluation:
    """What an evaluation writes, decided before predicting (``python -m ferlit predict``).

    ``indexes[k]`` is the FrameIndex of predict loader ``k`` (the DataModule's
    ``predict_targets``): the frames evaluated first, then the validation split when
    ``window`` is ``"auto"`` and those frames are not it (``auto_on_val``).
    """

    checkpoint: Path
    out: Path
    overwrite: bool
    indexes: list[FrameIndex]
    described: str
    context: str
    window: int | str
    kernels: tuple[str, ...]
    auto_on_val: bool = False
    submission: Submission | None = None
    tta: str = "none"  # test-time augmentation of the probabilities (--tta)
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.names = class_names(self.indexes[0].num_classes)


class EvaluationWriter(BasePredictionWriter):
    """Gathers the predict stage's probabilities on rank 0 and writes the evaluation there.

    Batches are ``{"sample", "probs"}`` (``ExpressionModule.predict_step``); ``sample`` is the
    row of the loader's FrameIndex, by which the rows of all processes are put back in order.
    Every frame must be predicted exactly once (a ``trainer.limit_predict_batches`` would leave
    frames out: refused). After ``trainer.predict``, :attr:`report` holds the ``metrics.json``
    content on rank 0 (None on the other ranks).
    """

    def __init__(self, evaluation: Evaluation) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.evaluation = evaluation
        self.report: dict[str, Any] | None = None
        self._samples: dict[int, list[np.ndarray]] = {}
        self._probs: dict[int, list[np.ndarray]] = {}
        self._ordered: list[np.ndarray] | None = None  # rank 0's gathered probabilities

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples, self._probs, self.report, self._ordered = {}, {}, None, None

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        self._samples.setdefault(dataloader_idx, []).append(prediction["sample"].cpu().numpy())
        self._probs.setdefault(dataloader_idx, []).append(prediction["probs"].cpu().numpy())

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        loaders = range(len(self.evaluation.indexes))
        mine = [(self._samples.get(k, []), self._probs.get(k, [])) for k in loaders]
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, mine)
            if trainer.global_rank != 0:
                return
            mine = [
                (
                    [s for part in gathered for s in part[k][0]],
                    [p for part in gathered for p in part[k][1]],
                )
                for k in loaders
            ]
        self._ordered = [
            in_index_order(samples, parts, index)
            for (samples, parts), index in zip(mine, self.evaluation.indexes, strict=True)
        ]

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rank 0 writes once the progress bar has ended (it is stopped in its own
        ``on_predict_end``, called first), so the report is printed after it."""
        if self._ordered is not None:
            self.report = write_evaluation(self.evaluation, self._ordered)


def in_index_order(
    samples: list[np.ndarray], probs: list[np.ndarray], index: FrameIndex
) -> np.ndarray:
    """Class probabilities (N x C, float32) in ``index``'s row order, from batches in any order."""
    num_classes = index.num_classes
    samples_all = np.concatenate(samples) if samples else np.zeros(0, np.int64)
    probs_all = np.concatenate(probs) if probs else np.zeros((0, num_classes), np.float32)
    order = np.argsort(samples_all, kind="stable")
    if not np.array_equal(samples_all[order], np.arange(len(index))):
        raise RuntimeError(
            f"predicted {len(samples_all)} rows for {len(index)} frames: each frame must be "
            "predicted exactly once (trainer.limit_predict_batches?)"
        )
    return probs_all[order]


def write_evaluation(evaluation: Evaluation, probs: list[np.ndarray]) -> dict[str, Any]:
    """Smooth, score, and write the evaluation of ``probs`` (one array per predict loader, in
    index order); returns the ``metrics.json`` content."""
    e = evaluation
    names, num_classes = e.names, len(e.names)
    predictions = predictions_frame(e.indexes[0], probs[0], names)
    window, kernel, search = e.window, e.kernels[0], None
    if window == "auto":
        chosen_on = "the validation split" if e.auto_on_val else "these frames (optimistic)"
        choice = predictions_frame(e.indexes[1], probs[1], names) if e.auto_on_val else predictions
        if not (choice["target"] >= 0).any():
            raise DataError(f"--smooth auto: {e.described} has no labelled frame to choose on")
        kernel, window, search = choose_smoothing(
            choice["video"].to_numpy(),
            choice["frame"].to_numpy(),
            choice[prob_columns(choice)].to_numpy(),
            choice["target"].to_numpy(),
            kernels=e.kernels,
        )
        console.print(
            f"--smooth auto: {kernel} window {window} frames, the best criterion on {chosen_on} "
            f"(raw {search[kernel][1]:.4f}, smoothed {search[kernel][window]:.4f})"
        )
    else:
        chosen_on = "--smooth"
    columns = ("pred",)
    if window > 1:
        predictions["pred_smoothed"] = smooth_predictions(
            predictions["video"].to_numpy(),
            predictions["frame"].to_numpy(),
            predictions[prob_columns(predictions)].to_numpy(),
            window,
            kernel,
        ).astype(np.int8)
        columns = ("pred", "pred_smoothed")

    has_labels = bool((predictions["target"] >= 0).any())
    report: dict[str, Any] = {
        "checkpoint": str(e.checkpoint),
        "data": e.described,
        "classes": list(names),
        **criterion_of(num_classes),
        "frames": len(predictions),
        "videos": int(predictions["video"].nunique()),
        "labelled_frames": len(labelled(predictions)),
        "tta": e.tta,
        "smoothing": {
            "window": window,
            "kernel": kernel if window > 1 else None,
            "sigma": gaussian_sigma(window) if window > 1 and kernel == "gaussian" else None,
            "chosen_by": chosen_on,
            "context": e.context,
            "criterion_by_window": search,
        },
        "raw": scores_json(scores_of(predictions), names) if has_labels else None,
        "smoothed": (
            scores_json(scores_of(predictions, "pred_smoothed"), names)
            if has_labels and window > 1
            else None
        ),
    }
    write_outputs(e.out, predictions, report, names, columns, e.overwrite)
    print_report(report, names)
    if e.submission is not None:
        write_submission_files(
            e.submission, predictions, e.indexes[0], columns[-1], num_classes, e.overwrite
        )
    return report


def write_outputs(
    out: Path,
    predictions: pd.DataFrame,
    report: dict[str, Any],
    names: tuple[str, ...],
    columns: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Write the evaluation files, each whole or not at all (:func:`ferlit.io.atomic_write`),
    listed as ferlit's in the folder's ``.ferlit-outputs.json`` before they are written."""
    claim_outputs(out, OUTPUTS)
    if overwrite:  # no stale plot beside unlabelled predictions; only files ferlit wrote
        remove_outputs(out, OUTPUTS)
    _replace(out / "predictions.parquet", lambda f: predictions.to_parquet(f, index=False))
    write_json(out / "metrics.json", report)
    if report["raw"] is None:
        return
    for name, figure in evaluation_figures(report, names).items():
        _replace(out / name, lambda f, figure=figure: figure.savefig(f, format="png", dpi=120))


def evaluation_figures(report: dict[str, Any], names: tuple[str, ...]) -> dict[str, Figure]:
    """The PNG files of a labelled evaluation by name: the raw confusion matrix, the smoothed one
    when smoothing is on, and the per-class F1 bars, each titled with raw or smoothed, the data
    and the checkpoint (``report`` is metrics.json's content)."""
    data, checkpoint = report["data"], report["checkpoint"]
    what = "Confusion matrix, raw predictions (rows: target, normalised by row)"
    figures = {
        "confusion_matrix.png": confusion_figure(
            report["raw"]["confusion"], names, title=figure_title(what, data, checkpoint)
        )
    }
    series = {"raw": list(report["raw"]["f1_per_class"].values())}
    if report["smoothed"] is not None:
        smoothing = f"{report['smoothing']['kernel']} window {report['smoothing']['window']} frames"
        series[f"smoothed, {smoothing}"] = list(report["smoothed"]["f1_per_class"].values())
        what = f"Confusion matrix, smoothed predictions ({smoothing}; rows normalised)"
        figures["confusion_matrix_smoothed.png"] = confusion_figure(
            report["smoothed"]["confusion"], names, title=figure_title(what, data, checkpoint)
        )
    # The paper's per-class F1 is a yardstick for Aff-Wild2 only, not for the sample data.
    real = names == EXPRESSIONS_7 and not is_sample_data(data)
    reference = PAPER_F1_PER_CLASS if real else None
    what = "Per-class F1, " + ("raw and smoothed" if len(series) > 1 else "raw predictions")
    figures["per_class_f1.png"] = per_class_f1_figure(
        series, names, reference, title=figure_title(what, data, checkpoint)
    )
    return figures


def _replace(path: Path, write) -> None:
    with atomic_write(path) as file:
        write(file)


def print_report(report: dict[str, Any], names: tuple[str, ...]) -> None:
    """The per-class and overall scores, raw and smoothed side by side."""
    console.print(
        f"{report['frames']} frames of {report['videos']} videos from {report['data']}; "
        f"checkpoint {report['checkpoint']}"
    )
    raw, smoothed = report["raw"], report["smoothed"]
    if raw is None:
        console.print("No labels: no scores (predictions written).")
        return
    window = report["smoothing"]["window"]
    table = Table(
        title="Evaluation" + (f" (smoothed: window {window} frames)" if smoothed else ""),
        caption="precision and recall unsmoothed; all scores in metrics.json" if smoothed else None,
    )
    for column in ("class", "frames", "F1", *(["F1 smoothed"] if smoothed else [])):
        table.add_column(column, justify="left" if column == "class" else "right")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    for name in names:
        f1 = [raw["f1_per_class"][name]] + ([smoothed["f1_per_class"][name]] if smoothed else [])
        cells = [name, str(raw["support"][name]), *(f"{v:.4f}" for v in f1)]
        table.add_row(*cells, f"{raw['precision'][name]:.4f}", f"{raw['recall'][name]:.4f}")
    table.add_section()
    for key, label in summary_rows(report["challenge"]):
        values = [raw[key]] + ([smoothed[key]] if smoothed else [])
        table.add_row(label, "", *(f"{v:.4f}" for v in values))
    console.print(table)
    console.print(f"criterion = {report['criterion']}", soft_wrap=True, highlight=False)


def write_submission_files(
    submission: Submission,
    predictions: pd.DataFrame,
    index: FrameIndex,
    column: str,
    num_classes: int,
    overwrite: bool,
) -> None:
    """The ABAW submission of ``column``'s labels (see :class:`Submission`)."""
    folder = submission.folder
    if overwrite and folder.is_dir():  # only the files ferlit wrote there
        remove_outputs(folder, owned_matching(folder, "*.txt"))
    videos = predictions["video"].to_numpy().astype(str)
    frames = predictions["frame"].to_numpy()
    labels = predictions[column].to_numpy()
    if submission.form == "single_file":
        path = folder / SINGLE_FILE_NAME
        lines = write_single_file(path, submission.test_list, videos, frames, labels)
        note = "" if num_classes == 8 else " (a 7-class model: Other is never predicted)"
        console.print(f"Wrote {path}: {lines} frames of {submission.test_list} ({column}){note}")
        return
    keep = np.ones(len(frames), bool)
    if submission.labelled:
        num_frames = annotation_frame_counts(index)
        source = "annotation files"
        # Faces past an annotation file's last line have no line in its video's file.
        keep = frames <= np.asarray([num_frames[v] for v in videos])
    elif submission.frame_counts:
        num_frames = read_frame_counts(submission.frame_counts)
        source = str(submission.frame_counts)
        missing = sorted(set(videos) - set(num_frames))
        if missing:
            raise DataError(
                f"{submission.frame_counts}: no frame count for video {listed(missing)}"
            )
        faceless = sorted(set(num_frames) - set(videos))
        if faceless:  # no label to fill their files with: said, not silently left out
            console.print(
                f"[yellow]No file for {len(faceless)} video(s) of {submission.frame_counts} with "
                f"no face image in --data.frames_dir: {', '.join(faceless[:5])}[/yellow]"
            )
    else:
        highest = predictions.groupby("video", observed=True)["frame"].max()
        num_frames = frame_counts_from_videos(submission.videos_dir, highest.astype(int).to_dict())
        source = f"videos in {submission.videos_dir}"
    files = write_submission(
        folder, videos[keep], frames[keep], labels[keep], num_classes, num_frames
    )
    dropped = int((~keep).sum())
    past = f"; {dropped} face frames past their annotation's last line left out" if dropped else ""
    console.print(
        f"Wrote {len(files)} submission files ({column}; frame counts from the {source}{past}) "
        f"to {folder}"
    )
