"""Pretrained weights by name: bundled names, local folders, the Hugging Face Hub.

The weights layers, bottom up (each imports only those below it):

:mod:`dimfeat.weights_folder`  what a weights folder is (``config.json``, ``model.safetensors``,
                               ``README.md``), how it is verified (see its "Trust model"), read
                               and written; no names, no network;
:mod:`dimfeat.hub`             Hugging Face Hub I/O (the only module that imports
                               ``huggingface_hub``), on top of the folder format;
:mod:`dimfeat.weights`         this module: names. :func:`resolve_weights` turns a weights
                               argument into a local folder, in a fixed order: a bundled name (see
                               :func:`available_weights`), an existing local folder, then a Hub
                               repo id ``owner/name`` with an optional pinned revision
                               ``owner/name@<commit>`` (:mod:`dimfeat.hub`, imported on first use
                               of a Hub id).

The public names of :mod:`dimfeat.weights_folder` (:func:`load_encoder`,
:func:`save_pretrained`, :class:`InputSettings`, :class:`WeightsError`, ...) are importable from
here too, which is how the rest of dimfeat and its users spell them; :func:`read_config` here
reads a weights folder of either kind (single-channel, or two-channel: :mod:`dimfeat.channels`).
"""

from __future__ import annotations

from pathlib import Path

from dimfeat.weights_folder import (
    CARD_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    WEIGHTS_FILES,
    InputSettings,
    WeightsError,
    encoder_sha256,
    load_encoder,
    save_pretrained,
    settings_sha256,
    sha256_of,
    state_checksum,
    vector_settings,
)

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "DEFAULT_WEIGHTS",
    "MODEL_FILE",
    "WEIGHTS_FILES",
    "InputSettings",
    "WeightsError",
    "available_weights",
    "encoder_sha256",
    "load_encoder",
    "read_config",
    "resolve_weights",
    "save_pretrained",
    "settings_sha256",
    "sha256_of",
    "state_checksum",
    "vector_settings",
    "weights_citations",
]

#: Name of the bundled weights used by ``DeepInfoMaxFeaturizer()``.
DEFAULT_WEIGHTS = "sitenet-dim-mp36k"
# Files that are not a weights folder, to name in errors (a file passed instead of its folder).
_FILE_SUFFIXES = frozenset({".safetensors", ".json", ".md", ".pt", ".pth", ".bin", ".ckpt"})


def read_config(folder: str | Path) -> dict:
    """The schema-checked ``config.json`` of a weights folder of either kind.

    Parameters
    ----------
    folder : str or Path
        A weights folder: single-channel (``architecture`` ``"sitenet-dim"``) or two-channel
        (``"sitenet-dim-two-channel"``, whose ``channels`` block holds each channel's encoder,
        normalisation and training record).

    Returns
    -------
    dict
        The parsed config; nothing else of the folder is read.

    Raises
    ------
    WeightsError
        If ``config.json`` is missing, unreadable or not a valid config of either kind.
    """
    from dimfeat.channels import read_weights_config

    return read_weights_config(folder)


# -- locating weights -------------------------------------------------------------------------
def _bundled_root() -> Path:
    """Folder of the bundled weights: ``dimfeat/_bundled`` in a wheel, ``weights/`` in a clone.

    ``dimfeat._bundled`` has no ``__init__.py`` (it is the top-level ``weights/`` folder mapped
    into the package), so :func:`importlib.resources.files` would give a ``MultiplexedPath``;
    the folder next to this module is looked up directly instead.
    """
    here = Path(__file__).resolve().parent
    installed = here / "_bundled"
    return installed if installed.is_dir() else here.parent / "weights"


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
        A folder holding ``config.json``, ``model.safetensors`` and ``README.md`` (not yet
        verified: :func:`load_encoder` does that).

    Raises
    ------
    WeightsError
        For a path that does not exist, a file given instead of its folder, a malformed Hub id,
        or a Hub repo or revision that cannot be found or downloaded (the message names it).
        An unpinned ``"a/b"`` is first a path: when the folder ``a`` exists the error is "no
        such folder" without any network access, and otherwise a Hub error starts with "no
        such folder" too.
    """
    text = str(weights)
    if text in available_weights():
        return _bundled_root() / text
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise WeightsError(
            f"{text!r} is a file; pass the folder that holds {CONFIG_FILE} and {MODEL_FILE}"
        )
    bundled = ", ".join(available_weights()) or "none"
    looks_like_path = (
        isinstance(weights, Path)
        or path.is_absolute()
        or text.startswith((".", "~"))
        or path.suffix in _FILE_SUFFIXES
        or "\\" in text
    )
    if looks_like_path:
        raise WeightsError(f"no weights folder at {text!r}; bundled weights: {bundled}")
    if text.partition("@")[0].count("/") == 1:
        from dimfeat.hub import download_weights

        pinned = "@" in text
        if not pinned and path.parent.is_dir():
            # "weights/sitenet" next to a folder "weights": a mistyped path, not a Hub id
            raise WeightsError(
                f"no such folder: {text!r} (the folder {str(path.parent)!r} exists but holds no "
                f"{path.name!r}); bundled weights: {bundled}. To mean the Hub repo {text!r}, "
                f"pin a revision: '{text}@<commit>'"
            )
        try:
            return download_weights(text, local_files_only=local_files_only)
        except WeightsError as exc:
            if pinned:
                raise
            raise WeightsError(f"no such folder: {text!r}; as a Hub id: {exc}") from exc
    raise WeightsError(
        f"unknown weights {text!r}: not a bundled name ({bundled}), an existing local folder, "
        "or a Hub id 'owner/name[@revision]'"
    )


def weights_citations(weights: object) -> list[str]:
    """:func:`dimfeat.card.data_citations` of weights given as a bundled name, a folder or a Hub id.

    Nothing is downloaded: Hub weights that are not in the local cache, like ``None``
    (untrained), give ``[]``.
    """
    if weights is None:
        return []
    from dimfeat.card import data_citations
    from dimfeat.channels import read_weights_config  # either kind of folder

    try:
        return data_citations(read_weights_config(resolve_weights(weights, local_files_only=True)))
    except Exception:  # not available here without a download: nothing to add
        return []
