"""Tests of the matminer baselines as scikit-learn transformers, on real crystals."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from matminer.featurizers.structure import OrbitalFieldMatrix, XRDPowderPattern
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError

from dimfeat.baselines import OrbitalFieldMatrixFeaturizer, XRDPatternFeaturizer
from dimfeat.datasets import load_sample

# matminer's own OrbitalFieldMatrix, used here as the reference, still builds numpy matrices.
pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

CLASSES = [OrbitalFieldMatrixFeaturizer, XRDPatternFeaturizer]
N_FEATURES = {OrbitalFieldMatrixFeaturizer: 1024, XRDPatternFeaturizer: 128}
#: Parameters other than the defaults, to check that nothing is lost on the way.
OTHER_PARAMS = {
    OrbitalFieldMatrixFeaturizer: {"period_tag": True, "n_jobs": 2, "ignore_errors": True},
    XRDPatternFeaturizer: {
        "two_theta_range": (10, 90),
        "bw_method": 0.1,
        "pattern_length": 50,
        "wavelength": "MoKa",
        "symprec": 0.01,
        "debye_waller_factors": {"O": 0.5},
        "n_jobs": 2,
        "ignore_errors": True,
    },
}


@pytest.fixture(scope="module")
def crystals() -> tuple[list, np.ndarray]:
    """Nine small real crystals (at most 4 sites) from the bundled sample, with formation energy."""
    df = load_sample()
    small = df[df["structure"].map(len) <= 4].head(9)
    return small["structure"].tolist(), small["formation_energy_per_atom"].to_numpy()


@pytest.mark.parametrize("cls", CLASSES)
def test_clone_and_params_round_trip(cls):
    params = OTHER_PARAMS[cls]
    est = cls(**params)
    assert est.get_params() == {**cls().get_params(), **params}
    twin = clone(est)
    assert twin is not est
    assert twin.get_params() == est.get_params()
    assert cls().set_params(**params).get_params() == est.get_params()
    again = pickle.loads(pickle.dumps(est))
    assert again.get_params() == est.get_params()


@pytest.mark.parametrize("cls", CLASSES)
def test_transform_matches_matminer(cls, crystals):
    structures = crystals[0][:3]
    est = cls()
    assert est.fit(structures) is est
    X = est.transform(structures)
    assert isinstance(X, np.ndarray)
    assert X.shape == (3, N_FEATURES[cls]) and X.dtype == np.float64
    assert np.isfinite(X).all()
    original = (
        OrbitalFieldMatrix(flatten=True)
        if cls is OrbitalFieldMatrixFeaturizer
        else (XRDPowderPattern())
    )
    np.testing.assert_array_equal(X, np.array([original.featurize(s) for s in structures]))
    # A pandas Series and a one-column frame are accepted too.
    np.testing.assert_array_equal(est.transform(pd.Series(structures)), X)
    np.testing.assert_array_equal(est.transform(pd.DataFrame({"s": structures})), X)


@pytest.mark.parametrize("cls", CLASSES)
def test_feature_names_and_tags(cls):
    est = cls()
    names = est.get_feature_names_out()
    assert len(names) == N_FEATURES[cls]
    assert names.tolist() == est.feature_labels()
    tags = get_tags(est)
    assert tags.transformer_tags is not None
    assert not tags.requires_fit
    assert est.citations() and est.implementors()


def test_set_params_changes_the_features(crystals):
    structures = crystals[0][:1]
    ofm = clone(OrbitalFieldMatrixFeaturizer()).set_params(period_tag=True)
    assert ofm.transform(structures).shape == (1, 39 * 39)
    assert len(ofm.get_feature_names_out()) == 39 * 39
    # XRD calculator arguments survive clone and reach pymatgen.
    moka = clone(XRDPatternFeaturizer(wavelength="MoKa", two_theta_range=(10, 90)))
    expected = XRDPowderPattern(two_theta_range=(10, 90), wavelength="MoKa").featurize(
        structures[0]
    )
    np.testing.assert_array_equal(moka.transform(structures)[0], expected)
    assert moka.transform(structures).shape == (1, 81)


@pytest.mark.parametrize("cls", CLASSES)
def test_pipeline_cross_val_score(cls, crystals):
    structures, y = crystals
    pipe = Pipeline([("features", cls()), ("model", LinearRegression())])
    scores = cross_val_score(
        pipe, structures, y, cv=KFold(3), scoring="neg_mean_absolute_error", error_score="raise"
    )
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_parallel_transform_equals_serial(crystals):
    structures = crystals[0][:4]
    serial = XRDPatternFeaturizer().transform(structures)
    np.testing.assert_array_equal(XRDPatternFeaturizer(n_jobs=2).transform(structures), serial)


def test_pandas_output(crystals):
    out = XRDPatternFeaturizer().set_output(transform="pandas").fit_transform(crystals[0][:2])
    assert isinstance(out, pd.DataFrame)
    assert out.columns[:2].tolist() == ["xrd_0", "xrd_1"]


def test_failures_raise_unless_ignored(crystals):
    # No diffraction peak below 5 degrees: the KDE has no data and fails.
    structures = crystals[0][:2]
    with pytest.raises(ValueError):
        XRDPatternFeaturizer(two_theta_range=(0, 5)).transform(structures)
    X = XRDPatternFeaturizer(two_theta_range=(0, 5), ignore_errors=True).transform(structures)
    assert X.shape == (2, 6) and np.isnan(X).all()


def test_bad_input_and_parameters(crystals):
    with pytest.raises(TypeError, match="Structure"):
        XRDPatternFeaturizer().transform(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="Structure"):
        XRDPatternFeaturizer().transform(crystals[0][0])
    with pytest.raises(InvalidParameterError):
        XRDPatternFeaturizer(bw_method=-1.0).fit(crystals[0][:1])
    with pytest.raises(ValueError, match="two_theta_range"):
        XRDPatternFeaturizer(two_theta_range=(90, 10)).fit(crystals[0][:1])
    with pytest.raises(InvalidParameterError):
        OrbitalFieldMatrixFeaturizer(period_tag="yes").fit(crystals[0][:1])


def test_structures_as_users_hold_them(crystals, tmp_path):
    structures = crystals[0][:3]
    reference = XRDPatternFeaturizer().transform(structures)
    path = tmp_path / "second.cif"
    path.write_text(structures[1].to(fmt="cif"))
    held = pd.Series([structures[0].to(fmt="cif"), path, structures[2].as_dict()])
    np.testing.assert_allclose(XRDPatternFeaturizer().fit(held).transform(held), reference,
                               rtol=1e-6, atol=1e-9)  # fmt: skip
    # matminer's featurize_dataframe on a column of CIF strings
    frame = pd.DataFrame({"cif": [s.to(fmt="cif") for s in structures]})
    out = XRDPatternFeaturizer().featurize_dataframe(frame, "cif", pbar=False)
    np.testing.assert_allclose(out.iloc[:, 1:].to_numpy(float), reference, rtol=1e-6, atol=1e-9)


def test_an_entry_that_is_not_a_crystal_names_its_position_or_gives_nan(crystals):
    structures = [crystals[0][0], "no-such-file.cif", crystals[0][1]]
    with pytest.raises(ValueError, match=r"no such file.*\(structure 1\)"):
        XRDPatternFeaturizer().transform(structures)
    with pytest.raises(TypeError, match=r"\(structure 0\), got float"):
        XRDPatternFeaturizer().fit([0.5])
    X = XRDPatternFeaturizer(ignore_errors=True).transform(structures)
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
    rows = XRDPatternFeaturizer().featurize_many(
        structures, ignore_errors=True, return_errors=True, pbar=False
    )
    assert "InvalidStructureError" in rows[1][-1] and "(structure 1)" in rows[1][-1]
