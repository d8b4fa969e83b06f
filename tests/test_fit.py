"""What a user of ``python -m ferlit.fit`` relies on: the recipe, the cadence, the checkpoints."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_BACKBONE, tiny_run_args  # noqa: F401 (TINY_BACKBONE: test_schedule's)

from ferlit.errors import TrainingDiverged
from ferlit.training.cli import main
from ferlit.training.module import ExpressionModule

REPO = Path(__file__).resolve().parent.parent


def tiny_module(**kwargs) -> ExpressionModule:
    defaults = dict(
        backbone="seresnet18",
        backbone_kwargs={"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]},
        num_classes=7,
    )
    return ExpressionModule(**(defaults | kwargs))


def fit_args(sample_data, tmp_path: Path, *extra: str) -> list[str]:
    """A fast CPU run on the tiny sample tree, logging to tmp_path."""
    limits = ("--trainer.limit_val_batches", "3", "--trainer.num_sanity_val_steps", "0")
    return tiny_run_args(sample_data, tmp_path, *limits, *extra)


def logged_rows(cli) -> list[dict[str, str]]:
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def validations(cli) -> list[dict[str, str]]:
    return [row for row in logged_rows(cli) if row.get("val/criterion")]


def test_optimizer_has_the_papers_two_learning_rates():
    module = tiny_module()
    optimizer = module.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"head", "backbone"}
    assert groups["head"]["lr"] == 1e-3 and groups["backbone"]["lr"] == 1e-6
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 0.005 for g in groups.values())
    classifier = module.net.backbone.get_classifier()
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in classifier.parameters()}
    n_backbone = sum(p.numel() for p in groups["backbone"]["params"])
    n_all = sum(p.numel() for p in module.parameters())
    assert n_backbone + sum(p.numel() for p in classifier.parameters()) == n_all


def test_weighted_loss_equals_hand_computation():
    weights = [1.0, 22.92, 37.5, 50.66, 3.47, 5.79, 13.55]
    module = tiny_module(class_weights=weights)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 7))
    labels = rng.integers(0, 7, size=10)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    w = np.asarray(weights)[labels]
    expected = -(w * log_softmax[np.arange(10), labels]).sum() / w.sum()
    got = module.loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_real_se_resnet50_trains_one_step():
    module = ExpressionModule(backbone="legacy_seresnet50", num_classes=7)
    assert sum(p.numel() for p in module.net.backbone_parameters()) > 25_000_000
    optimizer = module.configure_optimizers()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    labels = torch.tensor([0, 4])
    before = module.net.backbone.get_classifier().weight.detach().clone()
    loss = module.loss(module(images), labels)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert module(images).shape == (2, 7)
    assert not torch.equal(before, module.net.backbone.get_classifier().weight)


def test_validation_every_n_optimizer_steps_across_epochs(tiny_sample, tmp_path):
    # 10 micro-batches per epoch, 2 accumulated: 5 optimizer steps per epoch, so the
    # validations at steps 3, 6, 9 straddle the epoch boundary at step 5.
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--trainer.accumulate_grad_batches",
        "2",
        "--trainer.limit_train_batches",
        "10",
        "--trainer.max_steps",
        "10",
        "--val_every_n_steps",
        "3",
    )
    cli = main(args)
    rows = validations(cli)
    assert [int(r["step"]) for r in rows] == [3, 6, 9]
    assert [int(float(r["epoch"])) for r in rows] == [0, 1, 1]
    assert cli.trainer.global_step == 10


def test_fractional_train_limit_with_accumulation_keeps_whole_steps(tiny_sample, tmp_path, capsys):
    # 3 accumulated micro-batches; a fraction that Lightning would make 7 micro-batches per
    # epoch (3 + 3 + 1: a partial step) becomes 6 = 2 whole optimizer steps.
    accumulate = ["--trainer.accumulate_grad_batches", "3"]
    probe = main(fit_args(tiny_sample, tmp_path, *accumulate), run=False)
    batches = len(probe.datamodule.train_index) // (4 * 3) * 3
    assert batches >= 9
    fraction = 7.5 / batches
    args = fit_args(
        tiny_sample,
        tmp_path,
        *accumulate,
        "--trainer.limit_train_batches",
        str(fraction),
        "--trainer.max_steps",
        "8",
        "--val_every_n_steps",
        "4",
        "--early_stopping.patience",
        "100",
    )
    cli = main(args)
    assert cli.trainer.num_training_batches == 6
    rows = validations(cli)
    # 2 steps per epoch: validations after steps 4 and 8, at the ends of epochs 1 and 3.
    assert [int(r["step"]) for r in rows] == [4, 8]
    assert [int(float(r["epoch"])) for r in rows] == [1, 3]
    assert cli.trainer.global_step == 8 and cli.trainer.current_epoch == 4
    err = capsys.readouterr().err
    assert (
        f"trainer.limit_train_batches {fraction} of {batches} micro-batches per epoch: "
        "6 micro-batches = 2 optimizer step(s) of trainer.accumulate_grad_batches 3"
    ) in err


def test_best_checkpoint_has_the_highest_logged_criterion(tiny_sample, tmp_path):
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--trainer.max_steps",
        "8",
        "--val_every_n_steps",
        "2",
        "--early_stopping.patience",
        "100",
    )
    cli = main(args)
    rows = validations(cli)
    assert len(rows) == 4
    best_row = max(rows, key=lambda r: float(r["val/criterion"]))
    checkpoint = cli.trainer.checkpoint_callback
    assert checkpoint.best_model_score.item() == pytest.approx(float(best_row["val/criterion"]))
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    assert state["global_step"] == int(best_row["step"])
    assert Path(checkpoint.last_model_path).name == "last.ckpt"
    summary = yaml.safe_load(
        (Path(checkpoint.best_model_path).parent / "best_validation.json").read_text()
    )
    assert summary["step"] == int(best_row["step"])
    assert summary["val/criterion"] == pytest.approx(float(best_row["val/criterion"]))
    assert {f"val/f1_{c}" for c in ("neutral", "anger", "happiness", "surprise")} <= set(summary)


def test_nan_loss_stops_naming_the_step_and_keeps_the_best_checkpoint(
    tiny_sample, tmp_path, capsys
):
    """The loss's finiteness is read a micro-batch late (ferlit/training/divergence.py), but
    before every validation and save: every checkpoint left holds finite weights."""
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--model.lr_head",
        "1e30",
        "--model.lr_backbone",
        "1e30",
        "--trainer.max_steps",
        "20",
        "--val_every_n_steps",
        "1",
    )
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert re.search(
        r"the training loss became (nan|inf) at optimizer step \d+", capsys.readouterr().err
    )
    assert list(tmp_path.rglob("best-*.ckpt")), "the best checkpoint so far must survive"
    for path in tmp_path.rglob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path


def test_nan_loss_message_names_the_step():
    """The loss's finiteness is read one micro-batch later (no wait for a GPU per step,
    ferlit/training/divergence.py), or at the flush before validation, saving or the end; the
    message names the micro-batch whose loss it was."""
    module = tiny_module()
    module.log = lambda *a, **k: None
    module._logs_this_step = lambda: False
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    module.training_step((images, torch.tensor([0, 1]), None), 4)  # finite
    module.net.backbone.get_classifier().weight.data.fill_(float("nan"))
    module.training_step((images, torch.tensor([0, 1]), None), 5)  # reads batch 4's: finite
    with pytest.raises(
        TrainingDiverged, match=r"became nan at optimizer step 0 \(epoch 0, batch 5\)"
    ):
        module.training_step((images, torch.tensor([0, 1]), None), 6)
    with pytest.raises(TrainingDiverged, match=r"\(epoch 0, batch 6\)"):
        module.on_save_checkpoint({})  # no checkpoint of spoiled weights is written


def test_paper_config_parses_with_every_number(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--config", str(REPO / "experiments/cafarelli2020.yaml"), "--print_config"])
    assert stop.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["val_every_n_steps"] == 3920
    assert config["trainer"]["accumulate_grad_batches"] == 4
    assert config["trainer"]["benchmark"] is True  # cuDNN's fastest algorithms for 112x112
    assert config["data"]["batch_size"] == 64
    model = config["model"]
    assert model["backbone"] == "legacy_seresnet50"
    assert (model["lr_head"], model["lr_backbone"]) == (1e-3, 1e-6)
    assert (model["lr_schedule"], model["warmup_steps"]) == ("constant", 0)
    assert (model["momentum"], model["weight_decay"]) == (0.9, 0.005)
    assert model["input_size"] == 112 and config["data"]["num_classes"] == 7
    data = config["data"]
    assert data["class_weighting"] == "inverse_frequency"
    assert (data["hflip"], data["brightness"], data["contrast"]) == (0.5, 0.4, 0.3)
    assert (data["saturation"], data["hue"]) == (0.25, 0.5)
    assert config["checkpoint"]["monitor"] == "val/criterion"
    assert config["checkpoint"]["mode"] == "max"
    assert config["early_stopping"]["monitor"] == "val/criterion"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--model.backbone", "seresnet5O"],
            "model.backbone: timm has no model named 'seresnet5O'",
        ),
        (["--val_every_n_steps", "0"], "--val_every_n_steps must be a positive integer, got 0"),
        (["--data.class_weighting", "[1, 2, 3]"], "data.class_weighting has 3 weights, expected 7"),
        (["--data.num_classes", "9"], "data.num_classes must be 7 (ABAW 2020) or 8"),
    ],
)
def test_bad_options_fail_before_any_data_is_read(tmp_path, monkeypatch, capsys, extra, message):
    sample_dir = tmp_path / "sample"
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(sample_dir))
    with pytest.raises(SystemExit) as stop:
        main(["--trainer.logger", "false", *extra])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not sample_dir.exists()


def test_unknown_option_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--model.learning_rate", "0.1"])
    assert stop.value.code != 0
    assert "learning_rate" in capsys.readouterr().err


def test_validation_loss_is_the_weighted_cross_entropy_of_the_whole_set():
    weights = [1.0, 22.92, 37.5, 50.66, 3.47, 5.79, 13.55]
    module = tiny_module(class_weights=weights)
    module.log_dict = module.log = lambda *a, **k: None
    module.eval()
    batches = [
        (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 7, (n,)))
        for n in (5, 3)
    ]
    with torch.no_grad():
        for i, (images, labels) in enumerate(batches):
            module.validation_step((images, labels, None), i)
        whole = module.loss(
            torch.cat([module(x) for x, _ in batches]), torch.cat([y for _, y in batches])
        )
    assert module.val_loss.compute().item() == pytest.approx(whole.item(), rel=1e-5)


@pytest.mark.slow
def test_sample_config_learns(tiny_sample, tmp_path):
    """sample.yaml's recipe, shortened, beats always answering Neutral by a wide margin."""
    from ferlit.metrics import scores_from_confusion

    cli = main(
        [
            "--config",
            str(REPO / "experiments/sample.yaml"),
            "--data.affwild2_dir",
            str(tiny_sample.affwild2_dir),
            "--data.expw_dir",
            str(tiny_sample.expw_dir),
            "--data.num_workers",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.max_steps",
            "600",
            "--val_every_n_steps",
            "100",
        ]
    )
    labels = torch.as_tensor(cli.datamodule.val_index.labels).long()
    confusion = torch.zeros(7, 7, dtype=torch.long)
    confusion[:, 0] = torch.bincount(labels, minlength=7)  # every frame predicted Neutral
    always_neutral = scores_from_confusion(confusion)["criterion"].item()
    best = cli.trainer.checkpoint_callback.best_model_score.item()
    assert always_neutral < 0.35
    assert best > always_neutral + 0.2


