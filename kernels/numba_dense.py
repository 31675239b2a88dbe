"""The Numba backend on a network given as widths (`numba_backend` calls it).

`numba_backprop` holds the equations, compiled; this module lays a network out as they take it
— θ and the buffers as flat arrays, the network as a `Layout` of codes and widths — and calls
them: every call is one compiled call. Every buffer is allocated once per call in a
`Workspace`, and a training call reuses the buffers its thread used for the last call of the
same sizes (`kept_buffers`): first touching the megabytes of a fresh allocation costs a short
call more than a step does.
"""

from __future__ import annotations

import itertools

import numpy as np

from gradcheck import ops
from gradcheck.backends import Trace, Trajectory
from gradcheck.kernels.numba_backprop import (
    ACTIVATION_CODES,
    LOSS_CODES,
    Batches,
    Buffers,
    Layout,
    Rule,
    forward,
    is_narrow,
    narrow_loss_and_grads,
    narrow_predict,
    narrow_train_loop,
    optimizer_settings,
    train_with_loop,
    wide_loss_and_grads,
    wide_train_loop,
)
from gradcheck.kernels.numba_threads import kept
from gradcheck.network import Network, Params
from gradcheck.ops import lookup
from gradcheck.optimizers import Batch, Optimizer, padded


def buffers(net: Network, samples: int) -> Buffers:
    """New `Buffers` for ``samples`` rows through ``net``."""
    N, dtype, units = samples, net.np_dtype, sum(net.widths[1:])
    return Buffers(
        acts=np.empty(N * units, dtype),
        zs=np.empty(N * units, dtype),
        log_norm=np.empty(N, dtype),
        deltas=np.empty(N * units, dtype),
        grad=np.empty(sum(_layer_sizes(net)), dtype),
    )


def kept_buffers(net: Network, samples: int) -> Buffers:
    """The `Buffers` this thread used for the last call with the same sizes, or new ones
    (`numba_threads.kept`): reusing them spares allocating and first touching megabytes a call
    (6–9% of a 10-step digits call)."""
    key = ("widths", net.widths, samples, net.dtype, net.bias)
    return kept(key, lambda: buffers(net, samples))


class Workspace:
    """Every argument one call needs: the network's `Layout`, θ (a copy of params), X and the
    `Buffers`, kept from an earlier call of this thread when ``kept`` (for loops that return
    none of them)."""

    def __init__(self, net: Network, params: Params, X: np.ndarray, kept: bool = False):
        self.net = layout(net)
        self.theta = flat_weights(net, params)
        self.X = np.ascontiguousarray(X)
        self.buffers = (kept_buffers if kept else buffers)(net, len(X))


def layout(net: Network) -> Layout:
    """The network as the compiled walks take it: codes and widths."""
    codes = [lookup(ACTIVATION_CODES, a, "activation") for a in net.activations]
    return Layout(
        np.array(codes, np.int64),
        np.array(net.widths, np.int64),
        bool(net.bias),
        lookup(LOSS_CODES, net.loss, "loss"),
    )


def _layer_sizes(net: Network) -> list[int]:
    """Each weight layer's share of θ: n_{l-1}·n_l weights, and n_l biases with bias."""
    return [m * n + (n if net.bias else 0) for m, n in itertools.pairwise(net.widths)]


def flat_weights(net: Network, params: Params) -> np.ndarray:
    """θ: params laid out as the compiled walks take them (W_l then b_l, layer by layer), a new
    array in the net's dtype."""
    keys = ("W", "b") if net.bias else ("W",)
    parts = [np.asarray(layer[key], net.np_dtype).ravel() for layer in params for key in keys]
    return np.concatenate(parts)


def as_params(net: Network, flat: np.ndarray) -> Params:
    """θ, or a gradient laid out like it, in the params layout: views of ``flat``."""
    params: Params = []
    at = 0
    for m, n in itertools.pairwise(net.widths):
        layer = {"W": flat[at : at + m * n].reshape(m, n)}
        at += m * n
        if net.bias:
            layer["b"] = flat[at : at + n]
            at += n
        params.append(layer)
    return params


