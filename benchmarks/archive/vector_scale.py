"""Scale of the crystal vector: bundled DIM weights against the untrained encoder.

A fine-tuned ``SiteNetRegressor`` feeds this vector to a freshly initialised head, so a DIM
start whose vector were far larger or smaller than a random encoder's would give the head a
badly scaled input. This prints, for the first 200 crystals of the bundled sample (CGCNN
Materials Project set), the per-dimension standard deviation (median and 5-95 % range) and the
mean Euclidean norm of the vectors of both encoders (the untrained one with seed 0), and writes
them to ``benchmarks/results/archive/vector_scale.json``.

Usage::

    python -m benchmarks.archive.vector_scale [--n 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine_line, write_json
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.datasets import load_sample
from dimfeat.weights import read_config, resolve_weights


def scale(vectors: np.ndarray) -> dict:
    """Per-dimension standard deviation (median, 5 % and 95 % quantiles) and mean norm."""
    std = vectors.std(axis=0)
    return {
        "std_median": float(np.median(std)),
        "std_q05": float(np.quantile(std, 0.05)),
        "std_q95": float(np.quantile(std, 0.95)),
        "norm_mean": float(np.linalg.norm(vectors, axis=1).mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", type=Path, default=RESULTS / "archive" / "vector_scale.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    structures = load_sample()["structure"].tolist()[: args.n]
    bundled = DeepInfoMaxFeaturizer(device="cpu")
    untrained = DeepInfoMaxFeaturizer(weights=None, random_state=0, device="cpu")
    sha = read_config(resolve_weights(bundled.weights))["sha256"]
    record = {
        "data": f"first {len(structures)} crystals of the bundled sample",
        "weights": f"{bundled.weights} (sha256 {sha[:8]})",
        "machine": machine_line(),
        "date": time.strftime("%Y-%m-%d"),
        "bundled": scale(bundled.transform(structures)),
        "untrained": scale(untrained.transform(structures)),
    }
    for name in ("bundled", "untrained"):
        s = record[name]
        print(
            f"{name:9s} per-dimension std median {s['std_median']:.2f} "
            f"({s['std_q05']:.2f}-{s['std_q95']:.2f}), mean norm {s['norm_mean']:.1f}"
        )
    write_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
