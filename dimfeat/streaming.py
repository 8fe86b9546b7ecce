"""Featurise inputs larger than memory: chunked reading, incremental writing, resuming.

:func:`iter_chunks` reads structures a chunk at a time, through :mod:`dimfeat.sources` (the
one reader of input layouts, which :func:`dimfeat.datasets.load_structures` uses for random
access), from

- a CGCNN folder (``id_prop.csv`` + ``{idx}.cif``) or a plain folder of structure files
  (``*.cif``, and POSCAR files: ``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar``);
- a ``.tar.gz``/``.tgz``/``.tar`` of a CGCNN folder or of ``*.cif`` files, read as a stream
  member by member (never extracted and never loaded whole: one pass over the headers finds
  the tables, a second reads the CIFs);
- a ``.json``/``.json.gz`` file of structures, such as a matminer/Matbench dataset file (read
  whole by :func:`dimfeat.datasets.load_structures_file`, as data only), or a Matbench task name
  (loaded by matminer): the structures are in memory, the model inputs and vectors are not;
- one CIF or POSCAR file;
- an in-memory sequence, pandas Series or one-column DataFrame of structures, in any form
  :func:`dimfeat.inputs.to_structure` reads (``Structure``, structure dicts, CIF/POSCAR text,
  file paths, ASE ``Atoms``).

:func:`featurize_to_file` featurises chunk by chunk and writes each chunk as soon as it is done:
one parquet file per chunk in an output folder with a ``manifest.json``, or rows appended to a
CSV file with a ``.manifest.json`` beside it. An interrupted run started again with
``resume=True`` skips the chunks the manifest lists as finished (their CIFs are read past but not
parsed). Peak memory depends on ``chunk_size``, not on the size of the input
(``benchmarks/memory.py``).

What a resume trusts, and how it is proved: the manifest records a fingerprint of every finished
chunk (sha256 of its ids and of the content of its entries: the bytes of each CIF, or the lattice,
coordinates and species of each in-memory structure), a checksum of the encoder's architecture and
weights (:func:`dimfeat.weights.encoder_sha256`) with the input settings, batch size and dimfeat
version, and the sha256 of every file or byte range it wrote. A chunk is skipped only when all of
these match; any mismatch is refused (``resume=False`` / ``--no-resume`` starts again), so a resumed
output equals an uninterrupted one. Only files recorded in dimfeat's own manifest are ever deleted
or truncated. One process at a time writes an output (:func:`output_lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dimfeat import fingerprint
from dimfeat.datasets import load_structures_file, task_frame
from dimfeat.locks import LockHeldError, exclusive
from dimfeat.sources import (
    Listing,
    is_structure_file_name,
    iter_files,
    list_files,
    memory_items,
    parse_structure,
    read_item,
    source_kind,
    structure_file_id,
)

__all__ = [
    "Chunk",
    "OutputLockedError",
    "StreamSummary",
    "count_structures",
    "featurize_to_file",
    "is_structure_file_name",
    "iter_chunks",
    "lock_file",
    "output_lock",
    "read_features",
    "structure_file_id",
    "task_frame",
]

MANIFEST_NAME = "manifest.json"
_FORMAT_VERSION = 4  # 3: every row has an ``error`` column; 4: dimfeat.fingerprint.structure
_PART = re.compile(r"part-(\d{5,})\.parquet")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST = 64 << 20  # bytes; a manifest of a million chunks is ~300 MB, of 36k ~10 MB
#: What every refusal to resume says.
RESUME_HINT = (
    "pass resume=False (command line: --no-resume) to start again, or write to another output"
)


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
        return hashlib.sha256(payload).hexdigest()


@dataclass
class StreamSummary:
    """What :func:`featurize_to_file` did."""

    output: str
    n_rows: int
    n_chunks: int
    n_skipped_chunks: int
    n_errors: int


# --------------------------------------------------------------------------- reading


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
    yield from _limited_chunks(source, chunk_size, limit, {})


def _limited_chunks(
    source: Any, chunk_size: int, limit: int | None, state: dict
) -> Iterator[Chunk]:
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


# --------------------------------------------------------------------------- writing


def _featurize_chunk(featurizer, chunk: Chunk, ignore_errors: bool) -> pd.DataFrame:
    loaded = chunk.load()
    errors: dict[int, str] = {}
    good = []
    for k, item in enumerate(loaded):
        if isinstance(item, Exception):
            if not ignore_errors:
                raise ValueError(f"structure {chunk.start + k} (id {chunk.ids[k]}): {item}")
            errors[k] = "".join(traceback.format_exception_only(type(item), item)).strip()
        else:
            good.append(k)
    labels = featurizer.feature_labels()
    vectors = np.full((len(loaded), len(labels)), np.nan, dtype=np.float32)
    if good:
        try:
            rows = featurizer.featurize_many(
                [loaded[k] for k in good],
                ignore_errors=ignore_errors,
                return_errors=ignore_errors,
                pbar=False,  # the stream shows its own progress
            )
        except (TypeError, ValueError) as exc:
            named = _name_failure(featurizer, loaded, good, chunk)
            if named is not None:
                raise type(exc)(named) from exc
            # the featuriser counts structures from the start of the chunk
            raise type(exc)(
                f"chunk {chunk.index}, whose structure 0 is input position {chunk.start}: {exc}"
            ) from exc
        for k, row in zip(good, rows, strict=True):
            vectors[k] = row[: len(labels)]
            if ignore_errors and isinstance(row[-1], str):
                errors[k] = _error_line(row[-1])
    frame = pd.DataFrame(vectors, columns=labels)
    frame.insert(0, "id", chunk.ids)
    frame.insert(0, "index", np.arange(chunk.start, chunk.start + len(loaded), dtype=np.int64))
    frame["error"] = pd.Series([errors.get(k) for k in range(len(loaded))], dtype=object)
    return frame


_RELATIVE_POSITION = re.compile(r" \(structure \d+\)")


def _error_line(text: str) -> str:
    """The last line of an error's traceback, without the featuriser's position in the chunk
    (the row's ``index`` and ``id`` say which structure it is)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return _RELATIVE_POSITION.sub("", lines[-1] if lines else text).strip()


def _name_failure(featurizer, loaded: list, good: list[int], chunk: Chunk) -> str | None:
    """``structure N (id X): why`` for the first structure of a chunk whose model inputs cannot
    be built, or ``None`` (another featuriser, or the failure is elsewhere)."""
    build = getattr(featurizer, "_inputs", None)
    if build is None:
        return None
    try:
        _, errors = build([loaded[k] for k in good], ignore_errors=True, progress=False)
    except Exception:
        return None
    if not errors:
        return None
    j = min(errors)
    k = good[j]
    return f"structure {chunk.start + k} (id {chunk.ids[k]}): {_error_line(errors[j])}"


def _describe_source(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(Path(source).resolve()) if Path(source).exists() else str(source)
    return f"<in-memory {type(source).__name__}>"


def _write_json(file: Path, content: dict) -> None:
    tmp = file.with_name(file.name + ".tmp")
    # compact: the C encoder (an indent falls back to pure Python, and a manifest is rewritten
    # after every chunk, so a stream of 10,000 chunks spent minutes re-encoding it)
    tmp.write_text(json.dumps(content, separators=(",", ":")), encoding="utf-8")
    tmp.replace(file)




#: Settings that describe a run without changing its rows (recorded, never compared).
_DESCRIPTIVE = frozenset({"source", "weights"})


def _settings(source, featurizer, chunk_size: int, ignore_errors: bool) -> dict:
    """What determines the rows of a run, besides the input (fingerprinted per chunk)."""
    from dimfeat._version import __version__

    params = featurizer.get_params()
    settings = {
        "format_version": _FORMAT_VERSION,
        "dimfeat_version": __version__,
        "source": _describe_source(source),
        "chunk_size": chunk_size,
        "ignore_errors": ignore_errors,
        "weights": None if params.get("weights") is None else str(params["weights"]),
        "disorder": params.get("disorder"),
        "batch_size": params.get("batch_size"),
        "feature_labels": list(featurizer.feature_labels()),
    }
    get_runtime = getattr(featurizer, "get_runtime", None)
    if get_runtime is not None:  # a DeepInfoMaxFeaturizer: its encoder and resolved inputs
        # (encoder_sha256 covers the architecture, distance_cutoff included, and parameters)
        settings.update(get_runtime().vector_settings())
    else:  # another featuriser: identified by its parameters only
        settings["params"] = {k: repr(v) for k, v in sorted(params.items())}
        settings["weights_compared"] = settings["weights"]
    return settings


class _Damaged(ValueError):
    pass


def _load_manifest(file: Path) -> dict:
    """Parse a manifest (JSON object); raise :class:`_Damaged` for anything else."""
    try:
        if file.stat().st_size > _MAX_MANIFEST:
            raise _Damaged(f"larger than {_MAX_MANIFEST} bytes")
        manifest = json.loads(file.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _Damaged(str(exc)) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("settings"), dict):
        raise _Damaged("it is not a JSON object with 'settings'")
    return manifest


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_records(manifest: dict, as_csv: bool) -> list[dict]:
    """The chunk records in order, after checking that they are consistent."""
    chunks = manifest.get("chunks")
    if not isinstance(chunks, dict):
        raise _Damaged("'chunks' is not an object")
    size = manifest["settings"].get("chunk_size")
    if not _is_int(size, 1):
        raise _Damaged("settings.chunk_size is not a positive integer")
    # keys are decimal strings: compare as a set (sorted strings put "10" before "2")
    if set(chunks) != {str(k) for k in range(len(chunks))}:
        raise _Damaged("the finished chunks are not 0, 1, 2, ...")
    records = [chunks[str(k)] for k in range(len(chunks))]
    byte = 0
    for k, record in enumerate(records):
        where = f"chunk {k}"
        if not isinstance(record, dict):
            raise _Damaged(f"{where} is not an object")
        if not (_is_int(record.get("rows"), 1) and record["rows"] <= size):
            raise _Damaged(f"{where} has no valid row count")
        if k < len(records) - 1 and record["rows"] != size:
            raise _Damaged(f"{where} is short but not the last chunk")
        if record.get("start") != k * size or not _is_int(record.get("errors")):
            raise _Damaged(f"{where} has an invalid start or error count")
        for key in ("fingerprint", "sha256"):
            if not (isinstance(record.get(key), str) and _HEX64.fullmatch(record[key])):
                raise _Damaged(f"{where} has no valid {key}")
        if as_csv:
            if record.get("start_byte") != byte or not _is_int(record.get("end_byte"), byte + 1):
                raise _Damaged(f"{where} has an invalid byte range")
            byte = record["end_byte"]
        elif record.get("file") != f"part-{k:05d}.parquet":
            raise _Damaged(f"{where} names an invalid file {record.get('file')!r}")
    pending = manifest.get("pending")
    if not (pending is None or (isinstance(pending, str) and _PART.fullmatch(pending))):
        raise _Damaged(f"invalid pending part {pending!r}")
    return records


def _owned_parts(manifest: dict) -> set[str]:
    """Part files a manifest (of any format version) says dimfeat wrote: only exact part names."""
    names = set()
    chunks = manifest.get("chunks")
    for record in chunks.values() if isinstance(chunks, dict) else []:
        name = record.get("file") if isinstance(record, dict) else None
        if isinstance(name, str) and _PART.fullmatch(name):
            names.add(name)
    pending = manifest.get("pending")
    if isinstance(pending, str) and _PART.fullmatch(pending):
        names.add(pending)
    return names


def _start_manifest(
    manifest_file: Path, settings: dict, resume: bool, as_csv: bool
) -> tuple[dict, dict | None]:
    """The manifest to continue (or a new one) and, when starting again, the one it replaces.

    A manifest that is not provably dimfeat's (see :func:`_dimfeat_manifest`) is refused, with
    or without ``resume``: it licenses nothing, so neither it nor the output beside it is
    overwritten or deleted. The second value is the replaced manifest (``resume=False``), else
    ``None``.
    """
    if not manifest_file.is_file():
        return _new_manifest(settings), None
    old = _dimfeat_manifest(manifest_file, as_csv)
    if not resume:
        return _new_manifest(settings), old
    try:
        manifest = old
        saved = manifest["settings"]
        if saved.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{manifest_file} was written by another version of dimfeat (manifest format "
                f"{saved.get('format_version')!r}, this one writes {_FORMAT_VERSION}); "
                f"{RESUME_HINT}"
            )
        changed = [
            k
            for k in sorted(set(settings) | set(saved))
            if k not in _DESCRIPTIVE and saved.get(k) != settings.get(k)
        ]
        if changed:
            raise ValueError(
                f"{manifest_file} was written with other settings ({', '.join(changed)}): its "
                f"rows are not the ones this run would compute; {RESUME_HINT}"
            )
        _check_records(manifest, as_csv)
    except _Damaged as exc:
        raise ValueError(
            f"{manifest_file} is damaged or was not written by dimfeat ({exc}); {RESUME_HINT}"
        ) from exc
    manifest["settings"] = settings  # same in all compared keys; descriptions are refreshed
    return manifest, None


def _dimfeat_manifest(manifest_file: Path, as_csv: bool) -> dict:
    """The manifest at ``manifest_file`` if it is provably one that dimfeat wrote: a JSON object
    whose ``settings`` carry a manifest ``format_version`` (of this or any other version of
    dimfeat) and whose ``chunks`` are an object. Anything else is refused: dimfeat did not write
    it, so it licenses neither its own replacement nor the deletion of any file."""
    try:
        manifest = _load_manifest(manifest_file)
        if not _is_int(manifest["settings"].get("format_version"), 1):
            raise _Damaged("its settings have no dimfeat manifest format_version")
        if not isinstance(manifest.get("chunks"), dict):
            raise _Damaged("it has no 'chunks' object")
    except _Damaged as exc:
        described = "the CSV beside it" if as_csv else "the files beside it"
        raise ValueError(
            f"{manifest_file} is not a dimfeat manifest ({exc}): dimfeat did not write it and "
            f"will neither overwrite it nor delete {described}; move it away or choose another "
            "output"
        ) from exc
    return manifest


def _new_manifest(settings: dict) -> dict:
    return {"settings": settings, "chunks": {}, "pending": None, "complete": False}


class OutputLockedError(ValueError):
    """Another process is writing the same output (see :func:`output_lock`)."""


def lock_file(output: str | os.PathLike) -> Path:
    """The lock file of an output: ``{output}.lock`` beside it (``vectors.csv.lock``,
    ``parts.lock`` beside the folder ``parts``), never inside a parquet folder."""
    output = Path(os.path.abspath(output))
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``output`` while writing it: a second writer is refused.

    :func:`dimfeat.locks.exclusive` on :func:`lock_file`: an exclusive ``fcntl.flock`` that
    records the owner's pid and host. A lock file left by a dead process is taken over with a
    warning; the lock file is removed when the block ends, also on an error or
    ``KeyboardInterrupt``.

    Parameters
    ----------
    output : str or path
        The output file or folder.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputLockedError
        If another process holds the lock (its pid, host and the lock file are named).
    ValueError
        If a file dimfeat did not write is in the lock file's place (it is left untouched).
    """
    path = lock_file(output)
    held = contextlib.ExitStack()
    try:
        held.enter_context(exclusive(path, purpose=f"writing {Path(os.path.abspath(output))}"))
    except LockHeldError as exc:
        owner = exc.owner
        who = f"process {owner['pid']} on {owner['host']}" if owner else "another process"
        raise OutputLockedError(
            f"{output} is being written by {who} (lock file {path}): two writers would "
            "corrupt it; wait for that run to end (or stop it), or choose another output"
        ) from None
    with held:
        yield path


def featurize_to_file(
    source: Any,
    output: str | os.PathLike,
    featurizer=None,
    *,
    chunk_size: int = 1000,
    resume: bool = True,
    progress: bool = True,
    ignore_errors: bool = False,
    limit: int | None = None,
) -> StreamSummary:
    """Featurise ``source`` chunk by chunk, writing each chunk as soon as it is done.

    Parameters
    ----------
    source : path, str, sequence of Structure, pandas Series or DataFrame
        See :func:`iter_chunks`.
    output : str or path
        A ``.csv`` file (rows appended per chunk; the manifest is ``{output}.manifest.json``) or a
        folder (``part-00000.parquet``, ... one per chunk, and ``manifest.json``; needs pyarrow).
    featurizer : DeepInfoMaxFeaturizer, optional
        Default ``DeepInfoMaxFeaturizer()`` (the bundled weights).
    chunk_size : int, default=1000
        Structures per chunk; peak memory grows with it, not with the size of ``source``.
    resume : bool, default=True
        Skip the chunks that the manifest of an earlier run lists as done, after proving that
        they hold the same input (a fingerprint per chunk) featurised with the same weights and
        settings; a mismatch raises. With ``False`` the files the old manifest lists are
        replaced (command line: ``--no-resume``): only when that manifest is dimfeat's, and a CSV
        only when it is the one that manifest describes (its finished chunks' sha256 match).
    progress : bool, default=True
        A tqdm progress bar over structures.
    ignore_errors : bool, default=False
        NaN rows with the error text in the ``error`` column for structures that fail
        (unreadable CIF, disordered, overlapping atoms, ...) instead of raising.
    limit : int, optional
        Featurise only the first ``limit`` structures. A later call with a larger ``limit`` (or
        none) completes a chunk that an earlier ``limit`` cut short.

    Returns
    -------
    StreamSummary

    Raises
    ------
    ValueError
        If the first failing structure is met with ``ignore_errors=False`` (its position and id
        are in the message; finished chunks stay written); when resuming, if the manifest was
        written with other weights or settings, a finished chunk's input differs from this
        ``source``, the output holds more rows than ``limit`` asks for, or a file it lists was
        changed or removed; if the output holds files that dimfeat did not write (they are never
        deleted), or a manifest that dimfeat did not write (it is never overwritten).
    OutputLockedError
        If another process is writing ``output`` (a ``ValueError``; see :func:`output_lock`).

    Notes
    -----
    Every row carries ``index`` (position in the input) and ``id``, then ``dim_0 ...``, then
    ``error`` (empty, or the error text of a structure that failed under ``ignore_errors``);
    read the result back with :func:`read_features`. A chunk is written to a temporary file and
    renamed, then recorded in the manifest, so an interruption loses at most the chunk in
    progress. The
    vectors of a resumed run are bit-identical to those of an uninterrupted one on the same
    device; anything that would break that is refused. The output is locked for the whole run
    (:func:`output_lock`): a second writer is refused while this one runs.
    """
    if featurizer is None:
        from dimfeat.featurizer import DeepInfoMaxFeaturizer

        featurizer = DeepInfoMaxFeaturizer()
    output = Path(output)
    if output.suffix.lower() != ".csv" and output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file: give a .csv file or a folder for parquet parts")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    with output_lock(output):
        return _stream(
            source, output, featurizer, chunk_size, resume, progress, ignore_errors, limit
        )


def _stream(
    source: Any,
    output: Path,
    featurizer,
    chunk_size: int,
    resume: bool,
    progress: bool,
    ignore_errors: bool,
    limit: int | None,
) -> StreamSummary:
    """:func:`featurize_to_file`, run while it holds the lock of ``output``."""
    from tqdm.auto import tqdm

    as_csv = output.suffix.lower() == ".csv"
    if as_csv:
        manifest_file = _csv_manifest(output)
    else:
        output.mkdir(parents=True, exist_ok=True)
        manifest_file = output / MANIFEST_NAME
    existed = manifest_file.is_file()
    settings = _settings(source, featurizer, chunk_size, ignore_errors)
    manifest, replaced = _start_manifest(manifest_file, settings, resume, as_csv)
    done: dict[str, dict] = manifest["chunks"]
    if limit is not None and sum(r["rows"] for r in done.values()) > limit:
        raise ValueError(
            f"{output} already holds {sum(r['rows'] for r in done.values())} rows, more than "
            f"limit={limit} asks for: read them with read_features and keep the first {limit}, "
            f"or {RESUME_HINT}"
        )
    if as_csv:
        _prepare_csv(output, manifest, replaced, existed)
    else:
        _prepare_folder(output, manifest, replaced)
    _write_json(manifest_file, manifest)

    skipped = n_rows = n_errors = n_chunks = 0
    total = count_structures(source)
    if limit is not None:
        total = limit if total is None else min(total, limit)
    bar = tqdm(total=total, disable=not progress, unit="structure", desc="featurising")
    state: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for chunk in _limited_chunks(source, chunk_size, limit, state):
            if bar.total is None and state.get("total") is not None:
                # a tarball or structures file tells its size once read: the bar gets a total
                bar.total = state["total"] if limit is None else min(state["total"], limit)
                bar.refresh()
            n_chunks += 1
            key = str(chunk.index)
            record = done.get(key)
            if record is not None:
                _check_chunk(record, chunk, output)
                if record["rows"] == len(chunk.ids):
                    skipped += 1
                    n_rows += record["rows"]
                    n_errors += record["errors"]
                    bar.update(len(chunk.ids))
                    continue
                # an earlier ``limit`` cut this chunk short: featurise it whole
                if as_csv:
                    _truncate(output, record["start_byte"])
                del done[key]
                _write_json(manifest_file, manifest)
            frame = _featurize_chunk(featurizer, chunk, ignore_errors)
            errors = int(frame["error"].notna().sum()) if ignore_errors else 0
            record = {
                "rows": len(frame),
                "errors": errors,
                "start": chunk.start,
                "fingerprint": chunk.fingerprint(),
            }
            if as_csv:
                record.update(_append_csv(output, frame))
            else:
                manifest["pending"] = _part_name(chunk.index)
                _write_json(manifest_file, manifest)
                record.update(_write_part(output, chunk.index, frame))
                manifest["pending"] = None
            done[key] = record
            _write_json(manifest_file, manifest)
            n_rows += len(frame)
            n_errors += errors
            bar.update(len(frame))
        extra = sorted(int(k) for k in done if int(k) >= n_chunks)
        if extra:
            raise ValueError(
                f"{output} holds rows of chunks {extra[0]}..{extra[-1]}, which this source does "
                f"not have: it was written from a longer input; {RESUME_HINT}"
            )
        manifest["complete"] = not state.get("cut", False)
        manifest["limit"] = limit
        manifest["n_rows"] = n_rows
        _write_json(manifest_file, manifest)
    bar.close()
    _rewarn(caught)
    return StreamSummary(str(output), n_rows, n_chunks, skipped, n_errors)


def _check_chunk(record: dict, chunk: Chunk, output: Path) -> None:
    """Refuse to keep a finished chunk unless this run's input is the one it was made from."""
    if record["rows"] > len(chunk.ids) or record["fingerprint"] != chunk.fingerprint(
        record["rows"]
    ):
        raise ValueError(
            f"chunk {chunk.index} of {output} (input positions {chunk.start}-"
            f"{chunk.start + record['rows'] - 1}) was featurised from other structures or ids "
            f"than this source holds there: the source changed since it was written; {RESUME_HINT}"
        )


def _rewarn(caught: list) -> None:
    """Repeat each distinct warning of the run once (not once per chunk)."""
    seen = set()
    for w in caught:
        key = (w.category, re.sub(r"\d+", "#", str(w.message)))
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _csv_manifest(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def _truncate(output: Path, end: int) -> None:
    with output.open("r+b") as fh:
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())


def _verified_csv_bytes(output: Path, records: list[dict]) -> bytes:
    """The bytes of the finished chunks of a CSV, after checking each chunk's sha256."""
    end = records[-1]["end_byte"] if records else 0
    if end and (not output.is_file() or output.stat().st_size < end):
        raise ValueError(f"{output} is shorter than its manifest says; {RESUME_HINT}")
    data = b""
    if end:
        with output.open("rb") as fh:
            data = fh.read(end)
    for k, record in enumerate(records):
        rows = data[record["start_byte"] : record["end_byte"]]
        if fingerprint.sha256_bytes(rows) != record["sha256"]:
            raise ValueError(
                f"the rows of chunk {k} in {output} were changed after dimfeat wrote them; "
                f"{RESUME_HINT}"
            )
    return data


def _prepare_csv(output: Path, manifest: dict, replaced: dict | None, existed: bool) -> None:
    """Cut a CSV back to the end of its last finished chunk, or remove it when starting again.

    Only a CSV that a dimfeat manifest describes is truncated or removed: without a manifest
    (``existed`` false) an existing CSV is refused; when starting again (``replaced``, the old
    manifest), the CSV must be the one the old manifest describes (:func:`_check_csv_described`).
    """
    manifest_file = _csv_manifest(output)
    if not existed:
        if output.exists():
            raise ValueError(
                f"{output} exists and has no dimfeat manifest ({manifest_file.name}): dimfeat "
                "did not write it and will not overwrite it; remove it or choose another output"
            )
        return
    if replaced is not None:
        if output.exists():
            _check_csv_described(output, replaced, manifest_file)
            output.unlink()
        return
    records = _check_records(manifest, as_csv=True)
    if not records:
        if output.exists():
            _check_csv_described(output, manifest, manifest_file)
            output.unlink()
        return
    _verified_csv_bytes(output, records)
    _truncate(output, records[-1]["end_byte"])


_CSV_HEADER_START = b"index,id,"


def _check_csv_described(output: Path, manifest: dict, manifest_file: Path) -> None:
    """Refuse unless ``output`` is the CSV that a dimfeat ``manifest`` describes.

    With finished chunks, their byte ranges must exist and match the sha256 the manifest
    recorded (bytes after the last one are an interrupted chunk's). With none, the file must be
    empty or begin as every dimfeat CSV does (``index,id,``): it holds at most the part of a
    first chunk. Anything else is a file dimfeat did not write (or that was changed since), and
    it is never deleted.
    """
    chunks = manifest["chunks"]
    why = None
    byte = 0
    if set(chunks) != {str(k) for k in range(len(chunks))}:
        why = "its finished chunks are not 0, 1, 2, ..."
    else:
        for k in range(len(chunks)):
            record = chunks[str(k)]
            if not (
                isinstance(record, dict)
                and record.get("start_byte") == byte
                and _is_int(record.get("end_byte"), byte + 1)
                and isinstance(record.get("sha256"), str)
            ):
                why = f"chunk {k} has no valid byte range and sha256"
                break
            byte = record["end_byte"]
    if why is None:
        with output.open("rb") as fh:
            data = fh.read(byte if chunks else len(_CSV_HEADER_START))
        if not chunks:
            if not _CSV_HEADER_START.startswith(data):
                why = f"it does not begin with {_CSV_HEADER_START.decode()!r}"
        elif len(data) < byte:
            why = "it is shorter than the rows the manifest lists"
        else:
            for k in range(len(chunks)):
                record = chunks[str(k)]
                if (
                    fingerprint.sha256_bytes(data[record["start_byte"] : record["end_byte"]])
                    != record["sha256"]
                ):
                    why = f"the rows of chunk {k} differ from the ones dimfeat wrote"
                    break
    if why is not None:
        raise ValueError(
            f"{output} is not the CSV that {manifest_file.name} describes ({why}): dimfeat did "
            "not write it (or it was changed since) and will not delete it; move or remove it "
            "yourself, or choose another output"
        )


def _append_csv(output: Path, frame: pd.DataFrame) -> dict:
    start = output.stat().st_size if output.is_file() else 0
    data = frame.to_csv(header=start == 0, index=False).encode("utf-8")
    with output.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
        end = fh.tell()
    if end != start + len(data):  # pragma: no cover - another writer appended meanwhile
        raise RuntimeError(f"{output} changed while dimfeat appended to it")
    return {"start_byte": start, "end_byte": end, "sha256": fingerprint.sha256_bytes(data)}


def _is_part_like(name: str) -> bool:
    """Files that readers of a parquet folder would take as data."""
    lower = name.lower()
    return lower.startswith("part-") or ".parquet" in lower


def _prepare_folder(output: Path, manifest: dict, replaced: dict | None) -> None:
    """Remove what an interrupted or replaced dimfeat run left (only the part files that its
    dimfeat manifest lists); refuse anything dimfeat did not write, and finished parts that were
    changed since."""
    records = _check_records(manifest, as_csv=False)
    owned = _owned_parts(replaced) if replaced is not None else set()
    removable = owned | _owned_parts({"pending": manifest.get("pending")})
    for name in sorted(removable):
        for file in (output / name, output / (name + ".tmp")):
            file.unlink(missing_ok=True)
    manifest["pending"] = None
    listed = {r["file"] for r in records}
    foreign = sorted(
        p.name
        for p in output.iterdir()
        if _is_part_like(p.name) and p.name not in listed and p.name not in removable
    )
    if foreign:
        raise ValueError(
            f"{output} holds files that dimfeat did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); dimfeat never deletes them and will not "
            "mix its parts with them: move them or choose another output folder"
        )
    for record in records:
        file = output / record["file"]
        if not file.is_file() or fingerprint.sha256_file(file) != record["sha256"]:
            raise ValueError(
                f"{file}, listed in the manifest, is missing or was changed after dimfeat wrote "
                f"it; {RESUME_HINT}"
            )


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _write_part(output: Path, index: int, frame: pd.DataFrame) -> dict:
    name = _part_name(index)
    tmp = output / (name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(output / name)
    return {"file": name, "sha256": fingerprint.sha256_file(output / name)}


def read_features(output: str | os.PathLike) -> pd.DataFrame:
    """Read what :func:`featurize_to_file` wrote: its finished chunks, in input order.

    Only rows that the manifest lists as finished are returned (never the half-written rows of
    an interrupted chunk), after checking the sha256 of each part file or CSV byte range.

    Parameters
    ----------
    output : str or path
        The folder or ``.csv`` file given to :func:`featurize_to_file`.

    Returns
    -------
    pandas.DataFrame
        Columns ``index``, ``id``, ``dim_0 ...`` and ``error`` (missing, or the error text of a
        structure that failed under ``ignore_errors``).
        ``df.attrs["complete"]`` says whether the whole input (or ``limit``) was featurised.

    Raises
    ------
    FileNotFoundError
        If there is no manifest (the output was not written by :func:`featurize_to_file`).
    ValueError
        If the manifest is damaged, or a file or byte range it lists was changed.
    """
    output = Path(output)
    as_csv = output.suffix.lower() == ".csv"
    manifest_file = _csv_manifest(output) if as_csv else output / MANIFEST_NAME
    if not manifest_file.is_file():
        raise FileNotFoundError(
            f"{output} has no manifest ({manifest_file.name}), so it was not written by "
            "featurize_to_file (or not by this version); read it with pandas instead"
        )
    try:
        manifest = _load_manifest(manifest_file)
        records = _check_records(manifest, as_csv)
    except _Damaged as exc:
        raise ValueError(
            f"{manifest_file} is damaged or was not written by dimfeat ({exc})"
        ) from exc
    if as_csv:
        data = _verified_csv_bytes(output, records)
        frame = (
            pd.read_csv(io.BytesIO(data), dtype={"id": str, "error": object})
            if data
            else pd.DataFrame()
        )
    else:
        frames = []
        for record in records:
            file = output / record["file"]
            if not file.is_file() or fingerprint.sha256_file(file) != record["sha256"]:
                raise ValueError(
                    f"{file}, listed in the manifest, is missing or was changed after dimfeat "
                    "wrote it"
                )
            frames.append(pd.read_parquet(file))
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(frame) != sum(r["rows"] for r in records):  # pragma: no cover - sha256 checked
        raise ValueError(f"{output} does not hold the rows its manifest lists")
    frame.attrs["complete"] = bool(manifest.get("complete"))
    return frame
