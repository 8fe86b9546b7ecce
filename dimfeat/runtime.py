"""The runtime layer: an encoder with its input settings and provenance, and the inference loop.

Every face of the package (the featuriser, the regressor, the command line, the benchmarks)
turns structures into vectors through :class:`EncoderRuntime`:

- one way to create it: :meth:`EncoderRuntime.create` from weights (bundled name, folder, Hub
  id) or from random weights drawn under a seed that never touches the caller's torch RNG;
- one way to turn structures into model inputs: :meth:`EncoderRuntime.build`, with the input
  settings (``max_atoms``, ``symprec``) the weights were trained with unless overridden; it
  calls :func:`dimfeat.inputs.iter_build` and gives the one warning about large cells
  (:meth:`EncoderRuntime.build_chunks` yields the inputs chunk by chunk);
- one batched, memory-bounded inference loop: :func:`run_batches` (sort by size, batch under a
  bound on the padded bonds, collate, run the model, scatter the rows back into input order;
  defined in :mod:`dimfeat.inference`, which worker processes import without this module),
  which :meth:`EncoderRuntime.encode` and the regressor's predictions use;
- one path from structures to vectors: :meth:`EncoderRuntime.vectors` (read, look up in a
  vector cache, build and encode the rest, each chunk as the worker processes finish it,
  store), which ``transform`` uses.

Training is :mod:`dimfeat.training`; this module only runs a model forward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import traceback
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dimfeat import fingerprint
from dimfeat.channels import load_weights
from dimfeat.encoder import EncoderConfig, SiteNetEncoder, composition_memo
from dimfeat.inference import (
    INFERENCE_BATCH_SIZE,
    MAX_BONDS_PER_BATCH,
    inference_batches,
    rows_of_built,
    run_batches,
)
from dimfeat.inputs import (
    BuiltChunk,
    CrystalInputs,
    LargeCell,
    as_structure_list,
    collect_chunks,
    find_large_cells,
    iter_build,
    to_structure,
    uses_workers,
    warn_found_large_cells,
    warn_ordered,
)
from dimfeat.progress import progress_bar, progress_options
from dimfeat.weights import (
    CONFIG_FILE,
    MODEL_FILE,
    InputSettings,
    encoder_sha256,
    resolve_weights,
)
from dimfeat.weights_folder import MAX_CONFIG_BYTES, check_model_size

if TYPE_CHECKING:
    from dimfeat.vector_cache import VectorCache

__all__ = [
    "INFERENCE_BATCH_SIZE",
    "MAX_BONDS_PER_BATCH",
    "EncoderRuntime",
    "inference_batches",
    "input_settings",
    "run_batches",
    "seeded",
    "shared_runtime",
]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the CPU torch RNG seeded by ``seed``, restoring the caller's RNG after.

    Parameters
    ----------
    seed : int
        Seed of :func:`torch.manual_seed` inside the block.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class EncoderRuntime:
    """An encoder with the input settings it expects and where it came from.

    Create one with :meth:`create` (or :meth:`from_weights`); turn structures
    into model inputs with :meth:`build` and inputs into vectors with :meth:`encode`.

    Parameters
    ----------
    encoder : SiteNetEncoder
    inputs : InputSettings
        ``max_atoms`` and ``symprec`` used by :meth:`build`.
    config : dict
        ``config.json`` of the weights (``{}`` for random weights).
    weights : str or None
        The weights source as given (``None`` for random weights).
    seed : int or None
        Seed of random weights (``None`` for loaded weights).
    """

    encoder: SiteNetEncoder
    inputs: InputSettings = field(default_factory=InputSettings)
    config: dict = field(default_factory=dict)
    weights: str | None = None
    seed: int | None = None

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        weights: Any,
        *,
        seed: int = 0,
        global_dim: int | None = None,
        max_atoms: int | None = None,
        symprec: float | None = None,
        encoder_config: EncoderConfig | None = None,
    ) -> EncoderRuntime:
        """The runtime of ``weights``, or of random weights when ``weights`` is ``None``.

        Parameters
        ----------
        weights : str, path or None
            A bundled name, a weights folder or a Hub id (see
            :func:`dimfeat.weights.resolve_weights`); ``None``: random weights.
        seed : int, default=0
            Seed of random weights, drawn under :func:`seeded` (ignored for loaded ones).
        global_dim : int or None, default=None
            Length of the vector: the size of random weights (default 128), or a check on
            loaded ones.
        max_atoms, symprec : optional
            Input settings overriding those recorded with the weights (default 50 and 0.01).
        encoder_config : EncoderConfig, optional
            Architecture of random weights (``global_dim`` then overrides its width).

        Returns
        -------
        EncoderRuntime

        Raises
        ------
        ValueError
            If ``global_dim`` does not match loaded weights.
        dimfeat.weights.WeightsError
            If the weights cannot be found or verified.
        """
        if weights is None:  # random weights, drawn without touching the caller's RNG
            config = encoder_config or EncoderConfig()
            if global_dim is not None and global_dim != config.global_dim:
                config = EncoderConfig(**{**config.__dict__, "global_dim": global_dim})
            with seeded(seed):
                encoder = SiteNetEncoder(config).eval()
            inputs = input_settings({}, max_atoms=max_atoms, symprec=symprec)
            return cls(encoder, inputs, {}, weights=None, seed=seed)
        runtime = cls.from_weights(weights, max_atoms=max_atoms, symprec=symprec)
        if global_dim is not None and global_dim != runtime.n_features:
            raise ValueError(
                f"global_dim={global_dim} does not match the {runtime.n_features}-d "
                f"weights {weights!r}; use weights=None to train a new size"
            )
        return runtime

    @classmethod
    def from_weights(
        cls, weights: Any, *, max_atoms: int | None = None, symprec: float | None = None
    ) -> EncoderRuntime:
        """Load and verify weights (see :func:`dimfeat.weights.load_encoder`).

        Parameters
        ----------
        weights : str or path
            A bundled name, a weights folder or a Hub id.
        max_atoms, symprec : optional
            Override the input settings recorded with the weights.

        Returns
        -------
        EncoderRuntime
        """
        encoder, config = load_weights(resolve_weights(weights))
        inputs = input_settings(config, max_atoms=max_atoms, symprec=symprec)
        return cls(encoder, inputs, config, weights=str(weights))

    # -- use ------------------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Length of the crystal vector."""
        return self.encoder.config.global_dim

    def vector_settings(self) -> dict[str, Any]:
        """What, besides the structure, decides this runtime's vectors: the one description
        that every store of vectors keys on (the vector cache, stream manifests).

        Returns
        -------
        dict
            ``encoder_sha256``: :func:`dimfeat.weights.encoder_sha256` of the encoder in use
            (architecture, distance expansion and cutoff included, and parameters: loaded,
            random or trained alike); ``inputs``: the input settings in use (``max_atoms``,
            ``symprec``), recorded ones or overrides.
        """
        return {
            "encoder_sha256": encoder_sha256(self.encoder),
            "inputs": dict(self.inputs.__dict__),
        }

    def build(
        self,
        structures: Any,
        *,
        n_jobs: int = 1,
        ignore_errors: bool = False,
        disorder: str = "error",
        progress: bool | dict = False,
        owner: str = "dimfeat",
        positions: Sequence[int] | None = None,
        scope: Hashable | None = None,
    ) -> tuple[list[CrystalInputs | None], dict[int, str]]:
        """Model inputs of structures, with this runtime's input settings.

        Parameters
        ----------
        structures : sequence
            Structures in any form :func:`dimfeat.inputs.to_structure` accepts (or a
            one-column DataFrame / Series of them).
        n_jobs : int, default=1
            Processes building the inputs (joblib; -1: all cores).
        ignore_errors : bool, default=False
            ``None`` for a structure that fails (its error in the returned dict) instead of
            raising.
        disorder : {"error", "majority"}, default="error"
            Policy for partial occupancies (see :func:`dimfeat.inputs.build_many`).
        progress : bool or dict, default=False
            A tqdm bar (a dict: tqdm keyword arguments).
        owner : str, default="dimfeat"
            Named in the progress bar's description.
        positions : sequence of int, optional
            Positions that error messages and warnings name (see
            :func:`dimfeat.inputs.build_many`).
        scope : hashable, optional
            Names each large cell once per scope in this process (see
            :func:`dimfeat.inputs.warn_large_cells`); ``None``: on every call.

        Returns
        -------
        inputs : list of CrystalInputs or None
        errors : dict of int to str
            Error text of each failed structure, by index in ``structures``.

        Warns
        -----
        dimfeat.LargeCellWarning
            One, for the structures with more atoms than ``max_atoms`` in the primitive cell
            (each is used as a single cell, outside the training distribution).
        """
        return collect_chunks(
            self.build_chunks(
                structures,
                n_jobs=n_jobs,
                ignore_errors=ignore_errors,
                disorder=disorder,
                progress=progress,
                owner=owner,
                positions=positions,
                scope=scope,
            )
        )

    def build_chunks(
        self,
        structures: Any,
        *,
        n_jobs: int = 1,
        ignore_errors: bool = False,
        disorder: str = "error",
        progress: bool | dict = False,
        owner: str = "dimfeat",
        positions: Sequence[int] | None = None,
        scope: Hashable | None = None,
    ) -> Iterator[BuiltChunk]:
        """:meth:`build`, one chunk at a time as the worker processes finish them
        (:func:`dimfeat.inputs.iter_build`): a caller can encode a chunk while the next is built.

        Parameters are those of :meth:`build`; each chunk's ``errors`` are keyed by index in
        ``structures``. The warning about large cells comes once, after the last chunk.

        Yields
        ------
        dimfeat.inputs.BuiltChunk
        """
        large: list[LargeCell] = []  # beyond max_atoms, by index in ``structures``
        for chunk in iter_build(
            as_structure_list(structures),
            max_atoms=self.inputs.max_atoms,
            symprec=self.inputs.symprec,
            n_jobs=n_jobs,
            ignore_errors=ignore_errors,
            disorder=disorder,
            progress=progress_options(progress, f"{owner}: model inputs"),
            positions=positions,
        ):
            large += [
                dataclasses.replace(cell, index=chunk.start + cell.index)
                for cell in find_large_cells(chunk.inputs, self.inputs.max_atoms)
            ]
            yield chunk
        if positions is not None:
            large = [dataclasses.replace(cell, index=int(positions[cell.index])) for cell in large]
        warn_found_large_cells(large, self.inputs.max_atoms, scope=scope)

    def vectors(
        self,
        structures: Any,
        encode: Callable[[list[CrystalInputs], bool | dict], np.ndarray] | None = None,
        *,
        cache: VectorCache | None = None,
        ignore_errors: bool = False,
        progress: bool | dict = False,
        owner: str = "dimfeat",
        batch_size: int = INFERENCE_BATCH_SIZE,
        **build_options: Any,
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Crystal vectors of structures: the one path from structures to vectors.

        Without ``cache``: :meth:`build_chunks` (which reads each structure), each chunk passed
        to ``encode`` as it arrives, so that with ``n_jobs`` worker processes the encoder runs
        while they build the next chunks. With the default ``encode`` and ``n_jobs`` processes
        (:func:`dimfeat.inputs.uses_workers`), worker processes (with two, one worker and this
        process) build *and* encode chunks instead (:mod:`dimfeat.worker_vectors`) and one
        progress bar covers both. With
        ``cache``: each structure is read once here, looked up by its fingerprint
        (:func:`dimfeat.fingerprint.structure`); the rest are built and encoded as above, and
        stored.

        Parameters
        ----------
        structures : sequence
            As for :meth:`build`.
        encode : callable, optional
            ``encode(inputs, progress)`` maps a list of :class:`~dimfeat.inputs.CrystalInputs`
            to their vectors, shape ``(n, n_features)``, showing a progress bar as ``progress``
            says (``False`` when the inputs come in several chunks: this method then shows one
            bar over them); default :meth:`encode` on the CPU.
        cache : dimfeat.vector_cache.VectorCache, optional
            Vectors already computed, by structure fingerprint (its context must describe this
            runtime and ``build_options``); the new ones are stored in it, one ``put_many`` per
            call.
        ignore_errors : bool, default=False
            NaN rows for structures that fail, their error texts returned, instead of raising.
        progress : bool or dict, default=False
            tqdm bars while building and (with the default ``encode``) encoding.
        owner : str, default="dimfeat"
            Named in the progress bars' descriptions.
        batch_size : int, default=INFERENCE_BATCH_SIZE
            Most crystals per encoder batch of the default ``encode``.
        **build_options
            ``n_jobs``, ``disorder``, ``scope`` of :meth:`build`.

        Returns
        -------
        vectors : ndarray of shape (n_structures, n_features), float32
            NaN rows for the structures that failed.
        errors : dict of int to str
            Error text by position in ``structures``.
        """
        items = as_structure_list(structures)
        vectors = np.full((len(items), self.n_features), np.nan, dtype=np.float32)
        errors: dict[int, str] = {}
        keys: dict[int, str] = {}
        todo = list(range(len(items)))
        if cache is not None:
            for i, item in enumerate(items):
                try:
                    items[i] = to_structure(item, i)  # read once; the builder takes it as is
                except Exception:
                    if not ignore_errors:
                        raise
                    errors[i] = traceback.format_exc()
                    continue
                keys[i] = fingerprint.structure(items[i])
            stored = cache.get_many(list(keys.values()))
            for i, found in zip(keys, stored, strict=True):
                if found is not None and found.shape == (self.n_features,):
                    vectors[i] = found
            todo = [i for i in keys if np.isnan(vectors[i]).all()]
        if not todo:
            return vectors, dict(sorted(errors.items()))
        targets = [items[i] for i in todo]
        if encode is None and uses_workers(build_options.get("n_jobs", 1), len(todo)):
            chunks = self._vectors_in_workers(
                targets, todo, ignore_errors, progress, owner, batch_size, **build_options
            )
        else:
            chunks = self._vectors_here(
                targets, todo, encode, ignore_errors, progress, owner, batch_size, **build_options
            )
        encoded: list[int] = []
        for start, rows, chunk_errors in chunks:
            errors.update({todo[k]: text for k, text in chunk_errors.items()})
            done = [k for k in range(start, start + len(rows)) if k not in chunk_errors]
            vectors[[todo[k] for k in done]] = rows[[k - start for k in done]]
            encoded += [todo[k] for k in done]
        if cache is not None and encoded:
            cache.put_many([keys[i] for i in encoded], vectors[encoded])
        return vectors, dict(sorted(errors.items()))

    def _vectors_here(
        self,
        structures: list,
        positions: list[int],
        encode: Callable[[list[CrystalInputs], bool | dict], np.ndarray] | None,
        ignore_errors: bool,
        progress: bool | dict,
        owner: str,
        batch_size: int,
        **build_options: Any,
    ) -> Iterator[tuple[int, np.ndarray, dict[int, str]]]:
        """(start, rows, errors) of each chunk of :meth:`build_chunks`, encoded in this process
        as it arrives (rows of failed structures are NaN); see :meth:`vectors`."""
        if encode is None:

            def encode(inputs: list[CrystalInputs], progress: bool | dict) -> np.ndarray:
                return self.encode(inputs, progress=progress, batch_size=batch_size)

        built = self.build_chunks(
            structures,
            ignore_errors=ignore_errors,
            progress=progress,
            owner=owner,
            positions=positions,  # errors and warnings name the position in the caller's input
            **build_options,
        )
        first = next(built)
        chunked = len(first.inputs) < len(structures)  # workers build the rest meanwhile
        # one chunk: the encoder's own progress bar; several: one bar over the chunks here
        options = progress_options(progress, f"{owner}: encoding")
        bar = progress_bar(options if chunked else False, desc="encoding", total=len(structures))
        try:
            with composition_memo(self.encoder):  # each composition once for the whole call
                for chunk in itertools.chain([first], built):
                    rows = rows_of_built(
                        chunk.inputs,
                        self.n_features,
                        lambda inputs: encode(inputs, False if chunked else options),
                    )
                    yield chunk.start, rows, chunk.errors
                    if bar is not None:
                        bar.update(len(chunk.inputs))
        finally:
            if bar is not None:
                bar.close()

    def _vectors_in_workers(
        self,
        structures: list,
        positions: list[int],
        ignore_errors: bool,
        progress: bool | dict,
        owner: str,
        batch_size: int,
        *,
        n_jobs: int = 1,
        disorder: str = "error",
        scope: Hashable | None = None,
    ) -> Iterator[tuple[int, np.ndarray, dict[int, str]]]:
        """(start, rows, errors) of each chunk, built and encoded by worker processes
        (:func:`dimfeat.worker_vectors.iter_worker_vectors`); see :meth:`vectors`."""
        from dimfeat.worker_vectors import iter_worker_vectors

        bar = progress_bar(
            progress_options(progress, f"{owner}: model inputs and encoding"),
            desc="vectors",
            total=len(structures),
        )
        large: list[LargeCell] = []
        n_ordered = 0
        try:
            for chunk in iter_worker_vectors(
                structures,
                self.encoder,
                max_atoms=self.inputs.max_atoms,
                symprec=self.inputs.symprec,
                n_jobs=n_jobs,
                batch_size=batch_size,
                ignore_errors=ignore_errors,
                disorder=disorder,
                positions=positions,
            ):
                large += chunk.large
                n_ordered += chunk.n_ordered
                yield chunk.start, chunk.vectors, chunk.errors
                if bar is not None:
                    bar.update(len(chunk.vectors))
        finally:
            if bar is not None:
                bar.close()
        warn_ordered(n_ordered)
        named = [dataclasses.replace(cell, index=int(positions[cell.index])) for cell in large]
        warn_found_large_cells(named, self.inputs.max_atoms, scope=scope)

    def encode(
        self, inputs: Sequence[CrystalInputs], *, device: torch.device | str = "cpu", **options: Any
    ) -> np.ndarray:
        """Crystal vectors of model inputs (float32, in input order).

        Parameters
        ----------
        inputs : sequence of CrystalInputs
        device : torch.device or str, default="cpu"
            The encoder is moved there and put in eval mode.
        **options
            Keyword options of :func:`run_batches` (``batch_size``, ``progress``,
            ``timings``).

        Returns
        -------
        ndarray of shape (n_inputs, n_features), float32
        """
        device = torch.device(device)
        encoder = self.encoder
        first = next(encoder.parameters(), None)
        if encoder.training or (first is not None and first.device != _full_device(device)):
            encoder = encoder.to(device).eval()  # (moving costs milliseconds: only when needed)
        with composition_memo(encoder):  # a context channel: each composition once per call
            return run_batches(inputs, encoder, self.n_features, device=device, **options)


def _full_device(device: torch.device) -> torch.device:
    """``cuda`` as the ``cuda:N`` a tensor reports (the current device)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


#: Runtimes loaded in this process, by weights identity (see :func:`shared_runtime`).
_SHARED: dict[tuple, EncoderRuntime] = {}


def shared_runtime(weights: Any, *, seed: int = 0, global_dim: int | None = None) -> EncoderRuntime:
    """:meth:`EncoderRuntime.create`, loaded once per process and shared by its callers.

    The cache is keyed by what the encoder is: the sha256 of the bytes of the weights file and of
    ``config.json`` as they are on disk now (sizes checked first, so an oversized file is refused
    unread, then hashed in blocks on every call, a few milliseconds; a file changed or swapped after
    the first load is a new key, loaded and verified again), or the seed and width of random
    weights; a name that now points at other weights is a new key. A process forked after the first
    load (matminer's process pool, joblib's ``fork`` workers) inherits the cache and loads nothing.
    The encoder is shared: callers must not train it in place
    (:class:`~dimfeat.DeepInfoMaxFeaturizer` trains a fresh copy when ``epochs > 0``).

    Parameters
    ----------
    weights : str, path or None
        As for :meth:`EncoderRuntime.create`.
    seed : int, default=0
        Seed of random weights (ignored for loaded ones).
    global_dim : int or None, default=None
        As for :meth:`EncoderRuntime.create`.

    Returns
    -------
    EncoderRuntime
        With ``weights`` as given (a name, a folder or a Hub id).
    """
    if weights is None:
        key: tuple = ("random", seed, global_dim)
        folder = None
    else:
        folder = resolve_weights(weights)
        try:
            # sizes first (metadata only): an oversized file is refused, never read
            check_model_size(folder / MODEL_FILE)
            if (folder / CONFIG_FILE).stat().st_size > MAX_CONFIG_BYTES:
                raise OSError("config.json too large")  # read_config says why, unread
            digests = tuple(
                fingerprint.sha256_file(folder / name) for name in (MODEL_FILE, CONFIG_FILE)
            )
        except OSError:  # not a readable weights folder: let create() say why
            return EncoderRuntime.create(weights, seed=seed, global_dim=global_dim)
        key = ("weights", digests, global_dim)
    runtime = _SHARED.get(key)
    if runtime is None:
        runtime = EncoderRuntime.create(
            weights if folder is None else folder, seed=seed, global_dim=global_dim
        )
        _SHARED[key] = runtime
    if weights is not None:
        runtime = dataclasses.replace(runtime, weights=str(weights))
    return runtime


def input_settings(
    config: dict, *, max_atoms: int | None = None, symprec: float | None = None
) -> InputSettings:
    """Input settings of weights: explicit values, else those recorded, else the defaults.

    Parameters
    ----------
    config : dict
        ``config.json`` of the weights (``{}``: none recorded).
    max_atoms, symprec : optional
        Values that override the recorded ones.

    Returns
    -------
    InputSettings
    """
    saved = config.get("inputs", {}) if config else {}
    default = InputSettings()
    return InputSettings(
        max_atoms=max_atoms or saved.get("max_atoms", default.max_atoms),
        symprec=symprec or saved.get("symprec", default.symprec),
    )
