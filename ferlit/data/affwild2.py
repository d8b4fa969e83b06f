"""Aff-Wild2 expression set: the challenge's ``cropped_aligned`` frames and per-video labels.

On disk (as distributed to ABAW participants)::

    <affwild2_dir>/cropped_aligned/<video>/00001.jpg ...   112x112 aligned faces, 5-digit, 1-based
    <affwild2_dir>/<annotations>/<Train dir>/<video>.txt   header line, then one label per frame

Line k after the header of ``<video>.txt`` labels frame k, i.e. ``cropped_aligned/<video>/%05d.jpg``
(Kollias & Zafeiriou, "Aff-Wild2", and the ABAW 2020-2024 challenge data descriptions). Frames
labelled -1 are not annotated, and an annotated frame may have no image: the face detector found
no face in it, so the challenge ships no crop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import track

from ferlit.data.index import FRAME_FOLDER, FrameIndex
from ferlit.errors import ConfigError, DataError
from ferlit.expressions import AFFWILD2_HEADERS, OTHER, class_names

#: Known annotation layouts, by challenge year: (folder under affwild2_dir, train dir, val dir).
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "abaw2020": ("annotations/EXPR_Set", "Training_Set", "Validation_Set"),
    "abaw2022": ("EXPR_Classification_Challenge", "Train_Set", "Validation_Set"),
    "abaw2024": ("EXPR_Recognition_Challenge", "Train_Set", "Validation_Set"),
}
SPLITS = ("train", "val")
FRAMES_DIR = "cropped_aligned"

#: Show a progress bar when a split has more videos than this (the real train split has ~250).
PROGRESS_MIN_VIDEOS = 50


def frame_file(frame: int) -> str:
    """The file name of a 1-based frame number: 5 digits, as in ``cropped_aligned``."""
    return f"{frame:05d}.jpg"


def annotation_dir(affwild2_dir: str | os.PathLike, layout: str, split: str) -> Path:
    """The folder that holds the ``<video>.txt`` files of one split in one layout."""
    folder, train, val = LAYOUTS[layout]
    return Path(affwild2_dir) / folder / (train if split == "train" else val)


def write_annotation_file(
    path: str | os.PathLike, labels: Sequence[int], num_classes: int = 7
) -> None:
    """Write one video's labels in the challenge format: the header, then one label per frame.

    ``-1`` marks an unannotated frame, as in the real files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(class_names(num_classes)), *(str(int(label)) for label in labels)]
    path.write_text("\n".join(lines) + "\n")


def detect_layout(affwild2_dir: str | os.PathLike) -> str:
    """The key of ``LAYOUTS`` whose annotation folder exists under ``affwild2_dir``.

    Each challenge year renamed the annotation folder (see ``LAYOUTS``), so the folder tells the
    year. Two of them side by side is ambiguous (their class counts differ): the caller must then
    pass ``layout`` explicitly rather than have one picked silently.
    """
    root = os.fspath(affwild2_dir)
    _check_frames_dir(root)
    found = [
        key for key, (folder, _, _) in LAYOUTS.items() if os.path.isdir(os.path.join(root, folder))
    ]
    if not found:
        looked = ", ".join(f"{folder}/ ({key})" for key, (folder, _, _) in LAYOUTS.items())
        raise DataError(
            f"{root}: no Aff-Wild2 expression annotation folder found; looked for {looked}"
        )
    if len(found) > 1:
        raise DataError(
            f"{root}: several Aff-Wild2 annotation layouts found ({', '.join(found)}); "
            "choose one with layout="
        )
    return found[0]


