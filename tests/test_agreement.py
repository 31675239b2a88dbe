"""Every backend against JAX autodiff over a matrix of networks.

Every output activation with every loss it may carry, every hidden activation, depth 1 to 3,
bias on and off, float32 and float64: predictions, loss, each layer's gradients and a short
training run must agree with the float64 JAX reference within the tolerance policy.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import DTYPES, HIDDEN, OUTPUTS, in_turn, random_problem

import gradcheck
from gradcheck import Network

pytestmark = pytest.mark.skipif(
    "jax" not in gradcheck.available_backends(), reason="the JAX reference is not installed"
)

WIDTHS = {1: [3, 3], 2: [3, 5, 3], 3: [4, 5, 4, 3]}


def _networks():
    """Each (loss, output) pair at depth 1, 2 and 3, the hidden activations taken in turn so
    every one meets every depth; and the (bias, dtype) of the default slice, if the network is
    in it. The slice has a pair when its loss or its output is new to the slice, at one depth,
    with the bias and dtype in turn; its hidden activations are taken in turn from a cycle of
    their own, so it meets every hidden activation too."""
    hidden = {True: itertools.cycle(HIDDEN), False: itertools.cycle(HIDDEN)}
    pairs = [(loss, output) for loss, outputs in OUTPUTS.items() for output in outputs]
    kept: list[tuple[str, str]] = []
    for loss, output in pairs:
        new = loss not in {seen for seen, _ in kept} or output not in {seen for _, seen in kept}
        turn = len(kept)
        if new:
            kept.append((loss, output))
        for depth in (1, 2, 3):
            default = new and depth == 1 + turn % 3
            activations = [next(hidden[default]) for _ in range(depth - 1)] + [output]
            yield loss, activations, in_turn(turn, (True, False), DTYPES) if default else None


CASES = [
    pytest.param(
        loss,
        activations,
        bias,
        dtype,
        id=f"{loss}-{'/'.join(activations)}-{'bias' if bias else 'nobias'}-{dtype}",
        marks=() if default == (bias, dtype) else pytest.mark.thorough,
    )
    for loss, activations, default in _networks()
    for bias in (True, False)
    for dtype in DTYPES
]
DEFAULT = [c for c in CASES if not c.marks]


def test_matrix_covers_every_activation_loss_and_depth():
    pairs = {(loss, out) for loss, outs in OUTPUTS.items() for out in outs}
    for cases in (CASES, DEFAULT):
        seen = {(c.values[0], tuple(c.values[1])) for c in cases}
        assert {a for _, acts in seen for a in acts[:-1]} == set(HIDDEN)
        if cases is CASES:
            assert {(loss, acts[-1]) for loss, acts in seen} == pairs
        assert {loss for loss, _ in seen} == set(OUTPUTS)
        assert {acts[-1] for _, acts in seen} == {out for _, out in pairs}
        assert {len(acts) for _, acts in seen} == {1, 2, 3}
        assert {(c.values[2], c.values[3]) for c in cases} == set(
            in_turn(j, (True, False), DTYPES) for j in range(4)
        )


@pytest.mark.parametrize(("loss", "activations", "bias", "dtype"), CASES)
def test_backends_agree_with_jax_autodiff(loss, activations, bias, dtype):
    net = Network(
        WIDTHS[len(activations)], activation=activations, loss=loss, bias=bias, dtype=dtype
    )
    X, y, params = random_problem(net)
    # Steps small enough for steady descent: a run that oscillates amplifies rounding, and
    # verify rightly reports that as disagreement. half_sse sums where the others average.
    lr = 0.05 if loss == "half_sse" else 0.5
    report = gradcheck.verify(net, X, y, params=params, steps=20, lr=lr)
    report.assert_ok()
    compared = {(c.backend, c.quantity) for c in report.checks}
    for name in gradcheck.available_backends():
        if name != "jax" or dtype == "float32":  # float32 JAX is checked against float64 JAX
            assert (name, "gradient") in compared
            assert (name, "train params") in compared


@pytest.mark.parametrize("name", gradcheck.available_backends())
def test_float32_is_really_computed_in_float32(name):
    """2000 float32 steps drift from the float64 run by far more than rounding the float64
    result to float32 (half an ulp, 6e-8 relative) could explain."""
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], bias=False, dtype="float32")
    params = net.init(seed=0, scheme="uniform")
    backend = gradcheck.get_backend(name)
    predictions = backend.predict(net, params, X)
    _, grads = backend.loss_and_grads(net, params, X, y)
    run = backend.train(net, params, X, y, steps=2000, lr=1.0)
    assert predictions.dtype == run.losses.dtype == np.float32
    assert all(g.dtype == np.float32 for layer in grads + run.params for g in layer.values())
    report = gradcheck.verify(net, X, y, params=params, backends=[name], steps=2000)
    report.assert_ok()
    drift = max(c.error for c in report.checks if c.quantity == "train params")
    assert drift > 1e-7


def test_jax_backend_leaves_the_users_x64_setting_alone():
    import jax

    net = Network([3, 4, 1], bias=False, dtype="float64")
    X, y = gradcheck.datasets.seed_xor()
    params = net.init(seed=0, scheme="uniform")
    backend = gradcheck.get_backend("jax")
    before = jax.config.jax_enable_x64
    _, grads = backend.loss_and_grads(net, params, X, y)
    assert grads[0]["W"].dtype == np.float64
    assert jax.config.jax_enable_x64 == before
    # and a user who has x64 on still gets a float32 network computed in float32
    net32 = Network([3, 4, 1], bias=False, dtype="float32")
    with jax.enable_x64(True):
        run = backend.train(net32, net32.init(seed=0, scheme="uniform"), X, y, steps=3, lr=1.0)
    assert run.losses.dtype == run.params[0]["W"].dtype == np.float32
