"""``python -m ferlit.evaluate --frames_dir``: which face images of unlabelled (test) videos are
read, from one folder, several, or an ABAW 2023+ tree with both frame folders."""

from __future__ import annotations

import pytest

from ferlit.cli import PredictCLI
from ferlit.data.readers.affwild2 import frame_file
from ferlit.data.readers.frames_dir import frames_dir_index
from ferlit.errors import ConfigError, DataError
from ferlit.evaluation.evaluate import translate


def faces(folder, video, frames):
    """Empty frame files: the index only lists their names."""
    (folder / video).mkdir(parents=True, exist_ok=True)
    for frame in frames:
        (folder / video / frame_file(frame)).touch()


def test_a_test_set_split_over_two_downloads(tmp_path):
    # The ABAW 2023+ test faces as entrants unpack them: two batches, the new videos' in the
    # second one's cropped_aligned_new_50_vids/.
    batch1 = tmp_path / "batch1/cropped_aligned"
    batch2 = tmp_path / "batch2/cropped_aligned_new_50_vids"
    faces(batch1, "video7", [1, 2, 5])
    faces(batch2, "new_1", [3, 4])

    index = frames_dir_index([str(batch1), str(batch2)], 8)

    assert index.labels.tolist() == [-1] * 5
    assert index.frames.tolist() == [1, 2, 5, 3, 4]
    assert [index.group_name(i) for i in (0, 3)] == ["video7", "new_1"]
    assert index.image_path(4) == str(batch2 / "new_1" / "00004.jpg")


def test_a_folder_holding_both_frame_folders_reads_both(tmp_path):
    faces(tmp_path / "cropped_aligned", "a", [1, 2])
    faces(tmp_path / "cropped_aligned_new_50_vids", "b", [1])
    (tmp_path / "EXPR_Recognition_Challenge").mkdir()  # an Aff-Wild2 root's other folders

    index = frames_dir_index(tmp_path, 7)

    assert index.image_path(0) == str(tmp_path / "cropped_aligned/a/00001.jpg")
    assert index.image_path(2) == str(tmp_path / "cropped_aligned_new_50_vids/b/00001.jpg")


def test_a_video_in_two_folders_is_an_error_naming_both(tmp_path):
    faces(tmp_path / "cropped_aligned", "a", [1, 2])
    faces(tmp_path / "cropped_aligned_new_50_vids", "a", [1])

    with pytest.raises(DataError) as error:
        frames_dir_index(tmp_path, 7)
    assert str(error.value) == (
        f"video a is in two data.frames_dir folders: {tmp_path}/cropped_aligned/a and "
        f"{tmp_path}/cropped_aligned_new_50_vids/a; keep one of them"
    )


def test_every_folder_given_must_hold_faces(tmp_path):
    faces(tmp_path / "one", "a", [1])
    (tmp_path / "two" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"^{tmp_path}/two: no face images; expected <video>/"):
        frames_dir_index([tmp_path / "one", tmp_path / "two"], 7)
    with pytest.raises(DataError, match=rf"^{tmp_path}/three: data.frames_dir is not a folder"):
        frames_dir_index([tmp_path / "one", tmp_path / "three"], 7)
    with pytest.raises(ConfigError, match="data.frames_dir: an empty list"):
        frames_dir_index([], 7)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (["--frames_dir", "/t/cropped_aligned"], "/t/cropped_aligned"),
        (
            ["--frames_dir", "[/t/b1/cropped_aligned, /t/b2/x]"],
            ["/t/b1/cropped_aligned", "/t/b2/x"],
        ),
        (["--frames_dir+", "/t/a", "--frames_dir+", "/t/b"], ["/t/a", "/t/b"]),
        (["--frames_dir", "None"], None),
    ],
)
def test_frames_dir_option_takes_one_folder_or_a_list(value, parsed):
    args = translate(["--ckpt", "x.ckpt", "--out", "o", *value])  # python -m ferlit.evaluate's
    assert PredictCLI(args, parse_only=True).config.data.frames_dir == parsed
