"""``python -m ferlit.fit`` (= ``python -m ferlit fit``, :mod:`ferlit.cli`): train with the paper's
recipe, configured by YAML (LightningCLI).

    python -m ferlit.fit --config experiments/cafarelli2020.yaml \
        --data.affwild2_dir /data/Aff-Wild2 --data.expw_dir /data/ExpW

With no data configured, the sample data is used (and written first if absent), so
``python -m ferlit.fit --config experiments/sample.yaml`` runs anywhere.

Beyond Lightning's own options, this adds:

* ``--val_every_n_steps N``: validate every N *optimizer* steps. Lightning's
  ``val_check_interval`` counts micro-batches; the paper's "every 3920 iterations" counts
  optimizer steps of 256 samples (4 accumulated micro-batches of 64). ferlit converts, and its
  training sampler makes every epoch a whole number of optimizer steps, so the conversion stays
  exact across epoch boundaries.
* ``--checkpoint.*``: the best ``val/criterion`` checkpoint (mode max) plus ``last.ckpt``,
  rewritten after every validation (``--checkpoint.last_every_n_steps N``: also every N
  optimizer steps), every write crash-safe (``ferlit.training.runs``).
* ``--early_stopping.*``: stop when ``val/criterion`` stops improving ("stopped on the best
  validation performance").
* ``--ckpt_path``: resume from a checkpoint; ``last`` is the newest ``last.ckpt`` of this run's
  logger folders (all versions). The resumed run goes on exactly as if never stopped (the rest
  of the epoch in the same order, the same validation steps, best score and patience), in the
  checkpoint's own run folder; a checkpoint whose recorded options differ from this run's
  (another experiment) is refused, listing them.
* SIGTERM (or SLURM's requeue signal) and Ctrl-C: stop after the current optimizer step with a
  resumable ``last.ckpt``, print the command that resumes, and exit with status 143 (130 for
  Ctrl-C; ``ferlit.training.callbacks.preemption.Preemption``).
* ``run_info.json`` in the run folder: versions, git commit, data folders, command line.

and changes three of Lightning's behaviours: a value ``None`` is null for every option that
accepts null (W&B writes null sweep values so; ``ferlit.cli_values``); a fractional
``trainer.limit_train_batches`` with accumulation becomes whole optimizer steps per epoch
(:class:`WholeStepEpochs`); and ``--optimizer`` / ``--lr_scheduler`` are refused, since the
optimizer is the paper's two-rate SGD, scheduled by ``model.lr_schedule``, ``warmup_steps`` and
``min_lr_ratio`` (``ExpressionModule.configure_optimizers``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import timm
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from rich.console import Console

from ferlit.cli_values import PARSER_MODE, check_number
from ferlit.data.datamodule import ExpressionDataModule
from ferlit.errors import (
    ConfigError,
    FerlitError,
    data_warnings_as_lines,
    quiet_closed_stdout,
    user_message,
)
from ferlit.training.callbacks.best import BestValidationSummary
from ferlit.training.callbacks.checkpoint import FerlitCheckpoint
from ferlit.training.callbacks.preemption import Preemption
from ferlit.training.callbacks.wandb_logging import (
    WandbSaveConfig,
    WandbValidation,
    flat_config,
    sweep_checkpoint_dir,
)
from ferlit.training.module import ExpressionModule
from ferlit.training.runs import (
    RunRecord,
    is_debug_run,
    remove_new_empty_folders,
    resume_checkpoint,
    run_folders_before,
    use_atomic_checkpoints,
)
from ferlit.training.schedule import check_model_options, check_schedule

RICH_PROGRESS_BAR = "lightning.pytorch.callbacks.RichProgressBar"
# fit's: one bar over the run in optimizer steps, the latest and best val/criterion beside it.
STEP_PROGRESS_BAR = "ferlit.training.callbacks.progress.StepProgressBar"
# Below this, model.lr_backbone is a fine-tuning rate (the paper's 1e-6 on VGGFace2 weights):
# a randomly initialised backbone barely moves at it (experiments/sample.yaml trains one from
# scratch at 0.05).
FINE_TUNING_LR = 1e-4
OPTIMIZER_OPTIONS = ("optimizer", "lr_scheduler")
WHOLE_STEP_EPOCHS = "ferlit.training.cli.WholeStepEpochs"


class WholeStepEpochs(pl.Callback):
    """A fractional ``trainer.limit_train_batches`` as a whole number of optimizer steps.

    Lightning turns a fraction into ``int(fraction x micro-batches per epoch)`` micro-batches,
    which with ``accumulate_grad_batches`` > 1 need not be a multiple of it: every epoch would
    end with a partial step (fewer samples than the recipe's 256) and the micro-batch count of
    ``val_check_interval`` would drift off the optimizer steps of ``--val_every_n_steps``.
    Before the first epoch (the training set's size is known only then), the limit becomes that
    count rounded down to a multiple of ``accumulate_grad_batches``, at least one step, and the
    conversion is printed. An integer limit that is not a multiple is refused instead
    (``FerlitCLI.before_instantiate_classes``), as the user chose it exactly.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        limit, accumulate = trainer.limit_train_batches, trainer.accumulate_grad_batches
        if stage != "fit" or not isinstance(limit, float) or not 0 < limit < 1 or accumulate == 1:
            return
        batches = len(trainer.datamodule.train_dataloader())  # a whole number of steps
        steps = max(int(batches * limit) // accumulate, 1)
        trainer.limit_train_batches = steps * accumulate
        if trainer.is_global_zero:
            print(
                f"trainer.limit_train_batches {limit} of {batches} micro-batches per epoch: "
                f"{steps * accumulate} micro-batches = {steps} optimizer step(s) of "
                f"trainer.accumulate_grad_batches {accumulate}",
                file=sys.stderr,
            )


def given_config_files(args: list[str] | None) -> list[str]:
    """The files given as ``--config FILE``, ``--config=FILE`` or ``-c FILE`` in ``args``."""
    given = [str(a) for a in (sys.argv[1:] if args is None else args)]
    files = [b for a, b in zip(given, given[1:], strict=False) if a in ("--config", "-c")]
    return files + [a.split("=", 1)[1] for a in given if a.startswith("--config=")]


def check_parent_configs(path: str | os.PathLike, seen: frozenset[str] = frozenset()) -> None:
    """A ``config:`` key in an experiment file (and in its parents) names ONE parent file.

    jsonargparse reads a string there as a parent file but keeps any other value as it is: a list
    (``config: [a.yaml, b.yaml]``) was silently ignored, parents and all, and a number or a
    mapping ended in an ``AttributeError`` traceback. Refused here, naming the file; a missing
    parent, a folder or a loop is left to jsonargparse, whose messages say so."""
    path = os.fspath(path)
    if path in seen or not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # reported by the parser (FerlitCLI.parse_arguments, jsonargparse)
    if not isinstance(loaded, dict) or "config" not in loaded:
        return
    parent = loaded["config"]
    if not isinstance(parent, str):
        raise ConfigError(
            f"{path}: config: {parent!r}: expected the path of one parent experiment file "
            "(relative to this file), e.g. config: cafarelli2020.yaml"
        )
    if not os.path.isabs(parent):
        parent = os.path.join(os.path.dirname(path), parent)
    check_parent_configs(parent, seen | {path})


class StageCLI(LightningCLI):
    """What the LightningCLI of every stage shares (``fit`` here; ``validate`` and ``predict`` in
    :mod:`ferlit.cli`): a value ``None`` is null, a Trainer value Lightning refuses is a
    ``ConfigError``, and the rich progress bar (:func:`with_progress_bar`)."""

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        """The Trainer; a value Lightning refuses (an unknown accelerator, ``devices 0``...) is a
        ``ConfigError`` quoting Lightning's message, not its traceback."""
        trainer_options = self._get(self.config_init, "trainer", default={}) or {}
        check_precision({**trainer_options, **kwargs}.get("precision"))
        try:
            return super().instantiate_trainer(**kwargs)
        except FerlitError:
            raise
        except (ValueError, MisconfigurationException) as error:
            raise ConfigError(f"trainer options: {error}") from None

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, after checking the ``config:`` parents of every ``--config`` file given."""
        if not isinstance(args, dict | Namespace):
            for path in given_config_files(args):
                check_parent_configs(path)
        super().parse_arguments(parser, args)

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        """The parser, reading a value ``None`` as null (W&B sweeps; ``ferlit.cli_values``).

        Options are matched whole: argparse's default, a unique prefix standing for an option,
        let a typo such as ``--trainer.max_step 3`` set ``trainer.max_steps`` unseen.

        A refusal prints one usage line, not the ~120 lines of every option's usage jsonargparse
        prints before it (the error line was lost below them); ``--help`` still lists them all.
        """
        parser = super().init_parser(
            **{"parser_mode": PARSER_MODE, "allow_abbrev": False, **kwargs}
        )

        def print_usage(file=None) -> None:
            (file or sys.stdout).write(f"usage: {parser.prog} [options]\n")

        parser.print_usage = print_usage
        return parser


def with_progress_bar(config: Namespace, class_path: str = RICH_PROGRESS_BAR) -> None:
    """Add a rich progress bar (``class_path``: Lightning's, or fit's :data:`STEP_PROGRESS_BAR`)
    to ``trainer.callbacks`` unless the bar is off or the user chose another."""
    callbacks = config.trainer.callbacks or []
    if config.trainer.enable_progress_bar is not False and not any(
        "ProgressBar" in str(c.get("class_path", "")) for c in callbacks
    ):
        config.trainer.callbacks = [*callbacks, Namespace(class_path=class_path)]


class FerlitCLI(StageCLI):
    """LightningCLI plus the paper's cadence, checkpointing and data-to-model links."""

    def __init__(self, *args, **kwargs) -> None:
        # LightningCLI's --optimizer / --lr_scheduler would replace configure_optimizers, i.e.
        # the two parameter groups, while config.yaml still recorded model.lr_head/lr_backbone:
        # ferlit refuses them (parse_arguments) and offers its own schedule (model.lr_schedule).
        super().__init__(*args, **{**kwargs, "auto_configure_optimizers": False})

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Refuse LightningCLI's ``--optimizer`` / ``--lr_scheduler``, on the command line or as
        keys of a ``--config`` file, with a message that says which options to use instead."""
        if isinstance(args, (dict, Namespace)):
            top = args if isinstance(args, dict) else args.as_dict()
            given, keys = [], [str(k).split(".")[0] for k in top]
        else:
            given = [str(a) for a in (sys.argv[1:] if args is None else args)]
            keys = [a[2:].split("=")[0].split(".")[0] for a in given if a.startswith("--")]
        for path in given_config_files(given):
            if os.path.isfile(path):
                try:
                    text = Path(path).read_bytes().decode("utf-8")
                except UnicodeDecodeError as e:  # jsonargparse lets this one out as a traceback
                    raise ConfigError(
                        f"--config {path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                        "expected a YAML file of options"
                    ) from None
                except OSError as e:
                    raise ConfigError(f"--config {path}: cannot be read ({e.strerror})") from None
                try:
                    loaded = yaml.safe_load(text)
                except yaml.YAMLError:
                    loaded = None  # jsonargparse reports a malformed config itself
                if isinstance(loaded, dict):
                    keys += [f"{k} (in {path})" for k in loaded if k in OPTIMIZER_OPTIONS]
        for key in keys:
            if key.split(" ")[0] in OPTIMIZER_OPTIONS:
                raise ConfigError(
                    f"--{key}: not available in ferlit, which trains with SGD and two learning "
                    "rates (the paper's recipe); set them with --model.lr_head, "
                    "--model.lr_backbone, --model.momentum, --model.weight_decay, and their "
                    "schedule with --model.lr_schedule warmup_cosine, --model.warmup_steps, "
                    "--model.min_lr_ratio"
                )
        super().parse_arguments(parser, args)
        seed = self.config.get("seed_everything")  # Lightning seeds before any other hook
        if seed is not None and not isinstance(seed, bool):
            check_number("seed_everything", seed, 0, MAX_SEED, integer=True)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--val_every_n_steps",
            type=int | None,
            default=None,
            help="Validate every N optimizer steps (the paper: 3920), whatever "
            "trainer.accumulate_grad_batches is. Overrides trainer.val_check_interval.",
        )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Checkpoint to resume from ('last' for the newest of this run's folder).",
        )
        parser.add_lightning_class_args(FerlitCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/criterion",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-step{step:07d}-criterion{val/criterion:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.save_on_train_epoch_end": False,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val/criterion",
                "early_stopping.mode": "max",
                "early_stopping.patience": 5,
                "early_stopping.check_on_train_epoch_end": False,
            }
        )
        parser.link_arguments("data.num_classes", "model.num_classes")
        parser.link_arguments("model.input_size", "data.image_size")
        parser.link_arguments("data.class_weights", "model.class_weights", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Check what can be checked before any data is read, and set the step cadence."""
        config = self.config
        backbone = config.model.backbone
        if not timm.is_model(backbone):
            close = timm.list_models(f"*{backbone.split('_')[-1][:6]}*")[:8]
            raise ConfigError(
                f"model.backbone: timm has no model named {backbone!r}"
                + (f" (similar: {', '.join(close)})" if close else "")
            )
        check_trainer_options(config)
        accumulate = config.trainer.accumulate_grad_batches
        limit = config.trainer.limit_train_batches
        if isinstance(limit, int) and not isinstance(limit, bool) and limit % accumulate:
            raise ConfigError(
                f"trainer.limit_train_batches {limit} is not a multiple of "
                f"trainer.accumulate_grad_batches {accumulate}: an epoch would end mid-step"
            )
        if isinstance(limit, float) and 0 < limit < 1 and accumulate > 1:
            callbacks = config.trainer.callbacks or []
            config.trainer.callbacks = [*callbacks, Namespace(class_path=WHOLE_STEP_EPOCHS)]
        n = config.val_every_n_steps
        if n is not None:
            if n <= 0:
                raise ConfigError(f"--val_every_n_steps must be a positive integer, got {n}")
            config.trainer.val_check_interval = n * accumulate
            config.trainer.check_val_every_n_epoch = None
        model = config.model
        check_schedule(
            model.lr_schedule, model.warmup_steps, model.min_lr_ratio, model.freeze_backbone_steps
        )
        check_model_options(
            model.num_classes,
            model.input_size,
            model.get("class_weights"),  # linked from the data when built: checked then
            model.lr_head,
            model.lr_backbone,
            model.momentum,
            model.weight_decay,
        )
        if model.pretrained is None and model.lr_backbone < FINE_TUNING_LR:
            print(
                f"warning: model.pretrained is null, so the backbone starts from random weights, "
                f"but model.lr_backbone {model.lr_backbone:g} is a fine-tuning rate (the paper's "
                "1e-6 is for VGGFace2 weights): pass --model.pretrained <senet50_ft_weight.pkl>, "
                f"or raise model.lr_backbone (>= {FINE_TUNING_LR:g}) to train it from scratch",
                file=sys.stderr,
            )
        config.checkpoint.dirpath = sweep_checkpoint_dir(config.checkpoint.dirpath)
        with_progress_bar(config, STEP_PROGRESS_BAR)
        data = config.data
        if data.affwild2_dir is None and data.expw_dir is None and data.packed_dir is None:
            from ferlit.data.sample import default_sample_dir

            Console(stderr=True).print(
                f"[bold]No data configured[/]: using ferlit's sample data at {default_sample_dir()} "
                "(drawn faces, not Aff-Wild2; set --data.affwild2_dir / --data.expw_dir for real data)"
            )


#: numpy's seeds, which ``seed_everything`` passes on: 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_precision(precision: object) -> None:
    """Refuse Transformer Engine's precisions (every stage: ``fit``, ``validate``, ``predict``).

    Lightning's TransformerEnginePrecision swaps nn.Linear (and LayerNorm) for FP8 layers; FP8
    GEMMs need dimensions divisible by 16 (NVIDIA/TransformerEngine#1422), and the only Linear of
    an SE-ResNet is the 7- or 8-way classifier. Without the package it was a raw
    ``ModuleNotFoundError``.
    """
    if str(precision).startswith("transformer-engine"):
        raise ConfigError(
            f"trainer.precision {precision}: Transformer Engine's FP8 replaces Linear "
            "layers only, and the one of ferlit's convolutional networks, the 7- or 8-way "
            "classifier, is too narrow for FP8 (multiples of 16); use bf16-mixed"
        )


def check_trainer_options(config: Namespace) -> None:
    """Refuse Trainer values that would end in a traceback from
    Lightning (for some only once the data is indexed), naming the option; ``seed_everything``
    is checked as it is parsed (``FerlitCLI.parse_arguments``), as Lightning seeds right after."""
    trainer = config.trainer
    check_number(
        "trainer.accumulate_grad_batches", trainer.accumulate_grad_batches, 1, integer=True
    )
    check_number("trainer.num_nodes", trainer.num_nodes, 1, integer=True)
    if trainer.enable_checkpointing is False:
        raise ConfigError(
            "trainer.enable_checkpointing false: ferlit's runs checkpoint through checkpoint.* "
            "(last.ckpt to resume, the best checkpoint for python -m ferlit.evaluate); to write "
            "none, leave trainer.enable_checkpointing and set --checkpoint.save_top_k 0 "
            "--checkpoint.save_last false"
        )
    for option in ("max_epochs", "min_epochs", "max_steps", "min_steps"):
        value = getattr(trainer, option, None)
        if value is not None:
            check_number(f"trainer.{option}", value, -1, integer=True)
    for option in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = getattr(trainer, option, None)
        if value is not None:  # Lightning's rule: a fraction in [0, 1], or whole batches
            check_number(f"trainer.{option}", value, 0)
            if value > 1 and value != int(value):
                raise ConfigError(
                    f"trainer.{option} must be a fraction in [0, 1] of the batches or a whole "
                    f"number of batches, got {value!r}"
                )
    if trainer.gradient_clip_val is not None:
        check_number("trainer.gradient_clip_val", trainer.gradient_clip_val, 0)
    check_precision(trainer.precision)
    # ferlit's checkpoint and early stopping callbacks are built after the data is indexed
    check_number("checkpoint.save_top_k", config.checkpoint.save_top_k, -1, integer=True)
    check_number("early_stopping.patience", config.early_stopping.patience, 0, integer=True)
    for option in ("checkpoint.mode", "early_stopping.mode"):
        if config[option] not in ("min", "max"):
            raise ConfigError(f"{option} must be min or max, got {config[option]!r}")
    # A text Lightning cannot parse (e.g. a W&B sweep's "None") was a TypeError traceback.
    devices = trainer.devices
    if isinstance(devices, str) and not re.fullmatch(r"auto|-?\d+|\d+(\s*,\s*\d+)*\s*,?", devices):
        raise ConfigError(
            "trainer.devices must be auto, a number of devices (-1: all) or device indices "
            f"('0,1' or [0, 1]), got {devices!r}"
        )


def check_run_folders(trainer: pl.Trainer) -> None:
    """Refuse folders the run cannot write now, not at its first checkpoint hours later."""
    folders = {"trainer.default_root_dir": trainer.default_root_dir}
    if trainer.loggers and trainer.loggers[0].save_dir:
        folders["trainer.logger.save_dir"] = trainer.loggers[0].save_dir
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
        folders["checkpoint.dirpath"] = callback.dirpath
    for option, folder in folders.items():
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{option} {folder}: cannot be created ({error.strerror})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {folder}: not writable by this user")


def check_config_destination(trainer: pl.Trainer, resuming: bool) -> None:
    """Without a logger there are no version folders: config.yaml goes to
    ``trainer.default_root_dir`` itself, where Lightning's SaveConfigCallback refuses to replace
    an earlier run's with a raw RuntimeError, after the data was read. Refused here instead,
    before any data is read; a resume continues that run, whose config.yaml it replaces."""
    if trainer.loggers:
        return
    for callback in trainer.callbacks:
        if not isinstance(callback, SaveConfigCallback) or callback.overwrite:
            continue
        path = Path(trainer.default_root_dir) / callback.config_filename
        if not path.exists():
            continue
        if resuming:
            callback.overwrite = True
            continue
        raise ConfigError(
            f"--trainer.logger false: the run's config goes to trainer.default_root_dir "
            f"{trainer.default_root_dir} itself (no version_N folders without a logger), which "
            f"holds an earlier run's {path}; give another --trainer.default_root_dir, or keep a "
            "logger (each run in a version_N folder of its own)"
        )


def resolved_config(cli: LightningCLI, defaults: bool = False) -> dict[str, Any]:
    """The run's options (with ``defaults``: the options' defaults), flattened
    (``model.lr_head``), as plain values a checkpoint can hold."""
    config = cli.parser.get_defaults() if defaults else cli.config
    return flat_config(yaml.safe_load(cli.parser.dump(config, skip_none=False)) or {})


def resume_command(args: list[str] | None, last: str | None) -> str:
    """The command that continues a stopped run: the same, with ``--ckpt_path <its last.ckpt>``."""
    argv = list(sys.argv[1:] if args is None else args)
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    last = os.path.abspath(last) if last else "last"
    command = shlex.join([sys.executable, "-m", "ferlit.fit", *kept, "--ckpt_path", last])
    return f"cd {shlex.quote(os.getcwd())} && {command}"


def main(args: list[str] | None = None, run: bool = True) -> FerlitCLI:
    """Build the CLI from ``args`` (default: sys.argv) and, with ``run``, train. A run refused
    with ``error: ...`` leaves no new empty run folder (``remove_new_empty_folders``)."""
    before = None
    try:
        cli = FerlitCLI(
            ExpressionModule,
            ExpressionDataModule,
            run=False,
            args=args,
            save_config_callback=WandbSaveConfig,
            seed_everything_default=0,
            trainer_defaults={
                "default_root_dir": "runs",
                "use_distributed_sampler": False,  # ferlit's samplers shard by rank themselves
                "logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs", "name": "ferlit"},
                },
                "callbacks": [BestValidationSummary(), WandbValidation(), Preemption()],
            },
            parser_kwargs={
                "prog": "python -m ferlit fit",  # not __main__.py / fit.py in its messages
                "description": __doc__.split("\n\n")[0],
            },
        )
        if run:
            before = run_folders_before(cli.trainer)
            check_run_folders(cli.trainer)
            if cli.trainer.overfit_batches:
                raise ConfigError(
                    "trainer.overfit_batches is not supported: Lightning replaces the training "
                    "sampler, and ferlit's resumable loader needs its own; use "
                    "--trainer.limit_train_batches N --trainer.limit_val_batches N instead"
                )
            config = resolved_config(cli)
            argv = list(sys.argv[1:] if args is None else args)
            cli.trainer.callbacks.append(RunRecord(config, argv))
            use_atomic_checkpoints(cli.trainer)
            ckpt_path = resume_checkpoint(
                cli.trainer, cli.config.ckpt_path, config, resolved_config(cli, defaults=True)
            )
            check_config_destination(cli.trainer, resuming=ckpt_path is not None)
            if ckpt_path is not None and is_debug_run(cli.trainer):
                raise ConfigError(
                    "--ckpt_path with trainer.fast_dev_run or trainer.overfit_batches: a debug "
                    "run writes no checkpoint, so it cannot continue a run"
                )
            try:
                # ferlit has read the file safely (resume_checkpoint); Lightning reads it again
                # and must not run code either (ferlit.models.checkpoints.SAFE_GLOBALS).
                cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
            except SIGTERMException:
                stop = next(c for c in cli.trainer.callbacks if isinstance(c, Preemption))
                names = "/".join(signal.Signals(s).name for s in stop.held) or "SIGTERM"
                print(
                    f"stopped by {names} after optimizer step {cli.trainer.global_step}; "
                    f"resumable checkpoint {stop.saved}: continue with --ckpt_path last, i.e.\n"
                    f"  {resume_command(args, stop.saved)}",
                    file=sys.stderr,
                )
                interrupted = stop.held and stop.held[0] == signal.SIGINT
                raise SystemExit(130 if interrupted else 143) from None
    except FerlitError as error:
        remove_new_empty_folders(before)
        print(f"error: {user_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except MisconfigurationException as error:  # e.g. a checkpoint.* or early_stopping.* value
        remove_new_empty_folders(before)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        remove_new_empty_folders(before)
        # What no check before the run foresees (a disk that fills, a folder made read-only while
        # the data is indexed): the file and the reason, as ferlit.data and ferlit.evaluate print
        # them. An OSError naming no file is not the user's input: a bug, shown whole.
        if not error.filename:
            raise
        where = f"{error.filename} -> {error.filename2}" if error.filename2 else error.filename
        print(f"error: {where}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(2) from None
    return cli


if __name__ == "__main__":
    with quiet_closed_stdout(), data_warnings_as_lines():
        main()
