"""Indexing ExpW: label.lst parsing, the ExpW -> ABAW label mapping, crops, duplicates, bad lines."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from ferlit.data.images import load_face
from ferlit.data.index import BOXED_IMAGE
from ferlit.data.readers.expw import ExpWFace, ExpWReader, read_expw, write_label_list
from ferlit.errors import ConfigError, DataError

GREY = (128, 128, 128)
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 60), (40, 60, 230)

#: Two images: a.jpg (48 high, 64 wide) with two faces, b.jpg (32 x 32) with one. Boxes are
#: (top, left, right, bottom), aligned to JPEG's 8-pixel blocks so the colours decode cleanly.
FACES = [
    ExpWFace("b.jpg", 0, 16, 8, 24, 32, 0.9, 3),  # happy
    ExpWFace("a.jpg", 1, 16, 32, 64, 48, 0.8, 0),  # angry
    ExpWFace("a.jpg", 0, 0, 0, 16, 16, 0.7, 6),  # neutral
]


@pytest.fixture
def add_image(tmp_path, write_jpeg):
    """Write image/origin/<name>: grey, with each box filled with its colour."""

    def add(name, height, width, boxes_colours=()):
        image = np.full((height, width, 3), GREY, np.uint8)
        for (top, left, right, bottom), colour in boxes_colours:
            image[top:bottom, left:right] = colour
        write_jpeg(tmp_path / "image/origin" / name, image)

    return add


@pytest.fixture
def expw(tmp_path, add_image):
    """The two images of FACES and their label.lst; returns the label.lst path."""
    add_image("a.jpg", 48, 64, [((16, 32, 64, 48), GREEN), ((0, 0, 16, 16), RED)])
    add_image("b.jpg", 32, 32, [((16, 8, 24, 32), BLUE)])
    path = tmp_path / "label/label.lst"
    write_label_list(path, FACES)
    return path


def test_faces_labels_boxes_and_groups(tmp_path, expw):
    index = read_expw(tmp_path)

    assert len(index) == 3
    assert index.num_classes == 7
    assert index.labels.tolist() == [4, 1, 0]  # ABAW Happiness, Anger, Neutral
    assert index.frames.tolist() == [0, 1, 0]
    assert index.boxes.tolist() == [[16, 8, 24, 32], [16, 32, 64, 48], [0, 0, 16, 16]]
    assert index.lines.tolist() == [1, 2, 3]
    assert index.group_names.tolist() == ["image/origin/a.jpg", "image/origin/b.jpg"]
    assert index.groups.tolist() == [1, 0, 0]
    assert index.group_kinds.tolist() == [BOXED_IMAGE, BOXED_IMAGE]
    assert index.group_sources.tolist() == ["label/label.lst", "label/label.lst"]
    assert index.image_path(0) == str(tmp_path / "image/origin/b.jpg")
    assert index.source(2) == f"{tmp_path}/label/label.lst:3"
    assert set(index.skipped.values()) == {0}


def test_crops_are_the_box_contents(tmp_path, expw):
    index = read_expw(tmp_path)

    for i, colour in enumerate([BLUE, GREEN, RED]):
        top, left, right, bottom = index.boxes[i]
        face = load_face(index, i)
        assert face.shape == (bottom - top, right - left, 3)
        assert face.dtype == np.uint8
        assert np.abs(face.astype(int) - np.array(colour)).max() <= 2, f"sample {i}"


def test_every_expw_code_maps_to_its_abaw_class(tmp_path, add_image):
    add_image("all.jpg", 16, 16)
    write_label_list(
        tmp_path / "label/label.lst",
        [ExpWFace("all.jpg", code, 0, 0, 8, 8, 1.0, code) for code in range(7)],
    )

    index = read_expw(tmp_path, num_classes=8)

    # ExpW 0 angry 1 disgust 2 fear 3 happy 4 sad 5 surprise 6 neutral ->
    # ABAW 0 Neutral 1 Anger 2 Disgust 3 Fear 4 Happiness 5 Sadness 6 Surprise
    assert index.labels.tolist() == [1, 2, 3, 4, 5, 6, 0]
    assert index.num_classes == 8
    assert index.class_counts().tolist() == [1, 1, 1, 1, 1, 1, 1, 0]


def test_duplicate_lines_count_once(tmp_path, expw):
    repeated = FACES[1]._replace(confidence=0.5)  # same image, face, box and label
    relabelled = FACES[1]._replace(expression=5)  # a different label is not a duplicate
    write_label_list(expw, [*FACES, repeated, FACES[0], relabelled])

    index = read_expw(tmp_path)

    assert index.lines.tolist() == [1, 2, 3, 6]
    assert index.labels.tolist() == [4, 1, 0, 6]
    assert index.skipped["duplicate"] == 2


def test_min_confidence(tmp_path, expw):
    index = read_expw(tmp_path, min_confidence=0.75)

    assert index.lines.tolist() == [1, 2]
    assert index.skipped["low_confidence"] == 1
    assert index.group_names.tolist() == ["image/origin/a.jpg", "image/origin/b.jpg"]
    only_b = read_expw(tmp_path, min_confidence=0.85)
    assert only_b.group_names.tolist() == ["image/origin/b.jpg"]
    assert only_b.groups.tolist() == [0]
    assert only_b.skipped["low_confidence"] == 2


def test_a_list_that_keeps_no_face_is_an_error_saying_why(tmp_path, expw):
    # boxes written as (left, top, bottom, right) by another tool: every box starts past the
    # 32-pixel-wide b.jpg or is empty; the reader stops instead of training without ExpW
    swapped = [
        ExpWFace("b.jpg", 0, 40, 8, 50, 60, 0.9, 3),
        ExpWFace("b.jpg", 1, 8, 16, 16, 4, 0.9, 3),
    ]
    write_label_list(expw, swapped)
    with pytest.raises(DataError) as error:
        read_expw(tmp_path)
    assert str(error.value) == (
        f"{expw}: keeps no face of the 2 listed (1 empty_box, 1 box_outside_image); expected "
        "image_name face_id_in_image face_box_top face_box_left face_box_right face_box_bottom "
        "face_box_cofidence expression_label per line, the box in its image's pixels"
    )
    write_label_list(expw, FACES)
    with pytest.raises(DataError, match=r"\(3 low_confidence\); .*, and faces at min_confidence "):
        read_expw(tmp_path, min_confidence=2)


def test_tabs_repeated_spaces_crlf_bom_and_blank_lines(tmp_path, expw):
    expw.write_bytes(
        "\ufeff\r\n"
        "b.jpg 0  16 8\t24 32 0.9 3\r\n"
        "   \r\n"
        "a.jpg\t1 16 32 64 48 0.8 0 \r\n"
        "a.jpg 0 0 0 16 16 0.7 6\r\n\r\n".encode()
    )

    index = read_expw(tmp_path)

    assert index.lines.tolist() == [2, 4, 5]
    assert index.labels.tolist() == [4, 1, 0]
    assert index.boxes.tolist() == [[16, 8, 24, 32], [16, 32, 64, 48], [0, 0, 16, 16]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "a.jpg 0 0 0 16 16 0.7",
            "found 7 fields; expected 8 separated by spaces: image_name "
            "face_id_in_image face_box_top face_box_left face_box_right face_box_bottom "
            "face_box_cofidence expression_label",
        ),
        ("a.jpg 0 0 0 16 16 0.7 6 extra", "found 9 fields; expected 8"),
        ("a.jpg x 0 0 16 16 0.7 6", "face_id_in_image 'x' is not a 32-bit integer"),
        ("a.jpg 0 0 0 16.5 16 0.7 6", "face_box_right '16.5' is not a 32-bit integer"),
        ("a.jpg 0 0 0 16 99999999999 0.7 6", "face_box_bottom '99999999999' is not a 32-bit"),
        ("a.jpg 0 0 0 16 16 high 6", "face_box_cofidence 'high' is not a number"),
        ("a.jpg 0 0 0 16 16 nan 6", "face_box_cofidence nan is not a finite number"),
        ("a.jpg 0 0 0 16 16 0.7 happy", "expression_label 'happy' is not a 32-bit integer"),
        (
            "a.jpg 0 0 0 16 16 0.7 7",
            "expression_label 7 out of range; expected an ExpW code "
            "0..6 \\(0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral\\)",
        ),
        ("a.jpg 0 0 0 16 16 0.7 -1", "expression_label -1 out of range"),
        (
            "a.jpg 0 -1 0 16 8 0.7 6",
            "face box .* = \\(-1, 0, 16, 8\\) has a negative coordinate; expected "
            "pixel coordinates >= 0",
        ),
        ("c.jpg 0 0 0 16 16 0.7 6", "image image/origin/c.jpg does not exist in .*image/origin$"),
        # int() reads these as numbers; label.lst integers are ASCII -?[0-9]+
        ("a.jpg 0 0 0 16 16 0.7 \u0663", "expression_label '\u0663' is not a 32-bit integer"),
        ("a.jpg 0 0 0 16 16 0.7 \uff13", "expression_label '\uff13' is not a 32-bit integer"),
        ("a.jpg 0 0 0 1_6 16 0.7 6", "face_box_right '1_6' is not a 32-bit integer"),
        ("a.jpg +0 0 0 16 16 0.7 6", "face_id_in_image '\\+0' is not a 32-bit integer"),
        ("a.jpg 0 0 0 16 16 0.\u0667 6", "face_box_cofidence '0.\u0667' is not a number"),
        # names are joined to image/origin: they must stay inside it
        (
            "/etc/passwd 0 0 0 16 16 0.7 6",
            "image_name /etc/passwd leads outside image/origin/; expected a file name relative "
            "to .*image/origin \\(no leading / and no \\.\\. parts\\)$",
        ),
        ("../label/a.jpg 0 0 0 16 16 0.7 6", "image_name ../label/a.jpg leads outside"),
        ("sub/../../a.jpg 0 0 0 16 16 0.7 6", "image_name sub/../../a.jpg leads outside"),
    ],
)
def test_bad_lines_name_label_lst_and_line(tmp_path, expw, line, message):
    expw.write_text(f"{FACES[0].line()}\n{line}\n{FACES[2].line()}\n")

    with pytest.raises(DataError, match=f"^{re.escape(str(expw))}:2: {message}"):
        read_expw(tmp_path)


def test_a_5_mb_field_is_quoted_to_100_characters(tmp_path, expw):
    expw.write_text(f"{FACES[0].line()}\na.jpg {'7' * 100}{'x' * 5_000_000} 0 0 16 16 0.7 6\n")
    with pytest.raises(DataError) as caught:
        read_expw(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{expw}:2: face_id_in_image '{'7' * 100}'... (5,000,100 characters)")
    assert len(message) < 300 + len(str(expw))

    expw.write_text(f"{'n' * 5_000_000}.jpg 0 0 0 16 16 0.7 6\n")
    with pytest.raises(DataError, match=r":1: image image/origin/'n{100}'\.\.\. \(5,000,004 c"):
        read_expw(tmp_path)


def test_listed_images_that_are_dangling_links_or_not_files_are_named(tmp_path, expw):
    origin = tmp_path / "image/origin"
    (origin / "b.jpg").unlink()
    (origin / "b.jpg").symlink_to(tmp_path / "unmounted" / "b.jpg")
    with pytest.raises(
        DataError,
        match=rf"^{re.escape(str(expw))}:1: image image/origin/b.jpg is a link to "
        r".*unmounted/b\.jpg, which does not exist \(a disk not mounted",
    ):
        read_expw(tmp_path)
    (origin / "b.jpg").unlink()
    os.mkfifo(origin / "b.jpg")  # opened, it would block the reader forever
    with pytest.raises(
        DataError,
        match=r":1: image image/origin/b\.jpg is a FIFO \(named pipe\), not a regular file; "
        r"expected a JPEG$",
    ):
        read_expw(tmp_path)
    (origin / "b.jpg").unlink()
    (origin / "b.jpg").mkdir()  # another member of the kind: a folder named like an image
    with pytest.raises(
        DataError, match=r":1: image image/origin/b\.jpg is a folder, not a regular file; "
    ):
        read_expw(tmp_path)


def test_errors_count_further_bad_lines(tmp_path, expw):
    expw.write_text(f"{FACES[0].line()}\n" + "a.jpg 0 0 0 16 16 0.7 9\n" * 3)

    with pytest.raises(
        DataError,
        match=r"label\.lst:2: expression_label 9 out of range.* "
        r"\(2 more lines like it\)$",
    ):
        read_expw(tmp_path)


def test_missing_files_and_folders(tmp_path, expw):
    with pytest.raises(DataError, match=f"^{re.escape(str(tmp_path / 'x'))}: ExpW folder does not"):
        read_expw(tmp_path / "x")
    expw.write_text("\n \n")
    with pytest.raises(DataError, match=rf"{re.escape(str(expw))}: no faces listed"):
        read_expw(tmp_path)
    expw.unlink()
    with pytest.raises(DataError, match=rf"{re.escape(str(expw))}: missing; expected ExpW's face"):
        read_expw(tmp_path)
    os.mkfifo(expw)  # a FIFO label.lst is never opened: with no writer, reading it would block
    with pytest.raises(
        DataError, match=rf"{re.escape(str(expw))}: a FIFO \(named pipe\); expected ExpW's face"
    ):
        read_expw(tmp_path)
    expw.unlink()
    write_label_list(expw, FACES)
    (tmp_path / "image/origin").rename(tmp_path / "images")
    with pytest.raises(DataError, match=r"image/origin: missing; expected ExpW's images in"):
        read_expw(tmp_path)


def test_options_are_checked(tmp_path, expw):
    with pytest.raises(ConfigError, match="num_classes must be 7 .* or 8 .*, got 9"):
        read_expw(tmp_path, num_classes=9)
    with pytest.raises(
        ConfigError, match="min_confidence must be a finite number or None, got '0.5'"
    ):
        read_expw(tmp_path, min_confidence="0.5")


def test_image_sizes_come_from_the_headers_and_survive_the_cache(tmp_path, expw):
    from ferlit.data.cache import cached_index

    index = read_expw(tmp_path)
    assert index.group_sizes.tolist() == [[64, 48], [32, 32]]  # a.jpg, b.jpg: width, height
    assert index.image_size(0) == (32, 32)

    cache = tmp_path.parent / f"{tmp_path.name}-cache"
    cached_index(ExpWReader(tmp_path), "train", cache_dir=cache)
    again = cached_index(ExpWReader(tmp_path), "train", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1
    assert np.array_equal(again.group_sizes, index.group_sizes)


def test_unreadable_image_header_names_image_and_line(tmp_path, expw):
    (tmp_path / "image/origin/b.jpg").write_bytes(b"")  # listed first, by line 1

    with pytest.raises(DataError) as error:
        read_expw(tmp_path)
    assert str(error.value) == (
        f"{expw}:1: image image/origin/b.jpg has no readable image header (not an image format "
        "PIL knows); expected a JPEG (repair or re-download it)"
    )


def test_skipped_faces_need_no_image_header(tmp_path, expw):
    (tmp_path / "image/origin/a.jpg").write_bytes(b"")  # a.jpg's faces are both below 0.85
    index = read_expw(tmp_path, min_confidence=0.85)

    assert index.group_names.tolist() == ["image/origin/b.jpg"]
    assert index.skipped["low_confidence"] == 2
