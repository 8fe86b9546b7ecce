"""From a pymatgen ``Structure`` to Site-Net model inputs, and batching.

:func:`to_structure` is the one place where a value becomes a ``Structure``: it accepts a
``Structure`` or ``IStructure``, a ``Structure.as_dict()`` dict or its JSON text, CIF or POSCAR
text, the path of a structure file and ASE ``Atoms``, and names the position and the reason when
a value is not a crystal. Everything that takes structures (the featurisers, the regressor,
:func:`build_many`, streaming) reads its items through it.

The pipeline (SPEC section 1):

1. **Canonical primitive cell.** The primitive cell is found from the pure translations that map
   the crystal onto itself (spglib's ``find_primitive`` is the fallback when they do not form a
   consistent group), then Niggli-reduced with spglib. A translation is accepted iff, fitted to
   the atom pairing it induces, it brings every atom within ``symprec`` Å of an atom of the same
   species (see :func:`_primitive_by_translations`); each primitive-cell atom sits at the mean of
   the atoms the translations map onto it. Positions are not otherwise symmetrised. spglib's
   fallback gets the atoms in a canonical order; a very skewed cell is LLL-reduced first. Site
   order, rotation, translation and the choice of primitive/conventional/supercell of the input do
   not change this cell, including for distortions close to ``symprec``. A translation search
   costs about 0.16 ms per structure (``benchmarks/throughput.py``, stage ``cell_reduction``; the
   order-independent fit added about 0.04 ms, measured on 400 sample structures). Large cells pair
   atoms through a k-d tree after a screen on 12 atoms (:func:`_match_tree`): about ``n log n``
   for ``n`` atoms when few candidates are translations, ``n^2 log n`` at worst (every candidate
   a translation); 0.03 s for a 2,000-atom cell with no translation.
2. **Roughly cubic supercell of at most** ``max_atoms`` **atoms.** Starting from repeats
   ``(1, 1, 1)`` of the Niggli-reduced cell, the axis with the shortest repeat length is grown by
   one while ``a*b*c*P <= max_atoms`` (ties go to the first axis); growth stops at the first step
   that would exceed the limit. Uneven repeats over axes the metric cannot tell apart (a cubic
   cell: ``(3, 3, 2)``) are then chosen by the atoms, not by the axis labels
   (:func:`_equivalent_repeats`). A cell with ``P > max_atoms / 2`` atoms gets a single image;
   a cell with ``P > max_atoms`` still works (each site attends to the ``P`` atoms of the cell).
3. **Unique sites and interactions.** The first ``P`` supercell atoms are the primitive cell's
   sites. Each of them attends to every supercell atom (itself included, at distance 0) through the
   minimum-image distance within the supercell, found among the 27 nearest periodic images of the
   Niggli-reduced supercell (``27 P N`` work for ``P`` sites and ``N`` atoms, in blocks).

A :class:`CrystalInputs` holds atomic numbers and distances only; the site features (element
properties) are looked up inside the encoder, so the same inputs serve any normalisation.
"""

from __future__ import annotations

import itertools
import os
import re
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dimfeat.elements import check_atomic_numbers

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "Batch",
    "CrystalInputs",
    "InvalidStructureError",
    "as_structure_list",
    "batches_by_site_budget",
    "build_inputs",
    "build_many",
    "canonical_cell",
    "check_geometry",
    "check_structures",
    "collate",
    "equivalent_sites",
    "load_inputs",
    "save_inputs",
    "structure_cell",
    "supercell_repeats",
    "to_structure",
]

#: Two atoms closer than this (Å) are reported as overlapping.
MIN_DISTANCE = 0.5

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)

#: Grid (Å) on which :func:`equivalent_sites` compares distances. Sites related by symmetry
#: see the same distances up to float32 rounding (about 1e-6 Å); a grid ten times coarser
#: merges them, and two environments it merges differ by less than this in every distance.
SITE_MERGE_RESOLUTION = 1e-5


class InvalidStructureError(ValueError):
    """A structure that cannot be turned into model inputs (the message says why)."""


@dataclass(frozen=True)
class CrystalInputs:
    """Model inputs of one crystal.

    Attributes
    ----------
    species : ndarray of shape (n_atoms,), int16
        Atomic numbers of the supercell atoms. The first ``n_sites`` are the unique sites.
    atom_site : ndarray of shape (n_atoms,), int16
        For each supercell atom, the index of the unique site it is an image of.
    distances : ndarray of shape (n_sites, n_atoms), float32
        Minimum-image distances (Å) from each unique site to each supercell atom.
    """

    species: np.ndarray
    atom_site: np.ndarray
    distances: np.ndarray

    @property
    def n_sites(self) -> int:
        """Number of unique sites (atoms in the primitive cell)."""
        return int(self.distances.shape[0])

    @property
    def n_atoms(self) -> int:
        """Number of supercell atoms."""
        return int(self.distances.shape[1])


def supercell_repeats(lattice: np.ndarray, n_sites: int, max_atoms: int) -> tuple[int, int, int]:
    """Integer repeats (a, b, c) of a reduced cell giving a roughly cubic supercell.

    Parameters
    ----------
    lattice : ndarray of shape (3, 3)
        Lattice vectors as rows (Å), ideally Niggli-reduced.
    n_sites : int
        Atoms in the cell.
    max_atoms : int
        Upper bound on ``a*b*c*n_sites``; at least one image is always kept.

    Returns
    -------
    repeats : tuple of 3 int
    """
    lengths = np.linalg.norm(lattice, axis=1)
    repeats = [1, 1, 1]
    while True:
        reach = np.asarray(repeats) * lengths
        # Ties within 1e-6 (relative) go to the first axis: rounding noise (e.g. from a rotated
        # copy of the same cell) must not pick another supercell shape.
        axis = int(np.flatnonzero(reach <= reach.min() * (1 + 1e-6))[0])
        grown = list(repeats)
        grown[axis] += 1
        if grown[0] * grown[1] * grown[2] * n_sites > max_atoms:
            return repeats[0], repeats[1], repeats[2]
        repeats = grown


#: The permutations of three axes, and sign patterns of the last two (the first is fixed).
_PERMUTATIONS = np.array(list(itertools.permutations(range(3))))
_FLIPS = np.array([[1.0, *signs] for signs in itertools.product((1.0, -1.0), repeat=2)])


def _equivalent_repeats(lattice: np.ndarray, repeats: Sequence[int]) -> list[np.ndarray]:
    """``repeats`` and its distinct permutations over axes that the lattice's metric cannot
    tell apart, ``repeats`` first.

    A permutation of the axes, with signs, that leaves the metric (Gram matrix) unchanged to
    1e-6 (relative) maps the reduced lattice onto itself: the cubic, tetragonal, hexagonal and
    rhombohedral metrics have such permutations. Its axes are labelled arbitrarily (by the input,
    through the reduction), so uneven repeats over them, such as ``(3, 3, 2)``, must be chosen
    by the atoms, not by the labels (see :func:`_inputs_from_cell`).
    """
    first = np.asarray(repeats, dtype=np.int64)
    gram = lattice @ lattice.T
    tol = 1e-6 * float(np.abs(gram).max())
    lengths = np.diag(gram)
    tied = np.abs(lengths[:, None] - lengths[None, :]) <= tol
    if not (tied & (first[:, None] != first[None, :])).any():
        return [first]  # no two axes of equal length have different repeats
    moved = gram[_PERMUTATIONS[:, :, None], _PERMUTATIONS[:, None, :]]  # (6, 3, 3)
    signs = _FLIPS[:, :, None] * _FLIPS[:, None, :]  # (4, 3, 3)
    kept = (np.abs(moved[:, None] * signs[None] - gram).max(axis=(2, 3)) <= tol).any(axis=1)
    candidates, seen = [first], {tuple(first.tolist())}
    for perm in _PERMUTATIONS[kept]:
        key = tuple(first[perm].tolist())
        if key not in seen:
            seen.add(key)
            candidates.append(first[perm])
    return candidates


