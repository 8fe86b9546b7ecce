"""``SiteNetRegressor``: a supervised Site-Net (encoder + small head) as a scikit-learn regressor.

The paper's transfer-learning experiment (Fig. 7): the Site-Net encoder, started from Deep InfoMax
weights or from random weights, with a head ``Linear(128->64) -> Mish -> Linear(64->1)``, trained
end to end on a property. It delegates: structures -> inputs to
:meth:`dimfeat.runtime.EncoderRuntime.build`, inputs -> predictions to
:func:`dimfeat.runtime.run_batches` (the featuriser's path); starting weights ->
:mod:`dimfeat.weights`; devices -> :func:`dimfeat.training.resolve_device`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from torch import nn

from dimfeat.channels import CHANNELS, TwoChannelEncoder, blank_encoder, config_from_dict
from dimfeat.inputs import CrystalInputs
from dimfeat.record import TrainingRecord
from dimfeat.runtime import EncoderRuntime, input_settings, run_batches, seeded
from dimfeat.training import (
    Objective,
    TrainingLoop,
    inputs_fingerprint,
    resolve_device,
    split_validation,
)
from dimfeat.weights import DEFAULT_WEIGHTS, InputSettings

__all__ = [
    "MAX_VALIDATION",
    "REGRESSION_VALIDATION_FRACTION",
    "RegressionConfig",
    "RegressionObjective",
    "SiteNetRegressor",
    "regression_head",
    "validation_size",
]

HEAD_HIDDEN = 64
#: Share of the labels :class:`SiteNetRegressor` holds out by default to choose the epoch. Larger
#: than the 0.05 of DIM training (:data:`dimfeat.training.VALIDATION_FRACTION`), which holds out
#: thousands of unlabelled crystals: with 50-1,000 labels, 5% is 2-50 crystals, whose MAE is too
#: noisy to stop on (``benchmarks/archive/regressor_validation.py``; docs/transfer.md).
REGRESSION_VALIDATION_FRACTION = 0.2
#: Most labelled crystals held out by default: past 200 the validation MAE is steady enough (its
#: spread falls as 1/sqrt(n)) and more labels do more good in training.
MAX_VALIDATION = 200


def validation_size(
    n: int, fraction: float = REGRESSION_VALIDATION_FRACTION, maximum: int | None = MAX_VALIDATION
) -> int:
    """Crystals held out of ``n`` labelled ones: ``round(fraction * n)``, at least 2 (0 when
    ``fraction`` is 0), at most ``maximum`` (``None``: no limit).

    With the defaults: 10 of 50 labels, 20 of 100, 100 of 500, 200 of 1,000 or more.
    """
    if fraction <= 0:
        return 0
    size = max(2, round(fraction * n))
    return size if maximum is None else min(size, max(2, maximum))


def regression_head(in_dim: int) -> nn.Sequential:
    """The paper's head: ``Linear(in_dim -> 64) -> Mish -> Linear(64 -> 1)``."""
    return nn.Sequential(nn.Linear(in_dim, HEAD_HIDDEN), nn.Mish(), nn.Linear(HEAD_HIDDEN, 1))


