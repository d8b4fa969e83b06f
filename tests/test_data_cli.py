"""``python -m ferlit.data synth|stats``: the numbers, tables, plots and errors users see."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ferlit.data.__main__ import main
from ferlit.data.readers.affwild2 import annotation_dir, frame_file, write_annotation_file
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, write_label_list
from ferlit.data.stats import stats_figure

REASONS = (
    "unannotated",
    "no_image",
    "other",
    "duplicate",
    "low_confidence",
    "box_outside_image",
    "empty_box",
    "not_a_file",
)
CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


def counts(*values: int, classes: tuple[str, ...] = CLASSES) -> dict[str, int]:
    return dict(zip(classes, values, strict=True))


def skipped(**values: int) -> dict[str, int]:
    return {reason: values.get(reason, 0) for reason in REASONS}


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """Two train videos and one val video (with -1 lines and frames without an image), and
    three ExpW faces in two images plus a duplicate line."""
    affwild2, expw = tmp_path / "affwild2", tmp_path / "expw"
    videos = {
        ("train", "a"): ([0, 0, 4, 4, -1, 1], {6}),
        ("train", "b"): ([2, 3, 5, 6, 0, -1, -1], set()),
        ("val", "c"): ([6, 6, 0, -1], {1}),
    }
    for (split, video), (labels, missing) in videos.items():
        write_annotation_file(annotation_dir(affwild2, "abaw2020", split) / f"{video}.txt", labels)
        folder = affwild2 / "cropped_aligned" / video
        folder.mkdir(parents=True)
        for frame in set(range(1, len(labels) + 1)) - missing:
            Image.new("RGB", (8, 8)).save(folder / frame_file(frame))
    (expw / IMAGES_DIR).mkdir(parents=True)
    for name in ("one.jpg", "two.jpg"):
        Image.new("RGB", (40, 40)).save(expw / IMAGES_DIR / name)
    faces = [
        ExpWFace("one.jpg", 0, 0, 0, 20, 20, 90.0, 0),  # angry
        ExpWFace("one.jpg", 1, 20, 20, 40, 40, 30.0, 6),  # neutral, low confidence
        ExpWFace("two.jpg", 0, 5, 5, 30, 30, 70.5, 3),  # happy
    ]
    write_label_list(expw / LABEL_FILE, [*faces, faces[2]])
    return affwild2, expw


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["stats", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_json(tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    affwild2, expw = tiny
    stats = run_json(capsys, "--data.affwild2_dir", str(affwild2), "--data.expw_dir", str(expw))
    aw_train = {
        "samples": 9,
        "class_counts": counts(3, 0, 1, 1, 2, 1, 1),
        "skipped": skipped(unannotated=3, no_image=1),
        "no_image_videos": 0,
    }
    expw_train = {
        "samples": 3,
        "class_counts": counts(1, 1, 0, 0, 1, 0, 0),
        "skipped": skipped(duplicate=1),
        "box_clipped": 0,
        "box_padded": 0,
    }
    val = {
        "samples": 2,
        "class_counts": counts(1, 0, 0, 0, 0, 0, 1),
        "skipped": skipped(unannotated=1, no_image=1),
        "no_image_videos": 0,
    }
    assert stats == {
        "num_classes": 7,
        "classes": list(CLASSES),
        "splits": {
            "train": {
                "samples": 12,
                "class_counts": counts(4, 1, 1, 1, 3, 1, 1),
                "skipped": skipped(unannotated=3, no_image=1, duplicate=1),
                "no_image_videos": 0,
                "box_clipped": 0,
                "box_padded": 0,
                "sources": {"affwild2": aw_train, "expw": expw_train},
            },
            "val": {**val, "sources": {"affwild2": val}},
        },
        "class_weights": counts(1.0, 4.0, 4.0, 4.0, 4 / 3, 4.0, 4.0),
        "videos_in_both_splits": [],  # the challenge's splits are disjoint by video
    }


def test_stats_json_options(tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    affwild2, expw = tiny
    confident = run_json(capsys, "--data.expw_dir", str(expw), "--data.expw_min_confidence", "50")
    assert list(confident["splits"]) == ["train"]
    assert confident["splits"]["train"]["sources"]["expw"] == {
        "samples": 2,
        "class_counts": counts(0, 1, 0, 0, 1, 0, 0),
        "skipped": skipped(duplicate=1, low_confidence=1),
        "box_clipped": 0,
        "box_padded": 0,
    }
    assert confident["class_weights"] is None  # no Neutral, Disgust, ... to weight
    eight = run_json(capsys, "--data.affwild2_dir", str(affwild2), "--data.num_classes", "8")
    assert eight["classes"][-1] == "Other" and eight["class_weights"] is None
    assert eight["splits"]["val"]["class_counts"] == counts(
        1, 0, 0, 0, 0, 0, 1, 0, classes=(*CLASSES, "Other")
    )


def table_row(out: str, label: str) -> list[str]:
    """The cells of the first table row that starts with ``label``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_stats_table(
    tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    affwild2, expw = tiny
    assert main(["stats", "--data.affwild2_dir", str(affwild2), "--data.expw_dir", str(expw)]) == 0
    out = capsys.readouterr().out
    assert "train (Aff-Wild2 train + ExpW)" in out and "val (Aff-Wild2 val)" in out
    assert table_row(out, "") == ["", "Aff-Wild2", "ExpW", "total", "share", "class weight"]
    assert table_row(out, "Happiness") == ["Happiness", "2", "1", "3", "25.0%", "1.33"]
    assert table_row(out, "kept") == ["kept", "9", "3", "12", "100.0%", ""]
    assert table_row(out, "skipped: duplicate line") == [
        "skipped: duplicate line",
        "0",
        "1",
        "1",
        "",
        "",
    ]
    assert table_row(out, "skipped: unannotated (-1)")[1:4] == ["3", "0", "3"]


def test_stats_table_without_weights(
    tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    affwild2, _ = tiny
    assert main(["stats", "--data.affwild2_dir", str(affwild2), "--data.num_classes", "8"]) == 0
    out = capsys.readouterr().out
    assert "class weights: undefined, no training sample of Anger, Other" in out


@pytest.mark.parametrize(("log", "panels"), [(False, 2), (True, 1)])
def test_stats_plot(
    tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str], log: bool, panels: int
) -> None:
    affwild2, expw = tiny
    plot = affwild2.parent / "classes.png"
    args = ["--data.expw_dir", str(expw), "--plot", str(plot)]
    args += ["--log"] if log else ["--data.affwild2_dir", str(affwild2)]
    assert main(["stats", *args]) == 0
    assert f"Class distribution plotted to {plot}" in capsys.readouterr().out
    with Image.open(plot) as image:
        assert image.format == "PNG"
        assert image.size == (660 * panels, 504)  # 5.5 x 4.2 inches per panel at 120 dpi


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert main(["stats", "--data.affwild2_dir", str(missing)]) == 2
    assert (
        capsys.readouterr().err == f"error: --data.affwild2_dir {missing}: folder does not exist\n"
    )


def test_stats_without_folders_counts_the_sample_data_and_says_so(
    tiny_sample, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As fit does with no data configured: the sample data (FERLIT_SAMPLE_DIR), named; the
    small copy stands for the full-size one ``ensure_sample_data`` would write."""
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tiny_sample.root))
    monkeypatch.setattr("ferlit.data.sample.ensure_sample_data", lambda progress: tiny_sample)
    assert main(["stats", "--json"]) == 0
    out, err = capsys.readouterr()
    stats = json.loads(out)
    assert f"No data given: counting ferlit's sample data at {tiny_sample.root}" in " ".join(
        err.split()
    )
    assert stats["sample_data"] == str(tiny_sample.root)
    manifest = tiny_sample.manifest
    assert stats["splits"]["val"]["samples"] == manifest["affwild2"]["val"]["samples"]
    assert stats["splits"]["train"]["sources"]["expw"]["samples"] == manifest["expw"]["samples"]
    figure = stats_figure(stats)
    assert figure.axes[0].get_title().endswith("- ferlit sample data (drawn faces)")


def test_stats_titles_name_the_sources_given(tiny, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    affwild2, expw = tiny
    assert main(["stats", "--data.affwild2_dir", str(affwild2)]) == 0
    out = capsys.readouterr().out
    assert "train (Aff-Wild2 train)" in out and "ExpW" not in out
    stats = run_json(capsys, "--data.expw_dir", str(expw))
    assert [ax.get_title() for ax in stats_figure(stats).axes] == ["train (ExpW): 3 samples"]


def test_stats_plot_splits_train_by_source_with_shares(tiny, capsys) -> None:
    affwild2, expw = tiny
    stats = run_json(capsys, "--data.affwild2_dir", str(affwild2), "--data.expw_dir", str(expw))
    train, val = stats_figure(stats).axes
    assert train.get_title() == "train (Aff-Wild2 train + ExpW): 12 samples"
    assert val.get_title() == "val (Aff-Wild2 val): 2 samples"
    assert [t.get_text() for t in train.get_legend().get_texts()] == [
        "Aff-Wild2: 9",
        "ExpW: 3",
    ]
    affwild2_bars, expw_bars = train.containers[:2]
    happiness = CLASSES.index("Happiness")
    # 2 Aff-Wild2 frames, 1 ExpW face on top of them: 3 of 12 = 25.0% (test_stats_table's row)
    assert affwild2_bars[happiness].get_height() == 2
    assert (expw_bars[happiness].get_y(), expw_bars[happiness].get_height()) == (2, 1)
    labels = [t.get_text() for t in train.texts]
    assert labels[happiness] == "3\n25.0%"
    assert val.get_legend() is None


def test_missing_folder_from_the_shell(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [sys.executable, "-m", "ferlit.data", "stats", "--data.expw_dir", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"error: --data.expw_dir {missing}: folder does not exist\n"


def test_bad_annotation_line(tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    affwild2, _ = tiny
    path = annotation_dir(affwild2, "abaw2020", "train") / "b.txt"
    path.write_text(path.read_text().replace("\n3\n", "\nthree\n"))
    assert main(["stats", "--data.affwild2_dir", str(affwild2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:3: 'three' is not an integer")
    assert "Traceback" not in err


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["stats", "--data.num_classes", "9"])
    assert exit_info.value.code == 2


def test_synth_then_stats_agree_with_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sample"
    assert main(["synth", "--out", str(out), "--scale", "0.05", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"Sample data written to {out}" in printed
    assert "Aff-Wild2 train: 3 videos" in printed and "ExpW: 15 images" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3
    stats = run_json(
        capsys, "--data.affwild2_dir", str(out / "affwild2"), "--data.expw_dir", str(out / "expw")
    )
    keys = ("samples", "class_counts", "skipped")
    for split, source, entry in (
        ("train", "affwild2", manifest["affwild2"]["train"]),
        ("train", "expw", manifest["expw"]),
        ("val", "affwild2", manifest["affwild2"]["val"]),
    ):
        found = stats["splits"][split]["sources"][source]
        assert {k: found[k] for k in keys} == {k: entry[k] for k in keys}
    train = stats["splits"]["train"]["class_counts"]
    assert stats["class_weights"] == {c: max(train.values()) / n for c, n in train.items()}

    assert main(["synth", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {out}: exists and is not an empty folder; sample data needs a new one\n"
    )


@pytest.fixture
def damaged(tiny: tuple[Path, Path]) -> tuple[Path, Path, list[str]]:
    """The tiny trees with one Aff-Wild2 frame cut in half, one empty and one ExpW image that is
    not an image; returns the trees and the expected ``check`` lines."""
    affwild2, expw = tiny
    frame = affwild2 / "cropped_aligned/a/00002.jpg"
    data = frame.read_bytes()
    frame.write_bytes(data[: len(data) // 2])
    empty = affwild2 / "cropped_aligned/b/00001.jpg"
    empty.write_bytes(b"")
    text = expw / IMAGES_DIR / "notes.png"
    text.write_text("not an image")
    lines = [
        f"{frame}: truncated JPEG: no end-of-image marker FF D9 at its end "
        f"({len(data) // 2:,} bytes; the file was cut short)",
        f"{empty}: empty file (0 bytes)",
        f"{text}: cannot read image (not a decodable image)",
    ]
    return affwild2, expw, lines


def test_check_lists_damaged_images_and_exits_1(damaged, capsys) -> None:
    affwild2, expw, lines = damaged
    assert main(["check", "--data.affwild2_dir", str(affwild2), "--data.expw_dir", str(expw)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:-1] == lines
    # 15 frames (a: 5, b: 7, c: 3) and 3 files in ExpW
    assert out[-1] == f"Checked 18 images in {affwild2}, {expw}: 3 damaged (listed above)"


@pytest.mark.parametrize("size", ["0", "100000"])
def test_pack_refuses_a_face_size_out_of_range_before_indexing(tiny, tmp_path, capsys, size):
    affwild2, _ = tiny
    out = tmp_path / "pack"
    assert (
        main(
            [
                "pack",
                "--data.affwild2_dir",
                str(affwild2),
                "--out",
                str(out),
                "--data.image_size",
                size,
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        f"error: --data.image_size must be an integer in [1, 1024], got {size}\n"
    )  # 100000 made a memory map of 30 GB per face ("error: Cannot allocate memory")
    assert not out.exists() and not (tmp_path / "pack.partial").exists()


@pytest.mark.parametrize("command", ["check", "pack"])
def test_a_worker_count_that_would_fork_the_machine_down_is_refused(
    tiny, tmp_path, capsys, command
):
    affwild2, _ = tiny
    out = ["--out", str(tmp_path / "pack")] if command == "pack" else []
    assert main([command, "--data.affwild2_dir", str(affwild2), *out, "--workers", "100000"]) == 2
    cores = os.cpu_count()
    assert capsys.readouterr().err == (
        f"error: --workers 100000: more than 8 worker processes per core (this machine has "
        f"{cores}); expected at most {8 * cores}\n"
    )


def test_pack_names_a_damaged_frame_read_by_its_worker(damaged, tmp_path, capsys) -> None:
    affwild2, _, lines = damaged
    argv = ["pack", "--data.affwild2_dir", str(affwild2), "--out", str(tmp_path / "pack")]
    assert main([*argv, "--workers", "1"]) == 2
    annotation = annotation_dir(affwild2, "abaw2020", "train") / "a.txt"
    # torch's "Caught ImageError in ..." wrapper is gone; the class name says nothing to a user
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {lines[0]}; sample from {annotation}:3 (raised in DataLoader worker process 0)"
    )


@pytest.mark.parametrize(
    "command, option",
    [
        ("stats", ["--data.expw_box_overflow", "pad"]),
        ("stats", ["--data.expw_min_confidence", "0.5"]),
        ("pack", ["--data.expw_box_overflow", "clip"]),
        ("pack", ["--data.expw_margin", "0.2"]),
    ],
)
def test_expw_options_without_expw_are_refused(tiny, tmp_path, capsys, command, option) -> None:
    affwild2, _ = tiny
    out = ["--out", str(tmp_path / "pack")] if command == "pack" else []
    assert main([command, "--data.affwild2_dir", str(affwild2), *out, *option]) == 2
    assert capsys.readouterr().err == (
        f"error: {option[0]}: only used with --data.expw_dir (no ExpW folder given)\n"
    )
    assert not (tmp_path / "pack").exists()


def test_check_passes_over_hidden_files_the_readers_skip(tiny: tuple[Path, Path], capsys) -> None:
    """macOS leaves an undecodable AppleDouble ._<name> beside every file it copies to a foreign
    disk; a hidden folder (.Trash) likewise holds nothing ferlit reads."""
    affwild2, _ = tiny
    (affwild2 / "cropped_aligned/a/._00001.jpg").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (affwild2 / "cropped_aligned/.Trashes").mkdir()
    (affwild2 / "cropped_aligned/.Trashes/00001.jpg").write_bytes(b"")

    assert main(["check", "--data.affwild2_dir", str(affwild2), "--workers", "1"]) == 0
    assert capsys.readouterr().out == (
        f"Checked 15 images in {affwild2}: none damaged; 2 hidden files or folders (names "
        "starting with '.', e.g. macOS ._ copies) passed over\n"
    )


def test_check_of_sound_images_exits_0(tiny: tuple[Path, Path], capsys) -> None:
    affwild2, expw = tiny
    assert main(["check", "--data.expw_dir", str(expw), "--workers", "2"]) == 0
    assert capsys.readouterr().out == f"Checked 2 images in {expw}: none damaged\n"
    assert main(["check"]) == 2
    assert (
        "error: check needs --data.affwild2_dir and/or --data.expw_dir" in capsys.readouterr().err
    )
    assert main(["check", "--data.expw_dir", str(expw / "label")]) == 2
    assert capsys.readouterr().err == (
        f"error: --data.expw_dir {expw / 'label'}: no image files (.jpg, .jpeg, .png) in it\n"
    )


def test_stats_and_pack_count_boxes_past_the_edge(tiny: tuple[Path, Path], tmp_path, capsys):
    _, expw = tiny  # one.jpg and two.jpg are 40x40
    faces = [
        ExpWFace("one.jpg", 0, 0, 0, 20, 20, 90.0, 0),
        ExpWFace("one.jpg", 1, 20, 30, 55, 41, 90.0, 6),  # right by 15 px, bottom by 1 px
        ExpWFace("two.jpg", 0, 5, 40, 60, 30, 90.0, 3),  # starts at the right edge: outside
        ExpWFace("two.jpg", 1, 10, 10, 10, 30, 90.0, 3),  # left == right: empty
    ]
    write_label_list(expw / LABEL_FILE, faces)
    entry = run_json(capsys, "--data.expw_dir", str(expw))["splits"]["train"]["sources"]["expw"]
    assert entry["samples"] == 2 and entry["skipped"]["box_outside_image"] == 1
    assert entry["skipped"]["empty_box"] == 1
    assert (entry["box_clipped"], entry["box_padded"]) == (1, 0)
    padded = run_json(capsys, "--data.expw_dir", str(expw), "--data.expw_box_overflow", "pad")
    assert padded["splits"]["train"]["sources"]["expw"]["box_padded"] == 1

    assert main(["stats", "--data.expw_dir", str(expw)]) == 0
    out = capsys.readouterr().out
    assert table_row(out, "of which box clipped to the image")[1:] == ["1", ""]
    assert table_row(out, "skipped: box outside its image")[1] == "1"
    assert table_row(out, "skipped: empty box")[1] == "1"

    out_dir = tmp_path / "pack"
    args = ["pack", "--data.expw_dir", str(expw), "--out", str(out_dir), "--data.image_size", "8"]
    assert (
        main(
            [
                *args,
                "--workers",
                "1",
                "--data.expw_box_overflow",
                "pad",
                "--data.index_cache",
                "false",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "ExpW boxes past the image edge padded: 1; skipped with no pixel in their image: 1, "
        "empty: 1" in printed
    )
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["expw_box_overflow"] == "pad"
    assert manifest["parts"]["expw"]["box_padded"] == 1
    assert manifest["parts"]["expw"]["skipped"]["box_outside_image"] == 1
    assert manifest["parts"]["expw"]["skipped"]["empty_box"] == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["--affwild2-dir", "x"], "--data.affwild2_dir"),
        (["--expw-dir=x"], "--data.expw_dir"),
        (["--size", "64"], "--data.image_size"),
        (["--num-classes", "8"], "--data.num_classes"),
        (["--no-index-cache"], "--data.index_cache false"),
        (["--index-cache-dir", "x"], "--data.index_cache_dir"),
        (["--expw-margin", "0.1"], "--data.expw_margin"),
    ],
)
def test_old_spellings_are_refused_naming_the_new_one(tmp_path, capsys, old, new) -> None:
    assert main(["pack", "--out", str(tmp_path / "pack"), *old]) == 2
    assert capsys.readouterr().err == f"error: {old[0].split('=')[0]}: now {new}\n"
    assert not (tmp_path / "pack").exists()


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("stats", "--data.batch_size"),
        ("stats", "--data.image_size"),
        ("check", "--data.num_classes"),
        ("pack", "--data.augment"),
    ],
)
def test_a_data_option_the_command_does_not_use_is_refused(tiny, capsys, command, option) -> None:
    affwild2, _ = tiny
    assert main([command, "--data.affwild2_dir", str(affwild2), option, "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {option}: not used by {command}, which takes --data.affwild2_dir"
    )


def test_every_option_of_every_command_has_a_help_line(capsys) -> None:
    from ferlit.data.__main__ import build_parser

    commands = build_parser()._subcommands_action._name_parser_map
    assert sorted(commands) == ["check", "pack", "stats", "synth"]
    for name, parser in commands.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        shown = capsys.readouterr().out
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:  # jsonargparse's hidden --print_shtab
                continue
            for option in action.option_strings:
                assert option in shown, (name, option)
            words = (action.help or "").split()
            assert len(words) >= 3, f"{name} {action.option_strings}: help {action.help!r}"


def test_config_takes_the_data_section_of_an_experiment_file(tiny, tmp_path, capsys) -> None:
    """experiments/sample.yaml: its data: section (num_classes 7, and batch_size, num_workers
    which concern training and are passed over), model.input_size (64) as the pack's
    data.image_size, its other sections passed over; options after --config override it."""
    affwild2, _ = tiny
    sample = Path(__file__).resolve().parents[1] / "experiments" / "sample.yaml"
    args = ["--config", str(sample), "--data.affwild2_dir", str(affwild2)]
    stats = run_json(capsys, *args, "--data.num_classes", "8")
    assert stats["num_classes"] == 8
    out = tmp_path / "pack"
    assert main(["pack", *args, "--out", str(out), "--workers", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["image_size"], manifest["num_classes"]) == (64, 7)


def test_config_with_a_key_that_is_no_data_option_is_refused(tiny, tmp_path, capsys) -> None:
    """The experiment file is read by fit's parser: what fit refuses is refused, status 2."""
    affwild2, _ = tiny
    experiment = tmp_path / "mine.yaml"
    experiment.write_text("model:\n  input_size: 64\ndata:\n  num_classes: 7\n  imgae_size: 64\n")
    with pytest.raises(SystemExit) as stop:
        main(["stats", "--config", str(experiment), "--data.affwild2_dir", str(affwild2)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "imgae_size" in err and "Traceback" not in err
    assert main(["stats", "--config", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: --config {tmp_path}: is a folder; expected an experiment YAML file\n"
    )
    assert main(["stats", "--config", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"error: --config {tmp_path / 'none.yaml'}: no such file; expected an experiment YAML "
        "file\n"
    )
