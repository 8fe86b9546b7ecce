"""The fast model-input path gives exactly what the plain formulas give, on real structures.

The supercell distances of :func:`dimfeat.inputs.build_inputs` are computed coordinate-major
and image-major (:func:`dimfeat.inputs.cell._minimum_image_distances`), the supercell repeats
and cell heights in Python floats, the lengths without ``np.linalg.norm``: each is checked here
against a plain reference, bit for bit where the reference is the same formula, and against
pymatgen's own distances and a brute-force image search for the geometry.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from dimfeat.inputs import build_inputs, canonical_cell, structure_cell, supercell_repeats
from dimfeat.inputs import cell as cell_module
from dimfeat.inputs.cell import _equivalent_repeats, _minimum_image_distances

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)


def _atom_major_distances(super_frac: np.ndarray, n_sites: int, lattice: np.ndarray) -> np.ndarray:
    """The minimum-image formula written atom-major, one site at a time (the layout the fast
    path replaced): ``|c|^2 + min_v (2 c.v + |v|^2)`` over the 27 images."""
    image_cart = _IMAGES @ lattice
    image_sq = np.einsum("ik,ik->i", image_cart, image_cart)
    out = np.empty((n_sites, len(super_frac)))
    for i in range(n_sites):
        delta = super_frac - super_frac[i]
        delta -= np.round(delta)
        cart = delta @ lattice
        squared = cart @ (2 * image_cart.T) + image_sq
        best = squared.min(axis=1) + np.einsum("nk,nk->n", cart, cart)
        out[i] = np.sqrt(np.maximum(best, 0.0))
    return out


def _brute_force_distances(super_frac: np.ndarray, n_sites: int, lattice: np.ndarray) -> np.ndarray:
    """The shortest ``|x_j - x_i + n L|`` over all images ``n`` in ``{-2..2}^3``, as lengths of
    Cartesian vectors (no rounding to the nearest image, no expanded square)."""
    images = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=np.float64)
    delta = super_frac[None, :, None, :] - super_frac[:n_sites, None, None, :] + images
    return np.linalg.norm(delta @ lattice, axis=-1).min(axis=2)


def _supercell(structure: Structure, repeats=None):
    """Canonical cell, repeats and the supercell's fractional coordinates (sites first)."""
    lattice, frac, numbers = canonical_cell(*structure_cell(structure), 0.01)
    if repeats is None:
        repeats = supercell_repeats(lattice, len(numbers), 50)
    repeats = np.asarray(repeats)
    grid = np.indices(repeats).reshape(3, -1).T
    super_frac = ((frac[None] + grid[:, None]) / repeats).reshape(-1, 3)
    return lattice, numbers, repeats, super_frac


@pytest.fixture(scope="module")
def crystals(sample_structures, nacl, cscl, si) -> list[Structure]:
    """Sample crystals, primitive and not: NaCl's conventional cell (4 formula units), a
    2x1x1 supercell of CsCl, Si translated by a quarter cell, and a skewed basis of Si."""
    sodium = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    chlorine = [[0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]
    conventional = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4, [*sodium, *chlorine])
    doubled = cscl.copy()
    doubled.make_supercell([2, 1, 1])
    shifted = si.copy()
    shifted.translate_sites(range(len(shifted)), [0.25, 0.25, 0.25])
    change = np.array([[1, 3, 0], [0, 1, 0], [0, 0, 1]])
    skewed = Structure(
        Lattice(change @ si.lattice.matrix), si.species, si.frac_coords @ np.linalg.inv(change)
    )
    return [*sample_structures[:12], nacl, conventional, cscl, doubled, si, shifted, skewed]


def test_distances_are_the_atom_major_formula_bit_for_bit(crystals):
    """The fast layout changes no bit of the float64 distances, for every supercell the
    repeats search may try (including uneven repeats on permuted axes) and for a single
    cell of a larger structure."""
    checked = 0
    for structure in crystals:
        lattice, numbers, greedy, _ = _supercell(structure)
        for repeats in [*_equivalent_repeats(lattice, greedy), np.array([1, 1, 1])]:
            _, _, repeats, super_frac = _supercell(structure, repeats)
            super_lattice = lattice * repeats[:, None]
            fast = _minimum_image_distances(super_frac, len(numbers), super_lattice)
            reference = _atom_major_distances(super_frac, len(numbers), super_lattice)
            np.testing.assert_array_equal(fast, reference)
            checked += 1
    assert checked > len(crystals)


