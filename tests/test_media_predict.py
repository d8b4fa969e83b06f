"""``python -m ferlit predict --input PATH`` and ``ferlit.predict(model, PATH)`` on real faces.

The media are built from ``skimage.data.astronaut()`` (a public-domain NASA photograph with one
real face; its box hand-labelled on the 512 x 512 image, as in tests/test_faces.py): 320 x 240
frames, small so that detection (~0.1 s a frame here) keeps each test to seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import ferlit
from ferlit.cli import main
from ferlit.errors import ConfigError, DataError, DataWarning
from ferlit.evaluation.faces import box_iou
from ferlit.evaluation.media_predict import FACE_COLUMNS, predict_media

skimage_data = pytest.importorskip("skimage.data")

#: The astronaut's face on the 512 x 512 image (cheek to cheek, hairline to chin), px.
KNOWN_BOX = (180.0, 78.0, 264.0, 180.0)
#: The part of the photograph the frames show (rows, columns): head and shoulders.
TOP, LEFT, SIDE = 20, 100, 240
WIDTH, HEIGHT = 320, 240


def astronaut_frame(scale: float, dx: int, dy: int, mirrored: bool = False):
    """A grey 320 x 240 frame with the astronaut's head at ``(dx, dy)`` scaled by ``scale``
    (and its mirror image at the right edge): ``(rgb, [known boxes, left to right])``."""
    crop = skimage_data.astronaut()[TOP : TOP + SIDE, LEFT : LEFT + SIDE]
    head = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = head.shape[:2]
    rgb = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    rgb[dy : dy + h, dx : dx + w] = head
    x0, y0, x1, y1 = ((v - o) * scale for v, o in zip(KNOWN_BOX, (LEFT, TOP) * 2, strict=True))
    boxes = [(x0 + dx, y0 + dy, x1 + dx, y1 + dy)]
    if mirrored:
        right = WIDTH - w
        rgb[dy : dy + h, right:] = head[:, ::-1]
        boxes.append((right + w - x1, y0 + dy, right + w - x0, y1 + dy))
    return rgb, boxes


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    """An MJPG AVI (OpenCV's writer; every frame a JPEG at quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def checkpoint(train_and_save, tmp_path_factory) -> Path:
    """A tiny trained checkpoint (32-pixel input; tests/conftest.py)."""
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    train_and_save(path)
    return path


@pytest.fixture(scope="module")
def one_face_video(tmp_path_factory):
    """6 frames with the face drifting right and down, then 2 grey frames, then 2 more with
    the face: ``(path, {frame number: known box})``."""
    frames, boxes = [], {}
    for i in range(10):
        if i in (6, 7):
            frames.append(np.full((HEIGHT, WIDTH, 3), 128, np.uint8))
            continue
        rgb, (box,) = astronaut_frame(0.8, 10 + 6 * i, 10 + 3 * i)
        frames.append(rgb)
        boxes[i + 1] = box
    path = tmp_path_factory.mktemp("media") / "one face.avi"
    write_video(path, frames)
    return path, boxes


@pytest.fixture(scope="module")
def one_face_predictions(checkpoint, one_face_video):
    return ferlit.predict(str(checkpoint), one_face_video[0], smooth=3, progress=False)


def test_a_video_gives_a_row_per_frame_with_the_face_found(
    one_face_predictions, one_face_video, checkpoint
):
    table = one_face_predictions
    _, boxes = one_face_video
    assert table["frame"].tolist() == list(range(1, 11))
    assert (table["media"] == "one face.avi").all()
    np.testing.assert_allclose(table["time_s"], np.arange(10) / 10.0)
    assert table["face"].tolist() == [True] * 6 + [False] * 2 + [True] * 2
    faces = table[table["face"]]
    for row in faces.itertuples():
        assert box_iou((row.x0, row.y0, row.x1, row.y1), boxes[row.frame]) >= 0.5
        # the eyes lie inside the box, the left eye left of the right one, the nose between
        assert row.x0 < row.left_eye_x < row.nose_x < row.right_eye_x < row.x1
        assert row.y0 < row.left_eye_y < row.nose_y < row.mouth_left_y < row.y1
        assert row.score >= 0.5
    # one track across the two frames without a face (the tracker keeps it 10 frames)
    assert faces["track"].tolist() == [1] * 8
    probs = faces[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (8, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert faces["pred"].tolist() == probs.argmax(1).tolist()
    names = ferlit.load_model(checkpoint).class_names
    assert faces["pred_name"].tolist() == [names[p] for p in probs.argmax(1)]


def test_frames_without_a_face_are_rows_saying_so(one_face_predictions):
    empty = one_face_predictions[~one_face_predictions["face"]]
    assert empty["frame"].tolist() == [7, 8]
    for column in ("track", "x0", "score", "prob_neutral", "pred", "pred_smoothed"):
        assert empty[column].isna().all(), column
    assert empty["pred_name"].isna().all()


def test_smoothing_runs_over_the_tracks_frames(one_face_predictions):
    """pred_smoothed is the arg-max of the box mean over frame numbers f-1..f+1 of the track:
    frames 6 and 9 border the gap and average 2 frames, not 3."""
    faces = one_face_predictions[one_face_predictions["face"]].set_index("frame")
    probs = faces[[c for c in faces.columns if c.startswith("prob_")]].to_numpy(np.float64)
    frames = faces.index.to_numpy()
    expected = []
    for f in frames:
        near = np.abs(frames - f) <= 1
        expected.append(int(probs[near].mean(0).argmax()))
    assert faces["pred_smoothed"].tolist() == expected
    assert one_face_predictions.attrs["smoothing"] == {"window": 3, "kernel": "box"}


def test_aligned_crops_are_the_models_input(checkpoint, one_face_video, monkeypatch):
    """The model gets 32 x 32 crops (its input size; 112 x 112 framing scaled) of every face."""
    import ferlit.evaluation.inference as inference

    seen = []
    original = inference.predict

    def spy(model, faces, *args, **kwargs):
        seen.append(np.asarray(faces).shape)
        return original(model, faces, *args, **kwargs)

    monkeypatch.setattr(inference, "predict", spy)
    model = ferlit.load_model(checkpoint)
    table = predict_media(model, one_face_video[0], progress=False)
    assert [s[1:] for s in seen] == [(32, 32, 3)] * len(seen)
    assert sum(s[0] for s in seen) == int(table["face"].sum()) == 8
    assert "pred_smoothed" not in table.columns  # smoothing off by default


def test_two_faces_get_two_tracks(checkpoint, tmp_path):
    frames, known = [], []
    for i in range(4):
        rgb, boxes = astronaut_frame(0.65, 0, 20 + 4 * i, mirrored=True)
        frames.append(rgb)
        known.append(boxes)
    write_video(tmp_path / "pair.avi", frames)
    model = ferlit.load_model(checkpoint)
    table = ferlit.predict(model, tmp_path / "pair.avi", smooth=3, progress=False)
    assert len(table) == 8 and table["face"].all()
    for frame, rows in table.groupby("frame"):
        assert rows["track"].tolist() == [1, 2]  # left face track 1, its mirror track 2
        for row, box in zip(rows.itertuples(), known[frame - 1], strict=True):
            assert box_iou((row.x0, row.y0, row.x1, row.y1), box) >= 0.5
    # smoothing per track: track 2's labels come from track 2's probabilities only
    right = table[table["track"] == 2]
    probs = right[[c for c in table.columns if c.startswith("prob_")]].to_numpy(np.float64)
    means = [probs[max(i - 1, 0) : i + 2].mean(0).argmax() for i in range(4)]
    assert right["pred_smoothed"].tolist() == means


def test_a_folder_of_photos_with_odd_names_and_sizes(checkpoint, tmp_path, write_jpeg):
    folder = tmp_path / "photos"
    face, (box,) = astronaut_frame(0.8, 40, 20)
    write_jpeg(folder / "Été 2024 (1).JPG", face)
    big = cv2.resize(face, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)  # 800 x 600
    (folder / "sub dir").mkdir(parents=True)
    assert cv2.imwrite(str(folder / "sub dir" / "x.y.PNG"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    write_jpeg(folder / "-no face-.jpeg", np.full((97, 131, 3), 200, np.uint8))
    (folder / "notes.txt").write_text("not a photo\n")
    table = ferlit.predict(checkpoint, folder, progress=False)
    assert table["media"].tolist() == ["-no face-.jpeg", "sub dir/x.y.PNG", "Été 2024 (1).JPG"]
    assert table["frame"].tolist() == [1, 1, 1]
    assert table["face"].tolist() == [False, True, True]
    assert table["time_s"].isna().all()  # photos have no time
    big_box = tuple(v * 2.5 for v in box)
    rows = table.set_index("media")
    for media, known in (("sub dir/x.y.PNG", big_box), ("Été 2024 (1).JPG", box)):
        row = rows.loc[media]
        assert box_iou((row.x0, row.y0, row.x1, row.y1), known) >= 0.5


def test_the_command_writes_the_table_plot_and_annotated_video(
    checkpoint, one_face_video, tmp_path, capsys
):
    video, _ = one_face_video
    out = tmp_path / "out"
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", str(video), "--out", str(out)]
    args += ["--smooth", "3", "--smooth_kernel", "gaussian", "--annotated_video", "true"]
    args += ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    table = main(args)
    parquet = pd.read_parquet(out / "predictions.parquet")
    assert parquet.columns.tolist()[: len(FACE_COLUMNS)] == list(FACE_COLUMNS)
    assert parquet.columns.tolist()[len(FACE_COLUMNS) :] == [
        *(f"prob_{n}" for n in ("neutral", "anger", "disgust", "fear", "happiness")),
        *("prob_sadness", "prob_surprise", "pred", "pred_name"),
        *("pred_smoothed", "pred_smoothed_name"),
    ]
    pd.testing.assert_frame_equal(parquet, table.reset_index(drop=True), check_dtype=False)
    csv = pd.read_csv(out / "predictions.csv")
    assert len(csv) == 10 and csv["face"].tolist() == table["face"].tolist()
    assert csv.loc[6, ["prob_neutral", "pred", "pred_name"]].isna().all()  # frame 7: no face
    np.testing.assert_allclose(csv["prob_happiness"], table["prob_happiness"], atol=1e-6)
    plot = cv2.imread(str(out / "expressions_one face.avi.png"))
    assert plot is not None and plot.shape[1] > 600
    annotated = cv2.VideoCapture(str(out / "annotated_one face.avi.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    ok, first = annotated.read()
    annotated.release()
    assert ok and first.shape == (HEIGHT, WIDTH, 3)
    files = json.loads((out / ".ferlit-outputs.json").read_text())["files"]
    assert sorted(files) == sorted(
        [
            *("predictions.parquet", "predictions.csv", "expressions_one face.avi.png"),
            "annotated_one face.avi.mp4",
        ]
    )
    printed = capsys.readouterr().out
    assert "1 media, 10 frames, 8 faces in 1 track: " in printed

    # a second run into the same folder needs --overwrite, and then replaces only ferlit's files
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args[:7] + ["--trainer.enable_progress_bar", "false"])
    assert stop.value.code == 2
    assert "holds earlier media predictions" in capsys.readouterr().err
    main(args[:7] + ["--overwrite", "--trainer.enable_progress_bar", "false"])
    files = json.loads((out / ".ferlit-outputs.json").read_text())["files"]
    assert not (out / "annotated_one face.avi.mp4").exists()  # not asked for this time
    assert "pred_smoothed" not in pd.read_parquet(out / "predictions.parquet").columns


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data.batch_size", "8"], "--data.batch_size: not used with --input"),
        (["--data.frames_dir", "x"], "--data.frames_dir: not used with --input"),
        (["--submission", "sub"], "--submission: not used with --input"),
        (["--test_list", "t.txt"], "--test_list: not used with --input"),
        (["--smooth", "auto"], "--smooth auto: chooses the window on labelled frames"),
        (["--smooth", "4"], "--smooth: the window must be 0 (off) or an odd number"),
        (["--smooth_kernel", "gaussian"], "--smooth_kernel gaussian: smoothing is off"),
        (["--trainer.devices", "2"], "--trainer.devices: not used with --input"),
        (["--trainer.precision", "16-mixed"], "--trainer.precision: not used with --input"),
        (["--trainer.accelerator", "tpu"], "--trainer.accelerator tpu: with --input faces"),
        (["--face_upsample", "5"], "face detector upsample must be an integer in [0, 3]"),
    ],
)
def test_options_that_do_not_apply_are_refused_by_name(
    checkpoint, one_face_video, tmp_path, capsys, extra, message
):
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", str(one_face_video[0])]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--out", str(tmp_path / "out"), *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_the_face_options_are_refused_without_input(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                *("predict", "--ckpt_path", str(checkpoint), "--out", str(tmp_path / "out")),
                *("--annotated_video", "true"),
            ]
        )
    assert stop.value.code == 2
    assert "--annotated_video: only used with --input" in capsys.readouterr().err


def test_python_predict_keeps_returning_probabilities_for_faces(checkpoint):
    model = ferlit.load_model(checkpoint)
    faces = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    probs = ferlit.predict(model, faces)
    assert isinstance(probs, np.ndarray) and probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="--smooth: the window must be 0"):
        ferlit.predict(model, "anything.mp4", smooth=2)


VIDEO_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "predict_video.ipynb"


def test_video_notebook_is_committed_without_outputs():
    import nbformat

    notebook = nbformat.read(VIDEO_NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_video_notebook_shows_the_table_and_the_plot(checkpoint, tmp_path):
    """12 frames: the face alone in 1-4, with its mirror from frame 5, none in frame 7."""
    from matplotlib.figure import Figure

    from tests.test_notebook import run_notebook

    ns = run_notebook(
        VIDEO_NOTEBOOK,
        ("table", "tracks", "figure"),
        tmp_path,
        CHECKPOINT=str(checkpoint),
        FRAMES=12,
        WORK=str(tmp_path),
    )
    table = ns["table"]
    assert (tmp_path / "astronaut.avi").is_file()
    assert table.drop_duplicates("frame")["frame"].tolist() == list(range(1, 13))
    faces_per_frame = table.groupby("frame")["face"].sum().tolist()
    assert faces_per_frame == [1, 1, 1, 1, 2, 2, 0, 2, 2, 2, 2, 2]
    assert ns["tracks"].index.tolist() == [1, 2]
    assert ns["tracks"]["frames"].tolist() == [11, 7]
    assert ns["tracks"]["x_centre"].iloc[0] < ns["tracks"]["x_centre"].iloc[1]
    probs = table.loc[table["face"], [c for c in table.columns if c.startswith("prob_")]]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert table.loc[table["face"], "pred_smoothed"].notna().all()
    figure = ns["figure"]
    assert isinstance(figure, Figure)
    title = figure.get_suptitle()
    assert title.startswith("astronaut.avi: expression over time, smoothed (W=5 frames)")
    assert title.endswith(f"model {checkpoint.name}")
    probability_axes = [ax for ax in figure.axes if ax.get_ylabel().endswith("probability")]
    assert [ax.get_ylabel().split()[1] for ax in probability_axes] == ["1", "2"]
    assert len(probability_axes[0].get_lines()) == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_a_gpu_asked_for_without_one_is_refused(checkpoint, one_face_video, tmp_path, capsys):
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", str(one_face_video[0])]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--out", str(tmp_path / "out"), "--trainer.accelerator", "gpu"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: --trainer.accelerator gpu: no CUDA GPU is visible to this process; use "
        "--trainer.accelerator cpu or auto\n"
    )


def test_detection_in_worker_processes_gives_the_same_table(checkpoint, one_face_video):
    model = ferlit.load_model(checkpoint)
    alone = predict_media(model, one_face_video[0], smooth=3, progress=False)
    pooled = predict_media(model, one_face_video[0], smooth=3, progress=False, workers=2)
    pd.testing.assert_frame_equal(pooled, alone)
    with pytest.raises(ConfigError, match="--face_workers: expected 0"):
        predict_media(model, one_face_video[0], workers=-1)


def test_media_whose_output_names_clash_or_are_too_long_get_files_of_their_own(
    checkpoint, tmp_path, write_jpeg
):
    """``a/b.png`` and ``a__b.png`` both flatten to ``annotated_a__b.png.png``: each now gets its
    own file (the second replaced the first before); a medium three folders of 120 characters
    deep (a 380-byte flat name, over the 255 a file name may have) is written under a shortened
    name instead of failing after every frame was predicted."""
    folder = tmp_path / "photos"
    deep = "x" * 120
    paths = [folder / "a" / "b.png", folder / "a__b.png", folder / deep / deep / deep / "c.png"]
    for i, path in enumerate(paths):
        write_jpeg(path, np.full((40 + i, 50, 3), 60 * i, np.uint8))  # no face: fast
    out = tmp_path / "out"
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", str(folder), "--out", str(out)]
    main([*args, "--annotated_video", "true", "--trainer.enable_progress_bar", "false"])
    files = json.loads((out / ".ferlit-outputs.json").read_text())["files"]
    annotated = sorted(f for f in files if f.startswith("annotated_"))
    assert len(annotated) == 3 and all(len(f.encode()) <= 150 for f in annotated)
    assert annotated[0].startswith("annotated_a__b.png-") and annotated[0].endswith(".png")
    assert annotated[2].startswith("annotated_xxxxxxxx") and annotated[2].endswith(".png")
    heights = sorted(cv2.imread(str(out / name)).shape[0] for name in annotated)
    assert heights == [40, 41, 42]  # three different photos, none written over another


def test_an_empty_input_or_batch_size_is_refused_by_name(checkpoint, tmp_path, monkeypatch, capsys):
    """``--input ""`` (an unset shell variable) read the current folder (``Path("")`` is
    ``.``); ``ferlit.predict(model, path, batch_size=0)`` failed inside NumPy ("need at least
    one array to concatenate")."""
    monkeypatch.chdir(tmp_path)
    cv2.imwrite(str(tmp_path / "in the cwd.png"), np.zeros((40, 40, 3), np.uint8))
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", "", "--out", "out"]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--trainer.enable_progress_bar", "false"])
    assert stop.value.code == 2
    assert "error: --input '': empty; name a video, an image" in capsys.readouterr().err
    assert not (tmp_path / "out" / "predictions.csv").exists()
    with pytest.raises(DataError, match="media path '': empty; name a video, an image"):
        ferlit.predict(checkpoint, "", progress=False)
    with pytest.raises(ConfigError, match="batch_size: expected a positive number of faces, got 0"):
        ferlit.predict(checkpoint, tmp_path / "in the cwd.png", batch_size=0, progress=False)


