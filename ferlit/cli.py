"""``python -m ferlit STAGE``: the pipeline's stages on one command line (LightningCLI).

    python -m ferlit fit --config experiments/sample.yaml          # train
    python -m ferlit validate --ckpt_path runs/sample              # score the validation split
    python -m ferlit predict --ckpt_path runs/sample --out runs/sample-eval --smooth auto
    python -m ferlit predict --ckpt_path runs/sample --input clip.mp4 --out clip-eval --smooth 15
    python -m ferlit data stats --data.affwild2_dir /data/Aff-Wild2
    python -m ferlit export --ckpt_path runs/sample --format onnx --out sample.onnx

Every stage takes the ExpressionDataModule's options as ``--data.*`` and the Trainer's as
``--trainer.*``. ``fit`` is :mod:`ferlit.training.cli` (``python -m ferlit.fit`` is the same).
``validate`` and ``predict`` run a checkpoint of ``fit`` (``--ckpt_path``: a ``.ckpt``, or a run
folder: its best checkpoint, :func:`ferlit.training.runs.resolve_checkpoint`); the model is the
checkpoint's (weights, options and input preprocessing) and the data options default to those
it was trained with, so only what differs is given (on another machine, the data's path).
``predict`` is the evaluation: Lightning's predict stage on the same DataModule and Trainer,
written by :class:`ferlit.evaluation.writer.EvaluationWriter` (``python -m ferlit.evaluate`` is
a translation of its older spellings). ``predict --input PATH`` instead runs the model on new
videos or photos (:mod:`ferlit.evaluation.media_predict`: faces detected, tracked and aligned,
a row per frame and face), without the DataModule or the Trainer.
"""

from __future__ import annotations

import os
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
    counted,
    user_message,
)
from ferlit.evaluation.evaluate import (
    check_destinations,
    check_submission_coverage,
    check_submission_options,
    smoothing_kernels,
)
from ferlit.evaluation.faces import DEFAULT_MAX_SIDE, DEFAULT_MIN_SCORE, DEFAULT_UPSAMPLE
from ferlit.evaluation.inference import model_from_checkpoint, read_checkpoint
from ferlit.evaluation.media_predict import (
    SKIPPED,
    check_media_outputs,
    predict_media,
    resolve_device,
    write_media_predictions,
)
from ferlit.evaluation.smoothing import check_window
from ferlit.evaluation.writer import Evaluation, EvaluationWriter, Submission
from ferlit.expressions import class_names, metric_key
from ferlit.metrics import summary_rows
from ferlit.training.cli import StageCLI, with_progress_bar
from ferlit.training.module import ExpressionModule
from ferlit.training.runs import resolve_checkpoint

