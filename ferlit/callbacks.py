"""Callbacks Lightning lacks: the end-of-run summary of the best validation."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table


class BestValidationSummary(pl.Callback):
    """Remembers the validation with the best ``val/criterion`` and reports it at the end.

    The paper keeps the checkpoint with the best validation criterion; the user wants to see, at
    the end of a run, that score, the optimizer step it came from, and its per-class F1 — written
    to ``best_validation.json`` in the run's log folder and printed as a table.
    """

    def __init__(self, monitor: str = "val/criterion") -> None:
        self.monitor = monitor
        self.best: dict[str, float] | None = None
        self.best_step: int | None = None
        self.history: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not getattr(pl_module, "last_val_scores", None):
            return
        scores = dict(pl_module.last_val_scores)
        self.history.append((trainer.global_step, scores[self.monitor]))
        if self.best is None or scores[self.monitor] > self.best[self.monitor]:
            self.best, self.best_step = scores, trainer.global_step

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]
        self.best_step = state_dict["best_step"]
        self.history = [tuple(h) for h in state_dict["history"]]

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best is None:
            return
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        report = {"step": self.best_step, **self.best, "history": self.history}
        (log_dir / "best_validation.json").write_text(json.dumps(report, indent=2) + "\n")
        table = Table(
            title=f"Best validation: {self.monitor} {self.best[self.monitor]:.4f} at step {self.best_step}"
        )
        table.add_column("class")
        table.add_column("F1", justify="right")
        for name in pl_module.class_names:
            table.add_row(name, f"{self.best[f'val/f1_{name.lower()}']:.4f}")
        table.add_section()
        for key in ("f1", "acc", "criterion"):
            table.add_row("macro-F1" if key == "f1" else key, f"{self.best[f'val/{key}']:.4f}")
        Console().print(table)
