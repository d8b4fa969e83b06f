"""The merged DataModule: class weights as in the paper, batches the model can take."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferlit.data.datamodule import ExpressionDataModule, class_weights_from_counts
from ferlit.data.images import load_face
from ferlit.data.samplers import EpochShuffleSampler, ShardSampler
from ferlit.errors import ConfigError, DataError
from ferlit.expressions import EXPRESSIONS_7
from ferlit.models.backbone import create_model

PAPER_WEIGHTS = (1, 22.92, 37.5, 50.66, 3.47, 5.79, 13.55)


def test_inverse_frequency_weights_reproduce_the_papers_numbers():
    # Class counts of a 1,004,523-face training set with the paper's class proportions.
    neutral = 1_004_523 / sum(1 / w for w in PAPER_WEIGHTS)
    counts = [round(neutral / w) for w in PAPER_WEIGHTS]
    assert abs(sum(counts) - 1_004_523) < 5
    weights = class_weights_from_counts(counts)
    assert np.round(weights, 2).tolist() == list(PAPER_WEIGHTS)


def test_other_weighting_schemes():
    counts = [400, 100, 25, 16, 200, 100, 50]
    assert class_weights_from_counts(counts, "sqrt_inverse_frequency") == pytest.approx(
        [1, 2, 4, 5, 2**0.5, 2, 8**0.5]
    )
    assert class_weights_from_counts(counts, "none") == [1.0] * 7
    with pytest.raises(DataError, match="no sample of Disgust, Fear"):
        class_weights_from_counts([5, 1, 0, 0, 1, 1, 1])


def test_datamodule_counts_and_weights_follow_the_data(tiny_sample, tmp_path):
    dm = ExpressionDataModule(
        str(tiny_sample.affwild2_dir), str(tiny_sample.expw_dir), index_cache_dir=str(tmp_path)
    )
    manifest = tiny_sample.manifest
    expected = [
        manifest["affwild2"]["train"]["class_counts"][c] + manifest["expw"]["class_counts"][c]
        for c in EXPRESSIONS_7
    ]
    assert dm.class_counts == expected
    assert dm.class_weights == pytest.approx([max(expected) / c for c in expected])
    explicit = ExpressionDataModule(
        str(tiny_sample.affwild2_dir), class_weighting=[1, 2, 3, 4, 5, 6, 7]
    )
    assert explicit.class_weights == [1, 2, 3, 4, 5, 6, 7]
    no_expw = ExpressionDataModule(str(tiny_sample.affwild2_dir), index_cache_dir=str(tmp_path))
    assert no_expw.class_counts == [
        manifest["affwild2"]["train"]["class_counts"][c] for c in EXPRESSIONS_7
    ]


def test_batches_are_uint8_faces_that_the_model_normalises(tiny_sample, tmp_path):
    dm = ExpressionDataModule(
        str(tiny_sample.affwild2_dir),
        str(tiny_sample.expw_dir),
        image_size=48,
        batch_size=8,
        num_workers=0,
        index_cache_dir=str(tmp_path),
    )
    images, labels, rows, skipped = next(iter(dm.train_dataloader()))
    assert not skipped.any()  # damaged images replaced (EpochSeededDataset): none here
    assert images.shape == (8, 3, 48, 48) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and ((labels >= 0) & (labels < 7)).all()
    assert torch.equal(labels, torch.as_tensor(dm.train_index.labels[rows.numpy()]).long())

    val_images, val_labels, val_rows = next(iter(dm.val_dataloader()))
    assert val_rows.tolist() == list(range(8))  # validation: in order, no augmentation
    face = load_face(dm.val_index, 0)
    assert face.shape == (112, 112, 3)

    net = create_model("seresnet18", 7, {"channels": (8, 16, 32, 64), "layers": (1, 1, 1, 1)})
    normalised = net.normalize(val_images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    assert torch.allclose(normalised, (val_images.float() - mean) / std)
    assert normalised.dtype == torch.float32


def test_validation_faces_are_the_resized_frames(tiny_sample, tmp_path):
    dm = ExpressionDataModule(
        str(tiny_sample.affwild2_dir),
        image_size=112,
        batch_size=4,
        num_workers=0,
        index_cache_dir=str(tmp_path),
    )
    images, _, rows = next(iter(dm.val_dataloader()))
    for image, row in zip(images, rows, strict=True):
        assert np.array_equal(image.permute(1, 2, 0).numpy(), load_face(dm.val_index, int(row)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_weighting": [1.0, 2.0]}, "data.class_weighting has 2 weights, expected 7"),
        (
            {"class_weighting": [1, 1, 1, 0, 1, 1, 1]},
            r"data.class_weighting\[3\] \(Fear\) must be a finite number > 0, got 0",
        ),
        ({"expw_dir": "/x"}, "data.expw_dir is set but data.affwild2_dir is not"),
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1, got 0"),
    ],
)
def test_bad_options_are_refused_before_reading(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExpressionDataModule(**kwargs)


def test_train_sampler_yields_whole_optimizer_steps_per_rank():
    ranks = [EpochShuffleSampler(103, 4, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in ranks] == [48, 48]  # 103 // (4 x 2 x 2) = 6 steps of 8 samples
    orders = [list(s) for s in ranks]
    assert not set(orders[0]) & set(orders[1])
    assert orders == [list(s) for s in ranks]  # same epoch, same order
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != orders[0]
    with pytest.raises(ConfigError, match="fewer than one optimizer step"):
        EpochShuffleSampler(7, 4, 2)


def test_shard_sampler_covers_every_sample_once_without_padding():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


SOURCE_FORM = (
    "{reader: a built-in reader or 'pkg.module:Class', root: its folder, options: {...}, "
    "split: one of the reader's splits (default: its first)}"
)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("x", f"data.train_sources: expected a list of {SOURCE_FORM}, got 'x'"),
        (["expw"], f"data.train_sources[0]: expected {SOURCE_FORM}, got 'expw'"),
        (
            [{"reader": "expw", "root": "/e", "option": {}}],
            "data.train_sources[0]: unknown key 'option'; expected reader, root, options, split",
        ),
        (
            [{"reader": "expw", "root": "/e", "split": "val"}],
            "data.train_sources[0].split: reader 'expw' has no split 'val'; its splits: train",
        ),
        ([{"root": "/e"}], "data.train_sources[0].reader: expected a name, got None"),
        ([{"reader": "expw", "root": 3}], "data.train_sources[0].root: expected a folder, got 3"),
        (
            [{"reader": "expw", "root": "/e", "options": [1]}],
            "data.train_sources[0].options: expected a mapping of option names, got [1]",
        ),
        (
            [{"reader": "expw", "root": "/e", "options": {"num_classes": 8}}],
            "data.train_sources[0].options: num_classes is data.num_classes for every reader",
        ),
        (
            [{"reader": "expw", "root": "/e"}, {"reader": "affectnet", "root": "/a"}],
            "data.train_sources[1].reader: unknown reader 'affectnet'; expected a built-in "
            "reader (affwild2, expw, frames_dir) or 'pkg.module:Class' naming a Reader",
        ),
        (
            [{"reader": "expw", "root": "/e", "options": {"margin": -1}}],
            "data.train_sources[0]: margin must be a finite number >= 0, got -1",
        ),
    ],
)
def test_bad_train_sources_are_refused_before_reading(sources, message):
    with pytest.raises(ConfigError) as raised:
        ExpressionDataModule(affwild2_dir="/nowhere", train_sources=sources)
    assert str(raised.value) == message


def test_train_sources_cannot_go_with_a_pack():
    with pytest.raises(ConfigError, match=r"^data.train_sources cannot be read with data.packed_d"):
        ExpressionDataModule(packed_dir="/p", train_sources=[{"reader": "expw", "root": "/e"}])


def test_parts_name_each_reader_and_add_up_to_the_training_set(tiny_sample, tmp_path):
    second = {"reader": "expw", "root": str(tiny_sample.expw_dir), "options": {"margin": 0.2}}
    dm = ExpressionDataModule(
        str(tiny_sample.affwild2_dir),
        str(tiny_sample.expw_dir),
        train_sources=[second],
        index_cache_dir=str(tmp_path),
    )
    assert dm.part_names("train") == ["affwild2_train", "expw", "expw_0"]
    assert dm.part_names("val") == ["affwild2_val"]
    sizes = [len(dm.part(name)[1]) for name in dm.part_names("train")]
    assert sizes[1] == sizes[2] == sum(tiny_sample.manifest["expw"]["class_counts"].values())
    assert len(dm.train_index) == sum(sizes)
    reader, index = dm.part("expw_0")
    assert (reader.name, reader.margin, dm.part("expw")[0].margin) == ("expw", 0.2, 0.0)
    assert np.array_equal(reader.load_face(index, 0), load_face(index, 0, margin=0.2))
    with pytest.raises(ConfigError, match=r"^no data part 'affectnet'; the parts: affwild2_train"):
        dm.part("affectnet")
    assert dm.data_folders() == [
        ("data.affwild2_dir", str(tiny_sample.affwild2_dir)),
        ("data.expw_dir", str(tiny_sample.expw_dir)),
        ("data.train_sources[0].root", str(tiny_sample.expw_dir)),
    ]


def test_a_training_part_without_class_indexes_is_refused(tiny_sample, tmp_path, write_jpeg):
    write_jpeg(tmp_path / "faces/a/00001.jpg", np.full((8, 8, 3), 9, np.uint8))
    dm = ExpressionDataModule(
        str(tiny_sample.affwild2_dir),
        train_sources=[{"reader": "frames_dir", "root": str(tmp_path / "faces")}],
        index_cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(DataError) as raised:
        dm.train_index  # noqa: B018
    assert str(raised.value) == (
        f"{tmp_path}/faces: part frames_dir (reader frames_dir): 1 face(s) with no class index "
        f"0..6, e.g. label -1 from {tmp_path}/faces/a:1; a training face needs one"
    )


def test_predict_api_on_a_split_and_on_a_frames_folder(tiny_sample, tmp_path, write_jpeg):
    dm = ExpressionDataModule(
        str(tiny_sample.affwild2_dir), index_cache_dir=str(tmp_path), batch_size=4, num_workers=0
    )
    val = dm.val_index
    target = dm.predict_index()
    scored = target.labels >= 0
    assert len(target) >= len(val) and target.labels[scored].tolist() == val.labels.tolist()
    assert dm.predict_context() == "every face frame of the split's videos, annotated or not"
    assert dm.predict_description() == f"Aff-Wild2 val, {tiny_sample.affwild2_dir}"
    images, labels, sample = next(iter(dm.predict_dataloader()))
    assert images.shape == (4, 3, 112, 112) and images.dtype == torch.uint8
    assert (labels.tolist(), sample.tolist()) == (target.labels[:4].tolist(), [0, 1, 2, 3])
    dm.predict_targets = ["target", "val"]
    assert [len(loader.dataset) for loader in dm.predict_dataloader()] == [len(target)] * 2

    on_train = ExpressionDataModule(str(tiny_sample.affwild2_dir), predict_split="train")
    assert on_train.predict_description() == f"Aff-Wild2 train, {tiny_sample.affwild2_dir}"
    assert (on_train.predict_index().labels >= 0).sum() == len(on_train.part("affwild2_train")[1])

    for frame in (1, 2, 3):
        write_jpeg(tmp_path / "test/cropped_aligned/v" / f"{frame:05d}.jpg", np.zeros((8, 8, 3)))
    folder = str(tmp_path / "test")
    frames = ExpressionDataModule(str(tiny_sample.affwild2_dir), frames_dir=folder)
    assert frames.predict_index().labels.tolist() == [-1, -1, -1]
    assert frames.predict_description() == f"{folder} (unlabelled)"
    assert frames.predict_context() == "every frame given (data.frames_dir)"
    assert len(frames.predict_index("val")) == len(target)
    assert ("data.frames_dir", folder) in frames.data_folders()
    with pytest.raises(ConfigError, match=r"^data.frames_dir is set: its unlabelled faces are for"):
        frames.setup("fit")
    alone = ExpressionDataModule(frames_dir=folder)  # the frames alone: no sample data read
    assert not alone.uses_sample_data and len(alone.predict_index()) == 3
    assert alone.data_folders() == [("data.frames_dir", folder)]
    with pytest.raises(ConfigError, match=r"^data.affwild2_dir is not set: the affwild2_val part"):
        alone.predict_index("val")


def test_help_has_a_line_for_every_data_option(capsys):
    import inspect
    import re

    from ferlit.training.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    blocks = re.split(r"\n  (?=--)", text)  # one block per option
    described = {}
    for block in blocks:
        found = re.match(r"--data\.(\w+)", block)
        if found:
            words = re.sub(r"^\S+( [A-Z_{},a-z]+)?(, --data\.\w+\+ \S+)?", "", block)
            words = re.sub(r"\((type|default): .*?\)\s*$", "", words, flags=re.S).split()
            described[found.group(1)] = " ".join(words)
    # image_size is linked from model.input_size (one name per quantity), so not an option
    parameters = inspect.signature(ExpressionDataModule).parameters
    options = [p for p in parameters if p != "image_size" and not p.startswith("_")]
    assert sorted(described) == sorted(options)
    assert [name for name in options if len(described[name]) < 20] == []
    assert described["hflip"].startswith("probability of a horizontal flip")


def test_source_dirs_and_the_data_tools_datamodule(tiny_sample):
    """source_dirs: the roots read (what run_info.json records); for_parts: the data tools'
    DataModule, ExpW alone included (which fit refuses), folders given as paths."""
    from pathlib import Path

    affwild2, expw = Path(tiny_sample.affwild2_dir), Path(tiny_sample.expw_dir)
    both = ExpressionDataModule(str(affwild2), str(expw))
    assert both.source_dirs() == (affwild2, expw)
    with pytest.raises(ConfigError, match=r"^data\.expw_dir is set but data\.affwild2_dir is not"):
        ExpressionDataModule(expw_dir=str(expw))
    alone = ExpressionDataModule.for_parts(None, expw, index_cache=False)
    assert alone.source_dirs() == (None, expw)
    assert (alone.part_names("train"), alone.part_names("val")) == (["expw"], [])
    counts = tiny_sample.manifest["expw"]["class_counts"]
    assert len(alone.part("expw")[1]) == sum(counts.values())
    with pytest.raises(ConfigError, match=r"^data\.num_classes must be 7"):
        ExpressionDataModule.for_parts(None, expw, num_classes=9)
