"""A run never loses or mixes up its model: crash-safe checkpoints, resumes into the same run
only, from any working directory with the shipped configs' relative ``save_dir``.

The runs are tiny (the narrow SE-ResNet-18 of tests/test_resume.py on the tiny sample data), but
use ``experiments/sample.yaml`` as shipped (``save_dir: runs``, relative) from a temporary
working directory.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch

from ferlit.errors import ConfigError
from ferlit.io import atomic_write
from ferlit.training.callbacks.preemption import Preemption
from ferlit.training.cli import main
from ferlit.training.runs import (
    AtomicCheckpointIO,
    config_differences,
    read_checkpoint_file,
    resolve_checkpoint,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_YAML = REPO / "experiments/sample.yaml"


def sample_args(sample, *extra: str) -> list[str]:
    """experiments/sample.yaml (logging to the relative runs/sample), scaled down to seconds."""
    return [
        *("--config", str(SAMPLE_YAML)),
        *("--data.affwild2_dir", str(sample.affwild2_dir), "--data.expw_dir", str(sample.expw_dir)),
        *("--model.input_size", "32"),
        *("--model.backbone_kwargs", '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}'),
        *("--model.lr_head", "0.01", "--model.lr_backbone", "0.01"),
        *("--data.batch_size", "4", "--data.num_workers", "0"),
        *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *("--trainer.accumulate_grad_batches", "2", "--trainer.limit_train_batches", "8"),
        *("--trainer.limit_val_batches", "3", "--trainer.num_sanity_val_steps", "0"),
        *("--val_every_n_steps", "3", "--trainer.max_steps", "9"),
        *extra,
    ]


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def summary_history(path: Path) -> list[tuple[int, float]]:
    """The (step, val/criterion) history BestValidationSummary saved in a checkpoint."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if "BestValidationSummary" in k)
    return [(int(step), score) for step, score in state["history"]]


def true_best(history: list[tuple[int, float]]) -> tuple[int, float]:
    """(step, criterion) of the best validation; the earlier one on a tie, as ModelCheckpoint."""
    best = max(score for _, score in history)
    return next((step, score) for step, score in history if score == best)


# -- crash-safe writes ----------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_whole_when_the_write_dies(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="killed"), atomic_write(target, "w") as file:
        file.write("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary left behind
    with atomic_write(target, "w") as file:
        file.write("new\n")
    assert target.read_text() == "new\n"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_a_checkpoint_write_killed_half_way_leaves_the_previous_last_ckpt_loadable(
    tmp_path, monkeypatch
):
    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 30, "state_dict": {"w": torch.ones(3)}}, last)

    def dies_half_way(obj, file):
        file.write(b"PK\x03\x04" + b"\0" * 1000)  # the start of a zip, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 80}, last)
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == 30
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign"])
def test_a_damaged_or_foreign_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "loops": {}, "callbacks": {}}, whole)
    if damage == "empty":
        path.touch()
        expected = "empty file (0 bytes), a checkpoint write cut short"
    elif damage == "truncated":
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        expected = "not a readable PyTorch"
    else:
        torch.save({"model": {"w": torch.ones(2)}}, path)
        expected = "not a "  # "Lightning checkpoint" / "training checkpoint of ferlit.fit"
    with pytest.raises(ConfigError, match=r"^--ckpt_path:? ") as error:
        read_checkpoint_file(path)
    assert f"{path}: {expected}" in str(error.value)


# -- stop, kill and resume with the shipped config, from another working directory ---------------


