"""Two CPU processes (DDP over gloo) give the single-process numbers exactly.

One DDP fit and one DDP evaluation of the tiny sample data, each launched the way a user
launches them (Lightning re-runs the command once per extra process). Aff-Wild2 val of the tiny
sample has an odd number of frames (263), so the ranks get 132 and 131 of them: a padding
sampler would count one frame twice and change F1 and accuracy.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.training.module import ExpressionModule

REPO = Path(__file__).resolve().parent.parent

#: Runs ferlit.fit as ``python probe.py <fit options>`` and records, per rank, what the rank
#: trained and validated on and the class weights it got (test output only, beside the run).
PROBE = """
import json, os, sys
import lightning.pytorch as pl
from ferlit.training.cli import main

class Probe(pl.Callback):
    def __init__(self):
        self.train, self.val = [], []
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.train += batch[2].tolist()
    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val += batch[2].tolist()
    def on_fit_end(self, trainer, module):
        report = {"world_size": trainer.world_size, "class_weights": module.class_weights.tolist(),
                  "train": self.train, "val": self.val}
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(report, f)

cli = main(sys.argv[1:], run=False)
cli.trainer.callbacks.append(Probe())
cli.trainer.fit(cli.model, cli.datamodule)
"""


def data_args(sample) -> list[str]:
    return [
        *("--data.affwild2_dir", str(sample.affwild2_dir), "--data.expw_dir", str(sample.expw_dir)),
        *("--data.num_workers", "0"),
    ]


def launch(command: list[str], **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def ddp_fit(tiny_sample, tmp_path_factory):
    """4 optimizer steps on 2 processes, validating once at step 4."""
    out = tmp_path_factory.mktemp("ddp")
    probe_dir = out / "probe"
    probe_dir.mkdir()
    (out / "probe.py").write_text(PROBE)
    args = [
        *data_args(tiny_sample),
        *("--model.backbone", "seresnet18", "--model.input_size", "32"),
        *("--model.backbone_kwargs", '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}'),
        *("--model.lr_head", "0.01", "--model.lr_backbone", "0.01", "--data.batch_size", "4"),
        *("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
        *("--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0"),
        *("--trainer.max_steps", "4", "--val_every_n_steps", "4"),
        *("--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
        *("--trainer.logger.save_dir", str(out / "runs"), "--trainer.logger.name", "ddp"),
        *("--trainer.default_root_dir", str(out / "runs")),
    ]
    launch([sys.executable, str(out / "probe.py"), *args], PROBE_DIR=str(probe_dir))
    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in range(2)]
    return out, ranks


def single_process_validation(sample, checkpoint: Path) -> tuple[dict[str, float], torch.Tensor]:
    """val/* of ``checkpoint``'s weights on the whole validation set, in this one process."""
    module = ExpressionModule.load_from_checkpoint(checkpoint, map_location="cpu")
    data = ExpressionDataModule(
        str(sample.affwild2_dir), str(sample.expw_dir), image_size=32, batch_size=5, num_workers=0
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (scores,) = trainer.validate(module, data, verbose=False)
    return scores, module.last_val_confusion


def test_ddp_validation_equals_the_single_process_criterion(tiny_sample, ddp_fit):
    out, ranks = ddp_fit
    val_frames = tiny_sample.manifest["affwild2"]["val"]["samples"]
    assert val_frames % 2 == 1
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [len(r["val"]) for r in ranks] == [(val_frames + 1) // 2, val_frames // 2]
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == list(range(val_frames))  # no padding
    assert not set(ranks[0]["train"]) & set(ranks[1]["train"])
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == 4 * 4

    with open(out / "runs/ddp/version_0/metrics.csv") as f:
        (logged,) = [r for r in csv.DictReader(f) if r.get("val/criterion")]
    assert int(logged["step"]) == 4
    scores, confusion = single_process_validation(
        tiny_sample, out / "runs/ddp/version_0/checkpoints/last.ckpt"
    )
    assert int(confusion.sum()) == val_frames
    for key in ("val/criterion", "val/f1", "val/acc", "val/f1_neutral", "val/f1_happiness"):
        assert float(logged[key]) == scores[key], key  # exactly: one summed confusion matrix
    assert float(logged["val/loss"]) == pytest.approx(scores["val/loss"], rel=1e-5)


def test_every_rank_gets_the_same_class_weights(tiny_sample, ddp_fit):
    _, ranks = ddp_fit
    assert ranks[0]["class_weights"] == ranks[1]["class_weights"]
    expected = ExpressionDataModule(str(tiny_sample.affwild2_dir), str(tiny_sample.expw_dir))
    assert ranks[0]["class_weights"] == pytest.approx(expected.class_weights, rel=1e-6)
    assert max(ranks[0]["class_weights"]) > 1  # the sample data is imbalanced: real weights


def test_only_rank_zero_writes_checkpoints_and_logs(ddp_fit):
    out, _ = ddp_fit
    runs = out / "runs"
    assert [p.name for p in (runs / "ddp").iterdir()] == ["version_0"]
    files = sorted(str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file())
    checkpoints = [f for f in files if f.endswith(".ckpt")]
    assert len(checkpoints) == 2
    assert "ddp/version_0/checkpoints/last.ckpt" in checkpoints
    assert [Path(f).name.startswith("best-step0000004-") for f in checkpoints].count(True) == 1
    assert "ddp/version_0/checkpoints/best_validation.json" in files
    assert [f for f in files if f.endswith("metrics.csv")] == ["ddp/version_0/metrics.csv"]


@pytest.mark.parametrize(
    "entry",
    [["ferlit.evaluate", "--ckpt"], ["ferlit", "predict", "--ckpt_path"]],
    ids=["evaluate", "predict"],  # the stage's name must reach the processes DDP starts
)
def test_ddp_evaluation_equals_the_single_process_one(tiny_sample, ddp_fit, tmp_path, entry):
    out, _ = ddp_fit
    checkpoint = out / "runs/ddp/version_0/checkpoints/last.ckpt"
    command = [sys.executable, "-m", *entry, str(checkpoint)]
    options = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    launch([*command, "--out", str(tmp_path / "ddp"), *options, *ddp])
    report = json.loads((tmp_path / "ddp/metrics.json").read_text())
    _, confusion = single_process_validation(tiny_sample, checkpoint)
    assert report["labelled_frames"] == tiny_sample.manifest["affwild2"]["val"]["samples"]
    assert report["raw"]["confusion"] == confusion.tolist()


#: A callback making one rank's loss NaN at one micro-batch (from 1), for ``--trainer.callbacks``.
NAN_ON_ONE_RANK = """
import lightning.pytorch as pl

class NaNOnRank(pl.Callback):
    def __init__(self, rank: int = 1, micro_batch: int = 2):
        self.rank, self.micro_batch, self.seen = rank, micro_batch, 0
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen += 1
        if trainer.global_rank == self.rank and self.seen == self.micro_batch:
            cls = type(module)
            module.loss = lambda logits, labels: cls.loss(module, logits, labels) * float("nan")
        else:
            module.__dict__.pop("loss", None)
"""


def test_a_nan_loss_on_one_rank_stops_every_rank_naming_the_step(tiny_sample, tmp_path):
    """A loss that turns NaN in one process only (its share of the batch) spoils every rank's
    weights through the gradients' all-reduce. Every rank stops at the same point with the
    message, exit 2: a rank that stopped alone left the other waiting in the next all-reduce
    (a gloo 'Connection closed by peer' traceback; on NCCL a hang until its timeout)."""
    (tmp_path / "nan_on_rank.py").write_text(NAN_ON_ONE_RANK)
    out = tmp_path / "runs"
    args = [
        *data_args(tiny_sample),
        *("--model.backbone", "seresnet18", "--model.input_size", "32"),
        *("--model.backbone_kwargs", '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}'),
        *("--data.batch_size", "4", "--trainer.accelerator", "cpu"),
        *("--trainer.devices", "2", "--trainer.strategy", "ddp"),
        *("--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0"),
        *("--trainer.max_steps", "6", "--val_every_n_steps", "3"),
        *("--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
        *("--trainer.logger.save_dir", str(out), "--trainer.logger.name", "ddp"),
        *("--trainer.default_root_dir", str(out), "--trainer.callbacks+=nan_on_rank.NaNOnRank"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "ferlit.fit", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert "error: the training loss became nan at optimizer step 1 (epoch 0, batch 1)" in (
        result.stderr
    )
    other = "became NaN or infinite in another process at optimizer step 1 (epoch 0, batch 1)"
    assert f"error: the training loss {other}" in result.stderr
    assert not list(out.rglob("*.ckpt"))  # the first validation (step 3) never came
