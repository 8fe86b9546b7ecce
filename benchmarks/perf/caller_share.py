"""Should the calling process take chunks too? ``transform`` with worker processes against a
prototype in which the caller encodes chunks beside one worker fewer.

Usage: python -m benchmarks.perf.caller_share [--set mp36k-test] [--n 1000] [--n-jobs 2]
[--rounds 15] [--json benchmarks/results/perf/caller_share.json]

With ``n_jobs`` workers, ``transform`` (:func:`dimfeat.inputs.build.map_chunks`) sends every
chunk to joblib's worker processes; the calling process only reads the structures into arrays
and collects the vectors, so on two cores three processes share two cores at the start and the
caller idles while the last chunks finish (``benchmarks.perf.worker_timeline`` splits the
time). The prototype here (``shared``) keeps ``n_jobs - 1`` worker processes (a loky
``ProcessPoolExecutor`` of its own: joblib runs a single worker in the calling process) each
with two chunks queued, and has the caller build and encode the next chunk itself (one torch
thread) whenever the workers' queues are full. Both use the same chunks
(:func:`~dimfeat.inputs.build.chunk_bounds`), the same task
(:func:`dimfeat.worker_vectors.vectors_of_chunk`) and the bundled weights; the prototype's
vectors are checked against ``transform``'s. The two take turns ``--rounds`` times (the order
alternating) after a warm-up; the script prints the median rates, the median of the paired
ratios and how many rounds each won, and writes every call's seconds to ``--json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, write_json
from benchmarks.perf.throughput import load_set
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.inputs.build import chunk_bounds, read_for_workers
from dimfeat.runtime import INFERENCE_BATCH_SIZE
from dimfeat.weights import DEFAULT_WEIGHTS
from dimfeat.worker_vectors import EncoderPayload, vectors_of_chunk

#: Chunks queued on each worker while the caller encodes one of its own.
QUEUED = 2


def shared_call(structures: list, settings: tuple, payload, executor, workers: int) -> np.ndarray:
    """Vectors of ``structures``: chunks to ``executor`` while its queues are short, the rest
    built and encoded here with one thread."""
    bounds = chunk_bounds(len(structures), workers + 1)
    pid = os.getpid()

    def run(b: np.ndarray, submit: bool):
        items = [read_for_workers(structures[i], i, "error") for i in b]
        arguments = (items, list(b), settings, payload, INFERENCE_BATCH_SIZE, pid)
        return (
            executor.submit(vectors_of_chunk, *arguments)
            if submit
            else vectors_of_chunk(*arguments)
        )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pending, results, k = {}, {}, 0
        while k < len(bounds):
            if sum(not f.done() for f in pending.values()) < QUEUED * workers:
                pending[k] = run(bounds[k], submit=True)
            else:
                results[k] = run(bounds[k], submit=False)
            k += 1
        results.update({k: f.result() for k, f in pending.items()})
    finally:
        torch.set_num_threads(threads)
    return np.concatenate([results[k][0] for k in range(len(bounds))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="mp36k-test", choices=["sample", "mp36k-test"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=str(RESULTS / "perf" / "caller_share.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from joblib import effective_n_jobs
    from joblib.externals.loky import ProcessPoolExecutor

    workers = effective_n_jobs(args.n_jobs)
    if workers < 2:
        parser.error("needs n_jobs meaning at least two processes")
    structures = load_set(args.set, args.n)
    featurizer = DeepInfoMaxFeaturizer(device="cpu", n_jobs=args.n_jobs)
    runtime = featurizer.get_runtime()
    settings = (runtime.inputs.max_atoms, runtime.inputs.symprec, False, "error")
    payload = EncoderPayload.of(runtime.encoder)
    executor = ProcessPoolExecutor(max_workers=workers - 1)

    def shared(items: list) -> np.ndarray:
        return shared_call(items, settings, payload, executor, workers - 1)

    reference = featurizer.transform(structures)  # warm-up: starts joblib's workers
    change = float(np.abs(shared(structures) - reference).max())  # warm-up: starts the executor's
    print(f"{args.set}: {len(structures)} structures, n_jobs={args.n_jobs}; largest change of "
          f"a vector element from transform's: {change:.2e}")  # fmt: skip
    calls = {"transform": featurizer.transform, "shared": shared}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.rounds):
        for name in list(calls)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            calls[name](structures)
            seconds[name].append(time.perf_counter() - start)
    executor.shutdown()
    ratios = [a / b for a, b in zip(seconds["transform"], seconds["shared"], strict=True)]
    rates = {name: len(structures) / statistics.median(s) for name, s in seconds.items()}
    paired, wins = statistics.median(ratios), sum(r > 1 for r in ratios)
    print(
        f"transform {rates['transform']:.0f} structures/s, shared {rates['shared']:.0f} "
        f"(medians of {args.rounds}); shared over transform: median of the paired ratios "
        f"{paired:.3f}x, faster in {wins} of {args.rounds} rounds"
    )
    write_json(args.json, {
        "benchmark": "transform's worker processes against the caller taking chunks too",
        "weights": DEFAULT_WEIGHTS, "set": args.set, "n_structures": len(structures),
        "n_jobs": args.n_jobs, "rounds": args.rounds, "machine": machine(None),
        "max_abs_change": change, "rates_median": rates,
        "paired_speedup_median": paired, "shared_faster_rounds": wins, "seconds": seconds,
    })  # fmt: skip


if __name__ == "__main__":
    main()
