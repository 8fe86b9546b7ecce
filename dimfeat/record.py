"""The training record stored under ``"training"`` in a weights folder's ``config.json``.

One typed record, :class:`TrainingRecord`, is written by every path that trains weights (the
command line, the estimators, the benchmarks) and read by the model card
(:mod:`dimfeat.card`). Records written by older versions load unchanged: every field is
optional, and keys this version does not know are kept in :attr:`TrainingRecord.extra`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["TrainingRecord"]


@dataclass
class TrainingRecord:
    """How a set of weights was trained.

    Parameters
    ----------
    settings : dict or None
        Training settings (e.g. :meth:`dimfeat.training.TrainingConfig.to_dict`).
    history : list of dict
        Per-epoch records of the training loop (``epoch``, ``train_*``, ``valid_*``,
        ``seconds``, ``best``).
    data : dict
        What was trained on: ``description``, ``n_train``, ``n_valid``, and optionally
        ``dataset_id``, ``credit`` and counts of crystals left out.
    start_weights : str or None
        Weights training started from (``None``: random).
    command : str or None
        Command line that ran the training.
    hardware : str or None
    wall_time_s : float or None
    torch_version : str or None
    note : str or None
        Free text shown in the model card.
    epochs_run : int or None
        Epochs run, when the history kept is not all of them.
    resumed_runs : int or None
        Number of runs the training was spread over (resumed from checkpoints).
    selection : dict or None
        How the epoch was chosen when not by the validation loss (``epoch``, ``criterion``,
        ``description``, ``curve``).
    run_history : list or None
        Records of the separate runs of a resumed training.
    readout : dict or None
        When the vector was restricted to its principal directions after training
        (:func:`dimfeat.channels.principal_readout`): ``rank``, ``n_structures``,
        ``explained_variance`` and the ``data`` they were computed on.
    extra : dict
        Any other keys (kept as they are).
    """

    settings: dict | None = None
    history: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    start_weights: str | None = None
    command: str | None = None
    hardware: str | None = None
    wall_time_s: float | None = None
    torch_version: str | None = None
    note: str | None = None
    epochs_run: int | None = None
    resumed_runs: int | None = None
    selection: dict | None = None
    run_history: list | None = None
    readout: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: dict | TrainingRecord | None) -> TrainingRecord | None:
        """The record of a ``config.json`` ``"training"`` entry (``None`` stays ``None``).

        Parameters
        ----------
        record : dict, TrainingRecord or None

        Returns
        -------
        TrainingRecord or None
        """
        if record is None or isinstance(record, TrainingRecord):
            return record
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in record.items() if k in known}
        return cls(**values, extra={k: v for k, v in record.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary: the fields that are set, then :attr:`extra`.

        Returns
        -------
        dict
        """
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = value
        return out
