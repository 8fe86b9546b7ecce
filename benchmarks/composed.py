"""DIM composed with matminer featurisers, and repeated transforms with a vector cache.

Usage: python benchmarks/composed.py [--n 60] [--n-jobs 2] [--n-grid 100] [--json PATH]

Data: the bundled sample (:func:`dimfeat.datasets.load_sample`), Materials Project crystals.
Measured in one process, in this order (seconds, wall clock):

1. ``MultipleFeaturizer([DeepInfoMaxFeaturizer(), DensityFeatures()]).featurize_dataframe`` on
   ``--n`` structures:

   * ``n_jobs=1`` (matminer runs every featuriser in this process, one structure at a time);
   * ``n_jobs=--n-jobs`` (matminer's process pool: ``Pool(n_jobs, maxtasksperchild=1)``, a new
     forked process per chunk of 10 structures), as dimfeat does it now: no encoder in the
     pickled featuriser, the encoder taken from the per-process cache that forked workers
     inherit (:func:`dimfeat.runtime.shared_runtime`);
   * the same pool with the former behaviour, where every worker loads and verifies the weights
     again (emulated by a subclass that empties the per-process cache in each worker);
   * ``iterate_over_entries=False``: matminer calls each featuriser's ``featurize_many``, so DIM
     encodes all structures in batches in this process while DensityFeatures uses the pool.

2. ``GridSearchCV`` (3 values of ``Ridge.alpha`` x 3 folds, then a refit) of
   ``Pipeline([DeepInfoMaxFeaturizer(cache=...), Ridge()])`` on ``--n-grid`` structures, without
   a cache, with an empty cache folder, and again with the filled one.

The ratios printed are against ``n_jobs=1`` and against the former behaviour. The JSON records
the CPU, the cores this process may use (``os.sched_getaffinity``) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import dimfeat.runtime
from dimfeat import DeepInfoMaxFeaturizer


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


class Reloading(DeepInfoMaxFeaturizer):
    """The former behaviour: each worker process loads the weights again."""

    def __setstate__(self, state):
        super().__setstate__(state)
        dimfeat.runtime._SHARED.clear()


def composed(n: int, n_jobs: int) -> dict:
    """Seconds of the composed featurisation in each mode (see the module docstring)."""
    from matminer.featurizers.base import MultipleFeaturizer
    from matminer.featurizers.structure import DensityFeatures

    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.datasets import load_sample

    df = load_sample().iloc[:n][["structure"]].copy()

    def run(featurizer_class, jobs: int, by_entries: bool = True) -> float:
        featurizer = MultipleFeaturizer(
            [featurizer_class(device="cpu"), DensityFeatures()], iterate_over_entries=by_entries
        )
        featurizer.set_n_jobs(jobs)
        return _timed(lambda: featurizer.featurize_dataframe(df, "structure", pbar=False))

    run(DeepInfoMaxFeaturizer, 1)  # warm-up: imports, the weights, pymatgen's caches
    seconds = {
        "n_jobs=1": run(DeepInfoMaxFeaturizer, 1),
        f"n_jobs={n_jobs}": run(DeepInfoMaxFeaturizer, n_jobs),
        f"n_jobs={n_jobs}, former (weights loaded in each worker)": run(Reloading, n_jobs),
        f"n_jobs={n_jobs}, iterate_over_entries=False": run(DeepInfoMaxFeaturizer, n_jobs, False),
    }
    return {"structures": n, "seconds": seconds}


def grid_search(n: int) -> dict:
    """Seconds of a 3 x 3 GridSearchCV without, with a cold and with a warm vector cache."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.datasets import load_sample

    structures, y = load_sample(as_frame=False)
    structures, y = structures[:n], y[:n]

    def run(cache) -> float:
        model = Pipeline(
            [("dim", DeepInfoMaxFeaturizer(device="cpu", cache=cache)), ("ridge", Ridge())]
        )
        search = GridSearchCV(model, {"ridge__alpha": [0.1, 1.0, 10.0]}, cv=3)
        return _timed(lambda: search.fit(structures, y))

    with tempfile.TemporaryDirectory() as folder:
        seconds = {"no cache": run(None), "cache, first run": run(folder)}
        seconds["cache, second run"] = run(folder)
        files = len(list(Path(folder).rglob("*.npy")))
    return {"structures": n, "seconds": seconds, "cached_vectors": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="structures of the composed run")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count(), help="matminer's pool")
    parser.add_argument("--n-grid", type=int, default=100, help="structures of the grid search")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from throughput import machine_info  # benchmarks/throughput.py

    info = machine_info()
    info["usable_cores"] = len(os.sched_getaffinity(0))
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    info["load_start"] = os.getloadavg()
    result = {"machine": info, "composed": composed(args.n, args.n_jobs)}
    result["grid_search"] = grid_search(args.n_grid)
    info["load_end"] = os.getloadavg()

    comp = result["composed"]["seconds"]
    base = comp["n_jobs=1"]
    former = next(v for k, v in comp.items() if "former" in k)
    print(f"cores usable: {info['usable_cores']}, OMP_NUM_THREADS={info['omp_num_threads']}")
    print(f"MultipleFeaturizer([DIM, DensityFeatures]) on {args.n} structures")
    for name, seconds in comp.items():
        print(
            f"  {name:55s} {seconds:7.2f} s  x{seconds / base:5.2f} of n_jobs=1  "
            f"x{seconds / former:5.2f} of former"
        )
    grid = result["grid_search"]["seconds"]
    print(f"GridSearchCV 3x3 (+ refit) on {args.n_grid} structures")
    for name, seconds in grid.items():
        print(f"  {name:55s} {seconds:7.2f} s  x{seconds / grid['no cache']:5.2f} of no cache")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
