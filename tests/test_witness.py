"""An independent witness: a bug planted in the hand-written NumPy kernel is blamed on it alone.

The finite differences evaluate the network with their own forward pass (gradcheck.witness), so
a bug in the kernel's activation, loss value, output delta or hidden delta cannot move them: the
verdict names numpy against jax, numba and the finite differences, and the finite-differences
row passes.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck
from gradcheck import Network
from gradcheck.kernels import numpy_backprop as nb

pytestmark = pytest.mark.skipif(
    not {"jax", "numba"} <= set(gradcheck.available_backends()),
    reason="needs the jax and numba backends as the other witnesses",
)


def _sigmoid_of_scaled_z(z):
    return nb.sigmoid(1.01 * z)  # BUG: σ(1.01 z)


def _doubled_loss(loss):
    def doubled(cache, y):
        return 2 * loss(cache, y)  # BUG: the loss value doubled, its gradient untouched

    return doubled


def _output_delta_a_minus_y(net, cache, y):
    # BUG: a − y whatever the loss: ½SSE's output f′ forgotten, softmax-CE's 1/N forgotten
    return cache.activations[-1] - y


def _hidden_delta_without_prime(delta, W, activation, z_prev, a_prev):
    return delta @ W.T  # BUG: f′ of the layer below forgotten


BUGS = {
    "activation": lambda mp, net: mp.setitem(
        nb.ACTIVATIONS, "sigmoid", nb.ACTIVATIONS["sigmoid"]._replace(f=_sigmoid_of_scaled_z)
    ),
    "loss value": lambda mp, net: mp.setitem(
        nb.LOSSES,
        net.loss,
        nb.LOSSES[net.loss]._replace(value=_doubled_loss(nb.LOSSES[net.loss].value)),
    ),
    "output delta": lambda mp, net: mp.setattr(nb, "output_delta", _output_delta_a_minus_y),
    "hidden delta": lambda mp, net: mp.setattr(nb, "hidden_delta", _hidden_delta_without_prime),
}


def _notebook(dtype, seed):
    """The notebook's 3-4-1 network: 16 weights, every one by finite differences."""
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False, dtype=dtype)
    X, y = gradcheck.datasets.seed_xor()
    return net, X, y, net.init(seed=seed, scheme="uniform"), 50, 1.0


def _digits(dtype, seed):
    """A realistic size: 300 digits through 64-32-10, 2410 parameters, so the finite
    differences go along random directions."""
    net = Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce", dtype=dtype)
    X, y = gradcheck.datasets.digits()
    rows = np.random.default_rng(seed).choice(len(X), size=300, replace=False)
    return net, X[rows], y[rows], net.init(seed=seed), 20, 0.5


PROBLEMS = {"notebook": _notebook, "digits": _digits}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_bug_in_the_numpy_kernel_is_blamed_on_numpy_alone(monkeypatch, bug, problem, dtype, seed):
    net, X, y, params, steps, lr = PROBLEMS[problem](dtype, seed)
    BUGS[bug](monkeypatch, net)
    report = gradcheck.verify(
        net, X, y, params=params, backends=["numpy", "numba", "jax"], steps=steps, lr=lr
    )
    assert {c.backend for c in report.failures} == {"numpy"}
    [verdict] = report.verdicts
    # In float32 the backends vote by their float64 runs (the dtype ladder); JAX's is the
    # reference's.
    if dtype == "float64":
        subject, others = "numpy", "jax, numba"
    else:
        subject, others = "numpy in float64", "jax in float64, numba in float64"
    assert verdict.startswith(f"{subject} disagrees with {others} and finite differences: ")
    oracle = [c for c in report.checks if c.backend == "finite differences"]
    assert {c.quantity for c in oracle} == {"predictions", "loss", "gradient"}
    assert all(c.ok for c in oracle)
    if problem == "digits":
        assert [c.param for c in oracle if c.quantity == "gradient"] == ["directional"]


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_the_planted_bugs_are_real(monkeypatch, problem):
    """Each bug changes what the kernel computes (so the test above tests something)."""
    net, X, y, params, _, _ = PROBLEMS[problem]("float64", 0)
    correct = nb.loss_and_grads(net, params, X, y)
    for bug, plant in BUGS.items():
        with monkeypatch.context() as mp:
            plant(mp, net)
            loss, grads = nb.loss_and_grads(net, params, X, y)
        same = loss == correct[0] and all(
            np.array_equal(g["W"], c["W"]) for g, c in zip(grads, correct[1], strict=True)
        )
        assert not same, bug
