"""How often bonds repeat, and what encoding each distinct bond once saves.

Usage: python -m benchmarks.perf.distinct_bonds [--sets sample mp36k-test] [--n 1000]
[--rounds 3] [--json benchmarks/results/perf/distinct_bonds.json]

For each set (those of ``benchmarks.perf.throughput``), the structure channel of the bundled
weights encodes the crystals batched as ``transform`` batches them (equivalent sites merged),
in chunks of ``CHUNK_PAIRS`` (site, atom) pairs as :meth:`dimfeat.encoder.SiteNetEncoder.forward`
takes them, and the script reports

* the pairs, the distinct (site species, neighbour species, float32 distance) triples and the
  distinct distances within the chunks (the rows the bond MLPs and the distance embedding run
  on), and the chunks above ``DISTINCT_BONDS_FRACTION`` that go pair by pair;
* the CPU time of the structure channel (inference mode) on the distinct-bond path and on the
  pair-by-pair path (``DISTINCT_BONDS_FRACTION = 0``), the two taking turns ``--rounds`` times
  in one process, one thread (``OMP_NUM_THREADS=1``), the least of the rounds;
* the largest change of a crystal vector between the two paths, relative to its largest value.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from benchmarks.common import RESULTS, load_set, machine, write_json
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat import encoder as encoder_module
from dimfeat.inputs import collate, equivalent_sites
from dimfeat.runtime import INFERENCE_BATCH_SIZE, inference_batches


def batches_of(structures: list, runtime) -> list:
    """The batches ``transform`` would encode (sites merged, sorted by size)."""
    crystals, _ = runtime.build(structures)
    sites = [equivalent_sites(c) for c in crystals]
    order = np.argsort([c.n_atoms for c in crystals], kind="stable")
    groups = inference_batches(
        crystals, order, INFERENCE_BATCH_SIZE, rows=[len(r) for r, _ in sites]
    )
    return [collate([crystals[i] for i in g], [sites[i] for i in g]) for g in groups]


def repeats(batches: list) -> dict:
    """Pairs, distinct triples and distinct distances over the encoder's chunks."""
    pairs = triples = lengths = fallback = 0
    for batch in batches:
        n_rows, width = batch.neighbour_species.shape
        step = max(1, encoder_module.CHUNK_PAIRS // max(width, 1))
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            mask = batch.mask[rows].numpy()
            r, c = np.nonzero(mask)
            d = batch.distances[rows].numpy()[r, c]
            zi = batch.site_species[rows].numpy()[r]
            zj = batch.neighbour_species[rows].numpy()[r, c]
            n_triples = len(set(zip(zi.tolist(), zj.tolist(), d.tolist(), strict=True)))
            pairs += len(d)
            lengths += len(np.unique(d))
            triples += n_triples
            fallback += n_triples > encoder_module.DISTINCT_BONDS_FRACTION * len(d)
    return {
        "pairs": pairs,
        "distinct_triples": triples,
        "distinct_distances": lengths,
        "triple_fraction": triples / pairs,
        "distance_fraction": lengths / pairs,
        "chunks_pair_by_pair": fallback,
    }


def encode_all(encoder, batches: list, distinct: bool) -> tuple[float, torch.Tensor]:
    """CPU seconds and vectors of the structure channel on one path (``DISTINCT_BONDS_FRACTION``
    = 0 switches the distinct-bond path off)."""
    fraction = encoder_module.DISTINCT_BONDS_FRACTION
    encoder_module.DISTINCT_BONDS_FRACTION = fraction if distinct else 0.0
    try:
        start = time.process_time()
        with torch.inference_mode():
            out = torch.cat([encoder(b) for b in batches])
        return time.process_time() - start, out
    finally:
        encoder_module.DISTINCT_BONDS_FRACTION = fraction


def measure(name: str, n: int, rounds: int) -> dict:
    structures = load_set(name, n)
    runtime = DeepInfoMaxFeaturizer(device="cpu").get_runtime()
    encoder = runtime.encoder.structure  # the channel that reads distances
    batches = batches_of(structures, runtime)
    counts = repeats(batches)
    times: dict[str, list[float]] = {"distinct": [], "pairs": []}
    for _ in range(rounds):
        for path in times:
            seconds, vectors = encode_all(encoder, batches, path == "distinct")
            times[path].append(seconds)
            if path == "distinct":
                fast = vectors.double()
            else:
                exact = vectors.double()
    change = ((fast - exact).abs().amax(1) / exact.abs().amax(1)).numpy()
    out = {
        **counts,
        "cpu_seconds": times,
        "speedup": min(times["pairs"]) / min(times["distinct"]),
        "vector_change_max": float(change.max()),
        "vector_change_median": float(np.median(change)),
    }
    print(
        f"{name}: {counts['pairs']} pairs, {100 * counts['triple_fraction']:.0f} % distinct "
        f"triples, {100 * counts['distance_fraction']:.0f} % distinct distances, "
        f"{counts['chunks_pair_by_pair']} chunk(s) pair by pair; structure channel "
        f"{min(times['pairs']):.3f} s -> {min(times['distinct']):.3f} s CPU "
        f"({out['speedup']:.2f}x); vectors moved by at most {out['vector_change_max']:.1e}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["sample", "mp36k-test"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(RESULTS / "perf" / "distinct_bonds.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    sets = {name: measure(name, args.n, args.rounds) for name in args.sets}
    write_json(args.json, {
        "benchmark": "distinct bonds: repeats, and the structure channel's CPU time on each path",
        "weights": "sitenet-dim-mp36k", "n_structures": args.n, "rounds": args.rounds,
        "machine": machine(None), "sets": sets,
    })  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
