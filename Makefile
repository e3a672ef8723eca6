# Consent Relay: the two set-up commands are `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Local development opens loopback to webhooks (the SSRF guard refuses it otherwise).
export CONSENT_RELAY_ALLOWED_NETWORKS ?= 127.0.0.0/8,::1/128

.PHONY: serve test check lint typecheck unit bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## serve: install, migrate and run the service on SQLite (./data/), http://127.0.0.1:8000
serve: $(STAMP)
	$(BIN)/consent-relay migrate
	$(BIN)/consent-relay serve

## test: lint, type-check and the whole suite, PostgreSQL included
test: $(STAMP)
	bash scripts/test-deps.sh
	bash scripts/test-postgres.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	CONSENT_RELAY_REQUIRE_POSTGRES=1 $(BIN)/pytest -q --durations=20

check: test

## demo: a short consent story on a temporary database, delivered live
demo: $(STAMP)
	$(BIN)/consent-relay demo

## unit: the fast tests only (no database)
unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## bench: the benchmarks of docs/benchmarks.md (prints a table; add ARGS=--json for JSON)
bench: $(STAMP)
	bash scripts/test-postgres.sh
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
