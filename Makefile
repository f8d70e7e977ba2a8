# Two set-up commands on a fresh machine: `make demo` (the main job on the built-in default) and
# `make test` (the test suite). Both create .venv and install trt-quant into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trt-quant demo --output engines/minilm

test: $(STAMP)
	$(BIN)/python -m trt_quant.triton.environment  # the Triton server the tests run (built once, cached)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check trt_quant tests scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python scripts/benchmark.py
