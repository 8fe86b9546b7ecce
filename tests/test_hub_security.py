"""Hostile or broken servers, files and datasets: nothing is written outside the cache, a pin is
enforced, reads and downloads are bounded, every Hub failure is one clear WeightsError in bounded
time, and CGCNN ids never name a file outside their dataset.

The Hub is the loopback fake Hub of ``test_hub.py`` (a real HTTP server on 127.0.0.1), with a
handler that misbehaves for some repos in the ways a hostile mirror or a broken server would.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import threading
import time
import tracemalloc
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import test_hub
from huggingface_hub import constants
from test_hub import (  # the loopback fake Hub (tests/ is on sys.path under pytest)
    REPO,
    _closed_port,
    _etag,
    _handler,
    _point_hub_at,
)

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.channels import load_weights  # verifies a folder of either kind
from dimfeat.datasets import load_cgcnn, load_structures
from dimfeat.hub import download_weights
from dimfeat.weights import DEFAULT_WEIGHTS, WeightsError, resolve_weights
from dimfeat.weights_folder import MAX_MODEL_BYTES

# the fake Hub's fixtures, used here under the same names
fake_hub = test_hub.fake_hub
bundled_files = test_hub.bundled_files
no_proxy = test_hub.no_proxy


# -- a misbehaving fake Hub ------------------------------------------------------------------------
@pytest.fixture
def hostile_hub(fake_hub, monkeypatch):
    """The fake Hub's repos and cache, served by a handler that misbehaves for some repos.

    ``hostile_hub.misbehave[repo_id] = how``: ``how(handler, revision, filename, commit,
    content)`` answers a ``HEAD``/``GET`` of a file itself (returns True) or lets the fake Hub
    answer (False); ``commit`` and ``content`` are those of the repo's ``main``.
    """
    fake_hub.misbehave = {}

    class Hostile(_handler(fake_hub)):
        def do_GET(self) -> None:
            parts = self.path.split("/resolve/", 1)
            how = fake_hub.misbehave.get(parts[0].lstrip("/"))
            if how is None or len(parts) != 2:
                return super().do_GET()
            revision, _, filename = parts[1].partition("/")
            repo = fake_hub.repos[parts[0].lstrip("/")]
            commit = repo["refs"]["main"]
            self._record()
            if not how(self, revision, filename, commit, repo["commits"][commit].get(filename)):
                fake_hub.requests.pop()
                return super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake_hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    _point_hub_at(monkeypatch, fake_hub.url)
    yield fake_hub
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _answer(handler, status: int, body: bytes, headers: dict, length: int | None = None) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _hub_headers(commit: str, filename: str, content: bytes) -> dict:
    return {"X-Repo-Commit": commit, "ETag": f'"{_etag(filename, content)}"'}


# -- a hostile ETag --------------------------------------------------------------------------------
def test_a_path_traversing_etag_writes_nothing_outside_the_cache(
    hostile_hub, bundled_files, tmp_path
):
    """An ``ETag: "../../../../escaped"`` named the cache blob: huggingface_hub wrote the three
    files to ``tmp_path/escaped``, outside the cache, and the load succeeded."""
    commit = hostile_hub.commit(REPO, bundled_files)

    def etag(handler, revision, filename, commit, content):
        _answer(handler, 200, content, {"X-Repo-Commit": commit, "ETag": '"../../../../escaped"'})
        return True

    hostile_hub.misbehave[REPO] = etag
    try:
        folder = download_weights(f"{REPO}@{commit}")
    except WeightsError:
        folder = None
    cache = Path(constants.HF_HUB_CACHE).resolve()
    assert not (tmp_path / "escaped").exists()
    outside = [
        p for p in tmp_path.rglob("*") if p.is_file() and not p.resolve().is_relative_to(cache)
    ]
    assert outside == []
    if folder is not None:  # what was downloaded is in the cache, and verifies
        assert all((folder / name).resolve().is_relative_to(cache) for name in bundled_files)
        load_weights(folder)


def test_a_cached_file_linking_outside_the_cache_is_refused(fake_hub, bundled_files, tmp_path):
    """A snapshot file that is a link to a file outside the cache (left by a hostile download,
    or planted) is not loaded."""
    commit = fake_hub.commit(REPO, bundled_files)
    folder = download_weights(f"{REPO}@{commit}")
    outside = tmp_path / "planted.json"
    outside.write_bytes(bundled_files["config.json"])
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(WeightsError, match=r"outside the Hugging Face cache"):
        resolve_weights(f"{REPO}@{commit}", local_files_only=True)


# -- a pin is enforced -----------------------------------------------------------------------------
def test_a_pinned_commit_is_enforced(hostile_hub, bundled_files):
    """A server that answers every revision with the files of 'main' (another commit): the
    pinned load took main's snapshot silently."""
    old = hostile_hub.commit(REPO, {**bundled_files, "README.md": b"# the old card\n"})
    main = hostile_hub.commit(REPO, bundled_files)

    def ignore_revision(handler, revision, filename, commit, content):
        _answer(handler, 200, content, _hub_headers(commit, filename, content))
        return True

    hostile_hub.misbehave[REPO] = ignore_revision
    with pytest.raises(WeightsError, match=rf"pinned to commit {old}.*answered commit {main}"):
        download_weights(f"{REPO}@{old}")
    assert not (Path(constants.HF_HUB_CACHE) / "models--acme--sitenet-dim/snapshots").exists() or (
        not any((Path(constants.HF_HUB_CACHE) / "models--acme--sitenet-dim/snapshots").iterdir())
    )


