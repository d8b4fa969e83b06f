"""The index cache: a data set is scanned once; later starts load its index in about a second.

Indexing Aff-Wild2 lists ~550 ``cropped_aligned`` folders (about a million frames) and parses
~2.6M annotation lines; ExpW parses ``label.lst``. Researchers restart runs constantly, so the
first index of each (data set, split, options) is saved as a ``.npz`` (``FrameIndex.save``) in a
cache folder that holds nothing the user owns, and loaded with ``np.load`` afterwards.

An entry is valid while nothing the index was built from has changed. Its key holds:

* the annotation files' names, sizes and modification and change times (``mtime_ns``,
  ``ctime_ns``: an edit, or a copy over it that keeps the old mtime, changes one of them);
* for Aff-Wild2, each ``cropped_aligned/<video>`` and ``cropped_aligned_new_50_vids/<video>``
  folder's mtime (None where it is missing), which changes whenever a frame is added or removed:
  which frames have an image decides the index, and a video may be in either folder (ABAW 2023+);
  for ExpW, the mtime of ``image/origin``, whose listing the reader checks;
* the reader options (split, num_classes, layout, min_confidence), the absolute data folder, and
  a hash of the reader's source code and ``CACHE_VERSION``, so a ferlit update never serves an
  index its new reader would build differently.

Checking the key costs one ``stat`` per annotation file and two per video (~1,700 at full
scale), not one per frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferlit.data import index
from ferlit.data.index import FrameIndex
from ferlit.data.readers import affwild2, expw
from ferlit.data.readers.affwild2 import (
    FRAMES_DIRS,
    LAYOUTS,
    annotation_dir,
    detect_layout,
    read_affwild2,
)
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, read_expw
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


def cached_read_affwild2(
    affwild2_dir: str | os.PathLike,
    split: str,
    num_classes: int = 7,
    layout: str | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> FrameIndex:
    """``read_affwild2`` through the cache: the same index, rebuilt only when the data changed."""
    root = os.fspath(affwild2_dir)

    built = []

    def build() -> FrameIndex:
        built.append(True)
        return read_affwild2(root, split, num_classes, layout, progress)

    key = affwild2_cache_key(root, split, num_classes, layout)
    if key is None:
        return build()  # the reader names what is missing
    index = _cached(key, root, build, cache_dir)
    without_images = index.skipped.get("no_image_videos", 0)
    if without_images and not built:  # the reader warned when it built the entry; say it again
        warnings.warn(
            f"{root}: {without_images} video(s) of the Aff-Wild2 {split} split have annotated "
            "frames but no image of any of them (index from the cache; python -m ferlit.data "
            f"stats --affwild2-dir {root} names them)",
            DataWarning,
            stacklevel=2,
        )
    return index


def cached_read_expw(
    expw_dir: str | os.PathLike,
    num_classes: int = 7,
    min_confidence: float | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> FrameIndex:
    """``read_expw`` through the cache: the same index, rebuilt only when the data changed."""
    root = os.fspath(expw_dir)

    def build() -> FrameIndex:
        return read_expw(root, num_classes, min_confidence, progress)

    key = expw_cache_key(root, num_classes, min_confidence)
    if key is None:
        return build()
    return _cached(key, root, build, cache_dir)


def affwild2_cache_key(
    affwild2_dir: str | os.PathLike, split: str, num_classes: int, layout: str | None
) -> dict[str, Any] | None:
    """What an Aff-Wild2 index depends on; None when the folders are not there to fingerprint."""
    root = os.fspath(affwild2_dir)
    if layout is None:
        layout = detect_layout(root)
    if layout not in LAYOUTS or split not in affwild2.SPLITS:
        return None
    folder = annotation_dir(root, layout, split)
    if not folder.is_dir():
        return None
    files = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.endswith(".txt") and not e.name.startswith(".") and e.is_file():
                    st = e.stat()
                    files.append([e.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    except OSError:  # unreadable: the reader names the folder and why
        return None
    files.sort()
    videos = []
    for name, *_ in files:
        video = name[: -len(".txt")]
        mtimes = []
        for frames_dir in FRAMES_DIRS:
            try:
                mtimes.append(os.stat(os.path.join(root, frames_dir, video)).st_mtime_ns)
            except (FileNotFoundError, NotADirectoryError):
                mtimes.append(None)
            except OSError:  # unreadable or a link loop: the reader names it
                return None
        videos.append([video, *mtimes])
    return {
        "reader": "affwild2",
        "root": os.path.abspath(root),
        "options": {"split": split, "num_classes": num_classes, "layout": layout},
        "annotations": files,
        "frame_folders": videos,
        "code": _code_hash(affwild2),
    }


def expw_cache_key(
    expw_dir: str | os.PathLike, num_classes: int, min_confidence: float | None
) -> dict[str, Any] | None:
    """What an ExpW index depends on; None when the files are not there to fingerprint."""
    root = os.fspath(expw_dir)
    try:
        label = os.stat(os.path.join(root, LABEL_FILE))
        images = os.stat(os.path.join(root, IMAGES_DIR))
    except OSError:  # missing or unreadable: the reader names it
        return None
    return {
        "reader": "expw",
        "root": os.path.abspath(root),
        "options": {"num_classes": num_classes, "min_confidence": min_confidence},
        "annotations": [[LABEL_FILE, label.st_size, label.st_mtime_ns, label.st_ctime_ns]],
        "image_folder": images.st_mtime_ns,
        "code": _code_hash(expw),
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
    """The readers' source with the FrameIndex's, so a changed reader never reads a stale entry."""
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    for module in (reader_module, index):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
