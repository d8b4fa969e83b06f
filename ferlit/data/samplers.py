"""Samplers that make the step arithmetic and the distributed metrics exact.

* ``EpochShuffleSampler`` (training) yields a whole number of optimizer steps per epoch on every
  rank, so that optimizer steps = micro-batches / ``accumulate_grad_batches`` holds across epoch
  boundaries, which is what lets ``--val_every_n_steps`` count optimizer steps exactly. Its order
  depends only on (seed, epoch).
* ``ShardSampler`` (validation, evaluation) gives rank r the samples r, r+N, r+2N, ... with no
  padding: torch's DistributedSampler pads with duplicates, which changes F1 and accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from ferlit.errors import ConfigError


class EpochShuffleSampler(Sampler[int]):
    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        accumulate_grad_batches: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        per_step = batch_size * accumulate_grad_batches
        steps = num_samples // (per_step * world_size)
        if steps == 0:
            raise ConfigError(
                f"the training set has {num_samples} samples, fewer than one optimizer step "
                f"(data.batch_size {batch_size} x trainer.accumulate_grad_batches "
                f"{accumulate_grad_batches} x {world_size} process(es))"
            )
        self.samples_per_rank = steps * per_step
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_rank

    def epoch_order(self) -> np.ndarray:
        """This rank's full sample order for the current epoch."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return order[: self.samples_per_rank * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order().tolist())


class ShardSampler(Sampler[int]):
    """Rank r of N gets samples r, r+N, ...: every sample exactly once across ranks."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, num_samples, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
