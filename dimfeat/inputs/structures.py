"""Anything a user holds -> a checked pymatgen ``Structure``, and its arrays.

:func:`to_structure` is the one place where a value becomes a ``Structure``: it accepts a
``Structure`` or ``IStructure``, a ``Structure.as_dict()`` dict or its JSON text, CIF or POSCAR
text, the path of a structure file and ASE ``Atoms``, and names the position and the reason when
a value is not a crystal (a molecule, a slab or anything not periodic along all three axes is
refused). Everything that takes structures (the featurisers, the regressor,
:func:`dimfeat.inputs.build_many`, streaming) reads its items through it.

:func:`read_cell` then checks one structure (the ``disorder`` policy, finite coordinates, a
lattice with volume, no dummy species) and gives its arrays, the first stage of
:func:`dimfeat.inputs.build_inputs`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "DISORDER_POLICIES",
    "STRUCTURE_KINDS",
    "CellArrays",
    "InvalidStructureError",
    "as_structure_list",
    "at_index",
    "check_geometry",
    "check_structures",
    "read_cell",
    "structure_cell",
    "to_structure",
]


class InvalidStructureError(ValueError):
    """A structure that cannot be turned into model inputs (the message says why)."""


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
    from pymatgen.core.periodic_table import DummySpecies, Element

    numbers = []
    for site in structure:
        try:
            ((specie, occupancy),) = site.species.items()
        except ValueError:  # more than one species on the site
            return None, False
        if occupancy != 1:
            return None, False
        if type(specie) is not Element and isinstance(specie, DummySpecies):
            return None, True
        numbers.append(specie.Z)
    return np.array(numbers, dtype=np.int64), False


@dataclass(frozen=True)
class CellArrays:
    """A checked structure as arrays (:func:`read_cell`).

    Attributes
    ----------
    lattice : ndarray of shape (3, 3)
        Lattice vectors as rows (Å).
    frac : ndarray of shape (n_sites, 3)
        Fractional coordinates.
    numbers : ndarray of shape (n_sites,), int64
        Atomic number of each site (its majority species under ``disorder="majority"``).
    ordered : bool
        Whether the structure was ordered as given.
    """

    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    ordered: bool


def read_cell(structure, index: int | None, disorder: str = "error") -> CellArrays:
    """Read and check a structure (any form :func:`to_structure` accepts) into its arrays.

    Parameters
    ----------
    structure : any form :func:`to_structure` accepts
    index : int or None
        Position named in error messages.
    disorder : {"error", "majority"}, default="error"
        Policy for partial occupancies (see :func:`dimfeat.inputs.build_inputs`).

    Returns
    -------
    CellArrays
    """
    structure = to_structure(structure, index)
    where = at_index(index)
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
    return CellArrays(lattice, frac, numbers, bool(ordered))


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
    _finite_geometry(structure, at_index(index))
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


#: What :func:`to_structure` accepts, for messages.
STRUCTURE_KINDS = (
    "a pymatgen Structure or IStructure, a Structure.as_dict() dict (or its JSON text), CIF or "
    "POSCAR text, the path of a structure file (str or pathlib.Path), or an ASE Atoms"
)


def at_index(index: int | None) -> str:
    """`` (structure 3)`` for ``index=3``, to follow a noun in a message; ``""`` for None."""
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
                f"could not read {source}{at_index(index)} as JSON: {exc}"
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
            f"could not parse {source}{at_index(index)} as {fmt.upper()}{hint}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _from_dict(data: Any, index: int | None) -> Any:
    from pymatgen.core import Structure

    if not isinstance(data, dict):
        raise TypeError(
            f"expected a crystal structure{at_index(index)}, got JSON holding a "
            f"{type(data).__name__}; expected {STRUCTURE_KINDS}"
        )
    kind = data.get("@class")
    molecule_like = kind is None and "sites" in data and "lattice" not in data
    if kind in {"Molecule", "IMolecule"} or molecule_like:
        raise TypeError(
            f"expected a crystal structure{at_index(index)}, got a Molecule dict: periodic "
            "crystals only"
        )
    if kind not in {None, "Structure", "IStructure"} or not {"lattice", "sites"} <= set(data):
        found = f"@class {kind!r}" if kind else f"keys {sorted(data)[:6]}"
        raise InvalidStructureError(
            f"the dict{at_index(index)} is not a pymatgen structure dict (as written by "
            f"Structure.as_dict(): '@class': 'Structure', 'lattice', 'sites'); it has {found}"
        )
    try:
        return Structure.from_dict(data)
    except Exception as exc:
        raise InvalidStructureError(
            f"could not read the structure dict{at_index(index)}: {type(exc).__name__}: {exc}"
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
                f"could not read a structure from the file {str(path)!r}{at_index(index)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    except Exception as exc:
        raise InvalidStructureError(
            f"could not read a structure from the file {str(path)!r}{at_index(index)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    # A name pymatgen does not know (e.g. "NaCl.txt"): tell the format from the text.
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidStructureError(
            f"the file {str(path)!r}{at_index(index)} is neither a format pymatgen recognises by "
            "its name nor CIF, POSCAR or JSON text"
        ) from exc
    return _from_text(text, index, f"the file {str(path)!r}")


def _from_ase(atoms: Any, index: int | None) -> Any:
    from pymatgen.io.ase import AseAtomsAdaptor

    pbc = np.asarray(atoms.pbc, dtype=bool)
    volume = abs(float(np.linalg.det(np.asarray(atoms.cell, dtype=np.float64))))
    if not pbc.all() or not volume > 1e-3:
        raise InvalidStructureError(
            f"the ASE Atoms{at_index(index)} ({atoms.get_chemical_formula()}) is not a periodic "
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
            f"expected a crystal structure{at_index(index)}, got {type(obj).__name__}: periodic "
            "crystals only"
        )
    if isinstance(obj, dict):
        return lambda: _from_dict(obj, index)
    if isinstance(obj, bytes):
        try:
            obj = obj.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidStructureError(
                f"the bytes{at_index(index)} are not UTF-8 text (CIF, POSCAR or JSON)"
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
                f"{str(obj)!r}{at_index(index)} is a folder, not a structure file: pass the files "
                "in it, or stream the whole folder with dimfeat.streaming.featurize_to_file"
            )
        if not isinstance(obj, str):
            raise InvalidStructureError(f"no such file: {str(path)!r}{at_index(index)}")
        raise InvalidStructureError(
            f"no such file: the str {_short(obj)}{at_index(index)} has a single line, so it is "
            "read as the path of a structure file, and nothing exists there (CIF and POSCAR "
            "text have several lines)"
        )
    if _is_ase_atoms(obj):
        return lambda: _from_ase(obj, index)
    raise TypeError(
        f"expected a crystal structure{at_index(index)}, got {type(obj).__name__}; expected "
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
            f"the {type(structure).__name__}{at_index(index)} "
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


def structure_cell(
    structure: Any, index: int | None = None, disorder: str = "error"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first stage of :func:`dimfeat.inputs.build_inputs`: :func:`read_cell` as a tuple.

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
    cell = read_cell(structure, index, disorder)
    return cell.lattice, cell.frac, cell.numbers
