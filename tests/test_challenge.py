"""The challenge's own score: an 8-class run (ABAW 2022+) is selected, stopped and reported by the
mean F1 over the 8 classes; a 7-class run by ABAW 2020's 0.67 x F1 + 0.33 x accuracy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader, TensorDataset

from ferlit.data.readers.affwild2 import (
    FRAMES_DIR,
    annotation_dir,
    frame_file,
    write_annotation_file,
)
from ferlit.evaluation.evaluate import main as evaluate
from ferlit.evaluation.smoothing import criterion_by_window, smooth_predictions
from ferlit.training.callbacks.best import BestValidationSummary
from ferlit.training.cli import main as fit
from ferlit.training.module import ExpressionModule

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "backbone": "seresnet18",
    "backbone_kwargs": {"channels": [8, 16, 32, 64], "layers": [1] * 4},
}
MEAN_F1 = "abaw2022: mean F1 over 8 classes"

# Validation targets: 80 Neutral frames and 2 of each other class (8 classes, Other = 7).
TARGETS = np.array([0] * 80 + [c for c in range(1, 8) for _ in range(2)])


def predictions_by_round() -> list[np.ndarray]:
    """Three validations' predicted labels: the 2020 formula ranks round 0 first, mean F1 round 1.

    Round 0 gets every Neutral and Disgust..Fear right, the rest called Neutral: high accuracy,
    low mean F1. Round 1 gets every rare class right but calls 70 of the 80 Neutral frames Anger:
    low accuracy, high mean F1. Round 2 is worse than both by either score.
    """
    high_accuracy = TARGETS.copy()
    high_accuracy[np.isin(TARGETS, [1, 5, 6, 7])] = 0
    high_f1 = TARGETS.copy()
    high_f1[np.flatnonzero(TARGETS == 0)[:70]] = 1
    worse = np.ones_like(TARGETS)
    return [high_accuracy, high_f1, worse]


class ScriptedValidation(ExpressionModule):
    """The real module, whose validation predictions are :func:`predictions_by_round`'s."""

    rounds = predictions_by_round()
    done = 0

    def validation_step(self, batch, batch_idx: int) -> None:
        _, labels, samples = batch
        preds = torch.as_tensor(self.rounds[self.done][samples.numpy()])
        self.val_criterion.update(preds, labels)
        self.val_loss.update(torch.ones(len(labels)))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.done += 1


def loader(labels: np.ndarray, batch_size: int) -> DataLoader:
    n = len(labels)
    images = torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8)
    data = TensorDataset(images, torch.as_tensor(labels), torch.arange(n))
    return DataLoader(data, batch_size=batch_size)


