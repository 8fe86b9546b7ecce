"""The canonical cell of a crystal, its supercell and the minimum-image distances.

The pipeline (SPEC section 1), from the arrays of :func:`dimfeat.inputs.structures.read_cell`
to :class:`~dimfeat.inputs.batch.CrystalInputs` (:func:`inputs_from_cell`):

1. **Canonical primitive cell** (:func:`canonical_cell`). The primitive cell is found from the
   pure translations that map the crystal onto itself (spglib's ``find_primitive`` is the
   fallback when they do not form a consistent group), then Niggli-reduced with spglib. A
   translation is accepted iff, fitted to the atom pairing it induces, it brings every atom
   within ``symprec`` Å of an atom of the same species (see :func:`_primitive_by_translations`);
   each primitive-cell atom sits at the mean of the atoms the translations map onto it.
   Positions are not otherwise symmetrised. spglib's fallback gets the atoms in a canonical
   order; a very skewed cell is LLL-reduced first. Site order, rotation, translation and the
   choice of primitive/conventional/supercell of the input do not change this cell, including
   for distortions close to ``symprec``. The whole stage costs about 0.11 ms of CPU per sample
   structure (``benchmarks/perf/input_stages.py``, stage ``cell_reduction``; the
   order-independent fit added about 0.04 ms, measured on 400 sample structures). Large cells
   pair atoms through a k-d tree after a screen on 12 atoms (:func:`_match_tree`): about
   ``n log n`` for ``n`` atoms when few candidates are translations, ``n^2 log n`` at worst
   (every candidate a translation); 0.03 s for a 2,000-atom cell with no translation.
2. **Roughly cubic supercell of at most** ``max_atoms`` **atoms** (:func:`supercell_repeats`).
   Starting from repeats ``(1, 1, 1)`` of the Niggli-reduced cell, the axis with the shortest
   repeat length is grown by one while ``a*b*c*P <= max_atoms`` (ties go to the first axis);
   growth stops at the first step that would exceed the limit. Uneven repeats over axes the
   metric cannot tell apart (a cubic cell: ``(3, 3, 2)``) are then chosen by the atoms, not by
   the axis labels (:func:`_equivalent_repeats`). A cell with ``P > max_atoms / 2`` atoms gets a
   single image; a cell with ``P > max_atoms`` still works (each site attends to the ``P`` atoms
   of the cell).
3. **Unique sites and interactions.** The first ``P`` supercell atoms are the primitive cell's
   sites. Each of them attends to every supercell atom (itself included, at distance 0) through
   the minimum-image distance within the supercell, found among the 27 nearest periodic images
   of the Niggli-reduced supercell (``27 P N`` work for ``P`` sites and ``N`` atoms, in blocks;
   the distances between two sites are computed once).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from dimfeat.elements import check_atomic_numbers
from dimfeat.inputs.batch import CrystalInputs
from dimfeat.inputs.structures import InvalidStructureError, at_index

__all__ = ["MIN_DISTANCE", "canonical_cell", "inputs_from_cell", "supercell_repeats"]

#: Two atoms closer than this (Å) are reported as overlapping.
MIN_DISTANCE = 0.5

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
#: The 26 image vectors other than (0, 0, 0).
_NONZERO_IMAGES = _IMAGES[_IMAGES.any(axis=1)]


def _norms(vectors: np.ndarray) -> np.ndarray:
    """The lengths along the last axis, bit for bit ``np.linalg.norm(vectors, axis=-1)`` (the
    same sum of squares and square root) without its argument checks."""
    return np.sqrt(np.add.reduce(vectors * vectors, axis=-1))


def _row_lengths(lattice: np.ndarray) -> list[float]:
    """The lengths of the rows of a 3x3 matrix, bit for bit ``np.linalg.norm(lattice, axis=1)``
    (the squares summed in order), without NumPy's per-call cost."""
    return [math.sqrt(x * x + y * y + z * z) for x, y, z in lattice.tolist()]


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
    lengths = _row_lengths(lattice)
    repeats = [1, 1, 1]
    while True:  # Python floats: the same IEEE products as NumPy, without its per-call cost
        reach = [r * length for r, length in zip(repeats, lengths, strict=True)]
        # Ties within 1e-6 (relative) go to the first axis: rounding noise (e.g. from a rotated
        # copy of the same cell) must not pick another supercell shape.
        limit = min(reach) * (1 + 1e-6)
        axis = next(k for k in range(3) if reach[k] <= limit)
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
    by the atoms, not by the labels (see :func:`inputs_from_cell`).
    """
    first = np.asarray(repeats, dtype=np.int64)
    if repeats[0] == repeats[1] == repeats[2]:
        return [first]  # even repeats: no permutation changes them
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


def _repeat(values: np.ndarray, times: int) -> np.ndarray:
    """``np.tile(values, times)`` for a 1-D array, without its per-call cost."""
    out = np.empty(times * len(values), dtype=values.dtype)
    out.reshape(times, len(values))[:] = values
    return out


def _species_blocks(numbers: np.ndarray, n_images: int) -> np.ndarray:
    """The (site, atom) species-pair block of each distance of a supercell of ``n_images``
    images (see :func:`_distance_key`); ``numbers`` are the sites' species."""
    rank = np.unique(numbers, return_inverse=True)[1]
    atoms = _repeat(rank, n_images)
    return rank[:, None] * (rank.max() + 1) + atoms[None, :]


