"""Frames of new media for prediction: a video file, a folder of videos, an image or a folder of
images (any names, any sizes), as RGB arrays with the media's name and a 1-based frame number.

:func:`list_media` finds the media and their frame counts before any frame is decoded (for
progress bars); :func:`iter_media` yields the frames. A folder is searched recursively, in sorted
order of the paths below it; hidden files and folders (names starting with ``.``) and files of
other types (by extension, any case: :data:`IMAGE_EXTENSIONS`, :data:`VIDEO_EXTENSIONS`) are left
out, so that notes or annotation files beside the media do no harm. An image is a medium of one
frame. Files that cannot be read raise a ``DataError`` naming them; given a list as
``skipped``, :func:`list_media` and :func:`iter_media` instead skip each damaged file of a folder
with a ``DataWarning`` naming it and the reason, and record it there (:class:`Skipped`): one
damaged photo need not stop a folder of a thousand.

Images are read by :func:`ferlit.data.images.read_image` (the same checks as training data: not
a regular file, empty, truncated, too many pixels, undecodable), then turned upright by their
EXIF orientation tag: phone photos are stored sideways with a tag saying so, and a face lying on
its side is not found by a detector of upright faces. Videos are decoded by OpenCV
(``cv2.VideoCapture``, FFmpeg inside the wheel).
"""

from __future__ import annotations

import errno
import math
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
from PIL import Image

from ferlit.data import images
from ferlit.data.images import read_image
from ferlit.errors import DataError, DataWarning

#: Extensions (lower case) read as images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Extensions (lower case) read as videos.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)

MediaKind = Literal["image", "video"]

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Media:
    """One video or image. ``name``: its path relative to the folder given (the file's name when
    a file was given), ``/``-separated. ``frames``: 1 for an image; for a video the count its
    container declares (exact for AVI/MJPG and MP4; a damaged file may decode fewer, an estimate
    from some streams may differ by a few), for progress bars. ``fps``: frames per second the
    video declares (None for images, or when the container does not say)."""

    path: Path
    name: str
    kind: MediaKind
    frames: int
    fps: float | None = None


class MediaFrame(NamedTuple):
    """One frame: the media's name, the frame's 1-based number, its ``H x W x 3`` uint8 RGB pixels."""

    name: str
    number: int
    rgb: np.ndarray


class Skipped(NamedTuple):
    """A damaged file of a folder, left out: its name below the folder and the reason (the
    ``DataError`` it raised, which names the file)."""

    name: str
    reason: str


#: ``errno`` values that tell of this process or machine, not of the file read: no file
#: descriptor (a leak, a low ``ulimit -n``) or memory left. A folder's file failing so is not
#: skipped as damaged: every later file would fail alike, dropped from a run reporting success.
NOT_THE_FILES_FAULT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def _skip(skipped: list[Skipped], name: str, error: DataError) -> None:
    """Record and warn about a damaged file, or re-raise ``error`` when the ``OSError`` behind
    it (its ``__context__``: ``raise ... from None`` keeps it) is :data:`NOT_THE_FILES_FAULT`."""
    cause = error.__cause__ or error.__context__
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in NOT_THE_FILES_FAULT:
            raise error
        cause = cause.__cause__ or cause.__context__
    skipped.append(Skipped(name, str(error)))
    warnings.warn(f"skipped {name}: {error}", DataWarning, stacklevel=3)


def _kind(path: Path) -> MediaKind | None:
    suffix = path.suffix.lower()
    return (
        "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None
    )


def _video_info(path: Path) -> tuple[int, float | None]:
    """``(frame count, fps)`` a video declares; ``DataError`` if OpenCV cannot open it, its
    frames have more pixels than images may (``ferlit.data.images.MAX_IMAGE_PIXELS``) or it holds
    no frame."""
    capture = _open_video(path)
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > images.MAX_IMAGE_PIXELS:  # checked before a frame is decoded
            raise DataError(
                f"{path}: cannot read video: its frames are {width}x{height} pixels (width x "
                f"height), over ferlit's limit of {images.MAX_IMAGE_PIXELS:,} pixels a frame "
                "(8192x8192, as for images): not decoded"
            )
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS)
        if count <= 0:  # streams without an index: count by decoding (grab skips the conversion)
            count = 0
            while capture.grab():
                count += 1
    finally:
        capture.release()
    if count <= 0:
        raise DataError(f"{path}: cannot read video: no decodable frame")
    return count, (float(fps) if fps and math.isfinite(fps) and fps > 0 else None)


def _open_video(path: Path) -> cv2.VideoCapture:
    _check_regular(path)
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        try:  # OpenCV says not why: a file this process cannot open (EACCES, EMFILE) says so
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)))
        except OSError as e:
            raise DataError(f"{path}: cannot read video: {e.strerror or e}") from None
        raise DataError(
            f"{path}: cannot read video (OpenCV's FFmpeg cannot open it: damaged, empty or not a "
            "video)"
        )
    return capture


def _check_regular(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or folder") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a FIFO, socket or device is not read)")


