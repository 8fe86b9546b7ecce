"""Screen DIM recipes on a small training set: a few epochs each, scored by train-split criteria.

Each recipe trains a random encoder (seed 0) on the same 2,000 crystals of the mp36k ``train``
part (default_rng(0) order, <= 50 atoms in the primitive cell, none of the label pool), saving
every second epoch, and is then scored with :mod:`benchmarks.release.probe_curve` (train-split
probe, and 400 train polymorph families drawn with seed 0). Small and noisy by design: it says which
levers move the geometry scores, and the winner is then confirmed at full scale.

Usage::

    python -m benchmarks.archive.recipe_screen RECIPE [RECIPE ...] [--epochs 4] \
        [--out .devcache/screen]

Results: ``<out>/<recipe>/probe_curve.json`` and ``benchmarks/results/archive/recipe_screen.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEVCACHE, RESULTS, mp36k_inputs, write_json
from benchmarks.paper import features as F
from benchmarks.release import probe_curve

SCREEN_FAMILIES = 400  # train polymorph families drawn with seed 0 (all of them: about 2,000)
OLD_KINDS = ("other", "polymorph", "composition", "permutation")
ALL_KINDS = (*OLD_KINDS, "strain")

#: Settings every screened recipe starts from: the paper's KL weight and the exact local loss
#: (every pair, every site), as the screen was run; each recipe changes some of them.
BASE = {"beta": 0.1, "local_constituent": "bond", "local_pairs": None, "global_sites": None}

#: name -> (encoder settings, training settings on top of BASE)
RECIPES = {
    "paper-linear": ({"distance_expansion": "linear"}, {"false_samples": OLD_KINDS}),
    "gaussian": ({}, {"false_samples": OLD_KINDS}),
    "gaussian-strain": ({}, {"false_samples": ALL_KINDS}),
    "gaussian-strain-neighbour": (
        {},
        {"false_samples": ALL_KINDS, "local_constituent": "neighbour"},
    ),
    "gaussian-strain-beta0.01": ({}, {"false_samples": ALL_KINDS, "beta": 0.01}),
    "gaussian-strain-nokl": ({}, {"false_samples": ALL_KINDS, "beta": 0.0}),
    "gaussian-other-only": ({}, {"false_samples": ("other",)}),
    # the bundled recipe: the package defaults (beta 0.01, 16 sampled pairs, 6 sites)
    "defaults": ({}, {"beta": 0.01, "local_pairs": 16, "global_sites": 6}),
}


def training_set(n: int = 2000) -> list:
    crystals, extra = mp36k_inputs("train")
    pool = set(
        F.mp36k_subset("train", F.N_POOL, seed=F.SEED, name="mp36k-pool", structures=False).ids
    )
    order = np.random.default_rng(0).permutation(len(crystals))
    chosen = [
        i
        for i in order
        if crystals[i].n_sites <= F.MAX_PRIMITIVE_SITES and str(extra["material_id"][i]) not in pool
    ][:n]
    return [crystals[i] for i in chosen]


def train(name: str, epochs: int, out: Path) -> Path:
    import torch

    from dimfeat.encoder import EncoderConfig
    from dimfeat.runtime import EncoderRuntime
    from dimfeat.training import SaveEveryEpoch, TrainingConfig, train_dim
    from dimfeat.weights import InputSettings

    encoder_settings, training_settings = RECIPES[name]
    crystals = training_set()
    config = TrainingConfig(epochs=epochs, patience=None, seed=0, **{**BASE, **training_settings})
    runtime = EncoderRuntime.create(
        None, seed=config.seed, encoder_config=EncoderConfig(**encoder_settings)
    )
    folder = out / name
    saver = SaveEveryEpoch(folder, InputSettings(), {"recipe": name}, every=2)
    train_dim(
        runtime.encoder,
        crystals,
        config,
        torch.device("cpu"),
        checkpoint_dir=folder,
        callbacks=[saver],
    )
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEVCACHE / "screen")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    summary_path = RESULTS / "archive" / "recipe_screen.json"
    for name in args.recipes:
        t0 = time.perf_counter()
        folder = train(name, args.epochs, args.out)
        print(f"[{name}] trained in {time.perf_counter() - t0:.0f} s", flush=True)
        record = probe_curve.run(folder, n_families=SCREEN_FAMILIES)
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary[name] = {
            "encoder": RECIPES[name][0],
            "training": {
                k: list(v) if isinstance(v, tuple) else v for k, v in RECIPES[name][1].items()
            },
            "curve": {
                k: {"relative_probe": v["relative_probe"], **v["geometry"]}
                for k, v in record["curve"].items()
            },
        }
        write_json(summary_path, summary)
        for k, v in record["curve"].items():
            g = v["geometry"]
            print(
                f"[{name}] {k}: probe x{v['relative_probe']:.3f} sep {g['separation']:.4f} "
                f"rank ridge {g['ranking_ridge']:.3f} mlp {g['ranking_mlp']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
