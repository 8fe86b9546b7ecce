"""Element property table: the nine Site-Net site features and their normalisation.

The table is built once from matminer's Magpie element data and pymatgen, for atomic numbers
1 to :data:`MAX_Z`. It is indexed by atomic number (row 0 is padding and stays zero), so turning a
structure's species into site features is a single gather inside the encoder.

Missing element data
--------------------
Magpie lacks some properties for some elements (electronegativity of He, Ne, Ar, Rn; atomic radius
of the noble gases and of Cm onwards; density of At, Fr, Es onwards; ...). The reference
implementation silently dropped such crystals. dimfeat imputes instead, deterministically: a missing
value is taken from the nearest element (by atomic number) *in the same periodic-table column* that
has it, or from the nearest element overall when no element of the column has it.
:func:`imputed_properties` lists every imputed (element, property) pair, and the documentation
reproduces that list. Elements beyond :data:`MAX_Z` raise :class:`UnsupportedElementError`.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_Z",
    "SITE_FEATURES",
    "UnsupportedElementError",
    "build_element_table",
    "element_table",
    "imputed_properties",
    "similar_elements",
    "standardisation",
]

#: Largest supported atomic number (lawrencium).
MAX_Z = 103

#: The nine site features, in the order of the encoder's input columns.
SITE_FEATURES: tuple[str, ...] = (
    "Number",
    "AtomicWeight",
    "Row",
    "Column",
    "FirstIonizationEnergy",
    "Electronegativity",
    "AtomicRadius",
    "Density",
    "OxidationState",
)


class UnsupportedElementError(ValueError):
    """Raised for an element the site-feature table does not cover (Z > 103)."""


def _magpie_columns() -> tuple[dict[str, np.ndarray], list[int]]:
    from matminer.utils.data import MagpieData
    from pymatgen.core.periodic_table import Element

    magpie = MagpieData(impute_nan=False)
    symbols = [Element.from_Z(z).symbol for z in range(1, MAX_Z + 1)]
    columns: dict[str, np.ndarray] = {}
    for name in SITE_FEATURES[:-1]:
        values = magpie.all_elemental_props[name]
        columns[name] = np.array([_as_float(values.get(s)) for s in symbols], dtype=np.float64)
    # Oxidation state: the element's first common oxidation state (pymatgen), 0 if it has none.
    # A per-element constant: a structure decorated with oxidation states gives the same vector
    # as the bare structure.
    columns["OxidationState"] = np.array(
        [
            float(Element.from_Z(z).common_oxidation_states[0])
            if Element.from_Z(z).common_oxidation_states
            else 0.0
            for z in range(1, MAX_Z + 1)
        ]
    )
    group = [int(c) if not math.isnan(c) else -1 for c in columns["Column"]]
    return columns, group


def _as_float(value: object) -> float:
    if value is None:
        return math.nan
    return float(value)  # type: ignore[arg-type]


TABLE_FILE = Path(__file__).with_name("data") / "element_features.json"


@lru_cache(maxsize=1)
def _raw_table() -> tuple[np.ndarray, tuple[tuple[str, str], ...]]:
    """The frozen table shipped with the package (see :func:`build_element_table`)."""
    data = json.loads(TABLE_FILE.read_text())
    if tuple(data["features"]) != SITE_FEATURES:
        raise RuntimeError(f"{TABLE_FILE} lists features {data['features']}, not {SITE_FEATURES}")
    return np.array(data["table"], dtype=np.float64), tuple(map(tuple, data["imputed"]))


def build_element_table() -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Compute the site-feature table from matminer's Magpie data and pymatgen.

    The package ships the result as ``dimfeat/data/element_features.json`` (written by
    ``python -m dimfeat.elements``) so that featurisation and saved weights do not change when
    matminer's data files do; a test checks the shipped table against this function.

    Returns
    -------
    table : ndarray of shape (MAX_Z + 1, 9)
    imputed : list of (element symbol, property)
    """
    from pymatgen.core.periodic_table import Element

    columns, group = _magpie_columns()
    z = np.arange(1, MAX_Z + 1)
    imputed: list[tuple[str, str]] = []
    table = np.zeros((MAX_Z + 1, len(SITE_FEATURES)), dtype=np.float64)
    for k, name in enumerate(SITE_FEATURES):
        col = columns[name].copy()
        known = ~np.isnan(col)
        for i in np.flatnonzero(~known):
            same_group = known & (np.array(group) == group[i])
            pool = same_group if same_group.any() else known
            candidates = np.flatnonzero(pool)
            nearest = candidates[np.argmin(np.abs(z[candidates] - z[i]))]
            col[i] = col[nearest]
            imputed.append((Element.from_Z(int(z[i])).symbol, name))
        table[1:, k] = col
    return table, imputed


