"""Model inputs of one structure (:func:`build_inputs`) or many in parallel (:func:`build_many`).

The stages, one module each: :mod:`dimfeat.inputs.structures` (anything a user holds -> a
checked structure's arrays), :mod:`dimfeat.inputs.cell` (canonical cell, supercell, distances ->
:class:`~dimfeat.inputs.batch.CrystalInputs`). :func:`warn_large_cells` is the one warning about
cells beyond ``max_atoms`` (:class:`dimfeat.LargeCellWarning`).
"""

from __future__ import annotations

import dataclasses
import os
import traceback
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dimfeat import fingerprint
from dimfeat._warnings import LargeCellWarning, warn
from dimfeat.inputs.batch import CrystalInputs
from dimfeat.inputs.cell import inputs_from_cell
from dimfeat.inputs.structures import CellArrays, read_cell
from dimfeat.progress import progress_bar

__all__ = [
    "CHUNK_STRUCTURES",
    "BuiltChunk",
    "LargeCell",
    "build_inputs",
    "build_many",
    "find_large_cells",
    "iter_build",
    "map_chunks",
    "read_for_workers",
    "uses_workers",
    "warn_found_large_cells",
    "warn_large_cells",
    "warn_ordered",
]


def build_inputs(
    structure,
    *,
    max_atoms: int = 50,
    symprec: float = 0.01,
    index: int | None = None,
    disorder: str = "error",
) -> CrystalInputs:
    """Turn one ordered, periodic structure into :class:`CrystalInputs`.

    Parameters
    ----------
    structure : Structure, or any form :func:`to_structure` accepts
        An ordered crystal structure (CIF text, a path, a structure dict, ASE ``Atoms``, ...).
    max_atoms : int, default=50
        Upper bound on the number of supercell atoms (the paper's N).
    symprec : float, default=0.01
        Tolerance (Å) of the primitive-cell search: a lattice translation is kept iff every atom
        lies within ``symprec`` of a translated atom of its species (after a least-squares fit of
        the translation), whatever the order of the sites; also passed to spglib's fallback.
    index : int, optional
        Position of the structure in the caller's input, used in error messages.
    disorder : {"error", "majority"}, default="error"
        Policy for sites with partial occupancies: raise :class:`InvalidStructureError`, or
        keep each site's majority species (ties go to the lowest atomic number; vacancies are
        ignored, so a partly empty site becomes a full atom of its majority species).

    Returns
    -------
    CrystalInputs

    Raises
    ------
    TypeError
        If ``structure`` cannot hold a crystal (see :func:`to_structure`).
    InvalidStructureError
        For a value that does not read as a crystal (see :func:`to_structure`), disordered
        structures (with ``disorder="error"``), non-finite coordinates, degenerate lattices, a
        lattice not periodic along all three axes, overlapping atoms (closer than 0.5 Å, also to
        an atom's own periodic image) and a lattice that cannot be Niggli-reduced.
    dimfeat.elements.UnsupportedElementError
        For elements beyond Lr (Z > 103) and dummy species, naming them and ``index``.
    """
    cell = read_cell(structure, index, disorder)
    return inputs_from_cell(cell.lattice, cell.frac, cell.numbers, max_atoms, symprec, index)


@dataclass(frozen=True)
class _Unreadable:
    """A structure that failed to read in the parent: the error and its traceback text."""

    error: BaseException
    traceback: str


def read_for_workers(item: Any, position: int, disorder: str) -> Any:
    """What a worker process receives for one item of :func:`build_many`.

    A pymatgen ``Structure`` becomes its arrays (a :class:`CellArrays`, or an :class:`_Unreadable`
    holding the error): pickling a ``Structure`` there and back costs more than building its
    inputs, its arrays next to nothing. Anything else
    (CIF text, paths, dicts, ASE ``Atoms``) is sent as it is and read in the worker.
    """
    from pymatgen.core import Structure

    if not isinstance(item, Structure):
        return item
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="pymatgen")
            return read_cell(item, position, disorder)
    except Exception as exc:
        return _Unreadable(exc, traceback.format_exc())


