"""Fine-tuning a pre-trained backbone: the classifier alone first, BatchNorm statistics fixed.

Lightning's pattern (``BaseFinetuning``, ``examples/pytorch/domain_templates/
computer_vision_fine_tuning.py``) keeps freezing out of the LightningModule, in a callback. ferlit
follows the pattern but not ``BaseFinetuning``'s mechanism: that one sets ``requires_grad=False``
and adds the backbone's parameter group to the optimizer when it thaws, per epoch. ferlit's runs
are counted in optimizer steps (an Aff-Wild2 epoch is ~1M frames), DDP requires every parameter to
take part in each step's graph, and a parameter group added mid-run would not be in the optimizer
a resumed run builds. So the backbone group stays in the optimizer from the start and its rate is
held at 0 while frozen.
"""

from __future__ import annotations

import lightning.pytorch as pl
from torch import nn


class BackboneFreeze(pl.Callback):
    """``model.freeze_backbone_steps`` and ``model.freeze_bn`` of :class:`ExpressionModule`.

    The module returns this callback from ``configure_callbacks``, so every entry point that
    trains it gets it; the options stay where users set them (``--model.freeze_backbone_steps``,
    ``--model.freeze_bn``).

    * ``freeze_steps``: for optimizer steps ``0 .. freeze_steps - 1`` the rate of the optimizer's
      parameter group named ``backbone`` is 0 (set before each micro-batch, so the logged
      ``train/lr_backbone`` of those steps is 0); from step ``freeze_steps`` on it is the
      schedule's (the scheduler sets every group's rate after each optimizer step) or, without a
      scheduler, the rate the group was built with. The step comes from ``trainer.global_step``,
      which a resumed run restores: it is frozen or not at the same steps as an uninterrupted
      one. Momentum buffers still accumulate the backbone's gradients while frozen (SGD at rate 0).
    * ``freeze_bn``: the backbone's BatchNorm layers are put in eval mode (fixed running
      statistics) before every training batch, since Lightning switches the model back to train
      mode after each validation. Useful when fine-tuning at a tiny rate (the paper's 1e-6).

    Args:
        freeze_steps: optimizer steps during which only the new classifier learns (>= 0).
        freeze_bn: keep the backbone's BatchNorm statistics fixed for the whole run.
    """

    #: The optimizer's parameter group holding the backbone (``ExpressionModule.configure_optimizers``).
    GROUP = "backbone"

    def __init__(self, freeze_steps: int = 0, freeze_bn: bool = False) -> None:
        self.freeze_steps = freeze_steps
        self.freeze_bn = freeze_bn

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.freeze_bn:
            for module in pl_module.net.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        if not self.freeze_steps:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("name") != self.GROUP:
                    continue
                # The built rate, kept in the group (saved with the optimizer's state, so a run
                # resumed while frozen thaws to it); a scheduler's LambdaLR stores it there too.
                group.setdefault("initial_lr", group["lr"])
                if trainer.global_step < self.freeze_steps:
                    group["lr"] = 0.0
                elif group["lr"] == 0.0 and not trainer.lr_scheduler_configs:
                    group["lr"] = group["initial_lr"]