def _distance_key(distances: np.ndarray, blocks: np.ndarray, bound: float) -> np.ndarray:
    """What the encoder sees of a supercell's distances, free of any labelling: for each pair
    of species (site, atom), the sorted distances from the sites of the first to the atoms of
    the second, one block after the other (block ``k`` shifted by ``k * bound``, ``bound`` more
    than any distance and the same for every supercell compared); ``blocks`` is
    :func:`_species_blocks` of the sites' species."""
    return np.sort(distances + blocks * bound, axis=None)


def _precedes(key: np.ndarray, other: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether ``key`` comes before ``other``, comparing in order and taking values within
    ``tol`` (Å) as equal: rounding noise (a rotated or relabelled copy) cannot decide."""
    differ = np.flatnonzero(np.abs(key - other) > tol)
    return bool(len(differ)) and bool(key[differ[0]] < other[differ[0]])


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
    volume = abs(float(np.linalg.det(lattice)))
    a, b, c = lattice.tolist()
    # |b x c|, |c x a|, |a x b| with np.cross's products and differences, in Python floats
    faces = [
        math.sqrt(x * x + y * y + z * z)
        for x, y, z in (
            (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
            for u, v in ((b, c), (c, a), (a, b))
        )
    ]
    return volume / max(faces)


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
    within = _norms(residual - shift[:, None, :]) < tol
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
    coords = np.ascontiguousarray(frac.T)
    keep = np.zeros(len(candidates), dtype=bool)
    fitted = np.empty_like(candidates)
    partners = np.empty((len(candidates), n), dtype=np.int64)
    step = max(1, 2_000_000 // (n * n))  # candidates per block: bounds memory
    for start in range(0, len(candidates), step):
        block = candidates[start : start + step]
        moved = _offsets(coords, block.T, coords)  # (3, block, n, n), coordinate-major
        moved -= np.round(moved)
        # (block, n, n, 3): x_i + t - x_j, Cartesian; one product over all rows
        offset = (moved.reshape(3, -1).T @ lattice).reshape(*moved.shape[1:], 3)
        gap = np.where(same_species[None], _norms(offset), np.inf)
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
        paired &= _norms(residual) < 2 * tol
        return (index % n).reshape(len(block), len(atoms)), residual, paired

    screen = np.arange(min(n, _SCREEN_ATOMS))
    partner, residual, paired = pair(candidates, screen)
    spread = _norms(residual[:, :, None, :] - residual[:, None, :, :])
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


def _offsets(start: np.ndarray, shifts: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``(x_i + t) - y_j`` for every shift ``t`` and atoms ``i``, ``j``, coordinate-major: shape
    (3, shifts, i, j) from ``start`` (3, i), ``shifts`` (3, shifts) and ``end`` (3, j).

    The same sums and differences as an atom-major layout, with the three coordinates outermost
    so that NumPy works on long contiguous rows.
    """
    return start[:, None, :, None] + shifts[:, :, None, None] - end[:, None, None, :]


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
    coords = np.ascontiguousarray(anchors.T)
    moved = _offsets(coords, candidates.T, coords)  # (3, candidates, m, m)
    moved -= np.round(moved)
    gap = _norms(moved.reshape(3, -1).T @ lattice)  # one product, all rows
    gap = gap.reshape(moved.shape[1:]).min(axis=2)  # (candidates, anchors)
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
    counts = Counter(numbers.tolist())
    rarest = min(counts, key=lambda z: (counts[z], z))  # ties: the lowest atomic number
    anchors = np.flatnonzero(numbers == rarest)
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


def canonical_cell(
    lattice: np.ndarray,
    frac: np.ndarray,
    numbers: np.ndarray,
    symprec: float,
    index: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The second stage of :func:`dimfeat.inputs.build_inputs`: the Niggli-reduced primitive cell.

    Parameters
    ----------
    lattice, frac, numbers : ndarray
        As :func:`dimfeat.inputs.structure_cell` returns them.
    symprec : float
        Tolerance (Å) of the primitive-cell search.
    index : int, optional
        Position named in error messages.

    Returns
    -------
    lattice, frac, numbers : ndarray
        Sites sorted by species, then by wrapped fractional coordinates.

    Raises
    ------
    InvalidStructureError
        For a lattice that cannot be Niggli-reduced.
    """
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
            f"structure{at_index(index)}: its lattice could not be Niggli-reduced (cell lengths "
            f"{np.round(np.linalg.norm(lattice, axis=1), 3).tolist()} Å); give it on a less "
            "skewed basis, e.g. pymatgen's structure.get_reduced_structure()"
        )
    reduced = np.asarray(reduced, dtype=np.float64)
    frac = frac @ lattice @ np.linalg.inv(reduced)
    lattice = reduced
    frac = frac - np.floor(frac + 1e-9)
    order = np.lexsort((frac[:, 2], frac[:, 1], frac[:, 0], numbers))
    return lattice, frac[order], numbers[order].astype(np.int64)


#: (row, atom, image) triples per block of :func:`_minimum_image_distances` (2 MB of image
#: values: large enough for few blocks, small enough to stay in cache).
_DISTANCE_BLOCK = 262_144


def _minimum_image_distances(
    super_frac: np.ndarray, n_sites: int, super_lattice: np.ndarray
) -> np.ndarray:
    """(P, N) minimum-image distances from the first ``n_sites`` atoms to all of them (Å).

    Each offset is rounded to its nearest fractional image ``c`` (Cartesian), then the
    shortest of ``c + v`` over the 27 image vectors ``v`` is taken, as ``|c|^2 + min_v (2 c.v +
    |v|^2)`` (one matrix product per block). Rows are processed in blocks of about
    :data:`_DISTANCE_BLOCK` (row, atom, image) triples, so memory stays bounded for very large
    cells and each block stays in cache.

    The offsets are laid out coordinate-major and the image values image-major, so that every
    elementwise step and the minimum over images run over long contiguous rows. Each matrix
    product entry is the same three-term dot product as in an atom-major layout, and
    ``|c|^2`` is the same ``einsum``, so the distances are bit for bit those of the atom-major
    formula (``tests/test_input_speed.py``). The offset from atom ``j`` to ``i`` is exactly minus
    that from ``i`` to ``j``, and the images come in pairs ``v``, ``-v``, so the distance from
    ``i`` to ``j`` is bit for bit that from ``j`` to ``i``: a block takes the distances to the
    sites of earlier blocks from their rows, which halves the work of a large single cell.
    """
    n_atoms = len(super_frac)
    image_cart = _IMAGES @ super_lattice  # (27, 3)
    image_sq = np.einsum("ik,ik->i", image_cart, image_cart)[:, None]
    twice = 2 * image_cart  # (27, 3), C-contiguous
    coords = np.ascontiguousarray(super_frac.T)  # (3, N)
    out = np.empty((n_sites, n_atoms))
    step = max(1, _DISTANCE_BLOCK // (n_atoms * len(_IMAGES)))
    for start in range(0, n_sites, step):
        stop = min(start + step, n_sites)
        # Atoms before ``start`` are sites of earlier blocks: their distances to this block's
        # sites are already known (the distance from i to j is bit for bit that from j to i).
        delta = coords[:, None, start:] - coords[:, start:stop, None]  # (3, p, N - start)
        delta -= np.round(delta)
        cart = delta.reshape(3, -1).T @ super_lattice  # (p (N - start), 3)
        squared = twice @ np.ascontiguousarray(cart.T)  # (27, rows): 2 c.v, image-major
        squared += image_sq
        best = squared.min(axis=0)
        best += np.einsum("nk,nk->n", cart, cart)
        np.maximum(best, 0.0, out=best)
        np.sqrt(best, out=best)
        out[start:stop, start:] = best.reshape(stop - start, n_atoms - start)
        out[start:stop, :start] = out[:start, start:stop].T
    return out


@lru_cache(maxsize=256)
def _image_grid(repeats: tuple[int, int, int]) -> np.ndarray:
    """The image offsets of a supercell of ``repeats``, (0, 0, 0) first (read-only)."""
    grid = np.indices(repeats).reshape(3, -1).T
    grid.flags.writeable = False
    return grid


def inputs_from_cell(
    lattice: np.ndarray,
    frac: np.ndarray,
    numbers: np.ndarray,
    max_atoms: int,
    symprec: float,
    index: int | None,
) -> CrystalInputs:
    """:func:`dimfeat.inputs.build_inputs` after the structure has been read into arrays.

    Parameters
    ----------
    lattice, frac, numbers : ndarray
        A checked structure (:class:`~dimfeat.inputs.structures.CellArrays`).
    max_atoms, symprec : see :func:`dimfeat.inputs.build_inputs`
    index : int or None
        Position named in error messages.

    Returns
    -------
    CrystalInputs
    """
    check_atomic_numbers(numbers, index=index)
    lattice, frac, numbers = canonical_cell(lattice, frac, numbers, symprec, index)
    n_sites = len(numbers)
    where = at_index(index)
    shortest = float(_norms(_NONZERO_IMAGES @ lattice).min())
    if shortest < MIN_DISTANCE:  # the cell is Niggli-reduced: its shortest vector is a row
        raise InvalidStructureError(
            f"overlapping atoms in structure{where}: every atom is {shortest:.3f} Å from its own "
            f"periodic image (a lattice vector shorter than the minimum {MIN_DISTANCE} Å); check "
            "the cell's units and lengths"
        )
    greedy = supercell_repeats(lattice, n_sites, max_atoms)
    candidates = _equivalent_repeats(lattice, greedy)
    distances, best = None, None
    n_images = greedy[0] * greedy[1] * greedy[2]  # the same for every candidate
    if len(candidates) > 1:
        bound = 1.0 + float(_norms(lattice) @ np.asarray(greedy))  # more than any distance
        blocks = _species_blocks(numbers, n_images)
    for candidate in candidates:
        grid = _image_grid(tuple(candidate.tolist()))  # image offsets, (0, 0, 0) first
        # Image (0, 0, 0) comes first, so the first n_sites atoms are the unique sites.
        found_frac = ((frac[None, :, :] + grid[:, None, :]) / candidate).reshape(-1, 3)
        found = _minimum_image_distances(found_frac, n_sites, lattice * candidate[:, None])
        if len(candidates) == 1:
            distances = found
            break
        key = _distance_key(found, blocks, bound)
        if best is None or _precedes(key, best):
            distances, best = found, key
    off_diagonal = distances.copy()
    np.fill_diagonal(off_diagonal, np.inf)  # the first n_sites atoms are the sites
    closest = float(off_diagonal.min()) if off_diagonal.size > n_sites else np.inf
    if closest < MIN_DISTANCE:
        raise InvalidStructureError(
            f"overlapping atoms in structure{where}: two atoms are {closest:.3f} Å apart "
            f"(minimum {MIN_DISTANCE} Å)"
        )
    return CrystalInputs(
        species=_repeat(numbers.astype(np.int16), n_images),
        atom_site=_repeat(np.arange(n_sites, dtype=np.int16), n_images),
        distances=distances.astype(np.float32),
    )
