"""``python -m ferlit.evaluate``: run a checkpoint over a split; write predictions, scores, plots.

    python -m ferlit.evaluate --ckpt runs/sample --out runs/sample-eval --smooth auto
    python -m ferlit.evaluate --ckpt best.ckpt --data.affwild2_dir /data/Aff-Wild2 \
        --out eval/val --submission eval/val-submission
    python -m ferlit.evaluate --ckpt best.ckpt --frames_dir /data/test/cropped_aligned \
        --smooth 15 --out eval/test --submission eval/test-submission --videos_dir /data/test/videos

``--ckpt`` is a checkpoint of ``python -m ferlit.fit``, or a log folder (``runs/sample``, or one
``version_N`` of it): then the best checkpoint of its newest version. The frames are the Aff-Wild2
validation split (``--split train`` for the training split), or with ``--frames_dir`` one or more
folders of unlabelled faces in the ``cropped_aligned`` layout (``frames_dir_index``; ABAW 2023+
test faces are split over ``cropped_aligned/`` and ``cropped_aligned_new_50_vids/``).
``--data.*`` are ``ferlit.fit``'s data options and default to those the checkpoint was trained
with. Written into ``--out``:

* ``predictions.parquet``: one row per frame: ``video``, ``frame``, ``target`` (-1 when unknown,
  as in the annotation files), ``pred``, ``prob_<class>`` per class, and ``pred_smoothed`` when
  smoothing is on. For an Aff-Wild2 split, every face image of its videos (unannotated frames
  too, target -1: :func:`face_frames_index`), so that smoothing sees them; scores count the
  frames with a target only;
* ``metrics.json``: criterion, F1, accuracy, per-class F1, precision, recall, support and the
  confusion matrix, raw and smoothed (computed by :mod:`ferlit.metrics`, as in training);
  ``criterion`` is the score of the run's challenge, named under ``"criterion"`` at the top
  (0.67 F1 + 0.33 accuracy for a 7-class run, mean F1 over 8 classes for an 8-class one);
* ``confusion_matrix.png`` and ``per_class_f1.png`` (labelled frames only);
* ``.ferlit-outputs.json``: the files ferlit wrote there (also in ``--submission``), the only
  ones ``--overwrite`` replaces (:mod:`ferlit.io`); every file is written whole or not at all.

``--smooth W`` averages class probabilities over a centred window of W frames per video, box or
Gaussian (``--smooth_kernel``, :mod:`ferlit.evaluation.smoothing`); ``--smooth auto`` picks kernel and W on
the validation set. ``--submission DIR`` writes the ABAW challenge files (:mod:`ferlit.evaluation.submission`):
``<video>.txt`` per video (2020/2022; test videos need ``--videos_dir`` or ``--frame_counts``) or
one ``predictions.txt`` following ``--test_list`` (2023/2024). Frames are sharded over the Trainer's
processes like validation and gathered on rank 0, which alone writes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from ferlit.cli_values import PARSER_MODE
from ferlit.data.cache import cached_read_affwild2
from ferlit.data.datamodule import ExpressionDataModule, FaceDataset
from ferlit.data.index import FRAME_FOLDER, FrameIndex
from ferlit.data.pack import PackedFaceDataset
from ferlit.data.readers.affwild2 import FRAMES_DIRS, _frames_on_disk, frame_file, read_affwild2
from ferlit.data.samplers import ShardSampler
from ferlit.data.transforms import build_transform
from ferlit.data.workers import exit_with_parent
from ferlit.errors import (
    ConfigError,
    DataError,
    FerlitError,
    WeightsError,
    data_warnings_as_lines,
    quiet_closed_stdout,
    user_message,
)
from ferlit.evaluation.inference import load_model
from ferlit.evaluation.plots import PAPER_F1_PER_CLASS, confusion_figure, per_class_f1_figure
from ferlit.evaluation.predictions import (
    criterion_of,
    labelled,
    predictions_frame,
    prob_columns,
    scores_json,
    scores_of,
)
from ferlit.evaluation.smoothing import (
    KERNELS,
    check_window,
    choose_smoothing,
    gaussian_sigma,
    smooth_predictions,
)
from ferlit.evaluation.submission import (
    SINGLE_FILE_NAME,
    annotation_frame_counts,
    find_video,
    frame_counts_from_videos,
    read_frame_counts,
    read_test_list,
    write_single_file,
    write_submission,
)
from ferlit.expressions import EXPRESSIONS_7, class_names
from ferlit.io import (
    atomic_write,
    check_creatable,
    check_output_folder,
    claim_outputs,
    owned_matching,
    remove_outputs,
)
from ferlit.models.checkpoints import load_checkpoint
from ferlit.training.module import ExpressionModule
from ferlit.training.runs import resolve_checkpoint

OUTPUTS = ("predictions.parquet", "metrics.json", "confusion_matrix.png", "per_class_f1.png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
console = Console()

# -- checkpoints -------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the DataModule's hyperparameters saved in a Lightning checkpoint, read
    without running code (:func:`ferlit.models.checkpoints.load_checkpoint`)."""
    state = load_checkpoint(path, mmap=True)
    if "hyper_parameters" not in state:
        raise WeightsError(
            f"{path}: not a Lightning checkpoint of ExpressionModule (no state_dict and "
            "hyper_parameters); expected a file written by python -m ferlit.fit"
        )
    model = dict(state["hyper_parameters"])
    data = dict(state.get("datamodule_hyper_parameters") or {})
    return model, data


