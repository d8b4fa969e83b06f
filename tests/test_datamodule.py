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
