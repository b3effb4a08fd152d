# Two commands do all the set-up on a fresh machine: `make run` (the quickstart sweep) and
# `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# `cpu` and `gpu` install the same faiss-cpu: on CUDA the evaluation runs on torch (docs/gpu.md).
EXTRA ?= cpu

export RAY_AUTH_MODE ?= disabled
export MLFLOW_DISABLE_TELEMETRY ?= true

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[$(EXTRA),test]'
	touch $@

.PHONY: setup run train test bench gpu-check clean
setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) sweep/run.py experiments/quickstart.yaml

train: $(VENV)/.installed
	$(PY) -m dml_core.train experiments/quickstart.yaml

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# Under 5 minutes on one GPU: one pass/fail table (docs/gpu.md); says so and exits 0 without CUDA.
gpu-check: $(VENV)/.installed
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf runs sweeps mlflow.db mlartifacts .pytest_cache
