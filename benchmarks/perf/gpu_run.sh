#!/usr/bin/env bash
# The one call on a lent GPU machine (benchmarks/README.md, "On a GPU"): install the packages its
# image lacks from the wheels carried in .whl/, check the install, then the CUDA tests and
# python -m benchmarks.perf.gpu (extra arguments go to it), their output and JSON written to
# $OUT. SKIP_TESTS=1 skips the tests (a rerun). Exits non-zero if a test or a step failed.
# Prepared on the build machine by benchmarks/perf/gpu_prepare.sh.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dimfeat-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DIMFEAT_SHARED_DATA="$PWD/.devdata" HF_HUB_OFFLINE=1
for needed in .devdata/mp36k/mp36k.tar.gz .devdata/mp36k/split.json; do
  [ -f "$needed" ] || { echo "missing $needed: run gpu_prepare.sh and carry .devdata" >&2; exit 2; }
done
tag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
for wheel in .whl/*.whl; do
  case "$wheel" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-"$tag"-*.whl) ;;
    *) echo "$wheel is not for $tag: rerun gpu_prepare.sh for this Python" >&2; exit 2 ;;
  esac
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH="/tmp/site:$PWD"  # dimfeat from this tree (its weights/ are the bundled ones)
python3 - <<'PY' 2>&1 | tee -a "$OUT/gpu.txt" || exit 2
import importlib.metadata as m
import pandas, torch
import dimfeat, matminer.featurizers.base, pymatgen.core, spglib  # noqa: F401
import benchmarks.perf.gpu  # noqa: F401
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "pandas", pandas.__version__,
      "numpy", m.version("numpy"), "scikit-learn", m.version("scikit-learn"))
if int(pandas.__version__.split(".")[0]) >= 3:
    print("WARNING: pandas >= 3, which matminer 0.10 does not declare support for")
PY
status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_featurizer.py::test_cpu_and_cuda_vectors_agree \
    tests/test_training.py::test_one_epoch_on_cuda 2>&1 | tee "$OUT/test_cuda.log"
  status=$?
fi
timeout 360 python3 -m benchmarks.perf.gpu --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
benchmark=$?
echo "tests exit $status, benchmark exit $benchmark" | tee "$OUT/status.txt"
[ "$status" = 0 ] && [ "$benchmark" = 0 ]
