"""A trained model from Python: ``ferlit.load_model`` and ``ferlit.predict``.

    import ferlit

    model = ferlit.load_model("runs/sample")          # a checkpoint file, or a run's log folder
    probs = ferlit.predict(model, faces)               # faces: uint8 RGB, (N, H, W, 3)
    labels = [model.class_names[i] for i in probs.argmax(1)]
    table = ferlit.predict(model, "clip.mp4", smooth=15)  # media: a row per frame and face

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
import pandas as pd
import torch
from lightning.pytorch.core.saving import _load_state

from ferlit.data.transforms import build_transform, to_chw_uint8
from ferlit.errors import ConfigError, DataError, WeightsError
from ferlit.models.checkpoints import load_checkpoint
from ferlit.training.module import _FROM_CHECKPOINT, ExpressionModule, check_tta
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
    path = checkpoint_file(checkpoint)
    return model_from_checkpoint(path, read_checkpoint(path)).to(device)


def checkpoint_file(checkpoint: str | os.PathLike[str]) -> Path:
    """The ``.ckpt`` that ``checkpoint`` names: itself, or the best checkpoint of a run folder
    (:func:`ferlit.training.runs.resolve_checkpoint`); a WeightsError when there is neither."""
    path = Path(checkpoint)
    if path.is_dir():
        return resolve_checkpoint(path)
    if not path.is_file():
        raise WeightsError(
            f"{path}: no such checkpoint file or run folder; expected a .ckpt of python -m "
            "ferlit.fit or its log folder (e.g. runs/sample)"
        )
    return path


@torch.no_grad()
def predict(
    model: ExpressionModule | str | os.PathLike[str],
    faces: np.ndarray | str | os.PathLike[str],
    batch_size: int = 64,
    tta: str = "none",
    **media_options: Any,
) -> np.ndarray | pd.DataFrame:
    """The model's expressions for faces already cropped, or for the faces in new media.

    ``model``: an ``ExpressionModule`` (:func:`load_model`) or a checkpoint / run folder (then
    loaded here, on the CPU for faces, on a CUDA GPU when there is one for media).

    * ``faces`` an array of uint8 RGB faces shaped (N, H, W, 3) (aligned as the training faces
      were): returns their class probabilities (N, C), float32, in ``model.class_names`` order.
    * ``faces`` a path (``str`` or ``os.PathLike``) of a video, a folder of videos, an image or a
      folder of images: faces are detected, tracked and aligned in every frame and classified;
      returns a ``pandas.DataFrame`` with a row per frame and face (media, frame, time_s, face,
      track, box, landmarks, score, ``prob_<class>``, ``pred``, ``pred_name``, with smoothing
      ``pred_smoothed``...), :func:`ferlit.evaluation.media_predict.predict_media`, whose
      keyword arguments ``media_options`` are (``smooth``, ``smooth_kernel``, ``upsample``,
      ``min_score``, ``max_side``, ``max_unseen``, ``workers``, ``device``, ``progress``).
      ``python -m ferlit predict --input PATH`` writes the same table.

    Faces of another size than the model's ``input_size`` are resized first. Runs in batches of
    ``batch_size`` on the model's device, in eval mode (the model's mode is restored after).
    ``tta="flip"`` averages each face's probabilities with its horizontal mirror's
    (``ExpressionModule.probabilities``, as ``python -m ferlit predict --tta flip``).
    """
    check_tta(tta)
    if isinstance(faces, str | os.PathLike):
        from ferlit.evaluation.media_predict import predict_media

        return predict_media(model, faces, batch_size=batch_size, tta=tta, **media_options)
    if media_options:
        raise ConfigError(
            f"{', '.join(media_options)}: options of media (a path as the second argument), "
            "not of an array of faces"
        )
    if not isinstance(model, torch.nn.Module):
        model = load_model(model)
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
            model.probabilities(torch.from_numpy(images[i : i + batch_size]).to(device), tta)
            .cpu()
            .numpy()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.net.num_classes), np.float32)
