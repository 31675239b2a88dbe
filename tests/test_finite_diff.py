"""The finite-difference oracle against the mathematics written out."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradcheck
from gradcheck import Network, finite_diff


@pytest.mark.parametrize(
    ("g", "derivative"),
    [
        (math.exp, 1.0),  # d/dt e^t at 0
        (lambda t: math.sin(1.3 + t), math.cos(1.3)),
        (lambda t: (2.0 + t) ** -3, -3 * 2.0**-4),
        (lambda t: 1e8 * math.log1p(0.5 + t), 1e8 / 1.5),
    ],
)
def test_central_difference_is_accurate_and_its_error_estimate_bounds_it(g, derivative):
    estimate = finite_diff.central_difference(g, 1e-3)
    actual = abs(estimate.value - derivative)
    assert actual <= estimate.error
    assert actual <= 1e-9 * abs(derivative)


def test_elementwise_gradient_matches_the_linear_least_squares_formula():
    """One identity layer with mse: ∂C/∂W = (2/NK) Xᵀ(XW + b − y), ∂C/∂b = (2/NK) Σ_n (…)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    net = Network([3, 2], activation="identity", loss="mse")
    params = [{"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}]
    residual = X @ params[0]["W"] + params[0]["b"] - y
    expected = {"W": 2 / 14 * X.T @ residual, "b": 2 / 14 * residual.sum(axis=0)}
    fd = finite_diff.elementwise_gradient(net, params, X, y)
    for key in ("W", "b"):
        np.testing.assert_allclose(fd.grads[0][key], expected[key], rtol=1e-9, atol=1e-12)
        assert np.all(np.abs(fd.grads[0][key] - expected[key]) <= fd.errors[0][key] + 1e-15)
        assert not fd.kinks[0][key].any()
    assert fd.passes == 4 * 8  # four forward passes per parameter


def test_a_relu_kink_is_reported_not_failed():
    """An input row of zeros makes every relu pre-activation of that row exactly b = 0."""
    net = Network([2, 3, 1], activation=["relu", "identity"], loss="half_sse")
    X = np.array([[0.0, 0.0], [1.0, -0.5], [0.3, 0.8]])
    y = np.array([[0.5], [-1.0], [0.2]])
    params = net.init(seed=1)  # glorot weights, zero biases: z = 0 on the first row
    fd = finite_diff.elementwise_gradient(net, params, X, y)
    assert fd.kinks[0]["b"].all()
    assert not fd.kinks[1]["W"].any()
    report = gradcheck.verify(
        net,
        X,
        y,
        params=params,
        backends=["numpy"],
        steps=3,
        lr=0.1,
        reference="numpy",
        finite_differences="elementwise",
    )
    report.assert_ok()
    [bias_row] = [
        c
        for c in report.checks
        if c.backend == "finite differences" and c.layer == 1 and c.param == "b"
    ]
    assert "at a kink skipped" in bias_row.detail


def test_a_gradient_below_the_losss_rounding_is_compared_to_that_rounding():
    """x = 0.0012 makes ∂C/∂W₁ about 7e-6 while C is 0.3: its finite differences carry a rounding
    of ε·C/h ≈ 1e-10, 1e-5 of the gradient and above the noise limit of a smooth float64 function
    (found by hypothesis: the correct kernels were failed). The tolerance is that rounding; a
    gradient 0.1% wrong there still fails."""
    net = Network([1, 1, 1, 1, 1], activation="sigmoid", loss="bce", bias=False)
    X, y = np.array([[0.00123015]]), np.array([[0.8972138]])
    params = [{"W": np.array([[w]])} for w in (-0.3635, 1.0712, -1.7269, 0.8387)]
    fd = finite_diff.elementwise_gradient(net, params, X, y)
    _, grads = gradcheck.get_backend("numpy").loss_and_grads(net, params, X, y)

    def compared(observed):
        return finite_diff.compare(
            observed, fd.grads[0]["W"], fd.errors[0]["W"], fd.kinks[0]["W"],
            floor=1e-14, mode="elementwise", rounding=fd.roundings[0]["W"],
        )  # fmt: skip

    correct = compared(grads[0]["W"])
    assert correct.tolerance > finite_diff.noise_limit(np.float64)
    assert correct.ok, correct
    assert correct.rounded, correct
    assert not correct.noisy, correct
    assert not compared(grads[0]["W"] * 1.001).ok
    report = gradcheck.verify(
        net, X, y, params=params, backends=["numpy"], steps=3, reference="numpy"
    )
    report.assert_ok()


def test_directional_mode_costs_four_passes_a_direction_and_sees_a_wrong_gradient():
    X, y = gradcheck.datasets.digits()
    X, y = X[:300], y[:300]
    net = Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce")
    params = net.init(seed=0)
    d = finite_diff.directional_derivatives(net, params, X, y, k=6, seed=1)
    assert d.passes == 4 * 6
    _, grads = gradcheck.get_backend("numpy").loss_and_grads(net, params, X, y)
    projected = d.project(grads)
    assert np.all(np.abs(projected - d.values) <= 10 * d.errors + 1e-12)
    wrong = [{key: value.copy() for key, value in layer.items()} for layer in grads]
    wrong[0]["W"][5, 7] += 1e-3 * np.abs(grads[0]["W"]).max()
    assert np.any(np.abs(d.project(wrong) - d.values) > 100 * d.errors)


def test_miss_probability_formula():
    # one direction misses ‖e‖ = 1 below τ = 0.1 with chance at most √(2/π)·0.1 ≈ 0.0798
    assert finite_diff.miss_probability(1.0, 0.1, 1) == pytest.approx(0.0797884561)
    assert finite_diff.miss_probability(1.0, 0.1, 8) == pytest.approx(0.0797884561**8)
    assert finite_diff.miss_probability(1e-20, 1.0, 4) == 1.0  # an error below τ is not seen
