"""Score every saved epoch of a DIM run by train-split criteria, and plot them against the losses.

A DIM recipe is judged by what its vector does downstream and by how much structure it keeps,
not by the DIM loss. For each weights folder ``epoch-NNN`` of a run (written by
``dimfeat train --save-every-epoch`` or :class:`dimfeat.training.SaveEveryEpoch`) this computes,
with labels of the mp36k **train** part only (the test part is never read):

* the **probe**: on the paper benchmarks' label pool (2,000 train crystals, seed 0), for
  formation energy and band gap, ``LinearRegression`` and the paper's ``MLPRegressor(64)``
  (standardised inputs and target) fitted on n = 100, 250 and 1,000 labels (3 draws each) and
  scored (MAE) on the other 2,000 - n pool crystals; the median over draws;
* the **geometry** scores of :mod:`benchmarks.paper.geometry` on the train polymorph families:
  polymorph separation and polymorph ranking (Ridge and MLP on 1,000 pool labels), and the
  prototype distances (rock salt vs CsCl NaCl, a 5.64 vs 8.0 Å lattice, ...: synthetic
  structures, standardised over the train families);
* the **composition read-out**: how much of the composition a linear map recovers from the
  standardised vector, as the 5-fold cross-validated R^2 of ``RidgeCV`` predicting each of the
  9 site features (standardised element properties) averaged over a crystal's primitive cell,
  on the pool; the mean over the 9 (1 = the composition's mean properties are linear in the
  vector).

The untrained encoder of the same architecture is scored as epoch 0. The selection score of an
epoch is its mean probe MAE relative to epoch 0 (lower is better), reported beside the geometry
scores; :func:`choose` picks the epoch with the best probe among those whose polymorph rankings
and kept prototype distances (:data:`KEPT_PROTOTYPES`) are not below the untrained encoder's and
whose probe is not worse than the untrained encoder's in any cell.

Usage::

    python -m benchmarks.release.probe_curve RUN_FOLDER [--json RUN_FOLDER/probe_curve.json] \
        [--plot PNG]
    python -m benchmarks.release.probe_curve CURVE.json   # print a scored curve, score nothing
    python -m benchmarks.release.probe_curve CURVE.json --against OTHER.json:epoch-002  # by cell
    python -m benchmarks.release.probe_curve --score A+B TWO_CHANNEL [--json OUT.json]
    python -m benchmarks.release.probe_curve STRUCTURE_RUN --beside CONTEXT --json OUT.json

``--score`` scores each weights spec given, beside no run: a weights folder of either kind (a
two-channel folder scores its whole vector) or ``A+B``, the concatenation of the vectors of two
weights (:func:`benchmarks.paper.features.weights_parts`); ``--concat A B`` is ``--score A+B``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_json
from benchmarks.paper import features as F
from benchmarks.paper import geometry
from benchmarks.paper.protocol import draw, fit_predict, machine, make_model

LABELS = (100, 250, 1000)
PROPERTIES = ("formation_energy_per_atom", "band_gap")
MODELS = ("linear", "mlp")
DRAWS = 3


def probe(X: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Median pool MAE per ``property/model/n`` (see the module docstring)."""
    out = {}
    for prop in PROPERTIES:
        y = labels[prop]
        for model in MODELS:
            for n in LABELS:
                maes = []
                for d in range(DRAWS):
                    idx = draw(len(X), n, d, seed=11)
                    rest = np.setdiff1d(np.arange(len(X)), idx)
                    scale = model == "mlp"
                    pred = fit_predict(make_model(model, scale, d), X[idx], y[idx], X[rest])
                    maes.append(float(np.mean(np.abs(pred - y[rest]))))
                out[f"{prop}/{model}/{n}"] = float(np.median(maes))
    return out


def composition_readout(X: np.ndarray, crystals: list) -> float:
    """Mean 5-fold CV R^2 of the cell-mean site features from ``X`` (see the module docstring)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dimfeat.elements import element_table, standardisation

    mean, std = standardisation()
    table = (element_table() - mean) / std
    targets = np.stack([table[c.species[: c.n_sites].astype(int)].mean(0) for c in crystals])
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, X, targets, cv=5)
    r2 = 1 - ((pred - targets) ** 2).mean(0) / targets.var(0)
    return float(r2.mean())


def probe_pool():
    """The probe's label pool: 2,000 mp36k train crystals (seed 0), inputs and labels only."""
    return F.mp36k_subset("train", F.N_POOL, seed=F.SEED, name="mp36k-pool", structures=False)


