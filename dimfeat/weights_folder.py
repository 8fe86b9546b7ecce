"""A weights folder: its format, its verification, reading and writing it. No names, no network.

A weights folder holds three files and nothing executable:

``model.safetensors``  the encoder's tensors (safetensors: loading never runs code);
``config.json``        ``format``, ``architecture``, encoder arguments, input featurisation and
                       element normalisation, training data and settings, history, the
                       sha256 of ``model.safetensors``, checked before loading, and
                       ``settings_sha256``, a digest of every setting that shapes the vectors
                       (:func:`vector_settings`), checked before loading;
``README.md``          the model card (YAML front matter for the Hub), written by
                       :func:`save_pretrained` from the same facts.

This is the bottom of the weights layers: :mod:`dimfeat.hub` (Hub I/O) imports it, and
:mod:`dimfeat.weights` (which turns a bundled name, a folder or a Hub id into a folder) imports
both and re-exports the public names below, so ``from dimfeat.weights import load_encoder``
is the documented spelling. Nothing here imports either of them.

Trust model
-----------
What :func:`load_encoder` verifies, before any tensor reaches the encoder:

- ``config.json`` (at most 1 MiB) is parsed as JSON data only (never evaluated) and checked
  against a fixed schema: known ``format`` and ``architecture``, no unknown top-level or encoder
  keys, at most 16 hidden layers per block and integer layer sizes in a sane range, finite
  normalisation numbers of matching shapes, input settings that are numbers (not booleans or
  ``null``), a 64-hex sha256.
- The settings that shape the vectors (architecture and distance expansion, input settings,
  normalisation, the sha256 of the tensors: :func:`vector_settings`) must give the
  ``settings_sha256`` recorded when the weights were saved: a config edited afterwards (say
  ``distance_cutoff`` or ``inputs.max_atoms``, which move the vectors without any error) is
  refused, naming the edited settings. Folders saved before the digest existed have none and
  load unchecked.
- ``model.safetensors`` must be at most :data:`MAX_MODEL_BYTES` (checked on its size before it is
  read: 50 million float32 parameters and the largest header), must match that sha256, must be a
  structurally valid safetensors file (a pickle, a ``torch.save`` zip archive, a truncated or
  garbage file is refused), and its header must list exactly the tensors of the architecture, by
  name, shape and dtype (float32), with at most 50 million parameters; this is checked on the
  header, before the model is built or any tensor is read, so a hostile config cannot make dimfeat
  allocate memory. Every tensor must then be finite (a NaN or infinity is refused, naming the
  tensor). Nothing is unpickled: dimfeat never calls ``torch.load`` or :mod:`pickle` on weights
  files.

What is trusted: the sha256 protects against corruption and tampering *in transit or in a cache*
only; it comes from the same folder or repository as the tensors, so whoever can change the repo
can change both. The numbers themselves (and the vectors they produce) are as good as their
source. Pin Hub revisions to a commit (``owner/name@<40-hex commit>``) so that the weights you
validated are the ones you get; without a pin dimfeat warns, because ``main`` may move.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimfeat._version import __version__
from dimfeat.elements import MAX_Z
from dimfeat.encoder import DISTANCE_EXPANSIONS, DISTANCE_INPUTS, EncoderConfig, SiteNetEncoder
from dimfeat.files import write_file
from dimfeat.fingerprint import sha256_file
from dimfeat.record import TrainingRecord

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "MAX_CARD_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_MODEL_BYTES",
    "MODEL_FILE",
    "SETTINGS_EDITED_ADVICE",
    "WEIGHTS_FILES",
    "InputSettings",
    "WeightsError",
    "check_architecture",
    "check_config",
    "check_model_file",
    "check_model_size",
    "check_safetensors",
    "encoder_files",
    "encoder_sha256",
    "load_encoder",
    "read_config",
    "read_tensors",
    "save_pretrained",
    "settings_sha256",
    "sha256_of",
    "state_checksum",
    "vector_settings",
    "write_file",
    "write_model_card",
]

FORMAT = "dimfeat-weights/1"
ARCHITECTURE = "sitenet-dim"
# The two-channel architecture (dimfeat.channels), named here only to say where to load it.
TWO_CHANNEL_ARCHITECTURE = "sitenet-dim-two-channel"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
#: The files of a weights folder, and the only files fetched from a Hub repo.
WEIGHTS_FILES = (CONFIG_FILE, MODEL_FILE, CARD_FILE)

_CONFIG_KEYS = frozenset(
    {
        "format",
        "architecture",
        "dimfeat_version",
        "name",
        "encoder",
        "inputs",
        "normalisation",
        "training",
        "sha256",
        "settings_sha256",
        "settings_digests",
        "evaluation",
    }
)
_REQUIRED_KEYS = frozenset({"format", "architecture", "encoder", "normalisation", "sha256"})
_NORMALISATION_KEYS = frozenset({"features", "mean", "std", "element_table"})
_INPUT_KEYS = frozenset({"max_atoms", "symprec"})
_MAX_WIDTH = 4096  # bound on any layer width read from a config (memory safety)
_MAX_LAYERS = 16  # bound on the hidden layers of each MLP block
_MAX_PARAMETERS = 50_000_000  # bound on the tensors' total size (the bundled encoder: 72k)
_MAX_CONFIG = 1 << 20  # bound on config.json (bytes); the bundled one is 27 kB
_MAX_HEADER = 1 << 24  # bound on a safetensors JSON header (16 MiB)
#: Bound on ``config.json`` (bytes), checked before it is read or downloaded.
MAX_CONFIG_BYTES = _MAX_CONFIG
#: Bound on ``model.safetensors`` (bytes): the largest file of at most 50 million float32
#: parameters (8 bytes of header length, a header of at most 16 MiB, 4 bytes per parameter),
#: checked on the file's size before it is read or downloaded. The bundled one is 297 kB.
MAX_MODEL_BYTES = 8 + _MAX_HEADER + 4 * _MAX_PARAMETERS
#: Bound on the model card ``README.md`` (bytes), checked before it is downloaded.
MAX_CARD_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHORT_DIGEST = re.compile(r"[0-9a-f]{16}")


class WeightsError(ValueError):
    """Weights that cannot be found, verified or loaded (the message says which and why)."""


@dataclass(frozen=True)
class InputSettings:
    """How structures become inputs for a given set of weights."""

    max_atoms: int = 50
    symprec: float = 0.01


# -- reading ----------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (:func:`dimfeat.fingerprint.sha256_file`)."""
    return sha256_file(path)


