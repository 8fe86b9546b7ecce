"""Vectors built and encoded in worker processes (:mod:`dimfeat.worker_vectors`), and chunks
encoded as they arrive (:meth:`dimfeat.runtime.EncoderRuntime.vectors` with ``n_jobs``)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.inputs import CHUNK_STRUCTURES
from dimfeat.inputs.build import MIN_SHARED_CHUNKS
from dimfeat.runtime import EncoderRuntime
from dimfeat.worker_vectors import EncoderPayload, iter_worker_vectors


def _relative_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)


@pytest.fixture(scope="module")
def many(sample_structures) -> list:
    """More structures than two worker chunks, one of them unreadable."""
    structures = list(sample_structures[: 2 * CHUNK_STRUCTURES + 40])
    structures[150] = "not a structure"
    return structures


def test_workers_give_the_serial_vectors_in_order(many):
    serial = DeepInfoMaxFeaturizer(device="cpu")
    parallel = DeepInfoMaxFeaturizer(device="cpu", n_jobs=2)
    good = [s for k, s in enumerate(many) if k != 150]
    expected = serial.transform(good)
    got = np.array(parallel.featurize_many(many, ignore_errors=True, pbar=False), dtype=float)
    assert np.isnan(got[150]).all()
    kept = np.delete(got, 150, axis=0)
    assert np.isfinite(kept).all()
    # the same function; batches differ, so only the float summation order may
    assert _relative_change(kept, expected).max() <= 1e-6


def test_chunks_reach_the_caller_in_order_with_their_errors(featurizer, many):
    runtime = featurizer.get_runtime()
    chunks = list(
        iter_worker_vectors(
            many,
            runtime.encoder,
            max_atoms=runtime.inputs.max_atoms,
            symprec=runtime.inputs.symprec,
            n_jobs=2,
            batch_size=64,
            ignore_errors=True,
        )
    )
    from dimfeat.inputs.build import chunk_bounds, tapered_bounds

    # shared with the caller: chunk_bounds' chunks (at most CHUNK_STRUCTURES), the last two cut
    equal = chunk_bounds(len(many), 2)
    assert len(equal) == -(-len(many) // CHUNK_STRUCTURES)
    assert [len(c.vectors) for c in chunks] == [len(b) for b in tapered_bounds(equal)]
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c.vectors) for c in chunks[:-1]]))
    assert sum(len(c.vectors) for c in chunks) == len(many)
    errors = {k: text for c in chunks for k, text in c.errors.items()}
    assert list(errors) == [150] and "not a structure" in errors[150]


def test_an_encoder_trained_in_memory_is_the_one_the_workers_use(sample_structures):
    """The workers receive the calling process's encoder (its tensors), not the weights on
    disk: an encoder changed in memory gives its own vectors in the workers too."""
    base = EncoderRuntime.create("sitenet-dim-mp36k")
    changed = copy.deepcopy(base.encoder)
    with torch.no_grad():
        changed.structure.values[0].weight.mul_(1.5)
    runtime = dataclasses.replace(base, encoder=changed)
    structures = list(sample_structures[:100])
    serial, _ = runtime.vectors(structures)
    parallel, _ = runtime.vectors(structures, n_jobs=2)
    original, _ = base.vectors(structures)
    assert _relative_change(parallel, serial).max() <= 1e-6
    assert _relative_change(parallel, original).min() > 1e-3


def test_a_payload_that_does_not_rebuild_its_encoder_is_refused(featurizer, monkeypatch):
    import dimfeat.worker_vectors as worker_vectors

    monkeypatch.setattr(worker_vectors, "_encoders", {})  # as in a fresh worker process
    payload = EncoderPayload.of(featurizer.get_runtime().encoder)
    name = next(k for k in payload.state if k.endswith("values.0.weight"))
    tampered = dataclasses.replace(payload, state={**payload.state, name: payload.state[name] * 2})
    with pytest.raises(RuntimeError, match="not the one sent"):
        tampered.encoder()
    assert payload.encoder().config.to_dict() == payload.config


def test_a_custom_encode_gets_the_chunks_as_they_are_built(featurizer, many):
    """With another ``encode`` (a GPU, say) the workers only build, and the calling process
    encodes each chunk as it arrives, with one progress bar over the chunks."""
    runtime = featurizer.get_runtime()
    good = [s for k, s in enumerate(many) if k != 150]
    calls: list[tuple[int, object]] = []

    def encode(inputs, progress):
        calls.append((len(inputs), progress))
        return runtime.encode(inputs)

    chunked, errors = runtime.vectors(good, encode, n_jobs=2)
    assert errors == {}
    assert len(calls) == -(-len(good) // CHUNK_STRUCTURES) > 1
    assert all(progress is False for _, progress in calls)
    assert sum(n for n, _ in calls) == len(good)
    serial, _ = runtime.vectors(good)
    assert _relative_change(chunked, serial).max() <= 1e-6
    calls.clear()
    runtime.vectors(good[:10], encode, progress=True)
    assert len(calls) == 1 and calls[0][1] is not False  # one chunk: the encoder's own bar


def test_pair_tables_computed_once_give_the_same_bits(featurizer, sample_structures):
    """A worker computes its context channel's pair tables once and hands them to every
    chunk's composition memo: the vectors are bit for bit those of a memo that made its own."""
    from dimfeat.encoder import composition_memo, pair_tables_of
    from dimfeat.inputs import build_many
    from dimfeat.runtime import run_batches

    encoder = featurizer.get_runtime().encoder
    inputs, _ = build_many(sample_structures[:40])
    tables = pair_tables_of(encoder)
    assert len(tables) == 1  # the context channel's
    outs = []
    for given in (None, tables):
        with composition_memo(encoder, given):
            outs.append(run_batches(inputs, encoder, 128, device=torch.device("cpu")))
    np.testing.assert_array_equal(outs[0], outs[1])
    doubled = [(logits * 2, values * 2) for logits, values in tables]
    with composition_memo(encoder, doubled):  # the tables given are the ones used
        changed = run_batches(inputs, encoder, 128, device=torch.device("cpu"))
    assert np.abs(changed[:, :64] - outs[0][:, :64]).max() > 1e-3  # the context channel
    np.testing.assert_array_equal(changed[:, 64:], outs[0][:, 64:])  # the structure channel
    with pytest.raises(ValueError, match="pair tables of 2 context encoders, not 1"):
        with composition_memo(encoder, tables * 2):
            pass


