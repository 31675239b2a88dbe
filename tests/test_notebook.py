"""The notebook's algorithm, written out literally as in its cells, reproduced by the backends.

The notebook trains with C = ½Σ(y − a)² and η = 1: its d_weights are −∂C/∂W, built from
(y − output) and a sigmoid_derivative that takes the activation, and it adds them to the weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck
from gradcheck import Network


def sigmoid(x):
    return 1.0 / (1 + np.exp(-x))


def sigmoid_derivative(x):
    return x * (1.0 - x)


class NeuralNetwork:
    def __init__(self, x, y, weights1, weights2):
        self.input = x
        self.weights1 = weights1  # the notebook draws np.random.rand(3, 4) here
        self.weights2 = weights2  # and np.random.rand(4, 1) here
        self.y = y
        self.output = np.zeros(self.y.shape)

    def feedforward(self):
        self.layer1 = sigmoid(np.dot(self.input, self.weights1))
        self.output = sigmoid(np.dot(self.layer1, self.weights2))

    def backprop(self):
        d_weights2 = np.dot(
            self.layer1.T, ((self.y - self.output) * sigmoid_derivative(self.output))
        )
        d_weights1 = np.dot(
            self.input.T,
            np.dot((self.y - self.output) * sigmoid_derivative(self.output), self.weights2.T)
            * sigmoid_derivative(self.layer1),
        )
        self.weights1 += d_weights1
        self.weights2 += d_weights2


def run_notebook(seed: int, steps: int):
    """The notebook's cells with its weights drawn by np.random.seed(seed)."""
    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    y = np.array([[0], [1], [1], [0]])
    np.random.seed(seed)
    nn = NeuralNetwork(X, y, np.random.rand(X.shape[1], 4), np.random.rand(4, 1))
    losses = []
    for _ in range(steps):
        nn.feedforward()
        losses.append(0.5 * np.sum((y - nn.output) ** 2))
        nn.backprop()
    nn.feedforward()
    return nn, np.array(losses)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", gradcheck.available_backends())
def test_backend_reproduces_the_notebook(name, seed):
    steps = 2000
    notebook, notebook_losses = run_notebook(seed, steps)
    X, y = gradcheck.datasets.seed_xor()
    Xi, yi = X.astype(int), y.astype(int)  # the notebook's own integer arrays are accepted
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False)
    params = net.init(seed=seed, scheme="uniform")
    backend = gradcheck.get_backend(name)

    run = backend.train(net, params, Xi, yi, steps=steps, lr=1.0)
    np.testing.assert_allclose(run.params[0]["W"], notebook.weights1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.params[1]["W"], notebook.weights2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.losses, notebook_losses, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        backend.predict(net, run.params, Xi), notebook.output, rtol=0, atol=1e-10
    )
    # the network learned XOR, as in the notebook
    assert np.array_equal(np.round(notebook.output), y)
