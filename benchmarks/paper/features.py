"""Datasets, fixed subsets and cached feature matrices for the paper benchmarks.

Every representation of a dataset is computed once and cached as
``benchmarks/cache/features/<dataset>/<representation>-<key>.npz`` where ``key`` is the
sha256 of the DIM weights (trained DIM), the encoder's state checksum (untrained DIM) or a
hash of the featuriser's parameters (baselines). Baselines are computed in chunks with a
partial file, so an interrupted run resumes where it stopped. DIM vectors are recomputed in
seconds from cached model inputs, so a new set of weights only costs its own encoding.

Subsets (fixed, seeded; never chosen by looking at test results):

* ``mp36k-pool``: the first ``n_pool`` train ids of ``split.json`` in the order of
  ``numpy.random.default_rng(seed).permutation``, keeping crystals with <= 50 atoms in the
  primitive cell and only elements with Z <= 94 (the OFM's limit). Labels are drawn from it.
* ``mp36k-test``: the same rule over the test ids (``n_test`` crystals).
* ``mp36k-pretrain``: the same rule over the train ids, ``n_pretrain`` crystals (ablation).
* ``phonons``: every row of ``matbench_phonons`` in matminer's order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import MATMINER, MP36K, ROOT, SPLIT, mp36k_inputs

CACHE = Path(os.environ.get("DIMFEAT_BENCH_CACHE", ROOT / "benchmarks" / "cache"))

MAX_PRIMITIVE_SITES = 50
MAX_Z = 94  # matminer's OrbitalFieldMatrix has element vectors for Z = 1..94 only
BASELINES = ("xrd", "magpie", "ofm")
CHUNK = 50


@dataclass
class Dataset:
    """Structures (loaded lazily), ids, labels and SiteNet inputs of one benchmark set."""

    name: str
    ids: list[str]
    labels: dict[str, np.ndarray]
    structures: list = field(default_factory=list, repr=False)
    inputs: list = field(default_factory=list, repr=False)
    description: str = ""

    @property
    def fingerprint(self) -> str:
        """Short hash of the ids, so that a cache never mixes two subsets."""
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------ mp36k subsets
def _eligible(crystal) -> bool:
    """At most 50 atoms in the primitive cell, elements up to Z = 94 (``species`` holds Z)."""
    return crystal.n_sites <= MAX_PRIMITIVE_SITES and int(crystal.species.max()) <= MAX_Z


def mp36k_subset(
    part: str,
    n: int,
    *,
    seed: int = 0,
    name: str | None = None,
    structures: bool = True,
    verbose: bool = True,
) -> Dataset:
    """The first ``n`` eligible crystals of ``part`` in a seeded random order (see module doc).

    The model inputs and labels come from the whole part's cache
    (:func:`benchmarks.common.mp36k_inputs`, built when absent); the structures are re-read
    from the tarball (about 20 s for 2,000 crystals).
    """
    from dimfeat.datasets import load_cgcnn, load_split

    name = name or f"mp36k-{part}{n}-seed{seed}"
    description = (
        f"mp36k ({MP36K.name}), '{part}' part of split.json: first {n} crystals of "
        f"default_rng({seed}).permutation(ids) with <= {MAX_PRIMITIVE_SITES} atoms in the "
        f"primitive cell and Z <= {MAX_Z}"
    )
    t0 = time.perf_counter()
    cached, extra = mp36k_inputs(part)
    row = {str(i): k for k, i in enumerate(extra["material_id"])}
    order = np.random.default_rng(seed).permutation(load_split(SPLIT)[part])
    chosen = [row[i] for i in map(str, order) if i in row and _eligible(cached[row[i]])][:n]
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} eligible crystals in '{part}', asked for {n}")
    ids = [str(extra["material_id"][k]) for k in chosen]
    labels = {
        k: np.asarray(extra[k][chosen], dtype=np.float64)
        for k in ("formation_energy_per_atom", "band_gap")
    }
    crystals = [cached[k] for k in chosen]
    loaded = list(load_cgcnn(MP36K, ids=ids, n_jobs=1)["structure"]) if structures else []
    if verbose:
        print(f"[{name}] chose {n} crystals in {time.perf_counter() - t0:.0f} s", flush=True)
    return Dataset(name, ids, labels, loaded, crystals, description)


def phonons() -> Dataset:
    """``matbench_phonons`` (1,265 structures, ``last phdos peak`` in cm^-1), matminer order."""
    from dimfeat.datasets import load_matbench
    from dimfeat.inputs import build_many

    df = load_matbench("matbench_phonons", data_home=MATMINER)
    structures = list(df["structure"])
    crystals, _ = build_many(structures)
    return Dataset(
        "phonons",
        [str(i) for i in df.index],
        {"last phdos peak": df["last phdos peak"].to_numpy(dtype=np.float64)},
        structures,
        crystals,
        "matbench_phonons (Matbench v0.1) in matminer's file format, all 1,265 rows",
    )


# ------------------------------------------------------------------------------ featurisers
class CHGNetCrystalFeatures:
    """CHGNet's crystal features (``crystal_fea``, 64-d) from the pretrained weights in its wheel.

    An optional peer for the geometry benchmark (``pip install chgnet``): a potential trained
    on DFT energies and forces, i.e. on labels, unlike DIM.
    """

    def get_params(self, deep: bool = True) -> dict:
        import chgnet

        return {"chgnet": chgnet.__version__, "model": "pretrained default", "out": "crystal_fea"}

    def fit(self, structures, y=None):
        return self

    def transform(self, structures) -> np.ndarray:
        import torch
        from chgnet.model import CHGNet

        torch.set_num_threads(1)
        model = CHGNet.load(verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.predict_structure(list(structures), return_crystal_feas=True, batch_size=16)
        out = out if isinstance(out, list) else [out]
        return np.array([o["crystal_fea"] for o in out], dtype=np.float64)


def baseline_featurizer(rep: str):
    """The baseline featuriser for ``rep`` in ``BASELINES`` (parameters fixed here)."""
    if rep == "ofm":
        from dimfeat.baselines import OrbitalFieldMatrixFeaturizer

        return OrbitalFieldMatrixFeaturizer(period_tag=False, n_jobs=1)
    if rep == "xrd":
        from dimfeat.baselines import XRDPatternFeaturizer

        return XRDPatternFeaturizer(pattern_length=128, n_jobs=1)
    if rep == "chgnet":
        return CHGNetCrystalFeatures()
    if rep == "magpie":
        from matminer.featurizers.composition import ElementProperty

        return ElementProperty.from_preset("magpie", impute_nan=True)
    raise KeyError(f"unknown baseline {rep!r}; choose from {BASELINES}")


def baseline_rows(rep: str, featurizer, structures: list) -> np.ndarray:
    """Features of ``structures`` from a baseline featuriser (warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rep == "magpie":
            return np.array([featurizer.featurize(s.composition) for s in structures], float)
        return np.asarray(featurizer.fit(structures).transform(structures), dtype=np.float64)


def baseline_key(rep: str) -> str:
    """Cache key of a baseline's features: its parameters and the dimfeat version."""
    import dimfeat

    featurizer = baseline_featurizer(rep)
    if rep == "magpie":  # its data_source object has no stable repr
        params = repr((featurizer.features, featurizer.stats, featurizer.impute_nan))
    else:
        params = repr(sorted(featurizer.get_params().items()))
    return hashlib.sha256(f"{rep}|{params}|{dimfeat.__version__}".encode()).hexdigest()[:16]


def weights_parts(weights: str | None) -> list[str | None]:
    """The weights a spec names: ``"A+B"`` (not an existing path) is the concatenation of the
    vectors of ``A`` and ``B`` (each a bundled name, a weights folder of either kind or a Hub
    id); anything else is one set of weights."""
    if weights is None or "+" not in str(weights) or Path(weights).exists():
        return [weights]
    return str(weights).split("+")


def weights_key(weights: str | None, seed: int = 0) -> str:
    """Cache key of DIM vectors: the weights' sha256 (joined by ``+`` for a concatenation),
    or the untrained encoder's checksum."""
    if weights is None:
        from dimfeat.weights import state_checksum

        return "untrained-" + state_checksum(dim_runtime(None, seed).encoder)[:16]
    parts = weights_parts(weights)
    if len(parts) > 1:
        return "+".join(weights_key(p, seed) for p in parts)
    from dimfeat.channels import read_weights_config
    from dimfeat.weights import resolve_weights

    return read_weights_config(resolve_weights(weights))["sha256"][:16]


def dim_runtime(weights: str | None, seed: int = 0):
    """The encoder of ``weights``, or what ``DeepInfoMaxFeaturizer(weights=None)`` builds
    (for a concatenation ``A+B``: that of ``B``, the last part)."""
    from dimfeat.runtime import EncoderRuntime

    return EncoderRuntime.create(weights_parts(weights)[-1], seed=seed)


def encode(weights: str | None, crystals: list, *, seed: int = 0, batch_size: int = 128):
    """DIM vectors of cached model inputs (CPU, one thread), in the order given; the parts of
    a concatenation ``A+B`` side by side."""
    import torch

    torch.set_num_threads(1)
    parts = weights_parts(weights)
    if len(parts) > 1:
        return np.hstack([encode(p, crystals, seed=seed, batch_size=batch_size) for p in parts])
    return dim_runtime(weights, seed).encode(crystals, batch_size=batch_size)


# ------------------------------------------------------------------------------ cache
def _cache_path(dataset: Dataset, rep: str, key: str) -> Path:
    folder = CACHE / "features" / f"{dataset.name}-{dataset.fingerprint}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{rep}-{key}.npz"


def features(
    dataset: Dataset, rep: str, *, weights: str | None = None, seed: int = 0, verbose=True
) -> np.ndarray:
    """Feature matrix of ``dataset`` for ``rep``: a baseline name, ``"dim"`` or ``"dim-untrained"``.

    ``weights`` names the DIM weights for ``rep="dim"`` (a bundled name or a folder).
    """
    if rep == "dim-untrained":
        weights = None
    elif rep.startswith("dim") and weights is None:
        raise ValueError(f"rep={rep!r} needs weights")
    key = weights_key(weights, seed) if rep.startswith("dim") else baseline_key(rep)
    path = _cache_path(dataset, rep, key)
    if path.is_file():
        with np.load(path) as data:
            return data["X"]
    t0 = time.perf_counter()
    if rep.startswith("dim"):
        X = encode(weights, dataset.inputs, seed=seed).astype(np.float64)
    else:
        X = _chunked_baseline(dataset, rep, path)
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise ValueError(f"{rep} gave non-finite rows for {[dataset.ids[i] for i in bad[:5]]}")
    seconds = time.perf_counter() - t0
    np.savez_compressed(
        path, X=X, ids=np.array(dataset.ids), seconds=seconds, meta=json.dumps({"rep": rep})
    )
    if verbose:
        print(f"[{dataset.name}] {rep}: {X.shape} in {seconds:.0f} s -> {path.name}", flush=True)
    return X


def _chunked_baseline(dataset: Dataset, rep: str, path: Path) -> np.ndarray:
    partial = path.with_suffix(".partial.npz")
    rows: list[np.ndarray] = []
    if partial.is_file():
        with np.load(partial) as data:
            rows = list(data["X"])
    featurizer = baseline_featurizer(rep)
    t0, resumed = time.perf_counter(), len(rows)
    for start in range(len(rows), len(dataset.structures), CHUNK):
        rows.extend(baseline_rows(rep, featurizer, dataset.structures[start : start + CHUNK]))
        with open(partial.with_suffix(".tmp"), "wb") as handle:  # atomic: kill-safe
            np.savez(handle, X=np.array(rows))
        partial.with_suffix(".tmp").replace(partial)
        done = len(rows)
        rate = (time.perf_counter() - t0) / (done - resumed)
        print(
            f"  [{dataset.name}] {rep} {done}/{len(dataset.structures)} ({rate:.2f} s each)",
            flush=True,
        )
    X = np.array(rows, dtype=np.float64)
    partial.unlink(missing_ok=True)
    return X


def cached(dataset: Dataset, rep: str, *, weights: str | None = None, seed: int = 0) -> bool:
    """Whether ``features(dataset, rep, ...)`` would come from the cache."""
    if rep == "dim-untrained":
        weights = None
    key = weights_key(weights, seed) if rep.startswith("dim") else baseline_key(rep)
    return _cache_path(dataset, rep, key).is_file()


# ------------------------------------------------------------------------------ standard sets
N_POOL, N_TEST, N_PRETRAIN, SEED = 2000, 2000, 5000, 0


def pool() -> Dataset:
    """Label pool: 2,000 eligible train crystals (seed 0)."""
    return mp36k_subset("train", N_POOL, seed=SEED, name="mp36k-pool")


def test_set() -> Dataset:
    """2,000 eligible test crystals (seed 0); regression scores use the first ``N_SCORE``."""
    return mp36k_subset("test", N_TEST, seed=SEED, name="mp36k-test")


N_SCORE = 1000


def first(dataset: Dataset, n: int) -> Dataset:
    """The first ``n`` crystals of ``dataset`` as a dataset of its own (own cache folder)."""
    return Dataset(
        f"{dataset.name}-first{n}",
        dataset.ids[:n],
        {k: v[:n] for k, v in dataset.labels.items()},
        dataset.structures[:n],
        dataset.inputs[:n],
        dataset.description.replace(f"first {len(dataset.ids)}", f"first {n}"),
    )


def main() -> None:
    """Compute (or resume) every baseline matrix the benchmarks need, cheapest first."""
    sets = [pool(), first(test_set(), N_SCORE), phonons()]
    for rep in ("magpie", "xrd", "ofm"):
        for dataset in sets:
            features(dataset, rep)


if __name__ == "__main__":
    main()
