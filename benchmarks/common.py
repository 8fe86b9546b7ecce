"""What every benchmark shares: the data folder, the mp36k input cache, the machine description
and result files.

- :data:`DATA`: the shared data folder, ``$DIMFEAT_SHARED_DATA`` or ``shared/data`` beside the
  clone; :data:`MP36K` and :data:`SPLIT` (the CGCNN Materials Project set and its
  ``split.json``), :data:`MATMINER` (the Matbench data home).
- :data:`RESULTS`: ``benchmarks/results/``, one folder per purpose (``paper``, ``perf``,
  ``release``, ``archive``), as the scripts are.
- :func:`load_set`: the structures of the speed benchmarks' sets (the bundled sample, or crystals
  drawn from the whole mp36k test split).
- :func:`mp36k_inputs`: model inputs of a whole mp36k split part, built once into
  ``.devcache/mp36k_<part>.npz`` and shared by training, the paper subsets, the geometry and
  transfer benchmarks (``python -m benchmarks.common train test`` builds them ahead).
- :func:`machine` / :func:`machine_line`: the machine a result was measured on
  (:func:`dimfeat.fingerprint.machine`), as a record or as one line.
- :func:`write_json`: a result file written whole or not at all.
- :func:`worker_path_arguments`: the options of the benchmarks of the worker path.
- :func:`baseline_tree`, :func:`revision_env` and :func:`revision_arguments`: what the benchmarks
  that compare this checkout with a git revision share (the revision's code unpacked, the
  environment of a fresh interpreter that imports it, the command-line options).
- :func:`weights_label`: which weights a result's recorded sha256 names (the bundled weights, a
  folder archived under ``benchmarks/results/archive``, or neither), as one line of Markdown.

Writes ``.devcache/mp36k_<part>.npz`` (see :func:`dimfeat.inputs.save_inputs`) with, per crystal,
``material_id``, ``formula`` (pymatgen reduced formula), ``formation_energy_per_atom`` and
``band_gap``. Crystals whose inputs cannot be built are left out and counted. The input settings
are the package defaults (``max_atoms=50``, ``symprec=0.01``); they and a fingerprint of the
input code are stored in the file, and :func:`mp36k_inputs` refuses a cache built otherwise.

Usage::

    python -m benchmarks.common train   # about 3 min on 2 cores
    python -m benchmarks.common test
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIMFEAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MP36K = DATA / "mp36k" / "mp36k.tar.gz"
SPLIT = DATA / "mp36k" / "split.json"
MATMINER = DATA / "matminer"
RESULTS = ROOT / "benchmarks" / "results"
DEVCACHE = ROOT / ".devcache"
SETTINGS = {"max_atoms": 50, "symprec": 0.01}
FIELDS = ("material_id", "formula", "formation_energy_per_atom", "band_gap", "data_json")


# -- the machine ------------------------------------------------------------------------------
def machine(device: Any = None) -> dict[str, Any]:
    """CPU model, cores, memory, library versions, date (and the GPU for a CUDA ``device``)."""
    from dimfeat import fingerprint

    return fingerprint.machine(device)


def machine_line(device: Any = None, note: str = "") -> str:
    """:func:`machine` in one line: the hardware, Python and torch, then ``note``."""
    info = machine(device)
    line = f"{info['description']}; Python {info['python']}, torch {info['torch']}"
    return f"{line}; {note}" if note else line


# -- the sets of the speed benchmarks ------------------------------------------------------
def load_set(name: str, n: int | None, n_jobs: int | None = None) -> list:
    """The structures of a set of ``benchmarks.perf.throughput``: ``"sample"``, the bundled
    sample (:func:`dimfeat.datasets.load_sample`), or ``"mp36k-test"``, crystals drawn at random
    (``default_rng(0)``) from the whole mp36k ``test`` split; the first ``n`` (``None``: all),
    the CIF files read on ``n_jobs`` processes."""
    from dimfeat.datasets import load_cgcnn, load_sample, load_split

    if name == "sample":
        return list(load_sample()["structure"])[:n]
    ids = load_split(SPLIT)["test"]
    drawn = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:n]]
    return list(load_cgcnn(MP36K, ids=drawn, n_jobs=n_jobs)["structure"])


# -- timing ---------------------------------------------------------------------------------
def rate(n: int, seconds: float) -> float:
    """``n`` items in ``seconds``, per second (NaN for no time)."""
    return n / seconds if seconds > 0 else float("nan")


def time_transform(featurizer: Any, structures: Any) -> float:
    """Wall seconds of one ``featurizer.transform(structures)``."""
    start = time.perf_counter()
    featurizer.transform(structures)
    return time.perf_counter() - start


# -- result files -----------------------------------------------------------------------------
def write_json(path: str | os.PathLike, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as JSON through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=indent) + "\n")
    tmp.replace(path)
    return path


# -- comparing with a git revision -----------------------------------------------------------
def baseline_tree(revision: str, folder: Path) -> Path:
    """``dimfeat/`` and ``weights/`` of a git revision, unpacked into ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "dimfeat", "weights"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def revision_env(tree: str | os.PathLike | None, **variables: str) -> dict[str, str]:
    """The environment of a fresh interpreter that imports the ``dimfeat`` of ``tree`` (a
    :func:`baseline_tree`; ``None``: this checkout's) and ``benchmarks`` of this checkout, with
    ``variables`` set (e.g. ``OMP_NUM_THREADS="1"``)."""
    path = [str(ROOT)] if tree is None else [str(tree), str(ROOT)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **variables)


