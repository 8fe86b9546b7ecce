"""The training loop of the package: :class:`TrainingLoop` and the :class:`Objective` it optimises.

:class:`TrainingLoop` owns epochs, shuffling, best state, patience, checkpoints and resume,
DDP, autocast, divergence checks, progress and callbacks; an :class:`Objective` says what a
batch and its loss are (the Deep InfoMax one is in :mod:`dimfeat.training`, the regressor's in
:mod:`dimfeat.regressor`). The loop works on precomputed :class:`~dimfeat.inputs.CrystalInputs`,
so the same code trains on a laptop CPU and on a GPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimfeat.distributed import active_context
from dimfeat.encoder import SiteNetEncoder
from dimfeat.inputs import Batch, CrystalInputs, collate
from dimfeat.progress import progress_bar

__all__ = [
    "CHECKPOINT_LOCK",
    "CHECKPOINT_NAME",
    "SUPPORTED_DEVICES",
    "Objective",
    "TrainingLoop",
    "collated",
    "cosine_lr_factor",
    "inputs_fingerprint",
    "resolve_device",
]

CHECKPOINT_NAME = "checkpoint.pt"
#: Lock file held in ``checkpoint_dir`` while a run trains (see :mod:`dimfeat.locks`).
CHECKPOINT_LOCK = "checkpoint.lock"

#: The devices dimfeat runs on, as error messages name them.
SUPPORTED_DEVICES = "'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device of a ``device`` parameter: the one check every face of dimfeat uses.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For a value that is not a device, or a device type dimfeat does not run on (``"mps"``,
        ``"meta"``, ``"xla"``, ...), naming it and the supported ones.
    RuntimeError
        For CUDA on a machine without it, or a CUDA index the machine does not have.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device={device!r} is not a device; use {SUPPORTED_DEVICES}") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={device!r}: {resolved.type!r} devices are not supported; dimfeat runs on "
            f"{SUPPORTED_DEVICES}"
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise RuntimeError(
            f"device={device!r} was requested but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1})"
        )
    return resolved


_MISSING = object()


def cosine_lr_factor(epoch: int, decay_epochs: int | None) -> float:
    """Multiplier of the base learning rate in ``epoch`` (0-based) of a half-cosine decay.

    ``0.5 * (1 + cos(pi * e / decay_epochs))`` with ``e = min(epoch, decay_epochs - 1)``: 1 in the
    first epoch, falling towards 0 over ``decay_epochs`` epochs and constant afterwards; 1
    throughout when ``decay_epochs`` is None.
    """
    if decay_epochs is None:
        return 1.0
    e = min(epoch, decay_epochs - 1)
    return 0.5 * (1.0 + math.cos(math.pi * e / decay_epochs))


class Objective:
    """What a :class:`TrainingLoop` optimises: its modules, batches, step and validation.

    The loop owns everything that is the same for every objective (epochs, shuffling, best
    state, patience, checkpoints and resume, DDP, autocast, divergence checks, progress,
    callbacks); an objective says what a batch is and what its loss is. :class:`DIMObjective`
    (the self-supervised Deep InfoMax loss) and the regressor's objective
    (:class:`dimfeat.regressor.RegressionObjective`) are the two in the package.

    Attributes
    ----------
    name : str
        Names the training in error messages (e.g. ``"DIM training"``).
    loss_keys : tuple of str
        Keys of the floats a training step returns (``"loss"`` first); the history records
        ``train_<key>`` for each.
    kept : tuple of str
        Names (keys of :meth:`modules`) of the modules whose best-epoch state is kept and
        restored at the end.
    encoder : SiteNetEncoder
        The encoder being trained.
    """

    name: str = "training"
    loss_keys: tuple[str, ...] = ("loss",)
    kept: tuple[str, ...] = ("encoder",)
    encoder: SiteNetEncoder

    def modules(self) -> dict[str, torch.nn.Module]:
        """Modules trained and checkpointed, by name (``"encoder"`` among them)."""
        raise NotImplementedError

    def parameters(self) -> list[torch.nn.Parameter] | list[dict]:
        """Parameters the optimiser updates, or AdamW parameter groups (dicts with ``params``
        and optionally their own ``lr``; a group without ``lr`` takes ``config.lr``)."""
        return [p for module in self.modules().values() for p in module.parameters()]

    def start_epoch(self, epoch: int) -> None:
        """Called before the training steps of each epoch (0-based), also after a resume: the
        place for schedules such as training the head alone for the first epochs."""

    def check(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> None:
        """Refuse data this objective cannot train on (raise ``ValueError``)."""

    def fingerprint(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> str:
        """Identity of the training data, recorded in checkpoints (:func:`inputs_fingerprint`)."""
        return inputs_fingerprint(train, valid)

    def train_groups(
        self, train: list[CrystalInputs], order: np.ndarray, epoch: int
    ) -> list[np.ndarray]:
        """Index groups (one per optimiser step) of one epoch, visiting ``order``."""
        raise NotImplementedError

    def train_step(self, batch: Batch, group: np.ndarray, generator: torch.Generator) -> Any:
        """Loss of one training batch: an object with ``.loss`` (a tensor) and ``.as_floats()``
        (a dict over :attr:`loss_keys`)."""
        raise NotImplementedError

    def validate(self, valid: list[CrystalInputs], autocast: Callable[[], Any]) -> dict[str, float]:
        """Validation scores (recorded as ``valid_<key>``); ``{}`` without validation data."""
        raise NotImplementedError

    def score(self, record: dict) -> float:
        """Lower is better: the number that selects the best epoch from its history record."""
        return record.get("valid_loss", record["train_loss"])

    def postfix(self, totals: dict[str, float], n_batches: int) -> dict[str, str]:
        """Running figures shown on the progress bar."""
        return {"loss": f"{totals['loss'] / n_batches:.4f}"}

    def epoch_postfix(self, record: dict) -> dict[str, str]:
        """Figures of a finished epoch shown on the bar over epochs."""
        return {"score": f"{self.score(record):.4g}"}


class TrainingLoop:
    """The training loop of the package: epochs of an :class:`Objective` with AdamW.

    Each epoch visits the training crystals in an order drawn from ``(seed, epoch)``, runs
    the objective's steps (bfloat16 autocast on CUDA when ``mixed_precision``), records the
    mean training losses and the validation scores, keeps the best epoch's state by
    :meth:`Objective.score` and stops after ``patience`` epochs without improvement or once
    ``max_seconds`` have passed. A NaN or infinite loss or weight stops training with
    ``FloatingPointError`` after putting the last finite state back. Under ``torchrun`` (see
    :mod:`dimfeat.distributed`) each rank takes a share of every step's batches and gradients
    are averaged.

    Parameters
    ----------
    objective : Objective
    config : object
        Settings with ``epochs``, ``lr``, ``weight_decay``, ``seed``, ``patience``,
        ``mixed_precision``, ``max_seconds`` and ``to_dict()`` (e.g. :class:`TrainingConfig`);
        ``to_dict()`` is stored in checkpoints and compared when resuming.
    device : torch.device
    checkpoint_dir : path, optional
        Folder for ``checkpoint.pt`` written after every epoch; :meth:`fit` resumes from it
        (with ``epochs`` at least the epochs it holds). One run at a time: :meth:`fit` holds the
        lock file ``checkpoint.lock`` there (:func:`dimfeat.locks.exclusive`).
    progress : bool, default=False
        Show tqdm progress bars: one over epochs (the validation score, the best epoch and the
        epochs without improvement against ``patience``; a line when training stops early) and
        one over each epoch's batches with running losses.
    callbacks : sequence of callable, optional
        Each is called as ``callback(loop, record)`` after every epoch, once the epoch's
        history record is appended and the checkpoint written.

    Attributes
    ----------
    history : list of dict
        One entry per epoch: ``epoch``, ``train_<key>`` for the objective's loss keys,
        ``valid_<key>`` for its validation scores, ``seconds`` and ``best``.
    encoder : SiteNetEncoder
        The objective's encoder.
    optimizer : torch.optim.AdamW
    generator : torch.Generator
        Random stream handed to every training step (saved in checkpoints).
    """

    def __init__(
        self,
        objective: Objective,
        config: Any,
        device: torch.device,
        checkpoint_dir: str | Path | None = None,
        progress: bool = False,
        callbacks: Sequence[Callable[[Any, dict], None]] = (),
    ) -> None:
        self.objective = objective
        self.encoder = objective.encoder
        self.config = config
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress = progress
        self.callbacks = tuple(callbacks)
        self.optimizer = torch.optim.AdamW(
            objective.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        # per-group base rates, which the schedule scales (a resumed optimiser state holds the
        # decayed ones)
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
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
            If the objective refuses the data, or ``checkpoint_dir`` holds a checkpoint of
            another run (other data, starting weights or settings), or one of more epochs than
            ``config.epochs``.
        dimfeat.locks.LockHeldError
            If another live run trains in ``checkpoint_dir`` (each run holds the lock file
            ``checkpoint.lock`` there while it trains; one left by a killed run is taken over
            with a warning).
        FloatingPointError
            If the loss or a weight becomes NaN or infinite (the message names the epoch and
            batch); the modules are put back to their best epoch, or to their state when
            ``fit`` started, so no NaN state is kept or checkpointed.
        """
        if self.checkpoint_dir is None or (
            self.distributed is not None and not self.distributed.is_main
        ):
            return self._fit(train, valid)
        from dimfeat.locks import exclusive

        # one run at a time per checkpoint_dir: a second would overwrite the first's checkpoints
        with exclusive(self.checkpoint_dir / CHECKPOINT_LOCK, purpose=f"{self.objective.name}"):
            return self._fit(train, valid)

    def _fit(self, train: list[CrystalInputs], valid: list[CrystalInputs]) -> list[dict]:
        from dimfeat.weights import state_checksum

        self.objective.check(train, valid)
        self._data_fingerprint = self.objective.fingerprint(train, valid)
        self._start_checksum = state_checksum(self.encoder)
        self._resume()
        self._good_state = self._kept_state()
        if self.distributed is not None and self.history:
            self.distributed.reseed(self.generator, self.config.seed, len(self.history))
        start = time.perf_counter()
        bar = progress_bar(
            self.progress,
            desc=self.objective.name,
            total=self.config.epochs,
            initial=len(self.history),
            unit="epoch",
        )
        try:
            for epoch in range(len(self.history), self.config.epochs):
                if self._should_stop():
                    if bar is not None:
                        bar.write(self._stop_message(), file=sys.stderr)
                    break
                record = self._run_epoch(epoch, train, valid)
                self.history.append(record)
                self._save_checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(self._epoch_postfix(record), refresh=True)
                for callback in self.callbacks:
                    callback(self, record)
                limit = self.config.max_seconds
                if limit is not None and time.perf_counter() - start > limit:
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.best_state is not None:
            self._load_kept(self.best_state)
        return self.history

    # -- one epoch ------------------------------------------------------------------------------
    def _run_epoch(
        self, epoch: int, train: list[CrystalInputs], valid: list[CrystalInputs]
    ) -> dict:
        start = time.perf_counter()
        rng = np.random.default_rng([self.config.seed, epoch])
        order = rng.permutation(len(train))
        self.objective.start_epoch(epoch)
        factor = cosine_lr_factor(epoch, getattr(self.config, "lr_decay_epochs", None))
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor
        groups = self.objective.train_groups(train, order, epoch)
        if self.distributed is not None:
            groups = self.distributed.shard(groups)
        for module in self.objective.modules().values():
            module.train()
        keys = self.objective.loss_keys
        totals = dict.fromkeys(keys, 0.0)
        bar = progress_bar(
            self.progress,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            iterable=groups,
            unit="batch",
            leave=False,
        )
        for k, (group, batch) in enumerate(collated(train, bar, self.device), start=1):
            terms = self._train_step(batch, group)
            if not math.isfinite(terms["loss"]) or not self._parameters_finite():
                self._diverged(f"epoch {epoch + 1}, batch {k} of {len(groups)}", terms["loss"])
            for key in keys:
                totals[key] += terms[key]
            if self.progress:
                bar.set_postfix(**self.objective.postfix(totals, k))
        if self.distributed is not None:
            totals = self.distributed.mean(totals)
        record: dict = {"epoch": epoch + 1}
        if factor != 1.0:
            record["lr_factor"] = factor
        record.update({f"train_{key}": v / max(len(groups), 1) for key, v in totals.items()})
        scores = self.objective.validate(valid, self._autocast)
        record.update({f"valid_{key}": v for key, v in scores.items()})
        record["seconds"] = time.perf_counter() - start
        score = self.objective.score(record)
        if not math.isfinite(score):
            self._diverged(f"epoch {epoch + 1} (validation)", score)
        record["best"] = bool(score < self.best_loss)
        if record["best"]:
            self.best_loss = score
            self.bad_epochs = 0
            self.best_state = self._kept_state()
        else:
            self.bad_epochs += 1
        return record

    def _train_step(self, batch: Batch, group: np.ndarray) -> dict[str, float]:
        with self._autocast():
            terms = self.objective.train_step(batch, group, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        if self.distributed is not None:
            self.distributed.average_gradients(self._parameters())
        self.optimizer.step()
        return terms.as_floats()

    def _autocast(self):
        enabled = self.config.mixed_precision and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _best_epoch(self) -> int | None:
        best = [r["epoch"] for r in self.history if r.get("best")]
        return best[-1] if best else None

    def _epoch_postfix(self, record: dict) -> dict[str, str]:
        figures = self.objective.epoch_postfix(record)
        figures["best"] = f"epoch {self._best_epoch()}"
        if self.config.patience is not None:
            figures["patience"] = f"{self.bad_epochs}/{self.config.patience}"
        return figures

    def _stop_message(self) -> str:
        return (
            f"{self.objective.name}: stopped early after epoch {len(self.history)} of "
            f"{self.config.epochs}: no better validation score in {self.config.patience} epochs "
            f"(best: epoch {self._best_epoch()})"
        )

    def _should_stop(self) -> bool:
        return self.config.patience is not None and self.bad_epochs >= self.config.patience

    def _parameters_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self._parameters()]).all())

    def _kept_state(self) -> dict:
        modules = self.objective.modules()
        return {name: copy.deepcopy(modules[name].state_dict()) for name in self.objective.kept}

    def _load_kept(self, state: dict) -> None:
        modules = self.objective.modules()
        for name in self.objective.kept:
            modules[name].load_state_dict(state[name])

    def _diverged(self, where: str, loss: float) -> None:
        """Put back the last finite state and raise ``FloatingPointError``."""
        if self.best_state is not None:
            self._load_kept(self.best_state)
            kept = "its best epoch so far"
        else:
            self._load_kept(self._good_state)
            kept = "its state when fit started"
        raise FloatingPointError(
            f"{self.objective.name} diverged at {where}: the loss is {loss} or a weight became "
            f"NaN or infinite. The encoder was put back to {kept}, and no checkpoint of the "
            f"diverged state was written; lower the learning rate (lr={self.config.lr})"
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
        state = {name: module.state_dict() for name, module in self.objective.modules().items()}
        state.update(
            {
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
        )
        tmp = self.checkpoint_dir / (CHECKPOINT_NAME + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_dir / CHECKPOINT_NAME)

    def _resume(self) -> None:
        if self.checkpoint_dir is None or not (self.checkpoint_dir / CHECKPOINT_NAME).exists():
            return
        # Checkpoints are written by this class into a folder the user chose; weights_only=True
        # still refuses anything but tensors and plain containers.
        file = self.checkpoint_dir / CHECKPOINT_NAME
        modules = self.objective.modules()
        try:
            state = torch.load(file, map_location=self.device, weights_only=True)
            saved = json.loads(state["config"])
            missing = [name for name in modules if name not in state]
            if missing:
                raise KeyError(f"no state of {', '.join(missing)}")
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
        # a setting added in a later version reads, in an older checkpoint, as the value that
        # reproduces what that version did
        added = getattr(self.config, "ADDED_SETTINGS", {})
        differs = {
            k
            for k in current
            if k not in budget_keys and saved.get(k, added.get(k, _MISSING)) != current[k]
        }
        unknown = {k for k in differs if k not in saved and k not in added}
        if unknown:
            raise ValueError(
                f"checkpoint in {self.checkpoint_dir} was written by an older dimfeat that had "
                f"no {', '.join(sorted(unknown))} setting, so it cannot be resumed by this one; "
                "use another checkpoint_dir"
            )
        if differs:
            raise ValueError(
                f"checkpoint in {self.checkpoint_dir} was written with different training "
                f"settings ({', '.join(sorted(differs))}); use another checkpoint_dir"
            )
        done = len(json.loads(state["history"]))
        if done > self.config.epochs:
            # the state is past the requested budget: resuming would return (and record as an
            # epochs-run) the encoder of `done` epochs
            raise ValueError(
                f"checkpoint in {self.checkpoint_dir} holds {done} epochs of this run, more than "
                f"epochs={self.config.epochs}: its encoder is a {done}-epoch one. Pass epochs >= "
                f"{done} to resume it (epochs={done} returns the finished run), or use another "
                f"checkpoint_dir to train {self.config.epochs} epochs from the start"
            )
        for name, module in modules.items():
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.history = json.loads(state["history"])
        self.best_loss = state["best_loss"]
        self.best_state = state["best_state"]
        self.bad_epochs = state["bad_epochs"]


def inputs_fingerprint(*parts: list[CrystalInputs]) -> str:
    """sha256 of lists of crystals' inputs (species, sites and distances, in order).

    Parameters
    ----------
    *parts : list of CrystalInputs

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"part:{len(part)}".encode())
        for crystal in part:
            digest.update(f"{crystal.n_sites},{crystal.n_atoms}".encode())
            for array in (crystal.species, crystal.atom_site, crystal.distances):
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def collated(inputs: list[CrystalInputs], groups, device: torch.device):
    """``(group, batch)`` for each group of indices: the loop's one place that collates."""
    for group in groups:
        yield group, collate([inputs[i] for i in group]).to(device)