def test_workers_name_the_large_cells_at_their_positions(many):
    from dimfeat import LargeCellWarning

    structures = [s for k, s in enumerate(many) if k != 150]
    # a cell of its own (seed 2): large cells are named once per featuriser settings in a process
    big = (structures[3] * (4, 4, 4)).perturb(0.05, seed=2)
    structures[200] = big
    with pytest.warns(LargeCellWarning) as caught:
        DeepInfoMaxFeaturizer(device="cpu", n_jobs=2).transform(structures)
    (warning,) = [w.message for w in caught if isinstance(w.message, LargeCellWarning)]
    assert warning.positions == (200,) and warning.largest == len(big)


def test_verbose_workers_print_one_line_and_one_bar(sample_structures, capsys):
    """With workers, verbose=True gives one timing line for the call and one progress bar over
    the chunks (the workers build and encode, so there are no separate stages)."""
    DeepInfoMaxFeaturizer(device="cpu", n_jobs=2, verbose=True).transform(sample_structures[:100])
    captured = capsys.readouterr()
    assert captured.out.count("featurised 100 structures in") == 1
    assert "n_jobs=2" in captured.out
    assert "DeepInfoMaxFeaturizer: model inputs and encoding: 100%" in captured.err


def test_chunks_keep_every_worker_busy_and_stay_small():
    from joblib import effective_n_jobs

    from dimfeat.inputs.build import MIN_CHUNK_STRUCTURES, chunk_bounds

    for n, n_jobs in [(100, 2), (65, 2), (1000, 2), (300, 8), (5000, -1)]:
        bounds = chunk_bounds(n, n_jobs)
        assert np.array_equal(np.concatenate(bounds), np.arange(n))  # in order, each once
        assert max(len(b) for b in bounds) <= CHUNK_STRUCTURES
        workers = min(effective_n_jobs(n_jobs), n // MIN_CHUNK_STRUCTURES)
        assert len(bounds) >= workers
    assert [len(b) for b in chunk_bounds(100, 2)] == [50, 50]


def _chunk_lengths(items, positions, *args):
    return len(items), list(positions), args


def test_map_chunks_takes_given_bounds_and_refuses_ones_that_do_not_cover_the_structures(
    sample_structures,
):
    from dimfeat.inputs.build import map_chunks

    structures = list(sample_structures[:40])
    positions = list(range(100, 140))
    bounds = [np.arange(0, 10), np.arange(10, 35), np.arange(35, 40)]
    got = list(map_chunks(_chunk_lengths, structures, positions, 1, "error", "x", bounds=bounds))
    assert [start for start, _ in got] == [0, 10, 35]
    assert [n for _, (n, _, _) in got] == [10, 25, 5]
    assert got[1][1][1] == positions[10:35] and got[1][1][2] == ("x",)
    wrong_bounds = (
        [np.arange(0, 10), np.arange(11, 40)],  # a gap
        [np.arange(0, 39)],  # one short
        [np.arange(0, 10), np.arange(0), np.arange(10, 40)],  # an empty chunk
        [],  # none, for 40 structures
    )
    for wrong in wrong_bounds:
        with pytest.raises(ValueError, match="covering the structures"):
            list(map_chunks(_chunk_lengths, structures, positions, 1, "error", bounds=wrong))
    assert list(map_chunks(_chunk_lengths, [], [], 1, "error", bounds=[])) == []


def _fail_late_first(items, positions, *args):
    """Chunk 0 fails after the others have failed."""
    import time

    if positions[0] == 0:
        time.sleep(1.0)
        raise ValueError(f"first chunk, position {positions[0]}")
    raise ValueError(f"a later chunk, position {positions[0]}")


def test_map_chunks_raises_the_error_of_the_first_chunk_in_order_not_in_time(sample_structures):
    """joblib raises whichever task fails first in time; a call must raise what a serial call
    would, the first failing chunk's error, with the worker's traceback as a note."""
    from dimfeat.inputs.build import map_chunks

    structures = list(sample_structures[:64])
    bounds = [np.arange(0, 32), np.arange(32, 64)]
    with pytest.raises(ValueError, match="first chunk, position 0") as raised:
        list(map_chunks(_fail_late_first, structures, list(range(64)), 2, "error", bounds=bounds))
    assert any("_fail_late_first" in note for note in raised.value.__notes__)


def test_rows_of_built_encode_the_built_structures_and_leave_nan_rows_for_the_failed(
    featurizer, sample_structures
):
    from dimfeat.inference import rows_of_built

    runtime = featurizer.get_runtime()
    built, _ = runtime.build(sample_structures[:4])
    calls: list[int] = []

    def encode(inputs):
        calls.append(len(inputs))
        return runtime.encode(inputs)

    rows = rows_of_built([built[0], None, built[2], built[3]], runtime.n_features, encode)
    assert calls == [3] and rows.dtype == np.float32 and rows.shape == (4, runtime.n_features)
    assert np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2, 3]]).all()
    np.testing.assert_array_equal(rows[[0, 2, 3]], runtime.encode([built[0], built[2], built[3]]))
    nothing = rows_of_built([None, None], 8, encode)
    assert calls == [3] and nothing.shape == (2, 8) and np.isnan(nothing).all()


