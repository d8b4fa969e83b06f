"""ABAW expression submission files, in the two formats the organisers have taken.

**Per video** (ABAW 2020 and 2022): for each test video a text file laid out like the training
annotations: the header line of class names (``Neutral,Anger,...,Surprise``, plus ``,Other`` from
ABAW 2022), then one label per frame for *every* frame of the video, line k + 1 holding frame k.
The line count is the video's frame count, which the face images cannot tell (the detector may
miss the last frames): for a labelled split it comes from the annotation files, for test videos
from the videos themselves (:func:`frame_counts_from_videos`) or a lengths file
(:func:`read_frame_counts`).

**One file** (ABAW 2023 and 2024, the 5th and 6th ABAW): first line
``image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other``, then
``<video>/<NNNNN>.jpg,<label>`` for every line of the organisers' test-set list, in its order
(:func:`read_test_list`; entrants' public code reindexes its predictions by that list, e.g. by
``CVPR_6th_ABAW_Expr_test_set_example.txt``, whose lines are ``<video>/<NNNNN>.jpg`` after a header).

In both, frames in which the face detector found no face have no ``cropped_aligned`` image and so
no prediction, but still need a line: they take the label of the nearest frame that has one (the
earlier one when two are equally near).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from ferlit.data.index import FrameIndex
from ferlit.data.readers.affwild2 import _read_annotation_file, write_annotation_file
from ferlit.errors import DataError, listed
from ferlit.expressions import EXPRESSIONS_8
from ferlit.io import atomic_write, claim_outputs, read_text

#: The first line of an ABAW 2023/2024 expression submission file.
SINGLE_FILE_HEADER = "image_location," + ",".join(EXPRESSIONS_8)
#: The file ``evaluate --submission DIR`` writes in that format.
SINGLE_FILE_NAME = "predictions.txt"
#: Video files looked for under ``--videos_dir`` (Aff-Wild2 ships .mp4 and .avi).
VIDEO_SUFFIXES = (".mp4", ".avi")


def fill_frames(
    frames: Sequence[int] | np.ndarray, labels: np.ndarray, num_frames: int
) -> np.ndarray:
    """The labels of frames 1..``num_frames`` from the predicted ``frames`` (1-based, any order);
    each frame without a prediction takes the label of the nearest predicted frame, the earlier
    one on a tie."""
    frames = np.asarray(frames, np.int64)
    labels = np.asarray(labels)
    if len(frames) == 0:
        raise DataError("no predicted frame to fill the video's frames from")
    if len(labels) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    order = np.argsort(frames, kind="stable")
    frames, labels = frames[order], labels[order]
    if frames[0] < 1 or frames[-1] > num_frames:
        raise DataError(
            f"predicted frames {frames[0]}..{frames[-1]} are not all within the video's "
            f"frames 1..{num_frames}"
        )
    repeated = frames[1:][frames[1:] == frames[:-1]]
    if len(repeated):
        raise DataError(f"frame {repeated[0]} is predicted more than once")
    every = np.arange(1, num_frames + 1)
    after = np.searchsorted(frames, every, side="left")  # first predicted frame >= each frame
    before = np.clip(after - 1, 0, None)
    after_clipped = np.clip(after, None, len(frames) - 1)
    distance_before = np.where(after > 0, every - frames[before], np.iinfo(np.int64).max)
    distance_after = np.where(
        after < len(frames), frames[after_clipped] - every, np.iinfo(np.int64).max
    )
    return labels[np.where(distance_before <= distance_after, before, after_clipped)]


def annotation_frame_counts(index: FrameIndex) -> dict[str, int]:
    """Frames per video of an Aff-Wild2 index: the label lines of each video's annotation file
    (which cover every frame of the video, with or without a face)."""
    counts = {}
    for g, source in enumerate(index.group_sources):
        path = os.path.join(index.roots[index.group_roots[g]], str(source))
        if not os.path.isfile(path):
            raise DataError(
                f"{path}: missing; the submission needs it to know how many frames "
                f"{os.path.basename(str(index.group_names[g]))} has"
            )
        counts[os.path.basename(str(index.group_names[g]))] = len(_read_annotation_file(path)[0])
    return counts


def write_submission(
    out_dir: str | os.PathLike,
    videos: Sequence[str] | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    num_frames: Mapping[str, int],
) -> list[Path]:
    """Write ``<out_dir>/<video>.txt`` for every video among the predictions; returns the files.

    Each file is written whole or not at all and listed as ferlit's in ``out_dir``'s
    ``.ferlit-outputs.json`` first; a ``<video>.txt`` there that ferlit did not write (an
    annotation file) is refused, never replaced.

    ``num_frames`` gives each video's frame count (from its annotation file, see
    :func:`annotation_frame_counts`; from its video, :func:`frame_counts_from_videos`; or from a
    lengths file, :func:`read_frame_counts`): each file has that many label lines.
    """
    videos = np.asarray(videos).astype(str)
    frames = np.asarray(frames, np.int64)
    labels = np.asarray(labels, np.int64)
    names, codes = np.unique(videos, return_inverse=True)
    unknown = [v for v in names.tolist() if v not in num_frames]
    if unknown:
        raise DataError(f"no frame count for video {listed(unknown)}")
    out_dir = Path(out_dir)
    claim_outputs(out_dir, [f"{video}.txt" for video in names.tolist()])
    written = []
    for code, video in enumerate(names.tolist()):
        rows = codes == code
        try:
            filled = fill_frames(frames[rows], labels[rows], int(num_frames[video]))
        except DataError as error:
            raise DataError(f"video {video}: {error}") from None
        path = out_dir / f"{video}.txt"
        write_annotation_file(path, filled.tolist(), num_classes)
        written.append(path)
    return written


def read_test_list(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The ``(video, frame)`` of every line of the organisers' test-set list, in its order.

    Each line is ``<video>/<NNNNN>.jpg`` (the frame file, 1-based), optionally followed by
    ``,<anything>`` (the organisers' example file repeats the submission layout, with a label
    column); a first line starting with ``image_location`` is its header. A line that is only a
    video name (the names-only ``..._test_set_release.txt``) tells no frames and is refused.
    """
    path = Path(path)
    text = read_text(path, "--test_list")
    videos: list[str] = []
    frames: list[int] = []
    seen: set[tuple[str, int]] = set()
    lines = text.split("\n")
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or (number == 1 and line.lower().startswith("image_location")):
            continue
        location = line.split(",", 1)[0].strip()
        video, _, name = location.rpartition("/")
        stem, dot, suffix = name.partition(".")
        if not (video and dot and suffix.lower() == "jpg" and stem.isascii() and stem.isdigit()):
            raise DataError(
                f"{path}:{number}: {line[:60]!r} is not <video>/<NNNNN>.jpg; expected the "
                "organisers' test-set list of frames (one <video>/00001.jpg per line, as in "
                "CVPR_6th_ABAW_Expr_test_set_example.txt), not a list of video names"
            )
        frame = int(stem)
        if frame < 1:
            raise DataError(f"{path}:{number}: frame {location} is not 1-based")
        if (video, frame) in seen:
            raise DataError(f"{path}:{number}: {location} is listed twice")
        seen.add((video, frame))
        videos.append(video)
        frames.append(frame)
    if not videos:
        raise DataError(f"{path}: no <video>/<NNNNN>.jpg line; expected the test-set list")
    return np.asarray(videos, dtype=object), np.asarray(frames, np.int64)


