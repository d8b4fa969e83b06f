"""The learning rates of ``python -m ferlit.fit``: the two groups, their schedule, the options
that would bypass them, and the warning for a fine-tuning rate on a random backbone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_fit import TINY_BACKBONE, fit_args, logged_rows

from ferlit.training.cli import main
from ferlit.training.schedule import schedule_factor

REPO = Path(__file__).resolve().parent.parent


def logged_rates(cli, group: str) -> dict[int, float]:
    """``{optimizer step: learning rate}`` of parameter group ``group`` from the run's metrics.csv."""
    column = f"train/lr_{group}"
    return {int(r["step"]): float(r[column]) for r in logged_rows(cli) if r.get(column)}


def test_schedule_factor_numbers():
    # Linear warmup over 4 steps reaches 1 at its last step, never 0.
    assert [schedule_factor(s, "constant", 4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert schedule_factor(0, "constant") == 1.0
    # Cosine from 1 (step 4) to 0.1 (step 14): half-way (step 9) is 0.1 + 0.9 / 2.
    cosine = [schedule_factor(s, "warmup_cosine", 4, 14, 0.1) for s in (3, 4, 9, 14, 20)]
    assert cosine == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    assert schedule_factor(6, "warmup_cosine", 4, 14, 0.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.2))
    )


def test_warmup_cosine_and_freezing_show_in_the_logged_rates_of_both_groups(tiny_sample, tmp_path):
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--trainer.accumulate_grad_batches",
        "2",
        "--trainer.max_steps",
        "6",
        "--trainer.log_every_n_steps",
        "1",
        "--val_every_n_steps",
        "3",
        "--model.lr_head",
        "0.1",
        "--model.lr_backbone",
        "0.01",
        "--model.lr_schedule",
        "warmup_cosine",
        "--model.warmup_steps",
        "2",
        "--model.min_lr_ratio",
        "0.1",
        "--model.freeze_backbone_steps",
        "1",
    )
    cli = main(args)
    rows = {int(r["step"]): r for r in logged_rows(cli) if r.get("train/lr_head")}
    # One row per optimizer step (2 micro-batches each); row s = the rates of step s + 1.
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    factor = [0.5, 1.0, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 0.55]
    factor.append(0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4)))
    head = [float(rows[s]["train/lr_head"]) for s in range(6)]
    backbone = [float(rows[s]["train/lr_backbone"]) for s in range(6)]
    assert head == pytest.approx([0.1 * f for f in factor], rel=1e-6)
    # frozen for step 0 (x 0), then the same curve at its own rate
    assert backbone == pytest.approx([0.0] + [0.01 * f for f in factor[1:]], rel=1e-6)
    scheduler = cli.trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step" and scheduler.scheduler.last_epoch == 6


def test_a_constant_run_without_warmup_has_no_scheduler_and_logs_the_paper_rates(
    tiny_sample, tmp_path
):
    args = fit_args(
        tiny_sample, tmp_path, "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1"
    )
    cli = main(args)
    assert cli.trainer.lr_scheduler_configs == []
    rows = [r for r in logged_rows(cli) if r.get("train/lr_head")]
    assert [(float(r["train/lr_head"]), float(r["train/lr_backbone"])) for r in rows] == [
        pytest.approx((0.01, 0.01))
    ] * 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--trainer.max_steps", "-1", "--trainer.max_epochs", "-1"],
            "model.lr_schedule warmup_cosine needs a run of known length: set trainer.max_steps",
        ),
        (
            ["--trainer.max_steps", "3", "--model.warmup_steps", "3"],
            "model.warmup_steps 3 leaves no step to decay in a run of 3 optimizer steps",
        ),
    ],
)
def test_a_schedule_that_cannot_be_drawn_is_refused(tiny_sample, tmp_path, capsys, extra, message):
    args = fit_args(tiny_sample, tmp_path, "--model.lr_schedule", "warmup_cosine", *extra)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.min_lr_ratio", "0.1"], "model.min_lr_ratio 0.1 applies to model.lr_schedule"),
        (["--model.min_lr_ratio", "2"], "model.min_lr_ratio must be in [0, 1], got 2"),
        (["--model.warmup_steps", "-5"], "model.warmup_steps must be >= 0 optimizer steps"),
        (["--model.lr_schedule", "cosine"], "model.lr_schedule"),
    ],
)
def test_bad_schedule_options_are_refused(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tmp_path / "sample"))
    with pytest.raises(SystemExit) as stop:
        main(["--trainer.logger", "false", *TINY_BACKBONE, *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "sample").exists()  # refused before any data is read or written


@pytest.mark.parametrize(
    "given",
    [
        ["--optimizer", "AdamW"],
        ["--optimizer=torch.optim.AdamW", "--optimizer.lr=0.01"],
        ["--lr_scheduler", "CosineAnnealingLR", "--lr_scheduler.T_max", "10"],
    ],
)
def test_lightning_optimizer_options_are_refused_saying_what_to_use(capsys, given):
    with pytest.raises(SystemExit) as stop:
        main(["--trainer.logger", "false", *given])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    name = given[0][2:].split("=")[0]
    assert f"error: --{name}: not available in ferlit" in err
    assert "--model.lr_head, --model.lr_backbone" in err and "--model.lr_schedule" in err


def test_an_optimizer_key_in_a_config_file_is_refused(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("optimizer:\n  class_path: torch.optim.AdamW\n  init_args:\n    lr: 0.01\n")
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(config), "--trainer.logger", "false"])
    assert stop.value.code == 2
    assert f"error: --optimizer (in {config}): not available" in capsys.readouterr().err


