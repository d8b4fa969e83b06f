"""The shipped experiments, composed from groups, resolve as users run them (relative paths, any cwd)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def resolved(config: str, cwd: Path, *extra: str) -> dict:
    """``python -m ferlit.fit --config <config> --print_config`` run from ``cwd``, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "ferlit.fit", "--config", config, *extra, "--print_config"],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def sample_from_repo() -> dict:
    return resolved("experiments/sample.yaml", REPO)


def test_sample_reads_the_paper_and_changes_only_its_differences(sample_from_repo):
    c = sample_from_repo
    # its own values
    assert c["val_every_n_steps"] == 150
    assert c["trainer"]["accumulate_grad_batches"] == 1
    assert c["trainer"]["max_steps"] == 1500
    assert c["trainer"]["max_epochs"] is None
    assert c["trainer"]["logger"]["init_args"]["name"] == "sample"
    assert c["model"]["backbone"] == "seresnet18"
    assert c["model"]["backbone_kwargs"] == {"channels": [16, 32, 64, 128], "layers": [1, 1, 1, 1]}
    assert c["model"]["input_size"] == 64
    assert (c["model"]["lr_head"], c["model"]["lr_backbone"]) == (0.05, 0.05)
    assert c["data"]["batch_size"] == 32 and c["data"]["num_workers"] == 2
    assert c["early_stopping"]["patience"] == 10
    # the paper's, read from cafarelli2020.yaml and its groups
    assert c["trainer"]["logger"]["init_args"]["save_dir"] == "runs"
    assert c["trainer"]["precision"] == "32-true"
    assert c["data"]["hue"] == 0.5 and c["data"]["saturation"] == 0.25
    assert c["data"]["class_weighting"] == "inverse_frequency"
    assert c["checkpoint"]["monitor"] == "val/criterion"


def test_experiments_resolve_the_same_from_another_working_directory(tmp_path, sample_from_repo):
    assert resolved(str(REPO / "experiments/sample.yaml"), tmp_path) == sample_from_repo


def test_abaw2024_is_the_paper_with_eight_classes_and_its_layout(tmp_path):
    paper = resolved(str(REPO / "experiments/cafarelli2020.yaml"), tmp_path)
    abaw = resolved(str(REPO / "experiments/abaw2024.yaml"), tmp_path)
    assert abaw["data"]["num_classes"] == 8  # model.num_classes is linked from it
    assert abaw["data"]["affwild2_layout"] == "abaw2024"
    assert abaw["trainer"]["logger"]["init_args"]["name"] == "abaw2024"
    for group in ("model", "trainer", "data"):
        differing = {k for k in paper[group] if paper[group][k] != abaw[group][k] and k != "logger"}
        assert differing <= {"num_classes", "affwild2_layout"}, (group, differing)
    assert paper["trainer"]["accumulate_grad_batches"] == 4
    assert paper["model"]["backbone"] == "legacy_seresnet50"


def test_a_parent_config_that_is_missing_is_named(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("config: parent.yaml\ntrainer.max_steps: 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "ferlit.fit", "--config", str(child), "--print_config"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert str(tmp_path / "parent.yaml") in done.stderr
