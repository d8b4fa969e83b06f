"""``python -m ferlit STAGE``: the pipeline's stages on one command line (LightningCLI).

    python -m ferlit fit --config experiments/sample.yaml          # train
    python -m ferlit validate --ckpt_path runs/sample              # score the validation split
    python -m ferlit predict --ckpt_path runs/sample --out runs/sample-eval --smooth auto
    python -m ferlit data stats --data.affwild2_dir /data/Aff-Wild2

Every stage takes the ExpressionDataModule's options as ``--data.*`` and the Trainer's as
``--trainer.*``. ``fit`` is :mod:`ferlit.training.cli` (``python -m ferlit.fit`` is the same).
``validate`` and ``predict`` run a checkpoint of ``fit`` (``--ckpt_path``: a ``.ckpt``, or a run
folder: its best checkpoint, :func:`ferlit.training.runs.resolve_checkpoint`); the model is the
checkpoint's (weights, options and input preprocessing) and the data options default to those
it was trained with, so only what differs is given (on another machine, the data's path).
``predict`` is the evaluation: Lightning's predict stage on the same DataModule and Trainer,
written by :class:`ferlit.evaluation.writer.EvaluationWriter` (``python -m ferlit.evaluate`` is
a translation of its older spellings).
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.cli import LightningArgumentParser
from rich.console import Console
from rich.table import Table

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.errors import (
    ConfigError,
    FerlitError,
    user_message,
)
from ferlit.evaluation.evaluate import (
    check_destinations,
    check_submission_coverage,
    check_submission_options,
    smoothing_kernels,
)
from ferlit.evaluation.inference import model_from_checkpoint, read_checkpoint
from ferlit.evaluation.smoothing import check_window
from ferlit.evaluation.writer import Evaluation, EvaluationWriter, Submission
from ferlit.expressions import class_names, metric_key
from ferlit.training.cli import StageCLI, with_progress_bar
from ferlit.training.module import ExpressionModule
from ferlit.training.runs import resolve_checkpoint

STAGES = {
    "fit": "train a model (python -m ferlit.fit)",
    "validate": "score a checkpoint on the validation split and print the scores",
    "predict": "evaluate a checkpoint: predictions, metrics.json, plots, ABAW submission files",
    "data": "data tools: synth, stats, pack, check (python -m ferlit.data)",
}

#: The Trainer of a checkpoint's stage: nothing to log or checkpoint; ferlit's loaders shard by
#: rank themselves (no padding: every frame is predicted once).
TRAINER_DEFAULTS = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "use_distributed_sampler": False,
}


class CheckpointCLI(StageCLI):
    """The LightningCLI of a trained checkpoint (``validate``; :class:`PredictCLI`).

    Its options are the Trainer's, the DataModule's and ``--ckpt_path``; the model is read from
    the checkpoint (once: :func:`ferlit.evaluation.inference.read_checkpoint`), so it has no
    ``--model.*`` options. The arguments are parsed twice: once to find the checkpoint, then
    with the data options it was trained with as defaults.
    """

    stage = "validate"

    def __init__(self, args: list[str] | None = None, parse_only: bool = False) -> None:
        self.parse_only = parse_only  # the options as given: no checkpoint read, nothing built
        self.checkpoint: Path | None = None
        self.state: dict[str, Any] = {}
        super().__init__(
            ExpressionModule,
            ExpressionDataModule,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            run=False,
            args=args,
            auto_configure_optimizers=False,
            parser_kwargs={
                "prog": f"python -m ferlit {self.stage}",
                "description": f"{self.stage}: {STAGES[self.stage]}.",
            },
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items()})
        parser.add_lightning_class_args(self.datamodule_class, "data")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--ckpt_path",
            type=str,
            required=True,
            help="Checkpoint of python -m ferlit fit, or its run folder (runs/sample, or one "
            "version_N of it): the best checkpoint of its newest version.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        if self.parse_only:
            return
        self.checkpoint = resolve_checkpoint(self.config.ckpt_path)
        self.state = read_checkpoint(self.checkpoint)
        recorded = dict(self.state.get("datamodule_hyper_parameters") or {})
        known = set(self.config.data.keys())
        recorded["image_size"] = self.state["hyper_parameters"]["input_size"]
        parser.set_defaults({f"data.{k}": v for k, v in recorded.items() if k in known})
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        """The data must be what the model was trained for: its classes and its input size."""
        if self.parse_only:
            return
        model, data = self.state["hyper_parameters"], self.config.data
        num_classes, size = int(model["num_classes"]), int(model["input_size"])
        if data.num_classes != num_classes:
            raise ConfigError(
                f"--ckpt_path {self.checkpoint}: the model was trained for {num_classes} classes "
                f"({', '.join(class_names(num_classes))}) but --data.num_classes is "
                f"{data.num_classes}; use --data.num_classes {num_classes}"
            )
        if data.image_size != size:
            raise ConfigError(
                f"--data.image_size {data.image_size}: the model of --ckpt_path {self.checkpoint} "
                f"takes faces of {size}x{size} (its model.input_size); leave --data.image_size out"
            )
        with_progress_bar(self.config)

    def instantiate_classes(self) -> None:
        """The DataModule (nothing is read yet), the stage's checks, the Trainer, the model."""
        if self.parse_only:
            return
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self.config_init.data
        self.check_before_reading()
        self.trainer = self.instantiate_trainer()
        self.model = model_from_checkpoint(self.checkpoint, self.state)

    def check_before_reading(self) -> None:
        """Checks of the stage's own options, before any data is read (none for validate)."""


