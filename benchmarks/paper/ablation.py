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

# dimfeat train option of each recorded setting; None is written as 0 where the option means
# "none" by 0, and refused where the option cannot say None
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
    "synthetic_weight": "--synthetic-weight",
    "critic": "--critic",
    "seed": "--seed",
}
NONE_AS_ZERO = ("local_pairs", "global_sites")
#: settings dimfeat train has no option for: the ablation needs the bundled value to be these
FIXED = {"weight_decay": 0.01, "alpha": 1.0, "max_seconds": None}


def recipe(weights: str = DEFAULT_WEIGHTS) -> tuple[dict, dict]:
    """The ablation's recipe: the bundled weights' record with ``other`` as the only false sample.

    Parameters
    ----------
    weights : str
        Bundled weights name or weights folder whose ``config.json`` records its training.

    Returns
    -------
    settings : dict
        Every training setting (those added to dimfeat after the weights were trained take the
        value they were trained with); ``settings["epochs"]`` is the bundled weights' epoch
        (the selected one when the run went on past it).
    reference : dict
        What else must match: ``data`` (the training record's data block), ``encoder`` and
        ``inputs`` (the architecture and input settings of the bundled ``config.json``).
    """
    from dimfeat.training import TrainingConfig
    from dimfeat.weights import read_config, resolve_weights

    config = read_config(resolve_weights(weights))
    training = config.get("training") or {}
    if not training.get("settings") or not training.get("history"):
        raise SystemExit(f"{weights} records no training settings and history to ablate")
    selection = training.get("selection") or {}
    epochs = int(selection.get("epoch") or len(training["history"]))
    recorded = {**TrainingConfig.ADDED_SETTINGS, **training["settings"]}
    settings = {**recorded, **ABLATED, "epochs": epochs}
    reference = {
        "data": training.get("data", {}),
        "encoder": config["encoder"],
        "inputs": config["inputs"],
    }
    return settings, reference


def command(settings: dict, reference: dict, work: Path) -> list[str]:
    """``dimfeat train`` arguments that train the ablation encoder in the folder ``work``.

    Every epoch is saved under ``work/epochs`` (:func:`encoder_folder` is the one used); the
    run's checkpoints go to ``work/checkpoints``.

    Raises
    ------
    SystemExit
        When a setting of the recipe cannot be expressed by ``dimfeat train``.
    """
    for key, value in FIXED.items():
        if settings.get(key, value) != value:
            raise SystemExit(f"the bundled {key}={settings[key]} cannot be set by dimfeat train")
    encoder, inputs = reference["encoder"], reference["inputs"]
    argv = [
        str(F.MP36K),
        "--split", str(F.SPLIT),
        "--part", "train",
        "-o", str(work / "last"),
        "--save-every-epoch", str(work / "epochs"),
        "--checkpoint-dir", str(work / "checkpoints"),
        "--cache", str(F.CACHE / "mp36k_train_dimfeat_inputs.npz"),
        "--max-primitive-sites",
        str(reference["data"].get("max_primitive_sites", F.MAX_PRIMITIVE_SITES)),
        "--max-atoms", str(inputs["max_atoms"]),
        "--symprec", str(inputs["symprec"]),
        "--distance-expansion", encoder.get("distance_expansion", "linear"),
        "--global-dim", str(encoder["global_dim"]),
        "--epochs", str(settings["epochs"]),
        "--false-samples", ",".join(settings["false_samples"]),
        "--name", f"ablation-{VARIANT}",
        "--device", "cpu",
    ]  # fmt: skip
    for key, option in OPTIONS.items():
        value = settings.get(key)
        if value is None and key in NONE_AS_ZERO:
            value = 0
        elif value is None:
            raise SystemExit(f"the bundled {key}=None cannot be passed to dimfeat train")
        argv += [option, str(value)]
    return argv


def encoder_folder(work: Path, settings: dict) -> Path:
    """The ablation encoder: the weights saved after the bundled weights' epoch."""
    return work / "epochs" / f"epoch-{settings['epochs']:03d}"


def check(folder: Path, settings: dict, reference: dict) -> None:
    """Refuse ``folder`` unless it was trained with ``settings`` on the reference's data, with
    its architecture and input settings (raises ``SystemExit`` naming what differs)."""
    from dimfeat.training import TrainingConfig
    from dimfeat.weights import read_config

    config = read_config(folder)
    training = config.get("training") or {}
    recorded = {**TrainingConfig.ADDED_SETTINGS, **training.get("settings", {})}
    differ = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
    for key in ("n_train", "n_valid", "max_primitive_sites", "description"):
        want, got = reference["data"].get(key), training.get("data", {}).get(key)
        if want is not None and got != want:
            differ[f"data.{key}"] = (got, want)
    for block in ("encoder", "inputs"):
        if config.get(block) != reference[block]:
            differ[block] = (config.get(block), reference[block])
    if training.get("history", [{}])[-1].get("epoch") != settings["epochs"]:
        differ["epoch"] = (training.get("history", [{}])[-1].get("epoch"), settings["epochs"])
    if differ:
        raise SystemExit(
            f"{folder} was not trained like the bundled weights but for the false samples: "
            f"{differ} (recorded, wanted); delete its folder to retrain"
        )


def train(weights: str = DEFAULT_WEIGHTS) -> Path:
    """Train (resume, or reuse when it provably matches) the ablation encoder.

    Returns
    -------
    Path
        Its weights folder, checked by :func:`check`.
    """
    from dimfeat.cli import main as dimfeat_main

    settings, reference = recipe(weights)
    work = F.CACHE / "ablation" / f"{VARIANT}-of-{F.weights_key(weights)[:12]}"
    folder = encoder_folder(work, settings)
    if not (folder / "config.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        dimfeat_main(["train", *command(settings, reference, work)])
    check(folder, settings, reference)
    return folder


def run(weights: str = DEFAULT_WEIGHTS, draws: int | None = None) -> dict:
    """Train the ablation encoder, evaluate the three encoders and write ``ablation.json``."""
    from dimfeat.weights import read_config, resolve_weights

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
    # a capped run is a quick check: it does not replace the protocol's results
    out = RESULTS / ("ablation.json" if draws is None else f"ablation_draws{draws}.json")
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--draws", type=int, default=None, help="at most this many draws")
    args = parser.parse_args(argv)
    run(args.weights, args.draws)


if __name__ == "__main__":
    main()
