"""How noisy is the validation MAE that ``SiteNetRegressor`` stops on, per validation size?

Usage: python -m benchmarks.archive.regressor_validation [--n-train 500] [--epochs 40] [--seed 0]
[--draws 2000] [--json PATH]

One regressor (bundled DIM weights, CPU, ``torch.set_num_threads(1)``) is trained for
``--epochs`` epochs on ``--n-train`` crystals of the bundled sample
(:func:`dimfeat.datasets.load_sample`, 1,000 Materials Project crystals, formation energy in
eV/atom), drawn with ``default_rng(seed)``; nothing is held out of training. After every epoch
the model predicts the other crystals of the sample (the *pool*, 500 by default) and their
absolute errors are kept. The pool stands in for the population the validation crystals of a
fit are drawn from: for each validation size k (25, 50, 100, 200), ``--draws`` sets of k crystals
are drawn from the pool *with replacement* (fresh draws from the same distribution, not subsets
of a finite pool) and give:

* the spread of one epoch's validation MAE (last epoch): standard deviation and 5-95% range;
* the regret of choosing the epoch by the k crystals (what ``SiteNetRegressor`` keeps): the
  pool MAE of the epoch with the lowest MAE on the k crystals minus the best pool MAE, its mean
  and 95th percentile, and how often the best epoch is the one chosen;
* the spread of the *difference* between two consecutive epochs' MAE on the same k crystals (what
  an early-stopping decision compares), its standard deviation against the epoch-to-epoch change
  of the pool MAE, and how often the k crystals rank the two epochs the other way round from the
  pool ("wrong calls", per pair of consecutive epochs, and their mean over pairs).

The cost is measured too: seconds per training epoch, per 100 training crystals, and the seconds
to predict 100 crystals (a validation pass). The machine may be shared: the load average at the
start and the end is printed and stored.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from benchmarks.common import machine_line, write_json
from dimfeat import SiteNetRegressor
from dimfeat.datasets import load_sample
from dimfeat.regressor import RegressionObjective
from dimfeat.training import TrainingLoop

SIZES = (25, 50, 100, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()

    structures, y = load_sample(as_frame=False)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(structures))
    train, pool = order[: args.n_train], order[args.n_train :]
    model = SiteNetRegressor(
        epochs=args.epochs, validation_fraction=0, random_state=args.seed, device="cpu"
    )
    model._initialize()  # the fit's own steps, with a callback that predicts the pool
    t0 = time.perf_counter()
    inputs = model._inputs(structures)
    build_s = time.perf_counter() - t0
    train_in, pool_in = [inputs[i] for i in train], [inputs[i] for i in pool]
    model.y_mean_ = float(np.mean(y[train]))
    model.y_scale_ = float(np.std(y[train]))
    device = torch.device("cpu")
    errors: list[np.ndarray] = []
    predict_s: list[float] = []

    def on_epoch(loop, record) -> None:
        t = time.perf_counter()
        errors.append(np.abs(model._predict_inputs(pool_in, device) - y[pool]))
        predict_s.append(time.perf_counter() - t)
        print(
            f"epoch {record['epoch']}: train_loss {record['train_loss']:.4f}, "
            f"pool MAE {errors[-1].mean():.4f} eV/atom, {record['seconds']:.1f} s",
            flush=True,
        )

    objective = RegressionObjective(model, y[train], np.empty(0), device)
    loop = TrainingLoop(objective, model._training_config(), device, callbacks=[on_epoch])
    history = loop.fit(train_in, [])
    load_end = os.getloadavg()

    err = np.stack(errors)  # (epochs, pool)
    pool_mae = err.mean(axis=1)
    deltas = np.diff(pool_mae)
    draw = np.random.default_rng([args.seed, 1])
    sizes = {}
    for k in SIZES:
        idx = draw.integers(0, len(pool), size=(args.draws, k))
        last = err[-1][idx].mean(axis=1)
        diffs = np.stack([(err[e + 1][idx] - err[e][idx]).mean(axis=1) for e in range(len(deltas))])
        wrong = (np.sign(diffs) != np.sign(deltas)[:, None]).mean(axis=1)
        chosen = err[:, idx].mean(axis=2).argmin(axis=0)  # the epoch these k crystals keep
        regret = pool_mae[chosen] - pool_mae.min()
        sizes[k] = {
            "mae_std": float(last.std()),
            "mae_p05": float(np.percentile(last, 5)),
            "mae_p95": float(np.percentile(last, 95)),
            "diff_std_per_pair": diffs.std(axis=1).round(5).tolist(),
            "wrong_calls_per_pair": wrong.round(3).tolist(),
            "wrong_calls_mean": float(wrong.mean()),
            "regret_mean": float(regret.mean()),
            "regret_p95": float(np.percentile(regret, 95)),
            "best_epoch_found": float(np.mean(chosen == pool_mae.argmin())),
        }
    epoch_s = [h["seconds"] for h in history]
    result = {
        "data": "dimfeat.datasets.load_sample() formation_energy_per_atom (eV/atom)",
        "n_train": args.n_train,
        "n_pool": len(pool),
        "epochs": args.epochs,
        "seed": args.seed,
        "draws": args.draws,
        "machine": machine_line(),
        "load_average_start_end": [round(load_start[0], 2), round(load_end[0], 2)],
        "input_build_s_per_100": 100 * build_s / len(structures),
        "epoch_s_per_100_train": [round(100 * s / args.n_train, 2) for s in epoch_s],
        "predict_s_per_100": [round(100 * s / len(pool), 2) for s in predict_s],
        "pool_mae": pool_mae.round(4).tolist(),
        "epoch_to_epoch_change": deltas.round(4).tolist(),
        "sizes": sizes,
    }
    print(json.dumps(result, indent=1))
    print(
        f"\nmedian cost: {np.median(result['epoch_s_per_100_train']):.2f} s per epoch per 100 "
        f"training crystals, {np.median(result['predict_s_per_100']):.2f} s to predict 100, "
        f"inputs {result['input_build_s_per_100']:.2f} s per 100 (load {load_start[0]:.1f} -> "
        f"{load_end[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(
        "median |epoch-to-epoch change| of the pool MAE, last half of the epochs: "
        f"{np.median(np.abs(deltas[len(deltas) // 2 :])):.4f} eV/atom"
    )
    print(
        f"best pool MAE {pool_mae.min():.4f} at epoch {pool_mae.argmin() + 1}\n"
        "  k  MAE std  5-95% range  diff std (last pair)  wrong calls  regret mean/p95  best found"
    )
    for k, s in sizes.items():
        print(
            f"{k:3d}  {s['mae_std']:.4f}  {s['mae_p05']:.3f}-{s['mae_p95']:.3f}  "
            f"{s['diff_std_per_pair'][-1]:.4f}                {s['wrong_calls_mean']:.2f}"
            f"         {s['regret_mean']:.4f}/{s['regret_p95']:.4f}    {s['best_epoch_found']:.2f}"
        )
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
