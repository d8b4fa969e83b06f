"""ExpW (Expression in-the-Wild): whole images plus one ``label.lst`` line per labelled face.

On disk (as distributed)::

    <expw_dir>/image/origin/<image_name>            the whole web image
    <expw_dir>/label/label.lst                      one face per line, space separated:
        image_name face_id_in_image face_box_top face_box_left face_box_right face_box_bottom
        face_box_cofidence expression_label

``expression_label`` is ExpW's own code (0 angry ... 6 neutral), mapped to the ABAW order by
``ferlit.expressions.EXPW_TO_ABAW``. The face is the box crop of the image (Zhang et al., "From
Facial Expression Recognition to Interpersonal Relation Prediction", IJCV 2018, and the data
set's readme, which spells the confidence field ``face_box_cofidence``).

Real ExpW boxes are not always inside their image: in a public subset of 5,705 real lines, 46
(0.8%) run past the right edge (by 0-15 px, 39 of them) or the bottom edge (by 1-7 px, 7 of them),
e.g. the box (top, left, right, bottom) = (16, 8, 108, 116) of a 107x160 image. The reader reads
every image's stored size from its JPEG header (the pixel grid the boxes are given in; EXIF
orientation is ignored, as the decoder ignores it) and decides while indexing: a box with no pixel
in its image is skipped (``skipped["box_outside_image"]``), and so is an empty box, top >= bottom
or left >= right (``skipped["empty_box"]``): neither holds a face, and one such line among ExpW's
~91k must not stop a run; a box past the edge is kept, and ``load_face`` clips it to the image or
pads it with black (``data.expw_box_overflow``).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.progress import track

from ferlit.data.images import (
    MAX_IMAGE_PIXELS,
    BoxOverflow,
    ImageError,
    check_box_overflow,
    check_margin,
    crop_box,
    declared_size,
    read_image,
    size_problem,
)
from ferlit.data.index import BOXED_IMAGE, FrameIndex
from ferlit.data.readers.base import Reader
from ferlit.errors import QUOTE_LIMIT, ConfigError, DataError, quote
from ferlit.expressions import EXPW_NAMES, EXPW_TO_ABAW, check_num_classes
from ferlit.io import atomic_write, file_kind, read_text

IMAGES_DIR = "image/origin"
LABEL_FILE = "label/label.lst"

#: The fields of a ``label.lst`` line, in order, as the ExpW readme names them.
FIELDS = (
    "image_name",
    "face_id_in_image",
    "face_box_top",
    "face_box_left",
    "face_box_right",
    "face_box_bottom",
    "face_box_cofidence",
    "expression_label",
)
#: Show a progress bar when label.lst has more lines than this (ExpW itself lists ~92k faces).
PROGRESS_MIN_LINES = 200_000
#: Show a progress bar while reading image sizes when more images than this are listed (ExpW
#: itself: ~24k images with one or more faces).
PROGRESS_MIN_IMAGES = 2_000
_CHUNK_LINES = 50_000


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
    """Write ``label.lst`` in ExpW's format, one face per line, whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write("".join(face.line() + "\n" for face in faces))


