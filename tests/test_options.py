"""Option values (issue 13): every out-of-range, NaN or infinite value is a ConfigError naming
the option and what was expected, printed as ``error: ...`` with exit status 2, before any data
is read; never a traceback from Lightning, torch or numpy."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.errors import ConfigError
from ferlit.training.cli import main
from ferlit.training.module import ExpressionModule
from tests.test_evaluate import checkpoint, evaluate_args  # noqa: F401 (a fixture)
from tests.test_fit import fit_args

REFUSED = [
    # the examples
    (
        ["--trainer.accumulate_grad_batches", "0"],
        "trainer.accumulate_grad_batches must be an integer >= 1, got 0",
    ),
    (["--data.num_workers", "-1"], "data.num_workers must be an integer >= 0, got -1"),
    (["--data.hflip", "2"], "data.hflip must be a finite number in [0, 1], got 2.0"),
    (["--seed_everything", "-1"], "seed_everything must be an integer in [0, 4294967295], got -1"),
    (
        ["--trainer.enable_checkpointing", "false"],
        "trainer.enable_checkpointing false: ferlit's runs checkpoint through checkpoint.*",
    ),
    (
        ["--data.class_weighting", "[1, .nan, 1, 1, 1, 1, 1]"],
        "data.class_weighting[1] (Anger) must be a finite number > 0, got nan",
    ),
    (
        ["--data.augment_strength", ".inf"],
        "data.augment_strength must be a finite number >= 0, got inf",
    ),
    # more of each kind
    (["--data.brightness", "-0.5"], "data.brightness must be a finite number >= 0, got -0.5"),
    (["--data.hue", "0.9"], "data.hue must be a finite number in [0, 0.5], got 0.9"),
    (["--data.val_batch_size", "0"], "data.val_batch_size must be an integer >= 1, got 0"),
    (["--data.seed", "-3"], "data.seed must be an integer >= 0, got -3"),
    (["--data.expw_margin", ".nan"], "data.expw_margin must be a finite number >= 0, got nan"),
    (
        ["--data.augment_strength", ".nan"],
        "data.augment_strength must be a finite number >= 0, got nan",
    ),
    (["--seed_everything", "4294967296"], "seed_everything must be an integer in [0, 4294967295]"),
    (["--trainer.max_epochs", "-5"], "trainer.max_epochs must be an integer >= -1, got -5"),
    (["--trainer.num_nodes", "0"], "trainer.num_nodes must be an integer >= 1, got 0"),
    (
        ["--trainer.limit_train_batches", "-1"],
        "trainer.limit_train_batches must be a finite number >= 0, got -1",
    ),
    (
        ["--trainer.limit_val_batches", "1.5"],
        "trainer.limit_val_batches must be a fraction in [0, 1] of the batches or a whole number of batches, got 1.5",
    ),
    (
        ["--trainer.gradient_clip_val", ".nan"],
        "trainer.gradient_clip_val must be a finite number >= 0, got nan",
    ),
    (["--model.lr_head", ".nan"], "model.lr_head must be a finite number >= 0, got nan"),
    (["--model.lr_backbone", ".inf"], "model.lr_backbone must be a finite number >= 0, got inf"),
    (["--model.momentum", "-1"], "model.momentum must be a finite number >= 0, got -1.0"),
    (["--model.momentum", "1.0"], "model.momentum must be a finite number in [0, 1), got 1.0"),
    (["--model.weight_decay", "-0.1"], "model.weight_decay must be a finite number >= 0, got -0.1"),
]


@pytest.mark.parametrize(("extra", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_option_values_fail_before_any_data_is_read(
    tmp_path, monkeypatch, capsys, extra, message
):
    sample_dir = tmp_path / "sample"
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(sample_dir))
    with pytest.raises(SystemExit) as stop:
        main(["--trainer.logger", "false", *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err
    assert "Traceback" not in err
    assert not sample_dir.exists()  # nothing was read (the sample data would be written first)


def test_a_nan_in_a_config_file_is_refused_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tmp_path / "sample"))
    config = tmp_path / "run.yaml"
    config.write_text("data:\n  class_weighting: [1, 1, 1, 1, 1, 1, .inf]\n")
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(config), "--trainer.logger", "false"])
    assert stop.value.code == 2
    assert "data.class_weighting[6] (Surprise) must be a finite number > 0, got inf" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 2.5}, "data.batch_size must be an integer >= 1, got 2.5"),
        ({"batch_size": True}, "data.batch_size must be an integer >= 1, got True"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0, got -1"),
        (
            {"num_workers": 100_000},  # a typo that would fork until the node stops answering
            "data.num_workers 100000: more than 8 worker processes per core (this machine has "
            f"{os.cpu_count()}); expected at most {8 * os.cpu_count()}",
        ),
        ({"contrast": math.nan}, "data.contrast must be a finite number >= 0, got nan"),
        ({"class_weighting": "inverse"}, "data.class_weighting must be one of inverse_frequency, "),
        ({"expw_min_confidence": math.inf}, "data.expw_min_confidence must be a finite number"),
    ],
)
def test_the_datamodule_refuses_them_from_python_too(kwargs, message):
    with pytest.raises(ConfigError) as raised:
        ExpressionDataModule(**kwargs)
    assert str(raised.value).startswith(message)


def test_the_module_refuses_nan_class_weights_from_python():
    kwargs = dict(backbone="seresnet18", num_classes=7)
    with pytest.raises(
        ConfigError,
        match=r"^model.class_weights\[2\] \(Disgust\) must be a finite number > 0, got nan$",
    ):
        ExpressionModule(**kwargs, class_weights=[1, 1, math.nan, 1, 1, 1, 1])
    for size in (0, 100_000):  # 100000: OpenCV asked for 30 GB per sample in a loader worker
        with pytest.raises(
            ConfigError, match=rf"^model.input_size must be an integer in \[1, 1024\], got {size}$"
        ):
            ExpressionModule(**kwargs, input_size=size)


def test_a_trainer_value_lightning_refuses_is_an_error_line_not_a_traceback(
    tiny_sample, tmp_path, capsys
):
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path, "--trainer.val_check_interval", "-3"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: trainer options: " in err and "val_check_interval" in err
    assert "Traceback" not in err


def test_the_way_to_write_no_checkpoint_that_the_refusal_names_works(tiny_sample, tmp_path):
    args = ["--trainer.max_steps", "2", "--val_every_n_steps", "1"]
    cli = main(
        fit_args(
            tiny_sample,
            tmp_path,
            *args,
            "--checkpoint.save_top_k",
            "0",
            "--checkpoint.save_last",
            "false",
        )
    )
    assert cli.trainer.global_step == 2
    assert not list(Path(tmp_path).rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "-1"], "error: --workers must be an integer >= 0, got -1"),
        (
            ["--data.expw_margin", ".nan"],  # YAML's NaN (a bare nan is refused as text)
            "error: --data.expw_margin must be a finite number >= 0, got nan",
        ),
        (
            ["--data.expw_min_confidence", ".inf"],
            "error: --data.expw_min_confidence must be a finite number",
        ),
    ],
)
def test_pack_refuses_bad_values_before_indexing(tmp_path, capsys, extra, message):
    from ferlit.data.__main__ import main as data_main

    missing = tmp_path / "not-read"  # a folder never looked at: the values stop it first
    args = ["pack", "--data.expw_dir", str(missing), "--out", str(tmp_path / "pack"), *extra]
    assert data_main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.partial").exists()


def test_fit_refuses_a_trainer_value_lightning_refuses_with_a_plain_valueerror(
    tiny_sample, tmp_path, capsys
):
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path, "--trainer.accelerator", "tpu9"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        "error: trainer options: You selected an invalid accelerator name: `accelerator='tpu9'`"
        in err
    )
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--trainer.num_nodes", "0"],
            "error: trainer options: `num_nodes` must be a positive integer, but got 0",
        ),
        # The Trainer's own options (as fit's since predict is a LightningCLI): parser refusal.
        (["--trainer.precision", "7"], 'error: Parser key "trainer.precision":'),
        (["--data.num_workers", "-1"], "error: data.num_workers must be an integer >= 0, got -1"),
        (["--data.hflip", ".nan"], "error: data.hflip must be a finite number in [0, 1], got nan"),
    ],
)
def test_evaluate_refuses_bad_values_before_reading_the_data(
    checkpoint,  # noqa: F811 (the fixture of test_evaluate)
    tmp_path,
    capsys,
    monkeypatch,
    extra,
    message,
):
    from ferlit.data.datamodule import ExpressionDataModule
    from ferlit.evaluation.evaluate import main as evaluate_main

    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.setattr(ExpressionDataModule, "predict_index", no_reading)
    with pytest.raises(SystemExit) as stop:
        evaluate_main(evaluate_args(checkpoint, tmp_path / "out", *extra))
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_synth_refuses_a_negative_seed(tmp_path, capsys):
    from ferlit.data.__main__ import main as data_main

    assert data_main(["synth", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    assert "error: seed must be an integer >= 0 (numpy's seeds), got -1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--checkpoint.save_top_k", "-2"],
            "error: checkpoint.save_top_k must be an integer >= -1, got -2",
        ),
        (
            ["--early_stopping.mode", "bad"],
            "error: early_stopping.mode must be min or max, got 'bad'",
        ),
        (
            ["--early_stopping.patience", "-1"],
            "error: early_stopping.patience must be an integer >= 0, got -1",
        ),
    ],
)
def test_callback_values_are_refused_before_any_data_is_read(
    tmp_path, monkeypatch, capsys, extra, message
):
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tmp_path / "sample"))
    with pytest.raises(SystemExit) as stop:
        main(["--trainer.logger", "false", *extra])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sample").exists()


def test_a_callback_value_lightning_refuses_is_an_error_line(tiny_sample, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path, "--checkpoint.every_n_train_steps", "-1"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: Invalid value for every_n_train_steps=-1. Must be >= 0" in err
    assert "Traceback" not in err


def test_a_batch_larger_than_the_training_set_stops_before_the_sanity_validation(
    tiny_sample, tmp_path, capsys, monkeypatch
):
    """Lightning builds the training loader after its sanity validation, which a huge batch makes
    long; the DataModule's setup refuses first, and no validation batch is run."""
    from ferlit.training.module import ExpressionModule

    def no_validation(*args, **kwargs):
        pytest.fail("a validation batch ran before the refusal")

    monkeypatch.setattr(ExpressionModule, "validation_step", no_validation)
    with pytest.raises(SystemExit) as stop:
        main(
            fit_args(tiny_sample, tmp_path, "--data.batch_size", "100000")
            + ["--trainer.num_sanity_val_steps", "2"]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "fewer than one optimizer step (data.batch_size 100000 x" in err
    assert "Traceback" not in err
