"""The settings of DIM training, each declared once: :class:`TrainingConfig`.

Every field of :class:`TrainingConfig` carries, in its ``metadata`` (:func:`setting`), what
the faces of dimfeat need to know about it: its help text, its check, its bounds, its
``dimfeat train`` flag and group, its phrase in the model card's recipe, whether the Deep
InfoMax loss takes it, and the value that reproduces the behaviour of versions that did not
record it. The faces are generated from these declarations:

- the ``dimfeat train`` flags (:func:`add_training_flags`, :func:`config_from_args`);
- the scikit-learn parameter constraints of :class:`~dimfeat.DeepInfoMaxFeaturizer`'s training
  parameters (:func:`setting_bounds`);
- the recipe lines of the model card (:func:`recipe_lines`);
- the arguments of :class:`~dimfeat.infomax.DeepInfoMaxLoss` (:func:`loss_arguments`).

Adding a training option is one field here plus its implementation (in the loss or the
loop); ``tests/test_training_config.py`` fails when a field lacks one of the declarations.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from dimfeat.infomax import (
    CRITICS,
    DEFAULT_BETA,
    DEFAULT_COMPOSITION_WEIGHT,
    DEFAULT_CRITIC,
    DEFAULT_GLOBAL_SITES,
    DEFAULT_LOCAL_CONSTITUENT,
    DEFAULT_LOCAL_PAIRS,
    DEFAULT_SYNTHETIC_WEIGHT,
    FALSE_SAMPLE_KINDS,
    STRAIN_RANGE,
    check_critic,
    check_false_samples,
    check_strain_range,
    check_synthetic_weight,
)

__all__ = [
    "CARD_LINES",
    "VALIDATION_FRACTION",
    "Flag",
    "Phrase",
    "TrainingConfig",
    "add_training_flags",
    "config_from_args",
    "loss_arguments",
    "recipe_lines",
    "setting",
    "setting_bounds",
    "settings_of_record",
]

#: Share of the crystals given to training held out (at least 2) to select the best epoch: the
#: one default of ``validation_fraction`` in :class:`TrainingConfig`, ``dimfeat train
#: --validation-fraction`` and ``DeepInfoMaxFeaturizer`` (the recipe of the bundled weights).
#: ``SiteNetRegressor`` holds out more of its few labels
#: (:data:`dimfeat.regressor.REGRESSION_VALIDATION_FRACTION`).
VALIDATION_FRACTION = 0.05

#: The recipe lines of the model card, in order; a :class:`Phrase` names the one it joins.
CARD_LINES = (
    "False samples: ",
    "Local constituents: ",
    "Classifier projection of the vectors: ",
    "Loss = ",
)


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the ``dimfeat train`` command line.

    Parameters
    ----------
    group : str
        Title prefix of the ``--help`` group (``"recipe"`` or ``"optimisation"``).
    name : str, optional
        The flag (default: ``--`` and the field name with dashes).
    type, nargs, metavar, choices, action
        As for :meth:`argparse.ArgumentParser.add_argument`.
    help : str, optional
        The ``--help`` text where the flag says something else than the field (``--no-amp``).
    show : callable, optional
        The command-line default of the field's default (e.g. ``None`` -> ``0``).
    parse : callable, optional
        The setting of a parsed value (e.g. ``0`` -> ``None``).
    """

    group: str
    name: str | None = None
    type: Callable | None = None
    nargs: int | str | None = None
    metavar: str | tuple[str, ...] | None = None
    choices: Sequence[str] | None = None
    action: str | None = None
    help: str | None = None
    show: Callable[[Any], Any] | None = None
    parse: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Phrase:
    """A setting's phrase in a recipe line of the model card.

    ``text(value, settings)`` returns the phrase, or ``None`` to leave it out; the phrases of
    one line (:data:`CARD_LINES`) are joined in field order.
    """

    line: str
    text: Callable[[Any, dict], str | None]


