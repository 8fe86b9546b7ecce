"""``dimfeat train`` as a function: structures in files (or an input cache) to a weights folder.

:func:`train_weights` reads the structures as ``dimfeat featurize`` reads them
(:func:`dimfeat.chunks.select_source`), builds their model inputs or reads them from an input
cache, trains with :func:`dimfeat.training.train_dim` (the entry point the featuriser's ``fit``
shares) and writes a weights folder whose :class:`~dimfeat.record.TrainingRecord` names the
data by content. The input cache is keyed by :func:`cache_key`: the data's identity
(:func:`data_identity`, name, size and sha256 of the files through
:func:`dimfeat.fingerprint.files`), ``max_atoms``, ``symprec`` and the dimfeat version.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dimfeat import fingerprint
from dimfeat.training_config import TrainingConfig

__all__ = [
    "IDENTITY_STAMP",
    "cache_key",
    "check_cache",
    "data_identity",
    "identity_files",
    "load_training_structures",
    "train_weights",
]

#: How :func:`data_identity` identifies files (recorded, so that a cache of an older dimfeat that
#: identified them otherwise is refused with that reason).
IDENTITY_STAMP = "fingerprint.files"


def data_identity(
    inputs: list[str],
    *,
    matbench: str | None = None,
    data_home: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    part: str = "train",
) -> dict | None:
    """What identifies the structures that inputs select, or ``None`` when the data are not on
    this machine (then only an input cache can stand in for them).

    Files are identified by name, size and sha256 of their content (a folder by those of every
    file in it; :func:`dimfeat.fingerprint.files`), so a copy of the same data still matches
    its cache while an edit that keeps the size and the modification time does not. Hashing
    reads the data once, far faster than building their inputs.

    Parameters
    ----------
    inputs : list of str
        Files, folders or a Matbench task name (as :func:`dimfeat.chunks.select_source`).
    matbench, data_home, split, part
        As for :func:`dimfeat.chunks.select_source`.

    Returns
    -------
    dict or None
        ``matbench``, ``source`` (``[name, bytes, sha256]``, or ``[name, "folder", sha256]``;
        a list of them for several inputs), ``stamp`` and, with ``split``, ``split``
        (``[sha256, part]``).
    """
    from dimfeat.datasets import matminer_file

    names = [matbench] if matbench else list(inputs)
    if not names:
        return None
    sources = []
    for name in names:
        if not matbench and Path(name).exists():
            sources.append(Path(name))
            continue
        try:  # a Matbench task: its file in the data home
            sources.append(matminer_file(name, Path(data_home) if data_home else None))
        except (FileNotFoundError, KeyError, ValueError):
            return None  # not on this machine: only a cache can stand in
    if not all(source.exists() for source in sources):
        return None
    stamps = [
        [f["name"], "folder" if f.get("folder") else f["bytes"], f["sha256"]]
        for f in fingerprint.files(sources)
    ]
    identity: dict = {
        "matbench": matbench,
        "source": stamps[0] if len(stamps) == 1 else stamps,  # one source: one stamp
        "stamp": IDENTITY_STAMP,
    }
    if split:
        identity["split"] = [fingerprint.sha256_file(split), part]
    return identity


def identity_files(identity: dict | None, split: str | os.PathLike | None = None) -> dict:
    """The files of a :func:`data_identity` as the model card lists them (``files``, and
    ``split`` with the split file's name)."""
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
        out["split"] = {"name": Path(split).name, "sha256": digest, "part": part}
    return out


def cache_key(identity: dict | None, *, max_atoms: int, symprec: float) -> dict:
    """What determines cached model inputs: the data, ``max_atoms``, ``symprec``, dimfeat."""
    from dimfeat._version import __version__

    return {
        "dimfeat_version": __version__,
        "max_atoms": max_atoms,
        "symprec": symprec,
        "data": identity,
    }


def check_cache(cache: str | os.PathLike, extra: dict, key: dict) -> str:
    """Refuse an input cache built from other data or settings; return what it was built from.

    Parameters
    ----------
    cache : path
        The cache file (named in messages).
    extra : dict
        The arrays saved beside the inputs (:func:`dimfeat.inputs.load_inputs`).
    key : dict
        :func:`cache_key` of this run; its data are compared only when they are here.

    Returns
    -------
    str
        JSON of the data identity the cache was built from.

    Raises
    ------
    ValueError
        Naming what differs, for a cache that does not record what built it, or was built from
        other data or settings, or by a dimfeat that identified the data otherwise.
    """
    if "cache_key" not in extra:
        raise ValueError(
            f"{cache} does not record what it was built from (written by an older dimfeat, or "
            "not by dimfeat train): delete it to rebuild it, or pass another --cache"
        )
    try:
        recorded = json.loads(str(extra["cache_key"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cache} has a damaged record of what built it: delete it") from exc
    compared = ["dimfeat_version", "max_atoms", "symprec"]
    if key["data"] is not None:  # the data are here: the cache must have been built from them
        compared.append("data")
    changed = [k for k in compared if recorded.get(k) != key[k]]
    cached_data = recorded.get("data")
    if "data" in changed and cached_data is not None:
        stamp = cached_data.get("stamp")
        if stamp is None:
            raise ValueError(
                f"{cache} was written by an older dimfeat that identified the data by "
                "modification time, not content: delete it to rebuild it, or pass another --cache"
            )
        if stamp != IDENTITY_STAMP:
            raise ValueError(
                f"{cache} was written by an older dimfeat that identified the data by another "
                f"digest ({stamp}): delete it to rebuild it, or pass another --cache"
            )
    if changed:
        raise ValueError(
            f"{cache} was built from other data or settings ({', '.join(changed)}: cached "
            f"{[recorded.get(k) for k in changed]}, now {[key[k] for k in changed]}); delete it "
            "to rebuild it, or pass another --cache"
        )
    return json.dumps(recorded.get("data"))


def load_training_structures(
    inputs: list[str],
    *,
    matbench: str | None = None,
    data_home: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    part: str = "train",
) -> tuple[list, list[str], str]:
    """Structures, their ids and a one-line description of inputs named as ``dimfeat train``
    names them (read as ``dimfeat featurize`` reads them)."""
    from dimfeat.chunks import select_source
    from dimfeat.datasets import load_structures

    source = select_source(inputs, matbench=matbench, data_home=data_home, split=split, part=part)
    names = [matbench] if matbench else list(inputs)
    description = ", ".join(Path(name).name for name in names)
    if split:
        description += f", '{part}' part of {Path(split).name}"
    if isinstance(source, str):  # one folder, tarball or .json file
        df = load_structures(Path(source), progress=True)
        return list(df["structure"]), [str(i) for i in df["material_id"]], description
    return list(source), [str(i) for i in source.index], description


def _quiet(*args: Any, **kwargs: Any) -> None:
    """``log`` on the ranks other than 0."""


def _refuse_two_channel(weights: str) -> None:
    """``dimfeat train`` trains one encoder with one recipe: two-channel starting weights are
    refused (before any data is read), with the ways to train them."""
    from dimfeat.channels import TWO_CHANNEL_ARCHITECTURE, read_weights_config
    from dimfeat.weights import resolve_weights

    if read_weights_config(resolve_weights(weights)).get("architecture") == (
        TWO_CHANNEL_ARCHITECTURE
    ):
        raise ValueError(
            f"--weights {weights!r} are two-channel weights, and dimfeat train trains one encoder "
            "with one recipe: continue both channels, each with its recorded recipe, with "
            "DeepInfoMaxFeaturizer(weights=..., epochs=N).fit(structures), or train a channel "
            "from its single-channel folder and combine the channels (dimfeat combine-channels)"
        )


def train_weights(
    inputs: list[str],
    output: str | os.PathLike,
    config: TrainingConfig | None = None,
    *,
    matbench: str | None = None,
    data_home: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    part: str = "train",
    cache: str | os.PathLike | None = None,
    max_atoms: int | None = None,
    symprec: float | None = None,
    max_primitive_sites: int | None = 50,
    n_jobs: int = -1,
    weights: str | None = None,
    encoder_config: Any = None,
    global_dim: int | None = 128,
    device: Any = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    save_every_epoch: str | os.PathLike | None = None,
    name: str | None = None,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], Any] | None = print,
) -> Path:
    """Train an encoder with Deep InfoMax on structures in files; write a weights folder.

    What ``dimfeat train`` runs (under ``torchrun``, each rank runs it and rank 0 writes).

    Parameters
    ----------
    inputs : list of str
        What ``dimfeat featurize`` reads: one folder, tarball or ``.json`` file, CIF/POSCAR
        files, or a Matbench task name (:func:`dimfeat.chunks.select_source`).
    output : path
        The weights folder to write (``model.safetensors``, ``config.json``, model card).
    config : TrainingConfig, optional
        The training settings (default: ``TrainingConfig()``).
    matbench, data_home, split, part
        As for :func:`dimfeat.chunks.select_source`.
    cache : path, optional
        ``.npz`` of model inputs: read if present (refused if built from other data,
        ``max_atoms`` or ``symprec``; :func:`check_cache`), else written.
    max_atoms, symprec : optional
        Input settings (default: :class:`dimfeat.weights.InputSettings`).
    max_primitive_sites : int or None, default=50
        Leave out crystals with more atoms in the primitive cell (see
        :func:`dimfeat.training.train_dim`; ``DeepInfoMaxFeaturizer.fit`` keeps all).
    n_jobs : int, default=-1
        Processes that build model inputs.
    weights : str, optional
        Starting weights (default: a random encoder seeded by ``config.seed``).
    encoder_config : EncoderConfig, optional
        Architecture of a random encoder.
    global_dim : int or None, default=128
        Width of a random encoder's crystal vector.
    device : str or torch.device, default="auto"
    checkpoint_dir : path, optional
        Per-epoch checkpoints; a run resumes from them.
    save_every_epoch : path, optional
        Also write each epoch's encoder as a weights folder ``save_every_epoch/epoch-NNN``.
    name : str, optional
        Name in the model card (default: the folder's name).
    progress : bool, default=True
        Progress bars.
    command : str, optional
        The command line recorded in the model card.
    log : callable or None, default=print
        Called with each line of the run's report (None: silent).

    Returns
    -------
    Path
        The weights folder (on ranks other than 0 under ``torchrun``: ``output``, unwritten).
    """
    import torch

    from dimfeat.distributed import barrier, is_main_process, launched_by_torchrun
    from dimfeat.inputs import build_many, load_inputs, save_inputs
    from dimfeat.record import TrainingRecord
    from dimfeat.runtime import EncoderRuntime
    from dimfeat.training import SaveEveryEpoch, resolve_device, train_dim
    from dimfeat.weights import InputSettings, save_pretrained

    config = TrainingConfig() if config is None else config
    if weights:
        _refuse_two_channel(weights)
    defaults = InputSettings()
    max_atoms = defaults.max_atoms if max_atoms is None else max_atoms
    symprec = defaults.symprec if symprec is None else symprec
    where = {"matbench": matbench, "data_home": data_home, "split": split, "part": part}
    start = time.perf_counter()
    main = is_main_process()  # under torchrun only rank 0 reports and writes files
    say = (log or _quiet) if main else _quiet
    data: dict = {}
    cached = cache is not None and Path(cache).is_file()
    identity = data_identity(inputs, **where)
    key = cache_key(identity, max_atoms=max_atoms, symprec=symprec) if cache else None
    barrier()  # every rank has looked for the cache before rank 0 may write it
    if cached:
        crystals, extra = load_inputs(cache)
        built_from = check_cache(cache, extra, key)
        data = json.loads(str(extra["data_json"])) if "data_json" in extra else {}
        say(f"loaded {len(crystals)} cached inputs from {cache} (built from {built_from})")
    else:
        structures, ids, description = load_training_structures(inputs, **where)
        data = {"description": description}
        crystals = build_many(structures, max_atoms=max_atoms, symprec=symprec, n_jobs=n_jobs)[0]
        if cache and main:
            save_inputs(
                cache,
                crystals,
                material_id=np.array(ids),
                data_json=np.array(json.dumps(data)),
                cache_key=np.array(json.dumps(key)),
            )
    if "files" not in data:  # what was read, by content: named in the model card
        if identity is None and cached:  # the data are not here: what the cache was built from
            identity = json.loads(built_from)
        data.update(identity_files(identity, split))
    device = resolve_device(device)
    runtime = EncoderRuntime.create(
        weights or None,
        seed=config.seed,
        encoder_config=encoder_config,
        global_dim=None if weights else global_dim,
        max_atoms=max_atoms,
        symprec=symprec,
    )
    hardware = fingerprint.machine(device)["description"]
    callbacks = []
    if save_every_epoch:
        record = {"command": command, "data": data, "hardware": hardware}
        record["torch_version"] = torch.__version__
        callbacks.append(SaveEveryEpoch(save_every_epoch, runtime.inputs, record))
    history, sizes = train_dim(
        runtime.encoder,
        crystals,
        config,
        device,
        max_primitive_sites=max_primitive_sites,
        checkpoint_dir=checkpoint_dir,
        progress=progress and main,
        callbacks=callbacks,
        log=say,
    )
    data.update(sizes)
    for record in history:
        valid = {k: record.get(f"valid_{k}", float("nan")) for k in ("local_dim", "global_dim")}
        say(
            f"epoch {record['epoch']:3d}  valid DIM local {valid['local_dim']:.4f} "
            f"global {valid['global_dim']:.4f}  {record['seconds']:.1f}s"
            + ("  *" if record["best"] else "")
        )
    if not main:
        return Path(output)
    if launched_by_torchrun():
        data["world_size"] = int(os.environ["WORLD_SIZE"])
    training = TrainingRecord(
        command=command,
        data=data,
        settings=config.to_dict(),
        start_weights=weights,
        hardware=hardware,
        wall_time_s=round(time.perf_counter() - start, 1),
        torch_version=torch.__version__,
        history=history,
    )
    folder = save_pretrained(
        output,
        runtime.encoder,
        inputs=runtime.inputs,
        training=training,
        name=name or Path(output).name,
    )
    say(f"wrote {folder}")
    return Path(folder)
