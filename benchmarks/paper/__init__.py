"""Reproduction of the experiments of the DIM paper on the CGCNN Materials Project set and Matbench.

Run everything with ``python -m benchmarks.paper.run_all`` (or ``make benchmarks``) from the
repository root; feature matrices are cached in ``benchmarks/cache/``, results go to
``benchmarks/results/paper/`` and the report to ``docs/results.md``.
"""
