"""Worker processes that do not outlive the process that started them.

joblib's loky workers are reused between calls and are not told when their parent dies: after a
``kill -9`` of ``dimfeat featurize --n-jobs -1`` they would keep computing (and then idle) for
minutes. Every function dimfeat runs in a worker first calls :func:`exit_with_parent`, which
starts, once per process, a daemon thread that ends the worker as soon as the parent's process
id is no longer its parent's (the parent died and the worker was re-parented).

A process that has run torch on more than one CPU thread cannot safely fork: the OpenMP runtime
behind torch's CPU kernels keeps its thread pool in the parent, and a forked child that enters
it (the encoder's first matrix product) waits forever for threads that do not exist there. This
is how matminer's process pool (``multiprocessing`` with ``fork``) hung after any earlier use of
dimfeat in the parent. :func:`one_thread_in_forked_children`, registered when dimfeat creates
an encoder, gives every child forked afterwards one torch thread, so that its kernels run inline
and never enter the OpenMP runtime (as PyTorch's own ``DataLoader`` workers do).

joblib raises the error of whichever task fails first *in time*, so with several workers the
same call could name a different bad structure each run. Tasks run through
:func:`error_as_value`, and :func:`raise_in_order` raises the first failing task's error *in
order*, as a serial call would.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import Any

#: Seconds between two checks of the parent process.
POLL_SECONDS = 0.5

_watching: set[int] = set()
_lock = threading.Lock()
_fork_handler_registered = False


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


def one_thread_in_forked_children() -> None:
    """From now on, give every process forked from this one a single torch CPU thread.

    Registered once per process (later calls do nothing; forked children inherit the handler).
    With one thread, ``at::parallel_for`` runs its work inline and the BLAS/oneDNN kernels run
    sequentially, so the child never waits on the parent's OpenMP thread pool. Processes started
    with ``spawn`` or ``forkserver`` (joblib's loky workers) are fresh and not affected.
    """
    global _fork_handler_registered
    if _fork_handler_registered or not hasattr(os, "register_at_fork"):
        return
    with _lock:
        if _fork_handler_registered:
            return
        os.register_at_fork(after_in_child=_one_torch_thread)
        _fork_handler_registered = True


def _one_torch_thread() -> None:
    import torch  # already imported: the handler is registered by torch code

    torch.set_num_threads(1)


def error_as_value(task: Callable[..., Any], *args: Any) -> tuple[Exception | None, Any]:
    """In a worker: ``(None, task(*args))``, or ``(error, None)`` with the worker's traceback
    attached to the error as a note."""
    try:
        return None, task(*args)
    except Exception as error:
        error.add_note(f"In the worker process:\n{traceback.format_exc()}")
        return error, None


def raise_in_order(results: Generator[tuple[Exception | None, Any], None, None]) -> Iterator[Any]:
    """The results of joblib's ordered generator over :func:`error_as_value` tasks, raising a
    task's error when its turn comes; the generator is closed (its queued tasks cancelled) when
    this one ends or is abandoned, without joblib's warning about the tasks it cancels."""
    try:
        for error, result in results:
            if error is not None:
                raise error
            yield result
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed")
            results.close()