def read_affwild2(
    affwild2_dir: str | os.PathLike,
    split: str,
    num_classes: int = 7,
    layout: str | None = None,
    progress: bool = True,
) -> FrameIndex:
    """Index the annotated frames of one split that have an image.

    Videos are taken in name order (``<video>_left`` and ``<video>_right`` are two videos). Skipped
    frames are counted, not silently lost: ``unannotated`` (label -1), ``other`` (the 8th class of
    a 2022+ file in a 7-class run; an 8-class run keeps it as label 7) and, among the frames left,
    ``no_image`` (no ``cropped_aligned`` crop, or no folder at all for the video). The group table
    lists the videos that contribute at least one frame.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if num_classes not in (7, 8):
        raise ConfigError(f"num_classes must be 7 (ABAW 2020) or 8 (ABAW 2022+), got {num_classes}")
    root = os.fspath(affwild2_dir)
    if layout is None:
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {tuple(LAYOUTS)} or None, got {layout!r}")
    else:
        _check_frames_dir(root)

    folder = annotation_dir(root, layout, split)
    if not folder.is_dir():
        raise DataError(f"{folder}: missing; expected the {split} annotations of layout {layout}")
    with os.scandir(folder) as entries:  # dot files: e.g. macOS "._<video>.txt" resource forks
        files = sorted(
            e.name
            for e in entries
            if e.name.endswith(".txt") and not e.name.startswith(".") and e.is_file()
        )
    if not files:
        raise DataError(f"{folder}: no <video>.txt annotation files")
    rel_folder = folder.relative_to(root).as_posix()

    group_names: list[str] = []
    group_sources: list[str] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    skipped = {"unannotated": 0, "other": 0, "no_image": 0}
    if progress and len(files) > PROGRESS_MIN_VIDEOS:
        files = track(files, description=f"Indexing Aff-Wild2 {split}", transient=True)
    for name in files:
        video = name[: -len(".txt")]
        video_labels, file_classes = _read_annotation_file(os.path.join(folder, name))
        frame_numbers = np.arange(1, len(video_labels) + 1)
        keep = video_labels != -1
        skipped["unannotated"] += int(np.count_nonzero(~keep))
        if file_classes > num_classes:
            other = video_labels == OTHER
            skipped["other"] += int(np.count_nonzero(other))
            keep &= ~other
        on_disk = _frames_on_disk(os.path.join(root, FRAMES_DIR, video), len(video_labels))
        skipped["no_image"] += int(np.count_nonzero(keep & ~on_disk))
        keep &= on_disk
        if not keep.any():
            continue
        labels.append(video_labels[keep])
        frames.append(frame_numbers[keep])
        groups.append(np.full(int(np.count_nonzero(keep)), len(group_names)))
        group_names.append(f"{FRAMES_DIR}/{video}")
        group_sources.append(f"{rel_folder}/{name}")

    all_frames = _concat(frames, np.int32)
    return FrameIndex.build(
        root=root,
        num_classes=num_classes,
        group_names=group_names,
        group_kinds=[FRAME_FOLDER] * len(group_names),
        group_sources=group_sources,
        labels=_concat(labels, np.int8),
        groups=_concat(groups, np.int32),
        frames=all_frames,
        lines=all_frames + 1,  # the header is line 1, so frame k is line k + 1
        skipped=skipped,
    )


def _check_frames_dir(root: str) -> None:
    if not os.path.isdir(root):
        raise DataError(f"{root}: Aff-Wild2 folder does not exist")
    if not os.path.isdir(os.path.join(root, FRAMES_DIR)):
        raise DataError(
            f"{root}: no {FRAMES_DIR}/ folder; expected the challenge's aligned face crops "
            f"in {FRAMES_DIR}/<video>/00001.jpg ..."
        )


def _read_annotation_file(path: str) -> tuple[np.ndarray, int]:
    """The labels of frames 1..n of one ``<video>.txt``, and the class count its header declares.

    Real files come with CRLF line endings, a UTF-8 byte order mark, trailing spaces or trailing
    empty lines; those are accepted. Anything that would shift the frame<->line alignment (an
    empty line inside the file) or is not a label of the header's classes is an error.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [line.strip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    expected = " or ".join(repr(h) for h in AFFWILD2_HEADERS)
    if not lines:
        raise DataError(f"{path}:1: empty file; expected the header {expected}")
    if lines[0] not in AFFWILD2_HEADERS:
        raise DataError(f"{path}:1: found header {lines[0]!r}; expected {expected}")
    file_classes = AFFWILD2_HEADERS[lines[0]]
    body = lines[1:]
    valid = f"expected -1 (unannotated) or a class index 0..{file_classes - 1} of the header"
    try:
        labels = np.array([int(s) for s in body], np.int64)
    except (ValueError, OverflowError):
        labels = None
    if labels is not None and ((labels >= -1) & (labels < file_classes)).all():
        return labels.astype(np.int8), file_classes
    k = next(k for k, s in enumerate(body) if not (_is_int(s) and -1 <= int(s) < file_classes))
    if not body[k]:
        found = "empty line"
    elif _is_int(body[k]):
        found = f"label {body[k]} out of range"
    else:
        found = f"{body[k]!r} is not an integer"
    raise DataError(f"{path}:{k + 2}: {found}; {valid}")


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _frames_on_disk(video_dir: str, num_frames: int) -> np.ndarray:
    """Which of frames 1..num_frames have a ``%05d.jpg`` image (index k - 1 for frame k).

    One directory listing per video instead of an existence check per frame: Aff-Wild2 has over a
    million frames. A missing folder means the detector found no face in the whole video.
    """
    present = np.zeros(num_frames + 1, bool)
    try:
        with os.scandir(video_dir) as entries:
            for entry in entries:
                stem = entry.name[: -len(".jpg")]
                if entry.name.endswith(".jpg") and stem.isascii() and stem.isdigit():
                    frame = int(stem)
                    if 1 <= frame <= num_frames and entry.name == frame_file(frame):
                        present[frame] = True
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise DataError(f"{video_dir}: not a folder; expected the video's frames") from None
    return present[1:]


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
