"""Benchmark set-up: pinned BLAS threads, the machine recorded, and a ratio summary at the end.

Every timed round is warm: pedantic mode with warm-up rounds, so compilation never falls inside
one. Compile and cache-load times are measured on their own, in fresh processes
(bench/test_compile.py).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections import defaultdict
from importlib.metadata import PackageNotFoundError, version

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

#: BLAS threads for every benchmark: one per core, fixed rather than left to the environment.
BLAS_THREADS = os.cpu_count() or 1

#: group -> benchmark name -> figures, filled by record() and printed by the summary below.
RESULTS: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)


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


def record(benchmark, name: str, per: int = 1, flops: float | None = None) -> None:
    """Keep the median (per step when ``per`` steps ran each round) for the summary."""
    if benchmark.disabled or benchmark.stats is None:
        return
    median = benchmark.stats.stats.median / per
    figures = {"median": median}
    if flops is not None:
        figures["gflops"] = flops / median / 1e9
    benchmark.extra_info.update({"median_per_step_s": median, **figures})
    RESULTS[benchmark.group][name] = figures


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("gradcheck: ratios measured in this run")
    for group, results in sorted(RESULTS.items()):
        write(group)
        fastest = min(r["median"] for name, r in results.items() if name != "matmul")
        matmul = results.get("matmul", {}).get("gflops")
        for name, r in sorted(results.items(), key=lambda item: item[1]["median"]):
            line = f"  {name:14s} {r['median'] * 1e3:10.4f} ms"
            if name != "matmul":
                line += f"  {r['median'] / fastest:6.2f}x the fastest"
            if "gflops" in r:
                line += f"  {r['gflops']:6.1f} GFLOP/s"
                if matmul and name != "matmul":
                    line += f" = {100 * r['gflops'] / matmul:3.0f}% of matmul"
            write(line)
