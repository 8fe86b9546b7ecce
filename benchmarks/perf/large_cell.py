"""Time and peak memory of featurising one very large primitive cell, against the atom count.

Usage: python -m benchmarks.perf.large_cell [--atoms 500 1000 2000] [--baseline REV]
[--baseline-timeout 120] [--json benchmarks/results/perf/large_cell.json]

For each atom count, builds a perturbed NaCl supercell of that many atoms (roughly cubic repeats
of the 2-atom cell; the perturbation, normal with 0.005 Å per coordinate and seed 0, keeps it
from reducing to a smaller primitive cell) and featurises it once with the bundled weights, in a
fresh process per size, so that each peak RSS (library imports included) is that size's own.
It reports the wall time of the whole ``transform`` call, its CPU time (all threads; less
sensitive than the wall time to other load on the machine), the time of the model inputs alone
(:func:`dimfeat.inputs.build_inputs`, measured after the call) and the peak RSS.

``--baseline REV`` measures the package of that git revision (``dimfeat/`` and ``weights/`` as
committed there) the same way, size by size in turn with the current code, and prints the
ratios; a baseline run that exceeds ``--baseline-timeout`` seconds is reported as not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, ROOT, machine_line, write_json


def repeats_for(n_atoms: int) -> tuple[int, int, int]:
    """Repeats (a <= b <= c) of the 2-atom NaCl cell with ``a*b*c*2 == n_atoms``, most cubic."""
    if n_atoms % 2:
        raise ValueError(f"the atom count must be even (2-atom cell), got {n_atoms}")
    cells = n_atoms // 2
    best = None
    for a in range(1, cells + 1):
        for b in range(a, cells // a + 1):
            if cells % (a * b) == 0 and cells // (a * b) >= b:
                c = cells // (a * b)
                if best is None or c - a < best[2] - best[0]:
                    best = (a, b, c)
    return best


def large_cell(n_atoms: int):
    """The perturbed NaCl supercell of ``n_atoms`` atoms."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    cell = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cell.make_supercell(list(repeats_for(n_atoms)))
    noise = np.random.default_rng(0).normal(0, 0.005, (len(cell), 3))
    return Structure(cell.lattice, cell.species, cell.frac_coords + noise)


def measure_one(n_atoms: int) -> dict:
    """Featurise one cell in this process (call in a fresh process)."""
    import resource
    import time
    import warnings

    import numpy as np

    import dimfeat
    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.inputs import build_inputs

    cell = large_cell(n_atoms)
    featurizer = DeepInfoMaxFeaturizer()
    cpu_start = time.process_time()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the documented large-cell warning
        vector = featurizer.transform([cell])
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    inputs = build_inputs(cell)
    inputs_seconds = time.perf_counter() - start
    return {
        "atoms_in_primitive_cell": inputs.n_sites,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "inputs_seconds": round(inputs_seconds, 2),
        "peak_rss_mib": round(peak, 1),
        "finite": bool(np.isfinite(vector).all()),
        "dimfeat": str(Path(dimfeat.__file__).parent),
    }


def run_child(n_atoms: int, pythonpath: Path, timeout: float | None) -> dict:
    """:func:`measure_one` in a fresh interpreter importing dimfeat from ``pythonpath``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), str(ROOT)]))
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(n_atoms)]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.TimeoutExpired:
        return {"finished": False, "timeout_s": timeout}
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(revision: str, folder: Path) -> Path:
    """``dimfeat/`` and ``weights/`` of a git revision, unpacked into ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "dimfeat", "weights"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    parser.add_argument("--baseline-timeout", type=float, default=120.0)
    parser.add_argument("--json", default=str(RESULTS / "perf" / "large_cell.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure_one(args.one)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline_tree(args.baseline, Path(tmp)) if args.baseline else None
        print(
            f"{'atoms':>6} {'seconds':>8} {'CPU s':>7} {'inputs s':>9} {'peak RSS MiB':>13}", end=""
        )
        print(f"  {'baseline s':>10} {'baseline MiB':>12} {'time ratio':>10}" if base else "")
        for n_atoms in args.atoms:
            row = {"atoms": n_atoms, **run_child(n_atoms, ROOT, None)}
            line = (
                f"{n_atoms:>6} {row['seconds']:>8.2f} {row['cpu_seconds']:>7.1f} "
                f"{row['inputs_seconds']:>9.2f} "
                f"{row['peak_rss_mib']:>13.1f}"
            )
            if base is not None:
                old = run_child(n_atoms, base, args.baseline_timeout)
                row["baseline"] = old
                if old.get("finished", True):
                    ratio = old["seconds"] / row["seconds"]
                    row["baseline_time_ratio"] = round(ratio, 1)
                    line += f"  {old['seconds']:>10.2f} {old['peak_rss_mib']:>12.1f} {ratio:>10.1f}"
                else:
                    line += f"  {'> ' + str(int(args.baseline_timeout)):>10} {'-':>12} {'-':>10}"
            print(line, flush=True)
            rows.append(row)
    result = {
        "cell": "perturbed NaCl supercell (normal 0.005 Å, seed 0), bundled weights, 1 process",
        "baseline": args.baseline,
        "rows": rows,
        "machine": machine_line(),
        "load_average": os.getloadavg(),
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
