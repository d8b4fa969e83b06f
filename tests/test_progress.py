"""What a researcher sees while training: the step bar's state and the line after each validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ferlit.training.callbacks.progress import StepProgressBar, validation_line
from ferlit.training.cli import main
from tests.test_fit import fit_args, validations

LINE = re.compile(
    r"validation at step (\d+): val/criterion ([\d.]+), macro-F1 ([\d.]+), "
    r"accuracy ([\d.]+); best val/criterion ([\d.]+) at step (\d+)"
)


def _tiny_fit(tiny_sample, tmp_path, bar: str, *extra: str):
    args = fit_args(tiny_sample, tmp_path, "--trainer.limit_train_batches", "4", *extra)
    i = args.index("--trainer.enable_progress_bar")
    args[i + 1] = bar
    return main(args)


@pytest.mark.parametrize("bar", ["true", "false"])
def test_a_line_after_each_validation_gives_the_logged_scores_and_the_best(
    tiny_sample, tmp_path, capsys, bar
):
    cli = _tiny_fit(
        tiny_sample,
        tmp_path,
        bar,
        "--trainer.max_steps",
        "6",
        "--val_every_n_steps",
        "2",
        "--trainer.num_sanity_val_steps",
        "1",  # the sanity check prints no line
    )
    out = capsys.readouterr().out
    lines = [m.groups() for m in LINE.finditer(out)]
    rows = validations(cli)
    assert [int(line[0]) for line in lines] == [int(r["step"]) for r in rows] == [2, 4, 6]
    best_value, best_step = None, None
    for line, row in zip(lines, rows, strict=True):
        value = float(row["val/criterion"])
        assert line[1:4] == tuple(
            f"{float(row[k]):.4f}" for k in ("val/criterion", "val/f1", "val/acc")
        )
        if best_value is None or value > best_value:
            best_value, best_step = value, int(row["step"])
        assert (line[4], int(line[5])) == (f"{best_value:.4f}", best_step)
    checkpoints = Path(cli.trainer.checkpoint_callback.dirpath)
    report = json.loads((checkpoints / "best_validation.json").read_text())
    assert (lines[-1][4], int(lines[-1][5])) == (f"{report['val/criterion']:.4f}", report["step"])
    bars = [c for c in cli.trainer.callbacks if isinstance(c, StepProgressBar)]
    assert len(bars) == (bar == "true")


def the_bar(cli):
    """The run's one StepProgressBar and its training task (Rich's, holding total and count)."""
    (bar,) = [c for c in cli.trainer.callbacks if isinstance(c, StepProgressBar)]
    return bar, bar.progress._tasks[bar.train_progress_bar_id]


def test_the_bar_counts_optimizer_steps_of_the_whole_run(tiny_sample, tmp_path):
    # 4 micro-batches per epoch, 2 accumulated: 2 optimizer steps an epoch; max_steps 5 spans
    # three epochs, on one bar whose total is max_steps.
    cli = _tiny_fit(
        tiny_sample,
        tmp_path,
        "true",
        "--trainer.accumulate_grad_batches",
        "2",
        "--trainer.max_steps",
        "5",
        "--val_every_n_steps",
        "2",
    )
    bar, task = the_bar(cli)
    assert (task.total, task.completed) == (5, cli.trainer.global_step) == (5, 5)
    assert cli.trainer.current_epoch == 3  # several epochs, one task
    rows = validations(cli)
    metrics = bar.get_metrics(cli.trainer, cli.model)
    assert "v_num" not in metrics
    assert metrics["val/criterion"] == f"{float(rows[-1]['val/criterion']):.4f}"
    best = max(rows, key=lambda r: float(r["val/criterion"]))
    assert metrics["best"] == f"{float(best['val/criterion']):.4f} (step {int(best['step'])})"


def test_the_bar_total_is_max_epochs_of_steps_without_max_steps(tiny_sample, tmp_path):
    cli = _tiny_fit(
        tiny_sample,
        tmp_path,
        "true",
        "--trainer.accumulate_grad_batches",
        "2",
        "--trainer.max_steps",
        "-1",
        "--trainer.max_epochs",
        "2",
    )
    bar, task = the_bar(cli)
    assert (task.total, task.completed) == (4, 4)  # 2 epochs x 2 steps


def test_validation_line_format():
    scores = {"val/criterion": 0.31234, "val/f1": 0.2, "val/acc": 0.456789}
    assert validation_line(40, scores, 0.35, 20) == (
        "validation at step 40: val/criterion 0.3123, macro-F1 0.2000, accuracy 0.4568; "
        "best val/criterion 0.3500 at step 20"
    )
