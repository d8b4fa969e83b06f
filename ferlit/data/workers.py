"""Worker processes that end with the process that started them.

A ``python -m ferlit.data pack`` killed with SIGKILL (an OOM killer, ``scancel``, a closed
terminal on some systems) cannot stop its decoding workers: they are re-parented to init and go
on decoding, holding memory and cores on a shared node (seen with ``pack --workers 2`` killed
mid-pack: both workers alive 3 s later, ``tests/test_hangs.py``). torch's DataLoader workers
check that their parent is alive only while they wait for work (``ManagerWatchdog``, every 5 s),
not while a long read or decode runs.

:func:`exit_with_parent` is the ``worker_init_fn`` of ferlit's loaders (training, validation,
evaluation, pack) and the initializer of ``ferlit.data check``'s process pool. On Linux it asks the
kernel (``prctl(PR_SET_PDEATHSIG)``, prctl(2)) to send the worker SIGKILL when its parent dies:
SIGKILL rather than SIGTERM because a forked worker inherits the parent's Python SIGTERM handler
(``python -m ferlit.fit`` installs one to stop after the current step), which would keep it alive; a
worker holds nothing to clean up (every file is written by the parent). The parent may already have
died before the call: its pid, recorded when the worker was started, no longer being the worker's
parent, the worker exits at once.
Elsewhere (macOS, Windows) only that check runs, and torch's watchdog remains.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1


def exit_with_parent(worker_id: int | None = None) -> None:
    """Make this (worker) process die when its parent does; ``worker_id`` is DataLoader's
    ``worker_init_fn`` argument, unused. Does nothing in a process that is not a child of
    ``multiprocessing`` (called in the main process by mistake, it must not kill anything)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != parent.pid:  # the parent died before the line above took effect
        os._exit(1)
