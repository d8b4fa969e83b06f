"""Shared fixtures: tiny JPEGs written with OpenCV, the library ferlit decodes them with."""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np
import pytest


def _write_jpeg(path: str | os.PathLike, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        100,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    if not cv2.imwrite(os.fspath(path), bgr, params):
        raise OSError(f"cv2.imwrite failed for {path}")


@pytest.fixture
def write_jpeg() -> Callable[[str | os.PathLike, np.ndarray], None]:
    """Write an RGB uint8 array as a quality-100, 4:4:4 JPEG, creating its folder.

    Without chroma subsampling, solid colours in regions aligned to JPEG's 8-pixel blocks decode
    within a grey level or two, so tests can tell images and crops apart pixel by pixel.
    """
    return _write_jpeg


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """A small copy of the sample data (both data sets, every quirk), shared by the whole run."""
    from ferlit.data.sample import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("sample") / "data", scale=0.15, progress=False)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dirs(tmp_path_factory):
    """Index-cache entries and sample data written by tests stay out of the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FERLIT_CACHE_DIR", str(tmp_path_factory.mktemp("index-cache")))
    mp.setenv("FERLIT_SAMPLE_DIR", str(tmp_path_factory.mktemp("sample-cache") / "sample"))
    yield
    mp.undo()


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline, everything it writes under ``tmp_path/wandb-home``; runs finished afterwards.

    W&B reads these variables once per process setup, hence the teardown on both sides. Sweep
    variables a developer's shell might hold are cleared so that no test joins a real sweep.
    """
    import wandb

    wandb.teardown()
    home = tmp_path / "wandb-home"
    for var, folder in (
        ("WANDB_DIR", "runs"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        monkeypatch.setenv(var, str(home / folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    yield home
    wandb.finish()
    wandb.teardown()


#: The narrow SE-ResNet-18 of the tests' runs: 4 stages of 8-64 channels, one block each.
TINY_BACKBONE = (
    *("--model.backbone", "seresnet18"),
    *("--model.backbone_kwargs", '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}'),
)


def tiny_run_args(sample, tmp_path, *extra: str) -> list[str]:
    """The options of a tiny CPU fit (``python -m ferlit fit``) on ``sample`` (``tiny_sample``,
    :func:`ferlit.data.sample.write_sample_data`): :data:`TINY_BACKBONE` at 32 px, learning
    rates 0.01, batches of 4 read in this process, no progress bar, a CSVLogger run ``run``
    under ``tmp_path``; then ``extra`` (the run's length and validation)."""
    return [
        *("--data.affwild2_dir", str(sample.affwild2_dir)),
        *("--data.expw_dir", str(sample.expw_dir)),
        *TINY_BACKBONE,
        *("--model.input_size", "32", "--model.lr_backbone", "0.01", "--model.lr_head", "0.01"),
        *("--data.batch_size", "4", "--data.num_workers", "0"),
        *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        *("--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
        *("--trainer.logger.save_dir", str(tmp_path), "--trainer.logger.name", "run"),
        *("--trainer.default_root_dir", str(tmp_path)),
        *extra,
    ]


def _train_and_save(path, **module_kwargs):
    """A narrow SE-ResNet-18 (32-pixel input) fitted 2 steps on random faces by a real Lightning
    Trainer, then ``trainer.save_checkpoint(path)``: the checkpoint ``python -m ferlit.fit``
    writes, without its data pipeline. Returns the module, in eval mode."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from ferlit.training.module import ExpressionModule

    module = ExpressionModule(
        backbone="seresnet18",
        backbone_kwargs={"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]},
        input_size=32,
        lr_head=0.01,
        lr_backbone=0.01,
        **module_kwargs,
    )
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(8) % 7
    loader = DataLoader(TensorDataset(images, labels, torch.arange(8)), batch_size=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=os.path.dirname(os.fspath(path)),
    )
    trainer.fit(module, loader)
    trainer.save_checkpoint(path)
    return module.eval()


@pytest.fixture(scope="session")
def train_and_save():
    """``train_and_save(path, **ExpressionModule options) -> module``: a small trained checkpoint."""
    return _train_and_save


@pytest.fixture(autouse=True)
def _torch_threads_given_back():
    """A command run in-process may set torch's threads for the whole process (bench's and
    export's --threads): each test hands the count back, so that in-process fits sum in the same
    order as fits in subprocesses (test_resume compares them bit for bit)."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
