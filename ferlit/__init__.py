"""ferlit: a PyTorch Lightning template for frame-level facial expression recognition in the wild.

It reproduces Cafarelli et al., "Expression Recognition Analysis in the Wild" (ABAW 2020):
SE-ResNet-50 fine-tuned on Aff-Wild2 + ExpW, selected by the ABAW expression criterion.
"""

import os

# albumentations checks PyPI for a newer release at import unless told not to; ferlit runs offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

#: The Python API for a trained model (ferlit.evaluation.inference), imported on first use: ``import ferlit``
#: stays light for the data tools.
_LAZY = {"load_model": "ferlit.evaluation.inference", "predict": "ferlit.evaluation.inference"}
__all__ = ["__version__", "load_model", "predict"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ferlit' has no attribute {name!r}")
