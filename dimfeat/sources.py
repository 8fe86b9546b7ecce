"""The one reader of input layouts: which layout a source is, its entries, and their bytes.

Every place that takes structures from files (:func:`dimfeat.datasets.load_cgcnn` and
:func:`dimfeat.datasets.load_structures`, random access; :func:`dimfeat.streaming.iter_chunks`,
a stream; the ``dimfeat`` command, both) reads them here, so a layout that works in one works
in all:

``folder``   a CGCNN folder (``id_prop.csv``, optional ``material_id_hash.csv``, ``{idx}.cif``)
             or a plain folder of structure files (``*.cif``; POSCAR files: ``POSCAR*``,
             ``CONTCAR*``, ``*.vasp``, ``*.poscar``);
``tarball``  a ``.tar.gz``/``.tgz``/``.tar`` of a CGCNN folder or of ``*.cif`` files, read as a
             stream member by member (never extracted: one pass over the headers finds the
             tables, a second reads the CIFs);
``file``     one CIF or POSCAR file;
``json``     a ``.json``/``.json.gz`` file of structures, matminer and Matbench dataset files
             included (parsed by :func:`dimfeat.datasets.load_structures_file`);
``task``     a Matbench task name such as ``matbench_phonons`` (read by matminer);
``memory``   an in-memory sequence, pandas Series or DataFrame of structures, in any form
             :func:`dimfeat.inputs.to_structure` reads.

:func:`list_files` lists the entries of a ``folder``, ``tarball`` or ``file`` (ids, and the
labels of a CGCNN ``id_prop.csv``) without reading a structure; :func:`iter_files` yields their
bytes, in the layout's order, optionally only some rows; :func:`parse_structure` turns bytes
into a structure. Nothing here parses JSON datasets or Matbench tasks (the loaders in
:mod:`dimfeat.datasets` do, above this module) or featurises anything.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "STRUCTURE_FILES",
    "Listing",
    "cgcnn_material_ids",
    "is_structure_file_name",
    "iter_files",
    "list_files",
    "memory_items",
    "parse_id_prop",
    "parse_structure",
    "read_item",
    "source_kind",
    "structure_file_id",
]

#: The structure files read from a plain folder, as the error texts name them.
STRUCTURE_FILES = "*.cif, POSCAR*, CONTCAR*, *.vasp, *.poscar"
_TABLES = ("id_prop.csv", "material_id_hash.csv")


# --------------------------------------------------------------------------- names and tables


def is_structure_file_name(name: str) -> bool:
    """Whether a file name is one of the structure files read from a plain folder.

    ``*.cif`` (CIF), and ``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar`` (VASP POSCAR).
    """
    lower = name.lower()
    return lower.endswith((".cif", ".vasp", ".poscar")) or lower.startswith(("poscar", "contcar"))


def structure_file_id(name: str) -> str:
    """The id of a structure file: its name without ``.cif``/``.vasp``/``.poscar``."""
    for suffix in (".cif", ".vasp", ".poscar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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


# --------------------------------------------------------------------------- layouts


def source_kind(source: Any) -> str:
    """``folder``, ``tarball``, ``file``, ``json``, ``task`` or ``memory`` (see the module).

    Raises
    ------
    FileNotFoundError
        For a path that does not exist and is not a Matbench task name.
    ValueError
        For a file of another kind (the message lists the kinds read).
    """
    if not isinstance(source, str | os.PathLike):
        return "memory"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.is_file():
        if path.name.lower().endswith((".json", ".json.gz")):
            return "json"
        if is_structure_file_name(path.name):
            return "file"
        if tarfile.is_tarfile(path):
            return "tarball"
        raise ValueError(
            f"{source} is not a folder, a tarball, a .json/.json.gz file of structures or a "
            f"CIF/POSCAR file ({STRUCTURE_FILES})"
        )
    text = str(source)
    if text.startswith("matbench_") and "/" not in text:
        return "task"
    raise FileNotFoundError(f"no such file or folder: {source}")


@dataclass
class Listing:
    """The entries of a ``folder``, ``tarball`` or ``file``, before any structure is read.

    Attributes
    ----------
    path : Path
    kind : str
        ``folder``, ``tarball`` or ``file``.
    names : list of str
        One file (or archive member) name per entry, in the layout's order.
    ids : list of str
        One id per entry: material ids (``material_id_hash.csv``) or ``idx`` of a CGCNN set,
        file names without extension otherwise.
    labels : pandas.DataFrame or None
        The rows of ``id_prop.csv`` (column 0 the ``idx``), aligned with ``names``; ``None``
        without one.
    prefix : str
        The folder of ``id_prop.csv`` inside a tarball (``""`` at its top).
    """

    path: Path
    kind: str
    names: list[str]
    ids: list[str]
    labels: pd.DataFrame | None = None
    prefix: str = ""

    def where(self, name: str) -> str:
        """How error messages name an entry."""
        if self.kind == "tarball":
            return f"{self.path}:{name}"
        return str(self.path / name) if self.kind == "folder" else str(self.path)

    def table_where(self, table: str) -> str:
        """How error messages name one of the CGCNN tables."""
        return self.where(self.prefix + table)


def _cgcnn(id_prop: str | None, hash_text: str | None, listing: Listing) -> bool:
    """Fill ``listing`` from the CGCNN tables (``False`` without ``id_prop.csv``)."""
    if id_prop is None:
        return False
    where = listing.table_where("id_prop.csv")
    props = parse_id_prop(id_prop, where)
    idx = props[0].tolist()
    if bad := [i for i in idx if not _is_plain_name(f"{i}.cif")]:
        raise ValueError(
            f"{where} lists idx that are not plain file names, so their CIF would be read from "
            f"outside the dataset folder: {bad[:5]!r} ({len(bad)} in all); an idx names the file "
            "{idx}.cif next to id_prop.csv (no '/', '\\' or '..')"
        )
    listing.ids = cgcnn_material_ids(idx, hash_text, listing.table_where("material_id_hash.csv"))
    listing.names = [f"{listing.prefix}{i}.cif" for i in idx]
    listing.labels = props
    return True


def list_files(path: str | os.PathLike[str]) -> Listing:
    """List the entries of a folder, tarball or structure file (no structure is parsed).

    A tarball's headers are read once, in stream mode (with the two small tables).

    Raises
    ------
    FileNotFoundError
        For a folder or tarball with neither ``id_prop.csv`` nor structure files.
    ValueError
        For a malformed table, several ``id_prop.csv`` in a tarball, or another kind of source.
    """
    path = Path(path)
    kind = source_kind(path)
    if kind == "file":
        return Listing(path, kind, [path.name], [structure_file_id(path.name)])
    if kind == "folder":
        listing = Listing(path, kind, [], [])
        tables = [_read_text(path / name) for name in _TABLES]
        if not _cgcnn(*tables, listing):
            names = sorted(
                p.name for p in path.iterdir() if is_structure_file_name(p.name) and p.is_file()
            )
            if not names:
                raise FileNotFoundError(
                    f"{path} holds neither id_prop.csv nor structure files ({STRUCTURE_FILES})"
                )
            listing.names, listing.ids = names, [structure_file_id(n) for n in names]
        return listing
    if kind != "tarball":
        raise ValueError(f"{path} is a {kind} source, not a folder, tarball or structure file")
    tables: dict[str, str] = {}
    prefix = ""
    cifs: list[str] = []
    for member, tar in _iter_members(path):
        base = member.name.rsplit("/", 1)[-1]
        if (base in _TABLES or base.endswith(".cif")) and not _inside_archive(member.name):
            raise ValueError(
                f"the member {member.name!r} of the tarball {path} names a path outside the "
                "archive (absolute, or with '..'); such an archive is refused, not read"
            )
        if base in _TABLES:
            if base in tables:
                raise ValueError(f"several {base} inside {path}")
            tables[base] = _member_bytes(tar, member).decode("utf-8")
            if base == "id_prop.csv":
                prefix = member.name[: -len(base)]
        elif base.endswith(".cif"):
            cifs.append(member.name)
    listing = Listing(path, kind, [], [], prefix=prefix)
    if not _cgcnn(tables.get("id_prop.csv"), tables.get("material_id_hash.csv"), listing):
        if not cifs:
            raise FileNotFoundError(f"no id_prop.csv and no CIF inside the tarball {path}")
        listing.names = cifs
        listing.ids = [structure_file_id(n.rsplit("/", 1)[-1]) for n in cifs]
    return listing


def iter_files(
    listing: Listing, rows: Collection[int] | None = None
) -> Iterator[tuple[int, str, Callable[[], bytes]]]:
    """``(row, where, read)`` for the entries of ``listing`` (only ``rows``, when given).

    Order: the listing's for a folder, archive order for a tarball (a stream only moves
    forward). ``read()`` returns the entry's bytes: a folder's file is read when it is called,
    a tarball member's bytes are read as the stream passes it.

    Raises
    ------
    FileNotFoundError
        When a file or member that ``id_prop.csv`` lists is missing (for a tarball, once the
        archive has been read).
    """
    wanted = range(len(listing.names)) if rows is None else sorted(set(rows))
    if listing.kind != "tarball":
        for row in wanted:
            file = listing.path / listing.names[row] if listing.kind == "folder" else listing.path
            if not file.is_file():
                raise FileNotFoundError(f"CIF {file} listed in id_prop.csv was not found")
            yield row, str(file), file.read_bytes
        return
    position = {listing.names[row]: row for row in wanted}
    seen: set[str] = set()
    for member, tar in _iter_members(listing.path):
        row = position.get(member.name)
        if row is None or member.name in seen:
            continue
        seen.add(member.name)
        data = _member_bytes(tar, member)
        yield row, listing.where(member.name), lambda data=data: data
    if len(seen) != len(position):
        missing = sorted(set(position) - seen)
        raise FileNotFoundError(
            f"{len(missing)} CIFs listed in id_prop.csv are not in the tarball {listing.path}, "
            f"e.g. {missing[:3]}"
        )


def _is_plain_name(name: str) -> bool:
    """Whether ``name`` is one file name: no folder part, not ``..``, nothing absolute."""
    return (
        bool(name)
        and name not in {".", ".."}
        and not any(c in name for c in "/\\\0")
        and os.path.basename(name) == name
    )


def _inside_archive(name: str) -> bool:
    """Whether a tar member name stays inside the archive (relative, no ``..`` part)."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith(("/", "\\")) and ".." not in parts


