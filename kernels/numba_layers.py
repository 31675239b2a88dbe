"""The Numba backend on a network given as a list of layers (`numba_backend` calls it).

A network given as widths runs as one compiled call (`numba_backprop`). A list of layers mixes
images and matrices, so here a step is a short walk over the layers in Python, each layer one
or two compiled kernels — `numba_conv`'s convolution and pooling, `numba_backprop`'s products,
activations and loss, `numba_norm`'s normalisations, `numba_recurrent`'s passes through time —
writing into buffers allocated once per batch size in `Buffers`. A Dense layer on a sequence
(N, T, D) takes it as N·T rows. The walk is laid out once too (`Walk`): each kernel call with its
arguments bound (`forward_calls`, `backward_calls`), so that a step runs a list of calls and
decides nothing. The gradients are views of one flat array, and so are a training run's params:
the optimizer updates them all in one call. A training step allocates only its convolutions'
per-block partial sums.

The walk is `numpy_backprop`'s: below a weight layer the gradient travels as ∂C/∂a through pools,
Flatten, normalisations (`numba_norm`), Activation and Dropout layers until the next weight
layer's f′ turns it, in place, into that layer's δ. A Dropout hashes its mask (gradcheck's,
`gradcheck.masks`) as it scales the kept units (`numba_dropout`), and keeps it for the backward.
A Conv2D layer lays its input out padded, as its kernels read it (`numba_conv.Input`), and
writes its input gradient unpadded.

The convolution and pooling kernels run over blocks of samples on Numba's threads, on the terms
`numba_threads` sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from gradcheck.backends import TimeSteps, Trace, Trajectory
from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels import numba_conv as nc
from gradcheck.kernels import (
    numba_dropout,
    numba_embedding,
    numba_recurrent,
    numba_rows,
    numpy_conv,
)
from gradcheck.kernels import numba_norm as nn
from gradcheck.kernels.numba_blocks import add_blocks, block_count, block_sums
from gradcheck.kernels.numba_threads import kept, launch, on_numba_threads, runs_on_numba_threads
from gradcheck.layers import (
    LSTM,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Layer,
    LayerNorm,
    MaxPool2D,
    Norm,
    Parametric,
    Recurrent,
    SimpleRNN,
    Weighted,
)
from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, lookup
from gradcheck.optimizers import SGD, Batch, Optimizer, batch_schedule, padded


class Buffers:
    """Every array one batch size needs: the input ``x``, each layer's output ``outs[k]`` and
    gradient ``grads[k]`` (∂C/∂outs[k], made δ in place at a weight layer), each weight layer's
    kept pre-activation ``zs[k]`` (the output layer's logits, and z where f′ reads it), each
    Conv2D layer's input as its kernels read it (`numba_conv.Input`), the first maxima of each
    max pool, each normalisation's x̂ and statistics (`NormBuffers`) and the loss's work space.
    Flatten's output and gradient are views of its input's. ``fused`` holds the pooling layers
    that directly follow a Conv2D layer: the convolution's kernels pool too, while its output is
    in cache. Unless ``full`` (as a trace wants them), a convolution whose max pool is fused
    writes neither its output nor its δ (`numba_conv.Pooling`'s ``maxima_only``)."""

    def __init__(self, net: Network, n: int, full: bool = False) -> None:
        dtype = net.np_dtype
        self.full = full
        self.x = np.empty((n, *net.input_shape), np.int64 if net.takes_ids else dtype)
        self.outs: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.inputs: dict[int, nc.Input] = {}
        self.first: dict[int, np.ndarray] = {}
        self.zs: dict[int, np.ndarray] = {}
        self.norms: dict[int, NormBuffers] = {}
        self.masks: dict[int, np.ndarray] = {}  # each Dropout's m × its scale
        self.steps: dict[int, numba_recurrent.Steps] = {}  # each recurrent layer's, time-major
        self.draw = np.zeros(2, np.int64)  # the Dropout masks': the run's seed and the step
        self.fused: set[int] = set()
        last = len(net.stack) - 1
        below, below_grad = self.x, np.empty_like(self.x)
        for k, (layer, shape) in enumerate(zip(net.stack, net.output_shapes, strict=True)):
            if isinstance(layer, Flatten):
                out, grad = below.reshape(n, -1), below_grad.reshape(n, -1)
            else:
                out, grad = np.empty((n, *shape), dtype), np.empty((n, *shape), dtype)
            if isinstance(layer, Conv2D):
                pads = numpy_conv.padding(below.shape, layer.kernel, layer.strides, layer.padding)
                self.inputs[k] = nc.input_of(below, pads, layer.strides)
            if isinstance(layer, MaxPool2D | AvgPool2D):  # an average pool's is never read
                self.first[k] = np.empty((n, *shape) if isinstance(layer, MaxPool2D) else (0,) * 4,
                                         np.int64)  # fmt: skip
                if k > 0 and isinstance(net.stack[k - 1], Conv2D):
                    self.fused.add(k)
            if isinstance(layer, Norm):
                self.norms[k] = NormBuffers.of(layer, _as_rows(out))
            if isinstance(layer, Dropout):
                self.masks[k] = np.empty_like(out)
            if isinstance(layer, Recurrent):
                blocks = len(layer.blocks)
                self.steps[k] = numba_recurrent.steps(below.shape, layer.units, blocks, dtype)
            if isinstance(layer, Weighted):  # z where kept; elsewhere the output, never read
                kept = k == last or "z" in lookup(ACTIVATIONS, layer.activation, "activation").needs
                self.zs[k] = np.empty((n, *shape), dtype) if kept else out
            self.outs.append(out)
            self.grads.append(grad)
            below, below_grad = out, grad
        self.logits = self.zs[last].reshape(-1)  # flat, as the loss and output delta take it
        self.y = np.empty((n, *net.output_shape), dtype)
        self.log_norm = np.empty(len(_as_rows(self.y)), dtype)  # a row's: a sequence's N·T


class NormBuffers:
    """A normalisation's x̂ (R, C) and r — (C,) for a BatchNorm, (R,) for a LayerNorm — and a
    BatchNorm's batch μ and σ² (C,), for its batch laid out as rows (R, C)."""

    def __init__(self, x_hat: np.ndarray, inv_std: np.ndarray, mean: np.ndarray, var: np.ndarray):
        self.x_hat, self.inv_std, self.mean, self.var = x_hat, inv_std, mean, var

    @classmethod
    def of(cls, layer: Norm, rows: np.ndarray) -> NormBuffers:
        channels = np.empty(rows.shape[1], rows.dtype)
        inv_std = np.empty(len(channels) if isinstance(layer, BatchNorm) else len(rows), rows.dtype)
        return cls(np.empty_like(rows), inv_std, channels, np.empty_like(channels))


class Weights:
    """The params as C-contiguous arrays of the net's dtype, the gradients of their trainable
    entries, and the activation code of each layer of the stack (-1 where it has none).
    The gradients are views of one flat array, ``gradient``; so are the trainable params of a
    copy (``copy``), ``theta``, so that an optimizer steps every tensor in one call. A layer
    without bias gets a zero ``b`` and a scratch ``db`` for the kernels, which take both,
    outside ``params`` and ``grads``."""

    def __init__(self, net: Network, params: Params, copy: bool) -> None:
        dtype, shapes = net.np_dtype, net.grad_shapes()
        self.gradient = np.empty(sum(math.prod(s) for layer in shapes for s in layer.values()),
                                 dtype)  # fmt: skip
        self.grads = _views(self.gradient, shapes)
        self.theta = np.empty_like(self.gradient) if copy else None
        trainable = _views(self.theta, shapes) if self.theta is not None else [{} for _ in shapes]
        self.params = [
            {k: _as_given(v, dtype, into=t.get(k), copy=copy) for k, v in p.items()}
            for p, t in zip(params, trainable, strict=True)
        ]
        units = [next(iter(layer.values()))[-1] for layer in shapes]
        self.b = [p.get("b", np.zeros(n, dtype)) for p, n in zip(self.params, units, strict=True)]
        self.db = [g.get("b", np.empty(n, dtype)) for g, n in zip(self.grads, units, strict=True)]
        self.codes = [
            lookup(nb.ACTIVATION_CODES, layer.activation, "activation")
            if isinstance(layer, Weighted | Activation | SimpleRNN)
            else -1
            for layer in net.stack
        ]


def _views(flat: np.ndarray, shapes: list[dict[str, tuple]]) -> list[dict[str, np.ndarray]]:
    """Consecutive pieces of ``flat`` shaped as ``shapes``, layer by layer."""
    views: list[dict[str, np.ndarray]] = []
    start = 0
    for layer in shapes:
        views.append({})
        for key, shape in layer.items():
            size = math.prod(shape)
            views[-1][key] = flat[start : start + size].reshape(shape)
            start += size
    return views


def _as_given(
    value: np.ndarray, dtype: np.dtype, into: np.ndarray | None, copy: bool
) -> np.ndarray:
    """A param as a C-contiguous array of ``dtype``: copied into ``into`` (its place in the
    flat trainable params) where there is one, else a copy or, without ``copy``, the array
    itself where it already is one."""
    if into is not None:
        into[...] = value
        return into
    return np.array(value, dtype, copy=True if copy else None, order="C")


def kept_buffers(net: Network, n: int) -> Buffers:
    """The `Buffers` this thread used for its last training call of ``net`` on batches of n,
    or new ones (`numba_threads.kept`): a digits-CNN run of 10 steps then first touches no
    memory, where fresh buffers cost 1,700 page faults, 3–9% of its time."""
    return kept(("layers", net, n), lambda: Buffers(net, n))


def _input(buffers: Buffers, k: int) -> np.ndarray:
    return buffers.x if k == 0 else buffers.outs[k - 1]


def _as_rows(a: np.ndarray) -> np.ndarray:
    """An image batch (N, H, W, C), or a sequence's (N, T, C), as the (N·H·W, C) or (N·T, C)
    matrix the element-wise kernels and a Dense layer's take: every position a row."""
    return a.reshape(-1, a.shape[-1])


def _as_steps(a: np.ndarray) -> np.ndarray:
    """A recurrent layer's output or its gradient as its kernels take it: (N, T, H) for every
    h_t, (N, 1, H) for h_T."""
    return a if a.ndim == 3 else a[:, None]


def _pooling(net: Network, buffers: Buffers, k: int) -> nc.Pooling:
    """The pool the Conv2D layer k's kernels do too: the layer above it, if fused, else none.
    Unless the buffers are ``full``, a max pool over an activation whose f′ reads a alone
    leaves the convolution's output and δ unwritten."""
    if k + 1 not in buffers.fused:
        return nc.no_pool(buffers.x.dtype)
    layer = net.stack[k + 1]
    assert isinstance(layer, MaxPool2D | AvgPool2D)
    maxima_only = (
        isinstance(layer, MaxPool2D) and buffers.zs[k] is buffers.outs[k] and not buffers.full
    )
    return nc.Pooling(_pool_code(layer), layer.pool_size, layer.stride, buffers.outs[k + 1],
                      buffers.grads[k + 1], buffers.first[k + 1], maxima_only)  # fmt: skip


def _pool_code(layer: MaxPool2D | AvgPool2D) -> int:
    """A pool's `numba_conv.Pool` code as a plain int: a kernel typing an IntEnum member at
    every call costs 11 µs, inside a named tuple 40."""
    return int(nc.Pool.max if isinstance(layer, MaxPool2D) else nc.Pool.avg)


#: A kernel call with its arguments bound, for one batch size's buffers and the weights.
Call = Callable[[], object]


def forward_calls(net: Network, weights: Weights, buffers: Buffers, training: bool) -> list[Call]:
    """The forward pass as calls bound once: each layer's output from ``buffers.x``, and the
    logits z_L; ``training`` False for predictions (a BatchNorm's moving statistics, no
    masks). ``w`` counts the layers with parameters."""
    calls: list[Call] = []
    w, last = 0, len(net.stack) - 1
    for k, layer in enumerate(net.stack):
        x, out = _input(buffers, k), buffers.outs[k]
        values = weights.params[w] if isinstance(layer, Parametric) else {}
        if isinstance(layer, Dense):  # on a sequence, every step a row
            rows, W, z = _as_rows(x), values["W"], _as_rows(out)
            after = (weights.b[w], "b" in values, k == last, z, _as_rows(buffers.zs[k]),
                     buffers.log_norm)  # fmt: skip
            blocks = row_blocks(net, len(rows))
            if blocks == 1:
                calls.append(partial(nb.dense_forward, weights.codes[k], rows, W, *after))
            else:  # the products in blocks of rows, then f over them all
                calls.append(partial(launch, numba_rows.pre_activation,
                                     numba_rows.pre_activation_block, blocks, rows, W,
                                     z))  # fmt: skip
                calls.append(partial(nb.dense_activate, weights.codes[k], *after))
        elif isinstance(layer, Conv2D):
            keep = buffers.zs[k] is not out  # f′ reads z: keep it
            blocks = block_count(len(x), nc.SMALLEST_BLOCK)
            calls.append(partial(launch, nc.conv2d, nc.conv2d_block, blocks, buffers.inputs[k],
                                 values["W"], weights.b[w], layer.strides, weights.codes[k], keep,
                                 buffers.zs[k], out, _pooling(net, buffers, k)))  # fmt: skip
        elif isinstance(layer, Norm):
            calls.append(_norm_forward(layer, values, buffers.norms[k], x, out, training))
        elif isinstance(layer, Activation):
            calls.append(partial(nb.activation_layer, weights.codes[k], _as_rows(x),
                                 _as_rows(out), buffers.log_norm))  # fmt: skip
        elif isinstance(layer, Embedding):  # each id's row; ids are checked on the way in
            calls.append(partial(np.take, values["E"], x, axis=0, out=out, mode="clip"))
        elif isinstance(layer, Recurrent):
            s = buffers.steps[k]
            calls.append(partial(launch, numba_recurrent.forward, numba_recurrent.forward_block,
                                 numba_recurrent.block_total(s), isinstance(layer, LSTM),
                                 weights.codes[k], x, values["W"], values["U"], values["b"], s,
                                 _as_steps(out), layer.return_sequences))  # fmt: skip
        elif isinstance(layer, Dropout) and training:
            calls.append(partial(numba_dropout.dropout, x, layer.rate, layer.scale, buffers.draw,
                                 k, out, buffers.masks[k]))  # fmt: skip
        elif isinstance(layer, Dropout):  # the identity in predictions, or × (1 − rate)
            calls.append(partial(np.multiply, x, out.dtype.type(layer.prediction_scale), out=out))
        elif isinstance(layer, MaxPool2D | AvgPool2D) and k not in buffers.fused:
            calls.append(partial(nc.pool_rows, _pool_code(layer), x, layer.pool_size,
                                 layer.stride, out, buffers.first[k], 0, len(x)))  # fmt: skip
        # Flatten: its output is a view of its input
        w += isinstance(layer, Parametric)
    return calls


def _norm_forward(
    layer: Norm, values: dict, norm: NormBuffers, x: np.ndarray, out: np.ndarray, training: bool
) -> Call:
    x, out = _as_rows(x), _as_rows(out)
    gamma, beta = values["gamma"], values["beta"]
    if isinstance(layer, LayerNorm):
        return partial(nn.layer_norm_forward, x, gamma, beta, layer.epsilon, norm.x_hat,
                       norm.inv_std, out)  # fmt: skip
    if training:
        return partial(nn.batch_norm_forward, x, gamma, beta, layer.epsilon, norm.x_hat,
                       norm.inv_std, norm.mean, norm.var, out)  # fmt: skip
    return partial(nn.batch_norm_inference, x, gamma, beta, values["moving_mean"],
                   values["moving_var"], layer.epsilon, out)  # fmt: skip


def backward_calls(net: Network, weights: Weights, buffers: Buffers) -> list[Call]:
    """The backward pass as calls bound once: every gradient into ``weights.grads`` from the
    output delta, layer by layer down to the first layer with parameters."""
    last = len(net.stack) - 1
    calls: list[Call] = []
    w, first = len(weights.params), net.parametric_positions[0]
    for k in range(last, first - 1, -1):
        layer, grad, x = net.stack[k], buffers.grads[k], _input(buffers, k)
        # ∂C/∂(the input), but for the first layer with parameters: nothing below it needs one
        below = None if k == first else buffers.grads[k - 1]
        w -= isinstance(layer, Parametric)
        if isinstance(layer, Dense):  # ∂C/∂a_l -> δ_l in place, but at the output layer
            calls.extend(_dense_backward(net, weights, w, buffers, k, x, below))
        elif isinstance(layer, Conv2D):
            calls.append(partial(_conv_backward, net, weights, w, buffers, k, x, below))
        elif isinstance(layer, Norm):
            below = below if below is not None else np.empty_like(grad)  # the input's, unused
            calls.append(_norm_backward(layer, weights.params[w], weights.grads[w],
                                        buffers.norms[k], grad, below))  # fmt: skip
        elif isinstance(layer, Embedding):  # the first layer
            ids, rows = x.reshape(-1), grad.reshape(-1, grad.shape[-1])
            calls.append(partial(numba_embedding.embedding_grad, ids, rows, weights.grads[w]["E"]))
        elif isinstance(layer, Recurrent):
            values, grads = weights.params[w], weights.grads[w]
            dx = below if below is not None else np.empty((0,) * 3, grad.dtype)  # unused
            s = buffers.steps[k]
            calls.append(partial(launch, numba_recurrent.backward, numba_recurrent.backward_block,
                                 numba_recurrent.block_total(s), isinstance(layer, LSTM),
                                 weights.codes[k], _as_steps(grad), layer.return_sequences,
                                 values["W"], values["U"], s, dx, below is not None))  # fmt: skip
            calls.append(partial(numba_recurrent.add_sums, s, grads["W"], grads["U"], grads["b"]))
        elif below is None:  # the layers without parameters lie above that one
            raise AssertionError(f"layer {k} below the first with parameters")
        elif isinstance(layer, Dropout):
            calls.append(partial(np.multiply, grad, buffers.masks[k], out=below))
        elif isinstance(layer, Activation):
            calls.append(partial(nb.activation_layer_backward, weights.codes[k], _as_rows(x),
                                 _as_rows(buffers.outs[k]), _as_rows(grad),
                                 _as_rows(below)))  # fmt: skip
        elif isinstance(layer, MaxPool2D | AvgPool2D) and k not in buffers.fused:
            calls.append(partial(nc.pool_grad_rows, _pool_code(layer), grad, buffers.first[k],
                                 layer.pool_size, layer.stride, below, 0, len(grad)))  # fmt: skip
        # Flatten: its gradient is a view of its input's; a fused pool's, the convolution's
    return calls


def row_blocks(net: Network, rows: int) -> int:
    """How many blocks of rows a Dense layer's kernels take: more than one only in a network
    whose other kernels run on Numba's threads, with BLAS on one thread (`numba_rows`)."""
    return block_count(rows, numba_rows.SMALLEST_BLOCK) if runs_on_numba_threads(net) else 1


def _dense_backward(
    net: Network, weights: Weights, w: int, buffers: Buffers, k: int, x: np.ndarray,
    below: np.ndarray | None,
) -> list[Call]:  # fmt: skip
    """Dense layer k (weight layer w): ∂C/∂a made δ in place (but at the output layer, whose
    gradient is δ already), ∂C/∂W and ∂C/∂b and, given ``below``, ∂C/∂(its input) into it; in
    blocks of rows, each block's weight gradients summed apart and added after."""
    grads, x, grad = weights.grads[w], _as_rows(x), _as_rows(buffers.grads[k])
    dx = _as_rows(below) if below is not None else np.empty((0, 0), grad.dtype)  # unused
    code, turn, W = weights.codes[k], k != len(net.stack) - 1, weights.params[w]["W"]
    z, a, bias = _as_rows(buffers.zs[k]), _as_rows(buffers.outs[k]), "b" in grads
    dW, db = grads["W"], weights.db[w]
    blocks = row_blocks(net, len(x))
    if blocks == 1:
        return [partial(nb.dense_backward, code, turn, z, a, grad, x, bias, dW, db, W,
                        below is not None, dx)]  # fmt: skip
    dW_parts, db_parts = block_sums(dW, blocks), block_sums(db, blocks)
    return [
        *([partial(nb.activation_backward, code, z, a, grad)] if turn else []),
        partial(launch, numba_rows.grads, numba_rows.grads_block, blocks, x, grad, bias,
                dW_parts, db_parts, W, below is not None, dx),
        partial(add_blocks, dW_parts, dW),
        partial(add_blocks, db_parts, db),
    ]  # fmt: skip


def _norm_backward(
    layer: Norm, values: dict, grads: dict, norm: NormBuffers, grad: np.ndarray, below: np.ndarray
) -> Call:
    grad, below = _as_rows(grad), _as_rows(below)
    gamma, dgamma, dbeta = values["gamma"], grads["gamma"], grads["beta"]
    backward = nn.batch_norm_backward if isinstance(layer, BatchNorm) else nn.layer_norm_backward
    return partial(backward, grad, gamma, norm.x_hat, norm.inv_std, dgamma, dbeta, below)


def _conv_backward(
    net: Network, weights: Weights, w: int, buffers: Buffers, k: int, x: np.ndarray,
    below: np.ndarray | None,
) -> None:  # fmt: skip
    """Conv2D layer k (weight layer w): δ from the gradient of its output (or of the fused pool
    above it), ∂C/∂W and ∂C/∂b and, given ``below``, ∂C/∂(its input) into it."""
    layer = net.stack[k]
    assert isinstance(layer, Conv2D)
    dx = below if below is not None else np.empty((0,) * 4, x.dtype)  # unused
    dW, db, blocks = weights.grads[w]["W"], weights.db[w], block_count(len(x), nc.SMALLEST_BLOCK)
    dW_parts, db_parts = block_sums(dW, blocks), block_sums(db, blocks)
    launch(
        nc.conv2d_backward, nc.conv2d_backward_block, blocks, buffers.inputs[k], buffers.grads[k],
        weights.params[w]["W"], layer.strides, below is not None, dW_parts, db_parts, dx,
        weights.codes[k], buffers.zs[k], buffers.outs[k], _pooling(net, buffers, k),
    )  # fmt: skip
    add_blocks(dW_parts, dW)
    add_blocks(db_parts, db)


class Walk:
    """One evaluation of ``net`` on a batch size's ``buffers``: its forward pass in training
    mode, loss and backward pass, and each BatchNorm's update of its moving statistics, as
    kernel calls bound once to the buffers and ``weights`` (which the optimizer updates in
    place)."""

    def __init__(self, net: Network, weights: Weights, buffers: Buffers) -> None:
        self.buffers = buffers
        self.forward = forward_calls(net, weights, buffers, training=True)
        self.loss = partial(nb.loss_and_delta, lookup(nb.LOSS_CODES, net.loss, "loss"),
                            weights.codes[-1], buffers.logits, buffers.outs[-1].reshape(-1), 0,
                            buffers.log_norm, _as_rows(buffers.y),
                            buffers.grads[-1].reshape(-1))  # fmt: skip
        self.backward = backward_calls(net, weights, buffers)
        self.moves = [
            partial(
                nn.move_statistics,
                values["moving_mean"],
                values["moving_var"],
                buffers.norms[k].mean,
                buffers.norms[k].var,
                layer.momentum,
                layer.unbiased,
                len(buffers.norms[k].x_hat),
            )
            for k, values in zip(net.parametric_positions, weights.params, strict=True)
            if isinstance(layer := net.stack[k], BatchNorm)
        ]

    def loss_and_grads(self) -> float:
        """Forward, C and the output delta, backward on ``buffers.x`` and ``buffers.y``;
        returns C."""
        for call in self.forward:
            call()
        value = self.loss()
        for call in self.backward:
            call()
        return float(value)

    def move_statistics(self) -> None:
        """Each BatchNorm's moving statistics moved toward its batch's, in place."""
        for call in self.moves:
            call()


def _evaluate(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray | None, full: bool = False
) -> tuple:
    weights, buffers = Weights(net, params, copy=False), Buffers(net, len(X), full)
    buffers.x[...] = X
    if y is None:
        for call in forward_calls(net, weights, buffers, training=False):
            call()
        return None, weights, buffers
    buffers.y[...] = y  # loss_and_grads's masks: the first step's of seed 0, buffers.draw's own
    return Walk(net, weights, buffers).loss_and_grads(), weights, buffers


@on_numba_threads
def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    return _evaluate(net, params, X, None)[2].outs[-1]


@on_numba_threads
def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    value, weights, _ = _evaluate(net, params, X, y)
    return value, weights.grads


@on_numba_threads
def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    """The buffers of one evaluation. The activations overwrite the pre-activations in place,
    so z is kept only for the output layer (the logits) and where f′ reads it; an LSTM's gates
    overwrite its z."""
    value, weights, buffers = _evaluate(net, params, X, y, full=True)
    kept = [k for k, layer in enumerate(net.stack) if isinstance(layer, Weighted)]
    zs = [None if buffers.zs[k] is buffers.outs[k] else buffers.zs[k] for k in kept]
    outputs = [buffers.outs[k] for k in kept]
    steps = [_time_steps(net.stack[k], buffers.steps[k]) for k in sorted(buffers.steps)]
    return Trace(zs, outputs, value, [buffers.grads[k] for k in kept], weights.grads, steps)


def _time_steps(layer: Layer, s: numba_recurrent.Steps) -> TimeSteps:
    """A recurrent layer's time-major buffers as a trace's (N, T, ·) arrays."""

    def batch_major(rows: np.ndarray) -> np.ndarray:
        return numba_recurrent.batch_major(rows, len(s.hu), numba_recurrent.block_total(s))

    z = batch_major(s.z)
    lstm = isinstance(layer, LSTM)
    return TimeSteps(None if lstm else z, z if lstm else None, batch_major(s.h)[:, 1:],
                     batch_major(s.delta))  # fmt: skip


@on_numba_threads
def train_with(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer,
    schedule: list[Batch],
    seed: int = 0,
) -> Trajectory:
    """One step of ``optimizer`` per batch of ``schedule`` on a copy of ``params``, with the
    Dropout masks of ``seed``; the buffers and walk of each batch size and the optimizer's
    state are made here, once."""
    indices, sizes = padded(schedule, len(X))
    weights = Weights(net, params, copy=True)
    walks = {int(n): Walk(net, weights, kept_buffers(net, int(n))) for n in set(sizes.tolist())}
    theta, gradient = weights.theta, weights.gradient
    assert theta is not None
    m, v, a, v_max = (np.zeros_like(theta) for _ in range(4))  # the optimizer's state
    kind, hyper, flags = nb.optimizer_settings(optimizer, net.np_dtype)
    losses = np.empty(len(schedule), net.np_dtype)
    full_batch = all(isinstance(batch, slice) for batch in schedule)
    for walk in walks.values():
        walk.buffers.draw[0] = seed
    for t, (n, rows) in enumerate(zip(sizes.tolist(), indices, strict=True)):
        walk = walks[n]
        batch = walk.buffers
        if not full_batch or t == 0:  # the full batch is gathered once
            np.take(X, rows[:n], axis=0, out=batch.x, mode="clip")  # rows are in range
            np.take(y, rows[:n], axis=0, out=batch.y, mode="clip")
        batch.draw[1] = t
        losses[t] = walk.loss_and_grads()
        walk.move_statistics()
        nb.optimizer_update(kind, hyper, flags, t + 1, theta, gradient, m, v, a, v_max)
    return Trajectory(weights.params, losses)


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    """``steps`` full-batch gradient-descent steps."""
    return train_with(net, params, X, y, SGD(lr), batch_schedule(len(X), None, steps, 0))
