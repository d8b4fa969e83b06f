"""What a W&B sweep agent does with experiments/sweep.yaml, done here without a W&B server.

The agent's command is built from the sweep's ``command:`` with W&B's own helpers
(``wandb.sdk.launch.sweeps.utils``: ``${envvar:...}`` and the ``${args}`` flags) and the
substitution of ``wandb.wandb_agent.Agent._command_run`` (``${env}`` -> /usr/bin/env,
``${interpreter}`` -> python, ``${program}``). Values are sampled from each parameter's
distribution as the sweep would.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ferlit.data.datamodule import class_weights_from_counts
from ferlit.training.cli import main

REPO = Path(__file__).resolve().parent.parent
SWEEP = yaml.safe_load((REPO / "experiments/sweep.yaml").read_text())
CLASS_WEIGHTING = ["inverse_frequency", "sqrt_inverse_frequency", "none"]


def sample(spec: dict, rng: np.random.Generator):
    """One value of a sweep parameter, from the distributions W&B documents."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][rng.integers(len(spec["values"]))]
    low, high = spec["min"], spec["max"]
    distribution = spec.get("distribution")
    if distribution == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if distribution == "uniform":
        return float(rng.uniform(low, high))
    if distribution == "int_uniform":
        return int(rng.integers(low, high + 1))
    raise AssertionError(f"sweep.yaml: this test cannot sample distribution {distribution!r}")


def suggestion(seed: int, **fixed) -> dict:
    rng = np.random.default_rng(seed)
    return {name: sample(spec, rng) for name, spec in SWEEP["parameters"].items()} | fixed


def agent_command(values: dict) -> list[str]:
    """The command line a W&B agent runs for these parameter values."""
    from wandb.sdk.launch.sweeps import utils

    command = utils.create_sweep_command(list(SWEEP["command"]))
    macros = utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [SWEEP["program"]]}
    line: list[str] = []
    for item in command:
        item = str(item)
        if item.startswith("${") and item.endswith("}"):
            line += macros.get(item[2:-1]) or []
        else:
            line.append(item)
    return line


def cli_args(command: list[str]) -> list[str]:
    """The arguments ``python -m ferlit.fit`` receives in that command."""
    assert command[:4] == ["/usr/bin/env", "python", "-m", "ferlit.fit"]
    return command[4:]


