"""Temporal smoothing: windows over frame numbers within each video, and the choice of window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferlit.errors import ConfigError
from ferlit.evaluation.predictions import smoothing_sweep
from ferlit.evaluation.smoothing import (
    choose_smoothing,
    choose_window,
    criterion_by_window,
    gaussian_sigma,
    kernel_weights,
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


def test_gaussian_window_3_by_hand():
    # W 3: sigma = 3 / 6 = 0.5, so a neighbour one frame away weighs exp(-1 / (2 * 0.25)).
    w = np.exp(-2.0)
    assert gaussian_sigma(3) == 0.5 and gaussian_sigma(15) == 2.5
    np.testing.assert_allclose(kernel_weights(3, "gaussian"), [w, 1.0, w])
    smoothed = smooth_probabilities(["a"] * 5, FRAMES, PROBS, 3, kernel="gaussian")
    expected = [
        (PROBS[0] + w * PROBS[1]) / (1 + w),  # frame 1: frames 1, 2
        (w * PROBS[0] + PROBS[1] + w * PROBS[2]) / (1 + 2 * w),  # frame 2: frames 1, 2, 3
        (w * PROBS[1] + PROBS[2]) / (1 + w),  # frame 3: frames 2, 3 (4 has no image)
        (PROBS[3] + w * PROBS[4]) / (1 + w),  # frame 7: frames 7, 8
        (w * PROBS[3] + PROBS[4]) / (1 + w),  # frame 8: frames 7, 8
    ]
    np.testing.assert_allclose(smoothed, expected, rtol=1e-12)
    # Frame 2 keeps most of its own weight: (0.4 + 2w 0.8) / (1 + 2w) < 0.5 < box's 0.667.
    assert smooth_predictions(["a"] * 5, FRAMES, PROBS, 3, kernel="gaussian").tolist()[1] == 1


def test_gaussian_matches_a_frame_by_frame_loop_on_random_videos():
    rng = np.random.default_rng(1)
    videos = np.repeat(["v0", "v1"], 30)
    frames = np.concatenate([np.sort(rng.choice(np.arange(1, 50), 30, replace=False))] * 2)
    probs = rng.dirichlet(np.ones(7), size=60)
    for window in (5, 15):
        sigma = window / 6
        expected = []
        for i in range(60):
            near = (videos == videos[i]) & (np.abs(frames - frames[i]) <= window // 2)
            weight = np.exp(-((frames[near] - frames[i]) ** 2) / (2 * sigma**2))
            expected.append((weight[:, None] * probs[near]).sum(axis=0) / weight.sum())
        smoothed = smooth_probabilities(videos, frames, probs, window, kernel="gaussian")
        np.testing.assert_allclose(smoothed, expected, rtol=1e-12)


def test_unannotated_frames_are_context_that_changes_a_prediction():
    # Frame 2 is annotated (Anger = 1) but flickers to 0; frames 1 and 3 are -1 (no label) and
    # clearly 1. Smoothing over annotated frames alone leaves frame 2 alone in its window.
    frames = np.array([1, 2, 3])
    probs = np.array([[0.1, 0.9], [0.6, 0.4], [0.1, 0.9]])
    targets = np.array([-1, 1, -1])
    annotated = targets >= 0
    alone = smooth_predictions(["a"], frames[annotated], probs[annotated], 3)
    assert alone.tolist() == [0]  # unchanged: still wrong
    with_context = smooth_predictions(["a"] * 3, frames, probs, 3)
    assert with_context[1] == 1  # (0.9 + 0.4 + 0.9) / 3 for class 1
    scores = criterion_by_window(["a"] * 3, frames, probs, targets, windows=(1, 3))
    assert scores[1] == pytest.approx(0.0) and scores[3] > scores[1]


def test_smooth_auto_chooses_among_both_kernels():
    p = np.array([0.6, 0.3, 0.7, 0.2, 0.9, 0.4, 0.1])
    probs, targets = np.stack([p, 1 - p], axis=1), np.array([1, 1, 1, 1, 0, 0, 0])
    frames, videos = np.arange(1, 8), ["a"] * 7
    kernel, window, scores = choose_smoothing(videos, frames, probs, targets, windows=(1, 3, 5))
    assert set(scores) == {"box", "gaussian"} and list(scores["box"]) == [1, 3, 5]
    assert scores["box"][1] == scores["gaussian"][1]  # window 1 is no smoothing either way
    assert (kernel, window) == ("gaussian", 5)
    assert scores["gaussian"][5] > max(scores["box"].values())
    # Box W 5 averages frame 5's neighbours 3..7 to class 1 (wrong); gaussian keeps it 0.
    assert smooth_predictions(videos, frames, probs, 5)[4] == 1
    assert smooth_predictions(videos, frames, probs, 5, kernel="gaussian")[4] == 0
    only_box = choose_smoothing(videos, frames, probs, targets, (1, 3, 5), kernels=("box",))
    assert only_box[:2] == ("box", 1) and set(only_box[2]) == {"box"}


def test_bad_kernel_is_refused():
    with pytest.raises(ConfigError, match="--smooth_kernel: expected one of box, gaussian"):
        smooth_probabilities(["a"] * 5, FRAMES, PROBS, 3, kernel="triangle")


def test_the_notebooks_sweep_smooths_every_row_and_scores_the_labelled_ones():
    names = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(7), size=40)
    targets = np.where(rng.random(40) < 0.3, -1, rng.integers(0, 7, 40))
    frames = np.tile(np.arange(1, 21), 2)
    videos = np.repeat(["a", "b"], 20)
    table = pd.DataFrame({"video": videos, "frame": frames, "target": targets, "pred": 0})
    for c, name in enumerate(names):
        table[f"prob_{name.lower()}"] = probs[:, c]
    sweep = smoothing_sweep(table, (1, 5), kernel="gaussian")
    expected = criterion_by_window(videos, frames, probs, targets, (1, 5), kernel="gaussian")
    assert sweep["criterion"].tolist() == pytest.approx([expected[1], expected[5]], abs=1e-12)
