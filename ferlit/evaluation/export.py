"""``python -m ferlit export``: a trained model as one ONNX or TorchScript file, to ship.

    python -m ferlit export --ckpt_path runs/sample --format onnx --out sample.onnx
    python -m ferlit export --ckpt_path best.ckpt --format torchscript --out model.pt

The file is the whole classifier, input normalisation included (:class:`FaceClassifier`): uint8
RGB faces ``N x S x S x 3`` in (S = the model's ``input_size``, 112 for ``cropped_aligned``
faces; any N), class probabilities ``N x C`` out, in the order of ``classes`` in its metadata.
A user of the file needs neither ferlit nor the mean, std and channel order the weights were
trained with (VGGFace2's BGR-mean input, ImageNet's RGB mean/std: :mod:`ferlit.models.preprocessing`).

Before anything is written, the export is run on the same faces as the PyTorch model, alone (a
batch of 1) and together (a batch of :data:`CHECK_FACES`), and the largest absolute difference
of the probabilities is printed; above :data:`TOLERANCE` the export is refused
(:class:`ExportMismatch`). Then its speed on this machine's CPU is measured (onnxruntime for ONNX,
``torch.jit`` for TorchScript) and printed in faces per second. The metadata (class names, input
size, the checkpoint, the preprocessing built in) is stored in the ONNX model's
``metadata_props`` or the TorchScript archive's extra file :data:`EXTRA_FILE`;
:func:`read_metadata` reads either back. The file is written whole or not at all
(:func:`ferlit.io.atomic_write`) and listed in its folder's ``.ferlit-outputs.json``: an existing
``--out`` is replaced only with ``--overwrite``, and only if ferlit wrote it.

ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``):
the newer ``torch.export``-based one needs the ``onnxscript`` package, which is not a dependency.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser
from torch import nn

import ferlit
from ferlit.cli_values import PARSER_MODE
from ferlit.errors import ConfigError, FerlitError, WeightsError, counted
from ferlit.evaluation.inference import checkpoint_file, model_from_checkpoint, read_checkpoint
from ferlit.io import (
    OUTPUTS_MANIFEST,
    atomic_write,
    check_creatable,
    claim_outputs,
    outputs_written,
)
from ferlit.models.checkpoints import preprocessing_record
from ferlit.training.module import ExpressionModule

FORMATS = ("onnx", "torchscript")
#: ONNX opset: 17 is read by every onnxruntime since 1.14 (2023) and has every operator used.
OPSET = 17
#: The largest absolute difference of probabilities allowed between the export and PyTorch
#: (float32 runtimes reorder sums; 1e-4 is the bound the issue sets, far below a label change).
TOLERANCE = 1e-4
#: Faces the export is checked on (random uint8 images, seeded: every pixel value range occurs).
CHECK_FACES = 8
#: The TorchScript archive's extra file holding the metadata (JSON).
EXTRA_FILE = "ferlit.json"
INPUT_NAME, OUTPUT_NAME = "faces", "probabilities"


class ExportMismatch(FerlitError):
    """The exported model does not give the PyTorch model's probabilities (nothing written)."""


class FaceClassifier(nn.Module):
    """uint8 RGB faces (N, S, S, 3) -> class probabilities (N, C), float32.

    The faces' layout is the one images are decoded in (OpenCV after BGR->RGB, PIL, numpy), so a
    caller only stacks them; the network's own first layer
    (:class:`ferlit.models.preprocessing.Normalize`) applies the weights' normalisation.
    """

    def __init__(self, model: ExpressionModule) -> None:
        super().__init__()
        self.net = model.net

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(faces.permute(0, 3, 1, 2)).float(), dim=1)


#: The largest ``--benchmark_batch``: SE-ResNet-50's inference activations at 112x112 are a few
#: MB a face, so 1,024 faces already take GBs; throughput stops growing long before.
MAX_BENCHMARK_BATCH = 1024


