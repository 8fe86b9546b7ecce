"""Command line: ``dimfeat train`` and ``dimfeat featurize``.

``dimfeat train`` reads structures from a CGCNN-layout folder or tarball, a Matbench task or a
file of structures, builds model inputs (optionally cached in an ``.npz`` file, which is all a
GPU machine then needs), trains the encoder with Deep InfoMax and writes a weights folder
(``model.safetensors``, ``config.json``, model card) that ``DeepInfoMaxFeaturizer(weights=...)``
loads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _load_structures(args) -> tuple[list, list[str], dict]:
    """Structures, their ids and a description of where they came from."""
    from dimfeat import datasets

    if args.matbench:
        df = datasets.load_matbench(args.matbench, data_home=args.data)
        ids = [str(i) for i in df.index]
        return list(df["structure"]), ids, {"description": f"Matbench task {args.matbench}"}
    if args.data is None:
        raise SystemExit("give --data (CGCNN folder/tarball or structures file) or --matbench")
    path = Path(args.data)
    ids_wanted = None
    description = f"{path.name}"
    if args.split:
        ids_wanted = datasets.load_split(args.split)[args.part]
        description += f", '{args.part}' part of {Path(args.split).name}"
    if path.suffix in {".json", ".gz"} and not path.name.endswith(".tar.gz"):
        df = datasets.load_structures_file(path)
        if ids_wanted is not None:
            df = df.set_index("material_id", drop=False)
            missing = [i for i in ids_wanted if i not in df.index]
            if missing:
                raise SystemExit(
                    f"{len(missing)} ids of {args.split} are not in {path}, e.g. {missing[:5]}"
                )
            df = df.loc[ids_wanted].reset_index(drop=True)
    else:
        df = datasets.load_cgcnn(path, ids=ids_wanted, progress=True)
    return list(df["structure"]), [str(i) for i in df["material_id"]], {"description": description}


def _file_stamp(path: Path) -> list:
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _data_identity(args) -> dict | None:
    """What identifies the structures ``--data``/``--matbench``/``--split`` select, or ``None``
    when the data are not on this machine (then only a cache can stand in for them).

    Files are identified by name, size and modification time (a folder by those of every file
    in it), and a split file by its sha256, so that nothing large is read.
    """
    import hashlib

    if args.matbench:
        folder = Path(args.data) if args.data else None
        from dimfeat.datasets import _matminer_file

        try:
            source = _matminer_file(args.matbench, folder)
        except (FileNotFoundError, KeyError):
            return None
    elif args.data:
        source = Path(args.data)
    else:
        return None
    if not source.exists():
        return None
    if source.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in source.iterdir() if p.is_file()):
            digest.update(json.dumps(_file_stamp(file)).encode())
        stamp: list = [source.name, "folder", digest.hexdigest()]
    else:
        stamp = _file_stamp(source)
    identity: dict = {"matbench": args.matbench, "source": stamp}
    if args.split:
        from dimfeat.weights import sha256_of

        identity["split"] = [sha256_of(Path(args.split)), args.part]
    return identity


def _cache_key(args) -> dict:
    """What determines the cached inputs: the data, ``--max-atoms``, ``--symprec``, dimfeat."""
    from dimfeat._version import __version__

    return {
        "dimfeat_version": __version__,
        "max_atoms": args.max_atoms,
        "symprec": args.symprec,
        "data": _data_identity(args),
    }


def _check_cache(cache: str, extra: dict, key: dict) -> str:
    """Refuse a cache built from other data or settings; return what it was built from."""
    if "cache_key" not in extra:
        raise SystemExit(
            f"{cache} does not record what it was built from (written by an older dimfeat, or "
            "not by dimfeat train): delete it to rebuild it, or pass another --cache"
        )
    try:
        recorded = json.loads(str(extra["cache_key"]))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{cache} has a damaged record of what built it: delete it") from exc
    compared = ["dimfeat_version", "max_atoms", "symprec"]
    if key["data"] is not None:  # the data are here: the cache must have been built from them
        compared.append("data")
    changed = [k for k in compared if recorded.get(k) != key[k]]
    if changed:
        raise SystemExit(
            f"{cache} was built from other data or settings ({', '.join(changed)}: cached "
            f"{[recorded.get(k) for k in changed]}, now {[key[k] for k in changed]}); delete it "
            "to rebuild it, or pass another --cache"
        )
    return json.dumps(recorded.get("data"))


def _build_inputs(structures, args) -> list:
    from dimfeat.inputs import build_many

    return build_many(
        structures, max_atoms=args.max_atoms, symprec=args.symprec, n_jobs=args.n_jobs
    )[0]


def _train(args) -> None:
    """Single process, or one rank of ``torchrun --nproc_per_node=N dimfeat train ...``."""
    from dimfeat import distributed

    if not distributed.launched_by_torchrun():
        _train_process(args, None)
        return
    device = distributed.init_from_env(args.device)
    try:
        _train_process(args, device)
    finally:
        import torch.distributed

        torch.distributed.destroy_process_group()


def _train_process(args, ddp_device) -> None:
    from dimfeat.distributed import barrier, is_main_process
    from dimfeat.encoder import EncoderConfig, SiteNetEncoder
    from dimfeat.inputs import load_inputs, save_inputs
    from dimfeat.training import (
        DIMTrainer,
        SaveEveryEpoch,
        TrainingConfig,
        resolve_device,
        split_validation,
    )
    from dimfeat.weights import InputSettings, load_encoder, resolve_weights, save_pretrained

    start = time.perf_counter()
    main = is_main_process()  # under torchrun only rank 0 prints and writes files
    say = print if main else _quiet
    data: dict = {}
    cached = bool(args.cache) and Path(args.cache).is_file()
    key = _cache_key(args)
    barrier()  # every rank has looked for the cache before rank 0 may write it
    if cached:
        crystals, extra = load_inputs(args.cache)
        built_from = _check_cache(args.cache, extra, key)
        ids = [str(i) for i in extra.get("material_id", np.arange(len(crystals)))]
        data = json.loads(str(extra["data_json"])) if "data_json" in extra else {}
        say(f"loaded {len(crystals)} cached inputs from {args.cache} (built from {built_from})")
    else:
        structures, ids, data = _load_structures(args)
        crystals = _build_inputs(structures, args)
        if args.cache and main:
            save_inputs(
                args.cache,
                crystals,
                material_id=np.array(ids),
                data_json=np.array(json.dumps(data)),
                cache_key=np.array(json.dumps(key)),
            )
    keep = [i for i, c in enumerate(crystals) if c.n_sites <= args.max_primitive_sites]
    dropped = len(crystals) - len(keep)
    crystals = [crystals[i] for i in keep]
    say(
        f"{len(crystals)} structures with <= {args.max_primitive_sites} atoms in the primitive "
        f"cell ({dropped} larger ones left out)"
    )

    config = TrainingConfig(
        epochs=args.epochs,
        lr=args.lr,
        site_budget=args.site_budget,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        false_samples=tuple(args.false_samples.split(",")),
        beta=args.beta,
        local_pairs=args.local_pairs or None,
        global_sites=args.global_sites or None,
        local_constituent=args.local_constituent,
        seed=args.seed,
        mixed_precision=not args.no_amp,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
    )
    device = ddp_device if ddp_device is not None else resolve_device(args.device)
    import torch

    if args.weights:
        encoder, _ = load_encoder(resolve_weights(args.weights))
    else:
        torch.manual_seed(args.seed)
        encoder = SiteNetEncoder(
            EncoderConfig(global_dim=args.global_dim, distance_expansion=args.distance_expansion)
        )
    train_idx, valid_idx = split_validation(len(crystals), config.validation_fraction, args.seed)
    inputs = InputSettings(max_atoms=args.max_atoms, symprec=args.symprec)
    data.update(
        {
            "n_train": len(train_idx),
            "n_valid": len(valid_idx),
            "n_left_out_large": dropped,
            "max_primitive_sites": args.max_primitive_sites,
        }
    )
    callbacks = []
    if args.save_every_epoch:
        command = "dimfeat " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        record = {
            "command": command,
            "data": data,
            "hardware": _hardware(device),
            "torch_version": torch.__version__,
        }
        callbacks.append(SaveEveryEpoch(args.save_every_epoch, inputs, record))
    trainer = DIMTrainer(
        encoder,
        config,
        device,
        checkpoint_dir=args.checkpoint_dir,
        progress=not args.quiet and main,
        callbacks=callbacks,
    )
    history = trainer.fit([crystals[i] for i in train_idx], [crystals[i] for i in valid_idx])
    for record in history:
        valid = {k: record.get(f"valid_{k}", float("nan")) for k in ("local_dim", "global_dim")}
        say(
            f"epoch {record['epoch']:3d}  valid DIM local {valid['local_dim']:.4f} "
            f"global {valid['global_dim']:.4f}  {record['seconds']:.1f}s"
            + ("  *" if record["best"] else "")
        )
    if not main:
        return
    if ddp_device is not None:
        data["world_size"] = int(os.environ["WORLD_SIZE"])
    training = {
        "command": "dimfeat " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "data": data,
        "settings": config.to_dict(),
        "start_weights": args.weights,
        "hardware": _hardware(device),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "torch_version": torch.__version__,
        "history": history,
    }
    folder = save_pretrained(
        args.output,
        encoder,
        inputs=inputs,
        training=training,
        name=args.name or Path(args.output).name,
    )
    print(f"wrote {folder}")


def _quiet(*args, **kwargs) -> None:
    """``print`` on the ranks other than 0."""


def _featurize_streaming(args) -> None:
    from dimfeat.featurizer import DeepInfoMaxFeaturizer
    from dimfeat.streaming import featurize_to_file

    if args.split:
        raise SystemExit("--split is not supported with --chunk-size; featurise the whole source")
    if args.matbench:
        source = args.matbench
        if args.data:
            source = str(Path(args.data) / f"{args.matbench}.json.gz")
    elif args.data:
        source = args.data
    else:
        raise SystemExit("give --data (CGCNN folder/tarball, folder of CIFs) or --matbench")
    featurizer = DeepInfoMaxFeaturizer(
        weights=args.weights, device=args.device, n_jobs=args.n_jobs, disorder=args.disorder
    )
    summary = featurize_to_file(
        source,
        args.output,
        featurizer,
        chunk_size=args.chunk_size or 1000,
        resume=args.resume,
        progress=not args.quiet,
        ignore_errors=args.ignore_errors,
    )
    print(
        f"wrote {summary.n_rows} vectors to {summary.output} ({summary.n_chunks} chunks, "
        f"{summary.n_skipped_chunks} already done, {summary.n_errors} errors)"
    )


def _featurize(args) -> None:
    from dimfeat.featurizer import DeepInfoMaxFeaturizer

    if args.chunk_size is not None or Path(args.output).suffix.lower() not in {".parquet", ".csv"}:
        _featurize_streaming(args)
        return
    structures, ids, _ = _load_structures(args)
    featurizer = DeepInfoMaxFeaturizer(
        weights=args.weights,
        device=args.device,
        n_jobs=args.n_jobs,
        disorder=args.disorder,
        verbose=not args.quiet,
    )
    rows = featurizer.featurize_many(structures, ignore_errors=args.ignore_errors)
    import pandas as pd

    frame = pd.DataFrame(rows, columns=featurizer.feature_labels(), index=pd.Index(ids, name="id"))
    out = Path(args.output)
    if out.suffix == ".parquet":
        frame.to_parquet(out)
    else:
        frame.to_csv(out)
    print(f"wrote {len(frame)} vectors to {out}")


def _parser() -> argparse.ArgumentParser:
    from dimfeat.encoder import DISTANCE_EXPANSIONS
    from dimfeat.infomax import (
        DEFAULT_BETA,
        DEFAULT_GLOBAL_SITES,
        DEFAULT_LOCAL_CONSTITUENT,
        DEFAULT_LOCAL_PAIRS,
        FALSE_SAMPLE_KINDS,
    )

    parser = argparse.ArgumentParser(prog="dimfeat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p):
        p.add_argument(
            "--data", help="CGCNN folder or .tar.gz, structures file, or Matbench data home"
        )
        p.add_argument("--split", help="split.json restricting the structures to one part")
        p.add_argument("--part", default="train", help="part of --split to use (default train)")
        p.add_argument("--matbench", help="Matbench task name, e.g. matbench_phonons")
        p.add_argument("--n-jobs", type=int, default=-1, help="processes for input building")
        p.add_argument("--device", default="auto")
        p.add_argument("--quiet", action="store_true")

    train = sub.add_parser("train", help="train a DIM encoder and write a weights folder")
    train.add_argument("output", help="weights folder to write")
    data_options(train)
    train.add_argument(
        "--cache",
        help=".npz of model inputs: read if present (refused if built from other data, "
        "--max-atoms or --symprec), else written",
    )
    train.add_argument("--weights", help="start from these weights (default: random)")
    train.add_argument("--name", help="name in the model card (default: folder name)")
    train.add_argument("--epochs", type=int, default=50)
    train.add_argument("--lr", type=float, default=8.12e-4)
    train.add_argument("--site-budget", type=int, default=1200)
    train.add_argument("--validation-fraction", type=float, default=0.05)
    train.add_argument("--patience", type=int, default=10)
    train.add_argument(
        "--false-samples",
        default=",".join(FALSE_SAMPLE_KINDS),
        help="comma-separated kinds of false sample",
    )
    train.add_argument("--beta", type=float, default=DEFAULT_BETA, help="weight of the KL terms")
    train.add_argument(
        "--local-pairs",
        type=int,
        default=DEFAULT_LOCAL_PAIRS,
        help="pairs scored per environment in the local loss, drawn by weight (0: all pairs)",
    )
    train.add_argument(
        "--global-sites",
        type=int,
        default=DEFAULT_GLOBAL_SITES,
        help="sites kept per synthetic false crystal in the global loss (0: all sites)",
    )
    train.add_argument(
        "--distance-expansion",
        choices=list(DISTANCE_EXPANSIONS),
        default="gaussian",
        help="distance input of a random encoder: Gaussian basis or the paper's linear input",
    )
    train.add_argument(
        "--local-constituent",
        choices=["neighbour", "bond"],
        default=DEFAULT_LOCAL_CONSTITUENT,
        help="local DIM constituents: [f_j, d_ij] (neighbour) or [f_i, f_j, d_ij] (bond)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--global-dim", type=int, default=128)
    train.add_argument("--max-atoms", type=int, default=50, help="supercell size limit")
    train.add_argument("--symprec", type=float, default=0.01)
    train.add_argument(
        "--max-primitive-sites",
        type=int,
        default=50,
        help="leave out crystals with more atoms in the primitive cell",
    )
    train.add_argument(
        "--max-minutes", type=float, help="stop after the epoch that passes this time budget"
    )
    train.add_argument("--checkpoint-dir", help="per-epoch checkpoints; resume from them")
    train.add_argument(
        "--save-every-epoch",
        metavar="DIR",
        help="also write each epoch's encoder as a weights folder DIR/epoch-NNN",
    )
    train.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    train.set_defaults(func=_train)

    feat = sub.add_parser("featurize", help="structures in, vectors out (parquet or CSV)")
    feat.add_argument(
        "output",
        help="output: a .parquet or .csv file, or a folder for streamed parquet parts "
        "(a .csv is appended chunk by chunk when --chunk-size is given)",
    )
    data_options(feat)
    feat.add_argument("--weights", default=None, help="weights (default: bundled)")
    feat.add_argument("--ignore-errors", action="store_true", help="NaN rows for bad structures")
    feat.add_argument(
        "--chunk-size",
        type=int,
        help="stream: read, featurise and write this many structures at a time (default 1000 "
        "when the output is a folder); memory stays flat however large the input",
    )
    feat.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="when streaming, skip the chunks an earlier run finished (default: on)",
    )
    feat.add_argument(
        "--disorder",
        choices=["error", "majority"],
        default="error",
        help="partial occupancies: fail, or keep each site's majority species",
    )
    feat.set_defaults(func=_featurize)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dimfeat`` command."""
    args = _parser().parse_args(argv)
    if args.command == "featurize" and args.weights is None:
        from dimfeat.weights import DEFAULT_WEIGHTS

        args.weights = DEFAULT_WEIGHTS
    args.func(args)


if __name__ == "__main__":
    main()