def element_table() -> np.ndarray:
    """Return the raw site-feature table.

    Returns
    -------
    table : ndarray of shape (MAX_Z + 1, 9)
        Row ``Z`` holds the nine features of the element with atomic number ``Z`` in the order
        of :data:`SITE_FEATURES` (units: g/mol, eV, Pauling, Å, kg/m³); row 0 is zero padding.
    """
    return _raw_table()[0].copy()


def imputed_properties() -> list[tuple[str, str]]:
    """List the (element symbol, property) pairs whose value was imputed."""
    return list(_raw_table()[1])


def standardisation() -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each site feature over the elements 1..MAX_Z.

    Every element counts once, so the normalisation does not depend on any dataset. It is
    stored in each weights folder's ``config.json`` so that saved models stay reproducible
    if the element data of matminer or pymatgen change.

    Returns
    -------
    mean, std : ndarray of shape (9,)
    """
    rows = _raw_table()[0][1:]
    std = rows.std(axis=0)
    return rows.mean(axis=0), np.where(std > 0, std, 1.0)


def similar_elements(k: int = 3) -> np.ndarray:
    """The ``k`` elements nearest to each element in the standardised site features.

    Used by the ``substitution`` false samples of :mod:`dimfeat.infomax`: a crystal whose
    species are each replaced by a chemically similar element (Na by K, O by S, ...) differs
    from the true crystal only in fine details of its composition.

    Parameters
    ----------
    k : int, default=3
        Number of neighbours per element.

    Returns
    -------
    ndarray of int64, shape (MAX_Z + 1, k)
        Row ``Z`` lists the atomic numbers of the ``k`` other elements closest to ``Z`` (Euclidean
        distance between rows of the standardised table, nearest first, ties by atomic
        number); row 0 (padding) is zero.
    """
    if not 1 <= k < MAX_Z:
        raise ValueError(f"k must be between 1 and {MAX_Z - 1}, got {k}")
    mean, std = standardisation()
    rows = (_raw_table()[0][1:] - mean) / std
    dist = np.linalg.norm(rows[:, None, :] - rows[None, :, :], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k] + 1
    return np.vstack([np.zeros((1, k), dtype=np.int64), nearest.astype(np.int64)])


def check_atomic_numbers(numbers: np.ndarray, *, index: int | None = None) -> None:
    """Raise :class:`UnsupportedElementError` naming any element beyond :data:`MAX_Z`.

    Parameters
    ----------
    numbers : ndarray of int
        Atomic numbers of a structure's sites.
    index : int, optional
        Position of the structure in the caller's input, named in the message.
    """
    bad = numbers[(numbers > MAX_Z) | (numbers < 1)]
    if bad.size:
        from pymatgen.core.periodic_table import Element

        def name(z: int) -> str:
            try:
                return Element.from_Z(z).symbol
            except ValueError:
                return f"Z={z}"

        names = sorted({name(int(z)) for z in bad})
        where = "" if index is None else f" in structure {index}"
        raise UnsupportedElementError(
            f"no site-feature data for element(s) {', '.join(names)}{where}: dimfeat supports "
            f"atomic numbers 1-{MAX_Z}"
        )


if __name__ == "__main__":  # regenerate the shipped table
    table, imputed = build_element_table()
    TABLE_FILE.parent.mkdir(exist_ok=True)
    TABLE_FILE.write_text(
        json.dumps(
            {
                "features": list(SITE_FEATURES),
                "source": "matminer MagpieData (impute_nan=False) and pymatgen "
                "Element.common_oxidation_states; missing values imputed from the nearest "
                "element of the same column (dimfeat.elements.build_element_table)",
                "imputed": imputed,
                "table": table.tolist(),
            }
        )
        + "\n"
    )
    print(f"wrote {TABLE_FILE} ({len(imputed)} imputed values)")
