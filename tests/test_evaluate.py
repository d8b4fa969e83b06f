"""What a user of ``python -m ferlit.evaluate`` relies on: files, scores, smoothing, submissions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_run_args
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.datasets import FaceDataset
from ferlit.data.pack import pack
from ferlit.data.readers.affwild2 import (
    FRAMES_DIR,
    annotation_dir,
    frame_file,
    read_affwild2,
    write_annotation_file,
)
from ferlit.data.transforms import build_transform
from ferlit.errors import ConfigError, DataError
from ferlit.evaluation.evaluate import main
from ferlit.evaluation.smoothing import smooth_predictions
from ferlit.evaluation.submission import fill_frames
from ferlit.evaluation.writer import evaluation_figures
from ferlit.expressions import EXPRESSIONS_7
from ferlit.training.cli import main as fit
from ferlit.training.module import ExpressionModule
from ferlit.training.runs import resolve_checkpoint

HEADER = ",".join(EXPRESSIONS_7)
PROBS = [f"prob_{name.lower()}" for name in EXPRESSIONS_7]


@pytest.fixture(scope="module")
def checkpoint(tiny_sample, tmp_path_factory) -> Path:
    """The best checkpoint of a 2-step run of a tiny SE-ResNet on the tiny sample data."""
    root = tmp_path_factory.mktemp("fit")
    cli = fit(
        tiny_run_args(
            tiny_sample,
            root,
            *("--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0"),
            *("--trainer.max_steps", "2", "--val_every_n_steps", "2"),
        )
    )
    return Path(cli.trainer.checkpoint_callback.best_model_path)


def evaluate_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("--ckpt", str(checkpoint), "--out", str(out)),
        *("--data.num_workers", "0", "--data.val_batch_size", "64"),
        *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *extra,
    ]


@pytest.fixture(scope="module")
def smoothed_run(checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    """An evaluation of the validation split with smoothing window 5 and a submission."""
    out = tmp_path_factory.mktemp("eval") / "val"
    report = main(evaluate_args(checkpoint, out, "--smooth", "5", "--submission", str(out / "sub")))
    return out, report


def sklearn_scores(target: np.ndarray, pred: np.ndarray) -> dict:
    labels = list(range(7))
    f1 = f1_score(target, pred, labels=labels, average=None, zero_division=0)
    acc = accuracy_score(target, pred)
    return {
        "f1": f1.mean(),
        "acc": acc,
        "criterion": 0.67 * f1.mean() + 0.33 * acc,
        "f1_per_class": f1,
        "precision": precision_score(target, pred, labels=labels, average=None, zero_division=0),
        "recall": recall_score(target, pred, labels=labels, average=None, zero_division=0),
        "support": np.bincount(target, minlength=7),
        "confusion": confusion_matrix(target, pred, labels=labels),
    }


def assert_agree(written: dict, expected: dict) -> None:
    for key in ("criterion", "f1", "acc"):
        assert written[key] == pytest.approx(expected[key], abs=1e-12), key
    for key in ("f1_per_class", "precision", "recall"):
        assert list(written[key]) == list(EXPRESSIONS_7)
        np.testing.assert_allclose(list(written[key].values()), expected[key], atol=1e-12)
    assert list(written["support"].values()) == expected["support"].tolist()
    assert written["confusion"] == expected["confusion"].tolist()


PNGS = ("confusion_matrix.png", "confusion_matrix_smoothed.png", "per_class_f1.png")


def test_each_plot_says_raw_or_smoothed_which_data_and_which_checkpoint(
    smoothed_run, checkpoint, tiny_sample
):
    out, report = smoothed_run
    figures = evaluation_figures(report, EXPRESSIONS_7)
    assert list(figures) == list(PNGS)
    tail = f"\ndata: Aff-Wild2 val, {tiny_sample.affwild2_dir}\ncheckpoint: {checkpoint.name}"
    titles = {name: f.axes[0].get_title() for name, f in figures.items()}
    assert titles == {
        "confusion_matrix.png": "Confusion matrix, raw predictions (rows: target, normalised by "
        "row)" + tail,
        "confusion_matrix_smoothed.png": "Confusion matrix, smoothed predictions (box window 5 "
        "frames; rows normalised)" + tail,
        "per_class_f1.png": "Per-class F1, raw and smoothed" + tail,
    }
    shown = np.asarray(figures["confusion_matrix_smoothed.png"].axes[0].images[0].get_array())
    counts = np.asarray(report["smoothed"]["confusion"], np.float64)
    np.testing.assert_allclose(shown, counts / counts.sum(axis=1, keepdims=True))
    # Aff-Wild2 data: the paper's per-class F1 as marks, one per class
    marks = figures["per_class_f1.png"].axes[0].collections
    assert len(marks) == 1 and len(marks[0].get_offsets()) == 7

    sample = {**report, "data": "ferlit sample data (drawn faces, not Aff-Wild2), val split"}
    figures = evaluation_figures(sample, EXPRESSIONS_7)
    title = figures["per_class_f1.png"].axes[0].get_title()
    assert title.startswith("Per-class F1, raw and smoothed (sample data)\ndata: ferlit sample")
    assert len(figures["per_class_f1.png"].axes[0].collections) == 0  # no paper marks: drawn faces


def test_writes_every_file_and_metrics_agree_with_sklearn(smoothed_run, tiny_sample):
    out, report = smoothed_run
    for name in ("predictions.parquet", "metrics.json", *PNGS):
        assert (out / name).is_file(), name
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report))

    predictions = pd.read_parquet(out / "predictions.parquet")
    assert list(predictions.columns) == [
        "video",
        "frame",
        "image",
        "target",
        "pred",
        *PROBS,
        "pred_smoothed",
    ]
    index = read_affwild2(tiny_sample.affwild2_dir, "val", progress=False)
    # Every face frame of the val videos is predicted; the annotated ones are the reader's.
    faces = sorted(
        (p.parent.name, int(p.stem))
        for p in (Path(tiny_sample.affwild2_dir) / FRAMES_DIR).glob("*/*.jpg")
        if p.parent.name in tiny_sample.manifest["affwild2"]["val"]["videos"]
    )
    assert list(zip(predictions["video"], predictions["frame"], strict=True)) == faces
    annotated = predictions[predictions["target"] >= 0]
    assert len(annotated) == len(index) == tiny_sample.manifest["affwild2"]["val"]["samples"]
    assert len(predictions) > len(index)  # the -1 frames with a face are predicted too
    assert annotated["frame"].tolist() == index.frames.tolist()
    assert annotated["target"].tolist() == index.labels.tolist()
    root = Path(tiny_sample.affwild2_dir) / FRAMES_DIR
    assert predictions["image"].tolist() == [
        str(root / video / f"{frame:05d}.jpg") for video, frame in faces
    ]
    assert (
        sorted(predictions["video"].unique()) == tiny_sample.manifest["affwild2"]["val"]["videos"]
    )
    probs = predictions[PROBS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (predictions["pred"].to_numpy() == probs.argmax(axis=1)).all()
    videos, frames = predictions["video"].to_numpy(), predictions["frame"].to_numpy()
    expected_smoothed = smooth_predictions(videos, frames, probs, 5)
    assert predictions["pred_smoothed"].tolist() == expected_smoothed.tolist()

    assert metrics["frames"] == len(predictions) and metrics["videos"] == 2
    assert metrics["labelled_frames"] == len(index)
    assert metrics["smoothing"] == {
        "window": 5,
        "kernel": "box",
        "sigma": None,
        "chosen_by": "--smooth",
        "context": "every face frame of the split's videos, annotated or not",
        "criterion_by_window": None,
    }
    # Scored over the annotated frames only, smoothed over all of them.
    scored = predictions["target"].to_numpy() >= 0
    target = predictions["target"].to_numpy()[scored]
    assert_agree(metrics["raw"], sklearn_scores(target, predictions["pred"].to_numpy()[scored]))
    assert_agree(metrics["smoothed"], sklearn_scores(target, expected_smoothed[scored]))


def test_probabilities_are_the_trained_models(smoothed_run, checkpoint, tiny_sample):
    out, _ = smoothed_run
    predictions = pd.read_parquet(out / "predictions.parquet")
    annotated = predictions[predictions["target"] >= 0]
    index = read_affwild2(tiny_sample.affwild2_dir, "val", progress=False)
    rows = [0, 1, len(index) - 1]
    expected = model_probabilities(checkpoint, index, rows)
    np.testing.assert_allclose(annotated[PROBS].to_numpy()[rows], expected, atol=1e-5)


def test_submission_has_every_annotated_frame_filled_from_the_nearest(smoothed_run, tiny_sample):
    out, _ = smoothed_run
    predictions = pd.read_parquet(out / "predictions.parquet")
    folder = annotation_dir(tiny_sample.affwild2_dir, "abaw2020", "val")
    videos = sorted(p.name for p in (out / "sub").glob("*.txt"))
    assert videos == [f"{v}.txt" for v in tiny_sample.manifest["affwild2"]["val"]["videos"]]
    filled_frames = 0
    for name in videos:
        lines = (out / "sub" / name).read_text().splitlines()
        annotation = (folder / name).read_text().splitlines()
        assert lines[0] == HEADER
        assert len(lines) == len(annotation)  # the header, then one line per frame of the video
        labels = np.array([int(v) for v in lines[1:]])
        rows = predictions[predictions["video"] == name[: -len(".txt")]]
        frames, smoothed = rows["frame"].to_numpy(), rows["pred_smoothed"].to_numpy()
        assert labels[frames - 1].tolist() == smoothed.tolist()
        for frame in sorted(set(range(1, len(labels) + 1)) - set(frames.tolist())):
            distance = np.abs(frames - frame)
            nearest = frames[distance == distance.min()].min()
            assert labels[frame - 1] == smoothed[frames == nearest][0]
            filled_frames += 1
    manifest = tiny_sample.manifest["affwild2"]["val"]["skipped"]
    assert filled_frames == manifest["no_image"] > 0  # -1 frames with a face are predicted


def test_smooth_auto_picks_the_best_window_on_the_validation_set(checkpoint, tmp_path, capsys):
    report = main(evaluate_args(checkpoint, tmp_path / "auto", "--smooth", "auto"))
    smoothing = report["smoothing"]
    by_kernel = smoothing["criterion_by_window"]
    assert set(by_kernel) == {"box", "gaussian"}
    candidates = [(v, -w, -k) for k, s in enumerate(by_kernel.values()) for w, v in s.items()]
    best_score, minus_window, minus_kernel = max(candidates)
    best, kernel = -minus_window, ("box", "gaussian")[-minus_kernel]
    assert (smoothing["window"], smoothing["chosen_by"]) == (best, "these frames (optimistic)")
    for scores in by_kernel.values():
        assert scores[1] == pytest.approx(report["raw"]["criterion"], abs=1e-12)
    if best > 1:
        assert smoothing["kernel"] == kernel
        assert report["smoothed"]["criterion"] == pytest.approx(best_score, abs=1e-12)
    assert f"--smooth auto: {kernel} window {best} frames" in capsys.readouterr().out
    gaussian = main(
        evaluate_args(checkpoint, tmp_path / "g", "--smooth", "auto", "--smooth_kernel", "gaussian")
    )
    assert set(gaussian["smoothing"]["criterion_by_window"]) == {"gaussian"}


def test_unlabelled_frames_folder_and_its_submission(smoothed_run, checkpoint, tiny_sample, capsys):
    # Two "test videos" made of sample frames: clipA lacks frames 3 and 4, clipB frames 1 and 2.
    earlier, _ = smoothed_run
    out = earlier.parent / "unlabelled"
    shutil.copytree(earlier, out, ignore=shutil.ignore_patterns("sub"))
    source = Path(tiny_sample.affwild2_dir) / FRAMES_DIR
    images = sorted(source.glob("*/*.jpg"))[:5]
    frames_dir = out.parent / "test_frames"
    for image, (video, frame) in zip(
        images, [("clipA", 1), ("clipA", 2), ("clipA", 5), ("clipB", 3), ("clipB", 4)], strict=True
    ):
        (frames_dir / video).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, frames_dir / video / frame_file(frame))
    (frames_dir / "clipA" / "notes.txt").write_text("not an image: ignored")
    submission = out / "sub"
    lengths = out.parent / "lengths.csv"
    # clipB's last two frames have no face; clipC has no face at all.
    lengths.write_text("video,frames\nclipA,5\nclipB,6\nclipC,4\n")

    report = main(
        evaluate_args(
            checkpoint,
            out,
            *("--frames_dir", str(frames_dir), "--submission", str(submission), "--overwrite"),
            *("--frame_counts", str(lengths)),
        )
    )
    assert report["raw"] is None and report["smoothed"] is None
    assert (report["frames"], report["videos"], report["labelled_frames"]) == (5, 2, 0)
    assert not (out / "confusion_matrix.png").exists()  # the earlier evaluation's plots went
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert predictions["video"].tolist() == ["clipA"] * 3 + ["clipB"] * 2
    assert predictions["frame"].tolist() == [1, 2, 5, 3, 4]
    assert (predictions["target"] == -1).all()
    pred = predictions["pred"].tolist()

    lines_a = (submission / "clipA.txt").read_text().splitlines()
    lines_b = (submission / "clipB.txt").read_text().splitlines()
    assert lines_a[0] == lines_b[0] == HEADER
    # clipA: frame 3 is nearest to 2, frame 4 to 5; clipB has 6 frames, its last face is 4.
    assert [int(v) for v in lines_a[1:]] == [pred[0], pred[1], pred[1], pred[2], pred[2]]
    assert [int(v) for v in lines_b[1:]] == [pred[3]] * 3 + [pred[4]] * 3
    listed = [".ferlit-outputs.json", "clipA.txt", "clipB.txt"]  # ferlit's list of its files
    assert sorted(p.name for p in submission.iterdir()) == listed
    assert "No file for 1 video(s) of" in capsys.readouterr().out.replace("\n", "")

    # ABAW 2023/2024: one file, following the organisers' list line by line.
    listed = out.parent / "test_set.txt"
    listed.write_text("clipB/00006.jpg\nclipA/00003.jpg\nclipA/00001.jpg\n")
    single = out.parent / "single"
    main(
        evaluate_args(
            checkpoint,
            out,
            *("--frames_dir", str(frames_dir), "--overwrite", "--submission", str(single)),
            *("--test_list", str(listed)),
        )
    )
    assert sorted(p.name for p in single.iterdir()) == [".ferlit-outputs.json", "predictions.txt"]
    assert (single / "predictions.txt").read_text() == (
        "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"
        f"clipB/00006.jpg,{pred[4]}\nclipA/00003.jpg,{pred[1]}\nclipA/00001.jpg,{pred[0]}\n"
    )


def model_probabilities(checkpoint: Path, index, rows: list[int]) -> np.ndarray:
    """The trained model's probabilities for some frames, read from their JPEG files."""
    module = ExpressionModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    dataset = FaceDataset(index, build_transform(32, None))  # 32: the run's model.input_size
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in rows])
        return torch.softmax(module(images), dim=1).numpy()


