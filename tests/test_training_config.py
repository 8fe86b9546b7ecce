"""Each training setting is declared once (a :class:`TrainingConfig` field with its metadata),
and every face is generated from that declaration: a field missing from the command line, the
featuriser, the model card or the loss (or declared without saying so) fails here."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import MISSING, fields

import pytest

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.card import model_card
from dimfeat.cli import _parser
from dimfeat.featurizer import _TRAINING_PARAMS
from dimfeat.infomax import DeepInfoMaxLoss
from dimfeat.training import TrainingConfig
from dimfeat.training_config import (
    CARD_LINES,
    Phrase,
    config_from_args,
    loss_arguments,
    recipe_lines,
)

FIELDS = list(fields(TrainingConfig))
DECLARED = {"help", "cli", "card", "bounds", "check", "loss", "doc"}


def _train_parser() -> argparse.ArgumentParser:
    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["train"]


@pytest.mark.parametrize("f", FIELDS, ids=lambda f: f.name)
def test_every_field_declares_each_face(f):
    """Declared with ``setting``: help text, flag (or None), card phrase (or None), bounds (or
    None: not a featuriser parameter), check, whether the loss takes it."""
    assert DECLARED <= set(f.metadata), f"{f.name}: declare it with dimfeat.training_config.setting"
    assert f.metadata["help"].strip(), f.name
    assert f.default is not MISSING, f.name


def test_the_train_flags_are_the_declared_ones_with_their_defaults_and_groups():
    parser = _train_parser()
    group_of = {
        a.dest: g.title.split(":")[0] for g in parser._action_groups for a in g._group_actions
    }
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    for f in FIELDS:
        flag = f.metadata["cli"]
        name = (flag.name if flag else None) or "--" + f.name.replace("_", "-")
        if flag is None:
            assert name not in by_flag, f"{f.name} is declared without a flag"
            continue
        action = by_flag[name]
        assert group_of[action.dest] == flag.group, f.name
        assert (action.help or "").strip(), f.name
    # the parsed defaults are TrainingConfig's defaults, flag by flag
    args = parser.parse_args(["out", "--data", "in"])
    assert config_from_args(args) == TrainingConfig()


def test_the_featurizer_training_parameters_are_the_declared_ones():
    signature = inspect.signature(DeepInfoMaxFeaturizer).parameters
    constraints = DeepInfoMaxFeaturizer._parameter_constraints
    with_bounds = {f.name for f in FIELDS if f.metadata["bounds"] is not None}
    assert with_bounds == set(_TRAINING_PARAMS)
    for f in FIELDS:
        if f.metadata["bounds"] is None:
            continue
        assert signature[f.name].default == f.default, f.name
        assert len(constraints[f.name]) == len(f.metadata["bounds"]), f.name


def test_the_loss_takes_the_declared_settings_with_the_same_defaults():
    loss = inspect.signature(DeepInfoMaxLoss).parameters
    taken = set(loss_arguments(TrainingConfig()))
    assert taken == set(loss) - {"self", "config"}
    for f in FIELDS:
        if f.name in taken:
            assert loss[f.name].default == f.default, f.name


def test_the_card_recipe_is_generated_from_the_phrases():
    phrases = [f for f in FIELDS if f.metadata["card"] is not None]
    assert all(isinstance(f.metadata["card"], Phrase) for f in phrases)
    assert {f.metadata["card"].line for f in phrases} == set(CARD_LINES)
    settings = TrainingConfig(
        local_false_samples=("other",), synthetic_weight=0.5, strain_range=(1.01, 1.05),
        global_trains_local=True, critic="linear",
    ).to_dict()  # fmt: skip
    lines = recipe_lines(settings)
    assert len(lines) == len(CARD_LINES)
    for f in phrases:
        text = f.metadata["card"].text(settings[f.name], settings)
        assert text is not None and text in "".join(lines), f.name
    config = {
        "name": "x",
        "encoder": {"global_dim": 8, "distance_expansion": "linear"},
        "normalisation": {"features": []},
        "training": {"settings": settings, "history": []},
    }
    assert "\n".join(lines) in model_card(config)


def test_added_settings_come_from_the_fields():
    added = {f.name for f in FIELDS if "added" in f.metadata}
    assert set(TrainingConfig.ADDED_SETTINGS) == added
