"""Lock files: one writer at a time for a folder or file that runs would otherwise share.

:func:`exclusive` is a context manager that holds a lock file while a block runs::

    with exclusive(folder / "checkpoint.lock", purpose="DIM training checkpoints"):
        ...  # no other process holds the same lock meanwhile

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds JSON: the ``pid`` and
``host`` of its owner, what it protects (``purpose``), when it was taken and a random ``token``.
A lock that already exists is

- refused (:class:`LockHeldError`, naming the owner's pid, host and the lock file) while its owner
  is alive, or when it was taken on another host (whose processes cannot be checked from here:
  delete the file if that run is over);
- taken over, with a warning, when its owner was a process of this host that no longer exists
  (a run that was killed before it could release it).

The lock is released (its file deleted, if it is still the one this block created) when the
block ends, normally or by an exception. Used by :mod:`dimfeat.training` for ``checkpoint_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LockHeldError", "exclusive", "read_lock"]


class LockHeldError(RuntimeError):
    """A lock held by another live process (the message names it and the lock file)."""


def read_lock(path: str | os.PathLike) -> dict | None:
    """The content of a lock file (``pid``, ``host``, ``purpose``, ``created``, ``token``), or
    ``None`` when there is none; an unreadable file reads as ``{}``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _create(path: Path, content: dict) -> bool:
    """Create the lock file atomically; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(content, handle)
    return True


def _take_over(path: Path, stale: dict) -> bool:
    """Move a stale lock file aside, if it is still the stale one; False when it changed."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False  # another process took it over first
    if read_lock(aside) != stale:  # a live lock created meanwhile: put it back untouched
        with contextlib.suppress(OSError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, *, purpose: str) -> Iterator[dict]:
    """Hold the lock file ``path`` while the block runs (see the module docstring).

    Parameters
    ----------
    path : path
        The lock file; its folder is created if needed.
    purpose : str
        What the lock protects, recorded in the file and named in errors (e.g. ``"DIM training
        checkpoints"``).

    Yields
    ------
    dict
        The content written to the lock file.

    Raises
    ------
    LockHeldError
        If another live process holds the lock, or a process of another host does.

    Warns
    -----
    UserWarning
        When a lock left by a process of this host that no longer exists is taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    mine = {
        "pid": os.getpid(),
        "host": host,
        "purpose": purpose,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "token": uuid.uuid4().hex,
    }
    for _ in range(100):
        if _create(path, mine):
            break
        owner = read_lock(path)
        if owner is None:
            continue  # released meanwhile: try again
        pid = owner.get("pid")
        if not isinstance(pid, int) or owner.get("host") != host or _alive(pid):
            where = (
                f"process {pid} on host {owner.get('host')}"
                if isinstance(pid, int)
                else "an unreadable lock"
            )
            raise LockHeldError(
                f"{path} is held by {where} (since {owner.get('created', '?')}, for "
                f"{owner.get('purpose', purpose)}): another run is using it. Wait for that run "
                "to end or use another folder; if that process is gone (for example another "
                f"machine's run that was killed), delete {path}"
            )
        if _take_over(path, owner):
            warnings.warn(
                f"{path} was left by process {pid} on {host}, which no longer exists (a run "
                "that was killed); its lock was taken over",
                UserWarning,
                stacklevel=3,
            )
    else:  # pragma: no cover - 100 lost races in a row
        raise LockHeldError(f"{path}: could not take the lock for {purpose}")
    try:
        yield mine
    finally:
        if read_lock(path) == mine:
            path.unlink(missing_ok=True)