def sets_taking_turns(
    sets: list[str],
    n: int,
    folder: Path,
    baseline: str | None,
    rounds: int,
    run: Callable[[str, str, Path | None, Path], Any],
) -> Iterator[tuple[str, dict[str, list]]]:
    """For each of the ``sets`` of ``benchmarks.perf.throughput`` (``n`` structures, pickled into
    ``folder``): ``run(set, label, tree, pickled)`` for this checkout (label ``"current"``, tree
    ``None``) and, with ``baseline``, that revision (``"baseline"``, its
    :func:`baseline_tree`), taking turns ``rounds`` times so that both see the same load;
    yields ``(set, {label: [results]})``."""
    trees = {"current": None}
    if baseline:
        trees["baseline"] = baseline_tree(baseline, folder)
    for name in sets:
        stored = folder / f"{name}.pkl"
        stored.write_bytes(pickle.dumps(load_set(name, n)))
        results: dict[str, list] = {label: [] for label in trees}
        for _ in range(rounds):
            for label, tree in trees.items():
                results[label].append(run(name, label, tree, stored))
        yield name, results


def revision_arguments(
    parser: argparse.ArgumentParser, *, json_name: str, rounds: int
) -> argparse.ArgumentParser:
    """The options of a benchmark that compares this checkout with a revision on the sets of
    ``benchmarks.perf.throughput``: ``--sets``, ``--n``, ``--baseline``, ``--rounds`` and
    ``--json`` (default ``benchmarks/results/perf/<json_name>``)."""
    parser.add_argument("--sets", nargs="+", default=["sample", "mp36k-test"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", default=str(RESULTS / "perf" / json_name))
    return parser


def worker_path_arguments(
    parser: argparse.ArgumentParser, *, json_name: str, rounds: int
) -> argparse.ArgumentParser:
    """The options of a benchmark of the worker path of ``transform`` on one set of
    ``benchmarks.perf.throughput``: ``--set``, ``--n``, ``--n-jobs``, ``--rounds`` and ``--json``
    (default ``benchmarks/results/perf/<json_name>``)."""
    parser.add_argument("--set", default="mp36k-test", choices=["sample", "mp36k-test"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", default=str(RESULTS / "perf" / json_name))
    return parser


# -- which weights a result was computed with ------------------------------------------------
#: The bundled weights the paper benchmarks use unless told otherwise.
BUNDLED = "sitenet-dim-mp36k"
ARCHIVE = RESULTS / "archive"


def weights_folders() -> dict[str, Path]:
    """sha256 of the tensors -> the weights folder of this repository holding them: the
    bundled weights first, then every weights folder under ``benchmarks/results/archive``
    (the ``sha256`` of its ``config.json``, of either kind; read as data, never loaded)."""
    folders: dict[str, Path] = {}
    bundled = sorted((ROOT / "weights").glob("*/config.json"))
    for config in [*bundled, *sorted(ARCHIVE.rglob("config.json"))]:
        try:
            sha = json.loads(config.read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(sha, str):
            folders.setdefault(sha, config.parent)
    return folders


def weights_label(sha: str | None, bundled: str = BUNDLED) -> str:
    """Markdown naming the weights whose sha256 is (or starts with) ``sha``.

    The bundled ``bundled`` weights are named as such; other weights by the folder that holds
    them, with the bundled weights' sha256 beside it, so a result of earlier weights is not
    read as the bundled weights'.
    """
    current = _sha_of(bundled)
    if not sha:
        return "weights not recorded"
    if is_bundled(sha, bundled):
        return f"the bundled `{bundled}` (sha256 {current[:16]}...)"
    held = [f for s, f in weights_folders().items() if s.startswith(sha) or sha.startswith(s)]
    where = (
        f"`{held[0].relative_to(ROOT).as_posix()}`"
        if held
        else "weights no folder of this repository holds"
    )
    return (
        f"{where} (sha256 {sha[:16]}...), **not the bundled `{bundled}`** "
        f"(sha256 {current[:16]}...)"
    )


def is_bundled(sha: str | None, bundled: str = BUNDLED) -> bool:
    """Whether ``sha`` (a sha256 or its prefix) is that of the bundled weights' tensors."""
    current = _sha_of(bundled)
    return bool(sha) and (current.startswith(sha) or sha.startswith(current))


def _sha_of(bundled: str) -> str:
    return json.loads((ROOT / "weights" / bundled / "config.json").read_text())["sha256"]


# -- the mp36k input cache --------------------------------------------------------------------
def code_fingerprint() -> str:
    """Short sha256 of the source that builds the inputs (:func:`dimfeat.inputs.build_many`)."""
    import inspect

    import dimfeat.inputs
    from dimfeat import fingerprint

    files = {
        inspect.getsourcefile(dimfeat.inputs),
        inspect.getsourcefile(dimfeat.inputs.build_many),
    }
    return fingerprint.code(sorted(files))[:16]


def cache_path(part: str) -> Path:
    """Where the inputs of ``part`` are cached."""
    return DEVCACHE / f"mp36k_{part}.npz"


def build_mp36k_inputs(part: str, n_jobs: int = -1) -> Path:
    """Build and save the inputs of every crystal of ``part`` of ``split.json``."""
    from dimfeat.datasets import load_cgcnn, load_split
    from dimfeat.inputs import build_many, save_inputs

    ids = load_split(SPLIT)[part]
    df = load_cgcnn(MP36K, ids=ids, progress=True, n_jobs=n_jobs)
    crystals, errors = build_many(
        list(df["structure"]), n_jobs=n_jobs, ignore_errors=True, **SETTINGS
    )
    keep = [i for i, c in enumerate(crystals) if c is not None]
    path = cache_path(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_inputs(
        path,
        [crystals[i] for i in keep],
        material_id=df["material_id"].to_numpy()[keep].astype(str),
        formula=np.array([df["structure"][i].composition.reduced_formula for i in keep]),
        formation_energy_per_atom=df["formation_energy_per_atom"].to_numpy()[keep],
        band_gap=df["band_gap"].to_numpy()[keep],
        data_json=np.array(
            json.dumps(
                {
                    "description": f"mp36k.tar.gz, '{part}' part of split.json",
                    "inputs": SETTINGS,
                    "inputs_code": code_fingerprint(),
                    "n_failed": len(errors),
                }
            )
        ),
    )
    print(f"{part}: {len(keep)} crystals ({len(errors)} failed) -> {path}")
    return path


def mp36k_inputs(part: str) -> tuple[list, dict]:
    """The cached inputs of ``part`` and their per-crystal fields, built when absent.

    A cache that lacks a field or was built with other input settings is refused: it does not
    belong to this run (delete it to rebuild).
    """
    from dimfeat.inputs import load_inputs

    path = cache_path(part)
    if not path.is_file():
        build_mp36k_inputs(part)
    crystals, extra = load_inputs(path)
    missing = [f for f in FIELDS if f not in extra]
    recorded = json.loads(str(extra["data_json"])) if "data_json" in extra else {}
    expected = {"inputs": SETTINGS, "inputs_code": code_fingerprint()}
    if (
        missing
        or any(recorded.get(k) != v for k, v in expected.items())
        or part not in recorded.get("description", "")
    ):
        raise SystemExit(
            f"{path} was not built by benchmarks/common.py for the '{part}' part with the "
            f"current input code and settings (missing {missing}; recorded {recorded}, expected "
            f"{expected}); delete it to rebuild"
        )
    return crystals, extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the mp36k input cache of split parts.")
    parser.add_argument("parts", nargs="+", choices=("train", "test"))
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args(argv)
    for part in args.parts:
        build_mp36k_inputs(part, args.n_jobs)


if __name__ == "__main__":
    main()
