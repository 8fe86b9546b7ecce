"""DIM vector, Magpie composition features, and both, under LinearRegression on the sample.

Usage: python -m benchmarks.archive.composition_features

Fits ``LinearRegression`` on the first 800 crystals of :func:`dimfeat.datasets.load_sample`
(formation energy per atom) and prints the MAE on the last 200 for three inputs: the DIM vector
of the bundled weights (``DeepInfoMaxFeaturizer``), Magpie composition features
(``dimfeat.baselines.CompositionFeaturizer``), and both side by side (``FeatureUnion``). Each
set of features is standardised first (``StandardScaler``); no feature was NaN on the sample.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.baselines import CompositionFeaturizer
from dimfeat.datasets import load_sample


def main() -> dict[str, float]:
    structures, y = load_sample(as_frame=False)
    train, test = slice(0, 800), slice(800, None)
    inputs = {
        "DIM alone (128)": DeepInfoMaxFeaturizer(),
        "Magpie alone (132)": CompositionFeaturizer(),
        "DIM + Magpie (260)": FeatureUnion(
            [("dim", DeepInfoMaxFeaturizer()), ("magpie", CompositionFeaturizer())]
        ),
    }
    print(f"LinearRegression, formation energy (eV/atom), {len(y[train])} train / "
          f"{len(y[test])} test crystals of load_sample()")  # fmt: skip
    maes = {}
    for name, features in inputs.items():
        model = make_pipeline(features, StandardScaler(), LinearRegression())
        model.fit(structures[train], y[train])
        maes[name] = float(np.abs(model.predict(structures[test]) - y[test]).mean())
        print(f"  {name:20s} MAE {maes[name]:.3f}")
    return maes


if __name__ == "__main__":
    main()
