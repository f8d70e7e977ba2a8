# Two set-up commands on a fresh machine: `make demo` (the main job on the built-in default) and
# `make test` (the test suite). Both create .venv and install trt-quant into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# pytest-xdist workers for `make test`; each test module runs whole on one worker, so its fixtures build once
TEST_WORKERS ?= 2

.PHONY: demo test lint bench

# pip byte-compiles on one core: 3 min 21 s for the install, 1 min 36 s with --no-compile (2 cores, warm pip
# cache). compileall on every core then takes 65 s; files this Python cannot compile (torch's 3.12-only test
# helpers) are skipped, as pip skips them. Not compiling at all would make every process compile torch again
# where PYTHONDONTWRITEBYTECODE is set (about 23 s per import of torch, transformers and Model Optimizer).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e '.[dev]'
	$(BIN)/python -c "import compileall, sys; compileall.compile_dir(sys.prefix, quiet=2, workers=0)"
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
