"""Weights folders: save/load round trip, resolution errors, and refusal of unsafe or bad files.

Every refused folder is written by ``save_pretrained`` and then damaged the way a bad download,
a careless edit or an attacker would: a pickle in place of the safetensors file (whose
unpickling would have a side effect), a truncated or garbage file, a sha256 mismatch, an unknown
format or architecture, unknown or invalid config keys. The single-channel folder is saved from
the bundled single-channel weights; the checks that hold for a folder of either kind are run on a
copy of the two-channel default weights too (``any_folder``, loaded by ``load_weights``, which
the featuriser uses).
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUNDLED_WEIGHTS, SINGLE_CHANNEL_WEIGHTS

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.channels import TWO_CHANNEL_ARCHITECTURE, TwoChannelEncoder, load_weights
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
    """The bundled single-channel encoder and config: what the single-channel folders hold."""
    return load_encoder(resolve_weights(SINGLE_CHANNEL_WEIGHTS))


@pytest.fixture
def folder(tmp_path, bundled) -> Path:
    """A single-channel folder written by ``save_pretrained``, to damage."""
    encoder, config = bundled
    return save_pretrained(
        tmp_path / "weights", encoder, inputs=config["inputs"], training=config["training"]
    )


@pytest.fixture(params=["single-channel", "two-channel"])
def any_folder(request, tmp_path) -> Path:
    """A folder of either kind to damage: the single-channel ``folder``, or a copy of the
    two-channel default weights as a user would download or copy it."""
    if request.param == "single-channel":
        return request.getfixturevalue("folder")
    return Path(shutil.copytree(resolve_weights(DEFAULT_WEIGHTS), tmp_path / "two-channel"))


def _prefix(folder: Path) -> str:
    """How the file names the tensors of the encoder damaged by the tests (a two-channel file's
    structure channel, else the encoder's own names)."""
    config = json.loads((folder / "config.json").read_text())
    return "structure." if config["architecture"] == TWO_CHANNEL_ARCHITECTURE else ""


def _config_key(folder: Path, key: str) -> str:
    """``key`` of a single-channel config (``encoder__...``, ``normalisation__...``) where the
    folder holds it: under ``channels__structure__`` in a two-channel config."""
    if _prefix(folder) and key.split("__", 1)[0] in ("encoder", "normalisation"):
        return "channels__structure__" + key
    return key


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        target = config
        *parents, last = _config_key(folder, key).split("__")
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
    assert set(BUNDLED_WEIGHTS) <= set(available_weights())
    # the default: two channels of 64 values, the length of the single-channel vector (128)
    default = read_config(resolve_weights(DEFAULT_WEIGHTS))
    single = read_config(resolve_weights(SINGLE_CHANNEL_WEIGHTS))
    assert default["architecture"] == TWO_CHANNEL_ARCHITECTURE
    widths = [default["channels"][c]["encoder"]["global_dim"] for c in ("context", "structure")]
    assert widths == [64, 64]
    assert sum(widths) == single["encoder"]["global_dim"] == 128
    assert DeepInfoMaxFeaturizer(device="cpu").fit([]).n_features_out_ == 128


def test_load_encoder_sends_a_two_channel_folder_to_load_weights():
    folder = resolve_weights(DEFAULT_WEIGHTS)
    with pytest.raises(WeightsError, match=r"two-channel weights folder.*load_weights"):
        load_encoder(folder)
    encoder, config = load_weights(folder)
    assert isinstance(encoder, TwoChannelEncoder)
    assert config["architecture"] == TWO_CHANNEL_ARCHITECTURE


@pytest.mark.parametrize("weights", BUNDLED_WEIGHTS)
def test_save_load_round_trip_gives_identical_vectors(tmp_path, structures, weights):
    bundled_encoder, bundled_config = load_weights(resolve_weights(weights))
    folder = tmp_path / "saved"
    DeepInfoMaxFeaturizer(weights=weights, device="cpu").save_pretrained(str(folder), name="copy")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    encoder, config = load_weights(folder)
    assert type(encoder) is type(bundled_encoder)
    assert config["architecture"] == bundled_config["architecture"]
    assert state_checksum(encoder) == state_checksum(bundled_encoder)
    assert config["name"] == "copy"
    assert "library_name: dimfeat" in (folder / "README.md").read_text()
    X = DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").transform(structures)
    bundled_vectors = DeepInfoMaxFeaturizer(weights=weights, device="cpu").transform(structures)
    assert np.array_equal(X, bundled_vectors)
    if isinstance(encoder, TwoChannelEncoder):  # each channel keeps the folder it came from
        for channel in ("context", "structure"):
            saved, original = (c["channels"][channel]["source"] for c in (config, bundled_config))
            assert saved["sha256"] == original["sha256"]
            assert saved["training"] == original["training"]


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
def test_pickle_in_place_of_safetensors_is_never_unpickled(
    any_folder, tmp_path, writer, update_sha
):
    marker = tmp_path / "unpickled.marker"
    payload = {"site_embedding.0.weight": torch.zeros(2), "hook": WritesMarker(marker)}
    path = any_folder / "model.safetensors"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    _replace_model(any_folder, path.read_bytes(), update_sha=update_sha)
    expected = "not a safetensors file" if update_sha else r"sha256 .* does not match"
    with pytest.raises(WeightsError, match=expected):
        load_weights(any_folder)
    with pytest.raises(WeightsError):
        DeepInfoMaxFeaturizer(weights=str(any_folder), device="cpu").fit([])
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
def test_damaged_model_file_is_refused(any_folder, damage, message):
    original = (any_folder / "model.safetensors").read_bytes()
    _replace_model(any_folder, damage(original), update_sha=True)
    with pytest.raises(WeightsError, match=message):
        load_weights(any_folder)


def test_inconsistent_safetensors_header_is_refused(any_folder):
    # sizes add up, but the one tensor it declares does not match its byte range
    data = (any_folder / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    available = len(data) - 8 - n
    header = {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, available]}}
    text = json.dumps(header).encode().ljust(n)
    _replace_model(any_folder, data[:8] + text + data[8 + n :], update_sha=True)
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_weights(any_folder)


