"""``python -m ferlit export``: the ONNX and TorchScript files give the PyTorch model's
probabilities from uint8 RGB faces, for any batch size, and carry their metadata.

The checkpoint is a real 2-step fit of a narrow SE-ResNet-18 (32-pixel input, conftest's
``train_and_save``) started from "VGGFace2 weights", so its input normalisation is BGR with the
mean only: an export that left the normalisation out, or applied ImageNet's, would differ.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime
import pytest
import timm
import torch

from ferlit.cli import main as ferlit_main
from ferlit.evaluation import export as export_module
from ferlit.evaluation.export import read_metadata
from ferlit.expressions import EXPRESSIONS_7
from ferlit.models import VGGFACE2, Normalize

TINY = {"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}
FAST = ("--benchmark_seconds", "0.05", "--benchmark_batch", "4")


@pytest.fixture(scope="module")
def run(tmp_path_factory, train_and_save):
    """(checkpoint, trained module) of a run started from VGGFace2-style weights (BGR)."""
    root = tmp_path_factory.mktemp("export")
    weights = root / "senet50_ft_weight.pth"
    torch.manual_seed(3)
    torch.save(timm.create_model("seresnet18", num_classes=7, **TINY).state_dict(), weights)
    path = root / "best.ckpt"
    module = train_and_save(path, pretrained=str(weights))
    weights.unlink()
    return path, module


def faces(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def expected(module, images: np.ndarray) -> np.ndarray:
    """The trained module's probabilities, its BGR/mean normalisation applied here by hand."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return torch.softmax(module.net.backbone(Normalize(VGGFACE2)(x)), 1).numpy()


def export(*args: str):
    return ferlit_main(["export", *args, *FAST])


def test_onnx_export_matches_pytorch_for_batches_of_1_and_5(run, tmp_path, capsys):
    path, module = run
    out = tmp_path / "models" / "model.onnx"
    report = export(
        "--ckpt_path", str(path), "--format", "onnx", "--out", str(out), "--threads", "1"
    )
    printed = capsys.readouterr().out
    assert "max |probability difference| to PyTorch" in printed
    assert "on CPU, 1 thread: " in printed and " faces/s (32x32 faces, batches of 4)" in printed
    assert report["max_abs_diff"] <= 1e-4 and report["format"] == "onnx"
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["faces"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for n in (1, 5):
        images = faces(n, seed=10 + n)
        probs = session.run(None, {"faces": images})[0]
        assert probs.shape == (n, 7) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, expected(module, images), rtol=0, atol=1e-4)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # bookkeeping as predict's: the file is listed as ferlit's in its folder
    manifest = json.loads((out.parent / ".ferlit-outputs.json").read_text())
    assert "model.onnx" in manifest["files"]


def test_torchscript_export_matches_pytorch_for_batches_of_1_and_5(run, tmp_path, capsys):
    path, module = run
    out = tmp_path / "model.pt"
    export("--ckpt_path", str(path), "--format", "torchscript", "--out", str(out))
    assert "torch.jit" in capsys.readouterr().out
    loaded = torch.jit.load(str(out))
    for n in (1, 5):
        images = faces(n, seed=20 + n)
        with torch.no_grad():
            probs = loaded(torch.from_numpy(images)).numpy()
        assert probs.shape == (n, 7)
        np.testing.assert_allclose(probs, expected(module, images), rtol=0, atol=1e-4)


@pytest.mark.parametrize("form, name", [("onnx", "m.onnx"), ("torchscript", "m.pt")])
def test_metadata_is_read_back(run, tmp_path, form, name):
    path, _ = run
    out = tmp_path / name
    report = export_module.export(path, form, out, benchmark_seconds=0)
    meta = read_metadata(out)
    assert meta["classes"] == list(EXPRESSIONS_7)
    assert meta["input_size"] == 32
    assert meta["checkpoint"] == str(path)
    assert meta["preprocessing"] == {
        "channel_order": "BGR",
        "mean": list(VGGFACE2.mean),
        "std": [1.0, 1.0, 1.0],
    }
    assert report["classes"] == meta["classes"] and report["max_abs_diff"] <= 1e-4


