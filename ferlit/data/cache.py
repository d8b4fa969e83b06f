"""The index cache: a data set is scanned once; later starts load its index in about a second.

Indexing Aff-Wild2 lists ~550 ``cropped_aligned`` folders (about a million frames) and parses
~2.6M annotation lines; ExpW parses ``label.lst``. Researchers restart runs constantly, so the
first index of each (data set, split, options) is saved as a ``.npz`` (``FrameIndex.save``) in a
cache folder that holds nothing the user owns, and loaded with ``np.load`` afterwards.

An entry is valid while nothing the index was built from has changed. Its key is the reader's
(``Reader.cache_key``: ``ferlit.data.readers``), which holds:

* the annotation files' names, sizes and modification and change times (``mtime_ns``,
  ``ctime_ns``: an edit, or a copy over it that keeps the old mtime, changes one of them);
* what else decides the index: for Aff-Wild2, each video's frame folder mtime, which changes
  whenever a frame is added or removed; for ExpW, the mtime of ``image/origin``;
* the reader options (split, num_classes, layout, min_confidence);

to which :func:`cached_index` adds the reader's name, the absolute data folder, and a hash of the
reader's source code and ``CACHE_VERSION``, so a ferlit update never serves an index its new
reader would build differently. Any ``Reader`` is cached so, a reader of one's own included.

Checking the Aff-Wild2 key costs one ``stat`` per annotation file and two per video (~1,700 at
full scale), not one per frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferlit.data import index
from ferlit.data.index import FrameIndex
from ferlit.data.readers.base import Reader
from ferlit.errors import ConfigError, DataWarning

log = logging.getLogger(__name__)

#: Bump when the cached file's meaning changes without the readers' source changing.
CACHE_VERSION = 1
#: (cache folder, reason) pairs already warned about in this process: a folder that cannot be
#: written is said once, not once per split.
_WARNED: set[tuple[str, str]] = set()


def default_cache_dir() -> Path:
    """``$FERLIT_CACHE_DIR``, else ``~/.cache/ferlit/index``: never inside a data folder."""
    env = os.environ.get("FERLIT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ferlit" / "index"


def cached_index(
    reader: Reader,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> FrameIndex:
    """``reader.index(split)`` through the cache: the same index, rebuilt only when the data
    changed (``reader.cache_key(split)``; a reader that gives None is read every time).

    The entry's key is the reader's, with the reader's name, its absolute root, and a hash of
    its module's source, the FrameIndex's and ``CACHE_VERSION`` added. On a hit the reader may
    repeat what it warned about when it built the entry (``Reader.on_cache_hit``).
    """
    key = entry_key(reader, split)
    if key is None:
        return reader.index(split, progress)  # the reader names what is missing
    built = []

    def build() -> FrameIndex:
        built.append(True)
        return reader.index(split, progress)

    index = _cached(key, reader.root, build, cache_dir)
    if not built:
        reader.on_cache_hit(index, split)
    return index


def entry_key(reader: Reader, split: str) -> dict[str, Any] | None:
    """The cache key of ``reader``'s ``split``: the reader's own (None: not cached) with the
    reader's name, its absolute root and the hash of its code added. A reader whose module has
    no source file (defined in a notebook or ``python -c``) is not cached: a change to its code
    could not be seen."""
    key = reader.cache_key(split)
    module = sys.modules.get(type(reader).__module__)
    if key is None or not getattr(module, "__file__", None):
        return None
    return {
        "reader": reader.name or type(reader).__name__,
        "root": os.path.abspath(reader.root),
        **key,
        "code": _code_hash(module),
    }


def cache_file(cache_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """``<reader>-<data set and options>-<state of the files>.npz`` in ``cache_dir``.

    The middle part names the entry a data set and its options own, so a new state replaces
    that entry instead of piling up beside it.
    """
    owner = _digest({k: key[k] for k in ("reader", "root", "options")})[:16]
    return Path(cache_dir) / f"{key['reader']}-{owner}-{_digest(key)[:24]}.npz"


def _cached(
    key: dict[str, Any], root: str, build: Callable[[], FrameIndex], cache_dir
) -> FrameIndex:
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    _check_outside(cache_dir, root)
    path = cache_file(cache_dir, key)
    try:
        hit = path.is_file()
    except OSError:  # a cache folder that cannot be searched: as if empty (the write warns)
        hit = False
    if hit:
        try:
            cached = FrameIndex.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("index cache: %s is unreadable (%s); rebuilding it", path, e)
        else:
            log.info("index cache: loaded %s", path)
            # The entry is keyed by the absolute folder; the index keeps the spelling asked for.
            return dataclasses.replace(cached, roots=(root,))
    built = build()
    try:
        built.save(path)  # crash-safe: a failed write leaves no part of a file
        owner = path.name.rsplit("-", 1)[0] + "-"
        for stale in cache_dir.glob(owner + "*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as e:
        # The cache is an optimisation: a folder that is a file, read-only or full costs the
        # next start a rescan, never this run. One warning per folder and reason a process.
        reason = e.strerror or type(e).__name__
        if (str(cache_dir), reason) not in _WARNED:
            _WARNED.add((str(cache_dir), reason))
            warnings.warn(
                f"index cache folder {cache_dir}: cannot write to it ({reason}); going on "
                "without the cache (set data.index_cache_dir or FERLIT_CACHE_DIR to a writable "
                "folder, or data.index_cache false)",
                DataWarning,
                stacklevel=3,
            )
        return built
    log.info("index cache: wrote %s", path)
    return built


def _check_outside(cache_dir: Path, data_root: str) -> None:
    """The cache may not live inside the data: writing there would change what it fingerprints.

    Both paths are compared with their links resolved (``os.path.realpath``, which also resolves
    the part of the cache path not created yet as far as it exists): a cache folder reached
    through a link into the data folder, or a data folder reached through a link to the cache's
    parent, is inside all the same.
    """
    cache, data = Path(os.path.realpath(cache_dir)), Path(os.path.realpath(data_root))
    if cache == data or data in cache.parents:
        raise ConfigError(
            f"index cache folder {cache_dir} is inside the data folder {data_root}; ferlit writes "
            "nothing into data folders: choose another data.index_cache_dir (or FERLIT_CACHE_DIR)"
        )


def _code_hash(reader_module) -> str:
    """The reader's source with the FrameIndex's, so a changed reader never reads a stale entry."""
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    for module in (reader_module, index):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
