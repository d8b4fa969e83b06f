"""The GPU path, correct by design though no GPU is here (issue 17, "keep a GPU fed").

A fed H100/H200 trains a micro-batch of 64 in a few milliseconds; the host keeps up only by
running ahead of the device, so a training step must never wait for it (``tests/host_sync.py``
finds, on CPU, every call that would). Precisions that cast the whole model (``bf16-true``,
``16-true``, ``64-true``) train like ``bf16-mixed``, and ``channels_last`` reaches the first
convolution whatever the augmentation path.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from host_sync import HostSyncs
from test_fit import fit_args, tiny_module, validations
from torch.utils.data import DataLoader, TensorDataset

from ferlit.errors import TrainingDiverged
from ferlit.training.callbacks.progress import StepProgressBar
from ferlit.training.cli import main

#: DivergenceWatch reads a host copy of the loss's finiteness made non-blocking, after an event
#: recorded right behind it: it waits for that micro-batch's forward pass at most, not for the
#: work queued after it (ferlit/training/divergence.py).
DESIGNED_READS = (("ferlit/training/divergence.py", "_check"),)


class SyncWindow(pl.Callback):
    """Record host synchronisations from the end of micro-batch ``start`` to the end of ``stop``:
    whole steady-state steps (loader hand-off, transfer, augmentation, forward, loss, logging,
    backward, optimizer, callbacks), no validation in between."""

    def __init__(self, start: int, stop: int) -> None:
        self.syncs = HostSyncs(allowed=DESIGNED_READS)
        self.start, self.stop = start, stop
        self.active = False
        self.steps_seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.start:
            self.syncs.__enter__()
            self.active = True
        elif batch_idx == self.stop and self.active:
            self.syncs.__exit__(None, None, None)
            self.active = False
        elif self.active:
            self.steps_seen += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        assert not self.active, "the window must hold training steps only"


@pytest.mark.parametrize(
    "extra",
    [
        ("--data.augment_on", "cpu"),
        ("--data.augment_on", "device"),
        ("--data.augment_on", "device", "--trainer.precision", "bf16-mixed"),
    ],
    ids=["augment-cpu", "augment-device", "augment-device-bf16"],
)
def test_a_training_step_never_waits_for_the_device(tiny_sample, tmp_path, extra):
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--trainer.max_steps",
        "6",
        "--trainer.accumulate_grad_batches",
        "2",
        "--val_every_n_steps",
        "6",
        "--trainer.log_every_n_steps",
        "1000",
        "--trainer.enable_progress_bar",
        "true",
        "--model.channels_last",
        "true",
        *extra,
    )
    cli = main(args, run=False)
    window = SyncWindow(start=1, stop=9)
    cli.trainer.callbacks.append(window)
    bar = next(c for c in cli.trainer.callbacks if isinstance(c, StepProgressBar))
    bar.metrics_interval = math.inf  # its once-a-second read is by design; not in the window
    cli.trainer.fit(cli.model, cli.datamodule)
    assert window.steps_seen == 7  # micro-batches 2..8 whole, accumulation and optimizer steps
    assert window.syncs.calls == [], "host syncs in a training step:\n" + window.syncs.report()


def test_the_progress_bar_reads_the_loss_at_most_once_an_interval(monkeypatch):
    bar = StepProgressBar()
    reads = []
    monkeypatch.setattr(bar, "_update_metrics", lambda trainer, module: reads.append(now[0]))
    monkeypatch.setattr(bar, "_update", lambda *a: None)
    monkeypatch.setattr(bar, "refresh", lambda: None)
    bar.train_progress_bar_id = 0
    now = [100.0]
    monkeypatch.setattr("ferlit.training.callbacks.progress.time.monotonic", lambda: now[0])

    class Trainer:
        global_step = 0

    for t in (100.0, 100.2, 100.9, 101.0, 101.5, 102.1):
        now[0] = t
        bar.on_train_batch_end(Trainer(), None, None, None, 0)
    assert reads == [100.0, 101.0, 102.1]


def test_train_loss_still_shows_beside_the_bar(tiny_sample, tmp_path):
    cli = main(fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "2"), run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    bar = StepProgressBar()
    items = bar.get_metrics(cli.trainer, cli.model)
    assert list(items)[0] == "train/loss"
    assert items["train/loss"] == pytest.approx(float(cli.trainer.callback_metrics["train/loss"]))


@pytest.mark.parametrize(
    "bar",
    ["lightning.pytorch.callbacks.TQDMProgressBar", "lightning.pytorch.callbacks.RichProgressBar"],
)
def test_train_loss_still_shows_beside_a_bar_the_user_chose(tiny_sample, tmp_path, bar):
    """Only ferlit's bar reads ``train/loss`` itself (once a second); Lightning's own bars, which
    a user may pick (``--trainer.callbacks+=...TQDMProgressBar``, e.g. for plain SLURM logs),
    show the ``prog_bar`` values only: the loss stays one of them there (read after every
    micro-batch: the cost of that bar)."""
    args = fit_args(
        tiny_sample,
        tmp_path,
        *("--trainer.max_steps", "2", "--trainer.enable_progress_bar", "true"),
        f"--trainer.callbacks+={bar}",
    )
    cli = main(args, run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    chosen = cli.trainer.progress_bar_callback
    assert type(chosen).__name__ == bar.rsplit(".", 1)[1]
    items = chosen.get_metrics(cli.trainer, cli.model)
    assert items["train/loss"] == pytest.approx(float(cli.trainer.callback_metrics["train/loss"]))


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true"])
def test_true_precisions_train_and_validate(tiny_sample, tmp_path, precision, caplog):
    """The whole model cast to one dtype: the normalisation follows it (uint8 0-255 are exact
    in bf16 and fp16), the loss is computed in float32 at least."""
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--trainer.precision",
        precision,
        "--trainer.max_steps",
        "2",
        "--val_every_n_steps",
        "2",
    )
    cli = main(args)
    dtype = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "64-true": torch.float64}
    assert cli.model.net.backbone.conv1.weight.dtype == dtype[precision]
    rows = validations(cli)
    assert [int(r["step"]) for r in rows] == [2]
    assert math.isfinite(float(rows[0]["val/loss"]))
    # lr_backbone 0.01 (tiny_run_args) is no fine-tuning rate: no claim the backbone is frozen
    warned = "at model.lr_backbone 0.01 the smallest updates are lost" in caplog.text
    assert warned == (precision != "64-true")
    assert "may not change at all" not in caplog.text


def test_channels_last_reaches_the_first_convolution_after_device_augmentation(
    tiny_sample, tmp_path
):
    cli = main(
        fit_args(
            tiny_sample,
            tmp_path,
            "--trainer.max_steps",
            "2",
            "--data.augment_on",
            "device",
            "--model.channels_last",
            "true",
            "--trainer.precision",
            "bf16-mixed",
        ),
        run=False,
    )
    seen = []
    conv = cli.model.net.backbone.conv1
    conv.register_forward_pre_hook(
        lambda module, inputs: seen.append(
            (inputs[0].is_contiguous(memory_format=torch.channels_last), inputs[0].dtype)
        )
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    assert seen and all(layout for layout, _ in seen)
    assert all(dtype == torch.float32 for _, dtype in seen)  # normalised in float32; autocast casts


def _trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**(options | kwargs))


def test_a_diverged_fit_does_not_fail_the_next_stage_of_the_same_module():
    """The loss read late is the fit's business: once a fit has stopped on a NaN loss, a notebook
    that loads finite weights back into the same module and validates, or fits again (its sanity
    check validates first), must not be stopped by the old fit's unread micro-batch."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    loader = DataLoader(TensorDataset(images, torch.arange(8) % 7, torch.arange(8)), batch_size=2)
    module = tiny_module(lr_head=1e30, lr_backbone=1e30)
    finite = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="optimizer step"):
        _trainer(max_steps=4, limit_val_batches=0).fit(module, loader)
    module.load_state_dict(finite)
    module.hparams.lr_head = module.hparams.lr_backbone = 0.01
    _trainer(max_steps=1, num_sanity_val_steps=1, limit_val_batches=1).fit(module, loader, loader)
    assert module.global_step == 1
    (scores,) = _trainer().validate(module, loader, verbose=False)
    assert math.isfinite(scores["val/loss"])


