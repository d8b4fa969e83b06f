"""The options of a training run checked before any data is read, and the learning-rate schedule.

``python -m ferlit.fit`` runs :func:`check_schedule` and :func:`check_model_options` on the parsed
options (a bad value is refused in a second, not after the index is built), and
:class:`~ferlit.training.module.ExpressionModule` runs them again when built from Python. The
paper trains at two constant rates (Cafarelli et al., ABAW 2020); :func:`schedule_factor` adds the
optional linear warmup and cosine decay, applied per optimizer step by :class:`StepSchedule`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ferlit.cli_values import MAX_IMAGE_SIZE, check_number
from ferlit.errors import ConfigError
from ferlit.expressions import class_names


def check_schedule(
    lr_schedule: str, warmup_steps: int, min_lr_ratio: float, freeze_backbone_steps: int
) -> None:
    """Refuse schedule options that cannot be drawn or would be ignored (``python -m
    ferlit.fit`` calls this before reading any data, the module again when built)."""
    for option, value in (
        ("warmup_steps", warmup_steps),
        ("freeze_backbone_steps", freeze_backbone_steps),
    ):
        if value < 0:
            raise ConfigError(f"model.{option} must be >= 0 optimizer steps, got {value}")
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"model.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if min_lr_ratio and lr_schedule != "warmup_cosine":
        raise ConfigError(
            f"model.min_lr_ratio {min_lr_ratio} applies to model.lr_schedule warmup_cosine "
            f"only; the {lr_schedule} schedule does not decay"
        )


def check_model_options(
    num_classes: int,
    input_size: int,
    class_weights: list[float] | None,
    lr_head: float,
    lr_backbone: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """Refuse model options torch would take but train nonsense with, or refuse mid-run: NaN or
    infinite rates and weights (a NaN class weight makes every loss NaN, which
    ``TrainingDiverged`` would blame on the learning rate), negative rates, momentum outside
    [0, 1), a negative weight decay (torch's SGD raises a bare ValueError only when the
    optimizer is built). ``python -m ferlit.fit`` calls this before reading any data."""
    check_number("model.input_size", input_size, 1, MAX_IMAGE_SIZE, integer=True)
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ConfigError(
                f"model.class_weights has {len(class_weights)} weights, expected {num_classes}"
            )
        for k, (weight, name) in enumerate(
            zip(class_weights, class_names(num_classes), strict=True)
        ):
            check_number(f"model.class_weights[{k}] ({name})", weight, 0, above=True)
    for option, value in (
        ("lr_head", lr_head),
        ("lr_backbone", lr_backbone),
        ("weight_decay", weight_decay),
    ):
        check_number(f"model.{option}", value, 0)
    check_number("model.momentum", momentum, 0)
    if momentum >= 1:
        raise ConfigError(
            f"model.momentum must be a finite number in [0, 1), got {momentum!r} (SGD with "
            "momentum >= 1 never forgets a gradient and diverges)"
        )


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` whose restored state sets the rates of the step it resumes at.

    Lightning restores the optimizer (with the rates its last step left) and then the
    scheduler, which would only recompute the rates at its next step: a resumed run whose
    schedule spans more steps (a larger ``trainer.max_steps``) would take one step at the old
    curve's rate. Here the rates follow the resumed run's curve from its first step.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        factors = [fn(self.last_epoch) for fn in self.lr_lambdas]
        self._last_lr = [base * f for base, f in zip(self.base_lrs, factors, strict=True)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


def schedule_factor(
    step: int,
    schedule: str,
    warmup_steps: int = 0,
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """The factor of each learning rate at optimizer step ``step`` (0 = the first step).

    Linear warmup reaches the full rate at the last warmup step: ``(step + 1) / warmup_steps``
    (no step is wasted at rate 0). "constant" then keeps the full rate (the paper's recipe).
    "warmup_cosine" decays by half a cosine from 1 after the warmup to ``min_lr_ratio`` at
    ``total_steps`` (Loshchilov & Hutter, SGDR, ICLR 2017, without restarts; timm's and
    transformers' ``cosine`` schedules): ``r + (1 - r) x (1 + cos(pi x p)) / 2`` with ``p``
    the fraction of the post-warmup steps done.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
