"""The scikit-learn and matminer contracts of every dimfeat estimator, on real crystals.

scikit-learn's ``check_estimator`` runs one check on an estimator whose input is not a 2-D array
(the ``two_d_array=False`` tag skips the rest). Here the checks scikit-learn would run are ported
to crystal inputs, on :class:`~dimfeat.DeepInfoMaxFeaturizer` (bundled weights, and trained by
``fit``), :class:`~dimfeat.SiteNetRegressor` and the baselines
:class:`~dimfeat.baselines.OrbitalFieldMatrixFeaturizer` and
:class:`~dimfeat.baselines.XRDPatternFeaturizer`, and so are the tests of matminer's
``BaseFeaturizer`` (``matminer/featurizers/tests/test_base.py``).

Every check is in one of two ledgers: ``PORTED`` (check -> the test here that ports it) or
``EXPECTED_DEVIATIONS`` (check -> why it does not apply or is not met).
``test_every_sklearn_check_is_ported_or_an_expected_deviation`` lists the checks the installed
scikit-learn yields for each estimator (as if it took 2-D arrays) and fails on one in neither.

Expected deviations (scikit-learn)
----------------------------------
=======================================  ======================================================
check                                    reason
=======================================  ======================================================
check_mixin_order                        matminer's ``BaseFeaturizer`` lists ``BaseEstimator``
                                         before ``TransformerMixin`` (the featurisers only;
                                         ``SiteNetRegressor`` passes it)
check_complex_data, check_dtype_object,  numeric input: a structure is not a number. Ported
check_fit1d, check_fit2d_predict1d,      part: numbers, arrays and non-structures are refused
check_fit2d_1feature                     naming the position
check_estimator_sparse_tag/_array/       sparse matrices and array-API arrays hold numbers
_matrix, check_array_api_input,
check_f_contiguous_array_estimator
check_positive_only_tag_during_fit       numeric input (the tag is False)
check_readonly_memmap_input              a memmap holds numbers; ported part: the input list
                                         and its structures are not changed
check_n_features_in,                     structures have no input features: ``n_features_in_``
check_n_features_in_after_fitting        is never set (ported: it stays absent, and the output
                                         names come from ``feature_labels()``)
check_estimators_partial_fit_n_features  no ``partial_fit``
check_transformer_n_iter,                no ``max_iter`` parameter (``epochs`` is a ceiling and
check_non_transformer_estimators_n_iter  ``history_`` records the epochs run)
check_supervised_y_2d                    a column-vector ``y`` is refused with a ValueError
                                         naming its shape instead of raveled with a warning
check_methods_subset_invariance          met within float32 round-off (relative 1e-5), not
                                         the check's ``atol=1e-7``
=======================================  ======================================================

Expected deviations (matminer's test_base.py)
---------------------------------------------
``test_matrix`` and ``test_multitype_multifeat``: every feature is a float. ``test_caching``:
matminer's nearest-neighbour cache is not used (dimfeat's vector cache is tested in
``test_vector_cache.py``). ``test_multiprocessing_df`` and matminer's default process pool
(``MultipleFeaturizer`` with ``n_jobs`` = the CPU count): covered by their own tests; here
``set_n_jobs(1)``. ``precheck``/``precheck_dataframe``: matminer's default (every entry passes);
``featurize_dataframe(..., ignore_errors=True, return_errors=True)`` reports what fails.
"""

from __future__ import annotations

import inspect
import pickle
import warnings
from collections.abc import Callable

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import weights_labels
from matminer.featurizers.base import MultipleFeaturizer, StackedFeaturizer
from pymatgen.core import Lattice, Molecule, Structure
from sklearn.base import clone, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import _check_name, estimator_checks_generator
from sklearn.utils.validation import check_is_fitted

from dimfeat import DeepInfoMaxFeaturizer, SiteNetRegressor
from dimfeat.baselines import OrbitalFieldMatrixFeaturizer, XRDPatternFeaturizer
from dimfeat.inputs import InvalidStructureError

pytestmark = [  # matminer's featurize_dataframe adds columns one by one, and says so
    pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning"),
    pytest.mark.filterwarnings("ignore:Multiindexing enabled with inplace=True:UserWarning"),
]

