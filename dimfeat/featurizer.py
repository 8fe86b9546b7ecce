"""``DeepInfoMaxFeaturizer``: the scikit-learn transformer and matminer featuriser face.

It delegates: structures -> vectors to :meth:`dimfeat.runtime.EncoderRuntime.vectors` (which builds
the inputs with :mod:`dimfeat.inputs`, looks them up in the ``cache=`` and encodes the rest);
weights -> :mod:`dimfeat.weights`; training -> :mod:`dimfeat.training`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from joblib import Memory
from matminer.featurizers.base import BaseFeaturizer
from sklearn.base import _fit_context
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from dimfeat.channels import CHANNELS, TwoChannelConfig, TwoChannelEncoder, channel_slice
from dimfeat.encoder import EncoderConfig
from dimfeat.infomax import FALSE_SAMPLE_KINDS, OPTIONAL_FALSE_SAMPLE_KINDS
from dimfeat.inputs import DISORDER_POLICIES, CrystalInputs, check_structures
from dimfeat.progress import progress_options
from dimfeat.record import TrainingRecord
from dimfeat.runtime import INFERENCE_BATCH_SIZE, EncoderRuntime, input_settings, shared_runtime
from dimfeat.training import TrainingConfig, resolve_device, train_dim
from dimfeat.training_config import setting_bounds, settings_of_record
from dimfeat.vector_cache import VectorCache, cache_context, cache_folder
from dimfeat.weights import DEFAULT_WEIGHTS

__all__ = ["DeepInfoMaxFeaturizer"]

#: Parameters that decide the encoder :meth:`DeepInfoMaxFeaturizer.fit` makes; with
#: ``epochs > 0`` the training parameters (:data:`_TRAINING_PARAMS`) too.
_MODEL_PARAMS = ("weights", "global_dim", "random_state", "epochs")
#: Parameters that are :class:`~dimfeat.training.TrainingConfig` fields of the same name: their
#: defaults, constraints and meaning are declared there once (``epochs`` and ``random_state``
#: are the featuriser's own: 0 epochs loads weights, and the seed also seeds random weights).
_TRAINING_PARAMS = (
    "lr",
    "site_budget",
    "validation_fraction",
    "patience",
    "false_samples",
    "alpha",
    "beta",
    "composition_weight",
)


def _constraints(bounds: list) -> list:
    """scikit-learn constraints of a setting's declared bounds (see ``setting``)."""
    kinds = {"int": Integral, "float": Real}
    return [
        Interval(kinds[b[0]], b[1], b[2], closed=b[3]) if isinstance(b, tuple) else b
        for b in bounds
    ]


