"""Encoding one site per group of equivalent sites against encoding every site, in one run.

Usage: python -m benchmarks.archive.site_merging [--n 1000] [--repeats 2]
[--json benchmarks/results/archive/site_merging.json]

Draws ``--n`` crystals (seed 0) from the cached inputs of the whole mp36k test split
(:func:`benchmarks.common.mp36k_inputs`, built when absent), encodes them with the bundled weights
on one thread, alternately without and with :func:`dimfeat.inputs.equivalent_sites` merging
(``--repeats`` times each), and prints the share of bonds the merged rows keep, the model and
grouping seconds of each run, their ratio, and the largest change of a vector relative to the
row's largest value.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from benchmarks.common import RESULTS, machine_line, mp36k_inputs, write_json
from dimfeat.inputs import equivalent_sites
from dimfeat.runtime import EncoderRuntime, run_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=str(RESULTS / "archive" / "site_merging.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    crystals, _ = mp36k_inputs("test")
    draw = np.random.default_rng(0).choice(len(crystals), args.n, replace=False)
    inputs = [crystals[k] for k in draw]
    bonds = sum(c.n_sites * c.n_atoms for c in inputs)
    kept = sum(len(equivalent_sites(c)[0]) * c.n_atoms for c in inputs)
    encoder = EncoderRuntime.from_weights("sitenet-dim-mp36k").encoder.eval()

    runs: dict[str, list[dict]] = {"full": [], "merged": []}
    vectors = {}
    for _ in range(args.repeats):
        for name in runs:
            timings: dict[str, float] = {}
            start = time.perf_counter()
            vectors[name] = run_batches(
                inputs,
                encoder,
                128,
                device=torch.device("cpu"),
                merge_sites=name == "merged",
                timings=timings,
            )
            timings["total"] = time.perf_counter() - start
            runs[name].append(timings)
            print(name, {k: round(v, 3) for k, v in timings.items()})
    full, merged = vectors["full"], vectors["merged"]
    relative = np.abs(merged - full).max(axis=1) / np.abs(full).max(axis=1)
    ratios = [f["model"] / m["model"] for f, m in zip(runs["full"], runs["merged"], strict=True)]
    result = {
        "data": f"{args.n} crystals drawn (seed 0) from the cached mp36k test-split inputs",
        "weights": "sitenet-dim-mp36k",
        "threads": 1,
        "machine": machine_line(),
        "load_average": list(os.getloadavg()),
        "bond_fraction_kept": kept / bonds,
        "runs": runs,
        "model_time_ratio_full_over_merged": ratios,
        "max_relative_difference": float(relative.max()),
        "median_relative_difference": float(np.median(relative)),
    }
    print(f"bonds kept by merging: {kept / bonds:.3f}")
    print(f"model stage, full / merged: {', '.join(f'{r:.2f}x' for r in ratios)}")
    print(f"vector change: max {relative.max():.2e}, median {np.median(relative):.2e}")
    write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
