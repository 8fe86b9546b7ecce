"""Regenerate ``regression_vectors.json``: reference values of the bundled weights.

Run from the repository root after the bundled weights change (retraining, a new default)::

    .venv/bin/python tests/data/make_regression_vectors.py

It records the sha256 of ``weights/sitenet-dim-mp36k/model.safetensors`` and every
``STRIDE``-th value of the vector of each classic crystal of ``tests/data/crystals.py`` (columns
0, 8, ..., 120: both channels of a two-channel vector), computed on the CPU.
``tests/test_featurizer.py`` checks the sha first (so that a retrained model asks for this
script, rather than failing as a regression) and then compares the values.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "regression_vectors.json"
WEIGHTS = "sitenet-dim-mp36k"
STRIDE = 8
#: Crystals with a recorded vector (a subset of ``crystals.CRYSTALS``).
NAMES = ("CsCl", "NaCl", "Si", "SrTiO3")
ATOL = 1e-5


def _crystals():
    spec = importlib.util.spec_from_file_location("dimfeat_test_crystals", HERE / "crystals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CRYSTALS


def main() -> None:
    import torch

    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.weights import resolve_weights, sha256_of

    torch.set_num_threads(1)
    builders = _crystals()
    featurizer = DeepInfoMaxFeaturizer(WEIGHTS, device="cpu")
    vectors = featurizer.transform([builders[name]() for name in NAMES])
    columns = list(range(0, vectors.shape[1], STRIDE))
    payload = {
        "description": "every 8th value of DeepInfoMaxFeaturizer(weights) vectors on CPU; "
        "regenerate with tests/data/make_regression_vectors.py",
        "weights": WEIGHTS,
        "sha256": sha256_of(resolve_weights(WEIGHTS) / "model.safetensors"),
        "atol": ATOL,
        "columns": columns,
        "torch_version": torch.__version__,
        "vectors": {
            name: [round(float(x), 7) for x in row[columns]]
            for name, row in zip(NAMES, vectors, strict=True)
        },
    }
    OUTPUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {OUTPUT} (sha256 {payload['sha256'][:12]}...)", file=sys.stderr)


if __name__ == "__main__":
    main()
