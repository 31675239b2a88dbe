"""The witness's own network: a float64 forward pass and loss from the registry's definitions.

The finite differences and the tolerance policy evaluate the network here, and this module
imports nothing from ``kernels/``: a bug in a hand-written kernel's forward or loss cannot move
the witness that judges it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradcheck.layers import (
    LSTM,
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    MaxPool2D,
    Norm,
    Parametric,
    Pooling,
    Recurrent,
    SimpleRNN,
    Weighted,
)
from gradcheck.masks import dropout_masks
from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, LOSSES, lookup


@dataclass(frozen=True)
class Forward:
    """Every weight layer's pre-activation ``zs[l]``, and ``activations``: X and every layer's
    output, ``activations[k]`` being layer k's input (for widths, the weight layers' a_l);
    all float64. A pass `resume` moved in one channel holds that channel alone where the
    layers act on each channel alone. ``steps[k]``: recurrent layer k's pass through time."""

    zs: list[np.ndarray]
    activations: list[np.ndarray]
    steps: dict[int, Recurrence] = field(default_factory=dict)

    @property
    def outputs(self) -> np.ndarray:
        return self.activations[-1]


def forward(net: Network, params: Params, X: np.ndarray, training: bool = True) -> Forward:
    """The network's forward pass in float64, whatever ``net.dtype`` says: in training mode
    (the loss and its gradient: a BatchNorm normalises with the batch's statistics), or with
    ``training`` False in inference mode (predictions: with its moving statistics)."""
    return _onwards(net, params, [], [net.inputs(X, np.float64)], 0, training)


def resume(
    net: Network,
    params: Params,
    outputs: Forward,
    layer: int,
    z: np.ndarray,
    channel: int | None = None,
) -> Forward:
    """The forward pass ``outputs`` with weight layer ``layer``'s (0-based) pre-activation
    replaced by z: the layers before it as they were, the rest computed from z.

    Given ``channel``, only that output channel moved and z is it alone, (..., 1). The layers
    that act on each channel alone (`_mixed_from`) then compute that channel only, and the
    pass holds only it for them — z and their outputs (..., 1) — but for the last, which the
    next layer reads whole: the other channels kept from ``outputs``, so the loss is the one a
    whole pass gives, for a fraction of the work."""
    k = _positions(net)[layer]
    activations = outputs.activations[: k + 1]
    mixed = k if channel is None else _mixed_from(net, layer)
    if channel is None or mixed == k:
        if channel is not None:
            z = _with_channel(outputs.zs[layer], channel, z)
        a = _activate(net.weighted[layer], z)
        zs = [*outputs.zs[:layer], z]
        return _onwards(net, params, zs, [*activations, a], k + 1, steps=outputs.steps)
    a = _activate(net.weighted[layer], z)
    for pooling in net.stack[k + 1 : mixed]:
        assert isinstance(pooling, Pooling)  # as `_mixed_from` found
        activations.append(a)
        a = pool_or_flatten(pooling, a)
    activations.append(_with_channel(outputs.activations[mixed], channel, a))
    return _onwards(net, params, [*outputs.zs[:layer], z], activations, mixed, steps=outputs.steps)


def _mixed_from(net: Network, layer: int) -> int:
    """Where in ``net.stack`` the channels of weight layer ``layer``'s output first mix: its
    activation, when elementwise, and the pooling layers after it act on each channel alone.
    The layer's own position when its activation mixes them (softmax) or nothing after it
    does (the output layer), so that a pass's outputs are always whole."""
    k = _positions(net)[layer]
    if not lookup(ACTIVATIONS, net.weighted[layer].activation, "activation").elementwise:
        return k
    mixed = k + 1
    while mixed < len(net.stack) and isinstance(net.stack[mixed], Pooling):
        mixed += 1
    return mixed if mixed < len(net.stack) else k


