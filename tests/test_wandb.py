"""Training with the W&B logger, offline: what the run's local files hold for ``wandb sync``.

The offline run is read back with W&B's own reader of its ``.wandb`` transaction log
(``wandb leet inspect --json``), which is what ``wandb sync`` replays.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from lightning.pytorch.loggers import WandbLogger

from ferlit.training.callbacks.best import BestValidationSummary
from ferlit.training.callbacks.wandb_logging import WandbValidation, per_class_rows
from ferlit.training.cli import main

REPO = Path(__file__).resolve().parent.parent
WANDB = str(Path(sys.executable).parent / "wandb")


def tiny_wandb_run(sample, save_dir: Path, *extra: str) -> list[str]:
    """experiments/sample.yaml with the W&B logger, shrunk to a few CPU steps."""
    return [
        "--config",
        str(REPO / "experiments/sample.yaml"),
        "--config",
        str(REPO / "experiments/logger/wandb.yaml"),
        f"--data.affwild2_dir={sample.affwild2_dir}",
        f"--data.expw_dir={sample.expw_dir}",
        "--model.backbone_kwargs",
        '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}',
        "--model.input_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=3",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *extra,
    ]


def offline_runs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))


def logged_in_order(tables) -> list[Path]:
    """Table files (``<key>_<history row>_<hash>.table.json``) in the order they were logged."""
    return sorted(tables, key=lambda path: int(path.name.rsplit("_", 2)[-2]))


def inspect(run: Path) -> tuple[dict, list[dict]]:
    """(state, records) of an offline run: ``wandb leet inspect`` --summary and record by record."""
    summary = subprocess.run(
        [WANDB, "leet", "inspect", "--summary", "--json", str(run)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    records = subprocess.run(
        [WANDB, "leet", "inspect", "--json", str(run)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(summary.stdout), [json.loads(line) for line in records.stdout.splitlines()]


def test_fit_writes_an_offline_run_with_history_config_tables_and_best_summary(
    tiny_sample, tmp_path, wandb_offline
):
    import wandb

    save_dir = tmp_path / "runs"
    cli = main(
        tiny_wandb_run(
            tiny_sample,
            save_dir,
            "--model.lr_head=0.02",
            "--trainer.max_steps=6",
            "--val_every_n_steps=2",
        )
    )
    run_id = cli.trainer.logger.version
    last_confusion = cli.model.last_val_confusion.numpy()
    wandb.finish()

    (run,) = offline_runs(save_dir)
    state, records = inspect(run)
    assert state["run_id"] == run_id and state["exit_code"] == 0
    assert state["name"] == "sample"  # the experiment's logger name, kept by the W&B logger
    assert state["project"] == "ferlit" and state["tags"] == ["abaw"]

    # The whole resolved config, one key per CLI option, with the values the run used.
    config = state["config"]
    assert config["model.lr_head"] == 0.02
    assert config["model.lr_backbone"] == 0.05  # from sample.yaml
    assert config["data.batch_size"] == 4
    assert config["trainer.max_steps"] == 6
    assert config["val_every_n_steps"] == 2
    assert config["checkpoint.monitor"] == "val/criterion"
    assert config["trainer.logger.class_path"] == "lightning.pytorch.loggers.WandbLogger"
    # each option once: not also under Lightning's unprefixed hyperparameter names (lr_head)
    top_level = {k for k in config if "." not in k and not k.startswith("_")}
    assert top_level == {"seed_everything", "val_every_n_steps", "ckpt_path"}

    # The val/criterion history: one row per validation, at its optimizer step, with the
    # values the run computed (the end-of-run summary callback kept them too).
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    validations = [h for h in history if "val/criterion" in h]
    (summary,) = [c for c in cli.trainer.callbacks if isinstance(c, BestValidationSummary)]
    expected = summary.history  # (step, criterion) of each validation
    assert [(h["trainer/global_step"], h["val/criterion"]) for h in validations] == [
        (step, pytest.approx(value)) for step, value in expected
    ]
    assert [step for step, _ in expected] == [2, 4, 6]
    assert all(f"val/f1_{name}" in validations[0] for name in ("neutral", "fear", "surprise"))

    # A per-class table and a confusion-matrix chart at each validation.
    tables = [h for h in history if "val/per_class" in str(h)]
    assert [h["trainer/global_step"] for h in tables] == [2, 4, 6]
    media = run / "files" / "media" / "table" / "val"
    per_class = logged_in_order(media.glob("per_class_*.table.json"))
    confusion = logged_in_order(media.glob("confusion_matrix_table_*.table.json"))
    assert len(per_class) == len(confusion) == 3
    last_table = json.loads(per_class[-1].read_text())
    assert last_table["columns"] == ["class", "f1", "precision", "recall", "support"]
    assert last_table["data"] == per_class_rows(last_confusion, cli.model.class_names)
    cells = json.loads(confusion[-1].read_text())
    assert cells["columns"] == ["Actual", "Predicted", "nPredictions"]
    names = cli.model.class_names
    assert len(cells["data"]) == 49
    for actual, predicted, count in cells["data"]:
        assert count == last_confusion[names.index(actual), names.index(predicted)]
    assert sum(c for _, _, c in cells["data"]) == 12  # 3 validation batches of 4 frames

    # The summary is the best validation (first of the highest), not the last one.
    best_step, best = max(expected, key=lambda sv: sv[1])
    assert state["summary"]["val/criterion"] == pytest.approx(best)
    assert state["summary"]["val/best_step"] == best_step

    # config.yaml and the checkpoints in the run's own folder.
    folder = save_dir / "ferlit" / run_id
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["model"]["lr_head"] == 0.02
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert Path(cli.trainer.checkpoint_callback.best_model_path).parent == folder / "checkpoints"


def test_summary_holds_the_best_validation_not_the_last(tmp_path, wandb_offline):
    """Bayesian sweeps rank runs by their summary; the last value must not replace the best."""
    import wandb

    logger = WandbLogger(project="ferlit", save_dir=str(tmp_path))
    callback = WandbValidation()
    names = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
    confusion = torch.eye(7, dtype=torch.int64) * 3
    module = SimpleNamespace(
        class_names=names,
        last_val_confusion=confusion,
        last_val_scores={},
        criterion_description="abaw2022: mean F1 over 8 classes",
    )
    trainer = SimpleNamespace(loggers=[logger], sanity_checking=False, global_step=0)

    def validate(step: int, criterion: float, f1: float) -> None:
        trainer.global_step = step
        module.last_val_scores = {"val/criterion": criterion, "val/f1": f1}
        logger.log_metrics(module.last_val_scores, step=step)  # what Lightning logs first
        callback.on_validation_end(trainer, module)

    validate(100, 0.30, 0.20)
    validate(200, 0.50, 0.40)
    validate(300, 0.40, 0.35)
    summary = logger.experiment.summary
    assert summary["val/criterion"] == 0.5 and summary["val/best_step"] == 200
    assert summary["val/f1"] == 0.4  # the best validation's, not the last one's 0.35

    # Resumed from a checkpoint: the best so far is restored, a worse validation leaves it.
    resumed = WandbValidation()
    resumed.load_state_dict(callback.state_dict())
    callback = resumed
    validate(400, 0.45, 0.30)
    run_dir = Path(logger.experiment.dir).parent
    wandb.finish()

    state, _ = inspect(run_dir)
    assert state["summary"]["val/criterion"] == 0.5
    assert state["summary"]["val/f1"] == 0.4
    assert state["summary"]["val/best_step"] == 200
    assert state["summary"]["criterion"] == "abaw2022: mean F1 over 8 classes"


def test_one_best_validation_tracker_for_the_summary_and_wandb():
    from ferlit.training.callbacks.best import BestValidation

    summary, wandb_callback = BestValidationSummary(), WandbValidation()
    assert type(summary.tracker) is type(wandb_callback.tracker) is BestValidation
    tracker = BestValidation()
    for step, criterion in ((2, 0.3), (4, 0.5), (6, 0.5), (8, 0.4)):
        tracker.update(step, {"val/criterion": criterion, "val/f1": criterion / 2})
    # the first of equal bests, as ModelCheckpoint keeps it; every value in the history
    assert tracker.best_step == 4 and tracker.best == {"val/criterion": 0.5, "val/f1": 0.25}
    assert tracker.history == [(2, 0.3), (4, 0.5), (6, 0.5), (8, 0.4)]
    resumed = BestValidation()
    resumed.load_state_dict(tracker.state_dict())
    assert not resumed.update(10, {"val/criterion": 0.45, "val/f1": 0.1})
    assert resumed.best_step == 4 and len(resumed.history) == 5
    lowest = BestValidation("val/loss", mode="min")
    assert lowest.update(1, {"val/loss": 2.0}) and lowest.update(2, {"val/loss": 1.0})
    assert not lowest.update(3, {"val/loss": 1.5}) and lowest.best_step == 2