def _distance_key(distances: np.ndarray, numbers: np.ndarray, bound: float) -> np.ndarray:
    """What the encoder sees of a supercell's distances, free of any labelling: for each pair
    of species (site, atom), the sorted distances from the sites of the first to the atoms of
    the second, one block after the other (block ``k`` shifted by ``k * bound``, ``bound`` more
    than any distance and the same for every supercell compared); ``numbers`` are the sites'
    species (the atoms repeat them)."""
    rank = np.unique(numbers, return_inverse=True)[1]
    atoms = np.tile(rank, distances.shape[1] // len(numbers))
    block = rank[:, None] * (rank.max() + 1) + atoms[None, :]
    return np.sort(distances + block * bound, axis=None)


def _precedes(key: np.ndarray, other: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether ``key`` comes before ``other``, comparing in order and taking values within
    ``tol`` (Å) as equal: rounding noise (a rotated or relabelled copy) cannot decide."""
    differ = np.flatnonzero(np.abs(key - other) > tol)
    return bool(len(differ)) and bool(key[differ[0]] < other[differ[0]])


#: Accepted values of the ``disorder`` policy.
DISORDER_POLICIES = ("error", "majority")


def _majority_numbers(structure) -> np.ndarray:
    """Atomic number of each site's majority species; ties go to the lowest atomic number.

    Vacancies are ignored: a site 40% Fe and 60% empty becomes a full Fe atom.
    """
    numbers = []
    for site in structure:
        occupancies = {}
        for specie, occupancy in site.species.items():
            z = specie.Z
            occupancies[z] = occupancies.get(z, 0.0) + occupancy
        best = max(occupancies.values())
        numbers.append(min(z for z, occ in occupancies.items() if occ >= best - 1e-8))
    return np.array(numbers, dtype=np.int64)


def _site_numbers(structure) -> tuple[np.ndarray | None, bool]:
    """Atomic numbers of the sites in one pass, and whether a dummy species was seen.

    The numbers are None as soon as a site is disordered (more than one species, or an
    occupancy other than 1: what pymatgen's ``is_ordered`` tests); that rare case takes the
    slower path of :func:`_majority_numbers`.
    """
    from pymatgen.core.periodic_table import DummySpecies

    numbers = []
    for site in structure:
        species = site.species
        if len(species) != 1:
            return None, False
        ((specie, occupancy),) = species.items()
        if occupancy != 1:
            return None, False
        if isinstance(specie, DummySpecies):
            return None, True
        numbers.append(specie.Z)
    return np.array(numbers, dtype=np.int64), False


@dataclass(frozen=True)
class _Cell:
    """A checked structure as arrays, and whether it was ordered (see :func:`_read_cell`)."""

    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    ordered: bool


def _spglib_cell(
    structure, index: int | None, disorder: str = "error"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cell = _read_cell(structure, index, disorder)
    return cell.lattice, cell.frac, cell.numbers


def _read_cell(structure, index: int | None, disorder: str = "error") -> _Cell:
    """Read and check a structure (any form :func:`to_structure` accepts) into a :class:`_Cell`;
    the errors name ``index``."""
    structure = to_structure(structure, index)
    where = _where(index)
    if disorder not in DISORDER_POLICIES:
        raise ValueError(f"disorder must be one of {DISORDER_POLICIES}, got {disorder!r}")
    numbers, dummy = _site_numbers(structure)
    ordered = numbers is not None or (dummy and structure.is_ordered)
    if not ordered and disorder == "error":
        raise InvalidStructureError(
            f"disordered structure{where} ({structure.composition.reduced_formula}): partial "
            "occupancies are not supported; order it first (e.g. pymatgen's "
            "OrderDisorderedStructureTransformation) or pass disorder='majority' (command line: "
            "--disorder majority)"
        )
    if len(structure) == 0:
        raise InvalidStructureError(f"empty structure{where}: it has no sites")
    lattice, frac = _finite_geometry(structure, where)
    if numbers is None:  # a disordered site or a dummy species: check every site
        _refuse_dummy_species(structure, where)
        numbers = _majority_numbers(structure)
    return _Cell(lattice, frac, numbers, bool(ordered))


def check_geometry(structure: Structure, index: int | None = None) -> Structure:
    """Refuse a structure whose lattice or coordinates are not finite, or whose cell has no volume.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    index : int, optional
        Position of ``structure`` in the caller's input, named in the error message.

    Returns
    -------
    pymatgen.core.Structure
        ``structure`` itself.

    Raises
    ------
    InvalidStructureError
        For NaN or infinite coordinates or lattice vectors, or a lattice of volume <= 1e-3 Å³.
    """
    _finite_geometry(structure, _where(index))
    return structure


def _finite_geometry(structure, where: str) -> tuple[np.ndarray, np.ndarray]:
    lattice = np.asarray(structure.lattice.matrix, dtype=np.float64)
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        raise InvalidStructureError(f"structure{where} has NaN or infinite coordinates or lattice")
    volume = abs(np.linalg.det(lattice))
    if not volume > 1e-3:
        raise InvalidStructureError(f"structure{where} has a degenerate lattice (volume {volume})")
    return lattice, frac


def _refuse_dummy_species(structure, where: str) -> None:
    """Raise for pymatgen dummy species (``X0+``...): they are no element, and their ``Z`` is
    a meaningless hash, so they must never reach the element table."""
    from pymatgen.core.periodic_table import DummySpecies

    from dimfeat.elements import MAX_Z, UnsupportedElementError

    dummies = sorted(
        {str(sp) for site in structure for sp in site.species if isinstance(sp, DummySpecies)}
    )
    if dummies:
        raise UnsupportedElementError(
            f"structure{where} holds {', '.join(d + ' (a dummy species)' for d in dummies)}, "
            f"which has no site-feature data: dimfeat supports the elements of atomic numbers "
            f"1-{MAX_Z}; replace the dummy species by an element"
        )


def _integer_basis(rows: np.ndarray) -> np.ndarray:
    """A 3x3 integer basis of the lattice generated by the integer vectors ``rows``.

    Euclidean row reduction, column by column (a Hermite-normal-form construction).
    """
    remaining = [[int(x) for x in r] for r in rows]
    basis = []
    for col in range(3):
        while True:
            nonzero = sorted((r for r in remaining if r[col]), key=lambda r: abs(r[col]))
            if len(nonzero) <= 1:
                break
            pivot = nonzero[0]
            remaining = [
                r
                if r is pivot or not r[col]
                else [x - (r[col] // pivot[col]) * y for x, y in zip(r, pivot, strict=True)]
                for r in remaining
            ]
        nonzero = [r for r in remaining if r[col]]
        if not nonzero:
            raise ValueError("translations do not span a 3-D lattice")
        basis.append(nonzero[0])
        remaining = [r for r in remaining if r is not nonzero[0] and any(r)]
    return np.array(basis, dtype=np.int64)


#: Above this many (candidate, atom, atom) triples the translation search uses a k-d tree.
_DENSE_MATCH_LIMIT = 200_000
#: Atoms checked first for every candidate translation by :func:`_match_tree`.
_SCREEN_ATOMS = 12


def _min_height(lattice: np.ndarray) -> float:
    """The smallest distance (Å) between opposite faces of the cell."""
    volume = abs(np.linalg.det(lattice))
    faces = np.linalg.norm(np.cross(lattice[[1, 2, 0]], lattice[[2, 0, 1]]), axis=1)
    return float(volume / faces.max())


def _fit_translations(
    block: np.ndarray,
    partner: np.ndarray,
    residual: np.ndarray,
    paired: np.ndarray,
    inverse: np.ndarray,
    tol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Which candidates ``block`` (C, 3) are kept, and their fitted translations.

    ``partner`` (C, n) pairs each atom with an atom of its species, ``residual`` (C, n, 3) is
    ``x_i + t - x_partner`` (Cartesian) and ``paired`` (C, n) says whether it is within
    ``2 * tol``.
    """
    shift = residual.mean(axis=1)  # the least-squares correction of t (Cartesian)
    within = np.linalg.norm(residual - shift[:, None, :], axis=-1) < tol
    ordered = np.sort(partner, axis=1)
    one_to_one = (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
    keep = paired.all(axis=1) & within.all(axis=1) & one_to_one
    return keep, block - shift @ inverse


def _match_dense(
    lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, candidates: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Kept translations (fitted) and their atom pairings, all atom pairs at once.

    Costs ``O(C n^2)`` time for ``C`` candidates and ``n`` atoms; the pairing of an atom is the
    nearest atom of its species, each offset taken at the image of its rounded fractional
    difference.
    """
    n = len(numbers)
    same_species = numbers[:, None] == numbers[None, :]
    inverse = np.linalg.inv(lattice)
    keep = np.zeros(len(candidates), dtype=bool)
    fitted = np.empty_like(candidates)
    partners = np.empty((len(candidates), n), dtype=np.int64)
    step = max(1, 2_000_000 // (n * n))  # candidates per block: bounds memory
    for start in range(0, len(candidates), step):
        block = candidates[start : start + step]
        moved = frac[None, :, None, :] + block[:, None, None, :] - frac[None, None, :, :]
        moved -= np.round(moved)
        offset = moved @ lattice  # (block, n, n, 3): x_i + t - x_j, Cartesian
        gap = np.where(same_species[None], np.linalg.norm(offset, axis=-1), np.inf)
        partner = gap.argmin(axis=2)  # (block, n)
        residual = np.take_along_axis(offset, partner[:, :, None, None], axis=2)[:, :, 0]
        paired = np.take_along_axis(gap, partner[:, :, None], axis=2)[:, :, 0] < 2 * tol
        stop = start + len(block)
        keep[start:stop], fitted[start:stop] = _fit_translations(
            block, partner, residual, paired, inverse, tol
        )
        partners[start:stop] = partner
    return fitted[keep], partners[keep]


def _match_tree(
    lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, candidates: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`_match_dense` returns, from nearest-neighbour queries in a k-d tree.

    The tree holds the atoms and their 26 neighbouring images (Cartesian, with the species as a
    fourth coordinate far apart, so that only atoms of the same species are ever nearest); an
    atom's partner under ``t`` is the nearest point to ``x_i + t`` within ``2 * tol``. That is
    the dense pairing whenever the cell is thicker than ``4 * tol`` in every direction (the
    caller makes sure): an offset shorter than ``2 * tol`` is then its own rounded image.

    Every candidate is first screened on the first :data:`_SCREEN_ATOMS` atoms: a kept
    translation pairs them one-to-one within ``2 * tol``, and their residuals lie within
    ``tol`` of the common mean, hence within ``2 * tol`` of each other. Only candidates that
    pass are checked on every atom. With ``n`` atoms, ``C`` candidates and ``A`` of them
    passing the screen, the cost is ``O((C + A n) log n)``.
    """
    from scipy.spatial import cKDTree

    n = len(numbers)
    rank = np.unique(numbers, return_inverse=True)[1].astype(np.float64)
    separation = 4.0 * np.abs(lattice).sum() + 1.0  # more than any distance between points
    wrapped = frac - np.floor(frac)
    images = (wrapped[None, :, :] + _IMAGES[:, None, :]).reshape(-1, 3) @ lattice  # image-major
    tree = cKDTree(np.column_stack([images, np.tile(rank, len(_IMAGES)) * separation]))
    inverse = np.linalg.inv(lattice)

    def pair(block: np.ndarray, atoms: np.ndarray):
        moved = frac[atoms][None, :, :] + block[:, None, :]
        moved -= np.floor(moved)
        query = moved.reshape(-1, 3) @ lattice
        keys = np.tile(rank[atoms], len(block)) * separation
        _, index = tree.query(
            np.column_stack([query, keys]), distance_upper_bound=2 * tol * (1 + 1e-6)
        )
        found = index < len(images)
        index = np.where(found, index, 0)
        residual = (query - images[index]).reshape(len(block), len(atoms), 3)
        paired = found.reshape(len(block), len(atoms))
        paired &= np.linalg.norm(residual, axis=-1) < 2 * tol
        return (index % n).reshape(len(block), len(atoms)), residual, paired

    screen = np.arange(min(n, _SCREEN_ATOMS))
    partner, residual, paired = pair(candidates, screen)
    spread = np.linalg.norm(residual[:, :, None, :] - residual[:, None, :, :], axis=-1)
    ordered = np.sort(partner, axis=1)
    alive = candidates[
        paired.all(axis=1)
        & (spread.max(axis=(1, 2)) < 2 * tol)
        & (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
    ]
    translations, partners = [], []
    everyone = np.arange(n)
    step = max(1, 250_000 // n)  # candidates per block: bounds memory
    for start in range(0, len(alive), step):
        block = alive[start : start + step]
        partner, residual, paired = pair(block, everyone)
        keep, fitted = _fit_translations(block, partner, residual, paired, inverse, tol)
        translations.append(fitted[keep])
        partners.append(partner[keep])
    if not translations:
        return np.empty((0, 3)), np.empty((0, n), dtype=np.int64)
    return np.concatenate(translations), np.concatenate(partners)


def _pair_anchors(
    lattice: np.ndarray, anchors: np.ndarray, candidates: np.ndarray, tol: float
) -> np.ndarray:
    """The candidate translations under which every anchor (fractional, one species) has an
    anchor within ``2 * tol`` (Å), each offset at the image of its rounded fractional value.

    A translation that :func:`_match_dense` keeps pairs every atom within ``2 * tol`` with an
    atom of its species; for an anchor that partner is an anchor. So this ``O(m^3)`` check on
    the ``m`` anchors alone drops only candidates the full match would drop, and in most cells
    without a translation it leaves none.
    """
    moved = anchors[None, :, None, :] + candidates[:, None, None, :] - anchors[None, None, :, :]
    moved -= np.round(moved)
    gap = np.linalg.norm(moved @ lattice, axis=-1).min(axis=2)  # (candidates, anchors)
    return candidates[(gap < 2 * tol).all(axis=1)]


def _primitive_by_translations(
    lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Primitive cell from the pure translations that map the crystal onto itself.

    Tolerance, and why it does not depend on the order of the sites: a translation ``t`` is
    accepted iff, with ``t`` fitted to the atom correspondence it induces (each atom paired
    with the nearest atom of its species, a one-to-one pairing; ``t`` then set to the mean
    offset of the pairs, the least-squares fit), every atom lies within ``tol`` Å (Cartesian)
    of its partner. That criterion is a property of the set of atoms, not of a reference atom:
    a single atom displaced by ``d`` keeps every lattice translation iff ``d < tol``, whichever
    position it holds in the input. Candidates are the vectors from one atom of the rarest
    species to the others of that species (pairings are found with ``2 * tol``, which any
    accepted ``t`` satisfies from any anchor). With ``n`` atoms of which ``m`` are of the rarest
    species, the ``m - 1`` candidates are first screened on the anchors alone
    (:func:`_pair_anchors`, while ``(m - 1) m^2 <= 200,000``); the rest are tested against all
    atom pairs at once (:func:`_match_dense`, ``O(m n^2)``) while ``(m - 1) n^2 <= 200,000``,
    else through a k-d tree after a screen on a few atoms (:func:`_match_tree`,
    ``O((m + A n) log n)`` with ``A`` the candidates passing the screen, nearly only the kept
    ones); both keep the same translations with the same pairings.

    The kept translations and the cell vectors generate the primitive lattice, and each
    primitive-cell atom is placed at the mean position of the atoms its translations map onto
    each other (again independent of the order). Raises ``ValueError`` when the translations
    are not a consistent group (the caller falls back to spglib).
    """
    n = len(numbers)
    species, counts = np.unique(numbers, return_counts=True)
    anchors = np.flatnonzero(numbers == species[np.argmin(counts)])
    candidates = frac[anchors[1:]] - frac[anchors[0]]
    if len(candidates) == 0:
        return lattice, frac, numbers
    candidates -= np.round(candidates)
    if len(candidates) * len(anchors) ** 2 <= _DENSE_MATCH_LIMIT:
        candidates = _pair_anchors(lattice, frac[anchors], candidates, tol)
        if len(candidates) == 0:
            return lattice, frac, numbers
    if len(candidates) * n * n <= _DENSE_MATCH_LIMIT or _min_height(lattice) <= 4 * tol:
        translations, partners = _match_dense(lattice, frac, numbers, candidates, tol)
    else:
        translations, partners = _match_tree(lattice, frac, numbers, candidates, tol)
    order = len(translations) + 1
    if order == 1:
        return lattice, frac, numbers
    if n % order:
        raise ValueError("translation group order does not divide the number of atoms")
    generators = np.vstack([order * np.eye(3), order * translations])
    rounded = np.round(generators)
    if np.abs(generators - rounded).max() > 0.05:
        raise ValueError("translations are not commensurate with the cell")
    basis = _integer_basis(rounded)
    if abs(round(np.linalg.det(basis))) != order * order:
        raise ValueError("translations do not form a lattice of the expected index")
    primitive = (basis / order) @ lattice
    new_frac = frac @ lattice @ np.linalg.inv(primitive)
    # Orbits: atom i and its partners under every kept translation (column i of ``orbits``).
    orbits = np.sort(np.vstack([np.arange(n), partners]), axis=0)
    first = orbits[0]  # lowest index of each atom's orbit
    representatives = np.unique(first)
    if (
        (orbits[1:] == orbits[:-1]).any()
        or len(representatives) * order != n
        or any((first[orbits[:, r]] != r).any() for r in representatives)
    ):
        raise ValueError("atoms do not split into equal translation orbits")
    members = orbits[:, representatives]  # (order, n_primitive)
    delta = new_frac[members] - new_frac[representatives][None]
    delta -= np.round(delta)
    positions = new_frac[representatives] + delta.mean(axis=0)
    return primitive, positions, numbers[representatives]


def _lll_basis(lattice: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same crystal on an LLL-reduced basis of its lattice (pymatgen's LLL, delta 0.75).

    The new basis is an exact integer combination of the old one, so fractional coordinates
    are mapped by an integer matrix and lose no precision however skewed the old basis was.
    """
    from pymatgen.core import Lattice

    reduced = Lattice(lattice).get_lll_reduced_lattice().matrix
    change = np.rint(reduced @ np.linalg.inv(lattice))  # new rows = change @ old rows
    if round(abs(np.linalg.det(change))) != 1:  # pragma: no cover - LLL keeps the lattice
        return lattice, frac
    return change @ lattice, frac @ np.linalg.inv(change)


def _canonical_cell(
    lattice: np.ndarray,
    frac: np.ndarray,
    numbers: np.ndarray,
    symprec: float,
    index: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import spglib

    if _min_height(lattice) <= 4 * symprec:
        # So skewed that a rounded fractional offset can miss the nearest image within
        # 2 * symprec (the translation search relies on it): change to a reduced basis first.
        lattice, frac = _lll_basis(lattice, frac)
    try:
        lattice, frac, numbers = _primitive_by_translations(lattice, frac, numbers, symprec)
    except ValueError:
        # spglib's answer near symprec depends on the order of the atoms: give it a canonical
        # one (species, then wrapped fractional coordinates), so the site order cannot matter.
        wrapped = frac - np.floor(frac)
        order = np.lexsort((wrapped[:, 2], wrapped[:, 1], wrapped[:, 0], numbers))
        found = spglib.find_primitive((lattice, wrapped[order], numbers[order]), symprec=symprec)
        if found is not None:
            lattice, frac, numbers = (np.asarray(a) for a in found)
    reduced = spglib.niggli_reduce(lattice, eps=1e-5)
    if reduced is None:
        # spglib gives up on very skewed cells: LLL first brings them close to reduced.
        lattice, frac = _lll_basis(lattice, frac)
        reduced = spglib.niggli_reduce(lattice, eps=1e-5)
    if reduced is None:
        raise InvalidStructureError(
            f"structure{_where(index)}: its lattice could not be Niggli-reduced (cell lengths "
            f"{np.round(np.linalg.norm(lattice, axis=1), 3).tolist()} Å); give it on a less "
            "skewed basis, e.g. pymatgen's structure.get_reduced_structure()"
        )
    reduced = np.asarray(reduced, dtype=np.float64)
    frac = frac @ lattice @ np.linalg.inv(reduced)
    lattice = reduced
    frac = frac - np.floor(frac + 1e-9)
    order = np.lexsort((frac[:, 2], frac[:, 1], frac[:, 0], numbers))
    return lattice, frac[order], numbers[order].astype(np.int64)


def _minimum_image_distances(
    super_frac: np.ndarray, n_sites: int, super_lattice: np.ndarray
) -> np.ndarray:
    """(P, N) minimum-image distances from the first ``n_sites`` atoms to all of them (Å).

    Each offset is rounded to its nearest fractional image ``c`` (Cartesian), then the
    shortest of ``c + v`` over the 27 image vectors ``v`` is taken, as ``|c|^2 + min_v (2 c.v +
    |v|^2)`` (one matrix product per block). Rows are processed in blocks of about a million
    (row, atom, image) triples, so memory stays bounded for very large cells.
    """
    n_atoms = len(super_frac)
    image_cart = _IMAGES @ super_lattice  # (27, 3)
    image_sq = np.einsum("ik,ik->i", image_cart, image_cart)
    out = np.empty((n_sites, n_atoms))
    step = max(1, 1_000_000 // (n_atoms * len(_IMAGES)))
    for start in range(0, n_sites, step):
        stop = min(start + step, n_sites)
        delta = super_frac[None, :, :] - super_frac[start:stop, None, :]  # (p, N, 3)
        delta -= np.round(delta)
        cart = delta @ super_lattice
        squared = cart @ (2 * image_cart.T)  # (p, N, 27)
        squared += image_sq
        best = squared.min(axis=2)
        best += np.einsum("pnk,pnk->pn", cart, cart)
        out[start:stop] = np.sqrt(np.maximum(best, 0.0))
    return out


def build_inputs(
    structure,
    *,
    max_atoms: int = 50,
    symprec: float = 0.01,
    index: int | None = None,
    disorder: str = "error",
) -> CrystalInputs:
    """Turn one ordered, periodic structure into :class:`CrystalInputs`.

    Parameters
    ----------
    structure : Structure, or any form :func:`to_structure` accepts
        An ordered crystal structure (CIF text, a path, a structure dict, ASE ``Atoms``, ...).
    max_atoms : int, default=50
        Upper bound on the number of supercell atoms (the paper's N).
    symprec : float, default=0.01
        Tolerance (Å) of the primitive-cell search: a lattice translation is kept iff every atom
        lies within ``symprec`` of a translated atom of its species (after a least-squares fit of
        the translation), whatever the order of the sites; also passed to spglib's fallback.
    index : int, optional
        Position of the structure in the caller's input, used in error messages.
    disorder : {"error", "majority"}, default="error"
        Policy for sites with partial occupancies: raise :class:`InvalidStructureError`, or
        keep each site's majority species (ties go to the lowest atomic number; vacancies are
        ignored, so a partly empty site becomes a full atom of its majority species).

    Returns
    -------
    CrystalInputs

    Raises
    ------
    TypeError
        If ``structure`` cannot hold a crystal (see :func:`to_structure`).
    InvalidStructureError
        For a value that does not read as a crystal (see :func:`to_structure`), disordered
        structures (with ``disorder="error"``), non-finite coordinates, degenerate lattices, a
        lattice not periodic along all three axes, overlapping atoms (closer than 0.5 Å, also to
        an atom's own periodic image) and a lattice that cannot be Niggli-reduced.
    dimfeat.elements.UnsupportedElementError
        For elements beyond Lr (Z > 103) and dummy species, naming them and ``index``.
    """
    lattice, frac, numbers = _spglib_cell(structure, index, disorder)
    return _inputs_from_cell(lattice, frac, numbers, max_atoms, symprec, index)


def _inputs_from_cell(
    lattice: np.ndarray,
    frac: np.ndarray,
    numbers: np.ndarray,
    max_atoms: int,
    symprec: float,
    index: int | None,
) -> CrystalInputs:
    """:func:`build_inputs` after the structure has been read into arrays."""
    check_atomic_numbers(numbers, index=index)
    lattice, frac, numbers = _canonical_cell(lattice, frac, numbers, symprec, index)
    n_sites = len(numbers)
    where = _where(index)
    shortest = float(np.linalg.norm(_IMAGES @ lattice, axis=1)[_IMAGES.any(axis=1)].min())
    if shortest < MIN_DISTANCE:  # the cell is Niggli-reduced: its shortest vector is a row
        raise InvalidStructureError(
            f"overlapping atoms in structure{where}: every atom is {shortest:.3f} Å from its own "
            f"periodic image (a lattice vector shorter than the minimum {MIN_DISTANCE} Å); check "
            "the cell's units and lengths"
        )
    greedy = supercell_repeats(lattice, n_sites, max_atoms)
    candidates = _equivalent_repeats(lattice, greedy)
    repeats, distances, best = None, None, None
    bound = 1.0 + float(np.linalg.norm(lattice, axis=1) @ np.asarray(greedy))  # > any distance
    for candidate in candidates:
        grid = np.indices(candidate).reshape(3, -1).T  # image offsets, (0, 0, 0) first
        # Image (0, 0, 0) comes first, so the first n_sites atoms are the unique sites.
        found_frac = ((frac[None, :, :] + grid[:, None, :]) / candidate).reshape(-1, 3)
        found = _minimum_image_distances(found_frac, n_sites, lattice * candidate[:, None])
        if len(candidates) == 1:
            repeats, distances = candidate, found
            break
        key = _distance_key(found, numbers, bound)
        if best is None or _precedes(key, best):
            repeats, distances, best = candidate, found, key
    n_images = int(np.prod(repeats))
    species = np.tile(numbers, n_images)
    atom_site = np.tile(np.arange(n_sites), n_images)

    off_diagonal = distances.copy()
    off_diagonal[np.arange(n_sites), np.arange(n_sites)] = np.inf
    closest = float(off_diagonal.min()) if off_diagonal.size > n_sites else np.inf
    if closest < MIN_DISTANCE:
        raise InvalidStructureError(
            f"overlapping atoms in structure{where}: two atoms are {closest:.3f} Å apart "
            f"(minimum {MIN_DISTANCE} Å)"
        )
    return CrystalInputs(
        species=species.astype(np.int16),
        atom_site=atom_site.astype(np.int16),
        distances=distances.astype(np.float32),
    )


def equivalent_sites(
    crystal: CrystalInputs, resolution: float = SITE_MERGE_RESOLUTION
) -> tuple[np.ndarray, np.ndarray]:
    """Group the sites of a crystal whose environments are the same.

    Two sites are equivalent when they have the same species and see the same multiset of
    (species, distance) over the supercell atoms, distances compared on a grid of
    ``resolution`` Å. Equivalent sites have the same local environment, so the encoder needs
    only one of them, counted as many times as there are (sites related by symmetry are
    equivalent; this is how a symmetric crystal is encoded at a fraction of its cost).

    Parameters
    ----------
    crystal : CrystalInputs
    resolution : float, default=SITE_MERGE_RESOLUTION
        Distance grid (Å). Values that fall on either side of a grid line are not merged, so
        merging can only miss an equivalence, never invent one wider than ``resolution``.

    Returns
    -------
    representatives : ndarray of int, ascending
        The first site of each group.
    counts : ndarray of int
        Sites in each group (they sum to ``crystal.n_sites``).
    """
    n_sites = crystal.n_sites
    if n_sites == 1:
        return np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64)
    # one sortable code per (species, distance on the grid): atomic numbers are below 128
    codes = np.rint(crystal.distances.astype(np.float64) / resolution).astype(np.int64)
    codes *= 128
    codes += crystal.species
    codes.sort(axis=1)
    groups: dict[tuple[int, bytes], list[int]] = {}  # key -> [first site, count]
    site_species = crystal.species[:n_sites].tolist()
    for site, (species, row) in enumerate(zip(site_species, codes, strict=True)):
        group = groups.setdefault((species, row.tobytes()), [site, 0])
        group[1] += 1
    found = np.array(list(groups.values()), dtype=np.int64)  # in order of first site
    return found[:, 0], found[:, 1]


@dataclass
class Batch:
    """Crystals batched for the encoder: ragged over unique sites, padded over atoms.

    Each row is one unique site; ``M`` is the largest number of supercell atoms in the batch.

    Attributes
    ----------
    site_species : LongTensor of shape (S,)
        Atomic number of each unique site.
    neighbour_species : LongTensor of shape (S, M)
        Atomic numbers of the supercell atoms each site attends to (0 = padding).
    neighbour_site : LongTensor of shape (S, M)
        Index, within its crystal, of the unique site each supercell atom is an image of.
    distances : FloatTensor of shape (S, M)
        Minimum-image distances (Å); 0 at padding.
    mask : BoolTensor of shape (S, M)
        True for real atoms, False for padding.
    crystal_index : LongTensor of shape (S,)
        Which crystal of the batch each site belongs to.
    site_offset : LongTensor of shape (B,)
        Row of each crystal's first site.
    n_sites : LongTensor of shape (B,)
        Rows (unique sites) per crystal.
    site_weight : FloatTensor of shape (S,), optional
        How many sites of its crystal each row stands for, when :func:`collate` merged
        equivalent sites; ``None`` means one each. Pooling is the weighted mean.
    """

    site_species: torch.Tensor
    neighbour_species: torch.Tensor
    neighbour_site: torch.Tensor
    distances: torch.Tensor
    mask: torch.Tensor
    crystal_index: torch.Tensor
    site_offset: torch.Tensor
    n_sites: torch.Tensor
    site_weight: torch.Tensor | None = None

    @property
    def n_crystals(self) -> int:
        """Number of crystals in the batch."""
        return int(self.n_sites.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device`` (non-blocking where possible)."""
        return Batch(
            **{
                k: None if v is None else v.to(device, non_blocking=True)
                for k, v in self.__dict__.items()
            }
        )


def collate(
    crystals: list[CrystalInputs],
    sites: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Batch:
    """Batch a list of :class:`CrystalInputs` into a :class:`Batch` of CPU tensors.

    Parameters
    ----------
    crystals : list of CrystalInputs
    sites : list of (representatives, counts), optional
        One :func:`equivalent_sites` result per crystal: only the representative sites become
        rows, each weighted by its count (``Batch.site_weight``). By default every site is a
        row (what training needs: the DIM objective samples sites and their neighbours).
    """
    if not crystals:
        raise ValueError("cannot collate an empty list of crystals")
    if sites is not None and len(sites) != len(crystals):
        raise ValueError(f"got {len(sites)} site groupings for {len(crystals)} crystals")
    # rows of each crystal: all its sites (a view, as training needs) or the representatives
    picks = [slice(c.n_sites) for c in crystals] if sites is None else [r for r, _ in sites]
    n_sites = np.array(
        [c.n_sites for c in crystals] if sites is None else [len(r) for r, _ in sites]
    )
    n_atoms = np.array([c.n_atoms for c in crystals])
    width = int(n_atoms.max())
    total = int(n_sites.sum())
    species = np.zeros((total, width), dtype=np.int64)
    neighbour_site = np.zeros((total, width), dtype=np.int64)
    distances = np.zeros((total, width), dtype=np.float32)
    mask = np.zeros((total, width), dtype=bool)
    row = 0
    for c, pick, p in zip(crystals, picks, n_sites, strict=True):  # block copies, no site loop
        n = c.n_atoms
        species[row : row + p, :n] = c.species
        neighbour_site[row : row + p, :n] = c.atom_site
        distances[row : row + p, :n] = c.distances[pick]
        mask[row : row + p, :n] = True
        row += p
    offsets = np.concatenate([[0], np.cumsum(n_sites)[:-1]])
    weight = None
    if sites is not None:
        weight = torch.from_numpy(np.concatenate([w for _, w in sites]).astype(np.float32))
    return Batch(
        site_species=torch.from_numpy(
            np.concatenate([c.species[pick] for c, pick in zip(crystals, picks, strict=True)])
        ).long(),
        neighbour_species=torch.from_numpy(species),
        neighbour_site=torch.from_numpy(neighbour_site),
        distances=torch.from_numpy(distances),
        mask=torch.from_numpy(mask),
        crystal_index=torch.from_numpy(np.repeat(np.arange(len(crystals)), n_sites)),
        site_offset=torch.from_numpy(offsets),
        n_sites=torch.from_numpy(n_sites),
        site_weight=weight,
    )


def batches_by_site_budget(
    crystals: list[CrystalInputs], budget: int, order: np.ndarray | None = None
) -> list[np.ndarray]:
    """Split crystals into consecutive groups holding at most ``budget`` unique sites.

    A crystal larger than the budget gets a group of its own.

    Parameters
    ----------
    crystals : list of CrystalInputs
    budget : int
        Maximum unique sites per group (the paper used 1200).
    order : ndarray of int, optional
        Order in which to visit the crystals (e.g. a shuffled permutation); default in order.

    Returns
    -------
    groups : list of ndarray of int
        Indices into ``crystals``.
    """
    if order is None:
        order = np.arange(len(crystals))
    sizes = np.array([crystals[i].n_sites for i in order])
    groups: list[np.ndarray] = []
    start, used = 0, 0
    for k, size in enumerate(sizes):
        if used and used + size > budget:
            groups.append(order[start:k])
            start, used = k, 0
        used += size
    if start < len(order):
        groups.append(order[start:])
    return groups


def save_inputs(path: str | Path, crystals: list[CrystalInputs], **metadata: np.ndarray) -> None:
    """Save crystals' inputs to one compressed ``.npz`` file (no pickles).

    Extra keyword arrays (e.g. ``material_id``) are stored beside them.
    """
    n_sites = np.array([c.n_sites for c in crystals], dtype=np.int64)
    n_atoms = np.array([c.n_atoms for c in crystals], dtype=np.int64)
    np.savez_compressed(
        path,
        n_sites=n_sites,
        n_atoms=n_atoms,
        species=np.concatenate([c.species for c in crystals]),
        atom_site=np.concatenate([c.atom_site for c in crystals]),
        distances=np.concatenate([c.distances.ravel() for c in crystals]),
        **metadata,
    )


def load_inputs(path: str | Path) -> tuple[list[CrystalInputs], dict[str, np.ndarray]]:
    """Inverse of :func:`save_inputs`: the crystals and the extra arrays."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    n_sites, n_atoms = arrays.pop("n_sites"), arrays.pop("n_atoms")
    species, atom_site = arrays.pop("species"), arrays.pop("atom_site")
    distances = arrays.pop("distances")
    atom_end = np.cumsum(n_atoms)
    dist_end = np.cumsum(n_sites * n_atoms)
    crystals = [
        CrystalInputs(
            species=species[a_end - n : a_end],
            atom_site=atom_site[a_end - n : a_end],
            distances=distances[d_end - p * n : d_end].reshape(p, n),
        )
        for p, n, a_end, d_end in zip(n_sites, n_atoms, atom_end, dist_end, strict=True)
    ]
    return crystals, arrays


#: What :func:`to_structure` accepts, for messages.
STRUCTURE_KINDS = (
    "a pymatgen Structure or IStructure, a Structure.as_dict() dict (or its JSON text), CIF or "
    "POSCAR text, the path of a structure file (str or pathlib.Path), or an ASE Atoms"
)


def _where(index: int | None) -> str:
    return "" if index is None else f" (structure {index})"


def _short(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _from_text(text: str, index: int | None, source: str) -> Any:
    """A Structure from CIF, POSCAR or JSON text (``source`` says where the text came from)."""
    from pymatgen.core import Structure

    stripped = text.lstrip()
    if stripped.startswith("{"):
        import json

        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise InvalidStructureError(
                f"could not read {source}{_where(index)} as JSON: {exc}"
            ) from exc
        return _from_dict(data, index)
    fmt = "cif" if _CIF_BLOCK.search(text) else "poscar"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns on rounded occupancies etc.
            return Structure.from_str(text, fmt=fmt)
    except Exception as exc:
        hint = "" if fmt == "cif" else " (it has no CIF 'data_' line, so it was read as POSCAR)"
        raise InvalidStructureError(
            f"could not parse {source}{_where(index)} as {fmt.upper()}{hint}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _from_dict(data: Any, index: int | None) -> Any:
    from pymatgen.core import Structure

    if not isinstance(data, dict):
        raise TypeError(
            f"expected a crystal structure{_where(index)}, got JSON holding a "
            f"{type(data).__name__}; expected {STRUCTURE_KINDS}"
        )
    kind = data.get("@class")
    molecule_like = kind is None and "sites" in data and "lattice" not in data
    if kind in {"Molecule", "IMolecule"} or molecule_like:
        raise TypeError(
            f"expected a crystal structure{_where(index)}, got a Molecule dict: periodic "
            "crystals only"
        )
    if kind not in {None, "Structure", "IStructure"} or not {"lattice", "sites"} <= set(data):
        found = f"@class {kind!r}" if kind else f"keys {sorted(data)[:6]}"
        raise InvalidStructureError(
            f"the dict{_where(index)} is not a pymatgen structure dict (as written by "
            f"Structure.as_dict(): '@class': 'Structure', 'lattice', 'sites'); it has {found}"
        )
    try:
        return Structure.from_dict(data)
    except Exception as exc:
        raise InvalidStructureError(
            f"could not read the structure dict{_where(index)}: {type(exc).__name__}: {exc}"
        ) from exc


def _from_file(path: Path, index: int | None) -> Any:
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns on rounded occupancies etc.
            return Structure.from_file(path)
    except ValueError as exc:
        if "nrecognized" not in str(exc):  # pymatgen: "Unrecognized extension in filename"
            raise InvalidStructureError(
                f"could not read a structure from the file {str(path)!r}{_where(index)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    except Exception as exc:
        raise InvalidStructureError(
            f"could not read a structure from the file {str(path)!r}{_where(index)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    # A name pymatgen does not know (e.g. "NaCl.txt"): tell the format from the text.
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidStructureError(
            f"the file {str(path)!r}{_where(index)} is neither a format pymatgen recognises by "
            "its name nor CIF, POSCAR or JSON text"
        ) from exc
    return _from_text(text, index, f"the file {str(path)!r}")


def _from_ase(atoms: Any, index: int | None) -> Any:
    from pymatgen.io.ase import AseAtomsAdaptor

    pbc = np.asarray(atoms.pbc, dtype=bool)
    volume = abs(float(np.linalg.det(np.asarray(atoms.cell, dtype=np.float64))))
    if not pbc.all() or not volume > 1e-3:
        raise InvalidStructureError(
            f"the ASE Atoms{_where(index)} ({atoms.get_chemical_formula()}) is not a periodic "
            f"crystal (pbc={pbc.tolist()}, cell volume {volume:.3g} Å³): periodic crystals only; "
            "for a crystal, give it a cell and set atoms.pbc = True"
        )
    return AseAtomsAdaptor.get_structure(atoms)


def _is_ase_atoms(obj: Any) -> bool:
    import sys

    if "ase" not in sys.modules:  # whoever holds an Atoms has imported ase
        return False
    from ase import Atoms

    return isinstance(obj, Atoms)


_CIF_BLOCK = re.compile(r"^[ \t]*data_\S", re.MULTILINE | re.IGNORECASE)


def _reader(obj: Any, index: int | None) -> Callable[[], Any]:
    """How to read ``obj`` as a Structure; raises now for what can never be one (cheap).

    Nothing is parsed here: the returned callable does the parsing.
    """
    from pymatgen.core import IMolecule, IStructure, Structure

    if isinstance(obj, Structure | IStructure):
        _refuse_non_periodic(obj, index)
        return (lambda: obj) if isinstance(obj, Structure) else lambda: Structure.from_sites(obj)
    if isinstance(obj, IMolecule):
        raise TypeError(
            f"expected a crystal structure{_where(index)}, got {type(obj).__name__}: periodic "
            "crystals only"
        )
    if isinstance(obj, dict):
        return lambda: _from_dict(obj, index)
    if isinstance(obj, bytes):
        try:
            obj = obj.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidStructureError(
                f"the bytes{_where(index)} are not UTF-8 text (CIF, POSCAR or JSON)"
            ) from exc
    if isinstance(obj, str) and ("\n" in obj or "\r" in obj or obj.lstrip().startswith("{")):
        # Several lines (CIF, POSCAR) or a JSON object: text. A file name has neither.
        text = obj
        return lambda: _from_text(text, index, "the text")
    if isinstance(obj, str | os.PathLike):
        path = Path(os.fsdecode(obj)).expanduser()
        if path.is_file():
            return lambda: _from_file(path, index)
        if path.is_dir():
            raise InvalidStructureError(
                f"{str(obj)!r}{_where(index)} is a folder, not a structure file: pass the files "
                "in it, or stream the whole folder with dimfeat.streaming.featurize_to_file"
            )
        if not isinstance(obj, str):
            raise InvalidStructureError(f"no such file: {str(path)!r}{_where(index)}")
        raise InvalidStructureError(
            f"no such file: the str {_short(obj)}{_where(index)} has a single line, so it is "
            "read as the path of a structure file, and nothing exists there (CIF and POSCAR "
            "text have several lines)"
        )
    if _is_ase_atoms(obj):
        return lambda: _from_ase(obj, index)
    raise TypeError(
        f"expected a crystal structure{_where(index)}, got {type(obj).__name__}; expected "
        f"{STRUCTURE_KINDS}"
    )


def to_structure(obj: Any, index: int | None = None) -> Structure:
    """Read one crystal from any of the forms a user may hold it in.

    Parameters
    ----------
    obj : Structure, IStructure, dict, str, bytes, path or ase.Atoms
        - a pymatgen ``Structure`` (returned as is) or ``IStructure`` (copied to a
          ``Structure``);
        - a dict written by ``Structure.as_dict()`` (how structures come out of JSON,
          MPRester and matminer's loaders), or its JSON text;
        - CIF text (it has a ``data_`` line) or POSCAR text (several lines, no ``data_``);
        - the path of a structure file, as a ``str`` of one line or a ``pathlib.Path``: any
          format pymatgen's ``Structure.from_file`` recognises by name (``*.cif``,
          ``POSCAR*``, ``*.vasp``, ``*.json``, ...), else CIF, POSCAR or JSON read from the text;
        - an ASE ``Atoms`` with a cell and ``pbc=True`` (needs ``ase``: ``pip install
          dimfeat[ase]``).
    index : int, optional
        Position of ``obj`` in the caller's input, named in error messages.

    Returns
    -------
    pymatgen.core.Structure

    Raises
    ------
    TypeError
        For an object that cannot hold a crystal (a ``Molecule``, a number, an array, ...).
    InvalidStructureError
        For a value of an accepted kind that does not give a crystal: text that parses as
        neither CIF nor POSCAR, a one-line string naming no existing file, a folder, a dict
        that is not a structure dict, non-periodic ASE ``Atoms`` or a pymatgen structure whose
        lattice ``pbc`` is not all true (a molecule in a box, a slab). The message names the
        position and the reason.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> cscl = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> to_structure(cscl.to(fmt="cif")) == cscl
    True
    >>> to_structure(cscl.as_dict()) == cscl
    True
    """
    structure = _reader(obj, index)()
    _refuse_non_periodic(structure, index)
    return structure


def _refuse_non_periodic(structure: Any, index: int | None) -> None:
    """Raise for a structure whose lattice is not periodic along all three axes (a molecule in
    a box, a slab): its vector would be that of a 3-D crystal."""
    pbc = tuple(bool(p) for p in getattr(structure.lattice, "pbc", (True, True, True)))
    if not all(pbc):
        raise InvalidStructureError(
            f"the {type(structure).__name__}{_where(index)} "
            f"({structure.composition.reduced_formula}) is not periodic in all three directions "
            f"(lattice pbc={list(pbc)}): periodic crystals only; for a crystal, build its "
            "Lattice with pbc=(True, True, True)"
        )


def as_structure_list(X: Any) -> list:
    """The items of a list, tuple, 1-D array or pandas Series, or of a one-column DataFrame.

    The items are not read here (:func:`to_structure` reads each); this only unpacks the
    container and refuses what is not a sequence of structures.

    Parameters
    ----------
    X : sequence, ndarray of shape (n,) or (n, 1), pandas Series or one-column DataFrame
        Structures in any form :func:`to_structure` accepts.

    Returns
    -------
    list

    Raises
    ------
    TypeError
        For a single structure, text or path (wrap it in a list), a 2-D array of several
        columns (numbers are not structures), an array of sites (structures that
        ``np.array(structures, dtype=object)`` split) or anything that is not a sequence.
    ValueError
        For a DataFrame of several columns.
    """
    try:
        import pandas as pd

        if isinstance(X, pd.DataFrame):
            if X.shape[1] != 1:
                raise ValueError(
                    "pass a sequence of structures or a one-column DataFrame, got a DataFrame "
                    f"with columns {list(X.columns)}"
                )
            X = X.iloc[:, 0]
        if isinstance(X, pd.Series):
            return X.tolist()
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    from pymatgen.core import IStructure, SiteCollection

    if isinstance(X, np.ndarray):
        _refuse_array_of_sites(X)
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise TypeError(
                "expected a sequence of structures (pymatgen Structure, CIF text, paths, ...), "
                f"got a {X.ndim}-D array of shape {X.shape} and dtype {X.dtype}; numbers are not "
                "structures"
            )
        return X.tolist()
    single = isinstance(X, SiteCollection | IStructure | str | bytes | os.PathLike | dict)
    if single or _is_ase_atoms(X):
        raise TypeError(
            f"expected a sequence of structures; wrap a single {type(X).__name__} in a list"
        )
    if not isinstance(X, Sequence):
        raise TypeError(
            "expected a sequence (list, tuple, 1-D array, pandas Series) of structures "
            f"(pymatgen Structure, CIF text, paths, ...), got {type(X).__name__}"
        )
    return list(X)


def _refuse_array_of_sites(X: np.ndarray) -> None:
    """Refuse a NumPy array of sites or atoms: structures that NumPy split into their sites.

    ``np.array(structures, dtype=object)`` of structures with the same number of sites is a
    2-D array of ``PeriodicSite`` (of ASE ``Atom`` for ``Atoms``), not an array of structures.
    """
    if X.dtype != object or X.ndim < 2 or not X.size:
        return
    item = X.flat[0]
    from pymatgen.core import Site

    if isinstance(item, Site):
        items, whole = f"pymatgen {type(item).__name__} objects", "structures"
    elif type(item).__name__ == "Atom" and type(item).__module__.startswith("ase."):
        items, whole = "ASE Atom objects", "ASE Atoms objects"
    else:
        return
    raise TypeError(
        f"expected a sequence of structures, got a {X.ndim}-D NumPy array of shape {X.shape} "
        f"whose items are {items}: np.array(structures, dtype=object) splits {whole} that all "
        "have the same number of sites into their sites. Pass the list itself, a pandas Series "
        "(pd.Series(structures)), or a 1-D array filled item by item: "
        "a = np.empty(len(structures), dtype=object); a[:] = structures"
    )


def check_structures(X: Any) -> list:
    """Unpack ``X`` (:func:`as_structure_list`) and check each item's kind without parsing it.

    Cheap enough for ``fit`` when nothing is learned from ``X``: types are checked and paths
    must exist; text is parsed only later, by :func:`to_structure`.

    Parameters
    ----------
    X : sequence of structures in any form :func:`to_structure` accepts

    Returns
    -------
    list
        The items, not converted.

    Raises
    ------
    TypeError, InvalidStructureError
        For the first item that can never be read as a crystal, naming its position.
    """
    items = as_structure_list(X)
    for index, item in enumerate(items):
        _reader(item, index)
    return items


@dataclass(frozen=True)
class _Unreadable:
    """A structure that failed to read in the parent: the error and its traceback text."""

    error: BaseException
    traceback: str


def _read_for_workers(item: Any, position: int, disorder: str) -> Any:
    """What a worker process receives for one item of :func:`build_many`.

    A pymatgen ``Structure`` becomes its arrays (a :class:`_Cell`, or an :class:`_Unreadable`
    holding the error): pickling a ``Structure`` there and back costs more than building its
    inputs, its arrays next to nothing. Anything else
    (CIF text, paths, dicts, ASE ``Atoms``) is sent as it is and read in the worker.
    """
    from pymatgen.core import Structure

    if not isinstance(item, Structure):
        return item
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="pymatgen")
            return _read_cell(item, position, disorder)
    except Exception as exc:
        return _Unreadable(exc, traceback.format_exc())


def _build_chunk(
    structures: list,
    positions: Sequence[int],
    max_atoms: int,
    symprec: float,
    ignore_errors: bool,
    disorder: str = "error",
    bar: Any = None,
    parent_pid: int | None = None,
) -> tuple[list[CrystalInputs | None], dict[int, str], int]:
    """Inputs, errors by index in ``structures`` and the number of disordered structures that
    were ordered; messages name ``positions[k]`` for the k-th structure. Items may also be
    what :func:`_read_for_workers` makes of them."""
    if parent_pid is not None:  # in a joblib worker: do not outlive the parent
        from dimfeat._workers import exit_with_parent

        exit_with_parent(parent_pid)
    inputs: list[CrystalInputs | None] = []
    errors: dict[int, str] = {}
    n_ordered = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pymatgen")
        for k, item in enumerate(structures):
            try:
                if isinstance(item, _Unreadable):
                    if not ignore_errors:
                        raise item.error
                    inputs.append(None)
                    errors[k] = item.traceback
                else:  # read here unless the parent did (the site scan gives the order flag)
                    cell = (
                        item
                        if isinstance(item, _Cell)
                        else _read_cell(item, positions[k], disorder)
                    )
                    inputs.append(
                        _inputs_from_cell(
                            cell.lattice, cell.frac, cell.numbers, max_atoms, symprec, positions[k]
                        )
                    )
                    n_ordered += not cell.ordered
            except Exception:
                if not ignore_errors:
                    raise
                inputs.append(None)
                errors[k] = traceback.format_exc()
            if bar is not None:
                bar.update(1)
    return inputs, errors, n_ordered


def build_many(
    structures: Sequence,
    *,
    max_atoms: int = 50,
    symprec: float = 0.01,
    n_jobs: int = 1,
    ignore_errors: bool = False,
    disorder: str = "error",
    progress: bool | dict = False,
    positions: Sequence[int] | None = None,
) -> tuple[list[CrystalInputs | None], dict[int, str]]:
    """:func:`build_inputs` for many structures, in chunks on ``n_jobs`` processes (joblib).

    Parameters
    ----------
    structures : sequence of Structure, or of any form :func:`to_structure` accepts
        Each item is read by :func:`to_structure` (in the worker processes when ``n_jobs``
        is not 1), so CIF text and paths are parsed in parallel too.
    max_atoms, symprec, disorder : see :func:`build_inputs`
        With ``disorder="majority"``, one :class:`UserWarning` gives the number of disordered
        structures ordered by majority species.
    n_jobs : int, default=1
        Worker processes (-1: all cores); inputs of 64 structures or fewer stay in-process.
        Workers exit within a second when this process dies (even by ``kill -9``).
    ignore_errors : bool, default=False
        Put ``None`` for a structure that fails, with its traceback in ``errors``, instead of
        raising.
    progress : bool or dict, default=False
        Show a tqdm progress bar on stderr (a dict: keyword arguments for ``tqdm``).
    positions : sequence of int, optional
        The position of each structure that error messages name (default: its index in
        ``structures``), e.g. its row in a caller's larger input when only some rows are built.

    Returns
    -------
    inputs : list of CrystalInputs or None
    errors : dict of int to str
        Traceback text by index in ``structures``, for the structures that failed.
    """
    structures = list(structures)
    positions = list(range(len(structures)) if positions is None else positions)
    if len(positions) != len(structures):
        raise ValueError(f"{len(positions)} positions for {len(structures)} structures")
    bar = progress_bar(progress, len(structures), "model inputs")
    try:
        if n_jobs == 1 or len(structures) <= 64:
            inputs, errors, n_ordered = _build_chunk(
                structures, positions, max_atoms, symprec, ignore_errors, disorder, bar
            )
        else:
            from joblib import Parallel, delayed

            n = len(structures)
            bounds = [b for b in np.array_split(np.arange(n), max(1, n // 256)) if len(b)]
            # bar=None in the workers; each exits when this process dies
            settings = (max_atoms, symprec, ignore_errors, disorder, None, os.getpid())
            # structures are read into arrays here, chunk by chunk as joblib dispatches them
            tasks = (
                delayed(_build_chunk)(
                    [_read_for_workers(structures[i], positions[i], disorder) for i in b],
                    [positions[i] for i in b],
                    *settings,
                )
                for b in bounds
            )
            inputs, errors, n_ordered = [], {}, 0
            results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
            for b, (part, part_errors, part_ordered) in zip(bounds, results, strict=True):
                inputs += part
                # chunk errors are keyed within the chunk: shift them to the index in structures
                errors.update({int(b[0]) + k: v for k, v in part_errors.items()})
                n_ordered += part_ordered
                if bar is not None:
                    bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    if n_ordered:
        warnings.warn(
            f"{n_ordered} disordered structure(s) were ordered by keeping each site's "
            "majority species (disorder='majority')",
            UserWarning,
            stacklevel=2,
        )
    return inputs, errors


def progress_bar(progress: bool | dict, total: int, desc: str) -> Any:
    """A tqdm bar on stderr when ``progress`` is truthy (a dict: tqdm keyword arguments), else
    ``None``."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    options = {"desc": desc, "unit": "structure", "total": total}
    if isinstance(progress, dict):
        options.update(progress)
    return tqdm(**options)


def structure_cell(
    structure: Any, index: int | None = None, disorder: str = "error"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first stage of :func:`build_inputs`: a checked structure as arrays.

    Parameters
    ----------
    structure : any form :func:`to_structure` accepts
    index : int, optional
        Position named in error messages.
    disorder : {"error", "majority"}, default="error"

    Returns
    -------
    lattice : ndarray of shape (3, 3)
    frac : ndarray of shape (n, 3)
    numbers : ndarray of shape (n,)
    """
    return _spglib_cell(structure, index, disorder)


def canonical_cell(
    lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, symprec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The second stage of :func:`build_inputs`: the Niggli-reduced primitive cell.

    Parameters
    ----------
    lattice, frac, numbers : ndarray
        As :func:`structure_cell` returns them.
    symprec : float
        Tolerance (Å) of the primitive-cell search.

    Returns
    -------
    lattice, frac, numbers : ndarray
    """
    return _canonical_cell(lattice, frac, numbers, symprec)
