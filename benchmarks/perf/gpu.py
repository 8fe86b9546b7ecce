"""What a GPU is lent for, in one run: the CUDA vectors against the CPU's, ``transform`` speed on
the GPU against every CPU core of the same machine, and a training epoch on the GPU.

Usage: python -m benchmarks.perf.gpu [--n-jobs 1 8 -1] [--repeats 3] [--epochs 2]
[--train-crystals N] [--json benchmarks/results/perf/gpu.json]

On a lent GPU machine it runs as one prepared call, with the CUDA tests, from
``benchmarks/perf/gpu_run.sh`` (``benchmarks/README.md`` says how). Without CUDA it stops at
once (``--allow-cpu`` runs every step on the CPU instead, to check the script itself). The data
is the CGCNN Materials Project set (``mp36k.tar.gz`` and ``split.json`` under
``$DIMFEAT_SHARED_DATA``); the weights are the bundled ``sitenet-dim-mp36k``.

1. **Vectors.** The 1,000 crystals of the bundled sample, ``DeepInfoMaxFeaturizer`` on the GPU
   with ``n_jobs=1`` and with the largest ``--n-jobs`` (worker processes build the inputs, the
   calling process encodes them on the GPU), against the CPU with ``n_jobs=1``: per crystal, the
   largest difference of an element over the crystal's largest absolute value.
2. **Speed.** Warm ``transform`` of the whole mp36k test split (7,347 crystals, large cells
   included) on the GPU with each of ``--n-jobs``, and on the CPU with the largest (every core
   builds and encodes) as the baseline measured in the same run: the median of ``--repeats``
   calls after a warm-up call each, in structures per second, and the GPU's over the CPU's. The
   target is 10,000 structures/s end to end on the GPU.
3. **Training.** Each channel of the bundled weights' recorded recipe
   (:func:`benchmarks.perf.training_throughput.train_rate`: random weights of the channel's
   architecture, no validation pass) for ``--epochs`` epochs over the mp36k train crystals with
   at most 50 atoms in the primitive cell (25,545; ``--train-crystals N``: the first N),
   their inputs built beforehand with every core (the input cache of :mod:`benchmarks.common`,
   ``.devcache/mp36k_train.npz``, when it belongs to the current input code) and not timed:
   seconds per epoch after the first, against the target of 10 s (on CUDA the recipes train
   under bfloat16 autocast).

Writes everything, with the card's name and the machine, to ``--json``, after each step; a step
that fails is recorded with its traceback and the next one still runs (the exit status is then
1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback
import warnings

import numpy as np
import torch

from benchmarks.common import (
    RESULTS,
    load_set,
    machine,
    mp36k_inputs,
    rate,
    time_transform,
    write_json,
)
from benchmarks.perf.training_throughput import channel_recipes, timing_config, train_rate
from dimfeat import DeepInfoMaxFeaturizer, LargeCellWarning
from dimfeat.encoder import EncoderConfig
from dimfeat.weights import DEFAULT_WEIGHTS, read_config, resolve_weights

#: End-to-end ``transform`` on the GPU, structures per second.
GOAL_RATE = 10_000.0
#: One training epoch over the mp36k train crystals on the GPU, seconds.
GOAL_EPOCH_S = 10.0
#: Largest relative difference of a GPU vector from the CPU's that counts as the same vector.
TOLERANCE = 1e-4


def relative_change(new: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per crystal: the largest absolute difference over the largest absolute reference value."""
    return np.abs(new - reference).max(axis=1) / np.abs(reference).max(axis=1)


def check_vectors(device: str, n_jobs: int) -> dict:
    """Step 1: the sample's vectors on ``device`` (one process and ``n_jobs``) against the CPU's."""
    structures = load_set("sample", None)
    reference = DeepInfoMaxFeaturizer(device="cpu").transform(structures)
    out = {"n": len(structures), "tolerance": TOLERANCE}
    for jobs in dict.fromkeys((1, n_jobs)):
        vectors = DeepInfoMaxFeaturizer(device=device, n_jobs=jobs).transform(structures)
        change = relative_change(vectors, reference)
        out[f"n_jobs_{jobs}"] = {
            "max": float(change.max()),
            "median": float(np.median(change)),
            "same": bool(change.max() <= TOLERANCE),
        }
        print(
            f"vectors on {device}, n_jobs={jobs}, against the CPU: largest relative change "
            f"{change.max():.2e} (median {np.median(change):.2e}) over {len(structures)}"
        )
    return out


def transform_rates(structures: list, device: str, n_jobs: int, repeats: int) -> dict:
    """Warm ``transform`` rates on ``device`` with ``n_jobs``: a warm-up call, then ``repeats``."""
    featurizer = DeepInfoMaxFeaturizer(device=device, n_jobs=n_jobs)
    featurizer.transform(structures)  # weights, worker processes, CUDA context and kernels
    if device != "cpu":
        torch.cuda.synchronize()
    rates = [rate(len(structures), time_transform(featurizer, structures)) for _ in range(repeats)]
    print(f"transform on {device}, n_jobs={n_jobs}: {statistics.median(rates):,.0f} structures/s "
          f"(median of {repeats}: {', '.join(f'{r:,.0f}' for r in rates)})")  # fmt: skip
    return {
        "device": device,
        "n_jobs": n_jobs,
        "processes": _processes(n_jobs),
        "rates": rates,
        "median": statistics.median(rates),
    }