class PredictCLI(CheckpointCLI):
    """``python -m ferlit predict``: :class:`CheckpointCLI` plus the evaluation's options."""

    stage = "predict"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--out", type=str, required=True, help="Folder for the evaluation files."
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="Replace an earlier evaluation in --out."
        )
        parser.add_argument(
            "--smooth",
            type=int | Literal["auto"],
            default=0,
            help="Temporal smoothing window in frames (odd; 0 = off), or 'auto': kernel and "
            "window chosen on the validation split.",
        )
        parser.add_argument(
            "--smooth_kernel",
            type=Literal["box", "gaussian"] | None,
            default=None,
            help="Window weights: box (the mean) or gaussian (sigma = window / 6). Default: box "
            "for --smooth W; both tried for --smooth auto.",
        )
        parser.add_argument(
            "--submission",
            type=str | None,
            default=None,
            help="Write the ABAW submission into this folder: <video>.txt per video (2020/2022) "
            "or one predictions.txt (2023/2024, see --submission_format).",
        )
        parser.add_argument(
            "--submission_format",
            type=Literal["auto", "per_video", "single_file"],
            default="auto",
            help="per_video: <video>.txt with a line per frame of the video (ABAW 2020/2022); "
            "single_file: predictions.txt with a line per frame of --test_list (ABAW "
            "2023/2024); auto: single_file when --test_list is given.",
        )
        parser.add_argument(
            "--test_list",
            type=str | None,
            default=None,
            help="The organisers' test-set list of frames (<video>/00001.jpg per line) that a "
            "single-file submission follows, line by line.",
        )
        parser.add_argument(
            "--videos_dir",
            type=str | None,
            default=None,
            help="Folder of the test videos (<video>.mp4 or .avi): each per-video file gets a "
            "line per frame decoded from its video.",
        )
        parser.add_argument(
            "--frame_counts",
            type=str | None,
            default=None,
            help="CSV of video,frames: the frame count of each test video for per-video files.",
        )

    def check_before_reading(self) -> None:
        """Smoothing, output folders and submission options: refused before the frames are read
        and predicted (an hour or more on the real test set)."""
        c = self.config
        limit = c.trainer.limit_predict_batches
        if limit is not None and limit != 1.0:
            raise ConfigError(
                f"--trainer.limit_predict_batches {limit:g}: the evaluation predicts every frame "
                "(its scores and files cover them all); leave it out"
            )
        self.window = c.smooth if c.smooth == "auto" else check_window(c.smooth)
        self.kernels = smoothing_kernels(self.window, c.smooth_kernel)
        self.out = Path(c.out)
        self.submission_folder = Path(c.submission) if c.submission else None
        reads = [
            (f"--{o}" if o.startswith("data.") else o, f) for o, f in self.datamodule.data_folders()
        ]
        reads.append(("--videos_dir", c.videos_dir))
        check_destinations(self.out, self.submission_folder, c.overwrite, reads)
        self.submission_form = check_submission_options(submission_options(c))


def submission_options(config) -> Any:
    """The options :func:`ferlit.evaluation.evaluate.check_submission_options` reads."""
    from jsonargparse import Namespace

    return Namespace(
        submission=config.submission,
        submission_format=config.submission_format,
        test_list=config.test_list,
        videos_dir=config.videos_dir,
        frame_counts=config.frame_counts,
        frames_dir=config.data.frames_dir,
        split=config.data.predict_split,
    )


def predict(args: list[str] | None = None) -> dict[str, Any] | None:
    """``python -m ferlit predict``; returns the ``metrics.json`` content (rank 0; None on the
    other ranks)."""
    cli = PredictCLI(args)
    config, data = cli.config, cli.datamodule
    unlabelled = config.data.frames_dir is not None
    auto_on_val = cli.window == "auto" and (unlabelled or config.data.predict_split != "val")
    data.predict_targets = ["target", "val"] if auto_on_val else ["target"]
    index = data.predict_index("target")  # the frames are read here
    check_submission_coverage(submission_options(config), index, cli.submission_form)
    indexes = [index, data.predict_index("val")] if auto_on_val else [index]
    submission = None
    if cli.submission_form is not None:
        submission = Submission(
            folder=cli.submission_folder,
            form=cli.submission_form,
            labelled=not unlabelled,
            test_list=config.test_list,
            videos_dir=config.videos_dir,
            frame_counts=config.frame_counts,
        )
    writer = EvaluationWriter(
        Evaluation(
            checkpoint=cli.checkpoint,
            out=cli.out,
            overwrite=config.overwrite,
            indexes=indexes,
            described=data.predict_description("target"),
            context=data.predict_context("target"),
            window=cli.window,
            kernels=cli.kernels,
            auto_on_val=auto_on_val,
            submission=submission,
        )
    )
    cli.trainer.callbacks.append(writer)
    cli.trainer.predict(cli.model, datamodule=data, return_predictions=False)
    return writer.report