def build_chunk(
    structures: list,
    positions: Sequence[int],
    max_atoms: int,
    symprec: float,
    ignore_errors: bool,
    disorder: str = "error",
    bar: Any = None,
    parent_pid: int | None = None,
) -> tuple[list[CrystalInputs | None], dict[int, str], int]:
    """Model inputs of one chunk of structures, in this process or a worker.

    Parameters
    ----------
    structures : list
        Items :func:`to_structure` accepts, or what :func:`read_for_workers` makes of them.
    positions : sequence of int
        The position error messages name for each item.
    max_atoms, symprec, disorder : see :func:`build_inputs`
    ignore_errors : bool
        ``None`` and the traceback for an item that fails, instead of raising.
    bar : tqdm or None, default=None
        Advanced by one per item.
    parent_pid : int or None, default=None
        The process that started the chunks: in a worker process, the worker exits when it is
        gone.

    Returns
    -------
    inputs : list of CrystalInputs or None
    errors : dict of int to str
        Traceback text by index in ``structures``.
    n_ordered : int
        Disordered structures ordered by majority species.
    """
    if parent_pid is not None:  # in a joblib worker: do not outlive the parent
        from dimfeat._workers import exit_with_parent

        exit_with_parent(parent_pid)
    inputs: list[CrystalInputs | None] = []
    errors: dict[int, str] = {}
    n_ordered = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pymatgen")
        for k, item in enumerate(structures):
            try:
                if isinstance(item, _Unreadable):
                    if not ignore_errors:
                        raise item.error
                    inputs.append(None)
                    errors[k] = item.traceback
                else:  # read here unless the parent did (the site scan gives the order flag)
                    cell = (
                        item
                        if isinstance(item, CellArrays)
                        else read_cell(item, positions[k], disorder)
                    )
                    inputs.append(
                        inputs_from_cell(
                            cell.lattice, cell.frac, cell.numbers, max_atoms, symprec, positions[k]
                        )
                    )
                    n_ordered += not cell.ordered
            except Exception:
                if not ignore_errors:
                    raise
                inputs.append(None)
                errors[k] = traceback.format_exc()
            if bar is not None:
                bar.update(1)
    return inputs, errors, n_ordered


#: Structures per task of the worker processes: small enough that the first inputs reach the
#: encoder soon (:meth:`dimfeat.runtime.EncoderRuntime.vectors` encodes each chunk as it
#: arrives), large enough that dispatching a task costs little beside building it.
CHUNK_STRUCTURES = 128


@dataclass
class BuiltChunk:
    """Consecutive structures' model inputs, as :func:`iter_build` yields them.

    Attributes
    ----------
    start : int
        Index in the caller's ``structures`` of the chunk's first structure.
    inputs : list of CrystalInputs or None
        ``None`` for a structure that failed (``ignore_errors=True``).
    errors : dict of int to str
        Traceback text by index in the caller's ``structures``.
    """

    start: int
    inputs: list[CrystalInputs | None]
    errors: dict[int, str]


def iter_build(
    structures: Sequence,
    *,
    max_atoms: int = 50,
    symprec: float = 0.01,
    n_jobs: int = 1,
    ignore_errors: bool = False,
    disorder: str = "error",
    progress: bool | dict = False,
    positions: Sequence[int] | None = None,
) -> Iterator[BuiltChunk]:
    """:func:`build_many` one chunk at a time, in order, as the worker processes finish them.

    With ``n_jobs`` other than 1 (and more than 64 structures), chunks of at most
    :data:`CHUNK_STRUCTURES` (:func:`chunk_bounds`) are built on ``n_jobs`` processes and each
    is yielded as soon as it and those before it are done, so a caller can encode one chunk
    while the workers build the next. Otherwise one chunk holds every structure. Parameters as
    for :func:`build_many`; the warning about disordered structures comes once the last chunk
    is yielded.

    Yields
    ------
    BuiltChunk
    """
    structures = list(structures)
    positions = list(range(len(structures)) if positions is None else positions)
    if len(positions) != len(structures):
        raise ValueError(f"{len(positions)} positions for {len(structures)} structures")
    bar = progress_bar(progress, desc="model inputs", total=len(structures))
    n_ordered = 0
    try:
        if not uses_workers(n_jobs, len(structures)):
            inputs, errors, n_ordered = build_chunk(
                structures, positions, max_atoms, symprec, ignore_errors, disorder, bar
            )
            yield BuiltChunk(0, inputs, errors)
        else:
            # bar=None in the workers; each exits when this process dies
            settings = (max_atoms, symprec, ignore_errors, disorder, None, os.getpid())
            chunks = map_chunks(build_chunk, structures, positions, n_jobs, disorder, *settings)
            for start, (part, part_errors, part_ordered) in chunks:
                n_ordered += part_ordered
                if bar is not None:
                    bar.update(len(part))
                # chunk errors are keyed within the chunk: shift them to the index in structures
                yield BuiltChunk(start, part, {start + k: v for k, v in part_errors.items()})
    finally:
        if bar is not None:
            bar.close()
    warn_ordered(n_ordered)


