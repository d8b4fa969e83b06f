"""Outputs (issue 13): ferlit replaces only the files it wrote itself (listed in each output
folder's ``.ferlit-outputs.json``), never a file of the user's nor the data being read; every file
is written whole or not at all (``ferlit.io.atomic_write``); a pack killed at its last step is
finished, not thrown away."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ferlit.data.pack as packed
from ferlit.data.__main__ import main as data_main
from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.pack import Pack, pack
from ferlit.data.readers.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.data.sample import write_sample_data
from ferlit.data.stats import plot_stats
from ferlit.errors import ConfigError, DataError, DataWarning
from ferlit.evaluation.evaluate import check_destinations
from ferlit.evaluation.evaluate import main as evaluate_main
from ferlit.evaluation.submission import write_single_file, write_submission
from ferlit.evaluation.writer import write_outputs
from ferlit.io import OUTPUTS_MANIFEST, atomic_write, outputs_written, write_json


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a byte-for-byte comparison needs."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.fixture
def affwild2_copy(tiny_sample, tmp_path) -> Path:
    """A private copy of the tiny sample's Aff-Wild2, so a bug could not spoil the shared one."""
    return Path(shutil.copytree(tiny_sample.affwild2_dir, tmp_path / "Aff-Wild2"))


@pytest.fixture
def model(tmp_path, train_and_save) -> Path:
    checkpoint = tmp_path / "model.ckpt"
    train_and_save(checkpoint)
    return checkpoint


def evaluate_argv(checkpoint: Path, out: Path, affwild2: Path, *extra: str) -> list[str]:
    return [
        *("--ckpt", str(checkpoint), "--out", str(out), "--data.affwild2_dir", str(affwild2)),
        *("--data.expw_dir", "null", "--data.num_workers", "0"),
        *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *extra,
    ]


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        evaluate_main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_the_annotation_folder_as_submission_is_refused_even_with_overwrite(
    affwild2_copy, model, tmp_path, capsys
):
    annotations = annotation_dir(affwild2_copy, "abaw2020", "val")
    before = contents(affwild2_copy)
    argv = evaluate_argv(model, tmp_path / "eval", affwild2_copy)
    err = refused([*argv, "--submission", str(annotations), "--overwrite"], capsys)
    assert err == (
        f"error: --submission {annotations}: is inside --data.affwild2_dir {affwild2_copy}, data "
        "being read; outputs go in a folder apart from the data\n"
    )
    assert contents(affwild2_copy) == before  # the ground truth, byte for byte
    assert not (tmp_path / "eval").exists()  # refused before anything was written


def test_a_copy_of_annotation_files_elsewhere_is_not_replaced_either(
    affwild2_copy, model, tmp_path, capsys
):
    """The same fault where the folder is not one being read: its .txt files are the user's."""
    labels = Path(
        shutil.copytree(annotation_dir(affwild2_copy, "abaw2020", "val"), tmp_path / "gt")
    )
    before = contents(labels)
    first = sorted(before)[0]
    argv = evaluate_argv(model, tmp_path / "eval", affwild2_copy)
    err = refused([*argv, "--submission", str(labels), "--overwrite"], capsys)
    assert err.startswith(
        f"error: --submission {labels}: {labels / first} (and {len(before) - 1} more) was not "
        f"written by ferlit (not listed in {OUTPUTS_MANIFEST}) and would be replaced; ferlit "
        "never replaces or deletes a file of yours, even with --overwrite"
    )
    assert contents(labels) == before


