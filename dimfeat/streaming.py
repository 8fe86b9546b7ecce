"""Featurise inputs larger than memory: chunked reading, incremental writing, resuming.

:func:`iter_chunks` reads structures a chunk at a time from

- a CGCNN folder (``id_prop.csv`` + ``{idx}.cif``) or a plain folder of ``*.cif`` files;
- a ``.tar.gz``/``.tgz``/``.tar`` of either, read as a stream member by member (never extracted
  and never loaded whole: one pass over the headers finds the tables, a second reads the CIFs);
- a matminer/Matbench ``{name}.json.gz`` file or task name (loaded by matminer, which reads the
  whole file: the structures are in memory, the model inputs and vectors are not);
- an in-memory sequence, pandas Series or one-column DataFrame of structures, in any form
  :func:`dimfeat.inputs.to_structure` reads (``Structure``, structure dicts, CIF/POSCAR text,
  file paths, ASE ``Atoms``).

:func:`featurize_to_file` featurises chunk by chunk and writes each chunk as soon as it is done:
one parquet file per chunk in an output folder with a ``manifest.json``, or rows appended to a
CSV file with a ``.manifest.json`` beside it. An interrupted run started again with
``resume=True`` skips the chunks the manifest lists as finished (their CIFs are read past but not
parsed). Peak memory depends on ``chunk_size``, not on the size of the input
(``benchmarks/memory.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Chunk",
    "StreamSummary",
    "count_structures",
    "featurize_to_file",
    "iter_chunks",
    "read_features",
]

MANIFEST_NAME = "manifest.json"
_FORMAT_VERSION = 1


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
    """

    index: int
    start: int
    ids: list[str]
    load: Callable[[], list[Any]]


@dataclass
class StreamSummary:
    """What :func:`featurize_to_file` did."""

    output: str
    n_rows: int
    n_chunks: int
    n_skipped_chunks: int
    n_errors: int


# --------------------------------------------------------------------------- reading


def _parse_cif(text: str, where: str) -> Any:
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns on rounded occupancies etc.
        try:
            return Structure.from_str(text, fmt="cif")
        except Exception as exc:
            return ValueError(f"could not parse the CIF {where}: {exc}")


def _chunks_of_texts(
    items: Iterator[tuple[str, str, Callable[[], str]]], chunk_size: int
) -> Iterator[Chunk]:
    """Group ``(id, where, read)`` items into chunks; CIFs are parsed only by ``Chunk.load``."""
    ids: list[str] = []
    texts: list[tuple[str, Callable[[], str]]] = []
    index = start = 0
    for id_, where, read in items:
        ids.append(id_)
        texts.append((where, read))
        if len(ids) == chunk_size:
            yield _text_chunk(index, start, ids, texts)
            index, start, ids, texts = index + 1, start + len(ids), [], []
    if ids:
        yield _text_chunk(index, start, ids, texts)


def _text_chunk(index, start, ids, texts) -> Chunk:
    return Chunk(index, start, ids, lambda: [_parse_cif(read(), where) for where, read in texts])


def _folder_items(root: Path) -> Iterator[tuple[str, str, Callable[[], str]]]:
    names, ids = _cgcnn_names(
        _read_text(root / "id_prop.csv"), _read_text(root / "material_id_hash.csv"), str(root)
    )
    if names is None:
        files = sorted(root.glob("*.cif"))
        if not files:
            raise FileNotFoundError(f"{root} holds neither id_prop.csv nor *.cif files")
        names, ids = [f.name for f in files], [f.stem for f in files]
    for name, id_ in zip(names, ids, strict=True):
        file = root / name
        if not file.is_file():
            raise FileNotFoundError(f"CIF {file} listed in id_prop.csv was not found")
        yield id_, str(file), lambda file=file: file.read_text(encoding="utf-8")


def _read_text(file: Path) -> str | None:
    return file.read_text(encoding="utf-8") if file.is_file() else None


def _cgcnn_names(
    id_prop: str | None, hash_text: str | None, where: str
) -> tuple[list[str] | None, list[str] | None]:
    """CIF names and ids in ``id_prop.csv`` order (``None, None`` without id_prop.csv)."""
    from dimfeat.datasets import _material_ids, _parse_id_prop

    if id_prop is None:
        return None, None
    idx = _parse_id_prop(id_prop, f"{where}/id_prop.csv")[0].tolist()
    ids = _material_ids(idx, hash_text, f"{where}/material_id_hash.csv")
    return [f"{i}.cif" for i in idx], ids


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


