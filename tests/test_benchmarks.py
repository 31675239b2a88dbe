"""The benchmark harness's honesty: contention is detected and reported, the share of the matmul
ceiling is withheld when it cannot be trusted, and the floor computes the notebook's training.
Timings themselves are measured in bench/, never here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import NumpyDelegate

import gradcheck
from gradcheck import benchmarks, cpu_load
from gradcheck.benchmarks import Conditions, Row

BUSY_LOOP = "import time\nend = time.perf_counter() + 30\nwhile time.perf_counter() < end: pass"


def _row(backend: str, seconds: float, gflops: float | None = None) -> Row:
    return Row("digits", "float64", backend, 10, 1.5 * seconds, seconds, gflops=gflops)


def _quiet(**changes) -> Conditions:
    values = {
        "blas_threads": 2,
        "ceiling_start": {"float64": 80.0},
        "ceiling_end": {"float64": 84.0},
        "other_cores": 0.05,
    }
    return Conditions(**{**values, **changes})


def test_rounds_are_interleaved_and_ratios_taken_on_the_best():
    """The protocol: each backend's first call and warm-up alone, then one timed round of each
    in turn; a row's median and best are of its own rounds, its ratio that of the bests."""
    calls = []

    class Logged(NumpyDelegate):
        def __init__(self, name: str, pause: float) -> None:
            super().__init__()
            self.name, self.pause = name, pause

        def train(self, net, params, X, y, steps, lr):
            calls.append(self.name)
            time.sleep(self.pause)
            return super().train(net, params, X, y, steps, lr)

    backends = [Logged("slow", 0.02), Logged("fast", 0.0)]
    rows, _ = benchmarks.run(backends, ["notebook"], ["float64"], rounds=3)
    warm = benchmarks.WARMUP_ROUNDS
    assert calls == ["slow"] * warm + ["fast"] * warm + ["slow", "fast"] * 3
    slow, fast = (next(r for r in rows if r.backend == name) for name in ("slow", "fast"))
    for r in (slow, fast):
        assert 0 < r.best_seconds_per_step <= r.seconds_per_step
    assert slow.best_seconds_per_step * slow.steps >= 0.02
    fastest = min(r.best_seconds_per_step for r in rows)
    assert slow.ratio_to_fastest == pytest.approx(slow.best_seconds_per_step / fastest)


def test_a_quiet_run_reports_its_share_of_the_ceiling():
    rows = benchmarks.compare_rows([_row("a", 2e-3, 40.0), _row("b", 1e-3, 20.0)], _quiet())
    assert _quiet().contention(rows) == []
    assert [r.ratio_to_fastest for r in rows] == [2.0, 1.0]
    # the higher of the two ceiling readings, 84 GFLOP/s
    assert [r.percent_of_matmul for r in rows] == [pytest.approx(100 * 40 / 84), 100 * 20 / 84]


@pytest.mark.parametrize(
    ("conditions", "rows", "reason"),
    [
        (_quiet(other_cores=1.0), [], "other processes kept 1.00 of"),
        (_quiet(ceiling_end={"float64": 3.7}), [], "moved from 80.0 to 3.7 GFLOP/s"),
        (_quiet(ceiling_start={"float64": 3.7}), [], "moved from 3.7 to 84.0 GFLOP/s"),
        (_quiet(), [_row("numba", 1e-3, 90.0)], "ran faster than the matmul ceiling"),
    ],
    ids=["busy-cores", "ceiling-fell", "ceiling-rose", "impossible-percentage"],
)
def test_contention_is_named_and_the_share_of_the_ceiling_withheld(conditions, rows, reason):
    rows = benchmarks.compare_rows(
        [*rows, _row("jax", 1e-3, 40.0), _row("numpy", 4e-3, 10.0)], conditions
    )
    reasons = conditions.contention(rows)
    assert any(reason in r for r in reasons), reasons
    assert all(r.percent_of_matmul is None for r in rows)
    assert rows[-1].ratio_to_fastest >= 4  # ratios are still given, under the warning
    table = benchmarks.table(rows, conditions)
    assert "CONTENDED: " in table
    assert reason in table
    summary = benchmarks.to_dict(rows, conditions)["conditions"]
    assert summary["contended"] is True
    assert summary["contention"] == reasons


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_the_load_meter_sees_another_process_busy():
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(0.3)  # the interpreter started
        meter = cpu_load.LoadMeter.start()
        time.sleep(1.5)
        others = meter.other_cores()
    finally:
        busy.kill()
        busy.wait()
    assert others is not None
    assert others > 0.6  # the busy loop is one core


class _SpinningProcess:
    """The clock `cpu_load.settle` reads, for a process whose threads keep one core busy until
    ``spins_until`` seconds (as OpenBLAS's spin after a product) and then rest. Real threads
    would not do: on a loaded machine a spinning thread is at times kept off the cores for a
    whole window, which `settle` rightly counts as idle."""

    def __init__(self, spins_until: float) -> None:
        self.wall, self.cpu, self.spins_until = 0.0, 0.0, spins_until

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def sleep(self, seconds: float) -> None:
        self.cpu += max(0.0, min(self.wall + seconds, self.spins_until) - self.wall)
        self.wall += seconds


