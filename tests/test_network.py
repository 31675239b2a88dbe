"""The Network spec and its initialisation, checked against the definitions written out."""

import math

import numpy as np
import pytest

from gradcheck import Network


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
