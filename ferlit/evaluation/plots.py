"""Figures of an evaluation, shared by ``python -m ferlit.evaluate`` and the notebooks.

Each function returns a :class:`PlotFigure`, a ``matplotlib.figure.Figure`` built without pyplot,
so it works the same headless (saved to PNG by ``predict``) and in Jupyter (shown as a cell's value).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ferlit.expressions import metric_key

#: Per-class F1 on the Aff-Wild2 validation set of Cafarelli et al. (ABAW 2020), their Table 2.
PAPER_F1_PER_CLASS: dict[str, float] = {
    "Neutral": 0.75,
    "Anger": 0.09,
    "Disgust": 0.02,
    "Fear": 0.22,
    "Happiness": 0.58,
    "Sadness": 0.27,
    "Surprise": 0.41,
}
PAPER_LABEL = "Cafarelli et al. 2020 (Aff-Wild2 val)"


SAMPLE_DATA_PREFIX = "ferlit sample data"


def is_sample_data(data: str) -> bool:
    """Whether ``data`` (metrics.json's ``data``, from ``predict_description``) names ferlit's
    drawn sample faces, whose scores are no yardstick for the paper's Aff-Wild2 numbers."""
    return data.startswith(SAMPLE_DATA_PREFIX)


def figure_title(what: str, data: str | None, checkpoint: str | None) -> str:
    """A figure's title: what it shows (raw or smoothed), then which data and which checkpoint,
    so that a PNG or a notebook figure copied elsewhere still says where it comes from.
    ``None`` for either prints as "unknown" (a predictions file without its metrics.json)."""
    sample = " (sample data)" if data and is_sample_data(data) and "sample" not in what else ""
    return (
        f"{what}{sample}\ndata: {data or 'unknown'}\n"
        f"checkpoint: {Path(checkpoint).name if checkpoint else 'unknown'}"
    )


class PlotFigure(Figure):
    """A figure that a Jupyter kernel shows as a PNG image.

    IPython renders a ``Figure`` as an image only through the formatter matplotlib-inline
    registers when pyplot starts its backend (``%matplotlib inline`` or a first
    ``pyplot.figure()``). These figures are built without pyplot, so that ``predict`` draws them
    headless and nothing global changes: in a kernel where pyplot was never used a plain
    ``Figure`` printed as the text ``<Figure size 770x400 with 1 Axes>`` (issue 16).
    ``_repr_png_`` is IPython's own hook for an object's PNG, used whatever the backend.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def confusion_figure(
    confusion: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    title: str = "Confusion matrix (rows: target, normalised by row)",
) -> Figure:
    """The confusion matrix normalised by row, so that the diagonal is each class's recall.

    On Aff-Wild2 Neutral outnumbers Disgust about 40 to 1: raw counts would show little but the
    Neutral row, so each row is divided by its class's frames (a class with none stays 0). Cells
    show the fraction and the row's frame count is printed with the class name.
    """
    counts = np.asarray(confusion, np.float64)
    support = counts.sum(axis=1)
    rates = np.divide(
        counts, support[:, None], out=np.zeros_like(counts), where=support[:, None] > 0
    )
    k = len(class_names)
    fig = PlotFigure(figsize=(1.0 + 0.85 * k, 0.8 + 0.75 * k), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), [f"{n} ({int(s)})" for n, s in zip(class_names, support, strict=True)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("target (frames)")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_title(title)
    return fig


def per_class_f1_figure(
    series: Mapping[str, Sequence[float]],
    class_names: Sequence[str],
    reference: Mapping[str, float] | None = None,
    reference_label: str = PAPER_LABEL,
    title: str = "Per-class F1",
) -> Figure:
    """Grouped bars of per-class F1, one bar per series (e.g. raw and smoothed), with the
    macro-F1 of each series in its legend entry and optional reference values as markers."""
    k = len(class_names)
    fig = PlotFigure(figsize=(max(6.0, 1.1 * k), 4.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    x = np.arange(k)
    for s, (label, values) in enumerate(series.items()):
        values = np.asarray(values, np.float64)
        bars = ax.bar(
            x - 0.4 + width * (s + 0.5), values, width, label=f"{label} (macro {values.mean():.3f})"
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    if reference is not None:
        known = [i for i, name in enumerate(class_names) if name in reference]
        ax.scatter(
            x[known],
            [reference[class_names[i]] for i in known],
            marker="_",
            s=400,
            color="black",
            zorder=3,
            label=reference_label,
        )
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("F1")
    ax.set_title(title)
    fig.legend(fontsize=8, loc="outside lower center", ncol=len(series) + (reference is not None))
    return fig


def window_figure(
    windows: Sequence[int],
    scores: Mapping[str, Sequence[float]],
    title: str = "Scores as the smoothing window grows",
) -> Figure:
    """Scores (e.g. macro-F1, accuracy, criterion) against the smoothing window in frames."""
    fig = PlotFigure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for label, values in scores.items():
        ax.plot(windows, values, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(list(windows), [str(w) for w in windows], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("window (frames; 1 = no smoothing)")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def timeline_figure(
    rows: pd.DataFrame, class_names: Sequence[str], title: str = "Timeline"
) -> PlotFigure:
    """One video over its frame numbers: above, the target (annotated frames), the raw prediction
    and, if the table has it, the smoothed one; below, each class's probability. Frame numbers
    with no row (no face found, so nothing predicted) are shaded grey and break the lines.

    ``rows``: the video's rows of a predictions table (``frame``, ``target``, ``pred``,
    ``prob_<class>``, optional ``pred_smoothed``)."""
    rows = rows.sort_values("frame")
    frames = np.arange(int(rows["frame"].min()), int(rows["frame"].max()) + 1)
    full = rows.set_index("frame").reindex(frames)
    gaps = full["pred"].isna().to_numpy()
    fig = PlotFigure(figsize=(9.0, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1.0, 1.2))
    target = full["target"].where(full["target"] >= 0)
    series = [("target", target, 3.5, "black"), ("raw prediction", full["pred"], 1.2, "C1")]
    if "pred_smoothed" in full:
        series.append(("smoothed prediction", full["pred_smoothed"], 1.6, "C0"))
    for label, values, width, colour in series:
        top.step(
            frames, values.astype(np.float64), where="mid", lw=width, color=colour, label=label
        )
    top.set_yticks(range(len(class_names)), class_names, fontsize=7)
    top.set_ylim(-0.5, len(class_names) - 0.5)
    top.legend(fontsize=7, loc="upper right", ncol=len(series))
    for name in class_names:
        bottom.plot(frames, full[f"prob_{metric_key(name)}"], lw=1.0, label=name)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("probability (raw)")
    bottom.set_xlabel("frame")
    for n, (start, stop) in enumerate(_runs(gaps)):
        for ax in (top, bottom):
            ax.axvspan(
                frames[start] - 0.5,
                frames[stop - 1] + 0.5,
                color="0.85",
                label="no face" if n == 0 and ax is bottom else None,
            )
    bottom.legend(fontsize=7, loc="upper right", ncol=4)
    top.set_title(title, fontsize=9)
    return fig


def confident_errors_figure(
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    count: int = 12,
    columns: int = 6,
    title: str = "Most confident errors",
) -> PlotFigure:
    """The ``count`` labelled frames predicted wrong with the highest probability, as face
    thumbnails read from the ``image`` column (written by ``predict``), each captioned with its
    target, prediction, probability, video and frame. A face whose file is gone says so."""
    from PIL import Image  # only here: imported by callers that show faces

    wrong = predictions[
        (predictions["target"] >= 0) & (predictions["pred"] != predictions["target"])
    ]
    probs = wrong[[f"prob_{metric_key(n)}" for n in class_names]].to_numpy()
    confidence = probs[np.arange(len(wrong)), wrong["pred"].to_numpy()] if len(wrong) else []
    worst = wrong.assign(confidence=confidence).nlargest(count, "confidence")
    lines = max(1, -(-len(worst) // columns))
    fig = PlotFigure(figsize=(1.6 * columns, 0.4 + 1.95 * lines), layout="constrained")
    axes = np.atleast_1d(fig.subplots(lines, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (_, row) in zip(axes, worst.iterrows(), strict=False):
        path = Path(str(row["image"]))
        if path.is_file():
            with Image.open(path) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
        else:
            ax.text(0.5, 0.5, "image\nnot found", ha="center", va="center", fontsize=7)
        ax.set_title(
            f"{class_names[int(row['target'])]} -> {class_names[int(row['pred'])]} "
            f"{row['confidence']:.2f}\n{row['video']} #{int(row['frame'])}",
            fontsize=6,
        )
    if worst.empty:
        axes[0].text(0.5, 0.5, "no errors", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    return fig


def reliability_figure(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10, title: str = "Reliability"
) -> PlotFigure:
    """Accuracy against confidence (the top class's probability) in ``bins`` equal bins, with the
    diagonal of a calibrated model and the expected calibration error (ECE: the bins' |accuracy -
    mean confidence| weighted by their share of frames; Guo et al., ICML 2017) in the legend."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    accuracy = np.divide(np.bincount(which, correct, bins), n, out=np.zeros(bins), where=n > 0)
    mean_conf = np.divide(np.bincount(which, confidence, bins), n, out=np.zeros(bins), where=n > 0)
    ece = float((n / max(n.sum(), 1) * np.abs(accuracy - mean_conf)).sum())
    fig = PlotFigure(figsize=(4.6, 4.4), layout="constrained")
    ax = fig.add_subplot()
    centres = (edges[:-1] + edges[1:]) / 2
    ax.bar(centres, accuracy, 1.0 / bins, edgecolor="black", label=f"accuracy (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=9)
    return fig


def training_curves_figure(metrics: pd.DataFrame, title: str = "Training curves") -> PlotFigure:
    """A run's ``metrics.csv`` (Lightning's CSVLogger: one row per log call, NaN in the columns
    not logged then) against the optimizer step: the training and validation losses on the left,
    the validation scores (``val/criterion``, ``val/f1``, ``val/acc``) on the right, the best
    ``val/criterion`` (the checkpoint ``predict`` takes by default) marked."""
    fig = PlotFigure(figsize=(9.0, 3.6), layout="constrained")
    losses, scores = fig.subplots(1, 2)
    for column in ("train/loss", "val/loss"):
        if column in metrics:
            rows = metrics[["step", column]].dropna()
            losses.plot(
                rows["step"], rows[column], marker="." if column[0] == "v" else None, label=column
            )
    losses.set_xlabel("step")
    losses.set_ylabel("loss")
    losses.legend(fontsize=8)
    for column in ("val/criterion", "val/f1", "val/acc"):
        if column in metrics:
            rows = metrics[["step", column]].dropna()
            scores.plot(rows["step"], rows[column], marker="o", ms=3, label=column)
    if "val/criterion" in metrics and metrics["val/criterion"].notna().any():
        best = metrics.loc[metrics["val/criterion"].idxmax()]
        scores.scatter(
            [best["step"]],
            [best["val/criterion"]],
            s=90,
            facecolors="none",
            edgecolors="red",
            zorder=3,
            label=f"best criterion {best['val/criterion']:.4f} (step {int(best['step'])})",
        )
    scores.set_xlabel("step")
    scores.set_ylabel("validation score")
    scores.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig
