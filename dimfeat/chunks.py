"""Reading structures a chunk at a time: :func:`iter_chunks`, and :func:`select_source`.

Every layout goes through :mod:`dimfeat.sources` (the one reader of input layouts, which
:func:`dimfeat.datasets.load_structures` uses for random access): a CGCNN or plain folder, a
tarball (read as a stream, never extracted), a ``.json``/``.json.gz`` file of structures, a
Matbench task name, one CIF or POSCAR file, or structures in memory. A chunk's structures are
parsed only when ``chunk.load()`` is called; its fingerprint proves what a resumed stream
(:mod:`dimfeat.streaming`) already featurised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dimfeat import fingerprint
from dimfeat.datasets import load_split, load_structures, load_structures_file, task_frame
from dimfeat.sources import (
    Listing,
    iter_files,
    list_files,
    memory_items,
    parse_structure,
    read_item,
    source_kind,
    structure_file_id,
)

__all__ = ["Chunk", "count_structures", "iter_chunks", "limited_chunks", "select_source"]


@dataclass
class Chunk:
    """A chunk of the input.

    Attributes
    ----------
    index : int
        Position of the chunk (0, 1, ...).
    start : int
        Position of its first structure in the whole input.
    ids : list of str
        One id per structure (material id, file stem, or the in-memory index).
    load : callable
        ``load()`` returns the chunk's structures; an entry that could not be read (a bad CIF) is
        the exception raised while parsing it instead of a structure.
    digests : callable, optional
        ``digests()`` returns one sha256 per entry, of its content, without parsing it (the CIF
        bytes, or the lattice, coordinates and species of a structure in memory). Without it,
        :meth:`fingerprint` digests what ``load()`` returns.
    """

    index: int
    start: int
    ids: list[str]
    load: Callable[[], list[Any]]
    digests: Callable[[], list[str]] | None = None

    def fingerprint(self, n: int | None = None) -> str:
        """sha256 of the ids and contents of the chunk's first ``n`` entries (default: all).

        Two chunks with the same fingerprint hold the same entries under the same ids, so
        their rows are the same; a resume compares it with the one its manifest recorded.
        """
        n = len(self.ids) if n is None else n
        digests = self.digests() if self.digests is not None else [_digest(x) for x in self.load()]
        payload = json.dumps([self.ids[:n], digests[:n]]).encode()
        return fingerprint.sha256_bytes(payload)


def _digest(item: Any) -> str:
    """sha256 of one entry: CIF bytes, a structure's content, an error, or a type name."""
    from pymatgen.core import IStructure

    digest = hashlib.sha256()
    if isinstance(item, bytes):
        digest.update(b"bytes:" + item)
    elif isinstance(item, IStructure):
        digest.update(b"structure:" + fingerprint.structure(item).encode())
    elif isinstance(item, Exception):
        digest.update(f"error:{type(item).__name__}:{item}".encode())
    else:  # not a structure: featurising it fails the same way whatever its value
        digest.update(f"object:{type(item).__module__}.{type(item).__qualname__}".encode())
    return digest.hexdigest()


def _parse_entry(data: bytes | Exception, where: str) -> Any:
    """A structure parsed from bytes (:func:`dimfeat.sources.parse_structure`), or the error."""
    if isinstance(data, Exception):
        return data
    try:
        return parse_structure(data, where)
    except ValueError as exc:
        return exc


def _read_entry(read: Callable[[], bytes], where: str) -> bytes | Exception:
    try:
        return read()
    except OSError as exc:
        return ValueError(f"could not read the CIF {where}: {exc}")


def _file_chunks(listing: Listing, chunk_size: int) -> Iterator[Chunk]:
    """Chunks of the entries of a folder, tarball or file; parsed only by ``Chunk.load``."""
    ids: list[str] = []
    texts: list[tuple[str, Callable[[], bytes]]] = []
    index = start = 0
    for row, where, read in iter_files(listing):
        ids.append(listing.ids[row])
        texts.append((where, read))
        if len(ids) == chunk_size:
            yield _text_chunk(index, start, ids, texts)
            index, start, ids, texts = index + 1, start + len(ids), [], []
    if ids:
        yield _text_chunk(index, start, ids, texts)


def _text_chunk(index, start, ids, texts) -> Chunk:
    read_once: list[list[bytes | Exception]] = []

    def raw() -> list[bytes | Exception]:
        if not read_once:  # the bytes are read once, for the fingerprint and for parsing
            read_once.append([_read_entry(read, where) for where, read in texts])
        return read_once[0]

    def load() -> list[Any]:
        return [_parse_entry(data, where) for (where, _), data in zip(texts, raw(), strict=True)]

    return Chunk(index, start, ids, load, lambda: [_digest(data) for data in raw()])


def _memory_chunks(structures: list, ids: list[str], chunk_size: int) -> Iterator[Chunk]:
    for index, start in enumerate(range(0, len(structures), chunk_size)):
        part = structures[start : start + chunk_size]
        yield Chunk(
            index,
            start,
            ids[start : start + chunk_size],
            lambda part=part: [read_item(item) for item in part],
        )