def score(weights: str | None, n_families: int | None = None) -> dict:
    """Probe, composition and geometry scores of one weights folder (``None``: untrained)."""
    pool = probe_pool()
    rep = "dim" if weights else "dim-untrained"
    X = geometry.matrix(pool, rep, weights)
    out = {"probe": probe(X, pool.labels), "composition_r2": composition_readout(X, pool.inputs)}
    out["geometry"] = geometry.evaluate(
        rep, weights, part="train", quick=True, n_families=n_families, with_prototypes=True
    )
    return out


def relative_probe(scores: dict, reference: dict) -> float:
    """Mean over the probe cells of MAE / reference MAE."""
    keys = reference["probe"]
    return float(np.mean([scores["probe"][k] / reference["probe"][k] for k in keys]))


def probe_by_labels(scores: dict, reference: dict) -> dict[str, float]:
    """:func:`relative_probe` per model and label count (mean over the two properties).

    ``linear/100`` is LinearRegression on 100 labels for 128 columns, at the interpolation
    threshold, where the MAE follows the conditioning of the vector more than what it holds;
    the other groups are well posed.
    """
    return {
        f"{model}/{n}": float(
            np.mean(
                [
                    scores["probe"][f"{prop}/{model}/{n}"]
                    / reference["probe"][f"{prop}/{model}/{n}"]
                    for prop in PROPERTIES
                ]
            )
        )
        for model in MODELS
        for n in LABELS
    }


#: Prototype pairs that an epoch must keep at least as far apart as the untrained encoder.
KEPT_PROTOTYPES = ("rock salt vs CsCl (NaCl)", "rock salt a=5.64 vs a=8.00 (NaCl)")


def geometry_kept(scores: dict, base: dict) -> bool:
    """Rankings not below the untrained encoder's, nor the prototype distances (when scored)."""
    g, b = scores["geometry"], base["geometry"]
    if g["ranking_ridge"] < b["ranking_ridge"] or g["ranking_mlp"] < b["ranking_mlp"]:
        return False
    return _prototypes_kept(scores, base)


def _prototypes_kept(scores: dict, base: dict) -> bool:
    g, b = scores["geometry"], base["geometry"]
    if "prototypes" in g and "prototypes" in b:
        return all(g["prototypes"][k] >= b["prototypes"][k] for k in KEPT_PROTOTYPES)
    return True


def probe_kept(scores: dict, base: dict) -> bool:
    """No probe cell (property, model, label count) with a larger MAE than the untrained one's."""
    return all(scores["probe"][k] <= base["probe"][k] for k in base["probe"])


#: Geometry floors of :func:`choose` with ``floors=True``: separation and both polymorph
#: rankings on the train families (the targets a two-channel vector is held to).
GEOMETRY_FLOORS = {"separation": 0.15, "ranking_ridge": 0.62, "ranking_mlp": 0.62}


def geometry_above(scores: dict, floors: dict[str, float]) -> bool:
    """Every geometry score named in ``floors`` at least its floor."""
    return all(scores["geometry"][name] >= floor for name, floor in floors.items())


def choose(curve: dict, floors: dict[str, float] | None = None) -> str:
    """The epoch with the best relative probe among those that lose nothing to the untrained one.

    An epoch qualifies when its geometry is not below the untrained encoder's (both polymorph
    rankings on the train families and, where they were scored, the distances of
    :data:`KEPT_PROTOTYPES`: rock salt vs CsCl, and a 5.64 vs 8.0 Å lattice) and no cell of its
    probe is worse than the untrained encoder's (the mean probe can hide a property that got
    worse). When no epoch qualifies, the geometry alone decides; when none keeps the geometry,
    the probe alone.

    With ``floors`` (e.g. :data:`GEOMETRY_FLOORS`), "keeps the geometry" means instead: every
    named geometry score at least its floor, and the prototype distances kept. This is the rule
    for a structure channel scored beside a context channel, where the untrained structure
    encoder's polymorph ranking, not its separation, is the bar that no trained epoch may clear.
    """
    base = curve["epoch-000"]
    trained = [k for k in curve if k != "epoch-000"]
    if floors is None:
        kept = [k for k in trained if geometry_kept(curve[k], base)]
    else:
        kept = [
            k
            for k in trained
            if geometry_above(curve[k], floors) and _prototypes_kept(curve[k], base)
        ]
    candidates = [k for k in kept if probe_kept(curve[k], base)] or kept or trained
    return min(candidates, key=lambda k: curve[k]["relative_probe"])