def data_args(sample) -> list[str]:
    return [
        "--data.affwild2_dir",
        str(sample.affwild2_dir),
        "--data.expw_dir",
        str(sample.expw_dir),
        "--data.num_workers",
        "0",
        "--trainer.logger",
        "false",
        *TINY_BACKBONE,
    ]


def test_a_random_backbone_at_a_fine_tuning_rate_warns(tiny_sample, capsys):
    # experiments/cafarelli2020.yaml without --model.pretrained: 1e-6 on random weights.
    paper = str(REPO / "experiments/cafarelli2020.yaml")
    main(["--config", paper, *data_args(tiny_sample)], run=False)
    err = capsys.readouterr().err
    assert (
        "warning: model.pretrained is null, so the backbone starts from random weights, but "
        "model.lr_backbone 1e-06 is a fine-tuning rate"
    ) in err
    assert "pass --model.pretrained <senet50_ft_weight.pkl>" in err


def test_the_sample_experiment_does_not_warn(tiny_sample, capsys):
    sample = str(REPO / "experiments/sample.yaml")
    main(["--config", sample, *data_args(tiny_sample)], run=False)
    assert "warning: model.pretrained" not in capsys.readouterr().err


def test_a_resumed_run_continues_the_schedule_over_its_new_length(tiny_sample, tmp_path):
    schedule = [
        "--trainer.log_every_n_steps",
        "1",
        "--val_every_n_steps",
        "2",
        "--early_stopping.patience",
        "100",
        "--model.lr_head",
        "0.1",
        "--model.lr_schedule",
        "warmup_cosine",
        "--model.warmup_steps",
        "1",
    ]
    main(fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "4", *schedule))
    cli = main(
        fit_args(
            tiny_sample, tmp_path, "--trainer.max_steps", "6", *schedule, "--ckpt_path", "last"
        )
    )
    assert cli.trainer.global_step == 6
    rows = logged_rates(cli, "head")
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    # Steps 0-3 on the first run's 4-step curve, 4-5 on the resumed run's 6-step curve: the
    # scheduler's position comes from the checkpoint, and the first resumed step already
    # follows the new curve (not the rate the old one left in the optimizer, 0).
    expected = [schedule_factor(s, "warmup_cosine", 1, 4) for s in range(4)]
    expected += [schedule_factor(s, "warmup_cosine", 1, 6) for s in (4, 5)]
    assert [rows[s] for s in range(6)] == pytest.approx([0.1 * f for f in expected], rel=1e-6)


def test_a_run_resumed_while_frozen_thaws_at_the_same_step(tiny_sample, tmp_path):
    # Constant rates (no scheduler): the BackboneFreeze callback alone holds the backbone at 0.
    freeze = [
        "--trainer.log_every_n_steps",
        "1",
        "--val_every_n_steps",
        "2",
        "--early_stopping.patience",
        "100",
        "--model.lr_backbone",
        "0.01",
        "--model.freeze_backbone_steps",
        "3",
    ]
    main(fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "2", *freeze))
    cli = main(
        fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "5", *freeze, "--ckpt_path", "last")
    )
    assert cli.trainer.global_step == 5 and cli.trainer.lr_scheduler_configs == []
    rows = logged_rates(cli, "backbone")
    # steps 0-2 frozen (the resumed run starts at step 2, still frozen), then the built rate
    assert [rows[s] for s in range(5)] == pytest.approx([0.0, 0.0, 0.0, 0.01, 0.01])


def test_help_has_a_line_for_every_model_option(capsys):
    import inspect

    from ferlit.training.module import ExpressionModule

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    names = list(inspect.signature(ExpressionModule).parameters)
    # linked from the DataModule (data.num_classes, the training counts), so not options
    linked = {"num_classes", "class_weights"}
    assert {n for n in names if f"--model.{n} " not in text} == linked
    for name in (n for n in names if n not in linked):
        # jsonargparse prints the option, then (on the same or the next lines) its Args text,
        # then "(type: ...)"; an option without an Args entry shows only its type.
        block = text.split(f"--model.{name} ", 1)[1].split("(type:", 1)[0]
        words = block.split()
        assert len(words) > 2, f"--model.{name} has no help text: {block!r}"