def setting(
    default: Any = MISSING,
    *,
    help: str,
    cli: Flag | None,
    card: Phrase | None,
    bounds: list | None = None,
    check: Callable[[Any], Any] | None = None,
    loss: bool = False,
    added: Any = MISSING,
    doc: str = "",
) -> Any:
    """A :class:`TrainingConfig` field with its declarations in ``metadata``.

    Parameters
    ----------
    default : object
        The default value.
    help : str
        One line: the ``--help`` text (``%(default)s`` allowed) and the docstring's summary.
    cli : Flag or None
        Its ``dimfeat train`` flag; ``None``: no flag (stated, not forgotten).
    card : Phrase or None
        Its phrase in the model card's recipe; ``None``: the card shows it only in the
        recorded settings.
    bounds : list or None
        Allowed values as scikit-learn states them, neutrally: ``("int"|"float", low, high,
        closed)`` intervals, ``None`` (None allowed), types. ``None``: not a parameter of
        :class:`~dimfeat.DeepInfoMaxFeaturizer`.
    check : callable, optional
        Checks (and normalises) the value in ``TrainingConfig.__post_init__``.
    loss : bool, default=False
        Passed by name to :class:`~dimfeat.infomax.DeepInfoMaxLoss`.
    added : object, optional
        For a setting added after checkpoints were first written: the value that reproduces
        the versions that did not record it (:attr:`TrainingConfig.ADDED_SETTINGS`).
    doc : str, optional
        More text for the docstring.
    """
    metadata = {
        "help": help,
        "cli": cli,
        "card": card,
        "bounds": bounds,
        "check": check,
        "loss": loss,
        "doc": doc,
    }
    if added is not MISSING:
        metadata["added"] = added
    return field(default=default, metadata=metadata)


def _comma(value: Sequence[str] | None) -> str | None:
    return None if value is None else ",".join(value)


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(text.split(","))


def _zero_is_none(value: int | None) -> int:
    return value or 0


def _none_if_zero(value: int) -> int | None:
    return value or None


