"""Training and evaluation transforms (albumentations, on RGB uint8 HxWx3 faces).

Cafarelli et al. augment with a random horizontal flip and colour jitter (brightness 0.4,
contrast 0.3, saturation 0.25, hue 0.5). Normalisation is *not* done here: it belongs to the
backbone's weights and runs inside the model (``ferlit.models.preprocessing``), so the loaders
move compact uint8 batches and evaluation can never use a different normalisation than training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


@dataclass(frozen=True)
class Augmentation:
    """Augmentation strengths; the defaults are the paper's."""

    hflip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.3
    saturation: float = 0.25
    hue: float = 0.5


def build_transform(image_size: int, augmentation: Augmentation | None) -> A.Compose:
    """Resize to the model's input size, then (training only) flip and colour jitter.

    Resizing first makes the jitter cost independent of the source size (ExpW crops are large).
    ColorJitter is applied with p=1, as torchvision's ColorJitter (which the paper used) always is.
    """
    steps: list[A.BasicTransform] = [
        A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR, p=1.0)
    ]
    if augmentation is not None:
        if augmentation.hflip > 0:
            steps.append(A.HorizontalFlip(p=augmentation.hflip))
        a = augmentation
        if any(v > 0 for v in (a.brightness, a.contrast, a.saturation, a.hue)):
            steps.append(
                A.ColorJitter(
                    brightness=(max(0.0, 1 - a.brightness), 1 + a.brightness),
                    contrast=(max(0.0, 1 - a.contrast), 1 + a.contrast),
                    saturation=(max(0.0, 1 - a.saturation), 1 + a.saturation),
                    hue=(-a.hue, a.hue),
                    p=1.0,
                )
            )
    return A.Compose(steps)


def to_chw_uint8(image: np.ndarray) -> np.ndarray:
    """HxWx3 -> 3xHxW, contiguous, still uint8 (the model normalises)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))
