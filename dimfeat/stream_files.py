"""The files of a stream (:func:`dimfeat.streaming.featurize_to_file`): its manifest, the CSV
byte ranges or parquet parts it lists, and the checks that a resume may trust them.

The manifest records what determines the rows (:func:`run_settings`), a fingerprint of every
finished chunk, and the sha256 of every file or byte range written. Only files recorded in
dimfeat's own manifest are ever deleted or truncated.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from dimfeat import fingerprint
from dimfeat.chunks import Chunk
from dimfeat.files import write_file

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "RESUME_HINT",
    "DamagedManifest",
    "append_csv",
    "check_chunk",
    "check_records",
    "csv_manifest",
    "describe_source",
    "load_manifest",
    "part_name",
    "prepare_csv",
    "prepare_folder",
    "run_settings",
    "start_manifest",
    "truncate",
    "verified_csv_bytes",
    "write_json",
    "write_part",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 4  # 3: every row has an ``error`` column; 4: dimfeat.fingerprint.structure
_PART = re.compile(r"part-(\d{5,})\.parquet")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_MANIFEST = 64 << 20  # bytes; a manifest of a million chunks is ~300 MB, of 36k ~10 MB
#: What every refusal to resume says.
RESUME_HINT = (
    "pass resume=False (command line: --no-resume) to start again, or write to another output"
)


def describe_source(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(Path(source).resolve()) if Path(source).exists() else str(source)
    return f"<in-memory {type(source).__name__}>"


def write_json(file: Path, content: dict) -> None:
    # compact: the C encoder (an indent falls back to the pure-Python one, and a manifest is
    # rewritten after every chunk)
    write_file(file, json.dumps(content, separators=(",", ":")).encode("utf-8"))


#: Settings that describe a run without changing its rows (recorded, never compared).
_DESCRIPTIVE = frozenset({"source", "weights"})


def run_settings(source, featurizer, chunk_size: int, ignore_errors: bool) -> dict:
    """What determines the rows of a run, besides the input (fingerprinted per chunk)."""
    from dimfeat._version import __version__

    params = featurizer.get_params()
    settings = {
        "format_version": FORMAT_VERSION,
        "dimfeat_version": __version__,
        "source": describe_source(source),
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


class DamagedManifest(ValueError):
    pass


def load_manifest(file: Path) -> dict:
    """Parse a manifest (JSON object); raise :class:`DamagedManifest` for anything else."""
    try:
        if file.stat().st_size > _MAX_MANIFEST:
            raise DamagedManifest(f"larger than {_MAX_MANIFEST} bytes")
        manifest = json.loads(file.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DamagedManifest(str(exc)) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("settings"), dict):
        raise DamagedManifest("it is not a JSON object with 'settings'")
    return manifest


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_records(manifest: dict, as_csv: bool) -> list[dict]:
    """The chunk records in order, after checking that they are consistent."""
    chunks = manifest.get("chunks")
    if not isinstance(chunks, dict):
        raise DamagedManifest("'chunks' is not an object")
    size = manifest["settings"].get("chunk_size")
    if not _is_int(size, 1):
        raise DamagedManifest("settings.chunk_size is not a positive integer")
    # keys are decimal strings: compare as a set (sorted strings put "10" before "2")
    if set(chunks) != {str(k) for k in range(len(chunks))}:
        raise DamagedManifest("the finished chunks are not 0, 1, 2, ...")
    records = [chunks[str(k)] for k in range(len(chunks))]
    byte = 0
    for k, record in enumerate(records):
        where = f"chunk {k}"
        if not isinstance(record, dict):
            raise DamagedManifest(f"{where} is not an object")
        if not (_is_int(record.get("rows"), 1) and record["rows"] <= size):
            raise DamagedManifest(f"{where} has no valid row count")
        if k < len(records) - 1 and record["rows"] != size:
            raise DamagedManifest(f"{where} is short but not the last chunk")
        if record.get("start") != k * size or not _is_int(record.get("errors")):
            raise DamagedManifest(f"{where} has an invalid start or error count")
        for key in ("fingerprint", "sha256"):
            if not (isinstance(record.get(key), str) and _HEX64.fullmatch(record[key])):
                raise DamagedManifest(f"{where} has no valid {key}")
        if as_csv:
            if record.get("start_byte") != byte or not _is_int(record.get("end_byte"), byte + 1):
                raise DamagedManifest(f"{where} has an invalid byte range")
            byte = record["end_byte"]
        elif record.get("file") != f"part-{k:05d}.parquet":
            raise DamagedManifest(f"{where} names an invalid file {record.get('file')!r}")
    pending = manifest.get("pending")
    if not (pending is None or (isinstance(pending, str) and _PART.fullmatch(pending))):
        raise DamagedManifest(f"invalid pending part {pending!r}")
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


def start_manifest(
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
        if saved.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_file} was written by another version of dimfeat (manifest format "
                f"{saved.get('format_version')!r}, this one writes {FORMAT_VERSION}); "
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
        check_records(manifest, as_csv)
    except DamagedManifest as exc:
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
        manifest = load_manifest(manifest_file)
        if not _is_int(manifest["settings"].get("format_version"), 1):
            raise DamagedManifest("its settings have no dimfeat manifest format_version")
        if not isinstance(manifest.get("chunks"), dict):
            raise DamagedManifest("it has no 'chunks' object")
    except DamagedManifest as exc:
        described = "the CSV beside it" if as_csv else "the files beside it"
        raise ValueError(
            f"{manifest_file} is not a dimfeat manifest ({exc}): dimfeat did not write it and "
            f"will neither overwrite it nor delete {described}; move it away or choose another "
            "output"
        ) from exc
    return manifest


def _new_manifest(settings: dict) -> dict:
    return {"settings": settings, "chunks": {}, "pending": None, "complete": False}


def check_chunk(record: dict, chunk: Chunk, output: Path) -> None:
    """Refuse to keep a finished chunk unless this run's input is the one it was made from."""
    if record["rows"] > len(chunk.ids) or record["fingerprint"] != chunk.fingerprint(
        record["rows"]
    ):
        raise ValueError(
            f"chunk {chunk.index} of {output} (input positions {chunk.start}-"
            f"{chunk.start + record['rows'] - 1}) was featurised from other structures or ids "
            f"than this source holds there: the source changed since it was written; {RESUME_HINT}"
        )


