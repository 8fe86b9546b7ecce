"""Two-channel weights everywhere single-channel ones work: fine-tuning (SiteNetRegressor),
DIM training (DeepInfoMaxFeaturizer.fit), the model card and bundling (benchmarks/release).

The two-channel folder is the screen's (benchmarks/results/archive/two-channel-screen-1/weights:
a 64-value context channel trained with 'other' false samples, a 64-value structure channel
trained with permutation, polymorph and strain false samples and global_trains_local). The Hub
round trip is in tests/test_hub.py, beside its loopback server.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.base import clone

from dimfeat import DeepInfoMaxFeaturizer, SiteNetRegressor
from dimfeat.card import data_citations, model_card
from dimfeat.channels import (
    TWO_CHANNEL_ARCHITECTURE,
    TwoChannelEncoder,
    combine_channels,
    load_weights,
    read_weights_config,
    write_model_card,
)
from dimfeat.weights import weights_citations

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SCREEN = ROOT / "benchmarks/results/archive/two-channel-screen-1"
WEIGHTS = str(SCREEN / "weights")
FAST = {"device": "cpu", "batch_size": 8, "validation_fraction": 0}


def _rocksalt() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _cscl_type() -> Structure:  # NaCl in the CsCl structure: same composition, other geometry
    return Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def data(small_structures) -> tuple[list[Structure], np.ndarray]:
    X = small_structures[:12]
    y = np.array([s.volume / len(s) for s in X])  # a real target: volume per atom
    return X, y


@pytest.fixture(scope="module")
def tuned(data) -> SiteNetRegressor:
    X, y = data
    return SiteNetRegressor(weights=WEIGHTS, epochs=3, lr=3e-3, **FAST).fit(X, y)


@pytest.fixture(scope="module")
def tuned_folder(tuned, tmp_path_factory) -> str:
    return tuned.save_pretrained(str(tmp_path_factory.mktemp("tuned") / "tuned"))


def _state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _moved(before: dict, after: dict, prefix: str) -> float:
    return max(float(np.abs(before[k] - after[k]).max()) for k in before if k.startswith(prefix))


# -- 1. SiteNetRegressor ----------------------------------------------------------------------
def test_regressor_fine_tunes_both_channels_end_to_end(tuned, tuned_folder, data):
    X, y = data
    start, _ = load_weights(WEIGHTS)
    assert isinstance(tuned.encoder_, TwoChannelEncoder)
    assert tuned.head_[0].in_features == 128  # the head reads both channels
    before, after = _state(start), _state(tuned.encoder_)
    assert _moved(before, after, "context.") > 1e-4
    assert _moved(before, after, "structure.") > 1e-4
    pred = tuned.predict(X)
    assert pred.shape == (len(X),) and pred.dtype == np.float64 and np.isfinite(pred).all()
    once = SiteNetRegressor(weights=WEIGHTS, epochs=1, lr=3e-3, **FAST).fit(X, y)
    assert not np.allclose(once.predict(X), pred)  # predictions change with training
    losses = [h["train_loss"] for h in tuned.history_]
    assert losses[-1] < losses[0]
    # the fine-tuned context channel is still a function of the composition alone
    context = DeepInfoMaxFeaturizer(weights=tuned_folder, channel="context")
    vectors = context.transform([_rocksalt(), _cscl_type()])
    assert np.array_equal(vectors[0], vectors[1])


def test_regressor_freeze_encoder_keeps_both_channels(data):
    X, y = data
    start, _ = load_weights(WEIGHTS)
    frozen = SiteNetRegressor(weights=WEIGHTS, epochs=2, freeze_encoder=True, **FAST).fit(X, y)
    assert _moved(_state(start), _state(frozen.encoder_), "") == 0.0
    first = SiteNetRegressor(weights=WEIGHTS, epochs=0, **FAST).fit(X, y)
    assert not np.allclose(frozen.predict(X), first.predict(X))  # the head trained


def test_regressor_save_reload_pickle_and_clone_round_trip(tuned, tuned_folder, data):
    X, y = data
    assert read_weights_config(tuned_folder)["architecture"] == TWO_CHANNEL_ARCHITECTURE
    restored = pickle.loads(pickle.dumps(tuned))
    assert isinstance(restored.encoder_, TwoChannelEncoder)
    assert np.array_equal(restored.predict(X), tuned.predict(X))
    # the saved folder is the fine-tuned encoder: a starting point with identical tensors
    start = SiteNetRegressor(weights=tuned_folder, epochs=0, **FAST).fit(X, y)
    for key, value in _state(tuned.encoder_).items():
        assert np.array_equal(value, _state(start.encoder_)[key]), key
    config = read_weights_config(tuned_folder)
    for channel in ("context", "structure"):
        record = config["channels"][channel]["source"]["training"]
        assert "SiteNetRegressor" in record["note"] and WEIGHTS in record["start_weights"]
    copy = clone(tuned)
    assert copy.get_params() == tuned.get_params() and not hasattr(copy, "encoder_")


def test_regressor_resumes_a_two_channel_fit_from_its_checkpoint(data, tmp_path):
    X, y = data
    options = {"weights": WEIGHTS, "checkpoint_dir": str(tmp_path), **FAST}
    first = SiteNetRegressor(epochs=1, **options).fit(X, y)
    resumed = SiteNetRegressor(epochs=2, **options).fit(X, y)
    straight = SiteNetRegressor(weights=WEIGHTS, epochs=2, **FAST).fit(X, y)
    assert resumed.history_[:1] == first.history_  # read back, not retrained
    np.testing.assert_allclose(resumed.predict(X), straight.predict(X), rtol=1e-5, atol=1e-6)


# -- 2. DeepInfoMaxFeaturizer.fit -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(small_structures) -> DeepInfoMaxFeaturizer:
    return DeepInfoMaxFeaturizer(weights=WEIGHTS, epochs=1, device="cpu").fit(small_structures[:24])


def test_fit_trains_each_channel_with_its_recorded_recipe(trained, small_structures, tmp_path):
    X = small_structures[:8]
    before = DeepInfoMaxFeaturizer(weights=WEIGHTS).transform(X)
    after = trained.transform(X)
    assert after.shape == before.shape == (8, 128)
    assert not np.allclose(after[:, :64], before[:, :64])  # context channel trained
    assert not np.allclose(after[:, 64:], before[:, 64:])  # structure channel trained
    assert [h["channel"] for h in trained.history_] == ["context", "structure"]
    # the context channel is still exactly a function of the composition
    pair = trained.transform([_rocksalt(), _cscl_type()])
    assert np.array_equal(pair[0, :64], pair[1, :64])
    assert not np.allclose(pair[0, 64:], pair[1, 64:])
    # save_pretrained writes a two-channel folder that gives identical vectors
    folder = trained.save_pretrained(str(tmp_path / "continued"))
    config = read_weights_config(folder)
    assert config["architecture"] == TWO_CHANNEL_ARCHITECTURE
    np.testing.assert_array_equal(DeepInfoMaxFeaturizer(weights=folder).transform(X), after)
    # each channel records the recipe it was trained with: its source's objective
    screen = read_weights_config(WEIGHTS)["channels"]
    for channel in ("context", "structure"):
        settings = config["channels"][channel]["source"]["training"]["settings"]
        recorded = screen[channel]["source"]["training"]["settings"]
        for key in ("false_samples", "global_trains_local", "alpha", "beta", "local_pairs"):
            assert settings[key] == recorded[key], (channel, key)
        assert settings["epochs"] == 1
        history = config["channels"][channel]["source"]["training"]["history"]
        assert len(history) == 1 and "channel" not in history[0]
    structure = config["channels"]["structure"]["source"]["training"]["settings"]
    assert structure["false_samples"] == ["permutation", "polymorph", "strain"]
    assert structure["global_trains_local"] is True
    assert config["channels"]["context"]["source"]["training"]["settings"]["false_samples"] == [
        "other"
    ]


def test_fit_refuses_an_objective_parameter_for_two_channel_weights(small_structures):
    featurizer = DeepInfoMaxFeaturizer(weights=WEIGHTS, epochs=1, false_samples=("other",))
    with pytest.raises(ValueError, match=r"own recorded recipe.*\['false_samples'\]"):
        featurizer.fit(small_structures[:4])
    assert not hasattr(featurizer, "encoder_")


def test_unfitted_two_channel_save_pretrained_keeps_the_sources(small_structures, tmp_path):
    folder = DeepInfoMaxFeaturizer(weights=WEIGHTS).save_pretrained(str(tmp_path / "w"))
    saved, screen = read_weights_config(folder), read_weights_config(WEIGHTS)
    assert saved["sha256"] == screen["sha256"]  # the same tensors, byte for byte
    for channel in ("context", "structure"):
        assert saved["channels"][channel]["source"] == screen["channels"][channel]["source"]
    X = small_structures[:4]
    np.testing.assert_array_equal(
        DeepInfoMaxFeaturizer(weights=folder).transform(X),
        DeepInfoMaxFeaturizer(weights=WEIGHTS).transform(X),
    )


def test_dimfeat_train_refuses_two_channel_starting_weights_saying_what_works(tmp_path):
    from dimfeat.training_run import train_weights

    with pytest.raises(ValueError, match=r"two-channel weights.*DeepInfoMaxFeaturizer"):
        train_weights([str(tmp_path / "none.json")], tmp_path / "out", weights=WEIGHTS)
    assert not (tmp_path / "out").exists()


# -- 3. the model card ------------------------------------------------------------------------
def _credited(folder: Path) -> dict:
    """The screen folder's config, its training data credited as the bundled weights' are."""
    config = read_weights_config(folder)
    for block in config["channels"].values():
        block["source"]["training"]["data"]["credit"] = (
            "Materials Project, through the CGCNN data set"
        )
    return config


def test_two_channel_card_has_both_channels_recipes_and_citations(tmp_path):
    folder = tmp_path / "screen"
    shutil.copytree(WEIGHTS, folder)
    config = _credited(folder)
    (folder / "config.json").write_text(json.dumps(config))  # training data: not a vector setting
    load_weights(folder)  # still verifies
    card = model_card(config)
    front, body = card.split("\n---\n", 1)
    for line in ("license: mit", "library_name: dimfeat", "- two-channel", "- materials-project"):
        assert line in front.splitlines(), line
    context = body[body.index("## Context channel") : body.index("## Structure channel")]
    structure = body[body.index("## Structure channel") : body.index("## Inputs")]
    assert "function of the composition alone, bit-identical" in context
    assert "- False samples: other." in context
    assert "- Distance input: none" in context
    assert "same composition" in structure
    assert (
        "- False samples: permutation, polymorph, strain; the global loss also trains the local "
        "encoder." in structure
    )
    for section in (context, structure):
        assert "### Training data" in section and "### Recipe" in section
        assert "| local DIM | global DIM |" in section  # validation losses of the epoch kept
    assert "Epochs run: 3 (maximum 8)" in context and "Epochs run: 8 (maximum 8)" in structure
    assert 'DeepInfoMaxFeaturizer(weights="weights", channel="context")' in body  # its name
    assert "moran2025dim" in body and "jain2013mp" in body and "xie2018cgcnn" in body
    # the citations of the folder, as the featuriser gives them, are the data's too
    assert data_citations(config) == weights_citations(str(folder)) != []
    assert DeepInfoMaxFeaturizer(weights=str(folder)).citations()[-2:] == data_citations(config)
    # the card written to a folder is the card of its config
    write_model_card(folder)
    assert (folder / "README.md").read_text() == card
    assert model_card(read_weights_config(WEIGHTS)) == combined_card(tmp_path)


def combined_card(tmp_path: Path) -> str:
    """The card ``combine_channels`` writes for the screen's two sources."""
    out = combine_channels(
        SCREEN / "context-epoch-003", SCREEN / "structure-epoch-008", tmp_path / "weights"
    )
    return (out / "README.md").read_text()


