"""The ABAW criterion: equal to sklearn's definition on any input, exact across ranks; the ABAW
2020 formula for a 7-class run, the mean F1 over 8 classes (ABAW 2022+) for an 8-class run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from torchmetrics.functional.classification import multiclass_f1_score

from ferlit.metrics import (
    ACCURACY_WEIGHT,
    CRITERIA,
    F1_WEIGHT,
    ExpressionCriterion,
    challenge_of,
    scores_from_confusion,
)


def sklearn_scores(target: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, object]:
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        target, preds, labels=labels, zero_division=0
    )
    macro = f1_score(target, preds, labels=labels, average="macro", zero_division=0)
    acc = accuracy_score(target, preds)
    abaw2020 = 0.67 * macro + 0.33 * acc
    return {
        "criterion": macro if num_classes == 8 else abaw2020,
        "abaw2020": abaw2020,
        "f1": macro,
        "acc": acc,
        "f1_per_class": f1,
        "precision": precision,
        "recall": recall,
        "support": support,
    }


def assert_matches_sklearn(scores: dict[str, torch.Tensor], expected: dict[str, object]) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(scores[key].numpy(), value, atol=1e-6, err_msg=key)


@st.composite
def labelled_frames(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray]:
    num_classes = draw(st.integers(2, 9))
    n = draw(st.integers(1, 60))
    label = st.integers(0, num_classes - 1)
    target = np.array(draw(st.lists(label, min_size=n, max_size=n)))
    preds = np.array(draw(st.lists(label, min_size=n, max_size=n)))
    return num_classes, target, preds


@settings(max_examples=150, deadline=None)
@given(labelled_frames())
def test_equals_sklearn_macro_f1_and_accuracy_on_any_labels(case) -> None:
    num_classes, target, preds = case
    metric = ExpressionCriterion(num_classes)
    metric.update(torch.from_numpy(preds), torch.from_numpy(target))
    scores = metric.compute()
    assert_matches_sklearn(scores, sklearn_scores(target, preds, num_classes))
    assert scores["criterion"].dtype == torch.float64
    assert scores["confusion"].shape == (num_classes, num_classes)
    assert int(scores["confusion"].sum()) == len(target)


def test_logits_are_scored_by_their_argmax_over_random_batches() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, num_classes = int(rng.integers(1, 200)), int(rng.choice([7, 8]))
        logits = torch.from_numpy(rng.normal(size=(n, num_classes)).astype(np.float32))
        target = torch.from_numpy(rng.integers(0, num_classes, n))
        metric = ExpressionCriterion(num_classes)
        for start in range(0, n, 16):
            metric.update(logits[start : start + 16], target[start : start + 16])
        expected = sklearn_scores(target.numpy(), logits.argmax(1).numpy(), num_classes)
        assert_matches_sklearn(metric.compute(), expected)


def test_known_numbers_by_hand() -> None:
    # rows = target: class 0 once right once as 1; class 1 right; class 2 predicted as 1.
    metric = ExpressionCriterion(3)
    metric.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 2]))
    scores = metric.compute()
    assert scores["confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert scores["support"].tolist() == [2, 1, 1]
    torch.testing.assert_close(
        scores["precision"], torch.tensor([1.0, 1 / 3, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(scores["recall"], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        scores["f1_per_class"], torch.tensor([2 / 3, 0.5, 0.0], dtype=torch.float64)
    )
    assert scores["f1"].item() == pytest.approx(7 / 18)
    assert scores["acc"].item() == pytest.approx(0.5)
    assert scores["criterion"].item() == pytest.approx(0.67 * 7 / 18 + 0.33 * 0.5)
    assert (F1_WEIGHT, ACCURACY_WEIGHT) == (0.67, 0.33)


def test_one_class_only_counts_the_six_absent_classes_as_zero() -> None:
    metric = ExpressionCriterion(7)
    metric.update(torch.full((10,), 4), torch.full((10,), 4))
    scores = metric.compute()
    assert scores["acc"].item() == 1.0
    assert scores["f1"].item() == pytest.approx(1 / 7)
    assert scores["criterion"].item() == pytest.approx(0.67 / 7 + 0.33)


def test_absent_classes_count_where_torchmetrics_macro_f1_drops_them() -> None:
    preds = target = torch.tensor([0, 0, 1, 1])
    metric = ExpressionCriterion(3)
    metric.update(preds, target)
    assert metric.compute()["f1"].item() == pytest.approx(2 / 3)
    assert multiclass_f1_score(preds, target, 3, average="macro").item() == pytest.approx(1.0)


def test_all_wrong_scores_zero() -> None:
    metric = ExpressionCriterion(7)
    metric.update(torch.tensor([1, 2, 3, 0]), torch.tensor([0, 1, 2, 3]))
    scores = metric.compute()
    assert scores["criterion"].item() == 0.0
    assert scores["f1_per_class"].tolist() == [0.0] * 7


def test_no_frames_scores_zero_not_nan() -> None:
    metric = ExpressionCriterion(7)
    metric.update(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))
    scores = metric.compute()
    assert [scores[k].item() for k in ("criterion", "f1", "acc")] == [0.0, 0.0, 0.0]
    assert scores["support"].tolist() == [0] * 7
    fresh = ExpressionCriterion(8)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert fresh.compute()["criterion"].item() == 0.0


def test_merging_two_ranks_equals_one_metric_over_all_frames() -> None:
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(101, 8)))
    target = torch.from_numpy(rng.integers(0, 8, 101))
    whole = ExpressionCriterion(8)
    whole.update(logits, target)
    rank0, rank1 = ExpressionCriterion(8), ExpressionCriterion(8)
    rank0.update(logits[:40], target[:40])
    rank1.update(logits[40:], target[40:])
    summed = scores_from_confusion(rank0.confusion + rank1.confusion)
    rank0.merge_state(rank1)
    merged = rank0.compute()
    for key, value in whole.compute().items():
        assert torch.equal(merged[key], value), key
        assert torch.equal(summed[key], value), key


def test_reset_forgets_earlier_frames() -> None:
    metric = ExpressionCriterion(7)
    metric.update(torch.tensor([0, 0]), torch.tensor([1, 1]))
    metric.reset()
    metric.update(torch.tensor([3]), torch.tensor([3]))
    assert metric.compute()["acc"].item() == 1.0


def test_scores_from_a_numpy_confusion_matrix_and_bad_shapes() -> None:
    confusion = np.array([[3, 1], [0, 4]])
    scores = scores_from_confusion(confusion)
    target = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    preds = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    assert_matches_sklearn(scores, sklearn_scores(target, preds, 2))
    with pytest.raises(ValueError, match=r"square \(C, C\) confusion matrix, got \(2, 3\)"):
        scores_from_confusion(np.zeros((2, 3)))


def test_a_target_outside_the_classes_is_refused() -> None:
    metric = ExpressionCriterion(7)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 7\), got values from 0 to 7"):
        metric.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 7\), got values from -1 to 1"):
        metric.update(torch.tensor([-1, 1]), torch.tensor([0, 1]))
    with pytest.raises(
        ValueError, match=r"preds must be scores \(2, 7\) .* got torch.float32 \(2, 8\)"
    ):
        metric.update(torch.zeros(2, 8), torch.tensor([0, 1]))
    assert metric.confusion.sum().item() == 0


def test_fewer_than_two_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="num_classes must be at least 2, got 1"):
        ExpressionCriterion(1)


def test_an_eight_class_criterion_is_sklearns_macro_f1_without_accuracy() -> None:
    # ABAW 2022+ (8 classes): P = sum of the 8 per-class F1 / 8, absent classes counting 0.
    rng = np.random.default_rng(8)
    target = rng.choice(8, size=300, p=[0.5, 0.05, 0.02, 0.02, 0.2, 0.1, 0.06, 0.05])
    preds = np.where(rng.random(300) < 0.6, target, rng.integers(0, 6, 300))  # 6, 7 rarely hit
    metric = ExpressionCriterion(8)
    metric.update(torch.from_numpy(preds), torch.from_numpy(target))
    scores = metric.compute()
    macro = f1_score(target, preds, average="macro", labels=range(8), zero_division=0)
    acc = accuracy_score(target, preds)
    assert scores["criterion"].item() == pytest.approx(macro, abs=1e-12)
    assert scores["abaw2020"].item() == pytest.approx(0.67 * macro + 0.33 * acc, abs=1e-12)
    assert scores["criterion"].item() != pytest.approx(scores["abaw2020"].item())
    assert (metric.challenge, metric.description) == (
        "abaw2022",
        "abaw2022: mean F1 over 8 classes",
    )


def test_a_seven_class_criterion_is_the_abaw2020_formula() -> None:
    metric = ExpressionCriterion(7)
    metric.update(torch.tensor([0, 0, 4, 4]), torch.tensor([0, 4, 4, 4]))
    scores = metric.compute()
    assert scores["criterion"].item() == scores["abaw2020"].item()
    assert scores["criterion"].item() == pytest.approx(0.67 * (2 / 3 + 0.8) / 7 + 0.33 * 0.75)
    assert metric.challenge == "abaw2020" and CRITERIA["abaw2020"].startswith("abaw2020: 0.67")


def test_a_part_of_a_run_keeps_the_runs_challenge() -> None:
    # The classes one video shows (3 of 8): still scored as the 8-class run is, by mean F1.
    confusion = torch.tensor([[5, 1, 0], [0, 2, 0], [1, 0, 1]])
    part = scores_from_confusion(confusion, challenge_of(8))
    assert part["criterion"].item() == part["f1"].item()
    assert scores_from_confusion(confusion)["criterion"].item() == part["abaw2020"].item()
    with pytest.raises(ValueError, match="challenge must be one of abaw2020, abaw2022, got 'x'"):
        scores_from_confusion(confusion, "x")


def test_per_class_scores_table():
    from ferlit.metrics import per_class_scores

    # 2 classes: class a 3 frames (2 right), class b 1 frame (predicted as b, plus 1 a -> b)
    confusion = np.array([[2, 1], [0, 1]])
    table = per_class_scores(scores_from_confusion(confusion), ("a", "b"))
    assert list(table) == ["a", "b"]
    assert table["a"] == {
        "f1": pytest.approx(0.8),
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "support": 3,
    }
    assert table["b"] == {"f1": pytest.approx(2 / 3), "precision": 0.5, "recall": 1.0, "support": 1}
    assert isinstance(table["a"]["support"], int) and isinstance(table["b"]["f1"], float)


def test_summary_rows_show_the_2020_formula_beside_another_challenges_criterion():
    from ferlit.metrics import summary_rows

    assert summary_rows("abaw2020") == [
        ("f1", "macro-F1"),
        ("acc", "accuracy"),
        ("criterion", "criterion (abaw2020)"),
    ]
    assert summary_rows("abaw2022")[2:] == [
        ("abaw2020", "0.67 F1 + 0.33 acc"),
        ("criterion", "criterion (abaw2022)"),
    ]
    with pytest.raises(ValueError, match="challenge must be one of abaw2020, abaw2022"):
        summary_rows("abaw2019")