@pytest.mark.parametrize("precision", ["transformer-engine", "transformer-engine-float16"])
def test_transformer_engine_precision_is_refused_naming_the_option(
    tiny_sample, tmp_path, capsys, precision
):
    """Lightning's Transformer Engine precision swaps Linear layers for FP8 ones: a convolutional
    network has only its classifier, whose 7 or 8 outputs FP8 cannot take (was a
    ModuleNotFoundError traceback without the package, an FP8 shape assertion with it)."""
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path, "--trainer.precision", precision))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"error: trainer.precision {precision}: Transformer Engine's FP8 replaces Linear layers "
        "only, and the one of ferlit's convolutional networks, the 7- or 8-way classifier, is too "
        "narrow for FP8 (multiples of 16); use bf16-mixed\n"
    ) in err  # README's bad-input row
    assert "Traceback" not in err


class OverflowWeightsAt(pl.Callback):
    """After the ``micro_batch``-th micro-batch (from 1), one weight is infinite: an optimizer
    step that overflowed (fp16's 65504 under ``16-true``, a huge learning rate) from a finite
    loss and finite gradients."""

    def __init__(self, micro_batch: int) -> None:
        self.micro_batch = micro_batch
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.micro_batch:
            with torch.no_grad():
                pl_module.net.backbone.get_classifier().weight[0, 0] = float("inf")


