"""Crystal datasets: the bundled sample, CGCNN-layout folders, the project split and Matbench.

Nothing here downloads anything. The bundled sample ships inside the package; every other loader
reads a local file and raises :class:`FileNotFoundError` naming the path (and, for matminer data,
the ``MATMINER_DATA`` environment variable) when it is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import math
import os
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

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
    "load_structures_file",
    "matbench_ids",
    "matbench_task",
    "matminer_file",
    "parse_id_prop",
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
    atoms per cell; ``benchmarks/make_sample.py`` rebuilds the file. Every row is from the held-out
    fold, so the sample may be used to score models pre-trained on the ``train`` fold.

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
    header (``idx, material_id``). A tarball is read member by member, never extracted to disk;
    its folder is the one holding ``id_prop.csv``.

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
    with _open_cgcnn(path) as source:
        props = parse_id_prop(source.read_table("id_prop.csv"), source.describe("id_prop.csv"))
        hash_text = source.read_table("material_id_hash.csv", required=False)
        idx = props[0].tolist()
        material_ids = cgcnn_material_ids(idx, hash_text, source.describe("material_id_hash.csv"))
        rows = np.arange(len(idx)) if ids is None else _select(material_ids, ids, path)
        names = [f"{idx[i]}.cif" for i in rows]
        texts = source.read_cifs(names)
    structures = _parse_cifs(texts, [source.describe(n) for n in names], progress, n_jobs)

    n_labels = props.shape[1] - 1
    label_names = (
        CGCNN_LABELS if n_labels == len(CGCNN_LABELS) else [f"target_{k}" for k in range(n_labels)]
    )
    df = pd.DataFrame({"material_id": [material_ids[i] for i in rows], "structure": structures})
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


class _CgcnnSource:
    """Reads the tables and CIFs of a CGCNN folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def read_table(self, name: str, *, required: bool = True) -> str | None:
        file = self.root / name
        if not file.is_file():
            if required:
                raise FileNotFoundError(f"{file} not found: a CGCNN folder needs id_prop.csv.")
            return None
        return file.read_text(encoding="utf-8")

    def read_cifs(self, names: list[str]) -> list[str]:
        texts = []
        for name in names:
            file = self.root / name
            if not file.is_file():
                raise FileNotFoundError(f"CIF {file} listed in id_prop.csv was not found.")
            texts.append(file.read_text(encoding="utf-8"))
        return texts


class _TarSource(_CgcnnSource):
    """Reads a tarball member by member, in archive order, without extracting it."""

    def __init__(self, archive: Path, tar: tarfile.TarFile) -> None:
        self.archive = archive
        self.tar = tar
        self.members = {m.name: m for m in tar.getmembers() if m.isfile()}
        tables = [n for n in self.members if n.rsplit("/", 1)[-1] == "id_prop.csv"]
        if not tables:
            raise FileNotFoundError(f"No id_prop.csv inside the tarball {archive}.")
        if len(tables) > 1:
            raise ValueError(f"Several id_prop.csv inside {archive}: {sorted(tables)}.")
        self.prefix = tables[0][: -len("id_prop.csv")]

    def describe(self, name: str) -> str:
        return f"{self.archive}:{self.prefix}{name}"

    def _read(self, member: tarfile.TarInfo) -> str:
        fh = self.tar.extractfile(member)
        if fh is None:  # pragma: no cover - members are filtered to regular files
            raise FileNotFoundError(f"{self.archive}:{member.name} is not a regular file.")
        return fh.read().decode("utf-8")

    def read_table(self, name: str, *, required: bool = True) -> str | None:
        member = self.members.get(self.prefix + name)
        if member is None:
            if required:
                raise FileNotFoundError(f"{self.describe(name)} not found in the tarball.")
            return None
        return self._read(member)

    def read_cifs(self, names: list[str]) -> list[str]:
        wanted = []
        for name in names:
            member = self.members.get(self.prefix + name)
            if member is None:
                raise FileNotFoundError(
                    f"CIF {self.describe(name)} listed in id_prop.csv is not in the tarball."
                )
            wanted.append(member)
        # Reading in archive order keeps the gzip stream moving forward.
        order = sorted(range(len(wanted)), key=lambda i: wanted[i].offset_data)
        texts: list[str] = [""] * len(wanted)
        for i in order:
            texts[i] = self._read(wanted[i])
        return texts


