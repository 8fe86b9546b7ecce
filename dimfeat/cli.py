"""Command line: ``dimfeat featurize`` and ``dimfeat train``.

``dimfeat featurize INPUT... -o OUT`` reads structures from folders, tarballs, structure files or
a Matbench task and writes one vector per structure; every input kind and output format goes
through :func:`dimfeat.streaming.featurize_to_file` (see ``FEATURIZE_DESCRIPTION``).

``dimfeat train`` reads structures from a CGCNN-layout folder or tarball, a Matbench task or a
file of structures, builds model inputs (optionally cached in an ``.npz`` file, which is all a
GPU machine then needs), trains the encoder with Deep InfoMax and writes a weights folder
(``model.safetensors``, ``config.json``, model card) that ``DeepInfoMaxFeaturizer(weights=...)``
loads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dimfeat.training import TrainingConfig

__all__ = ["main"]


_TRAIN_DESCRIPTION = """Train a Site-Net encoder with Deep InfoMax on unlabelled structures
(INPUT...: what dimfeat featurize reads, a CGCNN folder or tarball, a folder or tarball of
CIF/POSCAR files, a .json/.json.gz file of structures or CIF/POSCAR files; or --matbench TASK)
and write a weights folder OUT (model.safetensors, config.json, model card) that
``DeepInfoMaxFeaturizer(weights=...)`` and ``dimfeat featurize --weights`` load."""


def _hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _load_structures(args) -> tuple[list, list[str], dict]:
    """Structures, their ids and a description of where they came from.

    ``--data`` is any layout :func:`dimfeat.datasets.load_structures` reads (a CGCNN or plain
    folder, a tarball, a .json/.json.gz file, CIF/POSCAR files), the same as ``dimfeat
    featurize`` INPUTs.
    """
    from dimfeat import datasets

    if getattr(args, "inputs", None) is not None:  # dimfeat train INPUT... -o OUT
        return _train_structures(args)
    if args.matbench:
        df = datasets.task_frame(args.matbench, data_home=args.data)
        ids = [str(i) for i in df["material_id"]]  # Matbench's own ids, as --matbench featurize
        return list(df["structure"]), ids, {"description": f"Matbench task {args.matbench}"}
    if args.data is None:
        raise SystemExit(
            "give --data (a folder or tarball of structures, or a structures file) or --matbench"
        )
    path = Path(args.data)
    ids_wanted = None
    description = f"{path.name}"
    if args.split:
        ids_wanted = datasets.load_split(args.split)[args.part]
        description += f", '{args.part}' part of {Path(args.split).name}"
    df = datasets.load_structures(path, ids=ids_wanted, progress=True)
    return list(df["structure"]), [str(i) for i in df["material_id"]], {"description": description}


def _train_structures(args) -> tuple[list, list[str], dict]:
    """Structures of ``dimfeat train INPUT...``, read as ``dimfeat featurize`` reads them."""
    from dimfeat.datasets import load_structures

    source = _featurize_source(list(args.inputs), args)
    names = [args.matbench] if args.matbench else list(args.inputs)
    description = ", ".join(Path(name).name for name in names)
    if args.split:
        description += f", '{args.part}' part of {Path(args.split).name}"
    if isinstance(source, str):  # one folder, tarball or .json file
        df = load_structures(Path(source), progress=True)
        return (
            list(df["structure"]),
            [str(i) for i in df["material_id"]],
            {"description": description},
        )
    return list(source), [str(i) for i in source.index], {"description": description}


def _train_inputs(args) -> None:
    """``dimfeat train INPUT... -o OUT``, accepting the older ``dimfeat train OUT --data DATA``.

    Sets ``args.inputs`` (the sources) and ``args.output``.
    """
    _check_options_after_double_dash(args)
    inputs = list(args.inputs)
    data = list(args.data or [])
    if args.matbench and data and args.data_home is None:
        args.data_home = data.pop(0)  # the older --matbench TASK --data HOME
    if args.output is None:
        if len(inputs) == 1 and (data or args.matbench):
            args.output = inputs.pop(0)  # the older form: OUT --data DATA
        else:
            raise SystemExit(
                "give the structures to train on and the weights folder to write: "
                "dimfeat train INPUT... -o OUT"
            )
    args.inputs = inputs + data


def _file_stamp(path: Path) -> list:
    """A file's name, size and sha256: its content, not where or when it was copied."""
    from dimfeat.weights import sha256_of

    return [path.name, path.stat().st_size, sha256_of(path)]


