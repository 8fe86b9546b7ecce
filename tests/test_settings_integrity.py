"""Settings that shape the vectors are checked, caches key on all of them, and training state
stays consistent: a digest in ``config.json``, the vector cache and stream manifests keyed on the
encoder's architecture, resumes past the requested epochs, ``set_params`` after ``fit`` and one
run per ``checkpoint_dir``."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLED_WEIGHTS, SINGLE_CHANNEL_WEIGHTS
from sklearn.exceptions import NotFittedError

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.channels import TWO_CHANNEL_ARCHITECTURE, load_weights
from dimfeat.locks import LockHeldError, exclusive, read_lock
from dimfeat.streaming import featurize_to_file
from dimfeat.training import CHECKPOINT_LOCK
from dimfeat.weights import (
    WeightsError,
    load_encoder,
    resolve_weights,
    settings_sha256,
)

# a few small crystals and a small site budget keep each training below a few seconds
TINY = {"weights": None, "max_atoms": 24, "site_budget": 200, "device": "cpu", "patience": None}


@pytest.fixture(params=BUNDLED_WEIGHTS)
def bundled_copy(request, tmp_path) -> Path:
    """A copy of a bundled weights folder (the two-channel default, or the single-channel
    one), as a user would download or copy it."""
    folder = tmp_path / "weights"
    shutil.copytree(resolve_weights(request.param), folder)
    return folder


def _two_channel(folder: Path) -> bool:
    return json.loads((folder / "config.json").read_text())["architecture"] == (
        TWO_CHANNEL_ARCHITECTURE
    )


def _edit(folder: Path, block: str, key: str, value) -> None:
    """Set ``block.key`` of ``config.json``; in a two-channel folder, an ``encoder`` setting is
    that of the structure channel (``inputs`` are shared by both channels)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    target = config[block] if block in config else config["channels"]["structure"][block]
    target[key] = value
    path.write_text(json.dumps(config, indent=1))


def _edited(folder: Path, block: str, key: str) -> str:
    """What the refusal names as edited: the setting, or for two channels the channel(s)."""
    if not _two_channel(folder):
        return rf"{block}\.{key}"
    return "the structure channel" if block == "encoder" else "the context and structure channels"


