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
(``benchmarks/perf/memory.py``).

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
import io
import json
import os
import re
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dimfeat import fingerprint
from dimfeat.chunks import Chunk, count_structures, iter_chunks, limited_chunks, select_source
from dimfeat.datasets import task_frame
from dimfeat.locks import LockHeldError, exclusive
from dimfeat.sources import is_structure_file_name, structure_file_id
from dimfeat.stream_files import (
    MANIFEST_NAME,
    RESUME_HINT,
    DamagedManifest,
    append_csv,
    check_chunk,
    check_records,
    csv_manifest,
    load_manifest,
    part_name,
    prepare_csv,
    prepare_folder,
    run_settings,
    start_manifest,
    truncate,
    verified_csv_bytes,
    write_json,
    write_part,
)

__all__ = [
    "FORMATS",
    "MANIFEST_NAME",
    "RESUME_HINT",
    "Chunk",
    "OutputLockedError",
    "StreamSummary",
    "check_output",
    "count_structures",
    "featurize_to",
    "featurize_to_file",
    "is_structure_file_name",
    "iter_chunks",
    "lock_file",
    "output_format",
    "output_lock",
    "read_features",
    "select_source",
    "structure_file_id",
    "task_frame",
    "write_npy",
    "write_parquet",
]


@dataclass
class StreamSummary:
    """What :func:`featurize_to_file` did."""

    output: str
    n_rows: int
    n_chunks: int
    n_skipped_chunks: int
    n_errors: int


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
        manifest_file = csv_manifest(output)
    else:
        output.mkdir(parents=True, exist_ok=True)
        manifest_file = output / MANIFEST_NAME
    existed = manifest_file.is_file()
    settings = run_settings(source, featurizer, chunk_size, ignore_errors)
    manifest, replaced = start_manifest(manifest_file, settings, resume, as_csv)
    done: dict[str, dict] = manifest["chunks"]
    if limit is not None and sum(r["rows"] for r in done.values()) > limit:
        raise ValueError(
            f"{output} already holds {sum(r['rows'] for r in done.values())} rows, more than "
            f"limit={limit} asks for: read them with read_features and keep the first {limit}, "
            f"or {RESUME_HINT}"
        )
    if as_csv:
        prepare_csv(output, manifest, replaced, existed)
    else:
        prepare_folder(output, manifest, replaced)
    write_json(manifest_file, manifest)

    skipped = n_rows = n_errors = n_chunks = 0
    total = count_structures(source)
    if limit is not None:
        total = limit if total is None else min(total, limit)
    bar = tqdm(total=total, disable=not progress, unit="structure", desc="featurising")
    state: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for chunk in limited_chunks(source, chunk_size, limit, state):
            if bar.total is None and state.get("total") is not None:
                # a tarball or structures file tells its size once read: the bar gets a total
                bar.total = state["total"] if limit is None else min(state["total"], limit)
                bar.refresh()
            n_chunks += 1
            key = str(chunk.index)
            record = done.get(key)
            if record is not None:
                check_chunk(record, chunk, output)
                if record["rows"] == len(chunk.ids):
                    skipped += 1
                    n_rows += record["rows"]
                    n_errors += record["errors"]
                    bar.update(len(chunk.ids))
                    continue
                # an earlier ``limit`` cut this chunk short: featurise it whole
                if as_csv:
                    truncate(output, record["start_byte"])
                del done[key]
                write_json(manifest_file, manifest)
            frame = _featurize_chunk(featurizer, chunk, ignore_errors)
            errors = int(frame["error"].notna().sum()) if ignore_errors else 0
            record = {
                "rows": len(frame),
                "errors": errors,
                "start": chunk.start,
                "fingerprint": chunk.fingerprint(),
            }
            if as_csv:
                record.update(append_csv(output, frame))
            else:
                manifest["pending"] = part_name(chunk.index)
                write_json(manifest_file, manifest)
                record.update(write_part(output, chunk.index, frame))
                manifest["pending"] = None
            done[key] = record
            write_json(manifest_file, manifest)
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
        write_json(manifest_file, manifest)
    bar.close()
    _rewarn(caught)
    return StreamSummary(str(output), n_rows, n_chunks, skipped, n_errors)