def _where(items, positions, parent_pid=None):
    """The process that ran the chunk, its torch threads, and the chunk's positions; half a
    second in a worker, so that a worker is never idle when the next chunk comes."""
    import os
    import time

    if os.getpid() != parent_pid:
        time.sleep(0.5)
    return os.getpid(), torch.get_num_threads(), list(positions)


def _die_in_a_worker(items, positions, parent_pid):
    """Kills the worker process running chunk 0 (as the out-of-memory killer would)."""
    import os

    if positions[0] == 0 and os.getpid() != parent_pid:
        os._exit(1)
    return len(items)


def test_the_caller_takes_chunks_beside_the_workers_in_order_on_one_thread(sample_structures):
    """With caller_shares, n_jobs=2 is one worker process and the calling process: both run
    chunks, the results come in input order, and the caller runs its share on one torch
    thread (two would compete with the worker for the cores) and has its own number back."""
    import os

    from dimfeat.inputs.build import map_chunks

    structures = list(sample_structures[:200])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the tests may run on one
    try:
        for n_chunks in (1, 10):
            bounds = np.array_split(np.arange(200), n_chunks)
            got = list(map_chunks(_where, structures, list(range(200)), 2, "error", os.getpid(),
                                  bounds=bounds, caller_shares=True))  # fmt: skip
            assert torch.get_num_threads() == 2
            assert [start for start, _ in got] == [int(b[0]) for b in bounds]
            assert [positions for _, (_, _, positions) in got] == [b.tolist() for b in bounds]
            here = [n for _, (pid, n, _) in got if pid == os.getpid()]
            if n_chunks < MIN_SHARED_CHUNKS:  # joblib's workers, as before
                assert not here
                continue
            assert len(here) >= 3 and all(n == 1 for n in here)  # the worker sleeps
            assert len({pid for _, (pid, _, _) in got}) == 2
        # abandoned after the first chunk: the worker's chunks cancelled or its pool
        # replaced, the threads back, and the next call whole
        chunks = map_chunks(_where, structures, list(range(200)), 2, "error", os.getpid(),
                            bounds=bounds, caller_shares=True)  # fmt: skip
        next(chunks)
        chunks.close()
        assert torch.get_num_threads() == 2
        again = list(map_chunks(_where, structures, list(range(200)), 2, "error", os.getpid(),
                                bounds=bounds, caller_shares=True))  # fmt: skip
        assert [positions for _, (_, _, positions) in again] == [b.tolist() for b in bounds]
    finally:
        torch.set_num_threads(threads)


