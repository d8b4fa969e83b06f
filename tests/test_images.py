"""Loading faces: RGB order, ExpW box crops with margins, and unreadable images or bad boxes."""

from __future__ import annotations

import os
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from ferlit.data.images import ImageError, check_image, load_face
from ferlit.data.readers.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.data.readers.expw import ExpWFace, read_expw, write_label_list
from ferlit.errors import ConfigError, DataError

GREY, GREEN = (128, 128, 128), (30, 200, 60)


@pytest.fixture
def expw_one_image(tmp_path, write_jpeg):
    """image/origin/a.jpg, 48 high and 64 wide, grey with a green box; label.lst is up to the test."""
    image = np.full((48, 64, 3), GREY, np.uint8)
    image[16:48, 32:64] = GREEN
    write_jpeg(tmp_path / "image/origin/a.jpg", image)
    return tmp_path / "label/label.lst"


def faces_at(label_lst, *boxes):
    write_label_list(label_lst, [ExpWFace("a.jpg", i, *box, 1.0, 3) for i, box in enumerate(boxes)])
    return read_expw(label_lst.parent.parent)


def test_affwild2_frame_is_whole_image_in_rgb_order(tmp_path, write_jpeg):
    write_annotation_file(annotation_dir(tmp_path, "abaw2020", "train") / "v.txt", [4])
    frame = np.zeros((24, 16, 3), np.uint8)
    frame[:8] = (250, 10, 10)  # red on top, blue below
    frame[8:] = (10, 10, 250)
    write_jpeg(tmp_path / "cropped_aligned/v/00001.jpg", frame)

    face = load_face(read_affwild2(tmp_path, "train"), 0)

    assert face.shape == (24, 16, 3)
    assert face.dtype == np.uint8
    assert np.abs(face.astype(int) - frame).max() <= 2


def test_box_crop_rows_top_to_bottom_cols_left_to_right(expw_one_image):
    index = faces_at(expw_one_image, (16, 32, 64, 48), (8, 24, 40, 24))

    green = load_face(index, 0)
    assert green.shape == (32, 32, 3)
    assert np.abs(green.astype(int) - GREEN).max() <= 2
    straddling = load_face(index, 1)  # rows 8..23, cols 24..39: the green starts at (16, 32)
    assert straddling.shape == (16, 16, 3)
    assert np.abs(straddling[8:, 8:].astype(int) - GREEN).max() <= 2
    assert np.abs(straddling[:8].astype(int) - GREY).max() <= 2
    assert np.abs(straddling[:, :8].astype(int) - GREY).max() <= 2


def test_margin_enlarges_then_clips_to_the_image(expw_one_image):
    index = faces_at(expw_one_image, (16, 32, 64, 48), (8, 8, 24, 24), (0, 0, 16, 16))

    # 32x32 box, margin 0.5: 16 more pixels on each side, clipped to rows 0..48, cols 16..64
    wide = load_face(index, 0, margin=0.5)
    assert wide.shape == (48, 48, 3)
    assert np.abs(wide[16:, 16:].astype(int) - GREEN).max() <= 2
    assert np.abs(wide[:16].astype(int) - GREY).max() <= 2
    # 16x16 box, margin 0.1: round(1.6) = 2 more pixels on each side
    assert load_face(index, 1, margin=0.1).shape == (20, 20, 3)
    # at the corner only the bottom and right sides can grow: 16 + 4 = 20
    assert load_face(index, 2, margin=0.25).shape == (20, 20, 3)
    assert load_face(index, 2).shape == (16, 16, 3)


#: Real ExpW boxes past the edge (image width x height; box top, left, right, bottom), from a
#: public subset of 5,705 real label.lst lines in which 46 boxes overrun (issue 11).
REAL_OVERRUNS = [
    ((107, 160), (16, 8, 108, 116)),  # right edge by 1 px
    ((384, 499), (82, 55, 386, 413)),  # right edge by 2 px
    ((500, 375), (65, 240, 502, 327)),  # right edge by 2 px
]


@pytest.fixture
def real_overruns(tmp_path, write_jpeg):
    """ExpW with the three real geometries: noise images (every pixel its own value), one face each."""
    rng = np.random.default_rng(0)
    faces = []
    for k, ((width, height), box) in enumerate(REAL_OVERRUNS):
        write_jpeg(tmp_path / f"image/origin/{k}.jpg", rng.integers(0, 256, (height, width, 3)))
        faces.append(ExpWFace(f"{k}.jpg", 0, *box, 50.0, 3))
    write_label_list(tmp_path / "label/label.lst", faces)
    return tmp_path


