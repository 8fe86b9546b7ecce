"""CPU time of each stage of building model inputs, against a git revision, and whether the
inputs are identical.

Usage: python -m benchmarks.perf.input_stages [--sets sample mp36k-test] [--n 1000]
[--baseline REV] [--rounds 3] [--json PATH]

The stages are those of ``benchmarks.perf.throughput`` (``breakdown``): structure extraction
(``inputs.structure_cell`` and the element check), cell reduction (``inputs.canonical_cell``)
and supercell + distances (the rest of ``inputs.build_inputs``), here in CPU seconds
(``time.process_time``, so that other jobs on a shared machine count less), one thread
(``OMP_NUM_THREADS=1``), the least of three passes over the structures. Each measurement runs in
a fresh interpreter with the ``dimfeat/`` of this checkout or, with ``--baseline REV``, of that
git revision; the two take turns ``--rounds`` times, and the JSON (default
``benchmarks/results/perf/input_stages.json``) keeps every round. Every crystal's
``CrystalInputs`` (species, atom sites, float32 distances) is hashed in each interpreter, and the
run reports how many differ from the baseline's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.common import (
    machine_line,
    revision_arguments,
    revision_env,
    sets_taking_turns,
    write_json,
)

STAGES = ("extract", "cell_reduction", "supercell_distances")


def measure(structures: list, passes: int = 3) -> dict:
    """Stage seconds (least of ``passes``) and a digest of each crystal's inputs, with the
    ``dimfeat`` this interpreter imports."""
    from dimfeat import inputs
    from dimfeat.elements import check_atomic_numbers

    clock = time.process_time
    best = dict.fromkeys(STAGES, float("inf"))
    digests = []
    for _ in range(passes):
        spent = dict.fromkeys(STAGES, 0.0)
        digests = []
        for k, structure in enumerate(structures):
            t0 = clock()
            lattice, frac, numbers = inputs.structure_cell(structure, k)
            check_atomic_numbers(numbers)
            t1 = clock()
            inputs.canonical_cell(lattice, frac, numbers, 0.01)
            t2 = clock()
            crystal = inputs.build_inputs(structure)
            t3 = clock()
            spent["extract"] += t1 - t0
            spent["cell_reduction"] += t2 - t1
            # build_inputs repeats extraction and reduction: the remainder is supercell + distances
            spent["supercell_distances"] += max((t3 - t2) - (t2 - t0), 0.0)
            parts = (crystal.species, crystal.atom_site, crystal.distances)
            digests.append(hashlib.sha256(b"".join(a.tobytes() for a in parts)).hexdigest())
        best = {key: min(best[key], spent[key]) for key in STAGES}
    return {"seconds": best, "digests": digests}


def run_child(tree: Path | None, structures: Path) -> dict:
    """:func:`measure` in a fresh interpreter importing the ``dimfeat`` of ``tree``."""
    env = revision_env(tree, OMP_NUM_THREADS="1")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(structures)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    revision_arguments(parser, json_name="input_stages.json", rounds=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        warnings.filterwarnings("ignore")
        structures = pickle.loads(Path(args.child).read_bytes())
        print(json.dumps(measure(structures)))
        return

    out: dict = {"machine": machine_line(), "baseline": args.baseline, "n": args.n, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:

        def run(name: str, label: str, tree: Path | None, stored: Path) -> dict:
            return run_child(tree, stored)

        turns = sets_taking_turns(args.sets, args.n, Path(tmp), args.baseline, args.rounds, run)
        for name, results in turns:
            rounds = {label: [r["seconds"] for r in runs] for label, runs in results.items()}
            digests = {label: runs[-1]["digests"] for label, runs in results.items()}
            summary = {
                label: {key: min(r[key] for r in runs) for key in STAGES}
                for label, runs in rounds.items()
            }
            entry = {"rounds": rounds, "least": summary}
            line = ", ".join(f"{k} {v:.3f} s" for k, v in summary["current"].items())
            print(f"{name} ({args.n} structures, CPU s, least of {args.rounds}): {line}")
            if args.baseline is not None:
                changed = sum(
                    a != b for a, b in zip(digests["current"], digests["baseline"], strict=True)
                )
                entry["inputs_differing_from_baseline"] = changed
                old = summary["baseline"]
                print("  baseline: " + ", ".join(f"{k} {v:.3f} s" for k, v in old.items()))
                print(
                    "  ratio baseline/current: "
                    + ", ".join(f"{k} {old[k] / summary['current'][k]:.2f}x" for k in STAGES)
                    + f"; total {sum(old.values()) / sum(summary['current'].values()):.2f}x; "
                    f"{changed} of {len(digests['current'])} crystals' inputs differ"
                )
            out["sets"][name] = entry
    write_json(args.json, out)


if __name__ == "__main__":
    main()