def test_stop_kill_and_resume_keep_one_run_and_its_true_best(
    tiny_sample, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run = work / "runs/sample/version_0"
    checkpoints = run / "checkpoints"

    # 1. Ctrl-C in the middle of step 5: stops after it, resumable, summary and command printed.
    ctrl_c = ["--trainer.callbacks+=test_resume.SignalAt", "--trainer.callbacks.micro_batch", "9"]
    ctrl_c += ["--trainer.callbacks.signum", "SIGINT"]
    with pytest.raises(SystemExit) as stop:
        main(sample_args(tiny_sample, *ctrl_c))
    assert stop.value.code == 130
    out, err = capsys.readouterr()
    assert "stopped by SIGINT after optimizer step 5" in err
    assert "`weights_only` was not set" not in err  # Lightning's note on a full checkpoint
    assert f"cd {work} && {sys.executable} -m ferlit.fit --config {SAMPLE_YAML}" in err
    assert err.rstrip().endswith(f"--ckpt_path {checkpoints / 'last.ckpt'}")
    assert "Best validation" in out  # the summary table, also on a stop
    assert saved_step(checkpoints / "last.ckpt") == 5
    summary = json.loads((checkpoints / "best_validation.json").read_text())
    assert summary["step"] == 3 and Path(summary["checkpoint"]).parent == checkpoints
    info = json.loads((run / "run_info.json").read_text())["starts"]
    assert len(info) == 1 and info[0]["cwd"] == str(work)
    assert info[0]["argv"][1:5] == ["-m", "ferlit.fit", "--config", str(SAMPLE_YAML)]
    assert info[0]["data"]["affwild2_dir"] == os.path.realpath(tiny_sample.affwild2_dir)
    assert info[0]["packages"]["torch"] == metadata.version("torch")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:  # HEAD then, or an ancestor (a commit made while the test ran)
        recorded = info[0]["git"]["commit"]
        ancestor = ["git", "-C", str(REPO), "merge-base", "--is-ancestor", recorded, "HEAD"]
        assert re.fullmatch(r"[0-9a-f]{40}", recorded) and subprocess.run(ancestor).returncode == 0

    # 2. A changed learning rate or backbone is another experiment: refused, naming the options.
    for changed, message in (
        (["--model.lr_head", "0.02"], "model.lr_head 0.01 -> 0.02"),
        (
            ["--model.backbone_kwargs", '{"channels": [8, 16, 32, 32], "layers": [1, 1, 1, 1]}'],
            "model.backbone_kwargs.channels [8, 16, 32, 64] -> [8, 16, 32, 32]",
        ),
    ):
        with pytest.raises(SystemExit) as refused:
            main(sample_args(tiny_sample, "--ckpt_path", "last", *changed))
        assert refused.value.code == 2
        err = capsys.readouterr().err
        last = "runs/sample/version_0/checkpoints/last.ckpt"  # the newest, relative to the cwd
        assert f"error: --ckpt_path {last}: written by another experiment" in err
        assert message in err
    assert sorted(p.name for p in (work / "runs/sample").iterdir()) == ["version_0"]

    # 3. Resume (--ckpt_path last, relative save_dir) with a longer max_steps: the same run.
    resumed = main(sample_args(tiny_sample, "--ckpt_path", "last", "--trainer.max_steps", "12"))
    assert resumed.trainer.global_step == 12
    assert sorted(p.name for p in (work / "runs/sample").iterdir()) == ["version_0"]
    history = summary_history(checkpoints / "last.ckpt")
    assert [step for step, _ in history] == [3, 6, 9, 12]
    step, score = true_best(history)
    best = resumed.trainer.checkpoint_callback
    assert float(best.best_model_score) == pytest.approx(score, rel=1e-6)
    assert [p.name for p in checkpoints.glob("best-*.ckpt")] == [Path(best.best_model_path).name]
    assert f"best-step{step:07d}" in best.best_model_path
    with open(run / "metrics.csv") as f:  # both parts' validations, in the one folder
        assert [int(r["step"]) for r in csv.DictReader(f) if r["val/criterion"]] == [3, 6, 9, 12]
    assert len(json.loads((run / "run_info.json").read_text())["starts"]) == 2
    capsys.readouterr()

    # 4. kill -9 right after a validation, from another working directory: last.ckpt is that
    #    validation's state (Lightning alone rewrote it only on an improvement).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-m", "ferlit.fit", *sample_args(tiny_sample)]
    command += ["--trainer.max_steps", "60", "--trainer.logger.save_dir", str(work / "runs")]
    command += ["--ckpt_path", str(checkpoints / "last.ckpt")]
    before = (checkpoints / "last.ckpt").stat().st_mtime_ns
    process = subprocess.Popen(command, cwd=elsewhere, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while (checkpoints / "last.ckpt").stat().st_mtime_ns == before:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no validation within 180 s"
        time.sleep(0.005)
    process.kill()
    process.communicate(timeout=60)
    killed_at = saved_step(checkpoints / "last.ckpt")
    assert killed_at % 3 == 0 and 12 < killed_at < 60
    assert sorted(p.name for p in (work / "runs/sample").iterdir()) == ["version_0"]

    # 5. The log folder means the true best over every part of the run.
    history = summary_history(checkpoints / "last.ckpt")
    assert [s for s, _ in history] == list(range(3, killed_at + 1, 3))
    step, _ = true_best(history)
    chosen = resolve_checkpoint(work / "runs/sample")
    assert chosen.parent == checkpoints and chosen.name.startswith(f"best-step{step:07d}")


def test_debug_runs_leave_nothing_resumable(tiny_sample, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(sample_args(tiny_sample, "--trainer.fast_dev_run", "true"))
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("best_validation.json"))
    assert not list(tmp_path.rglob("run_info.json"))
    # Lightning's overfit_batches swaps in its own sampler: refused before anything is written
    with pytest.raises(SystemExit) as refused:
        main(sample_args(tiny_sample, "--trainer.overfit_batches", "2"))
    assert refused.value.code == 2
    assert "error: trainer.overfit_batches is not supported" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("run_info.json"))


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_refused_fit_leaves_no_new_empty_run_folder(tiny_sample, tmp_path, monkeypatch, capsys):
    # data.frames_dir is refused in the data's setup, after the logger made version_N: the
    # folder used to stay, empty, and the next run became version_N+1.
    faces = tmp_path / "faces"
    faces.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    refused = sample_args(tiny_sample, "--data.frames_dir", str(faces))
    with pytest.raises(SystemExit) as stop:
        main(refused)
    assert stop.value.code == 2
    assert "error: data.frames_dir is set" in capsys.readouterr().err
    assert tree(work) == []  # runs/, runs/sample/ and version_0/ were all this run's, all empty
    # An earlier run's version_0 and a user's empty folder stay; only the new version_1 goes.
    (work / "runs/sample/version_0").mkdir(parents=True)
    (work / "runs/sample/version_0/notes.txt").write_text("mine")
    (work / "runs/sample/mine").mkdir()
    before = tree(work)
    with pytest.raises(SystemExit) as stop:
        main(refused)
    assert stop.value.code == 2
    assert (
        tree(work)
        == before
        == [
            "runs",
            "runs/sample",
            "runs/sample/mine",
            "runs/sample/version_0",
            "runs/sample/version_0/notes.txt",
        ]
    )


def test_a_refused_fit_removes_only_its_own_folders(tiny_sample, tmp_path, monkeypatch, capsys):
    # What appears in the run folders while this run indexes its data is not this run's: an
    # empty version folder of a concurrent run (still reading its own data) and a user's empty
    # folder. A refusal removes this run's version_N and the folders it made, nothing else (the
    # concurrent run's config.yaml and metrics would have had nowhere to go).
    import ferlit.training.cli as fit_cli

    faces = tmp_path / "faces"
    faces.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "runs/sample").mkdir(parents=True)
    snapshot = fit_cli.run_folders_before
    for save_dir in ("fresh", "runs"):  # missing before (both runs make it), and there before

        def others_arrive(trainer, save_dir=save_dir):
            before = snapshot(trainer)
            (work / save_dir / "sample/version_5").mkdir(parents=True)  # a concurrent run's
            (work / save_dir / "mine").mkdir()  # the user's, made meanwhile
            return before

        monkeypatch.setattr(fit_cli, "run_folders_before", others_arrive)
        with pytest.raises(SystemExit) as stop:
            main(
                sample_args(
                    tiny_sample,
                    *("--data.frames_dir", str(faces)),
                    *("--trainer.logger.init_args.save_dir", save_dir),
                )
            )
        assert stop.value.code == 2
        assert "error: data.frames_dir is set" in capsys.readouterr().err
        # this run's version_6 is gone; the others' folders stay
        assert tree(work / save_dir) == ["mine", "sample", "sample/version_5"]


