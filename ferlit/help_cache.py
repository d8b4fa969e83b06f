"""``python -m ferlit.fit --help`` without importing Lightning: the help text, kept from its
last build.

fit's parser is LightningCLI's, built from the signatures of ``Trainer``, ``ExpressionModule``
and ``ExpressionDataModule``: it needs ``lightning`` and ``torch`` imported, about 7 s on the
2-core VM ferlit is developed on when loaded (16 s cold, issue 16). The text depends only on
the code and the installed versions, so a plain ``--help`` (nothing else on the command line)
is printed from a file written the first time, under ``$FERLIT_CACHE_DIR/help`` (default
``~/.cache/ferlit/index/help``, :func:`ferlit.data.cache.default_cache_dir`). The file's name
is a hash of everything the text depends on: the command, the terminal width, the Python and
package versions, and the size and modification time of every source file of ferlit, so an
edit or an upgrade builds it afresh. This module imports nothing heavy: it runs before
anything else on that path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

#: The packages whose signatures or formatting make the help text.
PACKAGES = ("lightning", "jsonargparse", "torch", "timm", "torchmetrics")
HELP_FLAGS = (["--help"], ["-h"])


def help_cache_dir() -> Path:
    from ferlit.data.cache import default_cache_dir

    return default_cache_dir() / "help"


def help_key(command: str, argv: list[str]) -> str:
    """The hash naming the help file of ``command`` run with ``argv``."""
    package = Path(__file__).resolve().parent
    sources = sorted(
        (str(p.relative_to(package)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in package.rglob("*.py")
    )
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    facts = {
        "command": command,
        "argv": argv,
        "columns": shutil.get_terminal_size().columns,
        "python": sys.version,
        "versions": versions,
        "sources": sources,
    }
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:32]


def print_help(command: str, argv: list[str], build: Callable[[], object]) -> bool:
    """When ``argv`` is a plain help request, print ``command``'s help and return True:
    from its file when there is one for this code and these versions, else by ``build()``
    (which prints it and exits 0, as argparse does), writing the file for the next time.
    Any other ``argv``: False, and nothing done."""
    if argv not in HELP_FLAGS:
        return False
    # -h and --help print the same text: one file
    path = help_cache_dir() / f"{command}-{help_key(command, ['--help'])}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    if text is None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                build()
            except SystemExit as done:
                if done.code not in (0, None):
                    sys.stdout.write(out.getvalue())
                    raise
        text = out.getvalue()
        _write(path, text)
        for stale in path.parent.glob(f"{command}-*.txt"):  # older code's, never read again
            if stale != path:
                with contextlib.suppress(OSError):
                    stale.unlink()
    sys.stdout.write(text)
    sys.stdout.flush()
    return True


def _write(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all; a cache that cannot be written is only slower."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)
