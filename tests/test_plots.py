"""The figures of ferlit.evaluation.plots: what they draw and what their titles say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferlit.evaluation.plots import (
    confident_errors_figure,
    figure_title,
    reliability_figure,
    timeline_figure,
    training_curves_figure,
)
from ferlit.expressions import EXPRESSIONS_7

PROBS = [f"prob_{n.lower()}" for n in EXPRESSIONS_7]


def video_rows() -> pd.DataFrame:
    """Frames 1-10 of one video with no face in 4-5 and frame 2 unannotated."""
    frames = [1, 2, 3, 6, 7, 8, 9, 10]
    probs = np.full((len(frames), 7), 0.05)
    pred = [0, 0, 1, 1, 4, 4, 4, 0]
    probs[np.arange(len(frames)), pred] = 0.7
    rows = pd.DataFrame(
        {"video": "v", "frame": frames, "target": [0, -1, 0, 1, 4, 4, 0, 0], "pred": pred}
    )
    rows[PROBS] = probs
    rows["pred_smoothed"] = [0, 0, 0, 1, 4, 4, 4, 4]
    return rows


def test_figure_title_says_what_data_and_checkpoint():
    title = figure_title(
        "Confusion matrix, raw", "ferlit sample data (drawn faces), val", "/r/b.ckpt"
    )
    assert title == (
        "Confusion matrix, raw (sample data)\ndata: ferlit sample data (drawn faces), val"
        "\ncheckpoint: b.ckpt"
    )
    assert figure_title("F1", None, None) == "F1\ndata: unknown\ncheckpoint: unknown"


def test_timeline_shows_target_raw_smoothed_probabilities_and_gaps():
    figure = timeline_figure(
        video_rows(), EXPRESSIONS_7, title="v: hardest video, raw and smoothed"
    )
    top, bottom = figure.axes
    assert top.get_title() == "v: hardest video, raw and smoothed"
    lines = {line.get_label(): line for line in top.get_lines()}
    assert list(lines) == ["target", "raw prediction", "smoothed prediction"]
    np.testing.assert_array_equal(lines["target"].get_xdata(), np.arange(1, 11))
    target = lines["target"].get_ydata()
    assert np.isnan(target[[1, 3, 4]]).all()  # unannotated frame 2, no face in 4-5
    assert target[[0, 2, 5, 6]].tolist() == [0, 0, 1, 4]
    assert lines["smoothed prediction"].get_ydata()[9] == 4
    assert [line.get_label() for line in bottom.get_lines()] == list(EXPRESSIONS_7)
    happiness = bottom.get_lines()[4].get_ydata()
    assert happiness[6] == pytest.approx(0.7) and np.isnan(happiness[3])
    spans = [p for p in bottom.patches if p.get_label() == "no face"]
    assert len(spans) == 1
    assert spans[0].get_x() == pytest.approx(3.5) and spans[0].get_width() == pytest.approx(2.0)


def test_confident_errors_are_the_wrong_frames_with_the_highest_probability(tmp_path, write_jpeg):
    rows = video_rows()
    rows["image"] = [str(tmp_path / f"{f:05d}.jpg") for f in rows["frame"]]
    for path in rows["image"][:6]:
        write_jpeg(path, np.full((16, 16, 3), 90, np.uint8))
    rows.loc[6, "prob_happiness"] = 0.9  # frame 9: Neutral predicted Happiness at 0.9
    figure = confident_errors_figure(rows, EXPRESSIONS_7, count=3, title="Most confident errors")
    assert figure.get_suptitle() == "Most confident errors"
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    # wrong: frame 3 (Neutral->Anger 0.7), frame 9 (0.9), frame 10 predicted right
    assert titles == ["Neutral -> Happiness 0.90\nv #9", "Neutral -> Anger 0.70\nv #3"]
    shown = [ax for ax in figure.axes if ax.get_title()]
    assert shown[0].texts[0].get_text() == "image\nnot found"  # frame 9's file was not written
    assert len(shown[1].images) == 1


def test_reliability_bins_accuracy_by_confidence_with_its_ece():
    confidence = np.array([0.15, 0.25, 0.95, 0.91, 0.93, 0.55])
    correct = np.array([0, 1, 1, 1, 0, 1])
    figure = reliability_figure(confidence, correct, bins=10, title="Reliability, raw")
    ax = figure.axes[0]
    assert ax.get_title() == "Reliability, raw"
    heights = [p.get_height() for p in ax.patches]
    assert heights[1] == 0 and heights[2] == 1 and heights[5] == 1
    assert heights[9] == pytest.approx(2 / 3)
    # ECE: 1/6 |0 - .15| + 1/6 |1 - .25| + 1/6 |1 - .55| + 3/6 |2/3 - .93|
    ece = (0.15 + 0.75 + 0.45) / 6 + 0.5 * abs(2 / 3 - 0.93)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == ["accuracy (ECE 0.357)", "calibrated"]
    assert f"{ece:.3f}" == "0.357"


def test_training_curves_plot_the_losses_and_scores_and_mark_the_best():
    nan = np.nan
    metrics = pd.DataFrame(
        {
            "epoch": [0, 0, 0, 1, 1],
            "step": [49, 99, 99, 149, 199],
            "train/loss": [2.9, 2.1, nan, 1.8, nan],
            "val/loss": [nan, nan, 1.9, nan, 1.7],
            "val/criterion": [nan, nan, 0.31, nan, 0.28],
            "val/f1": [nan, nan, 0.2, nan, 0.18],
            "val/acc": [nan, nan, 0.5, nan, 0.47],
        }
    )
    figure = training_curves_figure(metrics, title="Training curves (sample data)")
    assert figure.get_suptitle() == "Training curves (sample data)"
    losses, scores = figure.axes
    assert [line.get_label() for line in losses.get_lines()] == ["train/loss", "val/loss"]
    assert losses.get_lines()[0].get_xdata().tolist() == [49, 99, 149]
    assert [line.get_label() for line in scores.get_lines()] == [
        "val/criterion",
        "val/f1",
        "val/acc",
    ]
    assert scores.get_lines()[0].get_ydata().tolist() == [0.31, 0.28]
    best = scores.collections[0]
    assert best.get_label() == "best criterion 0.3100 (step 99)"
    assert best.get_offsets().tolist() == [[99, 0.31]]
