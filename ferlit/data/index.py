"""The columnar index of a split: numpy arrays, no per-sample Python objects.

A million samples stored as Python objects cost gigabytes and, worse, copy-on-read in every
DataLoader worker (reference counts touch every page: pytorch/pytorch issue 13246). Here each
sample is a row across a handful of numpy arrays, and file names are stored once per *group*
(an Aff-Wild2 video folder, or an ExpW image holding several faces).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ferlit.io import atomic_write

#: Group kinds: how a sample's image file is found.
FRAME_FOLDER = 0  # Aff-Wild2: <root>/<group>/<frame:05d>.jpg, the whole image is the face
BOXED_IMAGE = 1  # ExpW: <root>/<group> is the image; the face is the sample's box crop

#: The skip reasons counted while indexing (stats and tests read these names).
SKIP_REASONS = (
    "unannotated",
    "no_image",
    "other",
    "duplicate",
    "low_confidence",
    "box_outside_image",
    "empty_box",
    "not_a_file",
)


def _compact_rows(
    labels: np.ndarray,
    groups: np.ndarray,
    frames: np.ndarray,
    lines: np.ndarray,
    boxes: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """A FrameIndex's per-sample arrays in their compact dtypes (labels int8; groups, frames,
    lines and the (N, 4) boxes int32: about 25 bytes a sample, ~25 MB for Aff-Wild2's million
    frames); ``boxes`` None: -1 everywhere (no box, as for Aff-Wild2 frames)."""
    n = len(labels)
    return {
        "labels": np.asarray(labels, np.int8),
        "groups": np.asarray(groups, np.int32),
        "frames": np.asarray(frames, np.int32),
        "boxes": np.full((n, 4), -1, np.int32) if boxes is None else np.asarray(boxes, np.int32),
        "lines": np.asarray(lines, np.int32),
    }


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """One split of one or more data sets, as parallel arrays.

    Per sample (length N): ``labels`` (ABAW class index), ``groups`` (row in the group table),
    ``frames`` (Aff-Wild2: 1-based frame number; ExpW: face id in its image), ``boxes``
    (ExpW face box as top, left, right, bottom in pixels; -1 for Aff-Wild2), ``lines``
    (1-based line of the annotation file the sample came from, for error messages).

    Per group (length G): ``group_names`` (path relative to its root: ``cropped_aligned/<video>``
    or ``image/origin/<name>.jpg``), ``group_roots`` (index into ``roots``), ``group_kinds``
    (FRAME_FOLDER or BOXED_IMAGE), ``group_sources`` (annotation file, relative to its root),
    ``group_sizes`` (ExpW: the image's stored width and height in pixels, read from its header
    while indexing, so that boxes past the edge are known before a run; -1 for Aff-Wild2).
    """

    roots: tuple[str, ...]
    num_classes: int
    labels: np.ndarray
    groups: np.ndarray
    frames: np.ndarray
    boxes: np.ndarray
    lines: np.ndarray
    group_names: np.ndarray
    group_roots: np.ndarray
    group_kinds: np.ndarray
    group_sources: np.ndarray
    group_sizes: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, g = len(self.labels), len(self.group_names)
        if self.group_sizes is None:  # an index saved before sizes were stored
            object.__setattr__(self, "group_sizes", np.full((g, 2), -1, np.int32))
        if self.group_sizes.shape != (g, 2):
            raise ValueError(
                f"FrameIndex.group_sizes has shape {self.group_sizes.shape}, expected ({g}, 2)"
            )
        for name in ("groups", "frames", "lines"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"FrameIndex.{name} has {len(getattr(self, name))} rows, expected {n}"
                )
        if self.boxes.shape != (n, 4):
            raise ValueError(f"FrameIndex.boxes has shape {self.boxes.shape}, expected ({n}, 4)")
        for name in ("group_roots", "group_kinds", "group_sources"):
            if len(getattr(self, name)) != g:
                raise ValueError(
                    f"FrameIndex.{name} has {len(getattr(self, name))} rows, expected {g}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls, num_classes: int) -> FrameIndex:
        return cls.build(
            root="",
            num_classes=num_classes,
            group_names=[],
            group_kinds=[],
            group_sources=[],
            labels=np.zeros(0, np.int8),
            groups=np.zeros(0, np.int32),
            frames=np.zeros(0, np.int32),
            lines=np.zeros(0, np.int32),
        )

    @classmethod
    def build(
        cls,
        root: str | os.PathLike,
        num_classes: int,
        group_names: list[str],
        group_kinds: list[int],
        group_sources: list[str],
        labels: np.ndarray,
        groups: np.ndarray,
        frames: np.ndarray,
        lines: np.ndarray,
        boxes: np.ndarray | None = None,
        skipped: dict[str, int] | None = None,
        group_sizes: np.ndarray | None = None,
    ) -> FrameIndex:
        """An index of one data set under one root, with the arrays cast to their compact dtypes."""
        return cls(
            roots=(str(root),),
            num_classes=num_classes,
            **_compact_rows(labels, groups, frames, lines, boxes),
            group_names=np.asarray(group_names, dtype=np.str_),
            group_roots=np.zeros(len(group_names), np.int16),
            group_kinds=np.asarray(group_kinds, np.int8),
            group_sources=np.asarray(group_sources, dtype=np.str_),
            group_sizes=None if group_sizes is None else np.asarray(group_sizes, np.int32),
            skipped={reason: 0 for reason in SKIP_REASONS} | dict(skipped or {}),
        )

    # -- per-sample look-ups -------------------------------------------------------------------

    def image_path(self, i: int) -> str:
        """The image file of sample ``i`` (for ExpW, the whole image its box is cut from)."""
        g = self.groups[i]
        folder = os.path.join(self.roots[self.group_roots[g]], self.group_names[g])
        if self.group_kinds[g] == FRAME_FOLDER:
            return os.path.join(folder, f"{self.frames[i]:05d}.jpg")
        return folder

    def source(self, i: int) -> str:
        """``<annotation file>:<line>`` of sample ``i``, for error messages."""
        g = self.groups[i]
        path = os.path.join(self.roots[self.group_roots[g]], self.group_sources[g])
        return f"{path}:{self.lines[i]}"

    def image_size(self, i: int) -> tuple[int, int] | None:
        """The stored ``(width, height)`` of sample ``i``'s image when indexed, else None."""
        width, height = (int(v) for v in self.group_sizes[self.groups[i]])
        return (width, height) if width >= 0 else None

    def boxes_past_edge(self) -> int:
        """ExpW samples whose box runs past the right or bottom edge of its image (kept, and
        clipped or padded when loaded: ``ferlit.data.images.load_face``)."""
        sizes = self.group_sizes[self.groups]
        boxed = (self.group_kinds[self.groups] == BOXED_IMAGE) & (sizes[:, 0] >= 0)
        past = (self.boxes[:, 2] > sizes[:, 0]) | (self.boxes[:, 3] > sizes[:, 1])
        return int(np.count_nonzero(boxed & past))

    def group_name(self, i: int) -> str:
        """The video (Aff-Wild2) or image (ExpW) name of sample ``i``."""
        return os.path.basename(str(self.group_names[self.groups[i]]))

    # -- whole-index operations ----------------------------------------------------------------

    def class_counts(self) -> np.ndarray:
        """Samples per class, length ``num_classes``."""
        return np.bincount(self.labels.astype(np.int64), minlength=self.num_classes)

    def subset(self, keep: np.ndarray) -> FrameIndex:
        """The samples selected by a boolean mask or an index array (the group table is kept)."""
        return self.with_rows(
            self.labels[keep],
            self.groups[keep],
            self.frames[keep],
            self.lines[keep],
            self.boxes[keep],
        )

    def with_rows(
        self,
        labels: np.ndarray,
        groups: np.ndarray,
        frames: np.ndarray,
        lines: np.ndarray,
        boxes: np.ndarray | None = None,
    ) -> FrameIndex:
        """Other samples (parallel arrays of one length N; ``groups`` are rows of this index's
        group table) over this index's roots, classes, group table and skipped counts, cast to
        the compact dtypes; ``boxes`` None: -1 (no box, as for Aff-Wild2 frames)."""
        rows = _compact_rows(labels, groups, frames, lines, boxes)
        return replace(self, **rows, skipped=dict(self.skipped))

    @staticmethod
    def concat(indexes: list[FrameIndex]) -> FrameIndex:
        """Several indexes as one (e.g. Aff-Wild2 train + ExpW); skip counts add up."""
        if not indexes:
            raise ValueError("FrameIndex.concat needs at least one index")
        num_classes = {ix.num_classes for ix in indexes}
        if len(num_classes) != 1:
            raise ValueError(
                f"cannot merge indexes with different class counts {sorted(num_classes)}"
            )
        roots: list[str] = []
        group_offset = 0
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("groups", "group_roots")}
        skipped: dict[str, int] = {}
        for ix in indexes:
            root_ids = []
            for root in ix.roots:
                if root not in roots:
                    roots.append(root)
                root_ids.append(roots.index(root))
            parts["groups"].append(ix.groups + group_offset)
            parts["group_roots"].append(np.asarray(root_ids, np.int16)[ix.group_roots])
            group_offset += len(ix.group_names)
            for reason, count in ix.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
        return FrameIndex(
            roots=tuple(roots),
            num_classes=indexes[0].num_classes,
            labels=np.concatenate([ix.labels for ix in indexes]),
            groups=np.concatenate(parts["groups"]).astype(np.int32),
            frames=np.concatenate([ix.frames for ix in indexes]),
            boxes=np.concatenate([ix.boxes for ix in indexes]),
            lines=np.concatenate([ix.lines for ix in indexes]),
            group_names=np.concatenate([ix.group_names for ix in indexes]).astype(np.str_),
            group_roots=np.concatenate(parts["group_roots"]),
            group_kinds=np.concatenate([ix.group_kinds for ix in indexes]),
            group_sources=np.concatenate([ix.group_sources for ix in indexes]).astype(np.str_),
            group_sizes=np.concatenate([ix.group_sizes for ix in indexes]).astype(np.int32),
            skipped=skipped,
        )

    # -- persistence (the index cache) ---------------------------------------------------------

    _ARRAYS = (
        "labels",
        "groups",
        "frames",
        "boxes",
        "lines",
        "group_names",
        "group_roots",
        "group_kinds",
        "group_sources",
        "group_sizes",
    )

    def save(self, path: str | os.PathLike) -> None:
        """Write the index as an uncompressed ``.npz`` crash-safely (``ferlit.io.atomic_write``:
        a failed or killed write leaves the old file or none, never part of one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            np.savez(
                f,
                roots=np.asarray(self.roots, dtype=np.str_),
                num_classes=np.int64(self.num_classes),
                skipped_reasons=np.asarray(list(self.skipped), dtype=np.str_),
                skipped_counts=np.asarray(list(self.skipped.values()), np.int64),
                **{name: getattr(self, name) for name in self._ARRAYS},
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FrameIndex:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                roots=tuple(str(r) for r in z["roots"]),
                num_classes=int(z["num_classes"]),
                skipped=dict(
                    zip(
                        (str(r) for r in z["skipped_reasons"]),
                        (int(c) for c in z["skipped_counts"]),
                        strict=True,
                    )
                ),
                # group_sizes is absent from indexes saved by ferlit before it read image sizes
                # (a pack written then): its boxes load as they did, unchecked.
                **{name: z[name] for name in cls._ARRAYS if name in z.files},
            )