# -- frames ------------------------------------------------------------------------------------


def frames_dir_index(
    frames_dir: str | os.PathLike | Sequence[str | os.PathLike], num_classes: int
) -> FrameIndex:
    """An unlabelled index (labels -1) of face images in the ``cropped_aligned`` layout.

    ``frames_dir/<video>/00001.jpg ...`` gives one video per sub-folder; image files directly in
    ``frames_dir`` are one video named after the folder. Frames are named by their 5-digit,
    1-based frame number as in Aff-Wild2 (the ABAW test set ships its faces so); files that are
    not images are ignored, an image named otherwise is an error.

    ``frames_dir`` may be a list of such folders: the ABAW 2023+ test faces come in two downloads
    (``batch1/cropped_aligned`` and ``batch2/cropped_aligned_new_50_vids`` in entrants' paths).
    A folder that holds ``cropped_aligned/`` or ``cropped_aligned_new_50_vids/`` (an Aff-Wild2
    root, or a download holding both) stands for those folders. A video found in two folders is
    an error naming both, as in the training data (``read_affwild2``).
    """
    given = [frames_dir] if isinstance(frames_dir, str | os.PathLike) else list(frames_dir)
    if not given:
        raise ConfigError("--frames_dir: an empty list; give one or more folders of face images")
    folders: list[Path] = []
    for path in map(Path, given):
        if not path.is_dir():
            raise DataError(f"{path}: --frames_dir is not a folder")
        inner = [path / d for d in FRAMES_DIRS if (path / d).is_dir()]
        folders += inner or [path]
    parts, seen = [], {}
    for folder in folders:
        index = _one_frames_dir(folder, num_classes)
        for name in index.group_names:
            where = Path(index.roots[0]) / name
            if name in seen:
                raise DataError(
                    f"video {name} is in two --frames_dir folders: {seen[name]} and {where}; "
                    "keep one of them"
                )
            seen[name] = where
        parts.append(index)
    return parts[0] if len(parts) == 1 else FrameIndex.concat(parts)


def _one_frames_dir(root: Path, num_classes: int) -> FrameIndex:
    """The index of one ``--frames_dir`` folder (see ``frames_dir_index``)."""
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = _frame_numbers(root)
    if subdirs and len(loose):
        raise DataError(
            f"{root}: holds both images and sub-folders; expected either <video>/00001.jpg ... "
            "or the frames of one video"
        )
    if len(loose):
        base, videos = root.parent, {root.name: loose}
    else:
        base, videos = root, {name: _frame_numbers(root / name) for name in subdirs}
    videos = {name: frames for name, frames in videos.items() if len(frames)}
    if not videos:
        raise DataError(
            f"{root}: no face images; expected <video>/00001.jpg ... (the cropped_aligned layout)"
        )
    frames = np.concatenate(list(videos.values()))
    groups = np.repeat(np.arange(len(videos)), [len(f) for f in videos.values()])
    return FrameIndex.build(
        root=base,
        num_classes=num_classes,
        group_names=list(videos),
        group_kinds=[FRAME_FOLDER] * len(videos),
        group_sources=list(videos),
        labels=np.full(len(frames), -1),
        groups=groups,
        frames=frames,
        lines=frames,
    )


def _frame_numbers(folder: Path) -> np.ndarray:
    numbers = []
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(".") or not entry.is_file() or not name.lower().endswith(IMAGE_SUFFIXES):
            continue
        stem = name.rsplit(".", 1)[0]
        if not (stem.isascii() and stem.isdigit() and name == frame_file(int(stem))):
            raise DataError(
                f"{folder / name}: not a frame file; expected 1-based frame numbers of 5 digits "
                "as in cropped_aligned (00001.jpg, 00002.jpg, ...)"
            )
        numbers.append(int(stem))
    return np.sort(np.asarray(numbers, np.int64))


