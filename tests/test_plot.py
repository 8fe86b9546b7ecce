"""dimfeat.plot: the paper's Fig. 6 from a training history."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import BUNDLED_WEIGHTS

pytest.importorskip("matplotlib")

from dimfeat.plot import CHANCE_LOSS, plot_training_curves
from dimfeat.weights import CONFIG_FILE, resolve_weights

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "weights" / "sitenet-dim-mp36k" / "config.json"
SINGLE_CHANNEL = ROOT / "weights/sitenet-dim-mp36k-single-channel/config.json"
KEYS = ("local_dim", "global_dim", "local_kl", "global_kl")


def _history(n: int = 4, prefixes=("train", "valid")) -> list[dict]:
    records = []
    for epoch in range(1, n + 1):
        record = {"epoch": epoch, "best": epoch == n - 1}
        for prefix in prefixes:
            record.update({f"{prefix}_{key}": 1.0 / epoch + k for k, key in enumerate(KEYS)})
        records.append(record)
    return records


def test_chance_line_is_two_ln_two():
    assert CHANCE_LOSS == pytest.approx(2 * math.log(2))


def test_grid_of_four_panels_with_chance_line_on_dim_panels(tmp_path):
    history = _history()
    path = tmp_path / "curves.png"
    fig = plot_training_curves(history, path)
    assert path.is_file() and path.stat().st_size > 0
    axes = fig.get_axes()
    assert len(axes) == 4
    titles = [ax.get_title(loc="left") for ax in axes]
    assert titles == [
        "(a) local DIM loss",
        "(b) local KL divergence",
        "(c) global DIM loss",
        "(d) global KL divergence",
    ]
    for ax, key in zip(axes, ("local_dim", "local_kl", "global_dim", "global_kl"), strict=True):
        curve = ax.get_lines()[0]
        assert list(curve.get_xdata()) == [1, 2, 3, 4]
        assert list(curve.get_ydata()) == [r[f"valid_{key}"] for r in history]
        levels = [tuple(line.get_ydata()) for line in ax.get_lines()[1:]]
        has_chance = (CHANCE_LOSS, CHANCE_LOSS) in levels
        assert has_chance == key.endswith("_dim")
        # the selected (best) epoch is marked
        assert any(tuple(line.get_xdata()) == (3, 3) for line in ax.get_lines()[1:])


def test_train_split_and_missing_validation():
    history = _history(prefixes=("train",))
    with pytest.raises(ValueError, match="split='train'"):
        plot_training_curves(history)
    fig = plot_training_curves(history, split="train")
    assert list(fig.get_axes()[0].get_lines()[0].get_ydata()) == [
        r["train_local_dim"] for r in history
    ]


def test_empty_history_raises():
    with pytest.raises(ValueError, match="empty"):
        plot_training_curves([])


def test_accepts_a_single_channel_weights_config():
    config = json.loads(SINGLE_CHANNEL.read_text())
    fig = plot_training_curves(config)
    n = len(config["training"]["history"])
    assert len(fig.get_axes()[2].get_lines()[0].get_xdata()) == n
    fig_training = plot_training_curves(config["training"])
    assert len(fig_training.get_axes()) == 4


def test_a_two_channel_config_draws_one_line_set_per_channel():
    """The bundled two-channel weights: each channel's own history, in its own colour, with its
    own selected epoch marked."""
    config = json.loads(BUNDLED.read_text())
    fig = plot_training_curves(config)
    channels = config["channels"]
    for ax in fig.get_axes():
        lines = {line.get_label(): line for line in ax.get_lines()}
        for k, name in enumerate(channels):
            history = channels[name]["source"]["training"]["history"]
            curve = lines[f"{name}: valid loss"]
            assert list(curve.get_xdata()) == [r["epoch"] for r in history]
            assert curve.get_color() == f"C{k}"
            chosen = max(r["epoch"] for r in history if r.get("best"))
            assert tuple(lines[f"{name}: selected epoch {chosen}"].get_xdata()) == (chosen,) * 2
    # the same from a dict of name -> records, as benchmarks/paper/plot_training passes them
    history = _history()
    fig = plot_training_curves({"a": history, "b": _history(6)})
    labels = [line.get_label() for line in fig.get_axes()[0].get_lines()]
    assert labels[:2] == ["a: valid loss", "b: valid loss"]
    assert "a: selected epoch 3" in labels and "b: selected epoch 5" in labels
    with pytest.raises(ValueError, match="history of b has no valid_local_dim"):
        plot_training_curves({"a": history, "b": _history(prefixes=("train",))})


@pytest.mark.parametrize("weights", BUNDLED_WEIGHTS)
def test_accepts_the_bundled_weights_config(weights):
    config = json.loads((resolve_weights(weights) / CONFIG_FILE).read_text())
    if "channels" not in config:  # one training history
        trainings = {None: config["training"]}
    else:  # one per channel, each trained apart: the channel must be named
        trainings = {c: block["source"]["training"] for c, block in config["channels"].items()}
        with pytest.raises(ValueError, match=r"history per channel; pass channel="):
            plot_training_curves(config, channel="both")
    for channel, training in trainings.items():
        fig = plot_training_curves(config, channel=channel)
        curve = fig.get_axes()[2].get_lines()[0]
        assert list(curve.get_ydata()) == [r["valid_global_dim"] for r in training["history"]]
        fig_training = plot_training_curves(training)
        assert len(fig_training.get_axes()) == 4
