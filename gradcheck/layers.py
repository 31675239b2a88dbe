"""Layers of a convolutional network, described as Keras describes them.

Images are channels-last, (H, W, C) per sample; a Conv2D kernel is (kh, kw, C, filters), Keras's
layout, so that the Keras model takes the same arrays. Each layer knows the shape it makes of its
input and the parameters it has; `output_shapes` walks a list of layers from an input shape and
refuses, naming the layer and the shapes, anything that does not fit — a kernel or pool larger
than its input, a Dense layer on an image that was not flattened.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from gradcheck.arguments import is_count
from gradcheck.ops import ACTIVATIONS, hidden_activations, lookup

#: The public names, as the API reference shows them.
__all__ = [
    "LSTM",
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "LayerNorm",
    "MaxPool2D",
    "SimpleRNN",
    "output_shapes",
]

Shape = tuple[int, ...]


def _positive(name: str, value: Any) -> int:
    if not is_count(value, 1):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _pair(name: str, value: Any) -> tuple[int, int]:
    """An int n as (n, n), or a pair of positive ints."""
    if isinstance(value, tuple | list) and len(value) == 2:
        return _positive(name, value[0]), _positive(name, value[1])
    n = _positive(name, value)
    return n, n


def _image(layer: Any, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"{layer!r} needs an image input (H, W, C); got shape {shape}")
    return shape[0], shape[1], shape[2]


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


def _activation(value: Any) -> str:
    lookup(ACTIVATIONS, value, "activation")
    return str(value)


@dataclass(frozen=True)
class Conv2D:
    """``filters`` kernels of ``kernel_size`` slid at ``strides`` over the image, with
    ``padding`` "valid" (windows that fit) or "same" (⌈H / s⌉ outputs, Keras's padding)."""

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int = 1
    padding: str = "valid"
    activation: str = "identity"
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", _positive("filters", self.filters))
        object.__setattr__(self, "kernel_size", _pair("kernel_size", self.kernel_size))
        object.__setattr__(self, "strides", _positive("strides", self.strides))
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same'; got {self.padding!r}")
        if self.activation not in hidden_activations():
            allowed = ", ".join(hidden_activations())
            raise ValueError(f"Conv2D activation must be one of {allowed}; got {self.activation!r}")
        _flag("bias", self.bias)

    @property
    def kernel(self) -> tuple[int, int]:
        return _pair("kernel_size", self.kernel_size)

    def describe(self) -> str:
        """E.g. ``conv 8 3×3 same relu``, with ``/2`` for a stride of 2."""
        kh, kw = self.kernel
        stride = f"/{self.strides}" if self.strides != 1 else ""
        return _words(f"conv {self.filters} {kh}×{kw}{stride} {self.padding}", self)

    def output_shape(self, shape: Shape) -> Shape:
        height, width, _ = _image(self, shape)
        if self.padding == "same":
            return math.ceil(height / self.strides), math.ceil(width / self.strides), self.filters
        kh, kw = self.kernel
        if kh > height or kw > width:
            raise ValueError(
                f"{self!r}: the {kh}×{kw} kernel is larger than its {height}×{width} input"
            )
        rows, cols = (height - kh) // self.strides + 1, (width - kw) // self.strides + 1
        return rows, cols, self.filters

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        channels = _image(self, shape)[2]
        shapes: dict[str, Shape] = {"W": (*self.kernel, channels, self.filters)}
        if self.bias:
            shapes["b"] = (self.filters,)
        return shapes


@dataclass(frozen=True)
class _Pool:
    """A window of ``pool_size`` slid at ``strides`` (default: the pool size), no padding."""

    pool_size: int
    strides: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_size", _positive("pool_size", self.pool_size))
        if self.strides is not None:
            object.__setattr__(self, "strides", _positive("strides", self.strides))

    @property
    def stride(self) -> int:
        return self.pool_size if self.strides is None else int(self.strides)

    def describe(self) -> str:
        """E.g. ``maxpool 2``, with ``/1`` for a stride other than the pool size."""
        stride = f"/{self.stride}" if self.stride != self.pool_size else ""
        return f"{type(self).__name__[:3].lower()}pool {self.pool_size}{stride}"

    def output_shape(self, shape: Shape) -> Shape:
        height, width, channels = _image(self, shape)
        size = self.pool_size
        if size > height or size > width:
            raise ValueError(
                f"{self!r}: the {size}×{size} pool does not fit its {height}×{width} input"
            )
        return (height - size) // self.stride + 1, (width - size) // self.stride + 1, channels

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class MaxPool2D(_Pool):
    """The largest entry of each window; its gradient goes to the window's first maximum."""


@dataclass(frozen=True)
class AvgPool2D(_Pool):
    """The mean of each window."""


@dataclass(frozen=True)
class Flatten:
    """(H, W, C) → (H·W·C,), row-major, as Keras's Flatten."""

    def describe(self) -> str:
        return "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Dense:
    """z = a W + b on a flat input, W of shape (fan_in, units); on a sequence (T, fan_in), the
    same at every time step, as Keras's Dense on a 3-D input."""

    units: int
    activation: str = "identity"
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", _positive("units", self.units))
        object.__setattr__(self, "activation", _activation(self.activation))
        _flag("bias", self.bias)

    def describe(self) -> str:
        """E.g. ``dense 10 softmax``."""
        return _words(f"dense {self.units}", self)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) > 2:
            raise ValueError(
                f"{self!r} needs a flat input or a sequence; got shape {shape}: put Flatten() "
                "before it"
            )
        return (*shape[:-1], self.units)  # on a sequence (T, D), the same z at every step

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"W": (shape[-1], self.units)}
        if self.bias:
            shapes["b"] = (self.units,)
        return shapes


