"""The Numba backend on a network given as a list of layers (`numba_backend` calls it).

A network given as widths runs as one compiled call (`numba_backprop`). A list of layers mixes
images and matrices, so here a step is a short walk over the layers in Python, each layer one
compiled kernel — `numba_conv`'s convolution and pooling, `numba_backprop`'s products,
activations, loss and optimizer updates — writing into buffers allocated once per call in
`Buffers`. A training step allocates nothing.

The walk is `numpy_backprop`'s: below a weight layer the gradient travels as ∂C/∂a through pools
and Flatten until the next weight layer's f′ turns it, in place, into that layer's δ. A Conv2D
layer with "same" padding keeps a zero-bordered copy of its input, and its input gradient is
scattered into a padded buffer whose interior is the gradient of the unpadded input.
"""

from __future__ import annotations

import numpy as np

from gradcheck.backends import Trace, Trajectory
from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels import numba_conv as nc
from gradcheck.kernels import numpy_conv
from gradcheck.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, Weighted
from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, lookup
from gradcheck.optimizers import SGD, Batch, Optimizer, batch_schedule, padded


class Buffers:
    """Every array one batch size needs: the input ``x``, each layer's output ``outs[k]`` and
    gradient ``grads[k]`` (∂C/∂outs[k], made δ in place at a weight layer), each weight layer's
    kept pre-activation ``zs[k]`` (the output layer's logits, and z where f′ reads it), the
    padded copies of a "same" Conv2D layer's input and input gradient, the first maxima of each
    max pool and the loss's work space. Flatten's output and gradient are views of its
    input's."""

    def __init__(self, net: Network, n: int) -> None:
        dtype = net.np_dtype
        self.x = np.empty((n, *net.input_shape), dtype)
        self.outs: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.padded: dict[int, tuple[tuple, np.ndarray, np.ndarray]] = {}
        self.first: dict[int, np.ndarray] = {}
        self.zs: dict[int, np.ndarray] = {}
        last = len(net.stack) - 1
        below, below_grad = self.x, np.empty_like(self.x)
        for k, (layer, shape) in enumerate(zip(net.stack, net.output_shapes, strict=True)):
            if isinstance(layer, Flatten):
                out, grad = below.reshape(n, -1), below_grad.reshape(n, -1)
            else:
                out, grad = np.empty((n, *shape), dtype), np.empty((n, *shape), dtype)
            if isinstance(layer, Conv2D) and layer.padding == "same":
                pads = numpy_conv.padding(below.shape, layer.kernel, layer.strides, "same")
                self.padded[k] = (pads, numpy_conv.pad(below, pads), numpy_conv.pad(below, pads))
            if isinstance(layer, MaxPool2D):
                self.first[k] = np.empty((n, *shape), np.int64)
            if isinstance(layer, Weighted):  # z where kept; elsewhere the output, never read
                kept = k == last or "z" in lookup(ACTIVATIONS, layer.activation, "activation").needs
                self.zs[k] = np.empty((n, *shape), dtype) if kept else out
            self.outs.append(out)
            self.grads.append(grad)
            below, below_grad = out, grad
        self.logits = self.zs[last]
        self.y = np.empty((n, net.outputs), dtype)
        self.log_norm = np.empty(n, dtype)


class Weights:
    """The params as C-contiguous arrays of the net's dtype (copied when asked) with their
    gradients, and each weight layer's activation code. A layer without bias gets a zero ``b``
    and a scratch ``db`` for the kernels, which take both, outside ``params`` and ``grads``."""

    def __init__(self, net: Network, params: Params, copy: bool) -> None:
        copy_or_if_needed = True if copy else None
        self.params = [
            {k: np.array(v, net.np_dtype, copy=copy_or_if_needed, order="C") for k, v in p.items()}
            for p in params
        ]
        self.grads = [{k: np.empty_like(v) for k, v in p.items()} for p in self.params]
        units = [p["W"].shape[-1] for p in self.params]
        self.b = [
            p.get("b", np.zeros(n, net.np_dtype)) for p, n in zip(self.params, units, strict=True)
        ]
        self.db = [
            g.get("b", np.empty(n, net.np_dtype)) for g, n in zip(self.grads, units, strict=True)
        ]
        self.codes = [lookup(nb.ACTIVATION_CODES, a, "activation") for a in net.activations]


