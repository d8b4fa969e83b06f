"""Hangs and resource exhaustion (issue 13): frames that are not regular files, images that
declare absurd sizes, and worker processes that outlive their parent."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlit.data.__main__ import main as data_main
from ferlit.data.datasets import DamagedImageWarning, EpochSeededDataset, FaceDataset
from ferlit.data.images import MAX_IMAGE_PIXELS, ImageError, check_image, declared_size, read_image
from ferlit.data.readers.affwild2 import annotation_dir, read_affwild2, write_annotation_file
from ferlit.data.readers.expw import IMAGES_DIR, LABEL_FILE, ExpWFace, read_expw, write_label_list
from ferlit.data.transforms import build_transform
from ferlit.errors import DataError


@contextlib.contextmanager
def fails_after(seconds: int):
    """A test that would hang fails instead (SIGALRM interrupts a blocking open or read)."""

    def hung(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def png_declaring(path: Path, width: int, height: int) -> None:
    """A 100-byte PNG whose header (CRC included) declares ``width x height`` pixels, its pixel
    data a single empty chunk: decoding it would allocate the whole declared image first."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = b""
    for kind, body in ((b"IHDR", ihdr), (b"IDAT", zlib.compress(b"")), (b"IEND", b"")):
        crc = zlib.crc32(kind + body)
        chunks += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def jpeg_declaring(path: Path, width: int, height: int) -> None:
    """A real 16x16 JPEG whose start-of-frame is patched to declare ``width x height``."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


@pytest.fixture
def video(tmp_path, write_jpeg):
    """One Aff-Wild2 train video of 4 frames, each a flat grey of 40 * its number."""
    write_annotation_file(annotation_dir(tmp_path, "abaw2020", "train") / "v.txt", [0] * 4)
    for k in range(1, 5):
        write_jpeg(tmp_path / f"cropped_aligned/v/{k:05d}.jpg", np.full((16, 16, 3), 40 * k))
    return read_affwild2(tmp_path, "train")


# -- entries that are not regular files ------------------------------------------------------


def test_a_fifo_named_like_a_frame_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "00001.jpg"
    os.mkfifo(fifo)  # no writer: a plain open() or read() would wait forever
    with fails_after(5):
        with pytest.raises(
            ImageError, match=r"00001\.jpg: cannot read image: not a regular file but a FIFO"
        ):
            read_image(str(fifo))
        assert (
            check_image(str(fifo))
            == "cannot read image: not a regular file but a FIFO (named pipe)"
        )


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_frame_linked_to_a_device_is_refused_before_reading(tmp_path):
    frame = tmp_path / "00001.jpg"
    frame.symlink_to("/dev/zero")  # endless bytes: read whole, it would exhaust memory
    with fails_after(5):
        assert check_image(str(frame)) == "cannot read image: not a regular file but a device"


def test_a_folder_named_like_a_frame_is_refused(tmp_path):
    folder = tmp_path / "00001.jpg"
    folder.mkdir()
    assert check_image(str(folder)) == "cannot read image: not a regular file but a folder"


def test_a_fifo_in_place_of_a_training_frame_is_skipped_and_check_lists_it(video, tmp_path, capsys):
    frame = Path(video.image_path(1))
    frame.unlink()
    os.mkfifo(frame)
    data = EpochSeededDataset(FaceDataset(video, build_transform(16, None)), seed=0)
    with fails_after(10):
        with pytest.warns(DamagedImageWarning, match="not a regular file but a FIFO"):
            assert data[(0, 1)][2:] == (2, 1)  # frame 3 in its place
        assert data_main(["check", "--data.affwild2_dir", str(tmp_path), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"{frame}: cannot read image: not a regular file but a FIFO (named pipe)" in out
    assert "Checked 4 images" in out


# -- images that declare absurd sizes --------------------------------------------------------


def test_declared_size_is_read_from_the_header(tmp_path, write_jpeg):
    write_jpeg(tmp_path / "a.jpg", np.zeros((48, 64, 3), np.uint8))
    assert declared_size((tmp_path / "a.jpg").read_bytes()) == (64, 48)
    ok, progressive = cv2.imencode(
        ".jpg", np.zeros((30, 50, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )
    assert declared_size(progressive.tobytes()) == (50, 30)
    ok, png = cv2.imencode(".png", np.zeros((7, 9, 3), np.uint8))
    assert declared_size(png.tobytes()) == (9, 7)
    ok, bmp = cv2.imencode(".bmp", np.zeros((5, 11, 3), np.uint8))
    assert declared_size(bmp.tobytes()) == (11, 5)  # other formats: PIL reads the header


def test_a_small_png_named_jpg_declaring_20000x20000_is_not_decoded(tmp_path):
    bomb = tmp_path / "00001.jpg"
    png_declaring(bomb, 20000, 20000)
    assert bomb.stat().st_size < 200
    expected = (
        f"{bomb}: declares 20000x20000 pixels (width x height), over ferlit's limit of "
        f"{MAX_IMAGE_PIXELS:,} pixels"
    )
    with pytest.raises(ImageError) as raised:
        read_image(str(bomb))
    assert str(raised.value).startswith(expected)
    assert check_image(str(bomb)).startswith("declares 20000x20000 pixels")


def test_a_jpeg_declaring_10000x10000_is_not_decoded_but_8192x8192_may_be(tmp_path):
    jpeg_declaring(tmp_path / "big.jpg", 10000, 10000)
    assert check_image(str(tmp_path / "big.jpg")).startswith("declares 10000x10000 pixels")
    assert MAX_IMAGE_PIXELS == 8192 * 8192
    jpeg_declaring(tmp_path / "limit.jpg", 8192, 8192)
    assert declared_size((tmp_path / "limit.jpg").read_bytes()) == (8192, 8192)
    # at the limit the size check passes: the (damaged) pixel data is the decoder's to judge
    assert not (check_image(str(tmp_path / "limit.jpg")) or "").startswith("declares")


def test_an_oversized_frame_is_skipped_in_training_and_stops_validation(video):
    png_declaring(Path(video.image_path(2)), 20000, 20000)
    training = EpochSeededDataset(FaceDataset(video, build_transform(16, None)), seed=0)
    with pytest.warns(DamagedImageWarning, match="declares 20000x20000 pixels"):
        assert training[(0, 2)][2:] == (3, 1)
    validation = FaceDataset(video, build_transform(16, None))
    with pytest.raises(ImageError, match=r"00003\.jpg: declares 20000x20000 pixels"):
        validation[2]


def test_expw_index_refuses_an_image_declaring_an_absurd_size(tmp_path, write_jpeg):
    write_jpeg(tmp_path / IMAGES_DIR / "a.jpg", np.zeros((40, 40, 3), np.uint8))
    png_declaring(tmp_path / IMAGES_DIR / "b.jpg", 20000, 20000)
    write_label_list(
        tmp_path / LABEL_FILE,
        [ExpWFace("a.jpg", 0, 0, 0, 20, 20, 1.0, 3), ExpWFace("b.jpg", 0, 0, 0, 20, 20, 1.0, 3)],
    )
    with pytest.raises(DataError) as raised:
        read_expw(tmp_path)
    assert str(raised.value).startswith(
        f"{tmp_path / LABEL_FILE}:2: image {IMAGES_DIR}/b.jpg declares 20000x20000 pixels"
    )
    # a 12000x12000 PNG (144 Mpx: PIL itself only warns) is refused the same way
    png_declaring(tmp_path / IMAGES_DIR / "b.jpg", 12000, 12000)
    with pytest.raises(DataError, match=r"b\.jpg declares 12000x12000 pixels"):
        read_expw(tmp_path)


# -- workers that outlive their parent -------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie is dead, awaiting its reaper


def kill_and_watch_workers(
    command: list[str], workers: int, env_extra: dict | None = None
) -> list[int]:
    """Start ``command``, wait until it has ``workers`` child processes, SIGKILL it, and return
    the workers still alive 3 seconds later (torch's own watchdog would need 5 or more); any
    left are killed, so that no test leaves a process behind."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    process = subprocess.Popen(
        [sys.executable, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(seen) < workers:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the workers never started"
            seen = _children(process.pid)
            time.sleep(0.05)
        time.sleep(0.5)  # the workers are past their start, decoding
        process.kill()
        process.wait()
        time.sleep(3)
        return [pid for pid in seen if _alive(pid)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in seen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.stderr.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_killed_pack_leaves_no_worker_behind(tiny_sample, tmp_path):
    command = ["-m", "ferlit.data", "pack", "--data.affwild2_dir", str(tiny_sample.affwild2_dir)]
    command += ["--out", str(tmp_path / "pack"), "--workers", "2", "--data.index_cache", "false"]
    assert kill_and_watch_workers(command, 2) == []


#: A training run whose every sample takes forever to read: its loader's workers are busy,
#: where torch's watchdog never looks, when the run is killed.
SLOW_TRAINING = """
import sys, time
import ferlit.data.datamodule as dm
dm.load_face = lambda *args, **kwargs: time.sleep(3600)
data = dm.ExpressionDataModule(sys.argv[1], num_workers=2, batch_size=2, index_cache=False)
next(iter(data.train_dataloader()))
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_killed_run_leaves_no_loader_worker_behind(tiny_sample):
    command = ["-c", SLOW_TRAINING, str(tiny_sample.affwild2_dir)]
    assert kill_and_watch_workers(command, 2) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_killed_check_leaves_no_worker_behind(tiny_sample):
    command = ["-m", "ferlit.data", "check", "--data.expw_dir", str(tiny_sample.expw_dir)]
    assert kill_and_watch_workers([*command, "--workers", "2"], 2) == []
