"""DIM training throughput: structure-epochs per second on CPU (and CUDA when present).

Usage: python -m benchmarks.perf.training_throughput [--n 1000] [--epochs 2] [--cache PATH]
       [--json PATH]

Trains a randomly initialised encoder with :class:`dimfeat.training.DIMTrainer` (default
:class:`~dimfeat.training.TrainingConfig`: site budget 1200, all four kinds of false sample, no
validation slice so that only training is timed) for ``--epochs`` epochs on a fixed subset: the
first ``--n`` crystals of the bundled sample (:func:`dimfeat.datasets.load_sample`, mp36k test
split), or of an ``.npz`` input cache given with ``--cache`` (e.g. the training cache written by
``dimfeat train --cache``). Input building is not timed. The rate is the mean over the epochs
after the first (the first one includes warm-up) when there are several.

The time of one epoch over the 25,545 mp36k training crystals is extrapolated two ways: by the
number of crystals, and by the number of unique sites (batches are cut by a site budget, so cost
follows sites) when the training cache ``.devcache/mp36k_train.npz`` is present. Both are compared
with the 10-minute goal. The GPU figure measured during training of the bundled weights (epoch
seconds in ``weights/sitenet-dim-mp36k/config.json``, NVIDIA H100) is copied into the output and
labelled as coming from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DEVCACHE, RESULTS, ROOT, machine, write_json
from dimfeat.inputs import build_many, load_inputs
from dimfeat.runtime import EncoderRuntime
from dimfeat.training import DIMTrainer, TrainingConfig

MP36K_TRAIN = 25_545  # mp36k 'train' crystals with <= 50 atoms in the primitive cell
GOAL_S = 600.0
TRAIN_CACHE = DEVCACHE / "mp36k_train.npz"
BUNDLED_CONFIG = ROOT / "weights" / "sitenet-dim-mp36k" / "config.json"


def subset(n: int, cache: str | None) -> tuple[list, str]:
    if cache:
        crystals = load_inputs(cache)[0][:n]
        return crystals, f"first {len(crystals)} crystals of the input cache {Path(cache).name}"
    from dimfeat.datasets import load_sample

    structures = list(load_sample()["structure"])[:n]
    crystals = build_many(structures)[0]
    return crystals, (
        f"dimfeat.datasets.load_sample(): first {len(crystals)} of the 1,000 mp36k test-split "
        "crystals"
    )


def train_rate(crystals: list, epochs: int, device: torch.device) -> dict:
    config = TrainingConfig(epochs=epochs, validation_fraction=0.0, patience=None, seed=0)
    trainer = DIMTrainer(EncoderRuntime.create(None, seed=0).encoder, config, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    history = trainer.fit(crystals, [])
    seconds = [r["seconds"] for r in history]
    timed = seconds[1:] if len(seconds) > 1 else seconds
    per_epoch = statistics.mean(timed)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "epochs": epochs,
        "epoch_seconds": seconds,
        "seconds_per_epoch": per_epoch,
        "structure_epochs_per_s": len(crystals) / per_epoch,
        "sites_per_s": sum(c.n_sites for c in crystals) / per_epoch,
        "final_train_loss": history[-1]["train_loss"],
    }


def extrapolate(result: dict, mean_sites_full: float | None) -> dict:
    by_count = MP36K_TRAIN / result["structure_epochs_per_s"]
    out = {
        "mp36k_epoch_s_by_crystals": by_count,
        "meets_10_min_goal_by_crystals": by_count <= GOAL_S,
    }
    if mean_sites_full is not None:
        by_sites = MP36K_TRAIN * mean_sites_full / result["sites_per_s"]
        out["mp36k_epoch_s_by_sites"] = by_sites
        out["meets_10_min_goal_by_sites"] = by_sites <= GOAL_S
    return out


def bundled_gpu_figure() -> dict | None:
    if not BUNDLED_CONFIG.is_file():
        return None
    training = json.loads(BUNDLED_CONFIG.read_text())["training"]
    seconds = [r["seconds"] for r in training["history"]]
    n = training["data"]["n_train"] + training["data"]["n_valid"]
    median = statistics.median(seconds)
    return {
        "source": "weights/sitenet-dim-mp36k/config.json (training history, not measured here)",
        "hardware": training["hardware"],
        "torch": training.get("torch_version"),
        "epochs": len(seconds),
        "crystals_per_epoch": n,
        "note": "epoch seconds include the validation pass over the held-out crystals",
        "median_epoch_s": median,
        "min_epoch_s": min(seconds),
        "max_epoch_s": max(seconds),
        "structure_epochs_per_s": n / median,
        "settings": {
            k: training["settings"][k] for k in ("site_budget", "mixed_precision", "false_samples")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cache", help=".npz input cache to draw the subset from")
    parser.add_argument("--json", default=str(RESULTS / "perf" / "training_throughput.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    info = machine("cuda" if torch.cuda.is_available() else None)
    load_start = os.getloadavg()
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    crystals, data = subset(args.n, args.cache)
    sites = np.array([c.n_sites for c in crystals])
    mean_sites_full = None
    if TRAIN_CACHE.is_file():
        with np.load(TRAIN_CACHE) as cache:
            mean_sites_full = float(cache["n_sites"][cache["n_sites"] <= 50].mean())
    print(f"{data}; {sites.mean():.2f} unique sites per crystal")

    runs = {}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        result = train_rate(crystals, args.epochs, device)
        result.update(extrapolate(result, mean_sites_full))
        runs[device.type] = result
        line = (
            f"{device.type}: {result['structure_epochs_per_s']:.1f} structure-epochs/s "
            f"({result['seconds_per_epoch']:.1f} s/epoch on {len(crystals)}); one mp36k epoch "
            f"({MP36K_TRAIN} crystals) ~ {result['mp36k_epoch_s_by_crystals'] / 60:.1f} min"
        )
        if "mp36k_epoch_s_by_sites" in result:
            line += f" (by sites: {result['mp36k_epoch_s_by_sites'] / 60:.1f} min)"
        print(line + f"; goal {GOAL_S / 60:.0f} min")

    gpu = bundled_gpu_figure()
    if gpu is not None:
        print(
            f"from {gpu['source']}: {gpu['hardware']}, median epoch {gpu['median_epoch_s']:.1f} s "
            f"over {gpu['crystals_per_epoch']} crystals ({gpu['structure_epochs_per_s']:.0f} "
            "structure-epochs/s)"
        )
    out = {
        "benchmark": "DIM training throughput, structure-epochs per second",
        "data": data,
        "mean_sites_subset": float(sites.mean()),
        "mean_sites_mp36k_train": mean_sites_full,
        "machine": info,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "settings": TrainingConfig(epochs=args.epochs, validation_fraction=0.0).to_dict(),
        "measured": runs,
        "goal_epoch_s": GOAL_S,
        "mp36k_train_crystals": MP36K_TRAIN,
        "gpu_from_bundled_weights_config": gpu,
    }
    write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
