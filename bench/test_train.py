"""Training-loop benchmarks: every available backend on the notebook and the digits problems.

    pytest bench/ --benchmark-only

Each round is one ``train`` call; warm-up rounds run first, so no JIT compilation is timed.
The digits group also times a plain matrix product of the first layer's shape, the throughput
ceiling the training step is measured against.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import record

import gradcheck
from gradcheck.benchmarks import digits, notebook

BACKENDS = gradcheck.available_backends()
DTYPES = ("float64", "float32")


def _time_training(benchmark, problem, name, group, rounds):
    backend = gradcheck.get_backend(name)
    benchmark.group = group
    run = benchmark.pedantic(
        backend.train,
        args=(problem.net, problem.params, problem.X, problem.y, problem.steps, problem.lr),
        warmup_rounds=2,
        rounds=rounds,
    )
    assert run.losses[-1] < run.losses[0]
    return run


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_notebook_training(machine, name, dtype):
    problem = notebook(dtype)
    group = f"notebook 3-4-1, {problem.steps} steps, {dtype}"
    _time_training(machine, problem, name, group, rounds=15)
    record(machine, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
def test_digits_training(machine, name, dtype):
    problem = digits(dtype)
    group = f"digits 64-128-10, full batch, per step, {dtype}"
    _time_training(machine, problem, name, group, rounds=10)
    record(machine, name, per=problem.steps, flops=problem.flops_per_step)


@pytest.mark.parametrize("dtype", DTYPES)
def test_digits_matmul_ceiling(machine, dtype):
    """X (1797, 64) @ W (64, 128): the throughput a matmul-bound step could reach."""
    problem = digits(dtype)
    X, W = problem.X, problem.params[0]["W"]
    out = np.empty((X.shape[0], W.shape[1]), dtype)
    machine.group = f"digits 64-128-10, full batch, per step, {dtype}"
    machine.pedantic(np.matmul, args=(X, W), kwargs={"out": out}, warmup_rounds=3, rounds=50)
    record(machine, "matmul", flops=2.0 * X.shape[0] * X.shape[1] * W.shape[1])
