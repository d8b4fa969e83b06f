"""The expression classifier: a timm backbone by name, its preprocessing, and a new head.

Cafarelli et al. (ABAW 2020) fine-tune an SE-ResNet-50 pre-trained on VGGFace2 with a new
7-way classifier. The backbone is a timm name plus weights, never a fork of its code, so any timm
model can be swapped in; ``legacy_seresnet50`` is the default because its bottleneck puts the
stride in the first 1x1 conv, as the Caffe VGGFace2 model does, so those weights load unchanged.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Literal

import timm
from torch import Tensor, nn

from ferlit.errors import ConfigError
from ferlit.expressions import class_names
from ferlit.models.preprocessing import (
    IMAGENET,
    VGGFACE2,
    Normalize,
    Preprocessing,
    preprocessing_from_timm,
)
from ferlit.models.vggface2 import LoadReport, load_vggface2_weights

log = logging.getLogger(__name__)

PREPROCESSING_CHOICES = ("auto", "vggface2", "imagenet")


class ExpressionNet(nn.Module):
    """RGB 0-255 images in, expression logits out; normalisation happens inside the model.

    Keeping the normalisation here (see :mod:`ferlit.models.preprocessing`) means the data code
    never needs to know which weights the backbone was started from.
    """

    def __init__(
        self,
        backbone: nn.Module,
        preprocessing: Preprocessing,
        weights_report: LoadReport | None = None,
    ) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        self.weights_report = weights_report
        self.normalize = Normalize(preprocessing)
        self.backbone = backbone

    @property
    def num_classes(self) -> int:
        return int(self.backbone.num_classes)

    def forward_features(self, images: Tensor) -> Tensor:
        """The backbone's unpooled feature map (timm's ``forward_features``)."""
        return self.backbone.forward_features(self.normalize(images))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooling and classifier; ``pre_logits=True`` gives the pooled embedding."""
        return self.backbone.forward_head(features, pre_logits=pre_logits)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Normalise inputs as ``preprocessing`` says (a checkpoint's, restored on loading); the
        new mean/std buffers stay on the device and dtype of the old ones."""
        old = self.normalize.mean
        self.preprocessing = preprocessing
        self.normalize = Normalize(preprocessing).to(device=old.device, dtype=old.dtype)

    def head_parameters(self) -> list[nn.Parameter]:
        """The new classifier's parameters (trained from scratch, usually at a higher lr)."""
        return list(self.backbone.get_classifier().parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: the pre-trained part."""
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.parameters() if id(p) not in head]


def create_model(
    backbone: str = "legacy_seresnet50",
    num_classes: int = 7,
    backbone_kwargs: dict[str, Any] | None = None,
    pretrained: str | os.PathLike[str] | None = None,
    preprocessing: Literal["auto", "vggface2", "imagenet"] = "auto",
) -> ExpressionNet:
    """Build the classifier; timm never downloads anything (``pretrained=False`` in timm).

    ``pretrained`` is a VGGFace2 weights file (see :func:`load_vggface2_weights`). With
    ``preprocessing="auto"`` such weights get :data:`VGGFACE2` (BGR, mean only), a checkpoint of
    ``python -m ferlit.fit`` the preprocessing it was trained with (saved in it), and without
    weights the timm model's own ``pretrained_cfg`` decides. Dropout defaults to 0 (timm's legacy SENet uses
    0.2), overridable through ``backbone_kwargs``.
    """
    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close timm names: {', '.join(close)}" if close else ""
        raise ConfigError(f"model.backbone: {backbone!r} is not a timm model name{hint}")
    try:
        class_names(num_classes)
    except ValueError as err:
        raise ConfigError(f"model.num_classes: {err}") from err
    if preprocessing not in PREPROCESSING_CHOICES:
        raise ConfigError(
            f"model.preprocessing: expected one of {', '.join(PREPROCESSING_CHOICES)}, "
            f"got {preprocessing!r}"
        )
    kwargs = {"drop_rate": 0.0, **(backbone_kwargs or {})}
    try:
        net = timm.create_model(backbone, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"model.backbone_kwargs: {backbone_kwargs} not accepted by timm {backbone}: {err}"
        ) from err

    report = None
    if pretrained is not None:
        report = load_vggface2_weights(net, pretrained)
        log.info("model.pretrained: %s", report)

    if preprocessing == "auto" and report is not None and report.preprocessing is not None:
        chosen = report.preprocessing
    elif preprocessing == "vggface2" or (preprocessing == "auto" and pretrained is not None):
        chosen = VGGFACE2
    elif preprocessing == "imagenet":
        chosen = IMAGENET
    else:
        chosen = preprocessing_from_timm(net.pretrained_cfg)
    return ExpressionNet(net, chosen, weights_report=report)
