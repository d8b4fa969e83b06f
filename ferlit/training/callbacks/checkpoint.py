"""The checkpoint callback of a ferlit run: ``last.ckpt`` that is the last state, kept across resumes.

Lightning's ``ModelCheckpoint``, plus ``last.ckpt`` rewritten after *every* validation (Lightning
2.6 rewrites it only when a top-k checkpoint is written, i.e. on an improvement, so a kill lost
everything since the last improvement) and, with ``last_every_n_steps``, every N optimizer steps;
a resumed run keeps its best score and top-k list whatever the working directory (Lightning drops
them when the checkpoint's recorded ``dirpath`` string differs from the current one, e.g.
relative then absolute). The writes themselves are crash-safe
(:class:`ferlit.training.runs.AtomicCheckpointIO`).
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from ferlit.errors import ConfigError
from ferlit.training.callbacks.preemption import validation_follows
from ferlit.training.runs import is_debug_run, same_folder


class FerlitCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the last state, and whose bookkeeping survives
    a resume from any working directory.

    Args:
        last_every_n_steps: also rewrite ``last.ckpt`` every N optimizer steps (0: only after
            each validation), so that a hard kill loses at most N steps. A step followed by a
            validation is saved after that validation, like a stop on SIGTERM.
        **kwargs: Lightning's ``ModelCheckpoint`` options.
    """

    def __init__(self, *args: Any, last_every_n_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if last_every_n_steps < 0:
            raise ConfigError(
                f"checkpoint.last_every_n_steps must be 0 or a positive integer, got {last_every_n_steps}"
            )
        self.last_every_n_steps = last_every_n_steps
        self._last_written_at: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if is_debug_run(trainer):  # nothing a later resume or evaluation could pick up
            self.save_top_k, self.save_last = 0, False
        super().setup(trainer, pl_module, stage)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_at = trainer.global_step

    def _last_is_due(self, trainer: pl.Trainer) -> bool:
        return (
            bool(self.save_last)
            and not is_debug_run(trainer)
            and not trainer.sanity_checking
            and self._last_written_at != trainer.global_step
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._last_is_due(trainer) and trainer.state.fn == "fit":
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_steps
        if not n or (batch_idx + 1) % trainer.accumulate_grad_batches or trainer.global_step % n:
            return
        if validation_follows(trainer):
            return  # saved after the validation that follows this step
        if self._last_is_due(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, with the recorded folder and paths taken as this run's when they name
        the same folder (a relative ``save_dir`` records a path relative to the cwd of the run
        that wrote it)."""
        recorded = state_dict.get("dirpath")
        if (
            self.dirpath is not None
            and recorded != self.dirpath
            and same_folder(recorded, self.dirpath)
        ):
            here = os.fspath(self.dirpath)

            def moved(path: Any) -> Any:
                if isinstance(path, str) and path and same_folder(os.path.dirname(path), here):
                    return os.path.join(here, os.path.basename(path))
                return path

            state_dict = dict(state_dict, dirpath=self.dirpath)
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = moved(state_dict[key])
            if isinstance(state_dict.get("best_k_models"), dict):
                state_dict["best_k_models"] = {
                    moved(k): v for k, v in state_dict["best_k_models"].items()
                }
        super().load_state_dict(state_dict)
