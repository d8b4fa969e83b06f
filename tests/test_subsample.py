"""Training-set subsampling keeps exactly the expected frames."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.index import FRAME_FOLDER, FrameIndex
from ferlit.data.readers.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, read_expw, write_label_list
from ferlit.data.subsample import cap_class_share, every_kth_frame, subsample
from ferlit.errors import ConfigError


def add_video(root, name, labels, frames_with_image, split="train"):
    write_annotation_file(annotation_dir(root, "abaw2020", split) / f"{name}.txt", labels)
    folder = root / "cropped_aligned" / name
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames_with_image:
        (folder / f"{frame:05d}.jpg").touch()


@pytest.fixture
def data(tmp_path):
    """Video a: 10 frames, frame 3 unannotated, frame 5 without a face crop, so its indexed frames
    are 1 2 4 6 7 8 9 10. Video b: frames 1-4. ExpW: three faces in two 64x64 images (indexing
    reads their sizes from the JPEG headers); the Aff-Wild2 frames are empty files, which
    indexing only lists."""
    affwild2 = tmp_path / "affwild2"
    add_video(affwild2, "a", [0, 1, -1, 2, 3, 4, 5, 6, 0, 1], [1, 2, 3, 4, 6, 7, 8, 9, 10])
    add_video(affwild2, "b", [4, 4, 4, 4], [1, 2, 3, 4])
    add_video(affwild2, "v", [0, 1], [1, 2], split="val")
    expw = tmp_path / "expw"
    (expw / IMAGES_DIR).mkdir(parents=True)
    for name in ("x.jpg", "y.jpg"):
        cv2.imwrite(str(expw / IMAGES_DIR / name), np.zeros((64, 64, 3), np.uint8))
    write_label_list(
        expw / LABEL_FILE,
        [
            ExpWFace("x.jpg", 0, 0, 0, 20, 20, 90.0, 3),
            ExpWFace("x.jpg", 1, 0, 30, 50, 20, 90.0, 3),
            ExpWFace("y.jpg", 0, 0, 0, 20, 20, 90.0, 6),
        ],
    )
    return affwild2, expw


def kept(index: FrameIndex, rows: np.ndarray) -> list[tuple[str, int]]:
    return [(index.group_name(int(r)), int(index.frames[r])) for r in rows]


def test_every_kth_frame_of_each_video(data):
    affwild2, expw = data
    index = FrameIndex.concat([read_affwild2(affwild2, "train"), read_expw(expw)])

    rows = every_kth_frame(index, 3)

    # a's 1st, 4th, 7th indexed frames are 1, 6, 9; b keeps 1 and 4; ExpW faces all stay.
    assert kept(index, rows) == [
        ("a", 1),
        ("a", 6),
        ("a", 9),
        ("b", 1),
        ("b", 4),
        ("x.jpg", 0),
        ("x.jpg", 1),
        ("y.jpg", 0),
    ]
    assert kept(index, every_kth_frame(index, 4))[:4] == [
        ("a", 1),
        ("a", 7),
        ("b", 1),
        ("x.jpg", 0),
    ]
    assert every_kth_frame(index, 1).tolist() == list(range(len(index)))


def test_every_kth_frame_counts_by_frame_number_not_index_order():
    # The same video's samples in a shuffled order: selection follows frame numbers.
    frames = np.array([5, 1, 4, 2, 3, 6])
    index = FrameIndex.build("", 7, ["cropped_aligned/v"], [FRAME_FOLDER], ["v.txt"],
                             np.zeros(6), np.zeros(6), frames, frames + 1)  # fmt: skip
    rows = every_kth_frame(index, 2)
    assert sorted(index.frames[rows].tolist()) == [1, 3, 5]
    assert rows.tolist() == [0, 1, 4]


def flat_index(labels) -> FrameIndex:
    n = len(labels)
    return FrameIndex.build(
        "", 7, ["cropped_aligned/v"], [FRAME_FOLDER], ["v.txt"],
        np.asarray(labels), np.zeros(n), np.arange(1, n + 1), np.arange(2, n + 2),
    )  # fmt: skip


def test_class_share_cap_keeps_evenly_spaced_samples():
    # Neutral 60, Happiness 30, Sadness 10.
    labels = np.r_[np.zeros(60), np.full(30, 4), np.full(10, 5)].astype(int)
    index = flat_index(labels)

    half = cap_class_share(index, 0.5)  # Neutral capped at 40 = half of 40 + 30 + 10
    assert np.bincount(labels[half], minlength=7).tolist() == [40, 0, 0, 0, 30, 10, 0]
    assert half[:40].tolist() == [k * 60 // 40 for k in range(40)]  # 0, 1, 3, 4, 6, ...

    # 0.4: capping Neutral alone cannot do (26 of 66 < 30 Happiness); both go to 20 of 50.
    rows = cap_class_share(index, 0.4)
    assert np.bincount(labels[rows], minlength=7).tolist() == [20, 0, 0, 0, 20, 10, 0]
    assert rows[:20].tolist() == list(range(0, 60, 3))
    assert rows[20:40].tolist() == [60 + k * 30 // 20 for k in range(20)]
    assert rows[40:].tolist() == list(range(90, 100))

    assert cap_class_share(index, 0.6).tolist() == list(range(100))  # already within the cap


def test_class_share_cap_below_one_over_classes_is_refused():
    index = flat_index([0, 0, 4, 5])
    with pytest.raises(ConfigError, match=r"max_class_share 0.3 is below 1/3: with 3 classes"):
        cap_class_share(index, 0.3)
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\], got 0"):
        cap_class_share(index, 0)


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 300), min_size=1, max_size=7).filter(lambda c: sum(c) > 0),
    denominator=st.integers(1, 100),
    data=st.data(),
)
def test_class_share_cap_is_exact_and_as_large_as_allowed(counts, denominator, data):
    present = sum(c > 0 for c in counts)
    lowest = -(-denominator // present)  # the smallest numerator with a share >= 1 / present
    share = Fraction(data.draw(st.integers(lowest, denominator)), denominator)
    labels = np.repeat(np.arange(len(counts)), counts)
    rows = cap_class_share(flat_index(labels), float(share))

    after = np.bincount(labels[rows], minlength=len(counts))
    total = int(after.sum())
    assert all(Fraction(int(a), total) <= share for a in after)
    capped = [c for c, (a, b) in enumerate(zip(after, counts, strict=True)) if a < b]
    if capped:
        cap = int(after[capped[0]])
        assert all(after[c] == cap for c in capped)
        # one more sample per capped class would break the cap
        assert Fraction(cap + 1, total + len(capped)) > share
    assert len(set(rows.tolist())) == len(rows) and (np.diff(rows) > 0).all()


def test_subsample_applies_the_frame_step_before_the_cap(data):
    affwild2, _ = data
    index = read_affwild2(affwild2, "train")
    # Every 2nd frame: a -> 1 4 7 9 (Neutral, Disgust, Sadness, Neutral), b -> 1 3 (Happiness
    # twice). Capped at a quarter, Neutral and Happiness keep 1 each: the first of their 2.
    rows = subsample(index, frame_step=2, max_class_share=0.25)
    assert kept(index, rows) == [("a", 1), ("a", 4), ("a", 7), ("b", 1)]
    assert index.labels[rows].tolist() == [0, 2, 5, 4]
    assert kept(index, subsample(index, frame_step=2)) == [
        ("a", 1), ("a", 4), ("a", 7), ("a", 9), ("b", 1), ("b", 3),
    ]  # fmt: skip


def test_datamodule_trains_on_the_subsample_and_validates_on_everything(data, tmp_path):
    affwild2, expw = data
    dm = ExpressionDataModule(
        affwild2_dir=str(affwild2),
        expw_dir=str(expw),
        frame_step=3,
        index_cache_dir=str(tmp_path / "cache"),
        batch_size=2,
        num_workers=0,
    )
    assert [(dm.train_index.group_name(i), int(dm.train_index.frames[i])) for i in range(8)] == [
        ("a", 1), ("a", 6), ("a", 9), ("b", 1), ("b", 4), ("x.jpg", 0), ("x.jpg", 1), ("y.jpg", 0),
    ]  # fmt: skip
    assert dm.class_counts == [3, 0, 0, 0, 5, 0, 0]
    assert len(dm.val_index) == 2


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("frame_step", 0, r"data.frame_step must be an integer >= 1, got 0"),
        ("max_class_share", 1.5, r"data.max_class_share must be in \(0, 1\], got 1.5"),
    ],
)
def test_bad_subsampling_options(option, value, message):
    with pytest.raises(ConfigError, match=message):
        ExpressionDataModule(**{option: value})