def _check_bool(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return value

    return check


def _check_decay(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"lr_decay_epochs must be None or >= 1, got {value}")
    return value


def _local_kinds(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else check_false_samples(value, "local_false_samples")


def _strain_phrase(value: Sequence[float], settings: dict) -> str | None:
    kinds = [*(settings.get("false_samples") or []), *(settings.get("local_false_samples") or [])]
    if tuple(value) == STRAIN_RANGE or "strain" not in kinds:
        return None
    return f"; strain factors {value[0]:g}-{value[1]:g}"


_POSITIVE = ("float", 0, None, "neither")
_NON_NEGATIVE = ("float", 0, None, "left")


@dataclass
class TrainingConfig:
    """Hyper-parameters of DIM training (stored in ``config.json`` of trained weights).

    The defaults are the ones ``dimfeat train`` and :class:`~dimfeat.DeepInfoMaxFeaturizer` use
    (the featuriser's ``epochs`` is 0: it loads weights unless asked to train). Each field
    declares its help text, check, bounds, command-line flag and model-card phrase once
    (:func:`setting`); the Parameters below are generated from them.
    """

    epochs: int = setting(
        50,
        help="most passes over the training crystals (default: %(default)s)",
        cli=Flag("optimisation", type=int),
        card=None,  # the card's Training section states the epochs run and the maximum
    )
    lr: float = setting(
        8.12e-4,
        help="AdamW learning rate (default: %(default)s)",
        cli=Flag("optimisation", type=float),
        card=None,  # in the Loss line of alpha
        bounds=[_POSITIVE],
        doc="The paper's 8.12e-4.",
    )
    weight_decay: float = setting(
        0.01,
        help="AdamW weight decay",
        cli=None,
        card=None,  # the paper's; not a flag
    )
    site_budget: int = setting(
        1200,
        help="most unique sites per training batch (the paper's 1200; default: %(default)s)",
        cli=Flag("optimisation", type=int),
        card=None,  # in the Loss line of alpha
        bounds=[("int", 2, None, "left")],
    )
    validation_fraction: float = setting(
        VALIDATION_FRACTION,
        help="share of the crystals held out (at least 2) to choose the best epoch by the "
        "validation loss; 0: none, keep the last epoch (default: %(default)s)",
        cli=Flag("optimisation", type=float),
        card=None,  # the card's data lines give the counts
        bounds=[("float", 0, 1, "left")],
    )
    patience: int | None = setting(
        10,
        help="stop after this many epochs without a better validation loss (default: %(default)s)",
        cli=Flag("optimisation", type=int),
        card=None,
        bounds=[("int", 1, None, "left"), None],
        doc="None: never stop early (not expressible on the command line).",
    )
    alpha: float = setting(
        1.0,
        help="weight of the Jensen-Shannon terms",
        cli=None,  # the loss's scale is set by lr
        card=Phrase(
            "Loss = ",
            lambda v, s: (
                f"{v} x Jensen-Shannon + {s.get('beta')} x KL; AdamW, learning rate "
                f"{s.get('lr')}, {s.get('site_budget')} sites per batch"
            ),
        ),
        bounds=[_NON_NEGATIVE],
        loss=True,
    )
    beta: float = setting(
        DEFAULT_BETA,
        help="weight of the KL terms (default: %(default)s)",
        cli=Flag("recipe", type=float),
        card=None,  # in the Loss line of alpha
        bounds=[_NON_NEGATIVE],
        loss=True,
    )
    false_samples: tuple[str, ...] = setting(
        FALSE_SAMPLE_KINDS,
        help="comma-separated kinds of false sample (also: substitution, not in the default)",
        cli=Flag("recipe", show=_comma, parse=_split),
        card=Phrase("False samples: ", lambda v, s: ", ".join(v or [])),
        bounds=[tuple, list],
        check=check_false_samples,
        loss=True,
        doc="See :data:`dimfeat.infomax.FALSE_SAMPLE_KINDS` and "
        ":data:`dimfeat.infomax.OPTIONAL_FALSE_SAMPLE_KINDS`.",
    )
    local_constituent: str = setting(
        DEFAULT_LOCAL_CONSTITUENT,
        help="local DIM constituents: [f_j, d_ij] (neighbour) or [f_i, f_j, d_ij] (bond)",
        cli=Flag("recipe", choices=["neighbour", "bond"]),
        card=Phrase("Local constituents: ", lambda v, s: f"{v}"),
        loss=True,
    )
    local_pairs: int | None = setting(
        DEFAULT_LOCAL_PAIRS,
        help="pairs scored per environment in the local loss, drawn by weight (0: all pairs)",
        cli=Flag("recipe", type=int, show=_zero_is_none, parse=_none_if_zero),
        card=Phrase(
            "Local constituents: ", lambda v, s: f"; pairs scored per environment: {v or 'all'}"
        ),
        loss=True,
        doc="None: every pair.",
    )
    global_sites: int | None = setting(
        DEFAULT_GLOBAL_SITES,
        help="sites kept per synthetic false crystal in the global loss (0: all sites)",
        cli=Flag("recipe", type=int, show=_zero_is_none, parse=_none_if_zero),
        card=Phrase(
            "Local constituents: ",
            lambda v, s: f"; sites per synthetic crystal in the global loss: {v or 'all'}",
        ),
        loss=True,
        doc="None: every site.",
    )
    composition_weight: float = setting(
        DEFAULT_COMPOSITION_WEIGHT,
        help="weight of the composition read-out term (0: the paper's objective)",
        cli=Flag("recipe", type=float),
        card=None,
        bounds=[_NON_NEGATIVE],
        loss=True,
        added=0.0,
    )
    local_false_samples: tuple[str, ...] | None = setting(
        None,
        help="kinds for the local loss only (default: --false-samples); the paper's: "
        "other,polymorph,composition",
        cli=Flag("recipe", show=_comma, parse=_split),
        card=Phrase(
            "False samples: ",
            lambda v, s: None if v is None else f" (local loss: {', '.join(v)})",
        ),
        check=_local_kinds,
        loss=True,
        added=None,
        doc="None: ``false_samples``.",
    )
    critic: str = setting(
        DEFAULT_CRITIC,
        help="projection of the vectors in the DIM classifiers: the paper's MLP, or linear "
        "(scores linear in the vector)",
        cli=Flag("recipe", choices=list(CRITICS)),
        card=Phrase("Classifier projection of the vectors: ", lambda v, s: f"{v}"),
        check=check_critic,
        loss=True,
        added="mlp",
    )
    synthetic_weight: float = setting(
        DEFAULT_SYNTHETIC_WEIGHT,
        help="weight of each synthetic kind of false sample relative to 'other' (1: all alike)",
        cli=Flag("recipe", type=float),
        card=Phrase(
            "False samples: ",
            lambda v, s: None if v == 1.0 else f"; each synthetic kind weighted {v} of other",
        ),
        check=check_synthetic_weight,
        loss=True,
        added=1.0,
    )
    strain_range: tuple[float, float] = setting(
        STRAIN_RANGE,
        help="distance factors of the strain false samples: log-uniform in [LOW, HIGH] or its "
        "inverse (default: 1.05 1.25)",
        cli=Flag("recipe", type=float, nargs=2, metavar=("LOW", "HIGH"), show=list, parse=tuple),
        card=Phrase("False samples: ", _strain_phrase),
        check=check_strain_range,
        loss=True,
        added=list(STRAIN_RANGE),
    )
    global_trains_local: bool = setting(
        False,
        help="let the global DIM loss train the local encoder too (default: the paper's detach)",
        cli=Flag("recipe", action="store_true"),
        card=Phrase(
            "False samples: ",
            lambda v, s: "; the global loss also trains the local encoder" if v else None,
        ),
        check=_check_bool("global_trains_local"),
        loss=True,
        added=False,
    )
    lr_decay_epochs: int | None = setting(
        None,
        help="decay the learning rate along a half cosine over this many epochs (default: "
        "constant, as in the paper)",
        cli=Flag("optimisation", type=int),
        card=None,
        check=_check_decay,
        added=None,
        doc="From ``lr`` at the first epoch towards 0, staying at the last value afterwards; "
        "set once per epoch from the epoch's index alone, so a resumed run follows the same "
        "schedule (see :func:`dimfeat.training.cosine_lr_factor`).",
    )
    seed: int = setting(
        0,
        help="seeds random weights, the validation split and the batches (default: 0)",
        cli=Flag("recipe", type=int),
        card=None,  # the card's Training section states the seed
    )

    #: Settings added after checkpoints were first written, with the value that reproduces the
    #: behaviour of the versions that did not record them (a checkpoint without the key resumes
    #: only a run with this value); from each field's ``added``.
    ADDED_SETTINGS: ClassVar[dict]

    mixed_precision: bool = setting(
        True,
        help="bfloat16 autocast on CUDA (ignored on CPU)",
        cli=Flag(
            "optimisation",
            name="--no-amp",
            help="no bfloat16 autocast on CUDA",
            action="store_true",
            show=lambda v: not v,
            parse=lambda v: not v,
        ),
        card=None,
    )
    max_seconds: float | None = setting(
        None,
        help="seconds: stop after the first epoch that ends past this wall-clock budget (None: "
        "no limit); a resumed run gets a fresh budget",
        cli=Flag(
            "optimisation",
            name="--max-minutes",
            help="stop after the epoch that passes this time budget",
            type=float,
            show=lambda v: None if v is None else v / 60,
            parse=lambda v: None if v is None else 60 * v,
        ),
        card=None,
    )

    def __post_init__(self) -> None:
        # each field's check, in field order: a bad value is refused before any data is read
        for f in fields(self):
            check = f.metadata.get("check")
            if check is not None:
                setattr(self, f.name, check(getattr(self, f.name)))

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


TrainingConfig.ADDED_SETTINGS = {
    f.name: f.metadata["added"] for f in fields(TrainingConfig) if "added" in f.metadata
}


def _type_name(f) -> str:
    return str(f.type).replace("tuple[str, ...]", "tuple of str")


TrainingConfig.__doc__ += "\n    Parameters\n    ----------\n" + "".join(
    f"    {f.name} : {_type_name(f)}, default={f.default!r}\n"
    f"        {f.metadata['help'].replace('%(default)s', repr(f.default))}."
    + (f" {f.metadata['doc']}" if f.metadata["doc"] else "")
    + "\n"
    for f in fields(TrainingConfig)
)


def loss_arguments(config: TrainingConfig) -> dict[str, Any]:
    """The settings :class:`~dimfeat.infomax.DeepInfoMaxLoss` takes, by name."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.metadata["loss"]}


def setting_bounds(name: str) -> list | None:
    """The declared bounds of a setting (see :func:`setting`), or ``None``."""
    return _field(name).metadata["bounds"]


def _field(name: str):
    return next(f for f in fields(TrainingConfig) if f.name == name)


def _flag_name(f) -> str:
    return f.metadata["cli"].name or "--" + f.name.replace("_", "-")


def add_training_flags(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """Add the flag of every setting that has one to its group (by title prefix)."""
    for f in fields(TrainingConfig):
        flag: Flag | None = f.metadata["cli"]
        if flag is None:
            continue
        default = flag.show(f.default) if flag.show else f.default
        options: dict[str, Any] = {"help": flag.help or f.metadata["help"]}
        if flag.action:
            options["action"] = flag.action
        else:
            options["default"] = default
            for key in ("type", "nargs", "metavar", "choices"):
                if getattr(flag, key) is not None:
                    options[key] = getattr(flag, key)
        groups[flag.group].add_argument(_flag_name(f), **options)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`TrainingConfig` of parsed ``dimfeat train`` arguments.

    Settings without a flag take their defaults.
    """
    values = {}
    for f in fields(TrainingConfig):
        flag: Flag | None = f.metadata["cli"]
        if flag is None:
            continue
        value = getattr(args, _flag_name(f).lstrip("-").replace("-", "_"))
        values[f.name] = flag.parse(value) if flag.parse else value
    return TrainingConfig(**values)


def recipe_lines(settings: dict) -> list[str]:
    """The recipe lines of a model card from recorded settings (:data:`CARD_LINES` order).

    A setting missing from an older record reads as its :attr:`TrainingConfig.ADDED_SETTINGS`
    value.
    """
    full = settings_of_record(settings)
    phrases: dict[str, list[str]] = {line: [] for line in CARD_LINES}
    for f in fields(TrainingConfig):
        phrase: Phrase | None = f.metadata["card"]
        if phrase is not None:
            text = phrase.text(full.get(f.name), full)
            if text is not None:
                phrases[phrase.line].append(text)
    return [f"- {line}{''.join(parts)}." for line, parts in phrases.items() if parts]


def settings_of_record(settings: dict) -> dict[str, Any]:
    """The :class:`TrainingConfig` fields of settings recorded with trained weights.

    A setting missing from an older record reads as its :attr:`TrainingConfig.ADDED_SETTINGS`
    value (the behaviour of the versions that did not record it); keys that are not fields
    (from a newer version) are left out. ``TrainingConfig(**settings_of_record(s))`` replays
    the recorded recipe.
    """
    names = {f.name for f in fields(TrainingConfig)}
    full = {**TrainingConfig.ADDED_SETTINGS, **settings}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in full.items() if k in names}
