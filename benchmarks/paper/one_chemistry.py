"""One chemistry: is the MLP on standardised DIM vectors no worse than least squares?

Within one chemistry the vector dimensions that carry the composition are (near-)constant.
Where they differ only by float noise, ``StandardScaler`` blows the noise up to unit variance
and the paper protocol's MLP fits it. This benchmark measures whether
``StandardScaler`` + ``MLPRegressor(64)`` on the exported vector is no worse than
``LinearRegression`` at 250 and 1,000 labels, on an all-carbon and an all-SiO2 set.

**Sets.** mp36k has only 10 carbon and 95 SiO2 crystals (<= 50 atoms in the primitive cell,
both parts of ``split.json``), too few for 1,000 labels, so each set is generated from seed
crystals: the mp36k crystals of the formula (:func:`benchmarks.paper.geometry.one_chemistry`),
for carbon also the diamond, lonsdaleite and graphite prototypes
(:func:`benchmarks.paper.geometry.prototypes`). Crystal ``i`` of a set comes from
``numpy.random.default_rng([seed, VERSION])``, drawn in order:

1. a seed crystal (primitive cell), uniformly;
2. with probability 1/4 a supercell doubling one axis (only if it keeps <= 50 atoms);
3. a lattice strain ``L' = L (I + e)`` with ``e`` the symmetric part of a 3x3 matrix of
   uniform entries in +-``MAX_STRAIN`` (8 %: stretches and shears);
4. Cartesian site displacements, normal with ``RATTLE`` = 0.05 Å per component;
5. rejection (and a new draw from step 1) if two atoms come closer than ``MIN_DISTANCE``
   (carbon 1.1 Å, SiO2 1.3 Å).

**Labels** (deterministic functions of the structure, :func:`label`):

* SiO2: the Ewald energy per atom with formal charges Si4+ and O2-
  (``pymatgen.analysis.ewald.EwaldSummation``, its default accuracy), in eV/atom.
* carbon: a Morse pair energy per atom, in eV/atom,
  ``E = 1/(2N) sum_{i != j, r_ij < r_c} [V(r_ij) - V(r_c)]`` with
  ``V(r) = D (exp(-2a(r - r0)) - 2 exp(-a(r - r0)))``, ``D = 3.6 eV`` (a C-C single bond,
  348 kJ/mol), ``r0 = 1.54 Å`` (the diamond bond), ``a = 2.0 Å^-1``, ``r_c = 3.5 Å`` (shifted so
  it is continuous at the cut-off). It needs no charges and, unlike the volume per atom,
  depends on every near-neighbour distance, so both the strain and the rattling change it.

Sets are cached as ``benchmarks/cache/one_chemistry/<formula>-n<N>-seed<S>-v<VERSION>.json``
(structures as pymatgen dicts, labels, seed ids) plus the model inputs beside them
(``.inputs.npz``, rebuilt when the input code changes).

**Scores.** For each weights spec (a weights folder of either kind, a bundled name or ``A+B``),
for ``n`` in 250 and 1,000 and 5 draws: draw ``d`` takes ``n`` labels of the set
(:func:`benchmarks.paper.protocol.draw`, seed 3) and scores the MAE on at most 500 of the
other crystals (``default_rng([3, n, d, 1])``). Models are the paper protocol's
(:func:`benchmarks.paper.protocol.make_model`): ``LinearRegression`` on raw inputs (with more
labels than dimensions least squares does not depend on the scaling) and ``StandardScaler`` +
``MLPRegressor(64)`` with a standardised target. The verdict for a (chemistry, weights, n) is
"MLP no worse than LR" when the median over the draws of the paired ratio MLP MAE / LR MAE is
<= 1. Diagnostics (as :func:`benchmarks.paper.geometry.one_chemistry_check`): the share of
near-constant dimensions (standard deviation within the set below 1e-3 of that over the
2,000-crystal mp36k label pool) and the largest |standardised input| a held-out crystal gets
from the MLP's scaler.

Usage::

    python -m benchmarks.paper.one_chemistry [--weights SPEC ...] [--n-crystals N] [--json PATH]

Results: ``benchmarks/results/paper/one_chemistry.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, write_json
from benchmarks.paper import features as F
from benchmarks.paper.protocol import draw, fit_predict, machine, make_model

VERSION = 1
SEED = 0
N_CRYSTALS = 1500
LABEL_COUNTS = (250, 1000)
N_DRAWS = 5
N_HELD_MAX = 500
DRAW_SEED = 3
MAX_STRAIN = 0.08
RATTLE = 0.05  # Å, per Cartesian component
P_SUPERCELL = 0.25
MIN_DISTANCE = {"C": 1.1, "SiO2": 1.3}
FORMULAS = ("C", "SiO2")
DEFAULT_WEIGHTS = ("sitenet-dim-mp36k",)
MORSE = {"D": 3.6, "r0": 1.54, "a": 2.0, "cutoff": 3.5}
NEAR_CONSTANT = 1e-3


# ------------------------------------------------------------------------------ labels
def morse_energy(structure) -> float:
    """Shifted Morse pair energy per atom (eV/atom) with the carbon parameters of ``MORSE``."""
    D, r0, a, rc = MORSE["D"], MORSE["r0"], MORSE["a"], MORSE["cutoff"]

    def v(r):
        return D * (np.exp(-2 * a * (r - r0)) - 2 * np.exp(-a * (r - r0)))

    _, _, _, r = structure.get_neighbor_list(rc)  # every ordered pair (i, j) within rc
    r = r[r > 1e-8]
    return float(0.5 * np.sum(v(r) - v(rc)) / len(structure))


def ewald_energy(structure) -> float:
    """Ewald energy per atom (eV/atom) with formal charges Si4+ and O2-."""
    from pymatgen.analysis.ewald import EwaldSummation

    charged = structure.copy()
    charged.add_oxidation_state_by_element({"Si": 4, "O": -2})
    return float(EwaldSummation(charged).total_energy / len(charged))


LABELS: dict[str, tuple[Callable, str]] = {
    "C": (morse_energy, "Morse pair energy per atom (eV/atom)"),
    "SiO2": (ewald_energy, "Ewald energy per atom, Si4+ and O2- (eV/atom)"),
}


def label(formula: str, structure) -> float:
    """The label of a crystal of ``formula`` (see the module docstring)."""
    try:
        return LABELS[formula][0](structure)
    except KeyError:
        raise KeyError(f"no label defined for {formula!r}; choose from {sorted(LABELS)}") from None


# ------------------------------------------------------------------------------ sets
def seed_structures(formula: str) -> tuple[list[str], list]:
    """Names and primitive structures of the seed crystals of ``formula`` (module docstring)."""
    from benchmarks.paper import geometry
    from dimfeat.datasets import load_cgcnn

    ids = sorted(geometry.one_chemistry(formula).ids)
    df = load_cgcnn(F.MP36K, ids=ids, n_jobs=1).set_index("material_id")
    names = list(ids)
    structures = [df.loc[i, "structure"].get_primitive_structure() for i in ids]
    for name, s in geometry.prototypes().items():
        if s.composition.reduced_formula == formula and "simple cubic" not in name:
            names.append(name)
            structures.append(s.get_primitive_structure())
    return names, structures


def _too_close(structure, min_distance: float) -> bool:
    _, _, _, r = structure.get_neighbor_list(min_distance)  # self excluded, overlaps included
    return len(r) > 0


def perturb(seed_structure, rng: np.random.Generator, *, supercell: bool):
    """A strained, rattled copy of ``seed_structure`` (doubled along one axis if asked)."""
    from pymatgen.core import Lattice, Structure

    s = seed_structure.copy()
    if supercell:
        scale = [1, 1, 1]
        scale[int(rng.integers(3))] = 2
        s.make_supercell(scale)
    a = rng.uniform(-MAX_STRAIN, MAX_STRAIN, size=(3, 3))
    strain = np.eye(3) + (a + a.T) / 2
    lattice = Lattice(s.lattice.matrix @ strain)
    cart = lattice.get_cartesian_coords(s.frac_coords) + rng.normal(0, RATTLE, (len(s), 3))
    return Structure(lattice, s.species, cart, coords_are_cartesian=True)


def generate(formula: str, seeds: Sequence, n: int, seed: int = SEED) -> tuple[list, list[int]]:
    """``n`` perturbed crystals of ``seeds`` and the index of each one's seed (deterministic)."""
    rng = np.random.default_rng([seed, VERSION])
    out, origin = [], []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n + 100:
            raise RuntimeError(
                f"{formula}: only {len(out)} of {n} perturbed crystals kept after {tries} draws; "
                f"lower MIN_DISTANCE[{formula!r}] or RATTLE"
            )
        k = int(rng.integers(len(seeds)))
        double = rng.random() < P_SUPERCELL and 2 * len(seeds[k]) <= F.MAX_PRIMITIVE_SITES
        s = perturb(seeds[k], rng, supercell=double)
        if _too_close(s, MIN_DISTANCE[formula]):
            continue
        out.append(s)
        origin.append(k)
    return out, origin


