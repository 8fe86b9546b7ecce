"""Demo (``make demo``): learned crystal vectors + a linear model for formation energy.

Loads the bundled sample (1,000 Materials Project crystals), featurises it with the default
``DeepInfoMaxFeaturizer`` (bundled weights, no labels used in their training), then fits
``Pipeline([DeepInfoMaxFeaturizer(), LinearRegression()])`` on a seeded 80% and reports the test
MAE next to a mean predictor's, and the featuriser's throughput. Runs in well under a minute
on a laptop CPU.

    python examples/pipeline.py            # the whole sample
    python examples/pipeline.py --limit 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.datasets import load_sample
from dimfeat.training import resolve_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="use the first N crystals of the sample only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 80/20 split")
    args = parser.parse_args(argv)

    df = load_sample()
    if args.limit:
        df = df.iloc[: args.limit]
    X, y = df["structure"], df["formation_energy_per_atom"].to_numpy()
    print(f"data: {len(df)} Materials Project crystals (bundled sample), formation energy")

    featurizer = DeepInfoMaxFeaturizer().fit([])  # loads the bundled weights
    start = time.perf_counter()
    vectors = featurizer.transform(X)
    seconds = time.perf_counter() - start
    device = resolve_device(featurizer.device)
    print(f"features: {vectors.shape[0]} x {vectors.shape[1]} in {seconds:.2f} s")
    print(f"throughput: {len(X) / seconds:.0f} structures/s on {device.type}")

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=args.seed)
    model = Pipeline([("dim", DeepInfoMaxFeaturizer()), ("model", LinearRegression())])
    model.fit(X_train, y_train)
    mae = mean_absolute_error(y_test, model.predict(X_test))
    baseline = mean_absolute_error(y_test, np.full(len(y_test), y_train.mean()))
    print(f"test crystals: {len(y_test)} (train: {len(y_train)}, seed {args.seed})")
    print(f"test MAE DIM + LinearRegression: {mae:.3f} eV/atom")
    print(f"test MAE mean predictor: {baseline:.3f} eV/atom")


if __name__ == "__main__":
    main()
