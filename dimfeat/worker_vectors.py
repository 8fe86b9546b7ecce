"""Crystal vectors computed in worker processes: each builds *and* encodes its own chunk.

With ``n_jobs`` processes on the CPU, :meth:`dimfeat.runtime.EncoderRuntime.vectors` sends
each chunk of structures (at most 128: :func:`dimfeat.inputs.build.chunk_bounds`; as arrays:
:func:`dimfeat.inputs.build.read_for_workers`) to a worker process, which builds the model
inputs and runs the encoder on them with one thread and sends back only the vectors. With two
processes and at least two chunks, one worker and the calling process share the chunks: the
caller builds and encodes a chunk itself, with one thread, whenever the worker holds enough
queued (:func:`dimfeat._workers.shared_with_caller`), and the last two chunks are cut into smaller
pieces so that both finish together (:func:`dimfeat.inputs.build.tapered_bounds`); otherwise
``n_jobs`` joblib workers take them all. Every core then does the whole
pipeline; the calling process also reads the structures and collects the rows. (When the
workers only built the inputs, the calling process unpickled and encoded
them while the workers waited, and two processes gave 1.03 times the rate of one;
docs/method.md has the figures.)

The encoder travels with each task as its configuration and its tensors
(:class:`EncoderPayload`, a few hundred kilobytes), keyed by
:func:`dimfeat.weights.encoder_sha256`; a worker rebuilds it once and keeps it for the next
tasks with the same key, and checks that the rebuilt encoder has that key. So the workers encode
with exactly the calling process's encoder, loaded, random or trained in memory alike.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dimfeat.inputs.build import (
    LargeCell,
    build_chunk,
    find_large_cells,
    map_chunks,
)

__all__ = ["EncoderPayload", "VectorChunk", "iter_worker_vectors", "vectors_of_chunk"]

#: Encoders a worker process keeps, by key (the most recent ones), with the pair tables of
#: their context channels (:func:`dimfeat.encoder.pair_tables_of`).
_KEPT = 2
_encoders: dict[str, tuple[torch.nn.Module, list]] = {}


@dataclass(frozen=True)
class EncoderPayload:
    """An encoder as a worker process receives it: what rebuilds it, and its identity.

    Attributes
    ----------
    key : str
        :func:`dimfeat.weights.encoder_sha256` of the encoder.
    config : dict
        ``encoder.config.to_dict()`` (either kind: one encoder or two channels).
    state : dict of str to ndarray
        The state dict as arrays.
    """

    key: str
    config: dict
    state: dict[str, np.ndarray]

    @classmethod
    def of(cls, encoder: torch.nn.Module) -> EncoderPayload:
        """The payload of ``encoder`` (on any device; the arrays are copied to the CPU)."""
        from dimfeat.weights import encoder_sha256

        state = {k: v.detach().cpu().numpy().copy() for k, v in encoder.state_dict().items()}
        return cls(encoder_sha256(encoder), encoder.config.to_dict(), state)

    def encoder(self) -> torch.nn.Module:
        """The encoder, in eval mode on the CPU: rebuilt once per process and key.

        Raises
        ------
        RuntimeError
            If the rebuilt encoder does not have the payload's key.
        """
        return self._kept()[0]

    def _kept(self) -> tuple[torch.nn.Module, list]:
        """The encoder and the pair tables of its context channels, made once per key."""
        found = _encoders.get(self.key)
        if found is not None:
            return found
        from dimfeat.channels import blank_encoder, config_from_dict
        from dimfeat.encoder import pair_tables_of
        from dimfeat.weights import encoder_sha256

        encoder = blank_encoder(config_from_dict(self.config))
        encoder.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
        encoder.eval()
        if encoder_sha256(encoder) != self.key:
            raise RuntimeError("the encoder rebuilt in a worker process is not the one sent")
        while len(_encoders) >= _KEPT:
            _encoders.pop(next(iter(_encoders)))
        _encoders[self.key] = encoder, pair_tables_of(encoder)
        return _encoders[self.key]


@dataclass
class VectorChunk:
    """Vectors of consecutive structures, as :func:`iter_worker_vectors` yields them.

    Attributes
    ----------
    start : int
        Index in the caller's ``structures`` of the chunk's first structure.
    vectors : ndarray of shape (n, n_features), float32
        NaN rows for the structures that failed (``ignore_errors=True``).
    errors : dict of int to str
        Traceback text by index in the caller's ``structures``.
    large : list of LargeCell
        The chunk's cells with more than ``max_atoms`` atoms in the primitive cell, by index in
        the caller's ``structures`` (for :func:`dimfeat.inputs.warn_found_large_cells`).
    n_ordered : int
        Disordered structures ordered by majority species.
    """

    start: int
    vectors: np.ndarray
    errors: dict[int, str]
    large: list[LargeCell]
    n_ordered: int


def vectors_of_chunk(
    items: list,
    positions: Sequence[int],
    settings: tuple,
    payload: EncoderPayload,
    batch_size: int,
    parent_pid: int,
) -> tuple[np.ndarray, dict[int, str], list[LargeCell], int]:
    """One worker task of :func:`iter_worker_vectors`: build the inputs of ``items`` and encode
    them, with one thread in a worker process.

    Parameters
    ----------
    items : list
        The chunk's structures as :func:`dimfeat.inputs.build.read_for_workers` sends them.
    positions : sequence of int
        The position of each that error messages name.
    settings : tuple
        ``(max_atoms, symprec, ignore_errors, disorder)``.
    payload : EncoderPayload
        The encoder (rebuilt once per process and key).
    batch_size : int
        Most crystals per encoder batch.
    parent_pid : int
        The calling process: torch is set to one thread only in another process (the
        caller's share runs on one thread too: :func:`dimfeat._workers.shared_with_caller`).

    Returns
    -------
    vectors : ndarray of shape (len(items), n_features), float32
        NaN rows for the structures that failed.
    errors : dict of int to str
        Traceback text by index in ``items``.
    large : list of LargeCell
        Cells with more than ``max_atoms`` atoms in the primitive cell, by index in ``items``
        (they are encoded too, each from a single cell).
    n_ordered : int
        Disordered structures ordered by majority species.
    """
    from dimfeat.encoder import composition_memo
    from dimfeat.inference import rows_of_built, run_batches

    max_atoms, symprec, ignore_errors, disorder = settings
    inputs, errors, n_ordered = build_chunk(
        items, positions, max_atoms, symprec, ignore_errors, disorder, None, parent_pid
    )
    if os.getpid() != parent_pid:  # a worker process: one per core (never the caller's torch)
        torch.set_num_threads(1)
    encoder, tables = payload._kept()
    width = encoder.config.global_dim

    def encode(built: list) -> np.ndarray:
        with composition_memo(encoder, tables):  # the tables once per worker, not per chunk
            return run_batches(
                built, encoder, width, device=torch.device("cpu"), batch_size=batch_size
            )

    vectors = rows_of_built(inputs, width, encode)
    return vectors, errors, find_large_cells(inputs, max_atoms), n_ordered


def iter_worker_vectors(
    structures: Sequence,
    encoder: torch.nn.Module,
    *,
    max_atoms: int,
    symprec: float,
    n_jobs: int,
    batch_size: int,
    ignore_errors: bool = False,
    disorder: str = "error",
    positions: Sequence[int] | None = None,
) -> Iterator[VectorChunk]:
    """Vectors of ``structures``, chunk by chunk in order, each built and encoded by a worker.

    Parameters
    ----------
    structures : sequence
        Structures in any form :func:`dimfeat.inputs.to_structure` accepts.
    encoder : SiteNetEncoder or TwoChannelEncoder
        Sent to the workers as an :class:`EncoderPayload`.
    max_atoms, symprec, disorder : see :func:`dimfeat.inputs.build_inputs`
    n_jobs : int
        Processes (-1: all cores); with two, one worker and this one
        (:func:`dimfeat._workers.shared_with_caller`).
    batch_size : int
        Most crystals per encoder batch (see :func:`dimfeat.inference.run_batches`).
    ignore_errors : bool, default=False
        NaN rows for structures that fail, their error texts returned, instead of raising.
    positions : sequence of int, optional
        The position of each structure that error messages name (default: its index).

    Yields
    ------
    VectorChunk
    """
    structures = list(structures)
    positions = list(range(len(structures)) if positions is None else positions)
    settings = (max_atoms, symprec, ignore_errors, disorder)
    payload = EncoderPayload.of(encoder)
    chunks = map_chunks(
        vectors_of_chunk, structures, positions, n_jobs, disorder,
        settings, payload, batch_size, os.getpid(), caller_shares=True,
    )  # fmt: skip
    for start, (vectors, errors, large, n_ordered) in chunks:
        yield VectorChunk(
            start,
            vectors,
            {start + k: text for k, text in errors.items()},
            [dataclasses.replace(cell, index=start + cell.index) for cell in large],
            n_ordered,
        )
