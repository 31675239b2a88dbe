"""gradcheck's pytest plugin, registered through the ``pytest11`` entry point.

- ``--gradcheck-backends numpy,numba``: the backends the fixture runs over (default: every
  built-in backend).
- ``gradcheck_backend``: a test that takes it runs once per selected backend; a backend whose
  framework is not installed is skipped, with the reason.
- ``gradcheck_verify``: `gradcheck.verify`, whose report is asserted before it returns.
- ``gradcheck_rule``: `gradcheck.check_rule`, which fails the test with its findings when a
  JAX or TensorFlow rule disagrees.
- ``gradcheck_dtype`` and ``gradcheck_seed``: a test that takes them runs once per dtype and
  seed, chosen with ``--gradcheck-dtypes float64,float32`` and ``--gradcheck-seeds 20`` (seeds 0
  to 19) or ``--gradcheck-seeds 3,7``; made for sweeping ``check_backward`` over a user's
  kernels.
- ``gradcheck_bench``: a backend's training run timed by pytest-benchmark on a catalogue problem
  (or a network and data of your own), in the group the built-in backends' runs of the same
  problem and dtype are timed in; ``--gradcheck-single-thread`` runs BLAS, JAX, TensorFlow and
  Numba on one thread each.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gradcheck.backends import BUILTIN, available_backends, get_backend
from gradcheck.network import DTYPES

#: Seeds the ``gradcheck_seed`` fixture runs over unless --gradcheck-seeds says otherwise.
DEFAULT_SEEDS = 3


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck")
    group.addoption(
        "--gradcheck-backends",
        default=None,
        metavar="NAMES",
        help="comma-separated backends for the gradcheck_backend fixture "
        f"(default: all of {', '.join(BUILTIN)})",
    )
    group.addoption(
        "--gradcheck-dtypes",
        default=",".join(DTYPES),
        metavar="DTYPES",
        help="comma-separated dtypes for the gradcheck_dtype fixture "
        f"(default: {','.join(DTYPES)})",
    )
    group.addoption(
        "--gradcheck-single-thread",
        action="store_true",
        help="time gradcheck_bench's rounds with BLAS, JAX, TensorFlow and Numba on one thread "
        "each",
    )
    group.addoption(
        "--gradcheck-seeds",
        default=str(DEFAULT_SEEDS),
        metavar="SEEDS",
        help="seeds for the gradcheck_seed fixture: a count N for seeds 0 to N-1, or a "
        f"comma-separated list (default: {DEFAULT_SEEDS})",
    )


def _selected(config: pytest.Config) -> list[str]:
    option = config.getoption("--gradcheck-backends")
    if option is None:
        return list(BUILTIN)
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in names if name not in BUILTIN]
    if unknown or not names:
        raise pytest.UsageError(
            f"--gradcheck-backends must name backends among {', '.join(BUILTIN)}; got {option!r}"
        )
    return names


def _dtypes(config: pytest.Config) -> list[str]:
    option = config.getoption("--gradcheck-dtypes")
    names = [name.strip() for name in option.split(",") if name.strip()]
    if not names or any(name not in DTYPES for name in names):
        raise pytest.UsageError(
            f"--gradcheck-dtypes must name dtypes among {', '.join(DTYPES)}; got {option!r}"
        )
    return names


def _seeds(config: pytest.Config) -> list[int]:
    option = config.getoption("--gradcheck-seeds").strip()
    try:
        if "," in option:
            seeds = [int(part) for part in option.split(",") if part.strip()]
        else:
            seeds = list(range(int(option)))
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise pytest.UsageError(
            "--gradcheck-seeds must be a positive count or a comma-separated list of "
            f"non-negative seeds; got {option!r}"
        )
    return seeds


def pytest_configure(config: pytest.Config) -> None:
    # bad options are usage errors before any collection
    _selected(config)
    _dtypes(config)
    _seeds(config)
    if config.getoption("gradcheck_single_thread"):
        from gradcheck.benchmarks import pin_framework_threads

        pin_framework_threads()  # before any framework loads: they read it then


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gradcheck_backend" in metafunc.fixturenames:
        metafunc.parametrize("gradcheck_backend", _selected(metafunc.config), indirect=True)
    if "gradcheck_dtype" in metafunc.fixturenames:
        metafunc.parametrize("gradcheck_dtype", _dtypes(metafunc.config), indirect=True)
    if "gradcheck_seed" in metafunc.fixturenames:
        metafunc.parametrize("gradcheck_seed", _seeds(metafunc.config), indirect=True)


@pytest.fixture
def gradcheck_backend(request: pytest.FixtureRequest) -> Any:
    """Each selected backend in turn; skipped where its framework is not installed."""
    name = request.param
    if name not in available_backends():
        pytest.skip(f"gradcheck backend {name!r}: its framework is not installed")
    return get_backend(name)


@pytest.fixture
def gradcheck_dtype(request: pytest.FixtureRequest) -> str:
    """Each dtype in turn, a name such as ``"float32"``: ``--gradcheck-dtypes`` chooses them
    (default: float64,float32). Cast a kernel's inputs to it to check it in every precision."""
    return str(request.param)


