"""Real data as it is (issue 11): ExpW boxes past the image edge and damaged image files, from
the training set to the end of a fit."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferlit.data.datamodule import ExpressionDataModule
from ferlit.data.datasets import (
    MAX_CONSECUTIVE_BAD_IMAGES,
    DamagedImageWarning,
    EpochSeededDataset,
    FaceDataset,
)
from ferlit.data.images import ImageError
from ferlit.data.readers.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, write_label_list
from ferlit.data.transforms import build_transform
from ferlit.errors import DataError
from ferlit.training.cli import main


def cut_in_half(path: Path) -> None:
    """A JPEG cut to half its bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def frames(tmp_path, write_jpeg):
    """One Aff-Wild2 train video of 6 frames, each a flat grey of 40 * its number."""
    write_annotation_file(annotation_dir(tmp_path, "abaw2020", "train") / "v.txt", [0] * 6)
    for k in range(1, 7):
        write_jpeg(tmp_path / f"cropped_aligned/v/{k:05d}.jpg", np.full((16, 16, 3), 40 * k))
    return read_affwild2(tmp_path, "train")


def training_set(index, strict=False):
    return EpochSeededDataset(FaceDataset(index, build_transform(16, None)), seed=0, strict=strict)


def test_damaged_training_image_is_named_and_replaced_by_the_next(frames):
    cut_in_half(Path(frames.image_path(2)))  # frame 3
    data = training_set(frames)

    with pytest.warns(DamagedImageWarning) as warned:
        image, label, sample, skipped = data[(0, 2)]
    assert (sample, skipped) == (3, 1)  # frame 4 in its place, one damaged file skipped
    assert int(image.float().mean().round()) == 160  # frame 4's grey, not a half-grey frame 3
    (warning,) = warned
    assert str(warning.message).startswith(f"{frames.image_path(2)}: truncated JPEG: no end")
    assert "sample 3 taken in its place" in str(warning.message)
    # the same key always gives the same replacement; good samples report nothing skipped
    with pytest.warns(DamagedImageWarning):
        assert data[(1, 2)][2:] == (3, 1)
    assert data[(0, 1)][2:] == (1, 0)


def test_replacement_wraps_around_and_gives_up_after_a_run_of_damaged_files(frames):
    cut_in_half(Path(frames.image_path(5)))  # the last frame: its replacement is the first
    with pytest.warns(DamagedImageWarning):
        assert training_set(frames)[(0, 5)][2:] == (0, 1)
    for i in range(len(frames)):
        Path(frames.image_path(i)).write_bytes(b"")
    with (
        pytest.warns(DamagedImageWarning),
        pytest.raises(DataError, match=r"^6 training images in a row are damaged, from .*00004"),
    ):
        training_set(frames)[(0, 3)]
    assert MAX_CONSECUTIVE_BAD_IMAGES == 50  # timm's ImageDataset's limit


def test_strict_images_stops_on_the_first_damaged_file(frames):
    cut_in_half(Path(frames.image_path(2)))
    with pytest.raises(
        ImageError, match=r"00003\.jpg: truncated JPEG: .*; sample from .*v\.txt:4$"
    ):
        training_set(frames, strict=True)[(0, 2)]


def test_validation_stops_on_a_damaged_frame_naming_it(tiny_sample, tmp_path):
    data = tmp_path / "affwild2"
    shutil.copytree(tiny_sample.affwild2_dir, data)
    dm = ExpressionDataModule(
        str(data), image_size=16, batch_size=4, num_workers=0, index_cache=False
    )
    frame = Path(dm.val_index.image_path(5))
    cut_in_half(frame)

    with pytest.raises(DataError, match=rf"^{frame}: truncated JPEG: no end-of-image marker"):
        for _ in dm.val_dataloader():
            pass