def check_faces(size: int, n: int = CHECK_FACES, seed: int = 0) -> np.ndarray:
    """The faces an export is checked and timed on: seeded uniform uint8 images (N, S, S, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse ``--out`` before the model is read: a folder, an existing file without
    ``--overwrite``, a file ferlit did not write, or a place the file cannot be made."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; expected a file name (model.onnx, model.pt)")
    if os.path.lexists(out):
        if not overwrite:
            raise ConfigError(f"--out {out}: exists; choose another file or pass --overwrite")
        if out.name not in outputs_written(out.parent):
            raise ConfigError(
                f"--out {out}: was not written by ferlit (not listed in "
                f"{out.parent / OUTPUTS_MANIFEST}); ferlit never replaces a file of yours: "
                "choose another file"
            )
    check_creatable(out.parent, "--out")


def metadata(model: ExpressionModule, checkpoint: Path) -> dict[str, Any]:
    """What a user of the exported file needs to know about it."""
    size = int(model.hparams.input_size)
    return {
        "classes": list(model.class_names),
        "input_size": size,
        "input": f"uint8 RGB faces, N x {size} x {size} x 3 (normalisation built in)",
        "output": f"class probabilities, N x {len(model.class_names)}",
        "preprocessing": preprocessing_record(model.net.preprocessing),
        "checkpoint": str(checkpoint),
        "ferlit_version": ferlit.__version__,
    }


def to_onnx(classifier: FaceClassifier, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """The ONNX model (dynamic batch) with ``meta`` in its ``metadata_props`` (strings: lists
    and dicts as JSON)."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation and tracing notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            classifier,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    onnx.helper.set_model_props(
        proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    )
    proto.producer_name, proto.producer_version = "ferlit", ferlit.__version__
    return proto.SerializeToString()


