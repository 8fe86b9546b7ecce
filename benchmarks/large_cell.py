"""Time and peak memory of featurising one very large primitive cell.

Usage: python benchmarks/large_cell.py [--repeat 8] [--json benchmarks/results/large_cell.json]

Builds a perturbed NaCl supercell (repeat**3 * 2 atoms; the perturbation, seed 0, keeps it from
reducing to a smaller primitive cell), featurises it once with the bundled weights in this
process, and reports the wall time and the process's peak RSS (library imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import warnings

import numpy as np
from pymatgen.core import Lattice, Structure

from dimfeat import DeepInfoMaxFeaturizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--json", default="benchmarks/results/large_cell.json")
    args = parser.parse_args()
    cell = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cell.make_supercell([args.repeat] * 3)
    noise = np.random.default_rng(0).normal(0, 0.005, (len(cell), 3))
    cell = Structure(cell.lattice, cell.species, cell.frac_coords + noise)
    featurizer = DeepInfoMaxFeaturizer()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the documented large-cell warning
        vector = featurizer.transform([cell])
    seconds = time.perf_counter() - start
    result = {
        "atoms_in_primitive_cell": len(cell),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "finite": bool(np.isfinite(vector).all()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
