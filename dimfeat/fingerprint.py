"""Fingerprints: the one place that says what makes two structures, files, code or machines "the
same" for dimfeat's caches, manifests and records.

- :func:`structure`: sha256 of a structure's content (lattice, fractional coordinates, species
  and occupancies, site by site), used by the vector cache and by stream manifests;
- :func:`sha256_file` / :func:`sha256_bytes`: content hashes (weights, parts, data files);
- :func:`files`: name, size and sha256 of data files (a folder: of every file in it), as the
  input cache and model cards record them;
- :func:`code`: sha256 over source files, so a cache keyed on it is not used by other code;
- :func:`machine`: the CPU or GPU, core count and library versions that benchmarks and model
  cards record.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["code", "files", "machine", "sha256_bytes", "sha256_file", "structure"]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def structure(item: Any) -> str:
    """sha256 of a pymatgen structure's lattice, fractional coordinates and species.

    Floats enter as their exact float64 bytes; species as text with full-precision occupancies
    (oxidation states included), sorted within a site, site by site in order. Two structures
    with the same fingerprint give the same vector; any moved atom, relabelled species or
    other order is another fingerprint.

    Parameters
    ----------
    item : pymatgen.core.IStructure
        A ``Structure`` or ``IStructure``.

    Returns
    -------
    str
        64 hex digits.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(item.lattice.matrix, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(item.frac_coords, dtype=np.float64).tobytes())
    species = [
        sorted((str(sp), float(occupancy)) for sp, occupancy in site.species.items())
        for site in item
    ]
    digest.update(repr(species).encode())
    return digest.hexdigest()


def files(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Name, size and sha256 of each file; a folder as one entry over every file in it.

    A copy of the same data gives the same entries (content, not modification time, counts).

    Returns
    -------
    list of dict
        ``{"name", "bytes", "sha256"}`` per file; ``{"name", "folder": True, "sha256"}`` per
        folder (sha256 over the name, size and sha256 of each of its files, in name order).
    """
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            digest = hashlib.sha256()
            for file in sorted(p for p in path.iterdir() if p.is_file()):
                digest.update(repr((file.name, file.stat().st_size, sha256_file(file))).encode())
            out.append({"name": path.name, "folder": True, "sha256": digest.hexdigest()})
        else:
            size = path.stat().st_size
            out.append({"name": path.name, "bytes": size, "sha256": sha256_file(path)})
    return out


def code(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 over the names and contents of source (or data) files, in the order given."""
    digest = hashlib.sha256()
    for path in map(Path, paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: Any = None) -> dict[str, Any]:
    """The machine a result was measured on.

    Parameters
    ----------
    device : torch.device or str, optional
        A CUDA device adds its name and the CUDA version.

    Returns
    -------
    dict
        ``cpu`` (model name), ``cores``, ``memory_gib`` (where known), ``python``, ``torch``,
        ``torch_threads``, ``platform``, ``date`` (UTC), ``cuda`` (device name or ``None``) and
        ``description``, one line for a model card or a printout.
    """
    import torch

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    cuda = None
    if device is not None and torch.device(device).type == "cuda":
        cuda = f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1) if memory else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cuda": cuda,
    }
    cpu = f"CPU: {info['cpu']}, {info['cores']} cores"
    if info["memory_gib"]:
        cpu += f", {info['memory_gib']:.0f} GiB"
    info["description"] = cuda if cuda else cpu
    return info
