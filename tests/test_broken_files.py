"""Broken files and folders given to the commands: each ends in ferlit's own ``error: <message>``
naming the path and what was expected (exit status 2), found before the long work starts; never
a raw traceback (issue 13, "Raw tracebacks")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ferlit.data.stats as stats
from ferlit.data.__main__ import main as data_main
from ferlit.errors import ConfigError
from ferlit.evaluation.evaluate import check_destinations
from ferlit.evaluation.evaluate import main as evaluate_main

FORMATS = (
    ".avif, .eps, .gif, .jpeg, .jpg, .pdf, .pgf, .png, .ps, .raw, .rgba, .svg, .svgz, .tif, "
    ".tiff, .webp"
)


@pytest.fixture
def no_indexing(monkeypatch):
    """A stats run that would start counting fails the test: the checks come first."""

    def fail(*args, **kwargs):
        raise AssertionError("the data were indexed before the --plot path was checked")

    monkeypatch.setattr(stats, "dataset_stats", fail)


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("missing/classes.png", "--plot {tmp}/missing/classes.png: the folder {tmp}/missing "
         "does not exist; create it first"),
        ("notes.txt/classes.png", "--plot {tmp}/notes.txt/classes.png: the folder "
         "{tmp}/notes.txt is not a folder; create it first"),
        ("classes.bmp", "--plot {tmp}/classes.bmp: format '.bmp'; expected a file name ending "
         f"in one of {FORMATS}"),
        ("classes", f"--plot {{tmp}}/classes: no suffix; expected a file name ending in one of "
         f"{FORMATS}"),
        ("folder.png", "--plot {tmp}/folder.png: is a folder; expected the plot's file name"),
    ],
)  # fmt: skip
def test_stats_plot_path_is_checked_before_indexing(
    plot, message, tmp_path, capsys, no_indexing, tiny_sample
):
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "folder.png").mkdir()
    argv = [
        "stats",
        "--data.affwild2_dir",
        str(tiny_sample.affwild2_dir),
        "--plot",
        str(tmp_path / plot),
    ]
    assert data_main(argv) == 2
    assert capsys.readouterr().err == f"error: {message.format(tmp=tmp_path)}\n"


def test_plot_stats_checks_its_path_too(tmp_path):
    with pytest.raises(ConfigError, match=r"plot path .*/x.docx: format '.docx'; expected a"):
        stats.plot_stats({"splits": {}}, tmp_path / "x.docx")


@pytest.mark.parametrize("which", ["--out", "--submission"])
def test_an_output_folder_below_a_file_is_refused_before_predicting(which, tmp_path):
    blocker = tmp_path / "results.csv"
    blocker.write_text("a user's file")
    out, submission = tmp_path / "eval", tmp_path / "sub"
    target = blocker / "eval"
    if which == "--out":
        out = target
    else:
        submission = target
    with pytest.raises(ConfigError) as caught:
        check_destinations(out, submission, overwrite=False)
    assert str(caught.value) == (
        f"{which} {target}: {blocker} is a file, so the folder cannot be made there; "
        "choose another folder"
    )
    assert blocker.read_text() == "a user's file"


def test_an_output_folder_that_is_a_dangling_link_is_refused(tmp_path):
    link = tmp_path / "eval"
    link.symlink_to(tmp_path / "unmounted" / "eval")
    with pytest.raises(ConfigError) as caught:
        check_destinations(link, None, overwrite=False)
    assert str(caught.value) == (
        f"--out {link}: a link to {tmp_path / 'unmounted' / 'eval'}, which does not exist; "
        "choose another folder"
    )


def test_a_read_only_output_folder_is_refused(tmp_path, monkeypatch):
    import ferlit.evaluation.evaluate

    parent = tmp_path / "shared"
    parent.mkdir()
    real_access = ferlit.evaluation.evaluate.os.access

    def access(path, mode):  # tests run as root, for whom chmod 0o555 denies nothing
        return False if Path(path) == parent else real_access(path, mode)

    monkeypatch.setattr(ferlit.evaluation.evaluate.os, "access", access)
    with pytest.raises(ConfigError) as caught:
        check_destinations(parent / "a" / "b", None, overwrite=False)
    assert str(caught.value) == (
        f"--out {parent / 'a' / 'b'}: {parent} is not writable; choose another folder"
    )


def test_evaluate_out_below_a_file_stops_before_reading_data(
    tiny_sample, tmp_path, capsys, monkeypatch, train_and_save
):
    from ferlit.data.datamodule import ExpressionDataModule

    checkpoint = tmp_path / "model.ckpt"
    train_and_save(checkpoint)

    def fail(*args, **kwargs):
        raise AssertionError("the split was read before --out was checked")

    monkeypatch.setattr(ExpressionDataModule, "predict_index", fail)
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["--ckpt", str(checkpoint), "--out", str(blocker / "eval")]
    argv += ["--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--data.num_workers", "0"]
    argv += ["--trainer.accelerator", "cpu"]
    with pytest.raises(SystemExit) as stop:
        evaluate_main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --out {blocker / 'eval'}: {blocker} is a file, so the folder cannot be made "
        "there; choose another folder\n"
    )


def test_a_sample_data_folder_that_is_a_file_is_named(tmp_path, monkeypatch):
    from ferlit.data.sample import ensure_sample_data
    from ferlit.errors import DataError

    blocker = tmp_path / "sample"
    blocker.write_text("a user's file")
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(blocker))
    with pytest.raises(DataError) as caught:
        ensure_sample_data(progress=False)
    assert str(caught.value) == (
        f"{blocker} (the sample data folder, FERLIT_SAMPLE_DIR): is a file; expected a folder "
        "for the sample data (set FERLIT_SAMPLE_DIR to another folder, or give the data folders)"
    )
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(blocker / "sample"))  # below a file
    with pytest.raises(DataError) as caught:
        ensure_sample_data(progress=False)
    assert str(caught.value) == (
        f"{blocker}: {blocker} is a file, so the folder cannot be made (the sample data (the "
        "sample data folder, FERLIT_SAMPLE_DIR) is written into it)"
    )
    assert blocker.read_text() == "a user's file"


def test_a_sample_data_folder_not_writable_is_named(tmp_path, monkeypatch):
    import ferlit.data.sample.write as sample_write
    from ferlit.errors import DataError

    def denied(*args, **kwargs):  # tests run as root, for whom chmod 0o555 denies nothing
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sample_write.tempfile, "mkdtemp", denied)
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tmp_path / "sample"))
    with pytest.raises(DataError) as caught:
        sample_write.ensure_sample_data(progress=False)
    assert str(caught.value) == (
        f"{tmp_path / 'sample'} (the sample data folder, FERLIT_SAMPLE_DIR): cannot be written "
        f"(Permission denied in {tmp_path}); set FERLIT_SAMPLE_DIR to a writable folder, or give "
        "the data folders"
    )
    assert list(tmp_path.iterdir()) == []


def test_synth_out_below_a_file_and_a_damaged_sample_manifest(tmp_path, capsys):
    blocker = tmp_path / "notes"
    blocker.write_text("")
    assert data_main(["synth", "--out", str(blocker / "data")]) == 2
    assert capsys.readouterr().err == (
        f"error: {blocker / 'data'}: {blocker} is a file, so the folder cannot be made (sample "
        "data needs a new or empty folder it can write)\n"
    )
    from ferlit.data.sample import SampleData
    from ferlit.errors import DataError

    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"manifest.json: a JSON list, expected an object; "):
        SampleData.open(tmp_path)


def test_fit_names_a_sample_data_folder_that_is_a_file(tmp_path, monkeypatch, capsys):
    from ferlit.training.cli import main as fit_main

    blocker = tmp_path / "sample"
    blocker.write_text("")
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(blocker))
    argv = ["--trainer.accelerator", "cpu", "--trainer.max_steps", "1", "--data.num_workers", "0"]
    argv += ["--trainer.default_root_dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as stop:
        fit_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"error: {blocker} (the sample data folder, FERLIT_SAMPLE_DIR): is a file; expected a "
        "folder for the sample data (set FERLIT_SAMPLE_DIR to another folder, or give the data "
        "folders)"
    )
    assert "Traceback" not in err


WEIGHTS_FORMATS = ".pkl (VGGFace2 PyTorch port), .pth/.pt/.ckpt (torch state dict), .safetensors"


def weights_error(path) -> str:
    import timm

    from ferlit.errors import WeightsError
    from ferlit.models import load_vggface2_weights

    model = timm.create_model("legacy_seresnet18", layers=(1, 1, 1, 1), num_classes=7)
    with pytest.raises(WeightsError) as caught:
        load_vggface2_weights(model, path)
    return str(caught.value)


def test_a_safetensors_header_that_lies_is_named(tmp_path):
    import struct

    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"conv1.weight": torch.zeros(3)}, path)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    for lie in (10**9, 2**63, 3):  # longer than the file, absurd, shorter than the header
        path.write_bytes(struct.pack("<Q", lie) + raw[8:])
        assert weights_error(path).startswith(
            f"{path}: safetensors failed (corrupt, truncated or not a weights file; "
            "SafetensorError: Error while deserializing header: "
        )
    header = raw[8 : 8 + length].replace(b"[0,12]", b"[0,99]")  # data past the end
    path.write_bytes(raw[:8] + header + raw[8 + length :])
    assert "SafetensorError: Error while deserializing header" in weights_error(path)
    path.write_bytes(raw[:-4])  # truncated tensor data
    assert weights_error(path).endswith(f"expected {WEIGHTS_FORMATS}")


@pytest.mark.parametrize(
    ("stored", "found"),
    [([1.0, 2.0], "list"), ((), "tuple"), ({}, "dict"), (7, "int")],
)
def test_a_pth_that_is_not_a_dict_of_tensors_is_named(tmp_path, stored, found):
    import torch

    path = tmp_path / "w.pth"
    torch.save(stored, path)
    assert weights_error(path) == (
        f"{path}: expected a non-empty dict of name -> tensor (or one under 'state_dict' or "
        f"'model'), got {found}"
    )


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01", "EOFError"),  # truncated
        (b"\x80\x02h\xde.", "UnpicklingError: Memo value not found at index 222"),
        (b"\x80\x02a.", "IndexError: pop from empty list"),  # an append onto an empty stack
        (b"\x80\x02J\x01\x02", "struct.error: unpack requires a buffer of 4 bytes"),  # cut short
    ],
)
def test_a_damaged_pkl_is_named(tmp_path, content, kind):
    path = tmp_path / "senet50_ft_weight.pkl"
    path.write_bytes(content)
    message = weights_error(path)
    assert message.startswith(
        f"{path}: unpickle failed (corrupt, truncated or not a weights file; {kind}"
    )
    assert message.endswith(f"); expected {WEIGHTS_FORMATS}")


def test_an_empty_or_folder_weights_file_is_named(tmp_path):
    for name in ("w.pkl", "w.pth", "w.safetensors"):
        (tmp_path / name).write_bytes(b"")
        assert weights_error(tmp_path / name) == (
            f"{tmp_path / name}: empty file (0 bytes); expected {WEIGHTS_FORMATS}"
        )
    (tmp_path / "folder.pth").mkdir()
    assert weights_error(tmp_path / "folder.pth") == (
        f"{tmp_path / 'folder.pth'}: is a folder; expected a weights file, {WEIGHTS_FORMATS}"
    )


def test_weights_and_checkpoints_that_are_fifos_or_dangling_links_are_named(tmp_path):
    from ferlit.training.runs import resolve_checkpoint

    os.mkfifo(tmp_path / "w.pth")  # opened, it would block the load forever
    assert weights_error(tmp_path / "w.pth") == (
        f"{tmp_path / 'w.pth'}: is a FIFO (named pipe); expected a weights file"
    )  # was "no such weights file"
    (tmp_path / "w.pkl").symlink_to(tmp_path / "usb" / "w.pkl")
    assert weights_error(tmp_path / "w.pkl") == (
        f"{tmp_path / 'w.pkl'}: is a link to {tmp_path / 'usb' / 'w.pkl'}, which does not exist; "
        "expected a weights file"
    )
    os.mkfifo(tmp_path / "best.ckpt")
    with pytest.raises(ConfigError) as error:
        resolve_checkpoint(tmp_path / "best.ckpt")
    assert str(error.value) == (
        f"--ckpt_path {tmp_path / 'best.ckpt'}: is a FIFO (named pipe); expected a checkpoint file"
    )


@pytest.fixture
def no_pack_indexing(monkeypatch):
    from ferlit.data.datamodule import ExpressionDataModule

    def fail(*args, **kwargs):
        raise AssertionError("the data were indexed before --out was checked")

    monkeypatch.setattr(ExpressionDataModule, "part", fail)  # pack indexes through it


def test_pack_out_that_cannot_be_made_is_refused_before_indexing(
    tiny_sample, tmp_path, capsys, no_pack_indexing
):
    blocker = tmp_path / "notes"
    blocker.write_text("")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mine.txt").write_text("")
    argv = ["pack", "--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--out"]
    assert data_main([*argv, str(blocker / "pack")]) == 2
    assert capsys.readouterr().err == (
        f"error: --out {blocker / 'pack'}: {blocker} is a file, so the folder cannot be made "
        "there; choose another folder\n"
    )
    for taken in (blocker, tmp_path / "old"):
        assert data_main([*argv, str(taken)]) == 2
        assert capsys.readouterr().err == (
            f"error: {taken}: exists and is not a ferlit pack; choose another --out\n"
        )
    assert blocker.read_text() == "" and (tmp_path / "old" / "mine.txt").exists()


def test_a_full_disk_while_packing_is_named_and_resumable(
    tiny_sample, tmp_path, capsys, monkeypatch
):
    import ferlit.data.pack as packed

    real_pwrite = packed.os.pwrite

    def pwrite(fd, data, position):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packed.os, "pwrite", pwrite)
    out = tmp_path / "pack"
    argv = [
        "pack",
        "--data.expw_dir",
        str(tiny_sample.expw_dir),
        "--out",
        str(out),
        "--data.image_size",
        "8",
    ]
    argv += ["--workers", "0", "--data.index_cache", "false"]
    assert data_main(argv) == 2
    frames = tmp_path / "pack.partial" / "expw" / "frames.npy"
    assert capsys.readouterr().err == (
        f"error: {frames}: cannot write the packed faces (No space left on device); the chunks "
        "done so far are kept: free space (or fix the folder) and pack again with the same "
        "options to resume\n"
    )
    monkeypatch.setattr(packed.os, "pwrite", real_pwrite)
    assert data_main(argv) == 0  # resumed
    assert (out / "manifest.json").is_file() and not frames.parent.parent.exists()


def test_an_unforeseen_os_error_in_a_data_command_is_one_line(tmp_path, capsys, monkeypatch):
    import ferlit.data.__main__ as data_cli

    def vanished(*args, **kwargs):  # e.g. a network file system dropping a file meanwhile
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone.jpg"))

    monkeypatch.setattr(data_cli, "write_sample_data", vanished)
    assert data_main(["synth", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'gone.jpg'}: No such file or directory\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "-1"], "--workers must be >= 0 and --batch_size positive"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--work_dir", "{tmp}/notes"], "--work_dir {tmp}/notes: is a file; expected a folder"),
        (
            ["--work_dir", "{tmp}/notes/bench"],
            "--work_dir {tmp}/notes/bench: {tmp}/notes is a file, so the folder cannot be made "
            "there; choose another folder",
        ),
        (
            ["--json", "{tmp}/missing/figures.json"],
            "--json {tmp}/missing/figures.json: the folder {tmp}/missing does not exist; create "
            "it first",
        ),
        (["--json", "{tmp}"], "--json {tmp}: is a folder; expected a file name"),
    ],
)
def test_bench_options_and_destinations_are_checked_before_measuring(
    args, message, tmp_path, capsys, monkeypatch
):
    import bench as bench

    def fail(*args, **kwargs):
        raise AssertionError("measuring started before the options were checked")

    monkeypatch.setattr(bench, "bench_loaders", fail)
    (tmp_path / "notes").write_text("")
    assert bench.main(["--quick", *(a.format(tmp=tmp_path) for a in args)]) == 2
    assert capsys.readouterr().err == f"error: {message.format(tmp=tmp_path)}\n"
    assert (tmp_path / "notes").read_text() == ""


def test_fit_names_a_config_file_that_is_not_text(tmp_path, capsys):
    from ferlit.training.cli import main as fit_main

    config = tmp_path / "run.yaml"
    config.write_bytes(b"\xff\xfe\x00m\x00o\x00d\x00e\x00l\x00:")  # saved as UTF-16 by an editor
    with pytest.raises(SystemExit) as stop:
        fit_main(["--config", str(config), "--trainer.accelerator", "cpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"error: --config {config}: not UTF-8 text (invalid start byte at byte 0); expected a "
        "YAML file of options"
    )
    assert "Traceback" not in err


@pytest.mark.parametrize("reader", ["read_test_list", "read_frame_counts"])
def test_submission_lists_that_are_folders_or_unreadable_are_named(reader, tmp_path, monkeypatch):
    import ferlit.evaluation.submission as submission
    from ferlit.errors import DataError

    read = getattr(submission, reader)
    option = "--test_list" if reader == "read_test_list" else "--frame_counts"
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == f"{tmp_path}: {option} cannot be read (Is a directory)"
    listed = tmp_path / "list.txt"
    listed.write_text("video\n")

    def denied(self):  # tests run as root, for whom chmod 000 denies nothing
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(submission.Path, "read_bytes", denied)
    with pytest.raises(DataError) as caught:
        read(listed)
    assert str(caught.value) == f"{listed}: {option} cannot be read (Permission denied)"


def permission_denied_for(monkeypatch, module, name, matches):
    """``module.name`` (os.scandir, Path.read_bytes) raises PermissionError for paths that
    ``matches``: tests run as root, for whom chmod denies nothing."""
    real = getattr(module, name)

    def guarded(*args, **kwargs):
        path = str(args[0]) if args else "."
        if matches(path):
            raise PermissionError(13, "Permission denied", path)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, guarded)


def test_unreadable_annotation_folder_and_files_are_named_by_stats(
    tiny_sample, capsys, monkeypatch
):
    import os

    train = tiny_sample.affwild2_dir / "annotations" / "EXPR_Set" / "Training_Set"
    argv = ["stats", "--data.affwild2_dir", str(tiny_sample.affwild2_dir)]
    with monkeypatch.context() as m:
        permission_denied_for(m, os, "scandir", lambda p: p == str(train))
        assert data_main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: {train}: cannot be listed (Permission denied); ferlit needs to read the train "
        "annotation files in it\n"
    )
    first = sorted(train.iterdir())[0]
    with monkeypatch.context() as m:
        permission_denied_for(m, Path, "read_bytes", lambda p: p == str(first))
        assert data_main(argv) == 2
    assert capsys.readouterr().err == f"error: {first}: cannot be read (Permission denied)\n"


def test_unreadable_annotation_folder_through_the_index_cache(tiny_sample, tmp_path, monkeypatch):
    import os

    from ferlit.data.cache import cached_index
    from ferlit.data.readers.affwild2 import AffWild2Reader
    from ferlit.errors import DataError

    val = tiny_sample.affwild2_dir / "annotations" / "EXPR_Set" / "Validation_Set"
    permission_denied_for(monkeypatch, os, "scandir", lambda p: p == str(val))
    with pytest.raises(DataError, match=r"Validation_Set: cannot be listed \(Permission denied\)"):
        cached_index(
            AffWild2Reader(tiny_sample.affwild2_dir), "val", progress=False, cache_dir=tmp_path
        )
    assert list(tmp_path.iterdir()) == []  # nothing cached of a read that failed


def test_unreadable_expw_label_list_is_named(tiny_sample, tmp_path, capsys, monkeypatch):
    label = tiny_sample.expw_dir / "label" / "label.lst"
    permission_denied_for(monkeypatch, Path, "read_bytes", lambda p: p == str(label))
    assert data_main(["stats", "--data.expw_dir", str(tiny_sample.expw_dir)]) == 2
    assert capsys.readouterr().err == f"error: {label}: cannot be read (Permission denied)\n"


def test_check_names_a_folder_it_cannot_list(tiny_sample, capsys, monkeypatch):
    import os

    video = sorted((tiny_sample.affwild2_dir / "cropped_aligned").iterdir())[0]
    permission_denied_for(monkeypatch, os, "scandir", lambda p: p == str(video))
    argv = ["check", "--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--workers", "1"]
    assert data_main(argv) == 2  # not "none damaged" over the frames it could list
    assert capsys.readouterr().err == (
        f"error: {video}: cannot be listed (Permission denied); check needs to read every "
        "folder of the data set\n"
    )


def test_an_unforeseen_os_error_in_evaluate_is_one_line(tmp_path, capsys, monkeypatch):
    import ferlit.cli

    def full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "eval" / "predictions.csv"))

    monkeypatch.setattr(ferlit.cli, "predict", full)
    with pytest.raises(SystemExit) as stop:
        evaluate_main([])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'eval' / 'predictions.csv'}: No space left on device\n"
    )