def test_second_ctrl_c_aborts_at_once():
    stop = Preemption()
    previous = signal.getsignal(signal.SIGINT)
    try:
        stop._interrupt(signal.SIGINT, None)
        assert stop.held == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            stop._interrupt(signal.SIGINT, None)
        worker = Preemption()  # a DataLoader worker forked with the handler: ignores Ctrl-C
        worker._pid = os.getpid() + 1
        worker._interrupt(signal.SIGINT, None)
        worker._interrupt(signal.SIGINT, None)
        assert worker.held == []
    finally:
        signal.signal(signal.SIGINT, previous)


def test_last_ckpt_is_rewritten_after_every_validation_and_every_n_steps(
    tiny_sample, tmp_path, monkeypatch
):
    writes = []
    original = AtomicCheckpointIO.save_checkpoint

    def recording(self, checkpoint, path, storage_options=None):
        writes.append((Path(path).name.split("-")[0], checkpoint["global_step"]))
        original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    monkeypatch.chdir(tmp_path)
    every_2 = ["--checkpoint.last_every_n_steps", "2", "--trainer.max_steps", "8"]
    main(sample_args(tiny_sample, *every_2))
    # validations at 3 and 6; a step followed by a validation is saved after it, once
    assert [step for name, step in writes if name == "last.ckpt"] == [2, 3, 4, 6, 8]
    assert {name for name, _ in writes} == {"last.ckpt", "best"}