def _rewarn(caught: list) -> None:
    """Repeat each distinct warning of the run once (not once per chunk)."""
    seen = set()
    for w in caught:
        key = (w.category, re.sub(r"\d+", "#", str(w.message)))
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


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
    manifest_file = csv_manifest(output) if as_csv else output / MANIFEST_NAME
    if not manifest_file.is_file():
        raise FileNotFoundError(
            f"{output} has no manifest ({manifest_file.name}), so it was not written by "
            "featurize_to_file (or not by this version); read it with pandas instead"
        )
    try:
        manifest = load_manifest(manifest_file)
        records = check_records(manifest, as_csv)
    except DamagedManifest as exc:
        raise ValueError(
            f"{manifest_file} is damaged or was not written by dimfeat ({exc})"
        ) from exc
    if as_csv:
        data = verified_csv_bytes(output, records)
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


# --------------------------------------------------------------------------- single files
#: Output formats of :func:`featurize_to` and the file extension that selects each.
FORMATS = {"parquet": ".parquet", "csv": ".csv", "npy": ".npy", "parts": ""}


def output_format(output: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of an output: ``fmt``, else its extension (none: a folder of parquet parts).

    Raises
    ------
    ValueError
        For an extension that names no format, or a ``fmt`` the name disagrees with.
    """
    path = Path(output)
    suffix = path.suffix.lower()
    by_suffix = next((f for f, ext in FORMATS.items() if ext and ext == suffix), None)
    if fmt is None:
        if by_suffix is not None:
            return by_suffix
        if path.is_dir() or not suffix:
            return "parts"
        raise ValueError(
            f"cannot tell the output format from the extension of {output}: name a .parquet, "
            ".csv or .npy file, or a folder without extension for parquet parts, or give "
            "--format parquet|csv|npy|parts"
        )
    if fmt != "parts" and suffix != FORMATS[fmt]:
        raise ValueError(
            f"--format {fmt} writes a {FORMATS[fmt]} file, and {output} is not named so: name "
            f"it {path.with_suffix(FORMATS[fmt]).name if suffix else path.name + FORMATS[fmt]}"
        )
    return fmt


def _npy_ids(output: Path) -> Path:
    """The table of rows beside a ``.npy`` output: ``vectors.npy`` -> ``vectors.ids.csv``."""
    return output.with_suffix(".ids.csv")


def _written_by_dimfeat(output: Path, fmt: str) -> bool:
    """Whether an existing single-file output is one dimfeat wrote.

    A ``.parquet`` file carries dimfeat's stamp in its schema metadata; a ``.npy`` file is a 2-D
    float32 array with one row per row of the ``OUT.ids.csv`` table dimfeat writes beside it.
    """
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            metadata = pq.read_schema(output).metadata or {}
        except Exception:  # not parquet, unreadable, or no pyarrow: not provably dimfeat's
            return False
        return b"dimfeat" in metadata
    if not _ids_written_by_dimfeat(_npy_ids(output)):
        return False
    try:
        array = np.load(output, mmap_mode="r", allow_pickle=False)
        with _npy_ids(output).open("rb") as fh:
            rows = sum(1 for _ in fh) - 1
    except (OSError, ValueError):
        return False
    return array.ndim == 2 and array.dtype == np.float32 and array.shape[0] == rows


def _ids_written_by_dimfeat(ids: Path) -> bool:
    """Whether ``ids`` is a table of rows as dimfeat writes beside a ``.npy``."""
    if not ids.is_file():
        return False
    with ids.open("rb") as fh:
        return fh.readline().strip() == b"index,id,error"


def check_output(output: str | os.PathLike, fmt: str) -> None:
    """Refuse to overwrite a file (or folder) at a ``.parquet`` or ``.npy`` ``output``, or the
    ``OUT.ids.csv`` beside a ``.npy``, that dimfeat did not write (``ValueError``)."""
    output = Path(output)
    if output.is_dir():
        raise ValueError(
            f"{output} is a folder: give --format parts to write parquet parts into it, or "
            "another output name"
        )
    if output.exists() and not _written_by_dimfeat(output, fmt):
        raise ValueError(
            f"{output} exists and was not written by dimfeat featurize: dimfeat will not "
            "overwrite it; remove it or choose another output"
        )
    ids = _npy_ids(output)
    if fmt == "npy" and ids.exists() and not _ids_written_by_dimfeat(ids):
        raise ValueError(
            f"{ids} exists and was not written by dimfeat featurize (dimfeat writes the rows of "
            f"{output.name} there): dimfeat will not overwrite it; remove it or choose another "
            "output"
        )


def write_parquet(frame: pd.DataFrame, file: str | os.PathLike) -> None:
    """Write rows of :func:`read_features` as one parquet file stamped as dimfeat's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dimfeat._version import __version__

    frame = frame.copy()
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    stamp = {"dimfeat_version": __version__, "n_rows": len(frame)}
    metadata = {**(table.schema.metadata or {}), b"dimfeat": json.dumps(stamp).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), file)