def map_chunks(
    task: Callable[..., Any],
    structures: Sequence,
    positions: Sequence[int],
    n_jobs: int,
    disorder: str,
    *args: Any,
    bounds: Sequence[np.ndarray] | None = None,
    caller_shares: bool = False,
) -> Iterator[tuple[int, Any]]:
    """``task(items, chunk_positions, *args)`` on each chunk of ``structures``
    (:func:`chunk_bounds`, or ``bounds``: consecutive index arrays covering ``structures``) in
    ``n_jobs`` worker processes (joblib), yielding ``(start, result)`` in order as the chunks
    finish; ``start`` is the chunk's first index in ``structures``. With ``caller_shares`` (for
    a caller that has nothing else to do meanwhile), ``n_jobs`` meaning two processes and at
    least :data:`MIN_SHARED_CHUNKS` chunks, in one worker process and this one
    (:func:`dimfeat._workers.shared_with_caller`; otherwise joblib's workers, as without it),
    unless a ``joblib.parallel_config`` chose another backend than joblib's default; the last
    two of :func:`chunk_bounds`' chunks are then cut smaller (:func:`tapered_bounds`).

    Each chunk's structures are read here as it is dispatched (:func:`read_for_workers`:
    a pymatgen ``Structure`` travels as its arrays). An error in a task is raised here when its
    chunk's turn comes, so the error of the first failing chunk in input order is the one raised,
    whichever worker fails first (as a serial call would); the worker's traceback is attached as
    a note. Abandoning the iterator (an error, a ``break``) cancels the chunks still queued.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    from dimfeat._workers import error_as_value, raise_in_order, shared_with_caller

    chosen = bounds is not None
    if bounds is None:
        bounds = chunk_bounds(len(structures), n_jobs)
    elif any(len(b) == 0 for b in bounds) or not np.array_equal(
        np.concatenate([np.arange(0), *bounds]), np.arange(len(structures))
    ):
        raise ValueError(
            "bounds must be non-empty consecutive index arrays covering the structures"
        )
    workers = effective_n_jobs(n_jobs) - 1
    shared = caller_shares and workers == 1 and len(bounds) >= MIN_SHARED_CHUNKS
    shared = shared and _default_backend()
    if shared and not chosen:
        bounds = tapered_bounds(bounds)
    chunks = (
        (
            [read_for_workers(structures[i], positions[i], disorder) for i in b],
            [positions[i] for i in b],
            *args,
        )
        for b in bounds
    )
    if shared:
        results = shared_with_caller(task, chunks, [len(b) for b in bounds], workers)
    else:
        tasks = (delayed(error_as_value)(task, *arguments) for arguments in chunks)
        results = raise_in_order(Parallel(n_jobs=n_jobs, return_as="generator")(tasks))
    try:
        for b, result in zip(bounds, results, strict=True):
            yield int(b[0]), result
    finally:
        results.close()


#: Fewest chunks for which the calling process takes chunks beside one worker
#: (:func:`map_chunks`). With equal chunks sharing was 0.86-0.87 times as fast as two joblib
#: workers with three and four chunks (384 and 512 crystals), so only calls of eight shared;
#: with the last two of three or more cut smaller (:func:`tapered_bounds`) it was faster with
#: 2, 3, 4, 8 and 16 chunks (1.07-1.35 times; ``benchmarks/perf/caller_share.py``).
MIN_SHARED_CHUNKS = 2


#: The structures of the last two chunks of a shared call (:func:`tapered_bounds`) go in pieces
#: of these fractions of them: two quarters, two eighths, four sixteenths.
TAIL_PIECES = (1 / 4, 1 / 4, 1 / 8, 1 / 8, 1 / 16, 1 / 16, 1 / 16, 1 / 16)

#: Fewest chunks that :func:`tapered_bounds` cuts: two chunks already split evenly (one each),
#: and cutting them cost more than it saved (128 crystals: 0.77 times as fast).
MIN_TAPERED_CHUNKS = 3


def tapered_bounds(bounds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``bounds`` with the structures of its last two chunks cut into pieces that shrink
    (:data:`TAIL_PIECES`), so that the calling process and the worker of a shared call
    (:func:`map_chunks`) finish together: with equal chunks the caller often waited for the
    worker's last one or two.

    On two cores (``benchmarks/perf/caller_share.py``, the whole mp36k test split, medians of
    45 paired ratios): with 384 and 512 crystals (three and four chunks) 1.24 and 1.29 times as
    fast as equal chunks; with 1,000 and 2,000 (eight and sixteen, which split evenly) a tie
    (0.99 both). Fewer than :data:`MIN_TAPERED_CHUNKS` chunks are returned as they are.
    """
    if len(bounds) < MIN_TAPERED_CHUNKS:
        return list(bounds)
    tail = np.concatenate(bounds[-2:])
    cuts = np.cumsum([round(f * len(tail)) for f in TAIL_PIECES[:-1]])
    pieces = [p for p in np.split(tail, np.minimum(cuts, len(tail))) if len(p)]
    return [*bounds[:-2], *pieces]


