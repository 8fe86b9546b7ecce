"""Probe against geometry over every scored epoch of every DIM run: is there a recipe off the trade?

Each run scored by :mod:`benchmarks.release.probe_curve` gives, per epoch, a train-split probe
(MAE of formation energy and band gap with small labelled sets) and geometry scores (polymorph
separation and ranking, prototype distances). Plotted against each other, epochs of different
recipes can lie on one curve, where more geometry always costs probe, or a recipe can sit off
it. This reads the scored curves, puts every epoch on the same footing and reports:

* the **probe** of an epoch as its well-posed train-pool MAE relative to one reference epoch
  (by default the bundled weights rescored, ``probe_curve_bundled_rescored.json:epoch-002``):
  the mean over properties and the well-posed (model, label count) cells (every cell but
  LinearRegression on 100 labels, see :func:`benchmarks.release.probe_curve.probe_by_labels`) of the
  MAE ratio, so that runs whose untrained encoders differ are still compared in absolute MAE;
* the **geometry**: rock salt vs CsCl NaCl at one volume, NaCl at a = 5.64 vs 8.0 Å (both
  standardised over the train polymorph families) and the polymorph separation;
* which epochs are **Pareto-optimal** (no other epoch has a lower probe and both prototype
  distances and the separation at least as large), and the Spearman correlation between the
  probe and each geometry score over all epochs.

Only curves whose untrained epoch 0 carries the prototype distances are read (older curves
were scored with an earlier probe). Train split only; the test split is never read.

Usage::

    python -m benchmarks.archive.tradeoff [CURVE.json ...] [--reference CURVE.json:EPOCH]
        [--exclude RUN ...] [--json benchmarks/results/archive/tradeoff.json]
        [--plot docs/figures/probe_geometry_tradeoff.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, ROOT, write_json
from benchmarks.release.probe_curve import read_reference, well_posed_probe

#: Every scored run: the bundled weights' own curve and the research runs' curves.
CURVES = (RESULTS / "release", RESULTS / "archive")
DEFAULT_REFERENCE = f"{RESULTS / 'archive' / 'probe_curve_bundled_rescored.json'}:epoch-002"
GEOMETRY = {
    "rock salt vs CsCl": ("prototypes", "rock salt vs CsCl (NaCl)"),
    "a 5.64 vs 8.0": ("prototypes", "rock salt a=5.64 vs a=8.00 (NaCl)"),
    "separation": ("separation", None),
}


def _run_name(path: Path) -> str:
    stem = path.stem.removeprefix("probe_curve").lstrip("_")
    return stem or "bundled recipe"


def _geometry(entry: dict, key: str) -> float:
    where, name = GEOMETRY[key]
    g = entry["geometry"]
    return float(g[where][name] if name else g[where])


def _row(entry: dict, reference: dict, run: str, epoch: int) -> dict:
    """The probe (relative to ``reference``) and geometry scores of one scored epoch."""
    g = entry["geometry"]
    row = {
        "run": run,
        "epoch": epoch,
        "probe": well_posed_probe(entry, reference),
        "ranking": (g["ranking_ridge"], g["ranking_mlp"]),
        "composition_r2": entry.get("composition_r2"),
    }
    row.update({key: _geometry(entry, key) for key in GEOMETRY})
    return row


def points(paths: list[Path], reference: dict) -> list[dict]:
    """One row per trained epoch of every readable curve (see the module docstring)."""
    rows = []
    for path in paths:
        curve = json.loads(path.read_text())["curve"]
        base = curve.get("epoch-000")
        if base is None or "prototypes" not in base["geometry"]:
            continue
        for epoch, entry in sorted(curve.items()):
            if "prototypes" in entry["geometry"]:
                rows.append(_row(entry, reference, _run_name(path), int(epoch.split("-")[1])))
    return rows


def pareto(rows: list[dict]) -> list[dict]:
    """Rows no other row beats: lower probe with every geometry score at least as large."""
    trained = [r for r in rows if r["epoch"] > 0]

    def dominates(a, b):
        return a["probe"] < b["probe"] and all(a[k] >= b[k] for k in GEOMETRY)

    return [r for r in trained if not any(dominates(o, r) for o in trained)]


def spearman(rows: list[dict]) -> dict[str, float]:
    """Rank correlation over the trained epochs between the probe and each geometry score.

    Empty with fewer than 3 trained epochs.
    """
    from scipy.stats import spearmanr

    trained = [r for r in rows if r["epoch"] > 0]
    if len(trained) < 3:
        return {}
    probe = [r["probe"] for r in trained]
    return {k: float(spearmanr(probe, [r[k] for r in trained]).statistic) for k in GEOMETRY}


def plot(rows: list[dict], path: Path, reference: dict | None = None) -> None:
    """Probe against each geometry score, one line per run through its epochs.

    ``reference`` (the scored reference epoch) is drawn as a star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GEOMETRY), figsize=(15, 5.2), sharey=True)
    runs = sorted({r["run"] for r in rows})
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(runs)))
    for ax, key in zip(axes, GEOMETRY, strict=True):
        for run, colour in zip(runs, colours, strict=True):
            mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["epoch"])
            trained = [r for r in mine if r["epoch"] > 0]
            ax.plot(
                [r[key] for r in trained], [r["probe"] for r in trained], "-o",
                ms=3, lw=0.8, color=colour, label=run,
            )  # fmt: skip
            for r in mine:
                if r["epoch"] == 0:
                    ax.plot(r[key], r["probe"], "x", color="k", ms=6)
        if reference is not None:
            ax.plot(_geometry(reference, key), 1.0, "*", color="k", ms=12)
        ax.set(xlabel=f"{key} (train families)", title=key)
    axes[0].set_ylabel("well-posed probe MAE / bundled weights (train pool)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=8, loc="lower center")
    fig.suptitle(
        "Every scored epoch of every run (x: untrained encoders, star: the reference epoch); "
        "seed 0, mp36k train split",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="*", type=Path)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, metavar="CURVE.json:EPOCH")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="RUN", help="leave out this run"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        reference = read_reference(args.reference)
    except ValueError as exc:
        parser.error(f"--reference: {exc}")
    paths = args.curves or sorted(
        (p for folder in CURVES for p in folder.glob("probe_curve*.json")), key=lambda p: p.name
    )
    paths = [p for p in paths if _run_name(p) not in args.exclude]
    rows = points(paths, reference)
    if not rows:
        raise SystemExit("no curve with prototype distances among " + ", ".join(map(str, paths)))
    front = pareto(rows)
    rho = spearman(rows)
    for r in sorted(rows, key=lambda r: (r["run"], r["epoch"])):
        mark = "  pareto" if r in front else ""
        print(
            f"{r['run']:>28} {r['epoch']:>3}: probe {r['probe']:.3f}  "
            f"RS/CsCl {r['rock salt vs CsCl']:5.1f}  a {r['a 5.64 vs 8.0']:5.1f}  "
            f"sep {r['separation']:.3f}  ranking {r['ranking'][0]:.3f}/{r['ranking'][1]:.3f}{mark}"
        )
    print("Spearman (probe vs geometry, trained epochs):", {k: round(v, 2) for k, v in rho.items()})
    if args.json:
        record = {
            "protocol": __doc__.split("Usage::")[0].strip(),
            "reference": args.reference.replace(str(ROOT) + "/", ""),
            "curves": [p.name for p in paths],
            "points": rows,
            "pareto": [(r["run"], r["epoch"]) for r in front],
            "spearman": rho,
        }
        write_json(args.json, record)
    if args.plot:
        plot(rows, args.plot, reference)


if __name__ == "__main__":
    main()
