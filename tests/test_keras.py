"""The notebook's Keras cell, done right: why its two networks differed; aligned, they agree.

Each reason is shown with Keras itself, against the notebook's scratch network (numpy backend).
"""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck
from gradcheck import Network

pytestmark = pytest.mark.skipif(
    "keras" not in gradcheck.available_backends(), reason="keras/tensorflow is not installed"
)


@pytest.fixture(scope="module")
def keras_model():
    from gradcheck.kernels import keras_model

    return keras_model


def _seed():
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], activation="sigmoid", loss="half_sse", bias=False)
    return net, X, y, net.init(seed=0, scheme="uniform")


def test_sgd_lr_keyword_is_rejected_by_keras_3(keras_model):
    import keras

    with pytest.raises(ValueError, match=r"not recognized.*\blr\b"):
        keras.optimizers.SGD(lr=1)
    assert float(keras.optimizers.SGD(learning_rate=1.0).learning_rate) == 1.0


def test_the_notebooks_keras_layers_had_biases_and_their_own_weights(keras_model):
    import keras

    _net, _, _, params = _seed()
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="sigmoid"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )  # the notebook's cell: default use_bias and initializer
    assert all(layer.use_bias for layer in model.layers)
    kernel = model.layers[0].kernel.numpy()
    assert kernel.shape == params[0]["W"].shape
    assert not np.allclose(kernel, params[0]["W"])
    # glorot_uniform, not U[0, 1): weights of both signs within ±√(6 / (3 + 4))
    assert kernel.min() < 0 < kernel.max()
    assert np.abs(kernel).max() <= np.sqrt(6 / 7)


def test_mean_squared_error_steps_are_nk_over_2_times_smaller(keras_model):
    """Keras's mean_squared_error gradient is the ½SSE gradient divided by N·K/2 (= 2 here)."""
    net, X, y, params = _seed()
    mse_net = Network([3, 4, 1], activation="sigmoid", loss="mse", bias=False)
    keras_backend = gradcheck.get_backend("keras")
    mse_loss, mse_grads = keras_backend.loss_and_grads(mse_net, params, X, y)
    sse_loss, sse_grads = gradcheck.get_backend("numpy").loss_and_grads(net, params, X, y)
    N, K = y.shape
    assert mse_loss == pytest.approx(sse_loss / (N * K / 2), rel=1e-14)
    for mse, sse in zip(mse_grads, sse_grads, strict=True):
        np.testing.assert_allclose(mse["W"] * (N * K / 2), sse["W"], rtol=1e-13, atol=0)


def test_aligned_the_keras_model_trains_like_the_scratch_network(keras_model):
    net, X, y, params = _seed()
    keras_run = gradcheck.get_backend("keras").train(net, params, X, y, steps=2000, lr=1.0)
    numpy_run = gradcheck.get_backend("numpy").train(net, params, X, y, steps=2000, lr=1.0)
    for got, want in zip(keras_run.params, numpy_run.params, strict=True):
        np.testing.assert_allclose(got["W"], want["W"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(keras_run.losses, numpy_run.losses, rtol=1e-12, atol=0)


def test_keras_uses_the_stable_cross_entropies(keras_model):
    """Logits of ±40: a clipped log(1e-7) would cap each term near 16; the true value is 40."""
    net = Network([1, 1], activation="sigmoid", loss="bce", bias=False)
    X, y = np.array([[1.0], [-1.0]]), np.array([[0.0], [1.0]])
    params = [{"W": np.array([[40.0]])}]
    loss, _ = gradcheck.get_backend("keras").loss_and_grads(net, params, X, y)
    assert loss == pytest.approx(40.0, rel=1e-12)
    net = Network([1, 2], activation="softmax", loss="softmax_ce", bias=False)
    loss, _ = gradcheck.get_backend("keras").loss_and_grads(
        net, [{"W": np.array([[40.0, -40.0]])}], np.array([[1.0]]), np.array([[0.0, 1.0]])
    )
    assert loss == pytest.approx(80.0, rel=1e-12)


def test_kerass_cross_entropy_gradient_assumes_targets_that_sum_to_one():
    """TensorFlow's fused softmax cross-entropy differentiates to softmax(z) − y whatever the
    targets sum to, while its loss −Σ y log softmax(z) has the gradient softmax(z) Σ y − y. With
    rows summing to 1 (one-hot or smoothed labels) the two agree; otherwise verify names keras,
    which every other implementation outvotes, and locates the output delta."""
    net = Network([3, 4, 3], activation=["tanh", "softmax"], loss="softmax_ce")
    rng = np.random.default_rng(0)
    X, soft = rng.normal(size=(6, 3)), rng.uniform(size=(6, 3))
    labels = soft / soft.sum(axis=1, keepdims=True)
    backends = ["numpy", "jax", "keras"]
    gradcheck.verify(net, X, labels, backends=backends, steps=3).assert_ok()
    report = gradcheck.verify(net, X, soft, backends=backends, steps=3)
    assert {check.backend for check in report.failures} == {"keras"}
    assert report.verdicts[0].startswith("keras disagrees with jax, numpy and finite differences")
    [first] = report.first_differences
    assert (first.stage, first.tensor) == ("output_delta", "δ")


def test_float64_without_touching_keras_floatx(keras_model):
    import keras

    net, X, y, params = _seed()
    before = keras.config.floatx()
    _, grads = gradcheck.get_backend("keras").loss_and_grads(net, params, X, y)
    assert grads[0]["W"].dtype == np.float64
    assert keras.config.floatx() == before
