"""The element property table: shipped file, imputation policy, unsupported elements."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matminer.utils.data import MagpieData
from pymatgen.core import Element, Lattice, Structure

from dimfeat.elements import (
    MAX_Z,
    SITE_FEATURES,
    UnsupportedElementError,
    build_element_table,
    check_atomic_numbers,
    element_table,
    imputed_properties,
    standardisation,
)
from dimfeat.encoder import SiteNetEncoder
from dimfeat.inputs import build_inputs

NOBLE_GASES = ("He", "Ne", "Ar", "Kr", "Xe", "Rn")


@pytest.fixture(scope="module")
def rebuilt():
    return build_element_table()


def test_shipped_table_equals_the_table_recomputed_from_matminer(rebuilt):
    table, imputed = rebuilt
    shipped = element_table()
    assert shipped.shape == (MAX_Z + 1, len(SITE_FEATURES))
    np.testing.assert_allclose(shipped, table, rtol=1e-12, atol=0)
    assert imputed_properties() == [tuple(pair) for pair in imputed]


def test_table_rows_are_the_magpie_values_where_magpie_has_them():
    magpie = MagpieData(impute_nan=False).all_elemental_props
    table = element_table()
    imputed = set(imputed_properties())
    for symbol in ("H", "O", "Na", "Cl", "Fe", "Cs", "Au", "U"):
        z = Element(symbol).Z
        for k, name in enumerate(SITE_FEATURES[:-1]):
            if (symbol, name) not in imputed:
                assert table[z, k] == pytest.approx(float(magpie[name][symbol]), rel=1e-12)
    assert table[Element("O").Z, SITE_FEATURES.index("OxidationState")] == -2
    assert (table[0] == 0).all()  # padding row
    assert np.isfinite(table).all()


def test_noble_gas_electronegativity_is_imputed_from_the_same_column():
    magpie = MagpieData(impute_nan=False).all_elemental_props["Electronegativity"]
    imputed = set(imputed_properties())
    missing = [g for g in NOBLE_GASES if magpie.get(g) is None or math.isnan(magpie[g])]
    assert {"He", "Ne", "Ar"} <= set(missing)
    table = element_table()
    column = SITE_FEATURES.index("Electronegativity")
    known = [g for g in NOBLE_GASES if g not in missing]
    for gas in missing:
        assert (gas, "Electronegativity") in imputed
        # the documented rule: the nearest element of the same column that has a value
        nearest = min(known, key=lambda g: abs(Element(g).Z - Element(gas).Z))
        assert table[Element(gas).Z, column] == pytest.approx(magpie[nearest])
    for gas in known:
        assert (gas, "Electronegativity") not in imputed


def test_standardisation_is_per_element_and_used_by_the_encoder():
    mean, std = standardisation()
    rows = element_table()[1:]
    np.testing.assert_allclose(mean, rows.mean(axis=0))
    assert (std > 0).all()
    encoder = SiteNetEncoder()
    expected = (element_table()[26] - mean) / std
    np.testing.assert_allclose(
        encoder.site_features(np.int64(26)).numpy(), expected, rtol=1e-5, atol=1e-6
    )
    assert (encoder.element_features[0] == 0).all()


def test_elements_beyond_lawrencium_raise_naming_the_element():
    check_atomic_numbers(np.array([1, 55, MAX_Z]))  # fine
    with pytest.raises(UnsupportedElementError, match="Rf"):
        check_atomic_numbers(np.array([8, 104]))
    with pytest.raises(UnsupportedElementError, match=r"Db.*1-103"):
        check_atomic_numbers(np.array([105]))


def test_structure_with_unsupported_element_raises_naming_it():
    structure = Structure(Lattice.cubic(4.0), ["Rf", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(UnsupportedElementError, match="Rf"):
        build_inputs(structure)
    assert isinstance(UnsupportedElementError("x"), ValueError)
