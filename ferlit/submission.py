"""ABAW expression submission files: one ``<video>.txt`` per video, in the annotation format.

The ABAW expression track (2020 and later) takes, for each test video, a text file laid out like
the training annotations: the header line of class names (``Neutral,Anger,...,Surprise``, plus
``,Other`` from ABAW 2022), then one label per frame for *every* frame of the video, line k + 1
holding frame k. Frames in which the face detector found no face have no ``cropped_aligned``
image and so no prediction, but still need a line: they take the label of the nearest frame that
has one (the earlier one when two are equally near).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ferlit.data.affwild2 import _read_annotation_file, write_annotation_file
from ferlit.data.index import FrameIndex
from ferlit.errors import DataError


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
    num_frames: Mapping[str, int] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<video>.txt`` for every video among the predictions; returns the files.

    ``num_frames`` gives each video's frame count (from its annotation file, see
    :func:`annotation_frame_counts`); a video missing from it (e.g. a folder of test frames with
    no annotation) is taken to end at its highest predicted frame, so frames the detector missed
    at the very end of such a video cannot be known and get no line.
    """
    videos = np.asarray(videos).astype(str)
    frames = np.asarray(frames, np.int64)
    labels = np.asarray(labels, np.int64)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, codes = np.unique(videos, return_inverse=True)
    written = []
    for code, video in enumerate(names.tolist()):
        rows = codes == code
        known = (num_frames or {}).get(video)
        length = int(frames[rows].max()) if known is None else int(known)
        try:
            filled = fill_frames(frames[rows], labels[rows], length)
        except DataError as error:
            raise DataError(f"video {video}: {error}") from None
        path = out_dir / f"{video}.txt"
        write_annotation_file(path, filled.tolist(), num_classes)
        written.append(path)
    return written
