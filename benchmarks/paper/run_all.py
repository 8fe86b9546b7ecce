"""Rerun every paper benchmark end to end, cheapest and most important first.

Each stage resumes from ``benchmarks/cache/`` (feature matrices, finished cells, training
checkpoints), and the report is rewritten after each stage, so the command can be interrupted
and rerun at any time. For new DIM weights only the DIM vectors and DIM cells are recomputed.

``python -m benchmarks.paper.run_all [--weights NAME_OR_FOLDER] [--skip ablation,ofm-phonons]``

Stages: ``fast`` (Fig. 8 without OFM, Fig. 13 without OFM, t-SNE), ``geometry`` (structure
sensitivity on the test polymorph families, :mod:`benchmarks.paper.geometry`), ``one-chemistry``
(MLP against least squares on generated all-carbon and all-SiO2 sets,
:mod:`benchmarks.paper.one_chemistry`, about 2 min), ``ofm`` (OFM
features of the mp36k subsets, Fig. 8 with OFM), ``ablation`` (Fig. 11, one CPU training),
``ofm-phonons`` (OFM of the 1,265 phonon structures, Fig. 13 with OFM), ``transfer`` (Fig. 7,
:mod:`benchmarks.paper.transfer`: 288 fine-tuning runs of about 30 s each on one core, resumed
from ``benchmarks/results/paper/transfer.json``; the bundled weights only, and only when that
file holds no runs of other DIM weights: it then rewrites the table naming the weights the
runs are from). The ``fast`` stage also redraws the training curves (Fig. 6) from the weights'
recorded history, one line set per channel of two-channel weights.
"""

from __future__ import annotations

import argparse
import os
import time

STAGES = ("fast", "geometry", "one-chemistry", "ofm", "ablation", "ofm-phonons", "transfer")


def main(argv=None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from benchmarks.common import weights_label
    from benchmarks.paper import ablation, one_chemistry, phonons, report, representation, tsne
    from benchmarks.paper import features as F

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=representation.DEFAULT_WEIGHTS)
    parser.add_argument("--skip", default="", help=f"comma-separated stages of {STAGES}")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    fast = ("dim", "dim-untrained", "magpie", "xrd")
    t0 = time.perf_counter()

    def stage(name: str, work) -> None:
        if name in skip:
            print(f"== {name}: skipped")
            return
        print(f"== {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        work()
        report.write()

    def run_fast() -> None:
        from benchmarks.paper import plot_training

        representation.run(args.weights, fast)
        phonons.run(args.weights, fast)
        tsne.run(args.weights)
        plot_training.main(["--config", args.weights])

    def run_transfer() -> None:
        from benchmarks.paper import transfer

        if args.weights != representation.DEFAULT_WEIGHTS:
            print("== transfer: runs only with the bundled weights; skipped")
            return
        results = transfer.RESULTS / "paper" / "transfer.json"
        other = transfer.other_starts(results, representation.DEFAULT_WEIGHTS)
        if other:  # rerunning would mix weights (refused); the results stay, labelled
            names = " and ".join(weights_label(sha) for sha in other)
            print(
                f"== transfer: {results} holds the runs of {names}; not rerun (288 runs of "
                "about 30 s): `python -m benchmarks.paper.transfer run --out FILE` computes "
                "them for the bundled weights. Its table is rewritten naming those weights."
            )
        else:
            transfer.main(["run"])
        transfer.main(["plot"])

    def run_ofm() -> None:
        pool, test = F.pool(), F.first(F.test_set(), F.N_SCORE)
        F.features(pool, "ofm")
        F.features(test, "ofm")
        representation.run(args.weights, representation.REPS)

    def run_ofm_phonons() -> None:
        F.features(F.phonons(), "ofm")
        phonons.run(args.weights, phonons.REPS)

    def run_geometry() -> None:
        from benchmarks.paper import geometry

        reps = [r for r in geometry.REPS if r != "chgnet" or _has("chgnet")]
        archived = "benchmarks/results/archive/sitenet-dim-mp36k-linear-2-epochs"
        geometry.main(["--weights", args.weights, "--reps", ",".join([*reps, f"dim@{archived}"])])

    stage("fast", run_fast)
    stage("geometry", run_geometry)
    stage("one-chemistry", lambda: one_chemistry.main(["--weights", args.weights]))
    stage("ofm", run_ofm)
    stage("ablation", lambda: ablation.run(args.weights))
    stage("ofm-phonons", run_ofm_phonons)
    stage("transfer", run_transfer)
    print(f"== done in {time.perf_counter() - t0:.0f} s")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
