"""Where the worker path's time goes: a task timeline of ``transform`` with ``n_jobs`` workers.

Usage: python -m benchmarks.perf.worker_timeline [--set mp36k-test] [--n 1000] [--n-jobs 2]
[--rounds 5] [--json benchmarks/results/perf/worker_timeline.json]

With ``n_jobs`` worker processes on the CPU, each worker builds and encodes a chunk of
structures (:func:`dimfeat.worker_vectors.vectors_of_chunk`, dispatched by
:func:`dimfeat.inputs.build.map_chunks` to joblib's workers alone: ``transform``'s path until
the calling process took chunks too, ``benchmarks.perf.caller_share``, after this timeline).
This script runs that path on ``--n`` structures of a
set of ``benchmarks.perf.throughput`` (bundled weights), with each task timed inside its worker
(wall clock at its start and end, and the worker thread's CPU time), and splits the call's wall
time into

* ``floor``: the CPU time of the same work in one process with one thread (inputs built, then
  encoded chunk by chunk as a worker does; measured just before each call, so that both see
  the same phase of a machine whose speed drifts), divided by the number of workers: the wall
  time of perfectly shared work;
* ``start``: from the call to a worker's first task (reading the first chunks, dispatch);
* ``slower tasks``: a worker's task time (``busy``) beyond ``floor``, split into the time its
  tasks waited for a core (their wall time beyond their thread's CPU time: the calling process,
  which reads the structures and collects the vectors, shares the cores) and the CPU time they
  took beyond the serial work;
* ``gaps``: time between a worker's tasks (receiving the next task, sending the last result);
* ``tail``: from a worker's last task end to the call's end (waiting for the other workers'
  last chunks, and collecting them);

each averaged over the workers, so that ``wall = start + floor + slower tasks + gaps + tail``
(``wall`` is one worker's whole call: it is either starting, running a task, between tasks or
done);

for two ways to cut a call into chunks, taking turns ``--rounds`` times after a warm-up:

* ``equal``: :func:`dimfeat.inputs.build.chunk_bounds`, the rule in use: at most
  ``CHUNK_STRUCTURES`` (128) each and at least one chunk per worker, all of nearly equal size;
* ``guided``: full chunks while much is left, then each at most ``1 / (4 * workers)`` of what
  is left, down to ``MIN_CHUNK_STRUCTURES`` (16), so that the workers finish together (1,000
  structures on two workers: 23 chunks, from 125 down to 16, and a last one of 20).

It prints the means over the rounds (so that the parts add up to the wall time), the median of
the paired ratios of the two rules' wall times and how many rounds each won, and writes them,
with every call's task spans, to ``--json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
import warnings

import numpy as np
import torch

from benchmarks.common import load_set, machine, worker_path_arguments, write_json
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.encoder import composition_memo, pair_tables_of
from dimfeat.inference import run_batches
from dimfeat.inputs.build import (
    CHUNK_STRUCTURES,
    MIN_CHUNK_STRUCTURES,
    build_chunk,
    chunk_bounds,
    map_chunks,
    read_for_workers,
)
from dimfeat.worker_vectors import EncoderPayload, vectors_of_chunk

#: ``guided`` chunks hold at most this share of what is left, per worker.
GUIDED_SHARE = 4


def guided_bounds(n_structures: int, n_jobs: int) -> list[np.ndarray]:
    """Chunks that shrink towards the end of the call (see the module docstring)."""
    from joblib import effective_n_jobs

    share = GUIDED_SHARE * max(1, effective_n_jobs(n_jobs))
    sizes: list[int] = []
    left = n_structures
    while left > 0:
        size = min(CHUNK_STRUCTURES, max(MIN_CHUNK_STRUCTURES, -(-left // share)))
        if left - size < MIN_CHUNK_STRUCTURES:  # no chunk under the minimum: it joins this one
            size = left
        sizes.append(size)
        left -= size
    edges = np.cumsum([0, *sizes]).tolist()
    return [np.arange(a, b) for a, b in itertools.pairwise(edges)]


def timed_task(*args):
    """:func:`vectors_of_chunk` in a worker, with its start and end (wall clock), its thread's CPU
    time and the worker's process id; its result goes back too, as in ``transform``."""
    start, cpu = time.time(), time.thread_time()
    result = vectors_of_chunk(*args)
    return start, time.time(), time.thread_time() - cpu, os.getpid(), result


def serial_seconds(structures: list, runtime, bounds: list[np.ndarray]) -> float:
    """CPU seconds of building and encoding ``structures`` chunk by chunk in this process, one
    thread (the work of the workers, without the processes)."""
    encoder = runtime.encoder
    tables = pair_tables_of(encoder)
    items = [read_for_workers(s, i, "error") for i, s in enumerate(structures)]
    settings = runtime.inputs
    start = time.process_time()
    for b in bounds:
        inputs, _, _ = build_chunk(
            [items[i] for i in b], b.tolist(), settings.max_atoms, settings.symprec, False
        )
        with composition_memo(encoder, tables):
            run_batches(inputs, encoder, encoder.config.global_dim, device=torch.device("cpu"))
    return time.process_time() - start