@dataclass(frozen=True)
class Activation:
    """Keras's Activation layer: a = f(x), elementwise; any activation but the softmax, which
    belongs to the output Dense layer."""

    activation: str

    def __post_init__(self) -> None:
        if self.activation not in hidden_activations():
            allowed = ", ".join(hidden_activations())
            raise ValueError(
                f"Activation's activation must be one of {allowed}; got {self.activation!r}"
            )

    def describe(self) -> str:
        return self.activation

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {}


def _epsilon(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"epsilon must be a positive number; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BatchNorm:
    """Keras's BatchNormalization over every axis but the last (the batch, and height and width
    after a Conv2D). Training normalises with the batch's mean and biased variance,
    x̂ = (x − μ) / √(σ² + ε), and outputs γ x̂ + β; each training step then moves the state,
    moving = momentum · moving + (1 − momentum) · the batch's statistic. Predictions normalise
    with the moving statistics. ``moving_mean`` and ``moving_var`` are state: no gradient, no
    optimizer.

    ``moving_variance`` "unbiased" moves the variance toward the batch's unbiased one, m/(m − 1)
    times the biased, m the values per channel: PyTorch's convention (whose momentum is
    1 − Keras's, and ε 1e-5), for checking a port of PyTorch code. Keras's BatchNormalization
    has only "biased"."""

    momentum: float = 0.99
    epsilon: float = 1e-3
    moving_variance: str = "biased"

    #: The parameters that are state, moved by the layer's own rule, not by gradients.
    state = ("moving_mean", "moving_var")

    def __post_init__(self) -> None:
        momentum = self.momentum
        if isinstance(momentum, bool) or not isinstance(momentum, int | float):
            raise ValueError(f"momentum must be a number in [0, 1]; got {momentum!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a number in [0, 1]; got {momentum!r}")
        object.__setattr__(self, "momentum", float(momentum))
        object.__setattr__(self, "epsilon", _epsilon(self.epsilon))
        if self.moving_variance not in ("biased", "unbiased"):
            raise ValueError(
                f"moving_variance must be 'biased' or 'unbiased'; got {self.moving_variance!r}"
            )

    @property
    def unbiased(self) -> bool:
        """Whether the moving variance moves toward the batch's unbiased variance."""
        return self.moving_variance == "unbiased"

    def describe(self) -> str:
        unbiased = " unbiased" if self.unbiased else ""
        return f"batchnorm m={self.momentum:g} ε={self.epsilon:g}{unbiased}"

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        keys = ("gamma", "beta", "moving_mean", "moving_var")
        return {key: (shape[-1],) for key in keys}


@dataclass(frozen=True)
class LayerNorm:
    """Keras's LayerNormalization over the last axis: x̂ = (x − μ) / √(σ² + ε) with each
    sample's (and position's) own mean and biased variance, then γ x̂ + β; the same in training
    and in predictions."""

    epsilon: float = 1e-3

    state = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", _epsilon(self.epsilon))

    def describe(self) -> str:
        return f"layernorm ε={self.epsilon:g}"

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {"gamma": (shape[-1],), "beta": (shape[-1],)}


@dataclass(frozen=True)
class Dropout:
    """Keras's Dropout: in training each unit is dropped with probability ``rate`` and the kept
    ones are scaled by 1 / (1 − rate) (inverted dropout); in predictions it is the identity.
    ``scaling="at_prediction"`` is the 2012 paper's convention instead: the kept units as they
    are in training, every unit × (1 − rate) in predictions. The masks are gradcheck's
    (`gradcheck.masks`), the same in every backend."""

    rate: float
    scaling: str = "inverted"

    def __post_init__(self) -> None:
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise ValueError(f"rate must be a number in [0, 1); got {rate!r}")
        object.__setattr__(self, "rate", float(rate))
        if self.scaling not in ("inverted", "at_prediction"):
            raise ValueError(f"scaling must be 'inverted' or 'at_prediction'; got {self.scaling!r}")

    @property
    def scale(self) -> float:
        """What a kept unit is multiplied by in training: 1 / (1 − rate), or 1."""
        return 1 / (1 - self.rate) if self.scaling == "inverted" else 1.0

    @property
    def prediction_scale(self) -> float:
        """What every unit is multiplied by in predictions: 1, or (1 − rate)."""
        return 1.0 if self.scaling == "inverted" else 1 - self.rate

    def describe(self) -> str:
        at_prediction = " scaled at prediction" if self.scaling == "at_prediction" else ""
        return f"dropout {self.rate:g}{at_prediction}"

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Embedding:
    """Keras's Embedding, as the first layer: each of a sample's integer ids in
    [0, ``input_dim``) looks up its row of E (``input_dim``, ``output_dim``), so (T,) ids make
    (T, output_dim). Its gradient adds each position's gradient into the row of its id: a
    scatter-add that sums repeated ids."""

    input_dim: int
    output_dim: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_dim", _positive("input_dim", self.input_dim))
        object.__setattr__(self, "output_dim", _positive("output_dim", self.output_dim))

    def describe(self) -> str:
        return f"embedding {self.input_dim}→{self.output_dim}"

    def output_shape(self, shape: Shape) -> Shape:
        return (*shape, self.output_dim)

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        return {"E": (self.input_dim, self.output_dim)}


def _sequence(layer: Any, shape: Shape) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"{layer!r} needs a sequence input (T, D); got shape {shape}")
    return shape[0], shape[1]


