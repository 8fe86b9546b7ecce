"""The vector is a property of the crystal, not of how its cell is written down.

Axis labels, site order and very skewed bases of the same crystal give the same vector; a real
change of the crystal changes it; what is not a 3-D crystal, or holds atoms on top of their own
periodic images, is refused naming its position; and beyond the distance cutoff the vector sees
nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from dimfeat.inputs import (
    InvalidStructureError,
    build_inputs,
    build_many,
    canonical_cell,
    structure_cell,
    supercell_repeats,
)
from dimfeat.inputs import structure_cell as _spglib_cell
from dimfeat.inputs.cell import _minimum_image_distances, _primitive_by_translations


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _same_crystal_on_basis(structure: Structure, change: np.ndarray) -> Structure:
    """``structure`` on the lattice basis ``change @ lattice`` (integer, determinant +-1)."""
    lattice = Lattice(change @ structure.lattice.matrix)
    moved = Structure(lattice, structure.species, structure.frac_coords @ np.linalg.inv(change))
    np.testing.assert_allclose(moved.cart_coords, structure.cart_coords, atol=1e-9)
    return moved


# -- supercell repeats: chosen by the atoms, not by the axis labels ------------------------------
def test_supercell_choice_does_not_depend_on_axis_labels(featurizer):
    """CsCl (2 atoms: repeats 3, 3, 2) with Cl moved 0.1 Å along c or along a is one crystal
    relabelled; its vector must not depend on which cubic axis is called c. The move itself
    changes the vector (by 0.7 %; the labelling used to change it by 0.24 %)."""
    cubic = Lattice.cubic(4.12)
    step = 0.1 / 4.12
    ideal = Structure(cubic, ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    along_c = Structure(cubic, ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5 + step]])
    along_a = Structure(cubic, ["Cs", "Cl"], [[0, 0, 0], [0.5 + step, 0.5, 0.5]])
    assert StructureMatcher().fit(along_c, along_a)
    vectors = featurizer.transform([ideal, along_c, along_a])
    assert _relative(vectors[1], vectors[2]) < 1e-5
    assert _relative(vectors[0], vectors[1]) > 1e-3  # the distortion is seen


def test_rhombohedral_cell_with_cycled_axes_gives_the_same_vector(featurizer):
    """A rock-salt MgO primitive cell (a = b = c, 60 degrees) with O moved off centre, and the
    very same atoms written with the cell axes cycled (a, b, c -> b, c, a)."""
    side = 4.21 / 2**0.5
    lattice = Lattice.from_parameters(side, side, side, 60, 60, 60)
    moved = Structure(lattice, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.52]])
    cycled = _same_crystal_on_basis(moved, np.eye(3, dtype=int)[[1, 2, 0]])
    ideal = Structure(lattice, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    vectors = featurizer.transform([moved, cycled, ideal])
    assert _relative(vectors[0], vectors[1]) < 1e-5
    assert _relative(vectors[0], vectors[2]) > 1e-3


def test_symmetric_crystals_keep_the_supercell_they_had(classic):
    """Where every choice of uneven repeats is the same crystal (the classic crystals), the
    labels' choice stands (ties to the first axis): inputs bit-identical to that supercell."""
    for structure in classic.values():
        lattice, frac, numbers = canonical_cell(*structure_cell(structure), 0.01)
        repeats = np.array(supercell_repeats(lattice, len(numbers), 50))
        grid = np.indices(repeats).reshape(3, -1).T
        super_frac = ((frac[None] + grid[:, None]) / repeats).reshape(-1, 3)
        expected = _minimum_image_distances(super_frac, len(numbers), lattice * repeats[:, None])
        np.testing.assert_array_equal(
            build_inputs(structure).distances, expected.astype(np.float32)
        )


# -- the spglib fallback: independent of the site order ------------------------------------------
def _moved_nacl(nacl: Structure, moves: dict[int, tuple[float, float, float]]) -> Structure:
    cart = nacl.cart_coords.copy()
    for atom, move in moves.items():
        cart[atom] += move
    return Structure(nacl.lattice, nacl.species, cart, coords_are_cartesian=True)