# -- bounded reads and downloads -------------------------------------------------------------------
def test_an_oversized_model_file_is_refused_before_it_is_read(tmp_path):
    """A model.safetensors above the bound (50 million float32 + the largest header) was read
    whole into memory (to key the shared encoders) before any check."""
    folder = tmp_path / "big"
    shutil.copytree(resolve_weights(DEFAULT_WEIGHTS), folder)
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(MAX_MODEL_BYTES + 1)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(WeightsError, match=rf"larger than {MAX_MODEL_BYTES} bytes"):
            DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").fit([])
        with pytest.raises(WeightsError, match=rf"larger than {MAX_MODEL_BYTES} bytes"):
            load_weights(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6


def test_an_oversized_model_card_is_not_downloaded(hostile_hub, bundled_files):
    """A 2 MiB README.md was downloaded in full (a 300 MB one too): refused on the size the
    server declares, before the download."""
    card = b"# card\n" + b"x" * (2 << 20)
    commit = hostile_hub.commit(REPO, {**bundled_files, "README.md": card})
    with pytest.raises(WeightsError, match=r"README\.md .*2097159 bytes.*at most 1048576"):
        download_weights(f"{REPO}@{commit}")
    gets = [path for method, path, _ in hostile_hub.requests if method == "GET"]
    assert f"/{REPO}/resolve/{commit}/README.md" not in gets


def test_a_download_longer_than_declared_is_cut(hostile_hub, bundled_files):
    """A server that declares a small README.md in its metadata, then sends 2 MiB without a
    Content-Length (until it closes the connection): the download stops at the declared size."""
    commit = hostile_hub.commit(REPO, bundled_files)

    def lie(handler, revision, filename, commit, content):
        if filename != "README.md" or handler.command == "HEAD":
            return False
        handler.send_response(200)
        for key, value in _hub_headers(commit, filename, content).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.close_connection = True
        try:
            handler.wfile.write(b"x" * (2 << 20))
        except OSError:  # the client stopped reading
            pass
        return True

    hostile_hub.misbehave[REPO] = lie
    size = len(bundled_files["README.md"])
    with pytest.raises(WeightsError, match=rf"more than {size} bytes of README\.md"):
        download_weights(f"{REPO}@{commit}")
    cache = Path(constants.HF_HUB_CACHE)
    assert not any(p.is_file() and p.stat().st_size > 1 << 20 for p in cache.rglob("*"))
    assert not list(cache.rglob("snapshots/*/*"))  # nothing of the failed download was kept


# -- every Hub failure is one clear error, in bounded time -----------------------------------------
def test_an_unreachable_off_host_redirect(hostile_hub, bundled_files, no_proxy):
    """The Hub redirects the weights to a storage host that cannot be reached: a raw httpx
    ConnectError escaped."""
    commit = hostile_hub.commit(REPO, bundled_files)
    port = _closed_port()

    def redirect(handler, revision, filename, commit, content):
        if filename != "model.safetensors":
            return False
        headers = {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{_etag(filename, content)}"',
            "X-Linked-Size": str(len(content)),
            "Location": f"http://127.0.0.1:{port}/blob/{filename}",
        }
        _answer(handler, 302, b"", headers)
        return True

    hostile_hub.misbehave[REPO] = redirect
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        download_weights(f"{REPO}@{commit}")
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/blob/model.safetensors" in message
    assert "network" in message and "local_files_only" in message
    assert time.perf_counter() - start < 5


def test_a_bad_repo_commit_header(hostile_hub, bundled_files):
    """``X-Repo-Commit: not-a-commit``: a raw ValueError escaped."""
    commit = hostile_hub.commit(REPO, bundled_files)

    def bad_commit(handler, revision, filename, commit, content):
        _answer(handler, 200, content, _hub_headers("not-a-commit", filename, content))
        return True

    hostile_hub.misbehave[REPO] = bad_commit
    with pytest.raises(WeightsError, match=r"invalid commit id 'not-a-commit'.*HF_ENDPOINT"):
        download_weights(f"{REPO}@{commit}")


def test_a_server_error_is_fast_and_named(hostile_hub, bundled_files, no_proxy):
    """HTTP 500 on every request: it took 23 s (retries) and then blamed the network."""
    commit = hostile_hub.commit(REPO, bundled_files)

    def error(handler, revision, filename, commit, content):
        _answer(handler, 500, b"Internal Server Error", {})
        return True

    hostile_hub.misbehave[REPO] = error
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        download_weights(f"{REPO}@{commit}")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "HTTP 500" in message and "server error" in message
    assert f"/{REPO}/resolve/{commit}/config.json" in message
    assert "network" not in message.split("server error")[0]
    assert "local_files_only" in message
    assert elapsed < 5
    assert len(hostile_hub.requests) <= 3  # retries are bounded


@pytest.mark.timeout(60)
def test_a_slow_drip_server_hits_the_deadline(hostile_hub, bundled_files, monkeypatch, no_proxy):
    """A server that sends one byte every 0.1 s: a load hung for more than 90 s."""
    commit = hostile_hub.commit(REPO, bundled_files)

    def drip(handler, revision, filename, commit, content):
        if handler.command == "HEAD":
            return False
        handler.send_response(200)
        for key, value in _hub_headers(commit, filename, content).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        try:
            for byte in content:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:  # the client gave up
            pass
        return True

    hostile_hub.misbehave[REPO] = drip
    monkeypatch.setenv("DIMFEAT_HUB_TIMEOUT", "2")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"longer than 2 s.*DIMFEAT_HUB_TIMEOUT"):
        resolve_weights(f"{REPO}@{commit}")
    assert time.perf_counter() - start < 6
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"longer than 1 s"):
        download_weights(f"{REPO}@{commit}", timeout=1)
    assert time.perf_counter() - start < 4


