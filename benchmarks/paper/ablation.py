"""Fig. 11: DIM without synthetic false samples, trained exactly like the bundled weights.

The bundled weights' ``config.json`` records their recipe (every training setting), their data
(the mp36k ``train`` part, at most ``max_primitive_sites`` atoms in the primitive cell, the
seeded validation hold-out) and the epoch chosen for them. This trains one more encoder from
the same random start with all of that unchanged except the false samples: only
``("other",)``, other crystals of the batch, the paper's ablation (no synthetic polymorph,
composition, permutation or strain crystals, in the local or the global loss). It runs
``dimfeat train`` for as many epochs as the bundled epoch had, so both encoders have the same
budget. Then the bundled weights, this encoder and the untrained encoder go through the Fig. 8
protocol (:mod:`benchmarks.paper.representation`: same pool, test crystals and paired draws)
for formation energy and band gap, both models, every label count.

The trained encoder is reused only when its ``config.json`` records exactly the settings and
epochs this would train with; otherwise it is refused (delete the folder to retrain).
Training checkpoints after every epoch and resumes.

``python -m benchmarks.paper.ablation [--weights NAME_OR_FOLDER] [--draws N]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.paper import features as F
from benchmarks.paper import protocol as P
from benchmarks.paper.representation import (
    DEFAULT_WEIGHTS,
    PROPERTIES,
    RESULTS,
    UNITS,
    describe,
    evaluate,
)

VARIANT = "dim-no-synthetic"
ABLATED = {"false_samples": ["other"], "local_false_samples": None}

# dimfeat train option of each recorded setting (settings without an option keep their default)
OPTIONS = {
    "lr": "--lr",
    "site_budget": "--site-budget",
    "validation_fraction": "--validation-fraction",
    "patience": "--patience",
    "beta": "--beta",
    "local_constituent": "--local-constituent",
    "local_pairs": "--local-pairs",
    "global_sites": "--global-sites",
    "composition_weight": "--composition-weight",
    "critic": "--critic",
    "seed": "--seed",
}


def recipe(weights: str = DEFAULT_WEIGHTS) -> tuple[dict, dict]:
    """``(settings, data)`` of the ablation: the bundled record with other false samples.

    ``settings["epochs"]`` is the bundled weights' epoch (the selected one when the run went on
    past it).
    """
    from dimfeat.training import TrainingConfig
    from dimfeat.weights import read_config, resolve_weights

    training = read_config(resolve_weights(weights)).get("training") or {}
    if not training.get("settings") or not training.get("history"):
        raise SystemExit(f"{weights} records no training settings and history to ablate")
    selection = training.get("selection") or {}
    epochs = int(selection.get("epoch") or len(training["history"]))
    # settings added after the weights were trained have the value they were trained with
    recorded = {**TrainingConfig.ADDED_SETTINGS, **training["settings"]}
    settings = {**recorded, **ABLATED, "epochs": epochs}
    return settings, training.get("data", {})


def command(settings: dict, data: dict, folder: Path) -> list[str]:
    """``dimfeat train`` arguments that train the ablation encoder into ``folder``."""
    unknown = {"weight_decay": 0.01, "alpha": 1.0}
    for key, default in unknown.items():  # settings dimfeat train has no option for
        if settings.get(key, default) != default:
            raise SystemExit(f"the bundled {key}={settings[key]} cannot be set by dimfeat train")
    argv = [
        str(F.MP36K),
        "--split",
        str(F.SPLIT),
        "--part",
        "train",
        "-o",
        str(folder),
        "--cache",
        str(F.CACHE / "mp36k_train_dimfeat_inputs.npz"),
        "--checkpoint-dir",
        str(folder.with_suffix(".ckpt")),
        "--max-primitive-sites",
        str(data.get("max_primitive_sites", F.MAX_PRIMITIVE_SITES)),
        "--epochs",
        str(settings["epochs"]),
        "--false-samples",
        ",".join(settings["false_samples"]),
        "--name",
        f"ablation-{VARIANT}",
        "--device",
        "cpu",
    ]
    for key, option in OPTIONS.items():
        if settings.get(key) is not None:
            argv += [option, str(settings[key])]
    return argv


def train(weights: str = DEFAULT_WEIGHTS) -> Path:
    """Train (resume, or reuse when it provably matches) the ablation encoder; its folder."""
    from dimfeat.cli import main as dimfeat_main
    from dimfeat.weights import read_config

    settings, data = recipe(weights)
    folder = F.CACHE / "ablation" / f"{VARIANT}-of-{F.weights_key(weights)[:12]}"
    if (folder / "config.json").is_file():
        recorded = read_config(folder)["training"]["settings"]
        mismatch = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
        if mismatch:
            raise SystemExit(
                f"{folder} was trained with other settings {mismatch} (recorded, wanted); "
                "delete it to retrain"
            )
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    dimfeat_main(["train", *command(settings, data, folder)])
    trained = read_config(folder)["training"]["data"]
    for key in ("n_train", "n_valid"):
        if key in data and trained.get(key) != data[key]:
            raise SystemExit(
                f"{folder} trained on {key}={trained.get(key)} crystals, the bundled weights "
                f"on {data[key]}: not the same data"
            )
    return folder


def run(weights: str = DEFAULT_WEIGHTS, draws: int | None = None) -> dict:
    """Train the ablation encoder, evaluate the three encoders and write ``ablation.json``."""
    from dimfeat.weights import read_config

    folder = train(weights)
    specs = {
        "dim": ("dim", weights),
        VARIANT: ("dim", str(folder)),
        "dim-untrained": ("dim-untrained", None),
    }
    pool, test = F.pool(), F.first(F.test_set(), F.N_SCORE)
    # cells are keyed by representation identity: the Fig. 8 run's DIM cells are reused
    checkpoint = P.Checkpoint(F.CACHE / "runs" / "representation.json")
    n_draws = P.n_draws if draws is None else (lambda n: min(draws, P.n_draws(n)))
    results, scaling = evaluate(
        specs, pool=pool, test=test, checkpoint=checkpoint, properties=PROPERTIES, draws=n_draws
    )
    meta = describe(specs, pool, test)
    meta["draws"] = {str(n): n_draws(n) for n in P.LABEL_COUNTS}
    pretraining = {}
    for label, path in (("dim", weights), (VARIANT, str(folder))):
        from dimfeat.weights import resolve_weights

        training = read_config(resolve_weights(path))["training"]
        history = training["history"]
        epoch = (training.get("selection") or {}).get("epoch") or len(history)
        record = next(h for h in history if h["epoch"] == epoch)
        pretraining[label] = {
            "epochs": epoch,
            "data": training["data"],
            "settings": training["settings"],
            "hardware": training.get("hardware"),
            "seconds": round(sum(h["seconds"] for h in history if h["epoch"] <= epoch), 1),
            "valid_loss": record.get("valid_loss"),
        }
    payload = {
        "experiment": "Fig. 11 ablation: synthetic false samples",
        **meta,
        "pretraining": pretraining,
        "units": {p: UNITS[p] for p in PROPERTIES},
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
    parser.add_argument("--draws", type=int, default=None, help="at most this many draws")
    args = parser.parse_args(argv)
    run(args.weights, args.draws)


if __name__ == "__main__":
    main()
