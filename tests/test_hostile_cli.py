"""What a new user or an attacker types at the stages' command lines: option prefixes, broken
``config:`` parents, readers that fail on import or read nothing, options for another stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.trainer.states import TrainerFn

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.readers.base import create_reader
from ferlit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_an_option_prefix_is_refused_by_every_command(tmp_path, capsys):
    """argparse took a unique prefix for the option: ``--trainer.max_step 3`` trained 3 steps."""
    from bench import main as bench

    from ferlit.cli import main as stage
    from ferlit.data.__main__ import main as data
    from ferlit.training.cli import main as fit

    with pytest.raises(SystemExit) as stop:
        fit(["--trainer.max_step", "3"], run=False)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "run: python -m ferlit fit --help\n" in err
    assert err.endswith("error: unrecognized arguments: --trainer.max_step 3\n")
    # one usage line, not every option's (~120 lines above the error)
    assert err.splitlines()[-3:-1] == [
        "usage: python -m ferlit fit [options]",
        "tip: For details of accepted options run: python -m ferlit fit --help",
    ]
    assert err.count("usage:") == 1 and "--trainer.accelerator" not in err
    with pytest.raises(SystemExit) as stop:
        stage(["validate", "--ckpt_path", str(tmp_path), "--data.num_work", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --data.num_work 0\n")
    with pytest.raises(SystemExit) as stop:
        data(["check", "--data.affwild2", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: unrecognized arguments: --data.affwild2 {tmp_path}\n"
    )
    with pytest.raises(SystemExit) as stop:
        bench(["--work_d", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: unrecognized arguments: --work_d {tmp_path}\n")
    with pytest.raises(SystemExit) as stop:
        stage(["export", "--ckpt", str(tmp_path), "--format", "onnx", "--out", "m.onnx"])
    assert stop.value.code == 2
    assert f"error: unrecognized arguments: --ckpt {tmp_path}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("parent", "read"),
    [("3", "3"), ("[parent.yaml]", "['parent.yaml']"), ("{model: x}", "{'model': 'x'}")],
)
def test_a_config_parent_that_is_not_one_path_is_refused_naming_the_file(
    tmp_path, capsys, parent, read
):
    """jsonargparse ignored a list of parents silently and ended in a traceback on a number."""
    from ferlit.training.cli import main as fit

    (tmp_path / "parent.yaml").write_text("config: other.yaml\n")
    (tmp_path / "other.yaml").write_text(f"config: {parent}\n")
    (tmp_path / "exp.yaml").write_text("config: parent.yaml\ntrainer.max_steps: 3\n")
    with pytest.raises(SystemExit) as stop:
        fit(["--config", str(tmp_path / "exp.yaml")], run=False)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}/other.yaml: config: {read}: expected the path of one parent "
        "experiment file (relative to this file), e.g. config: cafarelli2020.yaml\n"
    )


def test_a_loop_of_parents_is_refused(tmp_path, capsys):
    from ferlit.training.cli import main as fit

    (tmp_path / "a.yaml").write_text("config: b.yaml\n")
    (tmp_path / "b.yaml").write_text("config: a.yaml\n")
    with pytest.raises(SystemExit) as stop:
        fit(["--config", str(tmp_path / "a.yaml")], run=False)
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: Config file loop detected: {tmp_path}/a.yaml -> b.yaml -> a.yaml\n"
    )


@pytest.mark.parametrize(
    ("name", "source", "raised"),
    [
        ("ferlit_rt_raises", 'import os\n\nraise RuntimeError("no licence")\n', "RuntimeError at"),
        ("ferlit_rt_syntax", "def f(:\n", "SyntaxError at"),
    ],
)
def test_a_reader_module_that_fails_on_import_is_named_with_its_line(
    tmp_path, monkeypatch, name, source, raised
):
    """It was a traceback (only ImportError was a message)."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as refused:
        create_reader(f"{name}:Faces", tmp_path, option="data.train_sources[0]")
    where = {"ferlit_rt_raises": "3: no licence", "ferlit_rt_syntax": "1: invalid syntax"}[name]
    assert str(refused.value).startswith(
        f"data.train_sources[0].reader: importing {name!r} for reader '{name}:Faces' raised "
        f"{raised} {tmp_path / name}.py:{where}"
    )


def test_a_train_sources_root_that_does_not_exist_is_refused_before_reading(tmp_path):
    missing = tmp_path / "no such folder"
    with pytest.raises(ConfigError) as refused:
        ExpressionDataModule("/nowhere", train_sources=[{"reader": "expw", "root": str(missing)}])
    assert str(refused.value) == f"data.train_sources[0].root {missing}: no such file or folder"