def _fail_in_the_caller(items, positions, parent_pid):
    """Fails in the calling process only, after a pause in a worker."""
    import os
    import time

    if os.getpid() == parent_pid:
        raise ValueError(f"in the caller, position {positions[0]}")
    time.sleep(0.2)
    return len(items)


def test_the_caller_share_raises_the_first_failing_chunk_in_order(sample_structures):
    """Whether the first failing chunk ran in a worker (chunk 0, failing last in time) or in
    the calling process (chunk 1 of two, the worker's chunk 0 fine), its error is raised."""
    import os

    from dimfeat.inputs.build import map_chunks

    structures = list(sample_structures[:96])
    bounds = np.array_split(np.arange(96), 8)  # 12 each
    with pytest.raises(ValueError, match="first chunk, position 0"):
        list(map_chunks(_fail_late_first, structures, list(range(96)), 2, "error",
                        bounds=bounds, caller_shares=True))  # fmt: skip
    with pytest.raises(ValueError, match="in the caller, position 24"):  # chunks 0, 1: worker
        list(map_chunks(_fail_in_the_caller, structures, list(range(96)), 2, "error",
                        os.getpid(), bounds=bounds, caller_shares=True))  # fmt: skip


def test_a_worker_that_dies_is_an_error_and_the_next_call_gets_new_workers(sample_structures):
    import os
    from concurrent.futures.process import BrokenProcessPool

    from dimfeat.inputs.build import map_chunks

    structures = list(sample_structures[:64])
    bounds = np.array_split(np.arange(64), 8)
    with pytest.raises(BrokenProcessPool):
        list(map_chunks(_die_in_a_worker, structures, list(range(64)), 2, "error",
                        os.getpid(), bounds=bounds, caller_shares=True))  # fmt: skip
    got = list(map_chunks(_where, structures, list(range(64)), 2, "error", os.getpid(),
                          bounds=bounds, caller_shares=True))  # fmt: skip
    assert [positions for _, (_, _, positions) in got] == [b.tolist() for b in bounds]
    assert got[0][1][0] != os.getpid()  # chunk 0 in a new worker


