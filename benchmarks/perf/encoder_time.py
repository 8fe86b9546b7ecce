"""CPU time of the encoder alone, against a git revision, and how far the vectors move.

Usage: python -m benchmarks.perf.encoder_time [--sets sample mp36k-test] [--n 1000]
[--baseline REV] [--rounds 5] [--json PATH]

For each set of ``benchmarks.perf.throughput``, a fresh interpreter with the ``dimfeat/`` and
``weights/`` of this checkout or, with ``--baseline REV``, of that git revision builds the model
inputs of ``--n`` crystals (not timed) and runs :meth:`dimfeat.runtime.EncoderRuntime.encode`
on them (bundled weights, both channels, the batches ``transform`` makes): one thread
(``OMP_NUM_THREADS=1``), CPU seconds (``time.process_time``), the least of three passes after a
warm-up. The two take turns ``--rounds`` times, so that both see the same load; the run prints
the median of each, the median of the paired ratios, and the largest change of a crystal vector
from the baseline's, relative to the vector's largest value. The JSON (default
``benchmarks/results/perf/encoder_time.json``) keeps every round.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import (
    machine_line,
    revision_arguments,
    revision_env,
    sets_taking_turns,
    write_json,
)


def measure(structures: list, vectors_path: Path, passes: int = 3) -> dict:
    """Least CPU seconds of encoding the inputs of ``structures`` over ``passes`` (after a
    warm-up), with the ``dimfeat`` this interpreter imports (which builds the inputs too, not
    timed); the vectors are saved to ``vectors_path``."""
    import torch

    from dimfeat import DeepInfoMaxFeaturizer

    torch.set_num_threads(1)
    runtime = DeepInfoMaxFeaturizer(device="cpu").get_runtime()
    inputs, _ = runtime.build(structures)
    vectors = runtime.encode(inputs, device="cpu")  # warm-up
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        vectors = runtime.encode(inputs, device="cpu")
        best = min(best, time.process_time() - start)
    np.save(vectors_path, vectors)
    return {"seconds": best}


def run_child(tree: Path | None, structures: Path, vectors: Path) -> float:
    """:func:`measure` in a fresh interpreter importing the ``dimfeat`` of ``tree`` (``None``:
    this checkout's), on the pickled structures; its error output is raised if it fails."""
    env = revision_env(tree, OMP_NUM_THREADS="1")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(structures)]
    done = subprocess.run(
        [*command, str(vectors)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the encoder_time child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    revision_arguments(parser, json_name="encoder_time.json", rounds=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.child:
        structures = pickle.loads(Path(args.child[0]).read_bytes())
        print(json.dumps(measure(structures, Path(args.child[1]))))
        return

    out: dict = {
        "benchmark": "encoder CPU time (EncoderRuntime.encode, one thread) against a revision",
        "machine": machine_line(), "weights": "sitenet-dim-mp36k", "baseline": args.baseline,
        "n": args.n, "rounds": args.rounds, "sets": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = args.baseline

        def run(name: str, label: str, tree: Path | None, stored: Path) -> float:
            return run_child(tree, stored, Path(tmp) / f"{name}_{label}.npy")

        turns = sets_taking_turns(args.sets, args.n, Path(tmp), base, args.rounds, run)
        for name, rounds in turns:
            entry: dict = {"rounds": rounds}
            entry["median_s"] = {label: statistics.median(v) for label, v in rounds.items()}
            line = f"{name} ({args.n} crystals): encoder {entry['median_s']['current']:.3f} s CPU"
            if base is not None:
                paired = statistics.median(
                    b / c for b, c in zip(rounds["baseline"], rounds["current"], strict=True)
                )
                new = np.load(Path(tmp) / f"{name}_current.npy").astype(np.float64)
                old = np.load(Path(tmp) / f"{name}_baseline.npy").astype(np.float64)
                change = np.abs(new - old).max(axis=1) / np.abs(old).max(axis=1)
                entry["paired_speedup_median"] = paired
                entry["vector_change_max"] = float(change.max())
                entry["vector_change_median"] = float(np.median(change))
                line += (
                    f", baseline {entry['median_s']['baseline']:.3f} s (median of {args.rounds});"
                    f" paired speed-up {paired:.2f}x; vectors moved by at most "
                    f"{change.max():.1e} of their largest value (median {np.median(change):.1e})"
                )
            print(line)
            out["sets"][name] = entry
    write_json(args.json, out)


if __name__ == "__main__":
    main()