# -- the settings that shape the vectors --------------------------------------------------------
def _canonical(value: Any) -> bytes:
    """Canonical JSON bytes of a settings value: sorted keys, no spaces, every number a float
    (so ``8`` and ``8.0``, which build the same encoder, hash alike)."""

    def numbers_as_floats(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): numbers_as_floats(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [numbers_as_floats(x) for x in v]
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        return v

    return json.dumps(
        numbers_as_floats(value), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()


def vector_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a weights ``config.json`` that shape its vectors, flat and complete.

    Every encoder argument (as the encoder is built: defaults filled in, so an omitted key and
    its default are the same setting), every input setting (``max_atoms``, ``symprec``), the
    normalisation numbers (``mean``, ``std``, ``element_table``) and the sha256 of
    ``model.safetensors``. Names, the dimfeat version and the training record do not change a
    vector and are left out.

    Parameters
    ----------
    config : dict
        A parsed ``config.json`` (schema-checked: see :func:`read_config`).

    Returns
    -------
    dict
        ``{"encoder.<key>": ..., "inputs.<key>": ..., "normalisation.<key>": ..., "sha256": ...}``.
    """
    encoder = EncoderConfig.from_dict(config["encoder"]).to_dict()
    inputs = {**InputSettings().__dict__, **(config.get("inputs") or {})}
    norm = config["normalisation"]
    settings: dict[str, Any] = {f"encoder.{k}": v for k, v in encoder.items()}
    settings.update({f"inputs.{k}": v for k, v in inputs.items()})
    settings.update({f"normalisation.{k}": norm[k] for k in ("mean", "std", "element_table")})
    settings["sha256"] = config["sha256"]
    return settings


def settings_sha256(config: dict[str, Any]) -> str:
    """sha256 of :func:`vector_settings` (canonical JSON): recorded as ``settings_sha256``."""
    return _sha256_json(vector_settings(config))


def _settings_digests(config: dict[str, Any]) -> dict[str, str]:
    """A short digest of each of :func:`vector_settings`, to name the one that was edited."""
    return {k: _sha256_json(v)[:16] for k, v in vector_settings(config).items()}


#: What to do about a config whose ``settings_sha256`` no longer matches its settings.
SETTINGS_EDITED_ADVICE = (
    "Weights give the vectors they were trained for only with the settings they were saved with "
    "(an edited distance_cutoff or max_atoms moves every vector, with no other error). Put the "
    "recorded values back (the model card README.md lists them) or fetch the folder again; for "
    "other input settings pass max_atoms=/symprec= to the featuriser (dimfeat featurize "
    "--max-atoms/--symprec) instead of editing the file"
)


def _check_settings_digest(path: Path, config: dict[str, Any]) -> None:
    """Refuse a config whose vector settings are not those its ``settings_sha256`` records."""
    recorded = config.get("settings_sha256")
    if recorded is None:  # saved before the digest existed: nothing to compare with
        return
    actual = settings_sha256(config)
    if actual == recorded:
        return
    saved = config.get("settings_digests") or {}
    now = _settings_digests(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    what = (
        f"edited: {', '.join(changed)}"
        if changed
        else "which one cannot be told: settings_digests is missing or was edited too"
    )
    raise WeightsError(
        f"{path}: settings that shape the vectors were changed after these weights were saved "
        f"({what}); its settings_sha256 is {recorded}, its settings now give {actual}. "
        + SETTINGS_EDITED_ADVICE
    )


def check_model_size(path: Path) -> int:
    """Refuse a ``model.safetensors`` larger than :data:`MAX_MODEL_BYTES`, from its size alone.

    Returns
    -------
    int
        The file's size in bytes (``os.stat``; nothing is read).

    Raises
    ------
    WeightsError
        For a larger file (it was not read).
    """
    size = Path(path).stat().st_size
    if size > MAX_MODEL_BYTES:
        raise WeightsError(
            f"{path} is larger than {MAX_MODEL_BYTES} bytes ({size} bytes): the weights of at most "
            f"{_MAX_PARAMETERS} float32 parameters fit in less, so it is not dimfeat weights (it "
            "was not read); pass the folder of the weights you meant"
        )
    return size


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_WIDTH


def _finite_vector(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )


def _check_encoder(encoder: Any) -> list[str]:
    """Problems with the ``encoder`` block (empty when it is valid)."""
    if not isinstance(encoder, dict):
        return [f"'encoder' must be an object, not {type(encoder).__name__}"]
    known = {f.name for f in fields(EncoderConfig)}
    problems = []
    if unknown := sorted(set(encoder) - known):
        problems.append(
            f"unknown encoder keys {unknown} (dimfeat {__version__} knows {sorted(known)})"
        )
    for key, value in encoder.items():
        if key not in known:
            continue
        if key == "site_features":
            if not (
                isinstance(value, list)
                and value
                and all(isinstance(v, str) for v in value)
                and len(set(value)) == len(value)
            ):
                problems.append("encoder.site_features must be a non-empty list of distinct names")
        elif key == "distance_expansion":
            if value not in DISTANCE_EXPANSIONS:
                problems.append(f"encoder.distance_expansion must be one of {DISTANCE_EXPANSIONS}")
        elif key == "distance_input":
            if value not in DISTANCE_INPUTS:
                problems.append(f"encoder.distance_input must be one of {DISTANCE_INPUTS}")
        elif key == "distance_cutoff":
            if not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0 < value <= 100
            ):
                problems.append("encoder.distance_cutoff must be a number in (0, 100] Å")
        elif key.endswith("_hidden"):
            if not (
                isinstance(value, list)
                and 0 < len(value) <= _MAX_LAYERS
                and all(_is_width(v) for v in value)
            ):
                problems.append(
                    f"encoder.{key} must be a non-empty list of at most {_MAX_LAYERS} widths "
                    f"1..{_MAX_WIDTH}"
                )
        elif not _is_width(value):
            problems.append(f"encoder.{key} must be an integer 1..{_MAX_WIDTH}, not {value!r}")
    return problems


def _check_normalisation(norm: Any, n_features: int) -> list[str]:
    """Problems with the ``normalisation`` block for ``n_features`` site features."""
    if not isinstance(norm, dict):
        return [f"'normalisation' must be an object, not {type(norm).__name__}"]
    problems = []
    if unknown := sorted(set(norm) - _NORMALISATION_KEYS):
        problems.append(f"unknown normalisation keys {unknown}")
    if missing := sorted({"mean", "std", "element_table"} - set(norm)):
        problems.append(f"normalisation lacks {missing}")
        return problems
    for key in ("mean", "std"):
        if not _finite_vector(norm[key], n_features):
            problems.append(f"normalisation.{key} must be {n_features} finite numbers")
    if _finite_vector(norm["std"], n_features) and min(norm["std"]) <= 0:
        problems.append("normalisation.std must be positive")
    features = norm.get("features")
    if features is not None and not (
        isinstance(features, list)
        and len(features) == n_features
        and all(isinstance(f, str) for f in features)
    ):
        problems.append(f"normalisation.features must be {n_features} names")
    table = norm["element_table"]
    if not (
        isinstance(table, list)
        and len(table) == MAX_Z + 1
        and all(_finite_vector(row, n_features) for row in table)
    ):
        problems.append(
            f"normalisation.element_table must be {MAX_Z + 1} rows of {n_features} finite numbers"
        )
    return problems


def _check_inputs(inputs: Any) -> list[str]:
    if not isinstance(inputs, dict):
        return [f"'inputs' must be an object, not {type(inputs).__name__}"]
    problems = []
    if unknown := sorted(set(inputs) - _INPUT_KEYS):
        problems.append(f"unknown inputs keys {unknown}")
    if "max_atoms" in inputs and not _is_width(inputs["max_atoms"]):
        problems.append(f"inputs.max_atoms must be an integer 1..{_MAX_WIDTH}")
    symprec = inputs.get("symprec", 0.01)
    if not (
        isinstance(symprec, int | float)
        and not isinstance(symprec, bool)
        and math.isfinite(symprec)
        and symprec > 0
    ):
        problems.append(f"inputs.symprec must be a positive number, not {symprec!r}")
    return problems


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a weights folder and check it against the schema.

    The file is treated as data: it is parsed, never evaluated, and refused (with every problem
    listed) when it has unknown keys, an unknown format or architecture, or invalid values.

    Parameters
    ----------
    folder : path
        A weights folder.

    Returns
    -------
    config : dict

    Raises
    ------
    WeightsError
        If the file is missing, not JSON, or does not follow the schema.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{folder} is not a dimfeat weights folder: {CONFIG_FILE} is missing")
    with open(path, "rb") as handle:
        raw = handle.read(_MAX_CONFIG + 1)
    if len(raw) > _MAX_CONFIG:
        raise WeightsError(
            f"{path} is larger than {_MAX_CONFIG} bytes; a dimfeat config is about 30 kB, so it "
            "is not one (it was not read further)"
        )
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    return check_config(config, path)


def unsupported_format(config: dict, path: Path | str, architecture: str) -> WeightsError:
    """The error for a ``config.json`` whose format or architecture this dimfeat does not read
    (``architecture``: the one the caller reads)."""
    return WeightsError(
        f"{path}: unsupported weights format {config.get('format')!r} / architecture "
        f"{config.get('architecture')!r}; dimfeat {__version__} reads {FORMAT!r} / "
        f"{architecture!r} (a newer dimfeat may read it: pip install -U dimfeat)"
    )


def check_evaluation(evaluation: Any) -> list[str]:
    """Problems of a config's optional ``evaluation`` block (measured results for the model
    card: a ``description`` string, a ``header`` list and ``rows`` of lists, optional
    ``notes``); ``[]`` when absent or well formed."""
    if evaluation is None:
        return []
    if not (
        isinstance(evaluation, dict)
        and set(evaluation) <= {"description", "header", "rows", "notes", "source"}
        and isinstance(evaluation.get("description", ""), str)
        and isinstance(evaluation.get("header"), list)
        and isinstance(evaluation.get("rows"), list)
        and all(isinstance(row, list) for row in evaluation["rows"])
        and isinstance(evaluation.get("notes", []), list)
    ):
        return [
            "'evaluation' must be an object of description, header, rows (lists), notes, source"
        ]
    return []


def check_config(config: Any, path: Path | str) -> dict[str, Any]:
    """Check a parsed single-channel ``config.json`` (from ``path``) against the schema."""
    if not isinstance(config, dict):
        raise WeightsError(f"{path} must hold a JSON object, not {type(config).__name__}")
    if config.get("format") == FORMAT and config.get("architecture") == TWO_CHANNEL_ARCHITECTURE:
        raise WeightsError(
            f"{path} is a two-channel weights folder ({TWO_CHANNEL_ARCHITECTURE!r}); "
            "load_encoder reads single-channel ones: load it with dimfeat.channels.load_weights "
            "(either kind; dimfeat.weights.read_config reads either config) or "
            "DeepInfoMaxFeaturizer(weights=...)"
        )
    if config.get("format") != FORMAT or config.get("architecture") != ARCHITECTURE:
        raise unsupported_format(config, path, ARCHITECTURE)
    problems = []
    if unknown := sorted(set(config) - _CONFIG_KEYS):
        problems.append(f"unknown keys {unknown}")
    problems += check_evaluation(config.get("evaluation"))
    if missing := sorted(_REQUIRED_KEYS - set(config)):
        problems.append(f"missing keys {missing}")
    else:
        encoder_problems = _check_encoder(config["encoder"])
        problems += encoder_problems
        if not encoder_problems:
            n_features = len(config["encoder"].get("site_features", EncoderConfig().site_features))
            problems += _check_normalisation(config["normalisation"], n_features)
        if not (isinstance(config["sha256"], str) and _SHA256.fullmatch(config["sha256"])):
            problems.append("sha256 must be 64 lowercase hex digits")
    if "settings_sha256" in config and not (
        isinstance(config["settings_sha256"], str) and _SHA256.fullmatch(config["settings_sha256"])
    ):
        problems.append("settings_sha256 must be 64 lowercase hex digits")
    digests = config.get("settings_digests")
    if digests is not None and not (
        isinstance(digests, dict)
        and all(isinstance(v, str) and _SHORT_DIGEST.fullmatch(v) for v in digests.values())
    ):
        problems.append("settings_digests must map setting names to 16 lowercase hex digits")
    if "inputs" in config:
        problems += _check_inputs(config["inputs"])
    if not isinstance(config.get("training"), dict | None):
        problems.append("'training' must be an object or null")
    for key in ("name", "dimfeat_version"):
        if not isinstance(config.get(key, ""), str):
            problems.append(f"{key!r} must be a string")
    if problems:
        raise WeightsError(f"{path} is not a valid dimfeat weights config: " + "; ".join(problems))
    return config


def _check_data_size(header: dict, available: int) -> str:
    """'' when the tensors of a safetensors ``header`` exactly cover ``available`` bytes."""
    try:
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (TypeError, KeyError, IndexError, ValueError):
        return "garbage (its header does not describe tensors)"
    if end != available:
        return f"truncated or padded ({available} bytes of tensor data, the header says {end})"
    return ""


def check_safetensors(path: Path) -> dict:
    """Refuse anything but a well-formed safetensors file, without executing or unpickling it.

    Returns the header's tensor entries (``{name: {"dtype", "shape", "data_offsets"}}``).
    """
    size = path.stat().st_size
    header = None
    with open(path, "rb") as handle:
        head = handle.read(8)
        if head.startswith(b"PK\x03\x04"):
            kind = "a zip archive (torch.save checkpoint)"
        elif head[:1] == b"\x80":
            kind = "a Python pickle (torch.save / pickle.dump output)"
        elif len(head) < 8:
            kind = f"too short ({size} bytes)"
        else:
            n = int.from_bytes(head, "little")
            kind = ""
            if n > min(size - 8, _MAX_HEADER):
                kind = f"truncated or garbage (header length {n} for a {size}-byte file)"
            else:
                try:
                    header = json.loads(handle.read(n))
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                    header = None
                if not isinstance(header, dict):
                    kind = "garbage (its header is not a JSON object)"
                else:
                    kind = _check_data_size(header, size - 8 - n)
    if kind:
        raise WeightsError(
            f"{path} is not a safetensors file: it is {kind}. dimfeat reads safetensors only and "
            "never unpickles weights; re-save the encoder with dimfeat.weights.save_pretrained"
        )
    return {k: v for k, v in header.items() if k != "__metadata__"}


def _expected_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the encoder's tensors for ``config``, without allocating them."""
    encoder_config = EncoderConfig.from_dict(config["encoder"])
    norm = config["normalisation"]
    with torch.device("meta"):
        encoder = SiteNetEncoder(
            encoder_config,
            np.asarray(norm["mean"]),
            np.asarray(norm["std"]),
            raw_table=np.asarray(norm["element_table"]),
        )
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items()}


