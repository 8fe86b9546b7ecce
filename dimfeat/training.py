"""Self-supervised Deep InfoMax training: fit loop, validation, early stopping, checkpoints.

The loop follows skorch's shape: :meth:`DIMTrainer.fit` -> :meth:`~DIMTrainer._run_epoch`
-> :meth:`~DIMTrainer._train_step` / :meth:`~DIMTrainer._validate`. It works on precomputed
:class:`~dimfeat.inputs.CrystalInputs`, so it needs neither pymatgen nor matminer at run time
and the same code trains on a laptop CPU and on a GPU.

Model selection uses the self-supervised loss on a held-out slice of the *unlabelled* data; no
label is ever read. The validation loss is computed with a fixed random stream (false samples
and noise), so epochs are compared on the same draws.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dimfeat.distributed import active_context
from dimfeat.encoder import SiteNetEncoder
from dimfeat.infomax import (
    DEFAULT_BETA,
    DEFAULT_COMPOSITION_WEIGHT,
    DEFAULT_GLOBAL_SITES,
    DEFAULT_LOCAL_CONSTITUENT,
    DEFAULT_LOCAL_PAIRS,
    FALSE_SAMPLE_KINDS,
    DeepInfoMaxLoss,
)
from dimfeat.inputs import CrystalInputs, batches_by_site_budget, collate

__all__ = ["DIMTrainer", "SaveEveryEpoch", "TrainingConfig", "resolve_device", "split_validation"]

CHECKPOINT_NAME = "checkpoint.pt"
_LOSS_KEYS = ("loss", "local_dim", "global_dim", "local_kl", "global_kl", "composition")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available")
    return resolved


@dataclass
class TrainingConfig:
    """Hyper-parameters of DIM training (stored in ``config.json`` of trained weights).

    Parameters
    ----------
    epochs : int
        Maximum number of passes over the training crystals.
    lr : float
        AdamW learning rate (the paper's 8.12e-4).
    weight_decay : float
        AdamW weight decay.
    site_budget : int
        Maximum unique sites per batch (the paper's 1200).
    validation_fraction : float
        Share of the unlabelled crystals held out for model selection.
    patience : int or None
        Stop after this many epochs without a better validation loss (None: never).
    alpha, beta : float
        Weights of the Jensen-Shannon and KL terms.
    false_samples : tuple of str
        Kinds of false sample (see :data:`dimfeat.infomax.FALSE_SAMPLE_KINDS`).
    local_constituent : {"neighbour", "bond"}
        Local DIM constituents: ``[f_j, d_ij]`` or ``[f_i, f_j, d_ij]``.
    local_pairs : int or None
        Pairs scored per environment in the local loss, drawn in proportion to their weights
        (None: every pair; see :class:`~dimfeat.infomax.DeepInfoMaxLoss`).
    global_sites : int or None
        Sites kept per synthetic false crystal in the global loss (None: all; see
        :class:`~dimfeat.infomax.DeepInfoMaxLoss`).
    composition_weight : float
        Weight of the composition term (0: the paper's objective; see
        :class:`~dimfeat.infomax.DeepInfoMaxLoss`).
    seed : int
        Seeds initialisation, shuffling, the validation split and the false samples.
    mixed_precision : bool
        bfloat16 autocast on CUDA (ignored on CPU).
    max_seconds : float or None
        Stop after the first epoch that ends past this wall-clock budget (None: no limit); a
        resumed run gets a fresh budget.
    """

    epochs: int = 10
    lr: float = 8.12e-4
    weight_decay: float = 0.01
    site_budget: int = 1200
    validation_fraction: float = 0.05
    patience: int | None = 10
    alpha: float = 1.0
    beta: float = DEFAULT_BETA
    false_samples: tuple[str, ...] = field(default=FALSE_SAMPLE_KINDS)
    local_constituent: str = DEFAULT_LOCAL_CONSTITUENT
    local_pairs: int | None = DEFAULT_LOCAL_PAIRS
    global_sites: int | None = DEFAULT_GLOBAL_SITES
    composition_weight: float = DEFAULT_COMPOSITION_WEIGHT
    seed: int = 0
    mixed_precision: bool = True
    max_seconds: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        out = asdict(self)
        out["false_samples"] = list(self.false_samples)
        return out


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


class DIMTrainer:
    """Train a :class:`~dimfeat.encoder.SiteNetEncoder` with the Deep InfoMax objective.

    Parameters
    ----------
    encoder : SiteNetEncoder
        Trained in place (its best weights are restored at the end of :meth:`fit`).
    config : TrainingConfig
    device : torch.device
    checkpoint_dir : path, optional
        Folder for ``checkpoint.pt`` written after every epoch; :meth:`fit` resumes from it.
    progress : bool, default=False
        Show a tqdm progress bar with the running losses.
    callbacks : sequence of callable, optional
        Each is called as ``callback(trainer, record)`` after every epoch, once the epoch's
        history record is appended and the checkpoint written (e.g. :class:`SaveEveryEpoch`).

    Attributes
    ----------
    history : list of dict
        One entry per epoch: ``epoch``, ``train_*`` and ``valid_*`` for each of ``loss``,
        ``local_dim``, ``global_dim``, ``local_kl``, ``global_kl``, ``seconds``, ``best``.
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
        self.encoder = encoder.to(device)
        self.config = config
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress = progress
        self.callbacks = tuple(callbacks)
        torch.manual_seed(config.seed)
        self.criterion = DeepInfoMaxLoss(
            encoder.config,
            config.alpha,
            config.beta,
            tuple(config.false_samples),
            config.local_constituent,
            config.local_pairs,
            config.global_sites,
            config.composition_weight,
        ).to(device)
        self.optimizer = torch.optim.AdamW(
            list(self.encoder.parameters()) + list(self.criterion.parameters()),
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        self.history: list[dict] = []
        self.best_loss = math.inf
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        # Under torchrun (see dimfeat.distributed); None in a single process.
        self.distributed = active_context()
        if self.distributed is not None:
            self.distributed.setup(self._parameters(), self.generator, config.seed)

    # -- public ---------------------------------------------------------------------------------
    def fit(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> list[dict]:
        """Train for up to ``config.epochs`` epochs; returns :attr:`history`.

        Raises
        ------
        ValueError
            If there are fewer than 2 training structures, ``site_budget`` is too small for
            any batch of 2 crystals, or ``checkpoint_dir`` holds a checkpoint of another run
            (other data, starting weights or settings).
        FloatingPointError
            If the loss or a weight becomes NaN or infinite (the message names the epoch and
            batch); the encoder is put back to its best epoch, or to its state when ``fit``
            started, so no NaN state is kept or checkpointed.
        """
        if len(train) < 2:
            raise ValueError("DIM training needs at least 2 training structures")
        _check_site_budget(train, self.config.site_budget, "training", shuffled=True)
        if len(valid) >= 2:
            _check_site_budget(valid, self.config.site_budget, "validation", shuffled=False)
        from dimfeat.weights import state_checksum

        self._data_fingerprint = _inputs_fingerprint(train, valid)
        self._start_checksum = state_checksum(self.encoder)
        self._resume()
        self._good_state = copy.deepcopy(self.encoder.state_dict())
        if self.distributed is not None and self.history:
            self.distributed.reseed(self.generator, self.config.seed, len(self.history))
        start = time.perf_counter()
        for epoch in range(len(self.history), self.config.epochs):
            if self._should_stop():
                break
            record = self._run_epoch(epoch, train, valid)
            self.history.append(record)
            self._save_checkpoint()
            for callback in self.callbacks:
                callback(self, record)
            limit = self.config.max_seconds
            if limit is not None and time.perf_counter() - start > limit:
                break
        if self.best_state is not None:
            self.encoder.load_state_dict(self.best_state["encoder"])
        return self.history

    # -- one epoch ------------------------------------------------------------------------------
    def _run_epoch(
        self, epoch: int, train: list[CrystalInputs], valid: list[CrystalInputs]
    ) -> dict:
        start = time.perf_counter()
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(len(train))
        groups = [
            g for g in batches_by_site_budget(train, self.config.site_budget, order) if len(g) >= 2
        ]
        if not groups:  # the two smallest crystals fit, but never side by side in this order
            raise ValueError(
                f"epoch {epoch + 1}: no batch of 2 or more crystals fits site_budget="
                f"{self.config.site_budget} in this epoch's order; raise site_budget"
            )
        if self.distributed is not None:
            groups = self.distributed.shard(groups)
        self.encoder.train()
        self.criterion.train()
        totals = dict.fromkeys(_LOSS_KEYS, 0.0)
        bar = _progress(groups, self.progress, f"epoch {epoch + 1}/{self.config.epochs}")
        for k, group in enumerate(bar, start=1):
            terms = self._train_step(collate([train[i] for i in group]))
            if not math.isfinite(terms["loss"]) or not self._parameters_finite():
                self._diverged(f"epoch {epoch + 1}, batch {k} of {len(groups)}", terms["loss"])
            for key in _LOSS_KEYS:
                totals[key] += terms[key]
            if self.progress:
                bar.set_postfix(
                    local=f"{totals['local_dim'] / k:.3f}", glob=f"{totals['global_dim'] / k:.3f}"
                )
        if self.distributed is not None:
            totals = self.distributed.mean(totals)
        record: dict = {"epoch": epoch + 1}
        record.update({f"train_{key}": v / max(len(groups), 1) for key, v in totals.items()})
        record.update({f"valid_{key}": v for key, v in self._validate(valid).items()})
        record["seconds"] = time.perf_counter() - start
        score = record.get("valid_loss", record["train_loss"])
        if not math.isfinite(score):
            self._diverged(f"epoch {epoch + 1} (validation)", score)
        record["best"] = bool(score < self.best_loss)
        if record["best"]:
            self.best_loss = score
            self.bad_epochs = 0
            self.best_state = {"encoder": copy.deepcopy(self.encoder.state_dict())}
        else:
            self.bad_epochs += 1
        return record

    def _train_step(self, batch) -> dict[str, float]:
        batch = batch.to(self.device)
        with self._autocast():
            terms = self.criterion(self.encoder, batch, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        if self.distributed is not None:
            self.distributed.average_gradients(self._parameters())
        self.optimizer.step()
        return terms.as_floats()

    @torch.no_grad()
    def _validate(self, valid: list[CrystalInputs]) -> dict[str, float]:
        if len(valid) < 2:
            return {}
        self.encoder.eval()
        self.criterion.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 1)
        totals = dict.fromkeys(_LOSS_KEYS, 0.0)
        weight = 0
        for group in batches_by_site_budget(valid, self.config.site_budget):
            if len(group) < 2:
                continue
            batch = collate([valid[i] for i in group]).to(self.device)
            with self._autocast():
                terms = self.criterion(self.encoder, batch, generator).as_floats()
            for key in _LOSS_KEYS:
                totals[key] += terms[key] * len(group)
            weight += len(group)
        if not weight:  # pragma: no cover - _check_site_budget refuses this before training
            raise ValueError("no validation batch of 2 or more crystals fits site_budget")
        return {key: v / weight for key, v in totals.items()}

    def _autocast(self):
        enabled = self.config.mixed_precision and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _should_stop(self) -> bool:
        return self.config.patience is not None and self.bad_epochs >= self.config.patience

    def _parameters_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self._parameters()]).all())

    def _diverged(self, where: str, loss: float) -> None:
        """Put back the last finite encoder state and raise ``FloatingPointError``."""
        if self.best_state is not None:
            self.encoder.load_state_dict(self.best_state["encoder"])
            kept = "its best epoch so far"
        else:
            self.encoder.load_state_dict(self._good_state)
            kept = "its state when fit started"
        raise FloatingPointError(
            f"DIM training diverged at {where}: the loss is {loss} or a weight became NaN or "
            f"infinite. The encoder was put back to {kept}, and no checkpoint of the diverged "
            f"state was written; lower the learning rate (lr={self.config.lr})"
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _save_checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        if self.distributed is not None and not self.distributed.is_main:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "encoder": self.encoder.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "history": json.dumps(self.history),
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "config": json.dumps(self.config.to_dict()),
            "data": self._data_fingerprint,
            "start": self._start_checksum,
        }
        tmp = self.checkpoint_dir / (CHECKPOINT_NAME + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_dir / CHECKPOINT_NAME)

    def _resume(self) -> None:
        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT_NAME).exists():
            return
        # Checkpoints are written by this class into a folder the user chose; weights_only=True
        # still refuses anything but tensors and plain containers.
        file = self.checkpoint_dir / CHECKPOINT_NAME
        try:
            state = torch.load(file, map_location=self.device, weights_only=True)
            saved = json.loads(state["config"])
        except Exception as exc:
            raise ValueError(
                f"{file} is not a dimfeat training checkpoint ({exc}); use another checkpoint_dir"
            ) from exc
        for key, what, mine in (
            ("data", "other training or validation data", self._data_fingerprint),
            ("start", "other starting weights", self._start_checksum),
        ):
            if state.get(key) != mine:
                raise ValueError(
                    f"checkpoint in {self.checkpoint_dir} was written by a run on {what} (or by "
                    "an older dimfeat that did not record it), so it is not a state of this run; "
                    f"use another checkpoint_dir or delete {file}"
                )
        current = self.config.to_dict()
        budget_keys = {"epochs", "max_seconds", "patience"}
        differs = {k for k in current if k not in budget_keys and saved.get(k) != current[k]}
        if differs:
            raise ValueError(
                f"checkpoint in {self.checkpoint_dir} was written with different training "
                f"settings ({', '.join(sorted(differs))}); use another checkpoint_dir"
            )
        self.encoder.load_state_dict(state["encoder"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.history = json.loads(state["history"])
        self.best_loss = state["best_loss"]
        self.best_state = state["best_state"]
        self.bad_epochs = state["bad_epochs"]


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
        Training record to store (the epoch's history so far is added).
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
        from dimfeat.weights import save_pretrained

        if trainer.distributed is not None and not trainer.distributed.is_main:
            return
        last = record["epoch"] == trainer.config.epochs
        if record["epoch"] % self.every and not last:
            return
        name = f"epoch-{record['epoch']:03d}"
        save_pretrained(
            self.folder / name,
            trainer.encoder,
            inputs=self.inputs,
            training={
                **self.training,
                "settings": trainer.config.to_dict(),
                "history": list(trainer.history),
            },
            name=name,
        )


def _inputs_fingerprint(*parts: list[CrystalInputs]) -> str:
    """sha256 of lists of crystals' inputs (species, sites and distances, in order)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"part:{len(part)}".encode())
        for crystal in part:
            digest.update(f"{crystal.n_sites},{crystal.n_atoms}".encode())
            for array in (crystal.species, crystal.atom_site, crystal.distances):
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False, unit="batch")
