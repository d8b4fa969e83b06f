"""The input normalisation a backbone's weights were trained with.

Preprocessing belongs to the weights, not to the data (timm resolves mean and std from the model's
own ``pretrained_cfg`` for the same reason): the Oxford VGGFace2 SE-ResNet-50 (``senet50_ft``) was
trained in Caffe on BGR images with only the mean subtracted on the 0-255 scale, while timm's
ImageNet weights expect RGB scaled to 0-1 and divided by the std. Feeding either the other's input
silently costs accuracy, so the data pipeline hands raw RGB 0-255 images to the model and the
model's first layer, :class:`Normalize`, applies what its weights need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn


@dataclass(frozen=True)
class Preprocessing:
    """Channel order and per-channel mean and std, all on the 0-255 pixel scale.

    ``mean`` and ``std`` are listed in ``channel_order``; a std of (1, 1, 1) means no division.
    """

    channel_order: Literal["RGB", "BGR"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")


def _scale_255(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"expected 3 channel values, got {tuple(values)}")
    return (float(values[0]) * 255.0, float(values[1]) * 255.0, float(values[2]) * 255.0)


#: timm's ImageNet statistics (timm.data.IMAGENET_DEFAULT_MEAN / _STD) moved to the 0-255 scale.
IMAGENET = Preprocessing(
    channel_order="RGB",
    mean=_scale_255(IMAGENET_DEFAULT_MEAN),
    std=_scale_255(IMAGENET_DEFAULT_STD),
)

#: The Oxford VGG Caffe models (resnet50_ft / senet50_ft prototxt): BGR, mean subtracted, no std.
#: The mean is ``mean_bgr`` of the PyTorch port (cydonia999/VGGFace2-pytorch, datasets/vgg_face2.py).
VGGFACE2 = Preprocessing(
    channel_order="BGR",
    mean=(91.4953, 103.8827, 131.0912),
    std=(1.0, 1.0, 1.0),
)


def preprocessing_from_timm(pretrained_cfg: Mapping[str, Any]) -> Preprocessing:
    """The RGB preprocessing a timm model's pretrained config asks for (timm stores 0-1 values).

    A config without ``mean``/``std`` falls back to ImageNet's, as ``timm.data.resolve_data_config``
    does.
    """
    mean = pretrained_cfg.get("mean") or IMAGENET_DEFAULT_MEAN
    std = pretrained_cfg.get("std") or IMAGENET_DEFAULT_STD
    return Preprocessing(channel_order="RGB", mean=_scale_255(mean), std=_scale_255(std))


class Normalize(nn.Module):
    """RGB 0-255 images (uint8 or float, N x 3 x H x W) -> the input the weights expect, in the
    dtype of the model (float32 unless cast whole, e.g. by ``--trainer.precision bf16-true``).

    Mean and std are non-persistent buffers: they move with ``.to(device)`` but stay out of the
    state dict, so a checkpoint holds only the backbone's own tensors and loads into any model with
    the same backbone (``net.backbone.*`` keys only). The resolved preprocessing is saved beside
    the weights instead, as plain values under ``checkpoint["ferlit"]["preprocessing"]``
    (:mod:`ferlit.models.checkpoints`), and restored by every loader.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        self.register_buffer("mean", _channel_buffer(preprocessing.mean), persistent=False)
        self.register_buffer("std", _channel_buffer(preprocessing.std), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images shaped (N, 3, H, W), got {tuple(images.shape)}")
        # The buffers' dtype: float32, unless a "true" precision (bf16-true, 16-true, 64-true)
        # cast the whole model, whose first convolution then expects that dtype (0-255 are exact
        # in bf16 and fp16). Under autocast (bf16-mixed) they stay float32.
        x = images.to(self.mean.dtype)
        if self.preprocessing.channel_order == "BGR":
            x = x.flip(1)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        p = self.preprocessing
        return f"channel_order={p.channel_order}, mean={p.mean}, std={p.std}"


def _channel_buffer(values: tuple[float, float, float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)
