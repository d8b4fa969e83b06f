"""Packed frames: each split's faces decoded, resized and stored in one memory-mapped file.

Training from JPEGs opens, decodes (and for ExpW crops and resizes) every face every epoch. A
pack does that once (``python -m ferlit.data pack``): per part (``affwild2_train``,
``affwild2_val``, ``expw``) one ``frames.npy``, a uint8 ``N x S x S x 3`` RGB array that
DataLoader workers read through ``np.load(..., mmap_mode="r")`` with no file opened per sample,
and the part's ``FrameIndex`` beside it as ``index.npz``.

Decoded arrays rather than encoded bytes in shards, as measured on the 2-core dev box with
112x112 sample-data faces: a memory-mapped copy of a face costs ~7 us against ~63 us for
``cv2.imdecode`` of its JPEG, so packed loading is bound by the colour jitter (~170 us) alone.
The price is disk: 37,632 bytes per 112x112 face (~38 GB for the 1M-face training set) against
~4.5 kB for the sample data's JPEGs; where the page cache cannot hold the pack and the disk is
slow, JPEG bytes in a few large shards would be the better trade.

The faces are resized exactly as the JPEG path resizes them (``build_transform(size, None)`` on
the part's reader's ``load_face``), the parts read as the DataModule reads them
(``ExpressionDataModule.part``); at training time the same ``build_transform`` runs on the packed face, whose
resize to the size it already has is the identity. So with augmentation off the packed and JPEG
batches are equal bit for bit, and with it on they are drawn from the same distribution.

Packing is atomic and resumable: it writes into ``<out>.partial/`` and renames that to ``<out>``
once ``manifest.json`` is written, so a folder with a manifest is always complete. Frames are
written a chunk at a time; a chunk is recorded as done only after its bytes are synced to disk,
and packing again with the same options resumes at the first chunk not done.

A pack records what its faces were made from (``sources.npz`` per part: each image file's size
and modification time, each folder's modification time; their digest in the manifest). Packing
again into a complete or interrupted pack whose images have changed since is refused, naming the
first changed image (its faces are the old images'), and a DataModule opening a pack whose data
folders changed (frames added or removed, an ExpW image replaced) warns.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from ferlit.cli_values import MAX_IMAGE_SIZE, check_number, check_workers
from ferlit.data.datasets import PackedFaceDataset  # noqa: F401 (moved there; imported from here)
from ferlit.data.images import BOX_OVERFLOW, check_box_overflow
from ferlit.data.index import BOXED_IMAGE, FRAME_FOLDER, FrameIndex
from ferlit.data.readers.affwild2 import detect_layout
from ferlit.data.readers.base import Reader
from ferlit.data.transforms import build_transform
from ferlit.data.workers import exit_with_parent
from ferlit.errors import ConfigError, DataError, DataWarning
from ferlit.io import check_apart, check_creatable, fsync_dir, write_json

PACK_VERSION = "ferlit-pack-v1"
MANIFEST = "manifest.json"
PLAN = "plan.json"  # the partial pack's options: a resume must match them
PROGRESS = "progress.json"  # the partial pack's chunks done, per part
FRAMES_FILE = "frames.npy"
INDEX_FILE = "index.npz"
PARTIAL_SUFFIX = ".partial"
PARTS = ("affwild2_train", "affwild2_val", "expw")
#: Per part: the size and modification time of each sample's image file and the modification
#: time of each group's folder when it was packed (``source_stats``), to tell a stale pack.
SOURCES_FILE = "sources.npz"
#: The data folder (a key of the manifest's ``sources``) each part's faces come from.
PART_SOURCE = {"affwild2_train": "affwild2", "affwild2_val": "affwild2", "expw": "expw"}
#: Faces per chunk: the unit of resuming (~38 MB at 112x112).
CHUNK_SIZE = 1024


@dataclass(frozen=True)
class Pack:
    """A complete pack: its folder and manifest (options, parts, sample counts)."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | os.PathLike) -> Pack:
        """The pack at ``root``; a DataError says when it is missing, interrupted or damaged."""
        root = Path(root)
        partial = _partial_dir(root)
        if not (root / MANIFEST).is_file():
            if (root / PLAN).is_file() and root.name.endswith(PARTIAL_SUFFIX):
                out = root.with_name(root.name[: -len(PARTIAL_SUFFIX)])
                raise DataError(
                    f"{root}: an interrupted pack, not a complete one; pack again with "
                    f"--out {out} to resume it"
                )
            if (partial / MANIFEST).is_file():
                raise DataError(
                    f"{root}: the pack is complete in {partial} but was not renamed into place "
                    "(interrupted at its last step); run python -m ferlit.data pack with --out "
                    f"{root} and the same options again to finish it"
                )
            if partial.is_dir():
                raise DataError(
                    f"{root}: the pack is incomplete: it was interrupted and its frames so far "
                    f"are in {partial}; run python -m ferlit.data pack with --out {root} and the "
                    "same options again to resume it"
                )
            raise DataError(
                f"{root / MANIFEST}: missing; {root} is not a ferlit pack "
                "(write one with python -m ferlit.data pack)"
            )
        manifest = _read_manifest(root / MANIFEST)
        pack = cls(root, manifest)
        size = pack.image_size
        for part, info in manifest["parts"].items():
            path = pack.frames_file(part)
            try:
                shape = np.load(path, mmap_mode="r").shape
            except (OSError, ValueError, EOFError) as e:
                raise DataError(f"{path}: cannot be read as a packed frames array ({e})") from None
            expected = (info["samples"], size, size, 3)
            if shape != expected:
                raise DataError(f"{path}: holds an array of shape {shape}, expected {expected}")
            _check_index_file(root / part / INDEX_FILE, info["samples"])
        return pack

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.manifest["parts"])

    def frames_file(self, part: str) -> Path:
        return self.root / part / FRAMES_FILE

    def index(self, part: str) -> FrameIndex:
        """The part's index, sample k of which is row k of its frames."""
        if part not in self.manifest["parts"]:
            raise DataError(
                f"{self.root}: the pack has no {part} (it holds {', '.join(self.parts)})"
            )
        path = self.root / part / INDEX_FILE
        try:
            return FrameIndex.load(path)
        except _DAMAGED_NPZ as e:
            raise DataError(f"{path}: damaged ({_short(e)}); pack the data again") from None

    def frames(self, part: str) -> np.ndarray:
        """The part's ``N x S x S x 3`` uint8 RGB faces, memory-mapped read-only."""
        return np.load(self.frames_file(part), mmap_mode="r")