# -- 5. bundling two runs -----------------------------------------------------------------------
def test_bundle_weights_writes_a_two_channel_folder_with_each_selection(tmp_path, small_structures):
    from benchmarks.release.bundle_weights import main

    runs = {}
    for channel, epoch in (("context", 3), ("structure", 8)):
        run = tmp_path / f"{channel}_epochs"
        shutil.copytree(SCREEN / f"{channel}-epoch-{epoch:03d}", run / f"epoch-{epoch:03d}")
        shutil.copy(SCREEN / f"probe_curve_{channel}.json", run / "probe_curve.json")
        runs[channel] = run
    out = tmp_path / "sitenet-dim-two"
    main(
        [
            str(runs["context"]),
            str(out),
            "--structure-run",
            str(runs["structure"]),
            "--hardware",
            "2-core CPU",
            "--command",
            "dimfeat train ctx",
            "--structure-command",
            "dimfeat train str",
        ]
    )
    config = read_weights_config(out)
    assert config["architecture"] == TWO_CHANNEL_ARCHITECTURE and config["name"] == out.name
    screen = read_weights_config(WEIGHTS)
    assert config["sha256"] == screen["sha256"]  # the chosen epochs' tensors, unchanged
    X = small_structures[:4]
    np.testing.assert_array_equal(
        DeepInfoMaxFeaturizer(weights=str(out)).transform(X),
        DeepInfoMaxFeaturizer(weights=WEIGHTS).transform(X),
    )
    card = (out / "README.md").read_text()
    for channel, epoch, command in (("context", 3, "ctx"), ("structure", 8, "str")):
        source = config["channels"][channel]["source"]
        assert source["folder"] == f"{channel}_epochs/epoch-{epoch:03d}"
        training = source["training"]
        assert training["selection"]["epoch"] == epoch  # the rule's choice on each curve
        assert set(training["selection"]["curve"]) == {str(k) for k in range(9)}
        assert training["epochs_run"] == 8 and training["command"] == f"dimfeat train {command}"
        assert (
            training["hardware"] == screen["channels"][channel]["source"]["training"]["hardware"]
        )  # recorded by the run: kept
        assert f"| {epoch} (selected) |" in card
        assert f"selected epoch: {epoch} (train-split probe" in card
    assert card.count("### Selection curve") == 2