def _input_code() -> str:
    from benchmarks.common import code_fingerprint

    return code_fingerprint()


def chemistry_set(
    formula: str,
    n: int = N_CRYSTALS,
    seed: int = SEED,
    *,
    seeds: tuple[list[str], list] | None = None,
    cache: Path | None = None,
    verbose: bool = True,
) -> F.Dataset:
    """The generated set of ``formula`` as a :class:`~benchmarks.paper.features.Dataset`
    (structures, labels under ``"label"``, model inputs), from the cache when there.

    ``seeds`` (names, structures) replaces the mp36k seeds and prototypes (tests).
    """
    from pymatgen.core import Structure

    from dimfeat.inputs import build_many, load_inputs, save_inputs

    folder = Path(cache or F.CACHE / "one_chemistry")
    stem = f"{formula}-n{n}-seed{seed}-v{VERSION}"
    if seeds is not None:
        stem += "-custom-" + F.Dataset("", list(seeds[0]), {}).fingerprint
    path = folder / f"{stem}.json"
    t0 = time.perf_counter()
    if path.is_file():
        record = json.loads(path.read_text())
        structures = [Structure.from_dict(d) for d in record["structures"]]
    else:
        names, seed_list = seeds if seeds is not None else seed_structures(formula)
        structures, origin = generate(formula, seed_list, n, seed)
        record = {
            "formula": formula,
            "n": n,
            "seed": seed,
            "version": VERSION,
            "label": LABELS[formula][1],
            "seed_crystals": names,
            "origin": [names[k] for k in origin],
            "labels": [label(formula, s) for s in structures],
            "structures": [s.as_dict() for s in structures],
        }
        write_json(path, record, indent=None)
    inputs_path = path.with_suffix(".inputs.npz")
    inputs = None
    if inputs_path.is_file():
        inputs, extra = load_inputs(inputs_path)
        if str(extra.get("inputs_code")) != _input_code():
            inputs = None
    if inputs is None:
        inputs, _ = build_many(structures)
        save_inputs(inputs_path, inputs, inputs_code=np.array(_input_code()))
    if verbose:
        print(f"[{stem}] {n} crystals in {time.perf_counter() - t0:.0f} s", flush=True)
    ids = [f"{stem}-{i:05d}" for i in range(n)]
    return F.Dataset(
        f"one-chemistry-{stem}",
        ids,
        {"label": np.array(record["labels"], dtype=np.float64)},
        structures,
        inputs,
        f"{n} {formula} crystals generated from {len(record['seed_crystals'])} seed crystals "
        f"(seed {seed}, version {VERSION}): strain up to {MAX_STRAIN:.0%}, rattle "
        f"{RATTLE} Å, 1 in {round(1 / P_SUPERCELL)} doubled; label: {record['label']}",
    )