def test_only_run_length_hardware_and_reporting_may_change_on_resume():
    saved = {"model.lr_head": 0.01, "trainer.max_steps": 9, "data.num_workers": 2}
    saved |= {"trainer.logger.init_args.name": "a", "early_stopping.patience": 5}
    current = saved | {"trainer.max_steps": 90, "data.num_workers": 8}
    current |= {"trainer.logger.init_args.name": "b", "early_stopping.patience": 7}
    assert config_differences(saved, current) == ["early_stopping.patience 5 -> 7"]


def test_sbatch_gives_each_experiment_its_own_folder_and_a_requeue_the_same(tmp_path):
    """experiments/slurm/fit.sbatch under a stand-in ``srun`` that records its arguments."""
    calls = tmp_path / "srun-calls"
    srun = tmp_path / "bin/srun"
    srun.parent.mkdir()
    srun.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    srun.chmod(0o755)
    env = os.environ | {"PATH": f"{srun.parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_NAME": "ferlit", "SLURM_JOB_ID": "7"}
    env |= {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4"}
    for args, restart in ((["--model.lr_head", "0.001"], "0"), (["--model.lr_head", "0.001"], "1")):
        env["SLURM_RESTART_COUNT"] = restart
        script = [str(REPO / "experiments/slurm/fit.sbatch"), *args]
        subprocess.run(["bash", *script], env=env, check=True, capture_output=True)
    subprocess.run(["bash", *script[:1], "--model.lr_head", "0.01"], env=env, check=True)
    folders = [re.search(r"--trainer.logger.save_dir (\S+)", line)[1] for line in calls.open()]
    assert folders[0] == folders[1] != folders[2]  # the requeue resumes; another lr is its own
    assert all(re.fullmatch(r"runs/slurm/ferlit-[0-9a-f]{10}", f) for f in folders)
    assert all("--ckpt_path last" in line for line in calls.open())


def test_log_folder_means_the_best_the_run_recorded_not_the_newest_versions(tmp_path):
    """The observed case: best 0.1030 at step 10 in version_0; a resume that lost the best score
    wrote a worse "best" at step 20 into version_1; the run's records name step 10."""
    first, second = tmp_path / "version_0/checkpoints", tmp_path / "version_1/checkpoints"
    for folder, name in ((first, "best-step0000010.ckpt"), (second, "best-step0000020.ckpt")):
        folder.mkdir(parents=True)
        torch.save({"state_dict": {}}, folder / name)
    recorded = "runs/sample/version_0/checkpoints/best-step0000010.ckpt"  # another cwd's path
    state = {"best_model_path": recorded, "dirpath": "runs/sample/version_0/checkpoints"}
    torch.save(
        {"callbacks": {"ModelCheckpoint{'monitor': 'val/criterion'}": state}}, first / "last.ckpt"
    )
    assert resolve_checkpoint(tmp_path) == first / "best-step0000010.ckpt"
    # without a readable last.ckpt, best_validation.json names it
    (first / "last.ckpt").write_bytes(b"")
    (first / "best_validation.json").write_text(json.dumps({"checkpoint": recorded}))
    assert resolve_checkpoint(tmp_path) == first / "best-step0000010.ckpt"


def test_resume_from_another_cwd_continues_in_the_checkpoints_run_folder(
    tiny_sample, tmp_path, monkeypatch, capsys
):
    """The printed resume command's absolute --ckpt_path, run from another working directory
    with the shipped relative ``save_dir: runs``: logs, config and run_info.json stay in the
    checkpoint's version folder (they went to <cwd>/runs/sample/version_0 while checkpoints
    went to the old folder)."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(work)
    main(sample_args(tiny_sample, "--trainer.max_steps", "3"))
    run = work / "runs/sample/version_0"
    monkeypatch.chdir(elsewhere)
    last = run / "checkpoints/last.ckpt"
    resumed = main(sample_args(tiny_sample, "--trainer.max_steps", "6", "--ckpt_path", str(last)))
    assert resumed.trainer.global_step == 6
    assert f"resuming in the run's own folder {run}" in capsys.readouterr().err
    assert not [p for p in elsewhere.rglob("*") if not p.is_dir()]  # (runs/ checked writable)
    assert sorted(p.name for p in (work / "runs/sample").iterdir()) == ["version_0"]
    with open(run / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["val/criterion"]] == [3, 6]
    starts = json.loads((run / "run_info.json").read_text())["starts"]
    assert [s["cwd"] for s in starts] == [str(work), str(elsewhere)]
    assert starts[1]["resumed_from"] == str(last)
    assert saved_step(last) == 6


def test_an_option_newer_than_the_checkpoint_left_at_its_default_may_resume(
    tiny_sample, tmp_path, monkeypatch, capsys
):
    """A checkpoint written before ferlit gained an option (a git pull between two requeues)
    resumes when that option is at its default, and is refused when it is not."""
    saved = {"model.lr_head": 0.01}
    current = saved | {"data.strict_images": False}
    assert config_differences(saved, current) == ["data.strict_images '(unset)' -> False"]
    assert config_differences(saved, current, {"data.strict_images": False}) == []

    monkeypatch.chdir(tmp_path)
    main(sample_args(tiny_sample, "--trainer.max_steps", "3"))
    last = tmp_path / "runs/sample/version_0/checkpoints/last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    del checkpoint["ferlit"]["config"]["data.strict_images"]  # as an older ferlit wrote it
    torch.save(checkpoint, last)
    with pytest.raises(SystemExit) as refused:
        main(sample_args(tiny_sample, "--ckpt_path", "last", "--data.strict_images", "true"))
    assert refused.value.code == 2
    assert "options that differ: data.strict_images '(unset)' -> True." in capsys.readouterr().err
    resumed = main(sample_args(tiny_sample, "--ckpt_path", "last", "--trainer.max_steps", "6"))
    assert resumed.trainer.global_step == 6


def test_lightnings_best_and_hpc_checkpoints_are_refused_or_checked(
    tiny_sample, tmp_path, monkeypatch, capsys
):
    """``--ckpt_path best`` was a raw ValueError; under SLURM Lightning resumes the newest
    ``hpc_ckpt_N.ckpt`` of ``trainer.default_root_dir`` by itself, whichever experiment wrote
    it: ferlit checks it like any --ckpt_path."""
    monkeypatch.chdir(tmp_path)
    for name, message in (
        ("best", "error: --ckpt_path best: a new fit has no best checkpoint yet"),
        ("hpc", "error: --ckpt_path hpc: no hpc_ckpt_N.ckpt (Lightning's SLURM requeue"),
    ):
        with pytest.raises(SystemExit) as refused:
            main(sample_args(tiny_sample, "--ckpt_path", name))
        assert refused.value.code == 2 and message in capsys.readouterr().err
    main(sample_args(tiny_sample, "--trainer.max_steps", "3"))
    hpc = tmp_path / "runs/hpc_ckpt_1.ckpt"  # as Lightning's requeue handler names it
    hpc.write_bytes((tmp_path / "runs/sample/version_0/checkpoints/last.ckpt").read_bytes())
    slurm = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    slurm |= {"SLURM_JOB_NAME": "ferlit", "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": "7"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as refused:  # another experiment, no --ckpt_path
        main(sample_args(tiny_sample, "--model.lr_head", "0.02"))
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "error: --ckpt_path runs/hpc_ckpt_1.ckpt: written by another experiment" in err
    assert "model.lr_head 0.01 -> 0.02" in err


def test_sbatch_keeps_the_allocations_layout_and_run_folder_whatever_config_is_given(tmp_path):
    """A --config after the script name (experiments/abaw2024.yaml sets devices 1, accumulation
    4, batch 64 and the shared runs/abaw2024 folder) used to override the script's options: the
    run left its own folder and the allocation's layout. Options the script sets are refused."""
    calls = tmp_path / "srun-calls"
    srun = tmp_path / "bin/srun"
    srun.parent.mkdir()
    srun.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {calls}\n')
    srun.chmod(0o755)
    env = os.environ | {"PATH": f"{srun.parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_NAME": "ferlit", "SLURM_JOB_ID": "7"}
    env |= {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4"}
    script = str(REPO / "experiments/slurm/fit.sbatch")
    subprocess.run(["bash", script, "--config", "experiments/abaw2024.yaml"], env=env, check=True)
    args = calls.read_text().splitlines()[3:]  # after "python -m ferlit.fit"
    printed = subprocess.run(
        [sys.executable, "-m", "ferlit.fit", *args, "--print_config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config = __import__("yaml").safe_load(printed)
    folder = config["trainer"]["logger"]["init_args"]["save_dir"]
    assert re.fullmatch(r"runs/slurm/ferlit-[0-9a-f]{10}", folder)
    assert config["trainer"]["default_root_dir"] == folder
    assert config["trainer"]["logger"]["init_args"]["name"] == "abaw2024"
    assert (str(config["trainer"]["devices"]), config["trainer"]["num_nodes"]) == ("4", 2)
    assert config["trainer"]["accumulate_grad_batches"] == 1
    assert config["data"]["batch_size"] == 32 and config["trainer"]["strategy"] == "ddp"
    assert config["data"]["num_classes"] == 8 and config["ckpt_path"] == "last"

    calls.unlink()
    refused = subprocess.run(
        ["bash", script, "--data.batch_size=8"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and not calls.exists()
    assert "error: --data.batch_size is set by fit.sbatch from the allocation" in refused.stderr


def test_git_commit_is_ferlits_own_not_an_enclosing_projects(tmp_path):
    """ferlit installed into a .venv inside another repository: that repository's commit is
    not ferlit's, and run_info.json records none."""
    from ferlit.training.runs import git_commit

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / ".gitignore").write_text(".venv/\n")
    package = tmp_path / ".venv/lib/site-packages/ferlit"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    git("add", ".gitignore")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "project")
    assert git_commit(package) is None
    own = tmp_path / "ferlit"
    own.mkdir()
    (own / "__init__.py").write_text("")
    git("add", "ferlit/__init__.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "ferlit")
    assert git_commit(own) == {"commit": git("rev-parse", "HEAD"), "modified": False}


def test_log_folder_reads_the_best_from_ferlits_own_checkpoint_callback_state(tmp_path):
    """A run's last.ckpt holds the state under FerlitCheckpoint's key (not "ModelCheckpoint..."):
    its best_model_path is the record, before an older best_validation.json (here from a stop
    before the run found a better checkpoint, both kept with save_top_k 2)."""
    from ferlit.training.callbacks.checkpoint import FerlitCheckpoint

    folder = tmp_path / "version_0/checkpoints"
    folder.mkdir(parents=True)
    for name in ("best-step0000010.ckpt", "best-step0000020.ckpt"):
        torch.save({"state_dict": {}}, folder / name)
    (folder / "best_validation.json").write_text(
        json.dumps({"checkpoint": str(folder / "best-step0000010.ckpt")})
    )
    os.utime(folder / "best_validation.json", (1, 1))
    key = FerlitCheckpoint(monitor="val/criterion", mode="max").state_key
    state = {"best_model_path": str(folder / "best-step0000020.ckpt"), "dirpath": str(folder)}
    torch.save({"callbacks": {key: state}}, folder / "last.ckpt")
    assert resolve_checkpoint(tmp_path) == folder / "best-step0000020.ckpt"


def test_ckpt_path_last_resumes_this_experiment_among_the_logger_folders_versions(
    tiny_sample, tmp_path, monkeypatch, capsys
):
    """Two experiments in runs/sample (version_0: lr_head 0.01, version_1: 0.02, newer):
    --ckpt_path last of the first continues version_0 (it took version_1's and refused)."""
    monkeypatch.chdir(tmp_path)
    main(sample_args(tiny_sample, "--trainer.max_steps", "3"))
    main(sample_args(tiny_sample, "--trainer.max_steps", "3", "--model.lr_head", "0.02"))
    runs = tmp_path / "runs/sample"
    resumed = main(sample_args(tiny_sample, "--ckpt_path", "last", "--trainer.max_steps", "6"))
    assert resumed.trainer.global_step == 6
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    assert saved_step(runs / "version_0/checkpoints/last.ckpt") == 6
    assert saved_step(runs / "version_1/checkpoints/last.ckpt") == 3
    with pytest.raises(SystemExit) as refused:  # a third experiment: the newest is named
        main(sample_args(tiny_sample, "--ckpt_path", "last", "--model.lr_head", "0.03"))
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "written by another experiment; options that differ: model.lr_head 0.01 -> 0.03" in err


@pytest.mark.parametrize("devices", ["None", "abc", ""])
def test_trainer_devices_text_lightning_cannot_parse_is_refused(
    tmp_path, monkeypatch, capsys, devices
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        main(["--config", str(SAMPLE_YAML), f"--trainer.devices={devices}"])
    assert refused.value.code == 2
    assert (
        "error: trainer.devices must be auto, a number of devices (-1: all) or device indices "
        f"('0,1' or [0, 1]), got {devices!r}"
    ) in capsys.readouterr().err
