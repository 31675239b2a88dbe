"""The benchmark problems and the ``gradcheck bench`` runner: table, JSON and chart.

The same problems are timed under pytest-benchmark in bench/; this module serves the command
line, where a user wants one table of ratios measured in one run. Every timing is warm: the
first call of each backend (compilation, tracing or cache loading) is timed on its own and
reported as such, then the median of several rounds is taken. BLAS threads are pinned to one per
core for the whole run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from gradcheck import datasets
from gradcheck.backends import get_backend
from gradcheck.network import Network, Params

PROBLEMS = ("notebook", "digits")
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Problem:
    """A network, its data and starting params, and the training run that is timed."""

    name: str
    net: Network
    X: np.ndarray
    y: np.ndarray
    params: Params
    steps: int
    lr: float

    @property
    def flops_per_step(self) -> float:
        """2 × the multiply-adds of one step's matrix products: every layer's forward product,
        every weight gradient, and every hidden delta."""
        N = self.X.shape[0]
        products = [a * b for a, b in zip(self.net.layers[:-1], self.net.layers[1:], strict=True)]
        return 2.0 * N * (2 * sum(products) + sum(products[1:]))


def notebook(dtype: str) -> Problem:
    """The notebook's 3-4-1 sigmoid network, ½SSE, U[0,1) weights, 2000 steps of lr 1."""
    X, y = datasets.seed_xor()
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False, dtype=dtype)
    return Problem("notebook", net, X, y, net.init(seed=0, scheme="uniform"), 2000, 1.0)


def digits(dtype: str, steps: int = 10) -> Problem:
    """1797 digits, 64-128-10, sigmoid then softmax with softmax_ce, full batch."""
    X, y = datasets.digits()
    net = Network([64, 128, 10], activation=["sigmoid", "softmax"], loss="softmax_ce", dtype=dtype)
    return Problem("digits", net, X.astype(dtype), y.astype(dtype), net.init(seed=0), steps, 0.5)


def problem(name: str, dtype: str) -> Problem:
    return notebook(dtype) if name == "notebook" else digits(dtype)


def matmul_gflops(dtype: str, rounds: int = 50) -> float:
    """The throughput of X (1797, 64) @ W (64, 128) in ``dtype``: the ceiling for digits."""
    rng = np.random.default_rng(0)
    X, W = rng.random((1797, 64)).astype(dtype), rng.random((64, 128)).astype(dtype)
    out = np.empty((1797, 128), dtype)
    seconds = _median_seconds(lambda: np.matmul(X, W, out=out), rounds)
    return 2.0 * 1797 * 64 * 128 / seconds / 1e9


def _median_seconds(call: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Row:
    """One backend on one problem in one dtype."""

    problem: str
    dtype: str
    backend: str
    steps: int
    seconds_per_step: float
    first_call_seconds: float
    ratio_to_fastest: float = 1.0
    gflops: float | None = None
    percent_of_matmul: float | None = None


def run(
    backends: Sequence[str],
    problems: Sequence[str] = PROBLEMS,
    dtypes: Sequence[str] = DTYPES,
    rounds: int = 7,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[list[Row], dict[str, float]]:
    """Time every backend's training run; returns the rows and the matmul GFLOP/s per dtype."""
    from threadpoolctl import threadpool_limits

    rows: list[Row] = []
    jobs = [(p, d, b) for p in problems for d in dtypes for b in backends]
    with threadpool_limits(limits=os.cpu_count() or 1, user_api="blas"):
        ceiling = {d: matmul_gflops(d) for d in dtypes} if "digits" in problems else {}
        for done, (name, dtype, backend_name) in enumerate(jobs):
            if progress:
                progress(done, len(jobs), f"{backend_name} {name} {dtype}")
            p = problem(name, dtype)
            backend = get_backend(backend_name)
            args = (p.net, p.params, p.X, p.y, p.steps, p.lr)
            start = time.perf_counter()
            backend.train(*args)
            first = time.perf_counter() - start
            per_step = _median_seconds(partial(backend.train, *args), rounds) / p.steps
            row = Row(name, dtype, backend_name, p.steps, per_step, first)
            if name == "digits":
                row.gflops = p.flops_per_step / per_step / 1e9
                row.percent_of_matmul = 100 * row.gflops / ceiling[dtype]
            rows.append(row)
        if progress:
            progress(len(jobs), len(jobs), "done")
    for row in rows:
        group = [r for r in rows if (r.problem, r.dtype) == (row.problem, row.dtype)]
        row.ratio_to_fastest = row.seconds_per_step / min(r.seconds_per_step for r in group)
    return rows, ceiling


def progress_bar(done: int, total: int, label: str) -> None:
    """A one-line bar on stderr, redrawn in place."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    sys.stderr.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {label:32s}{end}")
    sys.stderr.flush()


def table(rows: Sequence[Row], ceiling: dict[str, float]) -> str:
    header = (
        "problem",
        "dtype",
        "backend",
        "per step",
        "vs fastest",
        "GFLOP/s",
        "% matmul",
        "first call",
    )
    lines = [header]
    for r in sorted(rows, key=lambda r: (r.problem, r.dtype, r.seconds_per_step)):
        lines.append(
            (
                r.problem,
                r.dtype,
                r.backend,
                f"{r.seconds_per_step * 1e6:.2f} us",
                f"{r.ratio_to_fastest:.2f}x",
                "" if r.gflops is None else f"{r.gflops:.1f}",
                "" if r.percent_of_matmul is None else f"{r.percent_of_matmul:.0f}%",
                f"{r.first_call_seconds:.3g} s",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
    matmul = "".join(
        f"\nplain matmul (1797x64 @ 64x128), {dtype}: {gflops:.1f} GFLOP/s"
        for dtype, gflops in ceiling.items()
    )
    return text + matmul + f"\nBLAS threads pinned to {os.cpu_count()}; medians of warm rounds."


def to_dict(rows: Sequence[Row], ceiling: dict[str, float]) -> dict[str, Any]:
    return {"rows": [asdict(r) for r in rows], "matmul_gflops": ceiling}


def plot(rows: Sequence[Row], backends: Sequence[str], path: str) -> None:
    """Times per step (log scale) by problem and dtype, and the notebook's loss curves of every
    backend overlaid — they must lie on top of one another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (times, curves) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups = sorted({(r.problem, r.dtype) for r in rows})
    width = 0.8 / max(len(backends), 1)
    for i, backend in enumerate(backends):
        heights = [
            next(
                (
                    r.seconds_per_step
                    for r in rows
                    if (r.problem, r.dtype, r.backend) == (p, d, backend)
                ),
                np.nan,
            )
            for p, d in groups
        ]
        times.bar(np.arange(len(groups)) + i * width, heights, width, label=backend)
    times.set_xticks(np.arange(len(groups)) + width * (len(backends) - 1) / 2)
    times.set_xticklabels([f"{p}\n{d}" for p, d in groups])
    times.set_yscale("log")
    times.set_ylabel("seconds per training step (median)")
    times.set_title("Training time per step")
    times.legend()

    p = notebook("float64")
    styles = ["-", "--", ":", "-."]
    for i, backend in enumerate(backends):
        losses = get_backend(backend).train(p.net, p.params, p.X, p.y, p.steps, p.lr).losses
        curves.plot(losses, styles[i % len(styles)], linewidth=2.5 - 0.4 * i, label=backend)
    curves.set_yscale("log")
    curves.set_xlabel("step")
    curves.set_ylabel("loss ½Σ(a − y)²")
    curves.set_title("Notebook 3-4-1, float64: every backend's loss curve")
    curves.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
