"""Flip test-time augmentation (``--tta flip``, ``ferlit.predict(..., tta="flip")``): each face's
probabilities averaged with its horizontal mirror's; recorded in ``metrics.json``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

import ferlit
from ferlit.data.readers.affwild2 import frame_file
from ferlit.errors import ConfigError
from ferlit.evaluation.evaluate import main as evaluate
from ferlit.expressions import EXPRESSIONS_7


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, train_and_save):
    path = tmp_path_factory.mktemp("tta") / "best.ckpt"
    train_and_save(path)
    return path


def faces(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_flip_tta_on_a_mirror_symmetric_face_equals_no_tta(checkpoint):
    model = ferlit.load_model(checkpoint)
    half = faces(3, seed=1)[:, :, :16]
    symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)
    assert np.array_equal(symmetric, symmetric[:, :, ::-1])
    np.testing.assert_allclose(
        ferlit.predict(model, symmetric, tta="flip"),
        ferlit.predict(model, symmetric),
        rtol=0,
        atol=1e-6,
    )


def test_flip_tta_averages_a_face_and_its_mirror(checkpoint):
    model = ferlit.load_model(checkpoint)
    images = faces(6, seed=2)
    plain = ferlit.predict(model, images)
    flipped = ferlit.predict(model, np.ascontiguousarray(images[:, :, ::-1]))
    tta = ferlit.predict(model, images, batch_size=4, tta="flip")
    assert np.abs(tta - plain).max() > 1e-4  # it changes the probabilities
    np.testing.assert_allclose(tta, (plain + flipped) / 2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tta.sum(1), 1.0, atol=1e-5)


def test_an_unknown_tta_is_refused(checkpoint):
    model = ferlit.load_model(checkpoint)
    with pytest.raises(ConfigError) as error:
        ferlit.predict(model, faces(1, seed=3), tta="rotate")
    assert str(error.value) == "--tta rotate: expected one of none, flip"


def test_evaluate_with_tta_flip_records_it_and_predicts_the_mean(
    checkpoint, tmp_path, tiny_sample, write_jpeg
):
    """``python -m ferlit.evaluate --tta flip`` (passed through to ``predict``)."""
    frames = tmp_path / "frames" / "clip"
    for i, face in enumerate(faces(4, seed=7), start=1):
        write_jpeg(frames / frame_file(i), face)
    common = [
        *("--ckpt", str(checkpoint), "--frames_dir", str(frames.parent)),
        *("--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--data.num_workers", "0"),
        *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
    ]
    report = evaluate([*common, "--out", str(tmp_path / "flip"), "--tta", "flip"])
    assert report["tta"] == "flip"
    assert json.loads((tmp_path / "flip" / "metrics.json").read_text())["tta"] == "flip"
    evaluate([*common, "--out", str(tmp_path / "none")])
    assert json.loads((tmp_path / "none" / "metrics.json").read_text())["tta"] == "none"

    columns = [f"prob_{n.lower()}" for n in EXPRESSIONS_7]
    probs = pd.read_parquet(tmp_path / "flip" / "predictions.parquet")[columns].to_numpy()
    decoded = np.stack([cv2.imread(str(frames / frame_file(i)))[..., ::-1] for i in range(1, 5)])
    model = ferlit.load_model(checkpoint)
    np.testing.assert_allclose(probs, ferlit.predict(model, decoded, tta="flip"), atol=1e-5)
    plain = pd.read_parquet(tmp_path / "none" / "predictions.parquet")[columns].to_numpy()
    assert np.abs(probs - plain).max() > 1e-4