def _input(buffers: Buffers, k: int) -> np.ndarray:
    return buffers.x if k == 0 else buffers.outs[k - 1]


def _as_rows(a: np.ndarray) -> np.ndarray:
    """An image batch (N, H, W, C) as the (N·H·W, C) matrix the element-wise kernels take."""
    return a.reshape(-1, a.shape[-1])


def forward(net: Network, weights: Weights, buffers: Buffers) -> None:
    """Fill every layer's output from ``buffers.x``, and the logits z_L."""
    w = 0
    last = len(net.stack) - 1
    for k, layer in enumerate(net.stack):
        x, out = _input(buffers, k), buffers.outs[k]
        if isinstance(layer, Weighted):
            values, b = weights.params[w], weights.b[w]
            if isinstance(layer, Dense):
                last_layer, has_b = k == last, "b" in values
                nb.dense_forward(weights.codes[w], x, values["W"], b, has_b, last_layer, out,
                                 buffers.zs[k], buffers.log_norm)  # fmt: skip
            else:
                if k in buffers.padded:
                    (top, _), (left, _) = buffers.padded[k][0]
                    source = buffers.padded[k][1]
                    source[:, top : top + x.shape[1], left : left + x.shape[2]] = x
                    x = source
                nc.conv2d(x, values["W"], b, layer.strides, out)
                if buffers.zs[k] is not out:  # f′ reads z: keep it
                    buffers.zs[k][...] = out
                nb.activate(weights.codes[w], _as_rows(out), b, False, buffers.log_norm)
            w += 1
        elif isinstance(layer, MaxPool2D):
            nc.max_pool(x, layer.pool_size, layer.stride, out, buffers.first[k])
        elif isinstance(layer, AvgPool2D):
            nc.avg_pool(x, layer.pool_size, layer.stride, out)
        # Flatten: its output is a view of its input


def backward(net: Network, weights: Weights, buffers: Buffers, loss_code: int) -> None:
    """Every gradient into ``weights.grads`` from the output delta, layer by layer down."""
    last = len(net.stack) - 1
    out, y = buffers.outs[last], buffers.y
    nb.output_delta(loss_code, weights.codes[-1], buffers.logits, out, y, buffers.grads[last])
    w = len(weights.params)
    for k in range(last, -1, -1):
        layer, grad = net.stack[k], buffers.grads[k]
        x = _input(buffers, k)
        below = None if k == 0 else buffers.grads[k - 1]
        if isinstance(layer, Weighted):
            w -= 1
            if k != last:  # ∂C/∂a_l -> δ_l, in place
                z, a = _as_rows(buffers.zs[k]), _as_rows(buffers.outs[k])
                nb.activation_backward(weights.codes[w], z, a, _as_rows(grad))
            _weight_grads(layer, weights, w, buffers, k, x, grad)
            if w == 0:
                return
            _input_grad(layer, weights.params[w]["W"], buffers, k, grad, below)
        elif isinstance(layer, MaxPool2D):
            nc.max_pool_grad(grad, buffers.first[k], layer.pool_size, layer.stride, below)
        elif isinstance(layer, AvgPool2D):
            nc.avg_pool_grad(grad, layer.pool_size, layer.stride, below)
        # Flatten: its gradient is a view of its input's


def _weight_grads(
    layer: Weighted, weights: Weights, w: int, buffers: Buffers, k: int, x: np.ndarray,
    delta: np.ndarray,
) -> None:  # fmt: skip
    grads, db = weights.grads[w], weights.db[w]
    if isinstance(layer, Dense):
        nb.layer_grads(x, delta, "b" in grads, grads["W"], db)
    else:
        source = buffers.padded[k][1] if k in buffers.padded else x
        nc.conv2d_grads(source, delta, layer.strides, grads["W"], db)


