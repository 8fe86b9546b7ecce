"""A cache of crystal vectors on disk, keyed by structure and by everything that makes a vector.

:class:`~dimfeat.DeepInfoMaxFeaturizer` takes ``cache=FOLDER`` (or a :class:`joblib.Memory`):
structures featurised once are read back instead of encoded again, which makes repeated
transforms of the same structures (cross-validation, grid search, notebooks run again) free.

A vector is stored under a key that holds, hashed with sha256:

- the *context* (:func:`cache_context`): the sha256 of the encoder (its architecture, the
  distance expansion and cutoff included, and its parameters:
  :meth:`dimfeat.runtime.EncoderRuntime.vector_settings`), the input
  settings (``max_atoms``, ``symprec``, ``disorder``), the width of the vector, the dimfeat
  version, a sha256 of the source of the modules that turn a structure into a vector
  (:data:`CODE_MODULES`), the torch version and the device type;
- the *structure* (:func:`structure_key`): its lattice matrix, fractional coordinates (float64
  bytes, exactly) and, per site, its species and occupancies.

Anything else (another weights file, a retrained encoder, another ``distance_cutoff``, a moved atom,
another symprec, an edited ``dimfeat/inputs/cell.py``) is another key, so a stored vector is only
ever returned for the computation that produced it.

Layout: ``FOLDER/dimfeat-vectors/<context>/shards/<uuid>.npz``, with ``context.json`` (what the
context holds) in each context folder. A shard holds the keys and the vectors stored by one call
(:meth:`VectorCache.put_many`; a transform or a streamed chunk is one call), so a cache of 100,000
structures is a few hundred files, not 100,000. Shards are written atomically (a temporary file,
then a rename) and never modified; each process writes its own, so several processes may share
one folder, and an index of the shards is read on first use and refreshed when a key is missing.
A damaged shard is passed over (its vectors are computed again and stored in a new shard).
Deleting the folder empties the cache. Folders of the older one-file-per-structure layout
(format 1) are not read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from dimfeat import fingerprint
from dimfeat.files import write_file

__all__ = ["CODE_MODULES", "VectorCache", "cache_context", "cache_folder", "structure_key"]

#: Format of the stored files; part of every key.
CACHE_FORMAT = 2
#: Modules (a package: every module in it) whose source decides the vector of a structure; their
#: sha256 is part of every key.
CODE_MODULES = ("inputs", "elements", "encoder", "runtime")


@cache
def code_sha256() -> str:
    """sha256 over the source of :data:`CODE_MODULES` and the element table they read."""
    here = Path(__file__).resolve().parent
    files = []
    for name in CODE_MODULES:
        package = here / name
        files += sorted(package.glob("*.py")) if package.is_dir() else [here / f"{name}.py"]
    return fingerprint.code([*files, here / "data" / "element_features.json"])


def cache_folder(cache: Any) -> Path | None:
    """The folder of a ``cache`` argument: a str or path, a :class:`joblib.Memory`, or None.

    A ``Memory`` without a location (``Memory(None)``) caches nothing, as in scikit-learn.
    """
    if cache is None:
        return None
    location = getattr(cache, "location", cache)
    if location is None:
        return None
    return Path(os.fspath(location)).expanduser()


def cache_context(
    *,
    encoder_sha256: str,
    n_features: int,
    max_atoms: int,
    symprec: float,
    disorder: str,
    device_type: str,
) -> dict:
    """What, besides the structure, a vector depends on (see the module docstring)."""
    import torch

    from dimfeat._version import __version__

    return {
        "format": CACHE_FORMAT,
        "encoder_sha256": encoder_sha256,
        "n_features": int(n_features),
        "max_atoms": int(max_atoms),
        "symprec": float(symprec),
        "disorder": disorder,
        "dimfeat": __version__,
        "code_sha256": code_sha256(),
        "torch": torch.__version__,
        "device": device_type,
    }


def structure_key(structure: Any) -> str:
    """sha256 of a pymatgen structure's content (:func:`dimfeat.fingerprint.structure`)."""
    return fingerprint.structure(structure)


class VectorCache:
    """Vectors on disk under one context (see the module docstring).

    Parameters
    ----------
    folder : path
        The cache folder (created on first write).
    context : dict
        From :func:`cache_context`.
    """

    def __init__(self, folder: str | Path, context: dict) -> None:
        text = json.dumps(context, sort_keys=True)
        self.context = context
        self.context_key = hashlib.sha256(text.encode()).hexdigest()[:32]
        self.root = Path(folder) / "dimfeat-vectors" / self.context_key
        self.shards = self.root / "shards"
        self._index: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()  # shard files read (or found damaged)

    def refresh(self) -> None:
        """Read the shards written since the last refresh (by any process) into the index."""
        try:
            names = [n for n in os.listdir(self.shards) if n.endswith(".npz")]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in sorted(set(names) - self._seen):
            self._seen.add(name)
            try:
                with np.load(self.shards / name, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
                if keys.ndim != 1 or vectors.ndim != 2 or len(keys) != len(vectors):
                    continue
            except (ValueError, OSError, KeyError, EOFError):
                continue  # damaged: its vectors are computed again and stored anew
            for key, vector in zip(keys.tolist(), vectors, strict=True):
                self._index[str(key)] = vector

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector of a structure key, or None."""
        found = self._index.get(key)
        if found is None:
            self.refresh()
            found = self._index.get(key)
        return found

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """The stored vectors of structure keys (None where absent), after one refresh."""
        self.refresh()
        return [self._index.get(key) for key in keys]

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store one vector (a shard of one; :meth:`put_many` stores many in one file)."""
        self.put_many([key], np.asarray(vector)[None])

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors, one row per key, as one shard file (atomically)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if not len(keys):
            return
        if vectors.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys for {vectors.shape[0]} vectors")
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "context.json").write_text(json.dumps(self.context, indent=1))
        self.shards.mkdir(exist_ok=True)
        name = f"{uuid.uuid4().hex}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(list(keys), dtype="U64"), vectors=vectors)
        write_file(self.shards / name, buffer.getvalue())
        self._seen.add(name)
        for key, vector in zip(keys, vectors, strict=True):
            self._index[key] = vector
