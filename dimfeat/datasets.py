"""Crystal datasets: the bundled sample, CGCNN-layout folders, the project split and Matbench.

Files are read by :mod:`dimfeat.sources`, the one reader of input layouts, which
:mod:`dimfeat.streaming` uses too: :func:`load_structures` loads any of them into memory,
:func:`load_cgcnn` a CGCNN folder or tarball with its labels.

Nothing here downloads anything. The bundled sample ships inside the package; every other loader
reads a local file and raises :class:`FileNotFoundError` naming the path (and, for matminer data,
the ``MATMINER_DATA`` environment variable) when it is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dimfeat.progress import progress_bar
from dimfeat.sources import (
    Listing,
    cgcnn_material_ids,
    iter_files,
    list_files,
    memory_items,
    parse_id_prop,
    parse_structure,
    read_item,
    source_kind,
)

if TYPE_CHECKING:
    from matbench.task import MatbenchTask
    from pymatgen.core import Structure

__all__ = [
    "CGCNN_LABELS",
    "cgcnn_material_ids",
    "load_cgcnn",
    "load_matbench",
    "load_sample",
    "load_split",
    "load_structures",
    "load_structures_file",
    "matbench_ids",
    "matbench_task",
    "matminer_file",
    "parse_id_prop",
    "task_frame",
]

logger = logging.getLogger(__name__)

#: Names of the five label columns of the CGCNN Materials Project ``id_prop.csv`` (eV/atom, eV,
#: eV, Å^3, and a last column of uncertain meaning).
CGCNN_LABELS = ("formation_energy_per_atom", "band_gap", "efermi", "volume", "magmom")

#: File name of the bundled sample inside ``dimfeat/data``.
SAMPLE_FILE = "mp_sample.json.gz"

#: ``load_cgcnn(n_jobs=None)`` parses in parallel from this many CIFs on.
PARALLEL_MIN_CIFS = 2000
_CHUNK_SIZE = 250


# --------------------------------------------------------------------------- bundled sample


def load_sample(as_frame: bool = True) -> pd.DataFrame | tuple[list[Structure], np.ndarray]:
    """Load the bundled sample of 1,000 Materials Project crystals.

    The crystals were drawn at random (``numpy.random.default_rng(0)``) from the ``test`` ids of
    the project split of the CGCNN Materials Project set (``mp36k``), among those with at most 50
    atoms per cell; ``benchmarks/release/make_sample.py`` rebuilds the file. Every row is from
    the held-out fold, so the sample may be used to score models pre-trained on the ``train`` fold.

    Parameters
    ----------
    as_frame : bool, default=True
        Return a DataFrame; otherwise a ``(structures, y)`` pair with the formation energy as ``y``.

    Returns
    -------
    pandas.DataFrame or tuple of (list of Structure, ndarray of shape (n,))
        Columns ``material_id``, ``structure`` (pymatgen ``Structure``),
        ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV, PBE) and ``split`` (``"test"``).
        ``df.attrs["metadata"]`` holds the provenance block (source, licence, credit, seed).

    Notes
    -----
    Materials Project data are licensed CC BY 4.0: cite the Materials Project (Jain et al., APL
    Mater. 1, 011002, 2013, doi:10.1063/1.4812323) and CGCNN (Xie & Grossman, Phys. Rev. Lett. 120,
    145301, 2018, doi:10.1103/PhysRevLett.120.145301). Loading takes about a second.

    Examples
    --------
    >>> from dimfeat.datasets import load_sample
    >>> df = load_sample()
    >>> df.shape
    (1000, 5)
    >>> structures, y = load_sample(as_frame=False)
    >>> y.shape
    (1000,)
    """
    from pymatgen.core import Structure

    payload = _read_sample()
    columns = payload["columns"]
    structures = [Structure.from_dict(d) for d in columns["structure"]]
    y = np.asarray(columns["formation_energy_per_atom"], dtype=np.float64)
    if not as_frame:
        return structures, y
    df = pd.DataFrame(
        {
            "material_id": columns["material_id"],
            "structure": structures,
            "formation_energy_per_atom": y,
            "band_gap": np.asarray(columns["band_gap"], dtype=np.float64),
            "split": "test",
        }
    )
    df.attrs["metadata"] = payload["metadata"]
    return df


# --------------------------------------------------------------------------- CGCNN layout


def load_cgcnn(
    path: str | os.PathLike[str],
    *,
    ids: Sequence[str] | None = None,
    max_atoms: int | None = None,
    progress: bool = False,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Load a dataset in the CGCNN directory layout, from a folder or a ``.tar.gz`` of one.

    The layout (CGCNN, ALIGNN, CrysXPP): ``{idx}.cif`` per crystal, ``id_prop.csv`` without a
    header (``idx, label_1, ..., label_k``), and optionally ``material_id_hash.csv`` without a
    header (``idx, material_id``). A tarball is read as a stream, member by member, never
    extracted to disk; its folder is the one holding ``id_prop.csv``. A folder of structure
    files without ``id_prop.csv`` has no labels: :func:`load_structures` reads it.

    Parameters
    ----------
    path : str or path-like
        The folder holding ``id_prop.csv``, or a ``.tar.gz``/``.tgz``/``.tar`` archive of it
        (e.g. ``../shared/data/mp36k/mp36k.tar.gz``).
    ids : sequence of str, default=None
        Material ids to load, in this order (e.g. ``load_split(...)["test"]``); ``None`` loads
        every row of ``id_prop.csv`` in file order. Without ``material_id_hash.csv`` the ids are
        the ``idx`` values. An id that is not in the dataset raises :class:`KeyError`.
    max_atoms : int, default=None
        Drop crystals with more sites than this in the stored cell. The number dropped is
        logged and recorded in ``df.attrs["n_dropped"]`` (their ids in
        ``df.attrs["dropped_ids"]``). ``None`` keeps all.
    progress : bool, default=False
        Show a tqdm progress bar while parsing CIFs.
    n_jobs : int, default=None
        Processes for CIF parsing (joblib; ``-1`` for all cores). ``None`` uses all cores from
        ``PARALLEL_MIN_CIFS`` (2,000) CIFs on, when there are at least 4, and one process
        otherwise. Parsing costs 3-5 ms per CIF of ~25 atoms on one core (about 2.5 min for the
        36,737 CIFs of ``mp36k``); sending a parsed structure back from a worker costs ~0.6 ms.

    Returns
    -------
    pandas.DataFrame
        Columns ``material_id`` (str), ``structure`` (pymatgen ``Structure``, as stored, not
        reduced) and the labels: ``formation_energy_per_atom``, ``band_gap``, ``efermi``,
        ``volume``, ``magmom`` when ``id_prop.csv`` has five label columns, otherwise
        ``target_0, ..., target_{k-1}``. ``df.attrs`` holds ``source``, ``max_atoms``,
        ``n_dropped`` and ``dropped_ids``.

    Raises
    ------
    FileNotFoundError
        If ``path``, ``id_prop.csv`` or a CIF is missing (the message names it).
    KeyError
        If some of ``ids`` are not in the dataset.
    ValueError
        If a table is malformed or a CIF cannot be parsed.

    Examples
    --------
    >>> from dimfeat.datasets import load_cgcnn, load_split  # doctest: +SKIP
    >>> split = load_split("../shared/data/mp36k/split.json")  # doctest: +SKIP
    >>> df = load_cgcnn("../shared/data/mp36k/mp36k.tar.gz", ids=split["test"][:100],
    ...                 max_atoms=50)  # doctest: +SKIP
    """
    if max_atoms is not None and (
        isinstance(max_atoms, bool) or int(max_atoms) != max_atoms or max_atoms < 1
    ):
        raise ValueError(f"max_atoms must be a positive integer or None, got {max_atoms!r}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No CGCNN folder or tarball at {path}.")
    if source_kind(path) not in {"folder", "tarball"}:
        raise ValueError(f"{path} is neither a folder nor a tar archive of a CGCNN dataset.")
    listing = list_files(path)
    if listing.labels is None:
        raise FileNotFoundError(
            f"{listing.table_where('id_prop.csv')} not found: a CGCNN folder needs id_prop.csv "
            "(load_structures reads a folder of structure files without labels)."
        )
    rows = np.arange(len(listing.ids)) if ids is None else _select(listing.ids, ids, path)
    structures = _read_rows(listing, rows, progress, n_jobs)
    props = listing.labels
    n_labels = props.shape[1] - 1
    label_names = (
        CGCNN_LABELS if n_labels == len(CGCNN_LABELS) else [f"target_{k}" for k in range(n_labels)]
    )
    df = pd.DataFrame({"material_id": [listing.ids[i] for i in rows], "structure": structures})
    for k, name in enumerate(label_names, start=1):
        df[name] = props[k].to_numpy(dtype=np.float64)[rows]

    dropped: list[str] = []
    if max_atoms is not None:
        keep = np.array([len(s) <= max_atoms for s in structures], dtype=bool)
        dropped = df.loc[~keep, "material_id"].tolist()
        df = df.loc[keep].reset_index(drop=True)
        if dropped:
            logger.info(
                "load_cgcnn(%s): dropped %d of %d crystals with more than %d sites.",
                path,
                len(dropped),
                len(keep),
                max_atoms,
            )
    df.attrs.update(
        source=str(path), max_atoms=max_atoms, n_dropped=len(dropped), dropped_ids=dropped
    )
    return df


