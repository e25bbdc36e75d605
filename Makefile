# Entry points: make demo, make test, make lint, make bench.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test lint bench bench-writer clean

$(BIN)/vitals: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/vitals

venv: $(BIN)/vitals

test: venv
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ingest flows schemas
	$(BIN)/mypy

bench-writer: venv
	$(BIN)/python -m bench.writer

bench: venv
	$(BIN)/python -m bench.writer

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