def test_real_boxes_past_the_edge_are_clipped_and_kept(real_overruns):
    index = read_expw(real_overruns)

    assert len(index) == 3 and index.skipped["box_outside_image"] == 0
    assert index.boxes_past_edge() == 3
    assert index.group_sizes.tolist() == [list(size) for size, _ in REAL_OVERRUNS]
    for i, ((width, _), (top, left, _, bottom)) in enumerate(REAL_OVERRUNS):
        whole = cv2.cvtColor(cv2.imread(index.image_path(i)), cv2.COLOR_BGR2RGB)
        face = load_face(index, i)
        assert face.shape == (bottom - top, width - left, 3)  # right clipped to the width
        assert np.array_equal(face, whole[top:bottom, left:width])


def test_pad_keeps_the_box_size_with_black_past_the_edge(real_overruns):
    index = read_expw(real_overruns)

    for i, ((width, _), (top, left, right, bottom)) in enumerate(REAL_OVERRUNS):
        whole = cv2.cvtColor(cv2.imread(index.image_path(i)), cv2.COLOR_BGR2RGB)
        face = load_face(index, i, box_overflow="pad")
        assert face.shape == (bottom - top, right - left, 3)
        assert np.array_equal(face[:, : width - left], whole[top:bottom, left:width])
        assert not face[:, width - left :].any()  # 1 or 2 black columns
    # margin 0.1 on the 107x160 image: rows 16-10..116+10, the box's own columns padded to 108
    face = load_face(index, 0, margin=0.1, box_overflow="pad")
    assert face.shape == (120, 108 - 0, 3)
    with pytest.raises(ConfigError, match=r"expw_box_overflow must be 'clip' or 'pad', got 'x'"):
        load_face(index, 0, box_overflow="x")


def test_box_past_the_bottom_edge_is_clipped(expw_one_image):
    index = faces_at(expw_one_image, (40, 32, 64, 55))  # 7 rows past the bottom (real: 1-7)

    assert index.boxes_past_edge() == 1
    face = load_face(index, 0)
    assert face.shape == (8, 32, 3)
    assert np.abs(face.astype(int) - GREEN).max() <= 2


def test_box_with_no_pixel_in_its_image_is_skipped_while_indexing(expw_one_image):
    # 64 wide, 48 high: a box starting at column 64 or at row 48 has nothing to crop
    index = faces_at(expw_one_image, (0, 0, 16, 16), (8, 64, 80, 24), (48, 0, 16, 60))

    assert len(index) == 1 and index.lines.tolist() == [1]
    assert index.skipped["box_outside_image"] == 2
    assert index.boxes_past_edge() == 0


def test_empty_box_is_skipped_and_counted_while_indexing(expw_one_image):
    # top == bottom, left == right, top > bottom: no face, skipped (issue 11), the good face kept;
    # an empty box also past the edge counts as empty (checked first)
    boxes = (0, 0, 16, 16), (8, 0, 16, 8), (0, 8, 8, 16), (20, 0, 16, 10), (50, 70, 80, 50)
    index = faces_at(expw_one_image, *boxes)

    assert len(index) == 1 and index.lines.tolist() == [1]
    assert index.skipped["empty_box"] == 4 and index.skipped["box_outside_image"] == 0


def test_image_that_changed_after_indexing_is_named(expw_one_image, write_jpeg):
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    image = expw_one_image.parent.parent / "image/origin/a.jpg"
    write_jpeg(image, np.zeros((40, 40, 3), np.uint8))

    with pytest.raises(
        DataError, match=r"a\.jpg: decodes to 40x40 pixels but was indexed at 64x48"
    ):
        load_face(index, 0)