def check_architecture(path: Path, header: dict, config: dict, *, prefix: str = "") -> None:
    """Refuse a header whose tensors (names, shapes, dtypes) are not the architecture's, and an
    architecture beyond the size bound: before any tensor is allocated.

    ``prefix`` is that of the encoder's tensor names in the file (``"structure."`` for a channel
    of a two-channel file): the header's names carry it, and so do those in the message.
    """
    expected = {prefix + k: v for k, v in _expected_tensors(config).items()}
    n_parameters = sum(math.prod(shape) for shape in expected.values())
    if n_parameters > _MAX_PARAMETERS:
        raise WeightsError(
            f"the architecture in {path.with_name(CONFIG_FILE)} has {n_parameters} parameters, "
            f"more than the {_MAX_PARAMETERS} dimfeat loads (the bundled encoder has about "
            "72,000); it was not built"
        )
    problems = []
    if missing := sorted(set(expected) - set(header)):
        problems.append(f"missing tensors {missing[:5]}")
    if unexpected := sorted(set(header) - set(expected)):
        problems.append(f"unexpected tensors {unexpected[:5]}")
    for name in sorted(set(expected) & set(header)):
        entry = header[name]
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if dtype != "F32":
            problems.append(f"tensor {name!r} is {dtype}, not F32 (float32)")
        if not isinstance(shape, list) or tuple(shape) != expected[name]:
            problems.append(f"tensor {name!r} has shape {shape}, not {list(expected[name])}")
    if problems:
        raise WeightsError(
            f"{path} does not fit the architecture in {CONFIG_FILE}: " + "; ".join(problems[:6])
        )


