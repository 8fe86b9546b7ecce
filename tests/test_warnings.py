"""Warnings name the user's line, once: ``LargeCellWarning`` per call, not per fold or step."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import dimfeat.inputs.build
from dimfeat import DeepInfoMaxFeaturizer, LargeCellWarning
from dimfeat._warnings import user_stacklevel


@pytest.fixture(autouse=True)
def _nothing_named_yet():
    """Each test starts as a fresh process would: no large cell named before (nor after)."""
    dimfeat.inputs.build._NAMED.clear()
    yield
    dimfeat.inputs.build._NAMED.clear()


def _large_cell_warnings(caught) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, LargeCellWarning)]


def _data(classic, small_structures):
    # max_atoms=3: SrTiO3 (5 atoms) and ZnO (4) are large cells, the rest are not
    structures = list(classic.values()) + [s for s in small_structures if len(s) <= 3][:10]
    y = np.linspace(0.0, 1.0, len(structures))
    return structures, y


def test_a_grid_search_warns_once_naming_the_test_line(classic, small_structures):
    X, y = _data(classic, small_structures)  # with max_atoms=4, SrTiO3 is the one large cell
    search = GridSearchCV(
        make_pipeline(DeepInfoMaxFeaturizer(max_atoms=4, device="cpu"), Ridge()),
        {"ridge__alpha": [0.1, 1.0]},
        cv=3,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Python's own deduplication is off: dimfeat's counts
        search.fit(X, y)
    found = _large_cell_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in found]
    assert found[0].filename == __file__
    assert "more than max_atoms=4 atoms" in str(found[0].message)


def test_predict_and_score_warn_once(classic, small_structures):
    X, y = _data(classic, small_structures)
    large = [k for k, s in enumerate(X) if len(s.get_primitive_structure()) > 3]
    train = [k for k in range(len(X)) if k not in large]
    model = make_pipeline(DeepInfoMaxFeaturizer(max_atoms=3, device="cpu"), Ridge())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit([X[k] for k in train], y[train])
        assert _large_cell_warnings(caught) == []
        model.predict(X)
        model.score(X, y)
    (found,) = _large_cell_warnings(caught)
    assert found.filename == __file__
    assert found.message.count == len(large) == 2
    assert found.message.positions == tuple(large)


def test_one_warning_per_call_names_the_count_and_first_positions(srtio3, cscl):
    featurizer = DeepInfoMaxFeaturizer(max_atoms=4, device="cpu")
    structures = [cscl] + [srtio3.copy().perturb(0.01, seed=k) for k in range(7)]
    with pytest.warns(LargeCellWarning) as caught:
        X = featurizer.transform(structures)
    assert np.isfinite(X).all()
    (warning,) = _large_cell_warnings(caught)
    assert warning.filename == __file__
    message = warning.message
    assert (message.count, message.positions) == (7, (1, 2, 3, 4, 5, 6, 7))
    assert (message.largest, message.max_atoms) == (5, 4)
    assert "7 structure(s)" in str(message) and "positions 1, 2, 3, 4, 5 and 2 more" in str(message)
    assert isinstance(message, UserWarning)  # filters on UserWarning still catch it
    # the same structures again, by the same settings: already named in this process
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        featurizer.transform(structures[:3])
        DeepInfoMaxFeaturizer(max_atoms=4, device="cpu").transform(structures[:3])  # a clone
    assert _large_cell_warnings(again) == []
    # other settings are another scope: named again
    with pytest.warns(LargeCellWarning, match=r"1 structure\(s\).*position 0\)"):
        DeepInfoMaxFeaturizer(max_atoms=4, batch_size=3, device="cpu").transform(structures[1:2])


def test_matminer_and_pandas_frames_are_passed_over(srtio3, cscl):
    frame = pd.DataFrame({"structure": [cscl, srtio3]})
    featurizer = DeepInfoMaxFeaturizer(max_atoms=4, device="cpu")
    with pytest.warns(LargeCellWarning, match=r"position 1\)") as caught:
        featurizer.featurize_dataframe(frame, "structure", pbar=False)
    assert [w.filename for w in _large_cell_warnings(caught)] == [__file__]


def test_the_warning_pickles_with_its_attributes():
    import pickle

    warning = LargeCellWarning("text", 2, (3, 9), 60, 50)
    back = pickle.loads(pickle.dumps(warning))
    assert (str(back), back.count, back.positions, back.largest, back.max_atoms) == (
        "text",
        2,
        (3, 9),
        60,
        50,
    )


def test_user_stacklevel_passes_over_dimfeat_frames():
    namespace = {"__name__": "dimfeat.fake", "user_stacklevel": user_stacklevel}
    exec("def inner():\n    return user_stacklevel()\ndef outer():\n    return inner()", namespace)
    assert namespace["outer"]() == 3  # inner, outer (both dimfeat), then this test
