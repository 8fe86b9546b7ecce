"""``SiteNetRegressor``: a supervised Site-Net (encoder + small head) as a scikit-learn regressor.

The paper's transfer-learning experiment (Fig. 7): the Site-Net encoder, started from Deep InfoMax
weights or from random weights, with a head ``Linear(128->64) -> Mish -> Linear(64->1)``, trained
end to end on a property. It delegates: structures -> :mod:`dimfeat.inputs`; starting weights ->
:mod:`dimfeat.weights`; devices -> :func:`dimfeat.training.resolve_device`.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from torch import nn

from dimfeat.encoder import EncoderConfig, SiteNetEncoder
from dimfeat.featurizer import _inference_batches
from dimfeat.inputs import CrystalInputs, as_structure_list, build_many, collate
from dimfeat.training import resolve_device, split_validation
from dimfeat.weights import DEFAULT_WEIGHTS, load_encoder, resolve_weights

__all__ = ["SiteNetRegressor"]

HEAD_HIDDEN = 64


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
        random initialisation seeded by ``random_state``.
    epochs : int, default=200
        Maximum passes over the training crystals.
    lr : float, default=1e-3
        AdamW learning rate (encoder and head).
    weight_decay : float, default=0.01
        AdamW weight decay.
    batch_size : int, default=32
        Crystals per training and inference batch.
    validation_fraction : float, default=0.1
        Share of the labelled crystals held out (at least 2) to select the best epoch by the
        validation mean absolute error; 0 trains on everything and keeps the last epoch.
    patience : int or None, default=20
        Stop after this many epochs without a better validation MAE (``None``: never).
    freeze_encoder : bool, default=False
        Train the head only, on the fixed crystal vectors.
    device : str, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    max_atoms : int or None, default=None
        Supercell size limit; ``None`` takes the value the weights were trained with (50).
    symprec : float or None, default=None
        Tolerance (Å) of the primitive-cell search; ``None`` takes the weights' value (0.01).
    n_jobs : int, default=1
        Processes that build model inputs from structures (joblib).
    random_state : int, default=0
        Seeds random initialisation, the validation split and the batch order.
    verbose : bool, default=False
        Progress bar over epochs with the running training loss.

    Attributes
    ----------
    encoder_ : SiteNetEncoder
        The fine-tuned encoder (best epoch), on the CPU.
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
    ``X`` may also be a list of :class:`~dimfeat.inputs.CrystalInputs` built with the same
    ``max_atoms`` and ``symprec`` (e.g. from :func:`dimfeat.inputs.load_inputs`), which skips the
    structure pipeline. bfloat16 autocast is used for training on CUDA; predictions are computed
    in float32. Bad structures raise an error
    naming their position in ``X``.

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
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "freeze_encoder": ["boolean"],
        "device": [str, torch.device],
        "max_atoms": [Interval(Integral, 1, None, closed="left"), None],
        "symprec": [Interval(Real, 0, None, closed="neither"), None],
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
        weight_decay: float = 0.01,
        batch_size: int = 32,
        validation_fraction: float = 0.1,
        patience: int | None = 20,
        freeze_encoder: bool = False,
        device: str = "auto",
        max_atoms: int | None = None,
        symprec: float | None = None,
        n_jobs: int = 1,
        random_state: int = 0,
        verbose: bool = False,
    ) -> None:
        self.weights = weights
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.freeze_encoder = freeze_encoder
        self.device = device
        self.max_atoms = max_atoms
        self.symprec = symprec
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
        self._initialize()  # first: the weights' config sets max_atoms and symprec
        inputs = self._inputs(X)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (len(inputs),):
            raise ValueError(f"y must have shape ({len(inputs)},), got {y.shape}")
        if not np.isfinite(y).all():
            bad = np.flatnonzero(~np.isfinite(y))[:10].tolist()
            raise ValueError(f"y has non-finite values at positions {bad}")
        if self.validation_fraction > 0:
            train_idx, valid_idx = split_validation(
                len(inputs), self.validation_fraction, self.random_state
            )
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
        property, as in the paper's Fig. 7).
        """
        from dimfeat.weights import save_pretrained

        check_is_fitted(self)
        training = {
            "note": note or "supervised fine-tuning by SiteNetRegressor (labels were used)",
            "settings": {k: v for k, v in self.get_params().items() if k != "weights"},
            "history": [],
            "start_weights": None if self.weights is None else str(self.weights),
        }
        return str(
            save_pretrained(
                folder, self.encoder_, inputs=self._input_settings(), training=training, name=name
            )
        )

    # -- initialisation and training loop -------------------------------------------------------
    def _initialize(self) -> None:
        """Starting encoder and a fresh head, seeded by ``random_state``."""
        with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG alone
            torch.manual_seed(self.random_state)
            if self.weights is None:
                self.encoder_, self.weights_config_ = SiteNetEncoder(EncoderConfig()), {}
            else:
                self.encoder_, self.weights_config_ = load_encoder(resolve_weights(self.weights))
            self.head_ = regression_head(self.encoder_.config.global_dim)

    def _fit_loop(
        self,
        train: list[CrystalInputs],
        y_train: np.ndarray,
        valid: list[CrystalInputs],
        y_valid: np.ndarray,
    ) -> None:
        device = resolve_device(self.device)
        self.encoder_.to(device).requires_grad_(not self.freeze_encoder)
        self.head_.to(device)
        params = [
            p for p in (*self.encoder_.parameters(), *self.head_.parameters()) if p.requires_grad
        ]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        target = torch.as_tensor((y_train - self.y_mean_) / self.y_scale_, dtype=torch.float32)
        self.history_: list[dict] = []
        best, bad_epochs = (math.inf, None), 0
        epochs = _progress(range(self.epochs), self.verbose)
        for epoch in epochs:
            start = time.perf_counter()
            rng = np.random.default_rng([self.random_state, epoch])
            order = rng.permutation(len(train))
            total = 0.0
            for k, lo in enumerate(range(0, len(order), self.batch_size), start=1):
                group = order[lo : lo + self.batch_size]
                total += self._train_step(
                    [train[i] for i in group], target[group], optimizer, device
                )
                if self.verbose:
                    epochs.set_postfix(loss=f"{total / k:.4f}")
            record = {"epoch": epoch + 1, "train_loss": total / max(k, 1)}
            record.update(self._validate(valid, y_valid, device))
            record["seconds"] = time.perf_counter() - start
            score = record.get("valid_mae", -epoch)  # without validation: keep the last epoch
            record["best"] = bool(score < best[0])
            if record["best"]:
                best, bad_epochs = (score, self._state()), 0
            else:
                bad_epochs += 1
            self.history_.append(record)
            if self.patience is not None and valid and bad_epochs >= self.patience:
                break
        if best[1] is not None:
            self.encoder_.load_state_dict(best[1]["encoder"])
            self.head_.load_state_dict(best[1]["head"])
        self.best_epoch_ = max((h["epoch"] for h in self.history_ if h["best"]), default=0)
        self.encoder_.cpu().eval().requires_grad_(True)
        self.head_.cpu().eval()

    def _train_step(self, crystals, target, optimizer, device) -> float:
        self.encoder_.train()
        self.head_.train()
        with _autocast(device):
            pred = self._forward(collate(crystals).to(device))
        loss = nn.functional.mse_loss(pred.float(), target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def _validate(self, valid: list[CrystalInputs], y_valid: np.ndarray, device) -> dict:
        if not valid:
            return {}
        pred = self._predict_inputs(valid, device)
        return {
            "valid_loss": float(np.mean(((pred - y_valid) / self.y_scale_) ** 2)),
            "valid_mae": float(np.mean(np.abs(pred - y_valid))),
        }

    def _forward(self, batch) -> torch.Tensor:
        vectors = self.encoder_(batch)
        return self.head_(vectors.to(self.head_[0].weight.dtype)).squeeze(-1)

    def _predict_inputs(self, inputs: list[CrystalInputs], device) -> np.ndarray:
        out = np.empty(len(inputs), dtype=np.float64)
        if not inputs:
            return out
        self.encoder_.to(device).eval()
        self.head_.to(device).eval()
        order = np.argsort([c.n_atoms for c in inputs], kind="stable")
        with torch.inference_mode():  # float32: predictions keep full precision on any device
            for group in _inference_batches(inputs, order, max(self.batch_size, 256)):
                batch = collate([inputs[i] for i in group]).to(device)
                out[group] = self._forward(batch).float().cpu().numpy()
        return out * self.y_scale_ + self.y_mean_

    def _state(self) -> dict:
        return {
            "encoder": copy.deepcopy(self.encoder_.state_dict()),
            "head": copy.deepcopy(self.head_.state_dict()),
        }

    # -- inputs ---------------------------------------------------------------------------------
    def _input_settings(self) -> dict:
        saved = getattr(self, "weights_config_", {}).get("inputs", {})
        return {
            "max_atoms": self.max_atoms or saved.get("max_atoms", 50),
            "symprec": self.symprec or saved.get("symprec", 0.01),
        }

    def _inputs(self, X: Any) -> list[CrystalInputs]:
        if isinstance(X, list | tuple) and X and all(isinstance(c, CrystalInputs) for c in X):
            return list(X)
        settings = self._input_settings()
        inputs, _ = build_many(as_structure_list(X), n_jobs=self.n_jobs, **settings)
        large = [c.n_sites for c in inputs if c.n_sites > settings["max_atoms"]]
        if large:
            warnings.warn(
                f"{len(large)} structure(s) have more than max_atoms={settings['max_atoms']} "
                f"atoms in the primitive cell (largest {max(large)}): each uses a single cell, "
                "outside the training distribution",
                UserWarning,
                stacklevel=3,
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
            from dimfeat.elements import MAX_Z

            config = EncoderConfig.from_dict(encoder["config"])
            n_features = len(config.site_features)
            module = SiteNetEncoder(  # buffers are overwritten by the state dict
                config,
                np.zeros(n_features),
                np.ones(n_features),
                raw_table=np.zeros((MAX_Z + 1, n_features)),
            )
            module.load_state_dict(encoder["state_dict"])
            state["encoder_"] = module.eval()
            head_module = regression_head(config.global_dim)
            head_module.load_state_dict(head)
            state["head_"] = head_module.eval()
        super().__setstate__(state)


def _autocast(device: torch.device):
    """bfloat16 autocast on CUDA; a no-op elsewhere."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="SiteNetRegressor", unit="epoch", leave=False)