def test_settle_waits_until_this_processs_threads_stop_spinning(monkeypatch):
    """Threads spinning for 0.3 s: not settled within 0.05 s; settled within 5 s, in the first
    window after the spinning ends."""
    process = _SpinningProcess(spins_until=0.3)
    monkeypatch.setattr(cpu_load, "time", process)
    assert not cpu_load.settle(limit=0.05)
    assert cpu_load.settle(limit=5)
    assert 0.3 <= process.wall <= 0.3 + 2 * cpu_load.SETTLE_WINDOW


def test_settle_does_not_wait_on_a_busy_process_beside_it():
    """Another process's busy loop is not this process's threads: settled at once."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(0.3)  # the interpreter started
        assert cpu_load.settle(limit=0.5)
    finally:
        busy.kill()
        busy.wait()


def test_bench_beside_a_busy_loop_says_it_is_contended():
    """``gradcheck bench`` with a busy process on one of the cores: the JSON says contended,
    and names the reason."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gradcheck", "bench", "--problems", "digits", "--dtypes",
             "float64", "--backends", "numpy", "--rounds", "3", "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        busy.kill()
        busy.wait()
    conditions = json.loads(result.stdout)["conditions"]
    assert conditions["contended"] is True
    assert conditions["contention"]
    assert all(row["percent_of_matmul"] is None for row in json.loads(result.stdout)["rows"])


def test_single_thread_pins_blas_and_the_frameworks():
    code = (
        "import json, os, sys\n"
        "from gradcheck.cli import main\n"
        "main(['bench', '--problems', 'notebook', '--dtypes', 'float32', '--backends', 'numba',"
        " '--rounds', '1', '--json', '--single-thread'])\n"
        "print(json.dumps({k: os.environ[k] for k in ('NUMBA_NUM_THREADS', "
        "'TF_NUM_INTRAOP_THREADS')}), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["conditions"]["blas_threads"] == 1
    pinned = json.loads(result.stderr.strip().splitlines()[-1])
    assert pinned == {"NUMBA_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


@pytest.mark.skipif("numba" not in gradcheck.available_backends(), reason="numba is not installed")
def test_a_single_threaded_run_holds_the_blas_numba_calls_to_one_thread():
    """SciPy's OpenBLAS, which Numba's products call, loads with the first compiled kernel, in
    the middle of the run: the limit must reach it all the same. A fresh process, where nothing
    has loaded it yet; the BLAS threads are read after each of the backend's calls."""
    code = (
        "import json\n"
        "from threadpoolctl import threadpool_info\n"
        "from gradcheck import benchmarks, get_backend\n"
        "numba, seen = get_backend('numba'), set()\n"
        "class Watched:\n"
        "    name = 'watched'\n"
        "    def __getattr__(self, attr):\n"
        "        def call(*args, **kwargs):\n"
        "            out = getattr(numba, attr)(*args, **kwargs)\n"
        "            seen.update(i['num_threads'] for i in threadpool_info()"
        " if i['user_api'] == 'blas')\n"
        "            return out\n"
        "        return call\n"
        "benchmarks.run([Watched()], problems=['digits'], dtypes=['float64'], rounds=1,"
        " single_thread=True)\n"
        "print(json.dumps(sorted(seen)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [1]


def test_pinning_after_a_framework_loaded_is_refused():
    code = "import numba\nfrom gradcheck import benchmarks\nbenchmarks.pin_framework_threads()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "before numba is imported" in result.stderr


# --- the floor ----------------------------------------------------------------------------------

needs_numba = pytest.mark.skipif(
    "numba" not in gradcheck.available_backends(), reason="numba is not installed"
)


def _notebook_literally(W1, W2, X, y, steps, lr):
    """The notebook's training written out with NumPy, the oracle for the floor."""
    losses = []
    for _ in range(steps):
        a1 = 1 / (1 + np.exp(-(X @ W1)))
        a2 = 1 / (1 + np.exp(-(a1 @ W2)))
        losses.append(0.5 * np.sum((a2 - y) ** 2))
        d2 = (a2 - y) * a2 * (1 - a2)
        d1 = (d2 @ W2.T) * a1 * (1 - a1)
        W1, W2 = W1 - lr * X.T @ d1, W2 - lr * a1.T @ d2
    return W1, W2, np.array(losses)


@needs_numba
@pytest.mark.parametrize("seed", range(5))
def test_the_floor_trains_the_notebook(seed):
    from gradcheck import floor

    case = benchmarks.case("notebook", "float64")
    params = case.net.init(seed=seed, scheme="uniform")
    W1, W2, losses = floor.train(params, case.X, case.y, 2000, 1.0)
    expected = _notebook_literally(params[0]["W"], params[1]["W"], case.X, case.y, 2000, 1.0)
    for got, want in zip((W1, W2, losses), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)
    assert params[0]["W"] is not W1  # params are not trained in place


@needs_numba
def test_the_floor_refuses_another_network():
    from gradcheck import floor

    case = benchmarks.case("notebook", "float64")
    with pytest.raises(ValueError, match=r"X must be \(4, 3\), got \(5, 3\)"):
        floor.train(case.params, np.ones((5, 3)), case.y, 10, 1.0)
    with pytest.raises(ValueError, match="the floor runs notebook in float64 only; got digits"):
        benchmarks.case("digits", "float64").train(benchmarks.FLOOR)
