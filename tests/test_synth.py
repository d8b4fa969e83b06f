"""Sample data: deterministic, in the real layouts, with every quirk, and what the readers find."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferlit.data.datamodule import class_weights_from_counts
from ferlit.data.readers.affwild2 import annotation_dir, frame_file, read_affwild2
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, read_expw
from ferlit.data.sample import (
    CLASS_FREQUENCIES,
    PAPER_CLASS_WEIGHTS,
    SampleData,
    default_sample_dir,
    ensure_sample_data,
    write_sample_data,
)
from ferlit.data.sample import write as sample_write
from ferlit.errors import ConfigError, DataError
from ferlit.expressions import EXPRESSIONS_7, EXPW_TO_ABAW

SCALE = 0.05  # 3 train and 2 val videos, 15 ExpW images: a few seconds to write


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleData:
    return write_sample_data(tmp_path_factory.mktemp("s") / "sample", scale=SCALE, progress=False)


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def video_labels(sample: SampleData, split: str) -> dict[str, list[int]]:
    folder = annotation_dir(sample.affwild2_dir, "abaw2020", split)
    labels = {}
    for path in sorted(folder.glob("*.txt")):
        header, *lines = path.read_text().splitlines()
        assert header == ",".join(EXPRESSIONS_7)
        labels[path.stem] = [int(line) for line in lines]
    return labels


def has_image(sample: SampleData, video: str, frame: int) -> bool:
    return (sample.affwild2_dir / "cropped_aligned" / video / frame_file(frame)).is_file()


def test_same_seed_same_bytes_through_ensure(sample: SampleData, tmp_path: Path) -> None:
    again = ensure_sample_data(tmp_path / "again", seed=0, scale=SCALE, progress=False)
    assert digests(again.root) == digests(sample.root)
    assert len(digests(sample.root)) > 700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folder left


def test_other_seed_other_data(sample: SampleData, tmp_path: Path) -> None:
    other = write_sample_data(tmp_path / "seed1", seed=1, scale=SCALE, progress=False)
    ours, theirs = digests(sample.root), digests(other.root)
    assert ours["expw/label/label.lst"] != theirs["expw/label/label.lst"]
    assert ours.keys() != theirs.keys()  # other video names and lengths
    assert other.manifest["seed"] == 1


def test_affwild2_layout_and_quirks(sample: SampleData) -> None:
    train, val = video_labels(sample, "train"), video_labels(sample, "val")
    assert (len(train), len(val)) == (3, 2)
    assert not train.keys() & val.keys()  # whole videos per split
    pairs = [v[: -len("_left")] for v in train if v.endswith("_left")]
    assert len(pairs) == 1 and f"{pairs[0]}_right" in train
    assert len(train[f"{pairs[0]}_left"]) == len(train[f"{pairs[0]}_right"])
    for split, videos in (("train", train), ("val", val)):
        unannotated = no_image = 0
        kept: Counter[int] = Counter()
        for video, labels in videos.items():
            assert 120 <= len(labels) <= 180
            for frame, label in enumerate(labels, 1):
                if label == -1:
                    unannotated += 1
                    assert has_image(sample, video, frame)
                elif has_image(sample, video, frame):
                    kept[label] += 1
                else:
                    no_image += 1
        assert unannotated > 0 and no_image > 0, split
        assert sorted(kept) == list(range(7)), f"{split} lacks a class"
        entry = sample.manifest["affwild2"][split]
        assert entry["skipped"]["unannotated"] == unannotated
        assert entry["skipped"]["no_image"] == no_image
        assert list(entry["class_counts"].values()) == [kept[c] for c in range(7)]
    first = next(iter(train))
    with Image.open(sample.affwild2_dir / "cropped_aligned" / first / frame_file(1)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (112, 112))


def test_expressions_come_in_runs() -> None:
    """Like real video: few label changes per video, so temporal smoothing has runs to find."""
    rng = np.random.default_rng(0)
    videos = sample_write._split_labels(rng, [150] * 24)
    flat = np.concatenate(videos)
    annotated = flat[flat >= 0]
    assert len(flat) == 3600 and len(annotated) < 3600
    changes = sum(int(np.count_nonzero(np.diff(v))) for v in videos)
    assert len(flat) / (changes + len(videos)) > 8  # mean run length in frames


def test_class_frequencies_follow_the_paper() -> None:
    """Weights count(Neutral)/count(c) of a large quota are the paper's (Cafarelli et al.)."""
    counts = sample_write._quota(1_000_000, 12)
    assert counts.sum() == 1_000_000
    assert class_weights_from_counts(counts) == pytest.approx(PAPER_CLASS_WEIGHTS, rel=1e-3)
    assert CLASS_FREQUENCIES.round(4).tolist() == [
        0.6155,
        0.0269,
        0.0164,
        0.0121,
        0.1774,
        0.1063,
        0.0454,
    ]
    assert sample_write._quota(300, 12).tolist()[1:] == [12, 12, 12, 53, 32, 14]


