"""Put the measured test-split results of a weights folder into its config and model card.

Reads the representation benchmark's result for the folder's weights (25 or more paired draws;
``python -m benchmarks.paper.representation --reps dim,dim-untrained,magpie``), optionally a
second result of other weights with the same draws (``--baseline``, e.g. the previous bundled
weights) and the geometry result (``python -m benchmarks.paper.geometry``), checks that each
was computed with exactly this folder's tensors (sha256), and writes their summary as the
``evaluation`` block of ``config.json``; the model card (``README.md``) is rewritten from the
config (:func:`dimfeat.channels.write_model_card`). Nothing is measured here.

Usage::

    python -m benchmarks.release.card_evaluation weights/sitenet-dim-mp36k \\
        --representation benchmarks/results/release/representation_quick.json \\
        --baseline benchmarks/results/archive/representation_quick_single_channel.json \\
        --baseline-name sitenet-dim-mp36k-single-channel \\
        --geometry benchmarks/results/paper/geometry_test.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LABEL_COUNTS = ("100", "250", "1000")
UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV"}
MODELS = {"linear": "LinearRegression", "mlp": "MLPRegressor(64)"}


def _sha_prefix(description: str) -> str | None:
    """The sha256 prefix a result's representation description names (``sha256 abc...``)."""
    marker = "sha256 "
    if marker not in description:
        return None
    return description.split(marker, 1)[1].split(".", 1)[0].split(")", 1)[0]


def _check_weights(result: dict, sha: str, what: str, rep: str = "dim") -> None:
    described = (result.get("representations") or {}).get(rep, "")
    recorded = (result.get("weights_sha256") or {}).get(rep) or _sha_prefix(described)
    if not recorded or not sha.startswith(recorded[:16]):
        raise SystemExit(
            f"{what} was computed with weights {recorded!r}, not this folder's ({sha[:16]}...)"
        )


def summary(
    representation: dict,
    sha: str,
    baseline: dict | None = None,
    baseline_name: str = "baseline",
    geometry: dict | None = None,
) -> dict:
    """The ``evaluation`` block: one row per property, model and label count."""
    _check_weights(representation, sha, "the representation result")
    mae = representation["mae"]
    header = ["task", "model", "labels", "this vector", "untrained encoder", "Magpie"]
    header.append("draws beating Magpie")
    if baseline is not None:
        header += [baseline_name, f"draws beating {baseline_name}"]
    rows = []
    for prop, unit in UNITS.items():
        for model, model_name in MODELS.items():
            for n in LABEL_COUNTS:
                cells = mae[prop][model]
                ours = np.asarray(cells["dim"][n])
                magpie = np.asarray(cells["magpie"][n])[: len(ours)]
                row = [
                    f"{prop.replace('_per_atom', '').replace('_', ' ')} ({unit})",
                    model_name,
                    n,
                    f"{np.median(ours):.3f}",
                    f"{np.median(cells['dim-untrained'][n]):.3f}",
                    f"{np.median(magpie):.3f}",
                    f"{np.mean(ours[: len(magpie)] < magpie):.0%} of {len(magpie)}",
                ]
                if baseline is not None:
                    theirs = np.asarray(baseline["mae"][prop][model]["dim"][n])
                    k = min(len(ours), len(theirs))
                    row += [
                        f"{np.median(theirs):.3f}",
                        f"{np.mean(ours[:k] < theirs[:k]):.0%} of {k}",
                    ]
                rows.append(row)
    description = (
        "Median test MAE on 1,000 crystals of the mp36k test split (the CGCNN Materials "
        "Project set), models fitted on labels drawn from a 2,000-crystal pool of the train "
        f"split, {min(len(v) for v in mae['band_gap']['mlp']['dim'].values())} or more seeded "
        "draws per cell, the same draws for every vector (benchmarks/paper/representation.py "
        "in the dimfeat repository)."
    )
    notes = []
    if geometry is not None:
        result = geometry["results"]["dim"]
        recorded = (geometry.get("weights_sha256") or {}).get("dim", "")
        if not sha.startswith(str(recorded)[:16]):
            raise SystemExit(f"the geometry result is of weights {recorded!r}, not this folder's")
        notes.append(
            f"Structure, on the {result['n_families']} polymorph families of the mp36k test split "
            f"(benchmarks/paper/geometry.py): polymorph separation {result['separation']:.3f}; "
            f"a model fitted on 1,000 train formation energies orders "
            f"{result['ranking_ridge']:.1%} (Ridge) and {result['ranking_mlp']:.1%} (MLP) of "
            f"the {result['n_pairs']} polymorph pairs correctly (a composition-only vector: 50%)."
        )
    source = "benchmarks/paper/representation.py" + (
        ", benchmarks/paper/geometry.py" if geometry is not None else ""
    )
    return {
        "description": description,
        "header": header,
        "rows": rows,
        "notes": notes,
        "source": source,
    }


def write(folder: Path, evaluation: dict) -> None:
    """Store ``evaluation`` in ``folder``'s ``config.json`` and rewrite its model card."""
    from dimfeat.channels import read_weights_config, write_model_card
    from dimfeat.files import write_file

    config = read_weights_config(folder)
    config["evaluation"] = evaluation
    write_file(folder / "config.json", (json.dumps(config, indent=1) + "\n").encode())
    read_weights_config(folder)  # still a valid config
    write_model_card(folder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--representation", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--baseline-name", default="previous weights")
    parser.add_argument("--geometry", type=Path, default=None)
    args = parser.parse_args(argv)
    from dimfeat.channels import read_weights_config

    sha = read_weights_config(args.folder)["sha256"]

    def load(path):
        return json.loads(path.read_text()) if path else None

    evaluation = summary(
        load(args.representation),
        sha,
        load(args.baseline),
        args.baseline_name,
        load(args.geometry),
    )
    write(args.folder, evaluation)
    print(f"wrote the evaluation of {args.folder} ({len(evaluation['rows'])} rows)")


if __name__ == "__main__":
    main()
