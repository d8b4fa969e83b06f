"""Aff-Wild2 expression set: the challenge's ``cropped_aligned`` frames and per-video annotation files.

On disk (as distributed to ABAW participants)::

    <affwild2_dir>/cropped_aligned/<video>/00001.jpg ...      112x112 aligned faces, 5-digit, 1-based
    <affwild2_dir>/<annotations>/<Train dir>/<video>.txt      header line, then one label per frame

Line k after the header of ``<video>.txt`` labels frame k, i.e. ``cropped_aligned/<video>/%05d.jpg``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ferlit.expressions import class_names

#: Known annotation layouts, by challenge year: (folder under affwild2_dir, train dir, val dir).
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "abaw2020": ("annotations/EXPR_Set", "Training_Set", "Validation_Set"),
    "abaw2022": ("EXPR_Classification_Challenge", "Train_Set", "Validation_Set"),
    "abaw2024": ("EXPR_Recognition_Challenge", "Train_Set", "Validation_Set"),
}
SPLITS = ("train", "val")
FRAMES_DIR = "cropped_aligned"


def frame_file(frame: int) -> str:
    """The file name of a 1-based frame number: 5 digits, as in ``cropped_aligned``."""
    return f"{frame:05d}.jpg"


def annotation_dir(affwild2_dir: str | os.PathLike, layout: str, split: str) -> Path:
    """The folder that holds the ``<video>.txt`` files of one split in one layout."""
    folder, train, val = LAYOUTS[layout]
    return Path(affwild2_dir) / folder / (train if split == "train" else val)


def write_annotation_file(path: str | os.PathLike, labels: Sequence[int], num_classes: int = 7) -> None:
    """Write one video's labels in the challenge format: the header, then one label per frame.

    ``-1`` marks an unannotated frame, as in the real files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(class_names(num_classes)), *(str(int(label)) for label in labels)]
    path.write_text("\n".join(lines) + "\n")
