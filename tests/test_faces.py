"""Faces in new media (ferlit.evaluation.faces, ferlit.evaluation.media) on a real face.

The face is scikit-image's ``astronaut()`` (Eileen Collins, NASA, public domain; 512 x 512 RGB).
Its face box was labelled by hand on that image, cheek to cheek and hairline to chin. Frames are
built from it (shifted, scaled, next to a mirrored copy for a second face) and from parts of it
with no face (the suit, its mission patch and the helmet, which dlib's HOG detector scores a
little above 0 at one upsampling: the default score cut drops them).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.transform import SimilarityTransform

from ferlit.errors import ConfigError, DataError, DataWarning
from ferlit.evaluation.faces import (
    ARCFACE_TEMPLATE_112,
    Face,
    FaceDetector,
    Tracker,
    align_face,
    box_iou,
    detect_faces,
    faces_in_media,
    similarity_transform,
)
from ferlit.evaluation.media import MediaFrame, iter_media, list_media

ASTRONAUT = data.astronaut()
#: Hand-labelled face box on the 512 x 512 image, (x0, y0, x1, y1) px.
KNOWN_BOX = (180.0, 78.0, 264.0, 180.0)
#: A 220 x 220 head-and-shoulders crop of it, and the face box inside that crop.
HEAD = np.ascontiguousarray(ASTRONAUT[20:240, 110:330])
HEAD_BOX = (70.0, 58.0, 154.0, 160.0)


def shifted(box, dx, dy, scale=1.0):
    return tuple(v * scale + d for v, d in zip(box, (dx, dy, dx, dy), strict=True))


def mirrored(box, width):
    return (width - box[2], box[1], width - box[0], box[3])


def canvas(width=480, height=240, value=128):
    return np.full((height, width, 3), value, np.uint8)


def two_heads(dx: int, dy: int) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """A 480 x 240 frame: the head at (dx, dy), its mirror image at (260 - dx, dy)."""
    frame = canvas()
    frame[dy : dy + 220, dx : dx + 220] = HEAD
    frame[dy : dy + 220, 260 - dx : 480 - dx] = HEAD[:, ::-1]
    boxes = [shifted(HEAD_BOX, dx, dy), shifted(mirrored(HEAD_BOX, 220), 260 - dx, dy)]
    return frame, boxes


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def test_astronaut_face_box_and_landmarks(detector):
    (face,) = detector(ASTRONAUT)
    assert box_iou(face.box, KNOWN_BOX) >= 0.5
    x0, y0, x1, y1 = face.box
    assert face.landmarks.shape == (5, 2)
    assert ((face.landmarks >= (x0, y0)) & (face.landmarks <= (x1, y1))).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    # image-left points first; eyes above the nose above the mouth
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert face.score >= 0.5


@pytest.mark.parametrize(("scale", "dx", "dy"), [(0.5, 0, 0), (0.6, 300, 20), (0.9, 150, 10)])
def test_scaled_and_shifted_face_found(detector, scale, dx, dy):
    frame = canvas(640, 480)
    small = cv2.resize(ASTRONAUT, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame[dy : dy + small.shape[0], dx : dx + small.shape[1]] = small[: 480 - dy, : 640 - dx]
    (face,) = detector(frame)
    assert box_iou(face.box, shifted(KNOWN_BOX, dx, dy, scale)) >= 0.5


def test_large_frame_is_scaled_down_for_detection_and_boxes_map_back():
    frame = cv2.resize(ASTRONAUT, (1536, 1536), interpolation=cv2.INTER_LINEAR)
    (face,) = detect_faces(frame, max_side=512)
    assert box_iou(face.box, shifted(KNOWN_BOX, 0, 0, 3.0)) >= 0.5
    x0, y0, x1, y1 = face.box
    assert ((face.landmarks >= (x0, y0)) & (face.landmarks <= (x1, y1))).all()


@pytest.mark.parametrize(
    "frame",
    [
        canvas(),
        np.random.default_rng(0).integers(0, 256, (240, 480, 3), dtype=np.uint8),
        np.ascontiguousarray(ASTRONAUT[250:490, 0:480]),  # suit, mission patch, helmet
        np.ascontiguousarray(ASTRONAUT[300:512, 200:512]),
    ],
    ids=["grey", "noise", "suit", "helmet"],
)
def test_no_face_no_detection(detector, frame):
    assert detector(frame) == []


def test_min_score_cuts_where_asked_even_below_zero():
    """The suit's mission patch scores 0.08 and a fold of the helmet -0.22 (dlib's own cut is 0):
    a lower ``min_score`` lets them through, the default drops them."""
    suit = np.ascontiguousarray(ASTRONAUT[250:490, 0:480])
    helmet = np.ascontiguousarray(ASTRONAUT[300:512, 200:512])
    loose = FaceDetector(min_score=-0.5)
    assert [round(f.score, 2) for f in loose(suit)] == [0.08, -0.34]
    assert [round(f.score, 2) for f in loose(helmet)] == [-0.22]
    assert [round(f.score, 2) for f in detect_faces(suit, min_score=0.0)] == [0.08]


def test_alignment_puts_eyes_on_the_template(detector):
    (face,) = detector(ASTRONAUT)
    crop = align_face(ASTRONAUT, face.landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    matrix = similarity_transform(face.landmarks, ARCFACE_TEMPLATE_112)
    placed = np.c_[face.landmarks, np.ones(5)] @ matrix.T
    # eyes within a few px of the template (the least-squares fit spreads the smile's wide
    # mouth corners over all five points)
    assert np.abs(placed[:2] - ARCFACE_TEMPLATE_112[:2]).max() < 5
    # and the crop shows them there: the aligned face, found again, has its eyes at the template
    (again,) = detector(cv2.resize(crop, (448, 448), interpolation=cv2.INTER_CUBIC))
    assert np.abs(again.landmarks[:2] / 4 - ARCFACE_TEMPLATE_112[:2]).max() < 5


def test_alignment_recovers_a_known_similarity(detector):
    """A face rotated by 25 degrees, scaled by 1.7 and moved comes back to the same crop."""
    reference = align_face(ASTRONAUT, detector(ASTRONAUT)[0].landmarks)
    angle = np.deg2rad(25)
    forward = 1.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.c_[forward, [140.0, 60.0]]
    frame = cv2.warpAffine(reference, matrix, (400, 400), flags=cv2.INTER_CUBIC)
    landmarks = ARCFACE_TEMPLATE_112 @ forward.T + matrix[:, 2]
    recovered = align_face(frame, landmarks)
    inner = (slice(8, 104), slice(8, 104))  # away from the border pixels both warps blend
    assert np.abs(recovered[inner].astype(int) - reference[inner]).mean() < 4


def test_alignment_at_other_sizes_frames_like_a_resized_112_crop(detector):
    landmarks = detector(ASTRONAUT)[0].landmarks
    crop112 = align_face(ASTRONAUT, landmarks, 112)
    crop224 = align_face(ASTRONAUT, landmarks, 224)
    assert crop224.shape == (224, 224, 3)
    down = cv2.resize(crop224, (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(down.astype(int) - crop112).mean() < 6


def test_similarity_transform_matches_scikit_image():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 300, (5, 2))
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        reference = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE_112)
    else:
        reference = SimilarityTransform()
        reference.estimate(src, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(
        similarity_transform(src, ARCFACE_TEMPLATE_112), reference.params[:2], atol=1e-9
    )


def test_two_faces_keep_two_track_ids(detector):
    tracker = Tracker(max_unseen=3)
    ids = []
    for step in range(6):
        frame, boxes = two_heads(dx=4 * step, dy=2 * step)
        faces = detector(frame)
        assert len(faces) == 2
        for face, box in zip(faces, boxes, strict=True):
            assert box_iou(face.box, box) >= 0.5
        ids.append(tracker.update(faces))
    # two frames without a face (fewer than max_unseen): the same people keep their ids
    for _ in range(2):
        assert tracker.update(detector(canvas())) == []
    frame, _ = two_heads(dx=20, dy=10)
    ids.append(tracker.update(detector(frame)))
    assert ids == [[1, 2]] * 7


def test_tracker_matches_greedily_and_ends_unseen_tracks():
    tracker = Tracker(max_unseen=1, min_iou=0.3)
    assert tracker.update([(0, 0, 10, 10), (50, 0, 60, 10)]) == [1, 2]
    # listed in the other order, moved a little: same ids
    assert tracker.update([(52, 0, 62, 10), (1, 0, 11, 10)]) == [2, 1]
    # a face overlapping neither enough starts track 3; track 2 unseen once (kept)
    assert tracker.update([(2, 0, 12, 10), (200, 0, 210, 10)]) == [1, 3]
    # track 2 unseen twice (> max_unseen): it ends, and its place gives a new id
    assert tracker.update([(2, 0, 12, 10)]) == [1]
    assert tracker.update([(52, 0, 62, 10)]) == [4]
    # same input, same ids
    again = Tracker(max_unseen=1, min_iou=0.3)
    assert [
        again.update(b)
        for b in (
            [(0, 0, 10, 10), (50, 0, 60, 10)],
            [(52, 0, 62, 10), (1, 0, 11, 10)],
        )
    ] == [[1, 2], [2, 1]]


@pytest.mark.parametrize("step", [6, 15, 30])
@pytest.mark.parametrize("merged", [False, True])
def test_two_faces_crossing_keep_their_track_ids(step, merged):
    """Face A walks right, B left, past each other; the detector lists faces left to right, and
    at the crossing the boxes coincide (or, ``merged``, only one face is found). Before the
    tracker moved each track on by its velocity, the ids swapped there for every step (A took
    B's id from the crossing on), mixing the two people's smoothed expressions."""
    tracker = Tracker()
    for i in range(0, 121, step):
        a, b = (i, 0, i + 60, 60), (120 - i, 0, 180 - i, 60)
        found = sorted([("A", a), ("B", b)], key=lambda named: named[1][0])
        if merged and abs(i - 60) <= step // 2:
            found = found[:1]
        names, boxes = [n for n, _ in found], [box for _, box in found]
        ids = dict(zip(names, tracker.update(boxes), strict=True))
        assert ids.get("A", 1) == 1 and ids.get("B", 2) == 2, (i, ids)


def test_tracker_takes_faces():
    face = Face(box=(0.0, 0.0, 10.0, 10.0), landmarks=np.zeros((5, 2)), score=1.0)
    tracker = Tracker()
    assert tracker.update([face]) == [1]
    assert tracker.update([face]) == [1]


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_video_read_back_with_faces_on_every_frame(tmp_path, detector, fourcc, suffix):
    path = tmp_path / f"clip one{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (320, 240))
    assert writer.isOpened()
    boxes = []
    frames = 7
    for i in range(frames):
        frame = canvas(320, 240)
        frame[10:230, 10 + 10 * i : 230 + 10 * i] = HEAD
        boxes.append(shifted(HEAD_BOX, 10 + 10 * i, 10))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()

    (medium,) = list_media(path)
    assert (medium.name, medium.kind, medium.frames, medium.fps) == (
        f"clip one{suffix}",
        "video",
        frames,
        25.0,
    )
    read = list(iter_media(path))
    assert [(f.name, f.number) for f in read] == [(f"clip one{suffix}", n) for n in range(1, 8)]
    for f, box in zip(read, boxes, strict=True):
        assert f.rgb.shape == (240, 320, 3) and f.rgb.dtype == np.uint8
        (face,) = detector(f.rgb)
        assert box_iou(face.box, box) >= 0.5


def write_video(path, frames: int, size=(64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()


def test_folder_of_videos_in_order_with_counts(tmp_path):
    (tmp_path / "day 2").mkdir()
    write_video(tmp_path / "day 2" / "b.avi", 3)
    write_video(tmp_path / "A.AVI", 5, size=(80, 60))
    write_video(tmp_path / "c.avi", 2)
    media = list_media(tmp_path)
    assert [(m.name, m.frames, m.fps) for m in media] == [
        ("A.AVI", 5, 30.0),
        ("c.avi", 2, 30.0),
        ("day 2/b.avi", 3, 30.0),
    ]
    read = [(f.name, f.number, f.rgb.shape[:2]) for f in iter_media(media)]
    assert read == (
        [("A.AVI", n, (60, 80)) for n in range(1, 6)]
        + [("c.avi", n, (48, 64)) for n in range(1, 3)]
        + [("day 2/b.avi", n, (48, 64)) for n in range(1, 4)]
    )
    # frames come in order: the grey level written rises 20 a frame (MJPG keeps it within a few)
    levels = [int(f.rgb.mean()) for f in iter_media(tmp_path / "A.AVI")]
    assert all(abs(level - 20 * i) <= 3 for i, level in enumerate(levels))


def test_faces_in_media_video_with_faceless_frames_and_a_second_medium(tmp_path, detector):
    videos = tmp_path / "videos"
    videos.mkdir()
    writer = cv2.VideoWriter(
        str(videos / "a.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (480, 240)
    )
    for step in range(5):
        frame = canvas() if step == 2 else two_heads(dx=4 * step, dy=2 * step)[0]
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    write_video(videos / "b.avi", 2)  # grey frames: no face

    got = list(faces_in_media(videos, detector, size=96, max_unseen=2))
    assert [(f.name, f.number, f.track_ids, f.crops.shape) for f in got] == [
        ("a.avi", 1, [1, 2], (2, 96, 96, 3)),
        ("a.avi", 2, [1, 2], (2, 96, 96, 3)),
        ("a.avi", 3, [], (0, 96, 96, 3)),  # the frame without a face is still reported
        ("a.avi", 4, [1, 2], (2, 96, 96, 3)),
        ("a.avi", 5, [1, 2], (2, 96, 96, 3)),
        ("b.avi", 1, [], (0, 96, 96, 3)),
        ("b.avi", 2, [], (0, 96, 96, 3)),
    ]
    # each crop is its face aligned: the left face and the mirrored right face mirror each other
    left, right = got[0].crops
    assert np.abs(left.astype(int) - right[:, ::-1]).mean() < 12
    # frames already decoded work the same; a new medium starts its track ids at 1 again
    frames = [MediaFrame("x", 1, two_heads(0, 0)[0]), MediaFrame("y", 1, two_heads(0, 0)[0])]
    assert [f.track_ids for f in faces_in_media(iter(frames), detector)] == [[1, 2], [1, 2]]
    with pytest.raises(ConfigError, match=r"size must be an integer in \[1, 1024\], got 0"):
        faces_in_media(videos, detector, size=0)
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        faces_in_media(tmp_path / "nowhere", detector)


def test_folder_of_photos_with_odd_names_and_sizes(tmp_path, write_jpeg, detector):
    photos = tmp_path / "photos"
    write_jpeg(photos / "My Photo (1).JPG", ASTRONAUT)
    write_jpeg(photos / "été 日本 фото.jpeg", cv2.resize(ASTRONAUT, (37, 53)))
    cv2.imwrite(str(photos / "UPPER CASE.PNG"), np.zeros((480, 1000, 3), np.uint8))
    write_jpeg(photos / "sub folder" / "wide.jpg", np.full((200, 1000, 3), 90, np.uint8))
    (photos / "notes.txt").write_text("not a photo\n")
    (photos / ".hidden.jpg").write_bytes(b"editor backup")

    media = list_media(photos)
    assert [(m.name, m.kind, m.frames) for m in media] == [
        ("My Photo (1).JPG", "image", 1),
        ("UPPER CASE.PNG", "image", 1),
        ("sub folder/wide.jpg", "image", 1),
        ("été 日本 фото.jpeg", "image", 1),
    ]
    read = list(iter_media(media))
    assert [(f.name, f.number, f.rgb.shape) for f in read] == [
        ("My Photo (1).JPG", 1, (512, 512, 3)),
        ("UPPER CASE.PNG", 1, (480, 1000, 3)),
        ("sub folder/wide.jpg", 1, (200, 1000, 3)),
        ("été 日本 фото.jpeg", 1, (53, 37, 3)),
    ]
    (face,) = detector(read[0].rgb)
    assert box_iou(face.box, KNOWN_BOX) >= 0.5
    # a single image given by its path
    assert [(f.name, f.number) for f in iter_media(photos / "UPPER CASE.PNG")] == [
        ("UPPER CASE.PNG", 1)
    ]


def test_photo_turned_upright_by_its_exif_orientation(tmp_path, detector):
    path = tmp_path / "phone.png"
    stored = np.ascontiguousarray(np.rot90(ASTRONAUT[:, :400]))  # 400 x 512, lying on its side
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(path, exif=exif)
    (frame,) = iter_media(path)
    np.testing.assert_array_equal(frame.rgb, ASTRONAUT[:, :400])
    assert len(detector(frame.rgb)) == 1


def test_unreadable_media_named(tmp_path, write_jpeg):
    write_jpeg(tmp_path / "ok.jpg", HEAD)
    cut = tmp_path / "cut short.jpg"
    write_jpeg(cut, HEAD)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(DataError, match="cut short.jpg: truncated JPEG"):
        list(iter_media(tmp_path))

    video = tmp_path / "broken.mp4"
    video.write_bytes(b"this is not a video" * 10)
    with pytest.raises(DataError, match=r"broken\.mp4: cannot read video"):
        list_media(video)

    with pytest.raises(DataError, match=r"notes\.txt: not an image or a video by its extension"):
        (tmp_path / "notes.txt").write_text("x")
        list_media(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no image or video in this folder"):
        list_media(empty)
    with pytest.raises(DataError, match="missing: no such file or folder"):
        list_media(tmp_path / "missing")


@pytest.mark.parametrize("code", ["EMFILE", "ENFILE", "ENOMEM"])
def test_a_folder_skips_damaged_files_but_not_a_process_out_of_descriptors_or_memory(
    tmp_path, write_jpeg, monkeypatch, code
):
    # Out of file descriptors (a leak, a low ulimit) or memory says nothing about the file being
    # read: skipping it as damaged would drop file after file from a run that reports success.
    import errno

    import ferlit.data.images as images
    import ferlit.evaluation.media as media

    for name in ("a.jpg", "b.jpg"):
        write_jpeg(tmp_path / name, HEAD)
    write_video(tmp_path / "c.avi", 2)
    (tmp_path / "d cut.jpg").write_bytes(b"\xff\xd8\xff")
    skipped = []
    with pytest.warns(DataWarning, match="skipped d cut.jpg"):
        read = [(f.name, f.number) for f in iter_media(list_media(tmp_path, skipped), skipped)]
    assert read == [("a.jpg", 1), ("b.jpg", 1), ("c.avi", 1), ("c.avi", 2)]
    assert [s.name for s in skipped] == ["d cut.jpg"]

    exhausted = OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    reader, opener, capture = images._read_regular_file, os.open, cv2.VideoCapture

    def read_file(path):
        if path.endswith("b.jpg"):
            raise exhausted
        return reader(path)

    def open_file(path, *args, **kwargs):
        if os.fspath(path).endswith("c.avi"):
            raise exhausted
        return opener(path, *args, **kwargs)

    monkeypatch.setattr(images, "_read_regular_file", read_file)
    with pytest.raises(DataError, match=rf"b\.jpg: cannot read image: {exhausted.strerror}"):
        list(iter_media(tmp_path, []))
    monkeypatch.setattr(images, "_read_regular_file", reader)
    monkeypatch.setattr(media.cv2, "VideoCapture", lambda path: capture(""))  # cannot open
    monkeypatch.setattr(media.os, "open", open_file)
    with pytest.raises(DataError, match=rf"c\.avi: cannot read video: {exhausted.strerror}"):
        list_media(tmp_path, [])


def test_fifo_named_like_a_video_is_refused_not_read(tmp_path):
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"stream\.mp4: not a regular file"):
        list_media(fifo)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match=r"upsample must be an integer in \[0, 3\], got 5"):
        FaceDetector(upsample=5)
    with pytest.raises(ConfigError, match="expected an H x W x 3 uint8 RGB image"):
        detect_faces(np.zeros((10, 10), np.uint8))
    with pytest.raises(ConfigError, match=r"expected 5 finite \(x, y\) points"):
        align_face(HEAD, np.zeros((4, 2)))
    with pytest.raises(ConfigError, match=r"size must be an integer in \[1, 1024\]"):
        align_face(HEAD, ARCFACE_TEMPLATE_112, size=0)
    with pytest.raises(ConfigError, match="max_unseen must be an integer >= 0"):
        Tracker(max_unseen=-1)


def test_a_folder_that_cannot_be_listed_is_named_not_passed_over(tmp_path, write_jpeg, monkeypatch):
    # os.walk passes over a folder it cannot list (permissions): its photos were left out of
    # the predictions without a word, and an unreadable --input read as "no image or video".
    for name in ("a.jpg", "locked/b.jpg"):
        write_jpeg(tmp_path / name, HEAD)
    scandir = os.scandir

    def refuse(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(DataError, match=r"locked: cannot list this folder: Permission denied"):
        list_media(tmp_path)
    skipped = []
    with pytest.warns(DataWarning, match=r"skipped locked: .*locked: cannot list this folder"):
        assert [m.name for m in list_media(tmp_path, skipped)] == ["a.jpg"]
    assert [s.name for s in skipped] == ["locked"]
    with pytest.raises(DataError, match=r"locked: cannot list this folder: Permission denied"):
        list_media(tmp_path / "locked", [])  # the folder given itself: an error


def test_a_video_whose_frames_have_too_many_pixels_is_not_decoded(tmp_path, monkeypatch):
    """The frame size a video declares is checked before a frame is decoded, against the limit
    images have (lowered here so that a small video stands for an 8K+ one)."""
    path = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert list_media(path)[0].frames == 3
    monkeypatch.setattr("ferlit.data.images.MAX_IMAGE_PIXELS", 64 * 48 - 1)
    decoded = []
    monkeypatch.setattr(cv2.VideoCapture, "grab", lambda self: decoded.append(1) or False)
    with pytest.raises(
        DataError, match=r"big\.avi: cannot read video: its frames are 64x48 pixels"
    ):
        list_media(path)
    assert decoded == []
