"""Temporaries of crash-safe writes left by a killed process are removed by the next write of the
same file, and nothing else is (issue 13: a kill -9 mid-checkpoint left a checkpoint-sized
hidden file that nothing removed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ferlit.io import atomic_write, remove_stale_temporaries
from ferlit.training.runs import AtomicCheckpointIO

WRITER = """
import sys, time
from ferlit.io import atomic_write
with atomic_write(sys.argv[1]) as file:
    file.write(b"half a checkpoint")
    file.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def writer():
    """Start a process that stops in the middle of an atomic write of the given path."""
    started = []

    def start(path: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout.readline() == "writing\n"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


def hidden(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def killed_mid_write(writer, path: Path) -> str:
    before = set(hidden(path.parent))
    process = writer(path)
    (temporary,) = set(hidden(path.parent)) - before
    assert temporary.startswith(f".{path.name}.{process.pid}@")  # whose, for the next write
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (path.parent / temporary).read_bytes() == b"half a checkpoint"
    return temporary


def test_the_next_write_removes_a_killed_writers_temporary(writer, tmp_path):
    path = tmp_path / "last.ckpt"
    killed_mid_write(writer, path)
    with atomic_write(path) as file:
        file.write(b"whole")
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert path.read_bytes() == b"whole"


def test_a_checkpoint_save_removes_a_killed_saves_temporary(writer, tmp_path):
    path = tmp_path / "epoch=0-step=4.ckpt"
    killed_mid_write(writer, path)
    AtomicCheckpointIO().save_checkpoint({"global_step": 4}, path)
    assert os.listdir(tmp_path) == [path.name]


def test_only_dead_writers_temporaries_of_the_same_file_are_removed(writer, tmp_path):
    path = tmp_path / "metrics.json"
    writer(path)  # a write in progress in a live process: the next writer's start keeps it
    (live,) = hidden(tmp_path)
    stale = killed_mid_write(writer, path)
    other = killed_mid_write(writer, tmp_path / "plot.png")  # another target's
    users = [
        ".metrics.json.notes.tmp",  # the user's own file, close to the pattern
        f"{stale[1:]}",  # not hidden
        stale.replace("@", "@elsewhere-"),  # written on another machine sharing the folder
    ]
    for name in users:
        (tmp_path / name).write_text("mine")
    assert remove_stale_temporaries(path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted([live, other, *users])


def test_write_json_is_indented_ends_in_a_newline_and_refuses_before_writing(tmp_path):
    from ferlit.errors import listed
    from ferlit.io import write_json

    path = tmp_path / "metrics.json"
    write_json(path, {"f1": 0.5, "classes": ["Neutral"]})
    assert path.read_text() == '{\n  "f1": 0.5,\n  "classes": [\n    "Neutral"\n  ]\n}\n'
    with pytest.raises(TypeError):
        write_json(path, {"f1": object()})  # not JSON: the old file stays, no temporary left
    assert path.read_text().startswith('{\n  "f1": 0.5') and os.listdir(tmp_path) == [path.name]
    assert listed(["a", "b"]) == "a, b"
    assert listed([f"v{k}" for k in range(8)]) == "v0, v1, v2, v3, v4 and 3 more"
