"""Weights & Biases: what ferlit adds to Lightning's ``WandbLogger``.

Pick the logger per run with ``--config experiments/logger/wandb.yaml`` after the experiment's
config. Lightning's logger already records every ``val/*`` scalar at each validation; ferlit adds

* :class:`WandbValidation`: at each validation, a per-class table (F1, precision, recall,
  support) and the confusion matrix as W&B's confusion-matrix chart; and a run summary that holds
  the *best* validation, not the last. W&B's Bayesian sweeps rank a run by the summary value of
  the sweep's metric, and the paper keeps the checkpoint with the best ``val/criterion``: both must
  see the same number.
* :class:`WandbSaveConfig`: the whole resolved configuration in the run's config, one key per CLI
  option (``model.lr_head``) — the keys a sweep's parameters already use — and ``config.yaml``
  in the run's own folder, next to its checkpoints.
* :func:`sweep_checkpoint_dir`: under a sweep agent, a fixed ``checkpoint.dirpath`` gets the run's
  id appended, so agents running in parallel never write into each other's folders.

Nothing here needs a network: with ``WANDB_MODE=offline`` a run is written to
``<save_dir>/wandb/offline-run-*`` and ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import lightning.pytorch as pl
import numpy as np
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from ferlit.io import atomic_write
from ferlit.metrics import PER_CLASS_SCORES, per_class_scores, scores_from_confusion
from ferlit.training.callbacks.best import BestValidation

if TYPE_CHECKING:
    import wandb

#: W&B's own confusion-matrix chart (what ``wandb.plot.confusion_matrix`` draws). ferlit already
#: holds the counts, so it fills the chart's table directly instead of re-expanding them into one
#: prediction per frame (Aff-Wild2 val has ~400k).
CONFUSION_CHART = "wandb/confusion_matrix/v1"
PER_CLASS_COLUMNS = ["class", *PER_CLASS_SCORES]


def find_wandb_logger(trainer: pl.Trainer) -> WandbLogger | None:
    """The trainer's first ``WandbLogger``, or None when it logs elsewhere."""
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def run_dir(logger: WandbLogger) -> Path:
    """``<save_dir>/<project>/<run id>``: the folder Lightning checkpoints a W&B run into.

    ``ModelCheckpoint`` without a ``dirpath`` writes to ``<this>/checkpoints``. The run id is
    unique (a sweep agent hands each run its own), unlike a CSV logger's ``version_N``, which two
    processes starting at once on a shared disk can both pick.
    """
    return Path(logger.save_dir or ".") / str(logger.name) / str(logger.version)


def flat_config(config: dict, prefix: str = "") -> dict:
    """``{"model": {"lr_head": 1e-3}}`` -> ``{"model.lr_head": 1e-3}``: keys as the CLI spells them.

    A sweep agent stores its parameters under these same keys (``model.lr_head``), so the run's
    config shows each option once, with the value that reached the model.
    """
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def sweep_checkpoint_dir(dirpath: str | None) -> str | None:
    """``dirpath/<run id>`` when run by a W&B sweep agent with a fixed ``checkpoint.dirpath``.

    The agent sets ``WANDB_SWEEP_ID`` and a fresh ``WANDB_RUN_ID`` in each run's environment.
    Without a fixed ``dirpath`` nothing changes: Lightning already checkpoints a W&B run into
    :func:`run_dir`.
    """
    run_id = os.environ.get("WANDB_RUN_ID")
    if dirpath is None or not os.environ.get("WANDB_SWEEP_ID") or not run_id:
        return dirpath
    return str(Path(dirpath) / run_id)


def per_class_rows(confusion: np.ndarray, class_names: tuple[str, ...]) -> list[list]:
    """One row per class: name, F1, precision, recall and support of one validation
    (:func:`ferlit.metrics.per_class_scores`)."""
    table = per_class_scores(scores_from_confusion(confusion), class_names)
    return [[name, *row.values()] for name, row in table.items()]