def write_npy(frame: pd.DataFrame, file: str | os.PathLike, ids: str | os.PathLike) -> None:
    """Write rows of :func:`read_features` as a float32 ``.npy`` of vectors and a CSV table
    ``ids`` of ``index, id, error``."""
    labels = [c for c in frame.columns if c not in {"index", "id", "error"}]
    with open(file, "wb") as fh:
        np.save(fh, frame[labels].to_numpy(dtype=np.float32))
    frame[["index", "id", "error"]].to_csv(ids, index=False)


def _assemble(work: Path, output: Path, fmt: str) -> int:
    """Assemble the streamed parts of ``work`` into ``output``; remove them; return the rows."""
    frame = read_features(work)
    output.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of its own (never a file of the user's, such as OUT.tmp)
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        if fmt == "parquet":
            write_parquet(frame, tmp)
        else:
            write_npy(frame, tmp, _npy_ids(output))
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    manifest = json.loads((work / MANIFEST_NAME).read_text(encoding="utf-8"))
    for record in manifest["chunks"].values():  # only the files dimfeat's manifest lists
        (work / record["file"]).unlink(missing_ok=True)
    (work / MANIFEST_NAME).unlink()
    with contextlib.suppress(OSError):  # left in place if anything else is in it
        work.rmdir()
    return len(frame)


def featurize_to(
    source: Any,
    output: str | os.PathLike,
    featurizer=None,
    *,
    format: str | None = None,
    **options: Any,
) -> StreamSummary:
    """Featurise ``source`` into ``output`` in any format: what ``dimfeat featurize`` runs.

    A CSV file or a folder of parquet parts is written by :func:`featurize_to_file`; a single
    ``.parquet`` or ``.npy`` file is streamed into ``OUT.parts`` (so an interrupted run resumes)
    and assembled into ``output`` at the end (:func:`write_parquet`, :func:`write_npy`), under
    one lock on ``output`` for it all. An existing single file that dimfeat did not write is
    never overwritten.

    Parameters
    ----------
    source : path, str, sequence of Structure, pandas Series or DataFrame
        See :func:`iter_chunks` (:func:`select_source` turns command-line INPUTs into one).
    output : str or path
        ``.parquet``, ``.csv`` or ``.npy`` file (the ``.npy`` gets ``OUT.ids.csv`` beside it),
        or a folder of parquet parts.
    featurizer : DeepInfoMaxFeaturizer, optional
        Its weights are loaded before any output exists (bad weights fail first).
    format : {"parquet", "csv", "npy", "parts"}, optional
        Default: from the extension of ``output`` (:func:`output_format`).
    **options
        ``chunk_size``, ``resume``, ``progress``, ``ignore_errors``, ``limit`` of
        :func:`featurize_to_file`.

    Returns
    -------
    StreamSummary
    """
    fmt = output_format(output, format)
    out = Path(output)
    if featurizer is None:
        from dimfeat.featurizer import DeepInfoMaxFeaturizer

        featurizer = DeepInfoMaxFeaturizer()
    if fmt not in {"parquet", "npy"}:
        if hasattr(featurizer, "get_runtime"):
            featurizer.get_runtime()  # bad weights fail here, before the output exists
        return featurize_to_file(source, out, featurizer, **options)
    with output_lock(out):
        check_output(out, fmt)
        if hasattr(featurizer, "get_runtime"):
            featurizer.get_runtime()
        work = out.with_name(out.name + ".parts")
        summary = featurize_to_file(source, work, featurizer, **options)
        _assemble(work, out, fmt)
    return summary
