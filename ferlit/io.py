"""Crash-safe file writes (a reader sees the old file or the whole new one, never a part), the
output-folder bookkeeping built on them, and :func:`read_text` for the text files users give.

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
import json
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ferlit.errors import ConfigError, DataError


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
    temporary file; a killed process leaves a ``.<name>.<pid>@<host>.*.tmp`` beside it, which no
    reader of ``path`` looks at and the next write of ``path`` removes
    (:func:`remove_stale_temporaries`). The replaced file keeps the permissions a new file gets
    (umask).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    folder = path.parent
    remove_stale_temporaries(path)
    fd, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=".tmp", dir=folder
    )
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


#: This machine's name as it appears in temporary names (letters, digits and ``-`` only), so that
#: a process id is only ever looked up on the machine that wrote it (a shared NFS folder).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def write_json(path: str | os.PathLike, value: Any) -> None:
    """``value`` as JSON indented by 2 spaces with a final newline (the layout of every JSON file
    ferlit writes: ``metrics.json``, ``best_validation.json``, manifests), through
    :func:`atomic_write`: ``path`` holds the old file or the whole new one, never part of one. A
    value JSON cannot hold raises ``TypeError`` before anything is written; a failed write
    raises its ``OSError``."""
    text = json.dumps(value, indent=2) + "\n"
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write(text)


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporaries of ``path`` that :func:`atomic_write` left when its process was
    killed (``kill -9``, an OOM, a node lost mid-checkpoint): each holds up to a checkpoint's size,
    and nothing else ever removes them. Returns the names removed.

    Only ferlit's own pattern for this very target is touched (``.<name>.<pid>@<host>.<8 of
    mkstemp's characters>.tmp``), and only where ``<host>`` is this machine and process ``<pid>``
    no longer exists: a write in progress in another process, or on another machine sharing the
    folder, keeps its file. A reused pid keeps a stale file, never removes a live one.
    """
    path = Path(path)
    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.(\d+)@{re.escape(_HOST)}\.[a-z0-9_]{{8}}\.tmp"
    )
    removed = []
    try:
        entries = os.listdir(path.parent)
    except OSError:  # the write itself will name the folder's problem
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match is None or int(match[1]) == os.getpid() or _alive(int(match[1])):
            continue
        with contextlib.suppress(OSError):  # another process removed it first, or read-only
            os.unlink(path.parent / entry)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # another user's process: alive
        return True
    return True


def file_kind(path: str | os.PathLike) -> str:
    """What a path that ferlit expected to be a regular file is, for an error message ("a link to
    X, which does not exist", "a FIFO (named pipe)", ...): a FIFO named only as "not a regular
    file", or a dangling link as "does not exist", sent users looking for a missing file."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a link to {os.readlink(path)}, which does not exist"
        return "missing"
    except OSError as e:  # a symlink loop, a folder on the way not searchable
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


# -- ferlit's own outputs ----------------------------------------------------------------------

#: The list, in each output folder, of the files ferlit wrote there: ``--overwrite`` replaces or
#: deletes only these, never a file of the user's (issue 13: an evaluation's ``--submission``
#: pointed at the annotation folder once replaced the ground truth with predictions).
OUTPUTS_MANIFEST = ".ferlit-outputs.json"


def outputs_written(folder: str | os.PathLike) -> set[str]:
    """The names of the files ferlit wrote in ``folder`` (its ``.ferlit-outputs.json``)."""
    path = Path(folder) / OUTPUTS_MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError as e:
        raise ConfigError(f"{path}: unreadable ({e.strerror})") from None
    try:
        files = json.loads(text)["files"]
    except (ValueError, TypeError, KeyError):
        files = None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(
            f'{path}: damaged, expected {{"files": [<name>, ...]}}; ferlit cannot tell which '
            "files in this folder it wrote: choose another folder"
        )
    return set(files)


def record_outputs(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Add ``names`` to the folder's list of files ferlit wrote (crash-safe, like every write).

    Call it before writing them: a kill in between leaves a name listed whose file is missing or
    ferlit's own temporary, never a user's file unlisted-but-replaced.
    """
    folder = Path(folder)
    files = outputs_written(folder)
    new = files | set(names)
    if new == files and (folder / OUTPUTS_MANIFEST).is_file():
        return
    write_json(folder / OUTPUTS_MANIFEST, {"written_by": "ferlit", "files": sorted(new)})


