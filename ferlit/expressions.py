"""The expression vocabulary: the only place the class names, their order and mappings are spelled out.

ABAW 2020 (and Cafarelli et al.) use 7 classes in the order of the Aff-Wild2 annotation header;
ABAW 2022 and later add an 8th class, ``Other`` (index 7).
"""

from __future__ import annotations

from ferlit.errors import ConfigError

EXPRESSIONS_7: tuple[str, ...] = (
    "Neutral",
    "Anger",
    "Disgust",
    "Fear",
    "Happiness",
    "Sadness",
    "Surprise",
)
OTHER = 7
EXPRESSIONS_8: tuple[str, ...] = (*EXPRESSIONS_7, "Other")

#: The header lines of Aff-Wild2 expression annotation files (2020: 7 classes; 2022+: 8).
AFFWILD2_HEADERS: dict[str, int] = {
    ",".join(EXPRESSIONS_7): 7,
    ",".join(EXPRESSIONS_8): 8,
}

#: ExpW's label.lst codes (0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral)
#: mapped to the ABAW index of the same expression.
EXPW_TO_ABAW: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 0)
EXPW_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def check_num_classes(option: str, value: object) -> int:
    """``value`` if it is a class count ferlit trains: 7 (ABAW 2020's expressions) or 8 (with
    Other, ABAW 2022 and later); else a ``ConfigError`` naming ``option`` (e.g.
    ``data.num_classes``). The one place this rule is written."""
    if isinstance(value, bool) or value not in (7, 8):
        raise ConfigError(
            f"{option} must be 7 (ABAW 2020) or 8 (with Other, ABAW 2022+), got {value!r}"
        )
    return int(value)


def class_names(num_classes: int) -> tuple[str, ...]:
    """The class names of a 7-class (ABAW 2020) or 8-class (ABAW 2022+) run; a ``ConfigError``
    for any other count (:func:`check_num_classes`)."""
    return EXPRESSIONS_7 if check_num_classes("num_classes", num_classes) == 7 else EXPRESSIONS_8


def metric_key(name: str) -> str:
    """The suffix used in per-class metric names, e.g. ``val/f1_happiness``."""
    return name.lower()
