"""The floor: the notebook's training loop written out by hand for its one network.

Not a backend. Everything the backends keep general is fixed here — the 3-4-1 shape, sigmoid on
both layers, no biases, ½SSE, plain gradient descent — so every loop has a literal trip count,
every buffer is the kernel's own, and nothing is dispatched. It is the fastest this package
knows how to run the problem, and `gradcheck bench` and bench/ time it beside the backends so
every run shows how far the general kernels are from it.

Each equation is its own pass over its (tiny) arrays. Fusing them — each activation computed as
soon as its z is, the loss and δ in the same loop — is slower: it puts every exponential on
one chain of dependent work, where a pass of 16 sigmoids lets the core overlap them.

The arithmetic is the backends': σ(z) = 1/(1 + e^{−|z|}) for z ≥ 0 and e^{−|z|}/(1 + e^{−|z|})
below, δ₂ = (a₂ − y) σ′(z₂), δ₁ = (δ₂ W₂ᵀ) ⊙ σ′(z₁), W ← W − lr · aᵀδ.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gradcheck.network import Params

#: The only problem the floor runs: the notebook's network on its four samples.
PROBLEM = "notebook"
N, N_IN, N_HIDDEN, N_OUT = 4, 3, 4, 1


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def sigmoid(z):
    e = np.exp(-abs(z))
    positive = 1.0 / (1.0 + e)
    return positive if z >= 0 else e * positive


@njit(cache=True, nogil=True, error_model="numpy")
def train_loop(X, y, W1, W2, lr, losses):
    """``len(losses)`` steps on W1 (3, 4) and W2 (4, 1) in place; losses[t] before step t."""
    a1 = np.empty((N, N_HIDDEN))  # activations and deltas; N_OUT = 1 is a vector
    d1 = np.empty((N, N_HIDDEN))
    a2 = np.empty(N)
    d2 = np.empty(N)
    g1 = np.empty((N_IN, N_HIDDEN))  # the weight gradients
    g2 = np.empty(N_HIDDEN)
    for t in range(losses.shape[0]):
        for i in range(N):  # z₁ = X W₁
            for j in range(N_HIDDEN):
                z = 0.0
                for p in range(N_IN):
                    z += X[i, p] * W1[p, j]
                a1[i, j] = z
        for i in range(N):  # a₁ = σ(z₁)
            for j in range(N_HIDDEN):
                a1[i, j] = sigmoid(a1[i, j])
        for i in range(N):  # a₂ = σ(a₁ W₂)
            z = 0.0
            for j in range(N_HIDDEN):
                z += a1[i, j] * W2[j, 0]
            a2[i] = sigmoid(z)
        loss = 0.0  # C = ½ Σ (a₂ − y)²
        for i in range(N):
            diff = a2[i] - y[i, 0]
            loss += diff * diff
        losses[t] = loss / 2.0
        for i in range(N):  # δ₂ = (a₂ − y) σ′
            d2[i] = (a2[i] - y[i, 0]) * (a2[i] * (1.0 - a2[i]))
        for j in range(N_HIDDEN):  # ∂C/∂W₂ = a₁ᵀ δ₂
            g = 0.0
            for i in range(N):
                g += a1[i, j] * d2[i]
            g2[j] = g
        for i in range(N):  # δ₁ = (δ₂ W₂ᵀ) ⊙ σ′
            for j in range(N_HIDDEN):
                d1[i, j] = d2[i] * W2[j, 0] * (a1[i, j] * (1.0 - a1[i, j]))
        for p in range(N_IN):  # ∂C/∂W₁ = Xᵀ δ₁
            for j in range(N_HIDDEN):
                g = 0.0
                for i in range(N):
                    g += X[i, p] * d1[i, j]
                g1[p, j] = g
        for p in range(N_IN):  # W ← W − lr ∂C/∂W
            for j in range(N_HIDDEN):
                W1[p, j] -= lr * g1[p, j]
        for j in range(N_HIDDEN):
            W2[j, 0] -= lr * g2[j]


def train(
    params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``steps`` steps of the notebook's training from ``params`` (not modified), in float64;
    returns the trained W1 (3, 4) and W2 (4, 1) and the loss before each step."""
    given = {"W1": params[0]["W"], "W2": params[1]["W"], "X": X, "y": y}
    expected = {"W1": (N_IN, N_HIDDEN), "W2": (N_HIDDEN, N_OUT), "X": (N, N_IN), "y": (N, N_OUT)}
    for name, array in given.items():
        if np.shape(array) != expected[name]:
            raise ValueError(f"floor.train: {name} must be {expected[name]}, got {np.shape(array)}")
    W1, W2 = (np.array(given[name], np.float64, order="C") for name in ("W1", "W2"))
    losses = np.empty(steps)
    train_loop(np.ascontiguousarray(X, np.float64), np.ascontiguousarray(y, np.float64),
                W1, W2, float(lr), losses)  # fmt: skip
    return W1, W2, losses