def affwild2_index(data: ExpressionDataModule, split: str) -> FrameIndex:
    """One Aff-Wild2 split as the DataModule reads it (pack, index cache, sample data)."""
    hp = data.hparams
    if data.pack is not None:
        index = data.pack.index(f"affwild2_{split}")
    elif split == "val":
        index = data.val_index
    else:
        if data.uses_sample_data:
            from ferlit.data.sample.synth import ensure_sample_data

            root = ensure_sample_data().affwild2_dir
        else:
            root = hp.affwild2_dir
        if hp.index_cache:
            index = cached_read_affwild2(
                root, split, hp.num_classes, hp.affwild2_layout, cache_dir=hp.index_cache_dir
            )
        else:
            index = read_affwild2(root, split, hp.num_classes, hp.affwild2_layout)
    if len(index) == 0:
        skipped = ", ".join(f"{k} {v}" for k, v in index.skipped.items() if v) or "none"
        raise DataError(
            f"{index.roots[0]}: the Aff-Wild2 {split} split has no annotated frame with an image "
            f"in cropped_aligned/ (frames skipped: {skipped})"
        )
    return index


#: Highest frame number looked for among a video's face images: 5-digit names as shipped, plus
#: room for a sixth digit (a video of more than 99,999 frames, 55 minutes at 30 fps).
MAX_FRAME = 999_999


def face_frames_index(index: FrameIndex) -> FrameIndex | None:
    """Every face frame of an Aff-Wild2 split's videos, annotated or not, with its target.

    The smoothing window of an annotated frame should see its neighbours whether or not they
    are annotated: a frame labelled -1, or past the annotation file's last line, still has a
    face and a prediction. Here each video of ``index`` (the reader's annotated frames) gets a row
    for every frame image in its folder, in frame order, with the target the training metric
    uses: the label where it scores (the reader kept the frame), -1 elsewhere (unannotated,
    Other in a 7-class run, or past the last line). None when a video's folder or annotation file
    cannot be read (a pack moved away from its source): then only the annotated frames exist.
    """
    frames_parts, labels_parts, groups_parts = [], [], []
    for g in range(len(index.group_names)):
        root = index.roots[index.group_roots[g]]
        folder = os.path.join(root, str(index.group_names[g]))
        source = os.path.join(root, str(index.group_sources[g]))
        if index.group_kinds[g] != FRAME_FOLDER or not (
            os.path.isdir(folder) and os.path.isfile(source)
        ):
            return None
        faces = np.flatnonzero(_frames_on_disk(folder, MAX_FRAME)) + 1
        annotated = index.frames[index.groups == g]
        targets = np.full(len(faces), -1, np.int64)
        at = np.searchsorted(faces, annotated)
        if np.any(at >= len(faces)) or np.any(faces[np.minimum(at, len(faces) - 1)] != annotated):
            raise DataError(
                f"{folder}: frames of the index have no image any more; was the folder changed "
                "while evaluating?"
            )
        targets[at] = index.labels[index.groups == g]
        frames_parts.append(faces)
        labels_parts.append(targets)
        groups_parts.append(np.full(len(faces), g))
    if not frames_parts:
        return None
    frames = np.concatenate(frames_parts)
    return FrameIndex(
        roots=index.roots,
        num_classes=index.num_classes,
        labels=np.concatenate(labels_parts).astype(np.int8),
        groups=np.concatenate(groups_parts).astype(np.int32),
        frames=frames.astype(np.int32),
        boxes=np.full((len(frames), 4), -1, np.int32),
        lines=(frames + 1).astype(np.int32),  # frame k is line k + 1 (after the header)
        group_names=index.group_names,
        group_roots=index.group_roots,
        group_kinds=index.group_kinds,
        group_sources=index.group_sources,
        skipped=dict(index.skipped),
    )


def with_context(
    data: ExpressionDataModule, index: FrameIndex, part: str | None
) -> tuple[FrameIndex, str | None, str]:
    """The frames to predict for a labelled split: every face frame (:func:`face_frames_index`)
    read from the frame folders, or, from a pack (which holds the annotated frames only) or
    without readable folders, the annotated frames alone; and a note on which it is."""
    if part is None:
        return index, part, "every frame given (--frames_dir)"
    if data.pack is not None:
        return index, part, "annotated frames only: a pack holds no unannotated frame"
    every = face_frames_index(index)
    if every is None:
        return index, part, "annotated frames only: the frame folders could not be read"
    return every, None, "every face frame of the split's videos, annotated or not"


