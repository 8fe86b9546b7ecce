"""Hub download and upload of weights folders against a loopback fake Hub (no network, no mocks).

The fake Hub is a real HTTP server on 127.0.0.1 speaking the part of the Hub protocol that
``huggingface_hub`` 2.x uses here: ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` for
``hf_hub_download`` (headers ``X-Repo-Commit``, ``ETag``, ``Content-Length``; errors as 404 with
``X-Error-Code``), and ``POST /api/repos/create``, ``/api/models/{repo}/preupload/{rev}``,
``/api/models/{repo}/commit/{rev}`` for ``HfApi.create_repo`` and ``HfApi.upload_folder`` (every
file "regular", so no LFS/Xet transfer). ``huggingface_hub`` reads ``HF_ENDPOINT`` and the cache
paths at import time, so the fixture sets both the variables and ``huggingface_hub.constants``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from huggingface_hub import constants

from dimfeat import DeepInfoMaxFeaturizer, __version__
from dimfeat.channels import load_weights  # verifies a folder of either kind
from dimfeat.datasets import load_sample
from dimfeat.hub import download_weights, parse_repo_spec, unreachable_reason, upload_folder
from dimfeat.weights import (
    DEFAULT_WEIGHTS,
    WEIGHTS_FILES,
    WeightsError,
    resolve_weights,
)

REPO = "acme/sitenet-dim"


# -- the fake Hub -----------------------------------------------------------------------------
class FakeHub:
    """In-memory model repos (commits of files, branch refs) and a log of the requests served."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.url = ""
        self.metadata_headers = True  # False: answer like a server that is not a Hub

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit on ``branch`` holding the branch's files updated by ``files``."""
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        parent = repo["refs"].get(branch)
        tree = {**repo["commits"].get(parent, {}), **files}
        digest = hashlib.sha1((parent or "").encode())
        for name in sorted(tree):
            digest.update(name.encode() + hashlib.sha256(tree[name]).digest())
        oid = digest.hexdigest()
        repo["commits"][oid] = tree
        repo["refs"][branch] = oid
        return oid

    def resolve(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        if revision in repo["refs"]:
            return repo["refs"][revision]
        return revision if revision in repo["commits"] else None


def _etag(name: str, content: bytes) -> str:
    """The Hub's ETag: sha256 for LFS files (weights), the git blob sha1 for the others."""
    if name.endswith(".safetensors"):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    resolve = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
    api = re.compile(r"^/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, code: str, message: str, extra: dict | None = None) -> None:
            headers = {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})}
            self._send(404, json.dumps({"error": message}).encode(), headers)

        def _json(self, payload: dict, status: int = 200) -> None:
            self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        def _record(self) -> str:
            path = urlsplit(self.path).path
            hub.requests.append(
                (self.command, path, {k.lower(): v for k, v in self.headers.items()})
            )
            return path

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = self._record()
            match = resolve.match(path)
            if not match:
                return self._send(404)
            repo_id, revision, filename = (unquote(g) for g in match.groups())
            if repo_id not in hub.repos:
                return self._error("RepoNotFound", "Repository not found")
            commit = hub.resolve(repo_id, revision)
            if commit is None:
                return self._error("RevisionNotFound", f"Invalid rev id: {revision}")
            files = hub.repos[repo_id]["commits"][commit]
            if filename not in files:
                return self._error("EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
            content = files[filename]
            headers = {"Content-Type": "application/octet-stream"}
            if hub.metadata_headers:
                headers |= {"X-Repo-Commit": commit, "ETag": f'"{_etag(filename, content)}"'}
            self._send(200, content, headers)

        def do_POST(self) -> None:
            path = self._record()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                if repo_id in hub.repos:
                    error = {"error": "You already created this model repo"}
                    return self._json({**error, "url": f"{hub.url}/{repo_id}"}, 409)
                hub.repos[repo_id] = {"refs": {}, "commits": {}, "payload": payload}
                return self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id})
            if path == "/api/validate-yaml":  # model card front matter, checked before upload
                content = json.loads(body)["content"]
                if not content.startswith("---\n") or "\nlibrary_name: dimfeat\n" not in content:
                    return self._send(400, b"model card lacks its YAML front matter")
                return self._json({"warnings": []})
            match = api.match(path)
            if not match or match.group(1) not in hub.repos:
                return self._error("RepoNotFound", "Repository not found")
            repo_id, action, revision = match.group(1), match.group(2), unquote(match.group(3))
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._json(
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                            for f in files
                        ]
                    }
                )
            added = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    added[value["path"]] = base64.b64decode(value["content"])
            oid = hub.commit(repo_id, added, branch=revision)
            return self._json({"commitOid": oid, "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}"})

    return Handler


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A loopback fake Hub, with ``huggingface_hub`` pointed at it and caching under tmp_path."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    home = tmp_path / "hf_home"
    settings = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,  # no agent-registry request in the user agent
    }
    for name, value in settings.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield hub
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _go_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as if set before import


