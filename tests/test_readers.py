"""The reader seam: create_reader's names and errors, the built-in readers through the Reader
interface, and a third reader of one's own trained on with no ferlit file touched."""

from __future__ import annotations

import numpy as np
import pytest

from ferlit.data.cache import cached_index
from ferlit.data.images import load_face
from ferlit.data.readers.affwild2 import AffWild2Reader, read_affwild2
from ferlit.data.readers.base import Reader, create_reader
from ferlit.data.readers.expw import ExpWReader, read_expw
from ferlit.data.readers.frames_dir import FramesDirReader
from ferlit.errors import ConfigError, DataError

KNOWN = "a built-in reader (affwild2, expw, frames_dir) or 'pkg.module:Class' naming a Reader"


def test_built_in_names_and_dotted_paths_make_readers(tmp_path):
    assert type(create_reader("affwild2", tmp_path)) is AffWild2Reader
    assert type(create_reader("expw", tmp_path, margin=0.2)) is ExpWReader
    assert type(create_reader("frames_dir", [tmp_path])) is FramesDirReader
    by_colon = create_reader("ferlit.data.readers.expw:ExpWReader", tmp_path, num_classes=8)
    by_dot = create_reader("ferlit.data.readers.affwild2.AffWild2Reader", tmp_path)
    assert (type(by_colon), by_colon.num_classes, type(by_dot)) == (ExpWReader, 8, AffWild2Reader)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "affectnet",
            f"data.train_sources[1].reader: unknown reader 'affectnet'; expected {KNOWN}",
        ),
        (
            "no_such_module:Reader",
            "data.train_sources[1].reader: cannot import 'no_such_module' for reader "
            f"'no_such_module:Reader' (No module named 'no_such_module'); expected {KNOWN}",
        ),
        (
            "ferlit.data.readers.expw:Nothing",
            "data.train_sources[1].reader: module 'ferlit.data.readers.expw' has no 'Nothing' "
            f"(reader 'ferlit.data.readers.expw:Nothing'); expected {KNOWN}",
        ),
        (
            "ferlit.data.index:FrameIndex",
            "data.train_sources[1].reader: 'ferlit.data.index:FrameIndex' is not a Reader "
            f"subclass (ferlit.data.readers.base.Reader); expected {KNOWN}",
        ),
        ("", f"data.train_sources[1].reader: expected {KNOWN}, got ''"),
    ],
)
def test_a_name_that_is_no_reader_is_refused_naming_the_option(tmp_path, name, message):
    with pytest.raises(ConfigError) as raised:
        create_reader(name, tmp_path, option="data.train_sources[1]")
    assert str(raised.value) == message


def test_reader_options_are_checked_by_name_and_value(tmp_path):
    with pytest.raises(ConfigError) as raised:
        create_reader("expw", tmp_path, option="data.train_sources[0]", marign=0.1)
    assert str(raised.value) == (
        "data.train_sources[0]: reader 'expw' takes no option marign; its options: num_classes, "
        "min_confidence, margin, box_overflow"
    )
    with pytest.raises(ConfigError, match=r"^data.train_sources\[0\]: box_overflow must be 'clip'"):
        create_reader("expw", tmp_path, option="data.train_sources[0]", box_overflow="wrap")
    with pytest.raises(ConfigError, match=r"^num_classes must be 7 \(ABAW 2020\) or 8"):
        create_reader("affwild2", tmp_path, num_classes=6)
    with pytest.raises(ConfigError, match=r"^layout must be one of \('abaw2020'"):
        AffWild2Reader(tmp_path, layout="abaw2019")
    with pytest.raises(ConfigError, match=r"^margin must be a finite number >= 0, got -1"):
        ExpWReader(tmp_path, margin=-1)


def test_affwild2_reader_indexes_loads_and_caches(tiny_sample, tmp_path, monkeypatch):
    reader = create_reader("affwild2", tiny_sample.affwild2_dir)
    assert isinstance(reader, Reader) and reader.folders() == [str(tiny_sample.affwild2_dir)]
    val = reader.index("val", progress=False)
    direct = read_affwild2(tiny_sample.affwild2_dir, "val", progress=False)
    assert val.labels.tolist() == direct.labels.tolist() and len(val) > 0
    assert np.array_equal(reader.load_face(val, 3), load_face(val, 3))
    assert reader.load_face(val, 3).dtype == np.uint8 and reader.load_face(val, 3).shape[2] == 3
    with pytest.raises(
        ConfigError, match=r"^Aff-Wild2 has no split 'test'; its splits: train, val"
    ):
        reader.check_split("test")

    cached_index(reader, "val", tmp_path / "cache", progress=False)
    import ferlit.data.readers.affwild2 as module

    monkeypatch.setattr(module, "read_affwild2", None)  # a second read must not index again
    again = cached_index(reader, "val", tmp_path / "cache", progress=False)
    assert again.frames.tolist() == val.frames.tolist()
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["affwild2"]


def test_affwild2_face_frames_index_adds_the_unannotated_frames(tiny_sample):
    val = read_affwild2(tiny_sample.affwild2_dir, "val", progress=False)
    every = AffWild2Reader.face_frames_index(val)
    assert len(every) >= len(val)
    annotated = every.labels >= 0
    assert int(np.count_nonzero(annotated)) == len(val)
    assert every.labels[annotated].tolist() == val.labels.tolist()