def test_expw_layout_and_quirks(sample: SampleData) -> None:
    lines = (sample.expw_dir / LABEL_FILE).read_text().splitlines()
    repeated = [line for line, n in Counter(lines).items() if n > 1]
    assert len(repeated) == 1 and len(lines) == len(set(lines)) + 1
    faces = [line.split() for line in dict.fromkeys(lines)]
    per_image = Counter(face[0] for face in faces)
    assert len(per_image) == 15 and max(per_image.values()) >= 3
    assert sum(n >= 2 for n in per_image.values()) >= 5
    for name, count in per_image.items():
        boxes = [tuple(map(int, f[2:6])) for f in faces if f[0] == name]
        assert sorted(int(f[1]) for f in faces if f[0] == name) == list(range(count))
        with Image.open(sample.expw_dir / IMAGES_DIR / name) as image:
            width, height = image.size
            assert image.format == "JPEG" and width >= 320
        for top, left, right, bottom in boxes:
            assert 0 <= top < bottom <= height and 0 <= left < right <= width
            assert bottom - top >= 56
        for i, a in enumerate(boxes):  # faces do not overlap (boxes may, by their jitter)
            for b in boxes[i + 1 :]:
                overlap_h = min(a[3], b[3]) - max(a[0], b[0])
                overlap_w = min(a[2], b[2]) - max(a[1], b[1])
                assert min(overlap_h, overlap_w) <= 16
    counts = Counter(EXPW_TO_ABAW[int(f[7])] for f in faces)
    assert list(sample.manifest["expw"]["class_counts"].values()) == [counts[c] for c in range(7)]


def test_readers_find_what_the_manifest_says(sample: SampleData) -> None:
    for split in ("train", "val"):
        index = read_affwild2(sample.affwild2_dir, split, progress=False)
        entry = sample.manifest["affwild2"][split]
        assert len(index) == entry["samples"]
        assert index.class_counts().tolist() == list(entry["class_counts"].values())
        # the frames skipped by reason, and no video without any image (a count of videos)
        assert index.skipped == {**entry["skipped"], "no_image_videos": 0}
        assert (index.class_counts() > 0).all()
    expw = read_expw(sample.expw_dir, progress=False)
    entry = sample.manifest["expw"]
    assert len(expw) == entry["samples"]
    assert expw.class_counts().tolist() == list(entry["class_counts"].values())
    assert expw.skipped == entry["skipped"] and expw.skipped["duplicate"] == 1
    confident = read_expw(sample.expw_dir, min_confidence=50.0, progress=False)
    below = confident.skipped["low_confidence"]
    assert entry["low_confidence"] == {"threshold": 50.0, "below": below} and below > 0
    assert len(confident) == len(expw) - entry["low_confidence"]["below"]


def test_manifest_on_disk(sample: SampleData) -> None:
    manifest = json.loads((sample.root / "manifest.json").read_text())
    assert manifest == sample.manifest == SampleData.open(sample.root).manifest
    assert (manifest["version"], manifest["seed"], manifest["scale"]) == ("sample-v1", 0, SCALE)
    assert manifest["classes"] == list(EXPRESSIONS_7)


def test_ensure_reuses_a_complete_copy(sample: SampleData) -> None:
    before = (sample.root / "manifest.json").stat().st_mtime_ns
    again = ensure_sample_data(sample.root, seed=0, scale=SCALE)
    assert again.manifest == sample.manifest
    assert (sample.root / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(DataError, match=r"manifest.json: sample data of seed 0 and scale 0.05, "):
        ensure_sample_data(sample.root, seed=0, scale=1.0)


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(root: Path, *args: object) -> None:
        (root / "cropped_aligned").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_write, "_write_affwild2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_sample_data(tmp_path / "sample", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"sample: exists but holds no manifest.json, so it is not"):
        ensure_sample_data(tmp_path / "sample")


def test_write_refuses_bad_options(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match=r": exists and is not an empty folder"):
        write_sample_data(tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"scale must be a positive number, got 0.0"):
        write_sample_data(tmp_path / "new", scale=0.0)
    with pytest.raises(ConfigError) as error:  # numpy asked for 238 GiB: a raw MemoryError
        write_sample_data(tmp_path / "new", scale=1e9)
    assert str(error.value) == (
        "scale 1e+09 is more than 1000 (about 32,000 videos and 300,000 images, more than the "
        "real data sets); expected a sample"
    )
    assert not (tmp_path / "new").exists()


def test_default_sample_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FERLIT_SAMPLE_DIR", str(tmp_path / "here"))
    assert default_sample_dir() == tmp_path / "here"
    monkeypatch.delenv("FERLIT_SAMPLE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_sample_dir() == tmp_path / ".cache" / "ferlit" / "sample-v1"