def test_flip_tta_on_new_media_averages_each_aligned_face_and_its_mirror(
    checkpoint, one_face_video, one_face_predictions
):
    """``predict --input --tta flip`` (``ferlit.predict(..., tta="flip")``): each face row's
    probabilities are the mean of the model's on the aligned face and on its mirror."""
    from ferlit.evaluation.faces import faces_in_media
    from ferlit.evaluation.inference import predict

    model = ferlit.load_model(checkpoint)
    table = ferlit.predict(model, one_face_video[0], tta="flip", progress=False)
    crops = np.concatenate(
        [f.crops for f in faces_in_media(one_face_video[0], size=model.hparams.input_size)]
    )
    expected = (predict(model, crops) + predict(model, np.ascontiguousarray(crops[:, :, ::-1]))) / 2
    columns = [c for c in table.columns if c.startswith("prob_")]
    got = table.loc[table["face"], columns].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    plain = one_face_predictions.loc[one_face_predictions["face"], columns].to_numpy()
    assert np.abs(got - plain).max() > 1e-4  # the option did something


class _EndsTheProcess:
    """Unpickled in a detection worker, ends it at once (as the kernel's OOM killer would)."""

    def __reduce__(self):
        import os

        return os._exit, (1,)


@pytest.mark.parametrize("cause", ["killed", "cannot start"])
def test_a_detection_worker_that_dies_is_an_error_not_a_hang(cause):
    """``--face_workers``: multiprocessing.Pool replaced a dead worker and waited forever for
    its frame (seen with ``python - < script.py``, whose workers cannot start); now the run
    stops with a message naming the option and the frame."""
    from ferlit.evaluation.detection_pool import HandedDetections
    from ferlit.evaluation.media import MediaFrame
    from tests.test_hangs import fails_after

    grey = np.full((60, 80, 3), 128, np.uint8)
    frames = [MediaFrame("clip.mp4", 1, grey), MediaFrame("clip.mp4", 2, _EndsTheProcess())]
    settings = (1, 0.5, 960) if cause == "killed" else (7, 0.5, 960)  # upsample 7: refused
    handed = HandedDetections()
    with fails_after(120), pytest.raises(ConfigError) as error:
        for _ in handed.frames(frames, settings, 1):
            pass
    # killed: frame 1's faces may or may not have come back before the process ended
    frame = "[12]" if cause == "killed" else "1"
    assert re.search(
        f"--face_workers: a face detection process ended before frame {frame} of clip.mp4 was "
        "done .*; run with --face_workers 0",
        str(error.value),
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:1"])
def test_python_predict_names_a_device_it_cannot_use(checkpoint, tmp_path, device):
    """``ferlit.predict(model, path, device=...)``: "gpu" and "auto" reached ``torch.device``
    (a RuntimeError listing torch's device types) and "cuda" the driver's RuntimeError."""
    photo = tmp_path / "grey.png"
    cv2.imwrite(str(photo), np.full((40, 40, 3), 128, np.uint8))
    gpu = "CUDA GPU 1" if device == "cuda:1" else "CUDA GPU"
    with pytest.raises(ConfigError, match=f"device {device}: no {gpu} is visible"):
        ferlit.predict(checkpoint, photo, device=device, progress=False)
    table = ferlit.predict(ferlit.load_model(checkpoint), photo, device="auto", progress=False)
    assert table["face"].tolist() == [False]


def test_a_damaged_file_in_a_folder_is_skipped_named_and_listed(
    checkpoint, tmp_path, capsys, write_jpeg
):
    folder, out = tmp_path / "photos", tmp_path / "out"
    face, _ = astronaut_frame(0.8, 40, 20)
    for name in ("a.jpg", "b cut.jpg", "c.jpg"):
        write_jpeg(folder / name, face)
    cut = folder / "b cut.jpg"
    cut.write_bytes(cut.read_bytes()[:300])  # a copy cut short, between two good photos
    args = ["predict", "--ckpt_path", str(checkpoint), "--out", str(out)]
    args += ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    with pytest.warns(DataWarning, match=r"^skipped b cut\.jpg: .*b cut\.jpg: truncated JPEG"):
        table = main([*args, "--input", str(folder)])
    assert table["media"].tolist() == ["a.jpg", "c.jpg"] and table["face"].all()
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["media"].tolist() == ["b cut.jpg"]
    assert "b cut.jpg: truncated JPEG" in skipped["reason"][0]
    assert pd.read_csv(out / "predictions.csv")["media"].tolist() == ["a.jpg", "c.jpg"]
    printed = capsys.readouterr().out
    assert "2 media, 2 frames" in printed
    assert f"1 damaged file(s) skipped (reasons in {out / 'skipped.csv'}): b cut.jpg" in printed
    # The damaged file given itself stays an error; so does a folder of nothing but damaged files.
    for given, message in (
        (cut, "b cut.jpg: truncated JPEG"),
        (cut.parent, "photos: every image or video in this folder is damaged (1 skipped): "),
    ):
        if given == cut.parent:
            for name in ("a.jpg", "c.jpg"):
                (folder / name).unlink()
        with pytest.raises(SystemExit) as stop:
            main([*args[:4], str(tmp_path / "out2"), *args[5:], "--input", str(given)])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out2" / "predictions.csv").exists()


def test_names_that_start_like_a_formula_are_quoted_in_the_csvs(checkpoint, tmp_path, write_jpeg):
    folder, out = tmp_path / "photos", tmp_path / "out"
    write_jpeg(folder / "=1+1.jpg", np.full((48, 64, 3), 200, np.uint8))  # no face: one row
    write_jpeg(folder / "@SUM(A1).jpg", np.full((48, 64, 3), 90, np.uint8))
    (folder / "-cut.jpg").write_bytes(b"\xff\xd8\xff")  # damaged: a row of skipped.csv
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", str(folder), "--out", str(out)]
    with pytest.warns(DataWarning, match="skipped -cut.jpg"):
        main([*args, "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    lines = (out / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in lines] == ["media", "'=1+1.jpg", "'@SUM(A1).jpg"]
    skipped = (out / "skipped.csv").read_text(encoding="utf-8").splitlines()
    assert skipped[1].startswith("'-cut.jpg,")
    # The table for programs keeps the names as they are.
    parquet = pd.read_parquet(out / "predictions.parquet")
    assert parquet["media"].tolist() == ["=1+1.jpg", "@SUM(A1).jpg"]


def test_a_carriage_return_in_a_name_cannot_start_a_row_of_the_csvs(
    checkpoint, tmp_path, write_jpeg
):
    # A CR is a line break to Excel and LibreOffice: unquoted, "x\r=2+3.jpg" became a row of its
    # own whose first cell, =2+3.jpg, was run as a formula. Such a cell is quoted, kept whole.
    import csv

    folder, out = tmp_path / "photos", tmp_path / "out"
    write_jpeg(folder / "x\r=2+3.jpg", np.full((48, 64, 3), 200, np.uint8))  # no face: one row
    (folder / "y\r@cut.jpg").write_bytes(b"\xff\xd8\xff")  # damaged: a row of skipped.csv
    args = ["predict", "--ckpt_path", str(checkpoint), "--input", str(folder), "--out", str(out)]
    with pytest.warns(DataWarning, match="skipped y\r@cut.jpg"):
        main([*args, "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"])
    for name, media in (("predictions.csv", "x\r=2+3.jpg"), ("skipped.csv", "y\r@cut.jpg")):
        with open(out / name, encoding="utf-8", newline="") as file:
            rows = list(csv.reader(file))
        assert len(rows) == 2 and rows[1][0] == media
        assert f'\r\n"{media}",' in (out / name).read_bytes().decode("utf-8")  # quoted whole
    assert pd.read_csv(out / "predictions.csv")["media"].tolist() == ["x\r=2+3.jpg"]


def test_spreadsheet_safe_quotes_formulas_behind_spaces_and_keeps_numbers():
    # A spreadsheet importing with "trim spaces" (LibreOffice's option; some others always) turns
    # " =1+1.jpg" into =1+1.jpg, a formula: a formula start behind leading white space is
    # prefixed too. Numbers, negative ones included, stay numbers.
    from ferlit.evaluation.media_predict import spreadsheet_safe

    names = [" =1+1.jpg", "\u00a0\t@SUM(A1).png", "  -x.jpg", "a =b.jpg", "-0.5.jpg", " ", None]
    table = pd.DataFrame(
        {
            "media": pd.array(names, dtype="string"),
            "x0": np.array([-0.5, 1, 2, 3, 4, 5, -6], np.float32),
            "track": pd.array([-1, None, 2, 3, 4, 5, 6], dtype="Int32"),
        }
    )
    safe = spreadsheet_safe(table)
    assert safe["media"].tolist() == [
        "' =1+1.jpg",
        "'\u00a0\t@SUM(A1).png",
        "'  -x.jpg",
        "a =b.jpg",
        "'-0.5.jpg",
        " ",
        pd.NA,
    ]
    assert safe.dtypes.tolist() == table.dtypes.tolist()
    assert safe["x0"].tolist() == table["x0"].tolist()
    assert safe["track"].tolist() == table["track"].tolist()
