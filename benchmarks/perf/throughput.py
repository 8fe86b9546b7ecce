"""Featurisation throughput: DIM ``transform`` against matminer's XRD and OFM, in one run.

Usage: python -m benchmarks.perf.throughput [--n 1000] [--n-ofm 100] [--sets sample mp36k-test]
[--baseline REV] [--json PATH]

Several weights side by side: python -m benchmarks.perf.throughput --weights A B ... [--sets ...]
[--n ...] [--repeats 3] [--n-jobs 1 2] [--json PATH]; ``--quick`` is ``--sets mp36k-test --n 300``.
Only DIM ``transform`` is timed then: each call of each weights in a fresh interpreter of its
own (warmed up as below), the weights taking turns ``--repeats`` times so that all see the same
load; it prints each weights' median structures/s and the median of its paired ratios to the
first weights, and writes them to ``--json`` (default ``benchmarks/results/perf/
throughput_weights.json``). ``A``: a bundled name, a weights folder or a Hub id.

Two sets of ``--n`` structures, each measured in a fresh interpreter of its own (after the
sample's XRD and OFM runs, one process encoded the whole-split set at half speed):

* ``sample``: the bundled sample (:func:`dimfeat.datasets.load_sample`), 1,000 crystals of the
  mp36k ``test`` split with at most 50 atoms in the stored cell;
* ``mp36k-test``: ``--n`` crystals drawn at random (``default_rng(0)``) from the whole mp36k
  ``test`` split, large cells included (up to 200 atoms), read from ``mp36k.tar.gz`` (the CGCNN
  Materials Project set; ``DIMFEAT_SHARED_DATA`` points at its folder). Skipped when absent.

For each set, in this order:

* DIM ``DeepInfoMaxFeaturizer().transform`` (bundled weights ``sitenet-dim-mp36k``, CPU) with
  ``n_jobs=1`` and ``n_jobs=2``, the median of ``--repeats`` calls. Weight loading and the
  joblib worker start-up are excluded by warm-up calls.
* With ``--baseline REV``: the same two settings with ``dimfeat/`` and ``weights/`` of that git
  revision, each call in a fresh interpreter (warmed up the same way), alternated with the
  current code's calls, so that both see the same load; the JSON records the median of the
  paired ratios, and how far each crystal's vector moved from the baseline's.
* The first call in a fresh process, as a user's script or notebook meets it: the structures are
  read first (pymatgen imported, not timed), then ``import dimfeat``,
  ``DeepInfoMaxFeaturizer()`` (default settings) and ``transform`` of the first 100 (time to
  first vector); in three more fresh processes the same for the first 1,000 in one call (the
  first call's rate, import included and excluded, each the median of the three), compared with
  the warm rate and with the same call run again at once in its own process (minutes pass
  between the warm calls and these processes, and the machine's speed drifts). With
  ``--baseline``, the time to first vector of this code and of the revision's, taking turns
  five times (medians, and the median of the paired ratios).
* Where DIM's time goes (``n_jobs=1``): structure extraction (``inputs.structure_cell``), cell
  reduction (``inputs.canonical_cell``), supercell + distances (the rest of
  ``inputs.build_inputs``), site grouping, ``inputs.collate`` and the encoder, each timed with
  ``time.perf_counter`` around the piece.
* ``XRDPatternFeaturizer`` (matminer XRDPowderPattern, 128 angles) with ``n_jobs=1`` and
  ``n_jobs=2`` on all structures; DIM's rate over XRD's is printed for each, the same number of
  processes on both sides.
* ``OrbitalFieldMatrixFeaturizer`` (matminer OrbitalFieldMatrix, flattened) with ``n_jobs=1`` on
  the first ``--n-ofm`` structures of the sample only (a few structures per second).

The JSON records the machine (CPU model, cores, torch version, date) and the load average at the
start and the end, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.common import (
    RESULTS,
    ROOT,
    baseline_tree,
    load_set,
    machine,
    rate,
    revision_env,
    time_transform,
    write_json,
)
from dimfeat import DeepInfoMaxFeaturizer, inputs
from dimfeat.baselines import OrbitalFieldMatrixFeaturizer, XRDPatternFeaturizer
from dimfeat.elements import check_atomic_numbers

#: DIM ``transform`` over matminer's XRD, each with the same number of processes.
TARGET_OVER_XRD = 60.0


def dim_rates(
    structures, repeats: int, weights: str | None = None, n_jobs_list: tuple[int, ...] = (1, 2)
) -> dict[str, list[float]]:
    """DIM ``transform`` rates with each of ``n_jobs_list``, ``repeats`` calls each after
    warm-ups, with ``weights`` (default: the bundled weights)."""
    out = {}
    options = {} if weights is None else {"weights": weights}
    for n_jobs in n_jobs_list:
        featurizer = DeepInfoMaxFeaturizer(device="cpu", n_jobs=n_jobs, **options)
        featurizer.transform(structures[:100])  # loads the weights
        # > 64 structures: starts the joblib workers; 512 (four chunks of 128), so that each
        # worker holds its encoder (a literal: baseline revisions run this code too)
        featurizer.transform(structures[:512])
        seconds = [time_transform(featurizer, structures) for _ in range(repeats)]
        out[f"dim_n_jobs_{n_jobs}"] = [rate(len(structures), t) for t in seconds]
    return out


def baseline_rates(
    revision_tree: Path | None,
    name: str,
    n: int,
    vectors: Path | None = None,
    weights: str | None = None,
    n_jobs_list: tuple[int, ...] = (1, 2),
) -> dict[str, list[float]]:
    """One :func:`dim_rates` call each in a fresh interpreter, with the dimfeat of
    ``revision_tree`` (``None``: this checkout's) and ``weights``; with ``vectors``, it also
    saves its ``transform`` output there (``.npy``)."""
    env = revision_env(revision_tree)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--n", str(n)]
    command += ["--n-jobs", *map(str, n_jobs_list)]
    if weights is not None:
        command += ["--weights", weights]
    if vectors is not None:
        command += ["--vectors", str(vectors)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def vector_change(structures, revision_tree: Path, name: str) -> dict[str, float]:
    """How far the current vectors of ``structures`` are from the baseline's: per crystal, the
    largest absolute difference over the largest absolute value of the baseline vector."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline.npy"
        baseline_rates(revision_tree, name, len(structures), path)
        old = np.load(path).astype(np.float64)
    new = DeepInfoMaxFeaturizer(device="cpu").transform(structures).astype(np.float64)
    change = np.abs(new - old).max(axis=1) / np.abs(old).max(axis=1)
    return {"max": float(change.max()), "median": float(np.median(change))}


def paired_rates(structures, name: str, repeats: int, base: Path | None) -> dict:
    """Current and (with ``base``) baseline rates, alternated ``repeats`` times: medians,
    and the median of the paired ratios."""
    import statistics

    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for key, values in dim_rates(structures, 1).items():
            runs.setdefault(key, []).extend(values)
        if base is not None:
            for key, values in baseline_rates(base, name, len(structures)).items():
                runs.setdefault("baseline_" + key, []).extend(values)
    out = {"runs": runs, "median": {k: statistics.median(v) for k, v in runs.items()}}
    if base is not None:
        out["paired_speedup_median"] = {
            key: statistics.median(
                a / b for a, b in zip(runs[key], runs["baseline_" + key], strict=True)
            )
            for key in ("dim_n_jobs_1", "dim_n_jobs_2")
        }
    return out


FIRST_CALL = """
import json, sys, time
from pymatgen.core import Structure
structures = [Structure.from_dict(d) for d in json.load(open(sys.argv[1]))]
n = int(sys.argv[2])
start = time.perf_counter()
from dimfeat import DeepInfoMaxFeaturizer
imported = time.perf_counter()
featurizer = DeepInfoMaxFeaturizer()
featurizer.transform(structures[:n])
end = time.perf_counter()
featurizer.transform(structures[:n])  # the same call again, warm, in the same process
again = time.perf_counter()
import dimfeat
print(json.dumps({"import_s": imported - start, "transform_s": end - imported, "n": n,
                  "again_s": again - end, "dimfeat": dimfeat.__file__}))
"""

#: Fresh processes that time the first call of 1,000 structures (the median is reported).
FIRST_CALLS = 3


def first_call(
    structures: list, warm_rate: float, base: Path | None = None, repeats: int = 5
) -> dict:
    """Time to first vector and the first call's rate, each in a fresh interpreter; with
    ``base`` (a :func:`~benchmarks.common.baseline_tree`), the time to first vector of this
    code and of the baseline, taking turns ``repeats`` times: medians and paired ratio."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "structures.json"
        path.write_text(json.dumps([s.as_dict() for s in structures[:1000]]))

        def run(n: int, tree: Path | None = None) -> dict:
            done = subprocess.run(
                [sys.executable, "-c", FIRST_CALL, str(path), str(n)],
                capture_output=True, text=True, check=True, env=revision_env(tree), cwd=tmp,
            )  # fmt: skip
            out = json.loads(done.stdout.strip().splitlines()[-1])
            if Path(out["dimfeat"]).parents[1] != Path(tree or ROOT).resolve():
                raise RuntimeError(f"imported {out['dimfeat']}, not the dimfeat of {tree or ROOT}")
            return out

        first = run(100)
        calls = [run(min(1000, len(structures))) for _ in range(FIRST_CALLS)]
        turns = [(run(100), run(100, base)) for _ in range(repeats)] if base is not None else []
    # the call whose rate is the median; each against the same call again in its own process
    calls.sort(key=lambda c: c["transform_s"])
    many = calls[len(calls) // 2]
    over_again = [c["again_s"] / c["transform_s"] for c in calls]
    out = {
        "time_to_first_vector_s": first["import_s"] + first["transform_s"],
        "import_s": first["import_s"],
        "first_call_n": many["n"],
        "first_calls": calls,
        "first_call_rate": many["n"] / many["transform_s"],
        "first_call_rate_with_import": statistics.median(
            c["n"] / (c["import_s"] + c["transform_s"]) for c in calls
        ),
        "warm_rate": warm_rate,
        "first_call_over_second_call": statistics.median(over_again),
    }
    if turns:
        total = [[r["import_s"] + r["transform_s"] for r in pair] for pair in turns]
        out["turns"] = turns
        out["turns_time_to_first_vector_median_s"] = statistics.median(t for t, _ in total)
        out["baseline_time_to_first_vector_median_s"] = statistics.median(b for _, b in total)
        out["paired_first_vector_speedup_median"] = statistics.median(b / t for t, b in total)
        after = {k: statistics.median(p[i]["transform_s"] for p in turns) for i, k in enumerate(
            ("after_import_median_s", "baseline_after_import_median_s"))}  # fmt: skip
        out.update(after)
        print(
            f"fresh process, {repeats} turns against the baseline: first vector after "
            f"{out['turns_time_to_first_vector_median_s']:.2f} s against "
            f"{out['baseline_time_to_first_vector_median_s']:.2f} s (medians; paired speed-up "
            f"{out['paired_first_vector_speedup_median']:.2f}x); after the import "
            f"{after['after_import_median_s']:.2f} s against "
            f"{after['baseline_after_import_median_s']:.2f} s"
        )
    out["first_call_over_warm"] = out["first_call_rate"] / warm_rate
    print(
        f"fresh process: first vector after {out['time_to_first_vector_s']:.2f} s (import "
        f"{out['import_s']:.2f} s + weights + 100 structures); first call of {many['n']}: "
        f"{out['first_call_rate']:.1f} structures/s ({out['first_call_rate_with_import']:.1f} "
        f"with the import; median of {FIRST_CALLS} fresh processes), "
        f"{100 * out['first_call_over_warm']:.0f} % of the warm rate {warm_rate:.1f} (n_jobs=1), "
        f"{100 * out['first_call_over_second_call']:.0f} % of the same call's second run in "
        "its own process (median)"
    )
    return out


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


def measure(name: str, structures: list, n_ofm: int, repeats: int, base: Path | None) -> dict:
    """Every figure of one set (see the module docstring), printed as it comes."""
    n = len(structures)
    print(f"\n{name}: {n} structures, largest stored cell {max(len(s) for s in structures)} atoms")
    paired = paired_rates(structures, name, repeats, base)
    results = {k: v for k, v in paired["median"].items() if not k.startswith("baseline_")}
    out: dict = {"structures_per_s": results, "dim_calls": paired["runs"]}
    for key, value in results.items():
        line = f"DIM transform {key[4:]}: {value:8.1f} structures/s (median of {repeats})"
        if base is not None:
            old = paired["median"]["baseline_" + key]
            speedup = paired["paired_speedup_median"][key]
            line += f"; baseline {old:8.1f}; paired speed-up {speedup:.2f}x"
        print(line)
    if base is not None:
        out["baseline_structures_per_s"] = {
            k[9:]: v for k, v in paired["median"].items() if k.startswith("baseline_")
        }
        out["paired_speedup_median"] = paired["paired_speedup_median"]
        out["vector_change_from_baseline"] = vector_change(structures, base, name)
        change = out["vector_change_from_baseline"]
        print(
            f"vectors vs baseline: largest change {change['max']:.2e} of a vector's largest value"
            f" (median {change['median']:.2e})"
        )
    out["first_call"] = first_call(structures, results["dim_n_jobs_1"], base)
    stages = breakdown(DeepInfoMaxFeaturizer(device="cpu", n_jobs=1), structures)
    total = sum(stages.values())
    print(f"DIM time per stage (n_jobs=1, {total:.2f} s in all):")
    for key, seconds in stages.items():
        print(f"  {key:20s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    out["dim_stage_seconds"] = stages
    out["dim_stage_fraction"] = {k: v / total for k, v in stages.items()}

    for n_jobs in (1, 2):
        xrd = XRDPatternFeaturizer(n_jobs=n_jobs)
        xrd.fit(structures[:2])
        start = time.perf_counter()
        xrd_out = xrd.transform(structures)
        key = f"xrd_n_jobs_{n_jobs}"
        results[key] = rate(n, time.perf_counter() - start)
        print(f"XRD ({xrd_out.shape[1]} angles) n_jobs={n_jobs}: {results[key]:8.1f} structures/s")
    if n_ofm:
        ofm = OrbitalFieldMatrixFeaturizer(n_jobs=1)
        ofm.fit(structures[:2])
        start = time.perf_counter()
        ofm.transform(structures[:n_ofm])
        results["ofm_n_jobs_1"] = rate(n_ofm, time.perf_counter() - start)
        print(f"OFM n_jobs=1 (first {n_ofm}): {results['ofm_n_jobs_1']:8.2f} structures/s")
    # each against XRD with as many processes
    ratios = {
        f"n_jobs_{k}": results[f"dim_n_jobs_{k}"] / results[f"xrd_n_jobs_{k}"] for k in (1, 2)
    }
    out["dim_over_xrd"] = {**ratios, "target": TARGET_OVER_XRD}
    print(
        "DIM/XRD, same number of processes: "
        + ", ".join(f"{v:.1f}x ({k})" for k, v in ratios.items())
        + f"; target {TARGET_OVER_XRD:.0f}x"
    )
    out["n_structures"] = {"dim": n, "xrd": n, "ofm": n_ofm}
    return out


def compare_weights(
    weights: list[str], name: str, n: int, repeats: int, n_jobs_list: tuple[int, ...]
) -> dict:
    """:func:`dim_rates` of each of ``weights`` on one set, each call in a fresh interpreter,
    the weights taking turns ``repeats`` times: medians, spread and paired ratios to the first."""
    import statistics

    runs: dict[str, dict[str, list[float]]] = {w: {} for w in weights}
    for _ in range(repeats):
        for w in weights:
            for key, values in baseline_rates(None, name, n, None, w, n_jobs_list).items():
                runs[w].setdefault(key, []).extend(values)
    first = runs[weights[0]]
    out: dict = {}
    for w in weights:
        out[w] = {
            "runs": runs[w],
            "median": {k: statistics.median(v) for k, v in runs[w].items()},
            "paired_ratio_to_first_median": {
                k: statistics.median(a / b for a, b in zip(v, first[k], strict=True))
                for k, v in runs[w].items()
            },
        }
        for key, values in runs[w].items():
            ratio = out[w]["paired_ratio_to_first_median"][key]
            print(
                f"{name} {key[4:]} {w}: {statistics.median(values):8.1f} structures/s "
                f"(min {min(values):.1f}, max {max(values):.1f}, {len(values)} calls); "
                f"{ratio:.3f}x the first"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="structures per set")
    parser.add_argument("--n-ofm", type=int, default=100, help="first N sample structures for OFM")
    parser.add_argument("--sets", nargs="+", default=["sample", "mp36k-test"])
    parser.add_argument("--repeats", type=int, default=5, help="DIM calls per setting (median)")
    parser.add_argument("--baseline", help="git revision to compare DIM with (e.g. main)")
    parser.add_argument("--json", help="result file (default: benchmarks/results/perf/...)")
    parser.add_argument("--weights", nargs="+", help="time only DIM, with each of these weights")
    parser.add_argument("--n-jobs", nargs="+", type=int, default=[1, 2], help="with --weights")
    parser.add_argument("--quick", action="store_true", help="--sets mp36k-test --n 300")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    parser.add_argument("--set-child", help=argparse.SUPPRESS)
    parser.add_argument("--set-json", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.quick:
        args.sets, args.n = ["mp36k-test"], 300
    if args.set_child:  # one set, measured in an interpreter of its own
        try:
            structures = load_set(args.set_child, args.n)
        except FileNotFoundError as exc:
            print(f"\n{args.set_child}: skipped ({exc})")
            return
        n_ofm = min(args.n_ofm, len(structures)) if args.set_child == "sample" else 0
        base = Path(args.baseline_tree) if args.baseline_tree else None
        write_json(args.set_json, measure(args.set_child, structures, n_ofm, args.repeats, base))
        return
    if args.child:  # a baseline interpreter: DIM rates only, as one JSON line
        structures = load_set(args.child, args.n)
        weights = args.weights[0] if args.weights else None
        rates = dim_rates(structures, 1, weights, tuple(args.n_jobs))
        if args.vectors:
            import numpy as np

            np.save(args.vectors, DeepInfoMaxFeaturizer(device="cpu").transform(structures))
        print(json.dumps(rates))
        return
    if args.weights:  # several weights, DIM transform only
        info = machine(None)
        load_start = os.getloadavg()
        print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}")
        sets = {
            name: compare_weights(args.weights, name, args.n, args.repeats, tuple(args.n_jobs))
            for name in args.sets
        }
        path = args.json or str(RESULTS / "perf" / "throughput_weights.json")
        write_json(path, {
            "benchmark": "DIM transform throughput of several weights, structures per second",
            "weights": args.weights, "n_structures": args.n, "repeats": args.repeats,
            "machine": info, "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()), "sets": sets,
        })  # fmt: skip
        print(f"wrote {path}")
        return

    info = machine("cuda" if torch.cuda.is_available() else None)
    load_start = os.getloadavg()
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        if args.baseline:
            base = baseline_tree(args.baseline, Path(tmp))
        for name in args.sets:
            # each set in a fresh interpreter: after the sample's XRD and OFM runs the same
            # process encoded the whole-split set at half speed (397 vs 777 structures/s)
            result = Path(tmp) / f"{name}.json"
            command = [
                sys.executable, "-m", "benchmarks.perf.throughput", "--set-child", name,
                "--set-json", str(result), "--n", str(args.n), "--n-ofm", str(args.n_ofm),
                "--repeats", str(args.repeats),
            ]  # fmt: skip
            if base is not None:
                command += ["--baseline-tree", str(base)]
            done = subprocess.run(command, cwd=ROOT, check=False)
            if done.returncode or not result.is_file():
                continue  # the child said why
            sets[name] = json.loads(result.read_text())
    load_end = os.getloadavg()
    out = {
        "benchmark": "featurisation throughput, structures per second",
        "data": {
            "sample": "dimfeat.datasets.load_sample(): the 1,000 bundled mp36k test-split crystals",
            "mp36k-test": f"{args.n} crystals drawn with default_rng(0) from the whole mp36k "
            "test split (mp36k.tar.gz, the CGCNN Materials Project set), large cells included",
        },
        "machine": info,
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "baseline": args.baseline,
        "sets": sets,
        "notes": (
            "DIM: bundled weights sitenet-dim-mp36k on CPU, batch_size=256, median of "
            f"{args.repeats} calls, alternated with the baseline's; weight loading and joblib "
            "start-up excluded by warm-up calls. "
            "OFM timed on the first sample structures only. XRD/OFM: dimfeat.baselines wrappers "
            "of matminer."
        ),
    }
    path = args.json or str(RESULTS / "perf" / "throughput.json")
    write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
