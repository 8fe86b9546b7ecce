"""The one-chemistry benchmark (benchmarks/paper/one_chemistry.py) on tiny generated sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.paper import features as F  # noqa: E402
from benchmarks.paper import geometry, report  # noqa: E402
from benchmarks.paper import one_chemistry as O  # noqa: E402

TWO_CHANNEL = ROOT / "benchmarks" / "results" / "archive" / "two-channel-screen-1" / "weights"


@pytest.fixture(scope="module")
def carbon_seeds():
    protos = geometry.prototypes()
    names = ["C diamond", "C graphite"]
    return names, [protos[n].get_primitive_structure() for n in names]


def _silica() -> Structure:
    """A small charge-neutral SiO2 cell (not a real polymorph; enough for the Ewald label)."""
    return Structure(
        Lattice.cubic(4.0), ["Si", "O", "O"], [[0, 0, 0], [0.5, 0, 0.2], [0.1, 0.5, 0.5]]
    )


def test_generated_set_is_deterministic_cached_and_within_the_rules(
    carbon_seeds, tmp_path, monkeypatch
):
    first = O.chemistry_set("C", 24, 0, seeds=carbon_seeds, cache=tmp_path, verbose=False)
    path = next(tmp_path.glob("C-n24-seed0-v1-*.json"))
    record = json.loads(path.read_text())
    assert set(record["origin"]) == set(carbon_seeds[0]) and record["seed_crystals"] == [
        "C diamond",
        "C graphite",
    ]
    # generated anew from the same seed: the same crystals and labels
    fresh = O.generate("C", carbon_seeds[1], 24, 0)[0]
    assert json.loads(json.dumps([s.as_dict() for s in fresh])) == record["structures"]
    # a second call reads the cache and generates nothing
    monkeypatch.setattr(O, "generate", lambda *a, **k: pytest.fail("regenerated"))
    again = O.chemistry_set("C", 24, 0, seeds=carbon_seeds, cache=tmp_path, verbose=False)
    np.testing.assert_array_equal(again.labels["label"], first.labels["label"])
    assert again.ids == first.ids and len(again.inputs) == 24
    monkeypatch.undo()
    other = O.chemistry_set("C", 24, 1, seeds=carbon_seeds, cache=tmp_path, verbose=False)
    assert not np.allclose(other.labels["label"], first.labels["label"])
    # distinct crystals, none closer than the minimum distance, some doubled along one axis
    y = first.labels["label"]
    assert len(np.unique(np.round(y, 10))) == len(y)
    for s in first.structures:
        assert s.composition.reduced_formula == "C"
        assert not s.get_neighbor_list(O.MIN_DISTANCE["C"])[3].size
    seed_sizes = {len(s) for s in carbon_seeds[1]}
    assert any(len(s) not in seed_sizes for s in first.structures)
    # labels are those of the stored structures
    assert y[3] == O.label("C", first.structures[3])


def test_perturbation_strains_and_rattles_within_the_limits(carbon_seeds):
    diamond = carbon_seeds[1][0]
    rng = np.random.default_rng(0)
    s = O.perturb(diamond, rng, supercell=False)
    strain = np.linalg.solve(diamond.lattice.matrix, s.lattice.matrix) - np.eye(3)
    assert np.allclose(strain, strain.T) and 0 < np.abs(strain).max() <= O.MAX_STRAIN
    # undo the strain: what is left is the rattling, a few hundredths of an Å
    unstrained = diamond.lattice.get_cartesian_coords(s.frac_coords)
    shift = unstrained - diamond.cart_coords
    assert 0.001 < np.abs(shift).max() < 6 * O.RATTLE
    assert len(O.perturb(diamond, rng, supercell=True)) == 2 * len(diamond)


def test_labels_are_physical_functions_of_the_structure(carbon_seeds):
    silica = _silica()
    e = O.ewald_energy(silica)
    # intensive: a supercell has the same energy per atom
    assert O.ewald_energy(silica * (2, 1, 1)) == pytest.approx(e, rel=1e-6)
    # Coulomb energy scales as 1/length: expanding every length by 10 % divides it by 1.1
    expanded = silica.copy()
    expanded.scale_lattice(silica.volume * 1.1**3)
    assert e < 0 and O.ewald_energy(expanded) == pytest.approx(e / 1.1, rel=1e-4)

    diamond = carbon_seeds[1][0]
    m = O.MORSE

    def v(r):
        return m["D"] * (np.exp(-2 * m["a"] * (r - m["r0"])) - 2 * np.exp(-m["a"] * (r - m["r0"])))

    # diamond (a = 3.567 Å) has 4, 12 and 12 neighbours within 3.5 Å at a*sqrt(3)/4,
    # a/sqrt(2) and a*sqrt(11)/4
    a = 3.567
    shells = {a * np.sqrt(3) / 4: 4, a / np.sqrt(2): 12, a * np.sqrt(11) / 4: 12}
    expected = 0.5 * sum(k * (v(r) - v(m["cutoff"])) for r, k in shells.items())
    assert O.morse_energy(diamond) == pytest.approx(expected, rel=1e-9)
    assert O.morse_energy(diamond * (1, 2, 1)) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(KeyError, match="no label defined"):
        O.label("NaCl", diamond)


def test_scores_pair_the_draws_and_flag_a_blown_up_standardised_input():
    rng = np.random.default_rng(0)
    n_set = 700
    signal = rng.normal(size=(n_set, 3))
    y = signal @ np.array([1.0, -2.0, 0.5])
    noise = 1.0 + 1e-9 * rng.normal(size=(n_set, 1))  # a near-constant column
    X = np.hstack([signal, np.ones((n_set, 1)), noise])
    train, test = O.held_out(n_set, 300, 0)
    assert len(test) == min(O.N_HELD_MAX, n_set - 300) and not np.intersect1d(train, test).size
    calm = O.score(X, y, label_counts=(300,), draws=2)["300"]
    assert calm["ratio"] == [m / lin for m, lin in zip(calm["mlp"], calm["linear"], strict=True)]
    assert calm["mlp_no_worse"] == (np.median(calm["ratio"]) <= 1)
    assert max(calm["linear"]) < 1e-6 and max(calm["max_abs_standardised_input"]) < 10
    # a held-out crystal 1e-6 off in the near-constant column: |z| ~ 1e3 for the MLP's scaler
    X[test[0], -1] += 1e-6
    blown = O.score(X, y, label_counts=(300,), draws=1)["300"]
    assert blown["max_abs_standardised_input"][0] > 100
    assert O.near_constant_share(X, np.ones(5)) == pytest.approx(2 / 5)


def test_two_channel_weights_give_exactly_constant_context_values_in_one_chemistry(
    carbon_seeds, tmp_path, monkeypatch
):
    monkeypatch.setattr(F, "CACHE", tmp_path)
    chem = O.chemistry_set("C", 40, 0, seeds=carbon_seeds, cache=tmp_path, verbose=False)
    weights = str(TWO_CHANNEL)
    out = O.evaluate({"C": chem}, weights, np.ones(128), label_counts=(25,), draws=2)["C"]
    assert out["exactly_constant_share"] == 0.5  # the 64 context values
    X = F.features(chem, "dim", weights=weights, verbose=False)
    assert np.all(X[:, :64] == X[0, :64]) and np.all(X[:, 64:].std(0) > 0)
    text = O.table({"results": {weights: {"C": out}}})
    assert "| C | two-channel-screen-1 | 25 |" in text and "(2 draws)" in text
    payload = {
        "data": {"C": chem.description},
        "weights_sha256": {weights: F.weights_key(weights)},
        "machine": "here",
        "results": {weights: {"C": out}},
    }
    section = "\n".join(report.one_chemistry_section(payload))
    assert text in section and chem.description in section
    assert report.one_chemistry_section(None) == []