def test_transform_with_workers_keeps_the_callers_torch_threads(many):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        DeepInfoMaxFeaturizer(device="cpu", n_jobs=2).featurize_many(
            many, ignore_errors=True, pbar=False
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_the_caller_takes_what_would_wait_for_a_busy_worker():
    from dimfeat._workers import _to_workers

    # (unfinished chunks, their structures, workers, chunks left, taken here, next size)
    assert _to_workers(0, 0, 1, 2, 0, 128)  # an idle worker
    assert not _to_workers(1, 128, 1, 1, 0, 128)  # the last chunk, none here yet: here
    assert _to_workers(1, 128, 1, 1, 1, 128)  # the last chunk, some here already: queued
    assert _to_workers(1, 125, 1, 5, 1, 126)  # one queued of an equal size: queued
    assert not _to_workers(2, 250, 1, 5, 1, 126)  # two queued: here, whatever the rounding
    assert not _to_workers(2, 252, 1, 5, 1, 125)
    assert _to_workers(2, 256, 3, 1, 0, 128)  # an idle worker of three
    # a worker busy with a large chunk keeps it while the small last ones are run here
    assert not _to_workers(1, 125, 1, 6, 3, 62)
    assert not _to_workers(1, 62, 1, 4, 3, 31)
    assert _to_workers(1, 31, 1, 3, 3, 31)


def test_the_last_two_chunks_of_a_shared_call_shrink():
    from dimfeat.inputs.build import TAIL_PIECES, chunk_bounds, tapered_bounds

    assert sum(TAIL_PIECES) == 1
    for n in (897, 1000, 2000, 12345):
        equal = chunk_bounds(n, 2)
        tapered = tapered_bounds(equal)
        np.testing.assert_array_equal(np.concatenate(tapered), np.arange(n))
        assert [len(b) for b in tapered[: len(equal) - 2]] == [len(b) for b in equal[:-2]]
        tail = [len(b) for b in tapered[len(equal) - 2 :]]
        assert len(tail) == len(TAIL_PIECES) and sum(tail) == len(equal[-1]) + len(equal[-2])
        assert tail == sorted(tail, reverse=True) and tail[-1] <= tail[0] // 4 + 1
    two = [np.arange(64), np.arange(64, 128)]  # one each is even: kept
    assert [b.tolist() for b in tapered_bounds(two)] == [b.tolist() for b in two]
    short = tapered_bounds([np.arange(1), np.arange(1, 3), np.arange(3, 6)])  # < 8 to cut
    assert [b.tolist() for b in short] == [[0], [1], [2], [3], [4], [5]]


def test_a_shared_call_without_bounds_runs_the_tapered_chunks_in_order(sample_structures):
    """The default chunks of a shared call: chunk_bounds' with its last two cut smaller, every
    position once and in order; joblib's path keeps chunk_bounds' own."""
    import os

    from dimfeat.inputs.build import chunk_bounds, map_chunks, tapered_bounds

    structures = list(sample_structures[:1000])
    positions = list(range(1000))
    expected = tapered_bounds(chunk_bounds(1000, 2))
    got = list(map_chunks(_where, structures, positions, 2, "error", os.getpid(),
                          caller_shares=True))  # fmt: skip
    assert [start for start, _ in got] == [int(b[0]) for b in expected]
    assert [p for _, (_, _, p) in got] == [b.tolist() for b in expected]
    assert len({pid for _, (pid, _, _) in got}) == 2
    plain = list(map_chunks(_chunk_lengths, structures, positions, 2, "error"))
    assert [n for _, (n, _, _) in plain] == [len(b) for b in chunk_bounds(1000, 2)]


def test_the_caller_shares_only_as_one_of_two_processes_on_joblibs_default_backend(
    sample_structures,
):
    """Measured on two cores only: with more processes, fewer than MIN_SHARED_CHUNKS chunks
    (the first test) or a backend a user chose with joblib.parallel_config, the chunks go to
    joblib as before."""
    import os

    from joblib import parallel_config

    from dimfeat.inputs.build import map_chunks

    structures = list(sample_structures[:64])
    bounds = np.array_split(np.arange(64), MIN_SHARED_CHUNKS)

    def where(n_jobs: int) -> set[tuple[int, int]]:
        chunks = map_chunks(_where, structures, list(range(64)), n_jobs, "error", os.getpid(),
                            bounds=bounds, caller_shares=True)  # fmt: skip
        return {(pid, threads) for _, (pid, threads, _) in chunks}

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert (os.getpid(), 1) in where(2)  # shared: a chunk here, on one thread
        assert os.getpid() not in {pid for pid, _ in where(3)}
        with parallel_config(backend="threading"):  # joblib's threads, the caller's 2 threads
            assert where(2) == {(os.getpid(), 2)}
    finally:
        torch.set_num_threads(threads)


def _keep_torch_threads_for_new_threads() -> None:
    """Set the count that threads yet to use torch start from back to this thread's (the tests
    below set other counts in threads of their own)."""
    torch.set_num_threads(torch.get_num_threads())


def test_two_threads_sharing_calls_at_once_get_the_vectors_of_a_call_alone(sample_structures):
    """Two threads call transform with n_jobs=2 at the same time: each shares its chunks with
    a pool of its own and gets the vectors a call alone gets (to float rounding: batches
    differ)."""
    import threading
    import time

    from dimfeat import _workers

    structures = list(sample_structures[:400])
    featurizer = DeepInfoMaxFeaturizer(device="cpu", n_jobs=2)
    alone = featurizer.transform(structures)
    barrier = threading.Barrier(2)
    got: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def call(k: int) -> None:
        try:
            barrier.wait()
            vectors = featurizer.transform(structures[k:] + structures[:k])
            got[k] = vectors, threading.get_ident()
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    calls = [threading.Thread(target=call, args=(k,), daemon=True) for k in (0, 7)]
    try:
        for thread in calls:
            thread.start()
        deadline = time.monotonic() + 300
        for thread in calls:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in calls)
        assert not errors, errors
        assert sorted(got) == [0, 7]
        for k, (vectors, ident) in got.items():
            back = np.roll(vectors, k, axis=0)  # undo the rotation of the input
            assert _relative_change(back, alone).max() <= 1e-6
            assert sum(key[1] == ident for key in _workers._pools) == 1  # a pool of its own
    finally:  # the threads are gone: their workers need not idle on
        idents = {thread.ident for thread in calls}
        for key, (_, pool) in list(_workers._pools.items()):
            if key[1] in idents:
                _workers._forget_pool(pool)
        _keep_torch_threads_for_new_threads()


