"""Batch and layer normalisation and the Activation layer, in every backend.

The oracles are independent of the kernels: the JAX reference and the finite differences of the
witness's own forward; the normalisation written out in the test where its result is known in
closed form (a BatchNorm on the inputs themselves, whose batch statistics are X's); and
Keras's BatchNormalization, which defines the conventions. Each convention a port gets wrong —
PyTorch's momentum, its ε, its unbiased moving variance — and each term of the backward left
out is a mutant that verify must name alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import DTYPES, in_turn
from mutants import norm_mutants

import gradcheck
from gradcheck import Network
from gradcheck.layers import (
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    MaxPool2D,
)
from gradcheck.optimizers import SGD, Adam, RMSprop

pytestmark = pytest.mark.skipif(
    "jax" not in gradcheck.available_backends(), reason="the JAX reference is not installed"
)
BACKENDS = [b for b in ("numpy", "numba", "keras") if b in gradcheck.available_backends()]
#: The correct backends a mutant is named against besides the reference (Keras is held to the
#: others in the agreement tests: its model costs seconds to build for each network).
CORRECT = [b for b in ("numpy", "numba") if b in gradcheck.available_backends()]

# name -> (layers, input_shape, loss)
NETWORKS = {
    "dense-batchnorm-relu-layernorm-tanh": (
        [Dense(8), BatchNorm(), Activation("relu"), Dropout(0.25), Dense(6), LayerNorm(),
         Activation("tanh"), Dense(3, "softmax")], (5,), "softmax_ce",
    ),
    "batchnorm-first-gelu-momentum-0.9": (
        [BatchNorm(momentum=0.9, epsilon=1e-2), Dense(6, "gelu"), LayerNorm(epsilon=1e-5),
         Dense(2, "identity")], (4,), "mse",
    ),
    "conv-spatial-batchnorm-maxpool": (
        [Conv2D(4, 3, padding="same"), BatchNorm(momentum=0.8), Activation("silu"),
         Dropout(0.5), MaxPool2D(2), Flatten(), LayerNorm(), Dense(3, "softmax")], (6, 6, 2),
        "softmax_ce",
    ),
}  # fmt: skip
OPTIMIZERS = (Adam(0.01), SGD(0.1, momentum=0.9), RMSprop(0.005))


def _problem(net: Network, n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=0.5, scale=2.0, size=(n, *net.input_shape))
    if net.loss == "softmax_ce":
        y = np.eye(net.outputs)[rng.integers(0, net.outputs, size=n)]
    else:
        y = rng.normal(size=(n, net.outputs))
    return X, y, net.init(seed=seed)


def _one_seed_in_turn(p, cases):
    """The default slice: each case once, the dtype and the seed taken in turn."""
    turn = cases.index(p.get("name", p.get("bug")))
    return (p["dtype"], p["seed"]) == (DTYPES[turn % 2], turn % 3)


@pytest.mark.sweep(keep=lambda p: _one_seed_in_turn(p, list(NETWORKS)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_backend_agrees_with_the_reference_and_the_witness(name, seed, dtype):
    """Predictions (inference mode), loss and gradients (training mode) and a mini-batch
    training run whose moving statistics are compared like the weights."""
    layers, shape, loss = NETWORKS[name]
    net = Network(layers, input_shape=shape, loss=loss, dtype=dtype)
    X, y, params = _problem(net, 12, seed)
    (optimizer,) = in_turn(seed + 2 * list(NETWORKS).index(name), OPTIMIZERS)
    report = gradcheck.verify(
        net, X, y, params=params, backends=BACKENDS, steps=8, optimizer=optimizer, batch_size=5,
        finite_differences="auto",
    )  # fmt: skip
    assert report.ok, report.verdict_lines()
    trained = {c.param for c in report.checks if c.quantity == "train params"}
    assert {"moving_mean", "moving_var", "gamma", "beta"} <= trained


def test_the_gradient_holds_the_trainable_parameters_only():
    net = Network([BatchNorm(), Dense(2)], input_shape=(3,), loss="mse")
    X, y, params = _problem(net, 6, 0)
    for name in ("numpy", *BACKENDS, "jax"):
        _, grads = gradcheck.get_backend(name).loss_and_grads(net, params, X, y)
        assert [sorted(layer) for layer in grads] == [["beta", "gamma"], ["W", "b"]], name


@pytest.mark.parametrize(
    "layers", [[BatchNorm(momentum=0.9)], [BatchNorm(momentum=0.9), Flatten()]]
)
def test_a_step_moves_the_statistics_as_keras_does(layers):
    """A BatchNorm on the inputs normalises X itself, so one full-batch step's moving statistics
    are known without any kernel: 0.9 · (0, 1) + 0.1 · (X's mean, X's biased variance), over
    the samples and, for images, their positions."""
    shape = (3,) if len(layers) == 1 else (2, 2, 3)
    net = Network([*layers, Dense(2)], input_shape=shape, loss="mse")
    X, y, params = _problem(net, 5, 0)
    axes = tuple(range(X.ndim - 1))
    want_mean, want_var = 0.1 * X.mean(axis=axes), 0.9 + 0.1 * X.var(axis=axes)
    for name in ("jax", *BACKENDS):
        trained = gradcheck.get_backend(name).train(net, params, X, y, 1, 0.1).params[0]
        np.testing.assert_allclose(trained["moving_mean"], want_mean, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(trained["moving_var"], want_var, rtol=1e-12, err_msg=name)
        np.testing.assert_array_equal(trained["gamma"] != 1, True, err_msg=name)  # trained


def test_the_unbiased_convention_moves_toward_the_unbiased_variance():
    net = Network(
        [BatchNorm(momentum=0.9, moving_variance="unbiased"), Dense(2)], input_shape=(3,),
        loss="mse",
    )  # fmt: skip
    X, y, params = _problem(net, 5, 1)
    want = 0.9 + 0.1 * X.var(axis=0, ddof=1)
    for name in ("jax", *[b for b in BACKENDS if b != "keras"]):
        trained = gradcheck.get_backend(name).train(net, params, X, y, 1, 0.1).params[0]
        np.testing.assert_allclose(trained["moving_var"], want, rtol=1e-12, err_msg=name)
    if "keras" in BACKENDS:
        with pytest.raises(ValueError, match="Keras's BatchNormalization moves its variance"):
            gradcheck.get_backend("keras").train(net, params, X, y, 1, 0.1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predictions_normalise_with_the_moving_statistics(dtype):
    """Inference mode, written out: γ (x − moving μ) / √(moving σ² + ε) + β, then the Dense
    layer; a LayerNorm normalises each row by its own statistics."""
    net = Network(
        [BatchNorm(epsilon=0.01), LayerNorm(epsilon=0.1), Dense(2)], input_shape=(4,),
        loss="mse", dtype=dtype,
    )  # fmt: skip
    rng = np.random.default_rng(2)
    X = rng.normal(size=(7, 4))
    params = net.init(3)
    params[0] = {
        "gamma": rng.uniform(0.5, 2, 4), "beta": rng.normal(size=4),
        "moving_mean": rng.normal(size=4), "moving_var": rng.uniform(0.1, 3, 4),
    }  # fmt: skip
    params[1] = {"gamma": rng.uniform(0.5, 2, 4), "beta": rng.normal(size=4)}
    bn, ln, dense = params
    h = bn["gamma"] * (X - bn["moving_mean"]) / np.sqrt(bn["moving_var"] + 0.01) + bn["beta"]
    mu, var = (
        h.mean(axis=1, keepdims=True),
        ((h - h.mean(axis=1, keepdims=True)) ** 2).mean(1, keepdims=True),
    )
    h = ln["gamma"] * (h - mu) / np.sqrt(var + 0.1) + ln["beta"]
    want = h @ dense["W"] + dense["b"]
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for name in ("jax", *BACKENDS):
        got = gradcheck.get_backend(name).predict(net, params, X)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=name)


#: What verify must say of each mutant: the explanation's words and the first tensor that parts
#: (None where the traces agree: the bug is in the training loop's moving statistics).
EXPLAINED = {
    "PyTorch's momentum": ("training run is the network's with momentum read as PyTorch", None),
    "unbiased moving variance": ("unbiased variance in layer 2's BatchNorm's moving", None),
    "PyTorch's ε": ("ε = 1e-05, PyTorch's default, in every normalisation", ("forward", 3, "z")),
    "backward without the mean term": (
        "gradient and training run are the network's with every normalisation's backward "
        "written without the term through μ", ("backward", 3, "δ"),
    ),
    "backward without the variance term": (
        "written without the term through σ²", ("backward", 3, "δ"),
    ),
}  # fmt: skip
MUTANT_NET = NETWORKS["dense-batchnorm-relu-layernorm-tanh"]


def test_every_mutant_states_its_explanation():
    assert set(EXPLAINED) == set(norm_mutants())


@pytest.mark.sweep(keep=lambda p: _one_seed_in_turn(p, list(EXPLAINED)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bug", list(EXPLAINED))
def test_verify_names_the_mutant_alone_and_explains_it(bug, seed, dtype):
    layers, shape, loss = MUTANT_NET
    net = Network(layers, input_shape=shape, loss=loss, dtype=dtype)
    X, y, params = _problem(net, 24, seed)
    backend = norm_mutants()[bug]
    report = gradcheck.verify(
        net, X, y, params=params, backends=[*CORRECT, backend], steps=10, optimizer=Adam(0.01),
        batch_size=8,
    )  # fmt: skip
    assert not report.ok
    assert {check.backend for check in report.failures} == {backend.name}
    words, first = EXPLAINED[bug]
    texts = [e.text for e in report.explanations if e.fits]
    assert len(texts) == 1, texts  # one line
    assert words in texts[0], texts
    places = [(d.stage, d.layer, d.tensor) for d in report.first_differences]
    assert places == ([] if first is None else [first])


def test_a_keras_network_with_pytorch_conventions_is_explained_by_them():
    """The explanation names the convention the backend uses, whatever the network declares:
    a network declaring PyTorch's momentum checked against Keras's reading of it."""
    layers, shape, loss = MUTANT_NET
    torch_like = [
        dataclasses.replace(layer, momentum=0.1) if isinstance(layer, BatchNorm) else layer
        for layer in layers
    ]
    net = Network(torch_like, input_shape=shape, loss=loss)
    X, y, params = _problem(net, 24, 0)
    report = gradcheck.verify(
        net, X, y, params=params, backends=[norm_mutants()["PyTorch's momentum"]], steps=10,
        optimizer=Adam(0.01), batch_size=8,
    )  # fmt: skip
    [explanation] = report.explanations
    assert "0.9 of the old moving statistic kept" in explanation.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BatchNorm(momentum=1.5), "momentum must be a number in"),
        (lambda: BatchNorm(momentum="0.9"), "momentum must be a number in"),
        (lambda: BatchNorm(epsilon=0), "epsilon must be a positive number"),
        (lambda: LayerNorm(epsilon=-1e-3), "epsilon must be a positive number"),
        (lambda: BatchNorm(moving_variance="sample"), "moving_variance must be 'biased'"),
        (lambda: Activation("softmax"), "Activation's activation must be one of"),
        (lambda: Activation("swish"), "Activation's activation must be one of"),
    ],
)
def test_bad_layer_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_batch_too_small_for_the_unbiased_variance_is_refused_before_any_work():
    net = Network([BatchNorm(moving_variance="unbiased"), Dense(2)], input_shape=(3,), loss="mse")
    X, y, params = _problem(net, 5, 0)
    with pytest.raises(ValueError, match="leaves a batch with 1"):
        gradcheck.verify(net, X, y, params=params, backends=["numpy"], steps=2, batch_size=2)
    with pytest.raises(ValueError, match="leaves a batch with 1"):
        gradcheck.get_backend("numpy").train(net, params, X, y, 2, optimizer=SGD(0.1), batch_size=4)


def test_a_negative_moving_variance_is_refused():
    net = Network([BatchNorm(), Dense(2)], input_shape=(3,), loss="mse")
    X, _y, params = _problem(net, 5, 0)
    params[0]["moving_var"] = np.array([1.0, -0.5, 1.0])
    with pytest.raises(ValueError, match="moving_var must not be negative"):
        gradcheck.get_backend("numpy").predict(net, params, X)


def test_init_starts_the_normalisations_as_keras_does_and_draws_the_same_weights():
    plain = Network([Dense(4), Dense(2)], input_shape=(3,), loss="mse")
    normed = Network([BatchNorm(), Dense(4), LayerNorm(), Dense(2)], input_shape=(3,), loss="mse")
    a, b = plain.init(5), normed.init(5)
    np.testing.assert_array_equal(a[0]["W"], b[1]["W"])
    np.testing.assert_array_equal(a[1]["W"], b[3]["W"])
    assert {k: v.tolist() for k, v in b[0].items()} == {
        "gamma": [1, 1, 1], "beta": [0, 0, 0], "moving_mean": [0, 0, 0], "moving_var": [1, 1, 1]
    }  # fmt: skip
    assert {k: v.tolist() for k, v in b[2].items()} == {"gamma": [1] * 4, "beta": [0] * 4}


def test_the_witness_checks_digits_norms_gradient_across_its_relus():
    """digits_norm's 8 random directions each move some of its 1797 × 192 relu inputs across 0
    within the first step; a smaller step that moves none gives each estimate instead, so the
    finite differences check the gradient itself: the correct one agrees within their error,
    and a backward without one term of the batch norm's dx does not."""
    case = gradcheck.benchmarks.case("digits_norm", "float64")
    net, params, X, y = case.net, case.params, case.X, case.y
    fd = gradcheck.finite_diff.directional_derivatives(net, params, X, y)
    assert not fd.kinks.any()
    _, grads = gradcheck.get_backend("numpy").loss_and_grads(net, params, X, y)
    assert np.all(np.abs(fd.project(grads) - fd.values) <= 10 * fd.errors)
    for bug in ("backward without the mean term", "backward without the variance term"):
        _, wrong = norm_mutants()[bug].loss_and_grads(net, params, X, y)
        assert np.any(np.abs(fd.project(wrong) - fd.values) > 100 * fd.errors), bug