# -- shared data ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def structures():
    return list(load_sample().structure[:3])


@pytest.fixture(scope="session")
def bundled_files() -> dict[str, bytes]:
    folder = resolve_weights(DEFAULT_WEIGHTS)
    return {name: (folder / name).read_bytes() for name in WEIGHTS_FILES}


@pytest.fixture(scope="session")
def bundled_vectors(structures) -> np.ndarray:
    return DeepInfoMaxFeaturizer(device="cpu").transform(structures)


# -- parse_repo_spec --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("acme/sitenet-dim", ("acme/sitenet-dim", None)),
        ("acme/sitenet-dim@" + "a" * 40, ("acme/sitenet-dim", "a" * 40)),
        ("Acme-Lab/model_v2.5@v1.0", ("Acme-Lab/model_v2.5", "v1.0")),
        ("acme/model@refs/pr/1", ("acme/model", "refs/pr/1")),
        ("acme/model@feature/new-model_2", ("acme/model", "feature/new-model_2")),
    ],
)
def test_parse_repo_spec(spec, expected):
    assert parse_repo_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "acme",
        "acme/",
        "/model",
        "a/b/c",
        "acme/mo del",
        "acme/-model",
        "acme/model.",
        "acme/mo..del",
        "acme/model@",
        "acme/model@a b",
        "acme/model@x@y",
        "",
        # revisions that are neither a commit nor a git ref name (they also name cache files)
        "acme/model@../../../../x",
        "acme/model@..",
        "acme/model@/etc/passwd",
        "acme/model@v1/",
        "acme/model@a//b",
        "acme/model@.hidden",
        "acme/model@refs/.x",
        "acme/model@main.lock",
        "acme/model@a\\b",
        "acme/model@x~1",
        "acme/model@x\x00y",
        "acme/model@tab\there",
    ],
)
def test_parse_repo_spec_rejects_malformed(spec):
    with pytest.raises(WeightsError, match="malformed"):
        parse_repo_spec(spec)


# -- download -----------------------------------------------------------------------------------
def test_a_path_traversing_revision_never_reaches_the_hub_or_the_disk(
    fake_hub, bundled_files, tmp_path
):
    """A hostile endpoint that serves any revision: the revision would name the cache's ref
    file, ``refs/../../../../x``, outside the cache."""
    commit = fake_hub.commit(REPO, bundled_files)
    fake_hub.repos[REPO]["refs"]["../../../../x"] = commit
    with pytest.raises(WeightsError, match="malformed revision"):
        resolve_weights(f"{REPO}@../../../../x")
    assert fake_hub.requests == []
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.rglob("x"))


def test_pinned_download_reproduces_bundled_vectors(
    fake_hub, bundled_files, structures, bundled_vectors
):
    commit = fake_hub.commit(REPO, bundled_files)
    X = DeepInfoMaxFeaturizer(weights=f"{REPO}@{commit}", device="cpu").transform(structures)
    assert np.array_equal(X, bundled_vectors)

    folder = resolve_weights(f"{REPO}@{commit}")
    assert folder.name == commit
    assert folder.is_relative_to(Path(constants.HF_HUB_CACHE))
    assert sorted(p.name for p in folder.iterdir()) == sorted(WEIGHTS_FILES)
    # exactly the three files were requested, each tagged with dimfeat's name and version
    paths = {path for _, path, _ in fake_hub.requests}
    assert paths == {f"/{REPO}/resolve/{commit}/{name}" for name in WEIGHTS_FILES}
    agents = {headers["user-agent"] for _, _, headers in fake_hub.requests}
    assert all(agent.startswith(f"dimfeat/{__version__};") for agent in agents)


