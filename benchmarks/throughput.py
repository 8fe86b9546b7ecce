"""Featurisation throughput: DIM ``transform`` against matminer's XRD and OFM, in one run.

Usage: python benchmarks/throughput.py [--n 1000] [--n-ofm 100] [--json PATH]

Data: the bundled sample (:func:`dimfeat.datasets.load_sample`), 1,000 crystals of the ``test``
part of the mp36k split. Measured, in this order and in the same process:

* DIM ``DeepInfoMaxFeaturizer().transform`` (bundled weights ``sitenet-dim-mp36k``, CPU) with
  ``n_jobs=1`` and ``n_jobs=2``. Weight loading and the joblib worker start-up are excluded by a
  warm-up call on 100 structures.
* Where DIM's time goes (``n_jobs=1``): structure extraction (``inputs.structure_cell``), cell
  reduction (``inputs.canonical_cell``), supercell + distances (the rest of
  ``inputs.build_inputs``), ``inputs.collate`` and the encoder, each timed with
  ``time.perf_counter`` around the piece.
* ``XRDPatternFeaturizer`` (matminer XRDPowderPattern, 128 angles) with ``n_jobs=1`` on all
  structures.
* ``OrbitalFieldMatrixFeaturizer`` (matminer OrbitalFieldMatrix, flattened) with ``n_jobs=1`` on
  the first ``--n-ofm`` structures only (about one structure per second).

The JSON records the machine (CPU model, cores, torch version, date) and the load average at the
start and the end, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
import warnings
from pathlib import Path

import torch

from dimfeat import DeepInfoMaxFeaturizer, inputs
from dimfeat.baselines import OrbitalFieldMatrixFeaturizer, XRDPatternFeaturizer
from dimfeat.datasets import load_sample
from dimfeat.elements import check_atomic_numbers

RESULTS = Path(__file__).with_name("results")


def machine_info() -> dict:
    """CPU model, core count, Python/torch versions, date and load average."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def time_transform(featurizer, structures) -> float:
    start = time.perf_counter()
    featurizer.transform(structures)
    return time.perf_counter() - start


def breakdown(featurizer: DeepInfoMaxFeaturizer, structures) -> dict[str, float]:
    """Seconds spent in each stage of DIM featurisation, in one process."""
    runtime = featurizer.get_runtime()
    settings = runtime.inputs
    t = dict.fromkeys(["extract", "cell_reduction", "supercell_distances", "collate", "model"], 0.0)
    crystals = []
    for k, s in enumerate(structures):
        t0 = time.perf_counter()
        lattice, frac, numbers = inputs.structure_cell(s, k)
        check_atomic_numbers(numbers)
        t1 = time.perf_counter()
        inputs.canonical_cell(lattice, frac, numbers, settings.symprec)
        t2 = time.perf_counter()
        crystals.append(
            inputs.build_inputs(s, max_atoms=settings.max_atoms, symprec=settings.symprec)
        )
        t3 = time.perf_counter()
        t["extract"] += t1 - t0
        t["cell_reduction"] += t2 - t1
        # build_inputs repeats extraction and reduction: the remainder is supercell + distances
        t["supercell_distances"] += max((t3 - t2) - (t2 - t0), 0.0)
    runtime.encode(crystals, device="cpu", batch_size=featurizer.batch_size, timings=t)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="structures for DIM and XRD")
    parser.add_argument("--n-ofm", type=int, default=100, help="first N structures for OFM")
    parser.add_argument("--json", default=str(RESULTS / "throughput.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    info = machine_info()
    load_start = os.getloadavg()
    structures = list(load_sample()["structure"])[: args.n]
    n = len(structures)
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")

    results: dict = {}
    dim1 = DeepInfoMaxFeaturizer(device="cpu", n_jobs=1)
    dim1.transform(structures[:100])  # warm-up: loads the weights
    results["dim_n_jobs_1"] = rate(n, time_transform(dim1, structures))
    print(f"DIM transform n_jobs=1: {results['dim_n_jobs_1']:8.1f} structures/s")
    dim2 = DeepInfoMaxFeaturizer(device="cpu", n_jobs=2)
    dim2.transform(structures[:100])
    dim2.transform(structures[:200])  # >64 structures: starts the joblib workers
    results["dim_n_jobs_2"] = rate(n, time_transform(dim2, structures))
    print(f"DIM transform n_jobs=2: {results['dim_n_jobs_2']:8.1f} structures/s")

    stages = breakdown(dim1, structures)
    total = sum(stages.values())
    print(f"DIM time per stage (n_jobs=1, {n} structures, {total:.2f} s in all):")
    for key, seconds in stages.items():
        print(f"  {key:20s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")

    xrd = XRDPatternFeaturizer(n_jobs=1)
    xrd.fit(structures[:2])
    start = time.perf_counter()
    xrd_out = xrd.transform(structures)
    results["xrd_n_jobs_1"] = rate(n, time.perf_counter() - start)
    print(f"XRD ({xrd_out.shape[1]} angles) n_jobs=1: {results['xrd_n_jobs_1']:8.1f} structures/s")

    n_ofm = min(args.n_ofm, n)
    ofm = OrbitalFieldMatrixFeaturizer(n_jobs=1)
    ofm.fit(structures[:2])
    start = time.perf_counter()
    ofm.transform(structures[:n_ofm])
    results["ofm_n_jobs_1"] = rate(n_ofm, time.perf_counter() - start)
    print(f"OFM n_jobs=1 (first {n_ofm}): {results['ofm_n_jobs_1']:8.2f} structures/s")

    ratio = results["dim_n_jobs_1"] / results["xrd_n_jobs_1"]
    ratio2 = results["dim_n_jobs_2"] / results["xrd_n_jobs_1"]
    print(f"DIM/XRD: {ratio:.1f}x (n_jobs=1), {ratio2:.1f}x (DIM n_jobs=2); target >= 10x")
    load_end = os.getloadavg()
    out = {
        "benchmark": "featurisation throughput, structures per second",
        "data": f"dimfeat.datasets.load_sample(): first {n} of the 1,000 mp36k test-split crystals",
        "machine": info,
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "structures_per_s": results,
        "n_structures": {"dim": n, "xrd": n, "ofm": n_ofm},
        "notes": (
            "DIM: bundled weights sitenet-dim-mp36k on CPU, batch_size=256; weight loading and "
            "joblib start-up excluded by a warm-up call. OFM timed on the first "
            f"{n_ofm} structures only. XRD/OFM: dimfeat.baselines wrappers of matminer."
        ),
        "dim_over_xrd": {"n_jobs_1": ratio, "n_jobs_2": ratio2, "target": 10.0},
        "dim_stage_seconds": stages,
        "dim_stage_fraction": {k: v / total for k, v in stages.items()},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
