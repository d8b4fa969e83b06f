"""Indexing Aff-Wild2: layouts, the frame<->line alignment, skip counts and bad annotation files."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from ferlit.data.images import load_face
from ferlit.data.index import FRAME_FOLDER
from ferlit.data.readers.affwild2 import (
    LAYOUTS,
    NEW_FRAMES_DIR,
    annotation_dir,
    detect_layout,
    read_affwild2,
    write_annotation_file,
)
from ferlit.errors import ConfigError, DataError, DataWarning

SIZE = 16


def colour(video: int, frame: int) -> tuple[int, int, int]:
    """A colour unique to (video, frame) for the few frames these tests write."""
    return (10 + 30 * frame, 30 + 50 * video, 250 - 30 * frame)


@pytest.fixture
def add_video(tmp_path, write_jpeg):
    """Write a video under tmp_path: its annotation file and a solid-colour image per frame given."""

    def add(name, labels, with_image, *, video=0, layout="abaw2020", split="train", num_classes=7):
        path = annotation_dir(tmp_path, layout, split) / f"{name}.txt"
        write_annotation_file(path, labels, num_classes)
        for frame in with_image:
            image = np.full((SIZE, SIZE, 3), colour(video, frame), np.uint8)
            write_jpeg(tmp_path / "cropped_aligned" / name / f"{frame:05d}.jpg", image)
        return path

    return add


def test_kept_and_skipped_counts(tmp_path, add_video):
    # a: frame 2 unannotated, frame 4 annotated but no face crop; b: no folder at all;
    # c: nothing annotated. Only a's frames 1, 3, 5 survive.
    add_video("a", [0, -1, 4, 6, 2], [1, 2, 3, 5])
    add_video("b", [1, 1], [])
    add_video("c", [-1, -1], [1, 2])
    (tmp_path / "annotations/EXPR_Set/Training_Set/._a.txt").write_bytes(b"\x00\x05\x16\x07\xff")

    with pytest.warns(DataWarning) as warned:  # b, a single video: warned, not fatal
        index = read_affwild2(tmp_path, "train")

    assert [str(w.message) for w in warned] == [
        f"{tmp_path}/annotations/EXPR_Set/Training_Set/b.txt: video b has annotated frames but "
        f"no image of any of them in {tmp_path}/cropped_aligned/ (a video in which the face "
        "detector found no face?); its frames are skipped"
    ]
    assert len(index) == 3
    assert index.num_classes == 7
    assert index.labels.tolist() == [0, 4, 2]
    assert index.frames.tolist() == [1, 3, 5]
    assert index.lines.tolist() == [2, 4, 6]
    reasons = ("unannotated", "no_image", "other", "duplicate", "low_confidence")
    assert {reason: index.skipped[reason] for reason in reasons} == {
        "unannotated": 3,
        "no_image": 3,
        "other": 0,
        "duplicate": 0,
        "low_confidence": 0,
    }
    assert index.skipped["no_image_videos"] == 1
    assert index.group_names.tolist() == ["cropped_aligned/a"]
    assert index.group_sources.tolist() == ["annotations/EXPR_Set/Training_Set/a.txt"]
    assert index.group_kinds.tolist() == [FRAME_FOLDER]
    assert (index.boxes == -1).all()
    assert index.roots == (str(tmp_path),)
    assert index.image_path(1) == str(tmp_path / "cropped_aligned/a/00003.jpg")
    assert index.source(1) == f"{tmp_path}/annotations/EXPR_Set/Training_Set/a.txt:4"


def test_frame_k_is_line_k_plus_1_and_image_k(tmp_path, add_video):
    labels = [3, -1, 5, 0, 1, 6]
    path = add_video("v", labels, [1, 2, 3, 5, 6])
    file_lines = path.read_text().splitlines()

    index = read_affwild2(tmp_path, "train")

    assert index.frames.tolist() == [1, 3, 5, 6]
    for i in range(len(index)):
        line = int(index.lines[i])
        assert file_lines[line - 1] == str(index.labels[i])
        face = load_face(index, i)
        assert face.shape == (SIZE, SIZE, 3)
        expected = np.array(colour(0, line - 1))
        assert np.abs(face.astype(int) - expected).max() <= 2, f"sample {i} (line {line})"


def test_left_right_are_separate_videos_in_name_order(tmp_path, add_video):
    add_video("v10_right", [2, 2], [1, 2], video=1)
    add_video("v2", [5], [1], video=2)
    add_video("v10_left", [1, 1, 1], [1, 2, 3], video=0)

    index = read_affwild2(tmp_path, "train")

    assert index.group_names.tolist() == [
        "cropped_aligned/v10_left",
        "cropped_aligned/v10_right",
        "cropped_aligned/v2",
    ]
    assert index.groups.tolist() == [0, 0, 0, 1, 1, 2]
    assert index.labels.tolist() == [1, 1, 1, 2, 2, 5]
    assert index.frames.tolist() == [1, 2, 3, 1, 2, 1]
    face = load_face(index, 4)  # v10_right frame 2
    assert np.abs(face.astype(int) - np.array(colour(1, 2))).max() <= 2


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_detected_and_read(tmp_path, add_video, layout):
    add_video("t", [4, 4], [1, 2], layout=layout)
    add_video("v", [2], [1], layout=layout, split="val")

    assert detect_layout(tmp_path) == layout
    train = read_affwild2(tmp_path, "train")
    val = read_affwild2(str(tmp_path), "val")

    assert train.labels.tolist() == [4, 4]
    assert val.labels.tolist() == [2]
    folder, _, val_dir = LAYOUTS[layout]
    assert val.group_sources.tolist() == [f"{folder}/{val_dir}/v.txt"]


def test_explicit_layout_when_two_are_present(tmp_path, add_video):
    add_video("x", [0, 0], [1, 2], layout="abaw2020")
    add_video("x", [7, 3], [1, 2], layout="abaw2022", num_classes=8)

    with pytest.raises(
        DataError,
        match=r"several Aff-Wild2 annotation layouts found "
        r"\(abaw2020, abaw2022\); choose one with layout=",
    ):
        read_affwild2(tmp_path, "train")
    assert read_affwild2(tmp_path, "train", layout="abaw2020").labels.tolist() == [0, 0]
    index = read_affwild2(tmp_path, "train", num_classes=8, layout="abaw2022")
    assert index.labels.tolist() == [7, 3]
    assert index.group_sources.tolist() == ["EXPR_Classification_Challenge/Train_Set/x.txt"]


def test_missing_folders_are_named(tmp_path, add_video):
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'nope'))}: .*does not exist"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}: no cropped_aligned/ folder"):
        read_affwild2(tmp_path, "train")
    (tmp_path / "cropped_aligned").mkdir()
    with pytest.raises(
        DataError,
        match="no Aff-Wild2 expression annotation folder found; looked "
        r"for annotations/EXPR_Set/ \(abaw2020\), EXPR_Classification_Challenge/ "
        r"\(abaw2022\), EXPR_Recognition_Challenge/ \(abaw2024\)",
    ):
        detect_layout(tmp_path)
    add_video("t", [1], [1])
    with pytest.raises(DataError, match=r"Validation_Set: missing; expected the val annotations"):
        read_affwild2(tmp_path, "val")
    (tmp_path / "annotations/EXPR_Set/Validation_Set").mkdir()
    with pytest.raises(DataError, match=r"Validation_Set: no <video>.txt annotation files"):
        read_affwild2(tmp_path, "val")


def test_options_are_checked(tmp_path, add_video):
    add_video("t", [1], [1])
    with pytest.raises(ConfigError, match=r"split must be one of \('train', 'val'\), got 'test'"):
        read_affwild2(tmp_path, "test")
    with pytest.raises(ConfigError, match="num_classes must be 7 .* or 8 .*, got 6"):
        read_affwild2(tmp_path, "train", num_classes=6)
    with pytest.raises(ConfigError, match="layout must be one of .*got 'abaw2019'"):
        read_affwild2(tmp_path, "train", layout="abaw2019")


def test_other_class_dropped_in_7_class_run_kept_in_8(tmp_path, add_video):
    add_video("o", [7, 0, 7, 3, -1], [1, 2, 3, 4, 5], layout="abaw2022", num_classes=8)
    add_video("s", [6], [1], layout="abaw2022", num_classes=7)

    seven = read_affwild2(tmp_path, "train", num_classes=7)
    eight = read_affwild2(tmp_path, "train", num_classes=8)

    assert seven.labels.tolist() == [0, 3, 6]
    assert seven.lines.tolist() == [3, 5, 2]
    assert (seven.skipped["other"], seven.skipped["unannotated"]) == (2, 1)
    assert eight.num_classes == 8
    assert eight.labels.tolist() == [7, 0, 7, 3, 6]
    assert (eight.skipped["other"], eight.skipped["unannotated"]) == (0, 1)
    assert eight.class_counts().tolist() == [1, 0, 0, 1, 0, 0, 1, 2]


def test_crlf_bom_trailing_whitespace_and_empty_lines(tmp_path, add_video):
    path = add_video("q", [1, -1, 2], [1, 2, 3])
    header = path.read_text().splitlines()[0]
    path.write_bytes(f"\ufeff{header}\r\n1 \r\n-1\t\r\n2\r\n\r\n\r\n".encode())

    index = read_affwild2(tmp_path, "train")

    assert index.labels.tolist() == [1, 2]
    assert index.lines.tolist() == [2, 4]
    assert index.skipped["unannotated"] == 1


def test_wrong_header_names_file_and_line_1(tmp_path, add_video):
    path = add_video("h", [1], [1])
    path.write_text("Neutral,Angry,Disgust,Fear,Happy,Sad,Surprise\n1\n")

    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train")
    assert str(error.value) == (
        f"{path}:1: found header 'Neutral,Angry,Disgust,Fear,Happy,Sad,Surprise'; expected "
        "'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise' or "
        "'Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other'"
    )


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (
            "1\n\n2\n",
            3,
            "empty line; expected -1 .unannotated. or a class index 0..6 of the header",
        ),
        ("1\n2.5\n", 3, "'2.5' is not an integer; expected -1 .unannotated. or a class index 0..6"),
        ("1\nhappy\n", 3, "'happy' is not an integer"),
        ("1\n2\n7\n", 4, "label 7 out of range; expected -1 .unannotated. or a class index 0..6"),
        ("-2\n", 2, "label -2 out of range"),
        ("1\n99999999999999999999\n", 3, "label 99999999999999999999 out of range"),
        # int() reads all of these as numbers; a challenge file holds ASCII -?[0-9]+ only
        ("1\n\u0663\n", 3, "'\u0663' is not an integer"),  # Arabic-Indic three
        ("1\n\uff13\n", 3, "'\uff13' is not an integer"),  # full-width three
        ("1\n1_0\n", 3, "'1_0' is not an integer"),
        ("1\n+3\n", 3, "'\\+3' is not an integer"),
        ("1\n3 4\n", 3, "'3 4' is not an integer"),
        ("1\n- 3\n", 3, "'- 3' is not an integer"),
    ],
)
def test_bad_label_lines_name_file_and_line(tmp_path, add_video, body, line, message):
    path = add_video("bad", [1], [1])
    header = path.read_text().splitlines()[0]
    path.write_text(f"{header}\n{body}")

    with pytest.raises(DataError, match=f"^{re.escape(str(path))}:{line}: {message}"):
        read_affwild2(tmp_path, "train")


def test_a_5_mb_line_is_quoted_to_100_characters(tmp_path, add_video):
    path = add_video("long", [1], [1])
    header = path.read_text().splitlines()[0]
    path.write_text(f"{header}\n1\n{'x' * 5_000_000}\n")
    with pytest.raises(DataError) as caught:
        read_affwild2(tmp_path, "train")
    assert str(caught.value).startswith(f"{path}:3: {'x' * 100!r}... (5,000,000 characters) is not")
    assert len(str(caught.value)) < 400 + len(str(path))

    path.write_text("y" * 5_000_000)  # a header without a line break
    with pytest.raises(DataError, match=r":1: found header 'y{100}'\.\.\. \(5,000,000 char"):
        read_affwild2(tmp_path, "train")


def test_empty_file_and_non_utf8_are_errors(tmp_path, add_video):
    path = add_video("e", [1], [1])
    path.write_text("\n\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:1: empty file; expected the "):
        read_affwild2(tmp_path, "train")
    path.write_bytes(b"\xff\xfeN\x00")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: not UTF-8 text"):
        read_affwild2(tmp_path, "train")


def test_many_videos_with_progress_bar_and_no_images(tmp_path, add_video):
    (tmp_path / "cropped_aligned").mkdir()
    for v in range(60):  # over PROGRESS_MIN_VIDEOS, so the rich progress bar runs
        add_video(f"video{v:02d}", [v % 7, -1, 3], [])

    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train", progress=True)
    assert str(error.value) == (
        f"{tmp_path}/annotations/EXPR_Set/Training_Set: the train split keeps no frame: none of "
        "its 60 annotated videos (video00, video01, video02, video03, video04, ...) has an image "
        f"of an annotated frame in {tmp_path}/cropped_aligned/; likely cause: no video folder "
        "matches an annotation file name (<video>.txt needs a frame folder <video>/; no video "
        "folder found)"
    )


# -- ABAW 2023+ frame folders and layouts that yield nothing -----------------------------------


def add_new_video(tmp_path, write_jpeg, name, labels, with_image, split="train", video=9):
    """A video of the 50 added in ABAW 2023: frames in cropped_aligned_new_50_vids/."""
    write_annotation_file(annotation_dir(tmp_path, "abaw2024", split) / f"{name}.txt", labels, 8)
    for frame in with_image:
        image = np.full((SIZE, SIZE, 3), colour(video, frame), np.uint8)
        write_jpeg(tmp_path / NEW_FRAMES_DIR / name / f"{frame:05d}.jpg", image)


def test_abaw2024_tree_reads_both_frame_folders(tmp_path, add_video, write_jpeg):
    add_video("10-60-1280x720", [0, 1, 7], [1, 2, 3], layout="abaw2024", num_classes=8)
    add_new_video(tmp_path, write_jpeg, "new_video_1", [4, -1, 5, 5], [1, 2, 4], video=3)
    add_video("val_old", [2, 2], [1, 2], layout="abaw2024", split="val", num_classes=8, video=4)
    add_new_video(tmp_path, write_jpeg, "val_new", [6, 3], [1, 2], split="val", video=5)

    train = read_affwild2(tmp_path, "train", num_classes=8)
    val = read_affwild2(tmp_path, "val", num_classes=8)

    assert train.group_names.tolist() == [
        "cropped_aligned/10-60-1280x720",
        "cropped_aligned_new_50_vids/new_video_1",
    ]
    assert train.labels.tolist() == [0, 1, 7, 4, 5]
    assert train.frames.tolist() == [1, 2, 3, 1, 4]
    assert train.skipped["no_image"] == 1 and train.skipped["no_image_videos"] == 0
    assert train.image_path(4) == str(
        tmp_path / "cropped_aligned_new_50_vids/new_video_1/00004.jpg"
    )
    face = load_face(train, 4)
    assert np.abs(face.astype(int) - np.array(colour(3, 4))).max() <= 2
    assert val.group_names.tolist() == [  # in video name order, whichever folder holds them
        "cropped_aligned_new_50_vids/val_new",
        "cropped_aligned/val_old",
    ]
    assert val.labels.tolist() == [6, 3, 2, 2]


def test_a_video_in_both_frame_folders_is_an_error_naming_both(tmp_path, add_video, write_jpeg):
    add_video("twice", [0, 1], [1, 2], layout="abaw2024", num_classes=8)
    add_new_video(tmp_path, write_jpeg, "twice", [0, 1], [1, 2])

    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train", num_classes=8)
    assert str(error.value) == (
        f"video twice is in two frame folders: {tmp_path}/cropped_aligned/twice and "
        f"{tmp_path}/cropped_aligned_new_50_vids/twice; keep one of them"
    )


def test_only_the_new_frame_folder(tmp_path, write_jpeg):
    add_new_video(tmp_path, write_jpeg, "n", [1, 2], [1, 2])

    index = read_affwild2(tmp_path, "train", num_classes=8)

    assert index.group_names.tolist() == ["cropped_aligned_new_50_vids/n"]


def test_nested_frame_folders_are_an_error_naming_the_likely_cause(tmp_path, write_jpeg):
    # The archive unpacked into a folder of its own name, as in entrants' paths
    # (<db>/cropped_aligned/cropped_aligned/<video>/ and .../cropped_aligned_new_50_vids/<video>/).
    for split, names in (("train", ("a", "b")), ("val", ("c",))):
        for name in names:
            write_annotation_file(annotation_dir(tmp_path, "abaw2024", split) / f"{name}.txt", [1])
    for inner, name in (("cropped_aligned", "a"), ("cropped_aligned", "c"), (NEW_FRAMES_DIR, "b")):
        write_jpeg(tmp_path / "cropped_aligned" / inner / name / "00001.jpg", np.zeros((4, 4, 3)))

    for split, annotated in (
        ("train", "2 annotated videos (a, b)"),
        ("val", "1 annotated videos (c)"),
    ):
        with pytest.raises(DataError) as error:
            read_affwild2(tmp_path, split)
        folder = annotation_dir(tmp_path, "abaw2024", split)
        assert str(error.value) == (
            f"{folder}: the {split} split keeps no frame: none of its {annotated} has an image of "
            f"an annotated frame in {tmp_path}/cropped_aligned/; likely cause: cropped_aligned/ "
            "holds a cropped_aligned/ folder: nested one level too deep? (move its video folders "
            f"up to {tmp_path}/cropped_aligned/); or cropped_aligned/ holds a "
            "cropped_aligned_new_50_vids/ folder: nested one level too deep? (move its video "
            f"folders up to {tmp_path}/cropped_aligned_new_50_vids/); or no "
            "cropped_aligned_new_50_vids/ folder: from the 5th ABAW (2023) on, the frames of the "
            "50 new videos ship there, beside cropped_aligned/; or no video folder matches an "
            "annotation file name (<video>.txt needs a frame folder <video>/; 2 video folders "
            "found, e.g. cropped_aligned, cropped_aligned_new_50_vids)"
        )


def test_many_videos_without_images_stop_one_warns(tmp_path, add_video):
    # ABAW 2023+ data without cropped_aligned_new_50_vids/: its videos have no frame folder.
    for v in range(4):
        add_video(f"old{v}", [1, 2], [1, 2], layout="abaw2024", num_classes=8)
    add_video("new1", [3], [], layout="abaw2024", num_classes=8)
    with pytest.warns(DataWarning, match="video new1 has annotated frames but no image"):
        assert len(read_affwild2(tmp_path, "train", num_classes=8)) == 8
    add_video("new2", [3, 3], [], layout="abaw2024", num_classes=8)

    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train", num_classes=8)
    message = str(error.value)
    assert message.startswith(
        f"{tmp_path}/EXPR_Recognition_Challenge/Train_Set: the train split loses 2 of its 6 "
        "annotated videos (new1, new2), more than 5%: none of them has an image of an annotated "
        f"frame in {tmp_path}/cropped_aligned/; likely cause: no cropped_aligned_new_50_vids/ "
        "folder: from the 5th ABAW (2023) on"
    )
    assert "no video folder matches an annotation file name" in message


def test_misnamed_frames_and_nothing_annotated_are_errors(tmp_path, add_video, write_jpeg):
    add_video("v", [-1, -1], [1, 2])
    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train")
    assert str(error.value) == (
        f"{tmp_path}/annotations/EXPR_Set/Training_Set: the train split keeps no frame: none of "
        "its annotation files labels a frame with an expression class (every line is -1, or "
        "Other in a 7-class run)"
    )
    add_video("w", [1], [])
    write_jpeg(tmp_path / "cropped_aligned/w/frame_1.jpg", np.zeros((4, 4, 3)))
    with pytest.raises(
        DataError, match=r"likely cause: the folders of w hold no frame file named "
    ):
        read_affwild2(tmp_path, "train")


def test_frame_folders_one_level_down_are_named(tmp_path, add_video):
    # e.g. <db>/cropped_aligned_images/cropped_aligned/ in entrants' paths
    add_video("v", [1], [1])
    (tmp_path / "wrapper" / NEW_FRAMES_DIR).mkdir(parents=True)
    (tmp_path / "cropped_aligned").rename(tmp_path / "wrapper" / "cropped_aligned")

    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train")
    assert str(error.value) == (
        f"{tmp_path}: no cropped_aligned/ folder; expected the challenge's aligned face crops in "
        "cropped_aligned/<video>/00001.jpg ... (and, from ABAW 2023 on, "
        "cropped_aligned_new_50_vids/<video>/...); found wrapper/cropped_aligned/, "
        f"wrapper/cropped_aligned_new_50_vids/ one level deeper: move them up to {tmp_path}/"
    )


def test_annotation_folder_one_level_down_is_named(tmp_path, add_video):
    # ABAW 2023 entrants' copies: <db>/annotations/EXPR_Classification_Challenge/Train_Set/
    add_video("v", [1], [1], layout="abaw2022")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "EXPR_Classification_Challenge").rename(
        tmp_path / "annotations/EXPR_Classification_Challenge"
    )

    with pytest.raises(DataError, match=r"\(abaw2024\); found annotations/EXPR_Classification_Ch"):
        read_affwild2(tmp_path, "train")
    with pytest.raises(DataError) as error:
        detect_layout(tmp_path)
    assert str(error.value).endswith(
        "; found annotations/EXPR_Classification_Challenge/ one level deeper: move it up to "
        f"{tmp_path}/"
    )


def test_a_dangling_video_link_is_an_error_not_a_video_without_faces(tmp_path, add_video):
    add_video("kept", [1, 2], [1, 2])
    add_video("gone", [1, 2], [])
    (tmp_path / "cropped_aligned" / "gone").symlink_to(tmp_path / "unmounted" / "gone")
    link = re.escape(str(tmp_path / "cropped_aligned" / "gone"))
    with pytest.raises(DataError, match=rf"^{link}: a link to .*unmounted/gone, which does not "):
        read_affwild2(tmp_path, "train")


def test_a_dangling_link_in_the_new_frames_folder_and_the_frames_folder_itself(tmp_path, add_video):
    add_video("kept", [1], [1])
    new = tmp_path / NEW_FRAMES_DIR
    new.mkdir()
    (new / "added").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=rf"^{re.escape(str(new / 'added'))}: a link to "):
        read_affwild2(tmp_path, "train")
    (new / "added").unlink()
    new.rmdir()
    new.symlink_to(tmp_path / "usb-disk")  # the whole folder on a disk not mounted
    with pytest.raises(DataError, match=rf"^{re.escape(str(new))}: a link to .*usb-disk, which"):
        read_affwild2(tmp_path, "train")


def test_a_link_loop_and_an_unreadable_video_folder_are_named(tmp_path, add_video, monkeypatch):
    add_video("kept", [1], [1])
    add_video("loop", [1], [])
    loop = tmp_path / "cropped_aligned" / "loop"
    loop.symlink_to(loop)
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(loop))}: a link that cannot be followed"
    ):
        read_affwild2(tmp_path, "train")
    loop.unlink()

    add_video("locked", [1], [1])
    locked = str(tmp_path / "cropped_aligned" / "locked")
    scandir = os.scandir

    def no_permission(path="."):  # chmod 000 does not stop root, who runs CI containers
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr("ferlit.data.readers.affwild2.os.scandir", no_permission)
    with pytest.raises(DataError, match=rf"^{re.escape(locked)}: permission denied; ferlit needs"):
        read_affwild2(tmp_path, "train")


def test_frames_that_are_not_regular_files_are_skipped_and_counted(tmp_path, add_video):
    add_video("v", [0, 1, 2, 3, 4], [1, 5])
    folder = tmp_path / "cropped_aligned" / "v"
    os.mkfifo(folder / "00002.jpg")  # opened, it would block a loader worker forever
    (folder / "00003.jpg").mkdir()
    (folder / "00004.jpg").symlink_to(folder / "missing.jpg")

    index = read_affwild2(tmp_path, "train")  # returns: nothing opened the FIFO
    assert index.frames.tolist() == [1, 5]
    assert index.skipped["not_a_file"] == 3
    assert index.skipped["no_image"] == 0


def test_an_unreadable_annotation_file_is_named(tmp_path, add_video, monkeypatch):
    path = add_video("locked", [1], [1])
    read_bytes = type(path).read_bytes

    def no_permission(self):  # chmod 000 does not stop root, who runs CI containers
        if str(self) == str(path):
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(type(path), "read_bytes", no_permission)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: cannot be read \(Permission d"):
        read_affwild2(tmp_path, "train")


def test_annotation_files_that_are_not_regular_files_are_named(tmp_path, add_video):
    add_video("kept", [1], [1])
    folder = annotation_dir(tmp_path, "abaw2020", "train")
    gone = folder / "on-usb.txt"
    gone.symlink_to(tmp_path / "usb-disk" / "on-usb.txt")  # the split lost this video, silently
    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train")
    assert str(error.value) == (
        f"{gone}: is a link to {tmp_path / 'usb-disk' / 'on-usb.txt'}, which does not exist; "
        "expected an annotation file (a regular file)"
    )
    gone.unlink()
    os.mkfifo(folder / "pipe.txt")  # another member: opened, it would block the read forever
    (folder / "video.txt").mkdir()
    with pytest.raises(DataError) as error:
        read_affwild2(tmp_path, "train")
    assert str(error.value) == (
        f"{folder / 'pipe.txt'}: is a FIFO (named pipe) (and 1 more); expected an annotation "
        "file (a regular file)"
    )