def one_call(structures: list, runtime, payload, n_jobs: int, bounds) -> dict:
    """One worker-path call: its wall time and the timeline of its tasks."""
    settings = (runtime.inputs.max_atoms, runtime.inputs.symprec, False, "error")
    positions = list(range(len(structures)))
    began = time.time()
    chunks = map_chunks(
        timed_task, structures, positions, n_jobs, "error",
        settings, payload, 256, os.getpid(), bounds=bounds,
    )  # fmt: skip
    tasks = [result[:4] for _, result in chunks]
    ended = time.time()
    workers: dict[int, list[tuple[float, float]]] = {}
    for start, end, _, pid in tasks:
        workers.setdefault(pid, []).append((start - began, end - began))
    firsts, gaps, lasts = [], [], []
    for spans in workers.values():
        spans.sort()
        firsts.append(spans[0][0])
        gaps.append(sum(b[0] - a[1] for a, b in itertools.pairwise(spans)))
        lasts.append(ended - began - spans[-1][1])
    # each averaged over the workers: wall = start + busy + gaps + tail
    return {
        "wall_s": ended - began,
        "chunks": len(bounds),
        "workers_used": len(workers),
        "task_s": sum(end - start for start, end, _, _ in tasks),
        "task_cpu_s": sum(cpu for _, _, cpu, _ in tasks),
        "busy_s": sum(end - start for start, end, _, _ in tasks) / len(workers),
        "start_s": statistics.mean(firsts),
        "gaps_s": statistics.mean(gaps),
        "tail_s": statistics.mean(lasts),
        "spans": {str(pid): spans for pid, spans in workers.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    worker_path_arguments(parser, json_name="worker_timeline.json", rounds=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from joblib import effective_n_jobs

    workers = effective_n_jobs(args.n_jobs)
    structures = load_set(args.set, args.n)
    runtime = DeepInfoMaxFeaturizer(device="cpu").get_runtime()
    payload = EncoderPayload.of(runtime.encoder)
    rules = {"equal": chunk_bounds, "guided": guided_bounds}
    bounds = {name: rule(len(structures), args.n_jobs) for name, rule in rules.items()}

    def serial(b: list[np.ndarray]) -> float:
        """:func:`serial_seconds` with one torch thread, then the caller's threads back."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return serial_seconds(structures, runtime, b)
        finally:
            torch.set_num_threads(threads)

    serial(bounds["equal"])  # warm-up
    for b in bounds.values():  # warm-up: start the workers, rebuild the encoder in each
        one_call(structures, runtime, payload, args.n_jobs, b)
    rounds: dict[str, list[dict]] = {name: [] for name in rules}
    serial_rounds: dict[str, list[float]] = {name: [] for name in rules}
    for _ in range(args.rounds):  # each rule's serial work and worker call side by side
        for name, b in bounds.items():
            serial_rounds[name].append(serial(b))
            rounds[name].append(one_call(structures, runtime, payload, args.n_jobs, b))
    serial_cpu = {name: statistics.mean(v) for name, v in serial_rounds.items()}

    summary = {}
    print(
        f"{args.set}: {len(structures)} structures, {workers} workers, mean of {args.rounds} "
        "calls (seconds; wall = floor + start + slower + gaps + tail; rate in structures/s)"
    )
    print(f"{'chunks':>8} {'n':>4} {'wall':>6} {'rate':>6} {'floor':>6} {'start':>6} "
          f"{'slower':>7} {'gaps':>6} {'tail':>6} {'busy':>5}")  # fmt: skip
    for name, calls in rounds.items():
        # means, so that the parts add up to the wall time
        mean = {k: statistics.mean(c[k] for c in calls) for k in calls[0] if k != "spans"}
        floor = serial_cpu[name] / workers
        row = {
            **mean,
            "rate": len(structures) / mean["wall_s"],
            "serial_cpu_s": serial_cpu[name],
            "floor_s": floor,
            "slower_tasks_s": mean["busy_s"] - floor,
            # split per worker: waiting for a core (task wall time over its thread's CPU time)
            # and CPU time beyond the serial work
            "slower_waiting_s": (mean["task_s"] - mean["task_cpu_s"]) / workers,
            "slower_extra_cpu_s": (mean["task_cpu_s"] - serial_cpu[name]) / workers,
            "busy_fraction": mean["busy_s"] / mean["wall_s"],
        }
        summary[name] = row
        print(
            f"{name:>8} {mean['chunks']:4.0f} {mean['wall_s']:6.3f} {row['rate']:6.0f} "
            f"{floor:6.3f} {mean['start_s']:6.3f} {row['slower_tasks_s']:7.3f} "
            f"{mean['gaps_s']:6.3f} {mean['tail_s']:6.3f} {row['busy_fraction']:5.2f}"
        )
    for name, row in summary.items():
        print(
            f"{name}: slower tasks = {row['slower_waiting_s']:.3f} s waiting for a core + "
            f"{row['slower_extra_cpu_s']:.3f} s of CPU beyond the serial work (per worker)"
        )
    ratio = summary["guided"]["rate"] / summary["equal"]["rate"]
    paired = statistics.median(
        e["wall_s"] / g["wall_s"] for e, g in zip(rounds["equal"], rounds["guided"], strict=True)
    )
    wins = sum(
        g["wall_s"] < e["wall_s"] for e, g in zip(rounds["equal"], rounds["guided"], strict=True)
    )
    print(
        f"guided over equal: {ratio:.2f}x (median of the paired ratios {paired:.2f}x; guided "
        f"faster in {wins} of {args.rounds} rounds)"
    )
    write_json(args.json, {
        "benchmark": "worker path task timeline: equal chunks against guided chunks",
        "weights": "sitenet-dim-mp36k", "set": args.set, "n_structures": len(structures),
        "n_jobs": args.n_jobs, "workers": workers, "rounds": args.rounds,
        "machine": machine(None), "summary": summary,
        "paired_speedup_median": paired, "guided_faster_rounds": wins,
        "calls": rounds, "serial_cpu_s": serial_rounds,
    })  # fmt: skip


if __name__ == "__main__":
    main()
