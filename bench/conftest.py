"""Benchmark set-up: pinned threads, the machine recorded, and a ratio summary at the end.

Every timed round is warm: pedantic mode with warm-up rounds, so compilation never falls inside
one. Compile and cache-load times are measured on their own, in fresh processes
(bench/test_compile.py). The matmul ceiling is measured when the session starts and when it
ends, and other processes' CPU use over the session, so the summary can say when the machine
was too busy for its figures to be compared (`gradcheck.benchmarks.Conditions`).
"""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from gradcheck import benchmarks, cpu_load

#: What the timed benchmarks measured, for the summary: training rows, the machine's
#: conditions, and first-call costs by label.
ROWS: list[benchmarks.Row] = []
CONDITIONS: list[benchmarks.Conditions] = []
FIRST_CALLS: dict[str, float] = {}


def pytest_collection_modifyitems(config, items):
    """Untimed (``--benchmark-disable``, as in make test), only each grid's ``untimed`` slice runs:
    enough that no benchmark rots. `make bench` times every case."""
    if not config.getoption("benchmark_disable"):
        return
    kept, dropped = [], []
    for item in items:
        untimed = item.get_closest_marker("untimed")
        keep = untimed is None or untimed.kwargs["keep"](item.callspec.params)
        (kept if keep else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    found = {}
    for package in ("numpy", "numba", "jax", "jaxlib", "keras", "tensorflow-cpu", "tensorflow"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


@pytest.fixture(scope="session", autouse=True)
def conditions(request):
    """Pinned BLAS threads for the session, and the machine's conditions around it."""
    if request.config.getoption("benchmark_disable"):
        yield
        return
    # --gradcheck-single-thread, the plugin's option, has pinned the frameworks already
    threads = benchmarks.blas_threads(request.config.getoption("gradcheck_single_thread"))
    with threadpool_limits(limits=threads, user_api="blas"):
        load = cpu_load.LoadMeter.start()
        start = benchmarks.ceilings(benchmarks.DTYPES)
        yield
        end = benchmarks.ceilings(benchmarks.DTYPES)
    CONDITIONS.append(benchmarks.Conditions(threads, start, end, load.other_cores()))


@pytest.fixture
def machine(benchmark):
    """Record BLAS threads, versions and the CPU in the benchmark's extra_info."""
    blas = [
        f"{pool['internal_api']} {pool.get('version', '')} x{pool['num_threads']}"
        for pool in threadpool_info()
        if pool["user_api"] == "blas"
    ]
    benchmark.extra_info.update(
        {"cpu": _cpu(), "cores": os.cpu_count(), "blas": blas, "versions": _versions()}
    )
    return benchmark


@pytest.fixture
def record():
    """``record(benchmark, case, backend)`` keeps a training benchmark's median round as a row of
    the summary table."""

    def keep(benchmark, case: benchmarks.Case, backend: str) -> None:
        if benchmark.disabled or benchmark.stats is None:
            return
        stats = benchmark.stats.stats
        row = benchmarks.timed_row(case, backend, stats.data, None)
        benchmark.extra_info.update({"median_per_step_s": row.seconds_per_step})
        ROWS.append(row)

    return keep


@pytest.fixture
def first_calls() -> dict[str, float]:
    """First-call costs by label, for the summary."""
    return FIRST_CALLS


def pytest_terminal_summary(terminalreporter):
    """The table ``gradcheck bench`` prints, from this run's medians."""
    if not ROWS and not FIRST_CALLS:
        return
    terminalreporter.section("gradcheck: ratios measured in this run")
    if ROWS and CONDITIONS:
        rows = benchmarks.compare_rows(ROWS, CONDITIONS[0])
        for line in benchmarks.table(rows, CONDITIONS[0]).splitlines():
            terminalreporter.write_line(line)
    for label, seconds in FIRST_CALLS.items():
        terminalreporter.write_line(f"first call in a fresh process, {label}: {seconds:.3g} s")