def well_posed_probe(scores: dict, reference: dict) -> float:
    """Mean of :func:`probe_by_labels` over the well-posed groups (all but ``linear/100``)."""
    by_labels = probe_by_labels(scores, reference)
    return float(np.mean([r for key, r in by_labels.items() if key != "linear/100"]))


def read_reference(spec: str) -> dict:
    """The scored epoch named by ``CURVE.json:EPOCH``; ``ValueError`` naming what is there."""
    path, _, epoch = spec.rpartition(":")
    if not path:
        raise ValueError(
            f"expected CURVE.json:EPOCH (e.g. probe_curve.json:epoch-002), got {spec!r}"
        )
    curve = json.loads(Path(path).read_text())["curve"]
    if epoch not in curve:
        raise ValueError(f"{path} has no {epoch}; it has {', '.join(curve)}")
    return curve[epoch]


def against(scores: dict, reference: dict) -> tuple[int, int, float]:
    """Probe cells where ``scores`` has the lower MAE than ``reference``, of how many, mean ratio.

    Compares absolute train-pool MAEs cell by cell (property, model, label count), so two runs
    are compared without going through their own untrained encoders, which differ with the
    architecture.
    """
    ratios = [scores["probe"][k] / reference["probe"][k] for k in reference["probe"]]
    return int(sum(r < 1 for r in ratios)), len(ratios), float(np.mean(ratios))