def test_a_bad_deadline_setting_is_refused(fake_hub, bundled_files, monkeypatch):
    commit = fake_hub.commit(REPO, bundled_files)
    monkeypatch.setenv("DIMFEAT_HUB_TIMEOUT", "soon")
    with pytest.raises(WeightsError, match="DIMFEAT_HUB_TIMEOUT"):
        download_weights(f"{REPO}@{commit}")
    with pytest.raises(WeightsError, match="timeout"):
        download_weights(f"{REPO}@{commit}", timeout=0)


# -- CGCNN ids that leave their dataset ------------------------------------------------------------
def _cgcnn_folder(root: Path, nacl, ids: list[str]) -> Path:
    folder = root / "data"
    folder.mkdir()
    (folder / "id_prop.csv").write_text("".join(f"{i},1.0\n" for i in ids))
    for i in ids:
        target = folder / f"{i}.cif"
        if target.resolve().is_relative_to(folder.resolve()):
            nacl.to(filename=str(target))
    return folder


@pytest.mark.parametrize("idx", ["../outside", "sub/../../outside", "{abs}"])
def test_cgcnn_ids_that_leave_the_folder_are_refused(tmp_path, nacl, idx):
    """``id_prop.csv`` naming ``../outside`` or an absolute path: the CIF outside the dataset
    folder was read."""
    outside = tmp_path / "outside"
    nacl.to(filename=str(outside) + ".cif")
    idx = idx.format(abs=outside)
    folder = _cgcnn_folder(tmp_path, nacl, ["1", idx])
    with pytest.raises(ValueError, match=r"id_prop\.csv.*outside|id_prop\.csv.*not a plain"):
        load_cgcnn(folder)
    with pytest.raises(ValueError, match=r"id_prop\.csv"):
        load_structures(folder)


def test_cgcnn_ids_that_leave_the_tarball_folder_are_refused(tmp_path, nacl):
    archive = tmp_path / "data.tar.gz"
    cif = nacl.to(fmt="cif").encode()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [
            ("data/id_prop.csv", b"1,1.0\n../x,2.0\n"),
            ("data/1.cif", cif),
            ("x.cif", cif),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=r"id_prop\.csv.*'\.\./x'"):
        load_cgcnn(archive)


def test_tarball_members_that_leave_the_archive_are_refused(tmp_path, nacl):
    archive = tmp_path / "data.tar"
    cif = nacl.to(fmt="cif").encode()
    with tarfile.open(archive, "w") as tar:
        for name in ["a.cif", "../b.cif"]:
            info = tarfile.TarInfo(name)
            info.size = len(cif)
            tar.addfile(info, io.BytesIO(cif))
    with pytest.raises(ValueError, match=r"'\.\./b\.cif'"):
        load_structures(archive)


def test_plain_cgcnn_ids_still_load(tmp_path, nacl):
    folder = _cgcnn_folder(tmp_path, nacl, ["1", "mp-2", "x.y"])
    frame = load_cgcnn(folder)
    assert frame.material_id.tolist() == ["1", "mp-2", "x.y"]
    assert frame.target_0.tolist() == [1.0, 1.0, 1.0]
    assert [len(s) for s in frame.structure] == [len(nacl)] * 3
