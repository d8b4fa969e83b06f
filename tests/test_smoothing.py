"""Temporal smoothing: windows over frame numbers within each video, and the choice of window."""

from __future__ import annotations

import numpy as np
import pytest

from ferlit.errors import ConfigError
from ferlit.smoothing import (
    choose_window,
    smooth_predictions,
    smooth_probabilities,
)

# One video, frames 4-6 missing (no face found). Frame 2 flickers to class 1.
FRAMES = np.array([1, 2, 3, 7, 8])
PROBS = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.0, 1.0], [0.3, 0.7]])
TARGETS = np.array([0, 0, 0, 1, 1])


def test_window_3_by_hand_across_a_gap_in_frame_numbers():
    smoothed = smooth_probabilities(["a"] * 5, FRAMES, PROBS, 3)
    expected = [
        [(0.9 + 0.4) / 2, (0.1 + 0.6) / 2],  # frame 1: frames 1, 2
        [(0.9 + 0.4 + 0.7) / 3, (0.1 + 0.6 + 0.3) / 3],  # frame 2: frames 1, 2, 3
        [(0.4 + 0.7) / 2, (0.6 + 0.3) / 2],  # frame 3: frames 2, 3; frame 4 has no image
        [(0.0 + 0.3) / 2, (1.0 + 0.7) / 2],  # frame 7: frames 7, 8; frame 6 has no image
        [(0.0 + 0.3) / 2, (1.0 + 0.7) / 2],  # frame 8: frames 7, 8
    ]
    np.testing.assert_allclose(smoothed, expected, rtol=1e-12)
    assert PROBS.argmax(axis=1).tolist() == [0, 1, 0, 1, 1]
    assert smooth_predictions(["a"] * 5, FRAMES, PROBS, 3).tolist() == [0, 0, 0, 1, 1]
    # A window over rows instead of frame numbers would give frame 3 the neighbours 2 and 7,
    # (0.4 + 0.7 + 0.0) / 3 < (0.6 + 0.3 + 1.0) / 3, i.e. class 1.


def test_window_5_reaches_two_frame_numbers_each_side():
    smoothed = smooth_probabilities(["a"] * 5, FRAMES, PROBS, 5)
    np.testing.assert_allclose(smoothed[2], PROBS[:3].mean(axis=0))  # frame 3: frames 1..5
    np.testing.assert_allclose(smoothed[3], PROBS[3:].mean(axis=0))  # frame 7: frames 5..9


def test_windows_stay_in_their_video_whatever_the_row_order():
    videos = np.array(["a"] * 5 + ["b"] * 2)
    frames = np.concatenate([FRAMES, [4, 5]])  # video b's frames 4, 5 sit in a's gap
    probs = np.concatenate([PROBS, [[0.0, 1.0], [0.0, 1.0]]])
    order = np.array([5, 0, 3, 1, 6, 2, 4])
    smoothed = smooth_probabilities(videos[order], frames[order], probs[order], 3)
    alone = smooth_probabilities(["a"] * 5, FRAMES, PROBS, 3)
    np.testing.assert_allclose(smoothed[np.argsort(order)][:5], alone, rtol=1e-12)
    np.testing.assert_allclose(smoothed[np.argsort(order)][5:], [[0.0, 1.0], [0.0, 1.0]])


def test_matches_a_frame_by_frame_loop_on_random_videos():
    rng = np.random.default_rng(0)
    videos, frames = [], []
    for v, length in enumerate((40, 1, 25)):
        present = np.sort(rng.choice(np.arange(1, 60), size=length, replace=False))
        videos += [f"v{v}"] * length
        frames += present.tolist()
    videos, frames = np.array(videos), np.array(frames)
    probs = rng.dirichlet(np.ones(7), size=len(frames))
    order = rng.permutation(len(frames))
    videos, frames, probs = videos[order], frames[order], probs[order]
    for window in (3, 5, 11):
        half = window // 2
        expected = np.array(
            [
                probs[(videos == videos[i]) & (np.abs(frames - frames[i]) <= half)].mean(axis=0)
                for i in range(len(frames))
            ]
        )
        np.testing.assert_allclose(smooth_probabilities(videos, frames, probs, window), expected)


@pytest.mark.parametrize("window", [0, 1])
def test_window_0_or_1_leaves_probabilities_unchanged(window):
    np.testing.assert_array_equal(smooth_probabilities(["a"] * 5, FRAMES, PROBS, window), PROBS)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (4, "must be 0 (off) or an odd number of frames so that it is centred on each frame"),
        (-3, "got -3"),
        ("15", "expected a window length in frames or 'auto', got '15'"),
    ],
)
def test_bad_windows_are_refused(window, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        smooth_probabilities(["a"] * 5, FRAMES, PROBS, window)


def test_choose_window_takes_the_best_criterion_and_the_smaller_of_a_tie():
    window, scores = choose_window(["a"] * 5, FRAMES, PROBS, TARGETS, windows=(1, 3, 5))
    # Unsmoothed: one error (frame 2), so each class has F1 0.8 and accuracy is 0.8.
    assert scores[1] == pytest.approx(0.67 * 0.8 + 0.33 * 0.8)
    assert scores[3] == pytest.approx(1.0) and scores[5] == pytest.approx(1.0)
    assert window == 3