def test_unpinned_download_warns_with_the_commit_to_pin(fake_hub, bundled_files):
    fake_hub.commit(REPO, {"README.md": b"old"})
    commit = fake_hub.commit(REPO, bundled_files)
    with pytest.warns(UserWarning, match=f"{REPO}@{commit}"):
        folder = download_weights(REPO)
    assert folder.name == commit
    load_weights(folder)
    # config.json was fetched at 'main', the other two files at the commit it resolved to
    paths = [path for _, path, _ in fake_hub.requests]
    assert f"/{REPO}/resolve/main/config.json" in paths
    assert f"/{REPO}/resolve/{commit}/model.safetensors" in paths


def test_offline_after_download_uses_the_cache(fake_hub, bundled_files, monkeypatch):
    commit = fake_hub.commit(REPO, bundled_files)
    with pytest.warns(UserWarning, match="pinned"):
        download_weights(REPO)  # caches refs/main too
    fake_hub.requests.clear()
    _go_offline(monkeypatch)
    pinned = resolve_weights(f"{REPO}@{commit}")
    with pytest.warns(UserWarning, match="pinned"):
        unpinned = resolve_weights(REPO)
    assert pinned == unpinned
    load_weights(pinned)
    assert fake_hub.requests == []


def test_local_files_only_after_download_uses_the_cache(fake_hub, bundled_files):
    commit = fake_hub.commit(REPO, bundled_files)
    first = download_weights(f"{REPO}@{commit}")
    fake_hub.requests.clear()
    assert resolve_weights(f"{REPO}@{commit}", local_files_only=True) == first
    assert fake_hub.requests == []


