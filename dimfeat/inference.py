"""The batched, memory-bounded inference loop: sort by size, batch, collate, run, scatter back.

:func:`run_batches` is the one loop that turns model inputs into rows with a model's forward:
:meth:`dimfeat.runtime.EncoderRuntime.encode` (the featuriser), the regressor's predictions and
the worker processes of :mod:`dimfeat.worker_vectors` use it. It depends only on the inputs
(:mod:`dimfeat.inputs`) and torch, so a worker process needs nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from dimfeat.inputs import Batch, CrystalInputs, collate, equivalent_sites
from dimfeat.progress import progress_bar

__all__ = [
    "INFERENCE_BATCH_SIZE",
    "MAX_BONDS_PER_BATCH",
    "inference_batches",
    "rows_of_built",
    "run_batches",
]

#: Crystals per inference batch unless a caller asks otherwise.
INFERENCE_BATCH_SIZE = 256
#: Bound on (unique sites x padded atoms) of one inference batch: bounds memory for large cells.
MAX_BONDS_PER_BATCH = 500_000


def inference_batches(
    inputs: Sequence[CrystalInputs],
    order: np.ndarray,
    batch_size: int,
    max_bonds: int = MAX_BONDS_PER_BATCH,
    rows: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Consecutive groups of ``order`` with at most ``batch_size`` crystals and bounded bonds.

    Parameters
    ----------
    inputs : sequence of CrystalInputs
    order : ndarray of int
        Visiting order, sorted by supercell atoms (the newest crystal sets the padded width).
    batch_size : int
        Most crystals per group.
    max_bonds : int, default=MAX_BONDS_PER_BATCH
        Most rows x padded atoms per group (a larger crystal gets a group of its own).
    rows : sequence of int, optional
        Rows each crystal takes in a batch (its number of site groups when equivalent sites
        are merged); by default its number of unique sites.

    Returns
    -------
    list of ndarray of int
        Indices into ``inputs``.
    """
    groups: list[np.ndarray] = []
    current: list[int] = []
    n_rows = 0
    for i in order:
        width = inputs[i].n_atoms
        size = inputs[i].n_sites if rows is None else int(rows[i])
        if current and (len(current) >= batch_size or (n_rows + size) * width > max_bonds):
            groups.append(np.array(current))
            current, n_rows = [], 0
        current.append(int(i))
        n_rows += size
    if current:
        groups.append(np.array(current))
    return groups


def run_batches(
    inputs: Sequence[CrystalInputs],
    forward: Callable[[Batch], torch.Tensor],
    width: int | None,
    *,
    device: torch.device,
    batch_size: int = INFERENCE_BATCH_SIZE,
    dtype: Any = np.float32,
    progress: bool | dict = False,
    timings: dict[str, float] | None = None,
    merge_sites: bool = True,
) -> np.ndarray:
    """The inference loop: sort by size, batch, collate, run ``forward``, scatter back.

    Parameters
    ----------
    inputs : sequence of CrystalInputs
    forward : callable
        Maps a :class:`~dimfeat.inputs.Batch` on ``device`` to one row (or one number, when
        ``width`` is ``None``) per crystal; run under :func:`torch.inference_mode`, in float32.
    width : int or None
        Length of each output row; ``None`` for one number per crystal.
    device : torch.device
        Where batches are moved before ``forward``.
    batch_size : int, default=256
        Most crystals per batch (see :func:`inference_batches` for the memory bound).
    dtype : numpy dtype, default=float32
        Of the returned array.
    progress : bool or dict, default=False
        A tqdm bar over crystals (a dict: tqdm keyword arguments).
    timings : dict, optional
        If given, seconds spent grouping equivalent sites, collating and in ``forward`` are
        added to its ``"site_groups"``, ``"collate"`` and ``"model"`` entries.
    merge_sites : bool, default=True
        Encode one site of each group of :func:`~dimfeat.inputs.equivalent_sites`, weighted by
        the group's size: the same vectors (to the float rounding of a different summation
        order, and distances within ``SITE_MERGE_RESOLUTION``) for a fraction of the bonds.

    Returns
    -------
    ndarray of shape (n_inputs, width) or (n_inputs,)
        In the order of ``inputs``.
    """
    shape = (len(inputs),) if width is None else (len(inputs), width)
    out = np.empty(shape, dtype=dtype)
    if not len(inputs):
        return out
    order = np.argsort([c.n_atoms for c in inputs], kind="stable")
    start = time.perf_counter()
    sites = [equivalent_sites(c) for c in inputs] if merge_sites else None
    if timings is not None:
        timings["site_groups"] = timings.get("site_groups", 0.0) + time.perf_counter() - start
    rows = None if sites is None else [len(r) for r, _ in sites]
    bar = progress_bar(progress, desc="encoding", total=len(inputs))
    try:
        with torch.inference_mode():
            for group in inference_batches(inputs, order, batch_size, rows=rows):
                start = time.perf_counter()
                batch = collate(
                    [inputs[i] for i in group], None if sites is None else [sites[i] for i in group]
                )
                collated = time.perf_counter()
                out[group] = forward(batch.to(device)).float().cpu().numpy()
                if timings is not None:
                    timings["collate"] = timings.get("collate", 0.0) + collated - start
                    timings["model"] = timings.get("model", 0.0) + time.perf_counter() - collated
                if bar is not None:
                    bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    return out


def rows_of_built(
    inputs: Sequence[CrystalInputs | None],
    width: int,
    encode: Callable[[list[CrystalInputs]], np.ndarray],
) -> np.ndarray:
    """Float32 rows of a chunk whose failed structures are ``None``: ``encode`` of the built
    ones, NaN rows for the others (``encode`` is not called when none was built).

    Parameters
    ----------
    inputs : sequence of CrystalInputs or None
    width : int
        Length of each row.
    encode : callable
        Maps a list of :class:`~dimfeat.inputs.CrystalInputs` to an array of shape
        ``(n, width)``.

    Returns
    -------
    ndarray of shape (len(inputs), width), float32
    """
    rows = np.full((len(inputs), width), np.nan, dtype=np.float32)
    built = [k for k, crystal in enumerate(inputs) if crystal is not None]
    if built:
        rows[built] = encode([inputs[k] for k in built])
    return rows