def _default_backend() -> bool:
    """Whether joblib runs tasks on its default process backend (loky), not on one a user
    chose with ``joblib.parallel_config`` (Dask, threads), which :func:`map_chunks` honours."""
    from joblib._parallel_backends import LokyBackend
    from joblib.parallel import get_active_backend

    return type(get_active_backend()[0]) is LokyBackend


def uses_workers(n_jobs: int, n_structures: int) -> bool:
    """Whether :func:`iter_build` (and :meth:`dimfeat.runtime.EncoderRuntime.vectors`) hands
    ``n_structures`` to worker processes: more than 64 of them, and ``n_jobs`` meaning more than
    one process here (``joblib.effective_n_jobs``: ``-1`` on a 1-core machine means one)."""
    if n_jobs == 1 or n_structures <= 64:
        return False
    from joblib import effective_n_jobs

    return effective_n_jobs(n_jobs) > 1


#: Fewest structures per chunk when a call is split so that every worker has a chunk.
MIN_CHUNK_STRUCTURES = 16


def chunk_bounds(n_structures: int, n_jobs: int) -> list[np.ndarray]:
    """Indices of the chunks of a call handed to ``n_jobs`` workers: at most
    :data:`CHUNK_STRUCTURES` each, and at least one per worker while each keeps
    :data:`MIN_CHUNK_STRUCTURES` (100 structures on two workers: two chunks of 50).

    Chunks that shrink towards the end of a call (so that the workers finish together) tied
    with these on two cores: faster in 25 of 45 paired calls of 1,000 structures (median ratio
    1.02; ``python -m benchmarks.perf.worker_timeline``), the shorter wait at the end paid
    for by the extra tasks; that was joblib's workers alone. A call that the calling process
    shares cuts its last two chunks smaller (:func:`tapered_bounds`).
    """
    from joblib import effective_n_jobs

    by_size = -(-n_structures // CHUNK_STRUCTURES)
    per_worker = min(effective_n_jobs(n_jobs), n_structures // MIN_CHUNK_STRUCTURES)
    parts = max(1, by_size, per_worker)
    return [b for b in np.array_split(np.arange(n_structures), parts) if len(b)]


def warn_ordered(n_ordered: int) -> None:
    """The one warning about disordered structures ordered by majority species, if any."""
    if n_ordered:
        warn(
            f"{n_ordered} disordered structure(s) were ordered by keeping each site's "
            "majority species (disorder='majority')"
        )


def build_many(
    structures: Sequence,
    *,
    max_atoms: int = 50,
    symprec: float = 0.01,
    n_jobs: int = 1,
    ignore_errors: bool = False,
    disorder: str = "error",
    progress: bool | dict = False,
    positions: Sequence[int] | None = None,
) -> tuple[list[CrystalInputs | None], dict[int, str]]:
    """:func:`build_inputs` for many structures, in chunks on ``n_jobs`` processes (joblib).

    Parameters
    ----------
    structures : sequence of Structure, or of any form :func:`to_structure` accepts
        Each item is read by :func:`to_structure` (in the worker processes when ``n_jobs``
        is not 1), so CIF text and paths are parsed in parallel too.
    max_atoms, symprec, disorder : see :func:`build_inputs`
        With ``disorder="majority"``, one :class:`UserWarning` gives the number of disordered
        structures ordered by majority species.
    n_jobs : int, default=1
        Worker processes (-1: all cores); inputs of 64 structures or fewer stay in-process.
        Workers exit within a second when this process dies (even by ``kill -9``).
    ignore_errors : bool, default=False
        Put ``None`` for a structure that fails, with its traceback in ``errors``, instead of
        raising.
    progress : bool or dict, default=False
        Show a tqdm progress bar on stderr (a dict: keyword arguments for ``tqdm``).
    positions : sequence of int, optional
        The position of each structure that error messages name (default: its index in
        ``structures``), e.g. its row in a caller's larger input when only some rows are built.

    Returns
    -------
    inputs : list of CrystalInputs or None
    errors : dict of int to str
        Traceback text by index in ``structures``, for the structures that failed.
    """
    return collect_chunks(
        iter_build(
            structures,
            max_atoms=max_atoms,
            symprec=symprec,
            n_jobs=n_jobs,
            ignore_errors=ignore_errors,
            disorder=disorder,
            progress=progress,
            positions=positions,
        )
    )


def collect_chunks(
    chunks: Iterable[BuiltChunk],
) -> tuple[list[CrystalInputs | None], dict[int, str]]:
    """The inputs and errors of all the chunks of :func:`iter_build`, as :func:`build_many`
    returns them."""
    inputs: list[CrystalInputs | None] = []
    errors: dict[int, str] = {}
    for chunk in chunks:
        inputs += chunk.inputs
        errors.update(chunk.errors)
    return inputs, errors


#: Large cells already named by :func:`warn_large_cells` in this process: (scope, max_atoms,
#: sha256 of the cell's inputs).
_NAMED: set[tuple] = set()
#: Positions a :class:`~dimfeat.LargeCellWarning` message lists (all are in ``positions``).
SHOWN_POSITIONS = 5


def warn_large_cells(
    inputs: Sequence[CrystalInputs | None],
    max_atoms: int,
    *,
    positions: Sequence[int] | None = None,
    scope: Hashable | None = None,
) -> None:
    """One :class:`~dimfeat.LargeCellWarning` naming the cells with more than ``max_atoms`` atoms
    in the primitive cell (each is featurised from a single cell, outside the training
    distribution), or none.

    The warning names the user's line (:func:`dimfeat._warnings.user_stacklevel`), how many
    structures, the first few positions and the largest cell; its ``count``, ``positions``,
    ``largest`` and ``max_atoms`` attributes say the same for a program.

    Parameters
    ----------
    inputs : sequence of CrystalInputs or None
        ``None`` (a structure that failed) is passed over.
    max_atoms : int
        The input setting the inputs were built with.
    positions : sequence of int, optional
        The position of each input in the caller's input (default: its index).
    scope : hashable, optional
        Who asks, e.g. an estimator's class and parameters: a cell already named for the same
        scope and ``max_atoms`` in this process is not named again, so that calls repeated on
        the same structures (a grid search, ``predict`` then ``score``) warn once. ``None``:
        every call names every large cell.
    """
    found = find_large_cells(inputs, max_atoms)
    if positions is not None:
        found = [dataclasses.replace(cell, index=int(positions[cell.index])) for cell in found]
    warn_found_large_cells(found, max_atoms, scope=scope)


@dataclass(frozen=True)
class LargeCell:
    """A cell with more than ``max_atoms`` atoms in its primitive cell, as
    :func:`warn_found_large_cells` names it.

    Attributes
    ----------
    index : int
        Its position (in the caller's input).
    n_sites : int
        Atoms in its primitive cell.
    digest : str
        sha256 of its inputs (species and distances): the same cell in another call.
    """

    index: int
    n_sites: int
    digest: str


def find_large_cells(inputs: Sequence[CrystalInputs | None], max_atoms: int) -> list[LargeCell]:
    """The inputs with more than ``max_atoms`` sites, by index in ``inputs`` (``None`` is passed
    over): what a worker process sends back for :func:`warn_found_large_cells` instead of the
    inputs themselves."""
    return [
        LargeCell(
            k,
            crystal.n_sites,
            fingerprint.sha256_bytes(crystal.species.tobytes() + crystal.distances.tobytes()),
        )
        for k, crystal in enumerate(inputs)
        if crystal is not None and crystal.n_sites > max_atoms
    ]


def warn_found_large_cells(
    found: Sequence[LargeCell], max_atoms: int, *, scope: Hashable | None = None
) -> None:
    """:func:`warn_large_cells` of cells already found (:func:`find_large_cells`), their
    ``index`` the position to name."""
    keys = []
    if scope is not None:
        fresh = []
        for cell in found:
            key = (scope, max_atoms, cell.digest)
            if key not in _NAMED:
                fresh.append(cell)
                keys.append(key)
        found = fresh
    if not found:
        return
    where = [cell.index for cell in found]
    shown = ", ".join(str(p) for p in where[:SHOWN_POSITIONS])
    more = len(where) - SHOWN_POSITIONS
    largest = max(cell.n_sites for cell in found)
    message = (
        f"{len(found)} structure(s) have more than max_atoms={max_atoms} atoms in the primitive "
        f"cell (largest {largest}; position{'s' if len(where) > 1 else ''} {shown}"
        f"{f' and {more} more' if more > 0 else ''}): each is featurised from a single cell, "
        "outside the training distribution"
    )
    warn(LargeCellWarning(message, len(found), tuple(where), largest, max_atoms))
    _NAMED.update(keys)  # after the warning: one turned into an error is raised again next time
