"""Model inputs of crystals and their batches: :class:`CrystalInputs`, :func:`collate`, budgets,
``.npz`` files.

A :class:`CrystalInputs` holds atomic numbers and distances only; the site features (element
properties) are looked up inside the encoder, so the same inputs serve any normalisation.
:func:`equivalent_sites` groups sites with the same environment, which :func:`collate` can merge
into one weighted row (inference); training batches every site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "SITE_MERGE_RESOLUTION",
    "Batch",
    "CrystalInputs",
    "batches_by_site_budget",
    "collate",
    "equivalent_sites",
    "load_inputs",
    "save_inputs",
]

#: Grid (Å) on which :func:`equivalent_sites` compares distances. Sites related by symmetry
#: see the same distances up to float32 rounding (about 1e-6 Å); a grid ten times coarser
#: merges them, and two environments it merges differ by less than this in every distance.
SITE_MERGE_RESOLUTION = 1e-5


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
