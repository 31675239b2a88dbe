import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import release_compiled_code
from hypothesis import HealthCheck, settings

import gradcheck
from gradcheck.benchmarks import pin_framework_threads

pytest_plugins = ["pytester"]

# Under pytest-xdist (make test runs `pytest -n auto`) the workers already use every core, and
# BLAS, XLA and TensorFlow pools of their own in each would oversubscribe them: each worker runs
# its frameworks on one thread. SciPy's OpenBLAS, which Numba's products call, is loaded first so
# that the limit reaches it too: left on two threads, OpenBLAS spinning in both workers at once
# made some tests 5 to 20 times slower than alone (the suite took 360 s, and 292–320 s so).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import scipy.linalg.cython_blas  # noqa: F401 - loaded, so that the limit reaches it
    from threadpoolctl import threadpool_limits

    pin_framework_threads()
    threadpool_limits(limits=1)

# The suite compiles some hundreds of small XLA programs and runs each a few times, where XLA's
# new fusion emitters and LLVM's optimisation cost more than they save: without them the suite
# took 241 s rather than 304 s, an LSTM verify-and-explain test 7.9 s rather than 16.9 s. The
# flags change how fast XLA's code runs, not what it computes (fast-math stays off); set before
# JAX starts its backend, and passed on to the processes the tests start. They are the options
# `jax_autodiff.QUICK_COMPILE` gives the reference's one-off programs, here for every program
# (spelled as flags: importing that module here would load JAX in every test process).
CHEAP_XLA = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CHEAP_XLA}".strip()

# "ci" is fixed and derandomised, so every run checks the same networks; "thorough" explores.
# Choose with --hypothesis-profile=thorough (or HYPOTHESIS_PROFILE=thorough).
_slow = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci", max_examples=6, derandomize=True, deadline=None, suppress_health_check=_slow
)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=_slow)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the cases outside each sweep's default slice as thorough."""
    for item in items:
        sweep = item.get_closest_marker("sweep")
        if sweep is not None and not sweep.kwargs["keep"](item.callspec.params):
            item.add_marker(pytest.mark.thorough)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The time each test file took, summed over its tests, slowest first: where the suite's
    minutes go."""
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                path = report.nodeid.split("::", 1)[0]
                seconds[path] = seconds.get(path, 0.0) + report.duration
    if seconds:
        terminalreporter.write_sep("=", "seconds per test file, summed over its tests")
        for path, total in sorted(seconds.items(), key=lambda item: -item[1])[:10]:
            terminalreporter.write_line(f"{total:8.1f}s  {path}")


@pytest.fixture(params=gradcheck.available_backends())
def backend(request):
    """Every backend available here, in turn."""
    return gradcheck.get_backend(request.param)


@pytest.fixture(scope="module", autouse=True)
def compiled_code_released():
    """Release what the frameworks compiled for a test module's networks once it ends."""
    yield
    release_compiled_code()


def _session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary directory, which pytest-xdist's workers share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def pytest_configure(config: pytest.Config) -> None:
    """Warnings are errors (pyproject.toml), but one of JAX's: the persistent compilation cache
    that `shared_xla_compilations` turns on writes an entry in place, so a worker that reads it
    while another is writing it gets a short read, which JAX reports with this warning and
    treats as a miss — it compiles the program itself."""
    config.addinivalue_line(
        "filterwarnings", "ignore:Error reading persistent compilation cache entry:UserWarning"
    )


@pytest.fixture(scope="session", autouse=True)
def shared_xla_compilations(tmp_path_factory: pytest.TempPathFactory) -> None:
    """XLA's compiled programs kept on disk for the session (JAX's persistent compilation
    cache), so that a program compiled once is loaded rather than compiled again: by the other
    pytest-xdist workers, and after `compiled_code_released` has let a module's programs go.
    Set in this process before the first test compiles anything, and not passed on to the
    processes tests start, which must meet JAX as a user does; the directory is the session's,
    which pytest removes in time."""
    if "jax" not in gradcheck.available_backends():
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(_session_dir(tmp_path_factory) / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built as ``make docs`` builds it (warnings as errors), once per
    session: under pytest-xdist by the first worker to need it, into the session's directory
    that the workers share, while the others wait for it or test on; or, where
    ``GRADCHECK_SITE`` names one, the site already built there."""
    if os.environ.get("GRADCHECK_SITE"):
        return Path(os.environ["GRADCHECK_SITE"]).resolve()
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install '.[docs]'")
    shared = _session_dir(tmp_path_factory)
    out = shared / "site"
    with open(shared / "site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker builds; the others find it built
        if not (out / "index.html").exists():
            subprocess.run(
                [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                cwd=Path(__file__).resolve().parent.parent,
                check=True,
                env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
            )
    return out