def to_torchscript(classifier: FaceClassifier, example: torch.Tensor, meta: dict) -> bytes:
    """The traced TorchScript module with ``meta`` as the archive's :data:`EXTRA_FILE`."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit's deprecation and tracing notices
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(classifier, example)
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(meta)})
    return buffer.getvalue()


class Runner:
    """The exported model, loaded from its bytes, as a function of uint8 faces -> probabilities."""

    def __init__(self, form: str, data: bytes, threads: int = 0) -> None:
        self.form = form
        if form == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = onnxruntime.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
            self.engine = f"onnxruntime {onnxruntime.__version__} on CPU, " + (
                counted(threads, "thread")
                if threads
                else f"its default threads ({os.cpu_count()} CPUs)"
            )
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
            if threads:
                torch.set_num_threads(threads)
            self.engine = (
                f"torch.jit {torch.__version__} on CPU, "
                f"{counted(torch.get_num_threads(), 'thread')}"
            )

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        if self.form == "onnx":
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: faces})[0]
        with torch.no_grad():
            return self.module(torch.from_numpy(faces)).numpy()


def check_export(runner: Runner, classifier: FaceClassifier, faces: np.ndarray) -> float:
    """The largest absolute difference between the export's and PyTorch's probabilities on
    ``faces``, run as one batch and one face at a time (the batch axis is dynamic)."""
    with torch.no_grad():
        expected = classifier(torch.from_numpy(faces)).numpy()
    together = runner(faces)
    alone = np.concatenate([runner(faces[i : i + 1]) for i in range(len(faces))])
    for got in (together, alone):
        if got.shape != expected.shape:
            raise ExportMismatch(
                f"the exported model gives probabilities shaped {got.shape} for "
                f"{len(got)} faces, expected {expected.shape}"
            )
    return float(max(np.abs(together - expected).max(), np.abs(alone - expected).max()))


def faces_per_second(runner: Runner, faces: np.ndarray, seconds: float) -> float:
    """Throughput of ``runner`` on batches of ``faces``: one warm-up batch, then batches for at
    least ``seconds`` (and at least 3 batches)."""
    runner(faces)
    batches, start = 0, time.perf_counter()
    while batches < 3 or time.perf_counter() - start < seconds:
        runner(faces)
        batches += 1
    return batches * len(faces) / (time.perf_counter() - start)


def export(
    ckpt_path: str | os.PathLike[str],
    format: str,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    benchmark_batch: int = 32,
    benchmark_seconds: float = 3.0,
    threads: int = 0,
) -> dict[str, Any]:
    """Export the model of a checkpoint (a ``.ckpt`` or a run folder) to ``out``; returns the
    report printed (``max_abs_diff``, ``faces_per_second``, the metadata...). ``threads``: the
    CPU threads of the check and the timing (0: the runtime's default; TorchScript's setting is
    this process's ``torch.set_num_threads``)."""
    if format not in FORMATS:
        raise ConfigError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    if not 1 <= benchmark_batch <= MAX_BENCHMARK_BATCH:
        raise ConfigError(
            f"--benchmark_batch {benchmark_batch}: expected 1 to {MAX_BENCHMARK_BATCH} (the "
            "timing needs no larger batch, and its activations grow with it: a batch of 10^6 "
            "faces would need tens of GB)"
        )
    if threads < 0:
        raise ConfigError(f"--threads {threads}: expected 0 (the runtime's default) or more")
    cores = os.cpu_count() or 1
    if threads > cores:  # a typo (100000) would start that many threads, each slowing the rest
        raise ConfigError(
            f"--threads {threads}: more than this machine's {cores} CPUs; expected 0 (the "
            f"runtime's default) to {cores}"
        )
    if not (benchmark_seconds >= 0 and math.isfinite(benchmark_seconds)):  # .inf: timed forever
        raise ConfigError(f"--benchmark_seconds {benchmark_seconds}: expected 0 or more, finite")
    out = Path(out)
    check_out(out, overwrite)
    checkpoint = checkpoint_file(ckpt_path)
    model = model_from_checkpoint(checkpoint, read_checkpoint(checkpoint)).float().cpu()
    classifier = FaceClassifier(model).eval()
    meta = metadata(model, checkpoint)
    size = meta["input_size"]
    example = torch.from_numpy(check_faces(size, 2, seed=1))
    with torch.no_grad():
        data = (to_onnx if format == "onnx" else to_torchscript)(classifier, example, meta)
    threads_before = torch.get_num_threads()  # TorchScript's threads are the process's: restored
    try:
        runner = Runner(format, data, threads)
        difference = check_export(runner, classifier, check_faces(size))
        print(
            f"{format} export of {checkpoint}: max |probability difference| to PyTorch "
            f"{difference:.2e} on {CHECK_FACES} faces (batches of 1 and {CHECK_FACES})"
        )
        if not difference <= TOLERANCE:
            raise ExportMismatch(
                f"--format {format}: the exported model's probabilities differ from the PyTorch "
                f"model's by up to {difference:.2e} (more than {TOLERANCE:g}) on the same faces; "
                f"nothing written to {out}"
            )
        speed = 0.0
        if benchmark_seconds > 0:
            speed = faces_per_second(runner, check_faces(size, benchmark_batch), benchmark_seconds)
            print(
                f"{runner.engine}: {speed:.1f} faces/s "
                f"({size}x{size} faces, batches of {benchmark_batch})"
            )
    finally:
        torch.set_num_threads(threads_before)
    claim_outputs(out.parent, [out.name])
    with atomic_write(out) as file:
        file.write(data)
    print(f"Wrote {out} ({len(data) / 1e6:.1f} MB): {meta['input']} -> {meta['output']}")
    return {
        **meta,
        "format": format,
        "out": str(out),
        "bytes": len(data),
        "max_abs_diff": difference,
        "faces_per_second": speed,
        "engine": runner.engine,
    }


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a file :func:`export` wrote (ONNX or TorchScript, told by its content):
    ``classes``, ``input_size``, ``checkpoint``, ``preprocessing``, ``ferlit_version``..."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(4)
    except OSError as error:
        raise WeightsError(f"{path}: cannot be read ({error.strerror})") from None
    if head.startswith(b"PK"):  # TorchScript archives are zip files
        extra = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        if not extra[EXTRA_FILE]:
            raise WeightsError(f"{path}: a TorchScript file without ferlit's {EXTRA_FILE}")
        return json.loads(extra[EXTRA_FILE])
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise WeightsError(
            f"{path}: neither an ONNX model nor a TorchScript file ({error})"
        ) from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "classes" not in props:
        raise WeightsError(f"{path}: an ONNX model without ferlit's metadata (classes)")
    meta: dict[str, Any] = dict(props)
    for key in ("classes", "input_size", "preprocessing"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return meta


#: The options of ``python -m ferlit export`` and their help; also the keys a ``--config`` file
#: may set (each an argument of :func:`export`).
OPTIONS_HELP = {
    "ckpt_path": "Checkpoint of python -m ferlit fit, or its run folder (its best checkpoint).",
    "format": "onnx or torchscript.",
    "out": "The file to write (model.onnx, model.pt).",
    "overwrite": "Replace an earlier export at --out.",
    "benchmark_batch": "Faces per batch when timing (32).",
    "benchmark_seconds": "Seconds to time the export for (3; 0 = no timing).",
    "threads": "CPU threads for checking and timing (0 = onnxruntime's or torch's default; at most "
    "this machine's CPU count).",
}
HELP_HINT = "(python -m ferlit export --help lists the options)"


class ExportConfigFile(ActionConfigFile):
    """``--config FILE``: a YAML mapping of export options (``format: onnx``), read here so that
    a missing file, bad YAML (with its line) or a key that is no option is refused naming the
    file, where jsonargparse's messages name neither file nor line."""

    def __call__(self, parser, cfg, values, option_string=None) -> None:
        path = Path(values)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "no such file"
            raise ConfigError(f"--config {path}: {what}; expected a YAML file of export options")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"--config {path}: cannot be read ({error.strerror})") from None
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"--config {path}{where}: not valid YAML text") from None
        content = {} if content is None else content
        names = ", ".join(OPTIONS_HELP)
        if not isinstance(content, dict):
            raise ConfigError(
                f"--config {path}: expected a mapping of export options ({names}), "
                f"got a {type(content).__name__}"
            )
        for key in content:
            if key not in OPTIONS_HELP:
                raise ConfigError(f"--config {path}: {key!r} is not an export option ({names})")
        self.apply_config(parser, cfg, self.dest, yaml.safe_dump(content))


