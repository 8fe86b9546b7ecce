"""Weights folders: save/load round trip, resolution errors, and refusal of unsafe or bad files.

Every refused folder is written by ``save_pretrained`` and then damaged the way a bad download,
a careless edit or an attacker would: a pickle in place of the safetensors file (whose
unpickling would have a side effect), a truncated or garbage file, a sha256 mismatch, an unknown
format or architecture, unknown or invalid config keys.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.datasets import load_sample
from dimfeat.weights import (
    DEFAULT_WEIGHTS,
    WeightsError,
    available_weights,
    load_encoder,
    read_config,
    resolve_weights,
    save_pretrained,
    sha256_of,
    state_checksum,
)


class WritesMarker:
    """Unpickling this object opens (creates) the file at ``path``: a stand-in for any code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="session")
def structures():
    return list(load_sample().structure[:3])


@pytest.fixture(scope="session")
def bundled():
    return load_encoder(resolve_weights(DEFAULT_WEIGHTS))


@pytest.fixture(scope="session")
def bundled_vectors(structures) -> np.ndarray:
    return DeepInfoMaxFeaturizer(device="cpu").transform(structures)


@pytest.fixture
def folder(tmp_path, bundled) -> Path:
    encoder, config = bundled
    return save_pretrained(
        tmp_path / "weights", encoder, inputs=config["inputs"], training=config["training"]
    )


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        target = config
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(config))


def _replace_model(folder: Path, content: bytes, *, update_sha: bool) -> None:
    (folder / "model.safetensors").write_bytes(content)
    if update_sha:  # an attacker who controls the repo rewrites the checksum as well
        _edit_config(folder, sha256=sha256_of(folder / "model.safetensors"))


# -- round trip and resolution ----------------------------------------------------------------
def test_bundled_weights_are_available():
    assert DEFAULT_WEIGHTS in available_weights()
    config = read_config(resolve_weights(DEFAULT_WEIGHTS))
    assert config["encoder"]["global_dim"] == 128


def test_save_load_round_trip_gives_identical_vectors(
    tmp_path, bundled, structures, bundled_vectors
):
    folder = tmp_path / "saved"
    DeepInfoMaxFeaturizer(device="cpu").save_pretrained(str(folder), name="copy")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    encoder, config = load_encoder(folder)
    assert state_checksum(encoder) == state_checksum(bundled[0])
    assert config["name"] == "copy"
    assert "library_name: dimfeat" in (folder / "README.md").read_text()
    X = DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").transform(structures)
    assert np.array_equal(X, bundled_vectors)


@pytest.mark.parametrize(
    "missing", ["./no-such-weights", "/no/such/weights", "~/no-such-weights", "weights.safetensors"]
)
def test_resolve_missing_path_names_it(missing):
    with pytest.raises(WeightsError, match=f"no weights folder at '{missing}'"):
        resolve_weights(missing)


def test_resolve_missing_path_object_names_it(tmp_path):
    missing = tmp_path / "sub" / "weights"
    with pytest.raises(WeightsError, match=r"no weights folder at .*sub/weights"):
        resolve_weights(missing)


def test_resolve_relative_missing_folder_offline_names_it():
    # 'runs/best' could be a Hub id: offline, the error still names it (no network touched)
    with pytest.raises(WeightsError, match="runs/best"):
        resolve_weights("runs/best", local_files_only=True)


@pytest.mark.parametrize("name", ["no-such-weights", "a/b/c"])
def test_resolve_unknown_name(name):
    with pytest.raises(WeightsError, match=f"unknown weights '{name}'.*{DEFAULT_WEIGHTS}"):
        resolve_weights(name)


def test_resolve_file_instead_of_folder(folder):
    with pytest.raises(WeightsError, match="is a file; pass the folder"):
        resolve_weights(folder / "model.safetensors")


# -- unsafe or damaged model files ------------------------------------------------------------
@pytest.mark.parametrize("update_sha", [False, True])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_in_place_of_safetensors_is_never_unpickled(folder, tmp_path, writer, update_sha):
    marker = tmp_path / "unpickled.marker"
    payload = {"site_embedding.0.weight": torch.zeros(2), "hook": WritesMarker(marker)}
    path = folder / "model.safetensors"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    _replace_model(folder, path.read_bytes(), update_sha=update_sha)
    expected = "not a safetensors file" if update_sha else r"sha256 .* does not match"
    with pytest.raises(WeightsError, match=expected):
        load_encoder(folder)
    with pytest.raises(WeightsError):
        DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").fit([])
    assert not marker.exists()
    # control: the payload is live, so only refusing to unpickle kept the marker away (a copy
    # named .pt, because torch.load hands a *.safetensors path to safetensors itself)
    live = tmp_path / "payload.pt"
    live.write_bytes(path.read_bytes())
    if writer == "torch.save":
        torch.load(live, weights_only=False)
    else:
        with open(live, "rb") as handle:
            pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:5], "too short"),
        (lambda data: b"", "too short"),
        (lambda data: bytes(range(256)) * 40, "truncated or garbage"),
        (lambda data: (20).to_bytes(8, "little") + b"not json at all!!!!!", "garbage"),
        (lambda data: (2).to_bytes(8, "little") + b"[]", "not a JSON object"),
        (lambda data: b"PK\x03\x04" + data[4:], "zip archive"),
    ],
)
def test_damaged_model_file_is_refused(folder, damage, message):
    original = (folder / "model.safetensors").read_bytes()
    _replace_model(folder, damage(original), update_sha=True)
    with pytest.raises(WeightsError, match=message):
        load_encoder(folder)


