"""notebooks/per_class_f1.ipynb runs in a Jupyter kernel on a predictions file, shows the right
numbers and shows its figures as images.

The notebooks run as a user runs them: through nbclient in an IPython kernel (ipykernel; the
``dev`` extra), the cell tagged ``parameters`` followed by a cell setting the test's own values
(as papermill does). A figure cell that prints ``<Figure size ...>`` instead of an image fails
(:func:`assert_figures_shown`); the values a test checks come back pickled from the kernel.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from sklearn.metrics import f1_score

import ferlit
from ferlit.data.readers.affwild2 import FRAMES_DIR, read_affwild2
from ferlit.evaluation.predictions import predictions_frame, sample_predictions_path
from ferlit.evaluation.smoothing import smooth_predictions
from ferlit.expressions import EXPRESSIONS_7

SAMPLE_DATA = "ferlit sample data (drawn faces, not Aff-Wild2), val split"
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "per_class_f1.ipynb"


def figure_cells(notebook) -> list:
    """The code cells that make a figure: those calling a ``*_figure(...)`` function."""
    return [c for c in notebook.cells if c.cell_type == "code" and "_figure(" in c.source]


def assert_figures_shown(notebook) -> None:
    """Each figure cell's outputs hold a PNG image (display_data or the cell's result), not just
    the text ``<Figure size ...>`` a kernel prints for a figure it cannot render."""
    cells = figure_cells(notebook)
    assert cells
    for cell in cells:
        kinds = [(o.output_type, sorted(o.get("data", {}))) for o in cell.outputs if "data" in o]
        assert any("image/png" in data for _, data in kinds), (
            f"no image from the cell\n{cell.source}\noutputs: {kinds}"
        )


def run_notebook(path: Path, names: tuple[str, ...], tmp_path: Path, **parameters) -> dict:
    """Run the notebook at ``path`` in a fresh kernel with ``parameters`` and return the kernel's
    variables ``names`` (pickled there, read here); its figure cells must have shown images.

    Raises nbclient's ``CellExecutionError`` (``.ename``, ``.evalue``) when a cell raises."""
    notebook = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    values = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(values))
    out = tmp_path / f"{path.stem}.pickle"
    notebook.cells.append(
        nbformat.v4.new_code_cell(
            f"import pickle\nwith open({str(out)!r}, 'wb') as file:\n"
            f"    pickle.dump({{n: globals()[n] for n in {list(names)!r}}}, file)"
        )
    )
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    assert_figures_shown(notebook)
    with open(out, "rb") as file:
        return pickle.load(file)