def check_model_file(folder: Path, sha256: str) -> dict:
    """Verify a folder's ``model.safetensors`` before any tensor is read; return its header.

    Checks, in order: the file exists, its size (at most :data:`MAX_MODEL_BYTES`, on its
    metadata), its sha256 against ``sha256`` (the one ``config.json`` records, read in blocks),
    and its safetensors structure (the header, without executing or unpickling anything). The
    first half of :func:`load_encoder`, shared with the two-channel loader
    (:func:`dimfeat.channels.load_weights`).

    Returns
    -------
    dict
        The header's tensor entries (``{name: {"dtype", "shape", "data_offsets"}}``).
    """
    from safetensors import SafetensorError, safe_open

    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise WeightsError(f"{folder}: {MODEL_FILE} is missing")
    check_model_size(model_path)
    actual = sha256_of(model_path)
    if sha256 != actual:
        raise WeightsError(
            f"{model_path}: sha256 {actual} does not match {sha256} recorded in "
            f"{CONFIG_FILE}; the file is corrupt or was tampered with (delete it and download "
            "again; for Hub weights, pin a revision you trust)"
        )
    header = check_safetensors(model_path)
    try:
        with safe_open(model_path, framework="pt"):  # validates the header; reads no tensor
            pass
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{model_path} is not a valid safetensors file: {exc}") from exc
    return header


