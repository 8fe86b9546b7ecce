"""What a new user still trips on: the regressor's validation size, weights files a cluster can
share, a vector cache of few files, matminer's ``set_n_jobs``, ``dimfeat train --help``, and a bad
``--weights`` that left an empty output folder behind."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from matminer.featurizers.base import MultipleFeaturizer
from pymatgen.io.cif import CifWriter

from dimfeat import DeepInfoMaxFeaturizer, SiteNetRegressor
from dimfeat.cli import _parser, main
from dimfeat.vector_cache import VectorCache
from dimfeat.weights import state_checksum


# -- the regressor holds out enough labels to stop on ---------------------------------------------
def test_the_regressor_holds_out_a_fifth_of_its_labels_at_most_200(sample):
    from dimfeat.regressor import validation_size

    # 5% held out 2-50 crystals at 50-1,000 labels: a validation MAE too noisy to stop on
    assert [validation_size(n) for n in (50, 100, 500, 1000, 5000)] == [10, 20, 100, 200, 200]
    assert validation_size(50, 0) == 0 and validation_size(5000, 0.2, None) == 1000
    rows = sample[sample["structure"].map(len) <= 6].iloc[:60]
    X, y = rows["structure"].tolist(), rows["formation_energy_per_atom"].to_numpy()
    model = SiteNetRegressor(epochs=1, device="cpu", batch_size=32).fit(X, y)
    assert (model.n_valid_, model.n_train_) == (12, 48)
    assert len(model.history_) == 1 and "valid_mae" in model.history_[0]
    capped = SiteNetRegressor(epochs=0, device="cpu", max_validation=5).fit(X, y)
    assert capped.n_valid_ == 5


# -- weights files a cluster can share ------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_weights_files_get_the_permissions_of_any_new_file(featurizer, tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = Path(featurizer.save_pretrained(str(tmp_path / "weights")))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == dict.fromkeys(["model.safetensors", "config.json", "README.md"], 0o666 & ~umask)
    # and they load back: every tensor (the normalisation buffers too) of every channel
    loaded = DeepInfoMaxFeaturizer(weights=str(folder), device="cpu").get_runtime().encoder
    assert state_checksum(loaded) == state_checksum(featurizer.get_runtime().encoder)


# -- a vector cache of a few files, not one per structure -----------------------------------------
def test_a_cached_transform_of_200_structures_writes_a_handful_of_files(
    small_structures, tmp_path, monkeypatch
):
    structures = small_structures[:200]
    first = DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path).transform(structures)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) <= 3, files  # context.json and one shard (it was 200 .npy files)
    encoded: list[int] = []
    original = DeepInfoMaxFeaturizer._encode

    def spy(self, inputs, progress=False):
        encoded.append(len(inputs))
        return original(self, inputs, progress=progress)

    monkeypatch.setattr(DeepInfoMaxFeaturizer, "_encode", spy)
    again = DeepInfoMaxFeaturizer(device="cpu", cache=tmp_path).transform(structures[::-1])
    assert encoded == []  # every vector read back from the shard
    np.testing.assert_array_equal(again, first[::-1])


def test_caches_sharing_a_folder_see_each_others_shards(tmp_path):
    a, b = VectorCache(tmp_path, {"a": 1}), VectorCache(tmp_path, {"a": 1})
    assert b.get("cd" * 32) is None  # b has read the (empty) folder
    a.put_many(["cd" * 32, "ef" * 32], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(b.get("ef" * 32), np.array([3, 4, 5], dtype=np.float32))
    b.put("12" * 32, np.ones(3))
    assert a.get_many(["12" * 32, "cd" * 32, "00" * 32])[2] is None
    assert len(list((tmp_path / "dimfeat-vectors").glob("*/shards/*.npz"))) == 2
    assert not list(tmp_path.rglob("*.tmp"))


# -- matminer's set_n_jobs -------------------------------------------------------------------------
def test_matminer_set_n_jobs_sets_the_processes_that_build_inputs(small_structures):
    featurizer = DeepInfoMaxFeaturizer(device="cpu")
    featurizer.set_n_jobs(2)
    assert featurizer.n_jobs == 2 and featurizer.get_params()["n_jobs"] == 2
    MultipleFeaturizer([featurizer]).set_n_jobs(1)
    assert featurizer.get_params()["n_jobs"] == 1
    featurizer.set_n_jobs(0)  # checked on the next call, as set_params
    with pytest.raises(ValueError, match="n_jobs"):
        featurizer.transform(small_structures[:1])


# -- dimfeat train --help ---------------------------------------------------------------------
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["train", "featurize"])
def test_every_option_has_help_text(command):
    parser = _subparsers()[command]
    missing = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert missing == []


def test_train_options_are_grouped():
    parser = _subparsers()["train"]
    titles = {g.title.split(":")[0]: g for g in parser._action_groups}
    assert {"data", "recipe", "optimisation", "output"} <= set(titles)
    ungrouped = [
        a.dest
        for g in parser._action_groups
        if g.title in {"options", "optional arguments", "positional arguments"}
        for a in g._group_actions
    ]
    assert ungrouped == ["help"]
    grouped = {
        a.dest: g.title.split(":")[0] for g in parser._action_groups for a in g._group_actions
    }
    assert grouped["epochs"] == "optimisation" and grouped["critic"] == "recipe"
    assert grouped["cache"] == "data" and grouped["checkpoint_dir"] == "output"
    text = parser.format_help()
    assert text.index("data:") < text.index("recipe:") < text.index("optimisation:")


# -- a bad --weights creates nothing -----------------------------------------------------------
@pytest.mark.parametrize("out", ["x.parquet", "x.csv", "x.npy", "x"])
def test_bad_weights_fail_before_any_output_is_made(nacl, tmp_path, out):
    CifWriter(nacl).write_file(tmp_path / "nacl.cif")
    argv = ["featurize", str(tmp_path / "nacl.cif"), "-o", str(tmp_path / out)]
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--weights", str(tmp_path / "nonexistent"), "--n-jobs", "1", "--quiet"])
    assert raised.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nacl.cif"]
