"""Deep InfoMax training: the objective, its loop and the one entry point, :func:`train_dim`.

:func:`train_dim` is what every face that trains a DIM encoder calls (the featuriser's ``fit``,
``dimfeat train``, the benchmarks): it leaves out crystals too large for training when asked
(``max_primitive_sites``), splits off the validation crystals and runs :class:`DIMTrainer`,
the :class:`~dimfeat.training_loop.TrainingLoop` of a :class:`DIMObjective`. The settings are
:class:`~dimfeat.training_config.TrainingConfig`, each declared once.

DIM model selection uses the self-supervised loss on a held-out slice of the *unlabelled* data;
no label is ever read. The validation loss is computed with a fixed random stream (false samples
and noise), so epochs are compared on the same draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimfeat.encoder import SiteNetEncoder
from dimfeat.infomax import DeepInfoMaxLoss
from dimfeat.inputs import Batch, CrystalInputs, batches_by_site_budget
from dimfeat.training_config import VALIDATION_FRACTION, TrainingConfig, loss_arguments
from dimfeat.training_loop import (
    CHECKPOINT_LOCK,
    CHECKPOINT_NAME,
    SUPPORTED_DEVICES,
    Objective,
    TrainingLoop,
    collated,
    cosine_lr_factor,
    inputs_fingerprint,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_LOCK",
    "CHECKPOINT_NAME",
    "LOSS_KEYS",
    "SUPPORTED_DEVICES",
    "VALIDATION_FRACTION",
    "DIMObjective",
    "DIMTrainer",
    "Objective",
    "SaveEveryEpoch",
    "TrainingConfig",
    "TrainingLoop",
    "cosine_lr_factor",
    "inputs_fingerprint",
    "resolve_device",
    "split_validation",
    "train_dim",
]

#: Keys of the DIM loss terms (history records ``train_<key>`` and ``valid_<key>``).
LOSS_KEYS = ("loss", "local_dim", "global_dim", "local_kl", "global_kl", "composition")


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation index split of ``n`` unlabelled crystals (at least 2 each)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = max(2, round(fraction * n)) if fraction > 0 else 0
    if n - n_val < 2:
        raise ValueError(
            f"need at least {n_val + 2} structures to train with validation_fraction={fraction}"
        )
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class DIMObjective(Objective):
    """The Deep InfoMax objective (:class:`~dimfeat.infomax.DeepInfoMaxLoss`) of an encoder.

    Batches hold at most ``config.site_budget`` unique sites and at least 2 crystals (the
    other crystals of a batch are the false samples); validation uses a fixed random stream
    (seed ``config.seed + 1``), so epochs are compared on the same draws.

    Parameters
    ----------
    encoder : SiteNetEncoder
    config : TrainingConfig
    device : torch.device
    """

    name = "DIM training"
    loss_keys = LOSS_KEYS
    kept = ("encoder",)

    def __init__(self, encoder: SiteNetEncoder, config: TrainingConfig, device: torch.device):
        self.encoder = encoder
        self.config = config
        self.device = device
        self.criterion = DeepInfoMaxLoss(encoder.config, **loss_arguments(config)).to(device)

    def modules(self) -> dict[str, torch.nn.Module]:
        """The encoder and the loss's DIM heads."""
        return {"encoder": self.encoder, "criterion": self.criterion}

    def parameters(self) -> list[torch.nn.Parameter]:
        """Encoder parameters, then those of the DIM heads."""
        return list(self.encoder.parameters()) + list(self.criterion.parameters())

    def check(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> None:
        """At least 2 training crystals, and a site budget that forms batches of 2."""
        if len(train) < 2:
            raise ValueError("DIM training needs at least 2 training structures")
        _check_site_budget(train, self.config.site_budget, "training", shuffled=True)
        if len(valid) >= 2:
            _check_site_budget(valid, self.config.site_budget, "validation", shuffled=False)

    def train_groups(
        self, train: list[CrystalInputs], order: np.ndarray, epoch: int
    ) -> list[np.ndarray]:
        """Groups of at most ``site_budget`` unique sites and at least 2 crystals."""
        budget = self.config.site_budget
        groups = [g for g in batches_by_site_budget(train, budget, order) if len(g) >= 2]
        if not groups:  # the two smallest crystals fit, but never side by side in this order
            raise ValueError(
                f"epoch {epoch + 1}: no batch of 2 or more crystals fits site_budget="
                f"{budget} in this epoch's order; raise site_budget"
            )
        return groups

    def train_step(self, batch: Batch, group: np.ndarray, generator: torch.Generator) -> Any:
        """The :class:`~dimfeat.infomax.LossTerms` of one batch."""
        return self.criterion(self.encoder, batch, generator)

    @torch.no_grad()
    def validate(self, valid: list[CrystalInputs], autocast: Callable[[], Any]) -> dict[str, float]:
        """Mean DIM loss terms over validation batches, weighted by crystals."""
        if len(valid) < 2:
            return {}
        self.encoder.eval()
        self.criterion.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 1)
        totals = dict.fromkeys(LOSS_KEYS, 0.0)
        weight = 0
        groups = [g for g in batches_by_site_budget(valid, self.config.site_budget) if len(g) >= 2]
        for group, batch in collated(valid, groups, self.device):
            with autocast():
                terms = self.criterion(self.encoder, batch, generator).as_floats()
            for key in LOSS_KEYS:
                totals[key] += terms[key] * len(group)
            weight += len(group)
        if not weight:  # pragma: no cover - _check_site_budget refuses this before training
            raise ValueError("no validation batch of 2 or more crystals fits site_budget")
        return {key: v / weight for key, v in totals.items()}

    def postfix(self, totals: dict[str, float], n_batches: int) -> dict[str, str]:
        """Running local and global DIM losses."""
        return {
            "local": f"{totals['local_dim'] / n_batches:.3f}",
            "glob": f"{totals['global_dim'] / n_batches:.3f}",
        }


