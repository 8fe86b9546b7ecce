"""Draw docs/figures/training_curves.png (the paper's Fig. 6) from a training history.

Usage: python -m benchmarks.paper.plot_training [--config PATH] [--out PATH]

Reads the per-epoch history stored in a weights ``config.json`` (written by ``dimfeat train``
and ``benchmarks/release/bundle_weights.py``); nothing is retrained. The default is the bundled
weights: their ``run_history`` holds every epoch of the run they were chosen from, and the
marked epoch is the one bundled (chosen by train-split probe and geometry scores, not by the
loss). For two-channel weights each channel's run is drawn in its own colour, with the epoch
kept for that channel. ``--config
benchmarks/results/archive/sitenet-dim-mp36k-h100-115-epochs.config.json`` draws the archived
115-epoch H100 run of an earlier recipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import ROOT
from dimfeat.plot import plot_training_curves


def run_curve(training: dict) -> tuple[list[dict], int, bool]:
    """Every epoch of the run a training record was chosen from, the kept epoch marked
    ``best``; the kept epoch; whether it was chosen by a selection (not the lowest loss)."""
    history = training.get("run_history") or training["history"]
    selected = (training.get("selection") or {}).get("epoch")
    if selected is not None:  # mark the epoch that was kept, not the lowest loss
        history = [{**r, "best": r["epoch"] == selected} for r in history]
    best = max((r for r in history if r.get("best")), key=lambda r: r["epoch"])
    return history, best["epoch"], selected is not None


def curves(config: dict) -> tuple[dict[str, list[dict]], str]:
    """The run of each training record in a weights ``config.json`` (``""``: the one of
    single-channel weights; else one per channel of two-channel weights) and the figure's
    title."""
    if "channels" not in config:
        training = config["training"]
        history, kept, selected = run_curve(training)
        chosen = "kept" if selected else "lowest validation loss"
        title = (
            f"{config['name']} ({len(history)} epochs, epoch {kept} {chosen})\nvalidation "
            f"curves on {training['data']['n_valid']} held-out crystals ({training['hardware']})"
        )
        return {"": history}, title
    runs, lines, hardware = {}, [f"{config['name']}, two channels"], set()
    for name, block in config["channels"].items():
        training = block["source"]["training"]
        runs[name], kept, selected = run_curve(training)
        hardware.add(training.get("hardware") or "?")
        lines.append(
            f"{name}: {len(runs[name])} epochs, epoch {kept} "
            f"{'kept' if selected else 'lowest validation loss'}, validation curves on "
            f"{training['data']['n_valid']} held-out crystals"
        )
    return runs, "\n".join(lines) + f"\n({', '.join(sorted(hardware))})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=str(ROOT / "weights" / "sitenet-dim-mp36k"),
        help="a weights config.json, a weights folder or a bundled weights name",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "training_curves.png"))
    args = parser.parse_args(argv)
    path = Path(args.config)
    if not path.exists():  # a weights name, e.g. a bundled one
        from dimfeat.weights import resolve_weights

        path = Path(resolve_weights(args.config))
    config = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    runs, title = curves(config)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    plot_training_curves(runs if len(runs) > 1 else runs[""], args.out, title=title)
    for name, history in runs.items():
        best = max((r for r in history if r.get("best")), key=lambda r: r["epoch"])
        print(
            f"wrote {args.out}{f' ({name} channel)' if name else ''}: {len(history)} epochs, "
            f"selected epoch {best['epoch']} (valid local DIM {best['valid_local_dim']:.4f}, "
            f"global DIM {best['valid_global_dim']:.4f}, local KL "
            f"{best['valid_local_kl']:.4f}, global KL {best['valid_global_kl']:.4f})"
        )


if __name__ == "__main__":
    main()
