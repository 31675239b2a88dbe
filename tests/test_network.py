"""The Network spec and its initialisation, checked against the definitions written out."""

import math

import numpy as np
import pytest

import gradcheck
from gradcheck import Network
from gradcheck.layers import Conv2D, Dense, Flatten, MaxPool2D


def test_uniform_init_is_the_notebooks_np_random_rand():
    net = Network([3, 4, 1], bias=False)
    params = net.init(seed=7, scheme="uniform")
    np.random.seed(7)
    weights1 = np.random.rand(3, 4)  # the notebook's draws, in its order
    weights2 = np.random.rand(4, 1)
    assert np.array_equal(params[0]["W"], weights1)
    assert np.array_equal(params[1]["W"], weights2)
    assert [set(layer) for layer in params] == [{"W"}, {"W"}]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_glorot_init_layout_dtype_and_limits(dtype):
    net = Network([64, 128, 10], activation=["sigmoid", "softmax"], loss="softmax_ce", dtype=dtype)
    params = net.init(seed=3)
    for layer, (fan_in, fan_out) in zip(params, [(64, 128), (128, 10)], strict=True):
        assert layer["W"].shape == (fan_in, fan_out)
        assert layer["b"].shape == (fan_out,)
        assert layer["W"].dtype == layer["b"].dtype == np.dtype(dtype)
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert np.abs(layer["W"]).max() <= limit
        # U(−l, l) has variance l²/3; 8192 draws put the sample variance within a few percent.
        if fan_in * fan_out > 1000:
            assert layer["W"].var() == pytest.approx(limit**2 / 3, rel=0.05)
        assert not layer["b"].any()


def test_same_seed_same_arrays_and_different_seed_different_arrays():
    net = Network([3, 5, 2])
    first, again, other = net.init(seed=1), net.init(seed=1), net.init(seed=2)
    for a, b, c in zip(first, again, other, strict=True):
        assert np.array_equal(a["W"], b["W"])
        assert not np.array_equal(a["W"], c["W"])


def test_activation_list_and_properties():
    net = Network([2, 3, 3, 1], activation=["relu", "tanh", "identity"], loss="mse")
    assert net.depth == 3
    assert net.activations == ("relu", "tanh", "identity")
    assert Network([2, 3, 1]).activations == ("sigmoid", "sigmoid")
    assert hash(net) == hash(Network((2, 3, 3, 1), ("relu", "tanh", "identity"), "mse"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": [3]}, "at least an input and an output"),
        ({"layers": [3, 0, 1]}, "positive integers"),
        ({"layers": [3, 4, 1], "activation": "swish"}, "'swish'"),
        ({"layers": [3, 4, 1], "activation": ["sigmoid"]}, "one name per weight layer"),
        ({"layers": [3, 4, 1], "activation": ["softmax", "sigmoid"]}, "output layer only"),
        ({"layers": [3, 4, 1], "loss": "hinge"}, "'hinge'"),
        ({"layers": [3, 4, 1], "loss": "bce", "activation": "tanh"}, "sigmoid output"),
        ({"layers": [3, 4, 2], "loss": "softmax_ce"}, "softmax output"),
        ({"layers": [3, 4, 1], "dtype": "float16"}, "'float16'"),
        ({"layers": [3, 1], "activation": "softmax"}, "softmax needs at least 2 units"),
    ],
)
def test_invalid_networks_are_rejected_with_the_argument_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Network(**kwargs)


def test_unknown_init_scheme_is_rejected():
    with pytest.raises(ValueError, match=r"scheme must be one of .* got 'he_normal'"):
        Network([3, 4, 1]).init(scheme="he_normal")


# --- a network given as a list of layers ---------------------------------------------------------

CNN = [
    Conv2D(8, 3, padding="same", activation="relu"),
    MaxPool2D(2),
    Flatten(),
    Dense(10, activation="softmax"),
]


