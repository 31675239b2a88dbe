"""The network description, its parameter layout and initialisation, and input validation.

A `Network` is a frozen description (widths, activations, loss, bias, dtype); ``params`` is a
list with one plain dict per weight layer, ``{"W": (fan_in, fan_out), "b": (fan_out,)}`` — the
layout of a Keras Dense kernel. Every backend receives the same two objects, validated and cast
here, so that no backend starts work on input that another would reject.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck import ops

#: The names the registry (`gradcheck.ops`) declares.
ACTIVATIONS = tuple(ops.ACTIVATIONS)
LOSSES = tuple(ops.LOSSES)
DTYPES = ("float32", "float64")
INIT_SCHEMES = ("glorot_uniform", "uniform")

#: A layer's parameters: ``{"W": (fan_in, fan_out), "b": (fan_out,)}``, ``"b"`` only with bias.
Layer = dict[str, np.ndarray]
Params = list[Layer]


def _one_of(argument: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{argument} must be one of {', '.join(allowed)}; got {value!r}")
    return value


@dataclass(frozen=True)
class Network:
    """A fully connected network: ``layers`` widths, one activation per weight layer, a loss.

    Args:
        layers: the widths from input to output, e.g. ``[3, 4, 1]``; at least two.
        activation: one name for every weight layer, or a list with one name per weight layer:
            ``sigmoid``, ``tanh``, ``relu`` (relu′(0) = 0), ``identity``, ``softplus``, or
            ``softmax`` (output layer only); `gradcheck.ops` declares them.
        loss: with N samples and K outputs, ``half_sse`` = ½Σ(a − y)², ``mse`` = (1/NK)Σ(a − y)²,
            ``bce`` = (1/NK)Σ −[y log a + (1 − y) log(1 − a)] (needs a sigmoid output),
            ``softmax_ce`` = (1/N)Σ −Σ_k y log a (needs a softmax output).
        bias: whether each weight layer has a bias vector ``b``.
        dtype: ``float32`` or ``float64``; every backend computes in it.
    """

    layers: Sequence[int]
    activation: str | Sequence[str] = "sigmoid"
    loss: str = "half_sse"
    bias: bool = True
    dtype: str = "float64"

    def __post_init__(self) -> None:
        layers = self.layers
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
            raise TypeError(f"layers must be a list of widths such as [3, 4, 1]; got {layers!r}")
        if len(layers) < 2:
            raise ValueError(
                f"layers must give at least an input and an output width; got {list(layers)}"
            )
        for width in layers:
            if not isinstance(width, numbers.Integral) or isinstance(width, bool) or width < 1:
                raise ValueError(f"layers must be positive integers; got {list(layers)}")
        object.__setattr__(self, "layers", tuple(int(w) for w in layers))

        activation = self.activation
        if not isinstance(activation, str):
            if not isinstance(activation, Sequence):
                raise TypeError(f"activation must be a name or a list of names; got {activation!r}")
            if len(activation) != self.depth:
                raise ValueError(
                    f"activation must have one name per weight layer ({self.depth} for layers "
                    f"{list(self.layers)}); got {len(activation)}: {list(activation)}"
                )
            activation = tuple(activation)
            object.__setattr__(self, "activation", activation)
        for name in self.activations:
            _one_of("activation", name, ACTIVATIONS)
        for name in self.activations[:-1]:
            if ops.ACTIVATIONS[name].output_only:
                raise ValueError(
                    f"{name} is allowed on the output layer only; got activations "
                    f"{list(self.activations)}"
                )
        for width, name in zip(self.layers[1:], self.activations, strict=True):
            fewest = ops.ACTIVATIONS[name].min_units
            if width < fewest:
                raise ValueError(
                    f"{name} needs at least {fewest} units; got layers {list(self.layers)}"
                )
        _one_of("loss", self.loss, LOSSES)
        output = self.activations[-1]
        required = ops.LOSSES[self.loss].output
        if required is not None and output != required:
            raise ValueError(f"loss {self.loss!r} needs a {required} output layer; got {output!r}")
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be True or False; got {self.bias!r}")
        _one_of("dtype", self.dtype, DTYPES)

    @property
    def depth(self) -> int:
        """The number of weight layers, ``len(layers) - 1``."""
        return len(self.layers) - 1

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation name per weight layer."""
        if isinstance(self.activation, str):
            return (self.activation,) * self.depth
        return tuple(self.activation)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def describe(self) -> str:
        """A one-line summary, e.g. ``3-4-1 sigmoid/sigmoid half_sse, no bias, float64``."""
        widths = "-".join(str(w) for w in self.layers)
        bias = "bias" if self.bias else "no bias"
        return f"{widths} {'/'.join(self.activations)} {self.loss}, {bias}, {self.dtype}"

    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every parameter, structured like ``params``."""
        shapes = []
        for fan_in, fan_out in zip(self.layers[:-1], self.layers[1:], strict=True):
            layer: dict[str, tuple[int, ...]] = {"W": (fan_in, fan_out)}
            if self.bias:
                layer["b"] = (fan_out,)
            shapes.append(layer)
        return shapes

    def init(self, seed: int = 0, scheme: str = "glorot_uniform") -> Params:
        """Fresh parameters, one dict per weight layer, in the net's dtype.

        Draws come from ``np.random.RandomState(seed)`` layer by layer in float64, then are cast.
        ``scheme="uniform"`` is U[0, 1), the notebook's ``np.random.rand(fan_in, fan_out)`` for
        each layer in turn: its unseeded draws made reproducible (the same arrays as its code run
        after ``np.random.seed(seed)``). ``glorot_uniform`` is Keras's default, U(−l, l) with
        l = √(6 / (fan_in + fan_out)). Biases start at zero, as in Keras.

        Returns:
            ``[{"W": (fan_in, fan_out), "b": (fan_out,)}, ...]``, ``"b"`` absent without bias.
        """
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        _one_of("scheme", scheme, INIT_SCHEMES)
        rng = np.random.RandomState(int(seed))
        params: Params = []
        for shapes in self.shapes():
            fan_in, fan_out = shapes["W"]
            if scheme == "uniform":
                W = rng.rand(fan_in, fan_out)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
            layer = {"W": W.astype(self.dtype)}
            if self.bias:
                layer["b"] = np.zeros(fan_out, dtype=self.dtype)
            params.append(layer)
        return params


def as_network(net: object) -> Network:
    if not isinstance(net, Network):
        raise TypeError(f"net must be a gradcheck.Network; got {type(net).__name__}")
    return net


def _as_float_array(argument: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as a finite array of ``dtype``; bool, int and float input is accepted."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{argument} must be a numeric array; got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{argument} must not be empty; got shape {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{argument} must be finite; it holds NaN or Inf")
    return array.astype(dtype, copy=False)


def check_X(net: Network, X: Any) -> np.ndarray:
    """``X`` cast to the net's dtype, after checking it is ``(N, layers[0])`` and finite."""
    X = _as_float_array("X", X, net.np_dtype)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, {net.layers[0]}); got shape {X.shape}")
    if X.shape[1] != net.layers[0]:
        raise ValueError(f"X must have layers[0] = {net.layers[0]} columns; got shape {X.shape}")
    return X


