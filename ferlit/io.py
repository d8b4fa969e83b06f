"""Crash-safe file writes: a reader sees the old file or the whole new one, never a part.

A file written in place (or, like Lightning's checkpoints, written to ``$TMPDIR`` and then
moved) is half-written for a while; on a cluster's NFS or Lustre the move across file systems is
itself a copy. A kill, an OOM or a node failure in that window leaves a truncated or 0-byte file
where the only resumable checkpoint was. :func:`atomic_write` writes a temporary file in the
destination folder (so the rename never crosses a file system), flushes it to disk, and renames
it over the destination (``os.replace``: atomic on POSIX file systems, NFS included), then
flushes the folder so that the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows, some FUSE file systems
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (with ``open_kwargs`` such as ``encoding``). If the block
    raises, or the process dies in it, ``path`` is untouched: an exception removes the
    temporary file; a killed process leaves a ``.<name>.*.tmp`` beside it, which no reader of
    ``path`` looks at. The replaced file keeps the permissions a new file gets (umask).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    folder = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it 0600
    except (AttributeError, OSError):  # no fchmod on Windows
        pass
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(folder)