def plot(curve: dict, history: list[dict], path: Path) -> None:
    """Probe, geometry and DIM losses against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = sorted(int(k.split("-")[1]) for k in curve)
    keys = [f"epoch-{e:03d}" for e in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for prop, style in zip(PROPERTIES, ("-", "--"), strict=True):
        for model in MODELS:
            rel = [
                np.mean([curve[k]["probe"][f"{prop}/{model}/{n}"] for n in LABELS])
                / np.mean([curve["epoch-000"]["probe"][f"{prop}/{model}/{n}"] for n in LABELS])
                for k in keys
            ]
            ax.plot(epochs, rel, style, marker="o", ms=3, label=f"{prop.split('_')[0]} {model}")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set(
        xlabel="epoch (0 = untrained)", ylabel="probe MAE / untrained", title="train-split probe"
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for name in ("ranking_ridge", "ranking_mlp"):
        ax.plot(epochs, [curve[k]["geometry"][name] for k in keys], marker="o", ms=3, label=name)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax2 = ax.twinx()
    ax2.plot(epochs, [curve[k]["geometry"]["separation"] for k in keys], "k:", label="separation")
    ax2.set_ylabel("polymorph separation")
    ax.set(xlabel="epoch", ylabel="polymorph ranking", title="geometry (train families)")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    for key in ("valid_local_dim", "valid_global_dim", "valid_local_kl", "valid_global_kl"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot([h["epoch"] for h in history], values, marker="o", ms=3, label=key[6:])
    ax.set(xlabel="epoch", ylabel="validation loss", title="DIM losses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def run(
    folder: Path,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    every: int = 1,
    n_families: int | None = None,
    beside: str | None = None,
    floors: dict[str, float] | None = None,
) -> dict:
    """Score epoch 0 and the ``epoch-NNN`` folders of a run (resuming from the JSON).

    With ``every > 1`` only epochs ``every``, ``2 * every``, ... and the last are scored.
    With ``beside`` (a weights folder, typically a context channel), each epoch is scored as
    the concatenation ``beside+epoch-NNN`` and epoch 0 as ``beside`` beside the untrained
    encoder, so that :func:`choose` picks the structure channel's epoch by what it adds to the
    other channel (a two-channel model's vector), not by what it holds alone. ``floors`` is
    the geometry rule of :func:`choose`, recorded in the JSON.
    """
    import torch

    torch.set_num_threads(1)
    json_path = json_path or folder / "probe_curve.json"
    record = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if record and record.get("beside") != beside:
        raise SystemExit(
            f"{json_path} scored the run beside {record.get('beside')!r}, not {beside!r}: "
            "give another --json"
        )
    curve = record.get("curve", {})

    def spec(path: Path) -> str:
        return _beside(beside, path)

    # epoch 0 is the untrained encoder of the run's own architecture and seed
    epochs = sorted(
        p for p in folder.glob("epoch-[0-9][0-9][0-9]") if p.is_dir() and p.name != "epoch-000"
    )
    if not epochs:
        raise SystemExit(f"no epoch-NNN weights folders in {folder}")
    epochs = [
        p for i, p in enumerate(epochs) if int(p.name[6:]) % every == 0 or i == len(epochs) - 1
    ]
    from dimfeat.weights import read_config

    sha = {p.name: read_config(p)["sha256"] for p in epochs}
    if "epoch-000" not in curve:
        t0 = time.perf_counter()
        curve["epoch-000"] = _untrained_like(epochs[0], n_families, beside)
        print(f"epoch-000 (untrained) scored in {time.perf_counter() - t0:.0f} s", flush=True)
    for name, entry in curve.items():
        path = folder / name
        if (
            "composition_r2" not in entry
            and path.is_dir()
            and read_config(path)["sha256"] == entry["sha256"]
        ):
            # scored before the read-out existed: add it (the features are cached)
            pool = probe_pool()
            X = geometry.matrix(pool, "dim", spec(path))
            entry["composition_r2"] = composition_readout(X, pool.inputs)
        if "prototypes" not in entry["geometry"] and (
            name == "epoch-000"
            or (path.is_dir() and read_config(path)["sha256"] == entry["sha256"])
        ):
            # scored before the prototypes were part of the curve: add them (features cached)
            weights = spec(path) if beside or name != "epoch-000" else None
            entry["geometry"]["prototypes"] = _train_prototypes(weights)
    for path in epochs:
        if path.name in curve and curve[path.name].get("sha256") == sha[path.name]:
            continue
        t0 = time.perf_counter()
        curve[path.name] = {**score(spec(path), n_families), "sha256": sha[path.name]}
        print(f"{path.name} scored in {time.perf_counter() - t0:.0f} s", flush=True)
        for v in curve.values():
            v["relative_probe"] = relative_probe(v, curve["epoch-000"])
        record = {
            "protocol": __doc__.split("Usage::")[0].strip(),
            "run": str(folder),
            "beside": beside,
            "beside_sha256": F.weights_key(beside) if beside else None,
            "floors": floors,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "curve": dict(sorted(curve.items())),
        }
        write_json(json_path, record)
    for v in curve.values():
        v["relative_probe"] = relative_probe(v, curve["epoch-000"])
    record["curve"] = dict(sorted(curve.items()))
    record["floors"] = floors
    record["chosen"] = choose(curve, floors)
    write_json(json_path, record)
    if plot_path is not None:
        history = read_config(epochs[-1])["training"]["history"]
        plot(curve, history, plot_path)
    return record


def _train_prototypes(weights: str | None) -> dict[str, float]:
    """Prototype distances standardised over the train families (as in :func:`score`)."""
    rep = "dim" if weights else "dim-untrained"
    pool = probe_pool()
    fam, _ = geometry.families("train", exclude=set(pool.ids))
    X = geometry.matrix(fam, rep, weights)
    return geometry.prototype_distances(X, rep, weights)[0]


def _beside(beside: str | None, path: Path) -> str:
    """The weights spec of ``path`` scored beside ``beside`` (``A+B``), or alone."""
    return f"{beside}+{path}" if beside else str(path)


def _untrained_like(
    weights_folder: Path, n_families: int | None = None, beside: str | None = None
) -> dict:
    """Scores of a random encoder with the architecture and seed of a run's weights (beside
    the weights ``beside`` when given)."""

    from dimfeat.encoder import EncoderConfig
    from dimfeat.runtime import EncoderRuntime
    from dimfeat.weights import InputSettings, read_config, save_pretrained

    config = read_config(weights_folder)
    seed = (config.get("training") or {}).get("settings", {}).get("seed", 0)
    encoder_config = EncoderConfig.from_dict(config["encoder"])
    encoder = EncoderRuntime.create(None, seed=seed, encoder_config=encoder_config).encoder
    target = weights_folder.parent / "epoch-000"
    save_pretrained(target, encoder, inputs=InputSettings(**config["inputs"]), name="epoch-000")
    return {**score(_beside(beside, target), n_families), "sha256": read_config(target)["sha256"]}


def score_specs(
    specs: list[str], json_path: Path | None = None, n_families: int | None = None
) -> dict:
    """:func:`score` of each weights spec (a folder of either kind or ``A+B``), with the
    weights' sha256 (joined by ``+``), written to ``json_path`` when given."""
    import torch

    torch.set_num_threads(1)
    record = {"protocol": __doc__.split("Usage::")[0].strip(), "machine": machine(), "scores": {}}
    for spec in specs:
        t0 = time.perf_counter()
        entry = score(spec, n_families)
        entry["sha256"] = F.weights_key(spec)
        entry["seconds"] = time.perf_counter() - t0
        record["scores"][spec] = entry
        if json_path is not None:
            write_json(json_path, record)
    return record


