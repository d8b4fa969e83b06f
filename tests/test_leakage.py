"""Leakage and silent shrinkage: a video in both splits, a cache reached through a link into the
data, and packs whose images changed after packing (issue 13)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from ferlit.data.cache import cached_index
from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.readers.affwild2 import AffWild2Reader, annotation_dir, write_annotation_file
from ferlit.data.stats import dataset_stats
from ferlit.errors import ConfigError, DataError, DataWarning


def add_video(root, name, labels, split="train"):
    """An annotation file and a 16x16 image for every frame of it."""
    import cv2

    write_annotation_file(annotation_dir(root, "abaw2020", split) / f"{name}.txt", labels)
    folder = root / "cropped_aligned" / name
    folder.mkdir(parents=True, exist_ok=True)
    for frame in range(1, len(labels) + 1):
        image = np.full((16, 16, 3), 40 * frame % 256, np.uint8)
        cv2.imwrite(str(folder / f"{frame:05d}.jpg"), image)


@pytest.fixture
def overlapping(tmp_path):
    """Aff-Wild2 with video 'shared' annotated in both Training_Set and Validation_Set."""
    root = tmp_path / "affwild2"
    add_video(root, "train_only", [0, 1, 2])
    add_video(root, "shared", [3, 4])
    add_video(root, "shared", [3, 4], split="val")
    add_video(root, "val_only", [5, 6], split="val")
    return root


def test_a_video_in_both_splits_stops_setup_naming_it_and_both_files(overlapping):
    dm = ExpressionDataModule(affwild2_dir=str(overlapping), index_cache=False, num_workers=0)
    train = annotation_dir(overlapping, "abaw2020", "train") / "shared.txt"
    val = annotation_dir(overlapping, "abaw2020", "val") / "shared.txt"
    with pytest.raises(
        DataError,
        match=re.escape(
            "1 Aff-Wild2 video is in both the train and the val split, so trained and validated "
            f"on: shared ({train} and {val}). Keep each video in one split, or set "
            "data.allow_split_overlap true"
        ),
    ):
        dm.setup("fit")


def test_allow_split_overlap_trains_with_a_warning(overlapping):
    dm = ExpressionDataModule(
        affwild2_dir=str(overlapping),
        index_cache=False,
        num_workers=0,
        batch_size=2,  # setup also refuses a training set smaller than one optimizer step
        allow_split_overlap=True,
    )
    with pytest.warns(DataWarning, match=r"video is in both .*: shared .*allow_split_overlap is"):
        dm.setup("fit")
    assert len(dm.train_index) == 5 and len(dm.val_index) == 4


def test_disjoint_splits_give_no_warning(tmp_path):
    root = tmp_path / "affwild2"
    add_video(root, "a", [0, 1])
    add_video(root, "b", [2], split="val")
    dm = ExpressionDataModule(
        affwild2_dir=str(root), index_cache=False, num_workers=0, batch_size=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        dm.setup("fit")
    assert dataset_stats(root, progress=False)["videos_in_both_splits"] == []


def test_stats_report_the_videos_in_both_splits(overlapping):
    with pytest.warns(DataWarning, match=r"in both .*: shared .*training stops on this unless"):
        stats = dataset_stats(overlapping, progress=False)
    train = annotation_dir(overlapping, "abaw2020", "train") / "shared.txt"
    val = annotation_dir(overlapping, "abaw2020", "val") / "shared.txt"
    assert stats["videos_in_both_splits"] == [
        {"video": "shared", "train": str(train), "val": str(val)}
    ]


def test_a_cache_reached_through_a_link_into_the_data_is_refused(tmp_path, overlapping):
    (tmp_path / "cache-link").symlink_to(overlapping / "annotations")  # cache inside the data
    with pytest.raises(ConfigError, match=r"cache-link/index is inside the data folder .*affwild2"):
        cached_index(
            AffWild2Reader(overlapping),
            "train",
            progress=False,
            cache_dir=tmp_path / "cache-link" / "index",
        )
    # the other way round: the data reached through a link, the cache inside its real folder
    (tmp_path / "data-link").symlink_to(overlapping)
    with pytest.raises(ConfigError, match=r"is inside the data folder .*data-link; ferlit writes"):
        cached_index(
            AffWild2Reader(tmp_path / "data-link"),
            "train",
            progress=False,
            cache_dir=overlapping / ".cache",
        )
    assert not (overlapping / "annotations" / "index").exists()


# -- packs whose images changed after packing ------------------------------------------------


@pytest.fixture
def small_data(tmp_path):
    """Aff-Wild2 (two train videos, one val) and ExpW (two images) with 16x16 and 32x32 faces."""
    import cv2

    from ferlit.data.readers.expw import ExpWFace, write_label_list

    affwild2 = tmp_path / "affwild2"
    add_video(affwild2, "a", [0, 1, 2])
    add_video(affwild2, "b", [3, 4])
    add_video(affwild2, "c", [5, 6], split="val")
    expw = tmp_path / "expw"
    (expw / "image/origin").mkdir(parents=True)
    for name, grey in (("x.jpg", 60), ("y.jpg", 180)):
        cv2.imwrite(str(expw / "image/origin" / name), np.full((32, 32, 3), grey, np.uint8))
    write_label_list(
        expw / "label/label.lst",
        [ExpWFace("x.jpg", 0, 0, 0, 16, 16, 0.9, 3), ExpWFace("y.jpg", 0, 8, 8, 24, 24, 0.9, 0)],
    )
    return affwild2, expw


def pack_it(out, affwild2, expw):
    from ferlit.data.pack import pack

    return pack(
        out, affwild2, expw, size=16, workers=0, progress=False, index_cache=False, chunk_size=2
    )


def replace_image(path, grey, size=16):
    """Write another image over ``path`` and move its time on, as a re-crop would."""
    import os

    import cv2

    before = os.stat(path).st_mtime_ns
    cv2.imwrite(str(path), np.full((size, size, 3), grey, np.uint8))
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_packing_again_after_a_frame_was_replaced_is_refused_naming_it(tmp_path, small_data):
    affwild2, expw = small_data
    first = pack_it(tmp_path / "pack", affwild2, expw)
    assert pack_it(tmp_path / "pack", affwild2, expw).manifest == first.manifest  # unchanged

    frame = affwild2 / "cropped_aligned" / "b" / "00002.jpg"
    replace_image(frame, 250, size=24)
    with pytest.raises(
        DataError,
        match=rf"pack: images of its affwild2_train changed since they were packed \("
        rf"{re.escape(str(frame))} was replaced \(its size or time changed\)\); its faces are "
        r"the old ones\. Delete .*pack and pack again, or pack into another --out",
    ):
        pack_it(tmp_path / "pack", affwild2, expw)
    fresh = pack_it(tmp_path / "fresh", affwild2, expw)  # another --out packs the new image
    assert fresh.frames("affwild2_train")[4].min() > 240


def test_packing_again_after_an_expw_image_changed_is_refused_naming_it(tmp_path, small_data):
    affwild2, expw = small_data
    pack_it(tmp_path / "pack", affwild2, expw)
    image = expw / "image/origin" / "y.jpg"
    replace_image(image, 20, size=32)  # same size in pixels, a re-download
    with pytest.raises(
        DataError, match=rf"images of its expw changed .*\({re.escape(str(image))} "
    ):
        pack_it(tmp_path / "pack", affwild2, expw)
    image.unlink()
    with pytest.raises(DataError, match=r"image/origin/y\.jpg does not exist"):  # the reader
        pack_it(tmp_path / "pack", affwild2, expw)


def test_a_datamodule_warns_on_a_pack_whose_data_changed(tmp_path, small_data):
    import os

    affwild2, expw = small_data
    out = pack_it(tmp_path / "pack", affwild2, expw)

    def open_pack():
        dm = ExpressionDataModule(packed_dir=str(out.root), image_size=16, num_workers=0)
        return dm.train_index

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(open_pack()) == 7  # unchanged: no warning

    replace_image(expw / "image/origin" / "x.jpg", 200, size=32)
    with pytest.warns(
        DataWarning, match=r"its expw changed since .*x\.jpg was replaced.*pack again"
    ):
        open_pack()
    replace_image(expw / "image/origin" / "x.jpg", 60, size=32)  # time moved on: still changed
    (tmp_path / "pack" / "expw" / "sources.npz").unlink()  # as a pack from before the check
    folder = affwild2 / "cropped_aligned" / "a"
    (folder / "00002.jpg").unlink()  # a frame removed: the video folder's time changes
    os.utime(folder, ns=(1, 1))
    with pytest.warns(DataWarning, match=rf"affwild2_train changed .*\({re.escape(str(folder))} "):
        open_pack()


def test_resuming_a_pack_whose_images_changed_is_refused(tmp_path, small_data, monkeypatch):
    import ferlit.data.pack as packed

    affwild2, expw = small_data

    class Interrupt(Exception):
        pass

    def interrupt(partial, done):
        raise Interrupt

    monkeypatch.setattr(packed, "_mark_done", interrupt)
    with pytest.raises(Interrupt):
        pack_it(tmp_path / "pack", affwild2, expw)
    monkeypatch.undo()
    frame = affwild2 / "cropped_aligned" / "a" / "00001.jpg"
    replace_image(frame, 90)
    with pytest.raises(
        DataError, match=rf"pack\.partial: images of its affwild2_train changed .*{frame.name}"
    ):
        pack_it(tmp_path / "pack", affwild2, expw)


def test_the_stats_command_warns_of_videos_in_both_splits(overlapping):
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferlit.data",
            "stats",
            "--data.affwild2_dir",
            str(overlapping),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    train = annotation_dir(overlapping, "abaw2020", "train") / "shared.txt"
    val = annotation_dir(overlapping, "abaw2020", "val") / "shared.txt"
    assert done.stderr == (
        "warning: 1 Aff-Wild2 video is in both the train and the val split, so trained and "
        f"validated on: shared ({train} and {val}); training stops on this unless "
        "data.allow_split_overlap is true\n"
    )
    assert '"video": "shared"' in done.stdout


def test_a_video_in_both_splits_of_a_pack_stops_setup_too(tmp_path, overlapping):
    from ferlit.data.pack import pack

    out = pack(
        tmp_path / "pack", overlapping, size=16, workers=0, progress=False, index_cache=False
    )
    dm = ExpressionDataModule(packed_dir=str(out.root), image_size=16, num_workers=0)
    with pytest.raises(
        DataError, match=r"^1 Aff-Wild2 video is in both .*: shared \(.*Training_Set"
    ):
        dm.setup("fit")


def test_a_pack_away_from_its_data_is_read_without_the_check(tmp_path, small_data):
    import json
    import shutil

    affwild2, expw = small_data
    out = pack_it(tmp_path / "pack", affwild2, expw)
    replace_image(expw / "image/origin" / "x.jpg", 200, size=32)
    shutil.move(expw, tmp_path / "elsewhere")  # the pack copied to a machine without the data
    shutil.move(affwild2, tmp_path / "elsewhere-affwild2")
    dm = ExpressionDataModule(packed_dir=str(out.root), image_size=16, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(dm.train_index) == 7

    manifest = json.loads((out.root / "manifest.json").read_text())
    manifest["sources"] = "edited by hand"
    (out.root / "manifest.json").write_text(json.dumps(manifest))
    dm = ExpressionDataModule(packed_dir=str(out.root), image_size=16, num_workers=0)
    assert len(dm.train_index) == 7


def test_fit_stops_on_a_video_in_both_splits_before_training(tmp_path, overlapping, capsys):
    from types import SimpleNamespace

    from test_fit import fit_args

    from ferlit.training.cli import main

    dirs = SimpleNamespace(affwild2_dir=overlapping, expw_dir=None)
    args = fit_args(dirs, tmp_path, "--trainer.max_steps", "1")[4:]  # without the data dirs
    args += ["--data.affwild2_dir", str(overlapping), "--data.index_cache", "false"]
    args += ["--data.class_weighting", "none"]  # its 5 frames miss two classes
    with pytest.raises(SystemExit) as exit_code:
        main(args)
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert "error: 1 Aff-Wild2 video is in both the train and the val split" in err
    assert "or set data.allow_split_overlap true" in err
    assert not list(tmp_path.rglob("*.ckpt"))

    cli = main([*args, "--data.allow_split_overlap", "true"], run=False)
    assert cli.datamodule.hparams.allow_split_overlap is True
