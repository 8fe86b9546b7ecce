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

Two-channel weights (:mod:`dimfeat.channels`): the channel trained with synthetic false samples,
the structure channel (:data:`ABLATED_CHANNEL`), is the one ablated. Its recipe, data and
selected epoch come from ``channels.structure.source.training``, its architecture from
``channels.structure.encoder``, the input settings from the shared ``inputs``. The trained
encoder then takes the place of the structure channel beside the bundled context channel,
unchanged, in a two-channel folder written by :func:`dimfeat.channels.combine_channels` (the
code of ``dimfeat combine-channels``), and that folder is what is evaluated.

The trained encoder (and the two-channel folder) is reused only when its ``config.json``
records exactly the settings, data and epochs this would train with (and, for two channels,
the bundled context channel's sha256); otherwise it is refused (delete the folder to retrain).
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
#: The channel of two-channel weights that is trained with synthetic false samples, and ablated.
ABLATED_CHANNEL = "structure"

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
#: settings passed only when they differ from dimfeat train's default (each added to dimfeat
#: after earlier bundled weights, whose commands therefore stay as they were)
IF_NOT_DEFAULT = {
    "strain_range": "--strain-range",
    "global_trains_local": "--global-trains-local",
    "lr_decay_epochs": "--lr-decay-epochs",
    "mixed_precision": "--no-amp",
}
#: facts of the data a trained encoder must record as the reference does (when it records
#: them); the words of ``description`` only where the reference names its files by no sha256
DATA_FACTS = ("n_train", "n_valid", "max_primitive_sites", "files", "split")
#: settings dimfeat train has no option for: the ablation needs the bundled value to be these
FIXED = {"weight_decay": 0.01, "alpha": 1.0, "max_seconds": None}


def recipe(weights: str = DEFAULT_WEIGHTS) -> tuple[dict, dict]:
    """The ablation's recipe: the bundled weights' record with ``other`` as the only false sample.

    Parameters
    ----------
    weights : str
        Bundled weights name or weights folder whose ``config.json`` records its training: a
        single encoder, or two channels, of which the :data:`ABLATED_CHANNEL` is ablated.

    Returns
    -------
    settings : dict
        Every training setting (those added to dimfeat after the weights were trained take the
        value they were trained with); ``settings["epochs"]`` is the bundled weights' epoch
        (the selected one when the run went on past it).
    reference : dict
        What else must match: ``data`` (the training record's data block), ``encoder`` and
        ``inputs`` (the architecture and input settings of the bundled ``config.json``). For
        two-channel weights also ``channel`` (the ablated one) and ``beside``: the ``name``,
        ``sha256`` and ``encoder`` of the other channel, kept as it is.
    """
    from dimfeat.training import TrainingConfig

    config, block, beside = _ablated(weights)
    training = block.get("training") or {}
    if not training.get("settings") or not training.get("history"):
        raise SystemExit(f"{weights} records no training settings and history to ablate")
    selection = training.get("selection") or {}
    epochs = int(selection.get("epoch") or len(training["history"]))
    recorded = {**TrainingConfig.ADDED_SETTINGS, **training["settings"]}
    if beside is not None and list(recorded["false_samples"]) == ABLATED["false_samples"]:
        raise SystemExit(
            f"the {ABLATED_CHANNEL} channel of {weights} was trained with only 'other' false "
            "samples: there is nothing to ablate"
        )
    settings = {**recorded, **ABLATED, "epochs": epochs}
    reference = {
        "data": training.get("data", {}),
        "encoder": block["encoder"],
        "inputs": config["inputs"],
    }
    if beside is not None:
        reference["channel"] = ABLATED_CHANNEL
        reference["beside"] = beside
    return settings, reference


def _ablated(weights: str) -> tuple[dict, dict, dict | None]:
    """The weights' ``config.json``, the ``training`` record and ``encoder`` of the encoder to
    ablate, and for two channels the other channel (its name, sha256 and encoder), else None."""
    from dimfeat.channels import CHANNELS, TWO_CHANNEL_ARCHITECTURE, read_weights_config
    from dimfeat.weights import resolve_weights

    config = read_weights_config(resolve_weights(weights))
    if config.get("architecture") != TWO_CHANNEL_ARCHITECTURE:
        return config, {"training": config.get("training"), "encoder": config["encoder"]}, None
    channels = config["channels"]
    (other,) = (c for c in CHANNELS if c != ABLATED_CHANNEL)
    block = {"training": channels[ABLATED_CHANNEL]["source"].get("training"),
             "encoder": channels[ABLATED_CHANNEL]["encoder"]}  # fmt: skip
    kept = channels[other]
    beside = {"channel": other, "name": kept["source"].get("name"),
              "sha256": kept["source"]["sha256"], "encoder": kept["encoder"]}  # fmt: skip
    return config, block, beside


def command(settings: dict, reference: dict, work: Path) -> list[str]:
    """``dimfeat train`` arguments that train the ablation encoder in the folder ``work``.

    Every epoch is saved under ``work/epochs`` (:func:`encoder_folder` is the one used); the
    run's checkpoints go to ``work/checkpoints``. The arguments are parsed as ``dimfeat train``
    parses them before they are returned, so a recipe they would not reproduce is refused
    here, not after the training.

    Raises
    ------
    SystemExit
        When a setting of the recipe, or the reference's architecture, cannot be expressed by
        ``dimfeat train``.
    """
    from dimfeat.encoder import EncoderConfig

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
    defaults = EncoderConfig()
    if encoder.get("distance_input", defaults.distance_input) != defaults.distance_input:
        argv += ["--distance-input", encoder["distance_input"]]
    if list(encoder.get("postpool_hidden", defaults.postpool_hidden)) != list(
        defaults.postpool_hidden
    ):
        argv += ["--postpool-hidden", *map(str, encoder["postpool_hidden"])]
    argv += _if_not_default(settings)
    _check_command(argv, settings, encoder)
    return argv


def _if_not_default(settings: dict) -> list[str]:
    """The options of :data:`IF_NOT_DEFAULT` whose setting is not dimfeat train's default."""
    from dimfeat.training import TrainingConfig

    default = TrainingConfig().to_dict()
    argv: list[str] = []
    for key, option in IF_NOT_DEFAULT.items():
        value = settings.get(key, default[key])
        if value == default[key] or (isinstance(value, list | tuple) and
                                     list(value) == list(default[key])):  # fmt: skip
            continue
        if isinstance(value, bool):  # a flag that switches the default off (--no-amp) or on
            argv.append(option)
        elif isinstance(value, list | tuple):
            argv += [option, *map(str, value)]
        else:
            argv += [option, str(value)]
    return argv


def _check_command(argv: list[str], settings: dict, encoder: dict) -> None:
    """Refuse ``argv`` unless ``dimfeat train`` parses it into exactly ``settings`` and builds
    an encoder of the architecture ``encoder``."""
    from dimfeat.cli import build_parser
    from dimfeat.encoder import EncoderConfig
    from dimfeat.training_config import config_from_args

    args = build_parser().parse_args(["train", *argv])
    trained = json.loads(json.dumps(config_from_args(args).to_dict()))
    differ = {k: (trained.get(k), v) for k, v in settings.items() if trained.get(k) != v}
    built = EncoderConfig(
        distance_expansion=args.distance_expansion,
        distance_input=args.distance_input,
        postpool_hidden=tuple(args.postpool_hidden or EncoderConfig.postpool_hidden),
        global_dim=args.global_dim,
    ).to_dict()
    differ.update({f"encoder.{k}": (built.get(k), v) for k, v in encoder.items()
                   if built.get(k) != v})  # fmt: skip
    if differ:
        raise SystemExit(
            f"dimfeat train cannot reproduce the bundled recipe: {differ} (what the command "
            "would train, wanted)"
        )


def encoder_folder(work: Path, settings: dict, reference: dict | None = None) -> Path:
    """The ablation encoder: the weights saved after the bundled weights' epoch, or for
    two-channel weights (``reference`` with a ``channel``), the two-channel folder that puts
    them beside the bundled weights' other channel."""
    if reference is not None and reference.get("channel"):
        return work / "two-channel"
    return work / "epochs" / f"epoch-{settings['epochs']:03d}"


def check(folder: Path, settings: dict, reference: dict) -> None:
    """Refuse ``folder`` unless it was trained with ``settings`` on the reference's data, with
    its architecture and input settings (raises ``SystemExit`` naming what differs).

    ``folder`` is a single encoder, or for a two-channel reference either the trained encoder
    or the two-channel folder; a two-channel folder must hold the trained encoder as the
    reference's ``channel`` and the bundled weights' other channel (the same sha256) beside it.
    """
    from dimfeat.channels import TWO_CHANNEL_ARCHITECTURE, read_weights_config
    from dimfeat.training import TrainingConfig

    config = read_weights_config(folder)
    differ: dict = {}
    if config.get("architecture") == TWO_CHANNEL_ARCHITECTURE:
        channel, beside = reference.get("channel"), reference.get("beside")
        if channel is None:
            raise SystemExit(
                f"{folder} holds two channels; the ablation of single-channel weights is one "
                "encoder: delete its folder to retrain"
            )
        kept = config["channels"][beside["channel"]]
        for key, got in (("sha256", kept["source"]["sha256"]), ("encoder", kept["encoder"])):
            if got != beside[key]:
                differ[f"{beside['channel']}.{key}"] = (got, beside[key])
        block = config["channels"][channel]
        training, encoder = block["source"].get("training") or {}, block["encoder"]
    else:
        training, encoder = config.get("training") or {}, config.get("encoder")
    recorded = {**TrainingConfig.ADDED_SETTINGS, **training.get("settings", {})}
    differ.update({k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v})
    data = reference["data"]
    keys = DATA_FACTS if "files" in data else (*DATA_FACTS, "description")
    for key in keys:
        want, got = data.get(key), training.get("data", {}).get(key)
        if want is not None and got != want:
            differ[f"data.{key}"] = (got, want)
    if encoder != reference["encoder"]:
        differ["encoder"] = (encoder, reference["encoder"])
    if config.get("inputs") != reference["inputs"]:
        differ["inputs"] = (config.get("inputs"), reference["inputs"])
    if training.get("history", [{}])[-1].get("epoch") != settings["epochs"]:
        differ["epoch"] = (training.get("history", [{}])[-1].get("epoch"), settings["epochs"])
    if differ:
        raise SystemExit(
            f"{folder} was not trained like the bundled weights but for the false samples: "
            f"{differ} (recorded, wanted); delete its folder to retrain"
        )


def combine(weights: str, trained: Path, folder: Path) -> Path:
    """Write the two-channel ablation folder: ``trained`` as the ablated channel beside the
    other channel of the two-channel ``weights``, unchanged.

    The other channel is first written as the single-channel folder it was bundled from
    (``folder.parent / <channel>``; refused unless its sha256 is the one the bundle records),
    then :func:`dimfeat.channels.combine_channels` verifies both and writes ``folder``.
    """
    from dimfeat.channels import combine_channels, load_weights
    from dimfeat.weights import resolve_weights, save_pretrained

    encoder, config = load_weights(resolve_weights(weights))
    _, _, beside = _ablated(weights)
    other = beside["channel"]
    source = config["channels"][other]["source"]
    kept = save_pretrained(
        folder.parent / other,
        getattr(encoder, other),
        inputs=config["inputs"],
        training=source.get("training"),
        name=source.get("name") or other,
    )
    written = read_json(kept / "config.json")["sha256"]
    if written != source["sha256"]:
        raise SystemExit(
            f"the {other} channel of {weights} written alone has sha256 {written}, not the "
            f"{source['sha256']} its bundle records; it cannot be put beside the ablation"
        )
    readout = (config["channels"][ABLATED_CHANNEL]["source"].get("training") or {}).get("readout")
    if readout:
        trained = _with_readout(trained, readout["rank"], folder.parent / "ablated-readout")
    channels = {other: kept, ABLATED_CHANNEL: trained}
    return combine_channels(
        channels["context"], channels["structure"], folder, name=f"ablation-{VARIANT}"
    )


def _with_readout(trained: Path, rank: int, out: Path) -> Path:
    """``trained`` with the principal read-out the bundled channel got (same rank, same
    unlabelled crystals: :func:`benchmarks.release.bundle_weights.readout_crystals`), written
    to ``out``, so that the ablation differs from the bundled channel in its false samples
    only."""
    from benchmarks.release import bundle_weights
    from dimfeat.weights import load_encoder, save_pretrained

    encoder, config = load_encoder(trained)
    readout = bundle_weights.apply_readout(encoder, rank)
    training = {**(config.get("training") or {}), "readout": readout}
    return save_pretrained(
        out, encoder, inputs=config["inputs"], training=training, name=config.get("name")
    )


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def train(weights: str = DEFAULT_WEIGHTS) -> Path:
    """Train (resume, or reuse when it provably matches) the ablation encoder.

    For two-channel weights the trained encoder is combined (:func:`combine`) with the bundled
    weights' other channel.

    Returns
    -------
    Path
        Its weights folder (for two channels, the two-channel folder), checked by
        :func:`check`.
    """
    from dimfeat.cli import main as dimfeat_main

    settings, reference = recipe(weights)
    work = F.CACHE / "ablation" / f"{VARIANT}-of-{F.weights_key(weights)[:12]}"
    trained = encoder_folder(work, settings)
    if not (trained / "config.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        dimfeat_main(["train", *command(settings, reference, work)])
    check(trained, settings, reference)
    folder = encoder_folder(work, settings, reference)
    if folder != trained:
        if not (folder / "config.json").is_file():
            combine(weights, trained, folder)
        check(folder, settings, reference)
    return folder


def pretraining_record(weights: str) -> dict:
    """How the ablated encoder of ``weights`` was trained (the :data:`ABLATED_CHANNEL` of
    two-channel weights): epochs, data, settings, hardware, seconds, validation loss."""
    _, block, beside = _ablated(weights)
    training = block["training"]
    history = training["history"]
    epoch = (training.get("selection") or {}).get("epoch") or len(history)
    record = next(h for h in history if h["epoch"] == epoch)
    out = {
        "epochs": epoch,
        "data": training["data"],
        "settings": training["settings"],
        "hardware": training.get("hardware"),
        "seconds": round(sum(h["seconds"] for h in history if h["epoch"] <= epoch), 1),
        "valid_loss": record.get("valid_loss"),
    }
    if beside is not None:
        out["channel"] = ABLATED_CHANNEL
        out["beside"] = {k: beside[k] for k in ("channel", "name", "sha256")}
    return out


def run(weights: str = DEFAULT_WEIGHTS, draws: int | None = None) -> dict:
    """Train the ablation encoder, evaluate the three encoders and write ``ablation.json``."""
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
    pretraining = {"dim": pretraining_record(weights), VARIANT: pretraining_record(str(folder))}
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