def load_structures(
    source: Any,
    *,
    ids: Sequence[str] | None = None,
    data_home: str | os.PathLike[str] | None = None,
    progress: bool = False,
    n_jobs: int | None = None,
) -> pd.DataFrame:
    """Load the structures of any input layout into memory, optionally only some ids.

    The random-access face of :mod:`dimfeat.sources` (:func:`dimfeat.streaming.iter_chunks` is
    the streamed one): a CGCNN folder or tarball, a plain folder of structure files (``*.cif``,
    ``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar``) or a tarball of ``*.cif``, one CIF or
    POSCAR file, a ``.json``/``.json.gz`` file of structures (:func:`load_structures_file`;
    matminer and Matbench dataset files are such files), a Matbench task name
    (:func:`task_frame`), or structures in memory.

    Parameters
    ----------
    source : path, str, sequence, pandas Series or DataFrame
    ids : sequence of str, default=None
        The ids to load, in this order (e.g. one fold of :func:`load_split`); ``None``: all, in
        the layout's order (``id_prop.csv`` order, sorted file names, archive order, file
        order).
    data_home : str or path-like, default=None
        For a Matbench task name: the folder holding its file (see :func:`load_matbench`).
    progress : bool, default=False
        A progress bar while parsing structure files.
    n_jobs : int, default=None
        Processes for parsing structure files (as for :func:`load_cgcnn`).

    Returns
    -------
    pandas.DataFrame
        Columns ``material_id`` (str; the ids :func:`dimfeat.streaming.iter_chunks` gives the
        same source) and ``structure``, then the labels of a CGCNN ``id_prop.csv`` or the other
        columns of a ``.json`` file. In-memory items are read by
        :func:`dimfeat.inputs.to_structure`.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist, or an empty folder.
    KeyError
        If some of ``ids`` are not in the source.
    ValueError
        For a file that is none of the layouts, or a structure that cannot be parsed.
    """
    kind = source_kind(source)
    if kind in {"folder", "tarball", "file"}:
        listing = list_files(source)
        if listing.labels is not None:
            return load_cgcnn(source, ids=ids, progress=progress, n_jobs=n_jobs)
        rows = np.arange(len(listing.ids)) if ids is None else _select(listing.ids, ids, source)
        structures = _read_rows(listing, rows, progress, n_jobs)
        df = pd.DataFrame({"material_id": [listing.ids[i] for i in rows], "structure": structures})
    else:
        if kind == "json":
            df = load_structures_file(source)
        elif kind == "task":
            df = task_frame(str(source), data_home)
        else:
            items, item_ids = memory_items(source)
            df = pd.DataFrame({"material_id": item_ids, "structure": items})
            for k, item in enumerate(df["structure"]):
                structure = read_item(item)
                if isinstance(structure, Exception):
                    raise ValueError(f"structure {k} (id {item_ids[k]}): {structure}")
                df.at[k, "structure"] = structure
        if ids is not None:
            df = df.iloc[_select(list(df["material_id"]), ids, source)].reset_index(drop=True)
    df.attrs["source"] = str(source) if kind != "memory" else f"<{type(source).__name__}>"
    return df


