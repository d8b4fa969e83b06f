"""Samplers that make the step arithmetic, the distributed metrics and resuming exact.

* ``EpochShuffleSampler`` (training) yields a whole number of optimizer steps per epoch on every
  rank, so that optimizer steps = micro-batches / ``accumulate_grad_batches`` holds across epoch
  boundaries, which is what lets ``--val_every_n_steps`` count optimizer steps exactly. Its order
  depends only on (seed, epoch), and it knows how far into the epoch training has got, so a run
  resumed from a checkpoint sees the rest of the epoch in the same order.
* ``ResumableLoader`` (training) is the DataLoader that keeps that position and hands it to
  Lightning, which stores a loader's ``state_dict()`` in every checkpoint and gives it back to
  ``load_state_dict()`` on resume (``FitLoop.on_save_checkpoint`` / ``_load_combined_loader_states``).
* ``ShardSampler`` (validation, evaluation) gives rank r the samples r, r+N, r+2N, ... with no
  padding: torch's DistributedSampler pads with duplicates, which changes F1 and accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler

from ferlit.errors import ConfigError


class EpochShuffleSampler(Sampler):
    """This rank's share of a (seed, epoch) permutation, from the epoch's current position on.

    Args:
        num_samples: size of the training set.
        batch_size, accumulate_grad_batches, world_size: one optimizer step takes
            ``batch_size x accumulate_grad_batches`` samples on each of ``world_size`` ranks;
            the epoch keeps the largest whole number of steps and drops the rest of the
            permutation (a different rest every epoch).
        seed, rank: the permutation's seed and this process's rank.
        keyed: yield ``(epoch, sample)`` pairs instead of sample numbers. A DataLoader worker
            lives across epochs (``persistent_workers``) and never sees ``set_epoch``; the key
            carries the epoch to it, so that a sample's augmentation can be drawn from
            (seed, epoch, sample) alone (``ferlit.data.datamodule.EpochSeededDataset``).

    ``position`` counts the samples of the current epoch already delivered to training;
    iterating starts there (at 0 once the epoch is complete). ``ResumableLoader`` advances it
    as batches leave the loader, which is behind the sampler itself by the batches that workers
    prefetch.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        accumulate_grad_batches: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        keyed: bool = False,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.keyed = keyed
        self.samples_per_step = batch_size * accumulate_grad_batches
        steps = num_samples // (self.samples_per_step * world_size)
        if steps == 0:
            raise ConfigError(
                f"the training set has {num_samples} samples, fewer than one optimizer step "
                f"(data.batch_size {batch_size} x trainer.accumulate_grad_batches "
                f"{accumulate_grad_batches} x {world_size} process(es))"
            )
        self.samples_per_rank = steps * self.samples_per_step
        self.epoch = 0
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; a new epoch starts at its beginning."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def __len__(self) -> int:
        return self.samples_per_rank

    def epoch_order(self) -> np.ndarray:
        """This rank's full sample order for the current epoch."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return order[: self.samples_per_rank * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        start = self.position if self.position < self.samples_per_rank else 0
        rest = self.epoch_order()[start:].tolist()
        if self.keyed:
            return iter([(self.epoch, i) for i in rest])
        return iter(rest)

    # -- checkpoint state ----------------------------------------------------------------------

    def _layout(self) -> dict[str, int]:
        """What must be unchanged for a saved position to mean the same samples."""
        return {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "world_size": self.world_size,
            "samples_per_step": self.samples_per_step,
        }

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, **self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was saved; refuses a different data set or step layout.

        A saved position counts samples of one particular permutation split in one particular
        way; with another training set size, seed, batch x accumulation or process count the
        rest of the epoch would be other samples, so an exact resume is impossible.
        """
        changed = [
            f"{name} {state[name]} -> {value}"
            for name, value in self._layout().items()
            if name in state and state[name] != value
        ]
        if changed:
            raise ConfigError(
                "the checkpoint's training order cannot be continued: "
                + ", ".join(changed)
                + " (resume with the same data, data.seed, data.batch_size x "
                "trainer.accumulate_grad_batches and devices x nodes; or start a new run from "
                "its weights with --model.pretrained <checkpoint>)"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


class ResumableLoader(DataLoader):
    """A DataLoader over an ``EpochShuffleSampler`` whose position is saved in checkpoints.

    The position advances as batches are handed to the training loop (not as the sampler is
    read: workers read it ahead), so at any checkpoint it counts the batches trained on. Lightning
    detects ``state_dict``/``load_state_dict`` on a training loader, saves the state with the
    loops' and restores it before the resumed epoch is iterated. Iteration is lazy: the
    sampler is read at the first batch, after Lightning's ``set_epoch``.
    """

    sampler: EpochShuffleSampler

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        if not isinstance(sampler, EpochShuffleSampler):
            raise TypeError(f"ResumableLoader needs an EpochShuffleSampler, got {type(sampler)}")
        if sampler.position >= len(sampler):
            sampler.position = 0
        for batch in super().__iter__():
            sampler.position += self.batch_size
            yield batch

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class ShardSampler(Sampler[int]):
    """Rank r of N gets samples r, r+N, ...: every sample exactly once across ranks."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, num_samples, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
