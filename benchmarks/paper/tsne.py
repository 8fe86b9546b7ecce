"""Figs 9-10: t-SNE of test-crystal vectors, trained vs untrained DIM.

The 2,000 test crystals of :func:`benchmarks.paper.features.test_set` are encoded with the
bundled weights and with a random encoder (seed 0); each set of vectors is standardised and
embedded with ``sklearn.manifold.TSNE(perplexity=100, init="pca", random_state=0)``. Points are
coloured by "contains a halogen (F, Cl, Br, I) and a metal" (Fig. 9) and by formation energy
(Fig. 10).

``python -m benchmarks.paper.tsne [--weights NAME_OR_FOLDER]``
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.paper import features as F
from benchmarks.paper.protocol import machine
from benchmarks.paper.representation import DEFAULT_WEIGHTS, RESULTS

FIGURES = F.ROOT / "docs" / "figures"
HALOGENS = {"F", "Cl", "Br", "I"}
PERPLEXITY = 100


def halogen_and_metal(structure) -> bool:
    """Whether a crystal contains at least one halogen and at least one metal."""
    elements = structure.composition.elements
    return any(e.symbol in HALOGENS for e in elements) and any(e.is_metal for e in elements)


def embed(X: np.ndarray, seed: int = 0, perplexity: float = PERPLEXITY) -> np.ndarray:
    """2-d t-SNE of standardised vectors."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(X)
    perplexity = min(perplexity, (len(X) - 1) / 3)
    return TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)


def run(weights: str = DEFAULT_WEIGHTS, dataset: F.Dataset | None = None, tag: str = "") -> dict:
    """Embed, plot ``docs/figures/tsne_halogen_metal{tag}.png`` and ``tsne_formation{tag}.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = dataset or F.test_set()
    cache = F.CACHE / "runs" / f"tsne-{data.name}-{data.fingerprint}"
    cache.mkdir(parents=True, exist_ok=True)
    coords = {}
    for label, kind, w in (("trained", "dim", weights), ("untrained", "dim-untrained", None)):
        path = cache / f"{kind}-{F.weights_key(w)}-p{PERPLEXITY}.npy"
        if not path.is_file():
            np.save(path, embed(F.features(data, kind, weights=w)))
        coords[label] = np.load(path)
    flag = np.array([halogen_and_metal(s) for s in data.structures])
    energy = data.labels["formation_energy_per_atom"]

    FIGURES.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, colour in (("halogen_metal", flag), ("formation", energy)):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
        for ax, (label, xy) in zip(axes, coords.items(), strict=True):
            if name == "halogen_metal":
                for value, c, text in (
                    (False, "#bbbbbb", "other"),
                    (True, "#d62728", "halogen + metal"),
                ):
                    sel = colour == value
                    ax.scatter(*xy[sel].T, s=4, c=c, label=f"{text} ({sel.sum()})", alpha=0.7)
                ax.legend(loc="best", fontsize=8, markerscale=3)
            else:
                sc = ax.scatter(*xy.T, s=4, c=colour, cmap="viridis", alpha=0.8)
            ax.set_title(f"{label} DIM ({len(xy)} test crystals)")
            ax.set_xticks([])
            ax.set_yticks([])
        if name == "formation":
            fig.colorbar(sc, ax=axes, label="formation energy (eV/atom)", shrink=0.8)
        fig.suptitle(
            f"t-SNE (perplexity {PERPLEXITY}) of mp36k test vectors, weights {weights}"
            if name == "formation"
            else f"t-SNE (perplexity {PERPLEXITY}): halogen + metal crystals, weights {weights}"
        )
        path = FIGURES / f"tsne_{name}{tag}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files[name] = str(path.relative_to(F.ROOT))
    payload = {
        "experiment": "Figs 9-10 t-SNE",
        "data": data.description,
        "n": len(data.ids),
        "n_halogen_metal": int(flag.sum()),
        "tsne": f"StandardScaler then TSNE(perplexity={PERPLEXITY}, init='pca', random_state=0)",
        "weights": f"{weights} (sha256 {F.weights_key(weights)}...)",
        "figures": files,
        "machine": machine(),
    }
    if not tag:
        (RESULTS / "tsne.json").write_text(json.dumps(payload, indent=1))
    print(f"t-SNE figures: {files}")
    return payload


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    run(parser.parse_args(argv).weights)


if __name__ == "__main__":
    main()
