# The whole set-up: `make verify` runs the main job, `make test` the checks; each creates the
# virtual environment in .venv first when it is missing or pyproject.toml has changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# TensorFlow imported by a test or a docs block before gradcheck's Keras backend sets its own
# defaults would log every float64 op oneDNN does not handle ("Not handling type DT_DOUBLE"):
# the session gets the backend's defaults, logging off and oneDNN's reordered kernels disabled.
QUIET_TF := TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0

.PHONY: verify test test-thorough lint docs numba-float64 numba-float32 browser bench chart clean

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

# Two lines of work side by side: Numba's float64 kernels, and lint then the float32 kernels
# (Numba compiles one process per dtype, into its on-disk cache; lint staggers the two); then
# the tests and the docs' and README's code blocks run on every core (pytest-xdist): seeds 0-2
# and the default slice of each sweep, with the slowest tests and the seconds per file at the
# end. A worker that runs out of tests takes some of another's (worksteal): dealt out once, the
# tests kept one core busy long after the other had finished (the suite took 302 and 366 s that
# way, 251 and 287 s so). Compiling first spares the test workers compiling the same kernels at
# once, each for itself. The first worker to need the documentation site builds it as `make
# docs` does while the other tests on, after both compiling processes have ended, so that its
# notebook's Numba calls never meet their cache writes. A slice of the benchmarks runs in the
# same session, untimed, so they cannot rot; `make bench` times them all.
test: $(BIN)/gradcheck browser
	$(MAKE) --no-print-directory -j2 numba-float64 lint numba-float32
	$(QUIET_TF) $(BIN)/pytest -n auto --dist worksteal --markdown-docs --durations=15 \
		tests docs README.md bench --benchmark-disable

# Every case of every sweep, seeds 0-19 and hypothesis's thorough profile (400 networks).
test-thorough: $(BIN)/gradcheck
	$(QUIET_TF) $(BIN)/pytest -n auto --dist worksteal -m "" --gradcheck-seeds=20 --hypothesis-profile=thorough --durations=15

# Chromium for the browser test (tests/test_site.py), from Debian's packages where this user may
# install them; elsewhere that test skips and says how to install it.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "no Chromium: the browser test will skip (apt-get install chromium)"

# Every Numba kernel compiled for one dtype: each catalogue problem trained once and its
# predictions made once (a narrow network predicts through an entry of its own).
numba-float64 numba-float32: $(BIN)/gradcheck
	$(BIN)/python -c "from gradcheck import benchmarks as b, get_backend; \
		cases = [b.case(problem, '$(@:numba-%=%)') for problem in b.PROBLEMS]; \
		[(c.train('numba'), get_backend('numba').predict(c.net, c.params, c.X)) for c in cases]"

# The documentation site, into site/. Its notebook trains with Numba in float64: the kernels are
# compiled first, so that the notebook loads them from Numba's cache rather than compiling them
# beside numba-float64.
docs: $(BIN)/gradcheck numba-float64
	$(QUIET_TF) NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(BIN)/gradcheck
	$(BIN)/pytest bench --benchmark-only

# The benchmarks page's table: a recorded run of every backend on every catalogue problem.
chart: $(BIN)/gradcheck
	$(BIN)/gradcheck bench --json > docs/bench.json

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
