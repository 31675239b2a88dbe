# The whole set-up: `make verify` runs the main job, `make test` the checks; each creates the
# virtual environment in .venv first when it is missing or pyproject.toml has changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: verify test lint bench chart clean

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

# The benchmarks run once each, untimed, so they cannot rot; `make bench` times them.
test: lint
	$(BIN)/pytest
	$(BIN)/pytest bench --benchmark-disable -q

bench: $(BIN)/gradcheck
	$(BIN)/pytest bench --benchmark-only

# The README's chart: every backend's time per step and the notebook's loss curves.
chart: $(BIN)/gradcheck
	$(BIN)/gradcheck bench --plot bench/chart.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
