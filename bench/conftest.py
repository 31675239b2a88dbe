"""Benchmark set-up: pinned BLAS threads, the machine recorded, and a ratio summary at the end.

Every timed round is warm: pedantic mode with warm-up rounds, so compilation never falls inside
one. Compile and cache-load times are measured on their own, in fresh processes
(bench/test_compile.py).
"""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from gradcheck import benchmarks

#: BLAS threads for every benchmark: one per core, fixed rather than left to the environment.
BLAS_THREADS = os.cpu_count() or 1

#: What the timed benchmarks measured, for the summary: training rows, the matmul ceiling per
#: dtype, and first-call costs by label.
ROWS: list[benchmarks.Row] = []
CEILING: dict[str, float] = {}
FIRST_CALLS: dict[str, float] = {}


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
def pinned_blas():
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        yield


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


def record(benchmark, case: benchmarks.Case, backend: str) -> None:
    """Keep a training benchmark's median round as a row of the summary table."""
    if benchmark.disabled or benchmark.stats is None:
        return
    row = benchmarks.timed_row(case, backend, benchmark.stats.stats.median, None)
    benchmark.extra_info.update({"median_per_step_s": row.seconds_per_step})
    ROWS.append(row)


def record_ceiling(benchmark, dtype: str, flops: float) -> None:
    if benchmark.disabled or benchmark.stats is None:
        return
    CEILING[dtype] = flops / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update({"gflops": CEILING[dtype]})


def pytest_terminal_summary(terminalreporter):
    """The table ``gradcheck bench`` prints, from this run's medians."""
    if not ROWS and not FIRST_CALLS:
        return
    terminalreporter.section("gradcheck: ratios measured in this run")
    if ROWS:
        rows = benchmarks.compare_rows(ROWS, CEILING)
        for line in benchmarks.table(rows, CEILING).splitlines():
            terminalreporter.write_line(line)
    for label, seconds in FIRST_CALLS.items():
        terminalreporter.write_line(f"first call in a fresh process, {label}: {seconds:.3g} s")
