"""matminer-style featurisation of a DataFrame column, with a bad row.

``featurize_dataframe(..., ignore_errors=True)`` gives a row of NaN for a structure that cannot be
featurised (here a disordered alloy) instead of raising, and ``return_errors=True`` adds a column
with the reason. Without ``ignore_errors`` the first bad structure raises, naming its position.

    python examples/dataframe.py
"""

from __future__ import annotations

import pandas as pd
from pymatgen.core import Lattice, Structure

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.datasets import load_sample


def main() -> None:
    df = load_sample().head(20)[["material_id", "structure", "formation_energy_per_atom"]]
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    bad = pd.DataFrame(
        {"material_id": ["disordered-FeNi"], "structure": [alloy], "formation_energy_per_atom": 0.0}
    )
    df = pd.concat([df.iloc[:10], bad, df.iloc[10:]], ignore_index=True)

    featurizer = DeepInfoMaxFeaturizer()
    out = featurizer.featurize_dataframe(
        df, "structure", ignore_errors=True, return_errors=True, pbar=False
    )
    labels = featurizer.feature_labels()
    failed = out[labels].isna().all(axis=1)
    error_column = out.columns[-1]
    print(f"rows: {len(out)}, feature columns: {len(labels)} ({labels[0]} ... {labels[-1]})")
    print(f"featurised rows: {int((~failed).sum())}")
    print(f"NaN rows: {int(failed.sum())} {out.loc[failed, 'material_id'].tolist()}")
    for material_id, error in zip(
        out.loc[failed, "material_id"], out.loc[failed, error_column], strict=True
    ):
        print(f"error {material_id}: {error.strip().splitlines()[-1]}")
    print(out[["material_id", *labels[:3]]].head(12).to_string(float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
