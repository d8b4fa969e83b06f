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

import yaml
from jsonargparse import get_loader, set_loader

PARSER_MODE = "ferlit_yaml"


def _load(value: str):
    """A value from the command line or a config file: ``None`` is null, the rest YAML."""
    if value.strip() == "None":
        return None
    return get_loader("yaml")(value)


set_loader(PARSER_MODE, _load, (yaml.YAMLError,))
