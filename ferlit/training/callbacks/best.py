"""The best validation of a run: remembered at each validation, written and printed at its end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.table import Table

from ferlit.expressions import metric_key
from ferlit.io import write_json
from ferlit.metrics import challenge_of, summary_rows
from ferlit.training.runs import is_debug_run


class BestValidation:
    """The validation with the best ``monitor`` value so far, and the history of that value.

    The one definition of "the best validation" in ferlit: the end-of-run summary
    (:class:`BestValidationSummary`, ``best_validation.json``) and the W&B run summary
    (:class:`~ferlit.training.callbacks.wandb_logging.WandbValidation`) each keep one, so both
    report the same validation as the checkpoint callback selects (the first of equal bests, as
    ``ModelCheckpoint`` keeps the first). Its state goes into the checkpoint of the callback
    holding it, so a resumed run keeps the best of the validations before the stop.

    Args:
        monitor: the score that picks the best validation (the paper's: ``val/criterion``).
        mode: whether higher (``max``) or lower (``min``) is better.
    """

    def __init__(self, monitor: str = "val/criterion", mode: Literal["max", "min"] = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.best: dict[str, float] | None = None
        self.best_step: int | None = None
        self.history: list[tuple[int, float]] = []

    def update(self, step: int, scores: dict[str, float]) -> bool:
        """Record the validation at optimizer step ``step`` (``scores``: every ``val/*`` scalar);
        True when it is the new best."""
        value = scores[self.monitor]
        self.history.append((step, value))
        if self.best is not None:
            best = self.best[self.monitor]
            if not (value > best if self.mode == "max" else value < best):
                return False
        self.best, self.best_step = dict(scores), step
        return True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]
        self.best_step = state_dict["best_step"]
        self.history = [tuple(h) for h in state_dict.get("history", [])]


class BestValidationSummary(pl.Callback):
    """Remembers the validation with the best ``val/criterion``, prints one line after each
    validation (:func:`~ferlit.training.callbacks.progress.validation_line`: step, score,
    macro-F1, accuracy, best so far) and reports the best at the end.

    The paper keeps the checkpoint with the best validation criterion; the user wants to see, at
    the end of a run, that score, the optimizer step it came from, and its per-class F1 — written
    to ``best_validation.json`` beside the run's checkpoints and printed as a table. Both name the
    score ``val/criterion`` is (``"criterion": "abaw2022: mean F1 over 8 classes"`` for an 8-class
    run; :data:`ferlit.metrics.CRITERIA`), since it differs between challenges.
    """

    def __init__(self, monitor: str = "val/criterion") -> None:
        self.monitor = monitor
        self.tracker = BestValidation(monitor)
        self.damaged: dict[str, None] = {}  # damaged training image files skipped, in order

    #: How many damaged image paths the summary names (the count covers them all).
    DAMAGED_NAMES = 10

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Note the damaged image files the training set skipped in this batch (its 4th element,
        ``EpochSeededDataset``): sample ``s`` with ``k`` skipped replaced samples s-1 .. s-k."""
        if not (isinstance(batch, list | tuple) and len(batch) > 3):
            return
        counts = batch[3]  # a host list (ExpressionDataModule.on_before_batch_transfer)
        counts = counts.tolist() if torch.is_tensor(counts) else counts
        if not any(counts):
            return
        dataset = trainer.train_dataloader.dataset
        for sample, skipped in zip(batch[2].tolist(), counts, strict=True):
            for k in range(skipped, 0, -1):
                self.damaged[dataset.image_path((sample - k) % len(dataset))] = None

    def _damaged_report(self) -> dict:
        """How many distinct damaged files training skipped, over all processes, and the first
        ``DAMAGED_NAMES`` of them (every rank calls this: a collective under DDP)."""
        names = list(self.damaged)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, names)
            names = list(dict.fromkeys(n for part in gathered for n in part))
        return {"count": len(names), "first": names[: self.DAMAGED_NAMES]}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not getattr(pl_module, "last_val_scores", None):
            return
        self.tracker.update(trainer.global_step, pl_module.last_val_scores)
        if trainer.is_global_zero:
            from ferlit.training.callbacks.progress import validation_line  # it imports this

            line = validation_line(
                trainer.global_step,
                pl_module.last_val_scores,
                self.tracker.best[self.monitor],
                self.tracker.best_step,
                self.monitor,
            )
            print(line, flush=True)

    @property
    def history(self) -> list[tuple[int, float]]:
        """(optimizer step, ``monitor`` value) of every validation of the run."""
        return self.tracker.history

    def state_dict(self) -> dict:
        return {**self.tracker.state_dict(), "damaged_images": list(self.damaged)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tracker.load_state_dict(state_dict)
        self.damaged = dict.fromkeys(state_dict.get("damaged_images", []))

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        # A stop on SIGTERM/SIGINT/requeue (Preemption) ends the run for now: report as at its end.
        if isinstance(exception, SIGTERMException):
            self.on_fit_end(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Beside the run's checkpoints: that folder is the run's own under every logger (a W&B
        # logger's log_dir is shared by all its runs). Every rank asks for ``trainer.log_dir``,
        # a broadcast under DDP; only rank 0 writes.
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.dirpath:
            log_dir = Path(checkpoint.dirpath)
        damaged = self._damaged_report()
        best, best_step = self.tracker.best, self.tracker.best_step
        if best is None or not trainer.is_global_zero or is_debug_run(trainer):
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        criterion = getattr(pl_module, "criterion_description", None)
        report = {"step": best_step, "monitor": self.monitor}
        if criterion is not None:
            report["criterion"] = criterion
        report.update({**best, "history": self.history, "damaged_images": damaged})
        if checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
            report["checkpoint"] = os.path.abspath(checkpoint.best_model_path)
        write_json(log_dir / "best_validation.json", report)
        table = Table(
            title=f"Best validation: {self.monitor} {best[self.monitor]:.4f} at step {best_step}"
        )
        table.add_column("class")
        table.add_column("F1", justify="right")
        for name in pl_module.class_names:
            table.add_row(name, f"{best[f'val/f1_{metric_key(name)}']:.4f}")
        table.add_section()
        for key, label in summary_rows(challenge_of(len(pl_module.class_names))):
            if f"val/{key}" in best:
                table.add_row(label, f"{best[f'val/{key}']:.4f}")
        console = Console()
        console.print(table)
        if criterion is not None:
            console.print(f"criterion = {criterion}", soft_wrap=True, highlight=False)
        if damaged["count"]:
            console.print(
                f"damaged training image files skipped: {damaged['count']} (first: "
                f"{', '.join(damaged['first'])}); find them all with python -m ferlit.data check",
                soft_wrap=True,
                highlight=False,
            )