def expw_past_the_edge(tiny_sample, root: Path) -> dict:
    """12 faces of the sample ExpW, 3 of whose boxes run past the right or bottom edge as real
    ones do, one more box wholly outside its image, and one image cut in half."""
    shutil.copytree(tiny_sample.expw_dir / IMAGES_DIR, root / IMAGES_DIR)
    lines = (tiny_sample.expw_dir / LABEL_FILE).read_text().split("\n")
    faces = [
        ExpWFace(f[0], *map(int, f[1:6]), float(f[6]), int(f[7]))
        for f in map(str.split, lines)
        if f
    ]
    faces = list(dict.fromkeys(faces))[:12]  # no duplicate line
    sizes = {f.image_name: Image.open(root / IMAGES_DIR / f.image_name).size for f in faces}
    over = {0: ("right", 2), 1: ("right", 15), 2: ("bottom", 7)}  # the real overruns: 0-15, 1-7 px
    for k, (edge, by) in over.items():
        width, height = sizes[faces[k].image_name]
        faces[k] = faces[k]._replace(**{edge: (width if edge == "right" else height) + by})
    width, _ = sizes[faces[3].image_name]
    outside = faces[3]._replace(face_id=99, left=width, right=width + 20)
    write_label_list(root / LABEL_FILE, [*faces, outside])
    damaged = root / IMAGES_DIR / faces[-1].image_name
    assert faces[-1].image_name not in {faces[k].image_name for k in over}
    cut_in_half(damaged)
    return {"faces": faces, "damaged": damaged}


def test_fit_on_expw_boxes_past_the_edge_and_a_damaged_image_runs_to_its_end(
    tiny_sample, tmp_path, caplog, capsys
):
    from test_fit import fit_args

    made = expw_past_the_edge(tiny_sample, tmp_path / "expw")
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--data.use_affwild2_train",
        "false",  # ExpW alone: 12 faces, 3 optimizer steps an epoch, every face read
        "--data.class_weighting",
        "none",
        "--trainer.max_steps",
        "6",
        "--val_every_n_steps",
        "3",
    )
    args[args.index("--data.expw_dir") + 1] = str(tmp_path / "expw")
    with caplog.at_level(logging.INFO), pytest.warns(DamagedImageWarning):
        cli = main(args)

    assert cli.trainer.global_step == 6
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ExpW:")]
    assert started == [
        "ExpW: 12 faces kept, 3 of them clipped to their image (boxes past the edge, "
        "data.expw_box_overflow: clip); skipped: 1 box_outside_image, 0 empty_box, 0 duplicate, "
        "0 low_confidence"
    ]
    folder = Path(cli.trainer.checkpoint_callback.best_model_path).parent
    summary = json.loads((folder / "best_validation.json").read_text())
    assert summary["damaged_images"] == {"count": 1, "first": [str(made["damaged"])]}
    out = capsys.readouterr().out
    assert f"damaged training image files skipped: 1 (first: {made['damaged']})" in out


def test_fit_with_strict_images_stops_naming_the_file(tiny_sample, tmp_path, capsys):
    from test_fit import fit_args

    made = expw_past_the_edge(tiny_sample, tmp_path / "expw")
    args = fit_args(
        tiny_sample,
        tmp_path,
        "--data.use_affwild2_train",
        "false",
        "--data.class_weighting",
        "none",
        "--data.strict_images",
        "true",
        "--trainer.max_steps",
        "6",
    )
    args[args.index("--data.expw_dir") + 1] = str(tmp_path / "expw")
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {made['damaged']}: truncated JPEG: no end-of-image marker FF D9" in err
    assert "Traceback" not in err


def test_the_damaged_counts_of_a_training_batch_stay_on_the_host(tiny_sample):
    """The summary reads them after every step: moved to a GPU, each read would wait for it."""
    import torch
    from lightning.fabric.utilities.apply_func import move_data_to_device

    data = ExpressionDataModule(affwild2_dir=str(tiny_sample.affwild2_dir))
    batch = [torch.zeros(3, 3, 8, 8), torch.tensor([0, 1, 2]), torch.tensor([4, 5, 6])]
    batch.append(torch.tensor([0, 2, 0]))
    moved = move_data_to_device(data.on_before_batch_transfer(batch, 0), torch.device("meta"))
    assert moved[3] == [0, 2, 0]
    assert moved[0].device.type == "meta"
