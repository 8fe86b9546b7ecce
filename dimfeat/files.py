"""Writing files so that a reader never sees one half written: the one atomic write of dimfeat."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["write_file"]


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place.

    The temporary file has a unique name beside ``path`` and is removed if the write fails; the
    file gets the permissions of any file the process creates (``0o666`` less the umask), and a
    reader never sees it half written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
