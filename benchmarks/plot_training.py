"""Draw docs/figures/training_curves.png (the paper's Fig. 6) from a training history.

Usage: python benchmarks/plot_training.py [--config PATH] [--out PATH]

Reads the per-epoch history stored in a weights ``config.json`` (written by ``dimfeat train``);
nothing is retrained. The default is the archived 115-epoch H100 run
(benchmarks/results/archive/), whose long curves show the paper's Fig. 6; the bundled weights
were selected after one epoch of a CPU run (see docs/training.md), a single point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dimfeat.plot import plot_training_curves

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=str(
            ROOT / "benchmarks/results/archive/sitenet-dim-mp36k-h100-115-epochs.config.json"
        ),
        help="a weights config.json or a weights folder",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "training_curves.png"))
    args = parser.parse_args()
    path = Path(args.config)
    config = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    training = config["training"]
    history = training["history"]
    best = max((r for r in history if r.get("best")), key=lambda r: r["epoch"])
    title = (
        f"{config['name']} ({len(history)} epochs): validation curves on "
        f"{training['data']['n_valid']} held-out crystals ({training['hardware']})"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_training_curves(history, args.out, title=title)
    print(
        f"wrote {args.out}: {len(history)} epochs, selected epoch {best['epoch']} "
        f"(valid local DIM {best['valid_local_dim']:.4f}, global DIM "
        f"{best['valid_global_dim']:.4f}, local KL {best['valid_local_kl']:.4f}, "
        f"global KL {best['valid_global_kl']:.4f})"
    )


if __name__ == "__main__":
    main()
