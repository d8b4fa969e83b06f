"""Stop a run whose training loss is no longer finite, without a host synchronisation per step.

``if not torch.isfinite(loss)`` in the training step reads a value of the device on the host:
on a GPU the host then waits until the device has finished everything queued, and the device
idles while the host runs Lightning's per-step Python. At the ~8,500 faces/s a fed H100 or H200
trains SE-ResNet-50 at 112x112 (issue 17), a micro-batch of 64 lasts ~7.5 ms, about what that
Python costs: a wait per step would cost a large part of the GPU.

:class:`DivergenceWatch` copies each step's "loss is finite" flag to pinned host memory without
blocking and records a CUDA event after the copy; the flag is read at the next micro-batch's
training step, waiting (if at all) only for that event, i.e. for the previous micro-batch's
forward pass, not for its backward pass and optimizer step queued behind it. So a non-finite
loss stops the run one micro-batch later than it appears, with the message naming the step it
appeared at. The last flag is read before anything can keep the weights it may have spoiled:
before every validation, checkpoint save and the end of training
(:class:`~ferlit.training.module.ExpressionModule`'s hooks call :meth:`DivergenceWatch.flush`).
On a CPU the copy is immediate and no event is needed.

In a distributed run (DDP) the flag is and-ed over the processes before the copy (an all-reduce
of one integer, queued on the device like the gradients' own): a loss that turns NaN in one
process (its share of the batch) spoils every process's weights through the gradients'
all-reduce, and every process must stop at the same point; one stopping alone left the others
waiting in their next collective (gloo: a "Connection closed by peer" traceback; NCCL: a hang
until its timeout).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ferlit.errors import TrainingDiverged


@dataclass
class _Pending:
    finite: torch.Tensor  # a 0-d bool on the host (pinned when the loss is on a GPU)
    ready: torch.cuda.Event | None  # recorded after the copy; None on a CPU
    loss: torch.Tensor  # the loss itself, read only to name it in the error
    where: str


class DivergenceWatch:
    """Whether each micro-batch's training loss is finite, read one micro-batch later."""

    def __init__(self) -> None:
        self._pending: _Pending | None = None

    def push(self, loss: torch.Tensor, where: str) -> None:
        """Queue ``loss``'s check (``where``: the step it belongs to, for the message), then read
        the previous micro-batch's.

        Raises:
            TrainingDiverged: the previous micro-batch's loss was NaN or infinite.
        """
        loss = loss.detach()
        finite = _in_every_process(torch.isfinite(loss))
        ready = None
        if finite.is_cuda:
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(finite, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            finite = host
        previous, self._pending = self._pending, _Pending(finite, ready, loss, where)
        if previous is not None:
            self._check(previous)

    def flush(self) -> None:
        """Read the check still queued, if any (before validation, saving or the end).

        Raises:
            TrainingDiverged: that micro-batch's loss was NaN or infinite.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            self._check(pending)

    def clear(self) -> None:
        """Forget a queued check (a new fit starts)."""
        self._pending = None

    @staticmethod
    def _check(pending: _Pending) -> None:
        if pending.ready is not None:
            pending.ready.synchronize()
        if not bool(pending.finite):
            value = pending.loss.item()  # this process's: finite if another's was not
            what = "NaN or infinite in another process" if math.isfinite(value) else value
            raise TrainingDiverged(
                f"the training loss became {what} at {pending.where}; the "
                "checkpoints written so far are kept — lower model.lr_head / model.lr_backbone "
                "or check the data"
            )


def _in_every_process(finite: torch.Tensor) -> torch.Tensor:
    """``finite`` (a 0-d bool) and-ed over the processes of a distributed run; itself alone.

    On NCCL the all-reduce is queued on the device and the host does not wait for it; every
    process calls it at the same point of each training step, before the backward pass whose
    gradient all-reduces follow it in the same order everywhere.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return finite
    flag = finite.to(torch.int32)  # gloo and NCCL reduce integers, not every backend bools
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag.bool()


def check_weights(module: torch.nn.Module, step: int) -> None:
    """Stop when a weight or buffer of ``module`` is NaN or infinite, after ``step`` optimizer
    steps.

    :class:`DivergenceWatch` reads the loss; an optimizer step can also overflow the weights
    from a finite loss and finite gradients (a huge learning rate; float16 stops at 65504 under
    ``16-true``), and the loss that shows it comes a micro-batch later, after the validation
    that would score the spoiled weights (infinite logits predict one class: a "best" score)
    and the checkpoint that would keep them. One read on the host, made before each validation,
    save and the end of training only.

    Raises:
        TrainingDiverged: a weight or buffer is not finite.
    """
    tensors = [
        t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()
    ]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        raise TrainingDiverged(
            f"the weights are no longer finite after optimizer step {step}; the checkpoints "
            "written so far are kept — lower model.lr_head / model.lr_backbone or check the data"
        )