@pytest.fixture(scope="module")
def predictions_file(tiny_sample, tmp_path_factory) -> Path:
    """Predictions over the tiny sample's validation frames from a noisy but informed model,
    as ``evaluate --smooth 5`` writes them."""
    index = read_affwild2(tiny_sample.affwild2_dir, "val", progress=False)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=len(index))
    probs[np.arange(len(index)), index.labels] += 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("predictions") / "predictions.parquet"
    predictions = predictions_frame(index, probs, EXPRESSIONS_7)
    videos, frames = predictions["video"], predictions["frame"]
    predictions["pred_smoothed"] = smooth_predictions(videos, frames, probs, 5).astype(np.int8)
    predictions.to_parquet(path, index=False)
    metrics = {"data": SAMPLE_DATA, "checkpoint": "/runs/sample/best.ckpt"}  # as predict writes
    path.with_name("metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.fixture(scope="module")
def checkpoint(train_and_save, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "best.ckpt"
    train_and_save(path)
    return path


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_notebook_runs_and_shows_the_scores_of_the_predictions(
    predictions_file, checkpoint, tiny_sample, tmp_path
):
    windows = (1, 3, 9)
    faces_dir = sorted((Path(tiny_sample.affwild2_dir) / FRAMES_DIR).iterdir())[0]
    names = ("predictions", "table", "scores", "sweep", "videos", "model_probs")
    names += ("confusion", "confusion_smoothed", "f1_figure", "sweep_figure", "reliability")
    names += ("hardest_timeline", "easiest_timeline", "errors_figure", "curves", "comparison")
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text(
        "epoch,step,train/loss,val/loss,val/criterion,val/f1,val/acc\n"
        "0,49,2.5,,,,\n0,49,,2.0,0.30,0.20,0.50\n0,99,2.2,,,,\n0,99,,1.9,0.35,0.25,0.55\n"
    )
    other = predictions_file.with_name("other.parquet")  # a second run: evaluate's smoothed labels
    first = pd.read_parquet(predictions_file)
    first.assign(pred=first["pred_smoothed"]).to_parquet(other, index=False)
    ns = run_notebook(
        NOTEBOOK,
        names,
        tmp_path,
        PREDICTIONS=str(predictions_file),
        WINDOWS=windows,
        CHECKPOINT=str(checkpoint),
        FACES=str(faces_dir),
        METRICS=str(metrics_csv),
        OTHER=str(other),
    )
    predictions = ns["predictions"]
    target, pred = predictions["target"].to_numpy(), predictions["pred"].to_numpy()
    f1 = f1_score(target, pred, labels=range(7), average=None, zero_division=0)
    np.testing.assert_allclose(ns["table"]["F1"].to_numpy(), f1, atol=1e-12)
    assert ns["table"]["support"].tolist() == np.bincount(target, minlength=7).tolist()
    assert ns["scores"]["f1"] == pytest.approx(f1.mean(), abs=1e-12)

    sweep = ns["sweep"]
    assert sweep["window"].tolist() == list(windows)
    assert sweep["criterion"].iloc[0] == pytest.approx(ns["scores"]["criterion"], abs=1e-12)
    probs = predictions[[c for c in predictions.columns if c.startswith("prob_")]].to_numpy()
    smoothed_9 = smooth_predictions(predictions["video"], predictions["frame"], probs, 9)
    accuracy_9 = (smoothed_9 == target).mean()
    assert sweep["acc"].iloc[2] == pytest.approx(accuracy_9, abs=1e-12)

    videos = ns["videos"]
    assert sorted(videos["video"]) == sorted(predictions["video"].unique())
    assert videos["frames"].sum() == len(predictions)
    assert videos["criterion"].is_monotonic_increasing  # hardest first
    first = predictions[predictions["video"] == videos["video"].iloc[0]]
    assert videos["acc"].iloc[0] == pytest.approx((first["pred"] == first["target"]).mean())

    smoothed = predictions["pred_smoothed"].to_numpy()
    confusion = np.bincount(target * 7 + pred, minlength=49).reshape(7, 7)
    shown = np.asarray(ns["confusion"].axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, confusion / confusion.sum(axis=1, keepdims=True))
    tail = f" (sample data)\ndata: {SAMPLE_DATA}\ncheckpoint: best.ckpt"
    assert ns["confusion"].axes[0].get_title() == (
        "Confusion matrix, raw predictions (rows normalised)" + tail
    )
    assert ns["confusion_smoothed"].axes[0].get_title() == (
        "Confusion matrix, smoothed predictions (predict's window; rows normalised)" + tail
    )
    assert ns["f1_figure"].axes[0].get_title() == "Per-class F1, raw and smoothed" + tail
    assert len(ns["f1_figure"].axes[0].collections) == 0  # no paper marks on sample data
    assert ns["sweep_figure"].axes[0].get_title() == (
        "Scores as the smoothing window grows (box)" + tail
    )
    hardest, easiest = videos["video"].iloc[0], videos["video"].iloc[-1]
    criteria = videos.set_index("video")["criterion"]
    assert ns["hardest_timeline"].axes[0].get_title() == (
        f"{hardest}: hardest video (criterion {criteria[hardest]:.3f}), raw and smoothed" + tail
    )
    assert ns["easiest_timeline"].axes[0].get_title().startswith(f"{easiest}: easiest video")
    frames = predictions.loc[predictions["video"] == hardest, "frame"]
    drawn = ns["hardest_timeline"].axes[0].get_lines()[0].get_xdata()
    assert drawn.tolist() == list(range(frames.min(), frames.max() + 1))
    assert ns["errors_figure"].get_suptitle() == "Most confident errors, raw predictions" + tail
    thumbnails = [ax for ax in ns["errors_figure"].axes if ax.images]
    assert len(thumbnails) == min(12, int(((pred != target) & (target >= 0)).sum()))
    assert ns["reliability"].axes[0].get_title() == "Reliability of the raw predictions" + tail
    assert ns["curves"].get_suptitle() == f"Training curves ({tmp_path.name})" + tail
    scores = ns["curves"].axes[1].get_lines()[0]
    assert scores.get_xdata().tolist() == [49, 99] and scores.get_ydata().tolist() == [0.3, 0.35]
    compared = ns["comparison"].axes[0]
    assert compared.get_title() == (
        f"Per-class F1 of two runs, raw predictions (sample data)\ndata: {SAMPLE_DATA}"
        f"\nother run's data: {SAMPLE_DATA}"  # metrics.json beside it, the same file
    )
    smoothed_confusion = np.bincount(target * 7 + smoothed, minlength=49).reshape(7, 7)
    shown = np.asarray(ns["confusion_smoothed"].axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, smoothed_confusion / smoothed_confusion.sum(1, keepdims=True))
    f1_smoothed = f1_score(target, smoothed, labels=range(7), average=None, zero_division=0)
    np.testing.assert_allclose(ns["table"]["F1 (pred_smoothed)"], f1_smoothed, atol=1e-12)
    bars = [p.get_height() for p in ns["f1_figure"].axes[0].patches]
    np.testing.assert_allclose(bars, [*f1, *f1_smoothed], atol=1e-12)
    # the other run predicted the smoothed labels
    heights = [p.get_height() for p in ns["comparison"].axes[0].patches]
    np.testing.assert_allclose(heights, [*f1, *f1_smoothed], atol=1e-12)
    assert isinstance(ns["sweep_figure"], Figure)
    lines = ns["sweep_figure"].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["macro-F1", "accuracy", "criterion"]
    np.testing.assert_allclose(lines[2].get_ydata(), sweep["criterion"])

    # the model's probabilities for the folder's first 8 faces (ferlit.load_model / predict;
    # tests/test_checkpoints.py checks those against the module), 112-pixel faces resized to 32
    files = sorted(faces_dir.glob("*.jpg"))[:8]
    faces = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    model = ferlit.load_model(checkpoint)
    shown = ns["model_probs"]
    assert shown.index.tolist() == [f.name for f in files]
    assert shown.columns.tolist() == list(EXPRESSIONS_7)
    np.testing.assert_allclose(shown.to_numpy(), ferlit.predict(model, faces), rtol=1e-6)


def test_notebook_default_is_the_sample_runs_predictions(tmp_path):
    assert (
        sample_predictions_path() == NOTEBOOK.parent.parent / "runs/sample-eval/predictions.parquet"
    )
    with pytest.raises(CellExecutionError) as error:
        run_notebook(NOTEBOOK, (), tmp_path, PREDICTIONS=str(tmp_path / "missing.parquet"))
    assert error.value.ename == "DataError"
    assert "no predictions file; write one with python -m ferlit" in error.value.evalue
