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

Two kernels weigh the frames of a window: ``box`` (the plain mean) and ``gaussian``, whose weight
falls off with the distance d in frames as exp(-d^2 / (2 sigma^2)) with sigma = W / 6 (see
:func:`gaussian_sigma`), so that the window's W frames span about +-3 sigma: the nearest
neighbours count most, and a longer window can be used before an expression's start or end is
blurred. Either kernel normalises by the weights of the frames present in the window.

Frames labelled -1 (unannotated) still have a face and a prediction, and they are the neighbours
of annotated frames: ``evaluate`` smooths over every face frame and scores only the annotated
ones (:func:`criterion_by_window` takes ``-1`` targets the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ferlit.errors import ConfigError
from ferlit.metrics import ExpressionCriterion

#: Windows ``--smooth auto`` tries (frames; 1 = no smoothing): up to ~4 s at Aff-Wild2's 30 fps.
AUTO_WINDOWS: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 15, 21, 31, 45, 61, 91, 121)

#: The window kernels (``--smooth_kernel``); ``--smooth auto`` tries both.
KERNELS: tuple[str, ...] = ("box", "gaussian")


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


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is one of :data:`KERNELS`."""
    if kernel not in KERNELS:
        raise ConfigError(f"--smooth_kernel: expected one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


def gaussian_sigma(window: int) -> float:
    """The Gaussian kernel's standard deviation for a window of ``window`` frames: W / 6.

    The window then spans +-3 sigma (the three-sigma rule: 99.7% of an untruncated Gaussian's
    mass), e.g. sigma 2.5 frames for W 15; the window, not sigma, stays the one knob to tune.
    """
    return check_window(window) / 6.0


def kernel_weights(window: int, kernel: str) -> np.ndarray:
    """The weight of each offset -W//2 .. W//2 of a window (not normalised; box: all 1)."""
    half = check_window(window) // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    if check_kernel(kernel) == "box" or window <= 1:
        return np.ones_like(offsets)
    return np.exp(-(offsets**2) / (2 * gaussian_sigma(window) ** 2))


def smooth_probabilities(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    window: int,
    kernel: str = "box",
) -> np.ndarray:
    """The weighted mean of ``probs`` over a centred window of ``window`` frame numbers, per video.

    ``videos`` (any hashable labels, e.g. names) and ``frames`` (frame numbers) name the video and
    frame of each row of ``probs`` (N x C); rows may come in any order and the result is in the
    same order. Window 0 or 1 returns a copy. ``kernel`` ``box`` weighs every frame of the window
    alike, ``gaussian`` by :func:`kernel_weights`; the weights of the frames present are
    normalised to sum to 1. Each frame's window always holds the frame itself, so the mean is
    defined.
    """
    window = check_window(window)
    kernel = check_kernel(kernel)
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
    if kernel == "box":
        start = np.searchsorted(sorted_keys, sorted_keys - half, side="left")
        stop = np.searchsorted(sorted_keys, sorted_keys + half, side="right")
        smoothed = np.empty_like(probs)
        smoothed[order] = (sums[stop] - sums[start]) / (stop - start)[:, None]
        return smoothed
    # Weighted: one pass per offset, adding the neighbour at that offset where it exists.
    sorted_probs = probs[order]
    total = np.zeros_like(sorted_probs)
    weight = np.zeros(n, np.float64)
    for offset, w in zip(range(-half, half + 1), kernel_weights(window, kernel), strict=True):
        at = np.searchsorted(sorted_keys, sorted_keys + offset)
        found = at < n
        found[found] = sorted_keys[at[found]] == sorted_keys[found] + offset
        total[found] += w * sorted_probs[at[found]]
        weight[found] += w
    smoothed = np.empty_like(probs)
    smoothed[order] = total / weight[:, None]
    return smoothed


def smooth_predictions(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    window: int,
    kernel: str = "box",
) -> np.ndarray:
    """The arg-max class of each row after :func:`smooth_probabilities` (int64, N)."""
    return smooth_probabilities(videos, frames, probs, window, kernel).argmax(axis=1)


def criterion_by_window(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    windows: Sequence[int] = AUTO_WINDOWS,
    kernel: str = "box",
) -> dict[int, float]:
    """The ABAW criterion (the training metric) of the smoothed predictions, per window.

    Every row is smoothed; only rows with a target (>= 0) are scored, so unannotated frames
    (target -1) serve as context for their annotated neighbours.
    """
    num_classes = np.asarray(probs).shape[1]
    targets = np.asarray(targets, np.int64)
    scored = targets >= 0
    target = torch.as_tensor(targets[scored])
    result = {}
    for window in windows:
        metric = ExpressionCriterion(num_classes, sync_on_compute=False)  # all frames are here
        labels = smooth_predictions(videos, frames, probs, window, kernel)
        metric.update(torch.as_tensor(labels[scored]), target)
        result[int(window)] = float(metric.compute()["criterion"])
    return result


def choose_smoothing(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    windows: Sequence[int] = AUTO_WINDOWS,
    kernels: Sequence[str] = KERNELS,
) -> tuple[str, int, dict[str, dict[int, float]]]:
    """The kernel and window with the highest criterion on the labelled frames, and the
    criterion of every pair tried (``{kernel: {window: criterion}}``).

    A tie goes to the smaller window, then to the kernel listed first (box before gaussian):
    the least smoothing that scores best. Choose on the validation set: picked on the frames it
    is then scored on, the smoothed score is optimistic.
    """
    scores = {
        check_kernel(kernel): criterion_by_window(videos, frames, probs, targets, windows, kernel)
        for kernel in kernels
    }
    candidates = [
        (score, -window, -k, kernel, window)
        for k, (kernel, by_window) in enumerate(scores.items())
        for window, score in by_window.items()
    ]
    _, _, _, kernel, window = max(candidates)
    return kernel, window, scores


def choose_window(
    videos: Sequence | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    windows: Sequence[int] = AUTO_WINDOWS,
) -> tuple[int, dict[int, float]]:
    """The box window with the highest criterion on labelled frames (the smallest of any tie),
    and the criterion of every window tried (:func:`choose_smoothing` with the box kernel)."""
    _, window, scores = choose_smoothing(videos, frames, probs, targets, windows, ("box",))
    return window, scores["box"]
