"""Aff-Wild2 expression set: the challenge's ``cropped_aligned`` frames and per-video labels.

On disk (as distributed to ABAW participants)::

    <affwild2_dir>/cropped_aligned/<video>/00001.jpg ...   112x112 aligned faces, 5-digit, 1-based
    <affwild2_dir>/cropped_aligned_new_50_vids/<video>/... ABAW 2023+: the 50 videos added then
    <affwild2_dir>/<annotations>/<Train dir>/<video>.txt   header line, then one label per frame

Line k after the header of ``<video>.txt`` labels frame k, i.e. ``<frames folder>/<video>/%05d.jpg``
(Kollias & Zafeiriou, "Aff-Wild2", and the ABAW 2020-2024 challenge data descriptions). Frames
labelled -1 are not annotated, and an annotated frame may have no image: the face detector found
no face in it, so the challenge ships no crop.

From the 5th ABAW (2023) on, the faces of the 50 videos added to the set ship in a second folder,
``cropped_aligned_new_50_vids/``, beside ``cropped_aligned/`` (entrants' code reads both, taking a
video from whichever holds it). A video's frames come from the one folder that holds it; a video in
both is refused rather than one copy picked silently.

A layout that yields nothing is an error, not an empty run: a split that keeps no frame, or more
than a few videos none of whose annotated frames has an image (see ``MAX_VIDEOS_WITHOUT_IMAGES``),
stop indexing with the folders looked in and the likely cause (frames nested one level too deep,
as in ``cropped_aligned/cropped_aligned/<video>/`` from unpacking the archive into a folder of its
own name; a missing ``cropped_aligned_new_50_vids/``; folder names that match no annotation file).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from ferlit.data.index import FRAME_FOLDER, FrameIndex
from ferlit.data.readers.base import Reader
from ferlit.errors import QUOTE_LIMIT, ConfigError, DataError, DataWarning, quote
from ferlit.expressions import AFFWILD2_HEADERS, OTHER, check_num_classes, class_names
from ferlit.io import atomic_write, file_kind, read_text

#: Known annotation layouts, by challenge year: (folder under affwild2_dir, train dir, val dir).
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "abaw2020": ("annotations/EXPR_Set", "Training_Set", "Validation_Set"),
    "abaw2022": ("EXPR_Classification_Challenge", "Train_Set", "Validation_Set"),
    "abaw2024": ("EXPR_Recognition_Challenge", "Train_Set", "Validation_Set"),
}
SPLITS = ("train", "val")
FRAMES_DIR = "cropped_aligned"
#: ABAW 2023+ (5th ABAW on): the frames of the 50 new videos, beside ``cropped_aligned/``.
NEW_FRAMES_DIR = "cropped_aligned_new_50_vids"
#: The folders a video's frames may be in, in the order they are looked in.
FRAMES_DIRS = (FRAMES_DIR, NEW_FRAMES_DIR)

#: A video with annotated frames none of which has an image is normal once in a while (the face
#: detector found no face in the whole video): such videos only warn. More of them than this
#: share of the split's annotated videos (and more than one) is a broken copy or layout, e.g. the
#: 50 new videos of ABAW 2023+ without their ``cropped_aligned_new_50_vids/`` (50 of ~250 train
#: videos, 20%), and stops indexing.
MAX_VIDEOS_WITHOUT_IMAGES = 0.05

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
    with atomic_write(path, "w", encoding="utf-8") as file:  # a submission file is whole or absent
        file.write("\n".join(lines) + "\n")


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
        # e.g. annotations/EXPR_Classification_Challenge/ in an ABAW 2023 entrant's copy
        deeper = sorted(
            f"{e.name}/{folder}/"
            for e in os.scandir(root)
            if e.is_dir() and not e.name.startswith(".")
            for folder, _, _ in LAYOUTS.values()
            if os.path.isdir(os.path.join(root, e.name, folder))
        )
        them = "them" if len(deeper) > 1 else "it"
        hint = f"; found {', '.join(deeper)} one level deeper: move {them} up to {root}/"
        raise DataError(
            f"{root}: no Aff-Wild2 expression annotation folder found; looked for {looked}"
            + (hint if deeper else "")
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
    ``not_a_file`` (a ``%05d.jpg`` entry that is not a regular file: a FIFO, a socket, a folder, a
    dangling link; never opened) and ``no_image`` (no crop, or no folder at all for the video). A
    video folder that is a dangling link (a disk not mounted), a link loop or unreadable is a
    ``DataError`` naming it, not a video without faces. ``no_image_videos`` counts the
    videos (not frames) with annotated frames but no image of any of them; each is named in a
    ``DataWarning``, and a split that keeps no frame or has too many such videos
    (``MAX_VIDEOS_WITHOUT_IMAGES``) is a ``DataError`` naming the folders looked in and the likely
    cause. The group table lists the videos that contribute at least one frame, each as
    ``<frames folder>/<video>`` (``cropped_aligned/...`` or ``cropped_aligned_new_50_vids/...``).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    check_num_classes("num_classes", num_classes)
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
    try:
        with os.scandir(folder) as entries:  # dot files: e.g. macOS "._<video>.txt" forks
            named = [e for e in entries if e.name.endswith(".txt") and not e.name.startswith(".")]
            files = sorted(e.name for e in named if e.is_file())
    except OSError as e:  # unreadable (PermissionError) or gone meanwhile
        raise DataError(
            f"{folder}: cannot be listed ({e.strerror or e}); ferlit needs to read the {split} "
            "annotation files in it"
        ) from None
    # A <video>.txt that is a dangling link (a disk not mounted), a FIFO (would block the read)
    # or a folder was passed over in silence: the split lost that video (issue 13, shrinkage).
    odd = sorted(e.name for e in named if e.name not in files)
    if odd:
        more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
        raise DataError(
            f"{folder / odd[0]}: is {file_kind(folder / odd[0])}{more}; expected an annotation "
            "file (a regular file)"
        )
    if not files:
        raise DataError(f"{folder}: no <video>.txt annotation files")
    rel_folder = folder.relative_to(root).as_posix()

    group_names: list[str] = []
    group_sources: list[str] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    skipped = {"unannotated": 0, "other": 0, "no_image": 0, "not_a_file": 0}
    folders = video_folders(root)
    without_images: list[str] = []
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
        frames_dir = folders.get(video, FRAMES_DIR)
        on_disk, not_file = _scan_frames(os.path.join(root, frames_dir, video), len(video_labels))
        skipped["not_a_file"] += int(np.count_nonzero(keep & not_file))
        skipped["no_image"] += int(np.count_nonzero(keep & ~on_disk & ~not_file))
        if keep.any() and not (keep & on_disk).any():
            without_images.append(video)
        keep &= on_disk
        if not keep.any():
            continue
        labels.append(video_labels[keep])
        frames.append(frame_numbers[keep])
        groups.append(np.full(int(np.count_nonzero(keep)), len(group_names)))
        group_names.append(f"{frames_dir}/{video}")
        group_sources.append(f"{rel_folder}/{name}")

    all_frames = _concat(frames, np.int32)
    annotated = len(group_names) + len(without_images)
    _check_yield(root, folder, split, layout, folders, without_images, annotated, len(all_frames))
    skipped["no_image_videos"] = len(without_images)
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


def videos_in_both_splits(train: FrameIndex, val: FrameIndex) -> list[tuple[str, str, str]]:
    """The Aff-Wild2 videos with frames in both the training and the validation index, in name
    order, each as (video, its train annotation file, its val annotation file).

    The challenge's splits are disjoint by video (ABAW data descriptions), and frames of one video
    are near-duplicates of each other: a video in both would be trained and validated on, and its
    validation score would measure memory. A hand-assembled copy (files copied between
    Training_Set and Validation_Set, or two years' layouts merged) can hold one. Works on indexes
    read from the data folders or from a pack alike; ExpW groups are not videos and are left out.
    """

    def videos(index: FrameIndex) -> dict[str, str]:
        found = {}
        for g in np.flatnonzero(index.group_kinds == FRAME_FOLDER):
            root = index.roots[index.group_roots[g]]
            video = str(index.group_names[g]).rsplit("/", 1)[-1]
            found[video] = os.path.join(root, str(index.group_sources[g]))
        return found

    in_train, in_val = videos(train), videos(val)
    return [(v, in_train[v], in_val[v]) for v in sorted(in_train.keys() & in_val.keys())]


def split_overlap_message(both: list[tuple[str, str, str]]) -> str:
    """What ``videos_in_both_splits`` found, naming the first videos and their annotation files."""
    shown = "; ".join(f"{video} ({train} and {val})" for video, train, val in both[:3])
    more = f"; and {len(both) - 3} more" if len(both) > 3 else ""
    return (
        f"{len(both)} Aff-Wild2 video{'s are' if len(both) > 1 else ' is'} in both the train and "
        f"the val split, so trained and validated on: {shown}{more}"
    )


def _check_frames_dir(root: str) -> None:
    if not os.path.isdir(root):
        raise DataError(f"{root}: Aff-Wild2 folder does not exist")
    for d in FRAMES_DIRS:  # a link to a disk not mounted is not "no frames folder"
        if os.path.islink(os.path.join(root, d)) and not os.path.exists(os.path.join(root, d)):
            raise unreadable_folder(os.path.join(root, d), FileNotFoundError())
    if not any(os.path.isdir(os.path.join(root, d)) for d in FRAMES_DIRS):
        # Entrants' copies often keep the archive's wrapper folder, as in
        # cropped_aligned_images/cropped_aligned/: name such a folder one level down.
        deeper = sorted(
            os.path.join(e.name, d)
            for e in os.scandir(root)
            if e.is_dir() and not e.name.startswith(".")
            for d in FRAMES_DIRS
            if os.path.isdir(os.path.join(root, e.name, d))
        )
        hint = (
            f"; found {', '.join(p + '/' for p in deeper)} one level deeper: move "
            f"{'them' if len(deeper) > 1 else 'it'} up to {root}/"
            if deeper
            else ""
        )
        raise DataError(
            f"{root}: no {FRAMES_DIR}/ folder; expected the challenge's aligned face crops "
            f"in {FRAMES_DIR}/<video>/00001.jpg ... (and, from ABAW 2023 on, "
            f"{NEW_FRAMES_DIR}/<video>/...){hint}"
        )


def video_folders(affwild2_dir: str | os.PathLike) -> dict[str, str]:
    """Which frames folder (an entry of ``FRAMES_DIRS``) holds each video's frame folder.

    One listing per frames folder. A video in both folders is an error naming both paths: the
    two copies may differ, and reading one silently would hide it. Videos not listed here have
    no frame folder (no face found in the whole video, or a broken copy: see ``read_affwild2``).
    """
    root = os.fspath(affwild2_dir)
    found: dict[str, str] = {}
    for frames_dir in FRAMES_DIRS:
        path = os.path.join(root, frames_dir)
        try:
            with os.scandir(path) as entries:
                videos = sorted(
                    e.name for e in entries if not e.name.startswith(".") and _is_video_dir(e)
                )
        except FileNotFoundError:
            if os.path.islink(path):
                raise unreadable_folder(path, FileNotFoundError()) from None
            continue
        except NotADirectoryError:
            raise DataError(f"{path}: not a folder; expected <video>/00001.jpg ... in it") from None
        except OSError as e:
            raise unreadable_folder(path, e) from None
        for video in videos:
            if video in found:
                raise DataError(
                    f"video {video} is in two frame folders: "
                    f"{os.path.join(root, found[video], video)} and {os.path.join(path, video)}; "
                    "keep one of them"
                )
            found[video] = frames_dir
    return found


def _is_video_dir(entry: os.DirEntry) -> bool:
    """``entry`` is a folder (or a link to one). A link whose target is missing (a disk not
    mounted, a copy moved) or that loops is an error naming it: read as "no folder", it would
    make every frame of the video "no face detected" and shrink the split silently."""
    try:
        if entry.is_dir():
            return True
    except OSError as e:  # ELOOP: a symlink loop
        raise unreadable_folder(entry.path, e) from None
    if entry.is_symlink() and not os.path.exists(entry.path):
        raise unreadable_folder(entry.path, FileNotFoundError())
    return False


def unreadable_folder(path: str, error: OSError) -> DataError:
    """The DataError for a frames or video folder that cannot be listed, saying why."""
    if os.path.islink(path) and not os.path.exists(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        if isinstance(error, FileNotFoundError):
            return DataError(
                f"{path}: a link to {target}, which does not exist (a disk not mounted, or a "
                "copy moved?); its frames would all count as 'no face'. Mount or fix it"
            )
        return DataError(f"{path}: a link that cannot be followed ({error.strerror or error})")
    if isinstance(error, PermissionError):
        return DataError(f"{path}: permission denied; ferlit needs to list this folder's frames")
    return DataError(f"{path}: cannot be listed ({error.strerror or error})")


def _check_yield(
    root: str,
    annotations: Path,
    split: str,
    layout: str,
    folders: dict[str, str],
    without_images: list[str],
    annotated: int,
    kept: int,
) -> None:
    """Stop on a split that yields nothing or loses too many videos; warn on a single video.

    ``annotated`` counts the videos with at least one annotated frame (after -1 and Other).
    """
    looked = " and ".join(
        f"{os.path.join(root, d)}/" for d in FRAMES_DIRS if os.path.isdir(os.path.join(root, d))
    )
    if annotated == 0:
        raise DataError(
            f"{annotations}: the {split} split keeps no frame: none of its annotation files "
            "labels a frame with an expression class (every line is -1, or Other in a "
            "7-class run)"
        )
    shown = ", ".join(without_images[:5]) + (", ..." if len(without_images) > 5 else "")
    if kept == 0:
        what = f"keeps no frame: none of its {annotated} annotated videos ({shown}) has"
    elif len(without_images) > 1 and len(without_images) > MAX_VIDEOS_WITHOUT_IMAGES * annotated:
        what = (
            f"loses {len(without_images)} of its {annotated} annotated videos ({shown}), more "
            f"than {MAX_VIDEOS_WITHOUT_IMAGES:.0%}: none of them has"
        )
    else:
        what = None
    if what is not None:
        raise DataError(
            f"{annotations}: the {split} split {what} an image of an annotated frame in "
            f"{looked}; {_likely_cause(root, layout, folders, without_images)}"
        )
    for video in without_images:
        where = os.path.join(root, folders[video], video) if video in folders else None
        warnings.warn(
            f"{annotations / (video + '.txt')}: video {video} has annotated frames but no image "
            f"of any of them in {where or looked} (a video in which the face detector found no "
            "face?); its frames are skipped",
            DataWarning,
            stacklevel=3,
        )


def _likely_cause(
    root: str, layout: str, folders: dict[str, str], without_images: list[str]
) -> str:
    """The likely reasons why videos have no image, most specific first."""
    causes = []
    for outer in FRAMES_DIRS:
        for inner in FRAMES_DIRS:
            if os.path.isdir(os.path.join(root, outer, inner)):
                causes.append(
                    f"{outer}/ holds a {inner}/ folder: nested one level too deep? (move its "
                    f"video folders up to {os.path.join(root, inner)}/)"
                )
    if layout != "abaw2020" and not os.path.isdir(os.path.join(root, NEW_FRAMES_DIR)):
        causes.append(
            f"no {NEW_FRAMES_DIR}/ folder: from the 5th ABAW (2023) on, the frames of the 50 "
            f"new videos ship there, beside {FRAMES_DIR}/"
        )
    with_folder = [v for v in without_images if v in folders]
    if len(with_folder) < len(without_images):
        found = sorted(folders)
        found_text = (
            f"{len(found)} video folder{'s' if len(found) > 1 else ''} found, e.g. "
            f"{', '.join(found[:3])}"
            if found
            else "no video folder found"
        )
        causes.append(
            "no video folder matches an annotation file name (<video>.txt needs a frame "
            f"folder <video>/; {found_text})"
        )
    if with_folder:
        causes.append(
            f"the folders of {', '.join(with_folder[:3])} hold no frame file named as the "
            "annotation lines expect (00001.jpg for line 2, 5 digits, 1-based)"
        )
    return "likely cause: " + "; or ".join(causes)


def _read_annotation_file(path: str) -> tuple[np.ndarray, int]:
    """The labels of frames 1..n of one ``<video>.txt``, and the class count its header declares.

    Real files come with CRLF line endings, a UTF-8 byte order mark, trailing spaces or trailing
    empty lines; those are accepted. Anything that would shift the frame<->line alignment (an
    empty line inside the file) or is not a label of the header's classes is an error.
    """
    text = read_text(path)
    lines = [line.strip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    expected = " or ".join(repr(h) for h in AFFWILD2_HEADERS)
    if not lines:
        raise DataError(f"{path}:1: empty file; expected the header {expected}")
    if lines[0] not in AFFWILD2_HEADERS:
        raise DataError(f"{path}:1: found header {quote(lines[0])}; expected {expected}")
    file_classes = AFFWILD2_HEADERS[lines[0]]
    body = lines[1:]
    valid = f"expected -1 (unannotated) or a class index 0..{file_classes - 1} of the header"
    labels = None
    # One pass over the whole body at C speed (~20 ms a million lines) before int(): int() also
    # reads "+3", "1_0", "٣" (Arabic-Indic) and "３" (full width) as numbers, none of which a
    # challenge file holds. With only ASCII digits and "-" left, int() accepts exactly -?[0-9]+.
    joined = "\n".join(body)
    if joined.isascii() and not joined.encode("ascii").translate(None, _LABEL_BYTES):
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
        number = body[k] if len(body[k]) <= QUOTE_LIMIT else quote(body[k])
        found = f"label {number} out of range"
    else:
        found = f"{quote(body[k])} is not an integer"
    raise DataError(f"{path}:{k + 2}: {found}; {valid}")


#: The bytes an annotation file's body may hold: ASCII integers, one a line.
_LABEL_BYTES = b"0123456789-\n"
_INT = re.compile(r"-?[0-9]+")


def _is_int(s: str) -> bool:
    """``s`` is an ASCII integer, ``-?[0-9]+`` (what ``int`` accepts beyond that is refused)."""
    return _INT.fullmatch(s) is not None


def _frames_on_disk(video_dir: str, num_frames: int) -> np.ndarray:
    """Which of frames 1..num_frames have a ``%05d.jpg`` image (index k - 1 for frame k)."""
    return _scan_frames(video_dir, num_frames)[0]


def _scan_frames(video_dir: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of frames 1..num_frames have a ``%05d.jpg`` regular file (index k - 1 for frame k),
    and which have a ``%05d.jpg`` entry that is not one.

    One directory listing per video instead of an existence check per frame: Aff-Wild2 has over a
    million frames. A missing folder means the detector found no face in the whole video; a
    folder that is a dangling link, a link loop or unreadable is a DataError naming it. An entry
    that is not a regular file (a FIFO, a socket, a device, a folder, a dangling link) is never
    opened: a FIFO would block a loader worker forever. ``DirEntry.is_file`` answers from the
    listing (no extra ``stat``) except for links.
    """
    present = np.zeros(num_frames + 1, bool)
    odd = np.zeros(num_frames + 1, bool)
    try:
        with os.scandir(video_dir) as entries:
            for entry in entries:
                stem = entry.name[: -len(".jpg")]
                if entry.name.endswith(".jpg") and stem.isascii() and stem.isdigit():
                    frame = int(stem)
                    if 1 <= frame <= num_frames and entry.name == frame_file(frame):
                        try:
                            regular = entry.is_file()
                        except OSError:  # a link loop
                            regular = False
                        (present if regular else odd)[frame] = True
    except FileNotFoundError as e:
        if os.path.islink(video_dir):
            raise unreadable_folder(video_dir, e) from None
    except NotADirectoryError:
        raise DataError(f"{video_dir}: not a folder; expected the video's frames") from None
    except OSError as e:
        raise unreadable_folder(video_dir, e) from None
    return present[1:], odd[1:]


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


#: Highest frame number looked for among a video's face images: 5-digit names as shipped, plus
#: room for a sixth digit (a video of more than 99,999 frames, 55 minutes at 30 fps).
MAX_FRAME = 999_999


class AffWild2Reader(Reader):
    """Aff-Wild2's expression set under ``root``: its ``train`` and ``val`` splits
    (:func:`read_affwild2`), whole ``cropped_aligned`` frames as faces.

    Options: ``layout``, the annotation layout (a key of :data:`LAYOUTS`; None detects it).
    """

    name = "affwild2"
    title = "Aff-Wild2"
    splits = SPLITS

    def __init__(
        self, root: str | os.PathLike, num_classes: int = 7, layout: str | None = None
    ) -> None:
        super().__init__(root, num_classes)
        if layout is not None and layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {tuple(LAYOUTS)} or None, got {layout!r}")
        self.layout = layout

    def index(self, split: str = "train", progress: bool = True) -> FrameIndex:
        return read_affwild2(self.root, split, self.num_classes, self.layout, progress)

    def cache_key(self, split: str) -> dict[str, Any] | None:
        """The annotation files' names, sizes and times, and each video's frame folder mtime in
        ``cropped_aligned/`` and ``cropped_aligned_new_50_vids/`` (None where missing), which
        changes whenever a frame is added or removed: which frames have an image decides the
        index. One ``stat`` per annotation file and two per video (~1,700 at full scale)."""
        layout = self.layout
        if layout is None:
            layout = detect_layout(self.root)
        if split not in SPLITS:
            return None
        folder = annotation_dir(self.root, layout, split)
        if not folder.is_dir():
            return None
        files = []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.name.endswith(".txt") and not e.name.startswith(".") and e.is_file():
                        st = e.stat()
                        files.append([e.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
        except OSError:  # unreadable: the reader names the folder and why
            return None
        files.sort()
        videos = []
        for name, *_ in files:
            video = name[: -len(".txt")]
            mtimes = []
            for frames_dir in FRAMES_DIRS:
                try:
                    mtimes.append(os.stat(os.path.join(self.root, frames_dir, video)).st_mtime_ns)
                except (FileNotFoundError, NotADirectoryError):
                    mtimes.append(None)
                except OSError:  # unreadable or a link loop: the reader names it
                    return None
            videos.append([video, *mtimes])
        return {
            "options": {"split": split, "num_classes": self.num_classes, "layout": layout},
            "annotations": files,
            "frame_folders": videos,
        }

    def on_cache_hit(self, index: FrameIndex, split: str) -> None:
        """Repeat, in one line, the warning about videos with no image (named when indexed)."""
        without_images = index.skipped.get("no_image_videos", 0)
        if without_images:
            warnings.warn(
                f"{self.root}: {without_images} video(s) of the Aff-Wild2 {split} split have "
                "annotated frames but no image of any of them (index from the cache; python -m "
                f"ferlit.data stats --data.affwild2_dir {self.root} names them)",
                DataWarning,
                stacklevel=3,
            )

    @staticmethod
    def face_frames_index(index: FrameIndex) -> FrameIndex | None:
        """Every face frame of an Aff-Wild2 split's videos, annotated or not, with its target.

        The smoothing window of an annotated frame should see its neighbours whether or not
        they are annotated: a frame labelled -1, or past the annotation file's last line, still
        has a face and a prediction. Here each video of ``index`` (the reader's annotated
        frames) gets a row for every frame image in its folder, in frame order, with the target
        the training metric uses: the label where it scores (the reader kept the frame), -1
        elsewhere (unannotated, Other in a 7-class run, or past the last line). None when a
        video's folder or annotation file cannot be read (a pack moved away from its source):
        then only the annotated frames exist.
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
            if np.any(at >= len(faces)) or np.any(
                faces[np.minimum(at, len(faces) - 1)] != annotated
            ):
                raise DataError(
                    f"{folder}: frames of the index have no image any more; was the folder "
                    "changed while evaluating?"
                )
            targets[at] = index.labels[index.groups == g]
            frames_parts.append(faces)
            labels_parts.append(targets)
            groups_parts.append(np.full(len(faces), g))
        if not frames_parts:
            return None
        frames = np.concatenate(frames_parts)
        return index.with_rows(
            labels=np.concatenate(labels_parts),
            groups=np.concatenate(groups_parts),
            frames=frames,
            lines=frames + 1,  # frame k is line k + 1 (after the header)
        )
