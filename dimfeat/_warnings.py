"""dimfeat's warnings: their categories, and the one place that says which line they name.

A warning names the first line outside dimfeat and the libraries that call it on the user's
behalf (scikit-learn, joblib, matminer, pandas, contextlib): the line of the user's ``transform``,
``fit`` or ``GridSearchCV.fit``, not a line of scikit-learn's wrappers (pandas'
``find_stack_level`` is the model). Only the standard library is imported here.
"""

from __future__ import annotations

import inspect
import warnings

__all__ = ["INTERNAL_PACKAGES", "LargeCellWarning", "user_stacklevel", "warn"]

#: Top-level packages whose frames a warning passes over to name the user's line.
INTERNAL_PACKAGES = frozenset({"dimfeat", "sklearn", "joblib", "matminer", "pandas", "contextlib"})


class LargeCellWarning(UserWarning):
    """Structures with more atoms in the primitive cell than ``max_atoms``.

    Each is featurised from a single cell, outside the training distribution. One warning per
    call names them all (a structure already named in this process by an estimator with the
    same parameters is not named again, so a grid search warns once).

    Attributes
    ----------
    count : int
        Number of structures named.
    positions : tuple of int
        Their positions in the caller's input, ascending.
    largest : int
        Atoms in the largest of their primitive cells.
    max_atoms : int
        The input setting they exceed.
    """

    def __init__(
        self,
        message: str,
        count: int = 0,
        positions: tuple[int, ...] = (),
        largest: int = 0,
        max_atoms: int = 0,
    ) -> None:
        super().__init__(message)
        self.count = count
        self.positions = tuple(positions)
        self.largest = largest
        self.max_atoms = max_atoms

    def __reduce__(self):
        return type(self), (str(self), self.count, self.positions, self.largest, self.max_atoms)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the caller of this function name the
    first frame outside :data:`INTERNAL_PACKAGES` (the last frame when there is none)."""
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the function that warns: level 1
    level = 1
    while frame is not None and frame.f_back is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] not in INTERNAL_PACKAGES:
            break
        frame = frame.f_back
        level += 1
    return level


def warn(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` naming the user's line (see :func:`user_stacklevel`).

    Parameters
    ----------
    message : str or Warning
        The text, or a warning instance (its class is then the category).
    category : type of Warning, default=UserWarning
        Ignored when ``message`` is a warning instance.
    """
    warnings.warn(message, category, stacklevel=user_stacklevel())
