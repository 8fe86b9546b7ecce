#!/usr/bin/env bash
# On the build machine, before the one call on a lent GPU machine (benchmarks/perf/gpu_run.sh):
# the wheels of the packages its image lacks (CPython 3.12, x86-64 Linux; the versions of this
# checkout's environment) into .whl/, and the CGCNN Materials Project set into .devdata/mp36k/.
# Both folders are ignored by git and travel as the call's carried paths (about 30 MB).
set -eu
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
DATA=${DIMFEAT_SHARED_DATA:-../shared/data}
# What dimfeat imports that the GPU image (CUDA, PyTorch, NumPy, SciPy, pandas, scikit-learn,
# joblib, safetensors, huggingface_hub, tqdm, sympy, networkx, tabulate, matplotlib) lacks.
NEEDED="pymatgen pymatgen-core matminer spglib monty ruamel.yaml orjson palettable pymongo dnspython uncertainties"
pins=""
for name in $NEEDED; do
  pin=$("$PIP" list --format=freeze 2>/dev/null | grep -i "^${name}==" || true)
  [ -n "$pin" ] || { echo "$name is not installed here: make venv first" >&2; exit 1; }
  pins="$pins $pin"
done
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
for wheel in .whl/*.whl; do  # what gpu_run.sh accepts: CPython 3.12 or pure Python
  case "$wheel" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-*.whl) ;;
    *) echo "unexpected wheel $wheel" >&2; exit 1 ;;
  esac
done
rm -rf .devdata && mkdir -p .devdata/mp36k
cp "$DATA/mp36k/mp36k.tar.gz" "$DATA/mp36k/split.json" .devdata/mp36k/
chmod -R u+w .devdata
du -sh .whl .devdata
