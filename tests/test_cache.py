"""The index cache: a second start loads the saved index; any change to what it was built from
rebuilds it."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

import ferlit.data.readers.affwild2 as affwild2_reader
import ferlit.data.readers.expw as expw_reader
from ferlit.data.cache import (
    cache_file,
    cached_index,
    default_cache_dir,
    entry_key,
)
from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.index import FrameIndex
from ferlit.data.readers.affwild2 import (
    NEW_FRAMES_DIR,
    AffWild2Reader,
    annotation_dir,
    read_affwild2,
    write_annotation_file,
)
from ferlit.data.readers.expw import (
    IMAGES_DIR,
    LABEL_FILE,
    ExpWFace,
    ExpWReader,
    read_expw,
    write_label_list,
)
from ferlit.errors import ConfigError, DataError, DataWarning


def add_video(root, name, labels, frames_with_image, split="train"):
    """A video's annotation file and (empty) frame files: the reader only lists their names."""
    path = annotation_dir(root, "abaw2020", split) / f"{name}.txt"
    write_annotation_file(path, labels)
    folder = root / "cropped_aligned" / name
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames_with_image:
        (folder / f"{frame:05d}.jpg").touch()
    return path


@pytest.fixture
def affwild2(tmp_path):
    root = tmp_path / "affwild2"
    add_video(root, "a", [0, 4, -1, 5], [1, 2, 3, 4])
    add_video(root, "b", [6, 6, 1], [1, 3])
    add_video(root, "c", [2, 2], [1, 2], split="val")
    return root


@pytest.fixture
def expw(tmp_path):
    root = tmp_path / "expw"
    (root / IMAGES_DIR).mkdir(parents=True)
    for name in ("x.jpg", "y.jpg"):  # the reader reads each image's size from its header
        Image.new("RGB", (100, 100)).save(root / IMAGES_DIR / name)
    faces = [
        ExpWFace("x.jpg", 0, 10, 10, 50, 50, 80.0, 3),
        ExpWFace("x.jpg", 1, 60, 60, 90, 90, 30.0, 6),
        ExpWFace("y.jpg", 0, 0, 0, 40, 40, 90.0, 0),
    ]
    write_label_list(root / LABEL_FILE, faces)
    return root


def same(a, b) -> bool:
    names = ("labels", "groups", "frames", "boxes", "lines", "group_names", "group_sources")
    names += ("group_sizes",)
    return (
        a.roots == b.roots
        and a.skipped == b.skipped
        and all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names)
    )


