"""Callbacks Lightning lacks: the end-of-run summary of the best validation, and a stop on
SIGTERM or Ctrl-C that a resumed run continues exactly."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.table import Table

from ferlit.io import atomic_write
from ferlit.training.runs import is_debug_run


class BestValidationSummary(pl.Callback):
    """Remembers the validation with the best ``val/criterion`` and reports it at the end.

    The paper keeps the checkpoint with the best validation criterion; the user wants to see, at
    the end of a run, that score, the optimizer step it came from, and its per-class F1 — written
    to ``best_validation.json`` beside the run's checkpoints and printed as a table. Both name the
    score ``val/criterion`` is (``"criterion": "abaw2022: mean F1 over 8 classes"`` for an 8-class
    run; :data:`ferlit.metrics.CRITERIA`), since it differs between challenges.
    """

    def __init__(self, monitor: str = "val/criterion") -> None:
        self.monitor = monitor
        self.best: dict[str, float] | None = None
        self.best_step: int | None = None
        self.history: list[tuple[int, float]] = []
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
        scores = dict(pl_module.last_val_scores)
        self.history.append((trainer.global_step, scores[self.monitor]))
        if self.best is None or scores[self.monitor] > self.best[self.monitor]:
            self.best, self.best_step = scores, trainer.global_step

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "history": self.history,
            "damaged_images": list(self.damaged),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]
        self.best_step = state_dict["best_step"]
        self.history = [tuple(h) for h in state_dict["history"]]
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
        if self.best is None or not trainer.is_global_zero or is_debug_run(trainer):
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        criterion = getattr(pl_module, "criterion_description", None)
        report = {"step": self.best_step, "monitor": self.monitor}
        if criterion is not None:
            report["criterion"] = criterion
        report.update({**self.best, "history": self.history, "damaged_images": damaged})
        if checkpoint is not None and getattr(checkpoint, "best_model_path", ""):
            report["checkpoint"] = os.path.abspath(checkpoint.best_model_path)
        with atomic_write(log_dir / "best_validation.json", "w", encoding="utf-8") as file:
            file.write(json.dumps(report, indent=2) + "\n")
        table = Table(
            title=f"Best validation: {self.monitor} {self.best[self.monitor]:.4f} at step {self.best_step}"
        )
        table.add_column("class")
        table.add_column("F1", justify="right")
        for name in pl_module.class_names:
            table.add_row(name, f"{self.best[f'val/f1_{name.lower()}']:.4f}")
        table.add_section()
        rows = [("f1", "macro-F1"), ("acc", "acc"), ("criterion", "criterion")]
        if criterion is not None and not criterion.startswith("abaw2020"):
            rows.insert(2, ("abaw2020", "0.67 F1 + 0.33 acc"))  # the 2020 formula, to compare
        for key, label in rows:
            if f"val/{key}" in self.best:
                table.add_row(label, f"{self.best[f'val/{key}']:.4f}")
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


class Preemption(pl.Callback):
    """On SIGTERM (or SLURM's requeue signal), stop at the next optimizer step and save ``last.ckpt``.

    Lightning's own handling stops after whichever micro-batch or validation batch comes next.
    With gradient accumulation the gradients summed so far are not in a checkpoint, and a
    validation cut short restarts without its metric states: either changes what the resumed
    run computes. This callback holds the signal until the optimizer step, and that step's
    validation if one is due, are complete, then hands it to Lightning, which stops the loop
    (``SIGTERMException``) at that boundary; the callback then writes ``last.ckpt`` beside the
    run's checkpoints, where ``--ckpt_path last`` finds it. With ``SLURMEnvironment(auto_requeue=
    True)`` the requeue signal is held the same way, and Lightning's requeue handler (which saves
    its ``hpc_ckpt_N.ckpt`` and runs ``scontrol requeue``) runs once the run has stopped there.
    A first Ctrl-C (SIGINT) is held the same way (Lightning alone ends with exit 1 and no
    resumable checkpoint); a second one aborts at once. Debug runs write no ``last.ckpt``.
    """

    def __init__(self) -> None:
        self.held: list[int] = []
        self.saved: str | None = None
        self._handlers: dict[int, object] = {}
        self._release_after_validation = False
        self._interrupts = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning has installed its handlers by now (Trainer._run, before the loops run).
        if threading.current_thread() is not threading.main_thread():
            return
        signums = [signal.SIGTERM]
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            signums.append(environment.requeue_signal)
        for signum in signums:
            self._handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._hold)
        self._handlers[signal.SIGINT] = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._interrupt)
        self._pid = os.getpid()

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        if signum not in self.held:
            self.held.append(signum)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        """Ctrl-C: the first stops like SIGTERM; a second aborts at once (KeyboardInterrupt).

        DataLoader workers, forked after this handler was installed, inherit it and get the
        terminal's Ctrl-C too: they ignore it (the training process stops them), instead of
        dying on a KeyboardInterrupt that would end the run with a worker error.
        """
        if os.getpid() != getattr(self, "_pid", os.getpid()):
            return
        self._interrupts += 1
        if self._interrupts > 1:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self._hold(signum, frame)
        print(
            "\nCtrl-C: stopping after this optimizer step with a resumable last.ckpt "
            "(Ctrl-C again to abort at once, losing the work since the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_interrupt()

    def _restore_interrupt(self) -> None:
        handler = self._handlers.pop(signal.SIGINT, None)
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.held or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        loop = trainer.fit_loop.epoch_loop
        if loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            self._release_after_validation = True  # validation runs right after this hook
        else:
            self._release()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._release_after_validation and not trainer.sanity_checking:
            self._release()

    def _release(self) -> None:
        """Give SIGTERM to Lightning: it raises ``SIGTERMException`` at the end of this step."""
        self._release_after_validation = False
        handler = self._handlers.get(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, None)

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        self._restore_interrupt()
        if not isinstance(exception, SIGTERMException):
            return
        checkpoint = trainer.checkpoint_callback
        if (
            isinstance(checkpoint, ModelCheckpoint)
            and checkpoint.dirpath is not None
            and not is_debug_run(trainer)
        ):
            name = checkpoint.CHECKPOINT_NAME_LAST + checkpoint.FILE_EXTENSION
            self.saved = os.path.join(checkpoint.dirpath, name)
            trainer.save_checkpoint(self.saved, weights_only=False)  # the whole state
        for signum in self.held:
            handler = self._handlers.get(signum)
            if signum != signal.SIGTERM and callable(handler):
                handler(signum, None)