def write_single_file(
    path: str | os.PathLike,
    test_list: str | os.PathLike,
    videos: Sequence[str] | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
) -> int:
    """Write the ABAW 2023/2024 submission file for every line of ``test_list``; returns the
    number of frame lines.

    A listed frame without a prediction (no face) takes the nearest predicted frame's label of
    the same video (:func:`fill_frames`); a listed video with no prediction at all is an error
    naming it.
    """
    wanted_videos, wanted_frames = read_test_list(test_list)
    videos = np.asarray(videos).astype(str)
    frames = np.asarray(frames, np.int64)
    labels = np.asarray(labels, np.int64)
    listed = np.asarray(wanted_videos).astype(str)
    # Rows of each video, by one sort each (the real list has ~10^6 lines of ~200 videos).
    by_video = pd.Series(np.arange(len(videos))).groupby(videos).indices if len(videos) else {}
    wanted = pd.Series(np.arange(len(listed))).groupby(listed, sort=False).indices
    out = np.empty(len(wanted_frames), np.int64)
    for video, at in wanted.items():
        rows = by_video.get(video)
        if rows is None:
            raise DataError(
                f"{test_list}: video {video} is listed but has no prediction (no face image of it "
                "was evaluated); check --frames_dir holds its folder"
            )
        length = int(max(wanted_frames[at].max(), frames[rows].max()))
        filled = fill_frames(frames[rows], labels[rows], length)
        out[at] = filled[wanted_frames[at] - 1]
    path = Path(path)
    claim_outputs(path.parent, [path.name])
    body = "".join(
        f"{video}/{frame:05d}.jpg,{label}\n"
        for video, frame, label in zip(
            listed.tolist(), wanted_frames.tolist(), out.tolist(), strict=True
        )
    )
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write(SINGLE_FILE_HEADER + "\n" + body)
    return len(out)


