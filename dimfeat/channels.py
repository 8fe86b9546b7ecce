"""The two-channel model: a context channel and a structure channel in one crystal vector.

A two-channel vector is the concatenation of two Site-Net encoders' vectors: a *context*
channel (an encoder with ``distance_input="none"``, whose vector is a function of the
composition alone, bit-identical for equal compositions) and a *structure* channel (a
Site-Net encoder that reads distances). Each is trained by DIM on its own, with its own
recipe, and may stop at its own epoch; :func:`combine_channels` then writes one weights folder
from two single-channel ones.

The folder has the files of any weights folder (:mod:`dimfeat.weights_folder`):

``model.safetensors``  both encoders' tensors, prefixed ``context.`` and ``structure.``;
``config.json``        ``architecture`` ``"sitenet-dim-two-channel"``, the shared ``inputs``, a
                       ``channels`` block with each channel's ``encoder``, ``normalisation`` and
                       ``source`` (the single-channel folder it came from: its name, sha256,
                       settings digest and training record), the sha256 of the tensors and
                       ``settings_sha256``, a digest of every setting that shapes the vectors;
``README.md``          the model card (:func:`dimfeat.card.two_channel_card`): what each channel
                       is for, each channel's data, recipe, training curve and selected epoch.

:func:`load_weights` reads either kind; every check of a single-channel folder applies to each
channel (schema, size, sha256, safetensors structure, the header's names, shapes and dtypes
before anything is allocated, finite tensors, the settings digest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dimfeat import fingerprint
from dimfeat._version import __version__
from dimfeat.encoder import EncoderConfig, SiteNetEncoder
from dimfeat.weights_folder import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT,
    MAX_CONFIG_BYTES,
    MODEL_FILE,
    SETTINGS_EDITED_ADVICE,
    TWO_CHANNEL_ARCHITECTURE,
    WeightsError,
    check_architecture,
    check_config,
    check_evaluation,
    check_model_file,
    load_encoder,
    read_config,
    read_tensors,
    settings_sha256,
    sha256_of,
    unsupported_format,
    write_file,
)

__all__ = [
    "CHANNELS",
    "TWO_CHANNEL_ARCHITECTURE",
    "TwoChannelConfig",
    "TwoChannelEncoder",
    "blank_encoder",
    "channel_slice",
    "combine_channels",
    "config_from_dict",
    "load_weights",
    "principal_readout",
    "read_weights_config",
    "save_weights",
    "write_model_card",
]

#: The channels, in the order of the vector, and the prefix of their feature labels.
CHANNELS = {"context": "dim_ctx", "structure": "dim_struct"}
_SINGLE = "sitenet-dim"
_KEYS = frozenset(
    {
        "format",
        "architecture",
        "dimfeat_version",
        "name",
        "inputs",
        "channels",
        "sha256",
        "settings_sha256",
        "evaluation",
    }
)
_CHANNEL_KEYS = frozenset({"encoder", "normalisation", "source"})


@dataclass(frozen=True)
class TwoChannelConfig:
    """Architecture of :class:`TwoChannelEncoder`: one :class:`EncoderConfig` per channel."""

    context: EncoderConfig
    structure: EncoderConfig

    @property
    def global_dim(self) -> int:
        """Length of the vector: the sum of the channels' widths."""
        return self.context.global_dim + self.structure.global_dim

    def to_dict(self) -> dict:
        """JSON-ready dictionary, one :meth:`EncoderConfig.to_dict` per channel."""
        return {"context": self.context.to_dict(), "structure": self.structure.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TwoChannelConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(*(EncoderConfig.from_dict(data[name]) for name in CHANNELS))


class TwoChannelEncoder(nn.Module):
    """Two encoders whose vectors are concatenated: ``[context, structure]``.

    Parameters
    ----------
    context, structure : SiteNetEncoder
        The channels' encoders; ``context`` usually with ``distance_input="none"``.
    """

    def __init__(self, context: SiteNetEncoder, structure: SiteNetEncoder) -> None:
        super().__init__()
        self.context = context
        self.structure = structure
        self.config = TwoChannelConfig(context.config, structure.config)

    def forward(self, batch: Any) -> torch.Tensor:
        """(B, context width + structure width) crystal vectors."""
        return torch.cat([self.context(batch), self.structure(batch)], dim=1)


def blank_encoder(config: EncoderConfig | TwoChannelConfig) -> SiteNetEncoder | TwoChannelEncoder:
    """An encoder of either kind with placeholder normalisation buffers, for
    ``load_state_dict`` to fill (the buffers are part of the state dict)."""
    from dimfeat.elements import MAX_Z

    if isinstance(config, TwoChannelConfig):
        return TwoChannelEncoder(blank_encoder(config.context), blank_encoder(config.structure))
    n_features = len(config.site_features)
    return SiteNetEncoder(
        config,
        np.zeros(n_features),
        np.ones(n_features),
        raw_table=np.zeros((MAX_Z + 1, n_features)),
    )


def config_from_dict(data: dict) -> EncoderConfig | TwoChannelConfig:
    """The config of either kind from ``config.to_dict()``."""
    if set(data) == set(CHANNELS):
        return TwoChannelConfig.from_dict(data)
    return EncoderConfig.from_dict(data)


def channel_slice(config: TwoChannelConfig, channel: str) -> slice:
    """The columns of ``channel`` (``"context"`` or ``"structure"``) in a two-channel vector."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {sorted(CHANNELS)} or None, got {channel!r}")
    width = config.context.global_dim
    return slice(0, width) if channel == "context" else slice(width, config.global_dim)


# -- reading ----------------------------------------------------------------------------------
def _read_json(folder: Path) -> Any:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{folder} is not a dimfeat weights folder: {CONFIG_FILE} is missing")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise WeightsError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes (not read further)")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc


def _channel_config(config: dict, channel: str) -> dict:
    """A single-channel config for one channel (what :func:`check_config` checks)."""
    block = config["channels"][channel]
    return {
        "format": FORMAT,
        "architecture": _SINGLE,
        "encoder": block.get("encoder"),
        "normalisation": block.get("normalisation"),
        "inputs": config.get("inputs", {}),
        "sha256": config["sha256"],
    }


def _settings_digest(config: dict) -> str:
    """sha256 over both channels' settings digests (their encoder, inputs, normalisation and
    the sha256 of the tensors)."""
    parts = [settings_sha256(_channel_config(config, c)) for c in CHANNELS]
    return fingerprint.sha256_bytes(json.dumps(parts).encode())


def _check_settings(path: Path, config: dict) -> None:
    """Refuse a config whose settings that shape the vectors are not those its
    ``settings_sha256`` records, naming the channel(s) whose settings no longer give the digest
    recorded for the source folder (when its ``source`` records one)."""
    recorded = config.get("settings_sha256")
    actual = _settings_digest(config)
    if recorded is None or recorded == actual:  # saved before the digest existed, or intact
        return
    changed = []
    for name in CHANNELS:
        source = config["channels"][name].get("source") or {}
        if isinstance(source.get("sha256"), str) and isinstance(source.get("settings_sha256"), str):
            settings = {**_channel_config(config, name), "sha256": source["sha256"]}
            if settings_sha256(settings) != source["settings_sha256"]:
                changed.append(name)
    what = (
        f"edited: the {' and '.join(changed)} channel{'s' if len(changed) > 1 else ''}"
        if changed
        else "which channel cannot be told: its source record is missing or was edited too"
    )
    raise WeightsError(
        f"{path}: settings that shape the vectors were changed after these weights were saved "
        f"({what}); its settings_sha256 is {recorded}, its settings now give {actual}. "
        + SETTINGS_EDITED_ADVICE
    )


def _check_two_channel(config: Any, path: Path) -> dict:
    if not isinstance(config, dict):
        raise WeightsError(f"{path} must hold a JSON object")
    if config.get("format") != FORMAT:
        raise unsupported_format(config, path, TWO_CHANNEL_ARCHITECTURE)
    problems = []
    if unknown := sorted(set(config) - _KEYS):
        problems.append(f"unknown keys {unknown}")
    problems += check_evaluation(config.get("evaluation"))
    for key in ("name", "dimfeat_version", "settings_sha256"):
        if not isinstance(config.get(key, ""), str):
            problems.append(f"{key!r} must be a string")
    channels = config.get("channels")
    if not isinstance(channels, dict) or sorted(channels) != sorted(CHANNELS):
        problems.append(f"'channels' must be an object with exactly {sorted(CHANNELS)}")
    else:
        for name, block in channels.items():
            if not isinstance(block, dict) or set(block) - _CHANNEL_KEYS:
                problems.append(f"channels.{name} must be an object of {sorted(_CHANNEL_KEYS)}")
                continue
            source = block.get("source")  # read by the model card and the featuriser
            if not isinstance(source, dict | None):
                problems.append(f"channels.{name}.source must be an object or null")
            elif not isinstance((source or {}).get("training"), dict | None):
                problems.append(f"channels.{name}.source.training must be an object or null")
    if problems:
        raise WeightsError(f"{path} is not a valid two-channel config: " + "; ".join(problems))
    for name in CHANNELS:
        try:
            check_config(_channel_config(config, name), path)
        except WeightsError as exc:
            raise WeightsError(f"channel {name!r}: {exc}") from exc
    return config


def read_weights_config(folder: str | Path) -> dict[str, Any]:
    """The schema-checked ``config.json`` of a weights folder of either kind (no tensor read)."""
    folder = Path(folder)
    raw = _read_json(folder)
    if isinstance(raw, dict) and raw.get("architecture") == TWO_CHANNEL_ARCHITECTURE:
        return _check_two_channel(raw, folder / CONFIG_FILE)
    return read_config(folder)


def load_weights(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Verify and load a weights folder of either kind.

    A single-channel folder goes to :func:`dimfeat.weights_folder.load_encoder`; a two-channel
    one is checked the same way, channel by channel, and gives a :class:`TwoChannelEncoder`.

    Returns
    -------
    encoder : SiteNetEncoder or TwoChannelEncoder
        In eval mode, on the CPU.
    config : dict
        The parsed ``config.json``.
    """
    folder = Path(folder)
    raw = _read_json(folder)
    if not (isinstance(raw, dict) and raw.get("architecture") == TWO_CHANNEL_ARCHITECTURE):
        return load_encoder(folder)
    config = _check_two_channel(raw, folder / CONFIG_FILE)
    model_path = folder / MODEL_FILE
    header = check_model_file(folder, config["sha256"])
    unknown = sorted(k for k in header if k.split(".", 1)[0] not in CHANNELS)
    if unknown:
        raise WeightsError(
            f"{model_path} does not fit the architecture in {CONFIG_FILE}: unexpected tensors "
            f"{unknown[:5]} (a two-channel file's names start with 'context.' or 'structure.')"
        )
    for name in CHANNELS:  # names, shapes and dtypes, before anything is allocated
        part = {k: v for k, v in header.items() if k.startswith(name + ".")}
        check_architecture(model_path, part, _channel_config(config, name), prefix=name + ".")
    state = read_tensors(model_path)
    _check_settings(folder / CONFIG_FILE, config)
    encoders = {}
    for name in CHANNELS:
        block = config["channels"][name]
        norm = block["normalisation"]
        encoder = SiteNetEncoder(
            EncoderConfig.from_dict(block["encoder"]),
            np.asarray(norm["mean"]),
            np.asarray(norm["std"]),
            raw_table=np.asarray(norm["element_table"]),
        )
        part = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(name + ".")}
        encoder.load_state_dict(part, strict=True)
        encoders[name] = encoder
    return TwoChannelEncoder(encoders["context"], encoders["structure"]).eval(), config


