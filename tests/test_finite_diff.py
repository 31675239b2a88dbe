"""The finite-difference oracle against the mathematics written out."""

from __future__ import annotations

import itertools
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
        # within the estimates' own error, which is the rounding of C ≈ 4.4 over h ≈ 6e-6
        assert np.all(np.abs(fd.grads[0][key] - expected[key]) <= fd.errors[0][key])
        assert np.all(fd.errors[0][key] <= 1e-8 * np.abs(expected[key]).max())
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


def _networks_with_every_layer_kind():
    rng = np.random.default_rng(2)
    dense = Network([3, 4, 2], activation=["relu", "softmax"], loss="softmax_ce")
    conv = Network(
        [
            gradcheck.layers.Conv2D(3, 3, strides=2, padding="same", activation="relu"),
            gradcheck.layers.MaxPool2D(2),
            gradcheck.layers.Conv2D(2, 2, activation="tanh"),
            gradcheck.layers.Flatten(),
            gradcheck.layers.Dense(2, activation="sigmoid"),
        ],
        input_shape=(9, 9, 2),
        loss="bce",
    )
    for net in (dense, conv):
        X = rng.normal(size=(5, *net.input_shape))
        y = rng.uniform(size=(5, net.outputs))
        yield net, net.init(seed=1), X, y


@pytest.mark.parametrize("case", range(2), ids=["dense", "conv"])
def test_a_parameter_moves_only_its_own_layers_pre_activation(case):
    """The element-wise witness starts each pass at the moved parameter's layer
    (`witness.slope`, `witness.resume`); its loss equals the whole forward pass's with that one
    parameter moved, for every parameter of every layer kind (a Conv2D with stride and "same"
    padding, pooling, a second Conv2D, Dense, biases)."""
    net, params, X, y = list(_networks_with_every_layer_kind())[case]
    loss = finite_diff.NetworkLoss(net, params, X, y)
    i = 0
    for layer, shapes in enumerate(net.shapes()):
        for key in sorted(shapes):
            for index in np.ndindex(*shapes[key]):
                moved = [{k: v.copy() for k, v in p.items()} for p in params]
                moved[layer][key][index] += 0.01
                whole = gradcheck.witness.loss(net, gradcheck.witness.forward(net, moved, X), y)
                assert loss.coordinate(layer, key, index)(0.01) == pytest.approx(whole, rel=1e-13)
                i += 1
    assert i == sum(v.size for p in params for v in p.values())


@pytest.mark.parametrize("case", range(2), ids=["dense", "conv"])
def test_a_pass_moved_in_one_channel_tells_that_channels_kink_sides(case):
    """A pass moved in one channel holds that channel alone where the layers act on each
    channel alone (`witness.resume`), and tells its kink sides: those of a whole forward pass
    with the parameter moved, in that channel, and whole beyond; so a step crosses a relu's 0
    or moves a window's first maximum exactly where whole passes say it does — for every
    parameter, with steps long enough that some cross and some do not."""
    net, params, X, y = list(_networks_with_every_layer_kind())[case]
    loss = finite_diff.NetworkLoss(net, params, X, y)
    crossings = []
    for layer, shapes in enumerate(net.shapes()):
        for key, step in itertools.product(sorted(shapes), (0.01, 0.3)):
            for index in np.ndindex(*shapes[key]):
                line, channel = loss.coordinate(layer, key, index), index[-1]
                whole = []
                for t in (-step, step):
                    moved = [{k: v.copy() for k, v in p.items()} for p in params]
                    moved[layer][key][index] += t
                    outputs = gradcheck.witness.forward(net, moved, X)
                    whole.append(gradcheck.witness.kink_sides(net, outputs, layer))
                    ours = gradcheck.witness.kink_sides(net, line.forward(t), layer)
                    for side, want in zip(ours, whole[-1], strict=True):
                        if side.shape != want.shape:
                            want = want[..., channel : channel + 1]
                        assert np.array_equal(side, want)
                crosses = any(not np.array_equal(p, q) for p, q in zip(*whole, strict=True))
                assert line.crosses_kink(-step, step) == crosses
                crossings.append(crosses)
    assert any(crossings)
    assert not all(crossings)


def test_the_kink_sides_come_from_the_passes_that_give_the_loss():
    """4 forward passes per parameter, the two at ±h telling the sides of every relu and max
    pool too: none is run only to find them."""
    net, params, X, y = list(_networks_with_every_layer_kind())[1]
    fd = finite_diff.elementwise_gradient(net, params, X, y)
    n = sum(v.size for p in params for v in p.values())
    assert not any(k.any() for p in fd.kinks for k in p.values())
    assert fd.passes == 4 * n


@pytest.mark.parametrize("z", [1e-8, 0.0])
def test_a_step_across_a_kink_is_taken_again_smaller(z):
    """One relu unit whose pre-activation z lies within the first step of the first layer's
    parameters (h ≈ 6e-6): at z = 1e-8 the steps h/10 and h/100 cross it too and h/1000 does
    not, so that step's estimate is compared — 0.6 = ∂C/∂W₁ = ∂C/∂b₁ = (2·relu(z) + 0.3)·2·x,
    written out — at the cost of two passes a step tried; at z = 0 every step crosses and the
    point is a kink, not compared. The second layer moves no relu: four passes each."""
    net = Network([1, 1, 1], activation=["relu", "identity"], loss="half_sse")
    X, y = np.array([[1.0]]), np.array([[0.0]])
    params = [
        {"W": np.array([[0.5]]), "b": np.array([z - 0.5])},
        {"W": np.array([[2.0]]), "b": np.array([0.3])},
    ]
    fd = finite_diff.elementwise_gradient(net, params, X, y)
    expected = (2 * max(0.5 + (z - 0.5), 0.0) + 0.3) * 2 * 1.0
    for key in ("W", "b"):
        if z > 0:
            assert not fd.kinks[0][key].any()
            assert abs(fd.grads[0][key].item() - expected) <= fd.errors[0][key].item() < 1e-7
        else:
            assert fd.kinks[0][key].all()
    shrinks = len(finite_diff.SHRINKS)
    first_layer = 2 + 2 * shrinks + (2 if z > 0 else 0)  # ±h, ±h/s for each s, then ±h/2000
    assert fd.passes == 2 * first_layer + 2 * 4


def test_the_witness_mode_is_chosen_by_count_and_by_time():
    net, params, X, y = list(_networks_with_every_layer_kind())[1]
    quick = finite_diff.choose_mode(net, params, X, y)
    assert (quick.mode, quick.reason) == ("elementwise", "each of the 89 parameters, within 10 s")
    assert 0 < quick.estimate < 10
    slow = finite_diff.choose_mode(net, params, X, y, budget=0.0)
    assert slow.mode == "directional"
    assert slow.reason == "8 random directions: the 89 parameters one by one would take over 0 s"
    wide = Network([50, 41, 1])
    many = finite_diff.choose_mode(wide, wide.init(), np.zeros((2, 50)), np.zeros((2, 1)))
    assert many == finite_diff.Choice(
        "directional",
        "8 random directions: 2,133 parameters are more than 2,000 to take one by one",
    )
    report = gradcheck.verify(net, X, y, params=params, backends=["numpy"], steps=2)
    assert "finite differences elementwise: each of the 89 parameters, within 10 s" in (
        report.heading()
    )
    assert report.to_dict()["seconds"]["finite differences"]["elementwise_estimate"] > 0