def _reordered(structure: Structure, order) -> Structure:
    return Structure(
        structure.lattice, [structure.species[i] for i in order], structure.frac_coords[order]
    )


def _uses_the_fallback(structure: Structure) -> bool:
    try:
        _primitive_by_translations(*_spglib_cell(structure, None), 0.01)
    except ValueError:
        return True
    return False


def test_spglib_fallback_does_not_depend_on_the_site_order(nacl, featurizer):
    """Conventional NaCl with two atoms moved by about symprec: only some translations pass, so
    spglib decides; it used to give 2 sites in one order and 8 in the reverse (5.9 %)."""
    moved = _moved_nacl(nacl, {5: (0.0011, 0.00496, 0.00576), 6: (-0.00432, -0.00361, -0.0016)})
    assert _uses_the_fallback(moved)
    rng = np.random.default_rng(7)
    orders = [np.arange(8), np.arange(8)[::-1]] + [rng.permutation(8) for _ in range(3)]
    structures = [_reordered(moved, order) for order in orders]
    assert len({build_inputs(s).n_sites for s in structures}) == 1
    vectors = featurizer.transform(structures)
    np.testing.assert_allclose(vectors[1:], np.repeat(vectors[:1], 4, axis=0), rtol=1e-5, atol=1e-6)


def test_spglib_fallback_is_order_independent_for_random_moves_near_symprec(nacl, featurizer):
    """Seeded moves of two atoms by up to 0.008 Å per coordinate, kept where the fallback runs
    (6 cases, reducing to 2 sites or staying at 8), each in 4 site orders."""
    rng = np.random.default_rng(0)
    cases = []
    while len(cases) < 6:
        atoms = rng.choice(8, 2, replace=False)
        moves = rng.uniform(-0.008, 0.008, (2, 3))
        moved = _moved_nacl(nacl, dict(zip(atoms.tolist(), moves, strict=True)))
        if _uses_the_fallback(moved):
            cases.append(moved)
    orders = [np.arange(8), np.arange(8)[::-1], rng.permutation(8), rng.permutation(8)]
    structures = [_reordered(case, order) for case in cases for order in orders]
    sites = np.array([build_inputs(s).n_sites for s in structures]).reshape(6, 4)
    assert (sites == sites[:, :1]).all()
    assert {2, 8} <= set(sites[:, 0].tolist())  # both outcomes of the fallback are exercised
    vectors = featurizer.transform(structures).reshape(6, 4, -1)
    np.testing.assert_allclose(vectors, np.repeat(vectors[:, :1], 4, axis=1), rtol=1e-5, atol=1e-6)


# -- very skewed cells ---------------------------------------------------------------------------
@pytest.mark.parametrize("k", [10, 99, 400])
def test_very_skewed_cells_give_the_vector_of_the_reduced_cell(featurizer, nacl, zno, k):
    """The basis [[1, k, k], [0, 1, k], [0, 0, 1]] of simple cubic Po (spglib's Niggli reduction
    gives up at k = 99: 27 % off), of conventional NaCl and of wurtzite ZnO (47 % and 52 % off
    at k = 400) describes the same crystal."""
    change = np.array([[1, k, k], [0, 1, k], [0, 0, 1]])
    po = Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]])
    plain = [po, nacl, zno]
    skewed = [_same_crystal_on_basis(s, change) for s in plain]
    assert [build_inputs(s).n_sites for s in skewed] == [1, 2, 4]
    vectors = featurizer.transform(plain + skewed)
    np.testing.assert_allclose(vectors[3:], vectors[:3], rtol=1e-5, atol=1e-5)


def test_a_lattice_no_reduction_can_handle_is_refused_naming_it(cscl, monkeypatch):
    """spglib returning no Niggli cell even after LLL (no real cell found that does) is refused
    with the structure's position, not featurised on the unreduced cell."""
    import spglib

    monkeypatch.setattr(spglib, "niggli_reduce", lambda lattice, eps=1e-5: None)
    with pytest.raises(InvalidStructureError, match=r"structure 3.*could not be Niggli-reduced"):
        build_inputs(cscl, index=3)


