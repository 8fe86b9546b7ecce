"""Should the calling process take chunks too? The two schedules of the worker path of
``transform``: joblib's workers alone, and the caller beside one worker fewer.

Usage: python -m benchmarks.perf.caller_share [--set mp36k-test] [--n 1000] [--n-jobs 2]
[--rounds 45] [--any-size] [--json benchmarks/results/perf/caller_share.json]

With ``n_jobs`` processes on the CPU, each chunk of structures is built and encoded by
:func:`dimfeat.worker_vectors.vectors_of_chunk`, dispatched by
:func:`dimfeat.inputs.build.map_chunks` in one of two ways:

* ``joblib`` (``caller_shares=False``): every chunk goes to ``n_jobs`` joblib worker processes;
  the calling process only reads the structures into arrays and collects the vectors, so on
  two cores three processes share the cores at the start and the caller idles while the last
  chunks finish (``benchmarks.perf.worker_timeline`` splits the time);
* ``shared`` (``caller_shares=True``): ``n_jobs - 1`` worker processes of dimfeat's own pool
  keep two chunks queued each, and the caller builds and encodes the next chunk itself (one
  torch thread for the whole call) whenever their queues are full
  (:func:`dimfeat._workers.shared_with_caller`), in calls of at least
  :data:`~dimfeat.inputs.build.MIN_SHARED_CHUNKS` chunks; ``--any-size`` lifts that bound, to
  measure the shared schedule on smaller calls (how the bound was chosen: 512 crystals).

Both use the same chunks (:func:`~dimfeat.inputs.build.chunk_bounds`) and the bundled weights,
and their vectors are compared. The two take turns ``--rounds`` times (the order alternating)
after a warm-up; the script prints the median rates, the median of the paired ratios and how
many rounds each won, and writes every call's seconds to ``--json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

from benchmarks.common import RESULTS, machine, write_json
from benchmarks.perf.throughput import load_set
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.inputs import build
from dimfeat.inputs.build import map_chunks
from dimfeat.runtime import INFERENCE_BATCH_SIZE
from dimfeat.weights import DEFAULT_WEIGHTS
from dimfeat.worker_vectors import EncoderPayload, vectors_of_chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="mp36k-test", choices=["sample", "mp36k-test"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--any-size", action="store_true", help="share calls of any size")
    parser.add_argument("--json", default=str(RESULTS / "perf" / "caller_share.json"))
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

    def call(caller_shares: bool) -> np.ndarray:
        chunks = map_chunks(
            vectors_of_chunk, structures, positions, args.n_jobs, "error",
            settings, payload, INFERENCE_BATCH_SIZE, os.getpid(), caller_shares=caller_shares,
        )  # fmt: skip
        return np.concatenate([vectors for _, (vectors, *_) in chunks])

    schedules = {"joblib": False, "shared": True}
    first = {name: call(shares) for name, shares in schedules.items()}  # warm-up: the workers
    change = float(np.abs(first["shared"] - first["joblib"]).max())
    print(f"{args.set}: {len(structures)} structures, n_jobs={args.n_jobs}; largest difference "
          f"of a vector element between the schedules: {change:.2e}")  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in schedules}
    for r in range(args.rounds):
        for name in list(schedules)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            call(schedules[name])
            seconds[name].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(seconds["joblib"], seconds["shared"], strict=True)]
    rates = {name: len(structures) / statistics.median(s) for name, s in seconds.items()}
    paired, wins = statistics.median(ratios), sum(r > 1 for r in ratios)
    print(
        f"joblib {rates['joblib']:.0f} structures/s, shared {rates['shared']:.0f} (medians of "
        f"{args.rounds}); shared over joblib: median of the paired ratios {paired:.3f}x, "
        f"faster in {wins} of {args.rounds} rounds"
    )
    write_json(args.json, {
        "benchmark": "the worker path's schedules: joblib's workers alone, the caller sharing",
        "weights": DEFAULT_WEIGHTS, "set": args.set, "n_structures": len(structures),
        "n_jobs": args.n_jobs, "rounds": args.rounds, "any_size": args.any_size,
        "min_shared_chunks": build.MIN_SHARED_CHUNKS, "machine": machine(None),
        "max_abs_difference": change, "rates_median": rates,
        "paired_speedup_median": paired, "shared_faster_rounds": wins, "seconds": seconds,
    })  # fmt: skip


if __name__ == "__main__":
    main()
