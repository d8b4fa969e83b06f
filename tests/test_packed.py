"""Packing: packed batches equal JPEG batches bit for bit; an interrupted pack is detected and
resumed; a pack is only read with the options it was written with."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ferlit.data.pack as packed
from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.images import load_face
from ferlit.data.pack import Pack, PackedFaceDataset, pack
from ferlit.data.readers.affwild2 import read_affwild2
from ferlit.data.transforms import build_transform
from ferlit.errors import ConfigError, DataError

SIZE = 48  # small faces keep the packs tiny; the resize path is the same at any size


@pytest.fixture(scope="module")
def packed_sample(tiny_sample, tmp_path_factory):
    """The tiny sample data packed once (ExpW cropped with a margin), with its index cache."""
    root = tmp_path_factory.mktemp("packed")
    out = pack(
        root / "pack",
        tiny_sample.affwild2_dir,
        tiny_sample.expw_dir,
        size=SIZE,
        expw_margin=0.1,
        workers=2,
        progress=False,
        index_cache_dir=root / "cache",
    )
    return out, root / "cache"


def modules(tiny_sample, packed_sample, **options):
    out, cache_dir = packed_sample
    common = dict(
        affwild2_dir=str(tiny_sample.affwild2_dir),
        expw_dir=str(tiny_sample.expw_dir),
        image_size=SIZE,
        expw_margin=0.1,
        batch_size=16,
        num_workers=0,
        index_cache_dir=str(cache_dir),
    )
    common.update(options)
    return ExpressionDataModule(**common), ExpressionDataModule(**common, packed_dir=str(out.root))


def assert_same_batches(a, b) -> int:
    samples = 0
    for (x, y, i, *_), (u, v, k, *_) in zip(a, b, strict=True):  # train: + damaged skipped
        assert x.dtype == u.dtype == torch.uint8
        assert torch.equal(x, u) and torch.equal(y, v) and torch.equal(i, k)
        samples += len(x)
    return samples


def test_packed_batches_equal_jpeg_batches(tiny_sample, packed_sample):
    jpeg, from_pack = modules(tiny_sample, packed_sample, augment=False)
    m = tiny_sample.manifest
    train = m["affwild2"]["train"]["samples"] + m["expw"]["samples"]
    assert len(from_pack.train_index) == len(jpeg.train_index) == train
    assert from_pack.class_weights == jpeg.class_weights

    trained = assert_same_batches(jpeg.train_dataloader(), from_pack.train_dataloader())
    assert trained == train // 16 * 16  # whole optimizer steps
    validated = assert_same_batches(jpeg.val_dataloader(), from_pack.val_dataloader())
    assert validated == m["affwild2"]["val"]["samples"]


def test_packed_batches_equal_jpeg_batches_when_subsampled(tiny_sample, packed_sample):
    jpeg, from_pack = modules(
        tiny_sample, packed_sample, augment=False, frame_step=3, max_class_share=0.4
    )
    assert len(jpeg.train_index) < tiny_sample.manifest["affwild2"]["train"]["samples"] / 2
    assert from_pack.class_counts == jpeg.class_counts
    assert max(jpeg.class_counts) <= 0.4 * sum(jpeg.class_counts)
    assert assert_same_batches(jpeg.train_dataloader(), from_pack.train_dataloader()) > 0


def test_augmentation_runs_on_the_packed_face(tiny_sample, packed_sample):
    # A flip that always happens and no jitter is deterministic: both paths flip the same face.
    flip_only = dict(hflip=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    jpeg, from_pack = modules(tiny_sample, packed_sample, augment=True, **flip_only)
    assert_same_batches(jpeg.train_dataloader(), from_pack.train_dataloader())
    unflipped, _ = modules(tiny_sample, packed_sample, augment=False)
    flipped = next(iter(from_pack.train_dataloader()))[0]
    assert torch.equal(flipped, next(iter(unflipped.train_dataloader()))[0].flip(-1))


def test_pack_layout(tiny_sample, packed_sample):
    out, _ = packed_sample
    manifest = json.loads((out.root / "manifest.json").read_text())
    assert manifest["version"] == "ferlit-pack-v1" and manifest["complete"] is True
    assert (manifest["image_size"], manifest["num_classes"]) == (SIZE, 7)
    assert manifest["affwild2_layout"] == "abaw2020" and manifest["expw_margin"] == 0.1
    m = tiny_sample.manifest
    assert {p: v["samples"] for p, v in manifest["parts"].items()} == {
        "affwild2_train": m["affwild2"]["train"]["samples"],
        "affwild2_val": m["affwild2"]["val"]["samples"],
        "expw": m["expw"]["samples"],
    }
    assert sorted(p.name for p in out.root.iterdir()) == [
        "affwild2_train",
        "affwild2_val",
        "expw",
        "manifest.json",
    ]
    assert not out.root.with_name("pack.partial").exists()

    frames = out.frames("affwild2_val")
    assert frames.shape == (m["affwild2"]["val"]["samples"], SIZE, SIZE, 3)
    assert frames.dtype == np.uint8
    index = out.index("affwild2_val")
    reader = read_affwild2(tiny_sample.affwild2_dir, "val", progress=False)
    assert np.array_equal(index.frames, reader.frames) and index.roots == reader.roots
    resize = build_transform(SIZE, None)
    for k in (0, len(index) - 1):
        assert np.array_equal(frames[k], resize(image=load_face(index, k))["image"])


def test_dataset_pickles_without_its_frames(packed_sample):
    out, _ = packed_sample
    files = [out.frames_file("affwild2_val"), out.frames_file("expw")]
    labels = np.r_[out.index("affwild2_val").labels, out.index("expw").labels]
    dataset = PackedFaceDataset(files, labels[[0, -1]], rows=np.array([0, len(labels) - 1]))
    image, label, i = dataset[1]  # the last ExpW face: rows run on across the files
    assert torch.equal(image, torch.from_numpy(out.frames("expw")[-1].transpose(2, 0, 1).copy()))
    assert (label, i) == (int(labels[-1]), 1)
    assert len(pickle.dumps(dataset)) < 10_000  # workers map the files themselves


class Interrupt(Exception):
    """Stands in for Ctrl-C or a killed job while packing."""


def test_interrupted_pack_is_detected_and_resumed(tiny_sample, tmp_path, monkeypatch):
    options = dict(
        affwild2_dir=tiny_sample.affwild2_dir,
        size=SIZE,
        chunk_size=64,
        workers=0,
        progress=False,
        index_cache_dir=tmp_path / "cache",
    )
    out = tmp_path / "pack"
    written: list[int] = []
    real_write = packed._FramesWriter.write

    def write(self, first_row, faces):
        written.append(first_row)
        real_write(self, first_row, faces)

    def mark_done_twice(partial, done, calls=[]):  # noqa: B006 - counts calls
        calls.append(1)
        if len(calls) > 2:
            raise Interrupt
        real_mark_done(partial, done)

    real_mark_done = packed._mark_done
    monkeypatch.setattr(packed._FramesWriter, "write", write)
    monkeypatch.setattr(packed, "_mark_done", mark_done_twice)
    with pytest.raises(Interrupt):
        pack(out, **options)
    assert not out.exists() and (tmp_path / "pack.partial" / "plan.json").is_file()
    assert written == [0, 64, 128]  # the third chunk was written but never marked done

    with pytest.raises(DataError, match=r"pack: the pack is incomplete: it was interrupted"):
        Pack.open(out)
    with pytest.raises(DataError, match=r"pack.partial: an interrupted pack, not a complete one"):
        Pack.open(tmp_path / "pack.partial")
    dm = ExpressionDataModule(packed_dir=str(out), image_size=SIZE)
    with pytest.raises(DataError, match=r"run python -m ferlit\.data pack with --out .* to resume"):
        _ = dm.train_index

    with pytest.raises(DataError, match=r"an interrupted pack of other data or options \(differs"):
        pack(out, **(options | {"size": SIZE + 1}))

    monkeypatch.setattr(packed, "_mark_done", real_mark_done)
    written.clear()
    resumed = pack(out, **options)
    train = tiny_sample.manifest["affwild2"]["train"]["samples"]
    val = tiny_sample.manifest["affwild2"]["val"]["samples"]
    assert written == [*range(128, train, 64), *range(0, val, 64)]
    assert not (tmp_path / "pack.partial").exists()

    fresh = pack(tmp_path / "fresh", **options)
    for part in ("affwild2_train", "affwild2_val"):
        assert np.array_equal(resumed.frames(part), fresh.frames(part))

    written.clear()
    assert pack(out, **options).manifest == resumed.manifest  # complete: nothing to do
    assert written == []
    with pytest.raises(DataError, match=r"already holds a complete pack .*differs in image_size"):
        pack(out, **(options | {"size": SIZE + 1}))


def test_datamodule_refuses_a_pack_of_other_options(packed_sample):
    out, _ = packed_sample
    with pytest.raises(ConfigError) as refused:
        _ = ExpressionDataModule(packed_dir=str(out.root)).train_index
    assert str(refused.value) == (
        f"data.image_size is 112 but {out.root} was packed with {SIZE}; train with "
        f"--model.input_size {SIZE} (fit sets data.image_size from it), or pack again with "
        "--data.image_size 112"
    )
    with pytest.raises(ConfigError, match=r"data.expw_margin is 0.0 but .* packed with 0.1"):
        _ = ExpressionDataModule(packed_dir=str(out.root), image_size=SIZE).train_index
    with pytest.raises(
        ConfigError, match=r"data.expw_box_overflow is 'pad' but .* packed with 'clip'; set"
    ):
        options = dict(image_size=SIZE, expw_margin=0.1, expw_box_overflow="pad")
        _ = ExpressionDataModule(packed_dir=str(out.root), **options).train_index
    manifest = json.loads((out.root / "manifest.json").read_text())
    assert manifest["expw_box_overflow"] == "clip"
    assert manifest["parts"]["expw"]["box_clipped"] == 0  # the sample data's boxes are inside
    assert manifest["parts"]["expw"]["skipped"]["duplicate"] == 1
    with pytest.raises(ConfigError, match=r"data.expw_box_overflow must be 'clip' or 'pad'"):
        ExpressionDataModule(expw_box_overflow="crop")


def test_not_a_pack(tmp_path):
    with pytest.raises(DataError, match=r"manifest.json: missing; .* is not a ferlit pack"):
        Pack.open(tmp_path)
    (tmp_path / "manifest.json").write_text('{"version": "ferlit-pack-v0"}')
    with pytest.raises(DataError, match=r"version 'ferlit-pack-v0', expected 'ferlit-pack-v1'"):
        Pack.open(tmp_path)
    with pytest.raises(ConfigError, match=r"pack needs --data.affwild2_dir and/or --data.expw_dir"):
        pack(tmp_path / "out")


def test_pack_command(tiny_sample, tmp_path, capsys):
    from ferlit.data.__main__ import main

    argv = [
        "pack",
        "--data.affwild2_dir",
        str(tiny_sample.affwild2_dir),
        "--data.image_size",
        str(SIZE),
    ]
    argv += ["--workers", "0", "--data.index_cache_dir", str(tmp_path / "cache")]
    assert main([*argv, "--out", str(tmp_path / "pack")]) == 0
    out = capsys.readouterr().out
    val = tiny_sample.manifest["affwild2"]["val"]["samples"]
    assert f"Packed {SIZE}x{SIZE} faces in {tmp_path / 'pack'}" in out
    assert f"  affwild2_val: {val:,} faces, 0.00 GiB" in out
    assert f"Train from it with --data.packed_dir {tmp_path / 'pack'}" in out
    assert Pack.open(tmp_path / "pack").parts == ("affwild2_train", "affwild2_val")

    assert main(["pack", "--out", str(tmp_path / "nothing")]) == 2
    assert "error: pack needs --data.affwild2_dir and/or --data.expw_dir" in capsys.readouterr().err


def copy_of(packed_sample, tmp_path):
    out, _ = packed_sample
    return Path(shutil.copytree(out.root, tmp_path / "copy"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: [m], r"manifest.json: a JSON array, expected an object"),
        (lambda m: "pack", r"manifest.json: a JSON string, expected an object"),
        (lambda m: {k: v for k, v in m.items() if k != "parts"}, r"'parts' is missing"),
        (lambda m: m | {"parts": []}, r"'parts' is \[\], expected an object with some of"),
        (lambda m: m | {"parts": {"test": {"samples": 1}}}, r"'parts' is \{'test'"),
        (lambda m: m | {"image_size": "48"}, r"'image_size' is '48', expected a positive integer"),
        (lambda m: m | {"image_size": True}, r"'image_size' is True, expected a positive"),
        (lambda m: m | {"num_classes": 6}, r"'num_classes' is 6, expected 7 or 8"),
        (lambda m: {k: v for k, v in m.items() if k != "expw_margin"}, r"'expw_margin' is missing"),
        (lambda m: m | {"expw_margin": float("nan")}, r"'expw_margin' is nan, expected a number"),
        (lambda m: m | {"expw_box_overflow": "crop"}, r"'expw_box_overflow' is 'crop'"),
        (
            lambda m: m | {"parts": m["parts"] | {"expw": {"faces": 3}}},
            r"parts.expw is \{'faces': 3\}, expected an object with a sample count 'samples'",
        ),
        (
            lambda m: m | {"parts": m["parts"] | {"expw": m["parts"]["expw"] | {"samples": 1}}},
            r"expw/frames.npy: holds an array of shape \(\d+, 48, 48, 3\), expected \(1, 48, 48, 3\)",
        ),
    ],
)
def test_a_damaged_manifest_is_named(packed_sample, tmp_path, edit, message):
    root = copy_of(packed_sample, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(edit(manifest)))
    with pytest.raises(DataError, match=message) as caught:
        Pack.open(root)
    assert str(root) in str(caught.value)


def test_a_manifest_that_is_not_json_or_text_is_named(packed_sample, tmp_path):
    root = copy_of(packed_sample, tmp_path)
    (root / "manifest.json").write_text('{"version": "ferlit-pack-v1", "parts": ')
    with pytest.raises(DataError, match=r"copy/manifest.json: not valid JSON \(Expecting value"):
        Pack.open(root)
    (root / "manifest.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match=r"copy/manifest.json: not UTF-8 text \(invalid start byte"):
        Pack.open(root)
    (root / "manifest.json").unlink()
    (root / "manifest.json").mkdir()  # is_file() is False: named as missing, not a traceback
    with pytest.raises(DataError, match=r"manifest.json: missing; .* is not a ferlit pack"):
        Pack.open(root)


def test_damaged_pack_arrays_are_named(packed_sample, tmp_path):
    root = copy_of(packed_sample, tmp_path)
    index = root / "affwild2_val" / "index.npz"
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2])  # truncated: the zip directory is gone
    with pytest.raises(DataError, match=r"affwild2_val/index.npz: cannot be read as a frame index"):
        Pack.open(root)
    index.write_bytes(b"")
    with pytest.raises(DataError, match=r"affwild2_val/index.npz: cannot be read as a frame index"):
        Pack.open(root)
    np.savez(index, labels=np.zeros(3, np.int64))  # another .npz
    with pytest.raises(DataError, match=r"index.npz: not a ferlit frame index \(no roots, num_cl"):
        Pack.open(root)
    index.write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    samples = manifest["parts"]["affwild2_val"]["samples"]
    frames = root / "affwild2_val" / "frames.npy"
    raw = frames.read_bytes()
    frames.write_bytes(raw[: len(raw) - 100])  # a kill while copying the pack
    with pytest.raises(DataError, match=r"affwild2_val/frames.npy: cannot be read as a packed fr"):
        Pack.open(root)
    np.save(frames, np.zeros((samples, 48, 48), np.uint8))  # grey faces
    with pytest.raises(DataError, match=r"frames.npy: holds an array of shape \(\d+, 48, 48\)"):
        Pack.open(root)
    frames.write_bytes(raw)
    Pack.open(root)  # whole again


def test_an_index_damaged_after_opening_is_named_when_read(packed_sample, tmp_path):
    root = copy_of(packed_sample, tmp_path)
    opened = Pack.open(root)
    (root / "expw" / "index.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match=r"expw/index.npz: damaged \(.*\); pack the data again"):
        opened.index("expw")


def test_the_pack_command_names_a_damaged_pack(tiny_sample, packed_sample, tmp_path, capsys):
    from ferlit.data.__main__ import main

    root = copy_of(packed_sample, tmp_path)
    (root / "manifest.json").write_text("[]")
    argv = ["pack", "--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--data.expw_dir"]
    argv += [str(tiny_sample.expw_dir), "--out", str(root), "--data.image_size", str(SIZE)]
    argv += ["--data.expw_margin", "0.1", "--data.index_cache_dir", str(packed_sample[1])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {root / 'manifest.json'}: a JSON array, expected an object (a ferlit pack manifest)\n"
    )


def test_fit_from_a_pack_alone_does_not_announce_the_sample_data(
    tiny_sample, packed_sample, tmp_path, capsys
):
    """A fit given only --data.packed_dir reads the pack; it must not say it uses the sample data."""
    from test_fit import fit_args

    from ferlit.training.cli import main

    out, cache_dir = packed_sample
    args = fit_args(tiny_sample, tmp_path, "--trainer.max_steps", "2")
    args = args[4:]  # without --data.affwild2_dir and --data.expw_dir
    args += ["--data.packed_dir", str(out.root), "--data.expw_margin", "0.1"]
    args += ["--model.input_size", str(SIZE), "--data.index_cache_dir", str(cache_dir)]
    cli = main(args)

    assert cli.trainer.global_step == 2
    err = capsys.readouterr().err
    assert "No data configured" not in err and "sample data" not in err
