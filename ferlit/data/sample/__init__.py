"""ferlit's sample data: drawn faces (``draw``) written in the Aff-Wild2 and ExpW layouts
(``write``). ``python -m ferlit.data synth`` writes it; a DataModule given no data folder uses it."""

from ferlit.data.sample.draw import (
    FACE_SIZE,
    GEOMETRY,
    Geometry,
    Identity,
    Look,
    Pose,
    draw_background,
    draw_face,
    draw_scene,
)
from ferlit.data.sample.write import (
    CLASS_FREQUENCIES,
    MAX_SCALE,
    PAPER_CLASS_WEIGHTS,
    SampleData,
    default_sample_dir,
    ensure_sample_data,
    write_sample_data,
)

__all__ = [
    "CLASS_FREQUENCIES",
    "FACE_SIZE",
    "GEOMETRY",
    "MAX_SCALE",
    "PAPER_CLASS_WEIGHTS",
    "Geometry",
    "Identity",
    "Look",
    "Pose",
    "SampleData",
    "default_sample_dir",
    "draw_background",
    "draw_face",
    "draw_scene",
    "ensure_sample_data",
    "write_sample_data",
]
