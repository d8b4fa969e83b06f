"""Face detection in worker processes, for ``predict --input --face_workers N``.

dlib's HOG detector runs on one core (~7 frames/s at 640 x 480, :mod:`ferlit.evaluation.faces`),
while a GPU classifies hundreds of faces a second: on a machine with more cores, N processes
detect about N times the frames per second. Workers receive frames and return their faces; the
calling process keeps decoding, tracking and alignment, in frame order, through
:func:`ferlit.evaluation.faces.faces_in_media` (:class:`HandedDetections`), so the results are
those of detecting in one process.

This module imports only what detection needs: a worker process imports it, not the model's
libraries (torch, Lightning), which cost seconds per process to import.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import cv2
import numpy as np

from ferlit.errors import ConfigError

#: How workers start: ``forkserver`` (a clean server process forks them: nothing of the caller's
#: threads, CUDA or OpenMP state is inherited, and modules imported once) where the platform has
#: it, else ``spawn``. Never a plain ``fork`` of a process that holds torch.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"

#: Frames in flight per worker: enough to keep every worker busy, few enough that memory stays
#: bounded on long videos (a 1080p frame is 6 MB).
FRAMES_PER_WORKER = 4

_WORKER_DETECTOR = None


def _start_worker(upsample: int, min_score: float, max_side: int | None) -> None:
    """A detection process: its own detector (dlib's is not shared between threads)."""
    global _WORKER_DETECTOR
    from ferlit.evaluation.faces import FaceDetector

    cv2.setNumThreads(1)
    _WORKER_DETECTOR = FaceDetector(upsample, min_score, max_side)


def _detect_in_worker(rgb: np.ndarray) -> list:
    return _WORKER_DETECTOR(rgb)


class HandedDetections:
    """Faces detected by worker processes, handed to
    :func:`ferlit.evaluation.faces.faces_in_media` in frame order, which tracks and aligns them
    as for its own detector: :meth:`frames` yields each frame once its faces are known, and the
    call that follows (this object as the detector) returns them."""

    def __init__(self) -> None:
        self._faces: list = []

    def __call__(self, rgb: np.ndarray) -> list:
        return self._faces

    def frames(self, frames: Iterable, settings: tuple, workers: int) -> Iterator:
        """``frames`` (:class:`ferlit.evaluation.media.MediaFrame`) with their faces detected
        ahead by ``workers`` processes, each with a ``FaceDetector(*settings)``, at most
        :data:`FRAMES_PER_WORKER` frames a worker in flight."""
        context = multiprocessing.get_context(START_METHOD)
        # concurrent.futures, not multiprocessing.Pool: a Pool whose worker dies (killed, out of
        # memory, a crash in dlib) or cannot start (a failing initializer, a script read from
        # stdin that the new process cannot import) replaces it and waits forever for the lost
        # frame; an executor breaks, and the wait below ends with an error.
        pool = ProcessPoolExecutor(workers, context, _start_worker, settings)
        try:
            pending: collections.deque = collections.deque()
            for frame in frames:
                pending.append((frame, pool.submit(_detect_in_worker, frame.rgb)))
                if len(pending) >= FRAMES_PER_WORKER * workers:
                    yield self._hand(*pending.popleft())
            while pending:
                yield self._hand(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _hand(self, frame, result):
        try:
            self._faces = result.result()
        except BrokenProcessPool:
            raise ConfigError(
                f"--face_workers: a face detection process ended before frame {frame.number} "
                f"of {frame.name} was done (killed, out of memory, or it could not start: a "
                "script read from stdin cannot start worker processes); run with "
                "--face_workers 0 to detect in this process"
            ) from None
        return frame