def test_truncated_jpeg_is_refused_naming_the_file(expw_one_image):
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    image = index.image_path(0)
    with open(image, "rb") as f:
        whole = f.read()
    with open(image, "wb") as f:
        f.write(whole[: len(whole) // 2])
    # OpenCV 4 decodes half a JPEG into a half-grey image with a warning naming no file (5.0
    # returns None): ferlit refuses it by its missing end marker whichever is installed.

    with pytest.raises(ImageError) as error:
        load_face(index, 0)
    assert str(error.value) == (
        f"{image}: truncated JPEG: no end-of-image marker FF D9 at its end "
        f"({len(whole) // 2:,} bytes; the file was cut short); sample from {expw_one_image}:1"
    )
    assert isinstance(error.value, DataError)
    assert check_image(image) == error.value.reason


def test_padding_after_the_end_marker_is_accepted(expw_one_image):
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    image = index.image_path(0)
    with open(image, "ab") as f:
        f.write(b"\x00" * 300 + b"\r\n")

    assert load_face(index, 0).shape == (16, 16, 3)
    assert check_image(image) is None


def test_data_appended_after_the_end_marker_is_not_damage(expw_one_image):
    """Phones append trailers after EOI (Samsung's SEFH/SEFT, motion photos' video): decoders stop
    at EOI, so such a file is complete; the face it holds is the one without the trailer."""
    index = faces_at(expw_one_image, (0, 0, 48, 64))
    image = index.image_path(0)
    before = load_face(index, 0)
    with open(image, "ab") as f:
        f.write(b"SEFH" + bytes(range(256)) * 40)  # 10 kB, no FF D9 in its last bytes

    assert check_image(image) is None
    assert np.array_equal(load_face(index, 0), before)


def test_a_thumbnails_end_marker_does_not_make_a_truncated_jpeg_whole(expw_one_image):
    """An EXIF thumbnail (a JPEG inside APP1) has its own FF D9 near the start: a file cut in
    its main image's scan is still truncated."""
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    image = index.image_path(0)
    with open(image, "rb") as f:
        whole = f.read()
    thumbnail = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + (2 + len(payload)).to_bytes(2, "big") + payload
    with_thumbnail = whole[:2] + app1 + whole[2:]
    with open(image, "wb") as f:
        f.write(with_thumbnail)
    assert check_image(image) is None and load_face(index, 0).shape == (16, 16, 3)
    cut = with_thumbnail[: len(app1) + len(whole) // 2]
    with open(image, "wb") as f:
        f.write(cut)

    assert check_image(image) == (
        f"truncated JPEG: no end-of-image marker FF D9 at its end ({len(cut):,} bytes; the file "
        "was cut short)"
    )


def test_empty_and_missing_images(expw_one_image):
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    image = index.image_path(0)
    open(image, "wb").close()
    assert check_image(image) == "empty file (0 bytes)"
    with pytest.raises(ImageError, match=r"a\.jpg: empty file \(0 bytes\); sample from"):
        load_face(index, 0)
    os.remove(image)
    assert check_image(image) == "cannot read image: no such file"


def test_unreadable_image_names_file_and_label_line(expw_one_image):
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    image = expw_one_image.parent.parent / "image/origin/a.jpg"
    image.write_bytes(b"not a jpeg")

    with pytest.raises(
        DataError,
        match=f"^{re.escape(str(image))}: cannot read image .*; "
        f"sample from {re.escape(str(expw_one_image))}:1$",
    ):
        load_face(index, 0)
    image.unlink()
    with pytest.raises(DataError, match=f"^{re.escape(str(image))}: cannot read image"):
        load_face(index, 0)


def test_grey_image_comes_back_with_three_channels(tmp_path):
    (tmp_path / "image/origin").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "image/origin/a.jpg"), np.full((16, 16), 90, np.uint8))

    face = load_face(faces_at(tmp_path / "label/label.lst", (0, 0, 8, 8)), 0)

    assert face.shape == (8, 8, 3)
    assert np.abs(face.astype(int) - 90).max() <= 2


def test_exif_orientation_is_ignored_so_boxes_match_stored_pixels(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (250, 10, 10)
    stored[:, 16:] = (10, 10, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    (tmp_path / "image/origin").mkdir(parents=True)
    Image.fromarray(stored).save(
        tmp_path / "image/origin/a.jpg", quality=100, subsampling=0, exif=exif
    )

    index = faces_at(tmp_path / "label/label.lst", (0, 0, 16, 16), (0, 16, 32, 16))

    assert np.abs(load_face(index, 0).astype(int) - (250, 10, 10)).max() <= 4
    assert np.abs(load_face(index, 1).astype(int) - (10, 10, 250)).max() <= 4


def test_negative_margin_is_a_config_error(expw_one_image):
    index = faces_at(expw_one_image, (0, 0, 16, 16))
    with pytest.raises(ConfigError, match=r"margin must be a finite number >= 0, got -0.1"):
        load_face(index, 0, margin=-0.1)
