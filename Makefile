# Two set-up commands on a fresh machine: `make demo` (the main job on the built-in default) and
# `make test` (the test suite). Both create .venv and install trt-quant into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# pytest-xdist workers for `make test`; each test module runs whole on one worker, so its fixtures build once
TEST_WORKERS ?= 2

.PHONY: demo test lint bench

# --no-compile: Python compiles what is imported on first use; compiling all of torch, transformers and the
# rest at install time made the install take 3 min 21 s instead of 1 min 36 s (2 cores, warm pip cache)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trt-quant demo --output engines/minilm

test: $(STAMP)
	$(BIN)/python -m trt_quant.triton.environment  # the Triton server the tests run (built once, cached)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: $(STAMP)
	$(BIN)/ruff check trt_quant tests scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py