def iter_chunks(
    source: Any, chunk_size: int = 1000, *, limit: int | None = None
) -> Iterator[Chunk]:
    """Chunks of ``chunk_size`` structures from a file source or an in-memory sequence.

    Parameters
    ----------
    source : path, str, sequence of structures, pandas Series or DataFrame
        A CGCNN folder or tarball, a folder or tarball of ``*.cif``, a ``.json``/``.json.gz``
        file of structures (matminer and Matbench datasets are such files; see
        :func:`dimfeat.datasets.load_structures_file`), a Matbench task name, or structures in
        memory (a DataFrame needs a ``structure`` column or a single column), in any form
        :func:`dimfeat.inputs.to_structure` reads; an item it cannot read is loaded as the
        error it raised.
    chunk_size : int, default=1000
        Structures per chunk (the last chunk may be shorter).
    limit : int, optional
        Stop after this many structures (the first ``limit`` of the input).

    Yields
    ------
    Chunk
        Structures are parsed only when ``chunk.load()`` is called.

    Notes
    -----
    Order: ``id_prop.csv`` order for a CGCNN folder, archive order for a tarball, sorted file
    names for a plain folder, input order otherwise. The ids are material ids (from
    ``material_id_hash.csv`` or a ``material_id`` column), file names without ``.cif`` (or
    ``.vasp``/``.poscar``), Matbench's ids (``mb-phonons-0001``, ...) for a task name, the
    DataFrame/Series index or positions.
    """
    yield from limited_chunks(source, chunk_size, limit, {})


def limited_chunks(source: Any, chunk_size: int, limit: int | None, state: dict) -> Iterator[Chunk]:
    """:func:`iter_chunks`; sets ``state["cut"]`` when ``limit`` left structures unread, and
    ``state["total"]`` to the number of structures once the source has told it."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an integer >= 0, got {limit!r}")
    state["cut"] = False
    for chunk in _all_chunks(source, chunk_size, state):
        if limit is not None and chunk.start + len(chunk.ids) > limit:
            state["cut"] = True
            keep = limit - chunk.start
            if keep > 0:
                digests = chunk.digests
                yield Chunk(
                    chunk.index,
                    chunk.start,
                    chunk.ids[:keep],
                    lambda load=chunk.load, keep=keep: load()[:keep],
                    None if digests is None else (lambda d=digests, keep=keep: d()[:keep]),
                )
            return
        yield chunk


def _all_chunks(source: Any, chunk_size: int, state: dict) -> Iterator[Chunk]:
    kind = source_kind(source)
    if kind in {"folder", "tarball", "file"}:
        listing = list_files(source)
        state["total"] = len(listing.ids)
        yield from _file_chunks(listing, chunk_size)
    elif kind in {"json", "task"}:
        df = load_structures_file(source) if kind == "json" else task_frame(str(source))
        state["total"] = len(df)
        yield from _memory_chunks(list(df["structure"]), list(df["material_id"]), chunk_size)
    else:
        structures, ids = memory_items(source)
        yield from _memory_chunks(structures, ids, chunk_size)


def count_structures(source: Any) -> int | None:
    """Number of structures in ``source`` when it is cheap to know (``None`` otherwise)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return len(list_files(path).ids) if path.is_dir() else None
    with contextlib.suppress(TypeError, ValueError):
        return len(source)
    return None


def select_source(
    inputs: list[str],
    *,
    matbench: str | None = None,
    data_home: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    part: str = "train",
) -> Any:
    """What :func:`iter_chunks` reads for inputs named as ``dimfeat featurize`` and ``dimfeat
    train`` name them.

    Parameters
    ----------
    inputs : list of str
        One folder, tarball or ``.json``/``.json.gz`` file; one or more CIF/POSCAR files; or a
        Matbench task name.
    matbench : str, optional
        A Matbench task instead of ``inputs`` (which must then be empty).
    data_home : path, optional
        Folder holding the task's ``.json.gz`` (default: ``$MATMINER_DATA``, else matminer's).
    split, part : path and str, optional
        A ``split.json`` restricting one folder, tarball or ``.json`` input to its ``part``.

    Returns
    -------
    str or pandas.Series
        The path of one folder, tarball or ``.json`` file; otherwise a Series of structures (or
        of file paths) indexed by the ids the output rows keep.

    Raises
    ------
    ValueError
        For no input, inputs that cannot be read together, or ``split`` with another input.
    FileNotFoundError
        For an input that does not exist (see :func:`dimfeat.sources.source_kind`).
    """
    if matbench:
        if inputs:
            raise ValueError(
                f"--matbench {matbench} reads the task's structures: give no other INPUT "
                f"(got {' '.join(inputs)})"
            )
        inputs = [matbench]
    if not inputs:
        raise ValueError(
            "give at least one INPUT (a folder, a tarball, a .json/.json.gz file of structures, "
            "CIF/POSCAR files) or --matbench TASK"
        )
    kinds = [source_kind(name) for name in inputs]
    if split:
        if len(inputs) != 1 or kinds[0] not in {"folder", "tarball", "json"}:
            raise ValueError(
                "--split needs one INPUT: a folder or tarball of structures, or a .json file"
            )
        df = load_structures(Path(inputs[0]), ids=load_split(split)[part], progress=True)
        return _series(list(df["structure"]), list(df["material_id"]))
    if kinds == ["task"]:
        frame = task_frame(inputs[0], data_home)
        return _series(list(frame["structure"]), list(frame["material_id"]))
    if len(inputs) == 1 and kinds[0] in {"folder", "tarball", "json"}:
        return inputs[0]
    if all(kind == "file" for kind in kinds):
        ids = [structure_file_id(Path(name).name) for name in inputs]
        if len(set(ids)) < len(ids):  # several POSCARs, or a.cif and a.vasp: keep the paths
            ids = list(inputs)
        return _series([Path(name) for name in inputs], ids)
    raise ValueError(
        "a folder, a tarball, a .json file or a Matbench task must be the only INPUT; several "
        f"INPUTs must all be CIF/POSCAR files (got {', '.join(inputs)})"
    )


def _series(values: list, ids: list) -> Any:
    """A pandas Series of ``values`` indexed by ``ids`` (the ids the output rows keep)."""
    import pandas as pd

    return pd.Series(values, index=pd.Index([str(i) for i in ids], name="id"), dtype=object)
