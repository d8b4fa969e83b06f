"""ABAW submission files: the single file of ABAW 2023/2024 and the frame counts of test videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlit.errors import DataError
from ferlit.evaluation.submission import (
    SINGLE_FILE_HEADER,
    frame_counts_from_videos,
    read_frame_counts,
    read_test_list,
    video_frame_count,
    write_single_file,
    write_submission,
)


def test_single_file_follows_the_list_line_by_line(tmp_path):
    # The organisers' list, in their example file's layout: a header, then location,label.
    # clipB comes first, and clipA's frame 3 has no face (no prediction).
    listed = tmp_path / "CVPR_6th_ABAW_Expr_test_set_example.txt"
    listed.write_text(
        "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\r\n"
        "clipB/00001.jpg,\r\nclipB/00002.jpg,\r\n"
        "clipA/00001.jpg,\r\nclipA/00002.jpg,\r\nclipA/00003.jpg,\r\nclipA/00004.jpg,\r\n"
    )
    videos = ["clipA", "clipA", "clipA", "clipB", "clipB", "extra"]
    frames = [4, 1, 2, 2, 1, 1]
    labels = [7, 5, 6, 3, 2, 0]
    path = tmp_path / "sub" / "predictions.txt"
    assert write_single_file(path, listed, videos, frames, labels) == 6
    assert path.read_text() == (
        "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"
        "clipB/00001.jpg,2\n"
        "clipB/00002.jpg,3\n"
        "clipA/00001.jpg,5\n"
        "clipA/00002.jpg,6\n"
        "clipA/00003.jpg,6\n"  # no face: frames 2 and 4 are equally near, the earlier wins
        "clipA/00004.jpg,7\n"
    )
    assert path.read_text().splitlines()[0] == SINGLE_FILE_HEADER


def test_single_file_refuses_a_listed_video_without_predictions(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("clipA/00001.jpg\nclipC/00001.jpg\n")
    with pytest.raises(DataError, match="list.txt: video clipC is listed but has no prediction"):
        write_single_file(tmp_path / "p.txt", listed, ["clipA"], [1], [0])
    assert not (tmp_path / "p.txt").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "clipA\nclipB\n",
            r"list.txt:1: 'clipA' is not <video>/<NNNNN>.jpg; .* not a list of video",
        ),
        ("clipA/00001.jpg\nclipA/00001.jpg,0\n", r"list.txt:2: clipA/00001.jpg is listed twice"),
        ("clipA/00000.jpg\n", r"list.txt:1: frame clipA/00000.jpg is not 1-based"),
        ("image_location,Neutral\n", r"list.txt: no <video>/<NNNNN>.jpg line"),
    ],
)
def test_bad_test_lists_are_refused(tmp_path, text, message):
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        read_test_list(tmp_path / "list.txt")


def write_video(path: Path, frames: int) -> Path:
    """A real MJPG .avi of ``frames`` 32x32 frames, written by OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (32, 32))
    assert writer.isOpened()
    for k in range(frames):
        writer.write(np.full((32, 32, 3), 20 * k % 255, np.uint8))
    writer.release()
    return path


def test_frame_counts_from_a_real_video(tmp_path):
    write_video(tmp_path / "clipA.avi", 7)
    # The header's count and decoding agree on an MJPG .avi as OpenCV writes it.
    assert video_frame_count(tmp_path / "clipA.avi") == (7, 7)
    # The faces end at frame 5 (the detector missed 6 and 7): the file still has 7 lines.
    assert frame_counts_from_videos(tmp_path, {"clipA": 5}) == {"clipA": 7}
    # <video>_right is cut from <video>'s file; faces one frame past the decoded count count.
    assert frame_counts_from_videos(tmp_path, {"clipA_right": 8}) == {"clipA_right": 8}
    with pytest.raises(DataError, match=r"clipA.avi: decodes to 7 frames but clipA has a face"):
        frame_counts_from_videos(tmp_path, {"clipA": 9})
    with pytest.raises(
        DataError, match=r"no video file for clipB \(looked for clipB.mp4, clipB.avi"
    ):
        frame_counts_from_videos(tmp_path, {"clipB": 1})
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="broken.mp4: "):
        video_frame_count(tmp_path / "broken.mp4")


def test_a_video_whose_last_faces_are_missing_gets_every_line(tmp_path):
    write_video(tmp_path / "clipA.avi", 9)
    counts = frame_counts_from_videos(tmp_path, {"clipA": 6})
    (file,) = write_submission(tmp_path / "sub", ["clipA"] * 3, [1, 4, 6], [1, 2, 3], 7, counts)
    lines = file.read_text().splitlines()
    assert len(lines) == 1 + 9
    assert [int(v) for v in lines[1:]] == [1, 1, 2, 2, 2, 3, 3, 3, 3]  # 5: tie, earlier


def test_frame_counts_from_a_lengths_file(tmp_path):
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("video,frames\nclipA,5\nclipB_left,1870\n")
    assert read_frame_counts(lengths) == {"clipA": 5, "clipB_left": 1870}
    (file,) = write_submission(tmp_path / "sub", ["clipA"], [2], [4], 7, read_frame_counts(lengths))
    assert file.read_text().splitlines()[1:] == ["4"] * 5
    with pytest.raises(DataError, match="no frame count for video clipC"):
        write_submission(tmp_path / "sub", ["clipC"], [2], [4], 7, read_frame_counts(lengths))
    lengths.write_text("clipA,5\nclipA,6\n")
    with pytest.raises(DataError, match="lengths.csv:2: video clipA is listed twice"):
        read_frame_counts(lengths)
    lengths.write_text("clipA 5\n")
    with pytest.raises(DataError, match=r"lengths.csv:1: 'clipA 5'; expected video,frames"):
        read_frame_counts(lengths)
