"""Fig. 11: DIM without synthetic false samples vs with all four kinds, on an equal CPU budget.

Two encoders are trained from scratch with the bundled model's settings (AdamW lr 8.12e-4,
weight decay 0.01, 1,200 sites per batch, alpha 1, beta 0.1, seed 0) on the same
``N_PRETRAIN`` eligible train crystals (5% held out for model selection by the
self-supervised loss) for the same ``EPOCHS`` epochs and no early stopping: one with
``false_samples=("other",)`` (only other crystals of the batch are false samples, the paper's
ablation), one with all four kinds. Both, the bundled model and untrained DIM then go through
the Fig. 8 protocol for formation energy. Training checkpoints after every epoch and resumes.

``python -m benchmarks.paper.ablation [--epochs 6] [--n-pretrain 5000]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks.paper import features as F
from benchmarks.paper import protocol as P
from benchmarks.paper.representation import DEFAULT_WEIGHTS, RESULTS, describe, evaluate
from dimfeat.infomax import FALSE_SAMPLE_KINDS

EPOCHS = 6
VARIANTS = {
    "dim-no-synthetic": ("other",),
    "dim-all-false": FALSE_SAMPLE_KINDS,  # the bundled recipe's kinds
}


def train(variant: str, *, epochs: int = EPOCHS, n_pretrain: int = F.N_PRETRAIN) -> Path:
    """Train (or resume, or reuse) one ablation encoder; returns its weights folder."""
    import torch

    from dimfeat.record import TrainingRecord
    from dimfeat.runtime import EncoderRuntime
    from dimfeat.training import TrainingConfig, train_dim
    from dimfeat.weights import InputSettings, save_pretrained

    folder = F.CACHE / "ablation" / f"{variant}-n{n_pretrain}-e{epochs}"
    if (folder / "config.json").is_file():
        return folder
    torch.set_num_threads(1)
    data = F.mp36k_subset(
        "train", n_pretrain, seed=F.SEED, name=f"mp36k-pretrain{n_pretrain}", structures=False
    )
    config = TrainingConfig(
        epochs=epochs,
        patience=None,
        validation_fraction=0.05,
        false_samples=VARIANTS[variant],
        seed=0,
    )
    encoder = EncoderRuntime.create(None, seed=config.seed).encoder
    start = time.perf_counter()
    history, sizes = train_dim(
        encoder,
        data.inputs,
        config,
        torch.device("cpu"),
        checkpoint_dir=folder.with_suffix(".ckpt"),
    )
    training = TrainingRecord(
        command=f"python -m benchmarks.paper.ablation --epochs {epochs} --n-pretrain {n_pretrain}",
        data={"description": data.description, **sizes},
        settings=config.to_dict(),
        start_weights=None,
        hardware=f"CPU ({platform.processor() or platform.machine()}), 1 thread",
        wall_time_s=round(time.perf_counter() - start, 1),
        torch_version=torch.__version__,
        history=history,
    )
    save_pretrained(
        folder, encoder, inputs=InputSettings(), training=training, name=f"ablation-{variant}"
    )
    print(f"[ablation] trained {variant} in {training.wall_time_s:.0f} s -> {folder}")
    return folder


def run(weights: str = DEFAULT_WEIGHTS, *, epochs: int = EPOCHS, n_pretrain=F.N_PRETRAIN):
    """Train both variants, evaluate them for formation energy and write ``ablation.json``."""
    folders = {v: train(v, epochs=epochs, n_pretrain=n_pretrain) for v in VARIANTS}
    specs = {
        "dim-bundled": ("dim", weights),
        **{v: ("dim", str(f)) for v, f in folders.items()},
        "dim-untrained": ("dim-untrained", None),
    }
    pool, test = F.pool(), F.first(F.test_set(), F.N_SCORE)
    # Cells are keyed by representation identity, so the bundled and untrained DIM cells of
    # the Fig. 8 run are reused.
    checkpoint = P.Checkpoint(F.CACHE / "runs" / "representation.json")
    results, scaling = evaluate(
        specs,
        pool=pool,
        test=test,
        checkpoint=checkpoint,
        properties=("formation_energy_per_atom",),
    )
    histories = {
        v: json.loads((f / "config.json").read_text())["training"] for v, f in folders.items()
    }
    meta = describe(specs, pool, test)
    meta["representations"].update(
        {v: f"DIM trained from scratch, false_samples={VARIANTS[v]}" for v in VARIANTS}
    )
    payload = {
        "experiment": "Fig. 11 ablation: synthetic false samples",
        **meta,
        "pretraining": {
            v: {
                "epochs": len(h["history"]),
                "wall_time_s": h["wall_time_s"],
                "data": h["data"],
                "settings": h["settings"],
                "final_valid_loss": h["history"][-1].get("valid_loss"),
                "hardware": h["hardware"],
            }
            for v, h in histories.items()
        },
        "units": {"formation_energy_per_atom": "eV/atom"},
        "input_scaling": scaling,
        "mae": results,
    }
    out = RESULTS / "ablation.json"
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return payload


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--n-pretrain", type=int, default=F.N_PRETRAIN)
    args = parser.parse_args(argv)
    run(args.weights, epochs=args.epochs, n_pretrain=args.n_pretrain)


if __name__ == "__main__":
    main()
