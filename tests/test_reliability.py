"""The bad-input matrix and determinism of docs/reliability.md, one test per row."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Molecule, Structure

from dimfeat.elements import UnsupportedElementError
from dimfeat.featurizer import DeepInfoMaxFeaturizer
from dimfeat.inputs import InvalidStructureError

#: Vectors of the same structure computed in different batches, orders, thread counts or
#: processes agree to this (float32 vectors of norm ~4; measured max 5.0e-6 over 200 sample
#: structures, batch size 1 vs 256).
ATOL = 2e-5


@pytest.fixture(scope="module")
def featurizer():
    return DeepInfoMaxFeaturizer(device="cpu")


@pytest.fixture(scope="module")
def nacl():
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0] * 3, [0.5] * 3]
    )


@pytest.fixture(scope="module")
def cscl():
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def sample():
    from dimfeat.datasets import load_sample

    return load_sample(as_frame=False)[0][:40]


def _disordered():
    return Structure(
        Lattice.cubic(4.2), [{"Fe": 0.6, "Co": 0.4}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


# -- bad inputs -------------------------------------------------------------------------------


def test_disordered_raises_by_default_naming_the_index(featurizer, cscl):
    with pytest.raises(InvalidStructureError, match=r"structure 1.*disorder='majority'"):
        featurizer.transform([cscl, _disordered()])


def test_disordered_majority_orders_and_warns_once(cscl):
    ordered = Structure(Lattice.cubic(4.2), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    tie = Structure(Lattice.cubic(4.2), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    featurizer = DeepInfoMaxFeaturizer(device="cpu", disorder="majority")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = featurizer.transform([_disordered(), cscl, tie])
    messages = [str(w.message) for w in caught if "majority" in str(w.message)]
    assert messages == [messages[0]] and messages[0].startswith("2 disordered structure(s)")
    np.testing.assert_allclose(X[0], featurizer.transform([ordered])[0], rtol=0, atol=ATOL)
    # a tie goes to the lowest atomic number: Fe (26) over Co (27)
    np.testing.assert_allclose(X[2], X[0], rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="disorder"):
        DeepInfoMaxFeaturizer(disorder="average").transform([cscl])


@pytest.mark.parametrize(
    "bad, name",
    [
        (Molecule(["C", "O"], [[0, 0, 0], [0, 0, 1.13]]), "Molecule"),
        (42, "int"),
    ],
)
def test_non_structures_raise_type_error_naming_the_type(featurizer, cscl, bad, name):
    with pytest.raises(TypeError, match=rf"structure 1\).*{name}"):
        featurizer.transform([cscl, bad])


def test_a_missing_file_is_named_with_its_position(featurizer, cscl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = r"no such file: the str 'NaCl\.cif' \(structure 1\)"
    with pytest.raises(InvalidStructureError, match=message):
        featurizer.transform([cscl, "NaCl.cif"])


def test_overlapping_atoms(featurizer):
    bad = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    with pytest.raises(InvalidStructureError, match=r"overlapping atoms.*structure 0"):
        featurizer.transform([bad])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_coordinates(featurizer, cscl, value):
    bad = cscl.copy()
    bad._sites[1]._frac_coords = np.array([0.5, value, 0.5])
    bad._sites[1]._coords = None
    with pytest.raises(InvalidStructureError, match=r"structure 2.*NaN or infinite"):
        featurizer.transform([cscl, cscl, bad])


def test_single_atom_cell(featurizer):
    copper = Structure(Lattice.from_parameters(2.55, 2.55, 2.55, 60, 60, 60), ["Cu"], [[0, 0, 0]])
    X = featurizer.transform([copper])
    assert X.shape == (1, 128) and np.isfinite(X).all()


def test_large_primitive_cell_works_and_warns(featurizer):
    base = Structure(
        Lattice.hexagonal(3.2, 5.2), ["Zn", "O", "O"], [[0, 0, 0], [1 / 3, 2 / 3, 0.4], [0, 0, 0.7]]
    )
    big = base * (4, 4, 4)
    big.perturb(0.15, min_distance=0.05)  # no longer reducible: 192 atoms in the primitive cell
    assert len(big) == 192  # 300 atoms take ~18 s and 1.2 GB: docs/reliability.md
    with pytest.warns(UserWarning, match="more than max_atoms=50 atoms.*largest 192"):
        X = featurizer.transform([big])
    assert np.isfinite(X).all()


def test_noble_gases_and_heavy_elements_are_imputed(featurizer):
    xef2 = Structure(
        Lattice.tetragonal(4.32, 6.99), ["Xe", "F", "F"], [[0, 0, 0], [0, 0, 0.28], [0, 0, 0.72]]
    )
    helium = Structure(Lattice.cubic(3.0), ["He"], [[0, 0, 0]])
    curium = Structure(Lattice.cubic(3.5), ["Cm", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nobelium = Structure(Lattice.cubic(3.5), ["No"], [[0, 0, 0]])
    X = featurizer.transform([xef2, helium, curium, nobelium])
    assert np.isfinite(X).all()
    assert len({tuple(np.round(x, 5)) for x in X}) == 4


def test_beyond_lawrencium_names_the_element(featurizer, cscl):
    rf = Structure(Lattice.cubic(3.5), ["Rf"], [[0, 0, 0]])
    with pytest.raises(UnsupportedElementError, match="Rf"):
        featurizer.transform([rf])
    with pytest.raises(UnsupportedElementError, match=r"element\(s\) Rf in structure 2"):
        featurizer.transform([cscl, cscl, rf])


def test_dummy_species_is_named_not_hashed(featurizer, cscl):
    from pymatgen.core import DummySpecies

    dummy = Structure(Lattice.cubic(3.5), [DummySpecies("X"), "Cl"], [[0] * 3, [0.5] * 3])
    with pytest.raises(
        UnsupportedElementError, match=r"structure 1\) holds X0\+ \(a dummy species\)"
    ) as caught:
        featurizer.transform([cscl, dummy])
    words = str(caught.value).split()
    assert not any(len(w) > 12 and w.strip("-").isdigit() for w in words)  # no hash as a name
    disordered = Structure(
        Lattice.cubic(3.5), [{DummySpecies("X"): 0.3, "Na": 0.7}, "Cl"], [[0] * 3, [0.5] * 3]
    )
    with pytest.raises(UnsupportedElementError, match="dummy species"):
        DeepInfoMaxFeaturizer(device="cpu", disorder="majority").transform([disordered])


def test_empty_input(featurizer):
    assert featurizer.transform([]).shape == (0, 128)
    assert featurizer.featurize_many([]) == []


def test_ignore_errors_gives_nan_rows_rest_intact(featurizer, nacl, cscl):
    good = featurizer.transform([nacl, cscl])
    df = pd.DataFrame({"structure": [nacl, _disordered(), 42, cscl]})
    out = featurizer.featurize_dataframe(
        df, "structure", ignore_errors=True, return_errors=True, pbar=False
    )
    X = out[featurizer.feature_labels()].to_numpy(dtype=float)
    assert np.isnan(X[1]).all() and np.isnan(X[2]).all()
    np.testing.assert_array_equal(X[[0, 3]], good.astype(float))
    errors = out[next(c for c in out.columns if "Exceptions" in c)]
    assert "disordered" in errors[1] and "TypeError" in errors[2]
    with pytest.raises(InvalidStructureError, match="structure 1"):
        featurizer.featurize_dataframe(df, "structure", pbar=False)


# -- determinism ------------------------------------------------------------------------------


def test_same_vectors_whatever_batch_size_and_order(featurizer, sample):
    reference = featurizer.transform(sample)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sample))
    for batch_size in (1, 7, 1000):
        other = DeepInfoMaxFeaturizer(device="cpu", batch_size=batch_size)
        shuffled = other.transform([sample[i] for i in order])
        np.testing.assert_allclose(shuffled[np.argsort(order)], reference, rtol=0, atol=ATOL)


def test_same_vectors_whatever_thread_count(featurizer, sample):
    reference = featurizer.transform(sample)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = featurizer.transform(sample)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(single, reference, rtol=0, atol=ATOL)


# Another process: tests/test_dask.py (2 worker processes, same vectors to 2e-5).


# -- processes --------------------------------------------------------------------------------

_WORKERS_SCRIPTS = {
    # joblib's workers build the inputs
    "build": """
