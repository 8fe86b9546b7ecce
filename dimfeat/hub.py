"""Hugging Face Hub I/O for weights folders: the only module that imports ``huggingface_hub``.

It sits between the folder format (:mod:`dimfeat.weights_folder` and, for its verification of
either kind of folder, :mod:`dimfeat.channels`, which it imports) and name
resolution (:func:`dimfeat.weights.resolve_weights`, which imports it for Hub ids); it never
imports :mod:`dimfeat.weights`.

Weights on the Hub are ordinary model repos holding the three files of a weights folder
(:data:`dimfeat.weights.WEIGHTS_FILES`). :func:`download_weights` fetches exactly those files at
one commit into the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), in the layout
``huggingface_hub`` reads (``snapshots/<commit>/``, ``refs/<branch>``), so a pinned revision works
offline once cached; :func:`upload_folder` pushes a verified folder. Requests are tagged
``dimfeat/<version>`` in the user agent.

A server is not trusted: each file's metadata (commit, declared size) is checked before its
download, a pinned commit must be the one it answers, every file has a size bound
(:data:`MAX_BYTES`), the bytes received are bounded too, and no name the server sends becomes a
path (files are streamed into a fresh temporary folder inside the repo's cache folder, then moved
into the snapshot). Every failure is raised as :class:`dimfeat.weights.WeightsError`, naming the
repo and revision, what failed (the URL, the HTTP status, a server error, an unreachable network,
the deadline) and what to do next; a server error is tried once more, no more, and a whole
download has a deadline (:data:`DEADLINE_ENV`, :data:`DEFAULT_DEADLINE` seconds by default).
Nothing downloaded is trusted here beyond that: :func:`dimfeat.channels.load_weights` verifies it
(a single-channel folder as :func:`dimfeat.weights.load_encoder` does, a two-channel one channel
by channel; the three files are the same for both kinds).

Before the first request, the endpoint (or the proxy that applies to it) is probed with one DNS
lookup and one TCP connection, bounded by ``HF_HUB_ETAG_TIMEOUT`` seconds: without a network, a
download fails at once with the reason, or falls back to a copy already in the cache, with a
warning.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_session, hf_hub_url
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    build_hf_headers,
    hf_raise_for_status,
)

from dimfeat._version import __version__
from dimfeat.channels import load_weights
from dimfeat.weights_folder import (
    CARD_FILE,
    CONFIG_FILE,
    MAX_CARD_BYTES,
    MAX_CONFIG_BYTES,
    MAX_MODEL_BYTES,
    MODEL_FILE,
    WEIGHTS_FILES,
    WeightsError,
)

__all__ = [
    "DEADLINE_ENV",
    "DEFAULT_DEADLINE",
    "MAX_BYTES",
    "download_weights",
    "parse_repo_spec",
    "unreachable_reason",
    "upload_folder",
]

LIBRARY_NAME = "dimfeat"
_COMMIT = re.compile(r"[0-9a-f]{40}")
# A Hub name part: letters, digits, '-', '_', '.'; no leading/trailing '-' or '.'; at most 96.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_TRUE = {"1", "on", "yes", "true"}
_REF_FORBIDDEN = frozenset(" ~^:?*[\\")
#: Environment variable: seconds a whole Hub download may take (:data:`DEFAULT_DEADLINE`).
DEADLINE_ENV = "DIMFEAT_HUB_TIMEOUT"
DEFAULT_DEADLINE = 60.0
#: Bound on each file fetched from the Hub (bytes), checked on the size the Hub declares before
#: the download and on the bytes received during it.
MAX_BYTES = {CONFIG_FILE: MAX_CONFIG_BYTES, MODEL_FILE: MAX_MODEL_BYTES, CARD_FILE: MAX_CARD_BYTES}
_ATTEMPTS = 2  # tries of a request that met a server error (5xx, 429) or a dropped connection
_BACKOFF = 0.5  # seconds between them
_INSTEAD = " or a copy in the cache (local_files_only=True)"
_T = TypeVar("_T")
# The Hub's answers about a repo, said by _as_weights_error (gated repos are not found ones)
_REPO_ANSWERS = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)


def _revision_problem(revision: str) -> str:
    """Why ``revision`` is not a commit id or a git branch/tag name ('' when it is one).

    The rules are git's (``git check-ref-format --allow-onelevel``), which the Hub follows for
    branches and tags, restricted to printable ASCII. They exclude every path trick: no ``..``,
    no component starting with ``.``, no leading, trailing or doubled ``/``, no backslash.
    """
    if _COMMIT.fullmatch(revision):
        return ""
    if len(revision) > 255:
        return "longer than 255 characters"
    if bad := sorted({c for c in revision if not " " < c < "\x7f" or c in _REF_FORBIDDEN}):
        return f"it contains {''.join(bad)!r}"
    if revision == "@" or "@{" in revision:
        return "'@' alone and '@{' are not allowed"
    if ".." in revision or "//" in revision or revision.startswith("/") or revision.endswith("/"):
        return "'..', '//' and a leading or trailing '/' are not allowed"
    if revision.endswith("."):
        return "it ends with '.'"
    for part in revision.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"the part {part!r} starts with '.' or ends with '.lock'"
    return ""


def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"owner/name[@revision]"`` into the repo id and the revision.

    Parameters
    ----------
    spec : str
        A Hub model repo id, optionally pinned: ``"owner/name@<commit, tag or branch>"``.

    Returns
    -------
    repo_id : str
        ``"owner/name"``.
    revision : str or None
        ``None`` when no revision is given.

    Raises
    ------
    WeightsError
        For an id that is not ``owner/name``, has invalid characters, or a revision that is
        neither a 40-hex commit id nor a valid git branch or tag name (``..``, a leading ``/``,
        a component starting with ``.``, spaces, ``~^:?*[\\`` and control characters are
        refused: a revision also names a file in the Hugging Face cache).

    Examples
    --------
    >>> parse_repo_spec("acme/sitenet-dim@v1.0")
    ('acme/sitenet-dim', 'v1.0')
    >>> parse_repo_spec("acme/sitenet-dim")
    ('acme/sitenet-dim', None)
    """
    if not isinstance(spec, str):
        raise WeightsError(f"a Hub id must be a string 'owner/name[@revision]', not {spec!r}")
    repo_id, at, revision = spec.strip().partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(
        _NAME.fullmatch(p) and ".." not in p and "--" not in p for p in parts
    ):
        raise WeightsError(
            f"malformed Hub id {spec!r}: expected 'owner/name' or 'owner/name@revision', where "
            "owner and name use letters, digits, '-', '_' and '.' (e.g. 'acme/model@<commit>')"
        )
    if at and (not revision or "@" in revision or _revision_problem(revision)):
        why = _revision_problem(revision) if revision and "@" not in revision else ""
        raise WeightsError(
            f"malformed revision in {spec!r}{f' ({why})' if why else ''}: give a 40-hex commit "
            "id, or a tag or branch name as git allows them, after '@'"
        )
    return repo_id, (revision or None)


