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

:func:`shared_with_caller` runs the chunks of a call on worker processes *and* in the calling
process, which would otherwise only wait: with ``n`` processes asked for, ``n - 1`` workers of
a pool dimfeat keeps (:func:`worker_pool`, loky's ``ProcessPoolExecutor``: joblib runs a single
worker in the calling process) each keep :data:`QUEUED_PER_WORKER` chunks queued, and the caller
takes the next chunk itself whenever their queues are full (:func:`_to_workers`, counting
structures, so that the small last chunks of :func:`dimfeat.inputs.build.tapered_bounds` stay
here while a worker is busy with full ones). With two processes on two cores and 1,000
crystals, 1.17 times as fast as two joblib workers (median of 45 paired ratios, faster in 41;
``benchmarks/perf/caller_share.py``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

#: Seconds between two checks of the parent process.
POLL_SECONDS = 0.5

_watching: set[int] = set()
_lock = threading.Lock()
_fork_handler_registered = False

#: Chunks queued on each worker process of :func:`shared_with_caller` while the calling process
#: works on one of its own: one to run next, one travelling.
QUEUED_PER_WORKER = 2

#: Seconds an idle worker of :func:`worker_pool` waits for a task before it exits (joblib's
#: default for its loky workers); the pool starts new ones when tasks come again.
IDLE_WORKER_SECONDS = 300

#: Each worker process of :func:`worker_pool` on one OpenMP/BLAS thread.
_ONE_THREAD_ENV = {
    name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
}

#: (size, calling thread) -> (the process that started the pool, the pool)
_pools: dict[tuple[int, int], tuple[int, Any]] = {}


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


def error_as_value(
    task: Callable[..., Any], *args: Any, in_worker: bool = True
) -> tuple[Exception | None, Any]:
    """``(None, task(*args))``, or ``(error, None)``: an error kept as a value for its turn. In
    a worker (``in_worker``) the worker's traceback is attached to the error as a note; one
    raised in the calling process carries its own."""
    try:
        return None, task(*args)
    except Exception as error:
        if in_worker:
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


def worker_pool(workers: int) -> Any:
    """dimfeat's own pool of ``workers`` worker processes (loky's ``ProcessPoolExecutor``),
    kept between calls so that its workers keep what they rebuilt (the encoder). One pool per
    size and calling thread, so that a call abandoned in one thread (which kills its pool's
    running chunks) never touches another thread's (idle workers exit after
    :data:`IDLE_WORKER_SECONDS`); a new one after a fork or once it broke (:func:`_forget_pool`).
    Each worker gets one thread for OpenMP and BLAS, one process per core."""
    from joblib.externals.loky import ProcessPoolExecutor

    key = workers, threading.get_ident()
    with _lock:
        found = _pools.get(key)
        if found is not None and found[0] == os.getpid():
            return found[1]
        pool = ProcessPoolExecutor(
            max_workers=workers, timeout=IDLE_WORKER_SECONDS, env=_ONE_THREAD_ENV
        )
        _pools[key] = os.getpid(), pool  # a forked child starts its own
        return pool


def _forget_pool(pool: Any) -> None:
    """Stop using ``pool`` (broken, or abandoned with chunks running) and kill its workers, so
    that the next call starts a new one."""
    with _lock:
        for key, (_, kept) in list(_pools.items()):
            if kept is pool:
                del _pools[key]
    pool.shutdown(wait=False, kill_workers=True)


#: Per calling thread: its shared calls running, and its torch thread count from before them.
_sharing = threading.local()
#: Guards the updates of a thread's ``_sharing`` (a generator may be closed from another
#: thread); re-entrant, since the garbage collector may close one in the thread holding it.
_sharing_lock = threading.RLock()


@contextmanager
def _one_torch_thread_while_sharing() -> Iterator[None]:
    """torch (if imported) on one thread in this thread while it shares calls' chunks with the
    workers, its count from before them back when its last overlapping call ends.

    torch's CPU thread count is per thread once a thread has used torch; a thread that has not
    starts from the last value set anywhere, which is one while another thread shares, so such a
    thread finds one and keeps it. Each calling thread (the one that first advances the shared
    call's generator) keeps its own count: a thread interleaving two shared calls (two
    generators) stays on one thread until both end. A call closed by another thread (the
    garbage collector, or code holding the generator) cannot set its owner's count: the owner
    stays on one thread until its next shared call ends, which puts the count back.
    """
    torch = sys.modules.get("torch")  # imported by the task's module if it uses torch
    if torch is None:
        yield
        return
    state = _sharing.__dict__  # this thread's
    with _sharing_lock:
        calls = state.get("calls", 0)
        if calls == 0:
            state["threads"] = state.pop("owed", None) or torch.get_num_threads()
            torch.set_num_threads(1)
        state["calls"] = calls + 1
    try:
        yield
    finally:
        with _sharing_lock:
            state["calls"] -= 1
            if state["calls"] == 0:
                if _sharing.__dict__ is state:  # in the owner (thread ids are reused)
                    torch.set_num_threads(state["threads"])
                else:  # closed by another thread: its count is not the owner's to set
                    state["owed"] = state["threads"]


def _to_workers(
    unfinished: int, queued: int, workers: int, left: int, taken_here: int, size: int
) -> bool:
    """Whether the next chunk (of ``size`` structures) goes to the workers: ``unfinished`` of
    their chunks, holding ``queued`` structures, are not done; ``left`` chunks to place, this one
    included; ``taken_here`` run here so far.

    To the workers while one of them has nothing left to run, or while they hold less than
    :data:`QUEUED_PER_WORKER` chunks of this size each (less than one and a half of them: chunks
    of an equal size give the rule by count, and a worker still busy with large chunks keeps
    them while the small last ones of a call are run here), except that the last chunk stays
    here if none did. The calling process, which also reads every chunk's structures, so
    takes fewer chunks than a worker in a long call (schedules that gave it an equal share were
    not faster in trials).
    """
    if unfinished < workers:
        return True
    under = queued < (QUEUED_PER_WORKER - 0.5) * workers * size
    return under and (left > 1 or taken_here > 0)


def shared_with_caller(
    task: Callable[..., Any], chunks: Iterable[tuple], sizes: Sequence[int], workers: int
) -> Iterator[Any]:
    """``task(*arguments)`` for each ``arguments`` of ``chunks`` (made one at a time, in order,
    one for each of ``sizes``, the structures of each chunk), on ``workers`` (at least one)
    processes of :func:`worker_pool` and in this process; the results in order.

    A chunk goes to the workers or is run here as :func:`_to_workers` says, so the calling
    process works instead of waiting, with one torch thread for the whole call
    (:func:`_one_torch_thread_while_sharing`: setting it around each chunk lost the gain). A
    task's error is raised when its turn comes (the first failing chunk in input order; a
    worker's traceback attached as a note). Abandoning the iterator (an error, a ``break``)
    cancels the chunks still queued, and kills the workers if some are still running (they
    would hold up the next call). A worker that dies raises loky's ``TerminatedWorkerError`` (a
    ``BrokenProcessPool``), and the next call gets a new pool.
    """
    if workers < 1:
        raise ValueError(f"shared_with_caller needs at least one worker process, got {workers}")
    pool = worker_pool(workers)
    pending: dict[int, Any] = {}  # futures of the chunks sent, by chunk number
    finished: dict[int, tuple[Exception | None, Any]] = {}  # chunks run here
    turn = taken_here = 0

    def outcome(k: int) -> tuple[Exception | None, Any]:
        try:
            return pending.pop(k).result()
        except BrokenProcessPool:  # a worker died (killed, out of memory)
            _forget_pool(pool)
            raise

    def ready() -> Iterator[Any]:
        nonlocal turn
        while turn in finished or (turn in pending and pending[turn].done()):
            error, result = finished.pop(turn) if turn in finished else outcome(turn)
            turn += 1
            if error is not None:
                raise error
            yield result

    try:
        with _one_torch_thread_while_sharing():
            for k, arguments in enumerate(chunks):
                unfinished = [j for j, future in pending.items() if not future.done()]
                queued = sum(sizes[j] for j in unfinished)
                left = len(sizes) - k
                if _to_workers(len(unfinished), queued, workers, left, taken_here, sizes[k]):
                    try:
                        pending[k] = pool.submit(error_as_value, task, *arguments)
                    except BrokenProcessPool:
                        _forget_pool(pool)
                        raise
                else:
                    finished[k] = error_as_value(task, *arguments, in_worker=False)
                    taken_here += 1
                yield from ready()
            while pending or finished:
                if turn in pending:
                    pending[turn].exception()  # wait for the next in order
                yield from ready()
    finally:  # a whole call leaves nothing pending: only an abandoned one gets here with some
        if any(f.running() for f in pending.values()):
            _forget_pool(pool)  # fails the queued chunks too (cancelling them first would
            # crash loky's manager thread, and the kill with it)
        else:
            for future in pending.values():
                future.cancel()
