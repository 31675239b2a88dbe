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
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Flatten",
    "MaxPool2D",
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
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False; got {self.bias!r}")

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
    """z = a W + b on a flat input, W of shape (fan_in, units)."""

    units: int
    activation: str = "identity"
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", _positive("units", self.units))
        object.__setattr__(self, "activation", _activation(self.activation))
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False; got {self.bias!r}")

    def describe(self) -> str:
        """E.g. ``dense 10 softmax``."""
        return _words(f"dense {self.units}", self)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise ValueError(
                f"{self!r} needs a flat input; got shape {shape}: put Flatten() before it"
            )
        return (self.units,)

    def param_shapes(self, shape: Shape) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"W": (shape[0], self.units)}
        if self.bias:
            shapes["b"] = (self.units,)
        return shapes


Layer = Conv2D | MaxPool2D | AvgPool2D | Flatten | Dense
#: The layers with parameters and an activation.
Weighted = Conv2D | Dense
Pooling = MaxPool2D | AvgPool2D


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
                "layers must be Conv2D, MaxPool2D, AvgPool2D, Flatten or Dense; "
                f"layer {position} is {layer!r}"
            )
        try:
            shape = layer.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"layer {position}, {error}") from None
        shapes.append(shape)
    return shapes