# -- not a 3-D crystal ---------------------------------------------------------------------------
@pytest.mark.parametrize("pbc", [(False, False, False), (True, True, False)])
def test_non_periodic_pymatgen_structures_are_refused(featurizer, cscl, pbc):
    """A pymatgen structure whose lattice is not periodic along all three axes (a molecule in a
    box, a slab) was featurised as a 3-D crystal; it is refused as ASE ``Atoms`` are, and becomes
    a NaN row with ``ignore_errors=True``, also as a structure dict."""
    box = Structure(Lattice(np.eye(3) * 10, pbc=pbc), ["Cu", "Cu"], [[0, 0, 0], [0.25, 0, 0]])
    with pytest.raises(InvalidStructureError, match=r"structure 1.*not periodic.*pbc="):
        featurizer.transform([cscl, box])
    with pytest.raises(InvalidStructureError, match=r"structure 1.*not periodic"):
        featurizer.transform([cscl, box.as_dict()])
    rows = np.array(featurizer.featurize_many([cscl, box, box.as_dict()], ignore_errors=True))
    assert np.isfinite(rows[0]).all() and np.isnan(rows[1:]).all()


# -- atoms on their own periodic images ----------------------------------------------------------
def _thin_cell() -> Structure:
    """30 Cu atoms, at least 1.2 Å apart, in a cell 0.08 Å thick along a."""
    rng = np.random.default_rng(0)
    points: list[np.ndarray] = []
    size = np.array([12.0, 10.0])
    while len(points) < 30:
        p = rng.random(2) * size
        if all(np.linalg.norm((p - q + size / 2) % size - size / 2) > 1.2 for q in points):
            points.append(p)
    frac = np.column_stack([np.full(30, 0.5), np.array(points) / size])
    return Structure(Lattice.orthorhombic(0.08, 12, 10), ["Cu"] * 30, frac)


def test_an_atom_on_its_own_periodic_image_is_refused(cscl):
    """Every atom 0.08 Å (30 atoms, a single image of the cell) or 0.3 Å (one atom,
    ``max_atoms=1``) from its own image: no two distinct atoms overlap, but the crystal is
    nonsense; refused naming the position, a NaN row (None) with ``ignore_errors=True``."""
    cases = [(_thin_cell(), 50), (Structure(Lattice.cubic(0.3), ["Cu"], [[0, 0, 0]]), 1)]
    for bad, max_atoms in cases:
        with pytest.raises(InvalidStructureError, match=r"structure 2.*its own periodic image"):
            build_many([cscl, cscl, bad], max_atoms=max_atoms)
        inputs, errors = build_many([cscl, bad], max_atoms=max_atoms, ignore_errors=True)
        assert inputs[0] is not None and inputs[1] is None and list(errors) == [1]


def test_an_atom_on_its_own_image_is_a_nan_row(featurizer, cscl):
    rows = np.array(featurizer.featurize_many([_thin_cell(), cscl], ignore_errors=True))
    assert np.isnan(rows[0]).all() and np.isfinite(rows[1]).all()


# -- the distance cutoff -------------------------------------------------------------------------
def test_the_vector_cannot_see_beyond_the_cutoff(featurizer):
    """Distances enter through Gaussians on 0-8 Å: simple cubic Cu with a = 12, 20, 50 or 100 Å
    has every neighbour beyond 8 Å, and all four give the same vector, while 6 and 7 Å differ."""
    cells = [Structure(Lattice.cubic(a), ["Cu"], [[0, 0, 0]]) for a in (12, 20, 50, 100, 6, 7)]
    vectors = featurizer.transform(cells)
    np.testing.assert_allclose(vectors[1:4], np.repeat(vectors[:1], 3, axis=0), atol=1e-6)
    assert _relative(vectors[0], vectors[4]) > 1e-3
    assert _relative(vectors[4], vectors[5]) > 1e-3