def test_expw_reader_crops_with_its_own_options(tiny_sample):
    plain, wide = ExpWReader(tiny_sample.expw_dir), ExpWReader(tiny_sample.expw_dir, margin=0.5)
    index = plain.index("train", progress=False)
    assert index.labels.tolist() == read_expw(tiny_sample.expw_dir, progress=False).labels.tolist()
    assert np.array_equal(plain.load_face(index, 0), load_face(index, 0))
    assert np.array_equal(wide.load_face(index, 0), load_face(index, 0, margin=0.5))
    assert plain.cache_key("train")["options"] == {"num_classes": 7, "min_confidence": None}
    with pytest.raises(ConfigError, match=r"^ExpW has no split 'val'; its splits: train"):
        plain.index("val")


def test_frames_dir_reader_reads_unlabelled_faces(tmp_path, write_jpeg):
    for video, frames in (("a", (1, 2)), ("b", (3,))):
        for frame in frames:
            write_jpeg(tmp_path / "faces" / video / f"{frame:05d}.jpg", np.full((8, 8, 3), 200))
    reader = create_reader("frames_dir", str(tmp_path / "faces"))
    index = reader.index("all")
    assert (index.labels.tolist(), index.frames.tolist()) == ([-1, -1, -1], [1, 2, 3])
    assert reader.cache_key("all") is None and reader.folders() == [str(tmp_path / "faces")]
    assert np.abs(reader.load_face(index, 2).astype(int) - 200).max() <= 2
    with pytest.raises(DataError, match=r"/nothing: data.frames_dir is not a folder"):
        FramesDirReader([tmp_path / "faces", tmp_path / "nothing"]).index("all")
    with pytest.raises(ConfigError, match=r"^data.frames_dir: an empty list"):
        FramesDirReader([])


TOY_READER = '''
"""A reader of one's own: labels.csv lines "image.jpg,label" of whole-image faces."""

import numpy as np

from ferlit.data.index import BOXED_IMAGE, FrameIndex
from ferlit.data.readers.base import Reader


class ToyFaces(Reader):
    name = "toy_faces"
    title = "toy faces"

    def index(self, split="train", progress=True):
        self.check_split(split)
        with open(f"{self.root}/labels.csv") as f:
            rows = [line.strip().split(",") for line in f if line.strip()]
        return FrameIndex.build(
            root=self.root,
            num_classes=self.num_classes,
            group_names=[name for name, _ in rows],
            group_kinds=[BOXED_IMAGE] * len(rows),
            group_sources=["labels.csv"] * len(rows),
            labels=np.array([int(label) for _, label in rows]),
            groups=np.arange(len(rows)),
            frames=np.zeros(len(rows)),
            lines=np.arange(1, len(rows) + 1),
        )
'''

#: The toy faces' labels: 3 Anger, 2 Fear, 1 Surprise (ABAW 2020 order: Neutral, Anger, Disgust,
#: Fear, Happiness, Sadness, Surprise).
TOY_LABELS = [1, 1, 1, 3, 3, 6]


@pytest.fixture
def toy_faces(tmp_path, write_jpeg, monkeypatch):
    """The toy reader's module on sys.path and a folder of its faces."""
    (tmp_path / "toy_faces.py").write_text(TOY_READER)
    monkeypatch.syspath_prepend(str(tmp_path))
    root = tmp_path / "toy"
    lines = []
    for k, label in enumerate(TOY_LABELS):
        write_jpeg(root / f"face{k}.jpg", np.full((24, 20, 3), 40 * label, np.uint8))
        lines.append(f"face{k}.jpg,{label}\n")
    (root / "labels.csv").write_text("".join(lines))
    return root


def test_a_reader_in_one_new_file_trains_with_no_ferlit_file_touched(
    tiny_sample, tmp_path, toy_faces
):
    from ferlit.training.cli import main

    args = [
        "--data.affwild2_dir",
        str(tiny_sample.affwild2_dir),
        "--data.expw_dir",
        str(tiny_sample.expw_dir),
        "--model.backbone",
        "seresnet18",
        "--model.backbone_kwargs",
        '{"channels": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}',
        "--model.input_size",
        "32",
        "--data.batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--data.index_cache_dir",
        str(tmp_path / "cache"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(tmp_path),
        "--trainer.logger.name",
        "run",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.max_steps",
        "2",
    ]
    without = main(args, run=False).datamodule.class_counts
    source = f'[{{"reader": "toy_faces:ToyFaces", "root": "{toy_faces}"}}]'
    cli = main([*args, "--data.train_sources", source])
    dm = cli.datamodule
    assert dm.part_names("train") == ["affwild2_train", "expw", "toy_faces"]
    added = np.bincount(TOY_LABELS, minlength=7)
    assert dm.class_counts == (np.asarray(without) + added).tolist()
    reader, index = dm.part("toy_faces")
    assert type(reader).__name__ == "ToyFaces" and len(index) == len(TOY_LABELS)
    assert reader.load_face(index, 3).shape == (24, 20, 3)
    (last,) = tmp_path.rglob("last.ckpt")
    assert cli.trainer.global_step == 2 and last.stat().st_size > 0
    assert ("data.train_sources[0].root", str(toy_faces)) in dm.data_folders()


def test_a_reader_without_a_source_file_is_read_every_time(tiny_sample, tmp_path):
    class InANotebook(AffWild2Reader):  # as if defined in a notebook cell: no file to hash
        __module__ = "__notebook_cell__"

    reader = InANotebook(tiny_sample.affwild2_dir)
    index = cached_index(reader, "val", tmp_path / "cache", progress=False)
    assert len(index) == len(read_affwild2(tiny_sample.affwild2_dir, "val", progress=False))
    assert not (tmp_path / "cache").exists()
