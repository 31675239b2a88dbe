"""Helpers shared by the tests: random problems for a network, copies of params, the default
slice of a grid."""

from __future__ import annotations

import sys

import numpy as np

import gradcheck.backends
from gradcheck import Network, ops

#: Every activation a hidden layer may have, from the registry.
HIDDEN = ops.hidden_activations()
#: For each loss, the output activations it may follow.
OUTPUTS = {loss: ops.output_activations(loss) for loss in ops.LOSSES}
#: The dtypes, and the seeds the default suite runs (the plugin's default, 0-2).
DTYPES = ("float64", "float32")
SEEDS = (0, 1, 2)


def in_turn(turn: int, *choices: tuple) -> tuple:
    """The ``turn``-th combination of ``choices``, counted with the first varying fastest: a
    grid's default slice runs each of its rows once, with the other settings taken in turn."""
    picked = []
    for options in choices:
        picked.append(options[turn % len(options)])
        turn //= len(options)
    return tuple(picked)


def random_problem(net: Network, n_samples: int = 6, seed: int = 0):
    """Inputs, targets suited to the loss, and glorot params for ``net``, all float64."""
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=1.5, size=(n_samples, *net.input_shape))
    K = net.outputs
    if net.loss == "softmax_ce":
        y = np.eye(K)[rng.integers(0, K, size=n_samples)]  # one-hot rows
    elif net.loss == "bce" or net.activations[-1] in ("sigmoid", "softmax"):
        y = rng.uniform(size=(n_samples, K))
    else:
        y = rng.normal(size=(n_samples, K))
    return X, y, net.init(seed=seed)


def release_compiled_code() -> None:
    """Release what the frameworks compiled: every network is a static argument to JAX's jit
    and keys Keras's cached models, so thousands of networks would otherwise keep every
    executable alive (and XLA's compiler has crashed in a process holding that many, 400
    random networks into hypothesis's thorough profile). Frameworks not yet imported are left
    alone."""
    gradcheck.backends.release_compiled()
    jax = sys.modules.get("jax")  # check_rule's and the docs' own JAX functions too
    if jax is not None:
        jax.clear_caches()


class NumpyDelegate:
    """A user's backend that hands every call to NumPy's kernels: a test's own backend
    subclasses it and changes the one thing the test is about."""

    name = "mine"

    def __init__(self) -> None:
        self.numpy = gradcheck.get_backend("numpy")

    def predict(self, net, params, X):
        return self.numpy.predict(net, params, X)

    def loss_and_grads(self, net, params, X, y):
        return self.numpy.loss_and_grads(net, params, X, y)

    def train(self, net, params, X, y, steps, lr):
        return self.numpy.train(net, params, X, y, steps, lr)


def copy_params(params):
    return [{key: np.array(value, copy=True) for key, value in layer.items()} for layer in params]


def same_params(a, b) -> bool:
    return len(a) == len(b) and all(
        set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )
