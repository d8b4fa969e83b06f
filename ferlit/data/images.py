"""Decode the face of one indexed sample: an Aff-Wild2 frame, or the box crop of an ExpW image.

Decoding goes through OpenCV, which reads JPEGs markedly faster than PIL and so keeps a few
DataLoader workers ahead of the GPU.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ferlit.data.index import BOXED_IMAGE, FrameIndex
from ferlit.errors import ConfigError, DataError

#: Raw stored pixels, 3 channels (grey and RGBA images included). EXIF orientation is ignored so
#: that ExpW's boxes, given in the stored pixel grid, land on the face whatever the camera wrote.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def load_face(index: FrameIndex, i: int, margin: float = 0.0) -> np.ndarray:
    """The RGB uint8 ``H x W x 3`` face of sample ``i``.

    Aff-Wild2 (``FRAME_FOLDER``): the whole frame, already an aligned face crop. ExpW
    (``BOXED_IMAGE``): rows ``top:bottom`` and columns ``left:right`` of the image, i.e. right and
    bottom are exclusive, so the crop is ``(bottom - top) x (right - left)`` pixels. ``margin``
    enlarges the box by that fraction of its height (top and bottom) and width (left and right),
    rounded to whole pixels, then clips it to the image: some context around a tight detector box, as
    face models are often trained with.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
    path = index.image_path(i)
    image = cv2.imread(path, _IMREAD_FLAGS)
    if image is None:
        raise DataError(
            f"{path}: cannot read image (missing, unreadable or not a decodable image); "
            f"sample from {index.source(i)}"
        )
    if index.group_kinds[index.groups[i]] == BOXED_IMAGE:
        image = _crop(image, index.boxes[i], margin, index.source(i))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _crop(image: np.ndarray, box: np.ndarray, margin: float, source: str) -> np.ndarray:
    height, width = image.shape[:2]
    top, left, right, bottom = (int(v) for v in box)
    if top < 0 or left < 0 or right > width or bottom > height:
        raise DataError(
            f"{source}: face box (top, left, right, bottom) = ({top}, {left}, {right}, {bottom}) "
            f"is not inside the image of {width}x{height} (width x height) pixels"
        )
    dy = round(margin * (bottom - top))
    dx = round(margin * (right - left))
    return image[
        max(top - dy, 0) : min(bottom + dy, height),
        max(left - dx, 0) : min(right + dx, width),
    ]
