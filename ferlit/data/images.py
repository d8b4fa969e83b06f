"""Decode the face of one indexed sample: an Aff-Wild2 frame, or the box crop of an ExpW image.

Decoding goes through OpenCV, which reads JPEGs markedly faster than PIL and so keeps a few
DataLoader workers ahead of the GPU.

Damaged files are refused, not decoded into wrong faces: OpenCV (libjpeg) decodes a JPEG cut to
half its bytes into a face whose lower half is grey, with only a "Premature end of JPEG file"
warning that names no file. A complete JPEG ends with the EOI marker ``FF D9`` (ITU-T T.81,
B.2.1), possibly followed by padding; ``read_image`` checks that on the bytes it decodes anyway
(no second read), and raises ``ImageError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from ferlit.data.index import BOXED_IMAGE, FrameIndex
from ferlit.errors import ConfigError, DataError

#: Raw stored pixels, 3 channels (grey and RGBA images included). EXIF orientation is ignored so
#: that ExpW's boxes, given in the stored pixel grid, land on the face whatever the camera wrote.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
#: What may follow a JPEG's EOI marker and still count as padding: zero bytes, whitespace and
#: 0xFF fill bytes, which encoders and copy tools append (T.81 B.1.1.2 allows 0xFF fill).
_PADDING = b"\x00\xff\r\n\t "
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"

BoxOverflow = Literal["clip", "pad"]
BOX_OVERFLOW = ("clip", "pad")


class ImageError(DataError):
    """An image file that is missing, empty, cut short or not decodable; ``path`` and ``reason``
    say which and why (training replaces such a sample, validation stops on it).

    Built with ``ImageError.at``: the constructor takes the message alone, as torch rebuilds an
    exception re-raised from a DataLoader worker (``ExceptionWrapper.reraise``).
    """

    path: str | None = None
    reason: str | None = None

    @classmethod
    def at(cls, path: str, reason: str, source: str | None = None) -> ImageError:
        where = f"; sample from {source}" if source else ""
        error = cls(f"{path}: {reason}{where}")
        error.path, error.reason = path, reason
        return error


def image_problem(data: bytes | np.ndarray) -> str | None:
    """Why the bytes of an image file are not a complete image, or None: the cheap checks.

    Empty files, and JPEGs (starting with ``FF D8``) that do not end with ``FF D9`` once trailing
    padding is stripped: a file cut short, typically by an interrupted copy or download.
    """
    if len(data) == 0:
        return "empty file (0 bytes)"
    if bytes(data[:2]) == _JPEG_SOI and not bytes(data[-4096:]).rstrip(_PADDING).endswith(
        _JPEG_EOI
    ):
        return (
            f"truncated JPEG: no end-of-image marker FF D9 at its end ({len(data):,} bytes; "
            "the file was cut short)"
        )
    return None


def read_image(path: str, source: str | None = None) -> np.ndarray:
    """The BGR uint8 ``H x W x 3`` pixels of an image file, or ``ImageError`` saying why not."""
    try:
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise ImageError.at(path, "cannot read image: no such file", source) from None
    except OSError as e:
        raise ImageError.at(path, f"cannot read image: {e.strerror or e}", source) from None
    problem = image_problem(data)
    if problem is not None:
        raise ImageError.at(path, problem, source)
    image = cv2.imdecode(data, _IMREAD_FLAGS)
    if image is None:
        raise ImageError.at(path, "cannot read image (not a decodable image)", source)
    return image


def check_image(path: str) -> str | None:
    """Why the image at ``path`` is bad (missing, empty, truncated, undecodable), or None: the
    whole decode, as ``python -m ferlit.data check`` runs it on every image."""
    try:
        read_image(path)
    except ImageError as e:
        return e.reason
    return None


def load_face(
    index: FrameIndex, i: int, margin: float = 0.0, box_overflow: BoxOverflow = "clip"
) -> np.ndarray:
    """The RGB uint8 ``H x W x 3`` face of sample ``i``.

    Aff-Wild2 (``FRAME_FOLDER``): the whole frame, already an aligned face crop. ExpW
    (``BOXED_IMAGE``): rows ``top:bottom`` and columns ``left:right`` of the image, i.e. right and
    bottom are exclusive, so the crop is ``(bottom - top) x (right - left)`` pixels. ``margin``
    enlarges the box by that fraction of its height (top and bottom) and width (left and right),
    rounded to whole pixels, then clips it to the image: some context around a tight detector box, as
    face models are often trained with.

    A box that runs past the right or bottom edge (real ExpW has such boxes: ``ferlit.data.expw``)
    is clipped to the image with ``box_overflow="clip"`` (the face kept, a little narrower), or
    padded with black pixels to its full size with ``"pad"``, as a crop with PIL's
    ``Image.crop`` does. The reader has already dropped boxes with no pixel in their image. A
    damaged image file raises ``ImageError``.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
    if box_overflow not in BOX_OVERFLOW:
        raise ConfigError(f"expw_box_overflow must be 'clip' or 'pad', got {box_overflow!r}")
    path = index.image_path(i)
    image = read_image(path, index.source(i))
    if index.group_kinds[index.groups[i]] == BOXED_IMAGE:
        image = _crop(image, index, i, margin, box_overflow)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _crop(
    image: np.ndarray, index: FrameIndex, i: int, margin: float, box_overflow: BoxOverflow
) -> np.ndarray:
    height, width = image.shape[:2]
    indexed = index.image_size(i)
    if indexed is not None and indexed != (width, height):
        raise DataError(
            f"{index.image_path(i)}: decodes to {width}x{height} pixels but was indexed at "
            f"{indexed[0]}x{indexed[1]} (width x height): the file was replaced after it was "
            "indexed; touch its folder (the index cache then rebuilds) or pack again"
        )
    top, left, right, bottom = (int(v) for v in index.boxes[i])
    if top >= height or left >= width:
        raise DataError(
            f"{index.source(i)}: face box (top, left, right, bottom) = ({top}, {left}, {right}, "
            f"{bottom}) has no pixel in the image of {width}x{height} (width x height) pixels"
        )
    dy = round(margin * (bottom - top))
    dx = round(margin * (right - left))
    if box_overflow == "pad":
        # The margin still stops at the image; only the box itself is padded past the edge.
        y0, x0 = max(top - dy, 0), max(left - dx, 0)
        y1, x1 = max(min(bottom + dy, height), bottom), max(min(right + dx, width), right)
        face = np.zeros((y1 - y0, x1 - x0, 3), image.dtype)
        inside = image[y0 : min(y1, height), x0 : min(x1, width)]
        face[: inside.shape[0], : inside.shape[1]] = inside
        return face
    return image[
        max(top - dy, 0) : min(bottom + dy, height),
        max(left - dx, 0) : min(right + dx, width),
    ]