def _without_digest(folder: Path) -> None:
    """The folder as dimfeat wrote it before config.json carried a settings digest."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.pop("settings_sha256", None)
    config.pop("settings_digests", None)
    path.write_text(json.dumps(config, indent=1))


# -- item: config.json carries a digest of the settings that shape the vectors ---------------
def test_bundled_weights_record_the_digest_of_their_settings():
    _, config = load_encoder(resolve_weights(SINGLE_CHANNEL_WEIGHTS))
    assert config["settings_sha256"] == settings_sha256(config)
    # the two-channel default: a digest over both channels, and each channel's source folder's
    _, config = load_weights(resolve_weights(BUNDLED_WEIGHTS[0]))
    assert re.fullmatch(r"[0-9a-f]{64}", config["settings_sha256"])
    for block in config["channels"].values():
        assert re.fullmatch(r"[0-9a-f]{64}", block["source"]["settings_sha256"])


@pytest.mark.parametrize(
    ("block", "key", "value"),
    [("encoder", "distance_cutoff", 6.0), ("inputs", "max_atoms", 20)],
)
def test_an_edited_setting_that_shapes_the_vectors_is_refused(
    bundled_copy, nacl, block, key, value
):
    edited = _edited(bundled_copy, block, key)
    _edit(bundled_copy, block, key, value)
    with pytest.raises(WeightsError, match=rf"config\.json.*edited: {edited}.*Put the"):
        load_weights(bundled_copy)
    with pytest.raises(WeightsError, match=edited):
        DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu").transform([nacl])
    # the same value written back (8 for 8.0 too) loads again
    _edit(bundled_copy, block, key, {"distance_cutoff": 8, "max_atoms": 50}[key])
    load_weights(bundled_copy)


def test_a_folder_saved_before_the_digest_still_loads(bundled_copy, nacl):
    before = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu").transform([nacl])
    _without_digest(bundled_copy)
    X = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu").transform([nacl])
    assert np.array_equal(X, before)


def test_the_vector_cache_is_not_used_after_distance_cutoff_changes(bundled_copy, nacl, tmp_path):
    """Without a digest to refuse the edit, the cache must still miss: the edited cutoff moves
    the vector, and a vector cached before the edit is not that of the edited encoder."""
    _without_digest(bundled_copy)
    cache = tmp_path / "cache"
    before = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu", cache=cache)
    cached = before.transform([nacl])
    _edit(bundled_copy, "encoder", "distance_cutoff", 6.0)
    fresh = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu").transform([nacl])
    assert np.abs(fresh - cached).max() > 1e-2  # the edit moves the vector
    after = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu", cache=cache)
    np.testing.assert_array_equal(after.transform([nacl]), fresh)


def test_a_stream_manifest_made_before_distance_cutoff_changes_is_not_resumed(
    bundled_copy, sample_structures, tmp_path
):
    _without_digest(bundled_copy)
    out = tmp_path / "parts"
    structures = sample_structures[:4]
    first = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu")
    featurize_to_file(structures, out, first, chunk_size=2, progress=False)
    _edit(bundled_copy, "encoder", "distance_cutoff", 6.0)
    edited = DeepInfoMaxFeaturizer(weights=str(bundled_copy), device="cpu")
    with pytest.raises(ValueError, match=r"other settings \(encoder_sha256\)"):
        featurize_to_file(structures, out, edited, chunk_size=2, progress=False)


# -- item: training state ---------------------------------------------------------------------
def test_resuming_with_fewer_epochs_than_the_checkpoint_holds_is_refused(
    small_structures, tmp_path
):
    structures = small_structures[:12]
    DeepInfoMaxFeaturizer(epochs=2, checkpoint_dir=str(tmp_path), **TINY).fit(structures)
    fewer = DeepInfoMaxFeaturizer(epochs=1, checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match=r"holds 2 epochs of this run, more than epochs=1"):
        fewer.fit(structures)
    # the same budget returns the finished run, and what it saves says what its history says
    done = DeepInfoMaxFeaturizer(epochs=2, checkpoint_dir=str(tmp_path), **TINY).fit(structures)
    folder = done.save_pretrained(str(tmp_path / "saved"))
    training = json.loads((Path(folder) / "config.json").read_text())["training"]
    assert len(training["history"]) == training["settings"]["epochs"] == 2


def test_set_params_after_fit_is_not_answered_by_the_old_encoder(nacl, small_structures):
    loaded = DeepInfoMaxFeaturizer(device="cpu").fit([nacl])
    assert loaded.transform([nacl]).shape == (1, 128)
    loaded.set_params(weights=None, global_dim=16)
    assert loaded.transform([nacl]).shape == (1, 16)  # epochs=0: the weights now named
    assert loaded.get_feature_names_out().shape == (16,)
    trained = DeepInfoMaxFeaturizer(epochs=1, **TINY).fit(small_structures[:12])
    trained.set_params(global_dim=16)
    with pytest.raises(NotFittedError, match=r"fitted with other global_dim.*call fit again"):
        trained.transform([nacl])
    trained.set_params(global_dim=None)  # back to the parameters it was fitted with
    assert trained.transform([nacl]).shape == (1, 128)


def test_a_checkpoint_dir_in_use_by_a_live_run_is_refused(small_structures, tmp_path):
    structures = small_structures[:12]
    lock = tmp_path / CHECKPOINT_LOCK
    with exclusive(lock, purpose="DIM training") as owner:  # another run, live, holds it
        est = DeepInfoMaxFeaturizer(epochs=1, checkpoint_dir=str(tmp_path), **TINY)
        with pytest.raises(LockHeldError, match=rf"{lock}.*process {owner['pid']} on host"):
            est.fit(structures)
        assert not (tmp_path / "checkpoint.pt").exists()  # nothing of the owner's was touched
        assert read_lock(lock) == owner
    # released: the run trains, and releases the lock when it ends
    est.fit(structures)
    assert (tmp_path / "checkpoint.pt").is_file() and not lock.exists()


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(small_structures, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / CHECKPOINT_LOCK
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "x"}))
    est = DeepInfoMaxFeaturizer(epochs=1, checkpoint_dir=str(tmp_path), **TINY)
    with pytest.warns(UserWarning, match=rf"left by process {dead.pid}.*taken over"):
        est.fit(small_structures[:12])
    assert len(est.history_) == 1 and not lock.exists()


def test_the_lock_is_released_when_training_fails(small_structures, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    est = DeepInfoMaxFeaturizer(epochs=1, checkpoint_dir=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match="not a dimfeat training checkpoint"):
        est.fit(small_structures[:12])
    assert not (tmp_path / CHECKPOINT_LOCK).exists()


def test_a_lock_of_another_host_is_refused(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "created": "then"}))
    with pytest.raises(LockHeldError, match=r"process 1 on host elsewhere.*delete"):
        with exclusive(lock, purpose="test"):
            pass
    assert lock.exists()  # never deleted: its owner may be running