class _Recurrent:
    """What a SimpleRNN and an LSTM share: their shapes, from ``units``, ``return_sequences``
    and ``blocks``, the column blocks of W, U and b."""

    units: int
    return_sequences: bool
    blocks: tuple[str, ...]

    def output_shape(self, shape: Shape) -> Shape:
        steps, _ = _sequence(self, shape)
        return (steps, self.units) if self.return_sequences else (self.units,)

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        """W (D, blocks·units), U (units, blocks·units), b (blocks·units,)."""
        width = len(self.blocks) * self.units
        return {"W": (_sequence(self, shape)[1], width), "U": (self.units, width), "b": (width,)}


@dataclass(frozen=True)
class SimpleRNN(_Recurrent):
    """Keras's SimpleRNN: h_t = f(x_t W + h_{t−1} U + b) from h_0 = 0 over a sequence (T, D);
    the last state h_T (units,), or with ``return_sequences`` every h_t (T, units)."""

    units: int
    activation: str = "tanh"
    return_sequences: bool = False

    #: The blocks of W's, U's and b's columns, in order: one for a SimpleRNN.
    blocks = ("h",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", _positive("units", self.units))
        if self.activation not in hidden_activations():
            allowed = ", ".join(hidden_activations())
            raise ValueError(
                f"SimpleRNN activation must be one of {allowed}; got {self.activation!r}"
            )
        _flag("return_sequences", self.return_sequences)

    def describe(self) -> str:
        sequences = " sequences" if self.return_sequences else ""
        return f"rnn {self.units} {self.activation}{sequences}"


@dataclass(frozen=True)
class LSTM(_Recurrent):
    """Keras's LSTM: z = x_t W + h_{t−1} U + b split into the blocks i, f, c, o, in that order;
    i, f, o = σ(·), c̃ = tanh(·); c_t = f ⊙ c_{t−1} + i ⊙ c̃, h_t = o ⊙ tanh(c_t), from zero
    states. W (D, 4·units), U (units, 4·units), b (4·units,); the last state h_T, or with
    ``return_sequences`` every h_t."""

    units: int
    return_sequences: bool = False

    blocks = ("i", "f", "c", "o")

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", _positive("units", self.units))
        _flag("return_sequences", self.return_sequences)

    def describe(self) -> str:
        sequences = " sequences" if self.return_sequences else ""
        return f"lstm {self.units}{sequences}"


Layer = (
    Conv2D
    | MaxPool2D
    | AvgPool2D
    | Flatten
    | Dense
    | Activation
    | BatchNorm
    | LayerNorm
    | Dropout
    | Embedding
    | SimpleRNN
    | LSTM
)
#: The recurrent layers: W, U and b, run through time.
Recurrent = SimpleRNN | LSTM
#: The layers with a pre-activation z and an activation.
Weighted = Conv2D | Dense
#: The normalisations: parameters γ and β, and no activation.
Norm = BatchNorm | LayerNorm
#: The layers with parameters, one per entry of ``params``.
Parametric = Conv2D | Dense | BatchNorm | LayerNorm | Embedding | SimpleRNN | LSTM
Pooling = MaxPool2D | AvgPool2D


def trainable(layer: Layer, shapes: dict[str, Shape]) -> dict[str, Shape]:
    """The parameters of ``layer`` that have gradients: all but its state."""
    state = getattr(layer, "state", ())
    return {key: shape for key, shape in shapes.items() if key not in state}


def _words(head: str, layer: Weighted) -> str:
    return f"{head} {layer.activation}" + ("" if layer.bias else " no bias")


def as_dict(layer: Layer) -> dict[str, Any]:
    """The layer as JSON: its class name as ``type`` and its arguments."""
    return {"type": type(layer).__name__, **dataclasses.asdict(layer)}


def output_shapes(input_shape: Any, layers: list[Layer]) -> list[Shape]:
    """The shape each layer makes, per sample, starting from ``input_shape``; a ValueError naming
    the layer (its position and description) and the shapes when one does not fit."""
    if not isinstance(input_shape, tuple | list) or not input_shape:
        raise ValueError(f"input_shape must be a tuple of positive integers; got {input_shape!r}")
    shape: Shape = tuple(_positive("input_shape", n) for n in input_shape)
    shapes = []
    for position, layer in enumerate(layers, start=1):
        if not isinstance(layer, Layer):
            raise TypeError(
                "layers must be Conv2D, MaxPool2D, AvgPool2D, Flatten, Dense, Activation, "
                "BatchNorm, LayerNorm, Dropout, Embedding, SimpleRNN or LSTM; "
                f"layer {position} is {layer!r}"
            )
        if isinstance(layer, Embedding) and position > 1:
            raise ValueError(
                f"layer {position}, {layer!r}: an Embedding takes the network's integer ids, so "
                "it must be the first layer"
            )
        try:
            shape = layer.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"layer {position}, {error}") from None
        shapes.append(shape)
    return shapes