def _data_identity(args) -> dict | None:
    """What identifies the structures ``--data``/``--matbench``/``--split`` select, or ``None``
    when the data are not on this machine (then only a cache can stand in for them).

    Files are identified by name, size and sha256 of their content (a folder by those of every
    file in it), so a copy of the same data still matches its cache while an edit that keeps
    the size and the modification time does not. Hashing reads the data once, far faster
    than building their inputs.
    """
    import hashlib

    from dimfeat.datasets import matminer_file

    home = getattr(args, "data_home", None)
    if args.matbench:
        names = [args.matbench]
    elif getattr(args, "inputs", None):
        names = list(args.inputs)
    elif args.data:
        names = [args.data]
    else:
        return None
    sources = []
    for name in names:
        if not args.matbench and Path(name).exists():
            sources.append(Path(name))
            continue
        try:  # a Matbench task: its file in the data home
            sources.append(matminer_file(name, Path(home) if home else None))
        except (FileNotFoundError, KeyError, ValueError):
            return None  # not on this machine: only a cache can stand in
    if not all(source.exists() for source in sources):
        return None
    stamps = []
    for source in sources:
        if source.is_dir():
            digest = hashlib.sha256()
            for file in sorted(p for p in source.iterdir() if p.is_file()):
                digest.update(json.dumps(_file_stamp(file)).encode())
            stamps.append([source.name, "folder", digest.hexdigest()])
        else:
            stamps.append(_file_stamp(source))
    # one source is recorded as one stamp, not a list of one
    identity: dict = {
        "matbench": args.matbench,
        "source": stamps[0] if len(stamps) == 1 else stamps,
        "stamp": "sha256",  # older versions stamped files by modification time
    }
    if args.split:
        from dimfeat.weights import sha256_of

        identity["split"] = [sha256_of(Path(args.split)), args.part]
    return identity


def _data_files(identity: dict | None, args) -> dict:
    """The files of a data identity (:func:`_data_identity`) as the model card lists them."""
    if not identity:
        return {}
    stamps = identity["source"]
    if stamps and not isinstance(stamps[0], list):  # one source is one stamp
        stamps = [stamps]
    files = [
        {"name": name, "folder": True, "sha256": digest}
        if size == "folder"
        else {"name": name, "bytes": size, "sha256": digest}
        for name, size, digest in stamps
    ]
    out: dict = {"files": files}
    if identity.get("split"):
        digest, part = identity["split"]
        out["split"] = {"name": Path(args.split).name, "sha256": digest, "part": part}
    return out


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
    cached_data = recorded.get("data")
    if "data" in changed and cached_data is not None and "stamp" not in cached_data:
        raise SystemExit(
            f"{cache} was written by an older dimfeat that identified the data by modification "
            "time, not content: delete it to rebuild it, or pass another --cache"
        )
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

    _train_inputs(args)
    if not distributed.launched_by_torchrun():
        _train_process(args, None)
        return
    device = distributed.init_from_env(args.device)
    try:
        _train_process(args, device)
    finally:
        import torch.distributed

        torch.distributed.destroy_process_group()


def _command_line(args: argparse.Namespace) -> str:
    """The ``dimfeat`` command line that was parsed into ``args`` (shell-quoted)."""
    return "dimfeat " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))


