"""The convolutional layers' descriptions: the shapes they make and the parameters they have,
against Keras building the same layers, and the errors a network that does not fit gets."""

from __future__ import annotations

import os
import re

import pytest

from gradcheck.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, output_shapes

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

#: The digits CNN of the issue: 8×8×1 → Conv2D 8 3×3 same relu → MaxPool 2 → Flatten → Dense 10.
DIGITS_CNN = [
    Conv2D(8, 3, padding="same", activation="relu"),
    MaxPool2D(2),
    Flatten(),
    Dense(10, activation="softmax"),
]

NETWORKS = {
    "digits cnn": ((8, 8, 1), DIGITS_CNN),
    "strided, valid, two convs": (
        (9, 7, 3),
        [
            Conv2D(4, (3, 2), strides=2),
            Conv2D(5, 2, padding="same", bias=False),
            Flatten(),
            Dense(3, bias=False),
        ],
    ),
    "overlapping pools": (
        (10, 10, 2),
        [
            AvgPool2D(3, strides=2),
            Conv2D(6, 1, activation="tanh"),
            MaxPool2D(2, strides=1),
            Flatten(),
            Dense(4, activation="sigmoid"),
        ],
    ),
}


def _keras_layer(layer):
    if isinstance(layer, Conv2D):
        return keras.layers.Conv2D(
            layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
            use_bias=layer.bias,
        )  # fmt: skip
    if isinstance(layer, MaxPool2D):
        return keras.layers.MaxPooling2D(layer.pool_size, strides=layer.strides)
    if isinstance(layer, AvgPool2D):
        return keras.layers.AveragePooling2D(layer.pool_size, strides=layer.strides)
    if isinstance(layer, Flatten):
        return keras.layers.Flatten()
    return keras.layers.Dense(layer.units, use_bias=layer.bias)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_shapes_and_parameters_are_kerass(name):
    input_shape, layers = NETWORKS[name]
    shapes = output_shapes(input_shape, layers)
    model = keras.Sequential([keras.Input(input_shape), *map(_keras_layer, layers)])
    previous = input_shape
    for ours, layer, theirs in zip(shapes, layers, model.layers, strict=True):
        assert ours == tuple(theirs.output.shape[1:])
        assert list(layer.param_shapes(previous).values()) == [
            tuple(w.shape) for w in theirs.weights
        ]
        previous = ours


@pytest.mark.parametrize(
    ("input_shape", "layers", "message"),
    [
        ((2, 2, 1), [Conv2D(4, 3)], "layer 1, Conv2D(filters=4, kernel_size=(3, 3), strides=1,"
         " padding='valid', activation='identity', bias=True): the 3×3 kernel is larger than"
         " its 2×2 input"),
        ((8, 8, 1), [Conv2D(4, 3), MaxPool2D(8)], "layer 2, MaxPool2D(pool_size=8,"
         " strides=None): the 8×8 pool does not fit its 6×6 input"),
        ((8, 8, 1), [Conv2D(4, 3), Dense(10)], "layer 2, Dense(units=10, activation='identity',"
         " bias=True) needs a flat input or a sequence; got shape (6, 6, 4): put Flatten()"
         " before it"),
        ((64,), [Conv2D(4, 3)], "needs an image input (H, W, C); got shape (64,)"),
        ((8, 8), [Flatten()], ""),
        ((8, 8, 0), [Flatten()], "input_shape must be a positive integer; got 0"),
        ("8x8", [Flatten()], "input_shape must be a tuple of positive integers; got '8x8'"),
    ],
)  # fmt: skip
def test_a_network_that_does_not_fit_is_refused_naming_the_layer(input_shape, layers, message):
    if not message:
        assert output_shapes(input_shape, layers) == [(64,)]
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        output_shapes(input_shape, layers)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Conv2D(0, 3), "filters must be a positive integer; got 0"),
        (lambda: Conv2D(4, (3, 0)), "kernel_size must be a positive integer; got 0"),
        (lambda: Conv2D(4, 3, padding="full"), "padding must be 'valid' or 'same'; got 'full'"),
        (lambda: Conv2D(4, 3, activation="softmax"), "Conv2D activation must be one of sigmoid"),
        (lambda: Conv2D(4, 3, strides=1.5), "strides must be a positive integer; got 1.5"),
        (lambda: MaxPool2D(0), "pool_size must be a positive integer; got 0"),
        (lambda: AvgPool2D(2, strides=-1), "strides must be a positive integer; got -1"),
        (lambda: Dense(10, activation="swish"), "activation must be one of sigmoid"),
        (lambda: Dense(10, bias=1), "bias must be True or False; got 1"),
    ],
)
def test_bad_layer_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_anything_else_in_the_layer_list_is_refused():
    with pytest.raises(TypeError, match=re.escape("layer 2 is 'relu'")):
        output_shapes((8, 8, 1), [Conv2D(2, 3), "relu"])