def _read_rows(listing: Listing, rows: np.ndarray, progress: bool, n_jobs: int | None) -> list:
    """Parse the structure files of ``rows`` of ``listing``, in the order of ``rows``."""
    data: dict[int, tuple[bytes, str]] = {}
    for row, where, read in iter_files(listing, rows.tolist()):
        data[row] = (read(), where)
    return _parse_files([data[i][0] for i in rows], [data[i][1] for i in rows], progress, n_jobs)


def _select(material_ids: list[str], ids: Sequence[str], path: Path) -> np.ndarray:
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of material ids, not a single string.")
    rows = pd.Index(material_ids).get_indexer(list(ids))
    if (rows < 0).any():
        missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
        raise KeyError(f"{len(missing)} requested ids are not in {path}, e.g. {missing[:5]}.")
    return rows


def _parse_chunk(
    data: list[bytes], names: list[str], parent_pid: int | None = None
) -> list[Structure]:
    if parent_pid is not None:  # in a joblib worker: do not outlive the parent
        from dimfeat._workers import exit_with_parent

        exit_with_parent(parent_pid)
    return [parse_structure(d, name) for d, name in zip(data, names, strict=True)]


def _parse_files(
    data: list[bytes], names: list[str], progress: bool, n_jobs: int | None
) -> list[Structure]:
    from joblib import Parallel, cpu_count, delayed

    from dimfeat._workers import error_as_value, raise_in_order

    if n_jobs is None:
        # Below 4 cores, unpickling the workers' structures costs more than parsing saves.
        parallel = len(data) >= PARALLEL_MIN_CIFS and cpu_count() >= 4
        n_jobs = -1 if parallel else 1
    starts = range(0, len(data), _CHUNK_SIZE)
    parent = os.getpid()
    jobs = (
        delayed(error_as_value)(
            _parse_chunk, data[s : s + _CHUNK_SIZE], names[s : s + _CHUNK_SIZE], parent
        )
        for s in starts
    )
    structures: list[Structure] = []
    bar = progress_bar(progress, desc="Parsing CIFs", total=len(data))
    chunks = raise_in_order(Parallel(n_jobs=n_jobs, return_as="generator")(jobs))
    try:
        for chunk in chunks:  # a bad file's error in file order, whichever worker fails first
            structures.extend(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        chunks.close()
        if bar is not None:
            bar.close()
    return structures


# --------------------------------------------------------------------------- structure files

#: Largest structures file :func:`load_structures_file` reads (uncompressed bytes).
MAX_STRUCTURES_FILE = 4 << 30
_STRUCTURE_CLASSES = frozenset({"Structure", "IStructure"})


def load_structures_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load crystal structures from a ``.json`` or ``.json.gz`` file, as data only.

    Three layouts are read:

    - a list of pymatgen structure dictionaries (``Structure.as_dict()``);
    - an object mapping ids to structure dictionaries;
    - a matminer/pandas DataFrame in the ``split`` layout (``index``, ``columns``, ``data``),
      which is how matminer and Matbench store their ``.json.gz`` datasets, with a column of
      structure dictionaries (``structure`` when there are several).

    The file is parsed as JSON and only ``Structure.from_dict`` is called on the entries tagged
    ``"@class": "Structure"`` (or ``"IStructure"``) from ``pymatgen.core.structure``; no other
    class is imported or instantiated, whatever the file says.

    Parameters
    ----------
    path : str or path-like
        A ``.json`` or gzip-compressed ``.json.gz`` file.

    Returns
    -------
    pandas.DataFrame
        Columns ``material_id`` (str: the ``material_id`` column when there is one, else the
        ids of a mapping, the DataFrame index, or positions ``0, 1, ...``) and ``structure``,
        then the other columns of a DataFrame file (as plain JSON values). A Matbench task's
        own file (``matbench_phonons.json.gz``, ...) gets Matbench's ids (``mb-phonons-0001``,
        ...), the ids of ``MatbenchTask.df`` and of :func:`task_frame`.
        ``df.attrs["source"]`` is the path.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not JSON (or not gzip when named ``.gz``), has none of the layouts above,
        or an entry is not a structure (the message gives its position).
    """
    from pymatgen.core import Structure

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No structures file at {path}.")
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            handle = gzip.open(raw, "rb") if magic == b"\x1f\x8b" else raw
            text = handle.read(MAX_STRUCTURES_FILE + 1)
        if len(text) > MAX_STRUCTURES_FILE:
            raise ValueError(f"more than {MAX_STRUCTURES_FILE} bytes once decompressed")
        content = json.loads(text)
    except (OSError, EOFError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise ValueError(f"{path} is not a JSON file of structures: {exc}") from exc

    others: dict[str, list] = {}
    if isinstance(content, list):
        ids, entries = [str(i) for i in range(len(content))], content
    elif isinstance(content, dict) and {"index", "columns", "data"} <= set(content):
        ids, entries, others = _split_frame(content, path)
    elif isinstance(content, dict) and content and "@class" not in content:
        ids, entries = [str(k) for k in content], list(content.values())
    else:
        raise ValueError(
            f"{path} holds neither a list of structure dictionaries, an object of id -> "
            "structure dictionary, nor a DataFrame (index/columns/data) with a structure column."
        )
    structures = []
    for k, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and entry.get("@class") in _STRUCTURE_CLASSES
            and entry.get("@module", "pymatgen.core.structure") == "pymatgen.core.structure"
        ):
            raise ValueError(
                f"{path}: entry {k} (id {ids[k]}) is not a pymatgen structure dictionary "
                f"(@class {entry.get('@class') if isinstance(entry, dict) else None!r})."
            )
        if _has_tagged_object([entry.get("properties"), *_site_properties(entry)]):
            raise ValueError(
                f"{path}: entry {k} (id {ids[k]}) holds serialised Python objects in its "
                "properties; dimfeat reads structure data only and does not decode them."
            )
        try:
            structures.append(Structure.from_dict(entry))
        except Exception as exc:
            raise ValueError(
                f"{path}: entry {k} (id {ids[k]}) is not a valid structure: {exc}"
            ) from exc
    if "material_id" in others:
        ids = [str(i) for i in others.pop("material_id")]
    elif isinstance(content, dict) and "index" in content:
        ids = _task_ids(path, content["index"], ids)
    df = pd.DataFrame({"material_id": ids, "structure": structures})
    for name, values in others.items():
        df[name] = values
    df.attrs["source"] = str(path)
    return df


def _task_ids(path: Path, index: list, ids: list[str]) -> list[str]:
    """Matbench's ids (``mb-phonons-0001``, ...) for a Matbench task's own file, else ``ids``.

    A file named ``matbench_<task>.json[.gz]`` whose frame index is matminer's row index
    ``0, 1, ...`` is the task's file: its rows get the ids that ``--matbench``,
    :func:`task_frame` and ``MatbenchTask.df`` use, so the two routes to the same file agree.
    """
    name = path.name
    for suffix in (".json.gz", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    if not name.startswith("matbench_") or index != list(range(len(index))):
        return ids
    return matbench_ids(name, index)


def _site_properties(entry: dict) -> list:
    sites = entry.get("sites")
    if not isinstance(sites, list):
        return []
    return [s.get("properties") for s in sites if isinstance(s, dict)]


def _has_tagged_object(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` nests a dictionary tagged ``@module`` (which monty would import)."""
    if depth > 50:
        return True
    if isinstance(value, dict):
        return "@module" in value or any(_has_tagged_object(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_has_tagged_object(v, depth + 1) for v in value)
    return False


def _split_frame(content: dict, path: Path) -> tuple[list[str], list, dict[str, list]]:
    """Ids, structure entries and other columns of a DataFrame in pandas' ``split`` layout."""
    index, columns, data = content["index"], content["columns"], content["data"]
    if not (
        isinstance(index, list)
        and isinstance(columns, list)
        and isinstance(data, list)
        and len(index) == len(data)
        and all(isinstance(row, list) and len(row) == len(columns) for row in data)
    ):
        raise ValueError(f"{path}: 'index', 'columns' and 'data' do not form a table.")
    candidates = [
        k
        for k, name in enumerate(columns)
        if data
        and all(isinstance(r[k], dict) and r[k].get("@class") in _STRUCTURE_CLASSES for r in data)
    ]
    if "structure" in columns:
        column = columns.index("structure")
    elif len(candidates) == 1:
        column = candidates[0]
    elif not data:
        column = None
    else:
        raise ValueError(
            f"{path}: no single column of structures among {columns} (name it 'structure')."
        )
    others = {str(name): [row[k] for row in data] for k, name in enumerate(columns) if k != column}
    entries = [] if column is None else [row[column] for row in data]
    return [str(i) for i in index], entries, others


# --------------------------------------------------------------------------- split


def load_split(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a train/test split of material ids from a JSON file.

    Parameters
    ----------
    path : str or path-like
        A JSON object with lists ``"train"`` and ``"test"`` (other keys, such as ``seed`` or
        ``description``, are ignored), e.g. ``../shared/data/mp36k/split.json``.

    Returns
    -------
    dict of str to list of str
        ``{"train": [...], "test": [...]}`` in file order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a fold is missing or not a list of strings, or the folds overlap.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No split file at {path}.")
    content = json.loads(path.read_text(encoding="utf-8"))
    split: dict[str, list[str]] = {}
    for fold in ("train", "test"):
        ids = content.get(fold) if isinstance(content, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path} needs a list of material ids under {fold!r}.")
        split[fold] = ids
    overlap = set(split["train"]) & set(split["test"])
    if overlap:
        raise ValueError(
            f"{path}: {len(overlap)} ids are in both folds, e.g. {sorted(overlap)[:5]}."
        )
    return split


# --------------------------------------------------------------------------- Matbench


def load_matbench(
    task_name: str = "matbench_phonons", data_home: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """Load a matminer/Matbench dataset from a local folder, never downloading it.

    Parameters
    ----------
    task_name : str, default="matbench_phonons"
        A matminer dataset name (every Matbench v0.1 task is one).
    data_home : str or path-like, default=None
        Folder holding ``{task_name}.json.gz``. ``None`` follows matminer: the ``MATMINER_DATA``
        environment variable, else matminer's own ``datasets`` folder. For this project the file
        is in ``../shared/data/matminer``.

    Returns
    -------
    pandas.DataFrame
        matminer's frame: for Matbench tasks the input column (``structure`` or ``composition``)
        and the target (``last phdos peak`` in cm^-1 for ``matbench_phonons``, 1,265 rows).

    Raises
    ------
    FileNotFoundError
        If the dataset file is not in the folder; matminer would otherwise try to download it.
    KeyError
        If matminer does not know ``task_name``.

    See Also
    --------
    matbench_task : the same data as a :class:`matbench.task.MatbenchTask` with official folds.
    """
    from matminer.datasets import load_dataset

    file = matminer_file(task_name, data_home)
    df = load_dataset(task_name, data_home=str(file.parent), download_if_missing=False)
    df.attrs["source"] = str(file)
    return df


def matbench_task(task_name: str, data_home: str | os.PathLike[str] | None = None) -> MatbenchTask:
    """Return a loaded Matbench v0.1 task with its official folds, read from a local folder.

    Built as ``MatbenchBenchmark(autoload=False, subset=[task_name])`` followed by
    ``task.load()``; matbench reads the file through matminer, so ``MATMINER_DATA`` is set to the
    resolved folder while it loads (and restored afterwards; not thread-safe).

    Parameters
    ----------
    task_name : str
        A Matbench v0.1 task, e.g. ``"matbench_phonons"``.
    data_home : str or path-like, default=None
        Folder holding ``{task_name}.json.gz``; ``None`` means ``MATMINER_DATA``, else matminer's
        own ``datasets`` folder.

    Returns
    -------
    matbench.task.MatbenchTask
        Loaded: ``task.folds`` is ``[0, 1, 2, 3, 4]`` and ``task.get_train_and_val_data(fold)`` /
        ``task.get_test_data(fold, include_target=True)`` give the official folds.

    Raises
    ------
    FileNotFoundError
        If the dataset file is not in the folder (nothing is downloaded).
    KeyError
        If ``task_name`` is not a Matbench v0.1 task.
    """
    from matbench.bench import MatbenchBenchmark
    from matbench.metadata import mbv01_metadata

    if task_name not in mbv01_metadata:
        raise KeyError(
            f"{task_name!r} is not a Matbench v0.1 task; choose from {sorted(mbv01_metadata)}."
        )
    file = matminer_file(task_name, data_home)
    with _environ("MATMINER_DATA", str(file.parent)):
        benchmark = MatbenchBenchmark(autoload=False, subset=[task_name])
        task = benchmark.tasks_map[task_name]
        task.load()
    return task


def matbench_ids(task_name: str, index: Sequence) -> list[str]:
    """Matbench's ids for the rows of a matminer dataset: ``mb-phonons-0001``, ...

    ``MatbenchTask.df`` is indexed by these ids (``matbench.data_ops.load`` builds them from the
    matminer row index ``0, 1, ...``); vectors written under them join the task's frame.

    Parameters
    ----------
    task_name : str
        A dataset name starting with ``matbench_``, e.g. ``"matbench_phonons"``.
    index : sequence of int
        The matminer row index (``load_matbench(task_name).index``).

    Returns
    -------
    list of str

    Examples
    --------
    >>> matbench_ids("matbench_phonons", range(3))[:2]
    ['mb-phonons-1', 'mb-phonons-2']
    """
    if not task_name.startswith("matbench_"):
        raise ValueError(f"{task_name!r} is not a Matbench task (its name starts with matbench_)")
    index = [int(i) for i in index]
    # matbench's own formula (math.log(n, 10), not log10: they differ at powers of ten)
    width = math.floor(math.log(len(index), 10)) + 1 if index else 1
    prefix = task_name.replace("matbench", "mb").replace("_", "-")
    return [f"{prefix}-{i + 1:0{width}d}" for i in index]


def task_frame(task_name: str, data_home: str | os.PathLike | None = None) -> pd.DataFrame:
    """The structures of a Matbench task under the ids of ``MatbenchTask.df``.

    Parameters
    ----------
    task_name : str
        A matminer dataset whose name starts with ``matbench_``, e.g. ``"matbench_phonons"``.
    data_home : str or path-like, optional
        Folder holding ``{task_name}.json.gz`` (see :func:`load_matbench`).

    Returns
    -------
    pandas.DataFrame
        Columns ``material_id`` (``mb-phonons-0001``, ...: Matbench's own index, so that the
        vectors join ``MatbenchTask.df``) and ``structure``.
    """
    df = load_matbench(str(task_name), data_home=data_home)
    if "structure" not in df.columns:
        raise ValueError(f"{task_name} has no structure column (its input is {list(df.columns)})")
    return pd.DataFrame(
        {"material_id": matbench_ids(str(task_name), df.index), "structure": list(df["structure"])}
    )


def matminer_file(name: str, data_home: str | os.PathLike[str] | None) -> Path:
    """The local file matminer would read for ``name``; raise before matminer downloads it.

    Parameters
    ----------
    name : str
        A matminer dataset name (e.g. ``"matbench_phonons"``).
    data_home : path or None
        Folder holding it (default: ``$MATMINER_DATA``, else matminer's own folder).

    Returns
    -------
    Path
    """
    from matminer.datasets.dataset_retrieval import get_dataset_attribute

    try:
        file_type = get_dataset_attribute(name, "file_type")
    except KeyError:
        raise KeyError(f"matminer knows no dataset called {name!r}.") from None
    if data_home is not None:
        folder = Path(data_home).expanduser()
    elif os.environ.get("MATMINER_DATA"):
        folder = Path(os.environ["MATMINER_DATA"]).expanduser()
    else:
        import matminer.datasets

        folder = Path(matminer.datasets.__file__).parent
    file = folder / f"{name}.{file_type}"
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found, and dimfeat never downloads datasets. Put {file.name} in "
            f"{folder}, or pass data_home=<folder holding it> (command line: --data-home), "
            "or set the MATMINER_DATA environment variable to that folder."
        )
    return file


@contextlib.contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def _read_sample() -> dict[str, Any]:
    source = resources.files("dimfeat") / "data" / SAMPLE_FILE
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        return json.load(fh)
