"""Temporal smoothing of per-frame class probabilities within each video.

Facial expressions last from about half a second to several seconds, far longer than a frame
(Aff-Wild2 videos run at ~30 fps), while a frame-level model's output flickers with blur, pose
and occlusion. Averaging each frame's class probabilities with those of its neighbours before
taking the arg-max removes much of that flicker; ABAW expression entries commonly post-process
frame predictions this way. What it gains depends on the model and the data, so ``evaluate``
reports raw and smoothed scores side by side.

The window is centred on each frame and measured in *frame numbers*, not rows: frame ``f`` with
window ``W`` (odd) averages the frames ``f - W//2 .. f + W//2`` of the same video that have a
prediction. Frames the face detector missed leave no image and so no row; counting rows instead
would silently stretch the window across such gaps, and across the end of one video into the next.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ferlit.errors import ConfigError
from ferlit.metrics import ExpressionCriterion

#: Windows ``--smooth auto`` tries (frames; 1 = no smoothing): up to ~4 s at Aff-Wild2's 30 fps.
AUTO_WINDOWS: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 15, 21, 31, 45, 61, 91, 121)


def check_window(window: int) -> int:
    """``window`` as an int if it is 0 (off) or a positive odd number of frames (centred)."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer):
        raise ConfigError(f"--smooth: expected a window length in frames or 'auto', got {window!r}")
    if window < 0 or (window > 0 and window % 2 == 0):
        raise ConfigError(
            f"--smooth: the window must be 0 (off) or an odd number of frames so that it is "
            f"centred on each frame (e.g. 15 = 7 before and 7 after), got {window}"
        )
    return int(window)


def smooth_probabilities(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    window: int,
) -> np.ndarray:
    """The mean of ``probs`` over a centred window of ``window`` frame numbers, per video.

    ``videos`` (any hashable labels, e.g. names) and ``frames`` (frame numbers) name the video and
    frame of each row of ``probs`` (N x C); rows may come in any order and the result is in the
    same order. Window 0 or 1 returns a copy. Each frame's window always holds the frame itself,
    so the mean is defined.
    """
    window = check_window(window)
    probs = np.asarray(probs, np.float64)
    frames = np.asarray(frames, np.int64)
    n = len(probs)
    if probs.ndim != 2 or len(frames) != n or len(videos) != n:
        raise ValueError(
            f"expected N x C probabilities with N videos and frames, got probs {probs.shape}, "
            f"{len(videos)} videos, {len(frames)} frames"
        )
    if window <= 1 or n == 0:
        return probs.copy()
    half = window // 2
    _, video_codes = np.unique(np.asarray(videos), return_inverse=True)
    # One sorted key per row, spaced so that no window reaches into the neighbouring video.
    low = int(frames.min())
    stride = int(frames.max()) - low + 2 * half + 1
    keys = video_codes.astype(np.int64) * stride + (frames - low)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    sums = np.zeros((n + 1, probs.shape[1]), np.float64)
    np.cumsum(probs[order], axis=0, out=sums[1:])
    start = np.searchsorted(sorted_keys, sorted_keys - half, side="left")
    stop = np.searchsorted(sorted_keys, sorted_keys + half, side="right")
    smoothed = np.empty_like(probs)
    smoothed[order] = (sums[stop] - sums[start]) / (stop - start)[:, None]
    return smoothed


def smooth_predictions(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    window: int,
) -> np.ndarray:
    """The arg-max class of each row after :func:`smooth_probabilities` (int64, N)."""
    return smooth_probabilities(videos, frames, probs, window).argmax(axis=1)


def criterion_by_window(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    windows: Sequence[int] = AUTO_WINDOWS,
) -> dict[int, float]:
    """The ABAW criterion (the training metric) of the smoothed predictions, per window."""
    num_classes = np.asarray(probs).shape[1]
    target = torch.as_tensor(np.asarray(targets, np.int64))
    result = {}
    for window in windows:
        metric = ExpressionCriterion(num_classes, sync_on_compute=False)  # all frames are here
        labels = smooth_predictions(videos, frames, probs, window)
        metric.update(torch.as_tensor(labels), target)
        result[int(window)] = float(metric.compute()["criterion"])
    return result


def choose_window(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    windows: Sequence[int] = AUTO_WINDOWS,
) -> tuple[int, dict[int, float]]:
    """The window with the highest criterion on labelled frames (the smallest of any tie), and
    the criterion of every window tried.

    Choose it on the validation set: picked on the frames it is then scored on, the smoothed
    score is optimistic.
    """
    scores = criterion_by_window(videos, frames, probs, targets, windows)
    best = max(scores.items(), key=lambda item: (item[1], -item[0]))[0]
    return best, scores
