"""Worker processes that do not outlive the process that started them.

joblib's loky workers are reused between calls and are not told when their parent dies: after a
``kill -9`` of ``dimfeat featurize --n-jobs -1`` they would keep computing (and then idle) for
minutes. Every function dimfeat runs in a worker first calls :func:`exit_with_parent`, which
starts, once per process, a daemon thread that ends the worker as soon as the parent's process
id is no longer its parent's (the parent died and the worker was re-parented).
"""

from __future__ import annotations

import os
import threading
import time

#: Seconds between two checks of the parent process.
POLL_SECONDS = 0.5

_watching: set[int] = set()
_lock = threading.Lock()


def exit_with_parent(parent_pid: int) -> None:
    """In a worker process started by ``parent_pid``, exit as soon as that process is gone.

    Does nothing in the parent process itself (``n_jobs=1``) or in a process that
    ``parent_pid`` did not start.
    """
    if os.getpid() == parent_pid or os.getppid() != parent_pid:
        return
    with _lock:
        if parent_pid in _watching:
            return
        _watching.add(parent_pid)
    threading.Thread(
        target=_watch, args=(parent_pid,), name="dimfeat-exit-with-parent", daemon=True
    ).start()


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)  # the parent is gone: nobody will read this worker's results