def confusion_chart(
    confusion: np.ndarray, class_names: tuple[str, ...], title: str
) -> wandb.plot.CustomChart:
    """W&B's confusion-matrix chart from counts (rows = target, columns = prediction)."""
    import wandb

    counts = np.asarray(confusion)
    rows = [
        [actual, predicted, int(counts[i, j])]
        for i, actual in enumerate(class_names)
        for j, predicted in enumerate(class_names)
    ]
    table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
    fields = {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"}
    return wandb.plot_table(CONFUSION_CHART, table, fields, {"title": title})


class WandbValidation(pl.Callback):
    """With a ``WandbLogger``: per-class table and confusion matrix at each validation, and the
    best validation as the run summary. Without one it does nothing, so ``ferlit.fit`` always
    adds it.

    The summary gets every ``val/*`` scalar of the validation with the best ``monitor``
    (:class:`~ferlit.training.callbacks.best.BestValidation`, as ``best_validation.json``; so F1,
    accuracy and the per-class F1 shown next to ``val/criterion`` are the selected model's),
    ``val/best_step``, the optimizer step it came from, and ``criterion``, which score
    ``val/criterion`` is (the run's challenge's, e.g. ``abaw2022: mean F1 over 8 classes``;
    :data:`ferlit.metrics.CRITERIA`). The per-step history keeps every value.

    Args:
        monitor: the score that picks the best validation (the paper's: ``val/criterion``).
        mode: whether higher (``max``) or lower (``min``) is better.
    """

    def __init__(self, monitor: str = "val/criterion", mode: Literal["max", "min"] = "max") -> None:
        self.tracker = BestValidation(monitor, mode)

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = find_wandb_logger(trainer)
        scores = getattr(pl_module, "last_val_scores", None)
        if logger is None or trainer.sanity_checking or not scores:
            return
        step = trainer.global_step
        names = pl_module.class_names
        confusion = pl_module.last_val_confusion.numpy()
        logger.log_metrics(
            {
                "val/per_class": _table(PER_CLASS_COLUMNS, per_class_rows(confusion, names)),
                "val/confusion_matrix": confusion_chart(
                    confusion, names, f"Validation at step {step}"
                ),
            },
            step=step,
        )
        self.tracker.update(step, scores)
        # Lightning has just logged this validation, which made it the summary; put the best back.
        summary = {**self.tracker.best, "val/best_step": self.tracker.best_step}
        criterion = getattr(pl_module, "criterion_description", None)
        if criterion is not None:
            summary["criterion"] = criterion
        logger.experiment.summary.update(summary)

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.tracker.load_state_dict(state_dict)


def _table(columns: list[str], rows: list[list]) -> wandb.Table:
    import wandb

    return wandb.Table(columns=columns, data=rows)


class WandbSaveConfig(SaveConfigCallback):
    """Lightning's ``SaveConfigCallback``, made right for W&B runs.

    Lightning writes ``config.yaml`` to ``trainer.log_dir``, which for a ``WandbLogger`` is its
    ``save_dir`` — shared by every run, so the second run of a sweep would refuse to start (it
    finds the first one's file). With a ``WandbLogger`` the file goes to :func:`run_dir` instead
    (an existing one, i.e. a resumed run's, is kept unless ``overwrite``), and the whole resolved
    config goes into the W&B run's config, flattened by :func:`flat_config`. Other loggers get
    Lightning's behaviour unchanged.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = find_wandb_logger(trainer)
        if logger is not None:
            self.save_to_log_dir = False
            # Lightning logs the module's and the DataModule's init arguments as they are named
            # there (lr_head, batch_size) once fit starts, after this hook: every option would be
            # in the run's config twice, unprefixed and as save_config's model.lr_head (issue
            # 16). This logger's config is save_config's alone; other loggers keep theirs.
            logger.log_hyperparams = _config_logged_by_save_config
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = find_wandb_logger(trainer)
        if logger is None:
            return
        text = self.parser.dump(self.config, skip_none=False)
        logger.experiment.config.update(flat_config(yaml.safe_load(text)), allow_val_change=True)
        path = run_dir(logger) / self.config_filename
        if self.overwrite or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "w", encoding="utf-8") as file:  # whole or absent
                file.write(text)


def _config_logged_by_save_config(params, *args, **kwargs) -> None:
    """A W&B logger's ``log_hyperparams`` under :class:`WandbSaveConfig`: nothing, as its
    ``save_config`` has put every option in the run's config, one key each."""