def test_sha256_mismatch_is_refused(any_folder):
    with open(any_folder / "model.safetensors", "r+b") as handle:
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError, match="corrupt or was tampered with"):
        load_weights(any_folder)


def test_tensors_that_do_not_fit_the_architecture(any_folder):
    name = _prefix(any_folder) + "global_mu.weight"
    _rewrite_tensors(any_folder, lambda state: state.update({name: torch.zeros(3, 3)}))
    with pytest.raises(WeightsError, match=rf"does not fit the architecture.*'{name}' has shape"):
        load_weights(any_folder)


def test_missing_files(any_folder):
    (any_folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"model\.safetensors is missing"):
        load_weights(any_folder)
    (any_folder / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"config\.json is missing"):
        load_weights(any_folder)


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
def test_bad_config_is_refused(any_folder, changes, message):
    if _prefix(any_folder) and "training" in changes:
        # a two-channel config keeps each channel's training record in its source:
        # test_bad_two_channel_config_is_refused
        pytest.skip("no top-level training record in a two-channel config")
    _edit_config(any_folder, **changes)
    with pytest.raises(WeightsError, match=message):
        load_weights(any_folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["channels"].pop("context"), r"exactly \['context', 'structure'\]"),
        (lambda c: c["channels"].update(extra={}), r"exactly \['context', 'structure'\]"),
        (lambda c: c["channels"]["context"].update(loader="pickle"), "channels.context must be"),
        (lambda c: c["channels"].update(structure=[1]), "channels.structure must be an object"),
        (lambda c: c["channels"]["context"].update(source="x"), "source must be an object"),
        (
            lambda c: c["channels"]["structure"]["source"].update(training="yes"),
            "channels.structure.source.training must be an object or null",
        ),
        (lambda c: c.update(name=["x"]), "'name' must be a string"),
        (lambda c: c.update(training={}), r"unknown keys \['training'\]"),
    ],
)
def test_bad_two_channel_config_is_refused(tmp_path, edit, message):
    folder = Path(shutil.copytree(resolve_weights(DEFAULT_WEIGHTS), tmp_path / "two-channel"))
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=message):
        load_weights(folder)
    with pytest.raises(WeightsError, match=message):
        read_config(folder)


def test_config_that_is_not_an_object(any_folder):
    (any_folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(WeightsError, match="must hold a JSON object"):
        load_weights(any_folder)
    (any_folder / "config.json").write_bytes(b"\x80\x04garbage")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_weights(any_folder)


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


def test_non_finite_tensors_are_refused_naming_them(any_folder):
    prefix = _prefix(any_folder)

    def poison(state):
        state[prefix + "attention.0.weight"][3, 1] = float("nan")
        state[prefix + "values.0.bias"][0] = float("inf")

    _rewrite_tensors(any_folder, poison)
    names = rf"\['{prefix}attention.0.weight', '{prefix}values.0.bias'\]"
    with pytest.raises(WeightsError, match=rf"{names}.*NaN"):
        load_weights(any_folder)
    with pytest.raises(WeightsError, match="NaN or infinite"):
        DeepInfoMaxFeaturizer(weights=str(any_folder), device="cpu").transform([])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bool, torch.int64, torch.uint8])
def test_tensors_that_are_not_float32_are_refused_naming_them(any_folder, dtype):
    name = _prefix(any_folder) + "site_embedding.0.weight"

    def cast(state):
        state[name] = state[name].to(dtype)

    _rewrite_tensors(any_folder, cast)
    with pytest.raises(WeightsError, match=rf"tensor '{name}' is \w+, not F32"):
        load_weights(any_folder)


def test_an_oversized_architecture_is_refused_before_it_is_built(any_folder):
    """16 layers of width 4096 pass the schema but hold 268 million parameters (1 GiB)."""
    _edit_config(any_folder, encoder__value_hidden=[4096] * 16)
    with pytest.raises(WeightsError, match=r"\d+ parameters, more than the 50000000.*not built"):
        load_weights(any_folder)


def test_an_oversized_config_is_not_read(any_folder):
    path = any_folder / "config.json"
    path.write_text(path.read_text() + " " * (1 << 20))  # still valid JSON
    with pytest.raises(WeightsError, match="larger than 1048576 bytes"):
        load_weights(any_folder)


_FIRST_TRANSFORM = """
import sys
from pymatgen.core import Lattice, Structure
from dimfeat import DeepInfoMaxFeaturizer

salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
vector = DeepInfoMaxFeaturizer().transform([salt])
print(vector.shape, "sympy" in sys.modules)
"""


def test_the_first_transform_of_a_fresh_process_does_not_import_sympy():
    """The weights check builds the encoder on the meta device: a Python shape check there
    (torch's linspace) imported sympy, 0.5-0.8 s of a fresh process's first vector."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_TRANSFORM], capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(1,", "128)", "False"]


def test_the_gaussian_centres_are_on_the_default_device_and_torch_linspace():
    from dimfeat.encoder import GaussianBasis

    reference = torch.linspace(0.0, 8.0, 32)
    assert torch.equal(GaussianBasis(32, 8.0).centres, reference)
    with torch.device("meta"):
        on_meta = GaussianBasis(32, 8.0)
    assert on_meta.centres.device.type == "meta"
    assert on_meta.centres.shape == reference.shape
