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


def _doubled_half_sse(cache, y):
    return 2 * nb.half_sse(cache, y)  # BUG: the loss value doubled, its gradient untouched


def _output_delta_without_prime(net, cache, y):
    return cache.activations[-1] - y  # BUG: ∂C/∂a, the output's f′ forgotten


def _hidden_delta_without_prime(delta, W, activation, a_prev):
    return delta @ W.T  # BUG: f′ of the layer below forgotten


BUGS = {
    "activation": lambda mp: mp.setitem(nb.ACTIVATE, "sigmoid", _sigmoid_of_scaled_z),
    "loss value": lambda mp: mp.setitem(nb.LOSS, "half_sse", _doubled_half_sse),
    "output delta": lambda mp: mp.setattr(nb, "output_delta", _output_delta_without_prime),
    "hidden delta": lambda mp: mp.setattr(nb, "hidden_delta", _hidden_delta_without_prime),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bug", list(BUGS))
def test_a_bug_in_the_numpy_kernel_is_blamed_on_numpy_alone(monkeypatch, bug, dtype):
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False, dtype=dtype)
    X, y = gradcheck.datasets.seed_xor()
    params = net.init(seed=0, scheme="uniform")
    BUGS[bug](monkeypatch)
    report = gradcheck.verify(
        net, X, y, params=params, backends=["numpy", "numba", "jax"], steps=50
    )
    assert {c.backend for c in report.failures} == {"numpy"}
    [verdict] = report.verdicts
    # In float32 the reference's float64 run and JAX's float32 run vote apart.
    others = "jax, numba" if dtype == "float64" else "jax in float64, numba, jax"
    assert verdict.startswith(f"numpy disagrees with {others} and finite differences: ")
    oracle = [c for c in report.checks if c.backend == "finite differences"]
    assert {c.quantity for c in oracle} == {"predictions", "loss", "gradient"}
    assert all(c.ok for c in oracle)


def test_the_planted_bugs_are_real(monkeypatch):
    """Each bug changes what the kernel computes (so the test above tests something)."""
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False)
    X, y = gradcheck.datasets.seed_xor()
    params = net.init(seed=0, scheme="uniform")
    correct = nb.loss_and_grads(net, params, X, y)
    for bug, plant in BUGS.items():
        with monkeypatch.context() as mp:
            plant(mp)
            loss, grads = nb.loss_and_grads(net, params, X, y)
        same = loss == correct[0] and all(
            np.array_equal(g["W"], c["W"]) for g, c in zip(grads, correct[1], strict=True)
        )
        assert not same, bug
