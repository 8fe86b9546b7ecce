"""Performance: featurisation throughput, large cells, streaming memory and training speed.

Each script records the machine (:func:`benchmarks.common.machine`) beside its numbers in
``benchmarks/results/perf/``.
"""