@contextlib.contextmanager
def _open_cgcnn(path: Path) -> Iterator[_CgcnnSource]:
    if path.is_dir():
        yield _CgcnnSource(path)
        return
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{path} is neither a folder nor a tar archive of a CGCNN dataset.")
    with tarfile.open(path, "r:*") as tar:
        yield _TarSource(path, tar)


def parse_id_prop(text: str | None, where: str) -> pd.DataFrame:
    """Rows ``idx,label_1,...`` of a CGCNN ``id_prop.csv``.

    Parameters
    ----------
    text : str or None
        The file's text.
    where : str
        Named in error messages.

    Returns
    -------
    pandas.DataFrame
        Column 0: ``idx`` (str); the others: labels.
    """
    if not text or not text.strip():
        raise ValueError(f"{where} is empty.")
    props = pd.read_csv(
        io.StringIO(text), header=None, dtype={0: str}, float_precision="round_trip"
    )
    if props.shape[1] < 2:
        raise ValueError(f"{where} must have rows of 'idx,label_1,...' with at least one label.")
    if props[0].duplicated().any():
        raise ValueError(f"{where} lists some idx more than once.")
    return props


def cgcnn_material_ids(idx: list[str], hash_text: str | None, where: str) -> list[str]:
    """Material ids of CGCNN ``idx`` values from ``material_id_hash.csv`` (or the idx).

    Parameters
    ----------
    idx : list of str
    hash_text : str or None
        Text of ``material_id_hash.csv`` (``None``: the ids are the idx).
    where : str
        Named in error messages.

    Returns
    -------
    list of str
    """
    if hash_text is None:
        return list(idx)
    table = pd.read_csv(io.StringIO(hash_text), header=None, dtype=str)
    if table.shape[1] != 2:
        raise ValueError(f"{where} must have two columns: idx,material_id.")
    mapping = dict(zip(table[0], table[1], strict=True))
    missing = [i for i in idx if i not in mapping]
    if missing:
        raise ValueError(
            f"{where} has no material id for idx {missing[:5]} ({len(missing)} in all)."
        )
    material_ids = [mapping[i] for i in idx]
    if len(set(material_ids)) != len(material_ids):
        raise ValueError(f"{where} maps several idx to the same material id.")
    return material_ids


def _select(material_ids: list[str], ids: Sequence[str], path: Path) -> np.ndarray:
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of material ids, not a single string.")
    rows = pd.Index(material_ids).get_indexer(list(ids))
    if (rows < 0).any():
        missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
        raise KeyError(f"{len(missing)} requested ids are not in {path}, e.g. {missing[:5]}.")
    return rows


def _parse_chunk(
    texts: list[str], names: list[str], parent_pid: int | None = None
) -> list[Structure]:
    from pymatgen.core import Structure

    if parent_pid is not None:  # in a joblib worker: do not outlive the parent
        from dimfeat._workers import exit_with_parent

        exit_with_parent(parent_pid)

    out = []
    with warnings.catch_warnings():
        # pymatgen warns about rounded occupancies and missing oxidation states on every CIF.
        warnings.simplefilter("ignore")
        for text, name in zip(texts, names, strict=True):
            try:
                out.append(Structure.from_str(text, fmt="cif"))
            except Exception as exc:
                raise ValueError(f"Could not parse the CIF {name}: {exc}") from exc
    return out


def _parse_cifs(
    texts: list[str], names: list[str], progress: bool, n_jobs: int | None
) -> list[Structure]:
    from joblib import Parallel, cpu_count, delayed
    from tqdm.auto import tqdm

    if n_jobs is None:
        # Below 4 cores, unpickling the workers' structures costs more than parsing saves.
        parallel = len(texts) >= PARALLEL_MIN_CIFS and cpu_count() >= 4
        n_jobs = -1 if parallel else 1
    starts = range(0, len(texts), _CHUNK_SIZE)
    parent = os.getpid()
    jobs = (
        delayed(_parse_chunk)(texts[s : s + _CHUNK_SIZE], names[s : s + _CHUNK_SIZE], parent)
        for s in starts
    )
    structures: list[Structure] = []
    with tqdm(total=len(texts), desc="Parsing CIFs", disable=not progress) as bar:
        for chunk in Parallel(n_jobs=n_jobs, return_as="generator")(jobs):
            structures.extend(chunk)
            bar.update(len(chunk))
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
        then the other columns of a DataFrame file (as plain JSON values).
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
    df = pd.DataFrame({"material_id": ids, "structure": structures})
    for name, values in others.items():
        df[name] = values
    df.attrs["source"] = str(path)
    return df


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