def test_an_undecodable_frame_in_a_worker_is_reported_by_name(tiny_sample, tmp_path, capsys):
    import shutil

    data = tmp_path / "affwild2"
    shutil.copytree(tiny_sample.affwild2_dir, data)
    broken = sorted((data / "cropped_aligned").glob("*/00003.jpg"))
    for frame in broken:
        frame.write_bytes(b"not a jpeg")
    # Training skips its damaged frames (tests/test_damaged_images.py); validation, whose
    # score must cover the whole split, stops on the first.
    args = fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "4", "--val_every_n_steps", "2")
    args[args.index("--data.affwild2_dir") + 1] = str(data)
    args[args.index("--data.num_workers") + 1] = "1"
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    assert "00003.jpg" in line and line.endswith(" (raised in DataLoader worker process 0)")
    assert "Traceback" not in err


def test_bf16_mixed_and_channels_last_train_and_report_the_best(tiny_sample, tmp_path, capsys):
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--trainer.precision",
        "bf16-mixed",
        "--model.channels_last",
        "true",
        "--trainer.max_steps",
        "4",
        "--val_every_n_steps",
        "2",
    )
    cli = main(args)
    assert cli.trainer.precision == "bf16-mixed"
    weight = cli.model.net.backbone.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    rows = validations(cli)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(math.isfinite(float(r["val/criterion"])) for r in rows)
    out = capsys.readouterr().out
    assert "Best validation" in out and "at step" in out
    assert all(name in out for name in ("Neutral", "Happiness", "Surprise", "macro-F1"))


def _fit_snapshot(tiny_sample, tmp_path, *extra):
    cli = main(fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "3", *extra), run=False)
    before = {k: v.clone() for k, v in cli.model.net.backbone.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    after = cli.model.net.backbone.state_dict()
    head = {
        f"{cli.model.net.backbone.pretrained_cfg['classifier']}.{n}" for n in ("weight", "bias")
    }
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    return changed, head


def test_freeze_backbone_steps_trains_only_the_head_at_first(tiny_sample, tmp_path):
    changed, head = _fit_snapshot(tiny_sample, tmp_path, "--model.freeze_backbone_steps", "3")
    # BatchNorm statistics still move (the layers are in train mode); no weight of the backbone
    # does, while the head learns.
    assert head <= changed
    assert not {k for k in changed - head if "running_" not in k and "num_batches" not in k}


def test_freeze_bn_keeps_backbone_statistics(tiny_sample, tmp_path):
    changed, head = _fit_snapshot(tiny_sample, tmp_path, "--model.freeze_bn", "true")
    assert head <= changed
    assert any(k.endswith(".weight") and k not in head for k in changed)
    assert not [k for k in changed if "running_" in k or "num_batches" in k]