#: A fresh estimator of each kind, small enough to fit in about a second on one CPU thread.
ESTIMATORS: dict[str, Callable] = {
    "dim": lambda: DeepInfoMaxFeaturizer(device="cpu"),
    "dim_trained": lambda: DeepInfoMaxFeaturizer(
        weights=None,
        epochs=1,
        global_dim=16,
        max_atoms=24,
        site_budget=200,
        validation_fraction=0.0,
        device="cpu",
    ),
    "regressor": lambda: SiteNetRegressor(
        epochs=1, batch_size=4, validation_fraction=0.0, device="cpu"
    ),
    "ofm": lambda: OrbitalFieldMatrixFeaturizer(),
    "xrd": lambda: XRDPatternFeaturizer(),
}
TRANSFORMERS = ["dim", "dim_trained", "ofm", "xrd"]
STATELESS = ["dim", "ofm", "xrd"]  # requires_fit=False: transform works before fit
FEATURIZERS = ["dim", "ofm", "xrd"]  # matminer's face (the trained one costs a fit each)
#: Relative tolerance of the vectors between batch compositions (float32 round-off).
BATCH_RTOL = 1e-5

#: scikit-learn check -> the test in this module that ports it to crystals.
PORTED = {
    "check_estimator_cloneable": "test_sklearn_checks_that_need_no_data",
    "check_estimator_tags_renamed": "test_sklearn_checks_that_need_no_data",
    "check_valid_tag_types": "test_sklearn_checks_that_need_no_data",
    "check_estimator_repr": "test_sklearn_checks_that_need_no_data",
    "check_no_attributes_set_in_init": "test_sklearn_checks_that_need_no_data",
    "check_do_not_raise_errors_in_init_or_set_params": "test_sklearn_checks_that_need_no_data",
    "check_parameters_default_constructible": "test_sklearn_checks_that_need_no_data",
    "check_get_params_invariance": "test_sklearn_checks_that_need_no_data",
    "check_set_params": "test_sklearn_checks_that_need_no_data",
    "check_mixin_order": "test_sklearn_checks_that_need_no_data",
    "check_fit_score_takes_y": "test_fit_and_score_take_y",
    "check_estimators_fit_returns_self": "test_fit_returns_self_and_keeps_its_parameters",
    "check_estimators_overwrite_params": "test_fit_returns_self_and_keeps_its_parameters",
    "check_dont_overwrite_parameters": "test_fit_returns_self_and_keeps_its_parameters",
    "check_readonly_memmap_input": "test_the_input_is_not_changed",
    "check_estimators_unfitted": "test_fitted_state",
    "check_transformers_unfitted": "test_fitted_state",
    "check_transformers_unfitted_stateless": "test_fitted_state",
    "check_fit_check_is_fitted": "test_fitted_state",
    "check_n_features_in": "test_no_input_features_and_the_output_names",
    "check_n_features_in_after_fitting": "test_no_input_features_and_the_output_names",
    "check_estimators_dtypes": "test_output_dtype_and_shape",
    "check_estimators_empty_data_messages": "test_empty_input",
    "check_dtype_object": "test_what_is_not_a_structure_is_refused_naming_its_position",
    "check_complex_data": "test_what_is_not_a_structure_is_refused_naming_its_position",
    "check_fit1d": "test_what_is_not_a_structure_is_refused_naming_its_position",
    "check_fit2d_predict1d": "test_what_is_not_a_structure_is_refused_naming_its_position",
    "check_estimators_nan_inf": "test_nan_or_infinite_coordinates_are_refused_naming_the_position",
    "check_pipeline_consistency": "test_refit_and_clones_give_the_same_output",
    "check_fit_idempotent": "test_refit_and_clones_give_the_same_output",
    "check_estimators_pickle": "test_a_pickled_estimator_gives_the_same_output",
    "check_transformer_general": "test_transformer_general",
    "check_transformer_data_not_an_array": "test_containers_of_structures_give_the_same_output",
    "check_regressor_data_not_an_array": "test_containers_of_structures_give_the_same_output",
    "check_methods_sample_order_invariance": "test_order_subset_and_batch_size_invariance",
    "check_methods_subset_invariance": "test_order_subset_and_batch_size_invariance",
    "check_fit2d_1sample": "test_one_structure",
    "check_dict_unchanged": "test_dict_unchanged_by_transform_or_predict",
    "check_regressors_train": "test_regressor_fit_predict_score",
    "check_regressors_int": "test_regressor_targets_as_list_series_or_int",
    "check_regressors_no_decision_function": "test_regressor_fit_predict_score",
    "check_requires_y_none": "test_regressor_refuses_missing_or_bad_targets",
    "check_supervised_y_no_nan": "test_regressor_refuses_missing_or_bad_targets",
    "check_supervised_y_2d": "test_regressor_refuses_missing_or_bad_targets",
}

