"""Training-set subsampling: every k-th frame of each video, and a cap on a class's share.

Aff-Wild2 is annotated per frame at 30 fps, so neighbouring frames are near-duplicates, and
Neutral alone is ~62% of the training set (the paper's class weights, Cafarelli et al. 2020,
Section 3); a full epoch spends most of its time on faces it has effectively seen. Both
selections are deterministic (no seed): the same options always keep the same frames, and they
return row numbers, so the JPEG path (``FrameIndex.subset``) and the packed path (rows of the
packed frames) keep the very same samples.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ferlit.data.index import FRAME_FOLDER, FrameIndex
from ferlit.errors import ConfigError


def every_kth_frame(index: FrameIndex, k: int) -> np.ndarray:
    """Rows keeping the 1st, (k+1)-th, (2k+1)-th ... indexed frame of each video, by frame number.

    Counting runs over a video's indexed frames (annotated, with an image), so gaps in the
    annotation do not shift the rate: a video with n indexed frames keeps ceil(n / k). ExpW faces
    (``BOXED_IMAGE``) are single images, not video frames, and are all kept.
    """
    if not (isinstance(k, int | np.integer) and k >= 1):
        raise ConfigError(f"data.frame_step must be an integer >= 1, got {k!r}")
    rows = np.arange(len(index))
    if k == 1:
        return rows
    in_video = index.group_kinds[index.groups] == FRAME_FOLDER
    order = np.lexsort((index.frames, index.groups))
    groups = index.groups[order]
    first = np.r_[True, groups[1:] != groups[:-1]]
    run_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order)) - run_start
    return rows[~in_video | (position % k == 0)]


def cap_class_share(
    index: FrameIndex, max_share: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """Rows (a subset of ``rows``, default all) in which no class exceeds ``max_share``.

    The share is of the set that remains, so capping the largest class makes every other share
    grow; the cap is the largest count C such that each capped class has C samples and
    C / total <= max_share exactly (rational arithmetic: never a rounding above it). A capped
    class keeps C samples evenly spaced through its rows in index order, so every video and ExpW
    keep their proportion of it. ``max_share`` below 1 / (classes present) cannot be met.
    """
    if not (isinstance(max_share, int | float) and 0 < max_share <= 1):
        raise ConfigError(f"data.max_class_share must be in (0, 1], got {max_share!r}")
    rows = np.arange(len(index)) if rows is None else np.asarray(rows, np.int64)
    labels = index.labels[rows].astype(np.int64)
    counts = np.bincount(labels, minlength=index.num_classes)
    present = np.sort(counts[counts > 0])[::-1]
    # 0.6 or 1/3 as floats are a hair below 0.6 and 1/3; the fraction meant is the nearest one
    # with a small denominator.
    share = Fraction(max_share).limit_denominator(10**6)
    if share * len(present) < 1:
        raise ConfigError(
            f"data.max_class_share {max_share} is below 1/{len(present)}: with {len(present)} "
            "classes in the training set, some class always has a larger share"
        )
    cap = None
    for m in range(len(present)):
        rest = int(present[m:].sum())
        if m == 0:
            if present[0] <= share * rest:
                return rows
            continue
        c = int(share * rest / (1 - share * m))  # floor: m classes of c, the rest as they are
        if present[m] <= c:
            cap = c
            break
    keep = np.ones(len(rows), bool)
    for label in np.flatnonzero(counts > cap):
        members = np.flatnonzero(labels == label)
        chosen = np.arange(cap) * len(members) // cap
        keep[members] = False
        keep[members[chosen]] = True
    return rows[keep]


def subsample(
    index: FrameIndex, frame_step: int = 1, max_class_share: float | None = None
) -> np.ndarray:
    """The training rows kept: every ``frame_step``-th frame, then the class cap (if any)."""
    rows = every_kth_frame(index, frame_step)
    if max_class_share is not None:
        rows = cap_class_share(index, max_class_share, rows)
    return rows
