"""A stop on SIGTERM, SLURM's requeue signal or Ctrl-C that a resumed run continues exactly.

Lightning's own handling stops after whichever micro-batch or validation batch comes next;
:class:`Preemption` moves the stop to the next optimizer-step boundary (after that step's
validation, if one is due) and writes ``last.ckpt`` there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ferlit.training.runs import is_debug_run


def validation_follows(trainer: pl.Trainer) -> bool:
    """Whether Lightning runs a validation right after the training batch that just ended
    (called from ``on_train_batch_end``).

    Lightning decides this in a private method of its training loop,
    ``_TrainingEpochLoop._should_check_val_fx`` (validation every N batches or steps, at the end of
    an epoch, on a time interval, or when stopping early); no public API tells a callback, and
    repeating those rules here would drift from Lightning's. ``FerlitCheckpoint`` and
    :class:`Preemption` both need the answer, and ask here only.
    """
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


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
        if validation_follows(trainer):
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
