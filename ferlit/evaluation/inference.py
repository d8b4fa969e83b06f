"""A trained model from Python: ``ferlit.load_model`` and ``ferlit.predict``.

    import ferlit

    model = ferlit.load_model("runs/sample")          # a checkpoint file, or a run's log folder
    probs = ferlit.predict(model, faces)               # faces: uint8 RGB, (N, H, W, 3)
    labels = [model.class_names[i] for i in probs.argmax(1)]

The checkpoint carries everything the model needs (weights, class names, input size and the
input preprocessing it was trained with), so neither the data nor the weights file the run
started from is needed. Faces are resized to the model's input size as evaluation resizes them
(:func:`ferlit.data.transforms.build_transform`: bilinear, no augmentation); the model
normalises them itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.core.saving import _load_state

from ferlit.data.transforms import build_transform, to_chw_uint8
from ferlit.errors import DataError, WeightsError
from ferlit.models.checkpoints import load_checkpoint
from ferlit.training.module import _FROM_CHECKPOINT, ExpressionModule
from ferlit.training.runs import resolve_checkpoint


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint of ``python -m ferlit.fit``, read once, without running code
    (:func:`ferlit.models.checkpoints.load_checkpoint`, memory-mapped): its weights, the model's
    options (``hyper_parameters``) and the DataModule's (``datamodule_hyper_parameters``)."""
    state = load_checkpoint(path, mmap=True)
    needed = ("state_dict", "hyper_parameters", "pytorch-lightning_version")
    missing = [k for k in needed if k not in state]
    if missing:  # Lightning's loader would end in a KeyError
        raise WeightsError(
            f"{path}: not a checkpoint of python -m ferlit.fit (no {', '.join(missing)}); "
            "expected a .ckpt of a ferlit run"
        )
    return state


def model_from_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> ExpressionModule:
    """The ``ExpressionModule`` of a checkpoint already read (:func:`read_checkpoint`), on the
    CPU in eval mode.

    Built by the function Lightning's ``load_from_checkpoint`` builds it with (the recorded
    options, then ``on_load_checkpoint``: the input preprocessing, then every weight, strictly)
    but from ``state``, so the file is not read again; the weights file the run started from
    (``pretrained``) is not read either, as in ``ExpressionModule.load_from_checkpoint``.
    """
    token = _FROM_CHECKPOINT.set(True)
    try:
        module = _load_state(ExpressionModule, state, strict=True)
    except RuntimeError as error:  # the options recorded do not build the weights saved
        raise WeightsError(
            f"{path}: weights that do not fit the model's options: {error}"
        ) from None
    finally:
        _FROM_CHECKPOINT.reset(token)
    return module.eval()


def load_model(
    checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> ExpressionModule:
    """The trained ``ExpressionModule`` of a checkpoint, in eval mode on ``device``.

    ``checkpoint`` is a ``.ckpt`` of ``python -m ferlit.fit`` or its log folder (then the best
    checkpoint of its newest version, as ``python -m ferlit predict --ckpt_path`` finds it). The
    file is read once, without running code (:func:`read_checkpoint`). The model has
    ``class_names`` (the order of :func:`predict`'s columns) and ``hparams.input_size``.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = resolve_checkpoint(path)
    elif not path.is_file():
        raise WeightsError(
            f"{path}: no such checkpoint file or run folder; expected a .ckpt of python -m "
            "ferlit.fit or its log folder (e.g. runs/sample)"
        )
    return model_from_checkpoint(path, read_checkpoint(path)).to(device)


@torch.no_grad()
def predict(model: ExpressionModule, faces: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, C), float32, for uint8 RGB faces shaped (N, H, W, 3).

    Faces of another size than the model's ``input_size`` are resized first. Runs in batches of
    ``batch_size`` on the model's device, in eval mode (the model's mode is restored after).
    """
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[-1] != 3:
        raise DataError(
            f"faces: expected uint8 RGB images shaped (N, H, W, 3), got {faces.dtype} "
            f"{tuple(faces.shape)}"
        )
    if batch_size < 1:
        raise DataError(f"batch_size: expected a positive number, got {batch_size}")
    size = int(model.hparams.input_size)
    if faces.shape[1:3] != (size, size):
        resize = build_transform(size, None)
        images = np.stack([to_chw_uint8(resize(image=face)["image"]) for face in faces])
    else:
        images = np.ascontiguousarray(faces.transpose(0, 3, 1, 2))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [
            torch.softmax(model(torch.from_numpy(images[i : i + batch_size]).to(device)).float(), 1)
            .cpu()
            .numpy()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.net.num_classes), np.float32)
