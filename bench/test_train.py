"""Training-loop benchmarks: every available backend on every problem of the catalogue, and
the floor — the notebook's loop written by hand for its one network — beside them.

    pytest bench/ --benchmark-only

Each round is one ``Case.train`` call — the same call ``gradcheck bench`` times — after
``benchmarks.WARMUP_ROUNDS`` untimed ones, so no JIT compilation is timed.
"""

from __future__ import annotations

import pytest

import gradcheck
from gradcheck import benchmarks

BACKENDS = gradcheck.available_backends()
ROUNDS = {
    "notebook": 15, "digits": 10, "digits_adam": 10, "digits_cnn": 7, "digits_norm": 10,
    "digits_embed": 10, "digits_rnn": 10, "digits_lstm": 10, "parity_seq": 10,
}  # fmt: skip
FLOOR = [
    pytest.param(problem, benchmarks.FLOOR, dtype, id=f"{problem}-floor-{dtype}")
    for problem in benchmarks.PROBLEMS
    for dtype in benchmarks.DTYPES
    if benchmarks.has_floor(problem, dtype)
]


def _in_turn(params) -> bool:
    """The untimed slice: each backend on each problem once, the dtype in turn; the floor."""
    if params["name"] == benchmarks.FLOOR:
        return True
    turn = benchmarks.PROBLEMS.index(params["problem"]) + BACKENDS.index(params["name"])
    return params["dtype"] == benchmarks.DTYPES[turn % 2]


@pytest.mark.untimed(keep=_in_turn)
@pytest.mark.parametrize(
    ("problem", "name", "dtype"),
    [
        *(
            (problem, name, dtype)
            for problem in benchmarks.PROBLEMS
            for name in BACKENDS
            for dtype in benchmarks.DTYPES
        ),
        *FLOOR,
    ],
)
def test_training(machine, record, problem, name, dtype):
    case = benchmarks.case(problem, dtype)
    machine.group = case.group
    run = machine.pedantic(
        case.train, args=(name,), warmup_rounds=benchmarks.WARMUP_ROUNDS, rounds=ROUNDS[problem]
    )
    assert run.losses[-1] < run.losses[0]
    record(machine, case, name)
