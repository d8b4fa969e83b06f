"""Options of ``python -m ferlit.fit`` and ``python -m ferlit.evaluate`` that must do what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ferlit.cli import PredictCLI
from ferlit.evaluation.evaluate import translate
from ferlit.training.cli import main

REPO = Path(__file__).resolve().parent.parent
PAPER = str(REPO / "experiments/cafarelli2020.yaml")


def printed_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as stop:
        main(["--config", PAPER, *args, "--print_config"])
    assert stop.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    "nulls",
    [
        ["--model.pretrained=None", "--data.max_class_share=None"],  # how W&B writes null
        ["--model.pretrained", "None", "--data.max_class_share", "None"],
    ],
)
def test_none_is_null_for_nullable_fit_options(capsys, nulls):
    config = printed_config(
        capsys,
        "--model.pretrained",
        "/weights/senet50_ft_weight.pkl",
        "--data.max_class_share",
        "0.5",
        "--data.expw_min_confidence",
        "40",
        *nulls,
        "--data.expw_min_confidence=None",
        "--val_every_n_steps=None",
        "--trainer.max_time=None",
    )
    assert config["model"]["pretrained"] is None  # not a weights file named "None"
    assert config["data"]["max_class_share"] is None  # was refused
    assert config["data"]["expw_min_confidence"] is None
    assert config["val_every_n_steps"] is None
    assert config["trainer"]["max_time"] is None


def test_none_stays_text_where_null_is_not_allowed(capsys):
    # model.backbone is a plain str: "None" reaches the backbone check, which names it.
    assert printed_config(capsys, "--model.backbone=None")["model"]["backbone"] == "None"
    with pytest.raises(SystemExit) as stop:
        main(["--trainer.logger", "false", "--model.backbone=None"])
    assert stop.value.code == 2
    assert "model.backbone: timm has no model named 'None'" in capsys.readouterr().err


def test_an_int_option_refuses_none(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--config", PAPER, "--data.batch_size=None", "--print_config"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "data.batch_size" in err and "Traceback" not in err


def test_none_is_null_for_nullable_evaluate_options():
    args = translate(
        [
            "--ckpt",
            "runs/cafarelli2020",
            "--out",
            "eval",
            "--frames_dir=None",
            "--submission",
            "None",
            "--smooth_kernel=None",
            "--trainer.precision=None",
            "--data.max_class_share=None",
            "--data.affwild2_dir=None",
        ]
    )  # python -m ferlit.evaluate's spellings
    config = PredictCLI(args, parse_only=True).config
    assert config.data.frames_dir is None and config.submission is None
    assert config.smooth_kernel is None and config.trainer.precision is None
    assert config.data.max_class_share is None and config.data.affwild2_dir is None
    assert config.ckpt_path == "runs/cafarelli2020"