def read_tensors(model_path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a verified ``model.safetensors`` (:func:`check_model_file`), refusing any
    that holds NaN or infinite values (such weights give NaN vectors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(model_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{model_path} is not a valid safetensors file: {exc}") from exc
    bad = sorted(name for name, tensor in state.items() if not torch.isfinite(tensor).all())
    if bad:
        raise WeightsError(
            f"{model_path}: tensor(s) {bad[:5]} hold NaN or infinite values; such weights give "
            "NaN vectors and are refused"
        )
    return state


def load_encoder(folder: str | Path) -> tuple[SiteNetEncoder, dict[str, Any]]:
    """Build a :class:`SiteNetEncoder` from a weights folder, after verifying it.

    Checks, in order: the config schema (:func:`read_config`), the size of ``model.safetensors`` (at
    most :data:`MAX_MODEL_BYTES`, on its metadata), its sha256 (read in blocks), its safetensors
    structure, an exact fit of the tensors its header lists (names, shapes, float32) to the
    architecture and the size bound, all before anything is allocated, then that every tensor is
    finite, and that the settings that shape the vectors give the ``settings_sha256`` recorded
    when the folder was saved (when it records one). Only ``safetensors`` is read: a pickle or any
    other file in its place is refused, never executed (see "Trust model" in
    :mod:`dimfeat.weights`).

    Parameters
    ----------
    folder : path
        A weights folder (see :func:`dimfeat.weights.resolve_weights`).

    Returns
    -------
    encoder : SiteNetEncoder
        In eval mode, on the CPU.
    config : dict
        The parsed ``config.json``.

    Raises
    ------
    WeightsError
        If any check fails; the message names the file and the problem.
    """
    folder = Path(folder)
    config = read_config(folder)
    model_path = folder / MODEL_FILE
    header = check_model_file(folder, config["sha256"])
    check_architecture(model_path, header, config)
    state = read_tensors(model_path)
    _check_settings_digest(folder / CONFIG_FILE, config)
    encoder_config = EncoderConfig.from_dict(config["encoder"])
    norm = config["normalisation"]
    encoder = SiteNetEncoder(
        encoder_config,
        np.asarray(norm["mean"]),
        np.asarray(norm["std"]),
        raw_table=np.asarray(norm["element_table"]),
    )
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"{model_path} does not fit the architecture in {CONFIG_FILE}: {exc}"
        ) from exc
    return encoder.eval(), config


# -- writing ----------------------------------------------------------------------------------
def encoder_files(
    encoder: SiteNetEncoder,
    *,
    inputs: InputSettings | dict,
    training: TrainingRecord | dict[str, Any] | None = None,
    name: str,
) -> tuple[bytes, dict[str, Any]]:
    """The bytes of ``model.safetensors`` and the ``config.json`` of an encoder, in memory.

    What :func:`save_pretrained` writes (and what a channel of a two-channel folder records,
    :func:`dimfeat.channels.save_weights`); the arguments are those of :func:`save_pretrained`.

    Returns
    -------
    model : bytes
        The safetensors file.
    config : dict
        The config, with the file's ``sha256``, ``settings_sha256`` and ``settings_digests``.
    """
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    model = save(state, metadata={"format": FORMAT})
    settings = inputs if isinstance(inputs, dict) else inputs.__dict__
    raw = (
        encoder.element_features.cpu().double().numpy() * encoder.feature_std.cpu().double().numpy()
        + encoder.feature_mean.cpu().double().numpy()
    )
    raw[0] = 0.0
    config = {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        "dimfeat_version": __version__,
        "name": name,
        "encoder": encoder.config.to_dict(),
        "inputs": dict(settings),
        "normalisation": {
            "features": list(encoder.config.site_features),
            "mean": encoder.feature_mean.cpu().tolist(),
            "std": encoder.feature_std.cpu().tolist(),
            "element_table": raw.tolist(),
        },
        "training": training.to_dict() if isinstance(training, TrainingRecord) else training,
        "sha256": hashlib.sha256(model).hexdigest(),
    }
    config["settings_sha256"] = settings_sha256(config)
    config["settings_digests"] = _settings_digests(config)
    return model, config


def save_pretrained(
    folder: str | Path,
    encoder: SiteNetEncoder,
    *,
    inputs: InputSettings | dict,
    training: TrainingRecord | dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and the model card to ``folder``.

    Parameters
    ----------
    folder : path
        Created if needed; existing files of the same names are replaced. ``config.json``
        records ``settings_sha256`` (the sha256 of :func:`vector_settings`) and a short digest
        of each setting, checked by :func:`read_config`.
    encoder : SiteNetEncoder
        One encoder; :func:`dimfeat.channels.save_weights` writes a two-channel one too.
    inputs : InputSettings or dict
        ``max_atoms`` and ``symprec`` the encoder expects.
    training : TrainingRecord or dict, optional
        Facts about training (data, settings, history, hardware, wall time) for the config and
        the model card (see :class:`dimfeat.record.TrainingRecord`); ``None`` for untrained
        weights.
    name : str, optional
        Name shown in the model card (default: the folder name).

    Returns
    -------
    folder : Path
    """
    from dimfeat.card import model_card

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, config = encoder_files(
        encoder, inputs=inputs, training=training, name=name or folder.name
    )
    # safetensors' save_file creates owner-only (0600) files; bytes written with open() get
    # the permissions of any new file under the process umask, so the folder can be shared
    write_file(folder / MODEL_FILE, model)
    write_file(folder / CONFIG_FILE, (json.dumps(config, indent=1) + "\n").encode())
    write_file(folder / CARD_FILE, model_card(config).encode())
    return folder


def encoder_sha256(encoder: SiteNetEncoder) -> str:
    """sha256 of what an encoder computes: its architecture and its parameters.

    The architecture (:class:`~dimfeat.encoder.EncoderConfig`, the distance expansion and
    ``distance_cutoff`` included: they build buffers that are not saved with the tensors) and
    :func:`state_checksum` of the tensors (the normalisation among them). With the input
    settings, this is what the vector caches and stream manifests key on.
    """
    return _sha256_json(
        {"architecture": encoder.config.to_dict(), "parameters": state_checksum(encoder)}
    )


def state_checksum(encoder: torch.nn.Module) -> str:
    """sha256 over an encoder's parameters (order-stable), for quick identity checks."""
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_model_card(folder: str | Path) -> Path:
    """Rewrite a weights folder's ``README.md`` from its ``config.json`` (nothing else changes).

    The card :func:`save_pretrained` writes, for a folder whose card was written by an older
    version; run as ``python -m dimfeat.weights_folder FOLDER [FOLDER ...]``.

    Parameters
    ----------
    folder : path
        A single-channel weights folder (:func:`dimfeat.channels.write_model_card` rewrites
        either kind).

    Returns
    -------
    Path
        The card written.
    """
    from dimfeat.card import model_card

    folder = Path(folder)
    card = folder / CARD_FILE
    card.write_text(model_card(read_config(folder)))
    return card


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(f"wrote {write_model_card(name)}")
