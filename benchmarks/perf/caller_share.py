"""Should the calling process take chunks too, and in which chunks? The schedules of the
worker path of ``transform``: joblib's workers alone, and the caller beside one worker fewer,
with equal chunks or with the last ones cut smaller.

Usage: python -m benchmarks.perf.caller_share [--set mp36k-test] [--n 1000] [--n-jobs 2]
[--rounds 45] [--any-size] [--json benchmarks/results/perf/caller_share.json]

With ``n_jobs`` processes on the CPU, each chunk of structures is built and encoded by
:func:`dimfeat.worker_vectors.vectors_of_chunk`, dispatched by
:func:`dimfeat.inputs.build.map_chunks` in one of three ways:

* ``joblib`` (``caller_shares=False``): every chunk goes to ``n_jobs`` joblib worker processes;
  the calling process only reads the structures into arrays and collects the vectors, so on
  two cores three processes share the cores at the start and the caller idles while the last
  chunks finish (``benchmarks.perf.worker_timeline`` splits the time);
* ``shared`` (``caller_shares=True``): ``n_jobs - 1`` worker processes of dimfeat's own pool
  keep two chunks queued each, and the caller builds and encodes the next chunk itself (one
  torch thread for the whole call) whenever their queues are full
  (:func:`dimfeat._workers.shared_with_caller`), in calls of at least
  :data:`~dimfeat.inputs.build.MIN_SHARED_CHUNKS` chunks (``--any-size`` lifts that bound). Its
  chunks are :func:`~dimfeat.inputs.build.chunk_bounds`' with the last two cut into pieces
  that shrink (:func:`~dimfeat.inputs.build.tapered_bounds`), as ``transform`` runs it;
* ``shared_equal``: the same with :func:`~dimfeat.inputs.build.chunk_bounds`' equal chunks of
  at most 128 (the schedule before the tapered chunks).

All use the bundled weights, and their vectors are compared. The three take turns ``--rounds``
times (the order reversed every other round) after a warm-up; the script prints the median
rates, the medians of the paired ratios (``shared`` over the two others, ``shared_equal`` over
``joblib``) and how many rounds the faster won, and writes every call's seconds to ``--json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

from benchmarks.common import load_set, machine, worker_path_arguments, write_json
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.inputs import build
from dimfeat.inputs.build import chunk_bounds, map_chunks
from dimfeat.runtime import INFERENCE_BATCH_SIZE
from dimfeat.weights import DEFAULT_WEIGHTS
from dimfeat.worker_vectors import EncoderPayload, vectors_of_chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    worker_path_arguments(parser, json_name="caller_share.json", rounds=45)
    parser.add_argument("--any-size", action="store_true", help="share calls of any size")
    args = parser.parse_args()
    if args.any_size:
        build.MIN_SHARED_CHUNKS = 1
    warnings.filterwarnings("ignore")
    from joblib import effective_n_jobs

    if effective_n_jobs(args.n_jobs) < 2:
        parser.error("needs n_jobs meaning at least two processes")
    structures = load_set(args.set, args.n)
    runtime = DeepInfoMaxFeaturizer(device="cpu").get_runtime()
    settings = (runtime.inputs.max_atoms, runtime.inputs.symprec, False, "error")
    payload = EncoderPayload.of(runtime.encoder)
    positions = list(range(len(structures)))

    equal = chunk_bounds(len(structures), args.n_jobs)
    schedules = {"joblib": (False, None), "shared": (True, None), "shared_equal": (True, equal)}

    def call(name: str) -> tuple[np.ndarray, list[int]]:
        """The vectors, and the size of each chunk run."""
        caller_shares, bounds = schedules[name]
        chunks = list(map_chunks(
            vectors_of_chunk, structures, positions, args.n_jobs, "error", settings, payload,
            INFERENCE_BATCH_SIZE, os.getpid(), bounds=bounds, caller_shares=caller_shares,
        ))  # fmt: skip
        starts = [start for start, _ in chunks] + [len(structures)]
        vectors = np.concatenate([vectors for _, (vectors, *_) in chunks])
        return vectors, np.diff(starts).tolist()

    first = {name: call(name) for name in schedules}  # warm-up: the workers
    sizes = {name: chunk_sizes for name, (_, chunk_sizes) in first.items()}
    change = max(float(np.abs(v - first["joblib"][0]).max()) for v, _ in first.values())
    print(f"{args.set}: {len(structures)} structures, n_jobs={args.n_jobs}; largest difference "
          f"of a vector element between the schedules: {change:.2e}")  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in schedules}
    for r in range(args.rounds):
        for name in list(schedules)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            call(name)
            seconds[name].append(time.perf_counter() - start)
    rates = {name: len(structures) / statistics.median(s) for name, s in seconds.items()}
    print(", ".join(f"{name} {rate:.0f}" for name, rate in rates.items()),
          f"structures/s (medians of {args.rounds})")  # fmt: skip
    paired, wins = {}, {}
    for faster, slower in (("shared", "joblib"), ("shared", "shared_equal"),
                           ("shared_equal", "joblib")):  # fmt: skip
        ratios = [a / b for a, b in zip(seconds[slower], seconds[faster], strict=True)]
        key = f"{faster}_over_{slower}"
        paired[key], wins[key] = statistics.median(ratios), sum(r > 1 for r in ratios)
        print(f"{faster} over {slower}: median of the paired ratios {paired[key]:.3f}x, faster "
              f"in {wins[key]} of {args.rounds} rounds")  # fmt: skip
    write_json(args.json, {
        "benchmark": "the worker path's schedules: joblib's workers alone, the caller sharing "
        "with tapered or equal chunks",
        "weights": DEFAULT_WEIGHTS, "set": args.set, "n_structures": len(structures),
        "n_jobs": args.n_jobs, "rounds": args.rounds, "any_size": args.any_size,
        "min_shared_chunks": build.MIN_SHARED_CHUNKS, "machine": machine(None),
        "chunk_sizes": sizes,
        "max_abs_difference": change, "rates_median": rates,
        "paired_speedup_median": paired, "faster_rounds": wins, "seconds": seconds,
    })  # fmt: skip


if __name__ == "__main__":
    main()
