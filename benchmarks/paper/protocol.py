"""The downstream protocol shared by the experiments: models, scaling, label draws, MAE.

* ``linear``: ``LinearRegression()`` (ordinary least squares; minimum-norm solution when there
  are fewer labels than features).
* ``mlp``: ``MLPRegressor(hidden_layer_sizes=(64,), max_iter=500, early_stopping=False,
  random_state=<draw index>)``, other settings sklearn's defaults (Adam, lr 1e-3, batch
  min(200, n), alpha 1e-4, stop when the training loss improves by < 1e-4 for 10 epochs); inputs
  always standardised and the target standardised (both fitted on the training labels only,
  through ``StandardScaler`` and ``TransformedTargetRegressor``).
* Inputs of ``linear`` are standardised for untrained DIM (as in the paper), left raw for OFM, XRD
  and Magpie (as in the paper), and for trained DIM chosen by :func:`choose_scaling`, which only
  looks at the label pool (train part), at the smallest label count.
* Draw ``d`` of ``n`` labels is ``default_rng([seed, n, d]).choice(len(pool), n, replace=False)``:
  the same crystals for every representation and model.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MODELS = ("linear", "mlp")
LABEL_COUNTS = (50, 100, 250, 1000)
MLP_SETTINGS = {"hidden_layer_sizes": (64,), "max_iter": 500, "early_stopping": False}


def n_draws(n: int) -> int:
    """100 random draws per label count, 25 for 1,000 labels."""
    return 25 if n >= 1000 else 100


def make_model(model: str, scale: bool, random_state: int = 0):
    """An unfitted downstream regressor (see the module docstring)."""
    if model == "linear":
        return make_pipeline(StandardScaler(), LinearRegression()) if scale else LinearRegression()
    if model == "mlp":
        mlp = MLPRegressor(random_state=random_state, **MLP_SETTINGS)
        regressor = make_pipeline(StandardScaler(), mlp) if scale else mlp
        return TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())
    raise KeyError(f"unknown model {model!r}; choose from {MODELS}")


def default_scaling(rep: str, model: str) -> bool | None:
    """The paper's input scaling; ``None`` means "choose on the pool" (trained DIM, linear)."""
    if model == "mlp" or rep.startswith("dim-untrained"):
        return True
    if rep.startswith("dim"):
        return None
    return False


def draw(n_pool: int, n: int, d: int, seed: int = 0) -> np.ndarray:
    """Indices into the pool of draw ``d`` of ``n`` labels."""
    return np.random.default_rng([seed, n, d]).choice(n_pool, n, replace=False)


def fit_predict(model, X_train, y_train, X_test) -> np.ndarray:
    """Fit and predict, silencing MLP convergence warnings (the iteration cap is documented)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X_train, y_train).predict(X_test)


def mae_draws(X_pool, y_pool, X_test, y_test, *, model, scale, n, draws, seed=0) -> list[float]:
    """Test MAE of ``model`` fitted on each of ``draws`` random draws of ``n`` pool labels."""
    out = []
    for d in range(draws):
        idx = draw(len(X_pool), n, d, seed)
        pred = fit_predict(make_model(model, scale, d), X_pool[idx], y_pool[idx], X_test)
        out.append(float(np.mean(np.abs(pred - y_test))))
    return out


def choose_scaling(X_pool, y_pool, model: str, *, n: int = 50, draws: int = 20, seed: int = 1):
    """Raw or standardised inputs, by validation inside the label pool only.

    Fits on ``draws`` draws of ``n`` pool labels (seed 1, unlike the scored draws) and scores on
    the remaining pool crystals; returns ``(scale, {"raw": median MAE, "standardised": ...})``.
    The smallest label count is the one that matters: once there are more labels than the
    rank of the features, least squares no longer depends on the scaling.
    """
    n = min(n, len(X_pool) // 2)
    scores = {}
    for scale in (False, True):
        maes = []
        for d in range(draws):
            idx = draw(len(X_pool), n, d, seed)
            rest = np.setdiff1d(np.arange(len(X_pool)), idx)
            pred = fit_predict(make_model(model, scale, d), X_pool[idx], y_pool[idx], X_pool[rest])
            maes.append(float(np.mean(np.abs(pred - y_pool[rest]))))
        scores["standardised" if scale else "raw"] = float(np.median(maes))
    return scores["standardised"] < scores["raw"], scores


class Checkpoint:
    """A JSON file of finished cells ``key -> value``, rewritten after each new cell."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cells = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get_or_compute(self, key: str, compute, verbose: bool = True):
        if key not in self.cells:
            t0 = time.perf_counter()
            self.cells[key] = compute()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.cells))
            tmp.replace(self.path)
            if verbose:
                print(f"  {key}: {time.perf_counter() - t0:.1f} s", flush=True)
        return self.cells[key]


def machine() -> str:
    """The machine of the downstream fits in one line (:func:`benchmarks.common.machine_line`)."""
    import sklearn

    from benchmarks.common import machine_line

    return machine_line(note=f"1 thread per fit; scikit-learn {sklearn.__version__}")
