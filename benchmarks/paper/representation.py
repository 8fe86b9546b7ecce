"""Fig. 8: representation learning on mp36k (formation energy and band gap).

Small downstream models (:mod:`benchmarks.paper.protocol`) are fitted on 50/100/250/1000 labels
drawn from a fixed pool of 2,000 train crystals and scored (MAE) on 1,000 fixed test crystals,
for each representation: trained DIM (bundled weights), untrained DIM (random weights, seed 0),
OFM, XRD and Magpie. Every finished cell is checkpointed, so a rerun only computes what changed
(e.g. the trained-DIM cells after new weights).

``python -m benchmarks.paper.representation [--weights NAME_OR_FOLDER] [--reps dim,xrd,...]``

``--against BASELINE.json`` also prints, cell by cell, the trained-DIM medians of this run and of
another result file (other weights) over their common draws, and the share of paired draws
(same labels, same model seed) this run wins.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.paper import features as F
from benchmarks.paper import protocol as P

RESULTS = F.ROOT / "benchmarks" / "results" / "paper"
PROPERTIES = ("formation_energy_per_atom", "band_gap")
UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV", "last phdos peak": "cm^-1"}
REPS = ("dim", "dim-untrained", "ofm", "xrd", "magpie")
DEFAULT_WEIGHTS = "sitenet-dim-mp36k"


def rep_specs(reps, weights: str = DEFAULT_WEIGHTS) -> dict[str, tuple[str, str | None]]:
    """``label -> (representation kind, weights)`` for the representation names given."""
    return {r: (r, weights if r == "dim" else None) for r in reps}


def cell_key(kind: str, weights: str | None) -> str:
    """Cache identity of a representation: kind plus weights sha / featuriser hash."""
    if kind.startswith("dim"):
        return f"{kind}@{F.weights_key(weights)}"
    return f"{kind}@{F.baseline_key(kind)}"


def evaluate(
    specs: dict[str, tuple[str, str | None]],
    *,
    pool: F.Dataset,
    test: F.Dataset,
    checkpoint: P.Checkpoint,
    properties=PROPERTIES,
    models=P.MODELS,
    label_counts=P.LABEL_COUNTS,
    draws=P.n_draws,
    seed: int = 0,
) -> tuple[dict, dict]:
    """MAE of every draw for each property x model x representation x label count.

    Returns ``(results, scaling)``: ``results[property][model][label][str(n)]`` is the list of
    test MAEs; ``scaling[property][model][label]`` records the input scaling used and, for
    trained DIM with ``linear``, the pool-only validation that chose it.
    """
    results: dict = {}
    scaling: dict = {}
    for label, (kind, weights) in specs.items():
        X_pool = F.features(pool, kind, weights=weights)
        X_test = F.features(test, kind, weights=weights)
        ident = cell_key(kind, weights)
        for prop in properties:
            y_pool, y_test = pool.labels[prop], test.labels[prop]
            for model in models:
                scale = P.default_scaling(kind, model)
                if kind.startswith(("ofm", "xrd")):
                    # Sparse OFM columns (nonzero in 1-2 pool crystals) blow up under
                    # standardisation; choose raw vs standardised inside the pool, as for DIM.
                    scale = None
                info: dict = {}
                if scale is None:
                    info = checkpoint.get_or_compute(
                        f"choice|{prop}|{model}|{ident}|n{min(label_counts)}",
                        partial(_choice, X_pool, y_pool, model, min(label_counts)),
                    )
                    scale = bool(info["scale"])
                scaling.setdefault(prop, {}).setdefault(model, {})[label] = {
                    "standardised": scale,
                    **({"pool_validation_median_mae": info["validation"]} if info else {}),
                }
                for n in label_counts:
                    maes = checkpoint.get_or_compute(
                        # the draw count is part of the key: a quick run never stands in
                        # for a full one
                        f"{prop}|{model}|{ident}|{'std' if scale else 'raw'}|{n}|seed{seed}"
                        f"|draws{draws(n)}",
                        partial(
                            P.mae_draws,
                            X_pool,
                            y_pool,
                            X_test,
                            y_test,
                            model=model,
                            scale=scale,
                            n=n,
                            draws=draws(n),
                            seed=seed,
                        ),
                    )
                    results.setdefault(prop, {}).setdefault(model, {}).setdefault(label, {})[
                        str(n)
                    ] = maes
    return results, scaling


def _choice(X_pool, y_pool, model, n) -> dict:
    scale, validation = P.choose_scaling(X_pool, y_pool, model, n=n)
    return {"scale": bool(scale), "validation": validation}


def weights_summary(weights: str) -> str:
    """How the DIM weights were trained, from their ``config.json`` (one line; for two-channel
    weights, one clause per channel)."""
    from dimfeat.channels import read_weights_config
    from dimfeat.weights import resolve_weights

    config = read_weights_config(resolve_weights(weights))
    if "channels" not in config:
        return _training_summary(config.get("training") or {})
    return "two channels: " + "; ".join(
        f"{name} ({block['encoder']['global_dim']} values"
        + (", no distances" if block["encoder"].get("distance_input") == "none" else "")
        + f"), {_training_summary(block['source'].get('training') or {})}"
        for name, block in config["channels"].items()
    )


def _training_summary(training: dict) -> str:
    history = training.get("history") or []
    settings = training.get("settings") or {}
    return (
        f"trained {len(history)} epoch(s) on {training.get('hardware', '?')}, false samples "
        f"{settings.get('false_samples', '?')}, local constituent "
        f"{settings.get('local_constituent', 'neighbour')}"
    )


def describe(specs, pool: F.Dataset, test: F.Dataset, seed: int = 0) -> dict:
    """The metadata block every result file carries."""
    reps = {}
    for label, (kind, weights) in specs.items():
        if kind == "dim":
            reps[label] = f"DIM encoder, weights {weights} (sha256 {F.weights_key(weights)}...)"
            reps[label] += ": " + weights_summary(weights)
        elif kind == "dim-untrained":
            reps[label] = "DIM encoder with random weights (torch.manual_seed(0)), 128-d"
        elif kind == "magpie":
            reps[label] = "matminer ElementProperty.from_preset('magpie', impute_nan=True), 132"
        else:
            reps[label] = repr(F.baseline_featurizer(kind))
    return {
        "data": {"pool": pool.description, "test": test.description},
        "split": "the mp36k split.json (80/20 by material id)",
        "n_pool": len(pool.ids),
        "n_test": len(test.ids),
        "label_counts": list(P.LABEL_COUNTS),
        "draws": {str(n): P.n_draws(n) for n in P.LABEL_COUNTS},
        "seed": seed,
        "draw_rule": "default_rng([seed, n, d]).choice(n_pool, n, replace=False)",
        "models": {
            "linear": "LinearRegression()",
            "mlp": f"MLPRegressor({P.MLP_SETTINGS}, random_state=d), standardised y; "
            "X standardised unless the pool-chosen scaling (OFM, XRD) says raw",
        },
        "representations": reps,
        "machine": P.machine(),
    }


def run(
    weights: str = DEFAULT_WEIGHTS,
    reps=REPS,
    out: Path | None = None,
    draws: int | None = None,
) -> dict:
    """Run (or resume) the experiment and write ``representation.json``.

    ``draws`` caps the draws per label count (the protocol's 100, 25 at 1,000 labels) for a
    quicker check; the first draws are the protocol's own, so they pair with a full run.
    """
    pool, test = F.pool(), F.first(F.test_set(), F.N_SCORE)
    specs = rep_specs(reps, weights)
    checkpoint = P.Checkpoint(F.CACHE / "runs" / "representation.json")
    n_draws = P.n_draws if draws is None else (lambda n: min(draws, P.n_draws(n)))
    results, scaling = evaluate(specs, pool=pool, test=test, checkpoint=checkpoint, draws=n_draws)
    description = describe(specs, pool, test)
    description["draws"] = {str(n): n_draws(n) for n in P.LABEL_COUNTS}
    payload = {
        "experiment": "Fig. 8 representation learning",
        **description,
        "units": {p: UNITS[p] for p in PROPERTIES},
        "input_scaling": scaling,
        "reference_mae_predict_pool_mean": {
            p: float(np.mean(np.abs(test.labels[p] - pool.labels[p].mean()))) for p in PROPERTIES
        },
        "mae": results,
    }
    out = out or RESULTS / "representation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return payload


def medians(payload: dict) -> dict:
    """``median[property][model][rep][n]`` of a result payload."""
    return {
        prop: {
            model: {
                rep: {n: float(np.median(v)) for n, v in by_n.items()}
                for rep, by_n in by_rep.items()
            }
            for model, by_rep in by_model.items()
        }
        for prop, by_model in payload["mae"].items()
    }


def paired_comparison(payload: dict, baseline: dict, rep: str = "dim") -> list[str]:
    """``prop model n: median / baseline median (share of paired draws won)`` per cell.

    Draw ``d`` of every cell uses the same labels and model seed in any run of the protocol, so
    the first ``min(len)`` draws of two runs pair up.
    """
    rows = []
    for prop, by_model in payload["mae"].items():
        for model, by_rep in by_model.items():
            for n, a in by_rep[rep].items():
                try:
                    b = baseline["mae"][prop][model][rep][n]
                except KeyError:
                    raise ValueError(f"the baseline has no {rep} cell {prop}/{model}/{n}") from None
                k = min(len(a), len(b))
                x, y = np.asarray(a[:k]), np.asarray(b[:k])
                rows.append(
                    f"{prop} {model} {n}: {np.median(x):.3f} / {np.median(y):.3f} "
                    f"({np.mean(x < y):.0%} of {k} draws won)"
                )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--reps", default=",".join(REPS))
    parser.add_argument("--draws", type=int, default=None, help="at most this many draws")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--against", type=Path, default=None, help="result file to pair with")
    args = parser.parse_args(argv)
    payload = run(args.weights, tuple(args.reps.split(",")), args.out, args.draws)
    if args.against is not None:
        print("\n".join(paired_comparison(payload, json.loads(args.against.read_text()))))


if __name__ == "__main__":
    main()