class DIMTrainer(TrainingLoop):
    """Train a :class:`~dimfeat.encoder.SiteNetEncoder` with the Deep InfoMax objective.

    The :class:`TrainingLoop` of a :class:`DIMObjective`.

    Parameters
    ----------
    encoder : SiteNetEncoder
        Trained in place (its best weights are restored at the end of :meth:`fit`).
    config : TrainingConfig
    device : torch.device
    checkpoint_dir : path, optional
        Folder for ``checkpoint.pt`` written after every epoch; :meth:`fit` resumes from it
        (with ``epochs`` at least the epochs it holds). One run at a time: :meth:`fit` holds the
        lock file ``checkpoint.lock`` there (:func:`dimfeat.locks.exclusive`).
    progress : bool, default=False
        Show a tqdm progress bar with the running losses.
    callbacks : sequence of callable, optional
        Each is called as ``callback(trainer, record)`` after every epoch, once the epoch's
        history record is appended and the checkpoint written (e.g. :class:`SaveEveryEpoch`).

    Attributes
    ----------
    history : list of dict
        One entry per epoch: ``epoch``, ``train_*`` and ``valid_*`` for each of the loss terms
        (``loss``, ``local_dim``, ``global_dim``, ``local_kl``, ``global_kl``,
        ``composition``), ``seconds``, ``best``.
    criterion : DeepInfoMaxLoss
        The loss with its DIM heads.
    """

    def __init__(
        self,
        encoder: SiteNetEncoder,
        config: TrainingConfig,
        device: torch.device,
        checkpoint_dir: str | Path | None = None,
        progress: bool = False,
        callbacks: Sequence[Callable[[DIMTrainer, dict], None]] = (),
    ) -> None:
        encoder = encoder.to(device)
        torch.manual_seed(config.seed)  # the DIM heads' initialisation
        objective = DIMObjective(encoder, config, device)
        self.criterion = objective.criterion
        super().__init__(objective, config, device, checkpoint_dir, progress, callbacks)

    def fit(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> list[dict]:
        """Train for up to ``config.epochs`` epochs; returns :attr:`history`.

        Raises
        ------
        ValueError
            If there are fewer than 2 training structures, ``site_budget`` is too small for
            any batch of 2 crystals, or ``checkpoint_dir`` holds a checkpoint of another run
            (other data, starting weights or settings) or of more epochs than ``epochs``.
        dimfeat.locks.LockHeldError
            If another live run trains in ``checkpoint_dir``.
        FloatingPointError
            If the loss or a weight becomes NaN or infinite (the message names the epoch and
            batch); the encoder is put back to its best epoch, or to its state when ``fit``
            started, so no NaN state is kept or checkpointed.
        """
        return super().fit(train, valid)


def train_dim(
    encoder: SiteNetEncoder,
    crystals: list[CrystalInputs],
    config: TrainingConfig,
    device: torch.device,
    *,
    max_primitive_sites: int | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    callbacks: Sequence[Callable[[DIMTrainer, dict], None]] = (),
    log: Callable[[str], Any] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Train ``encoder`` with DIM on ``crystals``: the one entry point of DIM training.

    ``DeepInfoMaxFeaturizer.fit`` and ``dimfeat train`` both call it: crystals with more than
    ``max_primitive_sites`` unique sites are left out (``dimfeat train`` leaves out those
    above 50 by default, ``fit`` trains on what it is given), a share
    ``config.validation_fraction`` (at least 2) is held out for model selection, and
    :class:`DIMTrainer` trains on the rest.

    Parameters
    ----------
    encoder : SiteNetEncoder
        Trained in place; left at its best epoch, in eval mode.
    crystals : list of CrystalInputs
        Unlabelled training data; a share is held out for model selection.
    config : TrainingConfig
    device : torch.device
    max_primitive_sites : int or None, default=None
        Leave out crystals with more atoms than this in the primitive cell (their inputs'
        ``n_sites``); None: keep all.
    checkpoint_dir, progress, callbacks
        As for :class:`DIMTrainer`; callbacks can read the sizes below as
        ``trainer.data_sizes``.
    log : callable, optional
        Called with one line saying how many crystals the filter kept (when it is used).

    Returns
    -------
    history : list of dict
        :attr:`DIMTrainer.history`.
    sizes : dict
        ``n_train`` and ``n_valid``; with ``max_primitive_sites``, also ``n_left_out_large``
        and ``max_primitive_sites``.
    """
    sizes: dict[str, int] = {}
    if max_primitive_sites is not None:
        kept = [c for c in crystals if c.n_sites <= max_primitive_sites]
        dropped = len(crystals) - len(kept)
        crystals = kept
        if log is not None:
            log(
                f"{len(crystals)} structures with <= {max_primitive_sites} atoms in the primitive "
                f"cell ({dropped} larger ones left out)"
            )
    train_idx, valid_idx = split_validation(len(crystals), config.validation_fraction, config.seed)
    sizes.update({"n_train": len(train_idx), "n_valid": len(valid_idx)})
    if max_primitive_sites is not None:
        sizes.update({"n_left_out_large": dropped, "max_primitive_sites": max_primitive_sites})
    trainer = DIMTrainer(
        encoder,
        config,
        device,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        callbacks=callbacks,
    )
    trainer.data_sizes = sizes
    history = trainer.fit([crystals[i] for i in train_idx], [crystals[i] for i in valid_idx])
    encoder.eval()
    return history, sizes


class SaveEveryEpoch:
    """Callback writing the encoder of every epoch as a weights folder ``<folder>/epoch-NNN``.

    The folders are ordinary weights (``DeepInfoMaxFeaturizer(weights=...)`` loads them), so
    every epoch can be scored afterwards, e.g. by a probe on labelled training crystals.

    Parameters
    ----------
    folder : path
        Parent folder of the per-epoch weights folders.
    inputs : InputSettings or dict
        Input settings recorded with the weights.
    training : dict, optional
        Training record to store (the epoch's history so far is added, and to its ``data``
        the sizes :func:`train_dim` found, ``trainer.data_sizes``).
    every : int, default=1
        Save epochs ``every``, ``2 * every``, ... and the last one.
    """

    def __init__(
        self, folder: str | Path, inputs, training: dict | None = None, every: int = 1
    ) -> None:
        self.folder = Path(folder)
        self.inputs = inputs
        self.training = dict(training or {})
        self.every = every

    def __call__(self, trainer: DIMTrainer, record: dict) -> None:
        from dimfeat.record import TrainingRecord
        from dimfeat.weights import save_pretrained

        if trainer.distributed is not None and not trainer.distributed.is_main:
            return
        last = record["epoch"] == trainer.config.epochs
        if record["epoch"] % self.every and not last:
            return
        name = f"epoch-{record['epoch']:03d}"
        training = dict(self.training)
        if "data" in training:
            training["data"] = {**training["data"], **getattr(trainer, "data_sizes", {})}
        save_pretrained(
            self.folder / name,
            trainer.encoder,
            inputs=self.inputs,
            training=TrainingRecord.from_dict(
                {
                    **training,
                    "settings": trainer.config.to_dict(),
                    "history": list(trainer.history),
                }
            ),
            name=name,
        )


def _check_site_budget(
    crystals: list[CrystalInputs], budget: int, kind: str, *, shuffled: bool
) -> None:
    """Refuse a site budget under which no batch of at least 2 crystals can form."""
    sizes = sorted(c.n_sites for c in crystals)
    if shuffled:
        fits = sizes[0] + sizes[1] <= budget
    else:
        fits = any(len(g) >= 2 for g in batches_by_site_budget(crystals, budget))
    if not fits:
        raise ValueError(
            f"site_budget={budget} is too small for any {kind} batch: a DIM batch needs at least "
            f"2 crystals, and the two smallest {kind} crystals have {sizes[0]} + {sizes[1]} "
            f"unique sites{'' if shuffled else ' (batches follow the input order)'}; raise "
            "site_budget"
        )
