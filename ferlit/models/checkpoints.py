"""Reading checkpoints and weights files without running code, and what a checkpoint must carry.

A ``.ckpt``/``.pth`` is a pickle: ``torch.load(weights_only=False)`` runs whatever callable it
names (a shared or downloaded checkpoint is as untrusted as a weights file). Every torch file
ferlit reads goes through :func:`read_torch_file`, which uses ``torch.load(weights_only=True)``:
tensors, numbers, strings and containers only, plus the few harmless classes in
:data:`SAFE_GLOBALS`. A file asking for anything else is refused before any of it runs, with a
:class:`~ferlit.errors.WeightsError` naming the file and the global it asked for.

:func:`load_checkpoint` is the one reader of Lightning checkpoints (``ferlit.fit --ckpt_path``,
``ferlit.evaluate --ckpt``, ``ExpressionModule.load_from_checkpoint``, :func:`ferlit.load_model`);
it also refuses a model whose weights hold NaN or infinite values, naming the tensor.

A trained model's input normalisation is part of it (:mod:`ferlit.models.preprocessing`): it is
saved in the checkpoint under ``checkpoint["ferlit"]["preprocessing"]``
(:func:`preprocessing_record`) and read back by :func:`checkpoint_preprocessing`, so that no
loader has to guess it from the options or need the weights file the run started from.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from torch import Tensor

from ferlit.errors import WeightsError
from ferlit.models.preprocessing import IMAGENET, VGGFACE2, Preprocessing

#: Classes a ferlit/Lightning checkpoint may hold beyond what ``weights_only`` admits by default:
#: paths (data folders passed as ``Path``) and the argument namespaces of jsonargparse/argparse
#: (a config saved by LightningCLI). None of them runs code when rebuilt.
SAFE_GLOBALS: list[type] = [
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    Namespace,
    argparse.Namespace,
]
# Lightning loads the checkpoint of a resumed run itself (trainer.fit(weights_only=True)): the
# same classes must be admitted there.
torch.serialization.add_safe_globals(SAFE_GLOBALS)

#: Where ferlit keeps its own entries in a Lightning checkpoint.
FERLIT_KEY = "ferlit"

#: torch spells a refused global "Unsupported global: GLOBAL os.system ..." or "unsupported
#: GLOBAL posix.system whose module posix is blocked", depending on the version and the module.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_EXPECTED = "expected a checkpoint written by python -m ferlit.fit or a weights file"


def read_torch_file(path: str | os.PathLike[str], mmap: bool = False) -> Any:
    """The object in a ``torch.save`` file, read with ``weights_only=True`` onto the CPU.

    ``mmap`` maps the tensors' storage instead of reading it (a quick look at a large file).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file; {_EXPECTED}")
    try:
        return torch.load(
            path,
            map_location="cpu",
            weights_only=True,
            mmap=mmap and zipfile.is_zipfile(path),
        )
    except pickle.UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused is None:  # not a torch file at all: torch reads a pickle opcode it refuses
            raise WeightsError(
                f"{path}: not a readable PyTorch checkpoint or weights file "
                f"({_torch_detail(error)}); {_EXPECTED}"
            ) from None
        raise WeightsError(
            f"{path}: refused to load (it asks to run {refused.group(1)}): ferlit reads only "
            "tensors, numbers, strings and containers from a checkpoint (anything else could "
            f"run code); {_EXPECTED}"
        ) from None
    except (
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
    ) as error:
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint or weights file, damaged or of "
            f"another kind ({_first_line(error)}); {_EXPECTED}"
        ) from None


def load_checkpoint(path: str | os.PathLike[str], mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint, read safely (:func:`read_torch_file`) and checked.

    Refused, naming the file: anything that is not a dict with a ``state_dict`` of tensors, and
    weights with NaN or infinite values (the tensor is named).
    """
    path = Path(path)
    checkpoint = read_torch_file(path, mmap=mmap)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise WeightsError(
            f"{path}: not a Lightning checkpoint (no state_dict); expected a checkpoint written "
            "by python -m ferlit.fit"
        )
    check_tensors(checkpoint["state_dict"], path)
    return checkpoint


def check_tensors(
    tensors: Mapping[str, Any],
    path: Path,
    expected: Mapping[str, Tensor] | None = None,
) -> None:
    """Refuse entries that are not tensors, hold NaN/inf, or are not floating point where the
    model's own tensor is (``expected``: name -> the model's tensor; integer buffers such as
    BatchNorm's ``num_batches_tracked`` may stay integers)."""
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            raise WeightsError(
                f"{path}: entry {name!r} is a {type(tensor).__name__}, expected a tensor"
            )
        own = None if expected is None else expected.get(name)
        if own is not None and own.is_floating_point() and not tensor.is_floating_point():
            raise WeightsError(
                f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected floating point "
                f"weights (the model's {name} is {own.dtype})"
            )
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise WeightsError(
                    f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s) of "
                    f"{tensor.numel()}; the weights are damaged (or saved after the training "
                    "diverged)"
                )


def preprocessing_record(preprocessing: Preprocessing) -> dict[str, Any]:
    """The checkpoint entry for a model's preprocessing: plain values (read with weights_only)."""
    return {
        "channel_order": preprocessing.channel_order,
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
    }


def checkpoint_preprocessing(
    checkpoint: Mapping[str, Any], path: str | os.PathLike[str] | None = None
) -> Preprocessing | None:
    """The preprocessing a checkpoint's model was trained with.

    Saved by ferlit under ``checkpoint["ferlit"]["preprocessing"]``; for a checkpoint written
    before that, rebuilt from its hyperparameters the way the run chose it: ``vggface2`` or
    ``imagenet`` as named, ``auto`` with a weights file -> VGGFace2's. None means the backbone's
    own timm default (``auto`` without weights): the caller's model already has it.
    """
    record = (checkpoint.get(FERLIT_KEY) or {}).get("preprocessing")
    if record is not None:
        try:
            return Preprocessing(
                channel_order=record["channel_order"],
                mean=tuple(float(v) for v in record["mean"]),
                std=tuple(float(v) for v in record["std"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(
                f"{path or 'checkpoint'}: ferlit.preprocessing {record!r} is not a channel order "
                f"with 3 means and 3 stds ({error})"
            ) from None
    hparams = checkpoint.get("hyper_parameters") or {}
    chosen = hparams.get("preprocessing", "auto")
    if chosen == "vggface2" or (chosen == "auto" and hparams.get("pretrained")):
        return VGGFACE2
    if chosen == "imagenet":
        return IMAGENET
    return None


def _torch_detail(error: BaseException) -> str:
    """The specific line of torch's weights-only refusal, without its advice to load unsafely."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return specific[0] if specific else "not a plain file of tensors"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
