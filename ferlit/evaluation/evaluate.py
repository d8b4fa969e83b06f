"""``python -m ferlit.evaluate``: ``python -m ferlit predict`` in its first spellings, and the
evaluation's option checks.

    python -m ferlit.evaluate --ckpt runs/sample --out runs/sample-eval --smooth auto
    python -m ferlit.evaluate --ckpt best.ckpt --data.affwild2_dir /data/Aff-Wild2 \
        --out eval/val --submission eval/val-submission
    python -m ferlit.evaluate --ckpt best.ckpt --frames_dir /data/test/cropped_aligned \
        --smooth 15 --out eval/test --submission eval/test-submission --videos_dir /data/test/videos

are ``python -m ferlit predict`` (:mod:`ferlit.cli`) with ``--ckpt`` -> ``--ckpt_path``,
``--split`` -> ``--data.predict_split`` and ``--frames_dir`` -> ``--data.frames_dir``
(:data:`RENAMED`); every other option is the same, and an error message names the options as
typed. What is written into ``--out`` is described in :mod:`ferlit.evaluation.writer`; the
frames predicted (an Aff-Wild2 split's every face frame, or unlabelled face folders) in
``ExpressionDataModule.predict_index``.

The checks below run before any frame is read: output folders (:func:`check_destinations`),
submission options (:func:`check_submission_options`), smoothing (:func:`smoothing_kernels`);
:func:`check_submission_coverage` once the frames are indexed, before they are predicted.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ferlit.data.index import FrameIndex
from ferlit.errors import (
    ConfigError,
    DataError,
    data_warnings_as_lines,
    listed,
    quiet_closed_stdout,
)
from ferlit.evaluation.smoothing import KERNELS
from ferlit.evaluation.submission import find_video, read_frame_counts, read_test_list
from ferlit.evaluation.writer import OUTPUTS
from ferlit.io import check_creatable, check_output_folder

#: The options of ``python -m ferlit.evaluate`` that ``python -m ferlit predict`` names otherwise.
RENAMED = {
    "--ckpt": "--ckpt_path",
    "--split": "--data.predict_split",
    "--frames_dir": "--data.frames_dir",
}

#: What each option of :data:`RENAMED` names, for :func:`given_once`'s message.
GIVEN_ONCE = {"--ckpt": "the checkpoint", "--split": "the split", "--frames_dir": "the folders"}


def translate(args: list[str]) -> list[str]:
    """``python -m ferlit.evaluate``'s arguments as ``python -m ferlit predict``'s
    (``--ckpt X``, ``--ckpt=X``, and jsonargparse's list append ``--frames_dir+ X``)."""
    translated = []
    for arg in args:
        name, sep, value = arg.partition("=")
        append = "+" if name.endswith("+") else ""
        new = RENAMED.get(name.removesuffix("+"))
        translated.append(f"{new}{append}{sep}{value}" if new else arg)
    return translated


def given_once(args: list[str]) -> None:
    """Refuse an option of :data:`RENAMED` given in both its spellings (``--ckpt A --ckpt_path
    B``): the translation would hand predict both and the last would win, unsaid."""
    values: dict[str, list[tuple[str, str]]] = {}
    names = {name: old for old, new in RENAMED.items() for name in (old, new)}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg.partition("=")
        old = names.get(name.removesuffix("+"))
        if old is None:
            continue
        value = value if sep else (args[i + 1] if i + 1 < len(args) else "")
        values.setdefault(old, []).append((name.removesuffix("+"), value))
    for old, seen in values.items():
        spellings = list(dict.fromkeys(name for name, _ in seen))
        if len(spellings) > 1:
            given = ", ".join(value for _, value in seen)
            raise ConfigError(
                f"{spellings[0]} and {spellings[1]} both given ({given}): give {GIVEN_ONCE[old]} once"
            )


def main(args: list[str] | None = None) -> dict[str, Any] | None:
    """``python -m ferlit.evaluate``: ``python -m ferlit predict`` with :func:`translate`'s
    arguments; returns the ``metrics.json`` content (rank 0). Bad input ends with ``error: ...``
    (the options spelled as given) and exit status 2; an option given in both spellings
    (:func:`given_once`) before anything is read."""
    import ferlit.cli  # which imports this module's checks

    spelling = {rf"(--)?{re.escape(new[2:])}": old for old, new in RENAMED.items()}
    args = list(sys.argv[1:] if args is None else args)
    try:
        given_once(args)
    except ConfigError as error:  # not through run_stage: its spelling would rename both
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    ferlit.cli.stage_arguments_given()
    return ferlit.cli.run_stage(ferlit.cli.predict, translate(args), spelling)


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


def check_submission_options(config) -> str | None:
    """The submission format to write (None: no submission), its options checked together.

    A per-video file has a line per frame of its video: the annotation files give that count for
    a labelled split; test videos (``--data.frames_dir``) need ``--videos_dir`` or ``--frame_counts``,
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
            f"{config.split} split; it is for test videos (--data.frames_dir)"
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
    predict, a ``--data.frames_dir`` video missing from ``--frame_counts`` or with a face image past
    the frame count given there, a ``--data.frames_dir`` video without a file in ``--videos_dir``.
    The same checks run again as the files are written (``ferlit.evaluation.submission``)."""
    if form is None:
        return
    videos = np.asarray([os.path.basename(str(g)) for g in index.group_names], dtype=object)
    highest = np.zeros(len(videos), np.int64)
    np.maximum.at(highest, index.groups, index.frames)
    faces = dict(zip(videos.tolist(), highest.tolist(), strict=True))
    if form == "single_file":
        test_videos = dict.fromkeys(read_test_list(config.test_list)[0].tolist())
        missing = [video for video in test_videos if video not in faces]
        if missing:
            raise DataError(
                f"{config.test_list}: video {listed(missing)} listed but without any face image "
                "to predict; check --data.frames_dir holds "
                + ("their folders" if len(missing) > 1 else "its folder")
            )
    elif config.frames_dir is not None and config.frame_counts:
        counts = read_frame_counts(config.frame_counts)
        missing = sorted(video for video in faces if video not in counts)
        if missing:
            raise DataError(
                f"{config.frame_counts}: no frame count for video {listed(missing)} of "
                "--data.frames_dir"
            )
        for video, frame in faces.items():
            if frame > counts[video]:
                raise DataError(
                    f"{config.frame_counts}: video {video} has {counts[video]} frames there but "
                    f"a face image of frame {frame} in --data.frames_dir; a wrong count, or the faces "
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


if __name__ == "__main__":
    with quiet_closed_stdout(), data_warnings_as_lines():
        main()
