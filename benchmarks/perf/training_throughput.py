"""DIM training throughput of the bundled weights' recipes: wall and CPU time per epoch.

Usage: python -m benchmarks.perf.training_throughput [--weights NAME] [--n 1000] [--epochs 2]
       [--cache PATH] [--json PATH]

For each channel of a weights folder (``--weights``, default the bundled two-channel
``sitenet-dim-mp36k``: its ``context`` and ``structure`` channels; a single-channel folder such
as ``sitenet-dim-mp36k-single-channel`` has one), a randomly initialised encoder of that channel's
architecture (``channels.<c>.encoder``, or ``encoder``) is trained with
:class:`dimfeat.training.DIMTrainer` under that channel's recorded recipe
(``TrainingConfig(**settings_of_record(settings))``, the settings ``dimfeat train`` replays)
for ``--epochs`` epochs, with no validation slice so that only training is timed. Every channel
trains on the same fixed subset: the first ``--n`` crystals of the bundled sample
(:func:`dimfeat.datasets.load_sample`, mp36k test split), or of an ``.npz`` input cache given with
``--cache`` (e.g. the training cache written by ``dimfeat train --cache``). Input building is not
timed. Each epoch's wall time (the trainer's history) and the CPU time of this process (all
threads, :func:`time.process_time`) between the ends of epochs are recorded (the CPU seconds per
epoch are the wall seconds times the CPU share of those intervals); rates are the mean over the
epochs after the first (the first includes warm-up) when there are several. The load average at
the start and the end says whether the machine was shared.

The wall time of one epoch over the 25,545 mp36k training crystals is extrapolated two ways: by
the number of crystals, and by the number of unique sites (batches are cut by a site budget, so
cost follows sites) when the training cache (``--train-cache``, default
``.devcache/mp36k_train.npz``) is present. Both are
compared with the target of 2.5 minutes per epoch on an idle 2-core CPU. Each channel's recorded
epoch seconds (its training ``history`` in the folder's ``config.json``, with the hardware the
record names) are copied into the output and labelled as coming from that file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DEVCACHE, RESULTS, machine, write_json
from dimfeat.encoder import EncoderConfig
from dimfeat.inputs import build_many, load_inputs
from dimfeat.runtime import EncoderRuntime
from dimfeat.training import DIMTrainer
from dimfeat.training_config import TrainingConfig, settings_of_record
from dimfeat.weights import read_config, resolve_weights

MP36K_TRAIN = 25_545  # mp36k 'train' crystals with <= 50 atoms in the primitive cell
# target: one training epoch over the mp36k train crystals in at most 2.5 min on an idle 2-core CPU
GOAL_S = 150.0
TRAIN_CACHE = DEVCACHE / "mp36k_train.npz"
WEIGHTS = "sitenet-dim-mp36k"
# what timing changes in a recorded recipe: the epoch count, and no validation pass or stopping
TIMING = {"validation_fraction": 0.0, "patience": None, "max_seconds": None}


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


def channel_recipes(config: dict) -> dict[str, dict]:
    """Each channel's architecture and training record: ``{name: {"encoder", "training"}}``.

    A two-channel config gives ``context`` and ``structure`` (``channels.<c>.encoder`` and
    ``channels.<c>.source.training``); a single-channel config gives ``single`` (``encoder`` and
    ``training``).
    """
    if "channels" in config:
        return {
            name: {"encoder": block["encoder"], "training": block["source"]["training"]}
            for name, block in config["channels"].items()
        }
    return {"single": {"encoder": config["encoder"], "training": config["training"]}}


def timing_config(settings: dict, epochs: int) -> TrainingConfig:
    """The recorded recipe ``settings`` for ``epochs`` epochs without validation or stopping."""
    return TrainingConfig(**{**settings_of_record(settings), **TIMING, "epochs": epochs})


def train_rate(
    crystals: list, encoder_config: EncoderConfig, config: TrainingConfig, device: torch.device
) -> dict:
    """Train random weights of ``encoder_config`` under ``config``; wall and CPU time per epoch."""
    encoder = EncoderRuntime.create(None, seed=config.seed, encoder_config=encoder_config).encoder
    cpu, wall = [time.process_time()], [time.perf_counter()]

    def clocks(trainer: DIMTrainer, record: dict) -> None:
        cpu.append(time.process_time())
        wall.append(time.perf_counter())

    trainer = DIMTrainer(encoder, config, device, callbacks=[clocks])
    if device.type == "cuda":
        torch.cuda.synchronize()
    history = trainer.fit(crystals, [])
    seconds = [r["seconds"] for r in history]
    # CPU and wall time between the ends of epochs (the first interval includes the trainer's
    # set-up): the CPU share is taken over the same intervals
    cpu_seconds, clock_seconds = np.diff(cpu).tolist(), np.diff(wall).tolist()
    after_warmup = slice(1, None) if len(seconds) > 1 else slice(None)
    per_epoch = statistics.mean(seconds[after_warmup])
    cpu_per_wall = sum(cpu_seconds[after_warmup]) / sum(clock_seconds[after_warmup])
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "n_parameters": sum(p.numel() for p in encoder.parameters()),
        "epochs": config.epochs,
        "epoch_seconds": seconds,
        "epoch_cpu_seconds": cpu_seconds,
        "epoch_interval_seconds": clock_seconds,
        "seconds_per_epoch": per_epoch,
        "cpu_per_wall": cpu_per_wall,
        "cpu_seconds_per_epoch": cpu_per_wall * per_epoch,
        "structure_epochs_per_s": len(crystals) / per_epoch,
        "sites_per_s": sum(c.n_sites for c in crystals) / per_epoch,
        "final_train_loss": history[-1]["train_loss"],
    }


def extrapolate(result: dict, n_crystals: int, mean_sites_full: float | None) -> dict:
    """One mp36k training epoch, in wall and CPU seconds, from a measured ``result``."""
    by_count = MP36K_TRAIN / result["structure_epochs_per_s"]
    cpu_by_count = result["cpu_seconds_per_epoch"] * MP36K_TRAIN / n_crystals
    out = {
        "mp36k_epoch_s_by_crystals": by_count,
        "meets_goal_by_crystals": by_count <= GOAL_S,
        "mp36k_epoch_cpu_s_by_crystals": cpu_by_count,
    }
    if mean_sites_full is not None:
        by_sites = MP36K_TRAIN * mean_sites_full / result["sites_per_s"]
        out["mp36k_epoch_s_by_sites"] = by_sites
        out["meets_goal_by_sites"] = by_sites <= GOAL_S
    return out


def recorded_epochs(training: dict, source: str) -> dict:
    """The epoch seconds of a training record, copied (not measured here)."""
    seconds = [r["seconds"] for r in training["history"]]
    n = training["data"]["n_train"] + training["data"]["n_valid"]
    median = statistics.median(seconds)
    return {
        "source": f"{source} (training history, copied from the config, not measured here)",
        "hardware": training.get("hardware"),
        "torch": training.get("torch_version"),
        "command": training.get("command"),
        "epochs": len(seconds),
        "epoch_seconds": seconds,
        "run_epoch_seconds": [r["seconds"] for r in training.get("run_history", [])],
        "crystals_per_epoch": n,
        "note": "epoch seconds include the validation pass over the held-out crystals",
        "median_epoch_s": median,
        "min_epoch_s": min(seconds),
        "max_epoch_s": max(seconds),
        "structure_epochs_per_s": n / median,
        "mp36k_epoch_s_by_crystals": median * MP36K_TRAIN / n,
    }


def measure(
    weights: str,
    n: int,
    epochs: int,
    cache: str | None = None,
    train_cache: str | Path = TRAIN_CACHE,
) -> dict:
    """Time each channel's recorded recipe of ``weights`` on the same subset; the JSON record."""
    info = machine("cuda" if torch.cuda.is_available() else None)
    load_start = os.getloadavg()
    print(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    folder = resolve_weights(weights)
    config = read_config(folder)
    crystals, data = subset(n, cache)
    sites = np.array([c.n_sites for c in crystals])
    mean_sites_full = None
    if Path(train_cache).is_file():
        with np.load(train_cache) as full:
            mean_sites_full = float(full["n_sites"][full["n_sites"] <= 50].mean())
    print(f"{data}; {sites.mean():.2f} unique sites per crystal")

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    channels = {}
    for name, recipe in channel_recipes(config).items():
        encoder_config = EncoderConfig.from_dict(recipe["encoder"])
        training_config = timing_config(recipe["training"]["settings"], epochs)
        runs = {}
        for device in devices:
            result = train_rate(crystals, encoder_config, training_config, device)
            result.update(extrapolate(result, len(crystals), mean_sites_full))
            runs[device.type] = result
            line = (
                f"{name} {device.type}: {result['structure_epochs_per_s']:.1f} "
                f"structure-epochs/s ({result['seconds_per_epoch']:.1f} s wall, "
                f"{result['cpu_seconds_per_epoch']:.1f} s CPU per epoch on {len(crystals)}); one "
                f"mp36k epoch ({MP36K_TRAIN} crystals) ~ "
                f"{result['mp36k_epoch_s_by_crystals']:.0f} s"
            )
            if "mp36k_epoch_s_by_sites" in result:
                line += f" (by sites: {result['mp36k_epoch_s_by_sites']:.0f} s)"
            print(line + f"; target {GOAL_S:.0f} s")
        recorded = recorded_epochs(recipe["training"], f"{folder.name}/config.json")
        print(
            f"{name} recorded in {recorded['source']}: {recorded['hardware']}, epochs "
            f"{recorded['min_epoch_s']:.1f}-{recorded['max_epoch_s']:.1f} s over "
            f"{recorded['crystals_per_epoch']} crystals "
            f"(~{recorded['mp36k_epoch_s_by_crystals']:.0f} s per mp36k epoch)"
        )
        channels[name] = {
            "encoder": encoder_config.to_dict(),
            "settings": training_config.to_dict(),
            "measured": runs,
            "recorded": recorded,
        }
    load_end = os.getloadavg()
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    return {
        "benchmark": "DIM training throughput of each channel's recorded recipe",
        "weights": folder.name,
        "data": data,
        "n_crystals": len(crystals),
        "mean_sites_subset": float(sites.mean()),
        "mean_sites_mp36k_train": mean_sites_full,
        "machine": info,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": list(load_start),
        "load_average_end": list(load_end),
        "note": (
            "CPU time is this process's, all threads; a load average above the thread count at "
            "start or end means another job shared the cores and the wall times are high"
        ),
        "goal_epoch_s": GOAL_S,
        "goal": "one training epoch over the mp36k train crystals <= 2.5 min on an idle 2-core CPU",
        "mp36k_train_crystals": MP36K_TRAIN,
        "channels": channels,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=WEIGHTS, help="weights whose recipes are timed")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cache", help=".npz input cache to draw the subset from")
    parser.add_argument(
        "--train-cache",
        default=str(TRAIN_CACHE),
        help="input cache of the mp36k train split, for the extrapolation by unique sites",
    )
    parser.add_argument("--json", default=str(RESULTS / "perf" / "training_throughput.json"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    out = measure(args.weights, args.n, args.epochs, args.cache, args.train_cache)
    write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
