# Entry points for newcomers and CI. Every target sets itself up from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit integration bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: setup
	$(BIN)/llmpulse demo

lint: setup
	$(BIN)/ruff check llmpulse tests benchmarks
	$(BIN)/ruff format --check llmpulse tests benchmarks

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

unit: setup
	$(BIN)/pytest -q tests/unit -m "not slow"

integration: setup
	$(BIN)/pytest -q tests/integration

bench: setup
	$(BIN)/llmpulse bench pipeline

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