#: scikit-learn check -> why it does not apply to structures, or is not met (see the table above).
EXPECTED_DEVIATIONS = {
    "check_mixin_order": "matminer's BaseFeaturizer puts BaseEstimator before TransformerMixin",
    "check_complex_data": "numeric input (ported part: non-structures are refused)",
    "check_dtype_object": "numeric input (ported part: non-structures are refused)",
    "check_fit1d": "numeric input (ported part: non-structures are refused)",
    "check_fit2d_predict1d": "numeric input (ported part: non-structures are refused)",
    "check_fit2d_1feature": "numeric input: a structure has no features",
    "check_estimator_sparse_tag": "sparse matrices hold numbers",
    "check_estimator_sparse_array": "sparse arrays hold numbers",
    "check_estimator_sparse_matrix": "sparse matrices hold numbers",
    "check_array_api_input": "array-API arrays hold numbers",
    "check_f_contiguous_array_estimator": "Fortran-ordered arrays hold numbers",
    "check_positive_only_tag_during_fit": "numeric input (the positive_only tag is False)",
    "check_readonly_memmap_input": "a memmap holds numbers (ported part: input not changed)",
    "check_n_features_in": "structures have no input features: n_features_in_ is never set",
    "check_n_features_in_after_fitting": "idem",
    "check_estimators_partial_fit_n_features": "no partial_fit",
    "check_transformer_n_iter": "no max_iter parameter",
    "check_non_transformer_estimators_n_iter": "no max_iter parameter",
    "check_supervised_y_2d": "a column-vector y is refused (ValueError naming its shape)",
    "check_methods_subset_invariance": "float32 round-off between batches above atol=1e-7",
}

#: matminer test_base.py test -> the test here that ports it, or the reason it does not apply.
MATMINER_TESTS = {
    "test_dataframe": "test_featurize_dataframe_and_featurize_many_equal_transform",
    "test_featurize_many": "test_featurize_dataframe_and_featurize_many_equal_transform",
    "test_inplace": "test_featurize_dataframe_inplace_and_index",
    "test_indices": "test_featurize_dataframe_inplace_and_index",
    "test_multifeature_no_zero_index": "test_featurize_dataframe_inplace_and_index",
    "test_multiindex_inplace": "test_featurize_dataframe_multiindex",
    "test_multiindex_return": "test_featurize_dataframe_multiindex",
    "test_ignore_errors": "test_ignore_errors_and_return_errors",
    "test_multiple": "test_multiple_featurizer",
    "test_multifeatures": "test_multiple_featurizer",
    "test_multiindex_in_multifeaturizer": "test_multiple_featurizer",
    "test_stacked_featurizer": "test_stacked_featurizer",
    "test_fittable": "test_fit_featurize_dataframe_trains_then_featurizes",
    "test_matrix": "deviation: every feature is a float, none a matrix",
    "test_multitype_multifeat": "deviation: every feature is a float",
    "test_caching": "deviation: matminer's neighbour cache is not used (see test_vector_cache)",
    "test_multiprocessing_df": "deviation: matminer's process pool has its own tests",
}


# -- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled(sample, classic) -> tuple[list[Structure], np.ndarray]:
    """Six real crystals of 2-4 atoms (cheap for the orbital field matrix) and targets: CsCl,
    NaCl and Si (primitive cells), ZnO, and two crystals of the bundled sample with their
    formation energies (rough values for the classic four)."""
    small = sample[sample["structure"].map(len) <= 3].head(2)
    structures = [
        classic["CsCl"],
        classic["NaCl"].get_primitive_structure(),
        classic["Si"].get_primitive_structure(),
        classic["ZnO"],
        *small["structure"],
    ]
    y = [-2.1, -2.0, 0.0, -1.8, *small["formation_energy_per_atom"]]
    return structures, np.asarray(y, dtype=np.float64)


def _how_many(request) -> int | None:
    """The orbital field matrix takes 0.1-0.3 s a crystal: three of them are enough for it."""
    callspec = getattr(request.node, "callspec", None)
    return 3 if callspec is not None and callspec.params.get("name") == "ofm" else None


@pytest.fixture
def crystals(labelled, request) -> list[Structure]:
    return labelled[0][: _how_many(request)]


