"""Decode the face of one indexed sample: an Aff-Wild2 frame, or the box crop of an ExpW image.

Decoding goes through OpenCV, which reads JPEGs markedly faster than PIL and so keeps a few
DataLoader workers ahead of the GPU.

Damaged files are refused, not decoded into wrong faces: OpenCV (libjpeg) decodes a JPEG cut to
half its bytes into a face whose lower half is grey, with only a "Premature end of JPEG file"
warning that names no file. A complete JPEG ends with the EOI marker ``FF D9`` (ITU-T T.81,
B.2.1), possibly followed by padding; ``read_image`` checks that on the bytes it decodes anyway
(no second read), and raises ``ImageError`` naming the file and what is wrong with it. Data
after the EOI marker (phone makers' trailers, an appended second image or video) is not damage:
decoders stop at EOI, so a file whose main image's scan reaches an ``FF D9`` is complete,
whatever follows it (entropy-coded data cannot hold ``FF D9``: T.81 B.1.1.5 stuffs every
``FF`` byte in it).

Nothing a data folder holds may hang or exhaust a worker. Only regular files are read: a FIFO
(or a character device) named like a frame would block ``read`` forever, so the file is opened
with ``O_NONBLOCK`` (which opening a FIFO with no writer needs not to block) and ``fstat`` of the
open descriptor refuses anything else before a byte is read. And the pixel count an image
declares in its header is checked before it is decoded (:data:`MAX_IMAGE_PIXELS`): a small PNG
named ``.jpg`` that declares 20000x20000 pixels would otherwise decode into 1.2 GB per sample.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import stat
import warnings
from collections.abc import Iterator
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ferlit.data.index import BOXED_IMAGE, FrameIndex
from ferlit.errors import ConfigError, DataError

#: Raw stored pixels, 3 channels (grey and RGBA images included). EXIF orientation is ignored so
#: that ExpW's boxes, given in the stored pixel grid, land on the face whatever the camera wrote.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
#: What may follow a JPEG's EOI marker and still count as padding: zero bytes, whitespace and
#: 0xFF fill bytes, which encoders and copy tools append (T.81 B.1.1.2 allows 0xFF fill).
_PADDING = b"\x00\xff\r\n\t "
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (T.81, Table B.1: SOF0-3, 5-7, 9-11, 13-15; not DHT C4, JPG C8,
#: DAC CC), whose segment holds the frame's height and width; markers without a length field.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})

#: Most pixels an image may declare in its header to be decoded: 8192 x 8192 (2**26, a 192 MiB
#: BGR decode). Aff-Wild2's cropped_aligned frames are 112 x 112 and ExpW's web images a few
#: thousand pixels a side; 50-Mpx camera photos (8688 x 5792) still fit. OpenCV's own limit is
#: 2**30 pixels (``OPENCV_IO_MAX_IMAGE_PIXELS``), 3 GiB a decode, far beyond what a loader worker
#: should allocate per sample.
MAX_IMAGE_PIXELS = 2**26

BoxOverflow = Literal["clip", "pad"]
BOX_OVERFLOW = ("clip", "pad")


def check_box_overflow(value: object, option: str = "expw_box_overflow") -> None:
    """``ConfigError`` naming ``option`` unless ``value`` is one of :data:`BOX_OVERFLOW` (the
    ways :func:`load_face` treats an ExpW box past its image's edge)."""
    if value not in BOX_OVERFLOW:
        raise ConfigError(f"{option} must be 'clip' or 'pad', got {value!r}")


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


def image_problem(data: bytes) -> str | None:
    """Why the bytes of an image file are not a complete image, or None: the cheap checks.

    Empty files, and JPEGs (starting with ``FF D8``) that do not end with ``FF D9`` once trailing
    padding is stripped: a file cut short, typically by an interrupted copy or download.
    """
    if len(data) == 0:
        return "empty file (0 bytes)"
    if (
        data[:2] == _JPEG_SOI
        and not data[-4096:].rstrip(_PADDING).endswith(_JPEG_EOI)
        and not _ends_before_trailer(data)
    ):
        return (
            f"truncated JPEG: no end-of-image marker FF D9 at its end ({len(data):,} bytes; "
            "the file was cut short)"
        )
    return None


def _jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """The ``(offset, marker)`` of each marker of a JPEG after its SOI, in file order (T.81 B.1.1.4,
    fill bytes ``FF`` skipped); stops at the data's end or where no marker is (a damaged header).
    Each segment is skipped by its length field; callers stop at the marker they look for (SOF
    for the declared size, SOS for the scan), both in the header before any entropy-coded data."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield pos, marker
        length = 0 if marker in _JPEG_NO_LENGTH else int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 2 + length


def _ends_before_trailer(data: bytes) -> bool:
    """Whether a JPEG not ending with EOI has one after its main image's first scan, i.e. is
    complete with data appended. The segments are walked from SOI to the first SOS (so that an
    EXIF thumbnail's EOI, inside APP1, does not count); a walk that fails counts as no EOI."""
    for pos, marker in _jpeg_markers(data):
        if marker == 0xDA:  # start of scan: its entropy-coded data follows
            return data.find(_JPEG_EOI, pos + 2) != -1
    return False


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` an image's header declares, read without decoding it, or None when
    the header does not say (an unknown format, or one cut short: the decoder then decides).

    JPEG and PNG, the formats of Aff-Wild2 and ExpW, are parsed here (a few microseconds: the
    JPEG's segments up to its start-of-frame, T.81 B.2.2; the PNG's IHDR chunk, which must come
    first); other formats through PIL, which reads their header only.
    """
    if data[:8] == _PNG_SIGNATURE:
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return None
    if data[:2] == _JPEG_SOI:
        for pos, marker in _jpeg_markers(data):
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    return None
                height = int.from_bytes(data[pos + 5 : pos + 7], "big")
                width = int.from_bytes(data[pos + 7 : pos + 9], "big")
                return (width, height) if height else None  # 0: height given later (DNL)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                return opened.size
    except Image.DecompressionBombError as e:  # over twice PIL's own limit: far over ours
        raise ImageError(
            f"declares more pixels than ferlit's limit of {MAX_IMAGE_PIXELS:,} (8192x8192) "
            f"({str(e)[:100]}): not decoded"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def size_problem(width: int, height: int) -> str | None:
    """Why an image of ``width x height`` pixels is not decoded, or None (:data:`MAX_IMAGE_PIXELS`)."""
    if width * height > MAX_IMAGE_PIXELS:
        return (
            f"declares {width}x{height} pixels (width x height), over ferlit's limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels (8192x8192): not decoded (a face image is a few "
            "thousand pixels a side at most)"
        )
    return None


def _read_regular_file(path: str) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file before reading from it.

    ``O_NONBLOCK``: opening a FIFO that has no writer returns at once instead of blocking, and
    ``fstat`` then refuses it (no ``read`` ever waits on it); ``O_NOCTTY`` keeps a terminal
    device from becoming the worker's controlling terminal.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(mode)
                else "a FIFO (named pipe)"
                if stat.S_ISFIFO(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "a device"
            )
            raise ImageError(f"not a regular file but {kind}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def read_image(path: str, source: str | None = None) -> np.ndarray:
    """The BGR uint8 ``H x W x 3`` pixels of an image file, or ``ImageError`` saying why not:
    missing, not a regular file, empty, truncated, declaring too many pixels, undecodable."""
    try:
        raw = _read_regular_file(path)
    except ImageError as e:
        raise ImageError.at(path, f"cannot read image: {e}", source) from None
    except FileNotFoundError:
        raise ImageError.at(path, "cannot read image: no such file", source) from None
    except OSError as e:
        raise ImageError.at(path, f"cannot read image: {e.strerror or e}", source) from None
    problem = image_problem(raw)
    if problem is None:
        try:
            size = declared_size(raw)
        except ImageError as e:
            raise ImageError.at(path, str(e), source) from None
        problem = None if size is None else size_problem(*size)
    if problem is not None:
        raise ImageError.at(path, problem, source)
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), _IMREAD_FLAGS)
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

    A box that runs past the right or bottom edge (real ExpW has such boxes: ``ferlit.data.readers.expw``)
    is clipped to the image with ``box_overflow="clip"`` (the face kept, a little narrower), or
    padded with black pixels to its full size with ``"pad"``, as a crop with PIL's
    ``Image.crop`` does. The reader has already dropped boxes with no pixel in their image. A
    damaged image file raises ``ImageError``.
    """
    check_margin(margin)
    check_box_overflow(box_overflow)
    path = index.image_path(i)
    image = read_image(path, index.source(i))
    if index.group_kinds[index.groups[i]] == BOXED_IMAGE:
        image = crop_box(image, index, i, margin, box_overflow)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_margin(margin: object, option: str = "margin") -> None:
    """``ConfigError`` naming ``option`` unless ``margin`` is a finite number >= 0."""
    if not (isinstance(margin, numbers.Real) and math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"{option} must be a finite number >= 0, got {margin!r}")


def crop_box(
    image: np.ndarray, index: FrameIndex, i: int, margin: float, box_overflow: BoxOverflow
) -> np.ndarray:
    """The face of boxed sample ``i`` (``BOXED_IMAGE``) cut from its decoded ``image``, as
    :func:`load_face` describes; a ``DataError`` when the file no longer matches the index."""
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