def _tar_items(archive: Path) -> Iterator[tuple[str, str, Callable[[], str]]]:
    # Pass 1: headers only, plus the two small tables (they may sit at the end of the archive).
    tables: dict[str, str] = {}
    n_cif = 0
    for member, tar in _iter_members(archive):
        base = member.name.rsplit("/", 1)[-1]
        if base in {"id_prop.csv", "material_id_hash.csv"}:
            if base in tables:
                raise ValueError(f"several {base} inside {archive}")
            tables[base] = _member_text(tar, member)
            tables[base + ":prefix"] = member.name[: -len(base)]
        elif base.endswith(".cif"):
            n_cif += 1
    if not n_cif:
        raise FileNotFoundError(f"no CIF inside the tarball {archive}")
    names, ids = _cgcnn_names(tables.get("id_prop.csv"), tables.get("material_id_hash.csv"), "")
    prefix = tables.get("id_prop.csv:prefix", "")
    wanted = None if names is None else {prefix + n: i for n, i in zip(names, ids, strict=True)}
    # Pass 2: the CIFs in archive order (the stream only moves forward).
    seen = 0
    for member, tar in _iter_members(archive):
        if not member.name.endswith(".cif"):
            continue
        if wanted is None:
            id_ = member.name.rsplit("/", 1)[-1][: -len(".cif")]
        elif member.name in wanted:
            id_ = wanted[member.name]
        else:
            continue
        seen += 1
        text = _member_text(tar, member)
        yield id_, f"{archive}:{member.name}", lambda text=text: text
    if wanted is not None and seen != len(wanted):
        raise FileNotFoundError(
            f"{len(wanted) - seen} CIFs listed in id_prop.csv are not in the tarball {archive}"
        )