def test_distances_split_into_blocks_are_unchanged(crystals, monkeypatch):
    """Blocks of a few rows (as for a very large cell) give the same bits as one block."""
    lattice, numbers, repeats, super_frac = _supercell(crystals[0])
    whole = _minimum_image_distances(super_frac, len(numbers), lattice * repeats[:, None])
    monkeypatch.setattr(cell_module, "_DISTANCE_BLOCK", 1)
    blocked = _minimum_image_distances(super_frac, len(numbers), lattice * repeats[:, None])
    np.testing.assert_array_equal(blocked, whole)


def test_distances_are_the_shortest_images(crystals):
    """Against a brute-force search over 125 images: the 27 nearest images of the reduced
    supercell hold the shortest vector, to rounding."""
    for structure in crystals:
        lattice, numbers, repeats, super_frac = _supercell(structure)
        super_lattice = lattice * repeats[:, None]
        fast = _minimum_image_distances(super_frac, len(numbers), super_lattice)
        brute = _brute_force_distances(super_frac, len(numbers), super_lattice)
        np.testing.assert_allclose(fast, brute, rtol=1e-12, atol=1e-9)


def test_build_inputs_distances_are_pymatgens(crystals):
    """Each site's distances in :func:`build_inputs` are pymatgen's distance matrix of the same
    supercell (``Structure.make_supercell``), as sorted rows: the site is matched by species
    and position, the repeats are one of the candidates the search may pick."""
    for structure in crystals:
        inputs = build_inputs(structure)
        lattice, frac, numbers = canonical_cell(*structure_cell(structure), 0.01)
        n_sites = len(numbers)
        assert inputs.n_sites == n_sites
        np.testing.assert_array_equal(inputs.species[:n_sites], numbers)
        found = np.sort(inputs.distances.astype(np.float64), axis=1)
        greedy = supercell_repeats(lattice, n_sites, 50)
        matches = []
        for repeats in _equivalent_repeats(lattice, greedy):
            supercell = Structure(Lattice(lattice), numbers.tolist(), frac)
            supercell.make_supercell(repeats.tolist())
            # the supercell atom at each canonical site (site i at frac / repeats)
            target = (frac / repeats) @ supercell.lattice.matrix
            rows = [
                int(np.argmin(np.linalg.norm(supercell.cart_coords - x, axis=1))) for x in target
            ]
            expected = np.sort(supercell.distance_matrix[rows], axis=1)
            matches.append(
                expected.shape == found.shape and np.allclose(found, expected, atol=1e-5)
            )
        assert any(matches), structure.composition.reduced_formula


def _seen_by_sites(inputs) -> np.ndarray:
    """Each site's species and sorted distances, rows in sorted order: what does not depend on
    the order of the sites or the origin of the cell."""
    rows = np.column_stack(
        [inputs.species[: inputs.n_sites], np.sort(inputs.distances, axis=1)]
    ).astype(np.float64)
    return rows[np.lexsort(rows.T[::-1])]


def test_equivalent_cells_give_the_same_inputs(crystals):
    """A conventional cell, a supercell, a translated copy and a skewed basis of a crystal give
    the inputs of its primitive cell (the primitive-cell search and its shortcuts), up to the
    order of the sites."""
    nacl, conventional, cscl, doubled, si, shifted, skewed = crystals[-7:]
    for reference, others in ((nacl, [conventional]), (cscl, [doubled]), (si, [shifted, skewed])):
        expected = build_inputs(reference)
        for other in others:
            got = build_inputs(other)
            assert got.n_sites == expected.n_sites and got.n_atoms == expected.n_atoms
            np.testing.assert_allclose(
                _seen_by_sites(got), _seen_by_sites(expected), rtol=0, atol=2e-6
            )


def test_python_float_helpers_are_numpys_formulas():
    """Supercell repeats, cell heights and lengths in Python floats are NumPy's results."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        lattice = rng.normal(size=(3, 3)) * rng.uniform(0.5, 20) + rng.uniform(0, 8) * np.eye(3)
        np.testing.assert_array_equal(
            cell_module._row_lengths(lattice), np.linalg.norm(lattice, axis=1)
        )
        np.testing.assert_array_equal(
            cell_module._norms(lattice @ lattice), np.linalg.norm(lattice @ lattice, axis=-1)
        )
        faces = np.linalg.norm(np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1)
        assert cell_module._min_height(lattice) == abs(np.linalg.det(lattice)) / faces.max()
        n_sites = int(rng.integers(1, 12))
        lengths = np.linalg.norm(lattice, axis=1)
        repeats = [1, 1, 1]
        while True:  # the NumPy loop the Python floats replaced
            reach = np.asarray(repeats) * lengths
            axis = int(np.flatnonzero(reach <= reach.min() * (1 + 1e-6))[0])
            grown = list(repeats)
            grown[axis] += 1
            if np.prod(grown) * n_sites > 50:
                break
            repeats = grown
        assert supercell_repeats(lattice, n_sites, 50) == tuple(repeats)