@pytest.fixture
def gradcheck_seed(request: pytest.FixtureRequest) -> int:
    """Each seed in turn: ``--gradcheck-seeds N`` runs seeds 0 to N − 1 (default 3), and
    ``--gradcheck-seeds 3,7`` those seeds. Draw a kernel's inputs from it to sweep them."""
    return int(request.param)


@pytest.fixture
def gradcheck_verify() -> Any:
    """``verify(...)`` that fails the test, with the verdict, when the backends disagree."""
    from gradcheck.verify import verify

    def run(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        report = verify(*args, **kwargs)
        report.assert_ok()
        return report

    return run


@pytest.fixture
def gradcheck_rule() -> Any:
    """``check_rule(f, *inputs, ...)`` that fails the test, with the findings and what explains
    them, when a JAX or TensorFlow rule disagrees; returns the result when it agrees."""
    from gradcheck.rules import check_rule

    def run(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        result = check_rule(*args, **{**kwargs, "raise_exception": False})
        if not result.ok:
            pytest.fail(str(result), pytrace=False)
        return result

    return run


@contextlib.contextmanager
def _blas_threads(single_thread: bool) -> Iterator[None]:
    """BLAS pinned to one thread for a single-threaded run (`benchmarks.blas_limits`, by
    threadpoolctl, the bench extra); nothing otherwise."""
    if not single_thread:
        yield
        return
    from gradcheck.benchmarks import blas_limits

    with blas_limits(1):
        yield


@pytest.fixture
def gradcheck_bench(request: pytest.FixtureRequest, benchmark: Any) -> Any:
    """``gradcheck_bench(backend, problem="digits", dtype="float64", rounds=5)`` times
    ``backend``'s training run with pytest-benchmark: ``bench_steps`` steps of a catalogue
    problem a round, after untimed warm-up rounds; the first call (compile or cache load
    included) is timed alone and kept in the benchmark's ``extra_info["first_call_s"]``.
    ``backend`` is a built-in backend's name or an object with the backend interface. Runs
    of the same problem and dtype share one group, so the table sets yours beside the
    built-in backends'. For a network and data of your own give ``net, X, y, params, steps``
    and ``lr`` (plain gradient descent) instead of ``problem``. Returns the last round's
    `gradcheck.Trajectory`. Needs pytest-benchmark."""
    from gradcheck import benchmarks

    single_thread = bool(request.config.getoption("gradcheck_single_thread"))

    def run(
        backend: Any,
        problem: str = "digits",
        dtype: str = "float64",
        *,
        rounds: int = 5,
        **own: Any,
    ) -> Any:
        __tracebackhide__ = True
        train, group = benchmarks.timed_training(backend, problem, dtype, own)
        benchmark.group = group
        with _blas_threads(single_thread):
            start = time.perf_counter()
            train()
            benchmark.extra_info["first_call_s"] = time.perf_counter() - start
            return benchmark.pedantic(
                train, warmup_rounds=benchmarks.WARMUP_ROUNDS - 1, rounds=rounds
            )

    return run
