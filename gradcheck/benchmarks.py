"""The one benchmark harness, for ``gradcheck bench`` and for bench/ under pytest-benchmark.

It defines what is timed — a `Case` (a problem of `gradcheck.problems` in one dtype)
and the call one round makes, the matmul that serves as the ceiling, the floor — and how the
figures are read: the ratios to the fastest, the share of the ceiling, one table layout.
``gradcheck bench`` times rounds with its own interleaved loop; bench/ hands the same call to
pytest-benchmark. Every timing is warm: the first call of each backend (compilation, tracing or
cache loading) is timed on its own and reported as such. Then, problem by problem and dtype by
dtype, the backends' rounds are interleaved — one round of each in turn, `ROUNDS` times — so a
moment of contention falls on all of them alike, and each backend's best and median round are
kept; each round starts once the threads of the round before have stopped spinning. The
ratios are ratios of the bests: the protocol the kernels' targets are set in. BLAS threads are
pinned to one per core for the whole run, or to one.

A figure is only as good as the machine was quiet. `Conditions` records what the machine was
doing — the matmul ceiling at the start and at the end of the run and the cores other processes
kept busy — and when that shows contention the table and the JSON say so and the share of the
ceiling is withheld, rather than printing percentages the hardware cannot reach.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from gradcheck import cpu_load, terminal
from gradcheck.backends import Backend, Training, Trajectory, available_backends, resolve
from gradcheck.layers import Weighted
from gradcheck.network import Network, Params
from gradcheck.ops import lookup
from gradcheck.optimizers import SGD, batch_schedule, padded
from gradcheck.problems import PROBLEMS as CATALOGUE
from gradcheck.problems import Problem

PROBLEMS = tuple(CATALOGUE)
DTYPES = ("float64", "float32")
#: Untimed calls before the timed rounds: the first compiles, traces or loads a cache.
WARMUP_ROUNDS = 2
#: Timed rounds of each backend, interleaved with the other backends' (`run`).
ROUNDS = 20
#: The row of `gradcheck.floor`, timed on its problem in its dtype beside the backends.
FLOOR = "floor"
FLOOR_DTYPE = "float64"
#: Contention: other processes busy on more than this many cores on average, or the matmul
#: ceiling at the end of the run off from the start by more than this factor either way.
OTHER_CORES_LIMIT = 0.25
CEILING_DRIFT_LIMIT = 1.3


@dataclass(frozen=True)
class Case:
    """A problem from the catalogue in one dtype, ready to time: one round is ``steps`` training
    steps from ``params``."""

    problem: Problem
    dtype: str
    net: Network
    X: np.ndarray
    y: np.ndarray
    params: Params

    @property
    def name(self) -> str:
        return self.problem.name

    @property
    def steps(self) -> int:
        return self.problem.bench_steps

    @property
    def flops_per_step(self) -> float:
        """2 × the multiply-adds of one step's products: every weight layer's forward product,
        weight gradient and (above the first) input delta, each |W| multiply-adds per output
        position (one for Dense, Ho·Wo for Conv2D), for the samples of an average step."""
        sizes = padded(
            batch_schedule(len(self.X), self.problem.batch_size, self.steps, 0), len(self.X)
        )[1]
        N = float(np.mean(sizes))
        net = self.net
        weighted = [
            (layer.param_shapes(shape_in)["W"], shape_out)
            for layer, shape_in, shape_out in zip(
                net.stack, net.input_shapes, net.output_shapes, strict=True
            )
            if isinstance(layer, Weighted)
        ]
        products = [
            math.prod(W) * math.prod(shape[:-1])  # positions Ho·Wo, or 1
            for W, shape in weighted
        ]
        return 2.0 * N * (2 * sum(products) + sum(products[1:]))

    @property
    def group(self) -> str:
        """The benchmark group its rounds are timed in, whichever backend runs them, so that
        pytest-benchmark's table sets them side by side."""
        return f"{self.problem.describe()}, {self.steps} steps a round, {self.dtype}"

    def train(self, backend: str | Backend) -> Trajectory:
        """One timed round: the training run through a backend (a built-in one's name, or an
        object with the backend interface), or `FLOOR`."""
        training = self.problem.training(self.steps)
        if backend == FLOOR:
            return floor_run(self, training.optimizer.lr)
        return training.run(resolve(backend), self.net, self.params, self.X, self.y)