@pytest.fixture
def targets(labelled, request) -> np.ndarray:
    return labelled[1][: _how_many(request)]


def _nan_structure() -> Structure:
    return Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [np.nan, 0.5, 0.5]])


def _fit(est, X, y):
    return est.fit(X, y[: len(X)] if y is not None else None)


def _output(est, X) -> np.ndarray:
    return est.predict(X) if is_regressor(est) else est.transform(X)


def _fitted(name: str, crystals, targets):
    return _fit(ESTIMATORS[name](), crystals, targets)


def _assert_same(a, b, rtol: float = 0.0) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    if rtol == 0:
        np.testing.assert_array_equal(a, b)
    else:
        scale = np.abs(a).max(axis=-1, keepdims=True) if a.ndim > 1 else np.abs(a).max()
        np.testing.assert_allclose(a / scale, b / scale, rtol=0, atol=rtol)


def _sklearn_check_names(est) -> set[str]:
    """The checks scikit-learn yields for ``est`` if it took 2-D arrays (names only)."""
    cls = type(est)

    def tags(self):
        found = cls.__sklearn_tags__(self)
        found.input_tags.two_d_array = True
        return found

    as_2d = type(cls.__name__, (cls,), {"__sklearn_tags__": tags})(**est.get_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {_check_name(check) for _, check in estimator_checks_generator(as_2d, legacy=True)}


# -- the ledgers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_sklearn_check_is_ported_or_an_expected_deviation(name):
    names = _sklearn_check_names(ESTIMATORS[name]())
    assert len(names) > 40  # the list is scikit-learn's, not empty
    missing = sorted(names - set(PORTED) - set(EXPECTED_DEVIATIONS))
    assert not missing, f"scikit-learn checks neither ported nor listed as deviations: {missing}"


def test_every_ported_check_names_a_test_of_this_module():
    tests = {n for n, f in globals().items() if n.startswith("test_") and callable(f)}
    for ledger in (PORTED, MATMINER_TESTS):
        for check, where in ledger.items():
            assert where in tests or where.startswith("deviation: "), (check, where)


# -- scikit-learn --------------------------------------------------------------------------------
_DATA_FREE = [check for check, test in PORTED.items() if test.endswith("need_no_data")]


@pytest.mark.parametrize("check", [*_DATA_FREE, "check_param_validation"])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_sklearn_checks_that_need_no_data(name, check):
    """scikit-learn's own checks, on the real estimators: clone, get/set_params round trip, no
    work and no validation in ``__init__``, defaults constructible, invalid parameters refused
    by ``fit`` before it looks at ``X``."""
    est = ESTIMATORS[name]()
    if check == "check_mixin_order" and not is_regressor(est):
        pytest.skip(f"expected deviation: {EXPECTED_DEVIATIONS[check]}")
    getattr(estimator_checks, check)(type(est).__name__, est)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fit_and_score_take_y(name, crystals, targets):
    est = ESTIMATORS[name]()
    for method in ("fit", "score", "fit_transform", "fit_predict", "partial_fit"):
        if hasattr(est, method):
            parameters = list(inspect.signature(getattr(est, method)).parameters)
            assert parameters[1] == "y", (method, parameters)
    assert est.fit(crystals[:4], targets[:4]) is est


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fit_returns_self_and_keeps_its_parameters(name, crystals, targets):
    est = ESTIMATORS[name]()
    params = {key: joblib.hash(value) for key, value in est.get_params().items()}
    public_before = {key: value for key, value in vars(est).items() if not key.startswith("_")}
    assert _fit(est, crystals, targets) is est
    assert {key: joblib.hash(value) for key, value in est.get_params().items()} == params
    added = {key for key in vars(est) if not key.startswith("_")} - set(public_before)
    assert all(key.endswith("_") for key in added), added
    for key, value in public_before.items():
        assert joblib.hash(getattr(est, key)) == joblib.hash(value), key


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fitted_state(name, crystals, targets):
    est = ESTIMATORS[name]()
    if name in STATELESS:  # requires_fit=False: usable as constructed, same output after fit
        check_is_fitted(est)
        before = est.transform(crystals)
        _assert_same(_fit(est, crystals, targets).transform(crystals), before)
    else:
        with pytest.raises(NotFittedError):
            check_is_fitted(est)
        with pytest.raises(NotFittedError):
            _output(est, crystals)
        _fit(est, crystals, targets)
    check_is_fitted(est)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_no_input_features_and_the_output_names(name, crystals, targets):
    est = _fitted(name, crystals, targets)
    assert not hasattr(est, "n_features_in_") and not hasattr(est, "feature_names_in_")
    if name in TRANSFORMERS:
        names = est.get_feature_names_out()
        assert names.dtype == object
        assert names.tolist() == est.feature_labels()
        assert est.transform(crystals[:2]).shape[1] == len(names)
        assert len(est.featurize(crystals[0])) == len(names)
        if hasattr(est, "n_features_out_"):
            assert est.n_features_out_ == len(names)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_output_dtype_and_shape(name, crystals, targets):
    est = _fitted(name, crystals, targets)
    out = _output(est, crystals)
    expected = {
        "dim": (np.float32, 128),
        "dim_trained": (np.float32, 16),
        "ofm": (np.float64, 1024),
    }
    expected |= {"xrd": (np.float64, 128), "regressor": (np.float64, None)}
    dtype, width = expected[name]
    assert out.dtype == dtype
    assert out.shape == ((len(crystals),) if width is None else (len(crystals), width))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", ESTIMATORS)
def test_empty_input(name, crystals, targets):
    """An empty list: an empty output, or a ValueError that says why."""
    est = ESTIMATORS[name]()
    if name == "regressor":
        with pytest.raises(ValueError, match="no structures given"):
            est.fit([], [])
        with pytest.raises(ValueError, match="no structures given"):
            _fit(est, crystals, targets).predict([])
        return
    if name == "dim_trained":
        with pytest.raises(ValueError, match=r"at least 2 structures, got n_samples=0"):
            est.fit([])
        est.fit(crystals)
    else:
        assert est.fit([]) is est  # nothing is learned from X
    out = est.transform([])
    assert out.shape == (0, len(est.feature_labels()))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_what_is_not_a_structure_is_refused_naming_its_position(name, crystals, targets):
    est = ESTIMATORS[name]()
    y = targets[:3]
    for numbers in (np.zeros((3, 4)), np.zeros(3), np.zeros((3, 2), dtype=complex)):
        with pytest.raises((TypeError, ValueError)):
            est.fit(numbers, y)
    with pytest.raises(TypeError, match=r"structure 1\b.*Molecule"):
        est.fit([crystals[0], Molecule(["H", "H"], [[0, 0, 0], [0.74, 0, 0]]), crystals[1]], y)
    with pytest.raises(TypeError, match=r"structure 2\b"):
        est.fit([crystals[0], crystals[1], 42], y)
    est = _fit(ESTIMATORS[name](), crystals, targets)
    with pytest.raises(TypeError, match=r"structure 1\b"):
        _output(est, [crystals[0], 42])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_nan_or_infinite_coordinates_are_refused_naming_the_position(name, crystals, targets):
    """Refused before matminer sees them: its OrbitalFieldMatrix crashed the process (spglib)
    on NaN coordinates, and XRDPowderPattern failed with an unrelated message."""
    est = _fitted(name, crystals, targets)
    infinite = Structure(Lattice([[np.inf, 0, 0], [0, 4, 0], [0, 0, 4]]), ["Cs"], [[0, 0, 0]])
    for bad in (_nan_structure(), infinite):
        with pytest.raises(InvalidStructureError, match=r"structure 1\b.*NaN or infinite"):
            _output(est, [crystals[0], bad])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_refit_and_clones_give_the_same_output(name, crystals, targets):
    """Fit idempotent (a second fit gives the same model), and two clones in pipelines agree."""
    est = _fitted(name, crystals, targets)
    first = _output(est, crystals)
    _assert_same(_output(_fit(est, crystals, targets), crystals), first)
    pipe = make_pipeline(clone(est))
    _assert_same(_output(_fit(pipe, crystals, targets), crystals), first)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_pickled_estimator_gives_the_same_output(name, crystals, targets):
    est = _fitted(name, crystals, targets)
    expected = _output(est, crystals)
    restored = pickle.loads(pickle.dumps(est))
    _assert_same(_output(restored, crystals), expected)
    assert restored.get_params() == est.get_params()
    _assert_same(_output(est, crystals), expected)  # pickling left the original as it was


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_general(name, crystals):
    est = ESTIMATORS[name]()
    fitted = clone(est).fit(crystals).transform(crystals)
    _assert_same(est.fit_transform(crystals), fitted)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_containers_of_structures_give_the_same_output(name, crystals, targets):
    est = _fitted(name, crystals, targets)
    expected = _output(est, crystals)
    index = [f"id{k}" for k in range(len(crystals))]
    objects = np.empty(len(crystals), dtype=object)
    objects[:] = crystals
    for X in (
        tuple(crystals),
        objects,
        pd.Series(crystals, index=index),
        pd.DataFrame({"structure": crystals}, index=index),
    ):
        _assert_same(_output(est, X), expected)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_order_subset_and_batch_size_invariance(name, crystals, targets):
    est = _fitted(name, crystals, targets)
    expected = _output(est, crystals)
    rtol = BATCH_RTOL if name in ("dim", "dim_trained", "regressor") else 0.0
    order = np.random.default_rng(0).permutation(len(crystals))
    _assert_same(_output(est, [crystals[i] for i in order]), expected[order], rtol)
    halves = np.concatenate([_output(est, crystals[:3]), _output(est, crystals[3:])])
    _assert_same(halves, expected, rtol)
    for k, crystal in enumerate(crystals):
        _assert_same(_output(est, [crystal])[0], expected[k], rtol)
    if "batch_size" in est.get_params():
        _assert_same(_output(est.set_params(batch_size=1), crystals), expected, rtol)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_one_structure(name, crystals, targets):
    """Fitting one structure works, or a ValueError says how many are needed."""
    est = ESTIMATORS[name]()
    if name == "dim_trained":
        with pytest.raises(ValueError, match=r"at least 2 structures, got n_samples=1"):
            est.fit(crystals[:1])
        return
    _fit(est, crystals[:1], targets)
    assert np.isfinite(_output(est, crystals[:2])).all()
    if name == "regressor":
        with pytest.raises(ValueError, match="need at least 4 structures"):
            est.set_params(validation_fraction=0.05).fit(crystals[:1], targets[:1])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_dict_unchanged_by_transform_or_predict(name, crystals, targets):
    est = _fitted(name, crystals, targets)
    before = dict(vars(est))
    _output(est, crystals)
    assert vars(est) == before


@pytest.mark.parametrize("name", ESTIMATORS)
def test_the_input_is_not_changed(name, crystals, targets):
    X = [crystal.copy() for crystal in crystals]
    dicts = [crystal.as_dict() for crystal in X]
    y = targets.copy()
    est = _fit(ESTIMATORS[name](), X, y)
    _output(est, X)
    assert [crystal.as_dict() for crystal in X] == dicts
    np.testing.assert_array_equal(y, targets)
    assert len(X) == len(crystals)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_set_output_pandas(name, crystals):
    est = ESTIMATORS[name]().fit(crystals)
    index = [f"id{k}" for k in range(len(crystals))]
    frame = clone(est).set_output(transform="pandas").fit(crystals)
    frame = frame.transform(pd.Series(crystals, index=index))
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == est.get_feature_names_out().tolist()
    assert frame.index.tolist() == index
    _assert_same(frame.to_numpy(), est.transform(crystals))


# -- the regressor -------------------------------------------------------------------------------
def test_regressor_fit_predict_score(crystals, targets):
    est = ESTIMATORS["regressor"]().fit(crystals, targets)
    pred = est.predict(crystals)
    assert pred.shape == (len(crystals),) and pred.dtype == np.float64
    score = est.score(crystals, targets)
    assert isinstance(score, float) and np.isfinite(score) and score <= 1
    assert score == pytest.approx(1 - np.sum((targets - pred) ** 2) / np.sum(
        (targets - targets.mean()) ** 2
    ))  # fmt: skip
    for method in ("decision_function", "predict_proba", "predict_log_proba"):
        assert not hasattr(est, method)
    with pytest.raises(ValueError, match=rf"y must have shape \({len(crystals)},\)"):
        ESTIMATORS["regressor"]().fit(crystals, targets[:-1])


def test_regressor_targets_as_list_series_or_int(crystals, targets):
    expected = ESTIMATORS["regressor"]().fit(crystals, targets).predict(crystals)
    for y in (targets.tolist(), pd.Series(targets, index=range(10, 10 + len(targets)))):
        _assert_same(ESTIMATORS["regressor"]().fit(crystals, y).predict(crystals), expected)
    integers = np.round(targets).astype(np.int64)
    as_int = ESTIMATORS["regressor"]().fit(crystals, integers).predict(crystals)
    as_float = ESTIMATORS["regressor"]().fit(crystals, integers.astype(float)).predict(crystals)
    _assert_same(as_int, as_float)


def test_regressor_refuses_missing_or_bad_targets(crystals, targets):
    est = ESTIMATORS["regressor"]()
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        est.fit(crystals, None)
    n = len(crystals)
    with pytest.raises(ValueError, match=rf"y must have shape \({n},\), got \({n}, 1\)"):
        est.fit(crystals, targets[:, None])
    bad = targets.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values at positions \[2\]"):
        est.fit(crystals, bad)
    with pytest.raises(NotFittedError):
        est.predict(crystals)


# -- matminer's BaseFeaturizer -------------------------------------------------------------------
@pytest.mark.parametrize("name", FEATURIZERS)
def test_featurize_dataframe_and_featurize_many_equal_transform(name, crystals):
    f = ESTIMATORS[name]()
    f.set_n_jobs(1)
    expected = f.transform(crystals)
    data = pd.DataFrame({"s": crystals, "y": range(len(crystals))})
    frame = f.featurize_dataframe(data, "s", pbar=False)
    assert frame.columns.tolist() == ["s", "y", *f.feature_labels()]
    _assert_same(frame[f.feature_labels()].to_numpy(), expected)
    _assert_same(f.featurize_many(crystals, pbar=False), expected)
    for k in (0, len(crystals) - 1):
        _assert_same(f.featurize(crystals[k]), expected[k], BATCH_RTOL if name == "dim" else 0)
    assert len(f.feature_labels()) == len(f.featurize(crystals[0]))
    assert f.citations() and all(isinstance(c, str) and c for c in f.citations())
    assert f.implementors() and all(isinstance(i, str) and i for i in f.implementors())


@pytest.mark.parametrize("name", FEATURIZERS)
def test_featurize_dataframe_inplace_and_index(name, crystals):
    f = ESTIMATORS[name]()
    f.set_n_jobs(1)
    expected = f.transform(crystals[:3])
    data = pd.DataFrame({"s": crystals[:3]}, index=[4, 6, 6])  # repeated, no 0
    out = f.featurize_dataframe(data, "s", inplace=False, pbar=False)
    assert data.columns.tolist() == ["s"]  # not changed
    assert out.index.tolist() == [4, 6, 6]
    _assert_same(out[f.feature_labels()].to_numpy(), expected)
    f.featurize_dataframe(data, "s", inplace=True, pbar=False)
    _assert_same(data[f.feature_labels()].to_numpy(), expected)
    _assert_same(f.featurize_many(pd.Series(crystals[:3], index=[1, 2, 3]), pbar=False), expected)


@pytest.mark.parametrize("name", ["dim", "xrd"])  # the OFM's 1,024 columns: seconds, same path
def test_featurize_dataframe_multiindex(name, crystals):
    f = ESTIMATORS[name]()
    f.set_n_jobs(1)
    label = (type(f).__name__, f.feature_labels()[0])
    for inplace in (True, False):
        flat = pd.DataFrame({"s": crystals[:2]})
        out = f.featurize_dataframe(flat, "s", multiindex=True, inplace=inplace, pbar=False)
        out = flat if inplace else out
        assert ("Input Data", "s") in out.columns and label in out.columns
        two = pd.DataFrame({("Custom", "s"): crystals[:2]})
        out = f.featurize_dataframe(two, ("Custom", "s"), multiindex=True, inplace=inplace,
                                    pbar=False)  # fmt: skip
        out = two if inplace else out
        assert ("Custom", "s") in out.columns and label in out.columns
        three = pd.DataFrame({("A", "B", "s"): crystals[:2]})
        with pytest.raises(IndexError):
            f.featurize_dataframe(three, ("A", "B", "s"), multiindex=True, inplace=inplace,
                                  pbar=False)  # fmt: skip
    two = pd.DataFrame({("CK", "s"): crystals[:2]})
    with pytest.raises(ValueError):
        f.featurize_dataframe(two, ("CK", "s"), pbar=False)


@pytest.mark.parametrize("name", FEATURIZERS)
def test_ignore_errors_and_return_errors(name, crystals):
    f = ESTIMATORS[name]()
    f.set_n_jobs(1)
    entries = [crystals[0], "not a structure", _nan_structure(), crystals[1]]
    n = len(f.feature_labels())
    rows = f.featurize_many(entries, ignore_errors=True, pbar=False)
    values = np.asarray(rows, dtype=np.float64)
    assert np.isnan(values[[1, 2]]).all() and np.isfinite(values[[0, 3]]).all()
    rows = f.featurize_many(entries, ignore_errors=True, return_errors=True, pbar=False)
    assert [len(row) for row in rows] == [n + 1] * 4
    assert "structure 1" in rows[1][-1] and "NaN or infinite" in rows[2][-1]
    out = f.featurize_dataframe(
        pd.DataFrame({"s": entries}), "s", ignore_errors=True, return_errors=True, pbar=False
    )
    assert out.columns[-1] == f"{type(f).__name__} Exceptions"
    assert "structure 1" in out.iloc[1, -1] and np.isnan(out.iloc[0, -1])
    with pytest.raises(ValueError, match="set ignore_errors to True"):
        f.featurize_many(entries, return_errors=True, pbar=False)
    with pytest.raises((TypeError, ValueError), match="structure 1"):
        f.featurize_many(entries, pbar=False)


def test_multiple_featurizer(crystals):
    dim, xrd = ESTIMATORS["dim"](), ESTIMATORS["xrd"]()
    multi = MultipleFeaturizer([dim, xrd])
    multi.set_n_jobs(1)  # matminer's process pool has its own tests
    assert dim.n_jobs == 1 and xrd.n_jobs == 1
    assert multi.feature_labels() == dim.feature_labels() + xrd.feature_labels()
    assert set(multi.citations()) == set(dim.citations()) | set(xrd.citations())
    assert set(multi.implementors()) == set(dim.implementors()) | set(xrd.implementors())
    single = np.asarray(multi.featurize(crystals[0]))
    _assert_same(single[:128], dim.featurize(crystals[0]))
    _assert_same(single[128:], xrd.featurize(crystals[0]))
    out = multi.featurize_dataframe(pd.DataFrame({"s": crystals[:3]}), "s", pbar=False)
    _assert_same(out[dim.feature_labels()].to_numpy(), dim.transform(crystals[:3]), BATCH_RTOL)
    _assert_same(out[xrd.feature_labels()].to_numpy(), xrd.transform(crystals[:3]))
    out = multi.featurize_dataframe(pd.DataFrame({"s": crystals[:2]}), "s", multiindex=True,
                                    pbar=False)  # fmt: skip
    assert ("DeepInfoMaxFeaturizer", weights_labels()[0]) in out.columns
    assert ("XRDPatternFeaturizer", "xrd_0") in out.columns


def test_stacked_featurizer(crystals, targets):
    dim = ESTIMATORS["dim"]()
    model = LinearRegression().fit(dim.transform(crystals), targets)
    stacked = StackedFeaturizer(dim, model, name="Ef")
    assert stacked.feature_labels() == ["Ef prediction"]
    expected = model.predict(dim.transform(crystals[:1]))
    # matminer's StackedFeaturizer returns [model.predict(...)], an array in a list
    np.testing.assert_allclose(np.ravel(stacked.featurize(crystals[0])), expected, rtol=1e-5)


def test_fit_featurize_dataframe_trains_then_featurizes(crystals):
    f = ESTIMATORS["dim_trained"]()
    f.set_n_jobs(1)
    out = f.fit_featurize_dataframe(pd.DataFrame({"s": crystals}), "s", pbar=False)
    assert len(f.history_) == 1
    _assert_same(out[f.feature_labels()].to_numpy(), f.transform(crystals))
    _assert_same(out[f.feature_labels()].to_numpy(), ESTIMATORS["dim_trained"]().fit_transform(
        crystals
    ))  # fmt: skip


@pytest.mark.parametrize("name", FEATURIZERS)
def test_set_n_jobs_is_the_n_jobs_parameter(name):
    """matminer's ``set_n_jobs`` sets the ``n_jobs`` parameter, not a private copy that the
    featuriser would not read; the defaults run in the calling process."""
    f = ESTIMATORS[name]()
    assert f.n_jobs in (1, None)  # not matminer's default (the CPU count)
    f.set_n_jobs(2)
    assert f.n_jobs == 2 and f.get_params()["n_jobs"] == 2
    assert clone(f).n_jobs == 2


def test_precheck_passes_every_structure(crystals):
    f = ESTIMATORS["dim"]()
    assert all(f.precheck(crystal) for crystal in crystals)
    frame = pd.DataFrame({"s": crystals})
    assert f.precheck_dataframe(frame, "s") == 1.0
    out = f.precheck_dataframe(frame, "s", return_frac=False)
    assert out["DeepInfoMaxFeaturizer precheck pass"].all()
