"""One-off research: measurements behind a design choice, kept runnable with their results in
``benchmarks/results/archive/`` (docs/research/training-recipes.md and the pages that cite them).
Not part of ``make benchmarks``."""