def read_expw(
    expw_dir: str | os.PathLike,
    num_classes: int = 7,
    min_confidence: float | None = None,
    progress: bool = True,
) -> FrameIndex:
    """Index every labelled face of ExpW, in ``label.lst`` order.

    ExpW has no train/val split and no ``Other`` class, so the same index serves 7- and 8-class
    runs. A line repeated verbatim (same image, face id, box and label) counts once
    (``skipped["duplicate"]``); with ``min_confidence``, faces whose detector confidence is below
    it are dropped (``skipped["low_confidence"]``). Every listed image must exist: unlike an
    Aff-Wild2 frame without a face, a missing ExpW image means an incomplete download. Each
    kept image's size is read from its header and stored (``group_sizes``); an empty box
    (``skipped["empty_box"]``) and a box with no pixel in its image
    (``skipped["box_outside_image"]``) are dropped, one that runs past the edge is kept
    (``FrameIndex.boxes_past_edge``). A list that keeps no face (every box empty or outside
    its image, e.g. fields in another order, or every confidence below ``min_confidence``) is a
    DataError, as an Aff-Wild2 split that keeps no frame is.
    """
    check_num_classes("num_classes", num_classes)
    if min_confidence is not None and not (
        isinstance(min_confidence, numbers.Real) and math.isfinite(min_confidence)
    ):
        raise ConfigError(f"min_confidence must be a finite number or None, got {min_confidence!r}")
    root = os.fspath(expw_dir)
    if not os.path.isdir(root):
        raise DataError(f"{root}: ExpW folder does not exist")
    label_path = os.path.join(root, LABEL_FILE)
    if not os.path.isfile(label_path):  # never opened unless regular: a FIFO would block
        raise DataError(
            f"{label_path}: {file_kind(label_path)}; expected ExpW's face list {LABEL_FILE}"
        )
    images_dir = os.path.join(root, IMAGES_DIR)
    if not os.path.isdir(images_dir):
        raise DataError(f"{images_dir}: missing; expected ExpW's images in {IMAGES_DIR}/")

    image_names, codes, ints, confidence, lines = _parse_label_list(label_path, progress)
    _check_fields(label_path, lines, ints, confidence)
    _check_images(label_path, images_dir, lines, image_names, codes)
    face_id, boxes, expression = (
        ints[:, 0],
        ints[:, 1:5],
        ints[:, 5],
    )  # boxes: top left right bottom

    keep = ~_repeats(np.concatenate([codes[:, None], ints], axis=1))
    skipped = {"duplicate": int(np.count_nonzero(~keep)), "low_confidence": 0}
    if min_confidence is not None:
        low = keep & (confidence < min_confidence)
        skipped["low_confidence"] = int(np.count_nonzero(low))
        keep &= ~low
    empty = keep & ((boxes[:, 0] >= boxes[:, 3]) | (boxes[:, 1] >= boxes[:, 2]))
    skipped["empty_box"] = int(np.count_nonzero(empty))
    keep &= ~empty

    sizes = _image_sizes(label_path, images_dir, lines, image_names, codes, keep, progress)
    width, height = sizes[codes, 0], sizes[codes, 1]
    # top and left are >= 0 (_check_fields) and the kept boxes are not empty: the box clipped
    # to the image is empty exactly when it starts at or past the right or bottom edge.
    outside = keep & ((boxes[:, 0] >= height) | (boxes[:, 1] >= width))
    skipped["box_outside_image"] = int(np.count_nonzero(outside))
    keep &= ~outside
    if not keep.any():  # as an Aff-Wild2 split that keeps no frame: an error, not 0 faces
        reasons = ", ".join(f"{count:,} {reason}" for reason, count in skipped.items() if count)
        raise DataError(
            f"{label_path}: keeps no face of the {len(lines):,} listed ({reasons}); expected "
            f"{' '.join(FIELDS)} per line, the box in its image's pixels"
            + (
                f", and faces at min_confidence {min_confidence:g} or above"
                if min_confidence is not None
                else ""
            )
        )

    used, groups = np.unique(codes[keep], return_inverse=True)
    return FrameIndex.build(
        root=root,
        num_classes=num_classes,
        group_names=[f"{IMAGES_DIR}/{image_names[g]}" for g in used],
        group_kinds=[BOXED_IMAGE] * len(used),
        group_sources=[LABEL_FILE] * len(used),
        labels=np.asarray(EXPW_TO_ABAW)[expression[keep]],
        groups=groups,
        frames=face_id[keep],
        lines=lines[keep],
        boxes=boxes[keep],
        skipped=skipped,
        group_sizes=sizes[used],
    )