# ------------------------------------------------------------------------------ scores
def held_out(n_set: int, n: int, d: int, seed: int = DRAW_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Training rows of draw ``d`` of ``n`` labels and at most ``N_HELD_MAX`` held-out rows."""
    train = draw(n_set, n, d, seed)
    rest = np.setdiff1d(np.arange(n_set), train)
    k = min(N_HELD_MAX, len(rest))
    return train, np.sort(np.random.default_rng([seed, n, d, 1]).choice(rest, k, replace=False))


def score(
    X: np.ndarray,
    y: np.ndarray,
    *,
    label_counts: Sequence[int] = LABEL_COUNTS,
    draws: int = N_DRAWS,
) -> dict:
    """Per-draw MAEs of ``linear`` and ``mlp`` and the MLP scaler's largest held-out |z|."""
    out = {}
    for n in label_counts:
        cell = {"linear": [], "mlp": [], "max_abs_standardised_input": []}
        for d in range(draws):
            train, test = held_out(len(y), n, d)
            models = {"linear": make_model("linear", False, d), "mlp": make_model("mlp", True, d)}
            for name, estimator in models.items():
                pred = fit_predict(estimator, X[train], y[train], X[test])
                cell[name].append(float(np.mean(np.abs(pred - y[test]))))
            scaler = models["mlp"].regressor_.steps[0][1]
            cell["max_abs_standardised_input"].append(
                float(np.abs(scaler.transform(X[test])).max())
            )
        cell["ratio"] = [m / lin for m, lin in zip(cell["mlp"], cell["linear"], strict=True)]
        cell["mlp_no_worse"] = bool(np.median(cell["ratio"]) <= 1.0)
        out[str(n)] = cell
    return out


def near_constant_share(X: np.ndarray, reference_std: np.ndarray) -> float:
    """Share of dimensions whose std in ``X`` is below ``NEAR_CONSTANT`` times the reference."""
    return float(np.mean(X.std(0) < NEAR_CONSTANT * np.maximum(reference_std, 1e-12)))


def evaluate(datasets: dict, weights: str, reference_std: np.ndarray, **kwargs) -> dict:
    """Scores and diagnostics of one weights spec on every set."""
    out = {}
    for formula, dataset in datasets.items():
        X = F.features(dataset, "dim", weights=weights, verbose=False)
        y = dataset.labels["label"]
        out[formula] = {
            "near_constant_share": near_constant_share(X, reference_std),
            "exactly_constant_share": float(np.mean(X.std(0) == 0)),
            "mean_predictor_mae": float(np.mean(np.abs(y - y.mean()))),
            "mae": score(X, y, **kwargs),
        }
    return out


def short_name(spec: str) -> str:
    """A weights spec by its folder names (a folder called ``weights`` by its parent's)."""
    names = []
    for part in F.weights_parts(spec):
        path = Path(str(part))
        names.append(path.parent.name if path.name == "weights" else path.name)
    return "+".join(names)


def table(report: dict) -> str:
    """Markdown table: median MAE (min-max) per model, the paired ratio and the verdict.

    ``mean predictor`` is the MAE of the set's mean label (the scale of the labels); ``max abs
    z`` the largest |standardised input| of a held-out crystal over the draws; ``near-constant``
    the share of dimensions below ``NEAR_CONSTANT`` of the pool's standard deviation.
    """
    rows = [
        "| chemistry | weights | n | LR MAE | MLP MAE | MLP/LR (median) | mean predictor | "
        "max abs z | near-constant | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for weights, by_formula in report["results"].items():
        for formula, r in by_formula.items():
            for n, c in r["mae"].items():
                lin, mlp, ratio = (np.array(c[k]) for k in ("linear", "mlp", "ratio"))
                verdict = "MLP no worse than LR" if c["mlp_no_worse"] else "MLP WORSE than LR"
                rows.append(
                    f"| {formula} | {short_name(weights)} | {n} | {np.median(lin):.4f} "
                    f"({lin.min():.4f}-{lin.max():.4f}) | {np.median(mlp):.4f} "
                    f"({mlp.min():.4f}-{mlp.max():.4f}) | {np.median(ratio):.2f} | "
                    f"{r['mean_predictor_mae']:.3f} | "
                    f"{max(c['max_abs_standardised_input']):.3g} | "
                    f"{r['near_constant_share']:.2f} | {verdict} ({len(ratio)} draws) |"
                )
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=list(DEFAULT_WEIGHTS))
    parser.add_argument("--n-crystals", type=int, default=N_CRYSTALS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    counts = tuple(n for n in LABEL_COUNTS if n < args.n_crystals)
    datasets = {f: chemistry_set(f, args.n_crystals, args.seed) for f in FORMULAS}
    pool = F.mp36k_subset("train", F.N_POOL, seed=F.SEED, name="mp36k-pool", structures=False)
    results = {}
    for weights in args.weights:
        t0 = time.perf_counter()
        reference_std = F.features(pool, "dim", weights=weights, verbose=False).std(0)
        results[weights] = evaluate(datasets, weights, reference_std, label_counts=counts)
        print(f"{weights}: {time.perf_counter() - t0:.0f} s", flush=True)
    report = {
        "protocol": __doc__.split("Usage::")[0].strip(),
        "data": {f: d.description for f, d in datasets.items()},
        "labels": {f: LABELS[f][1] for f in FORMULAS},
        "seeds": {"set": args.seed, "version": VERSION, "draws": DRAW_SEED, "n_draws": N_DRAWS},
        "n_crystals": args.n_crystals,
        "weights_sha256": {w: F.weights_key(w) for w in args.weights},
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    path = write_json(args.json or RESULTS / "paper" / "one_chemistry.json", report)
    print(table(report))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