def check_data(net: Network, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` cast to the net's dtype: ``X (N, layers[0])``, ``y (N, layers[-1])``."""
    X = check_X(net, X)
    y = _as_float_array("y", y, net.np_dtype)
    expected = (X.shape[0], net.layers[-1])
    if y.shape != expected:
        raise ValueError(
            f"y must have shape {expected} (X's rows, layers[-1]); got shape {y.shape}"
        )
    targets = ops.LOSSES[net.loss].targets
    if targets is not None and (np.any(y < targets[0]) or np.any(y > targets[1])):
        raise ValueError(f"y must lie in [{targets[0]:g}, {targets[1]:g}] for loss {net.loss!r}")
    return X, y


def check_params(net: Network, params: Any) -> Params:
    """``params`` cast to the net's dtype (no copy when they already are), shapes checked."""
    expected = net.shapes()
    if not isinstance(params, Sequence) or len(params) != len(expected):
        got = len(params) if isinstance(params, Sequence) else type(params).__name__
        raise ValueError(
            f"params must be a list of {len(expected)} layer dicts for layers "
            f"{list(net.layers)}; got {got}"
        )
    checked: Params = []
    for index, (layer, shapes) in enumerate(zip(params, expected, strict=True), start=1):
        if not isinstance(layer, dict) or set(layer) != set(shapes):
            keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
            raise ValueError(f"params layer {index} must have keys {sorted(shapes)}; got {keys}")
        cast = {}
        for key, shape in shapes.items():
            array = _as_float_array(f"params layer {index} {key}", layer[key], net.np_dtype)
            if array.shape != shape:
                raise ValueError(
                    f"params layer {index} {key} must have shape {shape}; got {array.shape}"
                )
            cast[key] = array
        checked.append(cast)
    return checked


def check_steps_lr(steps: Any, lr: Any) -> tuple[int, float]:
    """``steps`` a non-negative integer and ``lr`` a positive finite number."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    return int(steps), float(lr)