class SiteNetRegressor(RegressorMixin, BaseEstimator):
    """Supervised Site-Net: the DIM encoder fine-tuned end to end with a small regression head.

    The crystal vector of a :class:`~dimfeat.encoder.SiteNetEncoder` feeds a head
    ``Linear(128->64) -> Mish -> Linear(64->1)``; both are trained with AdamW on the mean squared
    error of standardised targets. Starting from the Deep InfoMax weights is transfer learning
    (paper Fig. 7); ``weights=None`` starts from random weights, the paper's control. Predictions
    inherit the encoder's invariances (site order, rotation, translation, choice of cell).

    Parameters
    ----------
    weights : str, path or None, default="sitenet-dim-mp36k"
        Starting encoder weights, resolved as for :class:`~dimfeat.DeepInfoMaxFeaturizer`: a
        bundled name, a local weights folder or a Hub id ``"owner/name@revision"``. ``None``:
        random initialisation seeded by ``random_state``. Two-channel weights
        (:mod:`dimfeat.channels`) are fine-tuned whole: the head reads the concatenated vector
        of both channels, and both encoders train end to end (``freeze_encoder``,
        ``encoder_lr`` and ``head_warmup_epochs`` apply to both); the context channel reads no
        distances, so it stays a function of the composition whatever the training.
    epochs : int, default=200
        Maximum passes over the training crystals; by default training stops earlier, after
        ``patience`` epochs without a better MAE on the held-out ``validation_fraction``.
    lr : float, default=1e-3
        AdamW learning rate of the head, and of the encoder unless ``encoder_lr`` is given.
    encoder_lr : float or None, default=None
        AdamW learning rate of the encoder (``None``: ``lr``). A smaller one keeps more of the
        starting weights.
    weight_decay : float, default=0.01
        AdamW weight decay.
    batch_size : int, default=32
        Crystals per batch of the encoder, in training and in prediction (as in skorch), with
        the featuriser's meaning: crystals per batch wherever crystals are batched by count.
        Prediction batches are also bounded in bonds (see :func:`dimfeat.runtime.run_batches`),
        and their size does not change the predictions beyond float rounding.
    validation_fraction : float, default=0.2
        Share of the labelled crystals held out (at least 2, at most ``max_validation``) to
        select the best epoch by the validation mean absolute error; 0 trains on everything and
        keeps the last epoch. Larger than DIM training's 0.05, which holds out thousands of
        unlabelled crystals: 5% of a few hundred labels is too few to stop on (at 500 labels,
        25 held-out crystals give a validation MAE with a standard deviation of about 20% of
        its value, 100 about 10%; docs/transfer.md, ``benchmarks/archive/regressor_validation.py``).
    max_validation : int or None, default=200
        Most crystals held out (``None``: no limit); with the defaults, 10 of 50 labels, 100 of
        500, 200 of 1,000 or more (:func:`validation_size`).
    patience : int or None, default=20
        Stop after this many epochs without a better validation MAE (``None``: never).
    freeze_encoder : bool, default=False
        Train the head only, on the fixed crystal vectors.
    head_warmup_epochs : int, default=0
        Epochs at the start in which only the head trains, on the fixed starting encoder; the
        encoder is fine-tuned from the next epoch on (linear probing, then fine-tuning: the
        encoder's first gradients then come from a fitted head rather than a random one).
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        anything else (``"mps"``, ``"meta"``) is refused with a ``ValueError``.
    max_atoms : int or None, default=None
        Supercell size limit; ``None`` takes the value the weights were trained with (50).
    symprec : float or None, default=None
        Tolerance (Å) of the primitive-cell search; ``None`` takes the weights' value (0.01).
    checkpoint_dir : str or None, default=None
        Folder for per-epoch checkpoints (encoder, head, optimiser, history); an interrupted
        :meth:`fit` on the same data and settings resumes from it, and one of another run is
        refused.
    n_jobs : int, default=1
        Processes that build model inputs from structures (joblib).
    random_state : int, default=0
        Seeds random initialisation, the validation split and the batch order.
    verbose : bool, default=False
        Progress bars on stderr: one over epochs (training loss, validation MAE, best epoch,
        epochs without improvement against ``patience``; a line when training stops early) and
        one over each epoch's batches with the running training loss. Without it :meth:`fit`
        prints nothing, and it takes a while: see Notes.

    Attributes
    ----------
    encoder_ : SiteNetEncoder or TwoChannelEncoder
        The fine-tuned encoder (best epoch), on the CPU; a
        :class:`~dimfeat.channels.TwoChannelEncoder` for two-channel weights.
    head_ : torch.nn.Sequential
        The regression head (best epoch), on the CPU.
    y_mean_, y_scale_ : float
        Standardisation of the targets (mean and standard deviation of the training part).
    history_ : list of dict
        One record per epoch: ``epoch``, ``train_loss`` (MSE of standardised targets),
        ``valid_loss``, ``valid_mae`` (target units), ``seconds``, ``best``.
    best_epoch_ : int
        Epoch whose weights were kept (1-based).
    weights_config_ : dict
        ``config.json`` of the starting weights (``{}`` for ``weights=None``).
    n_train_, n_valid_ : int
        Crystals used for training and for model selection.

    See Also
    --------
    dimfeat.DeepInfoMaxFeaturizer : the same encoder as a fixed featuriser.

    Notes
    -----
    Cost: on one CPU thread (2-core AMD EPYC, shared), an epoch takes about 0.4 s per 100
    training crystals of the bundled sample (at most 50 atoms per cell; larger cells cost
    more) and a validation pass 0.05 s per 100, so the default ceiling of 200 epochs is about
    7 minutes at 500 labels, less when early stopping ends training sooner.
    ``verbose=True`` shows where a fit is.

    ``X`` may also be a list of :class:`~dimfeat.inputs.CrystalInputs` built with the same
    ``max_atoms`` and ``symprec`` (e.g. from :func:`dimfeat.inputs.load_inputs`), which skips the
    structure pipeline. Training runs in :class:`dimfeat.training.TrainingLoop` (the loop of
    DIM training too): bfloat16 autocast on CUDA, data-parallel under ``torchrun``, and a NaN
    loss or weight stops it with ``FloatingPointError``. Predictions are computed in float32. Bad
    structures raise an error naming their position in ``X``.

    References
    ----------
    .. [1] M. Moran et al., "Deep InfoMax as an effective self-supervised learning methodology
       in materials informatics", Digital Discovery 4, 790-811 (2025), doi:10.1039/d4dd00202d.
    .. [2] M. Moran et al., "Site-Net: using global self-attention and real-space supercells to
       capture long-range interactions in crystal structures", Digital Discovery 2, 1297-1310
       (2023), doi:10.1039/d3dd00005b.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from dimfeat import SiteNetRegressor
    >>> salts = [Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    ...          for a in (4.0, 4.1, 4.2, 4.3, 4.4)]
    >>> model = SiteNetRegressor(epochs=2, validation_fraction=0).fit(salts, [1, 2, 3, 4, 5])
    >>> model.predict(salts).shape
    (5,)
    """

    _parameter_constraints: dict = {  # noqa: RUF012 - scikit-learn's declared convention
        "weights": [str, os.PathLike, None],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "encoder_lr": [Interval(Real, 0, None, closed="neither"), None],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "max_validation": [Interval(Integral, 2, None, closed="left"), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "freeze_encoder": ["boolean"],
        "head_warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "max_atoms": [Interval(Integral, 1, None, closed="left"), None],
        "symprec": [Interval(Real, 0, None, closed="neither"), None],
        "checkpoint_dir": [str, os.PathLike, None],
        "n_jobs": [Integral],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        weights: str | None = DEFAULT_WEIGHTS,
        *,
        epochs: int = 200,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.01,
        batch_size: int = 32,
        validation_fraction: float = REGRESSION_VALIDATION_FRACTION,
        max_validation: int | None = MAX_VALIDATION,
        patience: int | None = 20,
        freeze_encoder: bool = False,
        head_warmup_epochs: int = 0,
        device: str = "auto",
        max_atoms: int | None = None,
        symprec: float | None = None,
        checkpoint_dir: str | None = None,
        n_jobs: int = 1,
        random_state: int = 0,
        verbose: bool = False,
    ) -> None:
        self.weights = weights
        self.epochs = epochs
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.max_validation = max_validation
        self.patience = patience
        self.freeze_encoder = freeze_encoder
        self.head_warmup_epochs = head_warmup_epochs
        self.device = device
        self.max_atoms = max_atoms
        self.symprec = symprec
        self.checkpoint_dir = checkpoint_dir
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # -- scikit-learn ---------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # a sequence of pymatgen Structures
        tags.target_tags.single_output = True
        tags.non_deterministic = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "best_epoch_")  # set last in fit: a failed fit is not fitted

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Sequence, y: Any) -> SiteNetRegressor:
        """Fine-tune the encoder and train the head on labelled structures.

        Parameters
        ----------
        X : sequence of structures (or of CrystalInputs)
            Structures in any form :func:`dimfeat.inputs.to_structure` accepts (``Structure``,
            structure dicts, CIF/POSCAR text, file paths, ASE ``Atoms``, ...).
        y : array-like of shape (n_structures,)
            Finite targets (e.g. eV/atom).

        Returns
        -------
        self
        """
        for name in ("best_epoch_", "history_"):  # a refit that fails leaves no fitted state
            self.__dict__.pop(name, None)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: give "
                "one finite target per structure"
            )
        resolve_device(self.device)  # an unsupported device is refused before any work
        self._initialize()  # first: the weights' config sets max_atoms and symprec
        inputs = self._inputs(X)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (len(inputs),):
            raise ValueError(f"y must have shape ({len(inputs)},), got {y.shape}")
        if not np.isfinite(y).all():
            bad = np.flatnonzero(~np.isfinite(y))[:10].tolist()
            raise ValueError(f"y has non-finite values at positions {bad}")
        if self.validation_fraction > 0:
            n_valid = validation_size(len(inputs), self.validation_fraction, self.max_validation)
            fraction = self.validation_fraction
            if n_valid != validation_size(len(inputs), fraction, None):  # capped
                fraction = n_valid / len(inputs)
            train_idx, valid_idx = split_validation(len(inputs), fraction, self.random_state)
        else:
            train_idx, valid_idx = np.arange(len(inputs)), np.arange(0)
        self.y_mean_ = float(np.mean(y[train_idx]))
        scale = float(np.std(y[train_idx]))
        self.y_scale_ = scale if scale > 0 else 1.0
        self._fit_loop(
            [inputs[i] for i in train_idx],
            y[train_idx],
            [inputs[i] for i in valid_idx],
            y[valid_idx],
        )
        self.n_train_, self.n_valid_ = len(train_idx), len(valid_idx)
        return self

    def predict(self, X: Sequence) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : sequence of structures (or of CrystalInputs)
            Structures in any form :func:`dimfeat.inputs.to_structure` accepts (``Structure``,
            structure dicts, CIF/POSCAR text, file paths, ASE ``Atoms``, ...).

        Returns
        -------
        ndarray of shape (n_structures,), float64
        """
        check_is_fitted(self)
        return self._predict_inputs(self._inputs(X), resolve_device(self.device))

    def save_pretrained(self, folder: str, *, name: str | None = None, note: str = "") -> str:
        """Write the fine-tuned encoder (not the head) as a weights folder.

        The folder is a valid ``weights=`` source for this class and for
        :class:`~dimfeat.DeepInfoMaxFeaturizer` (e.g. to start from a model trained on another
        property, as in the paper's Fig. 7). Two-channel starting weights give a two-channel
        folder, each channel's training record naming the fine-tuning.
        """
        from dimfeat.channels import save_weights

        check_is_fitted(self)

        def record(channel: str = "") -> TrainingRecord:
            start = None if self.weights is None else str(self.weights)
            return TrainingRecord(
                note=note or "supervised fine-tuning by SiteNetRegressor (labels were used)",
                settings={k: v for k, v in self.get_params().items() if k != "weights"},
                history=[],
                start_weights=f"{start} ({channel} channel)" if channel and start else start,
            )

        two = isinstance(self.encoder_, TwoChannelEncoder)
        training = {c: record(c) for c in CHANNELS} if two else record()
        return str(
            save_weights(
                folder, self.encoder_, inputs=self._input_settings(), training=training, name=name
            )
        )

    # -- initialisation and training ------------------------------------------------------------
    def _initialize(self) -> None:
        """Starting encoder and a fresh head, seeded by ``random_state``."""
        runtime = EncoderRuntime.create(self.weights, seed=self.random_state)
        self.encoder_, self.weights_config_ = runtime.encoder, runtime.config
        with seeded(self.random_state):  # leave the caller's global torch RNG alone
            self.head_ = regression_head(self.encoder_.config.global_dim)

    def _training_config(self) -> RegressionConfig:
        return RegressionConfig(
            epochs=self.epochs,
            lr=self.lr,
            encoder_lr=self.encoder_lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            validation_fraction=self.validation_fraction,
            max_validation=self.max_validation,
            patience=self.patience,
            freeze_encoder=self.freeze_encoder,
            head_warmup_epochs=self.head_warmup_epochs,
            seed=self.random_state,
        )

    def _fit_loop(
        self,
        train: list[CrystalInputs],
        y_train: np.ndarray,
        valid: list[CrystalInputs],
        y_valid: np.ndarray,
    ) -> None:
        device = resolve_device(self.device)
        config = self._training_config()
        objective = RegressionObjective(self, y_train, y_valid, device)
        loop = TrainingLoop(
            objective, config, device, checkpoint_dir=self.checkpoint_dir, progress=self.verbose
        )
        try:
            self.history_: list[dict] = loop.fit(train, valid)
        finally:
            self.encoder_.cpu().eval().requires_grad_(True)
            self.head_.cpu().eval()
        self.best_epoch_ = max((h["epoch"] for h in self.history_ if h["best"]), default=0)

    def _forward(self, batch) -> torch.Tensor:
        vectors = self.encoder_(batch)
        return self.head_(vectors.to(self.head_[0].weight.dtype)).squeeze(-1)

    def _predict_inputs(self, inputs: list[CrystalInputs], device) -> np.ndarray:
        self.encoder_.to(device).eval()
        self.head_.to(device).eval()
        # float32: predictions keep full precision on any device
        out = run_batches(
            inputs,
            self._forward,
            None,
            device=device,
            batch_size=self.batch_size,
            dtype=np.float64,
        )
        return out * self.y_scale_ + self.y_mean_

    # -- inputs ---------------------------------------------------------------------------------
    def _input_settings(self) -> InputSettings:
        return input_settings(
            getattr(self, "weights_config_", {}), max_atoms=self.max_atoms, symprec=self.symprec
        )

    def _inputs(self, X: Any) -> list[CrystalInputs]:
        if isinstance(X, list | tuple) and X and all(isinstance(c, CrystalInputs) for c in X):
            return list(X)
        params = repr(sorted(self.get_params(deep=False).items()))
        runtime = EncoderRuntime(self.encoder_, self._input_settings())
        inputs, _ = runtime.build(
            X, n_jobs=self.n_jobs, owner="SiteNetRegressor", scope=(type(self).__name__, params)
        )
        if not inputs:
            raise ValueError("no structures given")
        return inputs

    # -- pickling: torch modules travel as CPU state dicts --------------------------------------
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__
        if "encoder_" in state:
            state["encoder_"] = {
                "config": self.encoder_.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()},
            }
            state["head_"] = {k: v.detach().cpu() for k, v in self.head_.state_dict().items()}
        return state

    def __setstate__(self, state: dict) -> None:
        encoder, head = state.get("encoder_"), state.get("head_")
        if isinstance(encoder, dict):
            config = config_from_dict(encoder["config"])  # one encoder or two channels
            module = blank_encoder(config)  # buffers are overwritten by the state dict
            module.load_state_dict(encoder["state_dict"])
            state["encoder_"] = module.eval()
            head_module = regression_head(config.global_dim)
            head_module.load_state_dict(head)
            state["head_"] = head_module.eval()
        super().__setstate__(state)


@dataclass
class RegressionConfig:
    """Settings of a :class:`SiteNetRegressor` fit, as the training loop reads them.

    Parameters
    ----------
    epochs, lr, encoder_lr, weight_decay, batch_size
        As for :class:`SiteNetRegressor`.
    validation_fraction, max_validation, patience, freeze_encoder, head_warmup_epochs
        As for :class:`SiteNetRegressor`.
    seed : int
        ``random_state``.
    mixed_precision : bool, default=True
        bfloat16 autocast for training on CUDA.
    max_seconds : float or None, default=None
        Wall-clock budget (none).
    """

    epochs: int = 200
    lr: float = 1e-3
    encoder_lr: float | None = None
    weight_decay: float = 0.01
    batch_size: int = 32
    validation_fraction: float = REGRESSION_VALIDATION_FRACTION
    max_validation: int | None = MAX_VALIDATION
    patience: int | None = 20
    freeze_encoder: bool = False
    head_warmup_epochs: int = 0
    seed: int = 0
    mixed_precision: bool = True
    max_seconds: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


@dataclass
class _Loss:
    loss: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.loss.detach())}


class RegressionObjective(Objective):
    """Mean squared error of standardised targets, for :class:`~dimfeat.training.TrainingLoop`.

    Batches are ``batch_size`` crystals of the epoch's order; the validation scores are
    ``loss`` (MSE of standardised targets) and ``mae`` (target units), and the best epoch has
    the lowest validation MAE (without validation data: the last epoch).

    Parameters
    ----------
    model : SiteNetRegressor
        Holds ``encoder_``, ``head_``, ``y_mean_`` and ``y_scale_``.
    y_train, y_valid : ndarray
        Targets of the training and validation crystals (target units).
    device : torch.device
    """

    name = "regression training"
    loss_keys = ("loss",)
    kept = ("encoder", "head")

    def __init__(
        self, model: SiteNetRegressor, y_train: np.ndarray, y_valid: np.ndarray, device
    ) -> None:
        self.model = model
        self.encoder = model.encoder_.to(device).requires_grad_(not model.freeze_encoder)
        self.encoder_lr = model.lr if model.encoder_lr is None else model.encoder_lr
        self.head = model.head_.to(device)
        self.y_valid = y_valid
        self.device = device
        scaled = (y_train - model.y_mean_) / model.y_scale_
        self.target = torch.as_tensor(scaled, dtype=torch.float32)

    def modules(self) -> dict[str, torch.nn.Module]:
        """The encoder and the head."""
        return {"encoder": self.encoder, "head": self.head}

    def parameters(self) -> list[dict]:
        """AdamW groups: the head at ``lr``, the encoder at ``encoder_lr`` (not with
        ``freeze_encoder``)."""
        groups = [{"params": list(self.head.parameters())}]
        if not self.model.freeze_encoder:
            groups.insert(0, {"params": list(self.encoder.parameters()), "lr": self.encoder_lr})
        return groups

    def start_epoch(self, epoch: int) -> None:
        """The encoder stays fixed for the first ``head_warmup_epochs`` epochs."""
        if not self.model.freeze_encoder:
            self.encoder.requires_grad_(epoch >= self.model.head_warmup_epochs)

    def fingerprint(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> str:
        """Inputs and targets."""
        digest = hashlib.sha256(inputs_fingerprint(train, valid).encode())
        digest.update(np.ascontiguousarray(self.target.numpy()).tobytes())
        digest.update(np.ascontiguousarray(self.y_valid, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def train_groups(
        self, train: list[CrystalInputs], order: np.ndarray, epoch: int
    ) -> list[np.ndarray]:
        """Consecutive ``batch_size`` slices of the epoch's order."""
        size = self.model.batch_size
        return [order[lo : lo + size] for lo in range(0, len(order), size)]

    def train_step(self, batch, group: np.ndarray, generator: torch.Generator) -> _Loss:
        """MSE of standardised targets on one batch."""
        pred = self.model._forward(batch)
        return _Loss(nn.functional.mse_loss(pred.float(), self.target[group].to(self.device)))

    def validate(self, valid: list[CrystalInputs], autocast) -> dict[str, float]:
        """``loss`` and ``mae`` of float32 predictions."""
        if not valid:
            return {}
        pred = self.model._predict_inputs(valid, self.device)
        return {
            "loss": float(np.mean(((pred - self.y_valid) / self.model.y_scale_) ** 2)),
            "mae": float(np.mean(np.abs(pred - self.y_valid))),
        }

    def score(self, record: dict) -> float:
        """Validation MAE; without validation, ``-epoch`` (the last epoch is kept)."""
        return record.get("valid_mae", -record["epoch"])

    def epoch_postfix(self, record: dict) -> dict[str, str]:
        """Training loss and validation MAE (target units) of a finished epoch."""
        figures = {"train_loss": f"{record['train_loss']:.4f}"}
        if "valid_mae" in record:
            figures["valid_mae"] = f"{record['valid_mae']:.4g}"
        return figures
