"""Hugging Face Hub I/O for weights folders: the only module that imports ``huggingface_hub``.

It sits between the folder format (:mod:`dimfeat.weights_folder`, which it imports) and name
resolution (:func:`dimfeat.weights.resolve_weights`, which imports it for Hub ids); it never
imports :mod:`dimfeat.weights`.

Weights on the Hub are ordinary model repos holding the three files of a weights folder
(:data:`dimfeat.weights.WEIGHTS_FILES`). :func:`download_weights` fetches exactly those files at
one commit into the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), so a pinned
revision works offline once cached; :func:`upload_folder` pushes a verified folder. Requests are
tagged ``dimfeat/<version>`` in the user agent. Every failure of ``huggingface_hub`` is raised
again as :class:`dimfeat.weights.WeightsError`, naming the repo id and revision and what to do
next. Nothing downloaded is trusted here: :func:`dimfeat.weights.load_encoder` verifies it.

Before the first request, the endpoint (or the proxy that applies to it) is probed with one DNS
lookup and one TCP connection, bounded by ``HF_HUB_ETAG_TIMEOUT`` seconds: without a network, a
download fails at once with the reason (``huggingface_hub`` would retry for about 20 s), or
falls back to a copy already in the cache, with a warning.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from dimfeat._version import __version__
from dimfeat.weights_folder import (
    CARD_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    WEIGHTS_FILES,
    WeightsError,
    load_encoder,
)

__all__ = ["download_weights", "parse_repo_spec", "unreachable_reason", "upload_folder"]

LIBRARY_NAME = "dimfeat"
_COMMIT = re.compile(r"[0-9a-f]{40}")
# A Hub name part: letters, digits, '-', '_', '.'; no leading/trailing '-' or '.'; at most 96.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_TRUE = {"1", "on", "yes", "true"}
_REF_FORBIDDEN = frozenset(" ~^:?*[\\")


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
def _as_weights_error(
    repo_id: str, revision: str, offline: bool, cache_dir: str | Path | None
) -> Iterator[None]:
    """Re-raise ``huggingface_hub`` and network errors as :class:`WeightsError`."""
    where = f"{repo_id}@{revision}"
    endpoint = constants.ENDPOINT
    cache = cache_dir or constants.HF_HUB_CACHE
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
    except LocalEntryNotFoundError as exc:
        if offline:
            raise WeightsError(
                f"{where} is not in the local Hugging Face cache ({cache}) and "
                "downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True): download it once "
                "online, or unset HF_HUB_OFFLINE"
            ) from exc
        raise WeightsError(
            f"could not download {where} from {endpoint} and it is not in the local cache: check "
            "the network connection, proxy and HF_ENDPOINT, then try again"
        ) from exc
    except EntryNotFoundError as exc:
        raise WeightsError(
            f"{where} is not a dimfeat weights repo: it lacks one of {list(WEIGHTS_FILES)} "
            "(written by DeepInfoMaxFeaturizer.save_pretrained / push_to_hub); check the id"
        ) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        raise WeightsError(
            f"the Hub at {endpoint} answered {status} for {where}: {exc}; try again later"
        ) from exc
    except (OSError, ConnectionError) as exc:
        raise WeightsError(
            f"could not download {where} from {endpoint}: {exc}; check the network and the "
            "free space of the Hugging Face cache"
        ) from exc


def _check_reachable(repo_id: str, revision: str, cache_dir: str | Path | None) -> bool:
    """Probe the Hub before downloading; ``True`` means: use the cache only.

    A pinned commit already cached needs no network and is not probed. When the Hub cannot be
    reached, a revision in the cache is used with a warning; otherwise the error is raised now,
    instead of after ``huggingface_hub``'s retries.
    """
    cached = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=cache_dir, revision=revision)
    in_cache = isinstance(cached, str)
    if in_cache and _COMMIT.fullmatch(revision):
        return False
    reason = unreachable_reason()
    if reason is None:
        return False
    where = f"{repo_id}@{revision}"
    if in_cache:
        warnings.warn(
            f"the Hub at {constants.ENDPOINT} cannot be reached ({reason}); using the copy of "
            f"{where} in the local cache, which may be older than the Hub's",
            UserWarning,
            stacklevel=3,
        )
        return True
    raise WeightsError(
        f"cannot download {where}: the Hub at {constants.ENDPOINT} cannot be reached ({reason}) "
        "and it is not in the local cache; check the network connection, proxy and HF_ENDPOINT, "
        "or use a local weights folder"
    )


def download_weights(
    spec: str, *, local_files_only: bool = False, cache_dir: str | Path | None = None
) -> Path:
    """Download the weights folder ``owner/name[@revision]`` into the Hugging Face cache.

    Exactly ``config.json``, ``model.safetensors`` and ``README.md`` are fetched, all at the
    same commit (the one ``revision`` resolves to when ``config.json`` is fetched). A pinned
    commit already in the cache is used without any network request.

    Parameters
    ----------
    spec : str
        ``"owner/name"`` or ``"owner/name@revision"`` (a commit hash, tag or branch). Without a
        revision, ``main`` is used and a :class:`UserWarning` names the commit to pin.
    local_files_only : bool, default=False
        Use the cache only; also implied by the environment variable ``HF_HUB_OFFLINE=1``.
    cache_dir : str or path, optional
        Cache folder; by default the standard one (``HF_HUB_CACHE``, else ``HF_HOME/hub``).

    Returns
    -------
    folder : Path
        The snapshot folder of the resolved commit, holding the three files (verified later
        by :func:`dimfeat.weights.load_encoder`).

    Raises
    ------
    WeightsError
        For a malformed id, an unknown repo, revision or file, no network, or a cache miss in
        offline mode; the message names the repo and revision and says what to do. Without a
        network this is raised at once (see :func:`unreachable_reason`); a revision already in
        the cache is then used with a :class:`UserWarning` instead.
    """
    repo_id, pinned = parse_repo_spec(spec)
    revision = pinned or constants.DEFAULT_REVISION
    offline = _offline(local_files_only)
    if not offline:
        offline = _check_reachable(repo_id, revision, cache_dir)

    def fetch(filename: str, at: str) -> Path:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=at,
                cache_dir=cache_dir,
                local_files_only=offline,
                library_name=LIBRARY_NAME,
                library_version=__version__,
            )
        )

    with _as_weights_error(repo_id, revision, offline, cache_dir):
        config_path = fetch(CONFIG_FILE, revision)
        # The cache layout is .../snapshots/<commit>/config.json: fetch the rest at that commit.
        commit = config_path.parent.name if _COMMIT.fullmatch(config_path.parent.name) else revision
        for filename in (MODEL_FILE, CARD_FILE):
            fetch(filename, commit)
    if pinned is None:
        warnings.warn(
            f"Hub weights {repo_id!r} were loaded without a pinned revision, so they are whatever "
            f"'main' pointed to ({commit}); for reproducible vectors use "
            f"weights='{repo_id}@{commit}'",
            UserWarning,
            stacklevel=2,
        )
    return config_path.parent


def upload_folder(
    folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False
) -> str:
    """Push a weights folder to a Hub model repo (created if needed); return the commit id.

    The folder is verified first (:func:`dimfeat.weights.load_encoder`) and only its three
    weights files are uploaded, in one commit to ``main``.

    Parameters
    ----------
    folder : str or path
        A folder written by :func:`dimfeat.weights.save_pretrained`.
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
    load_encoder(folder)  # never publish weights that dimfeat would refuse to load
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
    except HfHubHTTPError as exc:
        raise WeightsError(
            f"could not push {folder} to Hub repo {name!r} at {constants.ENDPOINT}: {exc}; check "
            "that the token (token=..., HF_TOKEN or `hf auth login`) has write access to it"
        ) from exc
    return info.oid
