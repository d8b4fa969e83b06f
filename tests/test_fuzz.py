"""Any annotation file and any ``label.lst``: parsed, or refused with ferlit's DataError.

Hypothesis writes arbitrary bytes, arbitrary text and near-valid files (real lines from the
project's writers with junk mixed in: unicode digits, underscores, huge numbers, NaN, stray
fields, CRLF, byte order marks) into a tiny Aff-Wild2 / ExpW tree and reads it with the public
readers. Whatever the content, the reader returns an index whose samples match the lines they
came from, or raises DataError; any other exception is a bug. Examples are derandomized and
bounded, so the test takes seconds and fails the same way on every machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ferlit.data.readers.affwild2 import (
    FRAMES_DIR,
    annotation_dir,
    read_affwild2,
    write_annotation_file,
)
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, read_expw, write_label_list
from ferlit.errors import DataError
from ferlit.expressions import AFFWILD2_HEADERS, EXPW_TO_ABAW

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FRAMES_ON_DISK = 4
#: What a parsed label or label.lst integer field must be.
ASCII_INT = re.compile(r"-?[0-9]+")
BLACK = np.zeros((8, 8, 3), np.uint8)
#: Tokens a parser built on int()/float()/split() may accept or trip over.
TRICKY = [
    "", " ", "-1", "-0", "+3", "1_0", "٣", "３", "0x1", "1e3", "1.0", "nan", "inf", "-inf",
    "99999999999999999999", "2147483648", "-2147483649", "\t", "\x0b", "\x85", "\u2028", "é",
]  # fmt: skip


def tricky_token(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, valid, valid, st.sampled_from(TRICKY), st.text(max_size=4))


def as_file(lines: list[str], crlf: bool, bom: bool) -> bytes:
    text = ("\r\n" if crlf else "\n").join(lines)
    return ("\ufeff" if bom else "").encode() + text.encode("utf-8", "surrogatepass")


annotation_lines = st.builds(
    lambda header, body: [header, *body],
    st.one_of(st.sampled_from(list(AFFWILD2_HEADERS)), st.text(max_size=30)),
    st.lists(tricky_token(st.integers(-1, 7).map(str)), max_size=FRAMES_ON_DISK + 2),
)
annotation_files = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(as_file, annotation_lines, st.booleans(), st.booleans()),
)

valid_faces = st.builds(
    lambda name, face_id, top, left, h, w, confidence, expression: ExpWFace(
        name, face_id, top, left, left + w, top + h, confidence, expression
    ),
    st.sampled_from(["a.jpg", "b.jpg"]),
    st.integers(0, 3),
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(1, 50),
    st.integers(1, 50),
    st.floats(0, 100, allow_nan=False),
    st.integers(0, 6),
)
junk_fields = st.lists(
    tricky_token(st.one_of(st.integers(-5, 300).map(str), st.sampled_from(["a.jpg", "c.jpg"]))),
    min_size=6,
    max_size=9,
)
label_lines = st.lists(
    st.one_of(
        valid_faces.map(ExpWFace.line),
        valid_faces.map(ExpWFace.line),
        st.builds(" ".join, junk_fields),
        st.builds("\t".join, junk_fields),
    ),
    max_size=5,
)
label_files = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(as_file, label_lines, st.booleans(), st.booleans()),
)


@pytest.fixture(scope="module")
def affwild2_tree(tmp_path_factory) -> Path:
    """Aff-Wild2 with one training video of FRAMES_ON_DISK frames; its annotation is fuzzed."""
    root = tmp_path_factory.mktemp("affwild2")
    (root / FRAMES_DIR / "video").mkdir(parents=True)
    for frame in range(1, FRAMES_ON_DISK + 1):
        cv2.imwrite(str(root / FRAMES_DIR / "video" / f"{frame:05d}.jpg"), BLACK)
    write_annotation_file(annotation_dir(root, "abaw2020", "train") / "video.txt", [0, 1])
    return root


@pytest.fixture(scope="module")
def expw_tree(tmp_path_factory) -> Path:
    """ExpW with images a.jpg and b.jpg (c.jpg is listed by some lines but missing)."""
    root = tmp_path_factory.mktemp("expw")
    (root / IMAGES_DIR).mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(root / IMAGES_DIR / name), BLACK)
    write_label_list(root / LABEL_FILE, [ExpWFace("a.jpg", 0, 0, 0, 4, 4, 1.0, 3)])
    return root


def test_trees_read_before_fuzzing(affwild2_tree, expw_tree):
    assert read_affwild2(affwild2_tree, "train", layout="abaw2020").labels.tolist() == [0, 1]
    assert read_expw(expw_tree).labels.tolist() == [EXPW_TO_ABAW[3]]


@FUZZ
@given(content=annotation_files)
def test_any_annotation_file_parses_or_raises_data_error(affwild2_tree, content):
    path = annotation_dir(affwild2_tree, "abaw2020", "train") / "video.txt"
    path.write_bytes(content)
    try:
        index = read_affwild2(affwild2_tree, "train", num_classes=8, layout="abaw2020")
    except DataError as error:
        # A file that parses but keeps no frame (all -1, or labels past the frames on disk)
        # stops the split: that error names the split's annotation folder and the video.
        split_level = f"{path.parent}: the train split keeps no frame: " in str(error)
        assert str(path) in str(error) or split_level
        event("refused (split keeps no frame)" if split_level else "refused")
        return
    event(f"parsed, {len(index)} samples")
    lines = content.decode("utf-8-sig").split("\n")
    assert lines[0].strip() in AFFWILD2_HEADERS
    body = [line.strip() for line in lines[1:]]
    while body and not body[-1]:
        body.pop()
    assert all(ASCII_INT.fullmatch(line) for line in body)  # int() reads "٣", "+3", "1_0" too
    for label, frame, line in zip(index.labels, index.frames, index.lines, strict=True):
        assert 1 <= frame <= FRAMES_ON_DISK and line == frame + 1
        assert int(lines[line - 1].strip()) == label >= 0


@FUZZ
@given(content=label_files)
def test_any_label_list_parses_or_raises_data_error(expw_tree, content):
    path = expw_tree / LABEL_FILE
    path.write_bytes(content)
    try:
        index = read_expw(expw_tree)
    except DataError as error:
        assert str(path) in str(error)
        event("refused")
        return
    event(f"parsed, {len(index)} faces")
    lines = content.decode("utf-8-sig").split("\n")
    for label, line, box in zip(index.labels, index.lines, index.boxes, strict=True):
        fields = lines[line - 1].split()
        assert len(fields) == 8 and fields[0] in ("a.jpg", "b.jpg")
        assert all(ASCII_INT.fullmatch(fields[c]) for c in (1, 2, 3, 4, 5, 7))
        assert fields[6].isascii() and "_" not in fields[6]
        assert EXPW_TO_ABAW[int(fields[7])] == label
        assert box.tolist() == [int(v) for v in fields[2:6]]


# -- pack manifests ----------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["ferlit-pack-v1", "expw", "affwild2_train", "clip", "pad", "samples"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def one_face_pack(tmp_path_factory) -> tuple[Path, dict]:
    """A complete pack of one ExpW face at 8x8 pixels, and its manifest as written (its own
    ExpW tree: the label.lst test rewrites ``expw_tree``'s)."""
    from ferlit.data.pack import pack

    expw = tmp_path_factory.mktemp("expw-packed")
    (expw / IMAGES_DIR).mkdir(parents=True)
    cv2.imwrite(str(expw / IMAGES_DIR / "a.jpg"), BLACK)
    write_label_list(expw / LABEL_FILE, [ExpWFace("a.jpg", 0, 0, 0, 4, 4, 1.0, 3)])
    root = tmp_path_factory.mktemp("pack")
    out = pack(
        root / "pack",
        expw_dir=expw,
        size=8,
        workers=0,
        progress=False,
        index_cache=False,
    )
    return out.root, json.loads((out.root / "manifest.json").read_text())


def mutated(manifest: dict, data) -> object:
    """The written manifest with one key (top-level or of a part) replaced, added or deleted."""
    manifest = json.loads(json.dumps(manifest))
    info = manifest["parts"]["expw"]
    target = data.draw(st.sampled_from(["top", "part", "parts"]), label="where")
    into = {"top": manifest, "part": info, "parts": manifest["parts"]}[target]
    key = data.draw(st.one_of(st.sampled_from(sorted(into)), st.text(max_size=8)), label="key")
    if data.draw(st.booleans(), label="delete"):
        into.pop(key, None)
    else:
        into[key] = data.draw(json_values, label="value")
    return manifest


@FUZZ
@given(data=st.data())
def test_any_pack_manifest_opens_or_raises_data_error_naming_it(one_face_pack, data):
    from ferlit.data.pack import Pack

    root, written = one_face_pack
    kind = data.draw(st.sampled_from(["mutated", "json", "bytes"]), label="kind")
    if kind == "mutated":
        content = json.dumps(mutated(written, data)).encode()
    elif kind == "json":
        content = json.dumps(data.draw(json_values, label="manifest")).encode()
    else:
        content = data.draw(st.binary(max_size=200), label="bytes")
    (root / "manifest.json").write_bytes(content)
    try:
        opened = Pack.open(root)
    except DataError as e:
        event(str(e).split(": ", 2)[1][:40])
        assert str(root) in str(e)
    else:  # what opens is usable: every part's index and frames read as the manifest says
        event("opened")
        for part in opened.parts:
            assert len(opened.index(part)) == len(opened.frames(part))
        assert opened.frames("expw").shape[1:] == (opened.image_size, opened.image_size, 3)
        assert opened.num_classes in (7, 8)
    finally:
        (root / "manifest.json").write_text(json.dumps(written))
