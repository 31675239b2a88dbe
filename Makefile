# The whole set-up: `make verify` runs the main job, `make test` the checks; each creates the
# virtual environment in .venv first when it is missing or pyproject.toml has changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: verify test lint clean

$(BIN)/gradcheck: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --editable '.[dev]'
	touch $@

verify: $(BIN)/gradcheck
	$(BIN)/gradcheck verify

lint: $(BIN)/gradcheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
