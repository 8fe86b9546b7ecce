"""From anything that holds a crystal to Site-Net model inputs, and batches of them.

The modules follow the data:

- :mod:`dimfeat.inputs.structures`: anything a user holds (``Structure``, dicts, CIF/POSCAR
  text, paths, ASE ``Atoms``) -> a checked ``Structure`` (:func:`to_structure`, the one
  coercion) and its arrays (:func:`structure_cell`); the ``disorder`` policy; the refusal of
  what is not a periodic crystal.
- :mod:`dimfeat.inputs.cell`: the canonical primitive cell (translation search, LLL, Niggli),
  the roughly cubic supercell and the minimum-image distances (:func:`canonical_cell`,
  :func:`supercell_repeats`).
- :mod:`dimfeat.inputs.batch`: :class:`CrystalInputs`, :func:`equivalent_sites`,
  :func:`collate` into a :class:`Batch`, site budgets, ``.npz`` files.
- :mod:`dimfeat.inputs.build`: one structure (:func:`build_inputs`) or many in parallel
  (:func:`build_many`, or chunk by chunk: :func:`iter_build`), and the warning about cells
  beyond ``max_atoms``.

The names below are imported from those modules: ``from dimfeat.inputs import build_many``
is the spelling to use.
"""

from dimfeat.inputs.batch import (
    SITE_MERGE_RESOLUTION,
    Batch,
    CrystalInputs,
    batches_by_site_budget,
    collate,
    equivalent_sites,
    load_inputs,
    save_inputs,
)
from dimfeat.inputs.build import (
    CHUNK_STRUCTURES,
    BuiltChunk,
    LargeCell,
    build_inputs,
    build_many,
    collect_chunks,
    find_large_cells,
    iter_build,
    uses_workers,
    warn_found_large_cells,
    warn_large_cells,
    warn_ordered,
)
from dimfeat.inputs.cell import MIN_DISTANCE, canonical_cell, supercell_repeats
from dimfeat.inputs.structures import (
    DISORDER_POLICIES,
    STRUCTURE_KINDS,
    InvalidStructureError,
    as_structure_list,
    check_geometry,
    check_structures,
    structure_cell,
    to_structure,
)

__all__ = [
    "CHUNK_STRUCTURES",
    "DISORDER_POLICIES",
    "MIN_DISTANCE",
    "SITE_MERGE_RESOLUTION",
    "STRUCTURE_KINDS",
    "Batch",
    "BuiltChunk",
    "CrystalInputs",
    "InvalidStructureError",
    "LargeCell",
    "as_structure_list",
    "batches_by_site_budget",
    "build_inputs",
    "build_many",
    "canonical_cell",
    "check_geometry",
    "check_structures",
    "collate",
    "collect_chunks",
    "equivalent_sites",
    "find_large_cells",
    "iter_build",
    "load_inputs",
    "save_inputs",
    "structure_cell",
    "supercell_repeats",
    "to_structure",
    "uses_workers",
    "warn_found_large_cells",
    "warn_large_cells",
    "warn_ordered",
]
