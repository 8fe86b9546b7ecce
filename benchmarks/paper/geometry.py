"""Structure sensitivity: does a crystal vector tell polymorphs apart, and rank them?

A structure featuriser must change when only the structure changes. This benchmark measures
that on real polymorphs and on prototype scans, for DIM vectors and the baselines.

**Polymorph families.** Crystals of the mp36k CGCNN Materials Project set that share a reduced
formula (<= 50 atoms in the primitive cell, Z <= 94). The ``test`` part of ``split.json`` gives
the reported families (292 families, 708 crystals); ``train`` gives the families used to choose
a recipe or an epoch (``--part train``: every train family after removing the crystals of the
label pool, about 2,100 families and 5,900 crystals). Labels come from the train part only.

* **separation**: features standardised over the family crystals; the median Euclidean
  distance between two polymorphs of a family divided by the median distance between two
  random crystals of the set (20,000 pairs, seed 0). A composition fingerprint gives 0.
* **ranking**: a model fitted on 1,000 formation-energy labels of the label pool (the paper
  benchmarks' 2,000 train crystals; 5 draws) predicts every family member; over the pairs of a
  family whose formation energies differ by >= 0.05 eV/atom, the share for which the model
  orders the pair correctly (a tie counts one half, so a composition-only vector scores 0.5).
  Models: ``StandardScaler`` + ``Ridge(alpha=1)``, and ``StandardScaler`` + ``MLPRegressor(64)``
  with a standardised target (the paper protocol's MLP).

**Prototypes.** NaCl as rock salt, CsCl type, zinc blende and wurtzite at one volume per atom;
rock salt at a = 5.0 ... 8.0 Å; KCl rock salt; carbon as diamond, lonsdaleite, graphite and the
simple-cubic lattice. Distances are in units of the per-dimension standard deviation over the
family set (two random crystals are then about sqrt(2 * 128) = 16 apart).

**One chemistry.** All SiO2 crystals and all carbon crystals of mp36k (both parts): the share of
near-constant dimensions (std within the set below 1e-3 of the std over the families) and a
``StandardScaler`` + MLP 5-fold cross-validation of formation energy against the mean predictor;
a vector whose dimensions are near-constant within one chemistry makes standardised inputs
explode.

Usage::

    python -m benchmarks.paper.geometry --weights sitenet-dim-mp36k   # test families, all reps
    python -m benchmarks.paper.geometry --weights FOLDER --part train \
        --reps dim,dim-untrained --quick
    python -m benchmarks.paper.geometry --weights A+B --reps dim   # A's and B's side by side

``--weights`` (and ``dim@...``) takes a weights folder of either kind (a two-channel folder
scores its 128 values) or ``A+B``, the concatenation of two weights' vectors.

Results: ``benchmarks/results/paper/geometry_<part>.json`` (``--json`` to change).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

import numpy as np

from benchmarks.common import RESULTS, write_json
from benchmarks.paper import features as F
from benchmarks.paper.protocol import draw, fit_predict, machine, make_model

REPS = ("dim", "dim-untrained", "xrd", "ofm", "magpie", "chgnet")
N_LABELS, N_DRAWS, MIN_GAP = 1000, 5, 0.05


# ------------------------------------------------------------------------------ data
@functools.lru_cache(maxsize=2)
def _part_table(part: str):
    """Inputs, ids, formulas and labels of every crystal of ``part`` (read once per process)."""
    from benchmarks.common import mp36k_inputs

    return mp36k_inputs(part)


def families(part: str, *, exclude: set[str] = frozenset(), n_max: int | None = None, seed=0):
    """A :class:`~benchmarks.paper.features.Dataset` of polymorph families and their groups."""
    crystals, extra = _part_table(part)
    ids = extra["material_id"].astype(str)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (c, formula) in enumerate(zip(crystals, extra["formula"], strict=True)):
        if (
            c.n_sites <= F.MAX_PRIMITIVE_SITES
            and c.species.max() <= F.MAX_Z
            and ids[i] not in exclude
        ):
            groups[str(formula)].append(i)
    names = sorted(f for f, members in groups.items() if len(members) >= 2)
    if n_max is not None and len(names) > n_max:
        names = sorted(np.random.default_rng(seed).choice(names, n_max, replace=False))
    rows = [i for f in names for i in groups[f]]
    group = np.repeat(np.arange(len(names)), [len(groups[f]) for f in names])
    name = f"geometry-{part}-families" + (f"{n_max}" if n_max else "")
    dataset = F.Dataset(
        name,
        [ids[i] for i in rows],
        {"formation_energy_per_atom": extra["formation_energy_per_atom"][rows]},
        [],
        [crystals[i] for i in rows],
        f"polymorph families of the mp36k '{part}' part: {len(names)} reduced formulas, "
        f"{len(rows)} crystals (<= 50 atoms in the primitive cell, Z <= 94)",
    )
    return dataset, group


def _with_structures(dataset):
    from dimfeat.datasets import load_cgcnn

    if not dataset.structures:
        dataset.structures = list(load_cgcnn(F.MP36K, ids=dataset.ids, n_jobs=1)["structure"])
    return dataset


def one_chemistry(formula: str):
    """Every mp36k crystal (both parts) of one reduced formula (``"C"`` for carbon)."""
    rows, crystals, ids, y = [], [], [], []
    for part in ("train", "test"):
        c, extra = _part_table(part)
        for i in np.flatnonzero(extra["formula"] == formula):
            if c[i].n_sites <= F.MAX_PRIMITIVE_SITES:
                crystals.append(c[i])
                ids.append(str(extra["material_id"][i]))
                y.append(float(extra["formation_energy_per_atom"][i]))
                rows.append(i)
    return F.Dataset(
        f"geometry-{formula}",
        ids,
        {"formation_energy_per_atom": np.array(y)},
        [],
        crystals,
        f"all {len(ids)} mp36k {formula} crystals (both parts, <= 50 atoms in the primitive cell)",
    )


def prototypes() -> dict[str, object]:
    """Named prototype structures (see the module docstring)."""
    from pymatgen.core import Lattice, Structure

    a_rs = 5.64  # rock-salt NaCl
    volume = a_rs**3 / 8  # per atom
    out = {}

    def rocksalt(a, cation="Na", anion="Cl"):
        return Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]]
        )

    out["NaCl rock salt"] = rocksalt(a_rs)
    out["NaCl CsCl type"] = Structure(
        Lattice.cubic((2 * volume) ** (1 / 3)), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    a_zb = (8 * volume) ** (1 / 3)
    out["NaCl zinc blende"] = Structure.from_spacegroup(
        "F-43m", Lattice.cubic(a_zb), ["Na", "Cl"], [[0, 0, 0], [0.25, 0.25, 0.25]]
    )
    # ideal wurtzite: c/a = sqrt(8/3), u = 3/8, 4 atoms per cell
    a_wz = (4 * volume / (np.sqrt(3) / 2 * np.sqrt(8 / 3))) ** (1 / 3)
    out["NaCl wurtzite"] = Structure.from_spacegroup(
        "P6_3mc",
        Lattice.hexagonal(a_wz, a_wz * np.sqrt(8 / 3)),
        ["Na", "Cl"],
        [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 3 / 8]],
    )
    for a in (5.0, 5.32, 5.64, 6.0, 6.5, 7.0, 8.0):
        out[f"NaCl rock salt a={a:.2f}"] = rocksalt(a)
    out["KCl rock salt"] = rocksalt(6.29, "K", "Cl")
    out["C diamond"] = Structure.from_spacegroup("Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]])
    out["C lonsdaleite"] = Structure.from_spacegroup(
        "P6_3/mmc", Lattice.hexagonal(2.52, 4.12), ["C"], [[1 / 3, 2 / 3, 0.0625]]
    )
    out["C graphite"] = Structure.from_spacegroup(
        "P6_3/mmc", Lattice.hexagonal(2.46, 6.71), ["C", "C"], [[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]]
    )
    out["C simple cubic"] = Structure(Lattice.cubic(1.78), ["C"], [[0, 0, 0]])
    return out


# ------------------------------------------------------------------------------ features
def matrix(dataset, rep: str, weights: str | None) -> np.ndarray:
    """Feature matrix of a dataset (cached through the paper benchmarks' feature cache)."""
    if rep.startswith("dim"):
        return F.features(dataset, rep, weights=weights if rep == "dim" else None, verbose=False)
    return F.features(_with_structures(dataset), rep, verbose=False)


def structure_matrix(structures: list, rep: str, weights: str | None) -> np.ndarray:
    """Features of a few structures, uncached (prototypes)."""
    from dimfeat.inputs import build_many

    if rep.startswith("dim"):
        inputs, _ = build_many(structures)
        return F.encode(weights if rep == "dim" else None, inputs).astype(np.float64)
    return F.baseline_rows(rep, F.baseline_featurizer(rep), structures)


# ------------------------------------------------------------------------------ scores
def distance_resolution(weights: str | None) -> dict[str, float]:
    """Cosine similarity of the encoder's distance embeddings of two distances (1 = blind).

    The embeddings are centred on their mean over 0-12 Å first, so the cosine measures how
    differently two distances are presented to the attention and value networks.
    """
    import torch

    encoder = F.dim_runtime(weights, 0).encoder  # the last part of a concatenation
    encoder = getattr(encoder, "structure", encoder)  # the structure channel of two
    grid = torch.linspace(0, 12, 121)
    with torch.no_grad():
        e = encoder.embed_distances(encoder.expand_distances(grid))
    e = torch.nn.functional.normalize(e - e.mean(0), dim=1)

    def cos(a: float, b: float) -> float:
        return float(e[round(a * 10)] @ e[round(b * 10)])

    return {f"{a} vs {b} A": cos(a, b) for a, b in ((2.0, 2.8), (2.8, 4.0), (4.0, 5.6), (5.6, 8.0))}


def _standardiser(X: np.ndarray):
    mean, std = X.mean(0), X.std(0)
    std = np.where(std > 1e-12 * max(std.max(), 1e-300), std, 1.0)
    return lambda Z: (Z - mean) / std


def _random_pair_distance(Z: np.ndarray, seed: int = 0, size: int = 20000) -> float:
    """Median distance over ``size`` random pairs of distinct rows of ``Z`` (any order of rows)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(Z), size)
    b = (a + rng.integers(1, len(Z), size)) % len(Z)
    return float(np.median(np.linalg.norm(Z[a] - Z[b], axis=1)))


def separation(X: np.ndarray, group: np.ndarray, *, seed: int = 0) -> float:
    """Median polymorph distance over median random-pair distance (standardised features)."""
    Z = _standardiser(X)(X)
    within = []
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        a, b = np.triu_indices(len(rows), 1)
        within.append(np.linalg.norm(Z[rows[a]] - Z[rows[b]], axis=1))
    return float(np.median(np.concatenate(within)) / _random_pair_distance(Z, seed))


def ranking_pairs(y: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs within a family whose labels differ by at least ``MIN_GAP``."""
    first, second = [], []
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        a, b = np.triu_indices(len(rows), 1)
        keep = np.abs(y[rows[a]] - y[rows[b]]) >= MIN_GAP
        first.append(rows[a][keep])
        second.append(rows[b][keep])
    return np.concatenate(first), np.concatenate(second)


def ranking(X_pool, y_pool, X, y, pairs, model: str) -> float:
    """Mean over draws of the share of pairs ordered correctly (ties count one half)."""
    a, b = pairs
    truth = np.sign(y[a] - y[b])
    scores = []
    for d in range(N_DRAWS):
        idx = draw(len(X_pool), N_LABELS, d, seed=7)
        if model == "ridge":
            from sklearn.linear_model import Ridge
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            estimator = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
        else:
            estimator = make_model("mlp", True, d)
        pred = fit_predict(estimator, X_pool[idx], y_pool[idx], X)
        diff = pred[a] - pred[b]
        # identical inputs give predictions equal up to round-off: a tie, not a guess
        guess = np.where(np.abs(diff) <= 1e-9 * (1 + np.abs(pred[a])), 0.0, np.sign(diff))
        scores.append(float(np.mean(np.where(guess == 0, 0.5, guess == truth))))
    return float(np.mean(scores))


def one_chemistry_check(X: np.ndarray, y: np.ndarray, reference_std: np.ndarray) -> dict:
    """Near-constant dimensions and a standardised-MLP cross-validation within one chemistry."""
    from sklearn.model_selection import KFold

    std = X.std(0)
    near_constant = float(np.mean(std < 1e-3 * np.maximum(reference_std, 1e-12)))
    maes, worst = [], 0.0
    for k, (fit, held) in enumerate(KFold(5, shuffle=True, random_state=0).split(X)):
        model = make_model("mlp", True, k)
        pred = fit_predict(model, X[fit], y[fit], X[held])
        maes.append(float(np.mean(np.abs(pred - y[held]))))
        scaler = model.regressor_.steps[0][1]
        worst = max(worst, float(np.abs(scaler.transform(X[held])).max()))
    baseline = float(np.mean(np.abs(y - y.mean())))
    return {
        "n": len(y),
        "near_constant_share": near_constant,
        "mlp_cv_mae": float(np.mean(maes)),
        "mean_predictor_mae": baseline,
        "max_abs_standardised_input": worst,
    }


# ------------------------------------------------------------------------------ run
def prototype_distances(X: np.ndarray, rep: str, weights: str | None):
    """Distances between prototype structures, standardised over the family matrix ``X``.

    Returns the named distances and the distance function of two prototype names (its
    ``names`` attribute lists them).
    """
    standardise = _standardiser(X)
    protos = prototypes()
    P = standardise(structure_matrix(list(protos.values()), rep, weights))
    names = list(protos)

    def dist(p, q):
        return float(np.linalg.norm(P[names.index(p)] - P[names.index(q)]))

    dist.names = names
    distances = {
        "rock salt vs CsCl (NaCl)": dist("NaCl rock salt", "NaCl CsCl type"),
        "rock salt vs zinc blende (NaCl)": dist("NaCl rock salt", "NaCl zinc blende"),
        "zinc blende vs wurtzite (NaCl)": dist("NaCl zinc blende", "NaCl wurtzite"),
        "rock salt a=5.64 vs a=8.00 (NaCl)": dist("NaCl rock salt", "NaCl rock salt a=8.00"),
        "rock salt a=5.64 vs a=6.00 (NaCl)": dist("NaCl rock salt", "NaCl rock salt a=6.00"),
        "NaCl vs KCl (rock salt)": dist("NaCl rock salt", "KCl rock salt"),
        "diamond vs graphite": dist("C diamond", "C graphite"),
        "diamond vs lonsdaleite": dist("C diamond", "C lonsdaleite"),
        "two random family crystals (median)": _random_pair_distance(standardise(X)),
    }
    return distances, dist


def evaluate(
    rep: str,
    weights: str | None,
    *,
    part: str = "test",
    quick: bool = False,
    n_families: int | None = None,
    with_prototypes: bool | None = None,
) -> dict:
    """Every geometry score of one representation (see the module docstring).

    ``n_families`` draws that many families (seed 0) instead of all of them, for a faster
    screen. ``quick`` leaves out the prototypes, the lattice scan and the one-chemistry checks;
    ``with_prototypes=True`` keeps the prototype distances in a quick evaluation (they are
    synthetic structures, standardised over the families of ``part``, so a train-split
    criterion when ``part="train"``).
    """
    with_prototypes = not quick if with_prototypes is None else with_prototypes
    pool = F.mp36k_subset("train", F.N_POOL, seed=F.SEED, name="mp36k-pool", structures=False)
    exclude = set(pool.ids) if part == "train" else set()
    fam, group = families(part, exclude=exclude, n_max=n_families)
    X_pool = matrix(pool, rep, weights)
    y_pool = pool.labels["formation_energy_per_atom"]
    X = matrix(fam, rep, weights)
    y = fam.labels["formation_energy_per_atom"]
    pairs = ranking_pairs(y, group)
    out = {
        "separation": separation(X, group),
        "ranking_ridge": ranking(X_pool, y_pool, X, y, pairs, "ridge"),
        "ranking_mlp": ranking(X_pool, y_pool, X, y, pairs, "mlp"),
        "n_families": int(group.max() + 1),
        "n_crystals": len(y),
        "n_pairs": len(pairs[0]),
    }
    if rep.startswith("dim"):
        out["distance_resolution"] = distance_resolution(weights if rep == "dim" else None)
    if not with_prototypes:
        return out
    out["prototypes"], dist = prototype_distances(X, rep, weights)
    if quick:
        return out
    scan = [n for n in dist.names if n.startswith("NaCl rock salt a=")]
    out["lattice_scan"] = {n.split("=")[1]: dist("NaCl rock salt a=5.64", n) for n in scan}
    reference_std = X.std(0)
    out["one_chemistry"] = {}
    for formula in ("SiO2", "C"):
        chem = one_chemistry(formula)
        out["one_chemistry"][formula] = one_chemistry_check(
            matrix(chem, rep, weights), chem.labels["formation_energy_per_atom"], reference_std
        )
    return out


LABELS = {
    "dim": "DIM (trained)",
    "dim-untrained": "DIM (untrained)",
    "xrd": "XRD pattern",
    "ofm": "orbital field matrix",
    "magpie": "Magpie (composition)",
    "chgnet": "CHGNet crystal features",
}


def _parse_rep(rep: str, weights: str) -> tuple[str, str | None]:
    """``"dim@FOLDER"`` is DIM with other weights; other names use ``weights`` for ``dim``."""
    if rep.startswith("dim@"):
        return "dim", rep[4:]
    return rep, weights if rep == "dim" else None


def table(report: dict) -> str:
    """Markdown table of a report (one row per representation)."""
    rows = [
        "| representation | separation | ranking (Ridge) | ranking (MLP) | rock salt vs CsCl |"
        " a = 5.64 vs 8.0 Å | NaCl vs KCl | diamond vs graphite |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rep, r in report["results"].items():
        p = r.get("prototypes", {})
        label = LABELS.get(rep, rep.replace("dim@", "DIM, weights "))
        cells = [
            f"{r['separation']:.4f}",
            f"{r['ranking_ridge']:.3f}",
            f"{r['ranking_mlp']:.3f}",
            *(
                f"{p[k]:.2f}" if k in p else ""
                for k in (
                    "rock salt vs CsCl (NaCl)",
                    "rock salt a=5.64 vs a=8.00 (NaCl)",
                    "NaCl vs KCl (rock salt)",
                    "diamond vs graphite",
                )
            ),
        ]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="sitenet-dim-mp36k")
    parser.add_argument("--part", choices=("train", "test"), default="test")
    parser.add_argument(
        "--reps", default=",".join(REPS), help="comma-separated; dim@FOLDER adds other DIM weights"
    )
    parser.add_argument("--quick", action="store_true", help="families only, no prototypes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = {}
    for rep in args.reps.split(","):
        if rep == "chgnet":
            try:
                import chgnet  # noqa: F401
            except ImportError:
                print("chgnet: not installed (pip install chgnet), skipped")
                continue
        t0 = time.perf_counter()
        kind, weights = _parse_rep(rep, args.weights)
        results[rep] = evaluate(kind, weights, part=args.part, quick=args.quick)
        r = results[rep]
        print(
            f"{rep:14s} separation {r['separation']:.4f}  ranking ridge {r['ranking_ridge']:.3f} "
            f"mlp {r['ranking_mlp']:.3f}  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    report = {
        "protocol": __doc__.split("Usage::")[0].strip(),
        "part": args.part,
        "weights": args.weights,
        "weights_sha256": {
            rep: F.weights_key(_parse_rep(rep, args.weights)[1])
            for rep in results
            if rep.startswith("dim")
        },
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    path = write_json(args.json or RESULTS / "paper" / f"geometry_{args.part}.json", report)
    print(table(report))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