def test_predict_options_are_refused_by_fit_and_validate_naming_the_stage(tmp_path):
    """Lightning passes the stage as TrainerFn: the message said 'TrainerFn.FITTING reads'."""
    with pytest.raises(ConfigError) as refused:
        ExpressionDataModule("/nowhere", frames_dir=str(tmp_path)).setup(TrainerFn.VALIDATING)
    assert "for predict only; validate reads the Aff-Wild2 splits" in str(refused.value)
    on_train = ExpressionDataModule("/nowhere", predict_split="train")
    for stage, name in ((TrainerFn.FITTING, "fit"), (TrainerFn.VALIDATING, "validate")):
        with pytest.raises(ConfigError) as refused:
            on_train.setup(stage)
        assert str(refused.value) == (
            f"data.predict_split train: the split predict reads; {name} validates on Aff-Wild2 "
            "val (leave data.predict_split unset)"
        )


def test_predict_split_with_frames_dir_is_refused(tmp_path):
    """predict reads the frames given: the split would be accepted and ignored."""
    with pytest.raises(ConfigError) as refused:
        ExpressionDataModule("/nowhere", frames_dir=str(tmp_path), predict_split="train")
    assert str(refused.value) == (
        "data.predict_split train: predict reads data.frames_dir, not an Aff-Wild2 split; give "
        "one of the two"
    )


def test_data_tools_read_an_experiment_without_lightnings_warning(
    recwarn, capsys, monkeypatch, tiny_sample
):
    """``--config`` is read by fit's parser, which warned that it got args and sys.argv both."""
    from ferlit.data.__main__ import main as data

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("ferlit.data.sample.ensure_sample_data", lambda progress: tiny_sample)
    assert data(["stats", "--config", "experiments/cafarelli2020.yaml"]) == 0  # no data in it
    assert capsys.readouterr().err.startswith("No data given: counting ferlit's sample data")
    assert not [w for w in recwarn if "args parameter is intended" in str(w.message)]


def test_predict_smooth_auto_on_a_frames_folder(tiny_sample, train_and_save, tmp_path, capsys):
    """Two predict loaders (the frames, then Aff-Wild2 val to choose the window on): Lightning
    stopped with a RuntimeError, predict_step having no dataloader_idx."""
    import pandas as pd

    from ferlit.cli import main

    checkpoint = tmp_path / "model.ckpt"
    train_and_save(checkpoint)
    out = tmp_path / "eval"
    main(
        [
            *("predict", "--ckpt_path", str(checkpoint), "--out", str(out), "--smooth", "auto"),
            *("--data.affwild2_dir", str(tiny_sample.affwild2_dir)),
            *("--data.frames_dir", str(tiny_sample.affwild2_dir), "--data.num_workers", "0"),
            *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        ]
    )
    printed = capsys.readouterr().out
    assert "--smooth auto: " in printed and "the best criterion on the validation split" in printed
    frames = sorted((tiny_sample.affwild2_dir / "cropped_aligned").rglob("*.jpg"))
    assert len(pd.read_parquet(out / "predictions.parquet")) == len(frames)


def test_validate_elsewhere_says_the_data_folder_came_from_the_checkpoint(
    train_and_save, tmp_path, capsys
):
    """On another machine the error named a folder the user never typed."""
    import torch

    from ferlit.cli import main

    checkpoint = tmp_path / "model.ckpt"
    train_and_save(checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    gone = tmp_path / "cluster" / "Aff-Wild2"
    state["datamodule_hyper_parameters"] = {"affwild2_dir": str(gone)}
    torch.save(state, checkpoint)
    common = ("validate", "--ckpt_path", str(checkpoint), "--trainer.accelerator", "cpu")
    with pytest.raises(SystemExit) as stop:
        main([*common])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"note: data.affwild2_dir {gone} (the checkpoint's: the data it was trained on) does not "
        "exist here; give --data.affwild2_dir FOLDER to read it elsewhere\n"
    ) in err
    assert err.endswith(f"error: {gone}: Aff-Wild2 folder does not exist\n")
    with pytest.raises(SystemExit):
        main([*common, "--data.affwild2_dir", str(tmp_path / "here")])
    err = capsys.readouterr().err
    assert "note:" not in err and err.endswith(
        f"{tmp_path}/here: Aff-Wild2 folder does not exist\n"
    )


LISTY_READER = """
from ferlit.data.readers.base import Reader


class Listy(Reader):
    name = "listy"

    def index(self, split="train", progress=True):
        return [("face.jpg", 1)]
"""


def test_a_reader_whose_index_is_no_frame_index_is_refused_naming_it(tmp_path, monkeypatch):
    """It was an AttributeError traceback ('list' object has no attribute 'num_classes')."""
    (tmp_path / "ferlit_rt_listy.py").write_text(LISTY_READER)
    monkeypatch.syspath_prepend(str(tmp_path))
    dm = ExpressionDataModule(
        "/nowhere",
        train_sources=[{"reader": "ferlit_rt_listy:Listy", "root": str(tmp_path)}],
        index_cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(ConfigError) as refused:
        dm.part("listy")
    assert str(refused.value) == (
        f"{tmp_path}: part listy (reader listy): its index() returned list; expected a "
        "FrameIndex (ferlit.data.index.FrameIndex.build)"
    )
