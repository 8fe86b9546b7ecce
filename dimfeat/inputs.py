"""From a pymatgen ``Structure`` to Site-Net model inputs, and batching.

The pipeline (SPEC section 1):

1. **Canonical primitive cell.** The primitive cell is found from the pure translations that map
   the crystal onto itself (spglib's ``find_primitive`` is the fallback when they do not form a
   consistent group), then Niggli-reduced with spglib. A translation is accepted iff, fitted to
   the atom pairing it induces, it brings every atom within ``symprec`` Å of an atom of the same
   species (see :func:`_primitive_by_translations`); each primitive-cell atom sits at the mean of
   the atoms the translations map onto it. Positions are not otherwise symmetrised. Site order,
   rotation, translation and the choice of primitive/conventional/supercell of the input do not
   change this cell, including for distortions close to ``symprec``. A translation search costs
   about 0.16 ms per structure (``benchmarks/throughput.py``, stage ``cell_reduction``; the
   order-independent fit added about 0.04 ms, measured on 400 sample structures).
2. **Roughly cubic supercell of at most** ``max_atoms`` **atoms.** Starting from repeats
   ``(1, 1, 1)`` of the Niggli-reduced cell, the axis with the shortest repeat length is grown by
   one while ``a*b*c*P <= max_atoms`` (ties go to the first axis); growth stops at the first step
   that would exceed the limit. A cell with ``P > max_atoms / 2`` atoms gets a single image; a cell
   with ``P > max_atoms`` still works (each site attends to the ``P`` atoms of the cell).
3. **Unique sites and interactions.** The first ``P`` supercell atoms are the primitive cell's
   sites. Each of them attends to every supercell atom (itself included, at distance 0) through the
   minimum-image distance within the supercell, found among the 27 nearest periodic images of the
   Niggli-reduced supercell.

A :class:`CrystalInputs` holds atomic numbers and distances only; the site features (element
properties) are looked up inside the encoder, so the same inputs serve any normalisation.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimfeat.elements import check_atomic_numbers

__all__ = [
    "Batch",
    "CrystalInputs",
    "InvalidStructureError",
    "as_structure_list",
    "batches_by_site_budget",
    "build_inputs",
    "build_many",
    "collate",
    "load_inputs",
    "save_inputs",
    "supercell_repeats",
]

#: Two atoms closer than this (Å) are reported as overlapping.
MIN_DISTANCE = 0.5

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)


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


def _spglib_cell(
    structure, index: int | None, disorder: str = "error"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pymatgen.core import Structure

    where = "" if index is None else f" (structure {index})"
    if not isinstance(structure, Structure):
        raise TypeError(
            f"expected a pymatgen Structure{where}, got {type(structure).__name__}"
            + (": periodic crystals only" if type(structure).__name__ == "Molecule" else "")
        )
    if disorder not in DISORDER_POLICIES:
        raise ValueError(f"disorder must be one of {DISORDER_POLICIES}, got {disorder!r}")
    ordered = structure.is_ordered
    if not ordered and disorder == "error":
        raise InvalidStructureError(
            f"disordered structure{where} ({structure.composition.reduced_formula}): partial "
            "occupancies are not supported; order it first (e.g. pymatgen's "
            "OrderDisorderedStructureTransformation) or pass disorder='majority'"
        )
    if len(structure) == 0:
        raise InvalidStructureError(f"empty structure{where}: it has no sites")
    lattice = np.asarray(structure.lattice.matrix, dtype=np.float64)
    frac = np.asarray(structure.frac_coords, dtype=np.float64)
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        raise InvalidStructureError(f"structure{where} has NaN or infinite coordinates or lattice")
    volume = abs(np.linalg.det(lattice))
    if not volume > 1e-3:
        raise InvalidStructureError(f"structure{where} has a degenerate lattice (volume {volume})")
    _refuse_dummy_species(structure, where)
    if ordered:
        numbers = np.array([site.specie.Z for site in structure], dtype=np.int64)
    else:
        numbers = _majority_numbers(structure)
    return lattice, frac, numbers


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
    accepted ``t`` satisfies from any anchor), so the search costs ``O(m n^2)`` for ``n`` atoms
    of which ``m`` are of the rarest species.

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
    same_species = numbers[:, None] == numbers[None, :]
    inverse = np.linalg.inv(lattice)
    keep = np.zeros(len(candidates), dtype=bool)
    fitted = np.empty_like(candidates)
    partners = np.empty((len(candidates), n), dtype=np.int64)
    step = max(1, 2_000_000 // (n * n))  # candidates per block: bounds memory for large cells
    for start in range(0, len(candidates), step):
        block = candidates[start : start + step]
        moved = frac[None, :, None, :] + block[:, None, None, :] - frac[None, None, :, :]
        moved -= np.round(moved)
        offset = moved @ lattice  # (block, n, n, 3): x_i + t - x_j, Cartesian
        gap = np.where(same_species[None], np.linalg.norm(offset, axis=-1), np.inf)
        partner = gap.argmin(axis=2)  # (block, n)
        residual = np.take_along_axis(offset, partner[:, :, None, None], axis=2)[:, :, 0]
        paired = np.take_along_axis(gap, partner[:, :, None], axis=2)[:, :, 0] < 2 * tol
        shift = residual.mean(axis=1)  # the least-squares correction of t (Cartesian)
        within = np.linalg.norm(residual - shift[:, None, :], axis=-1) < tol
        ordered = np.sort(partner, axis=1)
        one_to_one = (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
        keep[start : start + step] = paired.all(axis=1) & within.all(axis=1) & one_to_one
        fitted[start : start + step] = block - shift @ inverse
        partners[start : start + step] = partner
    translations, partners = fitted[keep], partners[keep]
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


def _canonical_cell(
    lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, symprec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import spglib

    try:
        lattice, frac, numbers = _primitive_by_translations(lattice, frac, numbers, symprec)
    except ValueError:
        found = spglib.find_primitive((lattice, frac, numbers), symprec=symprec)
        if found is not None:
            lattice, frac, numbers = (np.asarray(a) for a in found)
    reduced = spglib.niggli_reduce(lattice, eps=1e-5)
    if reduced is not None:
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

    Rows are processed in blocks so that memory stays bounded for very large cells.
    """
    n_atoms = len(super_frac)
    out = np.empty((n_sites, n_atoms))
    step = max(1, 1_000_000 // (n_atoms * len(_IMAGES)))
    for start in range(0, n_sites, step):
        stop = min(start + step, n_sites)
        delta = super_frac[None, :, :] - super_frac[start:stop, None, :]  # (p, N, 3)
        delta -= np.round(delta)
        cart = (delta[:, :, None, :] + _IMAGES[None, None, :, :]) @ super_lattice  # (p,N,27,3)
        out[start:stop] = np.sqrt(
            np.min(np.einsum("pnik,pnik->pni", cart, cart), axis=2)
        )
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
    structure : pymatgen.core.Structure
        An ordered crystal structure.
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
        If ``structure`` is not a pymatgen ``Structure``.
    InvalidStructureError
        For disordered structures (with ``disorder="error"``), non-finite coordinates,
        degenerate lattices and overlapping atoms (closer than 0.5 Å).
    dimfeat.elements.UnsupportedElementError
        For elements beyond Lr (Z > 103) and dummy species, naming them and ``index``.
    """
    lattice, frac, numbers = _spglib_cell(structure, index, disorder)
    check_atomic_numbers(numbers, index=index)
    lattice, frac, numbers = _canonical_cell(lattice, frac, numbers, symprec)
    n_sites = len(numbers)
    repeats = np.array(supercell_repeats(lattice, n_sites, max_atoms))

    grid = np.stack(np.meshgrid(*(np.arange(r) for r in repeats), indexing="ij"), axis=-1).reshape(
        -1, 3
    )
    # Image (0, 0, 0) comes first, so the first n_sites atoms are the unique sites.
    super_frac = ((frac[None, :, :] + grid[:, None, :]) / repeats).reshape(-1, 3)
    super_lattice = lattice * repeats[:, None]
    species = np.tile(numbers, len(grid))
    atom_site = np.tile(np.arange(n_sites), len(grid))

    distances = _minimum_image_distances(super_frac, n_sites, super_lattice)

    off_diagonal = distances.copy()
    off_diagonal[np.arange(n_sites), np.arange(n_sites)] = np.inf
    closest = float(off_diagonal.min()) if off_diagonal.size > n_sites else np.inf
    if closest < MIN_DISTANCE:
        where = "" if index is None else f" (structure {index})"
        raise InvalidStructureError(
            f"overlapping atoms in structure{where}: two atoms are {closest:.3f} Å apart "
            f"(minimum {MIN_DISTANCE} Å)"
        )
    return CrystalInputs(
        species=species.astype(np.int16),
        atom_site=atom_site.astype(np.int16),
        distances=distances.astype(np.float32),
    )


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
        Unique sites per crystal.
    """

    site_species: torch.Tensor
    neighbour_species: torch.Tensor
    neighbour_site: torch.Tensor
    distances: torch.Tensor
    mask: torch.Tensor
    crystal_index: torch.Tensor
    site_offset: torch.Tensor
    n_sites: torch.Tensor

    @property
    def n_crystals(self) -> int:
        """Number of crystals in the batch."""
        return int(self.n_sites.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device`` (non-blocking where possible)."""
        return Batch(**{k: v.to(device, non_blocking=True) for k, v in self.__dict__.items()})


def collate(crystals: list[CrystalInputs]) -> Batch:
    """Batch a list of :class:`CrystalInputs` into a :class:`Batch` of CPU tensors."""
    if not crystals:
        raise ValueError("cannot collate an empty list of crystals")
    n_sites = np.array([c.n_sites for c in crystals])
    n_atoms = np.array([c.n_atoms for c in crystals])
    width = int(n_atoms.max())
    total = int(n_sites.sum())
    species = np.zeros((total, width), dtype=np.int64)
    neighbour_site = np.zeros((total, width), dtype=np.int64)
    distances = np.zeros((total, width), dtype=np.float32)
    mask = np.zeros((total, width), dtype=bool)
    row = 0
    for c in crystals:  # one vectorised block copy per crystal, no per-site loop
        p, n = c.n_sites, c.n_atoms
        species[row : row + p, :n] = c.species
        neighbour_site[row : row + p, :n] = c.atom_site
        distances[row : row + p, :n] = c.distances
        mask[row : row + p, :n] = True
        row += p
    offsets = np.concatenate([[0], np.cumsum(n_sites)[:-1]])
    return Batch(
        site_species=torch.from_numpy(
            np.concatenate([c.species[: c.n_sites] for c in crystals])
        ).long(),
        neighbour_species=torch.from_numpy(species),
        neighbour_site=torch.from_numpy(neighbour_site),
        distances=torch.from_numpy(distances),
        mask=torch.from_numpy(mask),
        crystal_index=torch.from_numpy(np.repeat(np.arange(len(crystals)), n_sites)),
        site_offset=torch.from_numpy(offsets),
        n_sites=torch.from_numpy(n_sites),
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


def as_structure_list(X: Any) -> list:
    """Accept a list, tuple, array or pandas Series of structures, or a one-column DataFrame."""
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
    from pymatgen.core import Structure

    if isinstance(X, Structure):
        raise TypeError("expected a sequence of structures; wrap a single Structure in a list")
    if isinstance(X, np.ndarray):
        return X.ravel().tolist()
    if isinstance(X, str | bytes) or not isinstance(X, Sequence):
        raise TypeError(f"expected a sequence of pymatgen Structures, got {type(X).__name__}")
    return list(X)


def _build_chunk(
    structures: list,
    offset: int,
    max_atoms: int,
    symprec: float,
    ignore_errors: bool,
    disorder: str = "error",
    parent_pid: int | None = None,
) -> tuple[list[CrystalInputs | None], dict[int, str]]:
    import warnings

    if parent_pid is not None:  # in a joblib worker: do not outlive the parent
        from dimfeat._workers import exit_with_parent

        exit_with_parent(parent_pid)
    warnings.filterwarnings("ignore", module="pymatgen")
    inputs: list[CrystalInputs | None] = []
    errors: dict[int, str] = {}
    for k, structure in enumerate(structures):
        try:
            inputs.append(
                build_inputs(
                    structure,
                    max_atoms=max_atoms,
                    symprec=symprec,
                    index=offset + k,
                    disorder=disorder,
                )
            )
        except Exception:
            if not ignore_errors:
                raise
            inputs.append(None)
            errors[offset + k] = traceback.format_exc()
    return inputs, errors


def build_many(
    structures: list,
    *,
    max_atoms: int = 50,
    symprec: float = 0.01,
    n_jobs: int = 1,
    ignore_errors: bool = False,
    disorder: str = "error",
) -> tuple[list[CrystalInputs | None], dict[int, str]]:
    """:func:`build_inputs` for many structures, in chunks on ``n_jobs`` processes (joblib).

    Parameters
    ----------
    structures : list of Structure
    max_atoms, symprec, disorder : see :func:`build_inputs`
    n_jobs : int, default=1
        Worker processes (-1: all cores); inputs of 64 structures or fewer stay in-process.
        Workers exit within a second when this process dies (even by ``kill -9``).
    ignore_errors : bool, default=False
        Put ``None`` for a structure that fails, with its traceback in ``errors``, instead of
        raising.

    Returns
    -------
    inputs : list of CrystalInputs or None
    errors : dict of int to str
        Traceback text by position, for the structures that failed.
    """
    if n_jobs == 1 or len(structures) <= 64:
        return _build_chunk(structures, 0, max_atoms, symprec, ignore_errors, disorder)
    import os

    from joblib import Parallel, delayed

    bounds = np.array_split(np.arange(len(structures)), max(1, len(structures) // 256))
    parent = os.getpid()
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_build_chunk)(
            [structures[i] for i in b],
            int(b[0]),
            max_atoms,
            symprec,
            ignore_errors,
            disorder,
            parent,
        )
        for b in bounds
        if len(b)
    )
    inputs = [x for part in parts for x in part[0]]
    errors = {k: v for part in parts for k, v in part[1].items()}
    return inputs, errors