def csv_manifest(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def truncate(output: Path, end: int) -> None:
    with output.open("r+b") as fh:
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())


def verified_csv_bytes(output: Path, records: list[dict]) -> bytes:
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


def prepare_csv(output: Path, manifest: dict, replaced: dict | None, existed: bool) -> None:
    """Cut a CSV back to the end of its last finished chunk, or remove it when starting again.

    Only a CSV that a dimfeat manifest describes is truncated or removed: without a manifest
    (``existed`` false) an existing CSV is refused; when starting again (``replaced``, the old
    manifest), the CSV must be the one the old manifest describes (:func:`_check_csv_described`).
    """
    manifest_file = csv_manifest(output)
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
    records = check_records(manifest, as_csv=True)
    if not records:
        if output.exists():
            _check_csv_described(output, manifest, manifest_file)
            output.unlink()
        return
    verified_csv_bytes(output, records)
    truncate(output, records[-1]["end_byte"])


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


def append_csv(output: Path, frame: pd.DataFrame) -> dict:
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


def prepare_folder(output: Path, manifest: dict, replaced: dict | None) -> None:
    """Remove what an interrupted or replaced dimfeat run left (only the part files that its
    dimfeat manifest lists); refuse anything dimfeat did not write, and finished parts that were
    changed since."""
    records = check_records(manifest, as_csv=False)
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


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_part(output: Path, index: int, frame: pd.DataFrame) -> dict:
    name = part_name(index)
    tmp = output / (name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(output / name)
    return {"file": name, "sha256": fingerprint.sha256_file(output / name)}
