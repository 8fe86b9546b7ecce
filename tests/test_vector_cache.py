"""The vector cache (``cache=``) and the per-process runtime cache used by matminer's pool."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from joblib import Memory
from pymatgen.core import Lattice, Structure

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.runtime import shared_runtime
from dimfeat.vector_cache import VectorCache, cache_folder, structure_key
from dimfeat.weights import state_checksum


def _stored(folder) -> list:
    """One entry per stored vector: the shard file (``<context>/shards/<uuid>.npz``) holding it."""
    stored = []
    for shard in sorted((folder / "dimfeat-vectors").glob("*/shards/*.npz")):
        try:
            with np.load(shard) as data:
                stored += [shard] * len(data["keys"])
        except (ValueError, OSError):
            continue
    return stored


def _spy_encode(monkeypatch) -> list[int]:
    """Counts the crystals encoded by any featuriser."""
    calls: list[int] = []
    original = DeepInfoMaxFeaturizer._encode

    def spy(self, inputs, progress=False):
        calls.append(len(inputs))
        return original(self, inputs, progress=progress)

    monkeypatch.setattr(DeepInfoMaxFeaturizer, "_encode", spy)
    return calls


def test_a_second_transform_reads_every_vector_back(small_structures, tmp_path, monkeypatch):
    structures = small_structures[:6]
    plain = DeepInfoMaxFeaturizer(device="cpu").transform(structures)
    calls = _spy_encode(monkeypatch)
    cached = DeepInfoMaxFeaturizer(device="cpu", cache=str(tmp_path))
    first = cached.transform(structures)
    assert calls == [6] and len(_stored(tmp_path)) == 6
    again = DeepInfoMaxFeaturizer(device="cpu", cache=Memory(tmp_path, verbose=0))
    second = again.transform(structures[::-1])
    assert calls == [6]  # nothing encoded: all read back, in the order asked
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, first[::-1])
    assert again.featurize(structures[2]) == pytest.approx(first[2].tolist())
    assert calls == [6]


def test_a_changed_structure_or_other_weights_or_settings_miss(cscl, tmp_path, monkeypatch):
    calls = _spy_encode(monkeypatch)
    DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path).transform([cscl])
    moved = cscl.copy()
    moved.translate_sites([1], [1e-9, 0, 0])  # an atom moved by 1e-9 (fractional)
    strained = Structure(Lattice.cubic(4.2 + 1e-9), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3])
    swapped = Structure(Lattice.cubic(4.2), ["Cl", "Cs"], [[0, 0, 0], [0.5] * 3])
    DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path).transform([moved, strained, swapped])
    assert calls == [1, 3]
    others = [
        DeepInfoMaxFeaturizer(weights=None, device="cpu", cache=tmp_path),  # other weights
        DeepInfoMaxFeaturizer(weights=None, random_state=1, device="cpu", cache=tmp_path),
        DeepInfoMaxFeaturizer(symprec=0.1, device="cpu", cache=tmp_path),  # other settings
        DeepInfoMaxFeaturizer(max_atoms=20, device="cpu", cache=tmp_path),
    ]
    for featurizer in others:
        featurizer.transform([cscl])
    assert calls == [1, 3, 1, 1, 1, 1]
    keys = {p.parent.parent.name for p in _stored(tmp_path)}
    assert len(keys) == 5  # one context per encoder and settings
    # a retrained encoder is other weights too, although it starts from the same name
    trained = DeepInfoMaxFeaturizer(epochs=1, validation_fraction=0, device="cpu", cache=tmp_path)
    trained.fit([cscl, swapped, strained])
    trained.transform([cscl])
    assert calls[-1] == 1


def test_the_key_is_the_structure_content_not_the_object(cscl):
    assert structure_key(cscl) == structure_key(cscl.copy())
    assert structure_key(Structure.from_dict(cscl.as_dict())) == structure_key(cscl)
    oxidised = cscl.copy()
    oxidised.add_oxidation_state_by_element({"Cs": 1, "Cl": -1})
    assert structure_key(oxidised) != structure_key(cscl)
    disordered = Structure(
        Lattice.cubic(4.2), [{"Cs": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5] * 3]
    )
    other = Structure(Lattice.cubic(4.2), [{"Cs": 0.6, "K": 0.4}, "Cl"], [[0, 0, 0], [0.5] * 3])
    assert structure_key(disordered) != structure_key(other)


def test_errors_name_the_position_in_the_input_with_a_cache(cscl, tmp_path):
    bad = Structure(Lattice.cubic(4.2), [{"Cs": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5] * 3])
    featurizer = DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path)
    featurizer.transform([cscl])
    with pytest.raises(ValueError, match=r"structure 2\b"):
        featurizer.transform([cscl, cscl, bad])
    with pytest.raises(ValueError, match=r"structure 1\b"):
        featurizer.transform([cscl, "not a crystal\nat all"])
    rows = featurizer.featurize_many([cscl, bad, cscl], ignore_errors=True, return_errors=True)
    assert np.isnan(rows[1][:-1]).all() and "structure 1" in rows[1][-1]
    assert rows[0][:-1] == rows[2][:-1] and np.isnan(rows[0][-1])


def test_a_damaged_file_is_computed_again(cscl, tmp_path):
    featurizer = DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path)
    expected = featurizer.transform([cscl])
    (path,) = _stored(tmp_path)
    path.write_bytes(b"not npy")
    # a new featuriser reads the folder again (one keeps the shards it has read in memory)
    featurizer = DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path)
    np.testing.assert_array_equal(featurizer.transform([cscl]), expected)
    (again,) = _stored(tmp_path)  # stored anew, in a shard of its own
    assert again != path and np.load(again)["vectors"].shape == (1, 128)


def test_cache_folder_accepts_paths_and_memory(tmp_path):
    assert cache_folder(None) is None and cache_folder(Memory(None)) is None
    assert cache_folder(str(tmp_path)) == cache_folder(Memory(tmp_path)) == tmp_path
    store = VectorCache(tmp_path, {"a": 1})
    assert store.get("ab" * 32) is None
    store.put("ab" * 32, np.ones(3))
    np.testing.assert_array_equal(store.get("ab" * 32), np.ones(3, dtype=np.float32))
    assert VectorCache(tmp_path, {"a": 2}).get("ab" * 32) is None


def test_the_runtime_is_loaded_once_per_process_and_not_pickled(small_structures):
    first = shared_runtime("sitenet-dim-mp36k")
    assert shared_runtime("sitenet-dim-mp36k").encoder is first.encoder
    assert shared_runtime(None, seed=0).encoder is not shared_runtime(None, seed=1).encoder
    featurizer = DeepInfoMaxFeaturizer(device="cpu")
    expected = featurizer.transform(small_structures[:2])
    assert featurizer.get_runtime().encoder is first.encoder
    state = pickle.dumps(featurizer)
    assert len(state) < 20_000  # the parameters, no encoder
    np.testing.assert_array_equal(pickle.loads(state).transform(small_structures[:2]), expected)
    # training never changes the shared encoder
    before = state_checksum(first.encoder)
    trained = DeepInfoMaxFeaturizer(epochs=1, device="cpu").fit(small_structures[:4])
    assert trained.encoder_ is not first.encoder
    assert state_checksum(first.encoder) == before
    np.testing.assert_array_equal(featurizer.transform(small_structures[:2]), expected)


def test_weights_changed_on_disk_after_the_first_load_are_verified_again(
    tmp_path, small_structures
):
    import shutil

    from dimfeat.weights import WeightsError, resolve_weights

    folder = tmp_path / "weights"
    shutil.copytree(resolve_weights("sitenet-dim-mp36k"), folder)
    assert shared_runtime(str(folder)).encoder is not None  # loaded and shared
    model = bytearray((folder / "model.safetensors").read_bytes())
    model[-100] ^= 0x01  # tampered in place: same folder, same config.json
    (folder / "model.safetensors").write_bytes(bytes(model))
    with pytest.raises(WeightsError, match="sha256"):
        shared_runtime(str(folder))
    with pytest.raises(WeightsError):
        DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").transform(small_structures[:1])
