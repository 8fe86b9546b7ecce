"""Structure -> CrystalInputs -> Batch: reading structures as users hold them, supercells,
distances, unique sites, errors, batching."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import IStructure, Lattice, Molecule, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.spatial.transform import Rotation

import dimfeat.inputs.cell as inputs_module
from dimfeat.inputs import (
    CrystalInputs,
    InvalidStructureError,
    as_structure_list,
    batches_by_site_budget,
    build_inputs,
    build_many,
    check_structures,
    collate,
    equivalent_sites,
    load_inputs,
    save_inputs,
    supercell_repeats,
    to_structure,
)
from dimfeat.inputs import canonical_cell as _canonical_cell
from dimfeat.inputs import structure_cell as _spglib_cell

#: A triclinic crystal of the bundled sample (Ag2O, 9 atoms, angles 79/78/68 degrees).
TRICLINIC_ID = "mp-38238"


@pytest.fixture(scope="module")
def triclinic(sample) -> Structure:
    return sample.set_index("material_id").loc[TRICLINIC_ID, "structure"]


# -- supercell size ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_sites", "max_atoms", "expected"),
    [
        # grow the shortest axis (ties: first axis) while a*b*c*P <= max_atoms:
        # 2,1,1 -> 2,2,1 -> 2,2,2 -> 3,2,2 -> 3,3,2 -> 3,3,3 -> 4,3,3 -> 4,4,3 (48); 4,4,4 = 64 > 50
        (1, 50, (4, 4, 3)),
        (2, 50, (3, 3, 2)),  # 3,3,3 would be 54 atoms
        (5, 50, (2, 2, 2)),  # 3,2,2 would be 60 atoms
        (25, 50, (2, 1, 1)),  # exactly 50
        (26, 50, (1, 1, 1)),  # P > max_atoms / 2: a single image
        (80, 50, (1, 1, 1)),  # P > max_atoms still gets one image
        (1, 1, (1, 1, 1)),
    ],
)
def test_supercell_repeats_cubic(n_sites, max_atoms, expected):
    assert supercell_repeats(4.0 * np.eye(3), n_sites, max_atoms) == expected


def test_supercell_repeats_grows_the_shortest_repeat_length():
    # a = b = 3 Å, c = 9 Å: the short axes grow first; c only once a and b reach 9 Å.
    lattice = np.diag([3.0, 3.0, 9.0])
    assert supercell_repeats(lattice, 1, 8) == (3, 2, 1)  # 3,3,1 would be 9
    assert supercell_repeats(lattice, 1, 9) == (3, 3, 1)
    assert supercell_repeats(lattice, 1, 31) == (4, 4, 1)
    assert supercell_repeats(lattice, 1, 50) == (5, 5, 2)
    # only the row lengths matter, not the order of equal ones
    assert supercell_repeats(np.diag([9.0, 3.0, 3.0]), 1, 9) == (1, 3, 3)


def test_supercell_repeats_ignore_rounding_noise_of_rotated_cells():
    # Equal lengths computed from a rotated cell differ in the last bits; the supercell shape
    # (and therefore the vector) must not depend on that.
    for seed in range(10):
        rotation = Rotation.random(random_state=seed).as_matrix()
        assert supercell_repeats(4.0 * np.eye(3) @ rotation.T, 1, 50) == (4, 4, 3)
        assert supercell_repeats(4.0 * np.eye(3) @ rotation.T, 2, 50) == (3, 3, 2)


# -- unique sites and distances ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["CsCl", "NaCl", "Si", "SrTiO3", "ZnO"])
def test_first_atoms_are_the_primitive_cell_sites(classic, name):
    structure = classic[name]
    crystal = build_inputs(structure)
    primitive = SpacegroupAnalyzer(structure).find_primitive()
    p = crystal.n_sites
    assert p == len(primitive)
    assert sorted(crystal.species[:p].tolist()) == sorted(site.specie.Z for site in primitive)
    np.testing.assert_array_equal(crystal.atom_site[:p], np.arange(p))
    # every supercell atom is an image of a unique site of the same species
    np.testing.assert_array_equal(crystal.species, crystal.species[crystal.atom_site])
    assert crystal.n_atoms % p == 0
    assert crystal.n_atoms <= 50
    assert np.bincount(crystal.atom_site).tolist() == [crystal.n_atoms // p] * p
    np.testing.assert_array_equal(np.diag(crystal.distances[:, :p]), 0)
    assert crystal.species.dtype == np.int16 and crystal.distances.dtype == np.float32


def test_cscl_supercell_and_nearest_neighbours(cscl):
    crystal = build_inputs(cscl)
    assert (crystal.n_sites, crystal.n_atoms) == (2, 36)  # 3x3x2 images of the 2-atom cell
    a = 4.123
    cs = int(np.flatnonzero(crystal.species[:2] == 55)[0])
    row = np.sort(crystal.distances[cs])
    assert row[0] == 0
    np.testing.assert_allclose(row[1:9], a * np.sqrt(3) / 2, rtol=1e-6)  # 8 Cl neighbours
    assert row[9] == pytest.approx(a, rel=1e-6)  # then 6 Cs second neighbours


def _reference_distances(structure: Structure, max_atoms: int = 50) -> list[np.ndarray]:
    """Per unique site, sorted minimum-image distances from pymatgen on the same supercell."""
    lattice, frac, numbers = _spglib_cell(structure, None)
    lattice, frac, numbers = _canonical_cell(lattice, frac, numbers, 0.01)
    repeats = supercell_repeats(lattice, len(numbers), max_atoms)
    cell = Structure(
        Lattice(lattice), numbers.tolist(), frac, site_properties={"uid": list(range(len(numbers)))}
    )
    supercell = cell * repeats
    rows = []
    for p in range(len(numbers)):
        i = supercell.site_properties["uid"].index(p)
        rows.append(np.sort([supercell.get_distance(i, j) for j in range(len(supercell))]))
    return rows


def test_distances_equal_pymatgen_minimum_image_on_a_triclinic_cell(triclinic):
    assert SpacegroupAnalyzer(triclinic).get_crystal_system() == "triclinic"
    crystal = build_inputs(triclinic)
    reference = _reference_distances(triclinic)
    assert len(reference) == crystal.n_sites
    for p, expected in enumerate(reference):
        np.testing.assert_allclose(np.sort(crystal.distances[p]), expected, atol=2e-5)


@pytest.mark.parametrize("max_atoms", [12, 50])
def test_skewed_cell_of_the_same_crystal_gives_the_same_inputs(triclinic, max_atoms):
    skewed = triclinic * [[1, 2, 0], [0, 1, 0], [-1, 0, 1]]  # unimodular shear: same crystal
    assert len(skewed) == len(triclinic)
    assert max(skewed.lattice.angles) > 110 or min(skewed.lattice.angles) < 50
    a = build_inputs(triclinic, max_atoms=max_atoms)
    b = build_inputs(skewed, max_atoms=max_atoms)
    np.testing.assert_array_equal(a.species, b.species)
    np.testing.assert_allclose(a.distances, b.distances, atol=1e-5)
    for p, expected in enumerate(_reference_distances(skewed, max_atoms)):
        np.testing.assert_allclose(np.sort(b.distances[p]), expected, atol=2e-5)


def test_distances_equal_pymatgen_for_sample_pairs(sample_structures):
    # Structures without translational symmetry keep their cell: the first P supercell atoms
    # are the input sites (in canonical order), so pairs can be checked one by one.
    structure = sample_structures[0].copy().perturb(0.05, seed=3)
    crystal = build_inputs(structure, max_atoms=1)  # one image: the supercell is the cell
    assert crystal.n_atoms == crystal.n_sites == len(structure)
    zs = [site.specie.Z for site in structure]
    order = np.lexsort((*structure.frac_coords.T[::-1] % 1.0, zs))
    for a in range(min(4, len(structure))):
        for b in range(len(structure)):
            expected = structure.get_distance(int(order[a]), int(order[b]))
            assert crystal.distances[a, b] == pytest.approx(expected, abs=2e-5)


def test_more_primitive_atoms_than_max_atoms_gives_one_image(srtio3):
    crystal = build_inputs(srtio3 * (2, 1, 1), max_atoms=4)  # primitive cell: 5 atoms
    assert crystal.n_sites == 5
    assert crystal.n_atoms == 5
    assert crystal.distances.shape == (5, 5)


def test_supercell_input_reduces_to_the_primitive_cell(nacl, zno):
    np.testing.assert_allclose(
        build_inputs(nacl).distances, build_inputs(nacl * (1, 2, 3)).distances, atol=1e-5
    )
    assert build_inputs(zno * (2, 2, 1)).n_sites == 4


def _displaced_nacl(nacl, distance: float, order: list[int]) -> Structure:
    """Conventional NaCl with its atom 0 moved by ``distance`` Å along x, sites in ``order``."""
    frac = nacl.frac_coords.copy()
    frac[0] += np.array([distance, 0.0, 0.0]) @ np.linalg.inv(nacl.lattice.matrix)
    species = [site.specie for site in nacl]
    return Structure(nacl.lattice, [species[i] for i in order], frac[order])


@pytest.mark.parametrize(("distance", "n_sites"), [(0.007, 2), (0.0095, 2), (0.0105, 8)])
def test_primitive_cell_does_not_depend_on_the_site_order_near_symprec(
    nacl, featurizer, distance, n_sites
):
    """symprec = 0.01 Å: one atom displaced by less keeps every translation, by more none.

    The displaced atom comes first, in the middle, or last among the four Na atoms."""
    orders = [list(range(8)), [1, 2, 0, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]]
    structures = [_displaced_nacl(nacl, distance, order) for order in orders]
    assert len({(s.species[0], tuple(s.frac_coords[0])) for s in structures}) == 3
    assert [build_inputs(s, symprec=0.01).n_sites for s in structures] == [n_sites] * 3
    vectors = featurizer.transform(structures)
    np.testing.assert_allclose(vectors[1:], vectors[[0, 0]], rtol=1e-5, atol=1e-6)


def test_primitive_cell_positions_are_the_orbit_means(nacl):
    """Na is placed at the mean of its 4 translated copies: one moved 0.008 Å along x moves it
    by 0.002 Å, so the shortest Na-Cl distance is 2.820 - 0.002 Å, in any site order."""
    for order in ([0, 1, 2, 3, 4, 5, 6, 7], [3, 2, 1, 0, 7, 6, 5, 4]):
        crystal = build_inputs(_displaced_nacl(nacl, 0.008, order), max_atoms=8)
        assert crystal.n_sites == 2
        na = int(np.flatnonzero(crystal.species[:2] == 11)[0])
        shortest = crystal.distances[na][crystal.species == 17].min()
        assert shortest == pytest.approx(5.640 / 2 - 0.002, abs=1e-6)


# -- primitive-cell search on large cells: k-d tree ----------------------------------------------
def _search_cases(classic, sample) -> list[Structure]:
    """Supercells (every translation kept), perturbations around symprec (some kept, most not),
    permuted sites and skewed cells, of the classic crystals and of sample crystals."""
    rng = np.random.default_rng(0)
    bases = list(classic.values()) + [s for s in sample["structure"] if len(s) <= 8][:12]
    cases = []
    for base in bases:
        big = base * (2, 2, 1)
        cases += [base * (2, 1, 1), big, base * (3, 1, 2)]
        for sigma in (0.001, 0.003, 0.005, 0.02):  # Å per coordinate; symprec is 0.01 Å
            noise = rng.normal(0, sigma, (len(big), 3)) @ np.linalg.inv(big.lattice.matrix)
            cases.append(Structure(big.lattice, big.species, big.frac_coords + noise))
        order = rng.permutation(len(big))
        cases.append(
            Structure(big.lattice, [big.species[i] for i in order], big.frac_coords[order])
        )
        cases.append(
            Structure.from_sites(base.copy().make_supercell([[1, 0, 0], [3, 1, 0], [0, -2, 1]]))
        )
    return cases


def test_tree_and_dense_translation_searches_agree(classic, sample, nacl, monkeypatch):
    """The k-d tree search (large cells) keeps the translations, pairings and fitted values of
    the dense one (small cells), at symprec 0.01 and 0.1 Å, and fails where the dense one does."""
    cases = _search_cases(classic, sample)
    cases += [
        _displaced_nacl(nacl, d, [7, 6, 5, 4, 3, 2, 1, 0]) * (2, 1, 1) for d in (0.007, 0.0105)
    ]
    sizes = set()
    for structure in cases:
        lattice, frac, numbers = _spglib_cell(structure, None)
        for tol in (0.01, 0.1):
            found = []
            for limit in (10**18, 0):  # dense, then the k-d tree
                monkeypatch.setattr(inputs_module, "_DENSE_MATCH_LIMIT", limit)
                try:
                    found.append(
                        inputs_module._primitive_by_translations(lattice, frac, numbers, tol)
                    )
                except ValueError as exc:
                    found.append(str(exc))
            dense, tree = found
            assert type(dense) is type(tree), structure.formula
            if isinstance(dense, str):
                assert dense == tree
                continue
            sizes.add((len(numbers), len(dense[2])))
            for a, b in zip(dense, tree, strict=True):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert any(n == p for n, p in sizes) and any(n > p for n, p in sizes)


def test_thin_cells_use_the_dense_search(monkeypatch):
    """A cell thinner than 4 * symprec in some direction keeps the dense search: only there can
    an offset shorter than 2 * symprec fail to be its own rounded image."""
    assert inputs_module._min_height(np.diag([3.0, 4.0, 5.0])) == pytest.approx(3.0)
    skew = np.array([[1.0, 0, 0], [0, 1, 0], [100, 0, 0.01]])
    assert inputs_module._min_height(skew) < 0.04
    monkeypatch.setattr(inputs_module, "_DENSE_MATCH_LIMIT", 0)
    called = []
    monkeypatch.setattr(inputs_module, "_match_tree", lambda *a: called.append(a))
    frac = np.array([[0.0, 0, 0], [0.5, 0, 0]])
    inputs_module._primitive_by_translations(skew * 10, frac, np.array([1, 1]), 0.01)
    assert not called


def test_large_cell_search_is_invariant_to_site_order_rotation_and_translation(
    triclinic, featurizer
):
    """A 108-atom supercell of triclinic Ag2O (k-d tree search), shaken by 0.0008 Å: it
    reduces to 9 atoms, and in other site orders, rotated and translated gives the same vector."""
    big = triclinic * (3, 2, 2)
    numbers = _spglib_cell(big, None)[2]
    counts = np.unique(numbers, return_counts=True)[1]
    assert (counts.min() - 1) * len(numbers) ** 2 > inputs_module._DENSE_MATCH_LIMIT
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.0008, (len(big), 3)) @ np.linalg.inv(big.lattice.matrix)
    shaken = Structure(big.lattice, big.species, big.frac_coords + noise)
    rotation = Rotation.from_euler("zyx", [30, 50, -20], degrees=True).as_matrix()
    variants = [shaken]
    for _ in range(3):
        order = rng.permutation(len(shaken))
        variants.append(
            Structure(
                Lattice(shaken.lattice.matrix @ rotation.T),
                [shaken.species[i] for i in order],
                shaken.frac_coords[order] + rng.random(3),
            )
        )
    assert [build_inputs(v).n_sites for v in variants] == [9] * 4
    vectors = featurizer.transform(variants)
    np.testing.assert_allclose(vectors[1:], vectors[[0, 0, 0]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vectors[0], featurizer.transform([triclinic])[0], atol=1e-3)


def test_large_supercell_reduces_and_a_perturbed_one_does_not():
    """1,000-atom NaCl supercells: exact, it reduces to the 2-atom cell (999 candidate
    translations, 499 kept); perturbed by 0.005 Å per coordinate, no translation is kept."""
    cell = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big = cell * (5, 10, 10)
    np.testing.assert_allclose(build_inputs(big).distances, build_inputs(cell).distances, atol=1e-5)
    noise = np.random.default_rng(0).normal(0, 0.005, (len(big), 3)) / 4.0
    perturbed = Structure(big.lattice, big.species, big.frac_coords + noise)
    lattice, frac, numbers = _spglib_cell(perturbed, None)
    assert len(inputs_module._primitive_by_translations(lattice, frac, numbers, 0.01)[2]) == 1000


# -- bad input -----------------------------------------------------------------------------------
def test_disordered_structure_raises_naming_the_formula():
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(InvalidStructureError, match=r"disordered.*structure 7.*Fe0.5Ni0.5"):
        build_inputs(alloy, index=7)


def test_molecule_raises_type_error_naming_the_type():
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(TypeError, match=r"structure 2.*Molecule.*periodic crystals only"):
        build_inputs(water, index=2)
    with pytest.raises(TypeError, match=r"structure 2.*Molecule dict"):
        build_inputs(water.as_dict(), index=2)
    with pytest.raises(InvalidStructureError, match=r"no such file: the str 'NaCl'"):
        build_inputs("NaCl")


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        (
            Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]]),
            r"overlapping atoms in structure \(structure 4\).*0\.200 Å",
        ),
        (
            Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [np.nan, 0.5, 0.5]]),
            r"structure \(structure 4\) has NaN",
        ),
        (Structure(Lattice.cubic(4.0), [], []), r"empty structure \(structure 4\)"),
    ],
    ids=["overlap", "nan", "empty"],
)
def test_invalid_structures_raise_with_the_index(structure, message):
    with pytest.raises(InvalidStructureError, match=message):
        build_inputs(structure, index=4)


def test_build_many_names_the_failing_index_or_collects_errors(cscl, nacl):
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(InvalidStructureError, match="structure 2"):
        build_many([cscl, nacl, alloy, cscl])
    inputs, errors = build_many([cscl, alloy, "text", nacl, 7], ignore_errors=True)
    assert [x is None for x in inputs] == [False, True, True, False, True]
    assert sorted(errors) == [1, 2, 4]
    assert "InvalidStructureError" in errors[1] and "Fe0.5Ni0.5" in errors[1]
    assert "InvalidStructureError" in errors[2] and "no such file: the str 'text'" in errors[2]
    assert "TypeError" in errors[4] and "(structure 4), got int" in errors[4]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_build_many_names_the_callers_positions_and_keys_errors_by_index(cscl, nacl, n_jobs):
    """``positions`` (e.g. the rows of X that missed a cache) are what messages name; the
    errors stay keyed by the index in the list, in process chunks too (> 64 structures)."""
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    structures = [cscl, nacl] * 40
    structures[70] = alloy
    positions = [1000 + 3 * k for k in range(len(structures))]
    inputs, errors = build_many(structures, positions=positions, ignore_errors=True, n_jobs=n_jobs)
    assert list(errors) == [70] and inputs[70] is None and inputs[69] is not None
    assert "structure 1210" in errors[70]
    with pytest.raises(InvalidStructureError, match=r"structure 1210\b"):
        build_many(structures, positions=positions, n_jobs=n_jobs)
    with pytest.raises(ValueError, match="2 positions for 80 structures"):
        build_many(structures, positions=[0, 1])


def test_worker_processes_build_the_serial_inputs_and_raise_the_first_failure(cscl, nacl):
    """With n_jobs=2, Structures travel to the workers as arrays (read in this process): the
    inputs are the serial ones bit for bit, a structure that fails to read (disordered) and one
    that fails in a worker (overlapping atoms) keep their places, and the first is raised."""
    overlap = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    structures = [cscl, nacl] * 40
    structures[30], structures[70] = overlap, alloy
    serial, serial_errors = build_many(structures, ignore_errors=True)
    parallel, parallel_errors = build_many(structures, ignore_errors=True, n_jobs=2)
    assert sorted(parallel_errors) == sorted(serial_errors) == [30, 70]
    assert "overlapping atoms" in parallel_errors[30] and "Fe0.5Ni0.5" in parallel_errors[70]
    for a, b in zip(serial, parallel, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            for name in ("species", "atom_site", "distances"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    with pytest.raises(InvalidStructureError, match=r"overlapping atoms .*structure 30\b"):
        build_many(structures, n_jobs=2)
    structures[30] = cscl
    with pytest.raises(InvalidStructureError, match=r"disordered structure \(structure 70\)"):
        build_many(structures, n_jobs=2)
    with pytest.warns(UserWarning, match="1 disordered structure"):
        majority, errors = build_many(structures, disorder="majority", n_jobs=2)
    assert not errors and majority[70].species[0] == 26  # Fe: the tie goes to the lower Z


def test_as_structure_list_accepts_sequences_and_refuses_a_bare_structure(cscl, nacl):
    import pandas as pd

    assert as_structure_list((cscl, nacl)) == [cscl, nacl]
    assert as_structure_list(pd.Series([cscl, nacl])) == [cscl, nacl]
    assert as_structure_list(pd.DataFrame({"s": [cscl, nacl]})) == [cscl, nacl]
    assert as_structure_list(np.array([cscl, nacl], dtype=object)) == [cscl, nacl]
    assert as_structure_list(np.array([[cscl], [nacl]], dtype=object)) == [cscl, nacl]
    with pytest.raises(TypeError, match="wrap a single Structure"):
        as_structure_list(cscl)
    with pytest.raises(ValueError, match="one-column"):
        as_structure_list(pd.DataFrame({"a": [cscl], "b": [nacl]}))


# -- reading structures as users hold them -------------------------------------------------------
def _same_crystal(a, b: Structure) -> None:
    """Same model inputs (CIF and POSCAR text round coordinates, hence the tolerance)."""
    x = a if isinstance(a, CrystalInputs) else build_inputs(a)
    y = build_inputs(b)
    np.testing.assert_array_equal(x.species, y.species)
    np.testing.assert_allclose(x.distances, y.distances, atol=1e-5)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


KINDS = {
    "Structure": lambda s, tmp: s,
    "IStructure": lambda s, tmp: IStructure.from_sites(s),
    "as_dict": lambda s, tmp: s.as_dict(),
    "json_round_trip_dict": lambda s, tmp: json.loads(s.to_json()),
    "json_text": lambda s, tmp: s.to_json(),
    "cif_text": lambda s, tmp: s.to(fmt="cif"),
    "cif_bytes": lambda s, tmp: s.to(fmt="cif").encode(),
    "poscar_text": lambda s, tmp: s.to(fmt="poscar"),
    "cif_path_str": lambda s, tmp: str(_write(tmp / "x.cif", s.to(fmt="cif"))),
    "poscar_path": lambda s, tmp: _write(tmp / "POSCAR", s.to(fmt="poscar")),
    "vasp_path_str": lambda s, tmp: str(_write(tmp / "x.vasp", s.to(fmt="poscar"))),
    "json_path": lambda s, tmp: _write(tmp / "x.json", s.to_json()),
    "cif_unknown_suffix": lambda s, tmp: _write(tmp / "x.txt", s.to(fmt="cif")),
    "poscar_no_suffix": lambda s, tmp: _write(tmp / "structure", s.to(fmt="poscar")),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_to_structure_reads_every_kind_a_user_holds(kind, zno, tmp_path):
    value = KINDS[kind](zno, tmp_path)
    structure = to_structure(value, 0)
    assert type(structure) is Structure
    _same_crystal(structure, zno)
    # build_inputs and build_many read the same way
    _same_crystal(build_inputs(value), zno)
    assert build_many([value])[0][0].n_sites == 4


def test_to_structure_returns_a_structure_unchanged(cscl):
    assert to_structure(cscl) is cscl


def test_ase_atoms_are_read_through_pymatgen(nacl):
    ase_build = pytest.importorskip("ase.build")
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = ase_build.bulk("NaCl", "rocksalt", a=5.64)
    structure = to_structure(atoms)
    assert type(structure) is Structure and structure.composition.reduced_formula == "NaCl"
    _same_crystal(structure, nacl)
    _same_crystal(to_structure(AseAtomsAdaptor.get_atoms(nacl)), nacl)


def test_non_periodic_ase_atoms_are_refused_with_the_reason():
    ase = pytest.importorskip("ase")
    water = ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(InvalidStructureError, match=r"Atoms \(structure 5\) \(H2O\).*pbc"):
        to_structure(water, 5)
    water.cell = [10, 10, 10]  # a cell but pbc=False: a molecule in a box
    with pytest.raises(InvalidStructureError, match=r"not a periodic crystal.*pbc=\[False"):
        to_structure(water, 5)


def test_a_path_and_text_are_told_apart(tmp_path, monkeypatch, zno):
    monkeypatch.chdir(tmp_path)
    cif = zno.to(fmt="cif")
    # a one-line str is a path, even when it looks like the start of a CIF
    _write(tmp_path / "data_ZnO", cif)
    _same_crystal(to_structure("data_ZnO"), zno)
    # several lines are text, even when the first line names an existing file
    _write(tmp_path / "first", cif)
    _same_crystal(to_structure("first\n" + zno.to(fmt="poscar").split("\n", 1)[1]), zno)
    # Windows line ends, leading blank lines and comments before data_ are CIF text
    _same_crystal(to_structure("\r\n# comment\r\n" + cif.replace("\n", "\r\n")), zno)
    # a path with spaces, and a user-relative one
    _write(tmp_path / "my zno.cif", cif)
    _same_crystal(to_structure("my zno.cif"), zno)
    monkeypatch.setenv("HOME", str(tmp_path))
    _same_crystal(to_structure("~/my zno.cif"), zno)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda tmp: Molecule(["C", "O"], [[0, 0, 0], [0, 0, 1.13]]), TypeError, r"got Molecule"),
        (lambda tmp: 42, TypeError, r"got int; expected a pymatgen Structure"),
        (lambda tmp: np.zeros(3), TypeError, r"got ndarray"),
        (lambda tmp: None, TypeError, r"got NoneType"),
        (lambda tmp: "NaCl.cif", InvalidStructureError, r"no such file: the str 'NaCl.cif'"),
        (lambda tmp: Path("no/such.cif"), InvalidStructureError, r"no such file"),
        (lambda tmp: str(tmp), InvalidStructureError, r"is a folder"),
        (lambda tmp: "line one\nline two", InvalidStructureError, r"text.*as POSCAR.*no CIF"),
        (lambda tmp: "data_x\n_cell_length_a 3\n", InvalidStructureError, r"text.*as CIF"),
        (lambda tmp: "{not json", InvalidStructureError, r"as JSON"),
        (lambda tmp: "[1, 2]", InvalidStructureError, r"no such file"),
        (lambda tmp: {"a": 1}, InvalidStructureError, r"not a pymatgen structure dict.*'a'"),
        (
            lambda tmp: {"@class": "ComputedEntry", "energy": 1.0},
            InvalidStructureError,
            r"@class 'ComputedEntry'",
        ),
        (lambda tmp: b"\xff\xfe", InvalidStructureError, r"not UTF-8"),
        (
            lambda tmp: _write(tmp / "bad.cif", "data_x\n"),
            InvalidStructureError,
            r"file .*bad\.cif.*\(structure 3\)",
        ),
        (
            lambda tmp: _write(tmp / "notes.txt", "hello\nworld\n"),
            InvalidStructureError,
            r"file .*notes\.txt.*as POSCAR",
        ),
    ],
)
def test_what_is_not_a_crystal_is_named_with_position_and_reason(tmp_path, make, error, message):
    value = make(tmp_path)
    with pytest.raises(error, match=message) as caught:
        to_structure(value, 3)
    assert "(structure 3)" in str(caught.value)


def test_check_structures_checks_kinds_without_parsing(cscl, tmp_path):
    items = ["not parsed\nyet", cscl, tmp_path / "missing.cif"]
    with pytest.raises(InvalidStructureError, match=r"no such file.*missing\.cif.*structure 2"):
        check_structures(items)
    assert check_structures(items[:2]) == items[:2]  # text is parsed later, by to_structure
    with pytest.raises(TypeError, match=r"structure 1\), got float"):
        check_structures([cscl, 1.5])


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((3, 2)), r"2-D array of shape \(3, 2\).*numbers are not structures"),
        ("x", r"wrap a single str in a list"),
        (Path("x.cif"), r"wrap a single PosixPath in a list" if os.name != "nt" else "wrap"),
        ({"lattice": 1}, r"wrap a single dict in a list"),
        (42, r"expected a sequence .* got int"),
    ],
)
def test_containers_that_are_not_sequences_of_structures(X, message):
    with pytest.raises(TypeError, match=message):
        as_structure_list(X)


def test_build_many_shows_a_progress_bar_when_asked(capsys, cscl, nacl):
    build_many([cscl, nacl, cscl])
    assert capsys.readouterr().err == ""
    build_many([cscl, nacl, cscl], progress=True)
    err = capsys.readouterr().err
    assert "model inputs" in err and "3/3" in err
    build_many([cscl], progress={"desc": "reading crystals"})
    assert "reading crystals" in capsys.readouterr().err


# -- saving and batching -------------------------------------------------------------------------
def test_save_load_inputs_round_trip(tmp_path, classic):
    crystals = [build_inputs(s) for s in classic.values()]
    ids = np.array(list(classic))
    path = tmp_path / "inputs.npz"
    save_inputs(path, crystals, material_id=ids)
    loaded, extra = load_inputs(path)
    assert len(loaded) == len(crystals)
    for a, b in zip(crystals, loaded, strict=True):
        for field in ("species", "atom_site", "distances"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert getattr(a, field).dtype == getattr(b, field).dtype
    np.testing.assert_array_equal(extra["material_id"], ids)


def test_collate_pads_and_masks(cscl, srtio3, si):
    crystals = [build_inputs(s) for s in (cscl, srtio3, si)]
    batch = collate(crystals)
    n_sites = [c.n_sites for c in crystals]
    assert batch.n_crystals == 3
    assert batch.n_sites.tolist() == n_sites
    assert batch.site_offset.tolist() == [0, n_sites[0], n_sites[0] + n_sites[1]]
    assert batch.crystal_index.tolist() == [k for k, n in enumerate(n_sites) for _ in range(n)]
    width = max(c.n_atoms for c in crystals)
    assert batch.distances.shape == (sum(n_sites), width)
    for k, c in enumerate(crystals):
        rows = slice(int(batch.site_offset[k]), int(batch.site_offset[k]) + c.n_sites)
        assert batch.mask[rows].sum(1).tolist() == [c.n_atoms] * c.n_sites
        assert not batch.mask[rows, c.n_atoms :].any()
        np.testing.assert_array_equal(batch.distances[rows, : c.n_atoms].numpy(), c.distances)
        assert (batch.distances[rows, c.n_atoms :] == 0).all()
        assert (batch.neighbour_species[rows, c.n_atoms :] == 0).all()
        np.testing.assert_array_equal(batch.site_species[rows].numpy(), c.species[: c.n_sites])
        np.testing.assert_array_equal(
            batch.neighbour_site[rows, : c.n_atoms].numpy()[0], c.atom_site
        )
    assert batch.site_species.dtype == batch.neighbour_species.dtype == torch.int64
    assert batch.mask.dtype == torch.bool
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_batches_by_site_budget(cscl, srtio3, zno):
    crystals = [build_inputs(s) for s in (cscl, srtio3, zno, cscl)]  # 2, 5, 4, 2 sites
    groups = batches_by_site_budget(crystals, budget=7)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3]]
    groups = batches_by_site_budget(crystals, budget=3, order=np.array([3, 1, 0, 2]))
    assert [g.tolist() for g in groups] == [[3], [1], [0], [2]]  # a crystal over budget: alone
    assert sum(len(g) for g in batches_by_site_budget(crystals, budget=100)) == 4


# -- the documented examples ---------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("page", "section", "rows", "same"),
    [
        ("docs/getting-started.md", "## Structures as you hold them", 2, 5),
        ("README.md", "Inputs: structures as you hold them", 5, 4),
    ],
)
def test_documented_input_kinds_run_as_written(page, section, rows, same, tmp_path, monkeypatch):
    import re

    pytest.importorskip("ase")
    monkeypatch.chdir(tmp_path)  # the snippets write a CIF file
    text = (ROOT / page).read_text(encoding="utf-8").split(section, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    namespace: dict = {}
    first_X = None
    for block in blocks:
        exec(block, namespace)
        first_X = namespace["X"] if first_X is None else first_X
    assert namespace["X"].shape == (rows, 128)
    # the first `same` rows are forms of one crystal: one vector (text rounds coordinates)
    equal = first_X[:same]
    assert len(equal) == same
    np.testing.assert_allclose(equal, np.broadcast_to(equal[0], equal.shape), atol=2e-5)


# -- merging equivalent sites ----------------------------------------------------------------------
def test_equivalent_sites_follow_the_symmetry_and_not_the_species_count(classic):
    # wurtzite ZnO: 4 sites, two of each species related by the 6_3 screw axis -> 2 groups
    sites, counts = equivalent_sites(build_inputs(classic["ZnO"]))
    assert sites.tolist() == sorted(sites.tolist()) and counts.sum() == 4
    assert len(sites) == 2 and counts.tolist() == [2, 2]
    # SrTiO3: the three O sites are equivalent, Sr and Ti are not equivalent to anything
    crystal = build_inputs(classic["SrTiO3"])
    sites, counts = equivalent_sites(crystal)
    assert sorted(counts.tolist()) == [1, 1, 3]
    assert crystal.species[sites[counts == 3]].tolist() == [8]


def test_a_perturbed_crystal_has_no_equivalent_sites(classic):
    perturbed = classic["ZnO"].copy().perturb(0.01, seed=0)
    sites, counts = equivalent_sites(build_inputs(perturbed))
    assert len(sites) == 4 and counts.tolist() == [1, 1, 1, 1]


def test_merged_batch_rows_stand_for_their_sites(classic):
    crystals = [build_inputs(classic[name]) for name in ("ZnO", "SrTiO3", "CsCl")]
    sites = [equivalent_sites(c) for c in crystals]
    merged, full = collate(crystals, sites), collate(crystals)
    assert merged.n_sites.tolist() == [2, 3, 2]
    assert full.n_sites.tolist() == [4, 5, 2]
    weights = merged.site_weight.tolist()
    assert weights == [w for _, counts in sites for w in counts.tolist()]
    assert sorted(weights[2:5]) == [1, 1, 3] and weights[:2] + weights[5:] == [2, 2, 1, 1]
    assert full.site_weight is None
    # each merged row is its representative's full row
    first = [int(r[0]) for r, _ in sites]
    np.testing.assert_array_equal(merged.distances[0], full.distances[first[0]])
    with pytest.raises(ValueError, match="2 site groupings for 3 crystals"):
        collate(crystals, sites[:2])


def test_the_anchor_screen_drops_only_candidates_the_full_match_drops(sample, monkeypatch):
    """The primitive cells of 300 sample crystals, their conventional cells and 2x1x1
    supercells, with and without the screen on the anchors: the same cells, atom for atom."""
    from dimfeat.inputs import structure_cell as _spglib_cell
    from dimfeat.inputs.cell import _primitive_by_translations

    cells = []
    for s in list(sample["structure"])[:100]:
        conventional = SpacegroupAnalyzer(s, symprec=0.01).get_conventional_standard_structure()
        for variant in (s, conventional, s * (2, 1, 1)):
            cells.append(_spglib_cell(variant, None))
    screened = [_primitive_by_translations(*c, 0.01) for c in cells]
    monkeypatch.setattr(
        inputs_module, "_pair_anchors", lambda lattice, a, candidates, tol: candidates
    )
    full = [_primitive_by_translations(*c, 0.01) for c in cells]
    reduced = 0
    for c, a, b in zip(cells, screened, full, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
        reduced += len(a[2]) < len(c[2])
    assert reduced >= 100  # every supercell at least, so the kept translations are exercised