def _member_text(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    fh = tar.extractfile(member)
    if fh is None:  # pragma: no cover - members are filtered to regular files
        raise FileNotFoundError(f"{member.name} is not a regular file")
    return fh.read().decode("utf-8")


def _is_matbench(source: Any) -> bool:
    if not isinstance(source, str | os.PathLike):
        return False
    text = str(source)
    return text.endswith(".json.gz") or (not Path(text).exists() and text.startswith("matbench_"))


def _matbench_frame(source: str | os.PathLike) -> pd.DataFrame:
    from dimfeat.datasets import load_matbench

    path = Path(source)
    if path.name.endswith(".json.gz"):
        return load_matbench(path.name[: -len(".json.gz")], data_home=path.parent)
    return load_matbench(str(source))


def _read_items(items: list) -> list[Any]:
    """Each item as a Structure (:func:`dimfeat.inputs.to_structure`), or the error it raised."""
    from dimfeat.inputs import to_structure

    out: list[Any] = []
    for item in items:
        try:
            out.append(to_structure(item))
        except Exception as exc:
            out.append(exc)
    return out


def _memory_chunks(structures: list, ids: list[str], chunk_size: int) -> Iterator[Chunk]:
    for index, start in enumerate(range(0, len(structures), chunk_size)):
        part = structures[start : start + chunk_size]
        yield Chunk(
            index, start, ids[start : start + chunk_size], lambda part=part: _read_items(part)
        )


def _in_memory(source: Any) -> tuple[list, list[str]]:
    from dimfeat.inputs import as_structure_list

    if isinstance(source, pd.DataFrame) and "structure" in source.columns:
        source = source["structure"]
    if isinstance(source, pd.Series | pd.DataFrame):
        return as_structure_list(source), [str(i) for i in source.index]
    structures = as_structure_list(source)
    return structures, [str(i) for i in range(len(structures))]


def iter_chunks(
    source: Any, chunk_size: int = 1000, *, limit: int | None = None
) -> Iterator[Chunk]:
    """Chunks of ``chunk_size`` structures from a file source or an in-memory sequence.

    Parameters
    ----------
    source : path, str, sequence of structures, pandas Series or DataFrame
        A CGCNN folder or tarball, a folder or tarball of ``*.cif``, a matminer ``.json.gz``
        file or Matbench task name, or structures in memory (a DataFrame needs a
        ``structure`` column or a single column), in any form
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
    ``material_id_hash.csv``), CIF file stems, the DataFrame/Series index or positions.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit!r}")
    for chunk in _all_chunks(source, chunk_size):
        if limit is not None and chunk.start + len(chunk.ids) > limit:
            keep = limit - chunk.start
            if keep > 0:
                yield Chunk(
                    chunk.index,
                    chunk.start,
                    chunk.ids[:keep],
                    lambda load=chunk.load, keep=keep: load()[:keep],
                )
            return
        yield chunk


def _all_chunks(source: Any, chunk_size: int) -> Iterator[Chunk]:
    if _is_matbench(source):
        df = _matbench_frame(source)
        yield from _memory_chunks(list(df["structure"]), [str(i) for i in df.index], chunk_size)
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            yield from _chunks_of_texts(_folder_items(path), chunk_size)
        elif path.is_file() and tarfile.is_tarfile(path):
            yield from _chunks_of_texts(_tar_items(path), chunk_size)
        elif path.exists():
            raise ValueError(
                f"{path} is not a folder, a tar archive of CIFs or a matminer .json.gz file"
            )
        else:
            raise FileNotFoundError(f"no folder, tarball or matminer file at {path}")
        return
    structures, ids = _in_memory(source)
    yield from _memory_chunks(structures, ids, chunk_size)


def count_structures(source: Any) -> int | None:
    """Number of structures in ``source`` when it is cheap to know (``None`` otherwise)."""
    if isinstance(source, str | os.PathLike) and not _is_matbench(source):
        path = Path(source)
        if path.is_dir():
            names, _ = _cgcnn_names(_read_text(path / "id_prop.csv"), None, str(path))
            return len(names) if names is not None else len(list(path.glob("*.cif")))
        return None
    if _is_matbench(source):
        return None
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
            # the featuriser counts structures from the start of the chunk
            raise type(exc)(
                f"chunk {chunk.index}, whose structure 0 is input position {chunk.start}: {exc}"
            ) from exc
        for k, row in zip(good, rows, strict=True):
            vectors[k] = row[: len(labels)]
            if ignore_errors and isinstance(row[-1], str):
                errors[k] = row[-1]
    frame = pd.DataFrame(vectors, columns=labels)
    frame.insert(0, "id", chunk.ids)
    frame.insert(0, "index", np.arange(chunk.start, chunk.start + len(loaded), dtype=np.int64))
    if ignore_errors:
        frame["error"] = [errors.get(k) for k in range(len(loaded))]
    return frame


def _describe_source(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(Path(source).resolve()) if Path(source).exists() else str(source)
    return f"<in-memory {type(source).__name__}>"


def _write_json(file: Path, content: dict) -> None:
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1), encoding="utf-8")
    tmp.replace(file)


def _settings(source, featurizer, chunk_size: int, ignore_errors: bool) -> dict:
    params = featurizer.get_params()
    return {
        "format_version": _FORMAT_VERSION,
        "source": _describe_source(source),
        "chunk_size": chunk_size,
        "ignore_errors": ignore_errors,
        "weights": None if params.get("weights") is None else str(params["weights"]),
        "max_atoms": params.get("max_atoms"),
        "symprec": params.get("symprec"),
        "disorder": params.get("disorder"),
    }


def _start_manifest(manifest_file: Path, settings: dict, resume: bool) -> dict:
    if resume and manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        changed = [k for k, v in settings.items() if manifest.get("settings", {}).get(k) != v]
        if changed:
            raise ValueError(
                f"{manifest_file} was written with other settings ({', '.join(changed)}); "
                "pass resume=False to start again or write to another output"
            )
        return manifest
    return {"settings": settings, "chunks": {}, "complete": False}


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
        Skip the chunks that the manifest of an earlier run over the same source and settings
        lists as done. With ``False`` an existing output is replaced.
    progress : bool, default=True
        A tqdm progress bar over structures.
    ignore_errors : bool, default=False
        NaN rows with the error text in an ``error`` column for structures that fail (unreadable
        CIF, disordered, overlapping atoms, ...) instead of raising.
    limit : int, optional
        Featurise only the first ``limit`` structures.

    Returns
    -------
    StreamSummary

    Raises
    ------
    ValueError
        If the first failing structure is met with ``ignore_errors=False`` (its position and id
        are in the message; finished chunks stay written), or if the manifest of ``output`` was
        written with other settings.

    Notes
    -----
    Every row carries ``index`` (position in the input) and ``id``, then ``dim_0 ...``; read the
    result back with :func:`read_features`. A chunk is written to a temporary file and renamed,
    then recorded in the manifest, so an interruption loses at most the chunk in progress.
    """
    from tqdm.auto import tqdm

    if featurizer is None:
        from dimfeat.featurizer import DeepInfoMaxFeaturizer

        featurizer = DeepInfoMaxFeaturizer()
    output = Path(output)
    as_csv = output.suffix.lower() == ".csv"
    if as_csv:
        output.parent.mkdir(parents=True, exist_ok=True)
        manifest_file = output.with_name(output.name + ".manifest.json")
    else:
        if output.exists() and not output.is_dir():
            raise ValueError(f"{output} is a file: give a .csv file or a folder for parquet parts")
        output.mkdir(parents=True, exist_ok=True)
        manifest_file = output / MANIFEST_NAME
    settings = _settings(source, featurizer, chunk_size, ignore_errors)
    manifest = _start_manifest(manifest_file, settings, resume)
    done: dict[str, dict] = manifest["chunks"]
    if as_csv:
        _prepare_csv(output, done)
    else:
        _prepare_folder(output, done)
    _write_json(manifest_file, manifest)

    skipped = n_rows = n_errors = n_chunks = 0
    total = count_structures(source)
    if limit is not None:
        total = limit if total is None else min(total, limit)
    bar = tqdm(total=total, disable=not progress, unit="structure", desc="featurising")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for chunk in iter_chunks(source, chunk_size, limit=limit):
            n_chunks += 1
            key = str(chunk.index)
            if key in done:
                skipped += 1
                n_rows += done[key]["rows"]
                n_errors += done[key]["errors"]
                bar.update(len(chunk.ids))
                continue
            frame = _featurize_chunk(featurizer, chunk, ignore_errors)
            errors = int(frame["error"].notna().sum()) if ignore_errors else 0
            record = {"rows": len(frame), "errors": errors, "start": chunk.start}
            if as_csv:
                record["end_byte"] = _append_csv(output, frame)
            else:
                record["file"] = _write_part(output, chunk.index, frame)
            done[key] = record
            _write_json(manifest_file, manifest)
            n_rows += len(frame)
            n_errors += errors
            bar.update(len(frame))
        manifest["complete"] = True
        manifest["n_rows"] = n_rows
        _write_json(manifest_file, manifest)
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


def _prepare_csv(output: Path, done: dict) -> None:
    """Cut a CSV back to the end of its last finished chunk (or remove it if none)."""
    if not done:
        output.unlink(missing_ok=True)
        return
    end = max(r["end_byte"] for r in done.values())
    if not output.is_file() or output.stat().st_size < end:
        raise ValueError(f"{output} is shorter than its manifest says; pass resume=False")
    with output.open("r+b") as fh:
        fh.truncate(end)


def _append_csv(output: Path, frame: pd.DataFrame) -> int:
    header = not output.is_file() or output.stat().st_size == 0
    with output.open("a", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, header=header, index=False)
        fh.flush()
        os.fsync(fh.fileno())
        return fh.tell()


def _prepare_folder(output: Path, done: dict) -> None:
    """Remove parquet parts the manifest does not list (left by an interrupted or older run)."""
    listed = {r["file"] for r in done.values()}
    for part in output.glob("part-*.parquet*"):
        if part.name not in listed:
            part.unlink()
    missing = [f for f in listed if not (output / f).is_file()]
    if missing:
        raise ValueError(
            f"{output} lacks parts its manifest lists ({missing[:3]}); pass resume=False"
        )


def _write_part(output: Path, index: int, frame: pd.DataFrame) -> str:
    name = f"part-{index:05d}.parquet"
    tmp = output / (name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(output / name)
    return name


def read_features(output: str | os.PathLike) -> pd.DataFrame:
    """Read what :func:`featurize_to_file` wrote (finished chunks, in input order).

    Returns
    -------
    pandas.DataFrame
        Columns ``index``, ``id``, ``dim_0 ...`` and ``error`` when errors were ignored.
    """
    output = Path(output)
    if output.suffix.lower() == ".csv":
        return pd.read_csv(output, dtype={"id": str})
    manifest = json.loads((output / MANIFEST_NAME).read_text(encoding="utf-8"))
    parts = sorted(manifest["chunks"].items(), key=lambda kv: int(kv[0]))
    frames = [pd.read_parquet(output / record["file"]) for _, record in parts]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
