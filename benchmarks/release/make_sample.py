"""Build the bundled sample ``dimfeat/data/mp_sample.json.gz`` from the shared mp36k data.

The sample is 1,000 crystals drawn with ``numpy.random.default_rng(0)`` from the ``test`` ids of
``mp36k/split.json`` that have at most 50 sites in their stored cell: the eligible ids are taken in
``split.json`` order, ``rng.choice(n_eligible, 1000, replace=False)`` picks 1,000 of them, and the
picks are put back in ``split.json`` order. Each crystal is stored as pymatgen's
``Structure.as_dict()`` of the CIF in the tarball (floats as parsed, nothing rounded), beside its
formation energy (eV/atom) and band gap (eV), in gzip-compressed JSON with a metadata block.
The output is byte-for-byte reproducible (gzip ``mtime=0``).

Run from the repository root::

    .venv/bin/python -m benchmarks.release.make_sample   # $DIMFEAT_SHARED_DATA or ../shared/data
    .venv/bin/python -m benchmarks.release.make_sample --data /path/to/shared/data
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pymatgen.core

from benchmarks.common import DATA as DEFAULT_DATA
from benchmarks.common import ROOT
from dimfeat import datasets

DEFAULT_OUT = ROOT / "dimfeat" / "data" / datasets.SAMPLE_FILE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_sample(
    data: Path, *, n: int = 1000, seed: int = 0, max_atoms: int = 50, progress: bool = True
) -> dict[str, Any]:
    """Draw the sample and return the JSON payload (``metadata`` and ``columns``)."""
    tarball = data / "mp36k" / "mp36k.tar.gz"
    split_file = data / "mp36k" / "split.json"
    split = datasets.load_split(split_file)
    eligible = datasets.load_cgcnn(
        tarball, ids=split["test"], max_atoms=max_atoms, progress=progress
    )
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(eligible), size=n, replace=False))
    sample = eligible.iloc[picks].reset_index(drop=True)

    metadata = {
        "name": "mp_sample",
        "description": (
            f"{n} Materials Project crystals from the test fold of the dimfeat mp36k split, "
            f"at most {max_atoms} sites per stored cell."
        ),
        "source": (
            "mp36k: the CGCNN Materials Project set (MP snapshot of about 2017) in the CGCNN "
            "layout, from the MIT-licensed repository kdmsit/MEGNet (commit 4f3c76c6); "
            "split.json is the dimfeat project's fixed 80/20 split by material id."
        ),
        "licence": "CC BY 4.0",
        "credit": [
            "Materials Project: A. Jain et al., APL Mater. 1, 011002 (2013), doi:10.1063/1.4812323",
            "CGCNN: T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018), "
            "doi:10.1103/PhysRevLett.120.145301",
        ],
        "drawn": (
            f"test ids of split.json in file order, restricted to <= {max_atoms} sites "
            f"({len(eligible)} of {len(split['test'])} eligible); "
            f"numpy.random.default_rng({seed}).choice(n_eligible, {n}, replace=False), "
            "picks sorted back to split.json order"
        ),
        "seed": seed,
        "n": n,
        "max_atoms": max_atoms,
        "split": "test",
        "structure_format": "pymatgen Structure.as_dict() of the stored P1 CIF",
        "units": {"formation_energy_per_atom": "eV/atom", "band_gap": "eV (PBE)"},
        "inputs": {
            "mp36k.tar.gz sha256": _sha256(tarball),
            "split.json sha256": _sha256(split_file),
        },
        "built_with": {"pymatgen": pymatgen.core.__version__, "numpy": np.__version__},
    }
    columns = {
        "material_id": sample["material_id"].tolist(),
        "formation_energy_per_atom": sample["formation_energy_per_atom"].tolist(),
        "band_gap": sample["band_gap"].tolist(),
        "structure": [s.as_dict() for s in sample["structure"]],
    }
    return {"metadata": metadata, "columns": columns}


def write_payload(payload: dict[str, Any], out: Path) -> None:
    """Write ``payload`` as reproducible gzip-compressed JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as fh,
    ):
        fh.write(text.encode("utf-8"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .json.gz")
    parser.add_argument("--n", type=int, default=1000, help="number of crystals")
    parser.add_argument("--seed", type=int, default=0, help="numpy default_rng seed")
    parser.add_argument("--max-atoms", type=int, default=50, help="largest cell kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    payload = build_sample(args.data, n=args.n, seed=args.seed, max_atoms=args.max_atoms)
    write_payload(payload, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(payload['columns']['material_id'])} crystals, {size:,} bytes)")


if __name__ == "__main__":
    main()
