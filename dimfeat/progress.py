"""Progress bars: the one helper through which dimfeat's loops show progress (tqdm, on stderr).

``progress`` arguments across the package mean the same: ``False`` (no bar), ``True`` (a bar),
or a dict of keyword arguments for ``tqdm`` (they override the defaults, the description
included). tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar", "progress_options"]


def progress_options(progress: bool | dict, desc: str) -> bool | dict:
    """``progress`` with a default description (falsy stays ``False``).

    For a caller that hands ``progress`` on to a loop that shows the bar: the description it
    gives (e.g. ``"DeepInfoMaxFeaturizer: encoding"``) replaces the loop's own, and a
    description in a ``progress`` dict replaces both.

    Parameters
    ----------
    progress : bool or dict
    desc : str

    Returns
    -------
    bool or dict
    """
    if not progress:
        return False
    return {"desc": desc, **(progress if isinstance(progress, dict) else {})}


def progress_bar(
    progress: bool | dict,
    *,
    desc: str,
    total: int | None = None,
    iterable: Iterable | None = None,
    unit: str = "structure",
    **defaults: Any,
) -> Any:
    """A tqdm bar on stderr when ``progress`` is truthy.

    Parameters
    ----------
    progress : bool or dict
        ``False``: no bar; ``True``: a bar; a dict: tqdm keyword arguments, which override
        ``desc``, ``unit``, ``total`` and ``defaults``.
    desc : str
        Description unless ``progress`` gives one.
    total : int, optional
        Steps of the bar (with ``iterable``, its length by default).
    iterable : iterable, optional
        Wrap it: iterating the bar iterates it.
    unit : str, default="structure"
    **defaults
        Other tqdm keyword arguments (``leave``, ``initial``, ...).

    Returns
    -------
    tqdm or None
        ``None`` when ``progress`` is falsy; with ``iterable``, ``iterable`` itself then.
    """
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    options = {"desc": desc, "unit": unit, **defaults}
    if total is not None:
        options["total"] = total
    if isinstance(progress, dict):
        options.update(progress)
    return tqdm(iterable, **options)