def _parse_label_list(
    path: str, progress: bool
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``label.lst`` into columns, a chunk of lines at a time.

    Returns the image names (sorted), each face's row in that list, its six integer fields
    (face id, top, left, right, bottom, expression), its confidence and its line number. Fields
    are separated by any run of spaces or tabs; CRLF endings, a byte order mark and blank lines
    are accepted. Each chunk becomes arrays at once, so a million-line file never exists as a
    million lists of strings, and the per-line work is one ``str.split``.
    """
    text = read_text(path)
    all_lines = text.split("\n")
    names: list[str] = []
    parts: dict[str, list[np.ndarray]] = {"ints": [], "confidence": [], "lines": []}
    starts = range(0, len(all_lines), _CHUNK_LINES)
    if progress and len(all_lines) > PROGRESS_MIN_LINES:
        starts = track(starts, description="Indexing ExpW", transient=True)
    width = len(FIELDS)
    for start in starts:
        rows = [line.split() for line in all_lines[start : start + _CHUNK_LINES]]
        counts = np.fromiter(map(len, rows), np.int64, len(rows))
        wrong = np.flatnonzero((counts != width) & (counts != 0))
        if len(wrong):
            k = int(wrong[0])
            raise DataError(
                f"{path}:{start + k + 1}: found {counts[k]} fields; expected {width} separated "
                f"by spaces: {' '.join(FIELDS)}"
            )
        line_numbers = np.flatnonzero(counts) + start + 1
        fields = list(itertools.chain.from_iterable(rows))
        names += fields[0::width]
        ints = [_column(path, line_numbers, fields[c::width], c, int) for c in (1, 2, 3, 4, 5, 7)]
        parts["ints"].append(np.stack(ints, axis=1))
        parts["confidence"].append(_column(path, line_numbers, fields[6::width], 6, float))
        parts["lines"].append(line_numbers)
    if not names:
        raise DataError(f"{path}: no faces listed; expected one line per face: {' '.join(FIELDS)}")
    image_names = sorted(dict.fromkeys(names))
    row_of = {name: row for row, name in enumerate(image_names)}
    return (
        image_names,
        np.fromiter(map(row_of.__getitem__, names), np.int64, len(names)),
        np.concatenate(parts["ints"]),
        np.concatenate(parts["confidence"]),
        np.concatenate(parts["lines"]),
    )


def _column(
    path: str, line_numbers: np.ndarray, values: list[str], c: int, kind: type
) -> np.ndarray:
    """Field ``c`` of a chunk as numbers: int64 within 32-bit range (the index stores int32), or
    float64. A DataError names the first line where the field is not such a number.
    """
    column = None
    # int() and float() also read "٣" (Arabic-Indic), "３" (full width), "1_0" and int() "+3":
    # one pass over the chunk's field at C speed keeps integers to ASCII digits and "-" (with
    # which int() accepts exactly -?[0-9]+), and numbers ASCII without "_".
    joined = "\n".join(values)
    ascii_only = joined.isascii()
    if kind is int:
        ascii_only = ascii_only and not joined.encode("ascii").translate(None, b"0123456789-\n")
    if ascii_only and "_" not in joined:
        try:
            column = np.array(list(map(kind, values)), np.int64 if kind is int else np.float64)
        except (ValueError, OverflowError):
            column = None
    if column is not None and (kind is float or ((column >= -(2**31)) & (column < 2**31)).all()):
        return column
    k = next(k for k, value in enumerate(values) if not _parses(value, kind))
    what = "a 32-bit integer" if kind is int else "a number"
    raise DataError(f"{path}:{line_numbers[k]}: {FIELDS[c]} {quote(values[k])} is not {what}")


#: A ``label.lst`` integer field.
_INT = re.compile(r"-?[0-9]+")


def _parses(value: str, kind: type) -> bool:
    if (_INT.fullmatch(value) is None) if kind is int else not value.isascii() or "_" in value:
        return False
    try:
        number = kind(value)
    except ValueError:
        return False
    return kind is float or -(2**31) <= number < 2**31


def _check_fields(path: str, lines: np.ndarray, ints: np.ndarray, confidence: np.ndarray) -> None:
    """Labels are ExpW codes, box coordinates are pixel coordinates (>= 0), confidences are
    finite. Empty boxes are not malformed lines: ``read_expw`` skips and counts them."""
    face_id, top, left, right, bottom, expression = ints.T
    codes = ", ".join(f"{code} {name}" for code, name in enumerate(EXPW_NAMES))
    _check(
        path,
        lines,
        (expression < 0) | (expression > 6),
        lambda k: (
            f"expression_label {expression[k]} out of range; expected an ExpW code 0..6 ({codes})"
        ),
    )

    def box(k: int) -> str:
        return (
            f"face box (top, left, right, bottom) = ({top[k]}, {left[k]}, {right[k]}, {bottom[k]})"
        )

    _check(
        path,
        lines,
        (ints[:, 1:5] < 0).any(axis=1),
        lambda k: f"{box(k)} has a negative coordinate; expected pixel coordinates >= 0",
    )
    _check(
        path,
        lines,
        ~np.isfinite(confidence),
        lambda k: f"face_box_cofidence {confidence[k]} is not a finite number",
    )


def _check_images(
    path: str, images_dir: str, lines: np.ndarray, image_names: list[str], codes: np.ndarray
) -> None:
    """Every listed image is a regular file inside image/origin (one directory listing, not a stat
    per name).

    A name is joined to ``image/origin``, so an absolute name or one with a ``..`` part would
    read a file outside the data folder: refused, naming the line. A listed image that is a link
    to nothing (a disk not mounted) or not a regular file (a FIFO would block the loader) is
    named as such, not as missing.
    """
    outside = np.array(
        [os.path.isabs(n) or ".." in n.replace("\\", "/").split("/") for n in image_names], bool
    )
    _check(
        path,
        lines,
        outside[codes],
        lambda k: (
            f"image_name {shown(image_names[codes[k]])} leads outside {IMAGES_DIR}/; expected a "
            f"file name relative to {images_dir} (no leading / and no .. parts)"
        ),
    )
    try:
        with os.scandir(images_dir) as entries:
            on_disk = {e.name for e in entries if _is_regular(e)}
    except OSError as e:
        raise DataError(f"{images_dir}: cannot be listed ({e.strerror or e})") from None
    present = np.array(
        [n in on_disk or os.path.isfile(os.path.join(images_dir, n)) for n in image_names], bool
    )

    def missing(k: int) -> str:
        name = image_names[codes[k]]
        image = os.path.join(images_dir, name)
        if os.path.islink(image) and not os.path.exists(image):
            return (
                f"image {IMAGES_DIR}/{shown(name)} is a link to {shown(os.readlink(image))}, "
                "which does not exist (a disk not mounted, or a copy moved?)"
            )
        if os.path.lexists(image):
            return (
                f"image {IMAGES_DIR}/{shown(name)} is {file_kind(image)}, not a regular file; "
                "expected a JPEG"
            )
        return f"image {IMAGES_DIR}/{shown(name)} does not exist in {images_dir}"

    _check(path, lines, ~present[codes], missing)


def _is_regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link loop
        return False


def shown(text: str) -> str:
    """File content for a message: as it is up to ``QUOTE_LIMIT`` characters, else cut and quoted
    (an image name of a damaged ``label.lst`` can be megabytes long)."""
    return text if len(text) <= QUOTE_LIMIT else quote(text)


def _image_sizes(
    path: str,
    images_dir: str,
    lines: np.ndarray,
    image_names: list[str],
    codes: np.ndarray,
    keep: np.ndarray,
    progress: bool,
) -> np.ndarray:
    """``(width, height)`` of each listed image that has a kept face (-1 for the others).

    ``PIL.Image.open`` parses the header only, no pixel data (~0.1 ms an image). ``size`` is the
    stored pixel grid whatever the EXIF orientation says, which is the grid OpenCV decodes with
    ``IMREAD_IGNORE_ORIENTATION`` and the grid ExpW's boxes are given in. A header that cannot be
    read, or that declares more pixels than ``ferlit.data.images.MAX_IMAGE_PIXELS`` (which no
    loader would decode), is a DataError naming the image and its first ``label.lst`` line.
    """
    sizes = np.full((len(image_names), 2), -1, np.int64)
    rows = np.unique(codes[keep])
    if progress and len(rows) > PROGRESS_MIN_IMAGES:
        rows = track(rows, description="Reading ExpW image sizes", transient=True)
    for row in rows:
        image = os.path.join(images_dir, image_names[row])
        try:
            with warnings.catch_warnings():  # PIL warns over 89 Mpx; ferlit refuses less below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(image) as opened:
                    sizes[row] = opened.size
            problem = size_problem(*map(int, sizes[row]))
        except Image.DecompressionBombError as e:  # PIL refused: over twice its 89 Mpx
            problem = _oversize_problem(image, e)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            first = lines[int(np.flatnonzero(codes == row)[0])]
            reason = "not an image format PIL knows" if isinstance(e, UnidentifiedImageError) else e
            raise DataError(
                f"{path}:{first}: image {IMAGES_DIR}/{shown(image_names[row])} has no readable image "
                f"header ({reason}); expected a JPEG (repair or re-download it)"
            ) from None
        if problem is not None:
            first = lines[int(np.flatnonzero(codes == row)[0])]
            raise DataError(
                f"{path}:{first}: image {IMAGES_DIR}/{shown(image_names[row])} {problem}; replace it "
                "with the data set's own image or delete its lines"
            )
    return sizes


def _oversize_problem(image: str, error: Exception) -> str:
    """What an image PIL refused as a decompression bomb declares, from its header's bytes."""
    try:
        with open(image, "rb") as f:
            size = declared_size(f.read(1 << 20))
    except (OSError, ImageError):
        size = None
    problem = None if size is None else size_problem(*size)
    return problem or f"declares more than {MAX_IMAGE_PIXELS:,} pixels ({str(error)[:100]})"


def _check(path: str, lines: np.ndarray, bad: np.ndarray, message: Callable[[int], str]) -> None:
    """DataError naming the first line flagged ``bad``, with ``message(row)``, and how many more."""
    rows = np.flatnonzero(bad)
    if len(rows):
        more = f" ({len(rows) - 1} more lines like it)" if len(rows) > 1 else ""
        raise DataError(f"{path}:{lines[rows[0]]}: {message(int(rows[0]))}{more}")


def _repeats(rows: np.ndarray) -> np.ndarray:
    """Which rows repeat an earlier identical row (the first of each kind is not a repeat)."""
    order = np.lexsort(rows.T[::-1])  # stable: equal rows stay in line order
    ordered = rows[order]
    repeats = np.zeros(len(rows), bool)
    repeats[order[1:]] = (ordered[1:] == ordered[:-1]).all(axis=1)
    return repeats


class ExpWReader(Reader):
    """ExpW under ``root`` (:func:`read_expw`): one split, ``train`` (ExpW has no validation
    split; Cafarelli et al. train on it with Aff-Wild2 train), faces cut from their images.

    Options: ``min_confidence`` (drop faces whose detector confidence is below it), ``margin``
    (the crop enlarged by this fraction of the box on each side) and ``box_overflow`` (a box past
    its image's edge clipped, "clip", or padded with black, "pad": ``images.load_face``).
    """

    name = "expw"
    title = "ExpW"
    splits = ("train",)

    def __init__(
        self,
        root: str | os.PathLike,
        num_classes: int = 7,
        min_confidence: float | None = None,
        margin: float = 0.0,
        box_overflow: BoxOverflow = "clip",
    ) -> None:
        super().__init__(root, num_classes)
        if min_confidence is not None and not (
            isinstance(min_confidence, numbers.Real) and math.isfinite(min_confidence)
        ):
            raise ConfigError(
                f"min_confidence must be a finite number or None, got {min_confidence!r}"
            )
        check_margin(margin)
        check_box_overflow(box_overflow, "box_overflow")
        self.min_confidence = min_confidence
        self.margin = margin
        self.box_overflow = box_overflow

    def index(self, split: str = "train", progress: bool = True) -> FrameIndex:
        self.check_split(split)
        return read_expw(self.root, self.num_classes, self.min_confidence, progress)

    def cache_key(self, split: str) -> dict[str, Any] | None:
        """``label.lst``'s size and times and the mtime of ``image/origin``, whose listing the
        reader checks; the margin and box_overflow only change how faces load, not the index."""
        if split not in self.splits:
            return None
        try:
            label = os.stat(os.path.join(self.root, LABEL_FILE))
            images = os.stat(os.path.join(self.root, IMAGES_DIR))
        except OSError:  # missing or unreadable: the reader names it
            return None
        return {
            "options": {"num_classes": self.num_classes, "min_confidence": self.min_confidence},
            "annotations": [[LABEL_FILE, label.st_size, label.st_mtime_ns, label.st_ctime_ns]],
            "image_folder": images.st_mtime_ns,
        }

    def load_face(self, index: FrameIndex, i: int) -> np.ndarray:
        """The box crop of sample ``i`` (rows top:bottom, columns left:right, enlarged by
        ``margin``, clipped or padded per ``box_overflow``), RGB uint8 ``H x W x 3``."""
        image = read_image(index.image_path(i), index.source(i))
        face = crop_box(image, index, i, self.margin, self.box_overflow)
        return cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