#: What ``gradcheck_bench`` needs for a network and data of one's own.
OWN_PROBLEM = ("net", "X", "y", "params", "steps", "lr")


def timed_training(
    backend: str | Backend, problem: str, dtype: str, own: dict[str, Any]
) -> tuple[Callable[[], Trajectory], str]:
    """One round of a training run to time, and its benchmark group: ``backend`` on the
    catalogue's ``problem`` in ``dtype`` (`Case.group`), or, when ``own`` gives every one of
    `OWN_PROBLEM`, on that network and data by plain gradient descent. A clear error, before
    any work, for anything else."""
    resolve(backend)  # an unknown name or a missing framework, said before any timing
    if not own:
        c = case(problem, dtype)
        return partial(c.train, backend), c.group
    missing = [key for key in OWN_PROBLEM if key not in own]
    unknown = sorted(set(own) - set(OWN_PROBLEM))
    if missing or unknown:
        raise TypeError(
            f"a network of your own needs {', '.join(OWN_PROBLEM)}; "
            + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}")
        )
    net, X, y, steps = own["net"], own["X"], own["y"], own["steps"]
    training = Training(steps, SGD(own["lr"]), None, 0)
    group = f"{net.describe()}, {len(X)} samples, {steps} steps a round"
    return partial(training.run, resolve(backend), net, own["params"], X, y), group


def has_floor(problem: str, dtype: str) -> bool:
    """Whether the floor runs ``problem`` in ``dtype``: its one case, where Numba is installed."""
    if "numba" not in available_backends():
        return False
    from gradcheck.floor import PROBLEM

    return (problem, dtype) == (PROBLEM, FLOOR_DTYPE)


def floor_run(c: Case, lr: float) -> Trajectory:
    """`gradcheck.floor`'s hand-written loop on ``c``, which must be its problem in its dtype."""
    from gradcheck import floor

    if (c.name, c.dtype) != (floor.PROBLEM, FLOOR_DTYPE):
        raise ValueError(
            f"the floor runs {floor.PROBLEM} in {FLOOR_DTYPE} only; got {c.name} in {c.dtype}"
        )
    W1, W2, losses = floor.train(c.params, c.X, c.y, c.steps, lr)
    return Trajectory([{"W": W1}, {"W": W2}], losses)


def case(name: str, dtype: str) -> Case:
    """The catalogue's problem ``name`` in ``dtype``."""
    problem = lookup(CATALOGUE, name, "problem")
    return Case(problem, dtype, problem.network(dtype), *problem.data(dtype), problem.params(dtype))


