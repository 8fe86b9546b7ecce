"""Plots of a training history: the validation curves of the paper's Fig. 6.

matplotlib is an optional dependency (``pip install dimfeat[plot]``); it is imported only when a
plot is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHANCE_LOSS", "plot_training_curves"]

#: Jensen-Shannon DIM loss of a classifier that always scores 0: ``softplus(0)`` for the true pair
#: plus ``softplus(0)`` for the false one, ``2 ln 2`` (about 1.386). The paper's dashed red line.
CHANCE_LOSS = 2.0 * math.log(2.0)

_PANELS = (
    ("local_dim", "(a) local DIM loss"),
    ("local_kl", "(b) local KL divergence"),
    ("global_dim", "(c) global DIM loss"),
    ("global_kl", "(d) global KL divergence"),
)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    path: str | Path | None = None,
    *,
    split: str = "valid",
    title: str | None = None,
    channel: str | None = None,
):
    """Draw the validation DIM and KL losses per epoch in a 2x2 grid (the paper's Fig. 6).

    Panels (a) and (c) show the local and global Jensen-Shannon DIM losses with the chance level
    ``2 ln 2`` as a dashed red line (a classifier that always scores 0); panels (b) and (d) show
    the local and global KL terms. The epoch selected by the validation loss (``best``) is
    marked in every panel. Several histories (the channels of a two-channel model, each
    trained on its own) are drawn as one line set each, in their own colour, each with its
    selected epoch.

    Parameters
    ----------
    history : list of dict, or dict
        Per-epoch records as in :attr:`dimfeat.training.DIMTrainer.history` or
        ``DeepInfoMaxFeaturizer.history_`` (keys ``epoch``, ``valid_local_dim``,
        ``valid_global_dim``, ``valid_local_kl``, ``valid_global_kl`` and optionally ``best``).
        A weights folder's parsed ``config.json`` or its ``training`` block is accepted too; a
        two-channel ``config.json`` (:mod:`dimfeat.channels`) gives one line set per channel,
        from each channel's training record, or ``channel``'s alone. A dict of name -> records
        (or training block) draws each under its name.
    path : str or path, optional
        Save the figure there (format from the suffix, e.g. ``.png`` or ``.pdf``).
    split : {"valid", "train"}, default="valid"
        Which losses to draw.
    title : str, optional
        Figure title.
    channel : {"context", "structure"}, optional
        With a two-channel ``config.json``: whose training history to draw (the channel's
        ``source.training``); ``None`` draws both. Ignored for any other ``history``.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    ValueError
        If a history is empty or lacks the ``{split}_*`` losses, or ``channel`` names no
        channel of a two-channel config.

    Examples
    --------
    >>> import json
    >>> from dimfeat.plot import plot_training_curves
    >>> config = json.load(open("weights/sitenet-dim-mp36k/config.json"))  # doctest: +SKIP
    >>> fig = plot_training_curves(config, "curves.png", channel="structure")  # doctest: +SKIP
    """
    curves = _curves(history, channel)
    if split not in ("valid", "train"):
        raise ValueError(f"split must be 'valid' or 'train', got {split!r}")
    for name, records in curves.items():
        missing = [f"{split}_{key}" for key, _ in _PANELS if f"{split}_{key}" not in records[0]]
        if missing:
            raise ValueError(
                f"the history{f' of {name}' if name else ''} has no {', '.join(missing)}; "
                + (
                    "it was trained without a validation slice: use split='train'"
                    if split == "valid"
                    else "is it a DIM training history?"
                )
            )
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_training_curves needs matplotlib: pip install 'dimfeat[plot]'"
        ) from exc

    fig = Figure(figsize=(9, 6.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for ax, (key, label) in zip(axes.ravel(), _PANELS, strict=True):
        marks = []
        for k, (name, records) in enumerate(curves.items()):
            epochs = [r.get("epoch", j + 1) for j, r in enumerate(records)]
            values = [r[f"{split}_{key}"] for r in records]
            prefix = f"{name}: " if name else ""
            ax.plot(epochs, values, color=f"C{k}", lw=1.5, label=f"{prefix}{split} loss")
            best = [e for e, r in zip(epochs, records, strict=True) if r.get("best")]
            if best:
                marks.append((best[-1], "0.5" if len(curves) == 1 else f"C{k}", prefix))
        if key.endswith("_dim"):
            ax.axhline(CHANCE_LOSS, color="red", ls="--", lw=1, label="chance (2 ln 2)")
        for chosen, colour, prefix in marks:
            ax.axvline(chosen, color=colour, ls=":", lw=1, label=f"{prefix}selected epoch {chosen}")
        ax.set_title(label, loc="left", fontsize=10)
        ax.set_ylabel("Jensen-Shannon loss" if key.endswith("_dim") else "KL")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def _curves(history: Any, channel: str | None = None) -> dict[str, list[Mapping[str, Any]]]:
    """The records of each history to draw, by name (``""`` for a single history)."""
    if isinstance(history, Mapping) and isinstance(history.get("channels"), Mapping):
        channels = history["channels"]  # a two-channel config.json: one training per channel
        if channel is not None and channel not in channels:
            raise ValueError(
                f"a two-channel weights config holds one training history per channel; pass "
                f"channel= one of {sorted(channels)} or None for all (got {channel!r})"
            )
        return {
            name: _records((block.get("source") or {}).get("training") or {})
            for name, block in channels.items()
            if channel in (None, name)
        }
    if isinstance(history, Mapping) and history and not {"history", "training"} & set(history):
        if all(
            isinstance(v, Mapping) or (isinstance(v, Sequence) and not isinstance(v, str))
            for v in history.values()
        ):
            return {str(name): _records(part) for name, part in history.items()}
    return {"": _records(history)}


def _records(history: Any) -> list[Mapping[str, Any]]:
    if isinstance(history, Mapping):
        if "training" in history and isinstance(history["training"], Mapping):
            history = history["training"]
        if "history" not in history:
            raise ValueError("expected a list of epoch records or a dict with a 'history' key")
        history = history["history"]
    records = list(history or [])
    if not records:
        raise ValueError("the training history is empty: nothing to plot")
    return records