def test_offline_before_download_names_the_repo(fake_hub, bundled_files, monkeypatch):
    commit = fake_hub.commit(REPO, bundled_files)
    with pytest.raises(WeightsError, match=rf"{REPO}@{commit}.*local_files_only"):
        resolve_weights(f"{REPO}@{commit}", local_files_only=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after import: dimfeat reads it per call
    with pytest.raises(WeightsError, match=rf"{REPO}@{commit}.*unset HF_HUB_OFFLINE"):
        download_weights(f"{REPO}@{commit}")
    _go_offline(monkeypatch)
    with pytest.raises(WeightsError, match=rf"{REPO}@main.*unset HF_HUB_OFFLINE"):
        DeepInfoMaxFeaturizer(weights=REPO, device="cpu").fit([])
    assert fake_hub.requests == []


def test_unknown_repo_names_it(fake_hub):
    with pytest.raises(WeightsError, match=r"Hub repo 'acme/no-such-model' not found"):
        resolve_weights("acme/no-such-model@" + "0" * 40)


def test_unknown_revision_names_it(fake_hub, bundled_files):
    fake_hub.commit(REPO, bundled_files)
    with pytest.raises(WeightsError, match=rf"revision 'v9' of Hub repo '{REPO}' not found"):
        download_weights(f"{REPO}@v9")


def test_repo_without_weights_files_is_refused(fake_hub):
    commit = fake_hub.commit("acme/not-weights", {"README.md": b"# hello\n"})
    with pytest.raises(WeightsError, match="not a dimfeat weights repo"):
        download_weights(f"acme/not-weights@{commit}")


def test_endpoint_that_is_not_a_hub(fake_hub, bundled_files):
    commit = fake_hub.commit(REPO, bundled_files)
    fake_hub.metadata_headers = False  # e.g. HF_ENDPOINT pointing at a plain web server
    with pytest.raises(WeightsError, match=rf"could not download {REPO}@{commit}.*HF_ENDPOINT"):
        download_weights(f"{REPO}@{commit}")


def test_tampered_download_is_refused_by_sha256(fake_hub, bundled_files, structures):
    model = bytearray(bundled_files["model.safetensors"])
    model[-100] ^= 0x01  # one bit of one float flipped: still a valid safetensors file
    commit = fake_hub.commit(REPO, {**bundled_files, "model.safetensors": bytes(model)})
    folder = download_weights(f"{REPO}@{commit}")
    assert (folder / "model.safetensors").read_bytes() == bytes(model)
    with pytest.raises(WeightsError, match=r"sha256 .* does not match"):
        load_weights(folder)
    with pytest.raises(WeightsError, match="tampered"):
        DeepInfoMaxFeaturizer(weights=f"{REPO}@{commit}", device="cpu").transform(structures)


# -- upload -------------------------------------------------------------------------------------
def test_push_to_hub_round_trip(fake_hub, tmp_path, structures, bundled_vectors):
    featurizer = DeepInfoMaxFeaturizer(device="cpu")
    commit = featurizer.push_to_hub("acme/pushed", token="hf_fake_write_token", private=True)
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    repo = fake_hub.repos["acme/pushed"]
    assert repo["payload"]["visibility"] == "private"
    assert sorted(repo["commits"][commit]) == sorted(WEIGHTS_FILES)
    posts = [headers for method, _, headers in fake_hub.requests if method == "POST"]
    assert posts
    assert all(h["authorization"] == "Bearer hf_fake_write_token" for h in posts)
    assert all(h["user-agent"].startswith(f"dimfeat/{__version__};") for h in posts)

    X = DeepInfoMaxFeaturizer(weights=f"acme/pushed@{commit}", device="cpu").transform(structures)
    assert np.array_equal(X, bundled_vectors)
    # a second push to the existing repo makes a new commit on main
    folder = tmp_path / "again"
    featurizer.save_pretrained(str(folder), name="again")
    second = upload_folder(folder, "acme/pushed", token="hf_fake_write_token")
    assert second != commit
    assert repo["refs"]["main"] == second


def test_two_channel_folder_round_trip_through_the_hub(fake_hub, tmp_path, structures):
    """A two-channel folder (the same three files, a config of another architecture) is pushed,
    served, downloaded, verified channel by channel and gives the local folder's vectors."""
    from dimfeat.channels import read_weights_config

    local = Path(__file__).resolve().parents[1] / (
        "benchmarks/results/archive/two-channel-screen-1/weights"
    )
    expected = DeepInfoMaxFeaturizer(weights=str(local), device="cpu").transform(structures)
    commit = upload_folder(local, "acme/two-channel", token="hf_fake_write_token")
    assert sorted(fake_hub.repos["acme/two-channel"]["commits"][commit]) == sorted(WEIGHTS_FILES)
    spec = f"acme/two-channel@{commit}"
    folder = download_weights(spec)
    assert sorted(p.name for p in folder.iterdir()) == sorted(WEIGHTS_FILES)
    for name in WEIGHTS_FILES:  # byte for byte what was pushed
        assert (folder / name).read_bytes() == (local / name).read_bytes(), name
    assert read_weights_config(folder)["architecture"] == "sitenet-dim-two-channel"
    X = DeepInfoMaxFeaturizer(weights=spec, device="cpu").transform(structures)
    assert np.array_equal(X, expected)
    structure = DeepInfoMaxFeaturizer(weights=spec, channel="structure", device="cpu")
    assert np.array_equal(structure.transform(structures), expected[:, 64:])
    # push_to_hub of a two-channel featuriser writes and pushes a two-channel folder
    pushed = DeepInfoMaxFeaturizer(weights=spec, device="cpu").push_to_hub(
        "acme/two-again", token="hf_fake_write_token"
    )
    again = DeepInfoMaxFeaturizer(weights=f"acme/two-again@{pushed}", device="cpu")
    assert np.array_equal(again.transform(structures), expected)
    # a tampered download is refused by the channel-by-channel checks
    files = {name: (local / name).read_bytes() for name in WEIGHTS_FILES}
    files["model.safetensors"] = files["model.safetensors"][:-4] + b"\x00\x00\x80\x7f"
    bad = fake_hub.commit("acme/two-bad", files)
    with pytest.raises(WeightsError, match="sha256"):
        DeepInfoMaxFeaturizer(weights=f"acme/two-bad@{bad}", device="cpu").transform(structures)


def test_upload_refuses_a_folder_that_does_not_verify(fake_hub, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(resolve_weights(DEFAULT_WEIGHTS), folder)
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError, match="sha256"):
        upload_folder(folder, "acme/bad", token="hf_fake_write_token")
    with pytest.raises(WeightsError, match="without a revision"):
        upload_folder(resolve_weights(DEFAULT_WEIGHTS), "acme/bad@main")
    assert fake_hub.requests == []


# -- no network: fail fast ----------------------------------------------------------------------
def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _point_hub_at(monkeypatch, url: str) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 2)  # bounds the probe of the endpoint


