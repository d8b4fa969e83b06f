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


def test_a_negative_last_every_n_steps(tiny_sample, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path, "--checkpoint.last_every_n_steps", "-1"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: checkpoint.last_every_n_steps must be 0 or a positive integer, got -1" in err
    assert "Traceback" not in err
