"""Write the bundled weights from a scored DIM run: the epoch chosen by train-split criteria.

Reads a run's per-epoch weights folders (``dimfeat train --save-every-epoch DIR``) and their
scores (``DIR/probe_curve.json`` from :mod:`benchmarks.release.probe_curve`), takes the epoch
that :func:`benchmarks.release.probe_curve.choose` picks (or ``--epoch``), and writes it as a
weights folder whose ``config.json`` records the whole run: the command, data, settings, the
history up to the chosen epoch, the number of epochs run, and the selection curve. The model
card is generated from that record; nothing is edited by hand
(``python -m dimfeat.weights_folder FOLDER`` rewrites the card of a folder from its
``config.json``, e.g. after the card's layout changes).

With ``--structure-run`` it bundles two runs into one two-channel folder
(:func:`bundle_two_channel`, the folder ``dimfeat combine-channels`` writes): RUN is the context
channel's run, each channel's epoch is chosen on its own curve (``--curve``, ``--structure-curve``)
or given (``--epoch``, ``--structure-epoch``), and each channel records its whole run and its
selection curve, which the model card shows channel by channel.

Usage::

    python -m benchmarks.release.bundle_weights .devcache/full/epochs weights/sitenet-dim-mp36k \
        [--epoch N] [--curve JSON] [--hardware "..."] [--data n_train=24271 ...]
    python -m benchmarks.release.bundle_weights ctx_epochs weights/sitenet-dim-mp36k \
        --structure-run str_epochs [--curve JSON] [--structure-curve JSON] \
        [--epoch N] [--structure-epoch N] [--command ...] [--structure-command ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.release import probe_curve

SELECTION = (
    "Each scored epoch's vectors on labelled mp36k train crystals only (the test split is never "
    "read): 'probe' is the mean over formation energy and band gap, LinearRegression and "
    "MLPRegressor(64), 100/250/1,000 labels, of the MAE relative to the untrained encoder "
    "(epoch 0; lower is better); 'separation' and 'ranking' are the polymorph scores on the "
    "train polymorph families (benchmarks/paper/geometry.py). The selected epoch has the best "
    "probe among the epochs that keep the geometry (both rankings not below the untrained "
    "encoder's, and, where they were scored, rock-salt vs CsCl-type NaCl and NaCl at "
    "a = 5.64 vs 8.0 A at least as far apart) and whose probe MAE is not above the untrained "
    "encoder's in any cell; when no epoch passes every cell, the best probe among those that "
    "keep the geometry; when none keeps it, the best probe."
)
SELECTION_BESIDE = (
    "This channel's epochs were scored as the two-channel vector each makes beside the context "
    "channel ({beside}), epoch 0 being the untrained encoder beside it. An epoch keeps the "
    "geometry when {floors} on the train families and the two prototype distances are not "
    "below the untrained encoder's; among those, the best probe (every cell not above the "
    "untrained encoder's where any epoch manages it)."
)


def _chosen(
    run: Path,
    epoch: int | None,
    hardware: str | None,
    data: dict | None,
    command: str | None,
    curve_path: Path | None,
) -> tuple[Path, object, dict, dict]:
    """The chosen epoch folder of ``run``, its encoder and config, and the training record of the
    whole run (command, data, history up to the epoch, epochs run, the selection curve)."""
    from dimfeat.weights import load_encoder, read_config

    record = json.loads((curve_path or run / "probe_curve.json").read_text())
    curve = record["curve"]
    floors = record.get("floors")
    name = f"epoch-{epoch:03d}" if epoch is not None else probe_curve.choose(curve, floors)
    description = SELECTION
    if record.get("beside"):
        description = SELECTION_BESIDE.format(
            beside=Path(record["beside"]).name,
            floors=" and ".join(f"{k} >= {v}" for k, v in (floors or {}).items())
            or "both rankings are not below the untrained encoder's",
        )
    if curve.get(name, {}).get("sha256") != read_config(run / name)["sha256"]:
        raise SystemExit(f"{run / name} is not the folder that was scored; rescore the run")
    encoder, config = load_encoder(run / name)
    training = dict(config["training"])
    last = max((p for p in run.glob("epoch-[0-9][0-9][0-9]")), key=lambda p: p.name)
    full_history = read_config(last)["training"]["history"]
    # A run whose later epoch folders were not kept still ran every epoch that was scored.
    scored = max(int(k[6:]) for k in curve)
    training.update(
        epochs_run=max(len(full_history), scored),
        run_history=full_history,
        selection={
            "epoch": int(name[6:]),
            "criterion": "train-split probe and polymorph scores",
            "description": description,
            "curve": {
                str(int(k[6:])): {
                    "relative_probe": v["relative_probe"],
                    **{
                        key: v["geometry"][key]
                        for key in ("separation", "ranking_ridge", "ranking_mlp")
                    },
                }
                for k, v in curve.items()
            },
        },
    )
    if hardware:
        training.setdefault("hardware", hardware)
    if command:
        training["command"] = command
    training["data"] = _merge_data(training.get("data") or {}, data or {}, run / name)
    return run / name, encoder, config, training


#: Data facts ``dimfeat train`` measured and recorded itself; ``--data`` may not change them.
MEASURED_DATA = ("files", "split", "n_train", "n_valid", "n_left_out_large", "max_primitive_sites")


def _merge_data(recorded: dict, given: dict, source: Path) -> dict:
    """The recorded data facts with the ``given`` ones added: a given ``description`` or
    ``credit`` replaces the recorded one (words for the model card), a measured fact
    (:data:`MEASURED_DATA`) that differs from the record is refused."""
    for key in MEASURED_DATA:
        if key in given and key in recorded and given[key] != recorded[key]:
            raise SystemExit(
                f"--data {key}={given[key]!r} contradicts what {source} records "
                f"({recorded[key]!r}); leave it out"
            )
    return {**recorded, **given}


def bundle(
    run: Path,
    out: Path,
    epoch: int | None = None,
    hardware: str | None = None,
    data: dict | None = None,
    command: str | None = None,
    curve_path: Path | None = None,
) -> Path:
    """Write the chosen epoch of ``run`` to ``out`` (see the module docstring).

    ``hardware`` and ``data`` fill in what a run started by an older ``dimfeat train`` did not
    record in its per-epoch folders (the machine; the training and validation counts);
    ``command`` replaces the recorded command (e.g. to drop local paths from the model card);
    ``curve_path`` is the run's scores (default ``run/probe_curve.json``).
    """
    from dimfeat.weights import InputSettings, save_pretrained

    source, encoder, config, training = _chosen(run, epoch, hardware, data, command, curve_path)
    folder = save_pretrained(
        out,
        encoder,
        inputs=InputSettings(**config["inputs"]),
        training=training,
        name=out.name,
    )
    print(f"wrote {folder} from {source}")
    return folder


#: Unlabelled mp36k train crystals whose vectors fix each channel's principal read-out.
READOUT_CRYSTALS = 5000
READOUT_SEED = 1


def readout_crystals() -> tuple[list, str]:
    """Model inputs of :data:`READOUT_CRYSTALS` mp36k train crystals (no labels are read) and
    their description."""
    from benchmarks.paper import features as F

    subset = F.mp36k_subset(
        "train", READOUT_CRYSTALS, seed=READOUT_SEED, name="readout", structures=False
    )
    return subset.inputs, subset.description


def encoder_vectors(encoder, crystals: list) -> np.ndarray:
    """The crystal vectors of one encoder for model inputs (CPU)."""
    from dimfeat.runtime import EncoderRuntime

    return EncoderRuntime(encoder.eval()).encode(crystals, batch_size=128)


def apply_readout(encoder, rank: int, crystals: tuple[list, str] | None = None) -> dict:
    """Restrict ``encoder``'s vector to its ``rank`` principal directions over the
    :func:`readout_crystals` (or ``crystals``, as that returns them), in place; the record of it
    for the training record's ``readout``."""
    from dimfeat.channels import principal_readout

    inputs, description = crystals or readout_crystals()
    record = principal_readout(encoder, encoder_vectors(encoder, inputs), rank)
    return {**record, "data": description}


