"""How ferlit's command lines read a value: YAML, plus the text ``None`` as null.

W&B sweep agents write every parameter as ``--name=<str(value)>``, so a null sweep value
arrives as ``--model.pretrained=None`` (Python's spelling). jsonargparse reads values as YAML,
where null is spelled ``null`` / ``~``, and has no setting for ``None``: a ``str | None`` option
took the text as a file named "None" and a ``float | None`` option refused it. ferlit's parsers
(``python -m ferlit.fit`` and ``python -m ferlit.evaluate``) therefore use the parser mode
:data:`PARSER_MODE`, whose loader reads a whole value ``None`` as null and everything else as
jsonargparse's YAML loader does.

This applies only where null is a valid value: jsonargparse validates the loaded null against
the option's type and, when the type refuses null (a plain ``str``, ``int``, ``bool``...),
retries with the original text, so such an option still receives the text "None" or the type's
usual refusal. No ferlit option wants the text "None" as a value (names of backbones, files and
folders, layouts, schedules): where null is allowed, ``None`` always means null.
"""

from __future__ import annotations

import math
import numbers
import os

import yaml
from jsonargparse import get_loader, set_loader

PARSER_MODE = "ferlit_yaml"


def _load(value: str):
    """A value from the command line or a config file: ``None`` is null, the rest YAML."""
    if value.strip() == "None":
        return None
    return get_loader("yaml")(value)


set_loader(PARSER_MODE, _load, (yaml.YAMLError,))

#: The largest face side ferlit trains on, packs or evaluates (``model.input_size``,
#: ``data.image_size``, ``pack --size``). Aff-Wild2's ``cropped_aligned`` faces are 112x112 and
#: VGGFace2's models were trained at 224; 1024 is a 112 crop enlarged 9x, 12 MB a float sample.
#: A typo such as 100000 made OpenCV try to allocate 30,000,000,000 bytes per sample in a loader
#: worker (a raw cv2.error, or the machine swapping), and ``pack`` a memory map of 30 GB per face.
MAX_IMAGE_SIZE = 1024

#: Worker processes per core that ferlit starts at most (``data.num_workers``, ``pack`` and
#: ``check --workers``). More than one per core only helps to hide a network file system's
#: latency; ``check --workers 100000`` forked until the machine stopped answering (a shared
#: cluster node), where a typo should have been refused.
MAX_WORKERS_PER_CORE = 8


def check_workers(option: str, value: object, low: int = 0) -> None:
    """Refuse a worker-process count below ``low`` or above :data:`MAX_WORKERS_PER_CORE` per
    core of this machine, before any process is started."""
    check_number(option, value, low, integer=True)
    cores = os.cpu_count() or 1
    if value > MAX_WORKERS_PER_CORE * cores:
        from ferlit.errors import ConfigError

        raise ConfigError(
            f"{option} {value}: more than {MAX_WORKERS_PER_CORE} worker processes per core "
            f"(this machine has {cores}); expected at most {MAX_WORKERS_PER_CORE * cores}"
        )


def check_number(
    option: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    above: bool = False,
) -> None:
    """Refuse an option value that is not a number in its range, before any data is read.

    A finite number (an integer with ``integer``; never a bool) ``>= low`` (``> low`` with
    ``above``) and ``<= high``. NaN and infinity are refused everywhere: a NaN weight or
    strength would surface hours later as a NaN loss blamed on the learning rate. The
    ``ConfigError`` names the option, what was expected and the value given.
    """
    from ferlit.errors import ConfigError

    kind = "an integer" if integer else "a finite number"
    lo, hi = (None if v is None else (str(int(v)) if v == int(v) else str(v)) for v in (low, high))
    if low is not None and high is not None:
        expected = f"{kind} in {'(' if above else '['}{lo}, {hi}]"
    elif low is not None:
        expected = f"{kind} {'>' if above else '>='} {lo}"
    else:
        expected = kind if high is None else f"{kind} <= {hi}"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (isinstance(value, numbers.Integral) or not integer) and math.isfinite(value)
    ok = ok and (low is None or (value > low if above else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        raise ConfigError(f"{option} must be {expected}, got {value!r}")