def _input_grad(
    layer: Weighted, W: np.ndarray, buffers: Buffers, k: int, delta: np.ndarray,
    below: np.ndarray | None,
) -> None:  # fmt: skip
    """∂C/∂(the layer's input) into ``below``."""
    assert below is not None  # a weight layer above the first has a layer below it
    if isinstance(layer, Dense):
        nb.matmul_nt(delta, W, below)  # (N, n_l) @ (n_l, n_{l-1}) -> (N, n_{l-1})
    elif k in buffers.padded:
        (top, _), (left, _) = buffers.padded[k][0]
        dx = buffers.padded[k][2]
        nc.conv2d_input_grad(delta, W, layer.strides, dx)
        below[...] = dx[:, top : top + below.shape[1], left : left + below.shape[2]]
    else:
        nc.conv2d_input_grad(delta, W, layer.strides, below)


def loss_and_grads_into(net: Network, weights: Weights, buffers: Buffers, loss_code: int) -> float:
    """One evaluation on ``buffers.x`` and ``buffers.y``: forward, C, backward; returns C."""
    forward(net, weights, buffers)
    a = buffers.outs[-1]
    value = nb.loss(loss_code, a, buffers.logits, buffers.log_norm, buffers.y)
    backward(net, weights, buffers, loss_code)
    return float(value)


def _evaluate(net: Network, params: Params, X: np.ndarray, y: np.ndarray | None) -> tuple:
    weights, buffers = Weights(net, params, copy=False), Buffers(net, len(X))
    buffers.x[...] = X
    if y is None:
        forward(net, weights, buffers)
        return None, weights, buffers
    buffers.y[...] = y
    value = loss_and_grads_into(net, weights, buffers, lookup(nb.LOSS_CODES, net.loss, "loss"))
    return value, weights, buffers


def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    return _evaluate(net, params, X, None)[2].outs[-1]


def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    value, weights, _ = _evaluate(net, params, X, y)
    return value, weights.grads


def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    """The buffers of one evaluation. The activations overwrite the pre-activations in place,
    so z is kept only for the output layer (the logits) and where f′ reads it."""
    value, weights, buffers = _evaluate(net, params, X, y)
    kept = [k for k, layer in enumerate(net.stack) if isinstance(layer, Weighted)]
    zs = [None if buffers.zs[k] is buffers.outs[k] else buffers.zs[k] for k in kept]
    outputs = [buffers.outs[k] for k in kept]
    return Trace(zs, outputs, value, [buffers.grads[k] for k in kept], weights.grads)


def train_with(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer,
    schedule: list[Batch],
) -> Trajectory:
    """One step of ``optimizer`` per batch of ``schedule`` on a copy of ``params``; the buffers
    of each batch size and the optimizer's state are allocated here, once."""
    dtype = net.np_dtype
    indices, sizes = padded(schedule, len(X))
    buffers = {int(n): Buffers(net, int(n)) for n in set(sizes.tolist())}
    weights = Weights(net, params, copy=True)
    states = [
        tuple(np.zeros(value.size, dtype) for _ in range(4))
        for layer in weights.params
        for value in layer.values()
    ]
    kind, hyper, flags = nb.optimizer_settings(optimizer, dtype)
    loss_code = lookup(nb.LOSS_CODES, net.loss, "loss")
    losses = np.empty(len(schedule), dtype)
    full_batch = all(isinstance(batch, slice) for batch in schedule)
    for t in range(len(schedule)):
        batch = buffers[int(sizes[t])]
        if not full_batch or t == 0:  # the full batch is gathered once
            rows = indices[t, : sizes[t]]
            np.take(X, rows, axis=0, out=batch.x)
            np.take(y, rows, axis=0, out=batch.y)
        losses[t] = loss_and_grads_into(net, weights, batch, loss_code)
        slots = iter(states)
        for layer, grads in zip(weights.params, weights.grads, strict=True):
            for key, theta in layer.items():
                m, v, a, v_max = next(slots)
                nb.optimizer_update(
                    kind, hyper, flags, t + 1, theta.reshape(-1), grads[key].reshape(-1),
                    m, v, a, v_max,
                )  # fmt: skip
    return Trajectory(weights.params, losses)


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    """``steps`` full-batch gradient-descent steps."""
    return train_with(net, params, X, y, SGD(lr), batch_schedule(len(X), None, steps, 0))