def parser() -> ArgumentParser:
    """The export's options on jsonargparse, as every stage's (``--config``, ``--print_config``,
    values read as YAML); refusals raise ``ArgumentError`` (``exit_on_error=False``), which
    :func:`main` turns into a ConfigError."""
    p = ArgumentParser(
        prog="python -m ferlit export",
        allow_abbrev=False,  # --ckpt is not --ckpt_path: a prefix is refused, as by every stage
        exit_on_error=False,
        parser_mode=PARSER_MODE,
        description="export: the model of a checkpoint as ONNX or TorchScript, input "
        "normalisation included (uint8 RGB faces N x S x S x 3 in, probabilities N x C out); "
        "checked against PyTorch and timed on the CPU.",
    )
    p.add_argument(
        "--config",
        action=ExportConfigFile,
        help="a YAML file of the options below, keys without -- (format: onnx; paths relative "
        "to the folder the command runs in); options after --config override it",
    )
    h = OPTIONS_HELP
    p.add_argument("--ckpt_path", type=str, required=True, help=h["ckpt_path"])
    p.add_argument("--format", choices=FORMATS, required=True, help=h["format"])
    p.add_argument("--out", type=str, required=True, help=h["out"])
    p.add_argument("--overwrite", action="store_true", help=h["overwrite"])
    p.add_argument("--benchmark_batch", type=int, default=32, help=h["benchmark_batch"])
    p.add_argument("--benchmark_seconds", type=float, default=3.0, help=h["benchmark_seconds"])
    p.add_argument("--threads", type=int, default=0, help=h["threads"])
    return p


#: jsonargparse's words for a value's type, in a refusal.
_KINDS = {"int": "an integer", "float": "a number"}


def _from_config(name: str, value: str, argv: list[str]) -> str:
    """`` (from --config FILE)`` when ``value`` of option ``name`` was not typed on the command
    line ``argv`` but a ``--config`` was given: it came from that file (or one of them, which
    the message names). A file's values are checked when it is read, before a ``--name`` after
    it replaces them, so the value, not the option, tells where it came from."""
    pairs = list(zip(argv, argv[1:], strict=False))
    pairs += [tuple(a.split("=", 1)) for a in argv if a.startswith("--") and "=" in a]
    files = [v for o, v in pairs if o == "--config"]
    if not files or any(o == f"--{name}" and v == value for o, v in pairs):
        return ""
    return f" (from --config {', '.join(files)})"


def refusal(p: ArgumentParser, error: Exception, argv: list[str] = ()) -> ConfigError:
    """jsonargparse's refusal as a ConfigError naming the option as typed (``--threads``, where
    jsonargparse says ``Parser key "threads"``) and what was expected. The patterns are the
    wordings of argparse (choices, required options) and jsonargparse 4.x (a value of the wrong
    type, from the command line or ``--config``); a refusal worded otherwise is passed on as it
    is, with the pointer to ``--help``."""
    message = " ".join(str(error).split())  # jsonargparse breaks and indents its lines
    choice = re.fullmatch(r"argument --(\w+): invalid choice: '(.*)' \(choose from .*\)", message)
    choice = choice or re.fullmatch(r'Parser key "(\w+)": \'(.*)\' not among choices .*', message)
    if choice:
        name, value = choice.groups()
        allowed = p._option_string_actions[f"--{name}"].choices
        where = _from_config(name, value, list(argv))
        return ConfigError(f"--{name} {value}{where}: expected one of {', '.join(allowed)}")
    kind = re.fullmatch(
        r'Parser key "(\w+)": Expected a <class \'(\w+)\'>\. Got value: (.*)', message
    )
    if kind and kind[2] in _KINDS:
        where = _from_config(kind[1], kind[3], list(argv))
        return ConfigError(f"--{kind[1]} {kind[3]}{where}: expected {_KINDS[kind[2]]} {HELP_HINT}")
    required = re.fullmatch(r"the following arguments are required: (.*)", message)
    if required:
        names = ", ".join("--" + n.lstrip("-") for n in required[1].split(", "))
        message = f"the following arguments are required: {names}"
    message = re.sub(r'^Parser key "(\w+)":', r"--\1:", message)
    return ConfigError(f"{message} {HELP_HINT}")


def main(args: list[str] | None = None) -> dict[str, Any]:
    """``python -m ferlit export``; returns :func:`export`'s report."""
    p, argv = parser(), list(sys.argv[1:] if args is None else args)
    try:
        options = p.parse_args(argv)
    except ArgumentError as error:
        raise refusal(p, error, argv) from None
    options = options.as_dict()
    options.pop("config", None)
    return export(**options)
