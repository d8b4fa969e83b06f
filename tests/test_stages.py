"""``python -m ferlit fit|validate|predict``: one command line for the pipeline's stages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_run_args

from ferlit.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tiny_sample, tmp_path_factory) -> Path:
    """The run folder of a 4-step ``python -m ferlit fit`` of a tiny SE-ResNet on the tiny
    sample data, validated on 2 batches every 2 steps."""
    root = tmp_path_factory.mktemp("fit")
    main(
        [
            "fit",
            *tiny_run_args(
                tiny_sample,
                root,
                *("--trainer.limit_val_batches", "2", "--trainer.num_sanity_val_steps", "0"),
                *("--trainer.max_steps", "4", "--val_every_n_steps", "2"),
            ),
        ]
    )
    return root / "run"


def test_help_lists_the_stages():
    result = subprocess.run(
        [sys.executable, "-m", "ferlit", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0
    stages = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert stages == ["fit", "validate", "predict", "data", "export"]


def test_an_unknown_stage_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", "x.yaml"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("error: unknown stage 'train'\n")


def test_validate_prints_the_criterion_of_best_validation_json(run, capsys):
    best = json.loads(next(run.rglob("best_validation.json")).read_text())
    capsys.readouterr()
    scores = main(
        [
            *("validate", "--ckpt_path", str(run)),
            *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
            *("--trainer.limit_val_batches", "2", "--data.num_workers", "0"),
        ]
    )
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if line.startswith("val/criterion ")]
    assert printed == [f"val/criterion {best['val/criterion']!r}"]
    assert scores["val/criterion"] == best["val/criterion"]
    assert scores["val/f1_happiness"] == best["val/f1_happiness"]
    table = [[cell for cell in line.split() if cell not in "│┃"] for line in out.splitlines()]
    assert ["class", "frames", "F1", "accuracy"] in [row[:4] for row in table]
    happiness = next(row for row in table if row[:1] == ["Happiness"])
    assert happiness[2] == f"{best['val/f1_happiness']:.4f}"


def test_validate_refuses_data_of_another_class_count(run, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["validate", "--ckpt_path", str(run), "--data.num_classes", "8"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --ckpt_path ") and (
        "the model was trained for 7 classes (Neutral, Anger, " in err
    )
    assert err.endswith("but --data.num_classes is 8; use --data.num_classes 7\n")


@pytest.mark.parametrize("stage", ["validate", "predict"])
def test_transformer_engine_precision_is_refused_by_every_stage(run, tmp_path, capsys, stage):
    """Fit refuses it naming the option; validate and predict ended in Lightning's
    ModuleNotFoundError traceback (no transformer_engine package)."""
    with pytest.raises(SystemExit) as stop:
        main(
            [
                *(stage, "--ckpt_path", str(run), "--trainer.precision", "transformer-engine"),
                *(("--out", str(tmp_path / "out")) if stage == "predict" else ()),
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: trainer.precision transformer-engine: Transformer Engine's FP8" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("stage", ["validate", "predict"])
def test_seed_everything_is_refused_by_the_checkpoint_stages(run, tmp_path, capsys, stage):
    """validate and predict draw nothing at random: --seed_everything was accepted and had no
    effect (and without it Lightning warned 'No seed found, seed set to 0' on every run)."""
    out = ("--out", str(tmp_path / "out")) if stage == "predict" else ()
    with pytest.raises(SystemExit) as stop:
        main([stage, "--ckpt_path", str(run), "--seed_everything", "3", *out])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(
        f"error: --seed_everything 3: not used by {stage}, which draws nothing at random (no "
        "augmentation, the model in eval mode); leave it out\n"
    )
    assert "Traceback" not in err


def test_smooth_auto_over_frames_of_a_sample_checkpoint_names_the_folder_to_give(
    train_and_save, write_jpeg, tmp_path, capsys, monkeypatch
):
    """A checkpoint of the sample data records no data folder; --smooth auto over
    --data.frames_dir said 'data.affwild2_dir is not set: the affwild2_val part ... needs it'
    after the checks, naming no folder. Refused before any frame is read, naming the sample's."""
    import numpy as np

    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tmp_path / "sample"))
    ckpt = tmp_path / "sample.ckpt"
    train_and_save(ckpt)
    write_jpeg(tmp_path / "test/cropped_aligned/v/00001.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SystemExit) as stop:
        main(
            [
                *("predict", "--ckpt_path", str(ckpt), "--smooth", "auto"),
                *("--data.frames_dir", str(tmp_path / "test"), "--out", str(tmp_path / "out")),
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "error: --smooth auto: chooses the window on the Aff-Wild2 validation split, and "
        "data.affwild2_dir is not set; give --data.affwild2_dir (the checkpoint was trained on "
        f"ferlit's sample data: --data.affwild2_dir {tmp_path / 'sample' / 'affwild2'}), or a "
        "window (--smooth 15)\n"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "sample").exists()


def test_predict_scores_the_validation_split_as_validate_does(run, tmp_path, capsys):
    """The evaluation's raw criterion (every face frame predicted, the labelled ones scored) is
    validate's (the training metric over the whole validation split)."""
    common = ("--ckpt_path", str(run), "--data.num_workers", "0")
    common += ("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false")
    scores = main(["validate", *common])
    report = main(["predict", *common, "--out", str(tmp_path / "eval"), "--smooth", "3"])
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written == report
    assert report["raw"]["criterion"] == pytest.approx(scores["val/criterion"], abs=1e-6)
    assert report["raw"]["f1"] == pytest.approx(scores["val/f1"], abs=1e-6)
    assert report["smoothing"]["window"] == 3 and report["smoothed"] is not None
    assert report["data"].startswith("Aff-Wild2 val, ")


def test_predict_names_its_options_and_evaluate_the_old_ones(tmp_path, capsys):
    from ferlit.evaluation.evaluate import main as evaluate

    missing = tmp_path / "missing.ckpt"
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--ckpt_path", str(missing), "--out", str(tmp_path / "eval")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: --ckpt_path {missing}: no such file")
    with pytest.raises(SystemExit) as stop:
        evaluate(["--ckpt", str(missing), "--out", str(tmp_path / "eval")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: --ckpt {missing}: no such file")


def test_predict_refuses_another_input_size_than_the_models(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(
            ["predict", "--ckpt_path", str(run), "--out", str(tmp_path), "--data.image_size", "64"]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data.image_size 64: the model of --ckpt_path ")
    assert err.endswith(
        "takes faces of 32x32 (its model.input_size); leave --data.image_size out\n"
    )


def test_evaluate_spellings_translate_to_predict():
    from ferlit.evaluation.evaluate import translate

    assert translate(
        ["--ckpt", "r", "--split=train", "--frames_dir+", "a", "--out", "o", "--smooth", "3"]
    ) == [
        *("--ckpt_path", "r", "--data.predict_split=train", "--data.frames_dir+", "a"),
        *("--out", "o", "--smooth", "3"),
    ]


@pytest.mark.parametrize(
    "given, message",
    [
        (
            ["--ckpt", "A.ckpt", "--ckpt_path", "B.ckpt"],
            "--ckpt and --ckpt_path both given (A.ckpt, B.ckpt): give the checkpoint once",
        ),
        (
            ["--ckpt_path=B.ckpt", "--ckpt=A.ckpt"],
            "--ckpt_path and --ckpt both given (B.ckpt, A.ckpt): give the checkpoint once",
        ),
        (
            ["--ckpt", "A.ckpt", "--split", "val", "--data.predict_split", "train"],
            "--split and --data.predict_split both given (val, train): give the split once",
        ),
        (
            ["--ckpt", "A.ckpt", "--frames_dir+", "f1", "--data.frames_dir", "f2"],
            "--frames_dir and --data.frames_dir both given (f1, f2): give the folders once",
        ),
    ],
)
def test_evaluate_refuses_an_option_in_both_spellings_before_reading(
    given, message, tmp_path, capsys
):
    from ferlit.evaluation.evaluate import main as evaluate

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:  # the checkpoints do not exist: nothing was read
        evaluate([*given, "--out", str(out)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


def test_predict_refuses_a_limit_on_its_batches(run, tmp_path, capsys):
    limit = ("--trainer.limit_predict_batches", "2")  # frames would be left out
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--ckpt_path", str(run), "--out", str(tmp_path), *limit])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: --trainer.limit_predict_batches 2: the evaluation predicts every frame (its "
        "scores and files cover them all); leave it out\n"
    )


def test_the_data_stage_is_python_m_ferlit_data(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["data", "--help"])
    assert stop.value.code == 0
    printed = capsys.readouterr()
    help_text = printed.out + printed.err
    assert all(command in help_text for command in ("synth", "stats", "pack", "check"))
