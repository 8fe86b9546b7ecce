"""Pretrained weights: bundled names, local folders, the Hugging Face Hub; save and push.

A weights folder holds three files and nothing executable:

``model.safetensors``  the encoder's tensors (safetensors: loading never runs code);
``config.json``        ``format``, ``architecture``, encoder arguments, input featurisation and
                       element normalisation, training data and settings, history, and the
                       sha256 of ``model.safetensors``, checked before loading;
``README.md``          the model card (YAML front matter for the Hub), written by
                       :func:`save_pretrained` from the same facts.

Sources are resolved in a fixed order by :func:`resolve_weights`: a bundled name (see
:func:`available_weights`), an existing local folder, then a Hub repo id ``owner/name`` with an
optional pinned revision ``owner/name@<commit>``. This is the only module that imports
``huggingface_hub``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dimfeat._version import __version__
from dimfeat.encoder import EncoderConfig, SiteNetEncoder

__all__ = [
    "DEFAULT_WEIGHTS",
    "WeightsError",
    "available_weights",
    "load_encoder",
    "resolve_weights",
    "save_pretrained",
]

#: Name of the bundled weights used by ``DeepInfoMaxFeaturizer()``.
DEFAULT_WEIGHTS = "sitenet-dim-mp36k"
FORMAT = "dimfeat-weights/1"
ARCHITECTURE = "sitenet-dim"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


class WeightsError(ValueError):
    """Weights that cannot be found, verified or loaded (the message says which and why)."""


@dataclass(frozen=True)
class InputSettings:
    """How structures become inputs for a given set of weights."""

    max_atoms: int = 50
    symprec: float = 0.01


# -- locating weights -------------------------------------------------------------------------
def _bundled_root() -> Path:
    """Folder of the bundled weights: ``dimfeat/_bundled`` in a wheel, ``weights/`` in a clone."""
    try:
        root = Path(str(resources.files("dimfeat._bundled")))
        if root.is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "weights"


def available_weights() -> list[str]:
    """Names of the bundled weights."""
    root = _bundled_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_weights(weights: str | Path, *, local_files_only: bool = False) -> Path:
    """Turn a weights name, folder or Hub id into a local folder.

    Parameters
    ----------
    weights : str or path
        A bundled name (:func:`available_weights`), a local folder, or ``"owner/name"`` /
        ``"owner/name@revision"`` on the Hugging Face Hub.
    local_files_only : bool, default=False
        Never touch the network for Hub ids (also implied by ``HF_HUB_OFFLINE=1``).

    Returns
    -------
    folder : Path
    """
    text = str(weights)
    if text in available_weights():
        return _bundled_root() / text
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.suffix or path.is_absolute() or text.startswith("."):
        raise WeightsError(f"no weights folder at {text!r}; bundled weights: {available_weights()}")
    if text.count("/") == 1:
        from dimfeat.hub import download_weights

        return download_weights(text, local_files_only=local_files_only)
    raise WeightsError(
        f"unknown weights {text!r}: not a bundled name "
        f"({', '.join(available_weights()) or 'none'}), a local folder, or a Hub id "
        "'owner/name[@revision]'"
    )


# -- reading ----------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(folder: Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a weights folder."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{folder} is not a dimfeat weights folder: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    if config.get("format") != FORMAT or config.get("architecture") != ARCHITECTURE:
        raise WeightsError(
            f"{path}: unsupported weights format {config.get('format')!r} / architecture "
            f"{config.get('architecture')!r}; dimfeat {__version__} reads {FORMAT!r} / "
            f"{ARCHITECTURE!r}"
        )
    return config


def load_encoder(folder: str | Path) -> tuple[SiteNetEncoder, dict[str, Any]]:
    """Build a :class:`SiteNetEncoder` from a weights folder, after verifying its sha256.

    Only ``safetensors`` is read: a pickle or any other file in its place is refused, never
    executed.

    Returns
    -------
    encoder : SiteNetEncoder (in eval mode, on the CPU)
    config : dict
        The parsed ``config.json``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise WeightsError(f"{folder}: {MODEL_FILE} is missing")
    expected = config.get("sha256")
    actual = sha256_of(model_path)
    if expected != actual:
        raise WeightsError(
            f"{model_path}: sha256 {actual} does not match {expected} recorded in "
            f"{CONFIG_FILE}; the file is corrupt or was tampered with"
        )
    try:
        state = load_file(model_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{model_path} is not a valid safetensors file: {exc}") from exc
    try:
        encoder_config = EncoderConfig.from_dict(config["encoder"])
    except (KeyError, TypeError) as exc:
        raise WeightsError(f"{folder}/{CONFIG_FILE}: invalid encoder settings: {exc}") from exc
    norm = config["normalisation"]
    encoder = SiteNetEncoder(
        encoder_config,
        np.asarray(norm["mean"]),
        np.asarray(norm["std"]),
        raw_table=np.asarray(norm["element_table"]),
    )
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"{model_path} does not fit the architecture in {CONFIG_FILE}: {exc}"
        ) from exc
    return encoder.eval(), config


# -- writing ----------------------------------------------------------------------------------
def save_pretrained(
    folder: str | Path,
    encoder: SiteNetEncoder,
    *,
    inputs: InputSettings | dict,
    training: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and the model card to ``folder``.

    Parameters
    ----------
    folder : path
        Created if needed; existing files of the same names are replaced.
    encoder : SiteNetEncoder
    inputs : InputSettings or dict
        ``max_atoms`` and ``symprec`` the encoder expects.
    training : dict, optional
        Facts about training (data, settings, history, hardware, wall time) for the config and
        the model card; ``None`` for untrained weights.
    name : str, optional
        Name shown in the model card (default: the folder name).
    """
    from safetensors.torch import save_file

    from dimfeat.card import model_card

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, folder / MODEL_FILE, metadata={"format": FORMAT})
    settings = inputs if isinstance(inputs, dict) else inputs.__dict__
    raw = (
        encoder.element_features.cpu().double().numpy() * encoder.feature_std.cpu().double().numpy()
        + encoder.feature_mean.cpu().double().numpy()
    )
    raw[0] = 0.0
    config = {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        "dimfeat_version": __version__,
        "name": name or folder.name,
        "encoder": encoder.config.to_dict(),
        "inputs": dict(settings),
        "normalisation": {
            "features": list(encoder.config.site_features),
            "mean": encoder.feature_mean.cpu().tolist(),
            "std": encoder.feature_std.cpu().tolist(),
            "element_table": raw.tolist(),
        },
        "training": training,
        "sha256": sha256_of(folder / MODEL_FILE),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    (folder / CARD_FILE).write_text(model_card(config))
    return folder


def state_checksum(encoder: torch.nn.Module) -> str:
    """sha256 over an encoder's parameters (order-stable), for quick identity checks."""
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