def claim_outputs(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Record ``names`` as ferlit's outputs in ``folder`` (created if missing) before writing
    them; a ConfigError if one of them exists and ferlit did not write it (a file of the user's)."""
    folder = Path(folder)
    names = list(names)
    if folder.is_dir():
        owned = outputs_written(folder)
        for name in names:
            if name not in owned and os.path.lexists(folder / name):
                raise ConfigError(
                    f"{folder / name}: was not written by ferlit (not listed in "
                    f"{folder / OUTPUTS_MANIFEST}); ferlit never replaces a file of yours: "
                    "choose another folder"
                )
    folder.mkdir(parents=True, exist_ok=True)
    record_outputs(folder, names)


def check_output_folder(
    folder: str | os.PathLike,
    option: str,
    names: Iterable[str] = (),
    pattern: str | None = None,
    reads: Iterable[tuple[str, str | os.PathLike | None]] | None = None,
) -> list[str]:
    """Check an output folder before any long work; returns the files ferlit wrote there earlier.

    Refused with a ConfigError naming ``option``: a path that is a file, a folder that is, is
    inside or contains one of the data folders ``reads`` ((option, folder) pairs) being read, and a
    folder holding one of ``names`` (or a file matching ``pattern``) that ferlit did not write
    there (not in its :data:`OUTPUTS_MANIFEST`): ``--overwrite`` never replaces a user's file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: is a file; expected a folder for ferlit's outputs")
    check_apart(folder, option, reads or ())
    if not folder.is_dir():
        return []
    names = [n for n in names if os.path.lexists(folder / n)]
    existing = names + sorted(_matching(folder, pattern) - set(names))
    owned = outputs_written(folder)
    foreign = [n for n in existing if n not in owned]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ConfigError(
            f"{option} {folder}: {folder / foreign[0]}{more} was not written by ferlit (not "
            f"listed in {OUTPUTS_MANIFEST}) and would be replaced; ferlit never replaces or "
            "deletes a file of yours, even with --overwrite: choose another folder"
        )
    return existing


def check_apart(
    out: str | os.PathLike, option: str, reads: Iterable[tuple[str, str | os.PathLike | None]]
) -> None:
    """Refuse an output path that is, is inside, or contains a data folder being read."""
    target = Path(os.path.realpath(out))
    for data_option, data in reads:
        if data is None:
            continue
        source = Path(os.path.realpath(data))
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "is inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise ConfigError(
            f"{option} {out}: {relation} {data_option} {data}, data being read; outputs go in "
            "a folder apart from the data"
        )


def remove_outputs(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Delete those of ``names`` that ferlit wrote in ``folder`` (listed in its manifest)."""
    folder = Path(folder)
    owned = outputs_written(folder)
    for name in names:
        if name in owned:
            (folder / name).unlink(missing_ok=True)


def owned_matching(folder: str | os.PathLike, pattern: str) -> list[str]:
    """The files matching ``pattern`` in ``folder`` that ferlit wrote there."""
    owned = outputs_written(folder)
    return sorted(n for n in _matching(Path(folder), pattern) if n in owned)


def _matching(folder: Path, pattern: str | None) -> set[str]:
    if pattern is None or not folder.is_dir():
        return set()
    return {p.name for p in folder.glob(pattern)}


def check_creatable(folder: str | os.PathLike, option: str) -> None:
    """Refuse, before any long work, an output folder that cannot be made or written (found only
    at the first write, it cost a whole evaluation or pack): below a file, a dangling link, or in
    a folder not writable. A path that is itself a file passes here: the caller names it."""
    folder = Path(folder)
    if folder.is_dir():
        existing = folder
    elif os.path.islink(folder) and not folder.exists():
        raise ConfigError(
            f"{option} {folder}: a link to {os.readlink(folder)}, which does not exist; "
            "choose another folder"
        )
    else:
        existing = folder.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(
                f"{option} {folder}: {existing} is a file, so the folder cannot be made there; "
                "choose another folder"
            )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {folder}: {existing} is not writable; choose another folder")


def read_text(path: str | os.PathLike, what: str | None = None) -> str:
    """The text of a file a user gives (an annotation file, ``label.lst``, a test list), or
    ``DataError`` naming the file and why it cannot be read.

    UTF-8, with the byte order mark that Windows editors write accepted and dropped
    (``utf-8-sig``); undecodable bytes are refused with their offset. ``what`` is the option that
    named the file (``--test_list``): the message then says which, and a missing file reads
    "file not found" rather than the OS's words.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:  # missing, a folder, unreadable (PermissionError), an I/O error
        if what and isinstance(e, FileNotFoundError):
            raise DataError(f"{path}: {what} file not found") from None
        label = f" {what}" if what else ""
        raise DataError(f"{path}:{label} cannot be read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
