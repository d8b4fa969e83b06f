"""Stopping and resuming changes nothing: the same weights, bit for bit, and the same validations.

The runs are tiny (a narrow SE-ResNet-18 on 32-pixel faces of the tiny sample data) but have
everything that can go wrong on resume: gradient accumulation (2 micro-batches per step), epochs
of 4 optimizer steps (so the runs cross epoch boundaries and stop mid-epoch), validation every 3
steps, augmentation on, early stopping and best-checkpoint bookkeeping.
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
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from ferlit.data.datamodule import EpochSeededDataset, FaceDataset
from ferlit.data.samplers import EpochShuffleSampler, ResumableLoader
from ferlit.data.transforms import Augmentation, build_transform
from ferlit.errors import ConfigError
from ferlit.training.cli import main

REPO = Path(__file__).resolve().parent.parent
MAX_STEPS = 12
STEPS_PER_EPOCH = 4  # limit_train_batches 8 micro-batches, 2 per step


def run_args(sample, out: Path, *extra: str) -> list[str]:
    return [
        *("--data.affwild2_dir", str(sample.affwild2_dir), "--data.expw_dir", str(sample.expw_dir)),
        *("--model.backbone", "seresnet18", "--model.input_size", "32"),
        *("--model.backbone_kwargs", '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}'),
        *("--model.lr_head", "0.01", "--model.lr_backbone", "0.01"),
        *("--data.batch_size", "4", "--data.num_workers", "0"),
        *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *("--trainer.accumulate_grad_batches", "2", "--trainer.limit_train_batches", "8"),
        *("--trainer.limit_val_batches", "3", "--trainer.num_sanity_val_steps", "0"),
        *("--trainer.max_steps", str(MAX_STEPS), "--val_every_n_steps", "3"),
        *("--trainer.log_every_n_steps", "1", "--early_stopping.patience", "3"),
        *("--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
        *("--trainer.logger.save_dir", str(out), "--trainer.logger.name", "run"),
        *("--trainer.logger.flush_logs_every_n_steps", "1"),
        *("--trainer.default_root_dir", str(out)),
        *extra,
    ]


class SignalAt(pl.Callback):
    """Sends this process ``signum`` once, after the ``micro_batch``-th micro-batch (from 1)."""

    def __init__(self, micro_batch: int, signum: str = "SIGTERM") -> None:
        self.micro_batch = micro_batch
        self.signum = signal.Signals[signum]
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.micro_batch:
            os.kill(os.getpid(), self.signum)


def validations(out: Path) -> list[tuple[int, float]]:
    """(step, val/criterion) of every validation logged under ``out``, over all versions."""
    rows = []
    for metrics in sorted(out.glob("run/version_*/metrics.csv")):
        with open(metrics) as f:
            rows += [r for r in csv.DictReader(f) if r.get("val/criterion")]
    return [(int(r["step"]), float(r["val/criterion"])) for r in rows]


def train_losses(out: Path) -> list[float]:
    rows = []
    for metrics in sorted(out.glob("run/version_*/metrics.csv")):
        with open(metrics) as f:
            rows += [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return rows


def weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(tiny_sample, tmp_path_factory):
    """The reference: one run of MAX_STEPS optimizer steps, never stopped."""
    out = tmp_path_factory.mktemp("uninterrupted")
    cli = main(run_args(tiny_sample, out))
    assert cli.trainer.global_step == MAX_STEPS
    stopper = cli.trainer.early_stopping_callback
    return {
        "out": out,
        "weights": weights(cli),
        "validations": validations(out),
        "losses": train_losses(out),
        "patience": (stopper.wait_count, float(stopper.best_score)),
        "best": float(cli.trainer.checkpoint_callback.best_model_score),
    }


# -- the sampler and the loader ----------------------------------------------------------------


def test_loader_resumes_the_epoch_where_its_state_was_saved():
    data = TensorDataset(torch.arange(40))
    sampler = EpochShuffleSampler(40, batch_size=4, accumulate_grad_batches=2, seed=3)
    sampler.set_epoch(2)
    loader = ResumableLoader(data, batch_size=4, sampler=sampler)
    whole = [b[0].tolist() for b in loader]
    assert len(whole) == 10 and sorted(sum(whole, [])) == list(range(40))

    batches = iter(loader)
    first = [next(batches)[0].tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["position"] == 12

    fresh = ResumableLoader(data, batch_size=4, sampler=EpochShuffleSampler(40, 4, 2, seed=3))
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)  # what Lightning does before iterating: same epoch, kept
    rest = [b[0].tolist() for b in fresh]
    assert first + rest == whole
    assert [b[0].tolist() for b in fresh] == whole  # the next pass is a whole epoch again
    fresh.sampler.set_epoch(3)
    assert len(list(fresh)) == 10 and [b[0].tolist() for b in fresh] != whole


def test_loader_position_counts_batches_handed_out_not_read_ahead_by_workers():
    data = TensorDataset(torch.arange(64))
    sampler = EpochShuffleSampler(64, batch_size=4)
    loader = ResumableLoader(data, batch_size=4, sampler=sampler, num_workers=2, prefetch_factor=4)
    batches = iter(loader)
    next(batches)
    next(batches)
    assert loader.state_dict()["position"] == 8
    del batches


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"seed": 4}, "seed 3 -> 4"),
        ({"world_size": 2}, "world_size 1 -> 2"),
        ({"accumulate_grad_batches": 1}, "samples_per_step 8 -> 4"),
        ({"num_samples": 41}, "num_samples 40 -> 41"),
    ],
)
def test_a_position_in_another_order_is_refused(changed, message):
    saved = EpochShuffleSampler(40, 4, 2, seed=3)
    options = {"num_samples": 40, "batch_size": 4, "accumulate_grad_batches": 2, "seed": 3}
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        EpochShuffleSampler(**(options | changed)).load_state_dict(saved.state_dict())
    assert "--model.pretrained" in str(error.value)


def test_augmentation_depends_on_seed_epoch_and_sample_only(tiny_sample):
    from ferlit.data.readers.affwild2 import read_affwild2

    index = read_affwild2(tiny_sample.affwild2_dir, "train", 7)
    transform = build_transform(32, Augmentation())
    data = EpochSeededDataset(FaceDataset(index, transform), seed=0)
    first = data[(0, 5)][0]
    data[(0, 6)]  # another sample in between changes nothing
    assert torch.equal(data[(0, 5)][0], first)
    assert not torch.equal(data[(1, 5)][0], first)  # another epoch, another draw
    other_seed = EpochSeededDataset(FaceDataset(index, transform), seed=1)
    assert not torch.equal(other_seed[(0, 5)][0], first)
    # Two workers read the same keys and get the same images (albumentations alone would draw
    # from copies of one generator, or from OS entropy).
    sampler = EpochShuffleSampler(len(index), 4, keyed=True)
    keys = list(sampler)[:8]
    loader = ResumableLoader(data, batch_size=4, sampler=sampler, num_workers=2)
    images = torch.cat([b[0] for _, b in zip(range(2), loader, strict=False)])
    assert all(torch.equal(images[j], data[keys[j]][0]) for j in range(8))


# -- whole runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal_at", "stopped_at"),
    [
        (9, 5),  # mid-step (micro-batch 1 of 2 of step 5): stops after step 5, no validation
        (11, 6),  # mid-step 6: stops after step 6 and its validation (both mid-epoch 1)
    ],
)
def test_sigterm_then_resume_ends_as_if_never_stopped(
    tiny_sample, tmp_path, uninterrupted, capsys, signal_at, stopped_at
):
    sigterm = [
        "--trainer.callbacks+=test_resume.SignalAt",
        *("--trainer.callbacks.micro_batch", str(signal_at)),
    ]
    with pytest.raises(SystemExit) as stop:
        main(run_args(tiny_sample, tmp_path, *sigterm))
    assert stop.value.code == 143
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM after optimizer step {stopped_at}" in err
    checkpoints = tmp_path / "run/version_0/checkpoints"
    assert f"resumable checkpoint {checkpoints / 'last.ckpt'}" in err
    saved = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == stopped_at
    loader_state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    epoch, steps_into_epoch = divmod(stopped_at, STEPS_PER_EPOCH)
    assert loader_state["epoch"] == epoch
    assert loader_state["position"] == steps_into_epoch * 2 * 4  # samples trained on this epoch

    resumed = main(run_args(tiny_sample, tmp_path, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == MAX_STEPS
    assert_bitwise_equal(weights(resumed), uninterrupted["weights"])
    assert validations(tmp_path) == uninterrupted["validations"]
    assert train_losses(tmp_path) == uninterrupted["losses"]
    stopper = resumed.trainer.early_stopping_callback
    assert (stopper.wait_count, float(stopper.best_score)) == uninterrupted["patience"]
    # One best-checkpoint bookkeeping across the stop: the resumed run writes beside the first.
    best = resumed.trainer.checkpoint_callback
    assert float(best.best_model_score) == uninterrupted["best"]
    assert Path(best.best_model_path).parent == checkpoints
    assert len(list(checkpoints.glob("best-*.ckpt"))) == 1
    assert not list((tmp_path / "run/version_1").glob("checkpoints/*"))
    summary = json.loads((checkpoints / "best_validation.json").read_text())
    assert [tuple(h) for h in summary["history"]] == uninterrupted["validations"]


def test_sigterm_to_a_running_fit_process(tiny_sample, tmp_path, uninterrupted):
    command = [sys.executable, "-m", "ferlit.fit", *run_args(tiny_sample, tmp_path)]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run/version_0/metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and "train/loss" in metrics.read_text()):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no training step within 120 s"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    stopped_at = int(re.search(r"stopped by SIGTERM after optimizer step (\d+)", err)[1])
    assert 0 < stopped_at < MAX_STEPS, "the run ended before the signal: lower its speed"

    resumed = main(run_args(tiny_sample, tmp_path, "--ckpt_path", "last"))
    assert_bitwise_equal(weights(resumed), uninterrupted["weights"])
    assert validations(tmp_path) == uninterrupted["validations"]


def test_same_seed_same_run_whatever_the_number_of_workers(tiny_sample, tmp_path, uninterrupted):
    again = main(run_args(tiny_sample, tmp_path, "--data.num_workers", "2"))
    assert_bitwise_equal(weights(again), uninterrupted["weights"])
    assert validations(tmp_path) == uninterrupted["validations"]
    assert train_losses(tmp_path) == uninterrupted["losses"]
    assert len(set(np.round(uninterrupted["losses"], 6))) > 10  # losses vary: a real run


def test_ckpt_path_last_without_a_checkpoint_starts_a_new_run(tiny_sample, tmp_path, capsys):
    cli = main(run_args(tiny_sample, tmp_path, "--ckpt_path", "last"), run=False)
    from ferlit.training.cli import resume_checkpoint

    assert resume_checkpoint(cli.trainer, "last") is None
    assert "no last.ckpt" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--ckpt_path: no checkpoint file"):
        resume_checkpoint(cli.trainer, str(tmp_path / "nothing.ckpt"))


def test_slurm_requeue_signal_stops_saves_requeues_and_resumes(
    tiny_sample, tmp_path, uninterrupted, monkeypatch, capsys
):
    """experiments/slurm/ddp.yaml under a stand-in SLURM: one task, a recording ``scontrol``."""
    calls = tmp_path / "scontrol-calls"
    scontrol = tmp_path / "bin/scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    slurm = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    slurm |= {"SLURM_JOB_NAME": "ferlit", "SLURM_NODELIST": "localhost", "SLURM_JOB_ID": "4242"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    config = ["--config", str(REPO / "experiments/slurm/ddp.yaml")]
    requeue = [
        "--trainer.callbacks+=test_resume.SignalAt",
        *("--trainer.callbacks.micro_batch", "9", "--trainer.callbacks.signum", "SIGUSR1"),
    ]
    with pytest.raises(SystemExit) as stop:
        main([*config, *run_args(tiny_sample, tmp_path, *requeue)])
    assert stop.value.code == 143
    assert "stopped by SIGUSR1 after optimizer step 5" in capsys.readouterr().err
    assert calls.read_text() == "requeue 4242\n"
    for checkpoint in (
        tmp_path / "run/version_0/checkpoints/last.ckpt",
        tmp_path / "hpc_ckpt_1.ckpt",
    ):
        assert torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"] == 5

    # The requeued job: the same command with --ckpt_path last, as fit.sbatch runs it.
    resumed = main([*config, *run_args(tiny_sample, tmp_path, "--ckpt_path", "last")])
    assert type(resumed.trainer.strategy).__name__ == "DDPStrategy"
    assert_bitwise_equal(weights(resumed), uninterrupted["weights"])
    assert validations(tmp_path) == uninterrupted["validations"]


def test_a_run_folder_that_cannot_be_written_is_refused_before_training(
    tiny_sample, tmp_path, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = run_args(tiny_sample, tmp_path, "--trainer.default_root_dir", str(blocker / "runs"))
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"trainer.default_root_dir {blocker / 'runs'}: cannot be created (Not a directory)" in err
    )
    assert not (tmp_path / "run").exists()