def _read_text(file: Path) -> str | None:
    return file.read_text(encoding="utf-8") if file.is_file() else None


def _iter_members(archive: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Regular members of a tar archive in stream mode, without keeping their headers."""
    with tarfile.open(archive, "r|*") as tar:
        while True:
            member = tar.next()
            if member is None:
                return
            tar.members = []  # stream mode would otherwise keep every header (O(n) memory)
            if member.isfile():
                yield member, tar


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:  # pragma: no cover - members are filtered to regular files
        raise FileNotFoundError(f"{member.name} is not a regular file")
    return fh.read()


# --------------------------------------------------------------------------- structures


def parse_structure(data: bytes, where: str) -> Structure:
    """Parse the bytes of a structure file: CIF, or POSCAR when ``where`` does not end ``.cif``.

    Raises
    ------
    ValueError
        ``could not parse the CIF <where>: ...`` (or ``the POSCAR file``), also for bytes that
        are not UTF-8 text.
    """
    from pymatgen.core import Structure

    fmt, kind = ("cif", "CIF") if where.lower().endswith(".cif") else ("poscar", "POSCAR file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"could not parse the {kind} {where}: it is not UTF-8 text ({exc})"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns on rounded occupancies etc.
        try:
            return Structure.from_str(text, fmt=fmt)
        except Exception as exc:
            raise ValueError(f"could not parse the {kind} {where}: {exc}") from exc


def memory_items(source: Any) -> tuple[list, list[str]]:
    """The items of an in-memory source and their ids (index of a Series/DataFrame, or
    positions); a DataFrame's ``structure`` column is used when it has one."""
    from dimfeat.inputs import as_structure_list

    if isinstance(source, pd.DataFrame) and "structure" in source.columns:
        source = source["structure"]
    if isinstance(source, pd.Series | pd.DataFrame):
        return as_structure_list(source), [str(i) for i in source.index]
    items = as_structure_list(source)
    return items, [str(i) for i in range(len(items))]


def read_item(item: Any) -> Any:
    """An in-memory item as a Structure (:func:`dimfeat.inputs.to_structure`), or the error
    reading it raised."""
    from dimfeat.inputs import to_structure

    try:
        return to_structure(item)
    except Exception as exc:
        return exc
