"""ferlit: a PyTorch Lightning template for frame-level facial expression recognition in the wild.

It reproduces Cafarelli et al., "Expression Recognition Analysis in the Wild" (ABAW 2020):
SE-ResNet-50 fine-tuned on Aff-Wild2 + ExpW, selected by the ABAW expression criterion.
"""

import os

# albumentations checks PyPI for a newer release at import unless told not to; ferlit runs offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