def _training_config(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`~dimfeat.training.TrainingConfig` of parsed ``dimfeat train`` arguments."""
    from dimfeat.training import TrainingConfig

    return TrainingConfig(
        epochs=args.epochs,
        lr=args.lr,
        lr_decay_epochs=args.lr_decay_epochs,
        site_budget=args.site_budget,
        validation_fraction=args.validation_fraction,
        patience=args.patience,
        false_samples=tuple(args.false_samples.split(",")),
        local_false_samples=(
            None if args.local_false_samples is None else tuple(args.local_false_samples.split(","))
        ),
        beta=args.beta,
        local_pairs=args.local_pairs or None,
        global_sites=args.global_sites or None,
        composition_weight=args.composition_weight,
        critic=args.critic,
        synthetic_weight=args.synthetic_weight,
        strain_range=tuple(args.strain_range),
        global_trains_local=args.global_trains_local,
        local_constituent=args.local_constituent,
        seed=args.seed,
        mixed_precision=not args.no_amp,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
    )


def _train_process(args, ddp_device) -> None:
    from dimfeat.distributed import barrier, is_main_process
    from dimfeat.encoder import EncoderConfig
    from dimfeat.inputs import load_inputs, save_inputs
    from dimfeat.record import TrainingRecord
    from dimfeat.runtime import EncoderRuntime
    from dimfeat.training import (
        SaveEveryEpoch,
        resolve_device,
        split_validation,
        train_dim,
    )
    from dimfeat.weights import save_pretrained

    # settings first: a bad one is refused before any structure is read
    config = _training_config(args)
    if args.weights and args.postpool_hidden is not None:
        raise SystemExit(
            "--postpool-hidden sets the architecture of a random encoder; --weights brings its "
            "own: give one or the other"
        )
    encoder_config = EncoderConfig(
        distance_expansion=args.distance_expansion,
        postpool_hidden=tuple(args.postpool_hidden or EncoderConfig.postpool_hidden),
    )
    start = time.perf_counter()
    main = is_main_process()  # under torchrun only rank 0 prints and writes files
    say = print if main else _quiet
    data: dict = {}
    cached = bool(args.cache) and Path(args.cache).is_file()
    key = _cache_key(args) if args.cache else None  # hashing the data is only for the cache
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
    if "files" not in data:  # what was read, by content: named in the model card
        identity = key["data"] if key else _data_identity(args)
        if identity is None and cached:  # the data are not here: what the cache was built from
            identity = json.loads(built_from)
        data.update(_data_files(identity, args))
    keep = [i for i, c in enumerate(crystals) if c.n_sites <= args.max_primitive_sites]
    dropped = len(crystals) - len(keep)
    crystals = [crystals[i] for i in keep]
    say(
        f"{len(crystals)} structures with <= {args.max_primitive_sites} atoms in the primitive "
        f"cell ({dropped} larger ones left out)"
    )

    device = ddp_device if ddp_device is not None else resolve_device(args.device)
    import torch

    runtime = EncoderRuntime.create(
        args.weights or None,
        seed=args.seed,
        encoder_config=encoder_config,
        global_dim=None if args.weights else args.global_dim,
        max_atoms=args.max_atoms,
        symprec=args.symprec,
    )
    encoder, inputs = runtime.encoder, runtime.inputs
    train_idx, valid_idx = split_validation(len(crystals), config.validation_fraction, config.seed)
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
        command = _command_line(args)
        record = {
            "command": command,
            "data": data,
            "hardware": _hardware(device),
            "torch_version": torch.__version__,
        }
        callbacks.append(SaveEveryEpoch(args.save_every_epoch, inputs, record))
    history, _ = train_dim(
        encoder,
        crystals,
        config,
        device,
        checkpoint_dir=args.checkpoint_dir,
        progress=not args.quiet and main,
        callbacks=callbacks,
    )
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
    training = TrainingRecord(
        command=_command_line(args),
        data=data,
        settings=config.to_dict(),
        start_weights=args.weights,
        hardware=_hardware(device),
        wall_time_s=round(time.perf_counter() - start, 1),
        torch_version=torch.__version__,
        history=history,
    )
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


#: Output formats of ``dimfeat featurize`` and the file extension that selects each.
FORMATS = {"parquet": ".parquet", "csv": ".csv", "npy": ".npy", "parts": ""}
#: The environment variable that makes ``dimfeat`` show Python tracebacks (as ``--debug``).
DEBUG_ENV = "DIMFEAT_DEBUG"


def _plain(text: str) -> str:
    """Help text without reStructuredText markup: double backquotes and roles (:func: etc.)."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _featurize_inputs(args) -> tuple[list[str], str]:
    """The INPUTs and the output of ``dimfeat featurize``, accepting the older form.

    ``dimfeat featurize OUTPUT --data INPUT`` (before INPUT... -o OUTPUT) still works, with a
    note on stderr.
    """
    _check_options_after_double_dash(args)
    inputs = list(args.inputs)
    data = list(args.data or [])
    if args.matbench and data and args.data_home is None:
        args.data_home = data.pop(0)  # the older --matbench TASK --data HOME
    output = args.output
    if output is None:
        if (data or args.matbench) and len(inputs) == 1:
            output = inputs.pop(0)
            print(
                "dimfeat: note: 'dimfeat featurize OUTPUT --data INPUT' is deprecated; write "
                "'dimfeat featurize INPUT -o OUTPUT'",
                file=sys.stderr,
            )
        elif len(inputs) >= 2 and not Path(inputs[-1]).exists():
            raise SystemExit(
                "give the output with -o OUT: dimfeat featurize "
                f"{' '.join(inputs[:-1])} -o {inputs[-1]}"
            )
        else:
            raise SystemExit("give the output file or folder with -o OUT")
    return inputs + data, output


def _check_options_after_double_dash(args) -> None:
    """Refuse options of ``dimfeat featurize``/``train`` written after ``--``, with the command
    that works.

    ``--`` ends the options (the standard meaning, kept: it lets an input's name start with
    ``-``), so in ``dimfeat featurize -- x.cif -o out.csv`` the ``-o`` and ``out.csv`` are input
    names. A word after ``--`` that is an option of ``featurize`` and no existing file is taken
    as a misplaced option.
    """
    argv = list(getattr(args, "argv", None) or [])
    if "--" not in argv:
        return
    split = argv.index("--")
    before, after = argv[:split], argv[split + 1 :]
    known = _subparser(args.command)._option_string_actions
    options, operands, k = [], [], 0
    while k < len(after):
        token = after[k]
        action = known.get(token.split("=", 1)[0]) if token.startswith("-") else None
        if token == "--":  # a second marker: one is enough
            k += 1
            continue
        if action is None or Path(token).exists():
            operands.append(token)
            k += 1
            continue
        width = 1 if action.nargs == 0 or "=" in token else 2
        options += after[k : k + width]
        k += width
    if not options:
        return
    marker = ["--"] if any(o.startswith("-") for o in operands) else []
    command = shlex.join(["dimfeat", *before, *options, *marker, *operands])
    misplaced = [repr(o) for o in options if o.startswith("-")]
    if len(misplaced) == 1:
        what = f"{misplaced[0]} comes after '--', which ends the options, so it would be read as an"
        what += " input name"
    else:
        what = f"{', '.join(misplaced[:-1])} and {misplaced[-1]} come after '--', which ends the "
        what += "options, so they would be read as input names"
    raise SystemExit(f"{what}; put the options before '--': {command}")


def _subparser(name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` (``featurize``, ``train``)."""
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)  # pragma: no cover - the parser always has subcommands


def _input_kind(name: str) -> str:
    """``folder``, ``tarball``, ``json``, ``file`` (CIF/POSCAR) or ``task`` (Matbench name)."""
    from dimfeat.sources import source_kind

    try:
        return source_kind(name)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(str(exc)) from None


def _featurize_source(inputs: list[str], args):
    """What ``featurize_to_file`` reads: a path, a Matbench task's structures, or files."""
    from dimfeat.datasets import task_frame
    from dimfeat.sources import structure_file_id

    if args.matbench:
        if inputs:
            raise SystemExit(
                f"--matbench {args.matbench} reads the task's structures: give no other INPUT "
                f"(got {' '.join(inputs)})"
            )
        inputs = [args.matbench]
    if not inputs:
        raise SystemExit(
            "give at least one INPUT (a folder, a tarball, a .json/.json.gz file of structures, "
            "CIF/POSCAR files) or --matbench TASK"
        )
    kinds = [_input_kind(name) for name in inputs]
    if args.split:
        if len(inputs) != 1 or kinds[0] not in {"folder", "tarball", "json"}:
            raise SystemExit(
                "--split needs one INPUT: a folder or tarball of structures, or a .json file"
            )
        split_args = argparse.Namespace(
            matbench=None, data=inputs[0], split=args.split, part=args.part
        )
        structures, ids, _ = _load_structures(split_args)
        return _series(structures, ids)
    if kinds == ["task"]:
        frame = task_frame(inputs[0], args.data_home)
        return _series(list(frame["structure"]), list(frame["material_id"]))
    if len(inputs) == 1 and kinds[0] in {"folder", "tarball", "json"}:
        return inputs[0]
    if all(kind == "file" for kind in kinds):
        ids = [structure_file_id(Path(name).name) for name in inputs]
        if len(set(ids)) < len(ids):  # several POSCARs, or a.cif and a.vasp: keep the paths
            ids = list(inputs)
        return _series([Path(name) for name in inputs], ids)
    raise SystemExit(
        "a folder, a tarball, a .json file or a Matbench task must be the only INPUT; several "
        f"INPUTs must all be CIF/POSCAR files (got {', '.join(inputs)})"
    )


def _series(values: list, ids: list[str]):
    """A pandas Series of ``values`` indexed by ``ids`` (the ids the output rows keep)."""
    import pandas as pd

    return pd.Series(values, index=pd.Index([str(i) for i in ids], name="id"), dtype=object)


def _output_format(output: str, fmt: str | None) -> str:
    """The output format: ``--format``, else the extension (none: a folder of parquet parts)."""
    path = Path(output)
    suffix = path.suffix.lower()
    by_suffix = next((f for f, ext in FORMATS.items() if ext and ext == suffix), None)
    if fmt is None:
        if by_suffix is not None:
            return by_suffix
        if path.is_dir() or not suffix:
            return "parts"
        raise SystemExit(
            f"cannot tell the output format from the extension of {output}: name a .parquet, "
            ".csv or .npy file, or a folder without extension for parquet parts, or give "
            "--format parquet|csv|npy|parts"
        )
    if fmt != "parts" and suffix != FORMATS[fmt]:
        raise SystemExit(
            f"--format {fmt} writes a {FORMATS[fmt]} file, and {output} is not named so: name "
            f"it {path.with_suffix(FORMATS[fmt]).name if suffix else path.name + FORMATS[fmt]}"
        )
    return fmt


def _work_folder(output: Path) -> Path:
    """Where a single-file output is streamed (in parquet parts) before it is assembled."""
    return output.with_name(output.name + ".parts")


def _npy_ids(output: Path) -> Path:
    """The table of rows beside a ``.npy`` output: ``vectors.npy`` -> ``vectors.ids.csv``."""
    return output.with_suffix(".ids.csv")


def _written_by_dimfeat(output: Path, fmt: str) -> bool:
    """Whether an existing single-file output is one ``dimfeat featurize`` wrote.

    A ``.parquet`` file carries dimfeat's stamp in its schema metadata; a ``.npy`` file is a 2-D
    float32 array with one row per row of the ``OUT.ids.csv`` table dimfeat writes beside it.
    """
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            metadata = pq.read_schema(output).metadata or {}
        except Exception:  # not parquet, unreadable, or no pyarrow: not provably dimfeat's
            return False
        return b"dimfeat" in metadata
    if not _ids_written_by_dimfeat(_npy_ids(output)):
        return False
    try:
        array = np.load(output, mmap_mode="r", allow_pickle=False)
        with _npy_ids(output).open("rb") as fh:
            rows = sum(1 for _ in fh) - 1
    except (OSError, ValueError):
        return False
    return array.ndim == 2 and array.dtype == np.float32 and array.shape[0] == rows


def _ids_written_by_dimfeat(ids: Path) -> bool:
    """Whether ``ids`` is a table of rows as ``dimfeat featurize`` writes beside a ``.npy``."""
    if not ids.is_file():
        return False
    with ids.open("rb") as fh:
        return fh.readline().strip() == b"index,id,error"


def _check_single_file(output: Path, fmt: str) -> None:
    """Refuse to overwrite a file (or folder) at ``output``, or the ``OUT.ids.csv`` beside a
    ``.npy``, that dimfeat did not write."""
    if output.is_dir():
        raise SystemExit(
            f"{output} is a folder: give --format parts to write parquet parts into it, or "
            "another output name"
        )
    if output.exists() and not _written_by_dimfeat(output, fmt):
        raise SystemExit(
            f"{output} exists and was not written by dimfeat featurize: dimfeat will not "
            "overwrite it; remove it or choose another output"
        )
    ids = _npy_ids(output)
    if fmt == "npy" and ids.exists() and not _ids_written_by_dimfeat(ids):
        raise SystemExit(
            f"{ids} exists and was not written by dimfeat featurize (dimfeat writes the rows of "
            f"{output.name} there): dimfeat will not overwrite it; remove it or choose another "
            "output"
        )


def _write_single_file(work: Path, output: Path, fmt: str) -> int:
    """Assemble the streamed parts of ``work`` into ``output``; remove them; return the rows."""
    from dimfeat._version import __version__
    from dimfeat.streaming import MANIFEST_NAME, read_features

    frame = read_features(work)
    output.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of its own (never a file of the user's, such as OUT.tmp)
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            stamp = {"dimfeat_version": __version__, "n_rows": len(frame)}
            metadata = {**(table.schema.metadata or {}), b"dimfeat": json.dumps(stamp).encode()}
            pq.write_table(table.replace_schema_metadata(metadata), tmp)
        else:
            labels = [c for c in frame.columns if c not in {"index", "id", "error"}]
            with tmp.open("wb") as fh:
                np.save(fh, frame[labels].to_numpy(dtype=np.float32))
            frame[["index", "id", "error"]].to_csv(_npy_ids(output), index=False)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    manifest = json.loads((work / MANIFEST_NAME).read_text(encoding="utf-8"))
    for record in manifest["chunks"].values():  # only the files dimfeat's manifest lists
        (work / record["file"]).unlink(missing_ok=True)
    (work / MANIFEST_NAME).unlink()
    with contextlib.suppress(OSError):  # left in place if anything else is in it
        work.rmdir()
    return len(frame)


def _featurize(args) -> None:
    """``dimfeat featurize``: every input kind and format goes through one streaming writer."""
    from dimfeat.streaming import output_lock

    inputs, output = _featurize_inputs(args)
    fmt = _output_format(output, args.format)
    out = Path(output)
    if fmt in {"parquet", "npy"}:
        # a single file is streamed into OUT.parts, then assembled: one lock on OUT for it all
        # (featurize_to_file locks a CSV or a folder of parts itself)
        with output_lock(out):
            _featurize_to(inputs, out, fmt, args)
    else:
        _featurize_to(inputs, out, fmt, args)


def _featurize_to(inputs: list[str], out: Path, fmt: str, args) -> None:
    from dimfeat.featurizer import DeepInfoMaxFeaturizer
    from dimfeat.inputs import InvalidStructureError
    from dimfeat.streaming import featurize_to_file

    if fmt in {"parquet", "npy"}:
        _check_single_file(out, fmt)
    source = _featurize_source(inputs, args)
    featurizer = DeepInfoMaxFeaturizer(
        weights=args.weights, device=args.device, n_jobs=args.n_jobs, disorder=args.disorder
    )
    featurizer.get_runtime()  # bad --weights fail here, before any output file or folder exists
    stream_to = _work_folder(out) if fmt in {"parquet", "npy"} else out
    try:
        summary = featurize_to_file(
            source,
            stream_to,
            featurizer,
            chunk_size=args.chunk_size,
            resume=args.resume,
            progress=not args.quiet,
            ignore_errors=args.ignore_errors,
            limit=args.limit,
        )
    except ValueError as exc:
        if isinstance(exc, InvalidStructureError) or _A_STRUCTURE_FAILED.match(str(exc)):
            raise SystemExit(
                f"{exc} (--ignore-errors writes a row of NaN with the error text instead)"
            ) from exc
        raise
    if fmt in {"parquet", "npy"}:
        _write_single_file(stream_to, out, fmt)
    print(
        f"wrote {summary.n_rows} vectors to {out} ({summary.n_chunks} chunks, "
        f"{summary.n_skipped_chunks} already done, {summary.n_errors} errors)"
    )


#: How ``featurize_to_file`` names a structure that failed (not a refused resume).
_A_STRUCTURE_FAILED = re.compile(r"(structure \d+ \(id |chunk \d+, whose structure 0)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


FEATURIZE_DESCRIPTION = """\
Featurise crystal structures: one vector per structure, written as parquet, CSV or .npy.

INPUT is one of
  - a folder of structure files (*.cif, POSCAR*, CONTCAR*, *.vasp, *.poscar), or a CGCNN
    folder (id_prop.csv, material_id_hash.csv and {idx}.cif);
  - a .tar.gz, .tgz or .tar of a CGCNN folder or of *.cif files, read as a stream;
  - a .json or .json.gz file of structures: a list of Structure.as_dict() dictionaries, an
    object of id -> dictionary, or a matminer/Matbench dataset file;
  - one or more CIF/POSCAR files;
or --matbench TASK instead of INPUT.
"""

FEATURIZE_EPILOG = """\
output (-o OUT; the format follows the extension, or --format):
  OUT.parquet  one parquet file          OUT.csv  one CSV file
  OUT.npy      float32 array of vectors, with OUT.ids.csv (index, id, error) beside it
  OUT          (no extension) a folder of parquet parts, one per chunk, with manifest.json
Every row is: index (position in the input), id (material id, file name without extension,
Matbench id such as mb-phonons-0001, or the key or position in a .json file),
dim_0 ... dim_127, error (empty, or why the structure failed, with --ignore-errors).

An interrupted run resumes when started again with the same command (--no-resume starts over).
Exit status: 0 done; 2 an error, printed as one line 'dimfeat: error: ...' (--debug or
DIMFEAT_DEBUG=1 shows the Python traceback); 130 interrupted.
"""


def _parser() -> argparse.ArgumentParser:
    from dimfeat._version import __version__
    from dimfeat.encoder import DISTANCE_EXPANSIONS, EncoderConfig
    from dimfeat.infomax import (
        CRITICS,
        DEFAULT_BETA,
        DEFAULT_COMPOSITION_WEIGHT,
        DEFAULT_CRITIC,
        DEFAULT_GLOBAL_SITES,
        DEFAULT_LOCAL_CONSTITUENT,
        DEFAULT_LOCAL_PAIRS,
        DEFAULT_SYNTHETIC_WEIGHT,
        FALSE_SAMPLE_KINDS,
        STRAIN_RANGE,
    )
    from dimfeat.training import VALIDATION_FRACTION, TrainingConfig
    from dimfeat.weights import InputSettings

    parser = argparse.ArgumentParser(
        prog="dimfeat",
        description="Learned crystal feature vectors: featurise structures, or train the "
        "encoder that makes them.",
        epilog=f"Tracebacks: --debug after the command, or {DEBUG_ENV}=1.",
    )
    parser.add_argument("--version", action="version", version=f"dimfeat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{featurize,train}")

    def source_options(p, inputs_help: str, output_help: str) -> None:
        """INPUT..., -o OUT and the options that choose the structures (one reader for both)."""
        p.add_argument("inputs", nargs="*", metavar="INPUT", help=inputs_help)
        p.add_argument("-o", "--output", metavar="OUT", help=output_help)
        p.add_argument(
            "--data",
            action="append",
            metavar="INPUT",
            help="the older form: the same as an INPUT (with --matbench: the same as --data-home)",
        )
        p.add_argument("--split", help="split.json restricting a CGCNN/.json INPUT to one part")
        p.add_argument("--part", default="train", help="part of --split to use (default train)")
        p.add_argument(
            "--matbench",
            metavar="TASK",
            help="a Matbench task instead of INPUT, e.g. matbench_phonons",
        )
        p.add_argument(
            "--data-home",
            metavar="DIR",
            help="folder holding TASK.json.gz (default: $MATMINER_DATA, else matminer's own "
            "datasets folder; nothing is downloaded)",
        )

    def debug_option(p):
        p.add_argument(
            "--debug", action="store_true", help=f"show Python tracebacks (or set {DEBUG_ENV}=1)"
        )

    train = sub.add_parser(
        "train",
        help="train a DIM encoder and write a weights folder",
        description=_plain(_TRAIN_DESCRIPTION),
        usage="dimfeat train INPUT... -o OUT [options]",
    )
    data = train.add_argument_group("data: the structures trained on and their model inputs")
    source_options(
        data,
        "structures to train on, in any form dimfeat featurize reads",
        "weights folder to write",
    )
    data.add_argument(
        "--cache",
        help=".npz of model inputs: read if present (refused if built from other data, "
        "--max-atoms or --symprec), else written",
    )
    data.add_argument(
        "--max-atoms",
        type=int,
        default=InputSettings().max_atoms,
        help="supercell size limit (default: %(default)s)",
    )
    data.add_argument(
        "--symprec",
        type=float,
        default=InputSettings().symprec,
        help="tolerance (angstrom) of the primitive-cell search (default: %(default)s)",
    )
    data.add_argument(
        "--max-primitive-sites",
        type=int,
        default=50,
        help="leave out crystals with more atoms in the primitive cell (default: %(default)s)",
    )
    data.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="processes for input building (default: -1, all cores)",
    )

    recipe = train.add_argument_group("recipe: the encoder and the Deep InfoMax objective")
    recipe.add_argument("--weights", help="start from these weights (default: random)")
    recipe.add_argument(
        "--global-dim",
        type=int,
        default=128,
        help="width of the crystal vector of a random encoder (default: %(default)s)",
    )
    recipe.add_argument(
        "--postpool-hidden",
        type=int,
        nargs="+",
        metavar="WIDTH",
        help="layers of the post-pooling MLP of a random encoder (default: "
        f"{' '.join(map(str, EncoderConfig.postpool_hidden))}; the crystal vector's rank is at "
        "most the last)",
    )
    recipe.add_argument(
        "--distance-expansion",
        choices=list(DISTANCE_EXPANSIONS),
        default="gaussian",
        help="distance input of a random encoder: Gaussian basis or the paper's linear input",
    )
    recipe.add_argument(
        "--false-samples",
        default=",".join(FALSE_SAMPLE_KINDS),
        help="comma-separated kinds of false sample (also: substitution, not in the default)",
    )
    recipe.add_argument(
        "--local-false-samples",
        default=None,
        help="kinds for the local loss only (default: --false-samples); the paper's: "
        "other,polymorph,composition",
    )
    recipe.add_argument(
        "--beta",
        type=float,
        default=DEFAULT_BETA,
        help="weight of the KL terms (default: %(default)s)",
    )
    recipe.add_argument(
        "--local-pairs",
        type=int,
        default=DEFAULT_LOCAL_PAIRS,
        help="pairs scored per environment in the local loss, drawn by weight (0: all pairs)",
    )
    recipe.add_argument(
        "--global-sites",
        type=int,
        default=DEFAULT_GLOBAL_SITES,
        help="sites kept per synthetic false crystal in the global loss (0: all sites)",
    )
    recipe.add_argument(
        "--composition-weight",
        type=float,
        default=DEFAULT_COMPOSITION_WEIGHT,
        help="weight of the composition read-out term (0: the paper's objective)",
    )
    recipe.add_argument(
        "--synthetic-weight",
        type=float,
        default=DEFAULT_SYNTHETIC_WEIGHT,
        help="weight of each synthetic kind of false sample relative to 'other' (1: all alike)",
    )
    recipe.add_argument(
        "--strain-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=list(STRAIN_RANGE),
        help="distance factors of the strain false samples: log-uniform in [LOW, HIGH] or its "
        "inverse (default: 1.05 1.25)",
    )
    recipe.add_argument(
        "--global-trains-local",
        action="store_true",
        help="let the global DIM loss train the local encoder too (default: the paper's detach)",
    )
    recipe.add_argument(
        "--critic",
        choices=list(CRITICS),
        default=DEFAULT_CRITIC,
        help="projection of the vectors in the DIM classifiers: the paper's MLP, or linear "
        "(scores linear in the vector)",
    )
    recipe.add_argument(
        "--local-constituent",
        choices=["neighbour", "bond"],
        default=DEFAULT_LOCAL_CONSTITUENT,
        help="local DIM constituents: [f_j, d_ij] (neighbour) or [f_i, f_j, d_ij] (bond)",
    )
    recipe.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds random weights, the validation split and the batches (default: 0)",
    )

    optimisation = train.add_argument_group("optimisation: epochs, rates, stopping, device")
    optimisation.add_argument(
        "--epochs",
        type=int,
        default=TrainingConfig.epochs,
        help="most passes over the training crystals (default: %(default)s)",
    )
    optimisation.add_argument(
        "--lr",
        type=float,
        default=TrainingConfig.lr,
        help="AdamW learning rate (default: %(default)s)",
    )
    optimisation.add_argument(
        "--lr-decay-epochs",
        type=int,
        default=None,
        help="decay the learning rate along a half cosine over this many epochs (default: "
        "constant, as in the paper)",
    )
    optimisation.add_argument(
        "--site-budget",
        type=int,
        default=TrainingConfig.site_budget,
        help="most unique sites per training batch (the paper's 1200; default: %(default)s)",
    )
    optimisation.add_argument(
        "--validation-fraction",
        type=float,
        default=VALIDATION_FRACTION,
        help="share of the crystals held out (at least 2) to choose the best epoch by the "
        "validation loss; 0: none, keep the last epoch (default: %(default)s)",
    )
    optimisation.add_argument(
        "--patience",
        type=int,
        default=TrainingConfig.patience,
        help="stop after this many epochs without a better validation loss (default: %(default)s)",
    )
    optimisation.add_argument(
        "--max-minutes", type=float, help="stop after the epoch that passes this time budget"
    )
    optimisation.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    optimisation.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")

    output = train.add_argument_group("output: the weights folder, checkpoints and messages")
    output.add_argument("--name", help="name in the model card (default: folder name)")
    output.add_argument("--checkpoint-dir", help="per-epoch checkpoints; resume from them")
    output.add_argument(
        "--save-every-epoch",
        metavar="DIR",
        help="also write each epoch's encoder as a weights folder DIR/epoch-NNN",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bars")
    debug_option(output)
    train.set_defaults(func=_train)

    feat = sub.add_parser(
        "featurize",
        help="structures in, vectors out (parquet, CSV or .npy)",
        description=FEATURIZE_DESCRIPTION,
        epilog=FEATURIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="dimfeat featurize INPUT... -o OUT [--format {parquet,csv,npy,parts}] [options]",
    )
    source_options(feat, "structures to featurise (see above)", "output file or folder (see below)")
    feat.add_argument(
        "--format",
        choices=list(FORMATS),
        help="output format (default: from the extension of OUT; none: parts)",
    )
    feat.add_argument("--weights", default=None, help="weights (default: bundled)")
    feat.add_argument(
        "--ignore-errors",
        action="store_true",
        help="a row of NaN with the error text for a structure that fails, instead of stopping",
    )
    feat.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="structures read, featurised and written at a time (default 1000); memory stays "
        "flat however large the input",
    )
    feat.add_argument(
        "--limit", type=_positive_int, metavar="N", help="featurise only the first N structures"
    )
    feat.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted run, skipping the chunks it finished (default: on)",
    )
    feat.add_argument(
        "--disorder",
        choices=["error", "majority"],
        default="error",
        help="partial occupancies: fail, or keep each site's majority species",
    )
    feat.add_argument(
        "--n-jobs", type=int, default=-1, help="processes for input building (default: all)"
    )
    feat.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    feat.add_argument("--quiet", action="store_true", help="no progress bar")
    debug_option(feat)
    feat.set_defaults(func=_featurize)
    return parser


#: ``name=value (command line: --flag ...)`` in a library message: the command line shows the flag.
_PYTHON_AND_FLAG = re.compile(r"\b\w+=\S+ \(command line: ([^)]+)\)")


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, naming command-line flags rather than Python
    arguments (a ``KeyError`` without its quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = _PYTHON_AND_FLAG.sub(r"\1", str(text))
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dimfeat`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``dimfeat`` (default: ``sys.argv[1:]``).

    Raises
    ------
    SystemExit
        Code 0 after ``--help``/``--version``; code 2 for a usage error or any error of the
        run, printed on stderr as one line ``dimfeat: error: ...`` (with ``--debug`` or
        ``DIMFEAT_DEBUG=1`` the exception propagates with its traceback instead); code 130
        when interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv  # recorded as the training command
    if args.command == "featurize" and args.weights is None:
        from dimfeat.weights import DEFAULT_WEIGHTS

        args.weights = DEFAULT_WEIGHTS
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in {"", "0"}
    try:
        args.func(args)
    except SystemExit as exc:
        if debug or not isinstance(exc.code, str):
            raise
        _fail(_one_line(exc))
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        if debug:
            raise
        _fail(_one_line(exc))
    except KeyboardInterrupt:
        if debug:
            raise
        print("dimfeat: interrupted (run the same command again to resume)", file=sys.stderr)
        raise SystemExit(130) from None


def _fail(message: str) -> None:
    print(f"dimfeat: error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