def _medium(path: Path, name: str) -> Media:
    kind = _kind(path)
    if kind is None:
        raise DataError(
            f"{path}: not an image or a video by its extension (images: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    if kind == "image":
        _check_regular(path)
        return Media(path, name, "image", 1)
    frames, fps = _video_info(path)
    return Media(path, name, "video", frames, fps)


def list_media(path: str | os.PathLike[str], skipped: list[Skipped] | None = None) -> list[Media]:
    """The media at ``path`` (a video, an image, or a folder searched recursively for them), in
    sorted order of their names; ``DataError`` when ``path`` does not exist, is a file of another
    type, is a folder with no image or video, or holds a video that cannot be opened or a
    folder that cannot be listed. With ``skipped`` (a list) such a video or subfolder of a
    folder is skipped, warned about and appended there,
    and ``DataError`` is raised only when every medium of the folder is damaged; a file given
    as ``path`` raises as ever."""
    if not os.fspath(path).strip():  # Path("") is ".": an unset variable would read the cwd
        raise DataError(
            f"media path {os.fspath(path)!r}: empty; name a video, an image or a folder of them "
            "(. for the current folder)"
        )
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if not root.is_dir():
        return [_medium(root, root.name)]
    found: list[tuple[str, Path]] = []
    unlisted: list[OSError] = []  # os.walk passes over a folder it cannot list, unless told
    for folder, subfolders, files in os.walk(root, onerror=unlisted.append):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for file in files:
            candidate = Path(folder, file)
            if not file.startswith(".") and _kind(candidate) is not None:
                found.append((candidate.relative_to(root).as_posix(), candidate))
    first = len(skipped or ())
    for error in unlisted:  # a subfolder of a folder given with ``skipped`` is skipped
        folder = Path(error.filename or root)
        problem = DataError(f"{folder}: cannot list this folder: {error.strerror or error}")
        problem.__context__, problem.__suppress_context__ = error, True  # read by _skip
        if skipped is None or folder == root:
            raise problem
        _skip(skipped, Path(os.path.relpath(folder, root)).as_posix(), problem)
    if not found and skipped is not None and len(skipped) > first:
        raise every_medium_damaged(root, skipped[first:])
    if not found:
        raise DataError(
            f"{root}: no image or video in this folder (images: "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))}, "
            "any case)"
        )
    if skipped is None:
        return [_medium(file, name) for name, file in sorted(found)]
    media = []
    for name, file in sorted(found):
        try:
            media.append(_medium(file, name))
        except DataError as error:
            _skip(skipped, name, error)
    if not media:
        raise every_medium_damaged(root, skipped[first:])
    return media


def every_medium_damaged(root: Path, skipped: Sequence[Skipped]) -> DataError:
    """The error of a folder whose every image or video was skipped as damaged."""
    shown = "; ".join(s.reason for s in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return DataError(
        f"{root}: every image or video in this folder is damaged ({len(skipped)} skipped): "
        f"{shown}{more}"
    )


def _upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """``rgb`` turned by an EXIF orientation value (1-8, TIFF 6.0 / EXIF 2.3 tag 0x0112: where
    row 0 and column 0 of the stored pixels are), as PIL's ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return rgb[:, ::-1]
    if orientation == 3:
        return rgb[::-1, ::-1]
    if orientation == 4:
        return rgb[::-1]
    if orientation == 5:
        return rgb.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(rgb, k=-1)
    if orientation == 7:
        return np.rot90(rgb, k=2).transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(rgb, k=1)
    return rgb


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of an image (1 when it has none or its EXIF cannot be parsed:
    the pixels are then shown as stored, as any viewer would)."""
    try:
        with Image.open(path) as image:
            value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # damaged EXIF in a decodable image: not worth refusing the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def read_frames(medium: Media) -> Iterator[tuple[int, np.ndarray]]:
    """``(1-based frame number, H x W x 3 uint8 RGB)`` of each frame of ``medium``."""
    if medium.kind == "image":
        rgb = cv2.cvtColor(read_image(str(medium.path)), cv2.COLOR_BGR2RGB)
        yield 1, np.ascontiguousarray(_upright(rgb, _exif_orientation(medium.path)))
        return
    capture = _open_video(medium.path)
    try:
        number = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            number += 1
            yield number, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if number == 0:
        raise DataError(f"{medium.path}: cannot read video: no decodable frame")


def iter_media(
    media: str | os.PathLike[str] | Sequence[Media], skipped: list[Skipped] | None = None
) -> Iterator[MediaFrame]:
    """Every frame of the media at a path (as :func:`list_media` finds them) or of a list of
    :class:`Media` already found, media after media, frames in order. A path is listed at the
    call (its errors raise then); a damaged file raises when its frames are reached, or with
    ``skipped`` (a list) is skipped, warned about and appended there. A damaged file is found
    before any of its frames is yielded (:func:`read_frames` raises only for an image it cannot
    decode or a video with no decodable frame), so a skipped file leaves no frame behind."""
    if isinstance(media, str | os.PathLike):
        media = list_media(media, skipped)
    return _frames_of(media, skipped)


def _frames_of(media: Sequence[Media], skipped: list[Skipped] | None) -> Iterator[MediaFrame]:
    for medium in media:
        number = 0
        try:
            for number, rgb in read_frames(medium):
                yield MediaFrame(medium.name, number, rgb)
        except DataError as error:
            if skipped is None or number:  # frames of it already predicted: not skipped whole
                raise
            _skip(skipped, medium.name, error)