def bundle_two_channel(
    context_run: Path,
    structure_run: Path,
    out: Path,
    *,
    context_epoch: int | None = None,
    structure_epoch: int | None = None,
    context_curve: Path | None = None,
    structure_curve: Path | None = None,
    hardware: str | None = None,
    data: dict | None = None,
    context_command: str | None = None,
    structure_command: str | None = None,
    structure_data: dict | None = None,
    rank: int | None = None,
) -> Path:
    """Write a two-channel folder from the chosen epochs of a context run and a structure run.

    Each channel is chosen and recorded as :func:`bundle` records a single-channel run (its
    epoch by :func:`benchmarks.release.probe_curve.choose` on its own curve, or the one given;
    its whole run's history, epochs run and selection curve under
    ``channels.<name>.source.training``), and the folder is the one ``dimfeat
    combine-channels`` writes from the two epoch folders, with the model card of both
    channels' records. ``hardware`` applies to both runs; ``data`` to the context run and
    ``structure_data`` to the structure run (default: ``data``). With ``rank``, each
    channel's vector is restricted to its ``rank`` principal directions over
    :data:`READOUT_CRYSTALS` unlabelled train crystals
    (:func:`dimfeat.channels.principal_readout`), recorded as the channel's ``readout``.
    """
    from dimfeat.channels import TwoChannelEncoder, save_weights
    from dimfeat.weights import InputSettings

    chosen = {
        "context": _chosen(
            context_run, context_epoch, hardware, data, context_command, context_curve
        ),
        "structure": _chosen(
            structure_run,
            structure_epoch,
            hardware,
            data if structure_data is None else structure_data,
            structure_command,
            structure_curve,
        ),
    }
    inputs = {c: chosen[c][2].get("inputs") or {} for c in chosen}
    if inputs["context"] != inputs["structure"]:
        raise SystemExit(f"the runs used different input settings: {inputs}")
    if rank is not None:
        crystals = readout_crystals()
        for _, encoder, _, training in chosen.values():
            training["readout"] = apply_readout(encoder, rank, crystals)
    folder = save_weights(
        out,
        TwoChannelEncoder(chosen["context"][1], chosen["structure"][1]),
        inputs=InputSettings(**inputs["context"]),
        training={c: chosen[c][3] for c in chosen},
        name=out.name,
        sources={
            c: {"folder": f"{path.parent.name}/{path.name}", "name": config.get("name")}
            for c, (path, _, config, _) in chosen.items()
        },
    )
    print(f"wrote {folder} from {chosen['context'][0]} and {chosen['structure'][0]}")
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run (with --structure-run: the context run)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--epoch", type=int, default=None)
    parser.add_argument("--hardware", default=None)
    parser.add_argument("--command", default=None, help="command to record instead")
    parser.add_argument("--curve", type=Path, default=None, help="probe_curve JSON of the run")
    parser.add_argument(
        "--data", action="append", default=[], metavar="KEY=JSON", help="data facts to record"
    )
    two = parser.add_argument_group(
        "two channels", "bundle RUN (the context channel) with a structure channel's run"
    )
    two.add_argument("--structure-run", type=Path, default=None)
    two.add_argument("--structure-epoch", type=int, default=None)
    two.add_argument("--structure-curve", type=Path, default=None)
    two.add_argument("--structure-command", default=None)
    two.add_argument(
        "--rank",
        type=int,
        default=None,
        help="restrict each channel's vector to this many principal directions over "
        f"{READOUT_CRYSTALS:,} unlabelled train crystals",
    )
    two.add_argument(
        "--structure-data",
        action="append",
        default=None,
        metavar="KEY=JSON",
        help="data facts of the structure run (default: --data)",
    )
    args = parser.parse_args(argv)
    data = _parse_data(args.data)
    if args.structure_run is None:
        bundle(args.run, args.out, args.epoch, args.hardware, data, args.command, args.curve)
        return
    bundle_two_channel(
        args.run,
        args.structure_run,
        args.out,
        context_epoch=args.epoch,
        structure_epoch=args.structure_epoch,
        context_curve=args.curve,
        structure_curve=args.structure_curve,
        hardware=args.hardware,
        data=data,
        context_command=args.command,
        structure_command=args.structure_command,
        structure_data=None if args.structure_data is None else _parse_data(args.structure_data),
        rank=args.rank,
    )


def _parse_data(items: list[str]) -> dict:
    return {k: json.loads(v) for k, v in (item.split("=", 1) for item in items)}


if __name__ == "__main__":
    main()
