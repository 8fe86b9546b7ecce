# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch lies in /opt/wheels on the build machines; elsewhere pip uses PyPI.
export PIP_FIND_LINKS ?= $(wildcard /opt/wheels)
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: venv runtime demo test lint docs wheel clean benchmarks

# Two stamps: the package and its runtime dependencies (enough for `make demo`), then the test,
# docs and lint tools on top (`make test` and the other developer targets).
$(BIN)/.installed-runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pin torch first where a local CPU wheel exists, so that pip never pulls a CUDA build here.
	if ls /opt/wheels/torch-2.13.0*cpu*.whl >/dev/null 2>&1; then \
	  $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed-runtime
	$(BIN)/pip install -q -e ".[dev]"
	# matbench 0.6 pins ancient scikit-learn/matminer; it runs with current ones.
	$(BIN)/pip install -q --no-deps matbench==0.6
	touch $@

runtime: $(BIN)/.installed-runtime

venv: $(BIN)/.installed-dev

demo: runtime
	$(BIN)/python examples/pipeline.py

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q
	$(BIN)/mkdocs build --strict --quiet --site-dir /tmp/dimfeat-site

# The paper's experiments (benchmarks/paper/, docs/results.md); resumes from benchmarks/cache/
# and the mp36k input cache in .devcache/ (benchmarks/common.py), hours on 2 CPUs.
# Pass WEIGHTS=<name or folder> to benchmark other DIM weights.
WEIGHTS ?= sitenet-dim-mp36k
benchmarks: venv
	$(BIN)/pip install -q -e ".[benchmarks]"
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.paper.run_all --weights $(WEIGHTS)

lint: venv
	$(BIN)/ruff check .

docs: venv
	$(BIN)/mkdocs build --strict

wheel: venv
	$(BIN)/python -m build --wheel --outdir dist

clean:
	rm -rf $(VENV) build dist site *.egg-info
