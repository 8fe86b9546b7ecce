#!/usr/bin/env bash
# The one call on a lent GPU machine (benchmarks/README.md, "On a GPU"): install the packages its
# image lacks from the wheels carried in .whl/, then the CUDA tests (tests/test_cuda.py) and
# python -m benchmarks.perf.gpu, their output and JSON written to $OUT.
# Prepared on the build machine by benchmarks/perf/gpu_prepare.sh; run from the repository root.
set -u
OUT=${OUT:-/tmp/dimfeat-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DIMFEAT_SHARED_DATA="$PWD/.devdata" HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"  # dimfeat from this tree (its weights/ are the bundled ones)
python3 -m pip list 2>/dev/null | grep -i -E "^(torch|numpy|pandas|scikit-learn|scipy) " \
  | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log"
python3 -m benchmarks.perf.gpu --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