@pytest.fixture
def agent_env(tiny_sample, monkeypatch):
    """The agent's working folder (the repository) and data folders from its environment."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("FERLIT_AFFWILD2_DIR", str(tiny_sample.affwild2_dir))
    monkeypatch.setenv("FERLIT_EXPW_DIR", str(tiny_sample.expw_dir))
    return tiny_sample


def test_sweep_is_a_bayesian_search_of_val_criterion_over_the_recipe():
    assert SWEEP["method"] == "bayes"
    assert SWEEP["metric"] == {"name": "val/criterion", "goal": "maximize"}
    assert {
        "model.lr_head",
        "model.lr_backbone",
        "model.weight_decay",
        "data.augment_strength",
        "data.class_weighting",
    } <= set(SWEEP["parameters"])
    assert SWEEP["parameters"]["data.class_weighting"]["values"] == CLASS_WEIGHTING
    command = SWEEP["command"]
    # W&B passes `program` as one argument, so `-m` must be an item of its own; ${args} is last
    # so that the sweep's values override both YAML files.
    assert command[command.index("-m") + 1] == "${program}" and SWEEP["program"] == "ferlit.fit"
    assert command[-1] == "${args}"
    assert "experiments/cafarelli2020.yaml" in command
    assert "experiments/logger/wandb.yaml" in command


def test_agent_command_runs_the_cli_and_every_value_reaches_the_config(agent_env, tmp_path):
    values = suggestion(seed=1)
    command = agent_command(values)
    assert command[-len(values) :] == [f"--{k}={v}" for k, v in values.items()]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [*command, "--print_config"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    for name, value in values.items():
        section, option = name.split(".")
        assert config[section][option] == (
            pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
        ), name
    assert config["data"]["affwild2_dir"] == str(agent_env.affwild2_dir)
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert config["val_every_n_steps"] == 3920  # the rest is the paper's


@pytest.mark.parametrize("seed,weighting", list(enumerate(CLASS_WEIGHTING)))
def test_sampled_values_reach_the_model_and_the_data(agent_env, wandb_offline, seed, weighting):
    values = suggestion(seed, **{"data.class_weighting": weighting})
    cli = main(cli_args(agent_command(values)), run=False)
    model, data = cli.model, cli.datamodule
    groups = {g["name"]: g for g in model.configure_optimizers().param_groups}
    assert groups["head"]["lr"] == values["model.lr_head"]
    assert groups["backbone"]["lr"] == values["model.lr_backbone"]
    assert {g["weight_decay"] for g in groups.values()} == {values["model.weight_decay"]}
    s = values["data.augment_strength"]
    jitter = data.augmentation
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.hflip) == (
        pytest.approx(0.4 * s),
        pytest.approx(0.3 * s),
        pytest.approx(0.25 * s),
        pytest.approx(min(0.5 * s, 0.5)),
        0.5,
    )
    expected = class_weights_from_counts(data.class_counts, weighting)
    assert torch.allclose(model.class_weights, torch.tensor(expected, dtype=torch.float32))
    assert (model.class_weights == 1).all() == (weighting == "none")


def test_a_null_sweep_value_reaches_the_config_as_null(agent_env, capsys):
    # A sweep parameter with `values: [null, ...]` reaches the command as --x=None (str(None)).
    values = suggestion(seed=2) | {"model.pretrained": None, "data.max_class_share": None}
    command = agent_command(values)
    assert "--model.pretrained=None" in command and "--data.max_class_share=None" in command
    with pytest.raises(SystemExit) as stop:
        main([*cli_args(command), "--print_config"])
    assert stop.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["pretrained"] is None and config["data"]["max_class_share"] is None
    assert config["model"]["lr_head"] == pytest.approx(values["model.lr_head"], rel=1e-12)


def test_agent_without_data_variables_names_them(agent_env, wandb_offline, monkeypatch, capsys):
    monkeypatch.delenv("FERLIT_AFFWILD2_DIR")
    with pytest.raises(SystemExit) as exit_:
        main(cli_args(agent_command(suggestion(seed=0))), run=False)
    assert exit_.value.code == 2
    assert "FERLIT_AFFWILD2_DIR: Aff-Wild2 folder does not exist" in capsys.readouterr().err


TINY = [
    "--model.backbone=seresnet18",
    '--model.backbone_kwargs={"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}',
    "--model.input_size=32",
    "--data.batch_size=4",
    "--data.num_workers=0",
    "--trainer.accelerator=cpu",
    "--trainer.accumulate_grad_batches=1",
    "--trainer.max_steps=2",
    "--val_every_n_steps=1",
    "--trainer.limit_val_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
]


def as_agent_run(monkeypatch, tmp_path: Path, run_id: str, values: dict) -> None:
    """The environment a W&B agent gives one run of sweep ``testsweep``."""
    import wandb

    wandb.finish()
    wandb.teardown()  # W&B reads WANDB_* once per process setup
    params = tmp_path / f"config-{run_id}.yaml"
    params.write_text(yaml.safe_dump({k: {"value": v} for k, v in values.items()}))
    monkeypatch.setenv("WANDB_SWEEP_ID", "testsweep")
    monkeypatch.setenv("WANDB_RUN_ID", run_id)
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))


def test_two_runs_of_one_sweep_checkpoint_into_their_own_folders(
    agent_env, wandb_offline, monkeypatch, tmp_path
):
    save_dir = tmp_path / "runs"
    folders = {}
    for seed, run_id in enumerate(("sweeprun1", "sweeprun2")):
        values = suggestion(seed)
        as_agent_run(monkeypatch, tmp_path, run_id, values)
        args = cli_args(agent_command(values))
        cli = main([*args, *TINY, f"--trainer.logger.init_args.save_dir={save_dir}"])
        assert cli.trainer.logger.version == run_id
        folders[run_id] = Path(cli.trainer.checkpoint_callback.dirpath)
        saved = yaml.safe_load((folders[run_id].parent / "config.yaml").read_text())
        assert saved["model"]["lr_head"] == values["model.lr_head"]
    assert folders == {r: save_dir / "ferlit" / r / "checkpoints" for r in folders}
    for folder in folders.values():
        names = sorted(p.name for p in folder.iterdir())
        assert names[-1] == "last.ckpt" and names[0].startswith("best-step")

    # A fixed checkpoint.dirpath (say, in a user's experiment YAML) still gets one folder per run.
    fixed = tmp_path / "ckpts"
    cli = main([*args, *TINY, f"--checkpoint.dirpath={fixed}"], run=False)
    assert Path(cli.trainer.checkpoint_callback.dirpath) == fixed / "sweeprun2"


FAKE_WANDB = """#!/bin/sh
echo "$@" > "$(dirname "$0")/../args"
echo "wandb: Creating sweep from: $2" >&2
{output}
exit {status}
"""


def fake_venv(tmp_path: Path, output: str, status: int = 0) -> Path:
    """A venv whose ``wandb`` prints what ``wandb sweep`` prints, without a W&B server."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    wandb = venv / "bin" / "wandb"
    wandb.write_text(FAKE_WANDB.format(output=output, status=status))
    wandb.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: `make install` has nothing to do
    return venv


def test_make_sweep_creates_the_sweep_and_prints_the_agent_command(tmp_path):
    import wandb.cli.cli

    # The line the fake prints is the one wandb's `sweep` command prints.
    assert 'f"Run sweep agent with: {styled_path}"' in Path(wandb.cli.cli.__file__).read_text()
    venv = fake_venv(
        tmp_path,
        'echo "wandb: Creating sweep with ID: abc123" >&2\n'
        'echo "wandb: Run sweep agent with: wandb agent me/ferlit/abc123" >&2',
    )
    done = subprocess.run(
        ["make", "-s", "sweep", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (venv / "args").read_text().split() == ["sweep", "experiments/sweep.yaml"]
    lines = done.stdout.splitlines()
    assert f"  source {venv}/bin/activate" in lines
    assert (
        "  FERLIT_AFFWILD2_DIR=/data/Aff-Wild2 FERLIT_EXPW_DIR=/data/ExpW "
        "wandb agent me/ferlit/abc123"
    ) in lines


def test_make_sweep_fails_when_wandb_creates_no_sweep(tmp_path):
    venv = fake_venv(tmp_path, 'echo "wandb: ERROR api_key not configured (no-tty)." >&2', 1)
    done = subprocess.run(
        ["make", "-s", "sweep", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "wandb: ERROR api_key not configured (no-tty)." in done.stdout
    assert "make sweep: no sweep was created" in done.stderr