import warnings
warnings.filterwarnings("ignore")
from dimfeat.datasets import load_sample
from dimfeat.inputs import build_many
structures = load_sample()["structure"].tolist()
build_many(structures[:1024], n_jobs=2)  # both workers have run a task
print("warm", flush=True)
build_many(structures * 50, n_jobs=2)  # minutes of work
""",
    # a worker of dimfeat's own pool builds and encodes beside the calling process
    "transform": """
import warnings
warnings.filterwarnings("ignore")
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.datasets import load_sample
structures = load_sample()["structure"].tolist()
featurizer = DeepInfoMaxFeaturizer(device="cpu", n_jobs=2)
featurizer.transform(structures)  # the worker has run tasks
print("warm", flush=True)
featurizer.transform(structures * 100)  # minutes of work
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("path", list(_WORKERS_SCRIPTS))
def test_workers_exit_when_the_parent_is_killed(tmp_path, path):
    """``kill -9`` of a process featurising with n_jobs > 1 leaves no worker behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-c", _WORKERS_SCRIPTS[path]],
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    workers = []
    try:
        assert parent.stdout.readline().strip() == b"warm"
        time.sleep(1.0)
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) >= 2  # the workers and loky's resource tracker
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"{len(alive)} worker(s) still running 10 s after the parent died"
    finally:
        parent.kill()
        for worker in workers:
            if worker.is_running():
                worker.kill()
