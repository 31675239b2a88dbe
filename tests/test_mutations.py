"""Proof that the checker catches real bugs: every mutant flagged and blamed, no correct kernel.

The network has square layers (so a transposed weight gradient keeps its shape), a sigmoid and a
tanh hidden layer (so using the wrong layer's activation changes the result), biases, and a
softmax output with the mean cross-entropy.
"""

from __future__ import annotations

import numpy as np
import pytest
from mutants import all_mutants

import gradcheck
from gradcheck import Network

NET = Network([4, 4, 4, 4], activation=["sigmoid", "tanh", "softmax"], loss="softmax_ce")
MUTANTS = list(all_mutants())
CORRECT = [name for name in ("numpy", "numba") if name in gradcheck.available_backends()]
#: Bugs that live in the training loop, not in the gradient: check_backward cannot see them.
TRAINING_ONLY = {"update sign flip"}
#: Bugs verify sees only in the training run: a stale cache needs an earlier forward call, and
#: verify's single gradient has none before it.
SEEN_IN_TRAINING = TRAINING_ONLY | {"stale forward cache"}


def _unflatten(arrays):
    """(W1, b1, W2, b2, …) back into params."""
    return [{"W": arrays[i], "b": arrays[i + 1]} for i in range(0, len(arrays), 2)]


def _problem():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(8, 4))
    y = np.eye(4)[rng.integers(0, 4, size=8)]
    return X, y, NET.init(seed=3)


@pytest.mark.parametrize("bug", MUTANTS)
def test_verify_flags_and_blames_the_mutant(bug):
    backend = all_mutants()[bug]
    X, y, params = _problem()
    report = gradcheck.verify(
        NET, X, y, params=params, backends=[*CORRECT, backend], steps=30, lr=0.5
    )
    assert not report.ok
    assert {check.backend for check in report.failures} == {backend.name}
    [verdict] = report.verdicts
    # The finite differences witness predictions, loss and gradients, never a training run.
    witnesses = ["jax", *CORRECT, *([] if bug in SEEN_IN_TRAINING else ["finite differences"])]
    listing = f"{', '.join(witnesses[:-1])} and {witnesses[-1]}"
    assert verdict.startswith(f"{backend.name} disagrees with {listing}: ")


@pytest.mark.parametrize("bug", [bug for bug in MUTANTS if bug not in TRAINING_ONLY])
def test_check_backward_flags_the_mutant(bug):
    backend = all_mutants()[bug]
    X, y, params = _problem()
    flat = [layer[key] for layer in params for key in ("W", "b")]

    def forward(*arrays):
        return np.asarray(backend.loss_and_grads(NET, _unflatten(arrays), X, y)[0])

    def backward(u, *arrays):
        _, grads = backend.loss_and_grads(NET, _unflatten(arrays), X, y)
        return [u * layer[key] for layer in grads for key in ("W", "b")]

    with pytest.raises(AssertionError, match="backward disagrees"):
        gradcheck.check_backward(forward, backward, *flat)


@pytest.mark.parametrize("name", CORRECT)
def test_check_backward_passes_the_correct_kernels(name):
    backend = gradcheck.get_backend(name)
    X, y, params = _problem()
    flat = [layer[key] for layer in params for key in ("W", "b")]

    result = gradcheck.check_backward(
        lambda *a: np.asarray(backend.loss_and_grads(NET, _unflatten(a), X, y)[0]),
        lambda u, *a: [
            u * g[k]
            for g in backend.loss_and_grads(NET, _unflatten(a), X, y)[1]
            for k in ("W", "b")
        ],
        *flat,
    )
    assert len(result.checks) == 2 * len(flat)  # every input, for each of two cotangents
    # Not only within tolerance (check_backward raises otherwise): with margin, and as close as
    # float64 finite differences of a smooth function get.
    assert max(check.error / check.tolerance for check in result.checks) < 0.25
    assert max(check.error for check in result.checks) < 1e-7