class EvaluationData(pl.LightningDataModule):
    """The faces to predict, sharded over the Trainer's processes as validation is."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(self.dataset), rank, world_size),
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=exit_with_parent,  # no worker outlives a killed evaluation
        )


def evaluation_data(
    data: ExpressionDataModule, index: FrameIndex, pack_part: str | None
) -> EvaluationData:
    hp = data.hparams
    transform = build_transform(hp.image_size, None)
    if pack_part is not None and data.pack is not None:
        dataset = PackedFaceDataset(
            [data.pack.frames_file(pack_part)], index.labels, None, transform
        )
    else:
        dataset = FaceDataset(index, transform, hp.expw_margin)
    return EvaluationData(dataset, hp.val_batch_size or hp.batch_size, hp.num_workers)


# -- prediction ------------------------------------------------------------------------------


def predict(
    trainer: pl.Trainer, module: ExpressionModule, data: EvaluationData
) -> np.ndarray | None:
    """Class probabilities (N x C, float32) in FrameIndex order on rank 0; None on other ranks."""
    outputs = trainer.predict(module, datamodule=data, return_predictions=True) or []
    samples = [o["sample"].cpu().numpy() for o in outputs]
    probs = [o["probs"].cpu().numpy() for o in outputs]
    if trainer.world_size > 1:
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, (samples, probs))
        if trainer.global_rank != 0:
            return None
        samples = [s for part in gathered for s in part[0]]
        probs = [p for part in gathered for p in part[1]]
    num_classes = module.hparams.num_classes
    samples = np.concatenate(samples) if samples else np.zeros(0, np.int64)
    probs = np.concatenate(probs) if probs else np.zeros((0, num_classes), np.float32)
    order = np.argsort(samples, kind="stable")
    if not np.array_equal(samples[order], np.arange(len(data.dataset))):
        raise RuntimeError(
            f"predicted {len(samples)} rows for {len(data.dataset)} frames: each frame must be "
            "predicted exactly once (trainer.limit_predict_batches?)"
        )
    return probs[order]


# -- the command -------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m ferlit.evaluate",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        parser_mode=PARSER_MODE,  # a value None is null, as in fit (ferlit.cli_values)
    )
    parser.add_argument(
        "--ckpt",
        type=str,
        required=True,
        help="Checkpoint of python -m ferlit.fit, or its log folder (its newest version's best).",
    )
    parser.add_argument("--out", type=str, required=True, help="Folder for the evaluation files.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an earlier evaluation in --out."
    )
    parser.add_argument(
        "--split", type=Literal["val", "train"], default="val", help="The Aff-Wild2 split."
    )
    parser.add_argument(
        "--frames_dir",
        type=list[str] | str | None,
        default=None,
        help="Evaluate unlabelled faces in the cropped_aligned layout instead of a split: a "
        "folder, or a list of them ('[batch1/cropped_aligned, batch2/cropped_aligned_new_50_vids]'"
        "); a folder holding cropped_aligned/ and cropped_aligned_new_50_vids/ reads both.",
    )
    parser.add_argument(
        "--smooth",
        type=int | Literal["auto"],
        default=0,
        help="Temporal smoothing window in frames (odd; 0 = off), or 'auto': kernel and window "
        "chosen on the validation set.",
    )
    parser.add_argument(
        "--smooth_kernel",
        type=Literal["box", "gaussian"] | None,
        default=None,
        help="Window weights: box (the mean) or gaussian (sigma = window / 6). Default: box for "
        "--smooth W; both tried for --smooth auto.",
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
        "single_file: predictions.txt with a line per frame of --test_list (ABAW 2023/2024); "
        "auto: single_file when --test_list is given.",
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
        help="Folder of the test videos (<video>.mp4 or .avi): each per-video file gets a line "
        "per frame decoded from its video.",
    )
    parser.add_argument(
        "--frame_counts",
        type=str | None,
        default=None,
        help="CSV of video,frames: the frame count of each test video for per-video files.",
    )
    parser.add_class_arguments(ExpressionDataModule, "data", skip={"image_size"})
    parser.add_argument("--trainer.accelerator", type=str, default="auto")
    parser.add_argument("--trainer.devices", type=int | str | list[int], default="auto")
    parser.add_argument("--trainer.strategy", type=str, default="auto")
    parser.add_argument("--trainer.num_nodes", type=int, default=1)
    parser.add_argument("--trainer.precision", type=str | None, default=None)
    parser.add_argument("--trainer.enable_progress_bar", type=bool, default=True)
    return parser


def parse_args(args: list[str] | None = None) -> tuple[Any, Path, dict[str, Any]]:
    """The options, the checkpoint file and its model hyperparameters.

    Parsed twice: once to find the checkpoint, then with the data options it was trained with as
    defaults, so that ``--data.*`` only needs what differs (e.g. the data's path here).
    """
    parser = build_parser()
    config = parser.parse_args(args)
    checkpoint = resolve_checkpoint(config.ckpt)
    model_hparams, data_hparams = read_checkpoint(checkpoint)
    known = set(config.data.keys())
    parser.set_defaults({f"data.{k}": v for k, v in data_hparams.items() if k in known})
    return parser.parse_args(args), checkpoint, model_hparams


def check_destinations(
    out: Path, submission: Path | None, overwrite: bool, reads: list[tuple[str, Any]] | None = None
) -> None:
    """Check the output folders before predicting: neither may be a file or overlap the data
    folders ``reads`` ((option, folder) pairs); neither may hold a file ferlit did not write that it
    would replace (``--overwrite`` replaces only ferlit's own, see :mod:`ferlit.io`); and an
    earlier evaluation or submission is replaced only with ``--overwrite``."""
    check_creatable(out, "--out")
    if submission is not None:
        check_creatable(submission, "--submission")
    earlier = check_output_folder(out, "--out", OUTPUTS, reads=reads)
    if earlier and not overwrite:
        raise ConfigError(
            f"--out {out}: holds an earlier evaluation ({', '.join(earlier)}); choose another "
            "folder or pass --overwrite"
        )
    if submission is None:
        return
    earlier = check_output_folder(submission, "--submission", pattern="*.txt", reads=reads)
    if earlier and not overwrite:
        raise ConfigError(
            f"--submission {submission}: holds earlier submission files; choose another folder "
            "or pass --overwrite"
        )


def data_folders(config) -> list[tuple[str, Any]]:
    """The folders an evaluation reads (option, folder), which its outputs must stay out of."""
    d = config.data
    reads = [
        ("--data.affwild2_dir", d.affwild2_dir),
        ("--data.expw_dir", d.expw_dir),
        ("--data.packed_dir", d.packed_dir),
        ("--videos_dir", config.videos_dir),
    ]
    frames_dirs = config.frames_dir
    for folder in frames_dirs if isinstance(frames_dirs, list) else [frames_dirs]:
        reads.append(("--frames_dir", folder))
    if d.affwild2_dir is None and d.expw_dir is None and d.packed_dir is None:
        from ferlit.data.sample.synth import default_sample_dir

        reads.append(("the sample data", default_sample_dir()))
    return reads


def frames_to_evaluate(config, data: ExpressionDataModule) -> tuple[FrameIndex, str | None, str]:
    """The index of the frames to evaluate, its pack part (if read from one), and its name."""
    if config.frames_dir is not None:
        index = frames_dir_index(config.frames_dir, config.data.num_classes)
        given = config.frames_dir if isinstance(config.frames_dir, list) else [config.frames_dir]
        return index, None, f"{', '.join(given)} (unlabelled)"
    index = affwild2_index(data, config.split)
    if data.pack is not None:
        described = f"Aff-Wild2 {config.split} from the pack {config.data.packed_dir}"
    elif data.uses_sample_data:
        described = f"ferlit sample data (drawn faces, not Aff-Wild2), {config.split} split"
    else:
        described = f"Aff-Wild2 {config.split}, {index.roots[0]}"
    return index, f"affwild2_{config.split}", described


def check_submission_options(config) -> str | None:
    """The submission format to write (None: no submission), its options checked together.

    A per-video file has a line per frame of its video: the annotation files give that count for
    a labelled split; test videos (``--frames_dir``) need ``--videos_dir`` or ``--frame_counts``,
    since the face images cannot tell how many frames follow the last face.
    """
    given = [f"--{o}" for o in ("test_list", "videos_dir", "frame_counts") if config.get(o)]
    if config.submission is None:
        if given or config.submission_format != "auto":
            option = given[0] if given else f"--submission_format {config.submission_format}"
            raise ConfigError(f"{option}: only used with --submission DIR")
        return None
    form = config.submission_format
    if form == "auto":
        form = "single_file" if config.test_list else "per_video"
    if form == "single_file":
        if not config.test_list:
            raise ConfigError(
                "--submission_format single_file: needs --test_list FILE, the organisers' list "
                "of test frames (<video>/00001.jpg per line) that the file follows line by line"
            )
        extra = [o for o in given if o != "--test_list"]
        if extra:
            raise ConfigError(
                f"{extra[0]}: not used by a single-file submission, whose lines are those of "
                "--test_list; it is for --submission_format per_video"
            )
        read_test_list(config.test_list)  # a bad list stops before the frames are predicted
        return form
    if config.test_list:
        raise ConfigError(
            "--test_list: only for --submission_format single_file (ABAW 2023/2024); per-video "
            "files take their frame counts from --videos_dir or --frame_counts"
        )
    if config.videos_dir and config.frame_counts:
        raise ConfigError("--videos_dir and --frame_counts: give one source of frame counts")
    if config.frames_dir is None and (config.videos_dir or config.frame_counts):
        raise ConfigError(
            f"{given[0]}: the annotation files give the frame counts of the labelled "
            f"{config.split} split; it is for test videos (--frames_dir)"
        )
    if config.frames_dir is not None and not (config.videos_dir or config.frame_counts):
        raise ConfigError(
            "--submission: per-video files need each test video's frame count, which the face "
            "images cannot tell (frames after the last face have no image); give --videos_dir "
            "DIR (the videos: frames decoded with OpenCV) or --frame_counts FILE (CSV "
            "video,frames)"
        )
    if config.frame_counts:
        read_frame_counts(config.frame_counts)
    if config.videos_dir and not Path(config.videos_dir).is_dir():
        raise ConfigError(f"--videos_dir {config.videos_dir}: no such folder")
    return form


def check_submission_coverage(config, index: FrameIndex, form: str | None) -> None:
    """Stop before predicting (an hour or more on the real test set) when the submission could
    not be written from these faces: a video of ``--test_list`` without any face image to
    predict, a ``--frames_dir`` video missing from ``--frame_counts`` or with a face image past
    the frame count given there, a ``--frames_dir`` video without a file in ``--videos_dir``.
    The same checks run again as the files are written (``ferlit.evaluation.submission``)."""
    if form is None:
        return
    videos = np.asarray([os.path.basename(str(g)) for g in index.group_names], dtype=object)
    highest = np.zeros(len(videos), np.int64)
    np.maximum.at(highest, index.groups, index.frames)
    faces = dict(zip(videos.tolist(), highest.tolist(), strict=True))
    if form == "single_file":
        listed = dict.fromkeys(read_test_list(config.test_list)[0].tolist())
        missing = [video for video in listed if video not in faces]
        if missing:
            raise DataError(
                f"{config.test_list}: video {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                + " listed but without any face image to predict; check --frames_dir holds "
                + ("their folders" if len(missing) > 1 else "its folder")
            )
    elif config.frames_dir is not None and config.frame_counts:
        counts = read_frame_counts(config.frame_counts)
        missing = sorted(video for video in faces if video not in counts)
        if missing:
            raise DataError(
                f"{config.frame_counts}: no frame count for video {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                + " of --frames_dir"
            )
        for video, frame in faces.items():
            if frame > counts[video]:
                raise DataError(
                    f"{config.frame_counts}: video {video} has {counts[video]} frames there but "
                    f"a face image of frame {frame} in --frames_dir; a wrong count, or the faces "
                    "of another video?"
                )
    elif config.frames_dir is not None and config.videos_dir:
        for video in faces:
            find_video(config.videos_dir, video)


def smoothing_kernels(window: int | str, kernel: str | None) -> tuple[str, ...]:
    """The kernels to smooth with: ``--smooth_kernel``'s, or box for a fixed window and both
    for ``--smooth auto``; a kernel without smoothing is refused rather than ignored."""
    if kernel is not None and window != "auto" and window <= 1:
        raise ConfigError(
            f"--smooth_kernel {kernel}: smoothing is off (--smooth {window}); give a window "
            "(--smooth 15) or --smooth auto"
        )
    if kernel is not None:
        return (kernel,)
    return KERNELS if window == "auto" else ("box",)


def evaluation_trainer(t: Any) -> pl.Trainer:
    """The prediction Trainer of ``--trainer.*``; a value Lightning refuses (``num_nodes 0``,
    ``precision 7``, an unknown accelerator) is a ConfigError quoting its message."""
    try:
        return pl.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            num_nodes=t.num_nodes,
            precision=t.precision,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=t.enable_progress_bar,
            callbacks=[RichProgressBar()] if t.enable_progress_bar else [],
            use_distributed_sampler=False,  # EvaluationData shards by rank itself, no padding
        )
    except (ValueError, MisconfigurationException) as error:
        raise ConfigError(f"trainer options: {error}") from None


def evaluate(args: list[str] | None = None) -> dict[str, Any] | None:
    """Run ``python -m ferlit.evaluate`` with ``args``; returns the metrics.json content (rank 0)."""
    config, checkpoint, model_hparams = parse_args(args)
    window = config.smooth if config.smooth == "auto" else check_window(config.smooth)
    kernels = smoothing_kernels(window, config.smooth_kernel)
    out = Path(config.out)
    submission = Path(config.submission) if config.submission else None
    check_destinations(out, submission, config.overwrite, data_folders(config))
    submission_format = check_submission_options(config)
    num_classes = int(model_hparams["num_classes"])
    if num_classes != config.data.num_classes:
        raise ConfigError(
            f"--ckpt {checkpoint}: the model was trained for {num_classes} classes "
            f"({', '.join(class_names(num_classes))}) but --data.num_classes is "
            f"{config.data.num_classes}; evaluate with --data.num_classes {num_classes}"
        )
    names = class_names(num_classes)
    data = ExpressionDataModule(**config.data.as_dict(), image_size=model_hparams["input_size"])
    trainer = evaluation_trainer(config.trainer)  # its options refused before any indexing
    index, split_part, described = frames_to_evaluate(config, data)
    index, part, context = with_context(data, index, split_part)
    check_submission_coverage(config, index, submission_format)
    module = load_model(checkpoint)  # on the CPU, in eval mode (the Trainer moves it)

    auto_on_val = window == "auto" and split_part != "affwild2_val"
    if auto_on_val:
        val_index, val_part, _ = with_context(data, affwild2_index(data, "val"), "affwild2_val")
        val_probs = predict(trainer, module, evaluation_data(data, val_index, val_part))
    probs = predict(trainer, module, evaluation_data(data, index, part))
    if probs is None:
        return None  # another rank: rank 0 writes
    predictions = predictions_frame(index, probs, names)

    search = None
    kernel = kernels[0]
    if window == "auto":
        chosen_on = "the validation split" if auto_on_val else "these frames (optimistic)"
        choice = predictions_frame(val_index, val_probs, names) if auto_on_val else predictions
        if not (choice["target"] >= 0).any():
            raise DataError(f"--smooth auto: {described} has no labelled frame to choose on")
        kernel, window, search = choose_smoothing(
            choice["video"].to_numpy(),
            choice["frame"].to_numpy(),
            choice[prob_columns(choice)].to_numpy(),
            choice["target"].to_numpy(),
            kernels=kernels,
        )
        console.print(
            f"--smooth auto: {kernel} window {window} frames, the best criterion on {chosen_on} "
            f"(raw {search[kernel][1]:.4f}, smoothed {search[kernel][window]:.4f})"
        )
    else:
        chosen_on = "--smooth"
    columns = ("pred",)
    if window > 1:
        predictions["pred_smoothed"] = smooth_predictions(
            predictions["video"].to_numpy(),
            predictions["frame"].to_numpy(),
            predictions[prob_columns(predictions)].to_numpy(),
            window,
            kernel,
        ).astype(np.int8)
        columns = ("pred", "pred_smoothed")

    has_labels = bool((predictions["target"] >= 0).any())
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "data": described,
        "classes": list(names),
        **criterion_of(num_classes),
        "frames": len(predictions),
        "videos": int(predictions["video"].nunique()),
        "labelled_frames": len(labelled(predictions)),
        "smoothing": {
            "window": window,
            "kernel": kernel if window > 1 else None,
            "sigma": gaussian_sigma(window) if window > 1 and kernel == "gaussian" else None,
            "chosen_by": chosen_on,
            "context": context,
            "criterion_by_window": search,
        },
        "raw": scores_json(scores_of(predictions), names) if has_labels else None,
        "smoothed": (
            scores_json(scores_of(predictions, "pred_smoothed"), names)
            if has_labels and window > 1
            else None
        ),
    }
    write_outputs(out, predictions, report, names, columns, config.overwrite)
    print_report(report, names)
    if submission is not None:
        write_submission_files(
            submission, predictions, index, columns[-1], num_classes, config, submission_format
        )
    return report


def write_outputs(
    out: Path,
    predictions: pd.DataFrame,
    report: dict[str, Any],
    names: tuple[str, ...],
    columns: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Write the evaluation files, each whole or not at all (:func:`ferlit.io.atomic_write`),
    listed as ferlit's in the folder's ``.ferlit-outputs.json`` before they are written."""
    claim_outputs(out, OUTPUTS)
    if overwrite:  # no stale plot beside unlabelled predictions; only files ferlit wrote
        remove_outputs(out, OUTPUTS)
    _replace(out / "predictions.parquet", lambda f: predictions.to_parquet(f, index=False))
    _replace(out / "metrics.json", lambda f: f.write(json.dumps(report, indent=2).encode() + b"\n"))
    if report["raw"] is None:
        return
    title = f"{report['data']}\n{Path(report['checkpoint']).name}"
    confusion = np.asarray(report["raw"]["confusion"])
    figure = confusion_figure(confusion, names, title=f"Confusion matrix (row-normalised): {title}")
    _replace(out / "confusion_matrix.png", lambda f: figure.savefig(f, format="png", dpi=120))
    series = {"raw": list(report["raw"]["f1_per_class"].values())}
    if report["smoothed"] is not None:
        label = f"smoothed, W={report['smoothing']['window']}"
        series[label] = list(report["smoothed"]["f1_per_class"].values())
    # The paper's per-class F1 is a yardstick for Aff-Wild2 only, not for the sample data.
    real = names == EXPRESSIONS_7 and not report["data"].startswith("ferlit sample data")
    reference = PAPER_F1_PER_CLASS if real else None
    bars = per_class_f1_figure(series, names, reference, title=f"Per-class F1: {title}")
    _replace(out / "per_class_f1.png", lambda f: bars.savefig(f, format="png", dpi=120))


def _replace(path: Path, write) -> None:
    with atomic_write(path) as file:
        write(file)


def print_report(report: dict[str, Any], names: tuple[str, ...]) -> None:
    """The per-class and overall scores, raw and smoothed side by side."""
    console.print(
        f"{report['frames']} frames of {report['videos']} videos from {report['data']}; "
        f"checkpoint {report['checkpoint']}"
    )
    raw, smoothed = report["raw"], report["smoothed"]
    if raw is None:
        console.print("No labels: no scores (predictions written).")
        return
    window = report["smoothing"]["window"]
    table = Table(
        title="Evaluation" + (f" (smoothed: window {window} frames)" if smoothed else ""),
        caption="precision and recall unsmoothed; all scores in metrics.json" if smoothed else None,
    )
    for column in ("class", "frames", "F1", *(["F1 smoothed"] if smoothed else [])):
        table.add_column(column, justify="left" if column == "class" else "right")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    for name in names:
        f1 = [raw["f1_per_class"][name]] + ([smoothed["f1_per_class"][name]] if smoothed else [])
        cells = [name, str(raw["support"][name]), *(f"{v:.4f}" for v in f1)]
        table.add_row(*cells, f"{raw['precision'][name]:.4f}", f"{raw['recall'][name]:.4f}")
    table.add_section()
    rows = [("f1", "macro-F1"), ("acc", "accuracy")]
    if report["challenge"] != "abaw2020":
        rows.append(("abaw2020", "0.67 F1 + 0.33 acc"))  # the paper's formula, to compare
    rows.append(("criterion", f"criterion ({report['challenge']})"))
    for key, label in rows:
        values = [raw[key]] + ([smoothed[key]] if smoothed else [])
        table.add_row(label, "", *(f"{v:.4f}" for v in values))
    console.print(table)
    console.print(f"criterion = {report['criterion']}", soft_wrap=True, highlight=False)


def write_submission_files(
    folder: Path,
    predictions: pd.DataFrame,
    index: FrameIndex,
    column: str,
    num_classes: int,
    config,
    form: str,
) -> None:
    """The ABAW submission of ``column``'s labels in format ``form`` (see
    :func:`check_submission_options`)."""
    if config.overwrite and folder.is_dir():  # only the files ferlit wrote there
        remove_outputs(folder, owned_matching(folder, "*.txt"))
    videos = predictions["video"].to_numpy().astype(str)
    frames = predictions["frame"].to_numpy()
    labels = predictions[column].to_numpy()
    if form == "single_file":
        path = folder / SINGLE_FILE_NAME
        lines = write_single_file(path, config.test_list, videos, frames, labels)
        note = "" if num_classes == 8 else " (a 7-class model: Other is never predicted)"
        console.print(f"Wrote {path}: {lines} frames of {config.test_list} ({column}){note}")
        return
    keep = np.ones(len(frames), bool)
    if config.frames_dir is None:
        num_frames = annotation_frame_counts(index)
        source = "annotation files"
        # Faces past an annotation file's last line have no line in its video's file.
        keep = frames <= np.asarray([num_frames[v] for v in videos])
    elif config.frame_counts:
        num_frames = read_frame_counts(config.frame_counts)
        source = str(config.frame_counts)
        missing = sorted(set(videos) - set(num_frames))
        if missing:
            raise DataError(
                f"{config.frame_counts}: no frame count for video {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        faceless = sorted(set(num_frames) - set(videos))
        if faceless:  # no label to fill their files with: said, not silently left out
            console.print(
                f"[yellow]No file for {len(faceless)} video(s) of {config.frame_counts} with no "
                f"face image in --frames_dir: {', '.join(faceless[:5])}[/yellow]"
            )
    else:
        highest = predictions.groupby("video", observed=True)["frame"].max()
        num_frames = frame_counts_from_videos(config.videos_dir, highest.astype(int).to_dict())
        source = f"videos in {config.videos_dir}"
    files = write_submission(
        folder, videos[keep], frames[keep], labels[keep], num_classes, num_frames
    )
    dropped = int((~keep).sum())
    past = f"; {dropped} face frames past their annotation's last line left out" if dropped else ""
    console.print(
        f"Wrote {len(files)} submission files ({column}; frame counts from the {source}{past}) "
        f"to {folder}"
    )


def main(args: list[str] | None = None) -> dict[str, Any] | None:
    """``python -m ferlit.evaluate``; bad input ends with ``error: ...`` and exit status 2."""
    try:
        return evaluate(args)
    except FerlitError as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:  # stdout closed by its reader: quiet_closed_stdout ends it
        raise
    except OSError as error:  # what the checks before predicting cannot foresee (a full disk)
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    with quiet_closed_stdout(), data_warnings_as_lines():
        main()
