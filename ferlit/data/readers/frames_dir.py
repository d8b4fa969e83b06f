"""Unlabelled face images in Aff-Wild2's ``cropped_aligned`` layout: the faces to predict.

The ABAW test set ships its faces as the training frames are, ``<folder>/<video>/00001.jpg ...``
(5-digit, 1-based frame numbers) with no annotation file; from ABAW 2023 on in two downloads
(``batch1/cropped_aligned`` and ``batch2/cropped_aligned_new_50_vids`` in entrants' paths). This
reader indexes such folders with label -1 (nothing is scored) for ``data.frames_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferlit.data.index import FRAME_FOLDER, FrameIndex
from ferlit.data.readers.affwild2 import FRAMES_DIRS, frame_file
from ferlit.data.readers.base import Reader
from ferlit.errors import ConfigError, DataError

#: The files taken for face images; any other file in a frame folder is ignored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def frames_dir_index(
    frames_dir: str | os.PathLike | Sequence[str | os.PathLike], num_classes: int
) -> FrameIndex:
    """An unlabelled index (labels -1) of face images in the ``cropped_aligned`` layout.

    ``frames_dir/<video>/00001.jpg ...`` gives one video per sub-folder; image files directly in
    ``frames_dir`` are one video named after the folder. Frames are named by their 5-digit,
    1-based frame number as in Aff-Wild2 (the ABAW test set ships its faces so); files that are
    not images are ignored, an image named otherwise is an error.

    ``frames_dir`` may be a list of such folders. A folder that holds ``cropped_aligned/`` or
    ``cropped_aligned_new_50_vids/`` (an Aff-Wild2 root, or a download holding both) stands for
    those folders. A video found in two folders is an error naming both, as in the training data
    (``read_affwild2``).
    """
    given = [frames_dir] if isinstance(frames_dir, str | os.PathLike) else list(frames_dir)
    if not given:
        raise ConfigError("data.frames_dir: an empty list; give one or more folders of face images")
    folders: list[Path] = []
    for path in map(Path, given):
        if not path.is_dir():
            raise DataError(f"{path}: data.frames_dir is not a folder")
        inner = [path / d for d in FRAMES_DIRS if (path / d).is_dir()]
        folders += inner or [path]
    parts, seen = [], {}
    for folder in folders:
        index = _one_frames_dir(folder, num_classes)
        for name in index.group_names:
            where = Path(index.roots[0]) / name
            if name in seen:
                raise DataError(
                    f"video {name} is in two data.frames_dir folders: {seen[name]} and {where}; "
                    "keep one of them"
                )
            seen[name] = where
        parts.append(index)
    return parts[0] if len(parts) == 1 else FrameIndex.concat(parts)


def _one_frames_dir(root: Path, num_classes: int) -> FrameIndex:
    """The index of one frames folder (see ``frames_dir_index``)."""
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
    """The sorted frame numbers of the face images directly in ``folder``."""
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


class FramesDirReader(Reader):
    """Unlabelled faces in one folder or a list of folders (:func:`frames_dir_index`), for
    prediction: one split, ``all`` (every face image found), whole images as faces, labels -1.
    Not cached: listing the folders is what indexing costs anyway."""

    name = "frames_dir"
    title = "frames folder"
    splits = ("all",)

    def __init__(
        self, root: str | os.PathLike | Sequence[str | os.PathLike], num_classes: int = 7
    ) -> None:
        given = [root] if isinstance(root, str | os.PathLike) else list(root)
        if not given:
            raise ConfigError(
                "data.frames_dir: an empty list; give one or more folders of face images"
            )
        super().__init__(given[0], num_classes)
        self.roots = [os.fspath(r) for r in given]

    def __repr__(self) -> str:
        return f"FramesDirReader({self.roots!r}, num_classes={self.num_classes})"

    def index(self, split: str = "all", progress: bool = True) -> FrameIndex:
        self.check_split(split)
        return frames_dir_index(self.roots, self.num_classes)

    def folders(self) -> list[str]:
        return list(self.roots)
