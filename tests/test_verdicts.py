"""The verdict, situation by situation: who is named wrong, against whom, and on what.

``_verdicts`` takes, per group of quantities, the blocs of implementations that agree with each
other (the reference's first) and returns one sentence per implementation found wrong.
"""

from __future__ import annotations

import pytest

from gradcheck.vote import verdicts as _verdicts

FD = "finite differences"


def finding(name: str, group: str, against: str) -> str:
    return f"<{name} {group} vs {against}>"


CASES = {
    "all agree": ({"gradient": [["jax", "numpy", "numba", FD]]}, []),
    "one backend wrong": (
        {
            "predictions": [["jax", "numpy", "keras", FD], ["numba"]],
            "training run": [["jax", "numpy", "keras"], ["numba"]],
        },
        [
            "numba disagrees with jax, numpy, keras and finite differences: "
            "<numba predictions vs jax>"
        ],
    ),
    "wrong on training only: the oracle is no witness": (
        {
            "gradient": [["jax", "numpy", "numba", FD]],
            "training run": [["jax", "numpy"], ["numba"]],
        },
        ["numba disagrees with jax and numpy: <numba training run vs jax>"],
    ),
    "the reference wrong": (
        {"gradient": [["jax"], ["numpy", "numba", FD]]},
        [
            "the reference jax disagrees with numpy, numba and finite differences: "
            "<jax gradient vs numpy>"
        ],
    ),
    "the reference outvoted on training by backends that agree": (
        {"training run": [["jax"], ["numpy", "numba", "keras"]]},
        ["the reference jax disagrees with numpy, numba and keras: <jax training run vs numpy>"],
    ),
    "two wrong, each its own way": (
        {"gradient": [["jax", "keras", FD], ["numpy"], ["numba"]]},
        [
            "numpy disagrees with jax, keras and finite differences: <numpy gradient vs jax>",
            "numba disagrees with jax, keras and finite differences: <numba gradient vs jax>",
        ],
    ),
    "two wrong the same way, two against two": (
        {"gradient": [["jax", FD], ["numpy", "numba"]]},
        [
            "no majority on the gradient: the reference jax and the finite differences against "
            "numpy and numba"
        ],
    ),
    "only the oracle disagreeing": (
        {"gradient": [["jax", "numpy", "numba"], [FD]]},
        [
            "the finite differences disagree with jax, numpy and numba: <finite differences "
            "gradient vs jax>"
        ],
    ),
    "a backend that diverged": (
        {"training run": [["jax", "numba"], ["numpy"]]},
        ["numpy disagrees with jax and numba: <numpy training run vs jax>"],
    ),
    "two implementations: no one to side with": (
        {"gradient": [["jax"], ["numpy"]]},
        ["no majority on the gradient: the reference jax against numpy"],
    ),
    "wrong everywhere: one sentence, every witness, the first finding": (
        {
            "loss": [["jax", "numba", FD], ["numpy"]],
            "gradient": [["jax", "numba", FD], ["numpy"]],
            "training run": [["jax", "numba", "keras"], ["numpy"]],
        },
        ["numpy disagrees with jax, numba, finite differences and keras: <numpy loss vs jax>"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verdicts(case):
    blocs, expected = CASES[case]
    assert _verdicts("jax", blocs, finding) == expected
