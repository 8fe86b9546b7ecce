"""Fig. 13: out of distribution — representations on the real Matbench task ``matbench_phonons``.

The bundled DIM was pre-trained without labels on mp36k formation-energy crystals; here its
vectors, untrained DIM, XRD, Magpie (and OFM when its features are cached) feed the downstream
models of :mod:`benchmarks.paper.protocol` on Matbench's five official folds (each fold's
train part, about 1,012 crystals, is the paper's 1,000-label setting). Predictions are recorded
with ``task.record`` and each representation x model is saved by ``MatbenchBenchmark.to_file``
as ``benchmarks/results/paper/matbench_phonons_<rep>_<model>.json.gz``.

``python -m benchmarks.paper.phonons [--weights NAME_OR_FOLDER] [--reps dim,xrd,...]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from functools import partial

import numpy as np

from benchmarks.paper import features as F
from benchmarks.paper import protocol as P
from benchmarks.paper.representation import DEFAULT_WEIGHTS, RESULTS, cell_key, rep_specs

REPS = ("dim", "dim-untrained", "xrd", "magpie", "ofm")
TARGET = "last phdos peak"


def benchmark():
    """A loaded ``MatbenchBenchmark`` holding only ``matbench_phonons`` (read offline)."""
    from matbench.bench import MatbenchBenchmark

    logging.getLogger("matbench").setLevel(logging.WARNING)
    old = os.environ.get("MATMINER_DATA")
    os.environ["MATMINER_DATA"] = str(F.MATMINER)
    try:
        mb = MatbenchBenchmark(autoload=False, subset=["matbench_phonons"])
        mb.matbench_phonons.load()
    finally:
        if old is None:
            del os.environ["MATMINER_DATA"]
        else:
            os.environ["MATMINER_DATA"] = old
    return mb


def scaling(kind: str, model: str) -> bool:
    """Input scaling; with ~1,000 labels and 128 features least squares does not depend on it,
    so trained DIM (whose linear scaling is otherwise chosen on the mp36k pool) is standardised
    like untrained DIM."""
    scale = P.default_scaling(kind, model)
    return True if scale is None else scale


def _folds(X, model: str, scale: bool, label: str, position: dict) -> dict:
    mb = benchmark()
    task = mb.matbench_phonons
    for fold in task.folds:
        train_in, train_out = task.get_train_and_val_data(fold)
        test_in = task.get_test_data(fold, include_target=False)
        tr = [position[i] for i in train_in.index]
        te = [position[i] for i in test_in.index]
        reg = P.make_model(model, scale, random_state=fold)
        task.record(fold, P.fit_predict(reg, X[tr], train_out.to_numpy(), X[te]))
    path = RESULTS / f"matbench_phonons_{label}_{model}.json.gz"
    mb.to_file(str(path))
    return {
        "fold_mae": [float(task.results[f"fold_{k}"]["scores"]["mae"]) for k in task.folds],
        "mean_mae": float(task.scores["mae"]["mean"]),
        "std_mae": float(task.scores["mae"]["std"]),
        "standardised": scale,
        "file": os.path.relpath(path, F.ROOT),
    }


def run(weights: str = DEFAULT_WEIGHTS, reps=REPS, *, skip_uncached_ofm: bool = True) -> dict:
    """Fit each representation x model on every official fold; write results and return them."""
    data = F.phonons()
    checkpoint = P.Checkpoint(F.CACHE / "runs" / "phonons.json")
    mb_probe = benchmark()
    task = mb_probe.matbench_phonons
    if not np.allclose(task.df[TARGET].to_numpy(), data.labels[TARGET]):
        raise RuntimeError("matbench_phonons rows are not in matminer's order")
    position = {mbid: i for i, mbid in enumerate(task.df.index)}
    summary: dict = {}
    for label, (kind, w) in rep_specs(reps, weights).items():
        if kind == "ofm" and skip_uncached_ofm and not F.cached(data, "ofm"):
            print("phonons: OFM features not cached, skipped")
            continue
        X = F.features(data, kind, weights=w)
        for model in P.MODELS:
            scale = scaling(kind, model)
            key = f"{model}|{cell_key(kind, w)}"

            compute = partial(_folds, X, model, scale, label, position)
            summary.setdefault(model, {})[label] = checkpoint.get_or_compute(key, compute)
    payload = {
        "experiment": "Fig. 13 out of distribution: matbench_phonons",
        "data": "matbench_phonons (Matbench v0.1, 1,265 structures) in matminer's file format, "
        "official 5 folds via MatbenchBenchmark(autoload=False, subset=['matbench_phonons'])",
        "target": f"{TARGET} (cm^-1)",
        "n_train_per_fold": [len(task.get_train_and_val_data(f)[0]) for f in task.folds],
        "seeds": "MLP random_state = fold index; untrained DIM torch.manual_seed(0)",
        "models": {
            "linear": "LinearRegression()",
            "mlp": f"MLPRegressor({P.MLP_SETTINGS}, random_state=fold), standardised X and y",
        },
        "weights": f"{weights} (sha256 {F.weights_key(weights)}...)",
        "machine": P.machine(),
        "mae": summary,
    }
    out = RESULTS / "phonons.json"
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return payload


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--reps", default=",".join(REPS))
    args = parser.parse_args(argv)
    run(args.weights, tuple(args.reps.split(",")))


if __name__ == "__main__":
    main()
