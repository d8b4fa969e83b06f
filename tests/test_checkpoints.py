"""A trained model carries its preprocessing and is read without running code.

Checkpoints are written by a real (2-step) Lightning fit of a narrow SE-ResNet-18 on random faces:
what ``python -m ferlit.fit`` saves, without its data pipeline. The "VGGFace2 weights" of a run
are a timm state dict file, which ferlit treats as VGGFace2 weights (BGR, mean only).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import timm
import torch

import ferlit
from ferlit.data.readers.affwild2 import frame_file
from ferlit.errors import DataError, WeightsError
from ferlit.evaluation.evaluate import main as evaluate
from ferlit.evaluation.inference import load_model
from ferlit.expressions import EXPRESSIONS_7
from ferlit.models import IMAGENET, VGGFACE2, Normalize, create_model
from ferlit.models.checkpoints import load_checkpoint
from ferlit.training.cli import main as fit
from ferlit.training.module import ExpressionModule

TINY = {"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}


def faces(n: int = 5, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 RGB faces (N, H, W, 3)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def write_vggface2_weights(path: Path) -> Path:
    """Random weights of the tiny backbone as a timm state dict (``--model.pretrained``)."""
    torch.manual_seed(3)
    torch.save(timm.create_model("seresnet18", num_classes=7, **TINY).state_dict(), path)
    return path


def probabilities(module: ExpressionModule, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(module.eval()(nchw(images)), 1).numpy()


class Payload:
    """Pickles as a call of ``function(*args)``: what a booby-trapped checkpoint carries."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def booby_trapped(path: Path, marker: Path) -> Path:
    """A checkpoint-looking file whose loading with weights_only=False creates ``marker``."""
    torch.save(
        {
            "state_dict": {},
            "loops": {},
            "callbacks": {},
            "x": Payload(os.system, f"touch {marker}"),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_and_save) -> dict[str, tuple[Path, ExpressionModule]]:
    """A run trained from scratch (ImageNet/RGB) and one started from VGGFace2 weights (BGR),
    whose weights file is deleted after training."""
    root = tmp_path_factory.mktemp("runs")
    scratch = root / "scratch.ckpt"
    weights = write_vggface2_weights(root / "senet50_ft_weight.pth")
    vgg = root / "vggface2.ckpt"
    made = {
        "scratch": (scratch, train_and_save(scratch)),
        "vggface2": (vgg, train_and_save(vgg, pretrained=str(weights))),
    }
    weights.unlink()
    return made


EXPECTED = {"scratch": IMAGENET, "vggface2": VGGFACE2}


@pytest.mark.parametrize("run", ["scratch", "vggface2"])
def test_the_checkpoint_records_the_preprocessing(runs, run):
    path, module = runs[run]
    assert module.net.preprocessing == EXPECTED[run]
    saved = load_checkpoint(path)["ferlit"]["preprocessing"]
    p = EXPECTED[run]
    assert saved == {"channel_order": p.channel_order, "mean": list(p.mean), "std": list(p.std)}


@pytest.mark.parametrize("run", ["scratch", "vggface2"])
def test_every_loader_restores_the_models_own_preprocessing(runs, run, tmp_path):
    path, trained = runs[run]
    images = faces()
    expected = probabilities(trained, images)
    assert not Path(trained.hparams.pretrained or "absent").exists()  # VGGFace2 file gone

    loaded = ExpressionModule.load_from_checkpoint(path)
    assert loaded.net.preprocessing == EXPECTED[run]
    np.testing.assert_allclose(probabilities(loaded, images), expected, rtol=1e-5, atol=1e-6)
    assert loaded.hparams.pretrained == trained.hparams.pretrained  # recorded as trained

    evaluated = load_model(path)  # python -m ferlit.evaluate's loader
    assert evaluated.net.preprocessing == EXPECTED[run]
    np.testing.assert_allclose(probabilities(evaluated, images), expected, rtol=1e-5, atol=1e-6)

    # --model.pretrained <ferlit checkpoint>: its backbone and its preprocessing, a new head
    net = create_model("seresnet18", backbone_kwargs=TINY, pretrained=path).eval()
    assert net.preprocessing == EXPECTED[run]
    assert net.weights_report.naming == "ferlit-checkpoint"
    assert str(net.weights_report).endswith(
        f"from {path.name} (the backbone of a ferlit checkpoint); dropped fc.weight, fc.bias"
    )
    with torch.no_grad():
        x = nchw(images)
        torch.testing.assert_close(
            net.forward_head(net.forward_features(x), pre_logits=True),
            trained.net.forward_head(trained.net.forward_features(x), pre_logits=True),
        )
    assert not torch.equal(net.backbone.fc.weight, trained.net.backbone.fc.weight)
    chosen = create_model(
        "seresnet18", backbone_kwargs=TINY, pretrained=path, preprocessing="imagenet"
    )
    assert chosen.preprocessing == IMAGENET  # an explicit choice still wins


@pytest.mark.parametrize("run", ["scratch", "vggface2"])
def test_fit_from_a_ferlit_checkpoint_keeps_its_preprocessing(runs, run, tiny_sample, tmp_path):
    """``python -m ferlit.fit --model.pretrained <ckpt>``: the new run normalises as the old one
    (a from-scratch RGB model used to be switched to BGR/VGGFace2)."""
    path, trained = runs[run]
    cli = fit(
        [
            *("--data.affwild2_dir", str(tiny_sample.affwild2_dir)),
            *("--data.expw_dir", str(tiny_sample.expw_dir), "--data.num_workers", "0"),
            *("--model.backbone", "seresnet18", "--model.backbone_kwargs", str(TINY)),
            *("--model.input_size", "32", "--model.pretrained", str(path)),
            *("--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path)),
        ],
        run=False,
    )
    net = cli.model.net.eval()
    assert net.preprocessing == EXPECTED[run]
    assert net.weights_report.naming == "ferlit-checkpoint"
    x = nchw(faces())
    with torch.no_grad():
        torch.testing.assert_close(net.forward_features(x), trained.net.forward_features(x))


def test_a_checkpoint_written_before_preprocessing_was_saved_keeps_vggface2s(runs, tmp_path):
    """Older checkpoints: rebuilt from the options (pretrained + auto -> VGGFace2's)."""
    path, trained = runs["vggface2"]
    old = load_checkpoint(path)
    del old["ferlit"]
    legacy = tmp_path / "legacy.ckpt"
    torch.save(old, legacy)
    assert ExpressionModule.load_from_checkpoint(legacy).net.preprocessing == VGGFACE2


def test_evaluate_scores_with_the_checkpoints_preprocessing(
    runs, tmp_path, tiny_sample, write_jpeg
):
    """``python -m ferlit.evaluate`` on the VGGFace2-started run, its weights file gone."""
    path, trained = runs["vggface2"]
    frames = tmp_path / "frames" / "clip"
    for i, face in enumerate(faces(4, seed=7), start=1):
        write_jpeg(frames / frame_file(i), face)
    out = tmp_path / "eval"
    evaluate(
        [
            *("--ckpt", str(path), "--out", str(out), "--frames_dir", str(frames.parent)),
            *("--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--data.num_workers", "0"),
            *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
        ]
    )
    predictions = pd.read_parquet(out / "predictions.parquet")
    probs = predictions[[f"prob_{n.lower()}" for n in EXPRESSIONS_7]].to_numpy()
    decoded = np.stack([cv2.imread(str(frames / frame_file(i)))[..., ::-1] for i in range(1, 5)])
    with torch.no_grad():  # BGR with VGGFace2's mean, computed here independently of the module
        logits = trained.net.backbone(Normalize(VGGFACE2)(nchw(decoded)))
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)


def test_load_model_and_predict_give_the_modules_probabilities(runs):
    path, trained = runs["vggface2"]
    model = ferlit.load_model(path)
    assert not model.training
    assert model.class_names == EXPRESSIONS_7
    images = faces(5)
    probs = ferlit.predict(model, images, batch_size=2)
    assert probs.shape == (5, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, probabilities(trained, images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)

    # other sizes are resized as evaluation resizes (bilinear, to input_size)
    from ferlit.data.transforms import build_transform

    large = faces(3, size=48, seed=2)
    resized = np.stack([build_transform(32, None)(image=f)["image"] for f in large])
    np.testing.assert_allclose(
        ferlit.predict(model, large), probabilities(trained, resized), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(DataError) as error:
        ferlit.predict(model, images.astype(np.float32))
    assert str(error.value) == (
        "faces: expected uint8 RGB images shaped (N, H, W, 3), got float32 (5, 32, 32, 3)"
    )


def test_load_model_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match=r"missing\.ckpt: no such checkpoint file or run folder"):
        ferlit.load_model(tmp_path / "missing.ckpt")


def test_a_booby_trapped_checkpoint_is_refused_by_evaluate_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = booby_trapped(tmp_path / "best.ckpt", marker)
    with pytest.raises(SystemExit) as exit:
        evaluate(["--ckpt", str(path), "--out", str(tmp_path / "eval")])
    assert exit.value.code == 2
    assert not marker.exists()
    assert capsys.readouterr().err.startswith(
        f"error: {path}: refused to load (it asks to run {os.system.__module__}.system): "
        "ferlit reads only tensors, numbers, strings and containers from a checkpoint"
    )
    with pytest.raises(WeightsError, match="refused to load"):
        ExpressionModule.load_from_checkpoint(path)
    with pytest.raises(WeightsError, match="refused to load"):
        ferlit.load_model(path)
    assert not marker.exists()


def test_a_booby_trapped_checkpoint_is_refused_by_fit_without_running(
    tmp_path, tiny_sample, capsys
):
    marker = tmp_path / "pwned"
    path = booby_trapped(tmp_path / "last.ckpt", marker)
    with pytest.raises(SystemExit) as exit:
        fit(
            [
                *("--data.affwild2_dir", str(tiny_sample.affwild2_dir)),
                *("--data.expw_dir", str(tiny_sample.expw_dir)),
                *("--model.backbone", "seresnet18", "--model.backbone_kwargs", str(TINY)),
                *("--model.input_size", "32", "--data.num_workers", "0"),
                *("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"),
                *("--trainer.logger", "lightning.pytorch.loggers.CSVLogger"),
                *("--trainer.logger.save_dir", str(tmp_path / "runs")),
                *("--trainer.default_root_dir", str(tmp_path / "runs")),
                *("--ckpt_path", str(path)),
            ]
        )
    assert exit.value.code == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"{path}: refused to load (it asks to run {os.system.__module__}.system)" in err
    assert err.splitlines()[-1].startswith("error: ")


def test_nan_weights_in_a_checkpoint_are_refused_naming_the_tensor(runs, tmp_path):
    path, _ = runs["scratch"]
    saved = load_checkpoint(path)
    saved["state_dict"]["net.backbone.layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    damaged = tmp_path / "damaged.ckpt"
    torch.save(saved, damaged)
    n = saved["state_dict"]["net.backbone.layer2.0.conv1.weight"].numel()
    message = (
        f"{damaged}: tensor 'net.backbone.layer2.0.conv1.weight' holds 1 NaN or infinite "
        f"value(s) of {n}; the weights are damaged (or saved after the training diverged)"
    )
    with pytest.raises(WeightsError) as error:
        ExpressionModule.load_from_checkpoint(damaged)
    assert str(error.value) == message
    with pytest.raises(WeightsError) as error:
        ferlit.load_model(damaged)
    assert str(error.value) == message


def test_weights_with_inf_or_integer_tensors_are_refused_naming_the_tensor(tmp_path):
    state = timm.create_model("seresnet18", num_classes=7, **TINY).state_dict()
    infinite = dict(state)
    infinite["layer1.0.bn1.running_var"] = state["layer1.0.bn1.running_var"].clone()
    infinite["layer1.0.bn1.running_var"][3] = float("inf")
    torch.save(infinite, tmp_path / "inf.pth")
    with pytest.raises(WeightsError) as error:
        create_model("seresnet18", backbone_kwargs=TINY, pretrained=tmp_path / "inf.pth")
    assert str(error.value) == (
        f"{tmp_path / 'inf.pth'}: tensor 'layer1.0.bn1.running_var' holds 1 NaN or infinite "
        "value(s) of 8; the weights are damaged (or saved after the training diverged)"
    )
    integer = dict(state)
    integer["conv1.weight"] = state["conv1.weight"].round().to(torch.int64)
    torch.save(integer, tmp_path / "int.pth")
    with pytest.raises(WeightsError) as error:
        create_model("seresnet18", backbone_kwargs=TINY, pretrained=tmp_path / "int.pth")
    assert str(error.value) == (
        f"{tmp_path / 'int.pth'}: tensor 'conv1.weight' has dtype torch.int64, expected "
        "floating point weights (the model's conv1.weight is torch.float32)"
    )


class AbsurdArray:
    """Pickles as numpy's ``_reconstruct(ndarray, shape, b'b')`` with a shape worth 1 TB."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (1_000_000, 1_000_000), b"b")


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_pkl_asking_for_an_absurd_array_is_refused_naming_it(tmp_path, protocol):
    path = tmp_path / "senet50_ft_weight.pkl"
    arrays = {
        "conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
        "layer1.0.conv4.bias": AbsurdArray(),
    }
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    with pytest.raises(WeightsError) as error:
        create_model("legacy_seresnet18", backbone_kwargs={"layers": (1, 1, 1, 1)}, pretrained=path)
    assert str(error.value) == (
        f"{path}: entry 'layer1.0.conv4.bias' asks for a numpy array of shape (1000000, 1000000), "
        f"more elements than the file has bytes ({path.stat().st_size}); the file is damaged or "
        "crafted to exhaust memory"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (
            {"state_dict": {"net.fc.weight": torch.zeros(2, 2)}},
            "not a checkpoint of python -m ferlit.fit (no hyper_parameters, "
            "pytorch-lightning_version); expected a .ckpt of a ferlit run",
        ),
        (
            {"weight": torch.zeros(2)},
            "not a Lightning checkpoint (no state_dict); expected a checkpoint written by "
            "python -m ferlit.fit",
        ),
    ],
)
def test_load_model_of_a_foreign_checkpoint_names_it(tmp_path, content, message):
    """A .ckpt with a state_dict that is not a ferlit run's was a KeyError."""
    path = tmp_path / "foreign.ckpt"
    torch.save(content, path)
    with pytest.raises(WeightsError) as refused:
        ferlit.load_model(path)
    assert str(refused.value) == f"{path}: {message}"
