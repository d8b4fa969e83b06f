"""Loading faces: RGB order, ExpW box crops with margins, and unreadable images or bad boxes."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from ferlit.data.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.data.expw import ExpWFace, read_expw, write_label_list
from ferlit.data.images import load_face
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


def test_box_outside_the_image_names_line_box_and_size(expw_one_image):
    index = faces_at(expw_one_image, (0, 0, 16, 16), (8, 40, 72, 24))

    with pytest.raises(DataError) as error:
        load_face(index, 1)
    assert str(error.value) == (
        f"{expw_one_image}:2: face box (top, left, right, bottom) = (8, 40, 72, 24) "
        "is not inside the image of 64x48 (width x height) pixels"
    )
    index = faces_at(expw_one_image, (40, 0, 16, 49))
    with pytest.raises(DataError, match=r"label\.lst:1: face box .* = \(40, 0, 16, 49\) is not"):
        load_face(index, 0)


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
