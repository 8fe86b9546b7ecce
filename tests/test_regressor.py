"""Tests of dimfeat.regressor.SiteNetRegressor on real crystals (the bundled sample), on CPU."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError

from dimfeat import SiteNetRegressor
from dimfeat.datasets import load_sample

N = 32
FAST = {"device": "cpu", "batch_size": 16, "validation_fraction": 0}


@pytest.fixture(scope="module")
def data() -> tuple[list[Structure], np.ndarray]:
    structures, y = load_sample(as_frame=False)
    return structures[:N], y[:N]


@pytest.fixture(scope="module")
def fitted(data) -> SiteNetRegressor:
    X, y = data
    return SiteNetRegressor(epochs=2, random_state=0, **FAST).fit(X, y)


def test_fine_tuning_lowers_the_training_loss(data):
    X, y = data
    model = SiteNetRegressor(epochs=8, lr=3e-3, **FAST).fit(X, y)
    losses = [h["train_loss"] for h in model.history_]
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0]
    assert set(model.history_[0]) >= {"epoch", "train_loss", "seconds", "best"}


def test_predict_returns_finite_float64_of_shape_n(fitted, data):
    X, _ = data
    pred = fitted.predict(X)
    assert pred.shape == (N,) and pred.dtype == np.float64
    assert np.isfinite(pred).all()
    assert fitted.encoder_.config.global_dim == 128


def test_batch_size_is_the_prediction_batch_too_and_does_not_change_predictions(
    fitted, data, monkeypatch
):
    """``batch_size`` means crystals per encoder batch, in training and in prediction."""
    import copy

    import dimfeat.regressor

    X, _ = data
    seen = []
    run_batches = dimfeat.regressor.run_batches

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return run_batches(*args, **kwargs)

    monkeypatch.setattr(dimfeat.regressor, "run_batches", spy)
    default = fitted.predict(X)
    single = copy.deepcopy(fitted).set_params(batch_size=1).predict(X)
    assert seen == [16, 1]
    np.testing.assert_allclose(single, default, rtol=0, atol=1e-5)


def test_validation_split_and_early_stopping_restore_the_best_epoch(data):
    X, y = data
    model = SiteNetRegressor(
        epochs=30, patience=2, validation_fraction=0.25, device="cpu", batch_size=16
    ).fit(X, y)
    assert model.n_valid_ == 8 and model.n_train_ == N - 8
    best = min(model.history_, key=lambda h: h["valid_mae"])
    assert model.best_epoch_ == best["epoch"]
    assert len(model.history_) - model.best_epoch_ <= 2
    assert {"valid_loss", "valid_mae"} <= set(best)


def test_random_and_dim_initialisation_start_from_different_predictions(data):
    X, y = data
    dim = SiteNetRegressor(epochs=0, **FAST).fit(X, y).predict(X)
    random = SiteNetRegressor(weights=None, epochs=0, **FAST).fit(X, y).predict(X)
    assert np.isfinite(dim).all() and np.isfinite(random).all()
    assert not np.allclose(dim, random)


def test_same_seed_gives_identical_predictions_other_seed_differs(data, fitted):
    X, y = data
    again = SiteNetRegressor(epochs=2, random_state=0, **FAST).fit(X, y)
    other = SiteNetRegressor(epochs=2, random_state=1, **FAST).fit(X, y)
    assert np.array_equal(again.predict(X), fitted.predict(X))
    assert not np.allclose(other.predict(X), fitted.predict(X))


def test_freeze_encoder_trains_the_head_only(data):
    X, y = data
    start = SiteNetRegressor(epochs=0, **FAST).fit(X, y)
    frozen = SiteNetRegressor(epochs=2, freeze_encoder=True, **FAST).fit(X, y)
    for key, value in start.encoder_.state_dict().items():
        assert np.array_equal(value.numpy(), frozen.encoder_.state_dict()[key].numpy()), key
    assert not np.allclose(frozen.predict(X), start.predict(X))


def _largest_change(a: SiteNetRegressor, b: SiteNetRegressor) -> float:
    after = b.encoder_.state_dict()
    return max(float((v - after[k]).abs().max()) for k, v in a.encoder_.state_dict().items())


def test_head_warmup_keeps_the_encoder_fixed_for_its_epochs_then_fine_tunes_it(data):
    X, y = data
    start = SiteNetRegressor(epochs=0, **FAST).fit(X, y)
    warm = SiteNetRegressor(epochs=2, head_warmup_epochs=2, **FAST).fit(X, y)
    assert _largest_change(start, warm) == 0.0
    assert not np.allclose(warm.predict(X), start.predict(X))  # the head did train
    # the same two head-only epochs, then one that also moves the encoder
    longer = SiteNetRegressor(epochs=3, head_warmup_epochs=2, **FAST).fit(X, y)
    assert _largest_change(start, longer) > 1e-4
    for key, value in warm.head_.state_dict().items():  # the head trained in the warm-up
        assert not np.array_equal(value.numpy(), start.head_.state_dict()[key].numpy()), key


def test_encoder_lr_sets_the_encoder_step_apart_from_the_head(data):
    X, y = data
    start = SiteNetRegressor(epochs=0, **FAST).fit(X, y)
    slow = SiteNetRegressor(epochs=2, encoder_lr=1e-7, **FAST).fit(X, y)
    same = SiteNetRegressor(epochs=2, encoder_lr=1e-3, **FAST).fit(X, y)
    default = SiteNetRegressor(epochs=2, **FAST).fit(X, y)
    # AdamW moves a weight by about lr per step: 4 steps of 1e-7 stay far below 1e-3 steps
    assert 0 < _largest_change(start, slow) < 1e-5 < 1e-4 < _largest_change(start, default)
    np.testing.assert_array_equal(same.predict(X), default.predict(X))  # None means lr
    for key, value in slow.head_.state_dict().items():  # the head keeps its own lr
        assert not np.allclose(value.numpy(), start.head_.state_dict()[key].numpy()), key


def test_pickled_model_predicts_identically(fitted, data):
    X, _ = data
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.predict(X), fitted.predict(X))
    assert hasattr(fitted.encoder_, "forward")  # pickling did not touch the original


def test_clone_and_params(fitted):
    params = fitted.get_params()
    assert params["weights"] == "sitenet-dim-mp36k" and params["epochs"] == 2
    copy = clone(fitted)
    assert copy.get_params() == params
    assert not hasattr(copy, "encoder_")
    copy.set_params(lr=0.01, freeze_encoder=True)
    assert copy.lr == 0.01 and copy.freeze_encoder and fitted.lr == 1e-3


def test_pipeline_and_cross_val_score(data):
    X, y = data
    pipe = Pipeline([("sitenet", SiteNetRegressor(epochs=1, **FAST))])
    scores = cross_val_score(pipe, X, y, cv=2, scoring="neg_mean_absolute_error")
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert np.isfinite(pipe.fit(X, y).score(X, y))


def test_tags_say_input_is_not_a_2d_array():
    tags = get_tags(SiteNetRegressor())
    assert tags.input_tags.two_d_array is False
    assert tags.estimator_type == "regressor"


def test_predict_before_fit_raises_not_fitted(data):
    with pytest.raises(NotFittedError):
        SiteNetRegressor().predict(data[0])


def test_bad_structure_error_names_its_index(data, fitted):
    X, _ = data
    disordered = Structure(
        Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    with pytest.raises(ValueError, match=r"structure 3"):
        fitted.predict([*X[:3], disordered])
    with pytest.raises(TypeError, match=r"structure 1\), got int"):
        fitted.predict([X[0], 42])
    with pytest.raises(ValueError, match=r"no such file.*structure 1"):
        fitted.predict([X[0], "not a structure"])
    model = SiteNetRegressor(epochs=1, **FAST)
    with pytest.raises(ValueError, match=r"structure 2"):
        model.fit([X[0], X[1], disordered], [0.0, 1.0, 2.0])
    with pytest.raises(NotFittedError):  # a failed fit leaves no fitted model
        model.predict(X[:2])


def test_invalid_parameters_and_targets_raise_at_fit(data):
    X, y = data
    with pytest.raises(InvalidParameterError):
        SiteNetRegressor(lr=-1.0).fit(X, y)
    with pytest.raises(InvalidParameterError):
        SiteNetRegressor(encoder_lr=0.0).fit(X, y)
    with pytest.raises(InvalidParameterError):
        SiteNetRegressor(head_warmup_epochs=-1).fit(X, y)
    with pytest.raises(ValueError, match="shape"):
        SiteNetRegressor(epochs=0, **FAST).fit(X, y[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        SiteNetRegressor(epochs=0, **FAST).fit(X, np.full(N, np.nan))


def test_saved_encoder_is_a_starting_weights_folder(fitted, data, tmp_path):
    X, y = data
    folder = fitted.save_pretrained(str(tmp_path / "supervised"))
    start = SiteNetRegressor(weights=folder, epochs=0, **FAST).fit(X, y)
    for key, value in fitted.encoder_.state_dict().items():
        assert np.array_equal(value.numpy(), start.encoder_.state_dict()[key].numpy()), key


def test_an_interrupted_fit_resumes_from_its_checkpoint(data, tmp_path):
    X, y = data
    first = SiteNetRegressor(epochs=1, checkpoint_dir=str(tmp_path), **FAST).fit(X, y)
    resumed = SiteNetRegressor(epochs=2, checkpoint_dir=str(tmp_path), **FAST).fit(X, y)
    straight = SiteNetRegressor(epochs=2, **FAST).fit(X, y)
    assert resumed.history_[:1] == first.history_  # read back, not retrained
    np.testing.assert_allclose(resumed.predict(X), straight.predict(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other training or validation data"):
        SiteNetRegressor(epochs=3, checkpoint_dir=str(tmp_path), **FAST).fit(X, y[::-1])


def test_defaults_hold_out_a_validation_split_and_stop_early():
    params = SiteNetRegressor().get_params()
    assert params["validation_fraction"] > 0 and params["patience"] == 20
    assert params["epochs"] == 200  # a ceiling: early stopping ends training before it


def test_verbose_shows_a_bar_over_epochs_and_says_when_it_stopped_early(data, capsys):
    X, y = data
    model = SiteNetRegressor(
        epochs=40, patience=1, lr=3e-2, validation_fraction=0.25, device="cpu", batch_size=16,
        verbose=True,
    ).fit(X, y)  # fmt: skip
    err = capsys.readouterr().err
    assert len(model.history_) < 40  # stopped early
    assert re.search(rf"regression training: .*\| {len(model.history_)}/40 ", err)  # over epochs
    assert "valid_mae=" in err and "patience=" in err and "best=epoch" in err
    assert (
        f"stopped early after epoch {len(model.history_)} of 40: no better validation score "
        f"in 1 epochs (best: epoch {model.best_epoch_})"
    ) in err
    quiet = SiteNetRegressor(epochs=1, **FAST).fit(X, y)
    assert quiet.history_ and capsys.readouterr().err == ""
