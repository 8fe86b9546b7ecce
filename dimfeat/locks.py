"""Lock files: one writer at a time for an output or a folder that runs would otherwise share.

:func:`exclusive` is a context manager that holds a lock file while a block runs::

    with exclusive(folder / "checkpoint.lock", purpose="DIM training checkpoints"):
        ...  # no other process holds the same lock meanwhile

The lock is an exclusive ``fcntl.flock`` on the lock file, which records (JSON) the ``pid`` and
``host`` of its owner, what it protects (``purpose``) and when it was taken. The kernel releases
a flock when its process ends, however it ends (killed, crashed), so:

- while the owner lives, another process (or another block of this one) is refused with
  :class:`LockHeldError`, naming the owner's pid and host and the lock file;
- a lock file left behind by a dead process of this host never blocks: it is taken over, with a
  warning naming the process that left it;
- a lock file left by a process of *another* host is refused (on a shared file system without
  working flock its owner cannot be checked from here): the message says to delete it if that
  run is over;
- a file that is not a dimfeat lock in the lock's place is refused and left untouched.

The lock file is removed when the block ends, also on an error or ``KeyboardInterrupt``. On
systems without ``fcntl`` nothing is locked. Used by :mod:`dimfeat.streaming` (one writer per
output) and :mod:`dimfeat.training` (one run per ``checkpoint_dir``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LockHeldError", "exclusive", "read_lock"]


class LockHeldError(RuntimeError):
    """A lock held by another process (the message names it and the lock file).

    Attributes
    ----------
    path : Path
        The lock file.
    owner : dict
        What the lock file says of its owner (``pid``, ``host``, ...; empty when unreadable).
    """

    def __init__(self, message: str, path: Path, owner: dict):
        super().__init__(message)
        self.path = path
        self.owner = owner


def _owner(data: bytes) -> dict | None:
    """The owner a lock file records, or ``None`` if it is not a dimfeat lock file."""
    try:
        owner = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if (
        isinstance(owner, dict)
        and isinstance(owner.get("pid"), int)
        and not isinstance(owner.get("pid"), bool)
        and isinstance(owner.get("host"), str)
    ):
        return owner
    return None


def read_lock(path: str | os.PathLike) -> dict | None:
    """The owner recorded in a lock file (``pid``, ``host``, ``purpose``, ``created``), or
    ``None`` when there is no file; a file that is not a dimfeat lock reads as ``{}``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    owner = _owner(data)
    return {} if owner is None else owner


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16)


def _held(path: Path, owner: dict, purpose: str, why: str) -> LockHeldError:
    who = f"process {owner['pid']} on host {owner['host']}" if owner else "another process"
    return LockHeldError(
        f"{path} is held by {who} (since {owner.get('created', '?')}, for "
        f"{owner.get('purpose', purpose)}): {why}",
        path,
        owner,
    )


def _open_locked(path: Path, purpose: str, fcntl) -> int:
    """A descriptor of ``path`` holding its flock (the file at ``path`` now, not a removed one)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(_read_fd(fd)) or {}
            os.close(fd)
            raise _held(
                path, owner, purpose, "another run is using it; wait for it to end or stop it"
            ) from None
        try:  # the owner that just let go may have removed the file: lock the new one
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


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
        The owner written to the lock file (``pid``, ``host``, ``purpose``, ``created``).

    Raises
    ------
    LockHeldError
        If another process holds the lock, or a process of another host left it.
    ValueError
        If a file that is not a dimfeat lock is in its place (it is left untouched).

    Warns
    -----
    UserWarning
        When a lock left by a process of this host that no longer holds it is taken over.
    """
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    mine = {
        "dimfeat_lock": 1,
        "pid": os.getpid(),
        "host": host,
        "purpose": purpose,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no flock
        yield mine
        return
    fd = _open_locked(path, purpose, fcntl)
    try:
        old = _read_fd(fd)
        if old.strip():
            owner = _owner(old)
            if owner is None:
                raise ValueError(
                    f"{path} exists and was not written by dimfeat: dimfeat uses this name to "
                    f"lock {purpose} and will not overwrite it; move it away"
                )
            if owner["host"] != host:
                raise _held(
                    path,
                    owner,
                    purpose,
                    "a process of another host may still be using it; if that run is over, "
                    f"delete {path}",
                )
            warnings.warn(
                f"{path} was left by process {owner['pid']} on {host}, which no longer holds it "
                "(a run that was killed): its lock was taken over",
                UserWarning,
                stacklevel=3,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)  # a foreign file stays as it was; a lock file of ours is unlocked
        raise
    try:
        yield mine
    finally:
        try:  # removed while still locked, so that no one else can hold the removed file
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