def test_a_layer_list_has_kerass_shapes_and_fans():
    net = Network(CNN, input_shape=(8, 8, 1), loss="softmax_ce")
    assert net.shapes() == [{"W": (3, 3, 1, 8), "b": (8,)}, {"W": (128, 10), "b": (10,)}]
    assert net.output_shapes == ((8, 8, 8), (4, 4, 8), (128,), (10,))
    assert (net.depth, net.outputs, net.activations) == (2, 10, ("relu", "softmax"))
    params = net.init(seed=5)
    # glorot_uniform with Keras's fans: a (kh, kw, C, O) kernel has fan_in = kh·kw·C and
    # fan_out = kh·kw·O, here 9 and 72
    limit = math.sqrt(6 / (9 * 1 + 9 * 8))
    assert np.abs(params[0]["W"]).max() <= limit
    assert np.abs(params[0]["W"]).max() > 0.9 * limit  # 72 draws come close to the limit
    assert not params[0]["b"].any()
    rng = np.random.RandomState(5)
    assert np.array_equal(params[0]["W"], rng.uniform(-limit, limit, size=(3, 3, 1, 8)))
    uniform = net.init(seed=5, scheme="uniform")
    assert np.array_equal(uniform[0]["W"], np.random.RandomState(5).rand(3, 3, 1, 8))


def test_a_layer_list_describes_itself_and_goes_to_json():
    net = Network(CNN, input_shape=(8, 8, 1), loss="softmax_ce", dtype="float32")
    assert net.describe() == (
        "8×8×1 → conv 8 3×3 same relu → maxpool 2 → flatten → dense 10 softmax, softmax_ce, float32"
    )
    data = net.to_dict()
    assert data["input_shape"] == [8, 8, 1]
    assert data["layers"][0] == {
        "type": "Conv2D", "filters": 8, "kernel_size": (3, 3), "strides": 1,
        "padding": "same", "activation": "relu", "bias": True,
    }  # fmt: skip
    assert [layer["type"] for layer in data["layers"]] == [
        "Conv2D", "MaxPool2D", "Flatten", "Dense"
    ]  # fmt: skip


def test_dense_layers_in_a_list_compute_what_the_widths_compute():
    widths = Network([3, 4, 2], activation=["tanh", "sigmoid"], loss="bce")
    listed = Network(
        [Dense(4, "tanh"), Dense(2, "sigmoid")], input_shape=(3,), loss="bce"
    )  # fmt: skip
    assert listed.widths == widths.widths == (3, 4, 2)
    assert listed.shapes() == widths.shapes()
    params = widths.init(seed=2)
    X = np.random.default_rng(0).normal(size=(5, 3))
    y = np.random.default_rng(1).uniform(size=(5, 2))
    backend = gradcheck.get_backend("numpy")
    loss, grads = backend.loss_and_grads(widths, params, X, y)
    listed_loss, listed_grads = backend.loss_and_grads(listed, params, X, y)
    assert loss == listed_loss
    assert all(
        np.array_equal(a[k], b[k]) for a, b in zip(grads, listed_grads, strict=True) for k in a
    )


@pytest.mark.parametrize(
    ("layers", "kwargs", "message"),
    [
        (CNN, {}, r"input_shape must be given with a list of layers"),
        (CNN, {"input_shape": (8, 8, 1), "activation": "relu"}, "activation is given on each"),
        (CNN, {"input_shape": (8, 8, 1), "bias": False}, "bias is given on each"),
        (CNN[:3], {"input_shape": (8, 8, 1)}, "the last layer must be Dense"),
        ([Conv2D(2, 9), Flatten(), Dense(2)], {"input_shape": (8, 8, 1)}, "layer 1, Conv2D"),
        ([Dense(2)], {"input_shape": (8, 8, 1)}, "put Flatten"),
        (
            [Flatten(), Dense(4, "softmax"), Dense(2)],
            {"input_shape": (2, 2, 1)},
            "output layer only",
        ),
        ([Flatten(), Dense(1, "softmax")], {"input_shape": (2, 2, 1)}, "at least 2 units"),
        ([3, 4, 1], {"input_shape": (4,)}, r"input_shape is the first width, \(3,\)"),
    ],
)
def test_a_layer_list_that_does_not_fit_is_refused(layers, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Network(layers, loss=kwargs.pop("loss", "mse"), **kwargs)


def test_images_of_the_wrong_shape_are_refused_naming_the_expected_shape():
    net = Network(CNN, input_shape=(8, 8, 1), loss="softmax_ce")
    params = net.init()
    with pytest.raises(
        ValueError, match=r"X must have shape \(samples, 8, 8, 1\); got shape \(4, 64\)"
    ):
        gradcheck.get_backend("numpy").predict(net, params, np.zeros((4, 64)))
    with pytest.raises(ValueError, match="a network on images has no widths"):
        net.widths  # noqa: B018