def _with_channel(whole: np.ndarray, channel: int, part: np.ndarray) -> np.ndarray:
    """A copy of ``whole`` with its ``channel`` replaced by ``part`` (..., 1)."""
    out = whole.copy()
    out[..., channel] = part[..., 0]
    return out


def _onwards(
    net: Network,
    params: Params,
    zs: list[np.ndarray],
    activations: list[np.ndarray],
    start: int,
    training: bool = True,
    steps: dict[int, Recurrence] | None = None,
) -> Forward:
    """The forward pass from ``net.stack[start]`` on, given the pre-activations ``zs``,
    ``activations`` and recurrent ``steps`` of the layers before it."""
    a = activations[-1]
    steps = {k: rec for k, rec in (steps or {}).items() if k < start}
    weights = iter(params[sum(isinstance(layer, Parametric) for layer in net.stack[:start]) :])
    for k, layer in enumerate(net.stack[start:], start=start):
        if isinstance(layer, Weighted):
            z = pre_activation(layer, a, next(weights))
            a = _activate(layer, z)
            zs.append(z)
        elif isinstance(layer, Norm):
            a = normalise(layer, a, next(weights), training)
        elif isinstance(layer, Activation):
            a = _activate(layer, a)
        elif isinstance(layer, Dropout):
            a = dropped(net, len(activations) - 1, a) if training else a * layer.prediction_scale
        elif isinstance(layer, Embedding):
            a = np.asarray(next(weights)["E"], np.float64)[a]  # each id's row: (N, T, D)
        elif isinstance(layer, Recurrent):
            a, steps[k] = through_time(layer, a, next(weights))
        elif isinstance(layer, Pooling | Flatten):
            a = pool_or_flatten(layer, a)
        else:
            raise TypeError(f"the witness has no forward for {layer!r}")
        activations.append(a)
    return Forward(zs, activations, steps)


@dataclass(frozen=True)
class Recurrence:
    """A recurrent layer's pass through time, in float64: every step's pre-activation z
    (N, T, blocks·units), every state h_0 … h_T (N, T + 1, units) and, for an LSTM, every cell
    state c_0 … c_T and every step's gates i, f, c̃, o side by side (N, T, 4·units)."""

    z: np.ndarray
    h: np.ndarray
    c: np.ndarray | None = None
    gates: np.ndarray | None = None


def through_time(
    layer: Recurrent, x: np.ndarray, values: dict[str, np.ndarray]
) -> tuple[np.ndarray, Recurrence]:
    """A SimpleRNN or LSTM over x (N, T, D) as Keras defines it, from zero states: its output
    (every h_t, or h_T) and its `Recurrence`. Each step's z = x_t W + h_{t−1} U + b; a
    SimpleRNN's h_t = f(z); an LSTM's z splits into i, f, c, o, and
    c_t = σ(z_f) c_{t−1} + σ(z_i) tanh(z_c), h_t = σ(z_o) tanh(c_t)."""
    W, U, b = (np.asarray(values[key], np.float64) for key in ("W", "U", "b"))
    sigmoid, tanh = ACTIVATIONS["sigmoid"].reference, ACTIVATIONS["tanh"].reference
    N, T, H = len(x), x.shape[1], layer.units
    z = np.empty((N, T, len(layer.blocks) * H))
    h, c = np.zeros((N, T + 1, H)), np.zeros((N, T + 1, H))
    gates = np.empty_like(z)
    for t in range(T):
        z[:, t] = x[:, t] @ W + h[:, t] @ U + b
        if isinstance(layer, LSTM):
            z_i, z_f, z_c, z_o = (z[:, t, j * H : (j + 1) * H] for j in range(4))
            gates[:, t] = np.concatenate([sigmoid(z_i), sigmoid(z_f), tanh(z_c), sigmoid(z_o)], 1)
            i, f, c_tilde, o = np.split(gates[:, t], 4, axis=1)
            c[:, t + 1] = f * c[:, t] + i * c_tilde
            h[:, t + 1] = o * tanh(c[:, t + 1])
        else:
            h[:, t + 1] = _activate(layer, z[:, t])
    output = h[:, 1:] if layer.return_sequences else h[:, -1]
    if isinstance(layer, LSTM):
        return output, Recurrence(z, h, c, gates)
    return output, Recurrence(z, h)