def test_out_holding_a_users_own_metrics_json_is_refused(affwild2_copy, model, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": "hand-computed scores"}\n')
    argv = evaluate_argv(model, out, affwild2_copy, "--overwrite")
    err = refused(argv, capsys)
    assert f"--out {out}: {out / 'metrics.json'} was not written by ferlit" in err
    assert (out / "metrics.json").read_text() == '{"mine": "hand-computed scores"}\n'


def test_out_inside_the_data_folder_is_refused(affwild2_copy, model, capsys):
    out = affwild2_copy / "eval"
    err = refused(evaluate_argv(model, out, affwild2_copy), capsys)
    assert err == (
        f"error: --out {out}: is inside --data.affwild2_dir {affwild2_copy}, data being read; "
        "outputs go in a folder apart from the data\n"
    )
    assert not out.exists()


def test_out_that_is_a_file_or_contains_the_data_is_refused(tmp_path):
    data = tmp_path / "data" / "Aff-Wild2"
    data.mkdir(parents=True)
    reads = [("--data.affwild2_dir", data), ("--frames_dir", None)]
    afile = tmp_path / "evalfile"
    afile.write_text("mine")
    with pytest.raises(ConfigError) as caught:
        check_destinations(afile, None, True, reads)
    assert str(caught.value) == f"--out {afile}: is a file; expected a folder for ferlit's outputs"
    with pytest.raises(ConfigError) as caught:
        check_destinations(tmp_path / "out", tmp_path / "data", True, reads)
    assert str(caught.value) == (
        f"--submission {tmp_path / 'data'}: contains --data.affwild2_dir {data}, data being read; "
        "outputs go in a folder apart from the data"
    )
    link = tmp_path / "link"
    link.symlink_to(data)  # the same folder by another name
    with pytest.raises(ConfigError, match=r"link: is --data.affwild2_dir .*Aff-Wild2, data being"):
        check_destinations(link, None, True, reads)
    assert afile.read_text() == "mine"


def test_a_submission_replaces_its_own_files_and_refuses_a_users(tmp_path):
    folder = tmp_path / "sub"
    write_submission(folder, ["a", "a"], [1, 2], [3, 4], 7, {"a": 2})
    assert outputs_written(folder) == {"a.txt"}
    write_submission(folder, ["a"], [1], [5], 7, {"a": 2})  # ferlit's own: replaced
    assert (folder / "a.txt").read_text().splitlines()[1:] == ["5", "5"]
    write_annotation_file(folder / "b.txt", [0, 1])  # the user's, in the same folder
    with pytest.raises(ConfigError, match=r"b\.txt: was not written by ferlit"):
        write_submission(folder, ["b"], [1], [2], 7, {"b": 2})
    assert (folder / "b.txt").read_text().splitlines()[1:] == ["0", "1"]


def test_a_damaged_outputs_list_is_refused(tmp_path):
    (tmp_path / OUTPUTS_MANIFEST).write_text("[1, 2]")
    with pytest.raises(ConfigError) as caught:
        outputs_written(tmp_path)
    assert str(caught.value) == (
        f'{tmp_path / OUTPUTS_MANIFEST}: damaged, expected {{"files": [<name>, ...]}}; ferlit '
        "cannot tell which files in this folder it wrote: choose another folder"
    )


def test_stats_plot_replaces_its_own_plot_but_not_a_users_file(tmp_path, capsys):
    counts = {"class_counts": {"Neutral": 3, "Anger": 1}, "samples": 4}
    stats = {"splits": {"train": {**counts, "sources": {"affwild2": counts}}}}
    plot = tmp_path / "dist.png"
    plot_stats(stats, plot)
    plot_stats(stats, plot, log=True)  # ferlit's own plot: replaced
    assert plot.read_bytes().startswith(b"\x89PNG")
    mine = tmp_path / "figure1.png"
    mine.write_bytes(b"the user's figure")
    assert data_main(["stats", "--plot", str(mine)]) == 2
    assert capsys.readouterr().err == (
        f"error: --plot {mine}: exists and was not written by ferlit (not listed in "
        f"{tmp_path / OUTPUTS_MANIFEST}); ferlit never replaces a file of yours: choose another "
        "name\n"
    )
    assert mine.read_bytes() == b"the user's figure"


# -- every writer: whole or not at all ---------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch):
    """Every sync but that of ferlit's list of its outputs fails as on a full disk: a write fails
    after its bytes went to the temporary file, with the list already naming the file."""
    real_fsync = os.fsync

    def fsync(fd):
        if f".{OUTPUTS_MANIFEST}." in os.readlink(f"/proc/self/fd/{fd}"):
            return real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, full_disk):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(OSError, match="No space left"), atomic_write(path, "w") as file:
        file.write("new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def _evaluation(out: Path, sample) -> None:
    frame = pd.DataFrame({"video": ["a"], "frame": [1], "target": [-1], "pred": [0]})
    write_outputs(out, frame, {"raw": None}, ("Neutral",), ("pred",), overwrite=False)


def _index(out: Path, sample) -> None:
    read_affwild2(sample.affwild2_dir, "val", 7).save(out / "index.npz")


def _single_file(out: Path, sample) -> None:
    (out.parent / "test_list.txt").write_text("image_location\nv/00001.jpg\n")
    write_single_file(out / "predictions.txt", out.parent / "test_list.txt", ["v"], [1], [2])


VAL = {"class_counts": {"Neutral": 1}, "samples": 1}  # a stats split (dataset_stats)
WRITERS = {
    "evaluation": _evaluation,
    "per-video submission": lambda out, _: write_submission(out, ["v"], [1], [2], 7, {"v": 3}),
    "single-file submission": _single_file,
    "stats plot": lambda out, _: plot_stats(
        {"splits": {"val": {**VAL, "sources": {"affwild2": VAL}}}}, out / "plot.png"
    ),
    "index": _index,
    "pack record": lambda out, _: write_json(out / "progress.json", {"expw": [0]}),
    "sample data": lambda out, _: write_sample_data(out / "sample", scale=0.05, progress=False),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_failed_write_leaves_no_temporary_file(writer, tiny_sample, tmp_path, full_disk):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises((OSError, ConfigError)):
        WRITERS[writer](out, tiny_sample)
    assert temporaries(tmp_path) == []
    if writer == "sample data":  # its images are written first; the manifest marks it whole
        assert not (out / "sample" / "manifest.json").exists()
        return
    written = [p.name for p in out.rglob("*") if p.is_file() and p.name != OUTPUTS_MANIFEST]
    assert written == []  # nothing half-written under the final names either


# -- a pack killed at its last step ------------------------------------------------------------


def test_a_pack_killed_before_its_final_rename_is_finished(tiny_sample, tmp_path, monkeypatch):
    out = tmp_path / "pack"
    options = dict(size=16, workers=0, progress=False, index_cache_dir=tmp_path / "cache")

    def killed(partial, out):
        raise KeyboardInterrupt  # the manifest is written: the pack is complete in .partial

    monkeypatch.setattr(packed, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        pack(out, tiny_sample.affwild2_dir, **options)
    monkeypatch.undo()
    partial = tmp_path / "pack.partial"
    assert (partial / "manifest.json").is_file() and not out.exists()

    with pytest.raises(DataError) as caught:
        ExpressionDataModule(packed_dir=str(out), image_size=16).pack  # noqa: B018
    assert str(caught.value) == (
        f"{out}: the pack is complete in {partial} but was not renamed into place (interrupted "
        f"at its last step); run python -m ferlit.data pack with --out {out} and the same "
        "options again to finish it"
    )

    (partial / "plan.json").unlink()  # killed inside the last step: one record already gone
    with pytest.warns(DataWarning) as warned:
        finished = pack(out, tiny_sample.affwild2_dir, **options)
    assert str(warned[0].message) == (
        f"{partial}: the pack was complete but not yet renamed (interrupted at its last step); "
        f"renamed it to {out}"
    )
    assert finished.root == out and not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "affwild2_train",
        "affwild2_val",
        "manifest.json",
    ]
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    frames = Pack.open(out).frames("affwild2_val")
    assert frames.shape[1:] == (16, 16, 3) and np.asarray(frames).any()  # the faces, kept


def test_pack_inside_the_data_it_packs_is_refused(tiny_sample):
    out = tiny_sample.affwild2_dir / "pack"
    with pytest.raises(ConfigError) as caught:
        pack(out, tiny_sample.affwild2_dir, size=16, workers=0, progress=False)
    assert str(caught.value) == (
        f"--out {out}: is inside --data.affwild2_dir {tiny_sample.affwild2_dir}, data being read; "
        "outputs go in a folder apart from the data"
    )
    assert not out.exists() and not out.with_name("pack.partial").exists()


def test_pack_over_a_users_folder_is_refused_and_leaves_it(tiny_sample, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(DataError, match=r"mine: exists and is not a ferlit pack; choose another"):
        pack(out, tiny_sample.affwild2_dir, size=16, workers=0, progress=False)
    assert contents(out) == {"notes.txt": b"my notes"}


def test_a_second_run_without_logger_into_the_same_folder_is_refused(tiny_sample, tmp_path, capsys):
    """No version folders without a logger: Lightning's own refusal to replace config.yaml was a
    raw RuntimeError once the data was set up; now ferlit's error before training starts."""
    from ferlit.training.cli import main as fit_main

    root = tmp_path / "run"
    root.mkdir()
    (root / "config.yaml").write_text("seed_everything: 0  # the earlier run's\n")
    argv = ["--trainer.logger", "false", "--trainer.default_root_dir", str(root)]
    argv += ["--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--data.expw_dir", "null"]
    with pytest.raises(SystemExit) as stop:
        fit_main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: --trainer.logger false: the run's config goes to trainer.default_root_dir "
        f"{root} itself (no version_N folders without a logger), which holds an earlier run's "
        f"{root / 'config.yaml'}; give another --trainer.default_root_dir, or keep a logger "
        "(each run in a version_N folder of its own)\n"
    )
    assert (root / "config.yaml").read_text() == "seed_everything: 0  # the earlier run's\n"
    assert sorted(p.name for p in root.iterdir()) == ["config.yaml"]  # nothing else written
