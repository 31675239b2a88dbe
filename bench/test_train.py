"""Training-loop benchmarks: every available backend on every problem of the catalogue.

    pytest bench/ --benchmark-only

Each round is one ``Case.train`` call — the same call ``gradcheck bench`` times — after
``benchmarks.WARMUP_ROUNDS`` untimed ones, so no JIT compilation is timed. The digits group also
times the plain matrix product the training step is measured against.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import record, record_ceiling

import gradcheck
from gradcheck import benchmarks

BACKENDS = gradcheck.available_backends()
ROUNDS = {"notebook": 15, "digits": 10, "digits_adam": 10, "digits_cnn": 7}


@pytest.mark.parametrize("dtype", benchmarks.DTYPES)
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("problem", benchmarks.PROBLEMS)
def test_training(machine, problem, name, dtype):
    case = benchmarks.case(problem, dtype)
    machine.group = f"{case.problem.describe()}, {case.steps} steps a round, {dtype}"
    run = machine.pedantic(
        case.train, args=(name,), warmup_rounds=benchmarks.WARMUP_ROUNDS, rounds=ROUNDS[problem]
    )
    assert run.losses[-1] < run.losses[0]
    record(machine, case, name)


@pytest.mark.parametrize("dtype", benchmarks.DTYPES)
def test_digits_matmul_ceiling(machine, dtype):
    """The digits step's first product alone: the throughput a matmul-bound step could reach."""
    X, W, out = benchmarks.matmul_operands(dtype)
    machine.group = f"{benchmarks.case('digits', dtype).problem.describe()} matmul, {dtype}"
    machine.pedantic(np.matmul, args=(X, W), kwargs={"out": out}, warmup_rounds=3, rounds=50)
    record_ceiling(machine, dtype, benchmarks.matmul_flops(X, W))