def dropped(net: Network, k: int, x: np.ndarray) -> np.ndarray:
    """The Dropout layer ``net.stack[k]`` in training, on x or on a gradient (the same linear
    map): each unit times its mask (`gradcheck.masks`, seed 0 and step 0, those of the loss
    and gradient checked) and the layer's scale, 1 / (1 − rate) or 1."""
    layer = net.stack[k]
    assert isinstance(layer, Dropout)
    index = sum(isinstance(below, Dropout) for below in net.stack[:k])
    return x * dropout_masks(net, len(x))[index] * layer.scale


def _positions(net: Network) -> list[int]:
    """Where each weight layer sits in ``net.stack``."""
    return [k for k, layer in enumerate(net.stack) if isinstance(layer, Weighted)]


def standardised(
    layer: Norm, x: np.ndarray, values: dict[str, np.ndarray], training: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x − μ) / √(σ² + ε), 1 / √(σ² + ε) and μ, the statistics a BatchNorm's over every axis
    but the last (the batch's in training, its moving ones in predictions), a LayerNorm's over
    the last axis; σ² is the biased variance."""
    if isinstance(layer, BatchNorm) and not training:
        mean, var = (np.asarray(values[key], np.float64) for key in ("moving_mean", "moving_var"))
    else:
        axes = tuple(range(x.ndim - 1)) if isinstance(layer, BatchNorm) else -1
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + layer.epsilon)
    return (x - mean) * inv_std, inv_std, mean


def normalise(
    layer: Norm, x: np.ndarray, values: dict[str, np.ndarray], training: bool
) -> np.ndarray:
    """γ x̂ + β, x̂ `standardised`."""
    gamma, beta = (np.asarray(values[key], np.float64) for key in ("gamma", "beta"))
    return gamma * standardised(layer, x, values, training)[0] + beta


def pre_activation(layer: Weighted, a: np.ndarray, values: dict[str, np.ndarray]) -> np.ndarray:
    """z = a W + b for a Dense layer, the correlation of a with W plus b for a Conv2D one."""
    W = np.asarray(values["W"], np.float64)
    z = a @ W if isinstance(layer, Dense) else _correlate(a, W, layer)
    return z + np.asarray(values["b"], np.float64) if "b" in values else z


def _activate(layer: Weighted | Activation | SimpleRNN, z: np.ndarray) -> np.ndarray:
    return lookup(ACTIVATIONS, layer.activation, "activation").reference(z)


def slope(
    net: Network, outputs: Forward, layer: int, key: str, index: tuple[int, ...]
) -> tuple[int, np.ndarray]:
    """How weight layer ``layer``'s pre-activation moves with its parameter ``key[index]``: z is
    linear in the layer's own weights, and that one moves only the output channel it feeds,
    ``index[-1]``, by the returned array per unit (the rest of z stays)."""
    stacked, x = net.weighted[layer], outputs.activations[_positions(net)[layer]]
    z = outputs.zs[layer]
    if key == "b":
        return index[-1], np.ones(z.shape[:-1])
    if isinstance(stacked, Dense):
        i, o = index  # W (in, out): z[..., o] = Σ_i x[..., i] W[i, o]
        return o, x[..., i]
    p, q, c, o = index  # W (kh, kw, C, O): z[..., o] = Σ window[..., c, p, q] W[p, q, c, o]
    windows = patches(x, stacked.kernel, stacked.strides, stacked.padding)
    return o, windows[..., c, p, q]


def patches(x: np.ndarray, kernel: tuple[int, int], stride: int, mode: str) -> np.ndarray:
    """Every window a kernel of ``kernel`` meets in the (N, H, W, C) image x, padded as Keras
    pads for ``mode`` "valid" or "same": (N, Ho, Wo, C, kh, kw), a view where no padding is
    needed."""
    if mode == "same":
        pads = [padding(x.shape[1 + axis], kernel[axis], stride, mode) for axis in (0, 1)]
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
    return sliding_window_view(x, kernel, axis=(1, 2))[:, ::stride, ::stride]


def padding(size: int, kernel: int, stride: int, mode: str) -> tuple[int, int]:
    """The rows (or columns) added before and after an axis of ``size``: none for "valid";
    for "same" enough for ⌈size / stride⌉ windows, the odd one at the end."""
    if mode == "valid":
        return 0, 0
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _correlate(x: np.ndarray, W: np.ndarray, layer: Conv2D) -> np.ndarray:
    """z[n,i,j,o] = Σ_{c,p,q} window[n,i,j,c,p,q] W[p,q,c,o]."""
    windows = patches(x, layer.kernel, layer.strides, layer.padding)
    return np.tensordot(windows, W, axes=([3, 4, 5], [2, 0, 1]))


def pool_or_flatten(layer: Pooling | Flatten, x: np.ndarray) -> np.ndarray:
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1)
    windows = patches(x, (layer.pool_size, layer.pool_size), layer.stride, "valid")
    return windows.max(axis=(4, 5)) if isinstance(layer, MaxPool2D) else windows.mean(axis=(4, 5))


def first_maxima(layer: MaxPool2D, x: np.ndarray) -> np.ndarray:
    """Which entry of each pooling window of x holds its first maximum, row-major."""
    windows = patches(x, (layer.pool_size, layer.pool_size), layer.stride, "valid")
    return windows.reshape(*windows.shape[:4], -1).argmax(axis=4)


def loss(net: Network, outputs: Forward, y: np.ndarray) -> float:
    """C for the forward pass ``outputs`` and targets ``y`` (N, K), in float64."""
    spec = lookup(LOSSES, net.loss, "loss")
    return spec.reference(outputs.zs[-1], outputs.outputs, np.asarray(y, np.float64))


def has_kinks(net: Network) -> bool:
    """Whether the network has non-differentiable points: a kinked activation (of a weight
    layer, an Activation layer or a SimpleRNN) or a max pool."""
    return any(
        isinstance(layer, MaxPool2D)
        or (
            isinstance(layer, Weighted | Activation | SimpleRNN)
            and ACTIVATIONS[layer.activation].kinks
        )
        for layer in net.stack
    )


def kink_sides(net: Network, outputs: Forward, start: int = 0) -> list[np.ndarray]:
    """Which side of every kink the forward pass ``outputs`` is on, from weight layer ``start``
    (0-based) on: for each pre-activation that feeds an activation with kinks, z > kink, one
    boolean array per (layer, kink); for each max pool, the position of every window's first
    maximum — of one channel where `resume` moved only that one. A SimpleRNN's every step's
    pre-activation counts as a weight layer's."""
    sides: list[np.ndarray] = []
    first = _positions(net)[start] if start else 0
    zs = iter(outputs.zs[start:])
    stack = enumerate(zip(net.stack[first:], outputs.activations[first:], strict=False), first)
    for k, (layer, x) in stack:
        if isinstance(layer, Weighted):
            z = next(zs)
            sides.extend(z > kink for kink in ACTIVATIONS[layer.activation].kinks)
        elif isinstance(layer, Activation):
            sides.extend(x > kink for kink in ACTIVATIONS[layer.activation].kinks)
        elif isinstance(layer, SimpleRNN):
            z = outputs.steps[k].z
            sides.extend(z > kink for kink in ACTIVATIONS[layer.activation].kinks)
        elif isinstance(layer, MaxPool2D):
            sides.append(first_maxima(layer, x))
    return sides
