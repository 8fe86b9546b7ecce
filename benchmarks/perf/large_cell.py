"""Time and peak memory of featurising one very large primitive cell, against the atom count.

Usage: python -m benchmarks.perf.large_cell [--atoms 500 1000 2000 4000 6000 8000 10000]
[--baseline REV] [--baseline-timeout 120] [--json benchmarks/results/perf/large_cell.json]

For each atom count ``N``, builds a perturbed NaCl supercell of that many atoms (roughly cubic
repeats of the 2-atom cell; the perturbation, normal with 0.005 Å per coordinate and seed 0, keeps
it from reducing to a smaller primitive cell, and makes every site's environment its own, so no
sites are merged: the worst case) and featurises it once with the bundled weights, in a fresh
process per size, so that each peak RSS (library imports included) is that size's own.
It reports the wall time of the whole ``transform`` call, its CPU time (all threads; less
sensitive than the wall time to other load on the machine), the time of the model inputs alone
(:func:`dimfeat.inputs.build_inputs`, measured after the call), the encoder's stages within the
call (grouping equivalent sites, collating, the model), the RSS before the call (imports and
weights) and the peak RSS.

A cell of ``N > max_atoms`` atoms is its own supercell, so the inputs and the encoder work on
all ``N^2`` (site, atom) pairs. The table therefore also gives the CPU time per pair (µs) and the
memory the call added per pair (bytes, peak RSS less the RSS before), and the script fits the
cost model ``CPU seconds = a + b N^2`` and ``peak RSS = base + c N^2`` (least squares on the rows
of 2,000 atoms or more, where the ``N^2`` terms dominate) and stores it with the rows
(``cost_model``; see docs/method.md).

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

from benchmarks.common import RESULTS, ROOT, baseline_tree, machine_line, revision_env, write_json


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


def _rss_mib() -> float:
    """Resident set size of this process now (MiB), from ``/proc/self/statm`` (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_one(n_atoms: int) -> dict:
    """Featurise one cell in this process (call in a fresh process)."""
    import functools
    import resource
    import time
    import warnings

    import numpy as np
    import torch

    import dimfeat
    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.inputs import build_inputs
    from dimfeat.runtime import EncoderRuntime

    cell = large_cell(n_atoms)
    featurizer = DeepInfoMaxFeaturizer()
    runtime = featurizer.get_runtime()  # loads the weights before the RSS is read
    stages: dict[str, float] = {}
    encode = EncoderRuntime.encode  # record the encoder stages of this call (this process only)
    EncoderRuntime.encode = functools.partialmethod(encode, timings=stages)
    rss_before = _rss_mib()
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
        "pairs": inputs.n_sites * inputs.n_atoms,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "inputs_seconds": round(inputs_seconds, 2),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak, 1),
        "torch_threads": torch.get_num_threads(),
        "finite": bool(np.isfinite(vector).all()),
        "weights": featurizer.weights,
        "weights_sha256": runtime.config.get("sha256"),
        "dimfeat": str(Path(dimfeat.__file__).parent),
    }


def per_pair(row: dict) -> tuple[float, float]:
    """CPU microseconds and added bytes (peak RSS less the RSS before the call) per pair."""
    pairs = row["pairs"]
    added = (row["peak_rss_mib"] - row["rss_before_mib"]) * 2**20
    return 1e6 * row["cpu_seconds"] / pairs, added / pairs


