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
