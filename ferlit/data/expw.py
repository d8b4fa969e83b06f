"""ExpW (Expression in-the-Wild): whole images plus one ``label.lst`` line per labelled face.

On disk (as distributed)::

    <expw_dir>/image/origin/<image_name>            the whole web image
    <expw_dir>/label/label.lst                      one face per line, space separated:
        image_name face_id_in_image face_box_top face_box_left face_box_right face_box_bottom
        face_box_cofidence expression_label

``expression_label`` is ExpW's own code (0 angry ... 6 neutral), mapped to the ABAW order by
``ferlit.expressions.EXPW_TO_ABAW``. The face is the box crop of the image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

IMAGES_DIR = "image/origin"
LABEL_FILE = "label/label.lst"


class ExpWFace(NamedTuple):
    """One ``label.lst`` line: a face box in an image and its ExpW expression code."""

    image_name: str
    face_id: int
    top: int
    left: int
    right: int
    bottom: int
    confidence: float
    expression: int

    def line(self) -> str:
        return " ".join(str(v) for v in self)


def write_label_list(path: str | os.PathLike, faces: Iterable[ExpWFace]) -> None:
    """Write ``label.lst`` in ExpW's format, one face per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(face.line() + "\n" for face in faces))