def _probe_target(endpoint: str) -> tuple[str, int, str]:
    """Host, port and a label of what a request to ``endpoint`` connects to first.

    That is the endpoint itself, or the proxy the environment sets for its scheme
    (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, unless ``NO_PROXY`` exempts the host).
    """
    url = urlsplit(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and host and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            defaults = {"https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}
            via_port = via.port or defaults.get(via.scheme, 80)
            return via.hostname, via_port, f"the proxy {via.hostname}:{via_port}"
    return host, port, f"{host}:{port}"


def unreachable_reason(endpoint: str | None = None, timeout: float | None = None) -> str | None:
    """Why ``endpoint`` cannot be reached now, or ``None`` when a TCP connection opens.

    One DNS lookup and one TCP connection to the endpoint's host (or to the proxy that applies
    to it), each bounded by ``timeout``; no HTTP request is sent.

    Parameters
    ----------
    endpoint : str, optional
        A URL; by default the Hub endpoint in use (``HF_ENDPOINT``).
    timeout : float, optional
        Seconds for each step; by default ``HF_HUB_ETAG_TIMEOUT`` (10 s unless set).

    Returns
    -------
    str or None
        E.g. ``"the host 'huggingface.co' does not resolve (no network or no DNS)"``.
    """
    endpoint = endpoint or constants.ENDPOINT
    timeout = float(timeout if timeout is not None else constants.HF_HUB_ETAG_TIMEOUT)
    host, port, label = _probe_target(endpoint)
    if not host:
        return f"{endpoint!r} has no host name"
    # getaddrinfo has no timeout of its own: run it in a thread and stop waiting after timeout
    found: dict = {}

    def lookup() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return f"the DNS lookup of {host!r} took more than {timeout:g} s"
    if "error" in found:
        return f"the host {host!r} does not resolve (no network or no DNS): {found['error']}"
    errors = []
    for family, kind, proto, _, address in found["addresses"]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return None
        except OSError as exc:
            errors.append(exc)
    reason = errors[-1].strerror if errors and errors[-1].strerror else str(errors[-1])
    return f"cannot connect to {label}: {reason}"


def _offline(local_files_only: bool) -> bool:
    """Whether downloads are off: the argument, ``HF_HUB_OFFLINE`` now, or at import."""
    env = (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in _TRUE
    return local_files_only or env or constants.HF_HUB_OFFLINE


@contextmanager
def _as_weights_error(repo_id: str, revision: str) -> Iterator[None]:
    """Re-raise the Hub's answers about the repo (``huggingface_hub`` errors) as WeightsError."""
    where = f"{repo_id}@{revision}"
    endpoint = constants.ENDPOINT
    try:
        yield
    except GatedRepoError as exc:
        raise WeightsError(
            f"Hub repo {repo_id!r} is gated: accept its terms on {endpoint}/{repo_id} and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise WeightsError(
            f"Hub repo {repo_id!r} not found at {endpoint} (or it is private and no valid token "
            "was given): check the id, log in for private repos (`hf auth login` or HF_TOKEN), "
            "or, if you meant a local folder, give a path that exists"
        ) from exc
    except RevisionNotFoundError as exc:
        raise WeightsError(
            f"revision {revision!r} of Hub repo {repo_id!r} not found: check the commit, tag or "
            f"branch (see {endpoint}/{repo_id}/commits/main)"
        ) from exc
    except EntryNotFoundError as exc:
        raise WeightsError(
            f"{where} is not a dimfeat weights repo: it lacks one of {list(WEIGHTS_FILES)} "
            "(written by DeepInfoMaxFeaturizer.save_pretrained / push_to_hub); check the id"
        ) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        raise WeightsError(
            f"could not download {where}: the Hub at {endpoint} answered HTTP {status}: {exc}; "
            f"check the id and your token, or use a local weights folder{_INSTEAD}"
        ) from exc


def _deadline_seconds(timeout: float | None) -> tuple[float, str]:
    """The deadline of a Hub load in seconds, and where it was set (for messages)."""
    if timeout is None:
        raw = os.environ.get(DEADLINE_ENV, "").strip()
        if not raw:
            return DEFAULT_DEADLINE, f"the default; set {DEADLINE_ENV} or timeout= to change it"
        try:
            timeout = float(raw)
        except ValueError:
            raise WeightsError(
                f"{DEADLINE_ENV}={raw!r} is not a number of seconds: set it to the longest a Hub "
                f"download may take, e.g. {DEADLINE_ENV}=300, or unset it ({DEFAULT_DEADLINE:g} s)"
            ) from None
        source = DEADLINE_ENV
    else:
        source = "timeout="
    if isinstance(timeout, bool) or not (
        isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0
    ):
        raise WeightsError(
            f"the Hub download timeout ({source}) must be a positive number of seconds, not "
            f"{timeout!r}"
        )
    return float(timeout), f"set by {source}"


def _inside(path: Path, root: Path) -> Path:
    """``path``, after checking that it (links resolved) stays inside ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise WeightsError(
            f"{path} resolves to {real}, outside the Hugging Face cache folder {root} of this "
            "repo: refused (a hostile download or a tampered cache); delete that folder and "
            "download again from a Hub you trust"
        )
    return path


def _cached_snapshot(storage: Path, revision: str) -> Path | None:
    """The cached snapshot folder of ``revision`` holding the three files, or ``None``.

    A branch or tag is looked up in ``refs/``; a file that links outside ``storage`` is refused.
    """
    commit = revision
    if not _COMMIT.fullmatch(revision):
        try:
            with open(storage / "refs" / revision, "rb") as handle:
                commit = handle.read(64).decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not _COMMIT.fullmatch(commit):
            return None
    snapshot = storage / "snapshots" / commit
    if not all((snapshot / name).is_file() for name in WEIGHTS_FILES):
        return None
    for name in WEIGHTS_FILES:
        _inside(snapshot / name, storage)
    return snapshot


def _reason(exc: BaseException) -> str:
    """The innermost useful words of a network error (e.g. ``[Errno 111] Connection refused``)."""
    while exc.__cause__ is not None and not str(exc):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


class _Download:
    """One download of a weights folder into the cache, under one deadline.

    Every file's metadata (``HEAD``) is read first, its commit checked against the one the
    revision resolved to, its size against its bound; then it is streamed (``GET``), bounded by
    that size and the deadline, into a fresh temporary folder inside the repo's cache folder, and
    the three files are moved into ``snapshots/<commit>/`` only when all are complete. No name
    the server sends (ETag, Location) becomes a path.
    """

    def __init__(self, repo_id: str, revision: str, storage: Path, seconds: float, source: str):
        self.repo_id, self.revision, self.storage = repo_id, revision, storage
        self.where = f"{repo_id}@{revision}"
        self.seconds, self.source = seconds, source
        self.end = time.monotonic() + seconds
        self.url = ""  # the request in progress, for messages

    # -- errors
    def _fail(self, what: str, advice: str = "") -> WeightsError:
        advice = advice or (
            "check the network connection, proxy and HF_ENDPOINT, then try again, or use a local "
            f"weights folder{_INSTEAD}"
        )
        return WeightsError(f"could not download {self.where}: {what}; {advice}")

    def _too_slow(self) -> WeightsError:
        return self._fail(
            f"it took longer than {self.seconds:g} s, the deadline of a Hub load ({self.source}); "
            f"stopped at {self.url}: the server is too slow",
            f"try again, raise {DEADLINE_ENV}, or use a local weights folder{_INSTEAD}",
        )

    def _timeout(self) -> float:
        """Seconds for the next network step: the per-request timeout, within the deadline."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        return min(float(constants.HF_HUB_DOWNLOAD_TIMEOUT), left)

    def _translate(self, exc: Exception) -> WeightsError:
        """A WeightsError that says what failed (URL, status, server or network) and what to do."""
        if isinstance(exc, WeightsError):
            return exc
        if time.monotonic() >= self.end:
            return self._too_slow()
        if isinstance(exc, HfHubHTTPError):
            status = getattr(getattr(exc, "response", None), "status_code", None)
            kind = "a server error" if isinstance(status, int) and status >= 500 else "an error"
            return self._fail(
                f"the server answered HTTP {status} ({kind}, not a problem of your network) for "
                f"{self.url}, also when asked again",
                f"try again later, or use a local weights folder{_INSTEAD}",
            )
        if isinstance(exc, httpx2.TimeoutException):
            return self._fail(
                f"the server did not answer {self.url} within "
                f"{constants.HF_HUB_DOWNLOAD_TIMEOUT:g} s (HF_HUB_DOWNLOAD_TIMEOUT)"
            )
        if isinstance(exc, httpx2.ConnectError | httpx2.ProxyError):
            return self._fail(f"cannot connect to {self.url} (network unreachable: {_reason(exc)})")
        if isinstance(exc, httpx2.TransportError):
            return self._fail(f"the connection broke while reading {self.url}: {_reason(exc)}")
        if isinstance(exc, httpx2.HTTPError | httpx2.InvalidURL):
            return self._fail(
                f"the server sent a redirect that cannot be followed for {self.url}: {exc}",
                "check HF_ENDPOINT (is it a Hugging Face Hub?), or use a local weights folder"
                f"{_INSTEAD}",
            )
        return self._fail(f"{type(exc).__name__} on {self.url}: {exc}")

    def _attempt(self, call: Callable[[], _T]) -> _T:
        """``call()``, tried again once after a server error (5xx, 429) or a dropped connection."""
        for attempt in range(_ATTEMPTS):
            try:
                return call()
            except (WeightsError, *_REPO_ANSWERS):
                raise  # said already, or the Hub's answer about the repo (_as_weights_error)
            except Exception as exc:  # every other failure becomes a WeightsError
                status = getattr(getattr(exc, "response", None), "status_code", None)
                transient = (isinstance(status, int) and (status >= 500 or status == 429)) or (
                    isinstance(exc, httpx2.TransportError)
                    and not isinstance(exc, httpx2.TimeoutException)
                )
                if not transient or attempt + 1 == _ATTEMPTS or self.end - time.monotonic() < 1:
                    raise self._translate(exc) from exc
            time.sleep(_BACKOFF)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- requests
    def _metadata(self, filename: str, revision: str) -> tuple[str, int | None, str]:
        """Commit, size and download location of ``filename`` at ``revision`` (one ``HEAD``)."""
        self.url = hf_hub_url(self.repo_id, filename, revision=revision)
        meta = self._attempt(
            lambda: get_hf_file_metadata(
                self.url,
                timeout=self._timeout(),
                library_name=LIBRARY_NAME,
                library_version=__version__,
            )
        )
        commit = meta.commit_hash
        if commit is None:
            raise self._fail(
                f"the server at {constants.ENDPOINT} answered {self.url} without the Hub's "
                "X-Repo-Commit header, so it is not a Hugging Face Hub (or a proxy strips it)",
                f"check HF_ENDPOINT, or use a local weights folder{_INSTEAD}",
            )
        if not _COMMIT.fullmatch(commit):
            raise self._fail(
                f"the server at {constants.ENDPOINT} answered {self.url} with an invalid commit "
                f"id {commit[:80]!r} (X-Repo-Commit must be 40 hex digits)",
                f"check HF_ENDPOINT (is it a Hugging Face Hub?), or use a local weights folder"
                f"{_INSTEAD}",
            )
        limit = MAX_BYTES[filename]
        if meta.size is not None and meta.size > limit:
            raise self._fail(
                f"{filename} at {self.url} is {meta.size} bytes, and a dimfeat weights folder's "
                f"{filename} is at most {limit} bytes (it was not downloaded)",
                "check the id: this repo does not hold dimfeat weights",
            )
        return commit, meta.size, meta.location

    def _get(self, filename: str, location: str, size: int | None, target: Path) -> None:
        """Stream ``location`` into ``target``, at most ``size`` (or the file's bound) bytes."""
        self.url = location
        limit = MAX_BYTES[filename] if size is None else size
        bound = "the size it declared" if size is not None else "the bound of that file"
        headers = build_hf_headers(library_name=LIBRARY_NAME, library_version=__version__)
        headers["Accept-Encoding"] = "identity"
        if urlsplit(location)[:2] != urlsplit(constants.ENDPOINT)[:2]:
            headers.pop("authorization", None)  # a token never leaves the Hub
        expected = self.commit

        def get() -> None:
            timeout = self._timeout()
            with get_session().stream(
                "GET", location, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                hf_raise_for_status(response)
                commit = response.headers.get(constants.HUGGINGFACE_HEADER_X_REPO_COMMIT)
                if commit is not None and commit != expected:
                    raise self._fail(
                        f"the server sent {filename} of commit {commit[:80]!r} for {location}, "
                        f"whose metadata said commit {expected}",
                        "the Hub (or a mirror) is inconsistent: try again, or use a local "
                        f"weights folder{_INSTEAD}",
                    )
                n = 0
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes():
                        n += len(chunk)
                        if n > limit:
                            raise self._fail(
                                f"the server sent more than {limit} bytes of {filename} from "
                                f"{location} ({bound}); the rest was not read",
                                "the server is broken or hostile: use a Hub you trust or a "
                                f"local weights folder{_INSTEAD}",
                            )
                        if time.monotonic() > self.end:
                            raise self._too_slow()
                        out.write(chunk)
                if size is not None and n != size:
                    raise httpx2.RemoteProtocolError(
                        f"the download of {filename} ended after {n} of {size} bytes"
                    )

        self._attempt(get)

    def run(self) -> Path:
        """Download the three files at one commit; return the snapshot folder."""
        self.commit, size, location = self._metadata(CONFIG_FILE, self.revision)
        if _COMMIT.fullmatch(self.revision) and self.commit != self.revision:
            raise self._fail(
                f"the weights are pinned to commit {self.revision}, and the server at "
                f"{constants.ENDPOINT} answered commit {self.commit} for them",
                "the Hub (or a mirror, HF_ENDPOINT) does not serve that commit: check the pin and "
                "the endpoint; nothing was downloaded",
            )
        snapshot = _inside(self.storage / "snapshots" / self.commit, self.storage)
        if _cached_snapshot(self.storage, self.commit) is None:
            self.storage.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".dimfeat-download-", dir=self.storage) as tmp:
                for filename in WEIGHTS_FILES:
                    if filename != CONFIG_FILE or self.revision != self.commit:
                        commit, size, location = self._metadata(filename, self.commit)
                        if commit != self.commit:
                            raise self._fail(
                                f"the server answered commit {commit} for {self.url}, and "
                                f"{CONFIG_FILE} was at commit {self.commit}",
                                "the Hub (or a mirror) is inconsistent: try again, or use a "
                                f"local weights folder{_INSTEAD}",
                            )
                    self._get(filename, location, size, Path(tmp) / filename)
                snapshot.mkdir(parents=True, exist_ok=True)
                for filename in WEIGHTS_FILES:
                    os.replace(Path(tmp) / filename, _inside(snapshot / filename, self.storage))
        if self.revision != self.commit:  # remember where the branch or tag pointed
            ref = _inside(self.storage / "refs" / self.revision, self.storage)
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(self.commit)
        return snapshot


def download_weights(
    spec: str,
    *,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
    timeout: float | None = None,
) -> Path:
    """Download the weights folder ``owner/name[@revision]`` into the Hugging Face cache.

    Exactly ``config.json``, ``model.safetensors`` and ``README.md`` are fetched, all at the
    commit that ``revision`` resolves to (a pinned commit must be the one the Hub answers), each
    refused before its download when the Hub declares more than its bound
    (:data:`MAX_BYTES`), into a fresh temporary folder inside the cache and moved into the
    snapshot folder once all three are complete. A revision already in the cache is used without
    any download (a pinned commit without any network request). The whole load has a deadline.

    Parameters
    ----------
    spec : str
        ``"owner/name"`` or ``"owner/name@revision"`` (a commit hash, tag or branch). Without a
        revision, ``main`` is used and a :class:`UserWarning` names the commit to pin.
    local_files_only : bool, default=False
        Use the cache only; also implied by the environment variable ``HF_HUB_OFFLINE=1``.
    cache_dir : str or path, optional
        Cache folder; by default the standard one (``HF_HUB_CACHE``, else ``HF_HOME/hub``).
    timeout : float, optional
        Seconds the whole download may take; by default the environment variable
        ``DIMFEAT_HUB_TIMEOUT``, else 60. Each request also waits at most
        ``HF_HUB_DOWNLOAD_TIMEOUT`` seconds (10 unless set) for the server.

    Returns
    -------
    folder : Path
        The snapshot folder of the resolved commit, holding the three files (verified later
        by :func:`dimfeat.channels.load_weights`, for either kind of folder).

    Raises
    ------
    WeightsError
        For every failure, naming the repo and revision, what failed (the URL, the HTTP status,
        a server error or an unreachable network, the deadline) and what to do: a malformed id,
        an unknown repo, revision or file, a file over its bound, a commit other than the pin,
        a server that is not a Hub, a cache miss in offline mode. Without a network this is
        raised at once (see :func:`unreachable_reason`); a revision already in the cache is then
        used with a :class:`UserWarning` instead. A server error (5xx) or a dropped connection is
        tried once more, no more.
    """
    repo_id, pinned = parse_repo_spec(spec)
    revision = pinned or constants.DEFAULT_REVISION
    seconds, source = _deadline_seconds(timeout)
    where = f"{repo_id}@{revision}"
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    cached = _cached_snapshot(storage, revision)
    if cached is not None and _COMMIT.fullmatch(revision):
        folder = cached  # a pinned commit in the cache needs no network
    elif _offline(local_files_only):
        if cached is None:
            raise WeightsError(
                f"{where} is not in the local Hugging Face cache ({cache}) and "
                "downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True): download it once "
                "online, or unset HF_HUB_OFFLINE"
            )
        folder = cached
    elif reason := unreachable_reason(timeout=min(seconds, constants.HF_HUB_ETAG_TIMEOUT)):
        if cached is None:
            raise WeightsError(
                f"cannot download {where}: the Hub at {constants.ENDPOINT} cannot be reached "
                f"({reason}) and it is not in the local cache; check the network connection, "
                "proxy and HF_ENDPOINT, or use a local weights folder"
            )
        warnings.warn(
            f"the Hub at {constants.ENDPOINT} cannot be reached ({reason}); using the copy of "
            f"{where} in the local cache, which may be older than the Hub's",
            UserWarning,
            stacklevel=2,
        )
        folder = cached
    else:
        try:
            with _as_weights_error(repo_id, revision):
                folder = _Download(repo_id, revision, storage, seconds, source).run()
        except OSError as exc:  # writing the cache
            raise WeightsError(
                f"could not write {where} into the Hugging Face cache {cache}: {exc}; check its "
                "free space and permissions, or set HF_HUB_CACHE to another folder"
            ) from exc
    if pinned is None:
        warnings.warn(
            f"Hub weights {repo_id!r} were loaded without a pinned revision, so they are whatever "
            f"'main' pointed to ({folder.name}); for reproducible vectors use "
            f"weights='{repo_id}@{folder.name}'",
            UserWarning,
            stacklevel=2,
        )
    return folder


def upload_folder(
    folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False
) -> str:
    """Push a weights folder to a Hub model repo (created if needed); return the commit id.

    The folder is verified first (:func:`dimfeat.channels.load_weights`: a single-channel or a
    two-channel folder) and only its three weights files are uploaded, in one commit to
    ``main``.

    Parameters
    ----------
    folder : str or path
        A folder written by :func:`dimfeat.weights.save_pretrained`,
        :func:`dimfeat.channels.combine_channels` or a ``save_pretrained`` method.
    repo_id : str
        ``"owner/name"`` (no revision).
    token : str, optional
        A Hub token with write access; by default the saved login or ``HF_TOKEN``.
    private : bool, default=False
        Create the repo as private (ignored when it exists already).

    Returns
    -------
    commit : str
        The 40-hex id of the new commit: pin it as ``"owner/name@<commit>"``.

    Raises
    ------
    WeightsError
        If the folder does not verify, ``repo_id`` is malformed or has a revision, or the Hub
        refuses the upload (the message says to check the token's write access).
    """
    name, revision = parse_repo_spec(repo_id)
    if revision is not None:
        raise WeightsError(f"push to a repo id without a revision, not {repo_id!r}")
    load_weights(folder)  # never publish weights that dimfeat would refuse to load
    reason = unreachable_reason()
    if reason is not None:
        raise WeightsError(
            f"could not push {folder} to Hub repo {name!r}: the Hub at {constants.ENDPOINT} "
            f"cannot be reached ({reason}); check the network connection, proxy and HF_ENDPOINT"
        )
    api = HfApi(library_name=LIBRARY_NAME, library_version=__version__)
    try:
        api.create_repo(name, token=token, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=name,
            folder_path=str(folder),
            allow_patterns=list(WEIGHTS_FILES),
            commit_message=f"Upload dimfeat {__version__} weights",
            token=token,
        )
    except (HfHubHTTPError, httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise WeightsError(
            f"could not push {folder} to Hub repo {name!r} at {constants.ENDPOINT}: {exc}; check "
            "that the token (token=..., HF_TOKEN or `hf auth login`) has write access to it"
        ) from exc
    return info.oid
