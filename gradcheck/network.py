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

from gradcheck import layers as nn
from gradcheck import ops
from gradcheck.arguments import is_count
from gradcheck.layers import BatchNorm, Dense, Norm, Parametric, Shape, Weighted, output_shapes

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
    """A network: its layers, one activation per weight layer, a loss.

    Two forms. The dense shorthand gives widths, ``Network([3, 4, 1])``: fully connected layers
    with ``activation`` and ``bias`` shared or listed per weight layer. A layer list gives
    `gradcheck.layers` objects and the per-sample ``input_shape``, channels-last::

        Network([Conv2D(8, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten(),
                 Dense(10, activation="softmax")], input_shape=(8, 8, 1), loss="softmax_ce")

    where each Conv2D and Dense layer carries its own activation and bias; Activation,
    BatchNorm, LayerNorm, Dropout and (first) Embedding layers may sit among them; the last
    layer is a Dense layer. A SimpleRNN or LSTM takes sequences, ``input_shape=(T, D)``; a
    Dense layer on a sequence acts at every time step, so a network may output a sequence,
    (T, K) per sample, with targets of that shape.

    Args:
        layers: the widths from input to output, e.g. ``[3, 4, 1]``; at least two. Or a list of
            `gradcheck.layers` objects.
        activation: (widths only; default sigmoid) one name for every weight layer, or a list with
            one name per weight layer: ``sigmoid``, ``tanh``, ``relu`` (relu′(0) = 0),
            ``identity``, ``softplus``, or ``softmax`` (output layer only); `gradcheck.ops`
            declares them.
        loss: with N samples and K outputs, ``half_sse`` = ½Σ(a − y)², ``mse`` = (1/NK)Σ(a − y)²,
            ``bce`` = (1/NK)Σ −[y log a + (1 − y) log(1 − a)] (needs a sigmoid output),
            ``softmax_ce`` = (1/N)Σ −Σ_k y log a (needs a softmax output).
        bias: (widths only; default True) whether each weight layer has a bias vector ``b``.
            A layer list keeps ``activation`` and ``bias`` None; see ``activations``.
        dtype: ``float32`` or ``float64``; every backend computes in it.
        input_shape: (layer lists only) one sample's shape, e.g. ``(8, 8, 1)`` for an 8×8 image
            with one channel, or ``(64,)``.
    """

    layers: Sequence[int] | Sequence[nn.Layer]
    activation: str | Sequence[str] | None = None
    loss: str = "half_sse"
    bias: bool = None  # type: ignore[assignment]  # None: True for widths
    dtype: str = "float64"
    input_shape: tuple[int, ...] = None  # type: ignore[assignment]  # None: (layers[0],)

    def __post_init__(self) -> None:
        layers = self.layers
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
            raise TypeError(f"layers must be a list of widths such as [3, 4, 1]; got {layers!r}")
        if any(isinstance(layer, nn.Layer) for layer in layers):
            self._init_layer_list()
        else:
            self._init_widths()
        for name in self.activations:
            _one_of("activation", name, ACTIVATIONS)
        for name in self.activations[:-1]:
            if ops.ACTIVATIONS[name].output_only:
                raise ValueError(
                    f"{name} is allowed on the output layer only; got activations "
                    f"{list(self.activations)}"
                )
        for layer in self.weighted:
            fewest = ops.ACTIVATIONS[layer.activation].min_units
            if isinstance(layer, Dense) and layer.units < fewest:
                raise ValueError(
                    f"{layer.activation} needs at least {fewest} units; got {self._shown()}"
                )
        _one_of("loss", self.loss, LOSSES)
        output = self.activations[-1]
        required = ops.LOSSES[self.loss].output
        if required is not None and output != required:
            raise ValueError(f"loss {self.loss!r} needs a {required} output layer; got {output!r}")
        _one_of("dtype", self.dtype, DTYPES)

    def _init_widths(self) -> None:
        layers: Any = self.layers
        if len(layers) < 2:
            raise ValueError(
                f"layers must give at least an input and an output width; got {list(layers)}"
            )
        for width in layers:
            if not is_count(width, 1):
                raise ValueError(f"layers must be positive integers; got {list(layers)}")
        object.__setattr__(self, "layers", tuple(int(w) for w in layers))
        if self.input_shape is not None and tuple(self.input_shape) != (self.layers[0],):
            raise ValueError(
                f"input_shape is the first width, {(self.layers[0],)}, for layers "
                f"{list(self.layers)}; got {self.input_shape!r}"
            )
        object.__setattr__(self, "input_shape", (self.layers[0],))
        if self.bias is None:
            object.__setattr__(self, "bias", True)
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be True or False; got {self.bias!r}")
        activation = "sigmoid" if self.activation is None else self.activation
        if not isinstance(activation, str):
            if not isinstance(activation, Sequence):
                raise TypeError(f"activation must be a name or a list of names; got {activation!r}")
            if len(activation) != len(layers) - 1:
                raise ValueError(
                    f"activation must have one name per weight layer ({len(layers) - 1} for layers "
                    f"{list(self.layers)}); got {len(activation)}: {list(activation)}"
                )
            activation = tuple(activation)
        object.__setattr__(self, "activation", activation)
        names = self.activations
        stack = (Dense(w, name, self.bias) for w, name in zip(layers[1:], names, strict=True))
        object.__setattr__(self, "_stack", tuple(stack))

    def _init_layer_list(self) -> None:
        layers: Any = tuple(self.layers)
        if self.input_shape is None:
            raise ValueError("input_shape must be given with a list of layers, e.g. (8, 8, 1)")
        for argument in ("activation", "bias"):
            if getattr(self, argument) is not None:
                raise ValueError(
                    f"{argument} is given on each Conv2D and Dense layer of a layer list; "
                    f"got {argument}={getattr(self, argument)!r}"
                )
        shapes = output_shapes(self.input_shape, list(layers))
        if not isinstance(layers[-1], Dense):
            raise ValueError(
                f"the last layer must be Dense, whose units are the outputs; got {layers[-1]!r}"
            )
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "input_shape", tuple(int(n) for n in self.input_shape))
        object.__setattr__(self, "_stack", layers)
        object.__setattr__(self, "_shapes", tuple(shapes))

    @property
    def dense(self) -> bool:
        """Given as widths: fully connected layers sharing one bias setting."""
        return isinstance(self.layers[0], int)

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths from input to output: ``layers`` of the dense shorthand, or every layer's
        size for a list of Dense layers on a flat input; a ValueError for images."""
        if any(len(shape) != 1 for shape in (self.input_shape, *self.output_shapes)):
            raise ValueError(f"a network on images has no widths: {self.describe()}")
        return tuple(shape[0] for shape in (self.input_shape, *self.output_shapes))

    @property
    def stack(self) -> tuple[nn.Layer, ...]:
        """Every layer as a `gradcheck.layers` object; the widths' Dense layers for the
        shorthand."""
        return self._stack  # type: ignore[attr-defined]

    @property
    def weighted(self) -> tuple[Weighted, ...]:
        """The Dense and Conv2D layers: those with a pre-activation z and an activation, one per
        entry of ``activations``."""
        return tuple(layer for layer in self.stack if isinstance(layer, Weighted))

    @property
    def parametric(self) -> tuple[Parametric, ...]:
        """The layers with parameters, one per entry of ``params``: Dense, Conv2D, BatchNorm,
        LayerNorm and Embedding."""
        return tuple(layer for layer in self.stack if isinstance(layer, Parametric))

    @property
    def parametric_positions(self) -> tuple[int, ...]:
        """Where each layer with parameters, one per entry of ``params``, sits in ``stack``."""
        return tuple(k for k, layer in enumerate(self.stack) if isinstance(layer, Parametric))

    @property
    def takes_ids(self) -> bool:
        """Whether the inputs are integer ids: the first layer is an Embedding."""
        return isinstance(self.stack[0], nn.Embedding)

    def inputs(self, X: np.ndarray, dtype: Any = None) -> np.ndarray:
        """X as the network takes it: ids as int64 for an Embedding, else values in ``dtype``
        (default: the net's). No checks; `check_X` makes them."""
        if self.takes_ids:
            return np.asarray(X).astype(np.int64, copy=False)
        return np.asarray(X).astype(self.np_dtype if dtype is None else dtype, copy=False)

    @property
    def modal(self) -> bool:
        """Whether training and predictions compute differently: a BatchNorm normalises with the
        batch's statistics in training and with its moving ones in predictions, a Dropout
        drops units in training only."""
        return any(isinstance(layer, BatchNorm | nn.Dropout) for layer in self.stack)

    @property
    def output_shapes(self) -> tuple[Shape, ...]:
        """The per-sample shape each layer of ``stack`` makes."""
        if self.dense:
            return tuple((width,) for width in self.layers[1:])  # type: ignore[misc]
        return self._shapes  # type: ignore[attr-defined]

    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        """The per-sample shape each layer of ``stack`` takes."""
        return (self.input_shape, *self.output_shapes[:-1])

    @property
    def outputs(self) -> int:
        """K, the number of outputs per sample (per time step for a sequence's)."""
        return self.output_shapes[-1][-1]

    @property
    def output_shape(self) -> Shape:
        """One sample's outputs: (K,), or (T, K) for a sequence."""
        return self.output_shapes[-1]

    @property
    def depth(self) -> int:
        """The number of weight layers (``len(layers) - 1`` for widths)."""
        return len(self.weighted)

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation name per Dense or Conv2D layer (``weighted``); an Activation layer's
        own is on the layer."""
        if not self.dense:
            return tuple(layer.activation for layer in self.weighted)
        if isinstance(self.activation, str):
            return (self.activation,) * (len(self.layers) - 1)
        return tuple(self.activation)  # type: ignore[arg-type]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def _shown(self) -> str:
        return f"layers {list(self.layers)}"

    def describe(self) -> str:
        """A one-line summary, e.g. ``3-4-1 sigmoid/sigmoid half_sse, no bias, float64`` or
        ``8×8×1 → conv 8 3×3 same relu → maxpool 2 → flatten → dense 10 softmax, softmax_ce,
        float64``."""
        if not self.dense:
            shape = "×".join(str(n) for n in self.input_shape)
            stack = " → ".join(layer.describe() for layer in self.stack)
            return f"{shape} → {stack}, {self.loss}, {self.dtype}"
        widths = "-".join(str(w) for w in self.layers)
        bias = "bias" if self.bias else "no bias"
        return f"{widths} {'/'.join(self.activations)} {self.loss}, {bias}, {self.dtype}"

    def to_dict(self) -> dict[str, Any]:
        """The network as JSON: ``layers`` its widths, or one object per layer with its
        ``type`` and arguments; ``input_shape``, ``activations`` (one per weight layer), ``loss``,
        ``bias`` (null for a layer list, whose layers say) and ``dtype``."""
        return {
            "layers": list(self.layers)
            if self.dense
            else [nn.as_dict(layer) for layer in self.stack],
            "input_shape": list(self.input_shape),
            "activations": list(self.activations),
            "loss": self.loss,
            "bias": self.bias,
            "dtype": self.dtype,
        }

    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every parameter, structured like ``params``: a BatchNorm's moving
        statistics included."""
        return [
            layer.param_shapes(shape)
            for layer, shape in zip(self.stack, self.input_shapes, strict=True)
            if isinstance(layer, Parametric)
        ]

    def grad_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shape of every gradient, structured like ``params``' trainable entries: all but a
        BatchNorm's moving statistics, which are state."""
        return [
            nn.trainable(layer, shapes)
            for layer, shapes in zip(self.parametric, self.shapes(), strict=True)
        ]

    def trainable(self, params: Params) -> Params:
        """``params``' trainable entries, the structure of a gradient: a BatchNorm's moving
        statistics left out."""
        return [
            {key: layer[key] for key in shapes}
            for layer, shapes in zip(params, self.grad_shapes(), strict=True)
        ]

    def init(self, seed: int = 0, scheme: str = "glorot_uniform") -> Params:
        """Fresh parameters, one dict per weight layer, in the net's dtype.

        Draws come from ``np.random.RandomState(seed)`` layer by layer in float64, then are cast.
        ``scheme="uniform"`` is U[0, 1), the notebook's ``np.random.rand(fan_in, fan_out)`` for
        each layer in turn: its unseeded draws made reproducible (the same arrays as its code run
        after ``np.random.seed(seed)``). ``glorot_uniform`` is Keras's default, U(−l, l) with
        l = √(6 / (fan_in + fan_out)), where a (kh, kw, C, O) kernel has fan_in = kh·kw·C and
        fan_out = kh·kw·O. Biases start at zero, as in Keras.

        A SimpleRNN's or LSTM's W is drawn as a Dense W (fan_in D, fan_out its columns), U is
        Keras's orthogonal under ``glorot_uniform`` (U[0, 1) under ``uniform``) and b starts at
        zero but for an LSTM's forget block, at 1 (Keras's ``unit_forget_bias``), in both schemes.
        A BatchNorm's or LayerNorm's γ starts at 1 and β at 0, a BatchNorm's moving mean at 0
        and moving variance at 1, as in Keras; they draw nothing. An Embedding's E is drawn as
        Keras draws it under ``glorot_uniform``, U(−0.05, 0.05) (Keras's ``uniform``
        initializer), or U[0, 1) under ``uniform``.

        Returns:
            ``[{"W": (fan_in, fan_out), "b": (fan_out,)}, ...]``, ``"b"`` absent without bias;
            a Conv2D layer's W is (kh, kw, C, O); a normalisation's ``{"gamma", "beta"}``
            (and a BatchNorm's ``"moving_mean"``, ``"moving_var"``), each (C,); an Embedding's
            ``{"E": (input_dim, output_dim)}``.
        """
        if not is_count(seed, 0):
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        _one_of("scheme", scheme, INIT_SCHEMES)
        rng = np.random.RandomState(int(seed))
        params: Params = []
        for stacked, shapes in zip(self.parametric, self.shapes(), strict=True):
            if isinstance(stacked, Norm):
                starts = {"gamma": 1, "beta": 0, "moving_mean": 0, "moving_var": 1}
                params.append(
                    {key: np.full(shape, starts[key], self.dtype) for key, shape in shapes.items()}
                )
                continue
            if isinstance(stacked, nn.Embedding):
                shape = shapes["E"]
                E = rng.rand(*shape) if scheme == "uniform" else rng.uniform(-0.05, 0.05, shape)
                params.append({"E": E.astype(self.dtype)})
                continue
            layer = {"W": _kernel(rng, shapes["W"], scheme).astype(self.dtype)}
            if "U" in shapes:
                U = rng.rand(*shapes["U"]) if scheme == "uniform" else _orthogonal(rng, shapes["U"])
                layer["U"] = U.astype(self.dtype)
            if "b" in shapes:
                layer["b"] = np.zeros(shapes["b"], dtype=self.dtype)
            if isinstance(stacked, nn.LSTM):  # unit_forget_bias: the f block starts at 1
                layer["b"][stacked.units : 2 * stacked.units] = 1
            params.append(layer)
        return params


def _kernel(rng: np.random.RandomState, shape: Shape, scheme: str) -> np.ndarray:
    """U[0, 1), or glorot_uniform: U(−l, l) with l = √(6 / (fan_in + fan_out))."""
    if scheme == "uniform":
        return rng.rand(*shape)
    receptive = math.prod(shape[:-2])  # kh·kw for a kernel, 1 for a Dense W
    fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _orthogonal(rng: np.random.RandomState, shape: Shape) -> np.ndarray:
    """Keras's Orthogonal initializer (gain 1) for a 2-D shape: the Q of a standard normal
    (max, min) matrix's QR, its columns' signs those of R's diagonal, transposed when there are
    fewer rows than columns, so that the shorter side's vectors are orthonormal."""
    rows, cols = shape
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return q.T if rows < cols else q


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


def _as_ids(X: Any, vocabulary: int) -> np.ndarray:
    """``X`` as int64 ids, each in [0, vocabulary): integers, or floats that are whole."""
    array = np.asarray(X)
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise TypeError(
            f"X must be a non-empty array of integer ids for an Embedding; got dtype "
            f"{array.dtype}, shape {array.shape}"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise ValueError("X must hold whole numbers, the ids of an Embedding; it holds fractions")
    low, high = array.min(), array.max()
    if low < 0 or high >= vocabulary:
        raise ValueError(
            f"X's ids must lie in [0, {vocabulary}) for Embedding(input_dim={vocabulary}); got "
            f"ids from {low:g} to {high:g}"
        )
    return array.astype(np.int64)


def check_X(net: Network, X: Any) -> np.ndarray:
    """``X`` cast to the net's dtype, after checking it is ``(N, *input_shape)`` and finite; or,
    for an Embedding first layer, to int64 ids, each checked to be in [0, input_dim): NumPy
    would wrap a negative id and JAX clamp one too large, silently."""
    first = net.stack[0]
    if isinstance(first, nn.Embedding):
        X = _as_ids(X, first.input_dim)
    else:
        X = _as_float_array("X", X, net.np_dtype)
    if not net.dense:
        if X.shape[1:] != net.input_shape:
            shape = ", ".join(str(n) for n in net.input_shape)
            raise ValueError(f"X must have shape (samples, {shape}); got shape {X.shape}")
        return X
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, {net.layers[0]}); got shape {X.shape}")
    if X.shape[1] != net.layers[0]:
        raise ValueError(f"X must have layers[0] = {net.layers[0]} columns; got shape {X.shape}")
    return X


def check_data(net: Network, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` cast to the net's dtype: ``X (N, *input_shape)``, ``y (N, outputs)`` or, for
    a network whose outputs are a sequence, ``(N, T, outputs)``."""
    X = check_X(net, X)
    y = _as_float_array("y", y, net.np_dtype)
    expected = (X.shape[0], *net.output_shape)
    if y.shape != expected:
        outputs = "layers[-1]" if net.dense else "the last layer's units"
        if len(net.output_shape) == 2:
            outputs = "time steps, " + outputs
        raise ValueError(f"y must have shape {expected} (X's rows, {outputs}); got shape {y.shape}")
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
            f"params must be a list of {len(expected)} layer dicts for {net._shown()}; got {got}"
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
        if "moving_var" in cast and np.any(cast["moving_var"] < 0):
            raise ValueError(f"params layer {index} moving_var must not be negative")
        checked.append(cast)
    return checked


def check_batches(net: Network, n_samples: int, batch_size: int | None) -> None:
    """A BatchNorm that moves its variance toward the unbiased one needs at least two values per
    channel in every batch, the smallest included (the last of an epoch may be short)."""
    smallest = n_samples if batch_size is None else (n_samples % batch_size or batch_size)
    for layer, shape in zip(net.stack, net.input_shapes, strict=True):
        values = smallest * math.prod(shape[:-1])
        if isinstance(layer, nn.BatchNorm) and layer.unbiased and values < 2:
            raise ValueError(
                f"{layer!r} takes the unbiased variance of each batch, which needs two values "
                f"per channel; batch_size={batch_size!r} on {n_samples} samples leaves a batch "
                f"with {values}"
            )


def check_steps_lr(steps: Any, lr: Any) -> tuple[int, float]:
    """``steps`` a non-negative integer and ``lr`` a positive finite number."""
    if not is_count(steps, 0):
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    return int(steps), float(lr)
