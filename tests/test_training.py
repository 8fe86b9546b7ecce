"""DIM training on CPU: the loss goes down, runs are reproducible, checkpoints resume exactly.

Training data: 200 small crystals of the bundled sample (<= 6 atoms in the stored cell) with
supercells of at most 24 atoms, so that an epoch costs about a second of one CPU core.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dimfeat.encoder import SiteNetEncoder
from dimfeat.inputs import build_many
from dimfeat.training import (
    CHECKPOINT_NAME,
    DIMTrainer,
    TrainingConfig,
    cosine_lr_factor,
    resolve_device,
    split_validation,
)
from dimfeat.weights import state_checksum

LOSS_KEYS = ("loss", "local_dim", "global_dim", "local_kl", "global_kl", "composition")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(small_structures):
    inputs, errors = build_many(small_structures, max_atoms=24)
    assert not errors and len(inputs) == 200
    train_idx, valid_idx = split_validation(len(inputs), 0.2, seed=0)
    return [inputs[i] for i in train_idx], [inputs[i] for i in valid_idx]


def _train(data, epochs: int, checkpoint_dir=None, **settings):
    settings = {"site_budget": 200, "patience": None, "seed": 0, **settings}
    torch.manual_seed(settings["seed"])
    encoder = SiteNetEncoder()
    trainer = DIMTrainer(
        encoder, TrainingConfig(epochs=epochs, **settings), CPU, checkpoint_dir=checkpoint_dir
    )
    history = trainer.fit(*data)
    return history, encoder


def _without_timing(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.fixture(scope="module")
def three_epochs(data):
    return _train(data, 3)


@pytest.mark.slow
def test_short_run_lowers_the_validation_dim_loss(three_epochs):
    history, _ = three_epochs
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for record in history:
        for key in LOSS_KEYS:
            assert math.isfinite(record[f"train_{key}"])
            assert math.isfinite(record[f"valid_{key}"])
        assert record["seconds"] > 0
    first, last = history[0], history[-1]
    assert last["valid_loss"] < first["valid_loss"]
    assert last["valid_local_dim"] < first["valid_local_dim"]
    assert last["valid_global_dim"] < first["valid_global_dim"]
    # validation losses are the self-supervised loss on held-out crystals, no labels involved
    assert set(history[0]) == {
        "epoch",
        "seconds",
        "best",
        *(f"{part}_{key}" for part in ("train", "valid") for key in LOSS_KEYS),
    }


@pytest.mark.slow
def test_same_seed_gives_identical_history_and_weights(data, three_epochs):
    history, encoder = three_epochs
    again_history, again = _train(data, 3)
    assert _without_timing(again_history) == _without_timing(history)
    assert state_checksum(again) == state_checksum(encoder)
    other_history, _ = _train(data, 1, seed=1)
    assert other_history[0]["train_loss"] != history[0]["train_loss"]


@pytest.mark.slow
def test_resume_continues_and_ends_identical_to_an_uninterrupted_run(data, three_epochs, tmp_path):
    history, encoder = three_epochs
    first, _ = _train(data, 2, checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    assert len(first) == 2
    resumed, resumed_encoder = _train(data, 3, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert resumed[:2] == first  # read back from the checkpoint, not retrained
    # exact on CPU with one thread (the conftest sets it): same draws, same arithmetic
    assert _without_timing(resumed) == _without_timing(history)
    assert state_checksum(resumed_encoder) == state_checksum(encoder)

    with pytest.raises(ValueError, match=r"different training settings \(lr\)"):
        _train(data, 4, checkpoint_dir=tmp_path, lr=1e-3)
    with pytest.raises(ValueError, match="false_samples"):
        _train(data, 4, checkpoint_dir=tmp_path, false_samples=("other",))


def test_cosine_lr_factor_decays_from_one_and_then_holds():
    assert [cosine_lr_factor(e, None) for e in range(3)] == [1.0, 1.0, 1.0]
    factors = [cosine_lr_factor(e, 4) for e in range(6)]
    assert factors[0] == 1.0
    assert factors[:4] == pytest.approx([1.0, 0.8536, 0.5, 0.1464], abs=1e-4)
    assert factors[4] == factors[5] == factors[3]  # held after the decay
    with pytest.raises(ValueError, match="lr_decay_epochs"):
        TrainingConfig(lr_decay_epochs=0)


@pytest.mark.slow
def test_a_decayed_run_resumes_on_its_schedule_and_differs_from_a_constant_rate(
    data, three_epochs, tmp_path
):
    constant_history, constant = three_epochs
    first, _ = _train(data, 2, checkpoint_dir=tmp_path, lr_decay_epochs=3)
    assert [r["lr_factor"] for r in first[1:]] == pytest.approx([0.75])
    resumed, resumed_encoder = _train(data, 3, checkpoint_dir=tmp_path, lr_decay_epochs=3)
    whole, whole_encoder = _train(data, 3, lr_decay_epochs=3)
    assert [r["lr_factor"] for r in whole[1:]] == pytest.approx([0.75, 0.25])
    assert "lr_factor" not in whole[0]  # the first epoch runs at the base rate
    assert _without_timing(resumed) == _without_timing(whole)
    assert state_checksum(resumed_encoder) == state_checksum(whole_encoder)
    # the first epoch is the constant run's; the decayed ones are not
    assert _without_timing(whole[:1]) == _without_timing(constant_history[:1])
    assert whole[2]["train_loss"] != constant_history[2]["train_loss"]
    assert state_checksum(whole_encoder) != state_checksum(constant)
    with pytest.raises(ValueError, match=r"different training settings \(lr_decay_epochs\)"):
        _train(data, 4, checkpoint_dir=tmp_path, lr_decay_epochs=5)


def _drop_setting(file, name: str) -> None:
    """Rewrite a checkpoint as a version without the setting ``name`` wrote it."""
    state = torch.load(file, weights_only=True)
    config = json.loads(state["config"])
    del config[name]
    state["config"] = json.dumps(config)
    torch.save(state, file)


def test_a_checkpoint_from_before_a_setting_existed_resumes_only_at_its_old_value(data, tmp_path):
    _train(data, 1, checkpoint_dir=tmp_path)
    # rewrite the checkpoint as a version without composition_weight wrote it
    file = tmp_path / CHECKPOINT_NAME
    _drop_setting(file, "composition_weight")
    with pytest.raises(ValueError, match="composition_weight"):
        _train(data, 2, checkpoint_dir=tmp_path, composition_weight=1.0)
    resumed, _ = _train(data, 2, checkpoint_dir=tmp_path)  # 0.0 is what that version did
    assert [r["epoch"] for r in resumed] == [1, 2]
    # a setting with no recorded old value (like the regressor's encoder_lr): said plainly
    _drop_setting(file, "local_pairs")
    with pytest.raises(ValueError, match="older dimfeat that had no local_pairs setting"):
        _train(data, 3, checkpoint_dir=tmp_path)


def test_strain_range_is_a_setting_of_the_run(data, three_epochs, tmp_path):
    _, default = three_epochs
    _train(data, 1, checkpoint_dir=tmp_path, strain_range=(1.01, 1.05))
    with pytest.raises(ValueError, match=r"different training settings \(strain_range\)"):
        _train(data, 2, checkpoint_dir=tmp_path)
    resumed, _ = _train(data, 2, checkpoint_dir=tmp_path, strain_range=[1.01, 1.05])
    assert [r["epoch"] for r in resumed] == [1, 2]
    # a checkpoint of a version without the setting resumes at the old fixed range only
    _drop_setting(tmp_path / CHECKPOINT_NAME, "strain_range")
    with pytest.raises(ValueError, match="strain_range"):
        _train(data, 3, checkpoint_dir=tmp_path, strain_range=(1.01, 1.05))
    _, mild = _train(data, 3, strain_range=(1.01, 1.05))
    assert state_checksum(mild) != state_checksum(default)
    for bad in [(1.0, 1.05), (1.2, 1.1), (1.1,), "ab"]:
        with pytest.raises(ValueError, match="strain_range"):
            TrainingConfig(strain_range=bad)


def test_global_trains_local_is_a_setting_of_the_run(data, three_epochs, tmp_path):
    _, default = three_epochs
    _train(data, 1, checkpoint_dir=tmp_path, global_trains_local=True)
    with pytest.raises(ValueError, match=r"different training settings \(global_trains_local\)"):
        _train(data, 2, checkpoint_dir=tmp_path)
    resumed, _ = _train(data, 2, checkpoint_dir=tmp_path, global_trains_local=True)
    assert [r["epoch"] for r in resumed] == [1, 2]
    # a checkpoint of a version without the setting resumes the paper's detach() only
    _drop_setting(tmp_path / CHECKPOINT_NAME, "global_trains_local")
    with pytest.raises(ValueError, match="global_trains_local"):
        _train(data, 3, checkpoint_dir=tmp_path, global_trains_local=True)
    _, through = _train(data, 3, global_trains_local=True)
    assert state_checksum(through) != state_checksum(default)
    with pytest.raises(ValueError, match="global_trains_local must be True or False"):
        TrainingConfig(global_trains_local="yes")


def test_fit_stops_after_the_epoch_that_passes_the_time_budget(data):
    history, _ = _train(data, 5, max_seconds=0.0)
    assert len(history) == 1
    assert history[0]["best"] is True


def test_too_few_structures_raise(data):
    train, valid = data
    torch.manual_seed(0)
    trainer = DIMTrainer(SiteNetEncoder(), TrainingConfig(epochs=1), CPU)
    with pytest.raises(ValueError, match="at least 2"):
        trainer.fit(train[:1], valid)


def test_split_validation():
    train, valid = split_validation(100, 0.1, seed=3)
    assert len(valid) == 10 and len(train) == 90
    assert not set(train) & set(valid)
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(100))
    again, _ = split_validation(100, 0.1, seed=3)
    np.testing.assert_array_equal(train, again)
    assert len(split_validation(10, 0.01, seed=0)[1]) == 2  # at least 2 held out
    assert len(split_validation(10, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match="at least"):
        split_validation(3, 0.5, seed=0)


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_training_config_is_json_ready():
    data = TrainingConfig(false_samples=("other", "polymorph")).to_dict()
    assert data["false_samples"] == ["other", "polymorph"]
    assert data["lr"] == pytest.approx(8.12e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_epoch_on_cuda(data):
    torch.manual_seed(0)
    encoder = SiteNetEncoder()
    config = TrainingConfig(epochs=1, site_budget=200, patience=None)
    history = DIMTrainer(encoder, config, torch.device("cuda")).fit(*data)
    assert math.isfinite(history[0]["valid_loss"])
    assert next(encoder.parameters()).device.type == "cuda"


# -- refusals: a checkpoint of another run, a diverging loss, a budget that forms no batch
def test_a_checkpoint_of_other_data_is_refused(data, small_structures, tmp_path):
    _, first_encoder = _train(data, 1, checkpoint_dir=tmp_path)
    other_inputs, _ = build_many(small_structures[::-1], max_atoms=24)
    train_idx, valid_idx = split_validation(len(other_inputs), 0.2, seed=0)
    other = [other_inputs[i] for i in train_idx], [other_inputs[i] for i in valid_idx]
    with pytest.raises(ValueError, match="other training or validation data"):
        _train(other, 1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other training or validation data"):
        _train((data[0], data[1][:-1]), 2, checkpoint_dir=tmp_path)
    # the same data, but other starting weights
    trainer = DIMTrainer(
        SiteNetEncoder(),  # another random draw
        TrainingConfig(epochs=2, site_budget=200, patience=None),
        CPU,
        checkpoint_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="other starting weights"):
        trainer.fit(*data)
    assert state_checksum(_train(data, 1, checkpoint_dir=tmp_path)[1]) == state_checksum(
        first_encoder
    )  # the right run still resumes


def test_a_damaged_checkpoint_is_refused(data, tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a dimfeat training checkpoint"):
        _train(data, 1, checkpoint_dir=tmp_path)


def test_a_diverging_loss_stops_training_and_keeps_no_nan_state(small_structures, tmp_path):
    from dimfeat import DeepInfoMaxFeaturizer

    featurizer = DeepInfoMaxFeaturizer(
        weights=None, epochs=2, lr=1e3, device="cpu", max_atoms=24, site_budget=100,
        checkpoint_dir=str(tmp_path),
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"diverged at epoch 1, batch \d+ of \d+"):
        featurizer.fit(small_structures[:40])
    assert not hasattr(featurizer, "encoder_")  # not fitted: transform refuses
    assert not (tmp_path / CHECKPOINT_NAME).exists()
    torch.manual_seed(0)
    encoder = SiteNetEncoder()
    before = state_checksum(encoder)
    inputs, _ = build_many(small_structures[:40], max_atoms=24)
    trainer = DIMTrainer(encoder, TrainingConfig(epochs=2, lr=1e3, site_budget=100), CPU)
    with pytest.raises(FloatingPointError, match="put back to its state when fit started"):
        trainer.fit(inputs[:32], inputs[32:])
    assert state_checksum(encoder) == before


def test_a_site_budget_too_small_for_any_batch_raises(data, small_structures):
    from dimfeat import DeepInfoMaxFeaturizer

    featurizer = DeepInfoMaxFeaturizer(weights=None, epochs=1, device="cpu", max_atoms=24,
                                       site_budget=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"site_budget=2.*(too small|no batch)"):
        featurizer.fit(small_structures[:40])  # trained nothing and reported loss 0.0 before
    torch.manual_seed(0)
    trainer = DIMTrainer(SiteNetEncoder(), TrainingConfig(epochs=1, site_budget=1), CPU)
    with pytest.raises(ValueError, match=r"site_budget=1 is too small for any training batch"):
        trainer.fit(*data)
    smallest = sorted(c.n_sites for c in data[0])
    budget = smallest[0] + smallest[1]
    big_valid = [c for c in data[1] if c.n_sites > budget // 2 + 1]
    trainer = DIMTrainer(SiteNetEncoder(), TrainingConfig(epochs=1, site_budget=budget), CPU)
    with pytest.raises(ValueError, match="too small for any validation batch"):
        trainer.fit(data[0], big_valid)


def test_training_defaults_are_the_same_in_every_face():
    """TrainingConfig's defaults are what the featuriser and ``dimfeat train`` use."""
    import inspect

    from dimfeat import DeepInfoMaxFeaturizer, SiteNetRegressor
    from dimfeat.cli import _parser
    from dimfeat.regressor import REGRESSION_VALIDATION_FRACTION

    config = TrainingConfig()
    featurizer = inspect.signature(DeepInfoMaxFeaturizer).parameters
    for name in ("lr", "site_budget", "patience", "alpha", "beta", "validation_fraction"):
        assert featurizer[name].default == getattr(config, name), name
    # the regressor holds out more of its few labels (see dimfeat.regressor.validation_size)
    assert SiteNetRegressor().validation_fraction == REGRESSION_VALIDATION_FRACTION
    train = _parser().parse_args(["train", "out", "--data", "in"])
    for name in ("epochs", "lr", "site_budget", "patience", "beta", "validation_fraction"):
        assert getattr(train, name) == getattr(config, name), name
    assert train.critic == config.critic and train.local_false_samples is None
    assert tuple(train.false_samples.split(",")) == config.false_samples


def test_training_config_refuses_bad_objective_settings():
    from dimfeat.encoder import EncoderConfig
    from dimfeat.infomax import DIMHeads

    with pytest.raises(ValueError, match="critic must be one of"):
        TrainingConfig(critic="bilinear")
    with pytest.raises(ValueError, match="critic must be one of"):
        DIMHeads(EncoderConfig(), critic="bilinear")
    with pytest.raises(ValueError, match="local_false_samples must be a non-empty subset"):
        TrainingConfig(local_false_samples=())
    assert TrainingConfig(false_samples=["other", "strain"]).false_samples == ("other", "strain")
    with pytest.raises(ValueError, match="synthetic_weight must be > 0"):
        TrainingConfig(synthetic_weight=0.0)