# -- writing ----------------------------------------------------------------------------------
def _write(folder: Path, channels: dict[str, tuple[SiteNetEncoder, dict, dict]], name: str) -> Path:
    """Write a two-channel folder from each channel's encoder, single-channel config and
    ``source`` block (``folder`` and ``name`` of where it came from)."""
    from safetensors.torch import save

    from dimfeat.card import two_channel_card

    inputs = [channels[c][1].get("inputs") or {} for c in CHANNELS]
    if inputs[0] != inputs[1]:
        raise WeightsError(
            f"the channels were saved with different input settings ({inputs[0]} and "
            f"{inputs[1]}); one vector needs one set"
        )
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        f"{c}.{k}": v.detach().cpu().contiguous()
        for c in CHANNELS
        for k, v in channels[c][0].state_dict().items()
    }
    write_file(folder / MODEL_FILE, save(state, metadata={"format": FORMAT}))
    config: dict[str, Any] = {
        "format": FORMAT,
        "architecture": TWO_CHANNEL_ARCHITECTURE,
        "dimfeat_version": __version__,
        "name": name,
        "inputs": inputs[0],
        "channels": {
            c: {
                "encoder": channels[c][1]["encoder"],
                "normalisation": channels[c][1]["normalisation"],
                "source": {
                    **channels[c][2],
                    "sha256": channels[c][1]["sha256"],
                    "settings_sha256": channels[c][1].get("settings_sha256"),
                    "training": channels[c][1].get("training"),
                },
            }
            for c in CHANNELS
        },
        "sha256": sha256_of(folder / MODEL_FILE),
    }
    config["settings_sha256"] = _settings_digest(config)
    write_file(folder / CONFIG_FILE, (json.dumps(config, indent=1) + "\n").encode())
    write_file(folder / CARD_FILE, two_channel_card(config).encode())
    return folder


