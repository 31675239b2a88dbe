"""The benchmarked problems: the notebook's network and the digits network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import gradcheck
from gradcheck import Network


@dataclass(frozen=True)
class Problem:
    name: str
    net: Network
    X: np.ndarray
    y: np.ndarray
    params: list
    steps: int
    lr: float

    @property
    def flops_per_step(self) -> float:
        """Multiply-adds ×2 of one training step's matrix products: the forward product of
        every layer, every weight gradient, and every hidden delta."""
        N = self.X.shape[0]
        products = [a * b for a, b in zip(self.net.layers[:-1], self.net.layers[1:], strict=True)]
        return 2.0 * N * (2 * sum(products) + sum(products[1:]))


def notebook(dtype: str) -> Problem:
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False, dtype=dtype)
    return Problem("notebook", net, X, y, net.init(seed=0, scheme="uniform"), 2000, 1.0)


def digits(dtype: str, steps: int = 10) -> Problem:
    X, y = gradcheck.datasets.digits()
    net = Network([64, 128, 10], activation=["sigmoid", "softmax"], loss="softmax_ce", dtype=dtype)
    return Problem("digits", net, X.astype(dtype), y.astype(dtype), net.init(seed=0), steps, 0.5)