def test_an_eight_class_run_keeps_the_checkpoint_with_the_best_mean_f1(
    tmp_path, capsys, monkeypatch
):
    rounds = predictions_by_round()
    abaw2020 = [
        0.67 * f1_score(TARGETS, p, average="macro", labels=range(8), zero_division=0)
        + 0.33 * accuracy_score(TARGETS, p)
        for p in rounds
    ]
    mean_f1 = [
        f1_score(TARGETS, p, average="macro", labels=range(8), zero_division=0) for p in rounds
    ]
    # The two scores disagree on the best validation: this run tells them apart.
    assert int(np.argmax(abaw2020)) == 0 and int(np.argmax(mean_f1)) == 1

    module = ScriptedValidation(num_classes=8, input_size=32, **TINY)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", monitor="val/criterion", mode="max", filename="best"
    )
    stopping = EarlyStopping(monitor="val/criterion", mode="max", patience=1)
    summary = BestValidationSummary()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=5,
        logger=False,
        callbacks=[checkpoint, stopping, summary],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    said: list[str] = []
    monkeypatch.setattr("ferlit.training.module.rank_zero_info", said.append)
    trainer.fit(module, loader(np.arange(8), 4), loader(TARGETS, len(TARGETS) // 2 + 1))

    assert said == [
        f"val/criterion = {MEAN_F1}; the best checkpoint by val/criterion, "
        "early stopping by val/criterion"
    ]
    # Two optimizer steps per epoch, one validation per epoch: rounds at steps 2, 4, 6. Early
    # stopping (patience 1) stopped after round 2, the first without a better mean F1.
    assert [step for step, _ in summary.history] == [2, 4, 6]
    np.testing.assert_allclose([score for _, score in summary.history], mean_f1, atol=1e-6)
    assert trainer.current_epoch == 3 and module.done == 3
    assert stopping.best_score.item() == pytest.approx(mean_f1[1])
    assert checkpoint.best_model_score.item() == pytest.approx(mean_f1[1])
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4

    report = json.loads((tmp_path / "checkpoints" / "best_validation.json").read_text())
    assert report["criterion"] == MEAN_F1 and report["monitor"] == "val/criterion"
    assert report["step"] == 4
    assert report["val/criterion"] == pytest.approx(mean_f1[1])
    assert report["val/f1"] == pytest.approx(mean_f1[1])
    assert report["val/abaw2020"] == pytest.approx(abaw2020[1])
    printed = capsys.readouterr().out
    assert f"criterion = {MEAN_F1}" in printed
    assert "0.67 F1 + 0.33 acc" in printed


def test_a_seven_class_run_is_selected_by_the_abaw2020_formula():
    module = ExpressionModule(num_classes=7, input_size=32, **TINY)
    assert (
        module.criterion_description == "abaw2020: 0.67 x mean F1 + 0.33 x accuracy over 7 classes"
    )


def write_eight_class_tree(root: Path, write_jpeg) -> Path:
    """An Aff-Wild2 copy in the ABAW 2024 layout: one train and one val video, every class."""
    rng = np.random.default_rng(0)
    for split, video in (("train", "10-60-1280x720"), ("val", "video2")):
        labels = [c % 8 for c in range(24)]
        write_annotation_file(
            annotation_dir(root, "abaw2024", split) / f"{video}.txt", labels, num_classes=8
        )
        for frame in range(1, len(labels) + 1):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            write_jpeg(root / FRAMES_DIR / video / frame_file(frame), image)
    return root


def test_an_eight_class_fit_and_its_evaluation_report_the_mean_f1(tmp_path, write_jpeg, capsys):
    affwild2 = write_eight_class_tree(tmp_path / "Aff-Wild2", write_jpeg)
    cli = fit(
        [
            *("--data.affwild2_dir", str(affwild2), "--data.affwild2_layout", "abaw2024"),
            *("--data.num_classes", "8", "--data.batch_size", "8", "--data.num_workers", "0"),
            *("--model.backbone", TINY["backbone"]),
            *("--model.backbone_kwargs", json.dumps(TINY["backbone_kwargs"])),
            *("--model.input_size", "32", "--model.lr_head", "0.01", "--model.lr_backbone", "0.01"),
            *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
            *("--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
            *("--trainer.logger.save_dir", str(tmp_path), "--trainer.logger.name", "run"),
            *("--trainer.default_root_dir", str(tmp_path), "--trainer.num_sanity_val_steps", "0"),
            *("--trainer.max_steps", "4", "--val_every_n_steps", "2"),
        ]
    )
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/criterion")]
    assert len(rows) == 2
    for row in rows:  # logged side by side; the criterion is the mean F1 alone
        assert float(row["val/criterion"]) == float(row["val/f1"])
        expected = 0.67 * float(row["val/f1"]) + 0.33 * float(row["val/acc"])
        assert float(row["val/abaw2020"]) == pytest.approx(expected, abs=1e-6)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    summary = json.loads((best.parent / "best_validation.json").read_text())
    assert summary["criterion"] == MEAN_F1
    capsys.readouterr()

    report = evaluate(
        [
            *("--ckpt", str(best), "--out", str(tmp_path / "eval")),
            *("--data.num_workers", "0", "--trainer.accelerator", "cpu"),
            *("--trainer.enable_progress_bar", "false"),
        ]
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report))
    assert (metrics["challenge"], metrics["criterion"]) == ("abaw2022", MEAN_F1)
    raw = metrics["raw"]
    target = np.array([c % 8 for c in range(24)])
    pred = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")["pred"].to_numpy()
    macro = f1_score(target, pred, average="macro", labels=range(8), zero_division=0)
    assert raw["criterion"] == pytest.approx(macro, abs=1e-12)
    assert raw["abaw2020"] == pytest.approx(0.67 * macro + 0.33 * accuracy_score(target, pred))
    printed = capsys.readouterr().out
    assert "criterion (abaw2022)" in printed and "0.67 F1 + 0.33 acc" in printed
    assert f"criterion = {MEAN_F1}\n" in printed


def test_the_abaw2024_experiment_is_the_papers_recipe_on_eight_classes(capsys):
    configs = []
    for name in ("cafarelli2020", "abaw2024"):
        with pytest.raises(SystemExit) as stop:
            fit(["--config", str(REPO / f"experiments/{name}.yaml"), "--print_config"])
        assert stop.value.code == 0
        configs.append(yaml.safe_load(capsys.readouterr().out))
    paper, current = configs

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out |= flat(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value
        return out

    paper, current = flat(paper), flat(current)
    differ = {k for k in paper.keys() | current.keys() if paper.get(k) != current.get(k)}
    assert differ == {"data.num_classes", "data.affwild2_layout", "trainer.logger.init_args.name"}
    assert (current["data.num_classes"], current["data.affwild2_layout"]) == (8, "abaw2024")
    assert current["trainer.logger.init_args.name"] == "abaw2024"
    assert current["checkpoint.monitor"] == current["early_stopping.monitor"] == "val/criterion"


def test_smoothing_windows_of_an_eight_class_model_are_scored_by_mean_f1():
    rng = np.random.default_rng(2)
    frames = np.tile(np.arange(1, 61), 2)
    videos = np.repeat(["a", "b"], 60)
    targets = np.repeat(rng.integers(0, 8, 12), 10)  # expressions lasting 10 frames
    probs = rng.dirichlet(np.ones(8), len(targets))
    probs[np.arange(len(targets)), targets] += 0.3  # a noisy model, better than chance
    by_window = criterion_by_window(videos, frames, probs, targets, (1, 5, 9))
    for window, score in by_window.items():
        pred = smooth_predictions(videos, frames, probs, window)
        macro = f1_score(targets, pred, average="macro", labels=range(8), zero_division=0)
        assert score == pytest.approx(macro, abs=1e-12), window
        assert score != pytest.approx(0.67 * macro + 0.33 * accuracy_score(targets, pred))
