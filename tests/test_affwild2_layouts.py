"""Real Aff-Wild2 layouts through the commands: an ABAW 2023+ tree with both frame folders is
counted and packed whole; a tree unpacked one level too deep stops ``stats`` and ``pack`` before
any work, naming the folders and the likely cause; a single video without images warns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferlit.data.__main__ import main
from ferlit.data.images import load_face
from ferlit.data.pack import Pack
from ferlit.data.readers.affwild2 import (
    NEW_FRAMES_DIR,
    annotation_dir,
    frame_file,
    write_annotation_file,
)
from ferlit.data.transforms import build_transform
from ferlit.errors import DataWarning

SIZE = 16


def add(root: Path, frames_dir: str, split: str, video: str, labels: list[int], faces: set[int]):
    """One video in the abaw2024 layout, a distinct grey level per frame image."""
    write_annotation_file(annotation_dir(root, "abaw2024", split) / f"{video}.txt", labels, 8)
    if faces:
        (root / frames_dir / video).mkdir(parents=True, exist_ok=True)
    for frame in faces:
        grey = (len(video) * 40 + frame * 25) % 256
        Image.new("RGB", (SIZE, SIZE), (grey, grey, grey)).save(
            root / frames_dir / video / frame_file(frame)
        )


@pytest.fixture
def abaw2024(tmp_path: Path) -> Path:
    """Train: one video in each frame folder and one without any image; val: one in each."""
    root = tmp_path / "Aff-Wild2"
    add(root, "cropped_aligned", "train", "1-30-640x360", [0, 4, 4, -1], {1, 2, 3, 4})
    add(root, NEW_FRAMES_DIR, "train", "new_video", [7, 5, 5], {1, 3})
    for v in range(18):  # enough videos that one without images is a warning, not an error
        add(root, "cropped_aligned", "train", f"v{v:02d}", [6], {1})
    add(root, "cropped_aligned", "train", "faceless", [1, 1], set())
    add(root, "cropped_aligned", "val", "val_old", [2, 3], {1, 2})
    add(root, NEW_FRAMES_DIR, "val", "val_new", [0], {1})
    return root


def test_stats_counts_both_frame_folders_and_the_video_without_images(
    abaw2024: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["stats", "--data.affwild2_dir", str(abaw2024), "--data.num_classes", "8"]
    with pytest.warns(DataWarning, match=r"Train_Set/faceless.txt: video faceless has annotated"):
        assert main([*args, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    train = stats["splits"]["train"]["sources"]["affwild2"]
    assert train["samples"] == 3 + 2 + 18  # new_video's frames 1 and 3 are kept
    assert train["class_counts"]["Other"] == 1  # new_video frame 1
    assert train["skipped"]["no_image"] == 1 + 2  # new_video frame 2, faceless 1 and 2
    assert train["no_image_videos"] == 1
    assert stats["splits"]["val"]["samples"] == 3

    monkeypatch.setenv("COLUMNS", "120")
    with pytest.warns(DataWarning):
        assert main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "without any image" in line]
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in rows]
    assert cells == [["videos without any image", "1", ""], ["videos without any image", "0", ""]]


def test_pack_holds_the_new_folders_frames(abaw2024: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    with pytest.warns(DataWarning, match="video faceless"):
        assert main(["pack", "--data.affwild2_dir", str(abaw2024), "--out", str(out), "--data.image_size",
                     str(SIZE), "--data.num_classes", "8", "--workers", "1",
                     "--data.index_cache_dir", str(tmp_path / "cache")]) == 0  # fmt: skip
    packed = Pack.open(out)
    index = packed.index("affwild2_train")
    new = [i for i in range(len(index)) if index.group_name(i) == "new_video"]
    assert index.image_path(new[1]) == str(abaw2024 / NEW_FRAMES_DIR / "new_video/00003.jpg")
    frames = packed.frames("affwild2_train")
    resize = build_transform(SIZE, None)
    for i in new:
        assert np.array_equal(frames[i], resize(image=load_face(index, i))["image"])
    assert index.skipped["no_image_videos"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parts"]["affwild2_val"]["samples"] == 3


def nested(root: Path) -> Path:
    """The frames archive unpacked into a folder of its own name (seen in entrants' paths)."""
    for split, video in (("train", "a"), ("val", "b")):
        write_annotation_file(annotation_dir(root, "abaw2020", split) / f"{video}.txt", [0, 4])
        inner = root / "cropped_aligned/cropped_aligned" / video
        inner.mkdir(parents=True)
        Image.new("RGB", (SIZE, SIZE)).save(inner / frame_file(1))
    return root


@pytest.mark.parametrize("command", ["stats", "pack"])
def test_a_nested_tree_stops_stats_and_pack_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = nested(tmp_path / "Aff-Wild2")
    args = [command, "--data.affwild2_dir", str(root)]
    if command == "pack":
        args += ["--out", str(tmp_path / "pack"), "--data.index_cache_dir", str(tmp_path / "cache")]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: {root}/annotations/EXPR_Set/Training_Set: the train split keeps no frame: none "
        f"of its 1 annotated videos (a) has an image of an annotated frame in {root}/"
        "cropped_aligned/; likely cause: cropped_aligned/ holds a cropped_aligned/ folder: "
        f"nested one level too deep? (move its video folders up to {root}/cropped_aligned/); or "
        "no video folder matches an annotation file name (<video>.txt needs a frame folder "
        "<video>/; 1 video folder found, e.g. cropped_aligned)\n"
    )
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.partial").exists()


def test_a_nested_tree_stops_fit_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ferlit.training.cli import main as fit

    root = nested(tmp_path / "Aff-Wild2")
    with pytest.raises(SystemExit) as stop:
        fit(
            [
                *("--data.affwild2_dir", str(root), "--data.index_cache_dir", str(tmp_path / "c")),
                *("--model.backbone", "seresnet18", "--model.input_size", "32"),
                *("--trainer.accelerator", "cpu", "--trainer.max_steps", "1"),
                *("--trainer.default_root_dir", str(tmp_path / "runs")),
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: {root}/annotations/EXPR_Set/Training_Set: the train split ")
    assert "likely cause: cropped_aligned/ holds a cropped_aligned/ folder: nested one" in err
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_the_command_prints_the_warning_as_one_line(abaw2024: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferlit.data", "stats", "--data.affwild2_dir", str(abaw2024)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    annotations = annotation_dir(abaw2024, "abaw2024", "train")
    assert done.stderr == (
        f"warning: {annotations}/faceless.txt: video faceless has annotated frames but no image "
        f"of any of them in {abaw2024}/cropped_aligned/ and {abaw2024}/{NEW_FRAMES_DIR}/ (a video "
        "in which the face detector found no face?); its frames are skipped\n"
    )
    assert "videos without any image" in done.stdout