def test_a_bad_format_or_thread_count_is_refused_naming_it(run, tmp_path, capsys):
    path, _ = run
    out = tmp_path / "m.tflite"
    with pytest.raises(SystemExit) as exit_:
        export("--ckpt_path", str(path), "--format", "tflite", "--out", str(out))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: --format tflite: expected one of onnx, torchscript\n"
    )
    assert not out.exists()
    with pytest.raises(SystemExit):
        export("--ckpt_path", str(path), "--format", "onnx", "--out", str(out), "--threads", "-1")
    assert capsys.readouterr().err == (
        "error: --threads -1: expected 0 (the runtime's default) or more\n"
    )
    with pytest.raises(SystemExit) as exit_:
        ferlit_main(["export", "--format", "onnx"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: the following arguments are required: --ckpt_path, --out (python -m ferlit "
        "export --help lists the options)\n"
    )
    with pytest.raises(SystemExit) as exit_:  # no option prefixes
        export("--ckpt", str(path), "--format", "onnx", "--out", str(out))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: unrecognized arguments: --ckpt {path} (python -m ferlit export --help lists "
        "the options)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--threads", "1.5"), "--threads 1.5: expected an integer"),
        (("--benchmark_batch", "many"), "--benchmark_batch many: expected an integer"),
        (("--benchmark_seconds", "soon"), "--benchmark_seconds soon: expected a number"),
        (("--benchmark_seconds", ".inf"), "--benchmark_seconds inf: expected 0 or more, finite"),
        (("--bogus", "1"), "unrecognized arguments: --bogus 1"),
        (("--threads", "100000"), "--threads 100000: more than this machine's"),
        (("--benchmark_batch", "1000000"), "--benchmark_batch 1000000: expected 1 to 1024"),
        (("--benchmark_batch", "0"), "--benchmark_batch 0: expected 1 to 1024"),
        (("--overwrite=false",), "argument --overwrite: ignored explicit argument 'false'"),
    ],
)
def test_a_bad_option_value_or_unknown_option_is_refused_naming_it(tmp_path, capsys, args, message):
    """Refused while parsing (or, for an infinite timing, before the checkpoint is read: it
    does not exist here), one line naming the option, exit status 2."""
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as exit_:
        ferlit_main(
            ["export", "--ckpt_path", "gone.ckpt", "--format", "onnx", "--out", str(out), *args]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not out.exists()


def test_help_lists_every_option_with_its_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        ferlit_main(["export", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, help_ in export_module.OPTIONS_HELP.items():
        assert f"--{name}" in text and help_ in text, name
    assert "--format {onnx,torchscript}" in text
    assert "--config CONFIG a YAML file of the options below" in text
    assert "--print_config" in text


def test_options_are_read_from_a_config_file_and_the_command_line_overrides_it(
    run, tmp_path, capsys
):
    path, _ = run
    out = tmp_path / "model.pt"
    config = tmp_path / "export.yaml"
    config.write_text(f"ckpt_path: {path}\nformat: onnx\nout: {out}\nthreads: 1\n")
    report = export("--config", str(config), "--format", "torchscript")
    assert report["format"] == "torchscript" and report["out"] == str(out)
    assert report["engine"].endswith("1 thread")
    assert read_metadata(out)["input_size"] == 32
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        ferlit_main(["export", "--config", str(config), "--threads", "2", "--print_config"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == (
        f"ckpt_path: {path}\nformat: onnx\nout: {out}\noverwrite: false\n"
        "benchmark_batch: 32\nbenchmark_seconds: 3.0\nthreads: 2\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format: onnx\nout: [\n", "{config}, line 3: not valid YAML text"),
        ("formt: onnx\n", "{config}: 'formt' is not an export option (ckpt_path, format, out, "),
        ("- onnx\n", "{config}: expected a mapping of export options (ckpt_path, "),
        ("format: tflite\n", "--format tflite (from {config}): expected one of onnx, "),
        ("threads: many\n", "--threads many (from {config}): expected an integer"),
        (None, "{config}: no such file; expected a YAML file of export options"),
    ],
)
def test_a_bad_config_file_is_refused_naming_it(tmp_path, capsys, text, message):
    config = tmp_path / "export.yaml"
    if text is not None:
        config.write_text(text)
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as exit_:
        ferlit_main(["export", "--ckpt_path", "x.ckpt", "--out", str(out), "--config", str(config)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(
        "error: " + message.format(config=f"--config {config}")
    )
    assert not out.exists()


def test_an_existing_out_is_replaced_only_with_overwrite_and_only_if_ferlit_wrote_it(
    run, tmp_path, capsys
):
    path, _ = run
    out = tmp_path / "model.onnx"
    args = ("--ckpt_path", str(path), "--format", "onnx", "--out", str(out))
    export(*args)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        export(*args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --out {out}: exists; choose another file or pass --overwrite\n"
    )
    first = out.stat().st_mtime_ns
    export(*args, "--overwrite")
    assert out.stat().st_mtime_ns >= first and read_metadata(out)["input_size"] == 32

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"my own model")
    with pytest.raises(SystemExit):
        export("--ckpt_path", str(path), "--format", "onnx", "--out", str(mine), "--overwrite")
    assert "was not written by ferlit" in capsys.readouterr().err
    assert mine.read_bytes() == b"my own model"

    with pytest.raises(SystemExit):
        export("--ckpt_path", str(path), "--format", "onnx", "--out", str(tmp_path))
    assert capsys.readouterr().err == (
        f"error: --out {tmp_path}: is a folder; expected a file name (model.onnx, model.pt)\n"
    )


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    missing = tmp_path / "gone.ckpt"
    with pytest.raises(SystemExit):
        export("--ckpt_path", str(missing), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert capsys.readouterr().err.startswith(
        f"error: {missing}: no such checkpoint file or run folder"
    )
    assert not (tmp_path / "m.onnx").exists()


def test_an_export_differing_from_pytorch_is_an_error_and_writes_nothing(
    run, tmp_path, capsys, monkeypatch
):
    """Any difference fails a tolerance below 0: the refusal path, as a real mismatch takes it."""
    path, _ = run
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)
    out = tmp_path / "model.onnx"
    with pytest.raises(SystemExit):
        export("--ckpt_path", str(path), "--format", "onnx", "--out", str(out))
    err = capsys.readouterr().err
    assert err.startswith("error: --format onnx: the exported model's probabilities differ")
    assert f"nothing written to {out}" in err
    assert not out.exists()


def test_a_run_folder_exports_its_best_checkpoint(run, tmp_path):
    path, _ = run
    best = tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "best-step0000002.ckpt"
    best.parent.mkdir(parents=True)
    best.write_bytes(path.read_bytes())
    out = tmp_path / "demo.onnx"
    report = export_module.export(tmp_path / "runs" / "demo", "onnx", out, benchmark_seconds=0)
    assert report["checkpoint"] == str(best) == read_metadata(out)["checkpoint"]


def test_onnx_matches_pytorch_on_the_faces_predict_input_aligns(run, tmp_path):
    """Issue 15's check on real faces, not noise: the astronaut's face (scikit-image's public-
    domain photograph) and its mirror, detected and aligned at the model's input size as
    ``predict --input`` does, give the same probabilities from the ONNX file as from
    ``ferlit.predict`` on the PyTorch model, to 1e-4."""
    skimage_data = pytest.importorskip("skimage.data")
    from ferlit.evaluation.faces import align_face, detect_faces
    from ferlit.evaluation.inference import predict

    path, module = run
    out = tmp_path / "model.onnx"
    export("--ckpt_path", str(path), "--format", "onnx", "--out", str(out), "--threads", "1")
    photo = skimage_data.astronaut()
    size = int(module.hparams.input_size)
    crops = np.stack(
        [
            align_face(image, face.landmarks, size)
            for image in (photo, np.ascontiguousarray(photo[:, ::-1]))
            for face in detect_faces(image)
        ]
    )
    assert crops.shape == (2, size, size, 3)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"faces": crops})[0]
    np.testing.assert_allclose(probs, predict(module, crops), rtol=0, atol=1e-4)


def test_torchscript_threads_are_given_back_to_the_process(run, tmp_path):
    """--threads sets torch's threads for the TorchScript check and timing only: a later training
    in the same process (a notebook, the test suite) keeps its own, or its sums would differ."""
    path, _ = run
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2  # --threads may not pass the machine's CPU count
    if other > (os.cpu_count() or 1):
        pytest.skip("one CPU: no other thread count to set")
    try:
        export(
            "--ckpt_path", str(path), "--format", "torchscript", "--out", str(tmp_path / "m.pt"),
            "--threads", str(other),
        )  # fmt: skip
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_a_bad_value_in_a_config_file_names_it_though_the_option_is_typed_after_it(
    tmp_path, capsys
):
    """The file's values are checked as it is read, before ``--threads 3`` replaces them."""
    config = tmp_path / "export.yaml"
    config.write_text("threads: many\n")
    argv = ["export", "--ckpt_path", "x.ckpt", "--format", "onnx", "--out", "m.onnx"]
    with pytest.raises(SystemExit) as exit_:
        ferlit_main([*argv, "--config", str(config), "--threads", "3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"error: --threads many (from --config {config}): expected an integer"
    )
    with pytest.raises(SystemExit):
        ferlit_main([*argv, "--config", str(config), "--threads=many"])
    assert capsys.readouterr().err.startswith("error: --threads many: expected an integer")
