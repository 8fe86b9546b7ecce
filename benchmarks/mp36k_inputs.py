"""Model inputs of a whole mp36k split part, cached once for training and the geometry benchmark.

Writes ``.devcache/mp36k_<part>.npz`` (see :func:`dimfeat.inputs.save_inputs`) with, per crystal,
``material_id``, ``formula`` (pymatgen reduced formula), ``formation_energy_per_atom`` and
``band_gap``. Crystals whose inputs cannot be built are left out and counted. The input settings
are the package defaults (``max_atoms=50``, ``symprec=0.01``); they and a fingerprint of the
input code are stored in the file, and :func:`load` refuses a cache built otherwise.

Usage::

    python benchmarks/mp36k_inputs.py train   # about 3 min on 2 cores
    python benchmarks/mp36k_inputs.py test
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIMFEAT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "mp36k"
SETTINGS = {"max_atoms": 50, "symprec": 0.01}


def code_fingerprint() -> str:
    """sha256 of the source of ``dimfeat.inputs`` (the code that builds the inputs)."""
    import hashlib
    import inspect

    import dimfeat.inputs

    return hashlib.sha256(inspect.getsource(dimfeat.inputs).encode()).hexdigest()[:16]


def cache_path(part: str) -> Path:
    """Where the inputs of ``part`` are cached."""
    return ROOT / ".devcache" / f"mp36k_{part}.npz"


def build(part: str, n_jobs: int = -1) -> Path:
    """Build and save the inputs of every crystal of ``part`` of ``split.json``."""
    from dimfeat.datasets import load_cgcnn, load_split
    from dimfeat.inputs import build_many, save_inputs

    ids = load_split(DATA / "split.json")[part]
    df = load_cgcnn(DATA / "mp36k.tar.gz", ids=ids, progress=True, n_jobs=n_jobs)
    crystals, errors = build_many(
        list(df["structure"]), n_jobs=n_jobs, ignore_errors=True, **SETTINGS
    )
    keep = [i for i, c in enumerate(crystals) if c is not None]
    path = cache_path(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_inputs(
        path,
        [crystals[i] for i in keep],
        material_id=df["material_id"].to_numpy()[keep].astype(str),
        formula=np.array([df["structure"][i].composition.reduced_formula for i in keep]),
        formation_energy_per_atom=df["formation_energy_per_atom"].to_numpy()[keep],
        band_gap=df["band_gap"].to_numpy()[keep],
        data_json=np.array(
            json.dumps(
                {
                    "description": f"mp36k.tar.gz, '{part}' part of split.json",
                    "inputs": SETTINGS,
                    "inputs_code": code_fingerprint(),
                    "n_failed": len(errors),
                }
            )
        ),
    )
    print(f"{part}: {len(keep)} crystals ({len(errors)} failed) -> {path}")
    return path


FIELDS = ("material_id", "formula", "formation_energy_per_atom", "band_gap", "data_json")


def load(part: str) -> tuple[list, dict]:
    """The cached inputs of ``part`` and their per-crystal fields, built when absent.

    A cache that lacks a field or was built with other input settings is refused: it does not
    belong to this run (delete it to rebuild).
    """
    from dimfeat.inputs import load_inputs

    path = cache_path(part)
    if not path.is_file():
        build(part)
    crystals, extra = load_inputs(path)
    missing = [f for f in FIELDS if f not in extra]
    recorded = json.loads(str(extra["data_json"])) if "data_json" in extra else {}
    expected = {"inputs": SETTINGS, "inputs_code": code_fingerprint()}
    if (
        missing
        or any(recorded.get(k) != v for k, v in expected.items())
        or part not in recorded.get("description", "")
    ):
        raise SystemExit(
            f"{path} was not built by benchmarks/mp36k_inputs.py for the '{part}' part with the "
            f"current input code and settings (missing {missing}; recorded {recorded}, expected "
            f"{expected}); delete it to rebuild"
        )
    return crystals, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=("train", "test"))
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()
    for part in args.parts:
        build(part, args.n_jobs)


if __name__ == "__main__":
    main()
