"""Which layer of a trained encoder keeps what the train-split probe needs, and how noisy it is.

For each weights folder, on the probe pool of :mod:`benchmarks.release.probe_curve` (2,000 mp36k
**train** crystals, train labels only), this scores four candidate crystal vectors with the
same probe (formation energy and band gap, LinearRegression and MLPRegressor(64), 100/250/1,000
labels, 3 draws):

* ``mu_global``: what the featuriser exports (128 values, a linear map of the 64-wide
  post-pooling layer, so of rank <= 64);
* ``postpool``: that 64-wide layer itself;
* ``prepool_mean``: the mean over sites of the 128-wide pre-pooling layer;
* ``mu_local_mean``: the mean over sites of the 32-wide local environments.

It also reports the signal-to-noise ratio of ``mu_global`` per dimension (variance of ``mu``
over the pool divided by the mean learned noise variance ``exp(logvar)``): dimensions the
encoder itself treats as noise would be inflated by a ``StandardScaler``.

Usage::

    python -m benchmarks.archive.exported_layer WEIGHTS [WEIGHTS ...] [--out JSON]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, write_json
from benchmarks.paper.protocol import machine
from benchmarks.release.probe_curve import probe, probe_pool

LAYERS = ("mu_global", "postpool", "prepool_mean", "mu_local_mean")


def layers(weights: str, crystals: list, batch_size: int = 128) -> dict[str, np.ndarray]:
    """The candidate vectors (see the module docstring) and ``logvar_global`` of ``crystals``."""
    import torch

    from dimfeat.inputs import collate
    from dimfeat.weights import load_encoder

    encoder, _ = load_encoder(weights)
    encoder.eval()
    out: dict[str, list] = {k: [] for k in (*LAYERS, "logvar_global")}
    with torch.inference_mode():
        for start in range(0, len(crystals), batch_size):
            b = collate(crystals[start : start + batch_size])
            mu_local, _ = encoder.encode_local(
                b.site_species, b.neighbour_species, b.distances, b.mask
            )
            count = torch.zeros(b.n_crystals).index_add_(
                0, b.crystal_index, torch.ones(len(b.crystal_index))
            )[:, None]

            def mean(x, b=b, count=count):
                return (
                    x.new_zeros(b.n_crystals, x.shape[1]).index_add_(0, b.crystal_index, x) / count
                )

            pre = mean(encoder.prepool(mu_local))
            post = encoder.postpool(pre)
            mu, logvar = encoder.encode_global(mu_local, b.crystal_index, b.n_crystals)
            for key, value in zip(
                (*LAYERS, "logvar_global"),
                (mu, post, pre, mean(mu_local), logvar),
                strict=True,
            ):
                out[key].append(value.numpy().astype(np.float64))
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate(weights: str) -> dict:
    """Probe of each layer and the per-dimension SNR of ``mu_global`` for one weights folder."""
    pool = probe_pool()
    vectors = layers(weights, pool.inputs)
    mu, noise = vectors["mu_global"], np.exp(vectors["logvar_global"]).mean(0)
    snr = mu.var(0) / noise
    return {
        "probe": {k: probe(vectors[k], pool.labels) for k in LAYERS},
        "snr_quantiles": dict(
            zip(
                ("min", "q25", "median", "q75", "max"),
                np.quantile(snr, [0, 0.25, 0.5, 0.75, 1]).tolist(),
                strict=True,
            )
        ),
        "dims_snr_below_1": int((snr < 1).sum()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--out", type=Path, default=RESULTS / "archive" / "exported_layer.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = {}
    for weights in args.weights:
        name = Path(weights).name  # e.g. epoch-004 of a run, or a bundled name
        results[name] = evaluate(weights)
        base = results[name]["probe"]["mu_global"]
        for layer, scores in results[name]["probe"].items():
            rel = np.mean([scores[k] / base[k] for k in base])
            fe = scores["formation_energy_per_atom/mlp/1000"]
            print(f"{weights}  {layer:14s} probe / mu_global {rel:.3f}  fe MLP 1000 {fe:.3f}")
        print(f"{weights}  SNR quantiles {results[name]['snr_quantiles']}")
    record = {
        "protocol": __doc__.split("Usage::")[0].strip(),
        "weights": [Path(w).name for w in args.weights],
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    write_json(args.out, record)


if __name__ == "__main__":
    main()
