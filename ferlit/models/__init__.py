"""Backbones by name, the VGGFace2 weights, and the preprocessing those weights need."""

from ferlit.models.backbone import ExpressionNet, create_model
from ferlit.models.preprocessing import (
    IMAGENET,
    VGGFACE2,
    Normalize,
    Preprocessing,
    preprocessing_from_timm,
)
from ferlit.models.vggface2 import LoadReport, load_vggface2_weights

__all__ = [
    "IMAGENET",
    "VGGFACE2",
    "ExpressionNet",
    "LoadReport",
    "Normalize",
    "Preprocessing",
    "create_model",
    "load_vggface2_weights",
    "preprocessing_from_timm",
]