#: What reading a truncated, overwritten or foreign ``.npz`` raises (numpy and zipfile).
_DAMAGED_NPZ = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile)


#: JSON's names for what ``json.loads`` returns.
_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _short(error: BaseException, limit: int = 100) -> str:
    """An exception's text cut to ``limit`` characters: a message quotes, it does not dump."""
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` checked for every key a reader of the pack uses, with its type.

    A manifest is only ever written by ``pack``; one that fails here was edited, truncated or
    copied from something else, and the message says which key is wrong rather than letting a
    ``KeyError`` surface later in the DataModule.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or _short(e)})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{path}: not valid JSON ({_short(e)})") from None
    if not isinstance(manifest, dict):
        raise DataError(
            f"{path}: a JSON {_JSON_TYPES.get(type(manifest), 'value')}, expected an object (a "
            "ferlit pack manifest)"
        )
    if manifest.get("version") != PACK_VERSION:
        raise DataError(
            f"{path}: version {_short(repr(manifest.get('version')), 60)}, expected "
            f"{PACK_VERSION!r}; pack the data again with this ferlit"
        )

    def bad(key: str, expected: str) -> DataError:
        found = "missing" if key not in manifest else _short(repr(manifest[key]), 60)
        return DataError(f"{path}: {key!r} is {found}, expected {expected}; pack the data again")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def is_number(value: Any) -> bool:
        return is_int(value) or (isinstance(value, float) and math.isfinite(value))

    if not (is_int(manifest.get("image_size")) and manifest["image_size"] > 0):
        raise bad("image_size", "a positive integer")
    if manifest.get("num_classes") not in (7, 8) or not is_int(manifest["num_classes"]):
        raise bad("num_classes", "7 or 8")
    if not is_number(manifest.get("expw_margin")):
        raise bad("expw_margin", "a number")
    confidence = manifest.get("expw_min_confidence", "missing")
    if confidence is not None and not is_number(confidence):
        raise bad("expw_min_confidence", "a number or null")
    layout = manifest.get("affwild2_layout", "missing")
    if layout is not None and not isinstance(layout, str):
        raise bad("affwild2_layout", "a layout name or null")
    if "expw_box_overflow" in manifest and manifest["expw_box_overflow"] not in BOX_OVERFLOW:
        raise bad("expw_box_overflow", " or ".join(map(repr, BOX_OVERFLOW)))
    parts = manifest.get("parts")
    if not isinstance(parts, dict) or not parts or not set(parts) <= set(PARTS):
        raise bad("parts", f"an object with some of {', '.join(PARTS)}")
    for part, info in parts.items():
        if not isinstance(info, dict) or not is_int(info.get("samples")) or info["samples"] < 0:
            raise DataError(
                f"{path}: parts.{part} is {_short(repr(info), 60)}, expected an object with "
                "a sample count 'samples' (an integer >= 0); pack the data again"
            )
    return manifest


def _check_index_file(path: Path, samples: int) -> None:
    """The part's ``index.npz`` opens and indexes ``samples`` faces (reads only its labels)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [name for name in ("labels", "roots", "num_classes") if name not in z.files]
            labels = None if missing else z["labels"].shape
    except _DAMAGED_NPZ as e:
        raise DataError(
            f"{path}: cannot be read as a frame index ({_short(e)}); pack the data again"
        ) from None
    if missing:
        raise DataError(
            f"{path}: not a ferlit frame index (no {', '.join(missing)}); pack the data again"
        )
    if labels != (samples,):
        raise DataError(
            f"{path}: indexes {labels[0] if labels else 0} faces, the manifest says {samples}; "
            "pack the data again"
        )


def pack(
    out: str | os.PathLike,
    affwild2_dir: str | os.PathLike | None = None,
    expw_dir: str | os.PathLike | None = None,
    size: int = 112,
    num_classes: int = 7,
    layout: str | None = None,
    expw_min_confidence: float | None = None,
    expw_margin: float = 0.0,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    expw_box_overflow: str = "clip",
    progress: bool = True,
    index_cache: bool = True,
    index_cache_dir: str | os.PathLike | None = None,
) -> Pack:
    """Pack Aff-Wild2 train and val and/or ExpW into ``out``; resume an interrupted pack.

    The options are the DataModule's of the same names (``size`` is ``data.image_size``), and a
    DataModule reading the pack must use the same ones. ``workers`` processes decode in
    parallel (default: every core). An ``out`` already complete with the same options is
    returned as it is. The manifest records, per part, the samples skipped while indexing (by
    reason) and, for ExpW, how many boxes past their image's edge were clipped or padded
    (``box_clipped`` / ``box_padded``, as ``python -m ferlit.data stats`` shows them).
    """
    if affwild2_dir is None and expw_dir is None:
        raise ConfigError(
            "pack needs --data.affwild2_dir and/or --data.expw_dir: there is nothing to pack"
        )
    check_box_overflow(expw_box_overflow)
    check_number("--data.image_size", size, 1, MAX_IMAGE_SIZE, integer=True)
    if chunk_size <= 0:
        raise ConfigError(f"chunk size must be positive, got {chunk_size}")
    # before indexing, not in the workers once packing has started (DataLoader refuses -1 workers
    # with a bare ValueError; a NaN margin would fail every face)
    if workers is not None:
        check_workers("--workers", workers)
    check_number("--data.expw_margin", expw_margin, 0)
    if expw_min_confidence is not None:
        check_number("--data.expw_min_confidence", expw_min_confidence)
    out = Path(out)
    # A pack inside the data it packs would travel with every copy of the data set.
    check_apart(
        out, "--out", [("--data.affwild2_dir", affwild2_dir), ("--data.expw_dir", expw_dir)]
    )
    if not (out / MANIFEST).is_file():  # checked before indexing, which takes minutes
        if out.exists():
            raise DataError(f"{out}: exists and is not a ferlit pack; choose another --out")
        check_creatable(out, "--out")
    if affwild2_dir is not None:
        layout = layout or detect_layout(affwild2_dir)  # recorded: a run must read the same
    # The parts as a DataModule with these options reads them (its readers, its index cache).
    from ferlit.data.datamodule import ExpressionDataModule  # it imports this module

    datamodule = ExpressionDataModule.for_parts(
        affwild2_dir,
        expw_dir,
        num_classes=num_classes,
        affwild2_layout=layout,
        expw_margin=expw_margin,
        expw_min_confidence=expw_min_confidence,
        expw_box_overflow=expw_box_overflow,
        image_size=size,
        index_cache=index_cache,
        index_cache_dir=index_cache_dir,
    )
    names = datamodule.part_names("train") + datamodule.part_names("val")
    readers: dict[str, Reader] = {}
    indexes: dict[str, FrameIndex] = {}
    for part in (p for p in PARTS if p in names):
        readers[part], indexes[part] = datamodule.part(part)
    plan = {
        "version": PACK_VERSION,
        "image_size": size,
        "num_classes": num_classes,
        "affwild2_layout": layout if affwild2_dir is not None else None,
        "expw_min_confidence": expw_min_confidence,
        "expw_margin": expw_margin,
        "expw_box_overflow": expw_box_overflow,
        "sources": {
            "affwild2": None if affwild2_dir is None else os.path.abspath(affwild2_dir),
            "expw": None if expw_dir is None else os.path.abspath(expw_dir),
        },
        "chunk_size": chunk_size,
        "parts": {
            part: {
                "samples": len(ix),
                "index_sha256": _index_digest(ix),
                "skipped": dict(ix.skipped),
                "box_clipped": ix.boxes_past_edge() if expw_box_overflow == "clip" else 0,
                "box_padded": ix.boxes_past_edge() if expw_box_overflow == "pad" else 0,
            }
            for part, ix in indexes.items()
        },
    }
    roots = {part: plan["sources"][PART_SOURCE[part]] for part in indexes}
    sources = {part: source_stats(ix, roots[part]) for part, ix in indexes.items()}
    for part, stats in sources.items():
        plan["parts"][part]["sources_sha256"] = _stats_digest(stats)
    plan = json.loads(json.dumps(plan))  # as it reads back from disk

    if (out / MANIFEST).is_file():
        existing = Pack.open(out)
        _refuse_other_pack(
            out,
            existing.manifest,
            plan,
            (indexes, roots, sources),
            "already holds a complete pack of other data or options",
            "; choose another --out",
        )
        return existing
    if out.exists():
        raise DataError(f"{out}: exists and is not a ferlit pack; choose another --out")

    partial = _partial_dir(out)
    if (partial / MANIFEST).is_file():  # killed after the manifest, before the final rename
        _refuse_other_pack(
            partial,
            Pack.open(partial).manifest,
            plan,
            (indexes, roots, sources),
            "a complete pack of other data or options",
            f", not yet renamed to {out}; pack with its options to finish it, or delete it to "
            "start over",
        )
        _finish(partial, out)
        warnings.warn(
            f"{partial}: the pack was complete but not yet renamed (interrupted at its last "
            f"step); renamed it to {out}",
            DataWarning,
            stacklevel=2,
        )
        return Pack.open(out)
    if partial.is_dir():
        try:
            started = json.loads((partial / PLAN).read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise DataError(
                f"{partial / PLAN}: unreadable ({e}); {partial} is not a resumable pack, "
                "delete it to pack again"
            ) from None
        _refuse_other_pack(
            partial,
            started,
            plan,
            (indexes, roots, sources),
            "an interrupted pack of other data or options",
            "; pack with the same options to resume it, or delete it to start over",
        )
    else:
        _start(partial, plan, indexes, sources)

    done = json.loads((partial / PROGRESS).read_text())
    transform = build_transform(size, None)
    workers = (os.cpu_count() or 1) if workers is None else workers
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        for part, ix in indexes.items():
            finished = set(done[part])
            todo = [
                list(range(s, min(s + chunk_size, len(ix))))
                for s in range(0, len(ix), chunk_size)
                if s not in finished
            ]
            task = bar.add_task(
                f"Packing {part}", total=len(ix), completed=len(ix) - sum(map(len, todo))
            )
            if not todo:
                continue
            source = _ResizedFaces(readers[part], ix, transform)
            loader = DataLoader(
                source,
                batch_sampler=todo,
                num_workers=workers,
                collate_fn=np.stack,
                worker_init_fn=exit_with_parent,  # a killed pack leaves no worker decoding
            )
            with _FramesWriter(partial / part / FRAMES_FILE) as writer:
                for rows, faces in zip(todo, loader, strict=True):
                    writer.write(rows[0], faces)
                    done[part].append(rows[0])
                    _mark_done(partial, done)
                    bar.advance(task, len(rows))

    manifest = plan | {"complete": True}
    write_json(partial / MANIFEST, manifest)
    _finish(partial, out)
    return Pack.open(out)


def _finish(partial: Path, out: Path) -> None:
    """Drop a complete pack's resume records and rename it into place. Re-run safely: a kill
    anywhere in here leaves a ``partial`` with its manifest, which the next ``pack`` finishes."""
    (partial / PLAN).unlink(missing_ok=True)
    (partial / PROGRESS).unlink(missing_ok=True)
    partial.rename(out)
    fsync_dir(out.parent)


class _ResizedFaces(Dataset):
    """Faces as the JPEG path makes them with augmentation off: the part's reader's
    ``load_face`` (ExpW: the box crop with its margin and overflow), then the resize."""

    def __init__(self, reader: Reader, index: FrameIndex, transform) -> None:
        self.reader, self.index, self.transform = reader, index, transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        face = self.reader.load_face(self.index, i)
        return self.transform(image=face)["image"]


class _FramesWriter:
    """Writes rows into an existing ``.npy`` file and syncs them before they count as done."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read_header(f)
            self.offset = f.tell()
        self.row_bytes = int(np.prod(shape[1:]))
        self.path = path
        self.fd = os.open(path, os.O_WRONLY)

    def __enter__(self) -> _FramesWriter:
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def write(self, first_row: int, faces: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(faces, np.uint8)).cast("B")
        position = self.offset + first_row * self.row_bytes
        try:
            while data:
                written = os.pwrite(self.fd, data, position)
                data, position = data[written:], position + written
            os.fdatasync(self.fd)
        except OSError as e:  # the sparse file takes its space as it fills: ENOSPC lands here
            raise DataError(
                f"{self.path}: cannot write the packed faces ({e.strerror or e}); the chunks "
                "done so far are kept: free space (or fix the folder) and pack again with the "
                "same options to resume"
            ) from None


def _start(
    partial: Path,
    plan: dict[str, Any],
    indexes: dict[str, FrameIndex],
    sources: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    """Lay out a new partial pack, in a folder of its own renamed into place once complete."""
    setup = partial.with_name(f"{partial.name}.setup-{os.getpid()}")
    shutil.rmtree(setup, ignore_errors=True)
    try:
        size = plan["image_size"]
        for part, ix in indexes.items():
            (setup / part).mkdir(parents=True)
            ix.save(setup / part / INDEX_FILE)
            files, folders = sources[part]
            np.savez(setup / part / SOURCES_FILE, files=files, folders=folders)
            frames = np.lib.format.open_memmap(
                setup / part / FRAMES_FILE, "w+", np.uint8, (len(ix), size, size, 3)
            )
            del frames  # a sparse file of the full size; chunks fill it
        write_json(setup / PROGRESS, {part: [] for part in indexes})
        write_json(setup / PLAN, plan)
        setup.rename(partial)
    finally:
        shutil.rmtree(setup, ignore_errors=True)


def _mark_done(partial: Path, done: dict[str, list[int]]) -> None:
    """Record the chunks done (by first row); called only after their frames are synced."""
    write_json(partial / PROGRESS, done)


def _index_digest(index: FrameIndex) -> str:
    """Which samples, in which order: a resume must pack the very same ones."""
    h = hashlib.sha256()
    for name in ("labels", "groups", "frames", "boxes"):
        h.update(np.ascontiguousarray(getattr(index, name)).tobytes())
    h.update("\n".join(map(str, index.group_names)).encode())
    return h.hexdigest()


# -- staleness: the images a pack was made from, as they were ----------------------------------


def source_stats(index: FrameIndex, root: str) -> tuple[np.ndarray, np.ndarray]:
    """What the pack's faces were made from, as it is on disk now: per sample, the ``(size,
    st_mtime_ns)`` of its image file (an ExpW image once per face); per group, the
    ``st_mtime_ns`` of its folder (an Aff-Wild2 video folder, ExpW's ``image/origin``). -1 where
    a file or folder is missing.

    A replaced image (re-cropped frames, a re-downloaded ExpW image) changes its file's size or
    time; a frame added or removed changes its folder's time. Paths are taken from ``root``, the
    absolute data folder the manifest records (``sources``), not the index's spelling of it.
    One ``stat`` per image: about a second per 100k on a local disk, small beside decoding them.
    """
    files = np.full((len(index), 2), -1, np.int64)
    seen: dict[str, tuple[int, int]] = {}
    for i in range(len(index)):
        path = os.path.join(root, _image_of(index, i))
        if path not in seen:
            try:
                st = os.stat(path)
                seen[path] = (st.st_size, st.st_mtime_ns)
            except OSError:
                seen[path] = (-1, -1)
        files[i] = seen[path]
    folders = np.array(
        [_mtime(os.path.join(root, _folder_of(index, g))) for g in range(len(index.group_names))],
        np.int64,
    )
    return files, folders


def _image_of(index: FrameIndex, i: int) -> str:
    """Sample ``i``'s image file relative to its root (as ``FrameIndex.image_path`` joins it)."""
    name = str(index.group_names[index.groups[i]])
    if index.group_kinds[index.groups[i]] == FRAME_FOLDER:
        return os.path.join(name, f"{index.frames[i]:05d}.jpg")
    return name


def _folder_of(index: FrameIndex, g: int) -> str:
    """The folder of group ``g`` relative to its root: the video folder, or the image's folder."""
    name = str(index.group_names[g])
    return name if index.group_kinds[g] == FRAME_FOLDER else os.path.dirname(name)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _stats_digest(stats: tuple[np.ndarray, np.ndarray]) -> str:
    h = hashlib.sha256()
    for array in stats:
        h.update(np.ascontiguousarray(array, np.int64).tobytes())
    return h.hexdigest()


def first_changed(
    index: FrameIndex,
    root: str,
    recorded: tuple[np.ndarray, np.ndarray],
    now: tuple[np.ndarray, np.ndarray],
) -> str | None:
    """The first image file or folder whose state differs between ``recorded`` and ``now``
    (``source_stats`` arrays of the same index), said in words; None when none does."""
    files_then, folders_then = recorded
    files_now, folders_now = now
    if files_then.shape == files_now.shape:
        changed = np.flatnonzero((files_then != files_now).any(axis=1))
        if len(changed):
            i = int(changed[0])
            path = os.path.join(root, _image_of(index, i))
            what = "is gone" if files_now[i, 0] < 0 else "was replaced (its size or time changed)"
            more = f", and {len(changed) - 1} more faces' images" if len(changed) > 1 else ""
            return f"{path} {what}{more}"
    if folders_then.shape == folders_now.shape:
        changed = np.flatnonzero(folders_then != folders_now)
        if len(changed):
            folder = os.path.join(root, _folder_of(index, int(changed[0])))
            more = f", and {len(changed) - 1} more folders" if len(changed) > 1 else ""
            return f"{folder} changed (files added, removed or renamed){more}"
    return None


def _load_sources(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A part's recorded ``source_stats``; None for a pack from before they were recorded."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["files"], z["folders"]
    except FileNotFoundError:
        return None
    except _DAMAGED_NPZ as e:
        raise DataError(f"{path}: damaged ({_short(e)}); pack the data again") from None


def _refuse_changed_sources(
    pack_dir: Path,
    recorded_plan: dict[str, Any],
    indexes: dict[str, FrameIndex],
    roots: dict[str, str],
    sources: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    """Refuse a complete or partial pack made from images that have changed since.

    Its faces are the old images': returning it (or resuming it) would train on them while the
    data folder says otherwise. A part whose index changed too is left to the plan comparison
    (other data), a pack from before sources were recorded is not checked.
    """
    parts = recorded_plan.get("parts")
    if not isinstance(parts, dict):
        return
    for part, ix in indexes.items():
        info = parts.get(part)
        if not isinstance(info, dict) or "sources_sha256" not in info:
            continue
        if info.get("index_sha256") != _index_digest(ix):
            continue
        if info["sources_sha256"] == _stats_digest(sources[part]):
            continue
        recorded = _load_sources(pack_dir / part / SOURCES_FILE)
        what = first_changed(ix, roots[part], recorded, sources[part]) if recorded else None
        raise DataError(
            f"{pack_dir}: images of its {part} changed since they were packed "
            f"({what or 'sizes or times differ'}); its faces are the old ones. Delete {pack_dir} "
            "and pack again, or pack into another --out"
        )


def check_pack_sources(pack: Pack) -> str | None:
    """Whether the data folders a pack was made from still look as they did, said in words when
    they do not (None when they do, or cannot be checked: a pack from before sources were
    recorded, or data folders not on this machine).

    The cheap check, run each time a DataModule opens a pack: the modification time of each
    video folder (frames added or removed) and of ExpW's images (one stat per ExpW image, ~24k).
    Aff-Wild2 frames replaced in place under the same names are seen by ``pack`` run again,
    which stats every file.
    """
    sources = pack.manifest.get("sources")
    for part in pack.parts:
        root = sources.get(PART_SOURCE[part]) if isinstance(sources, dict) else None
        if not isinstance(root, str) or not os.path.isdir(root):
            continue
        recorded = _load_sources(pack.root / part / SOURCES_FILE)
        if recorded is None:
            continue
        index = pack.index(part)
        folders = np.array(
            [
                _mtime(os.path.join(root, _folder_of(index, g)))
                for g in range(len(index.group_names))
            ],
            np.int64,
        )
        if (index.group_kinds == BOXED_IMAGE).all():
            now = source_stats(index, root)
        else:
            now = (recorded[0], folders)
        what = first_changed(index, root, recorded, now)
        if what is not None:
            return f"{pack.root}: the images of its {part} changed since they were packed ({what})"
    return None


def _refuse_other_pack(
    folder: Path,
    recorded: Any,
    plan: dict[str, Any],
    data: tuple[dict[str, FrameIndex], dict[str, str], dict[str, tuple[np.ndarray, np.ndarray]]],
    what: str,
    advice: str,
) -> None:
    """Refuse the pack or partial pack in ``folder`` whose recorded plan (its manifest, or the
    ``plan.json`` of an interrupted one) is not ``plan``: made from images changed since
    (:func:`_refuse_changed_sources`; ``data`` is its indexes, roots and sources), or of other
    data or options: ``DataError`` "<folder>: <what> (differs in <keys>)<advice>"."""
    recorded_plan = _plan_of(recorded) if isinstance(recorded, dict) else {}
    if recorded_plan:
        _refuse_changed_sources(folder, recorded_plan, *data)
    if recorded_plan != _as_recorded(plan, recorded):
        raise DataError(f"{folder}: {what} ({_differences(recorded_plan, plan)}){advice}")


def _as_recorded(plan: dict[str, Any], recorded: Any) -> dict[str, Any]:
    """``plan`` without the sources digests when ``recorded`` (a manifest or plan) is from before
    they were recorded, so such a pack still compares equal to the same data and options."""
    parts = recorded.get("parts") if isinstance(recorded, dict) else None
    if not isinstance(parts, dict) or any(
        isinstance(info, dict) and "sources_sha256" in info for info in parts.values()
    ):
        return plan
    stripped = {part: dict(info) for part, info in plan["parts"].items()}
    for info in stripped.values():
        info.pop("sources_sha256", None)
    return plan | {"parts": stripped}


def _plan_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "complete"}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return "differs in " + ", ".join(keys)


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)