@pytest.fixture
def no_proxy(monkeypatch):
    for scheme in ("http", "https", "all"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)


#: huggingface_hub alone takes about 23 s (five retries) before it gives up.
FAST = 8.0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://dimfeat-no-such-host.invalid", r"'dimfeat-no-such-host.invalid' does not resolve"),
        ("http://127.0.0.1:{port}", r"cannot connect to 127\.0\.0\.1:\d+"),
    ],
    ids=["unresolvable-host", "connection-refused"],
)
def test_unreachable_hub_fails_fast_naming_the_reason(
    fake_hub, monkeypatch, caplog, no_proxy, url, reason
):
    _point_hub_at(monkeypatch, url.format(port=_closed_port()))
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=rf"cannot download {REPO}@{'0' * 40}.*{reason}"):
        resolve_weights(f"{REPO}@{'0' * 40}")
    with pytest.raises(WeightsError, match=reason):
        upload_folder(resolve_weights(DEFAULT_WEIGHTS), "acme/pushed", token="hf_fake")
    assert time.perf_counter() - start < FAST
    assert "Retrying" not in caplog.text


def test_unreachable_hub_uses_a_cached_revision(fake_hub, bundled_files, monkeypatch, no_proxy):
    commit = fake_hub.commit(REPO, bundled_files)
    with pytest.warns(UserWarning, match="pinned"):
        folder = download_weights(REPO)  # caches main -> commit
    _point_hub_at(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    assert resolve_weights(f"{REPO}@{commit}") == folder  # a cached commit needs no network
    with pytest.warns(UserWarning) as caught:
        assert download_weights(REPO) == folder
    messages = [str(w.message) for w in caught]
    assert any(re.search(rf"cannot be reached .*copy of {REPO}@main", m) for m in messages)
    assert time.perf_counter() - start < FAST


def test_the_probe_goes_to_the_proxy_that_applies(monkeypatch, no_proxy):
    port = _closed_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    reason = unreachable_reason("https://hub.example.invalid", timeout=2)
    assert reason is not None and f"the proxy 127.0.0.1:{port}" in reason
    monkeypatch.setenv("NO_PROXY", "hub.example.invalid")
    assert "does not resolve" in unreachable_reason("https://hub.example.invalid", timeout=2)


def test_the_probe_passes_for_a_listening_hub(fake_hub, no_proxy):
    assert unreachable_reason(fake_hub.url, timeout=2) is None
    assert fake_hub.requests == []  # a TCP connection only, no HTTP request


def test_mistyped_local_path_says_no_such_folder_first(fake_hub, tmp_path, monkeypatch, no_proxy):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"^no such folder: 'weights/sitenet' \(the folder"):
        resolve_weights("weights/sitenet")
    with pytest.raises(WeightsError, match=r"^no such folder: 'weights/sitenet'"):
        DeepInfoMaxFeaturizer(weights="weights/sitenet", device="cpu").fit([])
    assert fake_hub.requests == []  # never taken for a Hub id
    # no such parent folder either: the Hub is tried, and the message still starts with the folder
    _point_hub_at(monkeypatch, "http://dimfeat-no-such-host.invalid")
    with pytest.raises(
        WeightsError, match=r"^no such folder: 'wieghts/sitenet'; as a Hub id: cannot download"
    ):
        resolve_weights("wieghts/sitenet")
    assert time.perf_counter() - start < FAST
