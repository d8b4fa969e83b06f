"""README "Bad input" rows that no other test produced: each message as the table quotes it."""

from __future__ import annotations

import pytest

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.readers.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.errors import ConfigError, DataError
from ferlit.training.cli import main
from tests.test_fit import fit_args


def test_a_video_frame_folder_that_is_a_file(tmp_path):
    write_annotation_file(annotation_dir(tmp_path, "abaw2020", "train") / "video1.txt", [0, 1])
    (tmp_path / "cropped_aligned").mkdir()
    (tmp_path / "cropped_aligned" / "video1").write_text("not frames")
    with pytest.raises(
        DataError, match=r"cropped_aligned/video1: not a folder; expected the video's frames"
    ):
        read_affwild2(tmp_path, "train")


def test_no_training_data(tiny_sample):
    data = ExpressionDataModule(
        affwild2_dir=str(tiny_sample.affwild2_dir), use_affwild2_train=False
    )
    with pytest.raises(
        ConfigError,
        match=r"^no training data: data.use_affwild2_train is false and data.expw_dir is not set$",
    ):
        data.train_index  # noqa: B018


def test_fit_with_only_frames_dir_names_it_not_use_affwild2_train(tmp_path, capsys, monkeypatch):
    """No data folder but data.frames_dir: the sample data is off, and the refusal said
    'data.use_affwild2_train is false', an option the user never set (README "Bad input")."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["--data.frames_dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        "error: no training data: data.affwild2_dir and data.expw_dir are not set, and with "
        "data.frames_dir set (unlabelled faces, for predict only) ferlit's sample data is not "
        "used either; leave data.frames_dir unset, or give the data folders"
    ) in err
    assert "use_affwild2_train" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder left


def test_a_negative_last_every_n_steps(tiny_sample, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path, "--checkpoint.last_every_n_steps", "-1"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: checkpoint.last_every_n_steps must be 0 or a positive integer, got -1" in err
    assert "Traceback" not in err
