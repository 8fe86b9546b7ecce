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
another symprec, an edited ``dimfeat/inputs.py``) is another key, so a stored vector is only ever
returned for the computation that produced it. Files are written atomically (a temporary file, then
a rename), so several processes may share one folder.

Layout: ``FOLDER/dimfeat-vectors/<context>/<k[:2]>/<k>.npy`` with ``context.json`` (what the
context holds) in each context folder. Deleting the folder empties the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CODE_MODULES", "VectorCache", "cache_context", "cache_folder", "structure_key"]

#: Format of the stored files; part of every key.
CACHE_FORMAT = 1
#: Modules whose source decides the vector of a structure; their sha256 is part of every key.
CODE_MODULES = ("inputs", "elements", "encoder", "runtime")


@cache
def code_sha256() -> str:
    """sha256 over the source of :data:`CODE_MODULES` and the element table they read."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in [here / f"{name}.py" for name in CODE_MODULES] + [
        here / "data" / "element_features.json"
    ]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
    """sha256 of a pymatgen structure's lattice, fractional coordinates and species.

    Floats enter as their exact float64 bytes; species as text with full-precision
    occupancies (oxidation states included), site by site in order.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(structure.lattice.matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(structure.frac_coords, dtype=np.float64).tobytes())
    species = [
        sorted((str(sp), float(occupancy)) for sp, occupancy in site.species.items())
        for site in structure
    ]
    digest.update(repr(species).encode())
    return digest.hexdigest()


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

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector of a structure key, or None."""
        try:
            return np.load(self._path(key), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None  # absent, or a damaged file: computed again and rewritten

    def put(self, key: str, vector: np.ndarray) -> None:
        """Store a vector (atomically: a temporary file renamed into place)."""
        path = self._path(key)
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "context.json").write_text(json.dumps(self.context, indent=1))
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npy")
        np.save(tmp, np.asarray(vector, dtype=np.float32))
        os.replace(tmp, path)