def speed(device: str, n_jobs_list: list[int], repeats: int) -> dict:
    """Step 2: the whole mp36k test split on ``device`` with each ``n_jobs``, and on the CPU."""
    structures = load_set("mp36k-test", None, n_jobs=-1)
    runs = [transform_rates(structures, device, jobs, repeats) for jobs in n_jobs_list]
    cpu = transform_rates(structures, "cpu", max(n_jobs_list, key=_processes), repeats)
    best = max(runs, key=lambda r: r["median"])
    out = {
        "set": "the whole mp36k test split (mp36k.tar.gz, split.json)",
        "n": len(structures),
        "runs": runs,
        "cpu_baseline": cpu,
        "best": best,
        "best_over_cpu": best["median"] / cpu["median"],
        "goal_rate": GOAL_RATE,
        "meets_goal": best["median"] >= GOAL_RATE,
    }
    print(f"best on {device}: {best['median']:,.0f} structures/s with n_jobs={best['n_jobs']}, "
          f"{out['best_over_cpu']:.1f}x the CPU with n_jobs={cpu['n_jobs']}; target "
          f"{GOAL_RATE:,.0f}")  # fmt: skip
    return out


def _processes(n_jobs: int) -> int:
    from joblib import effective_n_jobs

    return effective_n_jobs(n_jobs)


def training(device: str, epochs: int, limit: int | None) -> dict:
    """Step 3: each channel of the bundled recipe on the mp36k train crystals on ``device``."""
    start = time.perf_counter()
    crystals = [c for c in mp36k_inputs("train")[0] if c.n_sites <= 50][:limit]
    built_s = time.perf_counter() - start
    print(f"mp36k train: {len(crystals)} crystals with at most 50 atoms in the primitive cell, "
          f"inputs read or built in {built_s:.1f} s with every core")  # fmt: skip
    config = read_config(resolve_weights(DEFAULT_WEIGHTS))
    channels = {}
    for name, recipe in channel_recipes(config).items():
        settings = timing_config(recipe["training"]["settings"], epochs)
        result = train_rate(
            crystals, EncoderConfig.from_dict(recipe["encoder"]), settings, torch.device(device)
        )
        result["settings"] = settings.to_dict()  # on CUDA with bfloat16 autocast, as recorded
        result["meets_goal"] = result["seconds_per_epoch"] <= GOAL_EPOCH_S
        channels[name] = result
        each = ", ".join(f"{s:.1f}" for s in result["epoch_seconds"])
        print(
            f"{name} channel on {device}: {result['seconds_per_epoch']:.1f} s per epoch over "
            f"{len(crystals)} crystals (epochs {each} s); target {GOAL_EPOCH_S:.0f} s"
        )
    return {
        "data": "mp36k.tar.gz, 'train' part of split.json, at most 50 atoms in the primitive cell",
        "n_crystals": len(crystals),
        "input_s": built_s,
        "goal_epoch_s": GOAL_EPOCH_S,
        "channels": channels,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", nargs="+", type=int, default=[1, 8, -1])
    parser.add_argument("--repeats", type=int, default=3, help="timed transform calls each")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per channel")
    parser.add_argument("--train-crystals", type=int, help="only the first N train crystals")
    parser.add_argument("--steps", nargs="+", default=["vectors", "speed", "training"],
                        choices=["vectors", "speed", "training"])  # fmt: skip
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, run on the CPU")
    parser.add_argument("--json", default=str(RESULTS / "perf" / "gpu.json"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="pymatgen")
    warnings.filterwarnings("ignore", module="spglib")
    warnings.filterwarnings("ignore", category=LargeCellWarning)  # the split's large cells
    if torch.cuda.is_available():
        device = "cuda"
    elif args.allow_cpu:
        device = "cpu"
    else:
        raise SystemExit("no CUDA device: this benchmark is for a GPU (--allow-cpu checks it)")
    info = machine(device)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(f"{info['description']}; {info['cpu']}, {info['cores']} cores ({usable} usable, "
          f"n_jobs=-1 means {_processes(-1)} processes); torch {info['torch']}")  # fmt: skip
    result = {
        "benchmark": "the CUDA path: vectors against the CPU, transform speed, training epochs",
        "weights": DEFAULT_WEIGHTS,
        "machine": info,
        "usable_cores": usable,
        "device": device,
    }
    steps = {
        "vectors": lambda: check_vectors(device, max(args.n_jobs, key=_processes)),
        "speed": lambda: speed(device, args.n_jobs, args.repeats),
        "training": lambda: training(device, args.epochs, args.train_crystals),
    }
    failed = []
    for step in args.steps:  # each step's result is written as soon as it is known
        try:
            result[step] = steps[step]()
        except (Exception, SystemExit):  # e.g. a refused input cache; the next steps still run
            failed.append(step)
            result[step] = {"error": traceback.format_exc()}
            print(f"step {step} failed:\n{result[step]['error']}")
        write_json(args.json, result)
    print(f"wrote {args.json}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