@pytest.mark.parametrize("validate", [True, False], ids=["validation-follows", "save-follows"])
def test_weights_an_optimizer_step_overflowed_are_never_validated_or_saved(
    tiny_sample, tmp_path, capsys, validate
):
    """The loss read late covers a NaN loss; an optimizer step can also overflow the weights
    from a finite loss, and the next loss to show it comes after a validation or save. Both
    check the weights themselves (one read on the host each, as rare as they are)."""
    cadence = (
        ("--val_every_n_steps", "2")
        if validate
        else ("--val_every_n_steps", "100", "--checkpoint.last_every_n_steps", "2")
    )
    spoil = ["--trainer.callbacks+=test_gpu_path.OverflowWeightsAt"]
    args = fit_args(
        tiny_sample,
        tmp_path,
        *("--trainer.max_steps", "6", *cadence, *spoil, "--trainer.callbacks.micro_batch", "4"),
    )
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    printed = capsys.readouterr()
    assert (
        "error: the weights are no longer finite after optimizer step 4; the checkpoints written "
        "so far are kept — lower model.lr_head / model.lr_backbone or check the data\n"
    ) in printed.err  # README's bad-input row
    assert "validation at step 4" not in printed.out
    for path in tmp_path.rglob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert state["global_step"] == 2
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values()), path


def test_a_module_validated_first_then_fits_in_the_same_process():
    """A notebook validates a model, then trains it further: the metrics' states reset under
    Lightning's inference mode were inference tensors, and fit's sanity check ended in
    "Inplace update to inference tensor outside InferenceMode"."""
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    loader = DataLoader(TensorDataset(images, torch.arange(8) % 7, torch.arange(8)), batch_size=2)
    module = tiny_module(lr_head=0.01, lr_backbone=0.01)
    (before,) = _trainer().validate(module, loader, verbose=False)
    _trainer(max_steps=2, num_sanity_val_steps=1, limit_val_batches=2).fit(module, loader, loader)
    assert module.global_step == 2
    (after,) = _trainer().validate(module, loader, verbose=False)
    assert math.isfinite(before["val/loss"]) and math.isfinite(after["val/loss"])


def test_half_weights_warn_that_a_fine_tuning_backbone_may_not_change(
    tiny_sample, tmp_path, caplog
):
    """At the paper's 1e-6 every backbone update is far below bf16's 2^-8 of a weight."""
    args = fit_args(
        tiny_sample,
        tmp_path,
        *("--trainer.precision", "bf16-true", "--model.lr_backbone", "1e-6"),
        *("--trainer.max_steps", "1", "--val_every_n_steps", "1"),
    )
    main(args)
    assert (
        "rounds away an SGD update smaller than ~4e-03 of a weight: at model.lr_backbone 1e-06, "
        "a fine-tuning rate, the backbone may not change at all"
    ) in caplog.text