def read_frame_counts(path: str | os.PathLike) -> dict[str, int]:
    """Frames per video from a lengths file: CSV lines ``video,frames``, an optional
    ``video,frames`` header line first."""
    path = Path(path)
    text = read_text(path, "--frame_counts")
    counts: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or (number == 1 and line.replace(" ", "").lower() == "video,frames"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0] or not (parts[1].isascii() and parts[1].isdigit()):
            raise DataError(
                f"{path}:{number}: {line[:60]!r}; expected video,frames (e.g. 1-30-1280x720,1870)"
            )
        video, frames = parts[0], int(parts[1])
        if frames < 1:
            raise DataError(f"{path}:{number}: video {video} has {frames} frames; expected >= 1")
        if video in counts:
            raise DataError(f"{path}:{number}: video {video} is listed twice")
        counts[video] = frames
    if not counts:
        raise DataError(f"{path}: no video,frames line")
    return counts


def video_frame_count(path: str | os.PathLike) -> tuple[int, int]:
    """A video file's frame count as its header states it (OpenCV's ``CAP_PROP_FRAME_COUNT``)
    and as decoding it frame by frame counts (``grab()`` until it fails).

    The header count is an estimate from the container's duration and frame rate, and can be off
    for the variable-frame-rate videos of Aff-Wild2; the decoded count is what the frames are.
    """
    import cv2  # here: only the submission of test videos needs it

    capture = cv2.VideoCapture(os.fspath(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video")
        header = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        decoded = 0
        while capture.grab():
            decoded += 1
    finally:
        capture.release()
    if decoded == 0:
        raise DataError(f"{path}: no frame could be decoded")
    return header, decoded


def find_video(videos_dir: str | os.PathLike, video: str) -> Path:
    """The video file of a ``cropped_aligned`` folder name under ``videos_dir``.

    ``<video>_left`` and ``<video>_right`` (two people in one video) are cut from ``<video>``;
    the file is ``<video>.mp4`` or ``<video>.avi``, and two candidates are ambiguous.
    """
    root = Path(videos_dir)
    stems = [video]
    for side in ("_left", "_right"):
        if video.endswith(side):
            stems.append(video[: -len(side)])
    for stem in stems:
        found = [root / f"{stem}{suffix}" for suffix in VIDEO_SUFFIXES]
        found = [p for p in found if p.is_file()]
        if len(found) > 1:
            raise DataError(
                f"{root}: both {found[0].name} and {found[1].name} could be video {video}; keep one"
            )
        if found:
            return found[0]
    tried = ", ".join(f"{s}{x}" for s in stems for x in VIDEO_SUFFIXES)
    raise DataError(f"{root}: no video file for {video} (looked for {tried})")


def frame_counts_from_videos(
    videos_dir: str | os.PathLike, highest_face: Mapping[str, int]
) -> dict[str, int]:
    """Frames per video, from the video files, for the videos of ``highest_face`` (video name ->
    its highest frame number with a face image).

    The rule: the count is the number of frames OpenCV decodes from the video, or one more when
    the face images reach exactly one frame past it. Entrants met that one-frame difference
    between the videos and the organisers' frames: an ABAW test-set preparation script
    (2nd ABAW, found by code search) reads the count from the video with OpenCV and adds 1 "to
    account for a 1 frame difference" when the face images outnumber it by one. A face frame two
    or more past the decoded frames means the wrong video (or a damaged one) and is an error.
    """
    counts = {}
    paths = {video: find_video(videos_dir, video) for video in highest_face}  # all found first
    items = highest_face.items()
    if len(highest_face) > 1:  # decoding a real video takes seconds
        items = track(items, description="Counting video frames", transient=True)
    for video, highest in items:
        path = paths[video]
        _, decoded = video_frame_count(path)
        if highest > decoded + 1:
            raise DataError(
                f"{path}: decodes to {decoded} frames but {video} has a face image of frame "
                f"{highest}; is this the video the faces were cut from?"
            )
        counts[video] = max(decoded, int(highest))
    return counts