def test_threads_sharing_at_once_each_run_on_one_torch_thread_and_get_their_own_count_back():
    """torch's thread count is per thread once a thread has used torch: two threads on 2 and 3
    threads, their shared calls overlapping (the first to start ends first), each run their
    share on one thread and get their own count back."""
    import threading

    from dimfeat._workers import _one_torch_thread_while_sharing

    entered, left = threading.Event(), threading.Event()
    seen: dict[int, tuple[int, int, int]] = {}

    def share(own: int, first: bool) -> None:
        torch.get_num_threads()  # uses torch: from now on this thread's count is its own
        torch.set_num_threads(own)
        before = torch.get_num_threads()
        if not first:
            entered.wait(30)
        with _one_torch_thread_while_sharing():
            inside = torch.get_num_threads()
            if first:
                entered.set()
                left.wait(30)  # the second is inside too
            else:
                left.set()
        seen[own] = before, inside, torch.get_num_threads()

    threads = [
        threading.Thread(target=share, args=(2, True), daemon=True),
        threading.Thread(target=share, args=(3, False), daemon=True),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert seen == {2: (2, 1, 2), 3: (3, 1, 3)}
    finally:
        _keep_torch_threads_for_new_threads()


def test_one_thread_interleaving_shared_calls_gets_its_count_back_when_the_last_ends():
    """A thread that interleaves two shared calls (two generators) stays on one torch thread
    until both end, then gets its count back (restoring per call put it back to two while the
    second still shared, and left it on one after)."""
    from dimfeat import _workers

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = _workers._one_torch_thread_while_sharing()
        second = _workers._one_torch_thread_while_sharing()
        first.__enter__()
        assert torch.get_num_threads() == 1
        second.__enter__()
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1  # the second still shares
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        _workers._sharing.__dict__.clear()  # whatever failed, later calls start afresh
        torch.set_num_threads(threads)


def test_a_shared_call_closed_by_another_thread_leaves_the_owner_its_count_for_later():
    """Another thread closing a thread's shared call cannot set the owner's torch count: the
    owner stays on one thread until its next shared call, which puts its count back."""
    import threading

    from dimfeat import _workers

    def sharing():
        with _workers._one_torch_thread_while_sharing():
            yield

    done = threading.Event()
    seen: dict[str, object] = {}

    def owner() -> None:
        torch.get_num_threads()  # uses torch: from now on this thread's count is its own
        torch.set_num_threads(2)
        call = sharing()
        next(call)  # this thread owns the call, on one thread
        closer = threading.Thread(target=call.close, daemon=True)
        closer.start()
        closer.join(timeout=30)
        seen["after close"] = torch.get_num_threads()
        seen["owed"] = _workers._sharing.__dict__.get("owed")
        with _workers._one_torch_thread_while_sharing():
            seen["inside next"] = torch.get_num_threads()
        seen["after next"] = torch.get_num_threads()
        seen["left"] = dict(_workers._sharing.__dict__)
        done.set()

    thread = threading.Thread(target=owner, daemon=True)
    try:
        thread.start()
        assert done.wait(60)
        assert seen["after close"] == 1 and seen["owed"] == 2
        assert seen["inside next"] == 1 and seen["after next"] == 2
        assert "owed" not in seen["left"] and seen["left"]["calls"] == 0
    finally:
        _keep_torch_threads_for_new_threads()


def test_an_error_is_kept_as_a_value_with_the_worker_traceback_only_from_a_worker():
    from dimfeat._workers import error_as_value

    def fails(value):
        raise KeyError(value)

    assert error_as_value(abs, -3) == (None, 3)
    in_worker, result = error_as_value(fails, "w")
    assert result is None and isinstance(in_worker, KeyError)
    assert any("In the worker process" in note for note in in_worker.__notes__)
    here, result = error_as_value(fails, "h", in_worker=False)
    assert result is None and isinstance(here, KeyError) and here.args == ("h",)
    assert not getattr(here, "__notes__", [])