def _print_scores(record: dict) -> None:
    for spec, v in record["scores"].items():
        g = v["geometry"]
        cells = "  ".join(f"{k} {m:.3f}" for k, m in v["probe"].items() if k.endswith("/1000"))
        print(
            f"{spec}: composition R2 {v['composition_r2']:.3f}  separation "
            f"{g['separation']:.4f}  ranking ridge {g['ranking_ridge']:.3f} mlp "
            f"{g['ranking_mlp']:.3f}  [{cells}]"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument(
        "--score",
        nargs="+",
        metavar="WEIGHTS",
        default=None,
        help="score these weights (a folder of either kind, or A+B: two weights' vectors "
        "side by side) instead of a run",
    )
    parser.add_argument(
        "--concat", nargs=2, metavar=("A", "B"), default=None, help="the same as --score A+B"
    )
    parser.add_argument("--n-families", type=int, default=None, help="train families drawn")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--every", type=int, default=1, help="score every N-th epoch and the last")
    parser.add_argument(
        "--beside",
        metavar="WEIGHTS",
        default=None,
        help="score each epoch of the run beside these weights (WEIGHTS+epoch-NNN): a "
        "structure channel's epochs by the two-channel vector they make with a context channel",
    )
    parser.add_argument(
        "--against",
        metavar="CURVE.json:EPOCH",
        default=None,
        help="also compare each epoch's probe cell by cell with one epoch of another scored curve",
    )
    parser.add_argument(
        "--floors",
        action="store_true",
        help="keep the geometry by floors (separation >= 0.15, both rankings >= 0.62 on the "
        "train families) instead of by the untrained encoder's rankings",
    )
    args = parser.parse_args(argv)
    specs = list(args.score or []) + (["+".join(args.concat)] if args.concat else [])
    if specs:
        _print_scores(score_specs(specs, args.json, args.n_families))
        return
    if args.run is None:
        parser.error("give a RUN folder, a scored CURVE.json, or --score/--concat")
    reference = None
    if args.against:
        try:
            reference = read_reference(args.against)
        except ValueError as exc:
            parser.error(f"--against: {exc}")
    if args.run.suffix == ".json":
        record = json.loads(args.run.read_text())
        floors = GEOMETRY_FLOORS if args.floors else record.get("floors")
        record["chosen"] = choose(record["curve"], floors)
    else:
        record = run(
            args.run,
            args.json,
            args.plot,
            args.every,
            args.n_families,
            args.beside,
            GEOMETRY_FLOORS if args.floors else None,
        )
    base = record["curve"]["epoch-000"]
    for k, v in record["curve"].items():
        g = v["geometry"]
        by_labels = probe_by_labels(v, base)
        groups = "  ".join(f"{key} {r:.2f}" for key, r in by_labels.items())
        groups += f"  well-posed mean {well_posed_probe(v, base):.2f}"
        print(
            f"{k}: probe x{v['relative_probe']:.3f}  composition R2 {v['composition_r2']:.3f}  "
            f"separation {g['separation']:.4f}  "
            f"ranking ridge {g['ranking_ridge']:.3f} mlp {g['ranking_mlp']:.3f}  [{groups}]"
        )
        if "prototypes" in g:
            print(
                "    "
                + "  ".join(f"{name} {g['prototypes'][name]:.1f}" for name in KEPT_PROTOTYPES)
            )
        if reference is not None:
            below, cells, ratio = against(v, reference)
            print(f"    MAE below {args.against} in {below}/{cells} cells, mean ratio {ratio:.3f}")
    print("chosen:", record["chosen"])


if __name__ == "__main__":
    main()
