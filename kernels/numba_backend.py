"""The Numba backend: the Python boundary of the compiled kernels.

A network given as widths runs through `numba_dense` (one compiled call over `numba_backprop`'s
flat walk); a list of layers through `numba_layers` (a walk over the layers, each one compiled
kernel). Which of the two is chosen once, here (`path`).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from gradcheck.backends import Trace, Trajectory
from gradcheck.kernels import numba_dense, numba_layers
from gradcheck.network import Network, Params
from gradcheck.optimizers import Batch, Optimizer

name = "numba"


def path(net: Network) -> ModuleType:
    """The module that runs ``net``: `numba_dense` for widths, `numba_layers` for layers."""
    return numba_dense if net.dense else numba_layers


def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    return path(net).predict(net, params, X)


def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    return path(net).loss_and_grads(net, params, X, y)


def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    return path(net).trace(net, params, X, y)


def train_with(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer,
    schedule: list[Batch],
    seed: int = 0,
) -> Trajectory:
    """A layer list's run applies the Dropout masks of ``seed``; widths have no Dropout."""
    if net.dense:
        return numba_dense.train_with(net, params, X, y, optimizer, schedule)
    return numba_layers.train_with(net, params, X, y, optimizer, schedule, seed)


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    return path(net).train(net, params, X, y, steps, lr)