class DeepInfoMaxFeaturizer(BaseFeaturizer):
    """Learned crystal vectors from a Site-Net encoder trained by Deep InfoMax.

    Each ordered, periodic structure becomes a fixed-length vector (128 numbers by default)
    that encodes its composition and its structure (polymorphs of one formula get distinct
    vectors; the training docs give the measurements). The encoder was trained without property
    labels (self-supervised Deep InfoMax), so the vector suits small supervised models. It is
    invariant to site order, rotation, translation and the choice of primitive, conventional
    or super cell of the same crystal.

    ``fit`` trains (``epochs > 0``) or only loads (``epochs=0``) the encoder; ``transform``,
    ``featurize`` and ``featurize_dataframe`` run batched inference. With ``epochs=0`` no fit is
    needed: the weights load on first use.

    Parameters
    ----------
    weights : str, path or None, default="sitenet-dim-mp36k"
        Starting weights: a bundled name (:func:`dimfeat.weights.available_weights`), a local
        folder written by :meth:`save_pretrained`, or a Hugging Face Hub id
        ``"owner/name@revision"``. ``None`` gives a randomly initialised encoder seeded by
        ``random_state`` (the paper's untrained baseline, or a start for training from scratch).
    epochs : int, default=0
        DIM training epochs run by :meth:`fit` on the structures it is given (``y`` is ignored).
        Two-channel weights (:mod:`dimfeat.channels`) train channel by channel, each with the
        objective its own training recorded (false samples, ``alpha``, ``beta``,
        ``global_trains_local``, ...) and this featuriser's optimisation settings (``epochs``,
        ``lr``, ``site_budget``, ``validation_fraction``, ``patience``, ``random_state``); the
        objective parameters below must then keep their defaults, and a channel that records
        no recipe is refused. ``checkpoint_dir`` then holds one folder per channel.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        anything else (``"mps"``, ``"meta"``) is refused with a ``ValueError``.
    batch_size : int, default=256
        Crystals per *inference* batch (:data:`dimfeat.runtime.INFERENCE_BATCH_SIZE`); it does
        not change the vectors. Deep InfoMax training batches are bounded by ``site_budget``
        (sites), not by this. The same name means the same in
        :class:`~dimfeat.SiteNetRegressor`: crystals per batch of the encoder.
    max_atoms : int or None, default=None
        Supercell size limit (the paper's 50); ``None`` takes the value the weights were trained
        with. Cells with more atoms than this in the primitive cell are featurised from a single
        image, and named by one :class:`dimfeat.LargeCellWarning` per call (with their count and
        positions; a cell already named in this process for the same parameters is not named
        again, so a grid search warns once).
    symprec : float or None, default=None
        Tolerance (Å) of the primitive-cell search; ``None`` takes the weights' value (0.01).
    disorder : {"error", "majority"}, default="error"
        Structures with partial occupancies: raise an error naming the structure, or keep each
        site's majority species (ties go to the lowest atomic number; vacancies are ignored) and
        warn once per call with the number of structures ordered that way.
    global_dim : int or None, default=None
        Length of the vector when ``weights=None`` (default 128); must match the weights
        otherwise.
    channel : {"context", "structure"} or None, default=None
        For two-channel weights (:mod:`dimfeat.channels`): one channel alone (its columns
        ``dim_ctx_*`` or ``dim_struct_*``); ``None``: both. Single-channel weights refuse it.
    lr : float, default=8.12e-4
        AdamW learning rate for training.
    site_budget : int, default=1200
        Unique sites per training batch.
    validation_fraction : float, default=0.05
        Share of the structures given to :meth:`fit` held out (at least 2) to select the best
        epoch by the self-supervised loss; the same default as ``TrainingConfig``, ``dimfeat
        train`` and :class:`~dimfeat.SiteNetRegressor`
        (:data:`dimfeat.training.VALIDATION_FRACTION`).
    patience : int or None, default=10
        Early stopping patience in epochs.
    false_samples : tuple of str, default=FALSE_SAMPLE_KINDS
        Kinds of false sample used by DIM training (``"other"``, ``"polymorph"``,
        ``"composition"``, ``"permutation"``, ``"strain"``, and the optional
        ``"substitution"``); ``("other",)`` reruns the paper's ablation.
    alpha, beta : float, default=1.0, 0.01
        Weights of the Jensen-Shannon and KL terms.
    composition_weight : float, default=DEFAULT_COMPOSITION_WEIGHT
        Weight of the composition read-out term of DIM training (0: the paper's objective; see
        :class:`~dimfeat.infomax.DeepInfoMaxLoss`).
    checkpoint_dir : str or None, default=None
        Folder for per-epoch checkpoints; an interrupted :meth:`fit` resumes from it.
    n_jobs : int, default=1
        Processes (-1 means all cores) for calls of more than 64 structures. On the CPU, each
        builds the model inputs of a chunk of structures at a time and encodes them with one
        thread: with two, one worker process and the calling process, the last chunks cut
        smaller so that both finish together (on two cores faster than two workers alone:
        docs/method.md); with more, ``n_jobs`` worker processes (joblib). The
        first call also starts the workers. On a GPU, ``n_jobs`` worker processes build the
        inputs and the encoder runs in the calling process on each chunk as it arrives.
        matminer's ``set_n_jobs`` sets it (matminer's own process pool is never used).
    cache : str, path, joblib.Memory or None, default=None
        Folder where vectors are kept (a ``Memory`` gives its ``location``): a structure
        featurised before with the same encoder and settings is read back instead of encoded
        again, so repeated transforms (cross-validation folds, grid search, a notebook run
        again) are nearly free. The key is a sha256 of the encoder's parameters, the input
        settings, the device type, the dimfeat version and code, and the structure's lattice,
        coordinates and species (:mod:`dimfeat.vector_cache`); another encoder or a changed
        structure is a miss. Warnings about a structure (a large cell, majority ordering) are
        given when it is first encoded only.
    random_state : int, default=0
        Seeds random initialisation, the validation split and training.
    verbose : bool, default=False
        Progress bars (on stderr) for ``fit`` and ``transform`` (building the model inputs and
        encoding), and timing messages. ``featurize_many`` and ``featurize_dataframe`` follow
        matminer's ``pbar`` argument instead.

    Attributes
    ----------
    encoder_ : SiteNetEncoder or TwoChannelEncoder
        The encoder, after :meth:`fit`. It is the fitted state of the parameters ``fit`` saw:
        after ``set_params`` of ``weights``, ``global_dim``, ``random_state``, ``epochs`` (or,
        with ``epochs > 0``, a training parameter) it is no longer used: with ``epochs=0`` the
        weights now named load on first use, with ``epochs > 0`` ``transform`` raises
        ``NotFittedError`` until ``fit`` is called again.
    history_ : list of dict
        Per-epoch training record (train/valid local and global DIM and KL losses, seconds);
        empty when ``epochs=0``. For two-channel weights, the records of the context channel's
        epochs then the structure channel's, each with ``channel`` naming it.
    weights_config_ : dict
        ``config.json`` of the starting weights (``{}`` for ``weights=None``).
    n_features_out_ : int
        Length of the vector.

    See Also
    --------
    dimfeat.baselines.OrbitalFieldMatrixFeaturizer, dimfeat.baselines.XRDPatternFeaturizer

    Notes
    -----
    Cost per structure is dominated by the primitive-cell search and the minimum-image distances
    (well under a millisecond each for cells of <= 50 atoms) and the encoder; see
    ``benchmarks/perf/throughput.py``. Bad input (disordered structures, non-structures, overlapping
    atoms, NaN coordinates, unsupported elements) raises an error naming the structure's
    position; ``featurize_dataframe(..., ignore_errors=True)`` gives NaN rows instead.

    References
    ----------
    .. [1] M. Moran et al., "Deep InfoMax as an effective self-supervised learning methodology
       in materials informatics", Digital Discovery 4, 790-811 (2025), doi:10.1039/d4dd00202d.
    .. [2] M. Moran et al., "Site-Net: using global self-attention and real-space supercells to
       capture long-range interactions in crystal structures", Digital Discovery 2, 1297-1310
       (2023), doi:10.1039/d3dd00005b.
    .. [3] R. D. Hjelm et al., "Learning deep representations by mutual information estimation
       and maximization", ICLR (2019), arXiv:1808.06670.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from dimfeat import DeepInfoMaxFeaturizer
    >>> cscl = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> X = DeepInfoMaxFeaturizer().transform([cscl])
    >>> X.shape
    (1, 128)
    """

    #: Plain parameter (shadows matminer's ``n_jobs`` property, which the batched
    #: ``featurize_many`` does not use); matminer's :meth:`set_n_jobs` sets it.
    n_jobs: int = 1

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's declared convention
        "weights": [str, os.PathLike, None],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_atoms": [Interval(Integral, 1, None, closed="left"), None],
        "symprec": [Interval(Real, 0, None, closed="neither"), None],
        "disorder": [StrOptions(set(DISORDER_POLICIES))],
        "global_dim": [Interval(Integral, 1, None, closed="left"), None],
        "channel": [StrOptions(set(CHANNELS)), None],
        **{name: _constraints(setting_bounds(name)) for name in _TRAINING_PARAMS},
        "checkpoint_dir": [str, os.PathLike, None],
        "n_jobs": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Integral, None, -1, closed="right"),
        ],
        "cache": [str, os.PathLike, Memory, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        weights: str | None = DEFAULT_WEIGHTS,
        *,
        epochs: int = 0,
        device: str = "auto",
        batch_size: int = INFERENCE_BATCH_SIZE,
        max_atoms: int | None = None,
        symprec: float | None = None,
        disorder: str = "error",
        global_dim: int | None = None,
        channel: str | None = None,
        lr: float = TrainingConfig.lr,
        site_budget: int = TrainingConfig.site_budget,
        validation_fraction: float = TrainingConfig.validation_fraction,
        patience: int | None = TrainingConfig.patience,
        false_samples: tuple[str, ...] = TrainingConfig.false_samples,
        alpha: float = TrainingConfig.alpha,
        beta: float = TrainingConfig.beta,
        composition_weight: float = TrainingConfig.composition_weight,
        checkpoint_dir: str | None = None,
        n_jobs: int = 1,
        cache: str | os.PathLike | Memory | None = None,
        random_state: int = 0,
        verbose: bool = False,
    ) -> None:
        self.weights = weights
        self.epochs = epochs
        self.device = device
        self.batch_size = batch_size
        self.max_atoms = max_atoms
        self.symprec = symprec
        self.disorder = disorder
        self.global_dim = global_dim
        self.channel = channel
        self.lr = lr
        self.site_budget = site_budget
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.false_samples = false_samples
        self.alpha = alpha
        self.beta = beta
        self.composition_weight = composition_weight
        self.checkpoint_dir = checkpoint_dir
        self.n_jobs = n_jobs
        self.cache = cache
        self.random_state = random_state
        self.verbose = verbose

    # -- scikit-learn ---------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        from sklearn.utils import TransformerTags

        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        tags.input_tags.two_d_array = False
        tags.requires_fit = self.epochs > 0
        tags.non_deterministic = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return self.epochs == 0 or self._fitted()

    def _model_params(self) -> dict[str, Any]:
        """The parameters that decide the fitted encoder, as :meth:`fit` compares them."""
        names = _MODEL_PARAMS + (_TRAINING_PARAMS if self.epochs > 0 else ())
        params = {name: getattr(self, name) for name in names}
        params["weights"] = None if self.weights is None else os.fspath(self.weights)
        if "false_samples" in params:
            params["false_samples"] = tuple(params["false_samples"])
        return params

    def _changed_since_fit(self) -> list[str]:
        """Parameters set (``set_params`` or assignment) since :meth:`fit` that decide the
        encoder: its fitted state is then not theirs."""
        fitted = self.__dict__.get("_fit_params")
        if fitted is None or not hasattr(self, "encoder_"):
            return []
        now = self._model_params()
        missing = object()
        return sorted(
            k for k in set(fitted) | set(now) if fitted.get(k, missing) != now.get(k, missing)
        )

    def _fitted(self) -> bool:
        """Whether the fitted state (``encoder_``, ``history_``) is that of the parameters now."""
        return hasattr(self, "encoder_") and not self._changed_since_fit()

    def _check_fitted(self) -> None:
        """``check_is_fitted``, naming the parameters changed since fit when that is why."""
        changed = self._changed_since_fit()
        if changed and self.epochs > 0:
            raise NotFittedError(
                f"this {type(self).__name__} was fitted with other {', '.join(changed)}: its "
                "encoder is not one of the parameters it has now (with epochs > 0 they decide "
                "the training); call fit again"
            )
        check_is_fitted(self)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Sequence, y: Any = None) -> DeepInfoMaxFeaturizer:
        """Load the starting weights and, if ``epochs > 0``, train on ``X`` (``y`` is ignored).

        Parameters
        ----------
        X : sequence of structures
            Unlabelled structures in any form :func:`dimfeat.inputs.to_structure` accepts
            (``Structure``, ``IStructure``, structure dicts, CIF/POSCAR text, file paths, ASE
            ``Atoms``), as a list, tuple, 1-D array, pandas Series or one-column DataFrame.
            With ``epochs=0`` nothing is learned from them: only their kinds are checked.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            For an invalid parameter (before anything else is done).
        TypeError, ValueError
            For ``X`` that is not a sequence of structures (numbers, a single string, ...), or
            the first item that cannot be a crystal (the message gives its position and type);
            for fewer than 2 structures when ``epochs > 0``.
        FloatingPointError
            If training diverges (a NaN or infinite loss or weight); the featuriser is then left
            unfitted, and no NaN weights are kept.
        ValueError
            For invalid parameters, a ``site_budget`` too small for a batch of 2 crystals, or a
            ``checkpoint_dir`` holding a checkpoint of another run.
        """
        structures = check_structures(X)
        if self.epochs > 0 and len(structures) < 2:
            raise ValueError(
                f"training (epochs={self.epochs}) needs at least 2 structures, got "
                f"n_samples={len(structures)}"
            )
        # training changes the encoder in place: a fresh one; otherwise the process's shared one
        runtime = self._initial_runtime() if self.epochs > 0 else self._shared_runtime()
        if self.epochs > 0 and isinstance(runtime.encoder, TwoChannelEncoder):
            self._channel_training_configs(runtime.config)  # refused here, before any work
        self.encoder_, self.weights_config_ = runtime.encoder, runtime.config
        self.__dict__.pop("_context", None)
        self.history_: list[dict] = []
        if self.epochs > 0:
            try:
                self._train(self._inputs(structures, ignore_errors=False, progress=self.verbose)[0])
            except BaseException:
                # a failed training (e.g. a diverging loss) leaves the featuriser unfitted
                for name in ("encoder_", "weights_config_", "history_", "n_features_out_"):
                    self.__dict__.pop(name, None)
                raise
        self.n_features_out_ = len(self._labels(self.encoder_.config))
        self._fit_params = self._model_params()
        return self

    def transform(self, X: Sequence) -> np.ndarray:
        """Crystal vectors of structures.

        Parameters
        ----------
        X : sequence of structures
            A list, tuple, 1-D array or pandas Series, or a one-column DataFrame, of structures
            in any form :func:`dimfeat.inputs.to_structure` accepts: ``Structure``,
            ``IStructure``, ``Structure.as_dict()`` dicts, CIF or POSCAR text, paths of
            structure files (str or ``pathlib.Path``), ASE ``Atoms``.

        Returns
        -------
        ndarray of shape (n_structures, n_features_out)
            float32 vectors.

        Raises
        ------
        TypeError, ValueError
            For the first structure that cannot be featurised; the message gives its index.
        """
        self._validate_params()
        self._check_fitted()
        return self._vectors(X, ignore_errors=False, progress=self.verbose)[0]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output feature names ``dim_0 ... dim_{n-1}`` (object array)."""
        return np.asarray(self.feature_labels(), dtype=object)

    # -- matminer -------------------------------------------------------------------------------
    def featurize(self, structure: Any) -> list[float]:
        """Vector of one structure (equal to the row ``transform([structure])`` gives).

        ``structure`` may be in any form :func:`dimfeat.inputs.to_structure` accepts.
        """
        return self.transform([structure])[0].tolist()

    def featurize_many(
        self,
        entries: Sequence,
        ignore_errors: bool = False,
        return_errors: bool = False,
        pbar: bool | dict = True,
    ) -> list[list]:
        """Batched featurisation in the calling process (no multiprocessing pool).

        Used by matminer's ``featurize_dataframe``, which passes its ``ignore_errors``,
        ``return_errors`` and ``pbar`` arguments on.

        Parameters
        ----------
        entries : sequence of structures, or of 1-tuples of them (matminer's convention)
            Structures in any form :func:`dimfeat.inputs.to_structure` accepts.
        ignore_errors : bool, default=False
            NaN rows for structures that fail instead of raising.
        return_errors : bool, default=False
            Append the error text (or NaN) to each row; needs ``ignore_errors=True``.
        pbar : bool or dict, default=True
            Show tqdm progress bars on stderr while the model inputs are built and while they
            are encoded (a dict: keyword arguments for ``tqdm``).

        Returns
        -------
        list of list
        """
        if return_errors and not ignore_errors:
            raise ValueError("Please set ignore_errors to True to use return_errors.")
        self._validate_params()
        self._check_fitted()
        structures = [_unwrap_entry(e) for e in entries]
        vectors, errors = self._vectors(structures, ignore_errors=ignore_errors, progress=pbar)
        rows: list[list] = vectors.astype(np.float64).tolist()
        if return_errors:
            rows = [[*row, errors.get(i, float("nan"))] for i, row in enumerate(rows)]
        return rows

    def set_n_jobs(self, n_jobs: int) -> None:
        """matminer's way to set the parallelism: sets the ``n_jobs`` parameter.

        matminer's ``BaseFeaturizer.set_n_jobs`` stores ``_n_jobs`` for its multiprocessing
        pool, which this featuriser never starts (:meth:`featurize_many` is batched). Here the
        one setting is ``n_jobs``, the processes that build (and on the CPU encode) chunks of
        structures, so ``set_n_jobs(1)`` (matminer's advice against running out of
        memory) and ``MultipleFeaturizer.set_n_jobs`` reach it. The value is checked on the
        next call, as for ``set_params``.

        Parameters
        ----------
        n_jobs : int
            Processes; -1 means all cores.
        """
        self.set_params(n_jobs=n_jobs)

    def feature_labels(self) -> list[str]:
        """``dim_0`` ... ``dim_{n-1}``; for two-channel weights ``dim_ctx_0`` ...,
        ``dim_struct_0`` ... (those of ``channel`` alone when it is set)."""
        if hasattr(self, "n_features_out_") and self._fitted():
            config = self.encoder_.config
        elif self.weights is None:
            config = None
        else:
            config = self.get_runtime().encoder.config
        if config is None:
            return [f"dim_{i}" for i in range(self._n_out())]
        return self._labels(config)

    def _labels(self, config: Any) -> list[str]:
        """Feature labels of an encoder ``config`` under this featuriser's ``channel``."""
        if not isinstance(config, TwoChannelConfig):
            if self.channel is not None:
                raise ValueError(
                    f"channel={self.channel!r} needs two-channel weights; {self.weights!r} has "
                    "one channel (leave channel=None)"
                )
            return [f"dim_{i}" for i in range(config.global_dim)]
        labels = [
            f"{prefix}_{i}"
            for name, prefix in CHANNELS.items()
            for i in range(getattr(config, name).global_dim)
        ]
        return labels if self.channel is None else labels[channel_slice(config, self.channel)]

    def citations(self) -> list[str]:
        """BibTeX of the DIM paper, Site-Net and Deep InfoMax, then of the data the weights were
        trained on as their ``config.json`` credits it (the bundled weights: the Materials
        Project and CGCNN; see :func:`dimfeat.weights.weights_citations`)."""
        from dimfeat.weights import weights_citations

        return [
            "@article{moran2025dim, title={Deep InfoMax as an effective self-supervised "
            "learning methodology in materials informatics}, author={Moran, Michael and "
            "Gaultois, Michael W. and Gusev, Vladimir V. and Antypov, Dmytro and Rosseinsky, "
            "Matthew J.}, journal={Digital Discovery}, volume={4}, pages={790--811}, "
            "year={2025}, doi={10.1039/d4dd00202d}}",
            "@article{moran2023sitenet, title={Site-Net: using global self-attention and "
            "real-space supercells to capture long-range interactions in crystal structures}, "
            "author={Moran, Michael and Gaultois, Michael W. and Gusev, Vladimir V. and "
            "Rosseinsky, Matthew J.}, journal={Digital Discovery}, volume={2}, "
            "pages={1297--1310}, year={2023}, doi={10.1039/d3dd00005b}}",
            "@inproceedings{hjelm2019dim, title={Learning deep representations by mutual "
            "information estimation and maximization}, author={Hjelm, R Devon and Fedorov, "
            "Alex and Lavoie-Marchildon, Samuel and Grewal, Karan and Bachman, Phil and "
            "Trischler, Adam and Bengio, Yoshua}, booktitle={ICLR}, year={2019}}",
            *weights_citations(self.weights),
        ]

    def implementors(self) -> list[str]:
        """Who implemented this featuriser."""
        return ["dimfeat developers"]

    # -- weights --------------------------------------------------------------------------------
    def save_pretrained(self, folder: str, *, name: str | None = None) -> str:
        """Write the encoder as a weights folder (safetensors, config.json, model card).

        The folder loads back with ``DeepInfoMaxFeaturizer(weights=folder)``. Two-channel
        weights give a two-channel folder: after ``fit`` with ``epochs > 0`` each channel records
        the training it was given (its settings and its part of ``history_``), otherwise the
        channels keep the sources and training records of the starting weights.
        """
        from dimfeat.channels import save_weights

        runtime = self.get_runtime()
        start = None if self.weights is None else str(self.weights)
        data = {"description": "structures passed to DeepInfoMaxFeaturizer.fit"}
        trained = self._fitted() and bool(getattr(self, "history_", None))
        sources = None
        if isinstance(runtime.encoder, TwoChannelEncoder):
            channels = runtime.config["channels"]
            if trained:
                configs = self._channel_training_configs(runtime.config)
                training: Any = {
                    c: TrainingRecord(
                        settings=configs[c].to_dict(),
                        history=[
                            {k: v for k, v in h.items() if k != "channel"}
                            for h in self.history_
                            if h["channel"] == c
                        ],
                        start_weights=f"{start} ({c} channel)",
                        data=data,
                        note="DIM training continued by DeepInfoMaxFeaturizer.fit with the "
                        "channel's recorded recipe",
                    )
                    for c in CHANNELS
                }
            else:
                training = {c: (channels[c].get("source") or {}).get("training") for c in CHANNELS}
                sources = {c: channels[c].get("source") or {} for c in CHANNELS}
        elif trained:
            training = TrainingRecord(
                settings=self._training_config().to_dict(),
                history=self.history_,
                start_weights=start,
                data=data,
            )
        else:
            training = runtime.config.get("training")
        return str(
            save_weights(
                folder,
                runtime.encoder,
                inputs=runtime.inputs,
                training=training,
                name=name,
                sources=sources,
            )
        )

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool = False) -> str:
        """Upload the weights folder to the Hugging Face Hub; returns the commit id."""
        import tempfile

        from dimfeat.hub import upload_folder

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, name=repo_id)
            return upload_folder(tmp, repo_id, token=token, private=private)

    # -- internals ------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        """scikit-learn's check of ``_parameter_constraints``, then what it cannot express.

        Remembered for the current parameter values (matminer calls ``featurize`` once per
        structure, and validation costs milliseconds).
        """
        key = self._params_key()
        if key is not None and self.__dict__.get("_validated") == key:
            return
        self._check_params()
        if key is not None:
            self.__dict__["_validated"] = key

    def _params_key(self) -> str | None:
        """The parameters as text (``None`` when one has no repr)."""
        try:
            return repr(sorted(self.get_params(deep=False).items()))
        except Exception:  # pragma: no cover - a value without a repr
            return None

    def _check_params(self) -> None:
        super()._validate_params()
        if isinstance(self.symprec, bool | np.bool_):  # a bool passes as a Real
            raise InvalidParameterError(
                f"The 'symprec' parameter of {type(self).__name__} must be a positive number "
                f"(Å) or None. Got {self.symprec!r} instead."
            )
        kinds = self.false_samples
        known = FALSE_SAMPLE_KINDS + OPTIONAL_FALSE_SAMPLE_KINDS
        if not kinds or not all(isinstance(k, str) and k in known for k in kinds):
            raise InvalidParameterError(
                f"The 'false_samples' parameter of {type(self).__name__} must be a non-empty "
                f"tuple of kinds among {known}. Got {kinds!r} instead."
            )
        try:
            resolve_device(self.device)
        except (RuntimeError, ValueError) as exc:  # not a device dimfeat runs on, or absent
            raise InvalidParameterError(
                f"The 'device' parameter of {type(self).__name__} must be a device that dimfeat "
                f"runs on and this machine has. Got {self.device!r} instead: {exc}"
            ) from exc

    def get_runtime(self) -> EncoderRuntime:
        """The encoder in use, with its input settings and provenance.

        The fitted encoder after :meth:`fit`; otherwise the starting weights, loaded on first
        use (random weights seeded by ``random_state`` when ``weights=None``). ``max_atoms``
        and ``symprec`` override the settings recorded with the weights. A fitted encoder is
        used only while the parameters that made it (``weights``, ``global_dim``,
        ``random_state``, ``epochs`` and, with ``epochs > 0``, the training parameters) are
        unchanged: after ``set_params`` of one of them, ``epochs=0`` loads the weights now
        named and ``epochs > 0`` raises ``NotFittedError`` until :meth:`fit` runs again.

        Returns
        -------
        dimfeat.runtime.EncoderRuntime
        """
        changed = self._changed_since_fit()
        if changed and self.epochs > 0:
            self._check_fitted()  # raises: the fitted encoder is not of these parameters
        if hasattr(self, "encoder_") and not changed:
            base = EncoderRuntime(
                self.encoder_,
                config=self.weights_config_,
                weights=None if self.weights is None else str(self.weights),
                seed=self.random_state if self.weights is None else None,
            )
        else:
            key = (self.weights, self.global_dim, self.random_state)
            cached = self.__dict__.get("_lazy_runtime")
            if cached is None or cached[0] != key:
                self._validate_params()
                cached = (key, self._shared_runtime())
                self.__dict__["_lazy_runtime"] = cached
            base = cached[1]
        inputs = input_settings(base.config, max_atoms=self.max_atoms, symprec=self.symprec)
        return dataclasses.replace(base, inputs=inputs)

    def _initial_runtime(self) -> EncoderRuntime:
        return EncoderRuntime.create(
            self.weights, seed=self.random_state, global_dim=self.global_dim
        )

    def _shared_runtime(self) -> EncoderRuntime:
        """The starting weights, loaded once per process (see ``shared_runtime``)."""
        return shared_runtime(self.weights, seed=self.random_state, global_dim=self.global_dim)

    def _n_out(self) -> int:
        if hasattr(self, "n_features_out_") and self._fitted():
            return self.n_features_out_
        if self.weights is None:
            return self.global_dim or EncoderConfig().global_dim
        return self.get_runtime().n_features

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # a worker takes the runtime from its process's cache (inherited when forked), and
        # validates the parameters again where it runs
        for name in ("_lazy_runtime", "_validated", "_context"):
            state.pop(name, None)
        return state

    def _vector_cache(self, runtime: EncoderRuntime) -> VectorCache | None:
        folder = cache_folder(self.cache)
        if folder is None:
            return None
        device = resolve_device(self.device)
        encoder = runtime.encoder
        key = (id(encoder), runtime.inputs, self.disorder, device.type, folder)
        cached = self.__dict__.get("_context")
        if cached is None or cached[0] != key:
            described = runtime.vector_settings()
            context = cache_context(
                encoder_sha256=described["encoder_sha256"],
                n_features=runtime.n_features,
                max_atoms=runtime.inputs.max_atoms,
                symprec=runtime.inputs.symprec,
                disorder=self.disorder,
                device_type=device.type,
            )
            # kept: its index of the shards read so far is refreshed, not read again, per call
            cached = (key, VectorCache(folder, context))
            self.__dict__["_context"] = cached
        return cached[1]

    def _build_options(self) -> dict[str, Any]:
        """Options of :meth:`EncoderRuntime.build`: processes, disorder policy, and the scope in
        which a large cell is named once (clones with the same parameters, as in a grid search,
        are one scope)."""
        return {
            "n_jobs": self.n_jobs,
            "disorder": self.disorder,
            "owner": "DeepInfoMaxFeaturizer",
            "scope": (type(self).__name__, self._params_key() or id(self)),
        }

    def _inputs(
        self, X: Any, *, ignore_errors: bool, progress: bool | dict = False
    ) -> tuple[list[CrystalInputs | None], dict[int, str]]:
        """Model inputs of ``X`` with this featuriser's settings (:meth:`EncoderRuntime.build`)."""
        return self.get_runtime().build(
            X, ignore_errors=ignore_errors, progress=progress, **self._build_options()
        )

    def _vectors(
        self, X: Any, *, ignore_errors: bool, progress: bool | dict = False
    ) -> tuple[np.ndarray, dict[int, str]]:
        """float32 vectors of ``X`` (NaN rows for failures) and error texts by position."""
        runtime = self.get_runtime()
        self._labels(runtime.encoder.config)  # a channel= that the weights lack raises here
        # on the CPU with worker processes, each worker encodes the chunk it builds
        device = resolve_device(self.device)
        on_cpu = device.type == "cpu"
        start_time = time.perf_counter()
        vectors, errors = runtime.vectors(
            X,
            None if on_cpu and self.n_jobs != 1 else self._encode,
            cache=self._vector_cache(runtime),
            ignore_errors=ignore_errors,
            progress=progress,
            batch_size=self.batch_size,
            **self._build_options(),
        )
        if self.verbose and len(vectors):
            seconds = time.perf_counter() - start_time
            workers = f", n_jobs={self.n_jobs}" if self.n_jobs != 1 else ""
            print(f"featurised {len(vectors)} structures in {seconds:.2f} s on {device}{workers}")
        if self.channel is not None:
            vectors = vectors[:, channel_slice(runtime.encoder.config, self.channel)]
        return vectors, errors

    def _encode(self, inputs: list[CrystalInputs], progress: bool | dict = False) -> np.ndarray:
        return self.get_runtime().encode(
            inputs,
            device=resolve_device(self.device),
            batch_size=self.batch_size,
            progress=progress_options(progress, "DeepInfoMaxFeaturizer: encoding"),
        )

    def _training_config(self) -> TrainingConfig:
        return TrainingConfig(
            epochs=self.epochs,
            seed=self.random_state,
            **{name: getattr(self, name) for name in _TRAINING_PARAMS},
        )

    def _channel_training_configs(self, weights_config: dict) -> dict[str, TrainingConfig]:
        """The :class:`TrainingConfig` that continues each channel of two-channel weights.

        The objective (every setting the DIM loss takes: false samples, ``alpha``, ``beta``,
        ``global_trains_local``, ...) is the channel's own recorded recipe
        (``channels.<name>.source.training.settings``); the optimisation settings are this
        featuriser's (``epochs``, ``lr``, ``site_budget``, ``validation_fraction``,
        ``patience``, ``random_state``), the rest their defaults (a constant learning rate).

        Raises
        ------
        ValueError
            For a channel without a recorded recipe, or an objective parameter of this
            featuriser (``false_samples``, ``alpha``, ``beta``, ``composition_weight``) set
            away from its default: one value cannot be both channels' recipe.
        """
        import inspect

        defaults = inspect.signature(type(self).__init__).parameters
        recipe = {f.name for f in dataclasses.fields(TrainingConfig) if f.metadata["loss"]}
        if changed := [
            name
            for name in _TRAINING_PARAMS
            if name in recipe
            and tuple(np.atleast_1d(getattr(self, name)))
            != tuple(np.atleast_1d(defaults[name].default))
        ]:
            raise ValueError(
                f"{self.weights!r} are two-channel weights: fit continues each channel with its "
                f"own recorded recipe, so the objective parameters {changed} cannot be set "
                "(one value cannot be both channels' recipe); leave them at their defaults, or "
                "train a channel as single-channel weights (dimfeat train) and combine the "
                "channels (dimfeat combine-channels)"
            )
        mine = self._training_config()
        configs = {}
        for channel in CHANNELS:
            record = (weights_config["channels"][channel].get("source") or {}).get("training")
            settings = (record or {}).get("settings")
            if not settings:
                raise ValueError(
                    f"the {channel} channel of {self.weights!r} records no training recipe "
                    f"(channels.{channel}.source.training.settings), so fit cannot continue its "
                    "training with it: train that channel as single-channel weights (dimfeat "
                    "train) and combine the channels (dimfeat combine-channels)"
                )
            recorded = settings_of_record(settings)
            configs[channel] = TrainingConfig(
                **{k: v for k, v in recorded.items() if k in recipe},
                epochs=mine.epochs,
                seed=mine.seed,
                **{name: getattr(mine, name) for name in _TRAINING_PARAMS if name not in recipe},
            )
        return configs

    def _train(self, inputs: list[CrystalInputs]) -> None:
        device = resolve_device(self.device)
        if not isinstance(self.encoder_, TwoChannelEncoder):
            self.history_, _ = train_dim(
                self.encoder_,
                inputs,
                self._training_config(),
                device,
                max_primitive_sites=None,  # fit trains on every structure it is given
                checkpoint_dir=self.checkpoint_dir,
                progress=self.verbose,
            )
            return
        history = []
        for channel, config in self._channel_training_configs(self.weights_config_).items():
            records, _ = train_dim(
                getattr(self.encoder_, channel),
                inputs,
                config,
                device,
                max_primitive_sites=None,
                checkpoint_dir=None
                if self.checkpoint_dir is None
                else os.path.join(self.checkpoint_dir, channel),
                progress=self.verbose,
            )
            history += [{"channel": channel, **record} for record in records]
        self.history_ = history


def _unwrap_entry(entry: Any) -> Any:
    """matminer passes rows (1-tuples or 1-element arrays); accept bare structures too."""
    if isinstance(entry, tuple | list | np.ndarray) and len(entry) == 1:
        return entry[0]
    return entry