def combine_channels(
    context: str | Path, structure: str | Path, folder: str | Path, *, name: str | None = None
) -> Path:
    """Write a two-channel weights folder from two verified single-channel folders.

    Parameters
    ----------
    context : path
        Weights of the context channel (usually trained with ``distance_input="none"``).
    structure : path
        Weights of the structure channel.
    folder : path
        Created if needed; its ``model.safetensors``, ``config.json`` and ``README.md`` are
        replaced.
    name : str, optional
        Name in the model card (default: the folder name).

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    WeightsError
        If either source fails verification, is itself two-channel, or the two record
        different input settings (``max_atoms``, ``symprec``).
    """
    sources = {"context": Path(context), "structure": Path(structure)}
    loaded = {}
    for channel, path in sources.items():
        encoder, config = load_weights(path)
        if not isinstance(encoder, SiteNetEncoder):
            raise WeightsError(f"{path} is a two-channel folder; pass single-channel weights")
        loaded[channel] = (encoder, config, {"folder": path.name, "name": config.get("name")})
    folder = Path(folder)
    return _write(folder, loaded, name or folder.name)


def principal_readout(encoder: SiteNetEncoder, vectors: np.ndarray, rank: int) -> dict[str, Any]:
    """Restrict an encoder's crystal vector to its ``rank`` principal directions, in place.

    The vector is ``global_mu(h)``, a linear read-out of the post-pooling layer. Its read-out
    is replaced by ``m + P P^T (global_mu(h) - m)``, where ``m`` is the mean of ``vectors`` and
    the columns of ``P`` are their first ``rank`` principal directions: the vector keeps its
    length and its columns, and varies only within the subspace where ``vectors`` vary most.
    Nothing else changes, so a context encoder's vector stays an exact function of the
    composition. A two-channel model restricts each channel to half the rank of its 128 values
    so that least squares on a hundred or so labels is not at its interpolation threshold.

    Parameters
    ----------
    encoder : SiteNetEncoder
        Its ``global_mu`` weight and bias are replaced.
    vectors : ndarray of shape (n_structures, global_dim)
        The encoder's own vectors of unlabelled structures (no labels are involved).
    rank : int
        Principal directions kept, ``1 <= rank <= global_dim``.

    Returns
    -------
    dict
        ``rank``, ``n_structures`` and ``explained_variance`` (the share of the variance of
        ``vectors`` in the kept directions), for the training record.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    dim = encoder.global_mu.out_features
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vectors.shape}")
    if not 1 <= rank <= dim or rank >= len(vectors):
        raise ValueError(f"rank must be in 1..{dim} and below the {len(vectors)} structures")
    mean = vectors.mean(0)
    _, singular, directions = np.linalg.svd(vectors - mean, full_matrices=False)
    basis = directions[:rank].T
    projector = basis @ basis.T
    weight = encoder.global_mu.weight.detach().double().numpy()
    bias = encoder.global_mu.bias.detach().double().numpy()
    with torch.no_grad():
        encoder.global_mu.weight.copy_(torch.from_numpy(projector @ weight))
        encoder.global_mu.bias.copy_(torch.from_numpy(projector @ (bias - mean) + mean))
    variance = singular**2
    return {
        "rank": int(rank),
        "n_structures": len(vectors),
        "explained_variance": float(variance[:rank].sum() / variance.sum()),
    }


def save_weights(
    folder: str | Path,
    encoder: SiteNetEncoder | TwoChannelEncoder,
    *,
    inputs: Any,
    training: Any = None,
    name: str | None = None,
    sources: dict[str, dict] | None = None,
) -> Path:
    """Write an encoder of either kind as a weights folder.

    A :class:`~dimfeat.encoder.SiteNetEncoder` goes to
    :func:`dimfeat.weights_folder.save_pretrained`; a :class:`TwoChannelEncoder` becomes a
    two-channel folder (the one :func:`combine_channels` writes), each channel recorded as the
    single-channel folder it would be on its own (its sha256, settings digest and training
    record under ``channels.<name>.source``).

    Parameters
    ----------
    folder : path
        Created if needed; its three files are replaced.
    encoder : SiteNetEncoder or TwoChannelEncoder
    inputs : InputSettings or dict
        ``max_atoms`` and ``symprec`` the encoder expects.
    training : TrainingRecord, dict or None
        For one encoder, its training record; for two channels, a dict of one record (or
        ``None``) per channel name.
    name : str, optional
        Name in the model card (default: the folder name).
    sources : dict, optional
        Two channels only: per channel, the ``folder`` and ``name`` of the folder it came from
        (default: this folder's name and the channel's).

    Returns
    -------
    Path
        ``folder``.
    """
    from dimfeat.weights_folder import encoder_files, save_pretrained

    folder = Path(folder)
    name = name or folder.name
    if isinstance(encoder, SiteNetEncoder):
        return save_pretrained(folder, encoder, inputs=inputs, training=training, name=name)
    training = training or {}
    channels = {}
    for channel in CHANNELS:
        source = {"folder": None, "name": f"{name} ({channel} channel)"}
        source.update({k: v for k, v in ((sources or {}).get(channel) or {}).items()})
        part = getattr(encoder, channel)
        _, config = encoder_files(
            part, inputs=inputs, training=training.get(channel), name=str(source["name"])
        )
        channels[channel] = (part, config, {k: source.get(k) for k in ("folder", "name")})
    return _write(folder, channels, name)


def write_model_card(folder: str | Path) -> Path:
    """Rewrite the ``README.md`` of a weights folder of either kind from its ``config.json``.

    The card :func:`combine_channels` or :func:`dimfeat.weights.save_pretrained` writes
    (:func:`dimfeat.card.model_card`), for a folder whose card was written by an older version;
    run as ``python -m dimfeat.channels FOLDER [FOLDER ...]``.

    Returns
    -------
    Path
        The card written.
    """
    from dimfeat.card import model_card

    card = Path(folder) / CARD_FILE
    write_file(card, model_card(read_weights_config(folder)).encode())
    return card


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(f"wrote {write_model_card(name)}")