def matmul_operands(dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (1797, 64), W (64, 128) and an output buffer: the digits step's first product, the
    ceiling a matmul-bound step is measured against."""
    digits = case("digits", dtype)
    X, W = digits.X, digits.params[0]["W"]
    return X, W, np.empty((X.shape[0], W.shape[1]), dtype)


def matmul_flops(X: np.ndarray, W: np.ndarray) -> float:
    return 2.0 * X.shape[0] * X.shape[1] * W.shape[1]


def matmul_gflops(dtype: str, rounds: int = 50) -> float:
    """The throughput of the ceiling product in ``dtype``."""
    X, W, out = matmul_operands(dtype)
    seconds = _median_seconds(lambda: np.matmul(X, W, out=out), rounds)
    return matmul_flops(X, W) / seconds / 1e9


def _median_seconds(call: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Row:
    """One backend (or the floor) on one problem in one dtype."""

    problem: str
    dtype: str
    backend: str
    steps: int
    #: The median round's time per step.
    seconds_per_step: float
    #: The best round's time per step: the figure the ratios are taken on.
    best_seconds_per_step: float
    first_call_seconds: float | None = None
    ratio_to_fastest: float = 1.0
    gflops: float | None = None
    percent_of_matmul: float | None = None


def name_of(backend: str | Backend) -> str:
    """A backend's name: a built-in one's, `FLOOR`, or a user's object's ``name``."""
    return backend if isinstance(backend, str) else backend.name


def timed_row(c: Case, backend: str | Backend, rounds: Sequence[float], first: float | None) -> Row:
    """A row for the timed ``rounds`` (seconds each) of ``c``'s training; GFLOP/s, at the best
    round, filled in for digits."""
    median, best = statistics.median(rounds) / c.steps, min(rounds) / c.steps
    gflops = c.flops_per_step / best / 1e9 if c.problem.dataset == "digits" else None
    return Row(c.name, c.dtype, name_of(backend), c.steps, median, best, first, gflops=gflops)


@dataclass
class Conditions:
    """What the machine was doing during a run: BLAS threads, the matmul ceiling (GFLOP/s per
    dtype) measured at the start and at the end, and the cores other processes kept busy on
    average (None where the platform does not tell)."""

    blas_threads: int
    ceiling_start: dict[str, float]
    ceiling_end: dict[str, float]
    other_cores: float | None

    @property
    def ceiling(self) -> dict[str, float]:
        """Per dtype, the higher of the two readings: what the matmul reaches undisturbed."""
        return {d: max(g, self.ceiling_end.get(d, g)) for d, g in self.ceiling_start.items()}

    def contention(self, rows: Sequence[Row] = ()) -> list[str]:
        """Why this run's figures cannot be compared with a quiet machine's, if they cannot."""
        reasons = []
        if self.other_cores is not None and self.other_cores > OTHER_CORES_LIMIT:
            reasons.append(
                f"other processes kept {self.other_cores:.2f} of {os.cpu_count()} cores busy"
            )
        for dtype, start in self.ceiling_start.items():
            end = self.ceiling_end.get(dtype, start)
            if max(start, end) > CEILING_DRIFT_LIMIT * min(start, end):
                reasons.append(
                    f"the {dtype} matmul ceiling moved from {start:.1f} to {end:.1f} GFLOP/s "
                    "between the start and the end of the run"
                )
        for row in rows:
            if row.gflops is not None and row.gflops > self.ceiling.get(row.dtype, math.inf):
                reasons.append(
                    f"{row.backend} on {row.problem} {row.dtype} ran faster than the matmul "
                    f"ceiling ({row.gflops:.1f} > {self.ceiling[row.dtype]:.1f} GFLOP/s)"
                )
        return reasons


def compare_rows(rows: Sequence[Row], conditions: Conditions) -> list[Row]:
    """Each row's ratio to the fastest of its problem and dtype (of the best rounds), and — on
    an uncontended run — its share of the matmul ceiling measured in the same run."""
    contended = bool(conditions.contention(rows))
    for row in rows:
        group = [r for r in rows if (r.problem, r.dtype) == (row.problem, row.dtype)]
        fastest = min(r.best_seconds_per_step for r in group)
        row.ratio_to_fastest = row.best_seconds_per_step / fastest
        ceiling = conditions.ceiling.get(row.dtype)
        if row.gflops is not None and ceiling is not None and not contended:
            row.percent_of_matmul = 100 * row.gflops / ceiling
    return list(rows)


def needs_ceiling(problems: Sequence[str]) -> bool:
    """The matmul ceiling is measured when a digits problem is timed: its operands are the
    digits data, and only digits rows have GFLOP/s."""
    return any(lookup(CATALOGUE, p, "problem").dataset == "digits" for p in problems)


def ceilings(dtypes: Sequence[str]) -> dict[str, float]:
    return {d: matmul_gflops(d) for d in dtypes}


def blas_threads(single_thread: bool) -> int:
    """BLAS threads for a run: one per core, or one."""
    return 1 if single_thread else os.cpu_count() or 1


def blas_limits(threads: int) -> Any:
    """threadpoolctl's limit on the BLAS libraries, scoped (``with``), SciPy's among them: the
    one Numba's ``np.dot`` calls loads only with the first compiled kernel, after the limit, which
    then never reached it (a single-threaded run's Numba products ran on two threads)."""
    import scipy.linalg.cython_blas  # noqa: F401 - loaded, so that the limit reaches it
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def pin_framework_threads() -> None:
    """Make JAX, TensorFlow and Numba run on one thread each, as a single-threaded run needs.
    They read these settings when they load, so this is called before any backend is used."""
    loaded = [name for name in ("jax", "tensorflow", "numba") if name in sys.modules]
    if loaded:
        raise RuntimeError(
            f"single-threaded runs must pin threads before {', '.join(loaded)} is imported"
        )
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    )
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["NUMBA_NUM_THREADS"] = "1"


def run(
    backends: Sequence[str | Backend],
    problems: Sequence[str] = PROBLEMS,
    dtypes: Sequence[str] = DTYPES,
    rounds: int = ROUNDS,
    progress: Callable[[int, int, str], None] | None = None,
    single_thread: bool = False,
) -> tuple[list[Row], Conditions]:
    """Time every backend's training run, and the floor on its problem, by `time_rows`; returns
    the rows and the machine's conditions. ``single_thread`` pins BLAS to one thread; the
    frameworks are pinned too if `pin_framework_threads` ran before they loaded."""
    rows: list[Row] = []
    groups = [(p, d) for p in problems for d in dtypes]
    threads = blas_threads(single_thread)
    with blas_limits(threads):
        load = cpu_load.LoadMeter.start()
        start = ceilings(dtypes) if needs_ceiling(problems) else {}
        for done, (name, dtype) in enumerate(groups):
            if progress:
                progress(done, len(groups), f"{name} {dtype}")
            timed = [*backends, FLOOR] if has_floor(name, dtype) else list(backends)
            rows += time_rows(case(name, dtype), timed, rounds)
        end = ceilings(dtypes) if start else {}
        if progress:
            progress(len(groups), len(groups), "done")
    conditions = Conditions(threads, start, end, load.other_cores())
    return compare_rows(rows, conditions), conditions


def time_rows(c: Case, backends: Sequence[str | Backend], rounds: int) -> list[Row]:
    """Each backend's first call timed alone and `WARMUP_ROUNDS` in all untimed, then
    ``rounds`` timed rounds of every backend, interleaved: one of each in turn, each once the
    threads of the one before have gone idle (`cpu_load.settle`)."""
    firsts = []
    for backend in backends:
        start = time.perf_counter()
        c.train(backend)
        firsts.append(time.perf_counter() - start)
        for _ in range(WARMUP_ROUNDS - 1):
            c.train(backend)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(rounds):
        for backend, kept in zip(backends, times, strict=True):
            cpu_load.settle()  # the threads of the round before would take its cores
            start = time.perf_counter()
            c.train(backend)
            kept.append(time.perf_counter() - start)
    return [
        timed_row(c, backend, kept, first)
        for backend, kept, first in zip(backends, times, firsts, strict=True)
    ]


def table(rows: Sequence[Row], conditions: Conditions) -> str:
    """`summary` as plain text."""
    return terminal.plain(*summary(rows, conditions))


#: The columns of the benchmark table, in the terminal and on the benchmarks page.
HEADER = (
    "problem",
    "dtype",
    "backend",
    "best step",
    "median step",
    "vs fastest",
    "GFLOP/s",
    "% matmul",
    "first call",
)


def cells(r: Row) -> tuple[str, ...]:
    """One row of the table, as text."""
    return (
        r.problem,
        r.dtype,
        f"{r.backend} (by hand, not a backend)" if r.backend == FLOOR else r.backend,
        f"{r.best_seconds_per_step * 1e6:.2f} us",
        f"{r.seconds_per_step * 1e6:.2f} us",
        f"{r.ratio_to_fastest:.2f}x",
        "" if r.gflops is None else f"{r.gflops:.1f}",
        "" if r.percent_of_matmul is None else f"{r.percent_of_matmul:.0f}%",
        "" if r.first_call_seconds is None else f"{r.first_call_seconds:.3g} s",
    )


def summary(rows: Sequence[Row], conditions: Conditions) -> list[Any]:
    """What `gradcheck bench` shows: a row per timing, fastest first within each problem and
    dtype, then the conditions of the run and, when contended, why its figures are not to be
    trusted."""
    header = HEADER
    order = sorted(rows, key=lambda r: (r.problem, r.dtype, r.best_seconds_per_step))
    lines = [cells(r) for r in order]
    notes = []
    if conditions.ceiling_start:  # its operands are the digits data, already loaded to measure it
        X, W, _ = matmul_operands("float64")
        shape = f"{X.shape[0]}x{X.shape[1]} @ {W.shape[0]}x{W.shape[1]}"
        notes += [
            f"plain matmul ({shape}), {dtype}: {start:.1f} GFLOP/s at the start, "
            f"{conditions.ceiling_end.get(dtype, math.nan):.1f} at the end"
            for dtype, start in conditions.ceiling_start.items()
        ]
    if any(r.backend == FLOOR for r in rows):
        notes.append(
            "floor: the notebook's loop written by hand for its one network (gradcheck.floor), "
            "the time the general backends are measured against"
        )
    others = "unknown" if conditions.other_cores is None else f"{conditions.other_cores:.2f}"
    notes.append(
        f"BLAS threads pinned to {conditions.blas_threads}; warm rounds, the backends' "
        "interleaved; ratios of the best rounds; "
        f"cores busy with other processes: {others}."
    )
    reasons = conditions.contention(rows)
    warning = []
    if reasons:
        warning.append(
            terminal.styled(
                "CONTENDED: " + "; ".join(reasons) + ". These times and ratios are not "
                "comparable with a quiet machine's, and the share of the matmul ceiling is "
                "withheld; run again on a quiet machine, or with --single-thread for ratios "
                "that hold up better.",
                "bold red",
            )
        )
    return [terminal.table(header, lines), *notes, *warning]


def to_dict(rows: Sequence[Row], conditions: Conditions) -> dict[str, Any]:
    reasons = conditions.contention(rows)
    return {
        "rows": [asdict(r) for r in rows],
        "matmul_gflops": conditions.ceiling,
        "conditions": {**asdict(conditions), "contended": bool(reasons), "contention": reasons},
    }


def draw_times(axes: Any, rows: Sequence[Row]) -> None:
    """Best time per step (µs, log scale) by problem and dtype, a bar per backend (the floor
    too, where it ran), on matplotlib ``axes``."""
    groups = sorted({(r.problem, r.dtype) for r in rows})
    names = list(dict.fromkeys(r.backend for r in rows))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        times = {
            (r.problem, r.dtype): r.best_seconds_per_step * 1e6 for r in rows if r.backend == name
        }
        axes.bar(
            np.arange(len(groups)) + i * width,
            [times.get(group, np.nan) for group in groups],
            width,
            label=f"{name} (by hand)" if name == FLOOR else name,
        )
    axes.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2)
    axes.set_xticklabels([f"{p}\n{d}" for p, d in groups], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("µs per training step (best round)")
    axes.set_title("Training time per step")
    axes.legend(fontsize=8)


def times_svg(rows: Sequence[Row]) -> str:
    """`draw_times` as an SVG element, for the benchmarks page."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(10, 4))
    draw_times(axes, rows)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # without the XML declaration and doctype


def plot(rows: Sequence[Row], backends: Sequence[str | Backend], path: str) -> None:
    """Times per step (log scale) by problem and dtype, and the notebook's loss curves of every
    backend overlaid — they must lie on top of one another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (times, curves) = plt.subplots(1, 2, figsize=(12, 4.5))
    draw_times(times, rows)

    p = case("notebook", "float64")
    styles = ["-", "--", ":", "-."]
    for i, backend in enumerate(backends):
        losses = p.train(backend).losses
        curves.plot(
            losses, styles[i % len(styles)], linewidth=2.5 - 0.4 * i, label=name_of(backend)
        )
    curves.set_yscale("log")
    curves.set_xlabel("step")
    curves.set_ylabel("loss ½Σ(a − y)²")
    curves.set_title("Notebook 3-4-1, float64: every backend's loss curve")
    curves.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