def no_rebuild(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the index was rebuilt instead of loaded from the cache")

    monkeypatch.setattr(affwild2_reader, "read_affwild2", fail)
    monkeypatch.setattr(expw_reader, "read_expw", fail)


def later(path, seconds=5):
    """Move a file's times forward, as an edit made seconds after the index was built would."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_second_read_is_a_cache_hit_equal_to_the_reader(affwild2, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert same(first, read_affwild2(affwild2, "train", progress=False))
    assert [p.name.split("-")[0] for p in cache_dir.iterdir()] == ["affwild2"]

    no_rebuild(monkeypatch)
    again = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert same(again, first)
    assert again.frames.tolist() == [1, 2, 4, 1, 3]
    assert again.labels.tolist() == [0, 4, 5, 6, 1]
    assert again.skipped["unannotated"] == 1 and again.skipped["no_image"] == 1


def test_hit_keeps_the_root_as_spelled(affwild2, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    no_rebuild(monkeypatch)
    monkeypatch.chdir(tmp_path)
    relative = cached_index(
        AffWild2Reader("affwild2"), "train", cache_dir=cache_dir, progress=False
    )
    assert relative.roots == ("affwild2",)
    assert relative.image_path(0) == os.path.join("affwild2", "cropped_aligned/a", "00001.jpg")


def test_each_split_and_option_has_its_own_entry(affwild2, tmp_path):
    cache_dir = tmp_path / "cache"
    train = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    val = cached_index(AffWild2Reader(affwild2), "val", cache_dir=cache_dir, progress=False)
    eight = cached_index(AffWild2Reader(affwild2, 8), "train", cache_dir=cache_dir, progress=False)
    assert (len(train), len(val), eight.num_classes) == (5, 2, 8)
    assert len(list(cache_dir.iterdir())) == 3


def test_changed_annotation_file_rebuilds(affwild2, tmp_path):
    cache_dir = tmp_path / "cache"
    before = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    path = annotation_dir(affwild2, "abaw2020", "train") / "a.txt"
    write_annotation_file(path, [0, 4, -1, 3])  # same size, one label changed
    later(path)

    after = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert before.labels.tolist() == [0, 4, 5, 6, 1]
    assert after.labels.tolist() == [0, 4, 3, 6, 1]
    assert len(list(cache_dir.iterdir())) == 1  # the stale entry is replaced, not kept


def test_longer_annotation_file_rebuilds(affwild2, tmp_path):
    cache_dir = tmp_path / "cache"
    cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    add_video(affwild2, "b", [6, 6, 1, 2], [1, 3, 4])
    after = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert after.frames.tolist() == [1, 2, 4, 1, 3, 4]


def test_new_annotation_file_and_new_frame_image_rebuild(affwild2, tmp_path):
    cache_dir = tmp_path / "cache"
    cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    add_video(affwild2, "d", [3], [1])
    assert (
        len(cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False))
        == 6
    )

    (affwild2 / "cropped_aligned/b/00002.jpg").touch()  # b's frame 2 now has a face crop
    later(affwild2 / "cropped_aligned/b")
    after = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert after.frames.tolist() == [1, 2, 4, 1, 2, 3, 1]


def test_expw_hit_and_invalidation(expw, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = cached_index(
        ExpWReader(expw, min_confidence=50.0), "train", cache_dir=cache_dir, progress=False
    )
    assert same(first, read_expw(expw, min_confidence=50.0, progress=False))
    assert first.skipped["low_confidence"] == 1

    with monkeypatch.context() as m:
        no_rebuild(m)
        assert same(
            cached_index(ExpWReader(expw, min_confidence=50.0), "train", cache_dir=cache_dir), first
        )

    faces = [ExpWFace("y.jpg", 0, 0, 0, 40, 40, 90.0, 5)]
    write_label_list(expw / LABEL_FILE, faces)
    after = cached_index(
        ExpWReader(expw, min_confidence=50.0), "train", cache_dir=cache_dir, progress=False
    )
    assert after.labels.tolist() == [6]  # ExpW 5 surprise is ABAW 6


def test_unreadable_entry_is_rebuilt(affwild2, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    first = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="ferlit.data.cache"):
        again = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert same(again, first)
    assert f"{entry} is unreadable" in caplog.text
    assert len(FrameIndex.load(entry)) == 5  # and written again


def test_cache_inside_the_data_folder_is_refused(affwild2):
    with pytest.raises(ConfigError, match=r"is inside the data folder .*affwild2; ferlit writes"):
        cached_index(
            AffWild2Reader(affwild2), "train", cache_dir=affwild2 / ".cache", progress=False
        )


def test_missing_data_raises_the_readers_error(tmp_path):
    root = tmp_path / "affwild2"
    (root / "cropped_aligned").mkdir(parents=True)
    (root / "annotations/EXPR_Set").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Training_Set: missing; expected the train annotations"):
        cached_index(AffWild2Reader(root), "train", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FERLIT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FERLIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "ferlit" / "index"


def test_entry_name_is_stable_for_the_same_state(affwild2):
    key = entry_key(AffWild2Reader(affwild2), "train")
    assert key["options"] == {"split": "train", "num_classes": 7, "layout": "abaw2020"}
    assert [f[0] for f in key["annotations"]] == ["a.txt", "b.txt"]
    assert cache_file("/c", key) == cache_file("/c", entry_key(AffWild2Reader(affwild2), "train"))


def test_datamodule_uses_the_cache(affwild2, expw, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    options = dict(affwild2_dir=str(affwild2), expw_dir=str(expw), index_cache_dir=str(cache_dir))
    first = ExpressionDataModule(**options)
    counts = first.class_counts
    assert len(first.val_index) == 2
    assert len(list(cache_dir.iterdir())) == 3  # Aff-Wild2 train and val, ExpW

    no_rebuild(monkeypatch)
    second = ExpressionDataModule(**options)
    assert second.class_counts == counts == [2, 2, 0, 0, 2, 1, 1]
    assert len(second.val_index) == 2


def test_datamodule_without_the_cache_writes_nothing(affwild2, tmp_path, monkeypatch):
    monkeypatch.setenv("FERLIT_CACHE_DIR", str(tmp_path / "cache"))
    dm = ExpressionDataModule(affwild2_dir=str(affwild2), index_cache=False)
    assert len(dm.train_index) == 5
    assert not (tmp_path / "cache").exists()


def add_new_video(root, name, labels, frames_with_image, split="train"):
    """A video of ABAW 2023's 50 new ones: its frames in cropped_aligned_new_50_vids/."""
    write_annotation_file(annotation_dir(root, "abaw2020", split) / f"{name}.txt", labels)
    folder = root / NEW_FRAMES_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames_with_image:
        (folder / f"{frame:05d}.jpg").touch()


def test_a_frame_added_in_the_new_frame_folder_rebuilds(affwild2, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    add_new_video(affwild2, "n", [3, 2, 1], [1, 3])
    first = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert first.group_names.tolist()[-1] == "cropped_aligned_new_50_vids/n"
    assert first.frames.tolist() == [1, 2, 4, 1, 3, 1, 3]
    with monkeypatch.context() as m:
        no_rebuild(m)
        assert same(cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir), first)

    (affwild2 / NEW_FRAMES_DIR / "n/00002.jpg").touch()  # n's frame 2 now has a face crop
    later(affwild2 / NEW_FRAMES_DIR / "n")
    after = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert after.frames.tolist() == [1, 2, 4, 1, 3, 1, 2, 3]
    assert len(list(cache_dir.iterdir())) == 1


def test_a_video_moved_to_the_new_frame_folder_rebuilds(affwild2, tmp_path):
    cache_dir = tmp_path / "cache"
    cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    (affwild2 / NEW_FRAMES_DIR).mkdir()
    (affwild2 / "cropped_aligned/b").rename(affwild2 / NEW_FRAMES_DIR / "b")

    after = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert after.group_names.tolist() == ["cropped_aligned/a", "cropped_aligned_new_50_vids/b"]
    assert after.image_path(4) == str(affwild2 / NEW_FRAMES_DIR / "b/00003.jpg")


def test_a_video_without_images_warns_again_on_a_cache_hit(affwild2, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    add_video(affwild2, "e", [1, 1], [])
    with pytest.warns(DataWarning, match=r"Training_Set/e.txt: video e has annotated frames"):
        cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)

    no_rebuild(monkeypatch)
    with pytest.warns(DataWarning) as warned:
        index = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    assert index.skipped["no_image_videos"] == 1
    assert [str(w.message) for w in warned] == [
        f"{affwild2}: 1 video(s) of the Aff-Wild2 train split have annotated frames but no image "
        "of any of them (index from the cache; python -m ferlit.data stats --data.affwild2_dir "
        f"{affwild2} names them)"
    ]


def test_nested_frames_stop_the_cached_read_and_the_datamodule(tmp_path):
    root = tmp_path / "affwild2"
    for name, split in (("a", "train"), ("c", "val")):
        write_annotation_file(annotation_dir(root, "abaw2020", split) / f"{name}.txt", [0, 1])
        folder = root / "cropped_aligned/cropped_aligned" / name  # unpacked one level too deep
        folder.mkdir(parents=True)
        (folder / "00001.jpg").touch()
    cause = (
        "likely cause: cropped_aligned/ holds a cropped_aligned/ folder: nested one level too deep?"
    )

    with pytest.raises(DataError, match=re.escape(cause)):
        cached_index(AffWild2Reader(root), "train", cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()
    dm = ExpressionDataModule(affwild2_dir=str(root), index_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"the train split keeps no frame: .*" + re.escape(cause)):
        dm.class_weights  # noqa: B018 (fit links them into the model before anything else)

    (root / "cropped_aligned/cropped_aligned/a").rename(root / "cropped_aligned/a")  # train fixed
    dm = ExpressionDataModule(affwild2_dir=str(root), index_cache_dir=str(tmp_path / "cache"))
    assert dm.class_counts == [1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(DataError, match=r"the val split keeps no frame: .*" + re.escape(cause)):
        dm.setup("fit")  # before the first training step


def read_warning_free(affwild2, cache_dir):
    """The train index through the cache, and the DataWarnings it gave."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    return index, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_a_cache_folder_that_is_a_file_warns_once_and_goes_on(affwild2, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("the user's notes")
    index, said = read_warning_free(affwild2, blocker)
    assert same(index, read_affwild2(affwild2, "train", progress=False))
    assert said == [
        f"index cache folder {blocker}: cannot write to it (File exists); going on without the "
        "cache (set data.index_cache_dir or FERLIT_CACHE_DIR to a writable folder, or "
        "data.index_cache false)"
    ]
    assert read_warning_free(affwild2, blocker)[1] == []  # once a process, not once a split
    assert blocker.read_text() == "the user's notes"
    inside = blocker / "index"  # a cache folder below a file: its parent is the file
    assert read_warning_free(affwild2, inside)[1] == [
        said[0].replace(str(blocker), str(inside)).replace("File exists", "Not a directory")
    ]


def test_a_read_only_cache_folder_warns_and_goes_on(affwild2, tmp_path, monkeypatch):
    import ferlit.io

    def denied(*args, **kwargs):  # tests run as root, for whom chmod 0o555 denies nothing
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ferlit.io.tempfile, "mkstemp", denied)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    index, said = read_warning_free(affwild2, cache_dir)
    assert len(index) == 5
    assert said == [
        f"index cache folder {cache_dir}: cannot write to it (Permission denied); going on "
        "without the cache (set data.index_cache_dir or FERLIT_CACHE_DIR to a writable folder, "
        "or data.index_cache false)"
    ]
    assert list(cache_dir.iterdir()) == []


def test_a_full_disk_leaves_no_half_written_entry(affwild2, tmp_path, monkeypatch):
    import ferlit.data.index

    cache_dir = tmp_path / "cache"
    first = cached_index(AffWild2Reader(affwild2), "train", cache_dir=cache_dir, progress=False)
    (entry,) = cache_dir.iterdir()
    old = entry.read_bytes()
    later(annotation_dir(affwild2, "abaw2020", "train") / "a.txt")  # the entry must be rewritten

    def savez_then_full(file, **arrays):
        file.write(b"PK\x03\x04" + b"\0" * 1000)  # part of the new entry, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ferlit.data.index.np, "savez", savez_then_full)
    index, said = read_warning_free(affwild2, cache_dir)
    assert same(index, first)
    assert said == [
        f"index cache folder {cache_dir}: cannot write to it (No space left on device); going "
        "on without the cache (set data.index_cache_dir or FERLIT_CACHE_DIR to a writable "
        "folder, or data.index_cache false)"
    ]
    assert list(cache_dir.iterdir()) == [entry] and entry.read_bytes() == old  # no temporary


def test_a_cache_folder_that_is_a_file_warns_once_through_pack(tiny_sample, tmp_path, capsys):
    import warnings

    from ferlit.data.__main__ import main
    from ferlit.errors import data_warnings_as_lines

    blocker = tmp_path / "cache"
    blocker.write_text("")
    argv = ["pack", "--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--data.expw_dir"]
    argv += [str(tiny_sample.expw_dir), "--out", str(tmp_path / "pack"), "--data.image_size", "16"]
    argv += ["--workers", "0", "--data.index_cache_dir", str(blocker)]
    with warnings.catch_warnings(), data_warnings_as_lines():
        warnings.simplefilter("always")  # the once-only is ferlit's, not Python's registry
        assert main(argv) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "index cache folder" in line]
    assert warned == [  # three indexes (train, val, ExpW), one warning
        f"warning: index cache folder {blocker}: cannot write to it (File exists); going on "
        "without the cache (set data.index_cache_dir or FERLIT_CACHE_DIR to a writable folder, "
        "or data.index_cache false)"
    ]
    assert (tmp_path / "pack" / "manifest.json").is_file() and blocker.read_text() == ""


def test_ferlit_cache_dir_that_is_a_file_warns_for_expw_too(expw, tmp_path, monkeypatch):
    import warnings

    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv("FERLIT_CACHE_DIR", str(blocker))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = cached_index(ExpWReader(expw), "train", progress=False)
    assert same(index, read_expw(expw, progress=False))
    assert [str(w.message) for w in caught if issubclass(w.category, DataWarning)] == [
        f"index cache folder {blocker}: cannot write to it (File exists); going on without the "
        "cache (set data.index_cache_dir or FERLIT_CACHE_DIR to a writable folder, or "
        "data.index_cache false)"
    ]
    assert blocker.read_text() == ""
