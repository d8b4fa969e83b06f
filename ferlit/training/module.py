"""The LightningModule: the paper's method section in code.

SE-ResNet-50 with a new 7-way classifier, class-weighted cross entropy, SGD (momentum 0.9, weight
decay 0.005) with two learning rates — 1e-3 for the new classifier, 1e-6 for the pre-trained rest —
and model selection by the ABAW expression criterion (0.67 x macro-F1 + 0.33 x accuracy). An
8-class run (with Other, ABAW 2022 and later) is selected by those challenges' score instead, the
mean F1 over the 8 classes (:mod:`ferlit.metrics`).

Read :class:`ExpressionModule` top to bottom: build (``__init__``), ``forward``, ``loss``, the
training, validation and predict steps, ``configure_optimizers``, then checkpoint loading. The option
checks and the learning-rate schedule are in :mod:`ferlit.training.schedule`; freezing the backbone
is the :class:`~ferlit.training.callbacks.finetuning.BackboneFreeze` callback.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import IO, Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from ferlit.errors import ConfigError, WeightsError
from ferlit.expressions import class_names, metric_key
from ferlit.metrics import ExpressionCriterion
from ferlit.models.backbone import create_model
from ferlit.models.checkpoints import (
    FERLIT_KEY,
    checkpoint_preprocessing,
    load_checkpoint,
    preprocessing_record,
)
from ferlit.training.callbacks.finetuning import BackboneFreeze
from ferlit.training.callbacks.progress import StepProgressBar
from ferlit.training.divergence import DivergenceWatch, check_weights
from ferlit.training.schedule import (
    StepSchedule,
    check_model_options,
    check_schedule,
    schedule_factor,
)

#: True while ``load_from_checkpoint`` builds a module: the checkpoint holds every weight and the
#: preprocessing, so the weights file named by ``pretrained`` is not read (it may be long gone).
_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("ferlit_from_checkpoint", default=False)

#: Precisions that keep the weights in half precision, and the relative spacing of that format
#: (2**-8 for bf16's 8-bit significand, 2**-11 for fp16's; IEEE 754 / Google Brain float16).
HALF_WEIGHTS = {"bf16-true": "bfloat16", "16-true": "float16"}
EPSILON = {"bf16-true": 2.0**-8, "16-true": 2.0**-11}

#: Test-time augmentations of prediction (``--tta``): none, or the mean with the mirrored face.
TTA = ("none", "flip")


def check_tta(tta: str) -> None:
    """Refuse a test-time augmentation that is not one of :data:`TTA`."""
    if tta not in TTA:
        raise ConfigError(f"--tta {tta}: expected one of {', '.join(TTA)}")


class ExpressionModule(pl.LightningModule):
    """Frame-level expression classifier.

    Args:
        backbone: a timm model name; ``legacy_seresnet50`` is the paper's SE-ResNet-50.
        backbone_kwargs: extra timm arguments (e.g. narrower ``channels`` for a demo network).
        num_classes: 7 (ABAW 2020) or 8 (with Other); linked from ``data.num_classes``.
        input_size: side of the square input (112 for ``cropped_aligned``; VGGFace2 used 224).
        pretrained: VGGFace2 weights file (``.pkl``, ``.pth``, ``.safetensors``); None = random.
        preprocessing: "auto" takes the normalisation the weights were trained with.
        class_weights: cross-entropy weights; linked from the DataModule's training counts.
        lr_head: learning rate of the new classifier (the paper's 1e-3).
        lr_backbone: learning rate of the pre-trained rest of the network (the paper's 1e-6).
        momentum: SGD momentum, in [0, 1) (the paper's 0.9).
        weight_decay: SGD weight decay (L2) of both parameter groups (the paper's 0.005).
        lr_schedule: how both rates change, per optimizer step: "constant" (the paper) or
            "warmup_cosine" (cosine decay over the run's optimizer steps, ``trainer.max_steps``
            or the steps of ``trainer.max_epochs``). See
            :func:`ferlit.training.schedule.schedule_factor`.
        warmup_steps: linear warmup of both rates over the first N optimizer steps (any schedule).
        min_lr_ratio: "warmup_cosine" decays each rate to this fraction of itself.
        freeze_backbone_steps: train the classifier alone for this many optimizer steps (the
            backbone's learning rate is 0 during them).
        freeze_bn: keep the backbone's BatchNorm statistics fixed (fine-tuning at a tiny lr).
        channels_last: NHWC memory format, faster with tensor cores (GPU, bf16).
    """

    def __init__(
        self,
        backbone: str = "legacy_seresnet50",
        backbone_kwargs: dict | None = None,
        num_classes: int = 7,
        input_size: int = 112,
        pretrained: str | None = None,
        preprocessing: Literal["auto", "vggface2", "imagenet"] = "auto",
        class_weights: list[float] | None = None,
        lr_head: float = 1e-3,
        lr_backbone: float = 1e-6,
        momentum: float = 0.9,
        weight_decay: float = 0.005,
        lr_schedule: Literal["constant", "warmup_cosine"] = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        freeze_backbone_steps: int = 0,
        freeze_bn: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.class_names = class_names(num_classes)
        check_model_options(
            num_classes, input_size, class_weights, lr_head, lr_backbone, momentum, weight_decay
        )
        check_schedule(lr_schedule, warmup_steps, min_lr_ratio, freeze_backbone_steps)
        self.save_hyperparameters()
        start = None if _FROM_CHECKPOINT.get() else pretrained
        self.net = create_model(backbone, num_classes, backbone_kwargs, start, preprocessing)
        if self.net.weights_report is not None:
            rank_zero_info(f"model.pretrained: {self.net.weights_report}")
        if not _FROM_CHECKPOINT.get():  # from a checkpoint, on_load_checkpoint tells
            rank_zero_info(f"input preprocessing: {self.net.preprocessing}")
        weights = torch.ones(num_classes) if class_weights is None else torch.tensor(class_weights)
        self.register_buffer("class_weights", weights.float(), persistent=False)
        self.val_criterion = ExpressionCriterion(num_classes)
        self.val_loss = MeanMetric()
        self.last_val_scores: dict[str, float] = {}
        #: Test-time augmentation of ``predict_step`` (:data:`TTA`): an option of prediction, not
        #: of the model, so it is neither a hyperparameter nor saved in checkpoints.
        self.tta = "none"
        #: Stops a run whose loss is NaN or infinite, without a host sync per step.
        self.divergence = DivergenceWatch()
        #: Whether ``train/loss`` is a ``prog_bar`` value: only for a bar other than ferlit's
        #: (set at the start of training; see ``training_step``).
        self._loss_on_bar = False
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of uint8 RGB faces (the network normalises them itself)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    # -- training ------------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Class-weighted cross entropy: sum_i w[y_i] * CE_i / sum_i w[y_i].

        Computed in float32 at least (logits of bf16 or fp16 are cast up; a 64-true run's stay
        float64). Under a "true" precision the class weights were cast with the model: bf16
        rounds them to ~3 significant digits (22.92 -> 22.875).
        """
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return F.cross_entropy(logits.to(dtype), labels, weight=self.class_weights.to(dtype))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # (images, labels, samples, damaged images skipped): EpochSeededDataset's items
        images, labels = batch[0], batch[1]
        loss = self.loss(self(images), labels)
        # Raises TrainingDiverged for the previous micro-batch's loss (read without waiting for
        # the device: ferlit.training.divergence); the hooks below read the last one.
        where = f"optimizer step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        self.divergence.push(loss, where)
        # Not prog_bar under ferlit's bar: Lightning would read it on the host after every
        # micro-batch (a wait for the GPU); StepProgressBar reads it from callback_metrics at most
        # once a second. Lightning's own bars (a user's choice) show prog_bar values only.
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=self._loss_on_bar)
        if self._logs_this_step():
            # The rates of the optimizer step this batch is part of (schedule and freezing
            # applied). A Python number logged becomes a tensor made on the device, a blocking
            # copy, so only on the steps whose values Lightning writes to the loggers.
            for group in self.optimizers().optimizer.param_groups:
                self.log(f"train/lr_{group['name']}", group["lr"], on_step=True, on_epoch=False)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's logged values (every ``trainer.log_every_n_steps``
        optimizer steps): Lightning's own ``LearningRateMonitor`` asks the trainer the same way."""
        connector = getattr(self._trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def setup(self, stage: str) -> None:
        # A micro-batch a stopped fit left unread (the TrainingDiverged it raised read the one
        # before) is no business of the next fit's sanity check, nor of a validate or predict
        # of weights loaded back into this module since (a notebook's retry).
        self.divergence.clear()
        # A validate before (a notebook's) left the metrics' states as inference-mode tensors
        # (reset under torch.inference_mode); fit's sanity check, run without it, could not
        # update them in place ("Inplace update to inference tensor"). Fresh ones, made here.
        self.val_criterion.reset()
        self.val_loss.reset()

    def on_train_epoch_end(self) -> None:
        self.divergence.flush()  # before the epoch's checkpoint

    def on_train_end(self) -> None:
        self.divergence.flush()
        check_weights(self, self.global_step)

    # -- validation ----------------------------------------------------------------------------

    @property
    def criterion_description(self) -> str:
        """Which score ``val/criterion`` is: the run's challenge's (by its number of classes)."""
        return self.val_criterion.description

    def on_fit_start(self) -> None:
        """Say which score selects the checkpoint, before hours of training depend on it."""
        monitors = []
        for callback, what in (
            (self.trainer.checkpoint_callback, "the best checkpoint"),
            (self.trainer.early_stopping_callback, "early stopping"),
        ):
            if callback is not None and callback.monitor:
                monitors.append(f"{what} by {callback.monitor}")
        rank_zero_info(
            f"val/criterion = {self.criterion_description}"
            + (f"; {', '.join(monitors)}" if monitors else "")
        )
        precision = str(self.trainer.precision)
        if precision in HALF_WEIGHTS:
            from ferlit.training.cli import FINE_TUNING_LR  # imported: cli imports this module

            lr = self.hparams.lr_backbone
            # Only a fine-tuning rate makes every backbone update that small; the sample
            # config's from-scratch 0.05 loses only the smallest ones (it said "the pre-trained
            # layers may not change at all" there too).
            effect = (
                f"at model.lr_backbone {lr:g}, a fine-tuning rate, the backbone may not change "
                "at all"
                if lr < FINE_TUNING_LR
                else f"at model.lr_backbone {lr:g} the smallest updates are lost"
            )
            rank_zero_info(
                f"warning: trainer.precision {precision} keeps the weights themselves in "
                f"{HALF_WEIGHTS[precision]}, which rounds away an SGD update smaller than "
                f"~{EPSILON[precision]:.0e} of a weight: {effect}; bf16-mixed (float32 weights, "
                "bf16 arithmetic) is the usual choice"
            )

    def on_train_start(self) -> None:
        # The sanity check's few batches must not leak into the first real validation.
        self.val_criterion.reset()
        self.val_loss.reset()
        bar = self.trainer.progress_bar_callback
        self._loss_on_bar = bar is not None and not isinstance(bar, StepProgressBar)

    def on_validation_start(self) -> None:
        self.divergence.flush()  # never score (and keep as best) weights a NaN step spoiled
        if self.trainer.state.fn == "fit":  # nor weights an optimizer step overflowed
            check_weights(self, self.global_step)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels, _ = batch
        logits = self(images)
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        # The mean of per-sample losses weighted by their class weights is the weighted cross
        # entropy of the whole set (the training loss, over all of validation; exact across DDP).
        self.val_loss.update(losses, self.class_weights[labels])
        self.val_criterion.update(logits.float(), labels)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_criterion.compute()
        metrics = {
            "val/criterion": scores["criterion"],
            "val/abaw2020": scores["abaw2020"],
            "val/f1": scores["f1"],
            "val/acc": scores["acc"],
            "val/loss": self.val_loss.compute(),
        }
        for name, f1 in zip(self.class_names, scores["f1_per_class"], strict=True):
            metrics[f"val/f1_{metric_key(name)}"] = f1
        metrics = {k: v.float() for k, v in metrics.items()}
        self.log_dict(metrics)
        # Lightning would file these under the count of batches that stepped *before* this
        # validation (one less); "step" makes loggers record the optimizer step they belong to.
        self.log("step", float(self.global_step))
        self.log("epoch", float(self.current_epoch))
        self.last_val_scores = {k: float(v) for k, v in metrics.items()}
        self.last_val_confusion = scores["confusion"].cpu()
        self.val_criterion.reset()
        self.val_loss.reset()

    # -- prediction ----------------------------------------------------------------------------

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities (N x C, float32) of a batch of uint8 RGB faces (N x 3 x H x W).

        ``tta="flip"``: test-time augmentation by the horizontal mirror, the mean of the face's
        and its mirror's probabilities (a mirrored face shows the same expression; the
        augmentation ``data.hflip`` trains with). ``"none"``: the face's alone.
        """
        check_tta(tta)
        probs = torch.softmax(self(images).float(), dim=1)
        if tta == "flip":
            probs = (probs + torch.softmax(self(images.flip(-1)).float(), dim=1)) / 2
        return probs

    def predict_step(
        self, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        """Class probabilities of a batch (with test-time augmentation :attr:`tta`, set by
        ``python -m ferlit predict --tta``), with the sample numbers that place each row in the
        split's FrameIndex (``python -m ferlit.evaluate`` reorders and gathers them by these).

        ``dataloader_idx``: which of the DataModule's ``predict_targets`` the batch is of (the
        writer keeps them apart); Lightning refuses several predict loaders without it, as with
        ``--smooth auto`` on ``--data.frames_dir`` (the frames, then Aff-Wild2 val to choose on)."""
        images, _, samples = batch
        return {"sample": samples, "probs": self.probabilities(images, self.tta)}

    # -- optimizer ----------------------------------------------------------------------------

    def total_steps(self) -> int:
        """The run's optimizer steps, which a decaying schedule spans (``max_steps``, else
        ``max_epochs`` x the steps of an epoch: Lightning's ``estimated_stepping_batches``)."""
        total = self.trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ConfigError(
                f"model.lr_schedule {self.hparams.lr_schedule} needs a run of known length: set "
                "trainer.max_steps (or trainer.max_epochs)"
            )
        return int(total)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """SGD with the paper's two parameter groups, ``head`` and ``backbone``, and, unless
        both rates stay constant, a per-optimizer-step schedule of both.

        The schedule multiplies each group's rate by :func:`schedule_factor` at every optimizer
        step (Lightning's ``interval: "step"`` steps it once per optimizer step, after the
        accumulated micro-batches). Its position is saved in the checkpoint, so a resumed run
        continues the same curve. ``freeze_backbone_steps`` is not part of it: the
        :class:`BackboneFreeze` callback (:meth:`configure_callbacks`) holds the backbone's rate
        at 0 for those steps.
        """
        hp = self.hparams
        optimizer = torch.optim.SGD(
            [
                {"name": "head", "params": self.net.head_parameters(), "lr": hp.lr_head},
                {
                    "name": "backbone",
                    "params": self.net.backbone_parameters(),
                    "lr": hp.lr_backbone,
                },
            ],
            lr=hp.lr_head,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
        )
        if hp.lr_schedule == "constant" and hp.warmup_steps == 0:
            return optimizer
        total = self.total_steps() if hp.lr_schedule == "warmup_cosine" else 0
        if hp.lr_schedule == "warmup_cosine" and hp.warmup_steps >= total:
            raise ConfigError(
                f"model.warmup_steps {hp.warmup_steps} leaves no step to decay in a run of "
                f"{total} optimizer steps (trainer.max_steps / trainer.max_epochs)"
            )

        def factor(step: int) -> float:
            return schedule_factor(step, hp.lr_schedule, hp.warmup_steps, total, hp.min_lr_ratio)

        scheduler = StepSchedule(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def configure_callbacks(self) -> list[pl.Callback]:
        """Freezing as Lightning's fine-tuning examples do it, in a callback
        (:class:`~ferlit.training.callbacks.finetuning.BackboneFreeze`); returned here so that
        every entry point training this module applies ``freeze_backbone_steps`` and
        ``freeze_bn``."""
        return [BackboneFreeze(self.hparams.freeze_backbone_steps, self.hparams.freeze_bn)]

    # -- checkpoints ---------------------------------------------------------------------------

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike[str] | IO[bytes],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> ExpressionModule:
        """Lightning's loader, made safe and self-contained.

        The file is first read by :func:`ferlit.models.checkpoints.load_checkpoint` (no code runs;
        a refusal is a ``WeightsError`` naming the file), then by Lightning with
        ``weights_only=True``. The weights file the run started from (``pretrained``) is not
        read: the checkpoint has every weight, and :meth:`on_load_checkpoint` restores the input
        preprocessing the model was trained with.
        """
        if weights_only is False:
            raise WeightsError(
                f"{checkpoint_path}: ferlit reads checkpoints only with weights_only=True"
            )
        if isinstance(checkpoint_path, str | os.PathLike):
            state = load_checkpoint(checkpoint_path, mmap=True)
            needed = ("state_dict", "hyper_parameters", "pytorch-lightning_version")
            missing = [k for k in needed if not isinstance(state, dict) or k not in state]
            if missing:  # Lightning's loader would end in a KeyError
                raise WeightsError(
                    f"{checkpoint_path}: not a checkpoint of python -m ferlit.fit (no "
                    f"{', '.join(missing)}); expected a .ckpt of a ferlit run"
                )
        token = _FROM_CHECKPOINT.set(True)
        try:
            return super().load_from_checkpoint(
                checkpoint_path,
                map_location=map_location,
                hparams_file=hparams_file,
                strict=strict,
                weights_only=True,
                **kwargs,
            )
        finally:
            _FROM_CHECKPOINT.reset(token)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The resolved input preprocessing goes into every checkpoint (``ferlit.preprocessing``):
        a trained model carries its normalisation, whatever options or files built it.

        Raises:
            TrainingDiverged: the last training step's loss, or a weight, was not finite (no
                checkpoint of the weights it spoiled is written).
        """
        self.divergence.flush()
        check_weights(self, self.global_step)
        checkpoint.setdefault(FERLIT_KEY, {})["preprocessing"] = preprocessing_record(
            self.net.preprocessing
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's preprocessing replaces whatever ``__init__`` chose from the options
        (e.g. ``pretrained=None`` would pick ImageNet's for a VGGFace2-trained model)."""
        preprocessing = checkpoint_preprocessing(checkpoint)
        if preprocessing is not None and preprocessing != self.net.preprocessing:
            self.net.set_preprocessing(preprocessing)
        rank_zero_info(f"input preprocessing (from the checkpoint): {self.net.preprocessing}")
