"""Convolutional networks: every backend against JAX autodiff over a matrix of layer lists.

Strides 1 to 3 (one that does not divide its input), "valid" and "same" padding, square and
oblong kernels from 1×1 to 3×3, max and average pools of sizes 1 to 3 with their own strides,
one to three input channels, every hidden activation, two convolutions in a row, a pool before
the first convolution, with and without bias, float32 and float64: predictions, loss, each
layer's gradients and a short training run must agree with the float64 JAX reference and the
finite differences within the tolerance policy. Each backend's forward pass is also held to the
convolution written out as seven nested loops.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DTYPES, HIDDEN, SEEDS, in_turn, random_problem
from mutants import loop_mutants, mutant

import gradcheck
from gradcheck import Network, ops
from gradcheck.kernels import numpy_conv as nc
from gradcheck.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D
from gradcheck.optimizers import SGD, Adam, RMSprop
from gradcheck.problems import PROBLEMS

pytestmark = pytest.mark.skipif(
    "jax" not in gradcheck.available_backends(), reason="the JAX reference is not installed"
)

# name -> (layers, input_shape, loss)
NETWORKS = {
    "3x3-same-relu-maxpool2": (
        [Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten(),
         Dense(3, "softmax")], (7, 7, 2), "softmax_ce",
    ),
    "3x3-stride2-valid-tanh": (
        [Conv2D(3, 3, strides=2, activation="tanh"), Flatten(), Dense(2, "sigmoid")],
        (7, 7, 1), "bce",
    ),
    "2x3-stride2-same-sigmoid-avgpool2": (
        [Conv2D(2, (2, 3), strides=2, padding="same", activation="sigmoid"), AvgPool2D(2),
         Flatten(), Dense(1, "identity")], (7, 6, 3), "mse",
    ),
    "1x1-softplus-maxpool3-stride2-nobias": (
        [Conv2D(3, 1, activation="softplus", bias=False), MaxPool2D(3, strides=2), Flatten(),
         Dense(2, "identity", bias=False)], (7, 7, 2), "half_sse",
    ),
    "two-convs-avgpool2-stride1": (
        [Conv2D(3, 3, padding="same", activation="relu"),
         Conv2D(4, 2, strides=2, activation="identity"), AvgPool2D(2, strides=1), Flatten(),
         Dense(5, "tanh"), Dense(3, "softmax")], (8, 8, 1), "softmax_ce",
    ),
    "pool-first-2x2-valid": (
        [MaxPool2D(2), Conv2D(2, 2, activation="softplus"), Flatten(), Dense(2, "softmax")],
        (6, 6, 2), "softmax_ce",
    ),
    "2x2-stride3-valid-relu-avgpool1": (
        [Conv2D(2, 2, strides=3, activation="relu"), AvgPool2D(1), Flatten(),
         Dense(2, "sigmoid")], (8, 8, 1), "bce",
    ),
    "3x3-stride2-same-tanh-maxpool2-stride1": (
        [Conv2D(2, 3, strides=2, padding="same", activation="tanh"), MaxPool2D(2, strides=1),
         Flatten(), Dense(2, "identity")], (5, 5, 1), "mse",
    ),
}  # fmt: skip


def test_matrix_covers_strides_padding_kernels_pools_channels_and_activations():
    layers = [layer for stack, _, _ in NETWORKS.values() for layer in stack]
    convs = [layer for layer in layers if isinstance(layer, Conv2D)]
    pools = [layer for layer in layers if isinstance(layer, MaxPool2D | AvgPool2D)]
    assert {c.strides for c in convs} == {1, 2, 3}
    assert {c.padding for c in convs} == {"valid", "same"}
    assert {c.kernel for c in convs} >= {(1, 1), (2, 2), (3, 3), (2, 3)}
    assert {(type(p), p.pool_size) for p in pools} >= {
        (MaxPool2D, 2), (MaxPool2D, 3), (AvgPool2D, 1), (AvgPool2D, 2)
    }  # fmt: skip
    assert any(p.stride != p.pool_size for p in pools)
    assert {shape[-1] for _, shape, _ in NETWORKS.values()} == {1, 2, 3}
    assert {c.activation for c in convs} <= set(HIDDEN)  # the rest in the test below
    assert {c.bias for c in convs} == {True, False}


#: The activations the networks above give a convolution.
IN_THE_MATRIX = {
    layer.activation
    for stack, _, _ in NETWORKS.values()
    for layer in stack
    if isinstance(layer, Conv2D)
}


# the default slice: an activation no network above has, so that a new one is covered from the
# moment it is declared
@pytest.mark.sweep(keep=lambda p: p["activation"] not in IN_THE_MATRIX)
@pytest.mark.parametrize("activation", HIDDEN)
def test_every_hidden_activation_in_a_conv_layer(activation):
    """A hidden activation of the registry after a convolution: the hand-written kernels
    against the literal loops, and their gradients against JAX and the finite differences."""
    net = Network(
        [Conv2D(2, 2, strides=2, activation=activation), Flatten(), Dense(2, "softmax")],
        input_shape=(5, 5, 2),
        loss="softmax_ce",
    )
    X, y, params = random_problem(net, n_samples=4, seed=1)
    backends = [b for b in ("numpy", "numba") if b in gradcheck.available_backends()]
    for name in backends:
        got = gradcheck.get_backend(name).predict(net, params, X)
        np.testing.assert_allclose(got, _literal_forward(net, params, X), rtol=1e-12, atol=1e-13)
    report = gradcheck.verify(net, X, y, params=params, backends=["jax", *backends], steps=1)
    report.assert_ok()
    assert ("finite differences", "gradient") in {(c.backend, c.quantity) for c in report.checks}


def _problem(name: str, dtype: str, seed: int):
    layers, input_shape, loss = NETWORKS[name]
    net = Network(layers, input_shape=input_shape, loss=loss, dtype=dtype)
    X, y, params = random_problem(net, n_samples=5, seed=seed)
    for layer in params:  # biases away from zero, so that a dropped bias gradient shows
        if "b" in layer:
            layer["b"] = np.random.default_rng(seed).normal(scale=0.1, size=layer["b"].shape)
    return net, X, y, params


def _once(p, names):
    """The default slice of a grid over ``names``: each once, the dtype and seed taken in turn."""
    return (p["dtype"], p["gradcheck_seed"]) == in_turn(names.index(p["name"]), DTYPES, SEEDS)


@pytest.mark.sweep(keep=lambda p: _once(p, list(NETWORKS)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_backends_agree_with_jax_autodiff(name, dtype, gradcheck_seed):
    net, X, y, params = _problem(name, dtype, gradcheck_seed)
    lr = 0.001 if net.loss == "half_sse" else 0.1  # half_sse sums where the others average
    report = gradcheck.verify(net, X, y, params=params, steps=10, lr=lr)
    report.assert_ok()
    compared = {(c.backend, c.quantity) for c in report.checks}
    assert ("finite differences", "gradient") in compared
    for backend in gradcheck.available_backends():
        if backend != "jax" or dtype == "float32":
            assert (backend, "gradient") in compared
            assert (backend, "train params") in compared


def _literal_forward(net: Network, params, X: np.ndarray) -> np.ndarray:
    """The network written out: the convolution as seven nested loops, the pools and the
    dense layers likewise, and each activation as the witness's definition, in float64."""
    a = np.asarray(X, np.float64)
    weights = iter(params)
    for layer in net.stack:
        if isinstance(layer, Flatten):
            a = a.reshape(len(a), -1)
            continue
        if isinstance(layer, Dense):
            values = next(weights)
            z = a @ values["W"] + values.get("b", 0.0)
            a = ops.ACTIVATIONS[layer.activation].reference(z)
            continue
        if isinstance(layer, Conv2D):
            values = next(weights)
            kh, kw = layer.kernel
            stride = layer.strides
            n, height, width, channels = a.shape
            if layer.padding == "same":
                rows, cols = -(-height // stride), -(-width // stride)
                pad_h = max((rows - 1) * stride + kh - height, 0)
                pad_w = max((cols - 1) * stride + kw - width, 0)
                a = np.pad(a, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                               (pad_w // 2, pad_w - pad_w // 2), (0, 0)))  # fmt: skip
            else:
                rows, cols = (height - kh) // stride + 1, (width - kw) // stride + 1
            W = values["W"]
            z = np.zeros((n, rows, cols, layer.filters))
            for s in range(n):
                for i in range(rows):
                    for j in range(cols):
                        for o in range(layer.filters):
                            for p in range(kh):
                                for q in range(kw):
                                    for c in range(channels):
                                        z[s, i, j, o] += (
                                            a[s, i * stride + p, j * stride + q, c] * W[p, q, c, o]
                                        )
            if "b" in values:
                z += values["b"]
            a = ops.ACTIVATIONS[layer.activation].reference(z)
            continue
        size, stride = layer.pool_size, layer.stride
        n, height, width, channels = a.shape
        rows, cols = (height - size) // stride + 1, (width - size) // stride + 1
        pooled = np.empty((n, rows, cols, channels))
        for s in range(n):
            for i in range(rows):
                for j in range(cols):
                    for c in range(channels):
                        window = a[
                            s, i * stride : i * stride + size, j * stride : j * stride + size, c
                        ]
                        pooled[s, i, j, c] = (
                            window.max() if isinstance(layer, MaxPool2D) else window.mean()
                        )
        a = pooled
    return a


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_backend_computes_the_literal_loops(name, backend):
    net, X, _, params = _problem(name, "float64", seed=0)
    expected = _literal_forward(net, params, X)
    got = backend.predict(net, params, X)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    ("name", "exact"),
    [("3x3-same-relu-maxpool2", True), ("3x3-stride2-same-tanh-maxpool2-stride1", False)],
)
def test_numba_routes_a_max_pool_s_gradient_to_the_maxima_alone_as_its_full_pass_does(
    name, exact, gradcheck_dtype, gradcheck_seed
):
    """Below a fused max pool, the Numba backend's loss_and_grads leaves the convolution's δ
    unwritten and routes the pool's gradient ⊙ f′ to each window's first maximum; its trace
    writes every δ and takes the full pass, which the rest of this file holds to JAX. The two
    give the same gradients: to the bit where windows do not overlap, and within a few roundings
    where a maximum may be shared (there δ sums the windows' gradients before f′ or after)."""
    if "numba" not in gradcheck.available_backends():
        pytest.skip("Numba is not installed")
    net, X, y, params = _problem(name, gradcheck_dtype, gradcheck_seed)
    X = np.repeat(X, 40, axis=0) + np.linspace(0, 1, 40 * len(X)).reshape(-1, 1, 1, 1)
    y = np.repeat(y, 40, axis=0)  # 200 samples: blocks on both threads, groups of several
    backend = gradcheck.get_backend("numba")
    loss, grads = backend.loss_and_grads(net, params, X, y)
    trace = backend.trace(net, params, X, y)
    assert np.count_nonzero(trace.delta[0]) < trace.delta[0].size  # zero off the maxima
    assert loss == trace.loss
    eps = float(np.finfo(gradcheck_dtype).eps)
    for got, want in zip(grads, trace.grads, strict=True):
        for key in want:
            if exact:
                np.testing.assert_array_equal(got[key], want[key])
            else:
                scale = np.abs(want[key]).max()
                np.testing.assert_allclose(got[key], want[key], rtol=0, atol=64 * eps * scale)


def _conv_input_grad_unflipped(a_prev, conv, delta, W):
    pads = nc.padding(a_prev.shape, conv.kernel, conv.strides, conv.padding)
    padded_shape = nc.pad(a_prev[:0], pads).shape[1:]
    # BUG: the kernel flipped twice, so correlated unflipped
    dx = nc.conv2d_input_grad(delta, W[::-1, ::-1], conv.strides, (len(a_prev), *padded_shape))
    return nc.unpad(dx, pads)


def _conv_grads_bias_per_sample(a_prev, conv, delta, bias):
    pads = nc.padding(a_prev.shape, conv.kernel, conv.strides, conv.padding)
    dW, _ = nc.conv2d_grads(nc.pad(a_prev, pads), delta, conv.kernel, conv.strides)
    db = delta[:, 0, 0].sum(axis=0)  # BUG: ∂C/∂b from the first output position only
    return {"W": dW, "b": db} if bias else {"W": dW}


def _avg_pool_grad_undivided(layer, a_prev, grad):
    if isinstance(layer, MaxPool2D):
        return nc.max_pool_grad(a_prev, grad, layer.pool_size, layer.stride)
    if isinstance(layer, AvgPool2D):  # BUG: δ copied to the window, not divided by k²
        return nc.avg_pool_grad(a_prev, grad, layer.pool_size, layer.stride) * layer.pool_size**2
    return nc.flatten_grad(grad, a_prev.shape)


def _max_pool_grad_to_every_entry(layer, a_prev, grad):
    if isinstance(layer, MaxPool2D):  # BUG: δ spread over the window like an average pool
        return nc.avg_pool_grad(a_prev, grad, layer.pool_size, layer.stride)
    if isinstance(layer, AvgPool2D):
        return nc.avg_pool_grad(a_prev, grad, layer.pool_size, layer.stride)
    return nc.flatten_grad(grad, a_prev.shape)


# mutant -> (replacements, a network it shows in)
CONV_BUGS = {
    "unflipped kernel": (
        {"conv_input_grad": _conv_input_grad_unflipped}, "two-convs-avgpool2-stride1"
    ),
    "bias of one position": (
        {"conv_grads": _conv_grads_bias_per_sample}, "3x3-same-relu-maxpool2"
    ),
    "average pool undivided": (
        {"unweighted_grad": _avg_pool_grad_undivided}, "2x3-stride2-same-sigmoid-avgpool2"
    ),
    "max pool spread": (
        {"unweighted_grad": _max_pool_grad_to_every_entry}, "3x3-same-relu-maxpool2"
    ),
}  # fmt: skip


@pytest.mark.sweep(
    keep=lambda p: p["gradcheck_seed"] == in_turn(list(CONV_BUGS).index(p["bug"]), SEEDS)[0]
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug", list(CONV_BUGS))
def test_a_bug_in_a_conv_or_pool_gradient_is_caught(bug, dtype, gradcheck_seed):
    replacements, name = CONV_BUGS[bug]
    net, X, y, params = _problem(name, dtype, gradcheck_seed)
    report = gradcheck.verify(
        net, X, y, params=params, backends=["jax", mutant(bug, **replacements)], steps=10, lr=0.1
    )
    assert not report.ok
    failed = {(c.backend, c.quantity) for c in report.failures}
    assert (bug, "gradient") in failed
    assert all(backend == bug for backend, _ in failed)
    assert any(bug in verdict for verdict in report.verdicts)


def test_an_unstable_run_is_not_blamed_and_its_explanations_do_not_raise():
    """Too large a step for this network: the loss grows and the run amplifies rounding, which
    verify measures on the reference, so correct backends are not blamed. A loop stepping with
    lr × 1.001 is; explaining it tries other learning rates on the reference, and a run that
    then overflows is no fit, not an error."""
    net, X, y, params = _problem("1x1-softplus-maxpool3-stride2-nobias", "float64", 14)
    report = gradcheck.verify(net, X, y, params=params, steps=10, lr=0.005)
    assert report.ok, str(report)
    off = loop_mutants()["lr × 1.001"]
    report = gradcheck.verify(net, X, y, params=params, backends=["jax", off], steps=10, lr=0.005)
    assert {c.backend for c in report.failures} == {off.name}
    assert {e.quantity for e in report.explanations} == {"training run"}


def test_the_digits_cnn_report_goes_to_json_with_its_kinks():
    """At the start every conv bias is 0, so an all-zero patch of an image puts its relu at the
    kink: each bias estimate is skipped, and the report still says so in plain JSON."""
    problem = PROBLEMS["digits_cnn"]
    X, y = problem.data()
    report = gradcheck.verify(
        problem.network(), X[:50], y[:50], params=problem.params(), steps=2, lr=0.5,
        backends=["numpy"],
    )  # fmt: skip
    report.assert_ok()
    data = json.loads(json.dumps(report.to_dict()))
    bias = [c for c in data["checks"] if c["backend"] == "finite differences" and c["param"] == "b"]
    assert bias[0]["layer"] == 1
    assert "8 at a kink skipped" in bias[0]["detail"]
    assert data["network"]["layers"][0]["type"] == "Conv2D"


OPTIMIZERS = {
    "sgd": SGD(0.05, momentum=0.9),
    "rmsprop": RMSprop(0.003),
    "adam": Adam(0.01, epsilon_placement="paper"),
}


@pytest.mark.sweep(keep=lambda p: _once(p, list(OPTIMIZERS)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_and_mini_batches_agree_on_a_cnn(name, dtype, gradcheck_seed):
    net, X, y, params = _problem("3x3-same-relu-maxpool2", dtype, gradcheck_seed)
    report = gradcheck.verify(
        net, X, y, params=params, steps=8, optimizer=OPTIMIZERS[name], batch_size=2,
        seed=gradcheck_seed, finite_differences=None,
    )  # fmt: skip
    report.assert_ok()
    if not report.horizon.comparable:  # a relu crossing its kink in float32 parts the runs
        assert "training run not comparable" in str(report)
        return
    compared = "train params" if report.horizon.whole else "train losses"
    trained = {c.backend for c in report.checks if c.quantity == compared}
    assert trained >= set(gradcheck.available_backends()) - {"jax"}