STAGES = {
    "fit": "train a model (python -m ferlit.fit)",
    "validate": "score a checkpoint on the validation split and print the scores",
    "predict": "evaluate a checkpoint: predictions, metrics.json, plots, ABAW submission files "
    "(--input PATH: new videos or photos)",
    "data": "data tools: synth, stats, pack, check (python -m ferlit.data)",
    "export": "a checkpoint's model as one ONNX or TorchScript file (normalisation included)",
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
            seed_everything_default=False,  # nothing is drawn at random (refused if given)
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
        if self.config.get("seed_everything") is not False:  # 0 == False, so "is not"
            raise ConfigError(
                f"--seed_everything {self.config.seed_everything}: not used by {self.stage}, "
                "which draws nothing at random (no augmentation, the model in eval mode); "
                "leave it out"
            )
        first = os.environ.get("LOCAL_RANK", "0") == "0"  # said once, not per DDP process
        for key in ("affwild2_dir", "expw_dir", "packed_dir"):  # run on another machine
            folder = recorded.get(key)
            if (
                first
                and folder
                and self.config.data.get(key) == folder
                and not os.path.exists(folder)
            ):
                print(
                    f"note: data.{key} {folder} (the checkpoint's: the data it was trained on) "
                    f"does not exist here; give --data.{key} FOLDER to read it elsewhere",
                    file=sys.stderr,
                )

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
            "--tta",
            type=Literal["none", "flip"],
            default="none",
            help="Test-time augmentation: none, or flip (each face's probabilities averaged "
            "with its horizontal mirror's; twice the inference time).",
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
        media = "With --input: "
        parser.add_argument(
            "--input",
            type=str | None,
            default=None,
            help="New media instead of the DataModule's frames: a video, a folder of videos, an "
            "image or a folder of images (any names and sizes). Faces are detected, tracked and "
            "aligned as Aff-Wild2's cropped_aligned faces (ferlit.evaluation.faces); --out gets "
            "predictions.parquet/.csv (a row per frame and face) and a plot per video. The "
            "--data.* and submission options are refused with it.",
        )
        parser.add_argument(
            "--annotated_video",
            type=bool,
            default=False,
            help=media + "also write an annotated copy of each medium into --out (boxes, track "
            "ids and labels; annotated_<name>.mp4, or .png for a photo).",
        )
        parser.add_argument(
            "--face_upsample",
            type=int,
            default=DEFAULT_UPSAMPLE,
            help=media + "upsampling passes of dlib's HOG face detector (0: faces of 80 px and "
            "more; 1: down to ~40 px, ~4x slower; at most 3).",
        )
        parser.add_argument(
            "--face_min_score",
            type=float,
            default=DEFAULT_MIN_SCORE,
            help=media + "detections scoring below are dropped (HOG's SVM margin; real faces "
            "scored >= 0.91 and false detections <= 0.21 on the astronaut test frames).",
        )
        parser.add_argument(
            "--face_max_side",
            type=int | None,
            default=DEFAULT_MAX_SIDE,
            help=media + "frames whose longest side is larger are scaled down to it for "
            "detection (landmarks use the full frame); null: never.",
        )
        parser.add_argument(
            "--face_workers",
            type=int,
            default=0,
            help=media + "processes that detect faces (0: this one). dlib's detector uses one "
            "core (~7 frames/s at 640x480): N workers detect ~N times as many.",
        )
        parser.add_argument(
            "--track_max_unseen",
            type=int,
            default=10,
            help=media + "frames a face track survives without its face before a face there "
            "starts a new track.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        self.arguments = (
            list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        )
        super().parse_arguments(parser, args)

    def given(self, group: str) -> list[str]:
        """The options of ``group`` (``data``, ``trainer``) given on the command line or set to
        another value than their default (by a --config file)."""
        found = []
        for token in self.arguments:
            name = token[2:].split("=", 1)[0].rstrip("+") if token.startswith("--") else ""
            if name == group or name.startswith(f"{group}."):
                found.append(name)
        defaults = self.parser.get_defaults()[group]
        for key, value in self.config[group].items():
            if value != defaults.get(key) and not any(
                f == f"{group}.{key}" or f"{group}.{key}".startswith(f"{f}.") for f in found
            ):
                found.append(f"{group}.{key}")
        return found

    #: The options of --input alone.
    MEDIA_OPTIONS = (
        "annotated_video",
        "face_upsample",
        "face_min_score",
        "face_max_side",
        "face_workers",
        "track_max_unseen",
    )

    def before_instantiate_classes(self) -> None:
        if self.parse_only:
            return
        if self.config.input is not None:
            self.check_media_options()
            return
        defaults = self.parser.get_defaults()
        for name in self.MEDIA_OPTIONS:
            if self.config[name] != defaults[name] or any(
                t == f"--{name}" or t.startswith(f"--{name}=") for t in self.arguments
            ):
                raise ConfigError(f"--{name}: only used with --input PATH (new media)")
        super().before_instantiate_classes()

    def check_media_options(self) -> None:
        """With --input: the options that have no meaning for new media are refused, named."""
        c = self.config
        data = self.given("data")
        if data:
            raise ConfigError(
                f"--{data[0]}: not used with --input (the frames come from --input, the model's "
                "input size and classes from --ckpt_path); leave it out"
            )
        for name in ("submission", "test_list", "videos_dir", "frame_counts"):
            if c[name] is not None:
                raise ConfigError(
                    f"--{name}: not used with --input (ABAW submission files are for the "
                    "challenge's test videos); leave it out"
                )
        if c.submission_format != "auto":
            raise ConfigError("--submission_format: not used with --input; leave it out")
        if c.smooth == "auto":
            raise ConfigError(
                "--smooth auto: chooses the window on labelled frames, and --input has no "
                "labels; give a window in frames (--smooth 15) or leave it out"
            )
        honoured = {"trainer.accelerator", "trainer.enable_progress_bar"}
        trainer = [t for t in self.given("trainer") if t not in honoured]
        if trainer:
            raise ConfigError(
                f"--{trainer[0]}: not used with --input (faces are predicted in this process "
                "on one device; only --trainer.accelerator and --trainer.enable_progress_bar "
                "apply); leave it out"
            )
        self.device = resolve_device(c.trainer.accelerator)
        self.window = check_window(c.smooth)
        self.kernels = smoothing_kernels(self.window, c.smooth_kernel)
        check_media_outputs(c.out, c.input, c.overwrite)

    def instantiate_classes(self) -> None:
        """With --input: only the model (no DataModule, no Trainer: nothing of them is used)."""
        if self.parse_only or self.config.input is None:
            super().instantiate_classes()
            return
        self.datamodule = self.trainer = None
        self.model = model_from_checkpoint(self.checkpoint, self.state)

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
        self.check_auto_has_validation()
        self.out = Path(c.out)
        self.submission_folder = Path(c.submission) if c.submission else None
        reads = [
            (f"--{o}" if o.startswith("data.") else o, f) for o, f in self.datamodule.data_folders()
        ]
        reads.append(("--videos_dir", c.videos_dir))
        check_destinations(self.out, self.submission_folder, c.overwrite, reads)
        self.submission_form = check_submission_options(submission_options(c))

    def check_auto_has_validation(self) -> None:
        """``--smooth auto`` over ``data.frames_dir`` picks the window on the Aff-Wild2
        validation split, which needs ``data.affwild2_dir`` (or a pack): refused here, before
        the frames are read, naming the folder to give. A checkpoint of the sample data records
        no folder (frames alone never read the sample data), so the message names the sample's."""
        hp = self.datamodule.hparams
        if self.window != "auto" or hp.frames_dir is None or hp.affwild2_dir or hp.packed_dir:
            return
        recorded = self.state.get("datamodule_hyper_parameters") or {}
        hint = ""
        if all(recorded.get(k) is None for k in ("affwild2_dir", "expw_dir", "packed_dir")):
            from ferlit.data.sample import default_sample_dir

            hint = (
                " (the checkpoint was trained on ferlit's sample data: --data.affwild2_dir "
                f"{default_sample_dir() / 'affwild2'})"
            )
        raise ConfigError(
            "--smooth auto: chooses the window on the Aff-Wild2 validation split, and "
            f"data.affwild2_dir is not set; give --data.affwild2_dir{hint}, or a window "
            "(--smooth 15)"
        )


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
    other ranks), or with ``--input`` the media predictions table
    (:mod:`ferlit.evaluation.media_predict`)."""
    cli = PredictCLI(args)
    if cli.config.input is not None:
        return predict_input(cli)
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
            tta=config.tta,
        )
    )
    cli.model.tta = config.tta
    cli.trainer.callbacks.append(writer)
    cli.trainer.predict(cli.model, datamodule=data, return_predictions=False)
    return writer.report


def predict_input(cli: PredictCLI) -> Any:
    """``python -m ferlit predict --input PATH``: detect, align, predict, smooth, write."""
    from ferlit.errors import DataWarning
    from ferlit.evaluation.media import list_media

    c = cli.config
    table = predict_media(
        cli.model,
        c.input,
        smooth=cli.window,
        smooth_kernel=c.smooth_kernel,
        upsample=c.face_upsample,
        min_score=c.face_min_score,
        max_side=c.face_max_side,
        max_unseen=c.track_max_unseen,
        workers=c.face_workers,
        device=cli.device,
        progress=c.trainer.enable_progress_bar is not False,
        tta=c.tta,
    )
    with warnings.catch_warnings():  # the damaged files were named once, by predict_media
        warnings.simplefilter("ignore", DataWarning)
        media = list_media(c.input, [] if os.path.isdir(c.input) else None)
    written = write_media_predictions(
        table,
        c.out,
        cli.checkpoint.name,
        media,
        c.input,
        annotated=c.annotated_video,
        overwrite=c.overwrite,
    )
    faces = int(table["face"].sum())
    frames = table.drop_duplicates(["media", "frame"]).shape[0]
    tracks = int(table.loc[table["face"]].drop_duplicates(["media", "track"]).shape[0])
    Console().print(
        f"{table['media'].nunique()} media, {counted(frames, 'frame')}, "
        f"{counted(faces, 'face')} in {counted(tracks, 'track')}: "
        f"{counted(len(written), 'file')} written to {c.out}",
        soft_wrap=True,
        highlight=False,
    )
    skipped = [s["media"] for s in table.attrs.get("skipped", [])]
    if skipped:
        Console().print(
            f"{len(skipped)} damaged file(s) skipped (reasons in {Path(c.out) / SKIPPED}): "
            + ", ".join(skipped),
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    return table


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
    rows = summary_rows(model.val_criterion.challenge)
    rows.insert(2, ("loss", "loss"))  # validation's own: the predict stage reports no loss
    for key, label in rows:
        table.add_row(label, "", f"{scores[f'val/{key}']:.4f}", "")
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
    if stage == "export":
        from ferlit.evaluation.export import main as export

        return run_stage(export, rest)
    print(f"{usage()}\n\nerror: unknown stage {stage!r}", file=sys.stderr)
    raise SystemExit(2)
