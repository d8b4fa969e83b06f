"""The reader seam: one class per data source behind one interface, and the factory that makes them.

As in timm (``timm/data/readers/reader.py`` and ``reader_factory.py``), every data source is a
``Reader``: it knows how to index a split of its folder (a ``FrameIndex``), what that index depends
on (its cache key), how to load one face of it, and which folders it reads. The DataModule builds
its readers with :func:`create_reader` and never asks which source a sample came from, so a new
source (AffectNet, RAF-DB, ...) is one new file: a ``Reader`` subclass, named to ``create_reader``
as ``"pkg.module:Class"`` (``data.train_sources`` in the CLI).

A reader's options are its constructor's keyword arguments; a bad value is a ``ConfigError``
raised by the constructor, before any data is read.
"""

from __future__ import annotations

import importlib
import inspect
import os
import traceback
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import cv2
import numpy as np

from ferlit.data.images import read_image
from ferlit.data.index import FrameIndex
from ferlit.errors import ConfigError
from ferlit.expressions import check_num_classes

#: The built-in readers by name, as "module:class" (imported when asked for: the reader modules
#: import this one).
BUILT_IN: dict[str, str] = {
    "affwild2": "ferlit.data.readers.affwild2:AffWild2Reader",
    "expw": "ferlit.data.readers.expw:ExpWReader",
    "frames_dir": "ferlit.data.readers.frames_dir:FramesDirReader",
}


class Reader(ABC):
    """One data source under one root folder (or a list of them, for ``frames_dir``).

    Subclasses set ``name`` (the key of :data:`BUILT_IN`, or any name for a reader of one's
    own), ``title`` (the source as messages name it) and ``splits`` (the splits :meth:`index`
    accepts), and implement :meth:`index`. ``num_classes`` is 7 (ABAW 2020, the paper) or 8
    (with Other, ABAW 2022+); labels in an index are ABAW class indexes below it (-1 only for
    faces that are not scored, e.g. unlabelled frames).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train",)

    def __init__(self, root: str | os.PathLike, num_classes: int = 7) -> None:
        self.num_classes = check_num_classes("num_classes", num_classes)
        self.root = os.fspath(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, num_classes={self.num_classes})"

    @abstractmethod
    def index(self, split: str = "train", progress: bool = True) -> FrameIndex:
        """The faces of ``split`` (one of ``splits``). A split that yields nothing is a
        ``DataError`` naming the folder looked in, never an empty index."""

    def cache_key(self, split: str) -> dict[str, Any] | None:
        """What the index of ``split`` depends on (JSON-able: file names, sizes and times, the
        options), for ``ferlit.data.cache``; None: not cached (also when the files to fingerprint
        are missing: :meth:`index` then says what is wrong)."""
        return None

    def on_cache_hit(self, index: FrameIndex, split: str) -> None:
        """Called when ``index`` came from the cache: repeat what :meth:`index` would have
        warned about while building it (nothing by default)."""
        return None

    def load_face(self, index: FrameIndex, i: int) -> np.ndarray:
        """The RGB uint8 ``H x W x 3`` face of sample ``i`` of ``index`` (an index this reader
        built): by default the whole image file, a face crop already (``ImageError`` naming the
        file when it is missing or damaged)."""
        image = read_image(index.image_path(i), index.source(i))
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def folders(self) -> list[str]:
        """The folders this reader reads (outputs must stay out of them)."""
        return [self.root]

    def check_split(self, split: str) -> None:
        """``ConfigError`` unless ``split`` is one of ``splits``."""
        if split not in self.splits:
            raise ConfigError(
                f"{self.title or self.name} has no split {split!r}; its splits: "
                f"{', '.join(self.splits)}"
            )


def reader_class(name_or_path: str, option: str = "reader") -> type[Reader]:
    """The ``Reader`` subclass a built-in name or a ``"pkg.module:Class"`` /
    ``"pkg.module.Class"`` path names; ``ConfigError`` naming ``option`` and the known names."""
    known = f"a built-in reader ({', '.join(BUILT_IN)}) or 'pkg.module:Class' naming a Reader"
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ConfigError(f"{option}: expected {known}, got {name_or_path!r}")
    path = BUILT_IN.get(name_or_path, name_or_path)
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    elif "." in path:
        module_name, _, attribute = path.rpartition(".")
    else:
        raise ConfigError(f"{option}: unknown reader {name_or_path!r}; expected {known}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{option}: cannot import {module_name!r} for reader {name_or_path!r} ({e}); "
            f"expected {known}"
        ) from None
    except Exception as e:  # the reader's own module fails as it runs (SyntaxError, any raise)
        if isinstance(e, SyntaxError) and e.filename:
            where = f"{e.filename}:{e.lineno}"
        else:
            frame = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{frame.filename}:{frame.lineno}"
        raise ConfigError(
            f"{option}: importing {module_name!r} for reader {name_or_path!r} raised "
            f"{type(e).__name__} at {where}: {e}"
        ) from None
    cls = getattr(module, attribute, None)
    if cls is None:
        raise ConfigError(
            f"{option}: module {module_name!r} has no {attribute!r} (reader {name_or_path!r}); "
            f"expected {known}"
        )
    if not (inspect.isclass(cls) and issubclass(cls, Reader)):
        raise ConfigError(
            f"{option}: {name_or_path!r} is not a Reader subclass "
            f"(ferlit.data.readers.base.Reader); expected {known}"
        )
    return cls


def create_reader(
    name_or_path: str, root: str | os.PathLike | list, *, option: str | None = None, **options: Any
) -> Reader:
    """The reader ``name_or_path`` names, on ``root``, with ``options`` (``num_classes`` and the
    reader's own keyword arguments).

    ``option`` is the setting the name came from, for messages (``data.train_sources[0]``): an
    unknown name, a class that is not a ``Reader``, an option the reader does not take or a bad
    option value is a ``ConfigError`` naming it.
    """
    where = f"{option}: " if option else ""
    cls = reader_class(name_or_path, f"{option}.reader" if option else "reader")
    parameters = inspect.signature(cls.__init__).parameters
    takes = [p for p in parameters if p not in ("self", "root")]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise ConfigError(
                f"{where}reader {name_or_path!r} takes no option {', '.join(unknown)}; "
                f"its options: {', '.join(takes) or 'none'}"
            )
    try:
        return cls(root, **options)
    except ConfigError as e:
        if not where:
            raise
        raise ConfigError(f"{where}{e}") from None