def test_train_split_from_a_pack_gives_the_models_probabilities(checkpoint, tiny_sample, tmp_path):
    packed = pack(
        tmp_path / "pack",
        tiny_sample.affwild2_dir,
        size=32,
        workers=1,
        progress=False,
        index_cache_dir=tmp_path / "cache",
    )
    packed_args = ("--split", "train", "--data.packed_dir", str(packed.root))
    report = main(evaluate_args(checkpoint, tmp_path / "out", *packed_args))
    assert report["data"].startswith("Aff-Wild2 train")
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    index = read_affwild2(tiny_sample.affwild2_dir, "train", progress=False)
    assert predictions["frame"].tolist() == index.frames.tolist()
    assert predictions["target"].tolist() == index.labels.tolist()
    assert (
        sorted(predictions["video"].unique()) == tiny_sample.manifest["affwild2"]["train"]["videos"]
    )
    rows = [0, len(index) // 2, len(index) - 1]
    expected = model_probabilities(checkpoint, index, rows)
    np.testing.assert_allclose(predictions[PROBS].to_numpy()[rows], expected, atol=1e-5)


def test_train_split_from_the_data_folders_is_the_readers_index(tiny_sample, tmp_path):
    data = ExpressionDataModule(
        affwild2_dir=str(tiny_sample.affwild2_dir), index_cache_dir=str(tmp_path / "cache")
    )
    index = data.part("affwild2_train")[1]
    expected = read_affwild2(tiny_sample.affwild2_dir, "train", progress=False)
    assert index.frames.tolist() == expected.frames.tolist()
    assert index.labels.tolist() == expected.labels.tolist()
    assert index.group_names.tolist() == expected.group_names.tolist()


def test_fill_frames_by_hand():
    filled = fill_frames([2, 5, 9], np.array([10, 20, 30]), 11)
    # frame: 1   2   3   4   5   6   7 (tie: earlier)  8   9  10  11
    assert filled.tolist() == [10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30]
    assert fill_frames([3, 1], np.array([7, 6]), 3).tolist() == [6, 6, 7]
    with pytest.raises(DataError, match="frame 2 is predicted more than once"):
        fill_frames([2, 2], np.array([0, 1]), 3)
    with pytest.raises(DataError, match=r"predicted frames 1\.\.4 are not all within .* 1\.\.3"):
        fill_frames([1, 4], np.array([0, 1]), 3)


def test_log_folder_means_the_newest_versions_best_checkpoint(tmp_path):
    for version in ("version_2", "version_10"):
        (tmp_path / version / "checkpoints").mkdir(parents=True)
        (tmp_path / version / "checkpoints" / "best-step1.ckpt").touch()
        (tmp_path / version / "checkpoints" / "last.ckpt").touch()
    assert resolve_checkpoint(tmp_path) == tmp_path / "version_10/checkpoints/best-step1.ckpt"
    (tmp_path / "version_10" / "checkpoints" / "best-step2.ckpt").touch()
    with pytest.raises(ConfigError, match="expected one best-"):
        resolve_checkpoint(tmp_path)


def empty_val_split(root: Path) -> Path:
    """An Aff-Wild2 tree whose validation video has labels but no face image."""
    (root / FRAMES_DIR).mkdir(parents=True)
    write_annotation_file(annotation_dir(root, "abaw2020", "train") / "a.txt", [0, 1])
    write_annotation_file(annotation_dir(root, "abaw2020", "val") / "b.txt", [0, 4, -1])
    return root


def nested_tree(root: Path) -> Path:
    """An Aff-Wild2 tree unpacked one level too deep: cropped_aligned/cropped_aligned/<video>/."""
    for split, video in (("train", "a"), ("val", "b")):
        write_annotation_file(annotation_dir(root, "abaw2020", split) / f"{video}.txt", [0, 4])
        (root / FRAMES_DIR / FRAMES_DIR / video).mkdir(parents=True)
        (root / FRAMES_DIR / FRAMES_DIR / video / frame_file(1)).touch()
    return root


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data.num_classes", "8"], "the model was trained for 7 classes (Neutral, Anger, "),
        (["--smooth", "4"], "--smooth: the window must be 0 (off) or an odd number of frames"),
        (["--out", "{earlier}"], "holds an earlier evaluation (predictions.parquet, metrics.json"),
        (["--frames_dir", "{bad_frames}"], "face_a.jpg: not a frame file; expected 1-based"),
        (
            ["--data.affwild2_dir", "{empty}", "--data.expw_dir", "null"],
            "the val split keeps no frame: none of its 1 annotated videos (b) has an image of "
            "an annotated frame in ",
        ),
        (
            ["--data.affwild2_dir", "{nested}", "--data.expw_dir", "null"],
            "cropped_aligned/; likely cause: cropped_aligned/ holds a cropped_aligned/ folder: "
            "nested one level too deep?",
        ),
        (["--frames_dir", "[{frames}, {frames}]"], "is in two --frames_dir folders: "),
        (["--ckpt", "{missing}"], "missing.ckpt: no such file or folder; expected a checkpoint"),
        (["--ckpt", "{garbage}"], "garbage.ckpt: not a readable PyTorch checkpoint"),
        (
            ["--frames_dir", "{frames}", "--submission", "{sub}"],
            "per-video files need each test video's frame count, which the face images cannot "
            "tell (frames after the last face have no image); give --videos_dir DIR",
        ),
        (["--test_list", "{frames}"], "--test_list: only used with --submission DIR"),
        (
            ["--submission", "{sub}", "--submission_format", "single_file"],
            "--submission_format single_file: needs --test_list FILE",
        ),
        (
            ["--submission", "{sub}", "--frame_counts", "{frames}"],
            "--frame_counts: the annotation files give the frame counts of the labelled val split",
        ),
        (
            ["--smooth_kernel", "gaussian"],
            "--smooth_kernel gaussian: smoothing is off (--smooth 0)",
        ),
        # Submissions that could not be written from these faces stop before predicting them.
        (
            ["--frames_dir", "{frames}", "--submission", "{sub}", "--test_list", "{other_list}"],
            "other_list.txt: video clipZ listed but without any face image to predict; check "
            "--frames_dir holds its folder",
        ),
        (
            ["--frames_dir", "{frames}", "--submission", "{sub}", "--frame_counts", "{other}"],
            "other.csv: no frame count for video clipA of --frames_dir",
        ),
        (
            ["--frames_dir", "{frames}", "--submission", "{sub}", "--frame_counts", "{short}"],
            "short.csv: video clipA has 2 frames there but a face image of frame 3 in "
            "--frames_dir; a wrong count, or the faces of another video?",
        ),
        (
            ["--frames_dir", "{frames}", "--submission", "{sub}", "--videos_dir", "{videos}"],
            "videos: no video file for clipA (looked for clipA.mp4, clipA.avi)",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    extra, message, smoothed_run, checkpoint, tmp_path, capsys, write_jpeg
):
    test_frames = tmp_path / "test_frames"  # a valid --frames_dir: one video, faces 1 and 3
    write_jpeg(test_frames / "clipA" / frame_file(1), np.zeros((32, 32, 3), np.uint8))
    write_jpeg(test_frames / "clipA" / frame_file(3), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "other_list.txt").write_text("clipA/00001.jpg\nclipZ/00001.jpg\n")
    (tmp_path / "other.csv").write_text("video,frames\nclipZ,4\n")
    (tmp_path / "short.csv").write_text("video,frames\nclipA,2\n")
    (tmp_path / "videos").mkdir()
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    (tmp_path / "frames" / "v").mkdir(parents=True)
    (tmp_path / "frames" / "v" / "face_a.jpg").write_bytes(b"")
    paths = {
        "earlier": smoothed_run[0],
        "bad_frames": tmp_path / "frames",
        "empty": empty_val_split(tmp_path / "affwild2"),
        "nested": nested_tree(tmp_path / "nested"),
        "missing": tmp_path / "missing.ckpt",
        "garbage": garbage,
        "frames": test_frames,
        "sub": tmp_path / "sub",
        "other_list": tmp_path / "other_list.txt",
        "other": tmp_path / "other.csv",
        "short": tmp_path / "short.csv",
        "videos": tmp_path / "videos",
    }
    extra = [v.format(**paths) for v in extra]
    with pytest.raises(SystemExit) as stop:
        main([*evaluate_args(checkpoint, tmp_path / "out"), *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_unannotated_and_past_the_end_faces_are_predicted_but_not_scored(
    checkpoint, tmp_path, write_jpeg
):
    # Video v: 4 label lines (frame 2 is -1, frame 3 has no face) and faces of frames 1-6,
    # i.e. two past the annotation file's last line.
    root = tmp_path / "affwild2"
    write_annotation_file(annotation_dir(root, "abaw2020", "train") / "t.txt", [0, 1])
    write_annotation_file(annotation_dir(root, "abaw2020", "val") / "v.txt", [4, -1, 2, 4])
    rng = np.random.default_rng(0)
    for frame in (1, 2, 4, 5, 6):
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        write_jpeg(root / FRAMES_DIR / "v" / frame_file(frame), image)
    write_jpeg(root / FRAMES_DIR / "t" / frame_file(1), np.zeros((32, 32, 3), np.uint8))
    out, sub = tmp_path / "out", tmp_path / "sub"
    data = ("--data.affwild2_dir", str(root), "--data.expw_dir", "null")
    report = main(evaluate_args(checkpoint, out, *data, "--smooth", "3", "--submission", str(sub)))
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert predictions["frame"].tolist() == [1, 2, 4, 5, 6]
    assert predictions["target"].tolist() == [4, -1, 4, -1, -1]
    assert (report["frames"], report["labelled_frames"]) == (5, 2)
    assert (
        report["raw"]["support"]["Happiness"] == 2 and sum(report["raw"]["support"].values()) == 2
    )
    # The smoothed label of frame 4 averages frames 4 and 5 (5 is past the end, unannotated).
    probs = predictions[PROBS].to_numpy()
    assert predictions["pred_smoothed"][2] == (probs[2] + probs[3]).argmax()
    # The submission has the annotation file's 4 lines; the faces past its end get none.
    smoothed = predictions["pred_smoothed"].tolist()
    lines = (sub / "v.txt").read_text().splitlines()
    assert lines[1:] == [str(v) for v in (smoothed[0], smoothed[1], smoothed[1], smoothed[2])]


def test_a_damaged_frame_stops_evaluation_naming_it(checkpoint, tmp_path, capsys, write_jpeg):
    # Scores and submissions cover every face: a JPEG cut to half its bytes is not skipped.
    frames = tmp_path / "test_frames"
    for frame in (1, 2):
        write_jpeg(frames / "clipA" / frame_file(frame), np.full((32, 32, 3), 90 * frame))
    damaged = frames / "clipA" / frame_file(2)
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])

    with pytest.raises(SystemExit) as stop:
        main([*evaluate_args(checkpoint, tmp_path / "out"), "--frames_dir", str(frames)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {damaged}: truncated JPEG: no end-of-image marker FF D9")
    assert not (tmp_path / "out" / "metrics.json").exists()
