"""Draw docs/figures/training_curves.png (the paper's Fig. 6) from the bundled weights' history.

Usage: python benchmarks/plot_training.py [--weights weights/sitenet-dim-mp36k] [--out PATH]

Reads the per-epoch history stored in the weights folder's ``config.json`` (written by
``dimfeat train``); nothing is retrained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dimfeat.plot import plot_training_curves

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(ROOT / "weights" / "sitenet-dim-mp36k"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "training_curves.png"))
    args = parser.parse_args()
    config = json.loads((Path(args.weights) / "config.json").read_text())
    training = config["training"]
    history = training["history"]
    best = max((r for r in history if r.get("best")), key=lambda r: r["epoch"])
    title = (
        f"{config['name']}: validation curves on {training['data']['n_valid']} held-out "
        f"crystals ({training['hardware']})"
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
