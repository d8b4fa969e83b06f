"""What a researcher sees while training: one bar over the whole run, one line per validation.

Lightning's :class:`~lightning.pytorch.callbacks.RichProgressBar` counts micro-batches of one
epoch ("Epoch 0/-2" when only ``max_steps`` bounds the run) and shows ``train/loss`` and
``v_num``; the paper's run is bounded and validated in *optimizer* steps (3920 of them between
validations, ``--val_every_n_steps``). :class:`StepProgressBar` is one bar over the whole run in
optimizer steps with the time left, the latest ``val/criterion`` and the best so far;
:func:`validation_line` is the line :class:`~ferlit.training.callbacks.best.BestValidationSummary`
prints after every validation, bar or no bar (``--trainer.enable_progress_bar false``).
"""

from __future__ import annotations

import math
import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

from ferlit.training.callbacks.best import BestValidation, BestValidationSummary


def total_steps(trainer: pl.Trainer) -> float:
    """The run's optimizer steps: ``trainer.max_steps`` when set, else ``max_epochs`` x the
    optimizer steps of an epoch (Lightning's ``estimated_stepping_batches``, the smaller of the
    two when both are set); ``inf`` for a run bounded by neither."""
    total = trainer.estimated_stepping_batches
    return total if math.isinf(total) else int(total)


def validation_line(
    step: int,
    scores: dict[str, float],
    best_value: float,
    best_step: int,
    monitor: str = "val/criterion",
) -> str:
    """The line printed after a validation at optimizer step ``step`` (``scores``: its ``val/*``
    scalars, :meth:`ExpressionModule.on_validation_epoch_end`), with the best ``monitor`` so far
    and the step it came from; numbers to 4 decimals, as the best-validation table prints them."""
    return (
        f"validation at step {step}: {monitor} {scores[monitor]:.4f}, "
        f"macro-F1 {scores['val/f1']:.4f}, accuracy {scores['val/acc']:.4f}; "
        f"best {monitor} {best_value:.4f} at step {best_step}"
    )


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, over the whole run in optimizer steps.

    The training task is created once (not reset per epoch), its total is :func:`total_steps`
    and its completed count ``trainer.global_step``, so the time left (Rich's estimate from the
    recent speed) is the run's, not the epoch's. Beside it: ``train/loss``, the latest ``monitor``
    value and the best so far with its step, the best read from the run's
    :class:`~ferlit.training.callbacks.best.BestValidationSummary` (which keeps it across a
    resume) when there is one.

    The values beside the bar are read at most once every :attr:`METRICS_INTERVAL` seconds
    during training: reading ``train/loss`` on the host waits for the GPU to finish all the work
    queued, which at a fed GPU's pace (~7.5 ms a micro-batch of 64, issue 17) would cost a large
    part of its time. For the same reason the module logs ``train/loss`` without ``prog_bar``
    (Lightning would read it after every micro-batch) and this bar takes it from the trainer's
    ``callback_metrics``.
    """

    #: Seconds between two reads of the values beside the bar while training.
    METRICS_INTERVAL = 1.0

    def __init__(self, *args, monitor: str = "val/criterion", mode: str = "max", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.metrics_interval = self.METRICS_INTERVAL
        self._metrics_read_at = -math.inf  # time.monotonic() of the last read
        self.monitor = monitor
        self.mode = mode
        self.latest: tuple[float, int] | None = None  # the last validation's value and step
        self.tracker = BestValidation(monitor, mode)  # used when the run has no summary

    def _train_description(self, trainer: pl.Trainer) -> str:
        return f"Training (epoch {trainer.current_epoch}, steps)"

    def _initialize_train_progress_bar_id(self) -> None:
        self.train_progress_bar_id = self._add_task(
            total_steps(self.trainer), self._train_description(self.trainer)
        )
        self._update(self.train_progress_bar_id, self.trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        else:
            self.progress.update(
                self.train_progress_bar_id, description=self._train_description(trainer)
            )
        self.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # a resumed run starts mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        now = time.monotonic()
        if now - self._metrics_read_at >= self.metrics_interval:
            self._metrics_read_at = now
            self._update_metrics(trainer, pl_module)
        self.refresh()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scores = getattr(pl_module, "last_val_scores", None)
        if trainer.state.fn == "fit" and not trainer.sanity_checking and scores:
            self.latest = (scores[self.monitor], trainer.global_step)
            if not any(isinstance(c, BestValidationSummary) for c in trainer.callbacks):
                self.tracker.update(trainer.global_step, scores)
        super().on_validation_end(trainer, pl_module)

    def best(self, trainer: pl.Trainer) -> tuple[float, int] | None:
        """The best ``monitor`` value so far and its step: the run's tracker's, or the latest
        validation's when the tracker has not seen it yet (callbacks run in no set order)."""
        tracker = next(
            (c.tracker for c in trainer.callbacks if isinstance(c, BestValidationSummary)),
            self.tracker,
        )
        best = None if tracker.best is None else (tracker.best[self.monitor], tracker.best_step)
        if self.latest is not None and math.isfinite(self.latest[0]):
            value = self.latest[0]
            if best is None or (value > best[0] if self.mode == "max" else value < best[0]):
                best = self.latest
        return best

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: not a score
        loss = trainer.callback_metrics.get("train/loss")  # logged without prog_bar (module.py)
        if loss is not None:
            items = {"train/loss": float(loss), **items}
        if self.latest is not None:
            items[self.monitor] = f"{self.latest[0]:.4f}"
            best = self.best(trainer)
            if best is not None:
                items["best"] = f"{best[0]:.4f} (step {best[1]})"
        return items