def test_inconsistent_safetensors_header_is_refused(folder):
    # sizes add up, but the one tensor it declares does not match its byte range
    data = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    available = len(data) - 8 - n
    header = {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, available]}}
    text = json.dumps(header).encode().ljust(n)
    _replace_model(folder, data[:8] + text + data[8 + n :], update_sha=True)
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_encoder(folder)


def test_sha256_mismatch_is_refused(folder):
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError, match="corrupt or was tampered with"):
        load_encoder(folder)


def test_tensors_that_do_not_fit_the_architecture(folder, bundled):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in bundled[0].state_dict().items()}
    state["global_mu.weight"] = torch.zeros(3, 3)
    save_file(state, folder / "model.safetensors")
    _edit_config(folder, sha256=sha256_of(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="does not fit the architecture"):
        load_encoder(folder)


def test_missing_files(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"model\.safetensors is missing"):
        load_encoder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"config\.json is missing"):
        load_encoder(folder)


# -- bad configs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "dimfeat-weights/2"}, "unsupported weights format 'dimfeat-weights/2'"),
        ({"architecture": "resnet"}, "architecture 'resnet'"),
        ({"encoder__activation": "eval('1')"}, r"unknown encoder keys \['activation'\]"),
        ({"encoder__embed_dim": 10**9}, "embed_dim must be an integer"),
        ({"encoder__embed_dim": "64"}, "embed_dim must be an integer"),
        ({"encoder__local_dim": True}, "local_dim must be an integer"),
        ({"encoder__value_hidden": []}, "value_hidden must be a non-empty list"),
        ({"encoder__site_features": ["Number", "Number"]}, "site_features"),
        ({"encoder": [1, 2]}, "'encoder' must be an object"),
        ({"loader": "pickle"}, r"unknown keys \['loader'\]"),
        ({"sha256": "../../etc/passwd"}, "sha256 must be 64"),
        ({"normalisation__std": [0.0] * 9}, "std must be positive"),
        ({"normalisation__mean": [float("nan")] * 9}, "mean must be 9 finite numbers"),
        ({"normalisation__mean": [1.0] * 8}, "mean must be 9 finite numbers"),
        ({"normalisation__element_table": [[0.0] * 9] * 10}, "element_table must be 104 rows"),
        ({"normalisation__extra": 1}, r"unknown normalisation keys \['extra'\]"),
        ({"inputs__max_atoms": -1}, "max_atoms must be an integer"),
        ({"inputs__symprec": 0}, "symprec must be a positive number"),
        ({"inputs__symprec": True}, "symprec must be a positive number, not True"),
        ({"inputs": None}, "'inputs' must be an object"),
        ({"encoder__attention_hidden": [64] * 40}, "at most 16 widths"),
        ({"training": "yes"}, "'training' must be an object or null"),
    ],
)
def test_bad_config_is_refused(folder, changes, message):
    _edit_config(folder, **changes)
    with pytest.raises(WeightsError, match=message):
        load_encoder(folder)


def test_config_that_is_not_an_object(folder):
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(WeightsError, match="must hold a JSON object"):
        load_encoder(folder)
    (folder / "config.json").write_bytes(b"\x80\x04garbage")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_encoder(folder)


def test_config_missing_keys(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["normalisation"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"missing keys \['normalisation'\]"):
        load_encoder(folder)


# -- bad tensors and oversized files: refused before use, naming what is wrong -----------------
def _rewrite_tensors(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "dimfeat-weights/1"})
    _edit_config(folder, sha256=sha256_of(folder / "model.safetensors"))


def test_non_finite_tensors_are_refused_naming_them(folder):
    def poison(state):
        state["attention.0.weight"][3, 1] = float("nan")
        state["values.0.bias"][0] = float("inf")

    _rewrite_tensors(folder, poison)
    with pytest.raises(WeightsError, match=r"\['attention.0.weight', 'values.0.bias'\].*NaN"):
        load_encoder(folder)
    with pytest.raises(WeightsError, match="NaN or infinite"):
        DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").transform([])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bool, torch.int64, torch.uint8])
def test_tensors_that_are_not_float32_are_refused_naming_them(folder, dtype):
    def cast(state):
        state["site_embedding.0.weight"] = state["site_embedding.0.weight"].to(dtype)

    _rewrite_tensors(folder, cast)
    with pytest.raises(WeightsError, match=r"tensor 'site_embedding.0.weight' is \w+, not F32"):
        load_encoder(folder)


def test_an_oversized_architecture_is_refused_before_it_is_built(folder):
    """16 layers of width 4096 pass the schema but hold 268 million parameters (1 GiB)."""
    _edit_config(folder, encoder__value_hidden=[4096] * 16)
    with pytest.raises(WeightsError, match=r"\d+ parameters, more than the 50000000.*not built"):
        load_encoder(folder)


def test_an_oversized_config_is_not_read(folder):
    path = folder / "config.json"
    path.write_text(path.read_text() + " " * (1 << 20))  # still valid JSON
    with pytest.raises(WeightsError, match="larger than 1048576 bytes"):
        load_encoder(folder)