def validate(args: list[str] | None = None) -> dict[str, float] | None:
    """``python -m ferlit validate``: the checkpoint's scores on the validation split, computed
    by the training metric (``ExpressionModule.validation_step``) and printed as a table; returns
    them (``val/criterion``, ``val/f1``, ``val/acc``, ``val/f1_<class>``, ``val/loss``)."""
    cli = CheckpointCLI(args)
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    scores = dict(cli.model.last_val_scores)
    if cli.trainer.is_global_zero:
        print_scores(scores, cli.model, cli.checkpoint)
    return scores


def print_scores(scores: dict[str, float], model: ExpressionModule, checkpoint: Path) -> None:
    """The validation scores: per class its frames, F1 and accuracy (the share of its frames
    predicted right, from the confusion matrix), then macro-F1, accuracy, loss and the criterion,
    and the criterion's full value on a line of its own (to compare with
    ``best_validation.json``)."""
    confusion = model.last_val_confusion.double()
    frames = confusion.sum(dim=1)
    right = confusion.diagonal() / frames.clamp(min=1)
    console = Console()
    console.print(f"Validation split scores of {checkpoint}", soft_wrap=True, highlight=False)
    table = Table(title="Validation")
    for column in ("class", "frames", "F1", "accuracy"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for c, name in enumerate(model.class_names):
        f1 = scores[f"val/f1_{metric_key(name)}"]
        table.add_row(name, str(int(frames[c])), f"{f1:.4f}", f"{float(right[c]):.4f}")
    table.add_section()
    rows = [("val/f1", "macro-F1"), ("val/acc", "accuracy"), ("val/loss", "loss")]
    if not model.criterion_description.startswith("abaw2020"):
        rows.append(("val/abaw2020", "0.67 F1 + 0.33 acc"))  # the paper's formula, to compare
    rows.append(("val/criterion", "criterion"))
    for key, label in rows:
        table.add_row(label, "", f"{scores[key]:.4f}", "")
    console.print(table)
    console.print(f"criterion = {model.criterion_description}", soft_wrap=True, highlight=False)
    print(f"val/criterion {scores['val/criterion']!r}")


def run_stage(stage, args: list[str] | None, spelling: dict[str, str] | None = None) -> Any:
    """Run ``stage(args)``; bad input ends with ``error: ...`` and exit status 2. ``spelling``
    maps patterns of option names in the message to the names the user typed (``python -m
    ferlit.evaluate``)."""

    def say(message: str) -> None:
        for pattern, old in (spelling or {}).items():
            message = re.sub(rf"{pattern}\b", old, message)
        print(f"error: {message}", file=sys.stderr)

    try:
        return stage(args)
    except FerlitError as error:
        say(user_message(error))
        raise SystemExit(2) from None
    except BrokenPipeError:  # stdout closed by its reader: quiet_closed_stdout ends it
        raise
    except OSError as error:  # what the checks before predicting cannot foresee (a full disk)
        where = f"{error.filename}: " if error.filename else ""
        say(f"{where}{error.strerror or error}")
        raise SystemExit(2) from None


def stage_arguments_given() -> None:
    """A stage's LightningCLI is given its arguments (the command line less the stage's name)
    while ``sys.argv`` keeps them all, as it must: Lightning's DDP launcher starts the other
    processes with ``sys.argv``. LightningCLI warns when given both; here that is by design."""
    warnings.filterwarnings(
        "ignore", message="LightningCLI's args parameter is intended", category=UserWarning
    )


def usage() -> str:
    width = max(map(len, STAGES))
    lines = [f"  {name:<{width}}  {what}" for name, what in STAGES.items()]
    return (
        "usage: python -m ferlit {" + ",".join(STAGES) + "} [options]\n\n"
        "The pipeline's stages (python -m ferlit STAGE --help for a stage's options):\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> Any:
    """``python -m ferlit STAGE ...``: run a stage; exit status 2 for an unknown stage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stage_arguments_given()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        if not argv:
            raise SystemExit(2)
        return None
    stage, rest = argv[0], argv[1:]
    if stage == "fit":
        from ferlit.training.cli import main as fit

        return fit(rest)
    if stage == "validate":
        return run_stage(validate, rest)
    if stage == "predict":
        return run_stage(predict, rest)
    if stage == "data":
        from ferlit.data.__main__ import main as data

        raise SystemExit(data(rest))
    print(f"{usage()}\n\nerror: unknown stage {stage!r}", file=sys.stderr)
    raise SystemExit(2)