def blocks(net: Network, arena: np.ndarray, samples: int) -> list[np.ndarray]:
    """The (N, n_l) blocks of an activations or deltas buffer: A[1..L] or D[0..L-1]."""
    starts = itertools.accumulate((samples * n for n in net.widths[1:]), initial=0)
    return [
        arena[at : at + samples * n].reshape(samples, n)
        for at, n in zip(starts, net.widths[1:], strict=False)
    ]


def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    ws = Workspace(net, params, X)
    if _narrow(ws):
        narrow_predict(ws.net, ws.theta, ws.X.reshape(-1), len(X), ws.buffers)
    else:
        forward(ws.net, ws.theta, ws.X, ws.buffers)
    return blocks(net, ws.buffers.acts, len(X))[-1]


def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    value, ws = _evaluate(net, params, X, y)
    return value, as_params(net, ws.buffers.grad)


def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    """The buffers of one evaluation. The activations overwrite the pre-activations in place,
    so z is kept only for the output layer (the logits) and where f′ reads it."""
    value, ws = _evaluate(net, params, X, y)
    b, N = ws.buffers, len(X)
    return Trace(
        kept_pre_activations(net, blocks(net, b.zs, N)),
        blocks(net, b.acts, N),
        value,
        blocks(net, b.deltas, N),
        as_params(net, b.grad),
    )


def kept_pre_activations(net: Network, zs: list[np.ndarray]) -> list[np.ndarray | None]:
    """Each weight layer's z where the forward pass kept it (the output layer, and where f′
    reads z), None elsewhere."""
    last = net.depth - 1
    return [
        z if l == last or "z" in lookup(ops.ACTIVATIONS, a, "activation").needs else None
        for l, (z, a) in enumerate(zip(zs, net.activations, strict=True))
    ]


def _evaluate(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Workspace]:
    ws = Workspace(net, params, X)
    if _narrow(ws):
        value = narrow_loss_and_grads(ws.net, ws.theta, ws.X.reshape(-1), len(X), y, ws.buffers)
    else:
        value = wide_loss_and_grads(ws.net, ws.theta, ws.X, y, ws.buffers)
    return float(value), ws


def _narrow(ws: Workspace) -> bool:
    """Whether the workspace's network and rows take the narrow walk, by `is_narrow` itself:
    each walk is its own compiled entry, so a network compiles only the walk it takes."""
    return bool(is_narrow.py_func(ws.net.widths, len(ws.X)))


def train_with(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer,
    schedule: list[Batch],
) -> Trajectory:
    """One step of ``optimizer`` per batch of ``schedule``, all in one compiled call, on a copy
    of ``params``; the optimizer's state lives in buffers allocated here, once."""
    dtype = net.np_dtype
    indices, sizes = padded(schedule, len(X))
    width = indices.shape[1]  # the largest batch
    ws = Workspace(net, params, np.empty((width, X.shape[1]), dtype), kept=True)
    batches = Batches(indices, sizes, ws.X.reshape(-1), np.empty(width * net.widths[-1], dtype))
    state = np.zeros((4, ws.theta.size), dtype)  # m, v, a and v_max
    rule = Rule(*optimizer_settings(optimizer, dtype), state)
    losses = np.empty(len(schedule), dtype)
    train_with_loop(ws.net, ws.theta, np.ascontiguousarray(X), np.ascontiguousarray(y), batches,
                    rule, ws.buffers, losses)  # fmt: skip
    return Trajectory(as_params(net, ws.theta), losses)


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    """All ``steps`` steps in one compiled call, on a copy of ``params``."""
    losses = np.empty(steps, net.dtype)
    ws = Workspace(net, params, X, kept=True)
    rate = net.np_dtype.type(lr)
    if _narrow(ws):
        narrow_train_loop(ws.net, ws.theta, ws.X.reshape(-1), len(X), y, rate, ws.buffers, losses)
    else:
        wide_train_loop(ws.net, ws.theta, ws.X, y, rate, ws.buffers, losses)
    return Trajectory(as_params(net, ws.theta), losses)