def fit_cost_model(rows: list[dict], min_atoms: int = 2000) -> dict:
    """Least-squares fit of ``CPU seconds = a + b N^2`` and ``peak RSS = base + c N^2``.

    Parameters
    ----------
    rows : list of dict
        Measured rows (``atoms``, ``pairs``, ``cpu_seconds``, ``peak_rss_mib``).
    min_atoms : int, default=2000
        Rows with fewer atoms are left out when at least two atom counts remain (below it the
        constant terms, imports and weights, dominate).

    Raises
    ------
    ValueError
        If the rows hold fewer than two atom counts.

    Returns
    -------
    dict
        ``cpu_seconds_per_pair_us`` (``b``, µs), ``cpu_seconds_constant`` (``a``),
        ``rss_bytes_per_pair`` (``c``), ``rss_base_mib`` (``base``) and the ``atoms`` fitted.
    """
    import numpy as np

    used = [r for r in rows if r["atoms"] >= min_atoms]
    if len({r["atoms"] for r in used}) < 2:
        used = list(rows)
    sizes = sorted({r["atoms"] for r in used})
    if len(sizes) < 2:
        raise ValueError(f"the cost model needs two atom counts or more, got {sizes}")
    pairs = np.array([r["pairs"] for r in used], dtype=float)
    design = np.column_stack([np.ones_like(pairs), pairs])
    cpu = np.linalg.lstsq(design, [r["cpu_seconds"] for r in used], rcond=None)[0]
    rss = np.linalg.lstsq(design, [r["peak_rss_mib"] for r in used], rcond=None)[0]
    return {
        "atoms": [r["atoms"] for r in used],
        "cpu_seconds_constant": round(float(cpu[0]), 2),
        "cpu_seconds_per_pair_us": round(float(cpu[1]) * 1e6, 3),
        "rss_base_mib": round(float(rss[0]), 1),
        "rss_bytes_per_pair": round(float(rss[1]) * 2**20, 1),
    }


def run_child(n_atoms: int, pythonpath: Path, timeout: float | None) -> dict:
    """:func:`measure_one` in a fresh interpreter importing dimfeat from ``pythonpath``."""
    env = revision_env(pythonpath)
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(n_atoms)]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.TimeoutExpired:
        return {"finished": False, "timeout_s": timeout}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--atoms", type=int, nargs="+", default=[500, 1000, 2000, 4000, 6000, 8000, 10000]
    )
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
            f"{'atoms':>6} {'seconds':>8} {'CPU s':>7} {'inputs s':>9} {'model s':>8} "
            f"{'peak RSS MiB':>13} {'CPU µs/pair':>12} {'B/pair':>7}",
            end="",
        )
        print(f"  {'baseline s':>10} {'baseline MiB':>12} {'time ratio':>10}" if base else "")
        for n_atoms in args.atoms:
            row = {"atoms": n_atoms, **run_child(n_atoms, ROOT, None)}
            micro, added = per_pair(row)
            row["cpu_us_per_pair"], row["rss_bytes_per_pair"] = round(micro, 3), round(added, 1)
            line = (
                f"{n_atoms:>6} {row['seconds']:>8.2f} {row['cpu_seconds']:>7.1f} "
                f"{row['inputs_seconds']:>9.2f} {row['stage_seconds'].get('model', 0.0):>8.2f} "
                f"{row['peak_rss_mib']:>13.1f} {micro:>12.3f} {added:>7.1f}"
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
    model = fit_cost_model(rows) if len({r["atoms"] for r in rows}) > 1 else None
    if model is not None:
        print(
            f"cost model (rows of {', '.join(map(str, model['atoms']))} atoms): CPU seconds = "
            f"{model['cpu_seconds_constant']} + {model['cpu_seconds_per_pair_us']} µs x N^2; "
            f"peak RSS = {model['rss_base_mib']} MiB + {model['rss_bytes_per_pair']} B x N^2"
        )
    result = {
        "cell": "perturbed NaCl supercell (normal 0.005 Å, seed 0), one process per size",
        "weights": rows[0].get("weights") if rows else None,
        "weights_sha256": rows[0].get("weights_sha256") if rows else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "note": (
            "measured on a machine shared with other running jobs: the wall seconds include "
            "waiting for a core; CPU seconds (and CPU µs per pair) are the figures to trust"
        ),
        "baseline": args.baseline,
        "rows": rows,
        "cost_model": model,
        "machine": machine_line(),
        "load_average": os.getloadavg(),
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
