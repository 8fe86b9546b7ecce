"""Choose between candidate weights with a probe on labelled *train-split* crystals only.

The self-supervised validation loss keeps falling long after the crystal vector stops getting
more useful for downstream models (we measured this: see docs/training.md), so the bundled
weights are chosen among DIM-trained candidates (e.g. one folder per epoch) by a small probe on
formation-energy labels of mp36k *train* crystals. The test split is never read.

Probe: 2,000 train crystals drawn with seed 123; for n = 100, 250, 1000 labels, 5 random draws
from those 2,000, a LinearRegression and an MLPRegressor(64) are fitted on n and scored (MAE,
eV/atom) on the other 2,000 - n. The score of a candidate is the mean of the six medians.

Usage::

    python benchmarks/select_weights.py CANDIDATE [CANDIDATE ...] [--untrained] \
        [--cache .devcache/mp36k_train.npz] [--data ../shared/data/mp36k] \
        [--json benchmarks/results/select_weights.json]

A candidate is a weights folder or a bundled name. The input cache (written by
``dimfeat train --cache``) is rebuilt from the mp36k tarball when absent.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPRegressor

from dimfeat.encoder import SiteNetEncoder
from dimfeat.inputs import collate, load_inputs
from dimfeat.weights import load_encoder, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
LABELS = (100, 250, 1000)


def formation_energies(data: Path, material_ids: np.ndarray) -> np.ndarray:
    """Formation energy (eV/atom) of each material id, read from the mp36k tarball."""
    with tarfile.open(data / "mp36k.tar.gz") as tar:

        def rows(name: str) -> list[list[str]]:
            member = tar.extractfile(f"mp36k/data/{name}")
            return list(csv.reader(io.TextIOWrapper(member)))

        index = {r[1]: r[0] for r in rows("material_id_hash.csv")}
        energy = {r[0]: float(r[1]) for r in rows("id_prop.csv")}
    return np.array([energy[index[str(m)]] for m in material_ids])


def vectors(encoder: SiteNetEncoder, crystals: list) -> np.ndarray:
    encoder.eval()
    with torch.inference_mode():
        return np.concatenate(
            [encoder(collate(crystals[k : k + 256])).numpy() for k in range(0, len(crystals), 256)]
        )


def probe(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    scores = {}
    models = {
        "LR": LinearRegression,
        "MLP": lambda: MLPRegressor(hidden_layer_sizes=(64,), max_iter=1500, random_state=0),
    }
    for name, make in models.items():
        for n in LABELS:
            maes = []
            for draw in range(5):
                order = np.random.default_rng(draw).permutation(len(y))
                fit, held = order[:n], order[n:]
                model = make().fit(x[fit], y[fit])
                maes.append(float(np.abs(model.predict(x[held]) - y[held]).mean()))
            scores[f"{name}{n}"] = float(np.median(maes))
    scores["mean"] = float(np.mean([scores[f"{m}{n}"] for m in models for n in LABELS]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*")
    parser.add_argument("--untrained", action="store_true", help="also score weights=None")
    parser.add_argument("--cache", default=str(ROOT / ".devcache" / "mp36k_train.npz"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp36k"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/select_weights.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not Path(args.cache).is_file():
        raise SystemExit(
            f"{args.cache} is missing: build it with `dimfeat train <folder> --data "
            f"{args.data}/mp36k.tar.gz --split {args.data}/split.json --cache {args.cache} "
            "--epochs 0`"
        )
    crystals, extra = load_inputs(args.cache)
    pool = np.random.default_rng(123).permutation(len(crystals))[:2000]
    crystals = [crystals[i] for i in pool]
    y = formation_energies(Path(args.data), extra["material_id"][pool])

    results = {}
    if args.untrained:
        torch.manual_seed(0)
        results["untrained (weights=None, random_state=0)"] = probe(
            vectors(SiteNetEncoder(), crystals), y
        )
    for candidate in args.candidates:
        encoder, config = load_encoder(resolve_weights(candidate))
        history = (config.get("training") or {}).get("history", [])
        scores = probe(vectors(encoder, crystals), y)
        scores["epochs"] = len(history)
        scores["valid_loss"] = history[-1].get("valid_loss") if history else None
        results[candidate] = scores
        print(candidate, {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)})
    report = {
        "protocol": __doc__.split("Usage::")[0].strip(),
        "data": "mp36k train split (split.json), crystals with <= 50 atoms in the primitive cell",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    best = min(results, key=lambda k: results[k]["mean"])
    print(f"best: {best}")


if __name__ == "__main__":
    main()
