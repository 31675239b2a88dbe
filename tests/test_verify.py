"""verify() and its Report: it must see a wrong backend, say exactly where, and touch nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import copy_params, random_problem, same_params

import gradcheck
from gradcheck import Network
from gradcheck.tolerance import (
    gradient_magnitudes,
    loss_magnitude,
    prediction_magnitudes,
    relative_error,
    tolerances,
)


class Perturbed:
    """The numpy backend with one element of one layer's gradient nudged by a relative ``eps``."""

    name = "perturbed"

    def __init__(self, layer: int, index: tuple[int, int], eps: float):
        self.inner = gradcheck.get_backend("numpy")
        self.layer, self.index, self.eps = layer, index, eps

    def predict(self, net, params, X):
        return self.inner.predict(net, params, X)

    def loss_and_grads(self, net, params, X, y):
        loss, grads = self.inner.loss_and_grads(net, params, X, y)
        grads[self.layer]["W"][self.index] *= 1 + self.eps
        return loss, grads

    def train(self, net, params, X, y, steps, lr):
        return self.inner.train(net, params, X, y, steps, lr)


def _seed_problem():
    net = Network([3, 4, 1], bias=False)
    X, y = gradcheck.datasets.seed_xor()
    return net, X, y, net.init(seed=0, scheme="uniform")


def test_a_one_in_a_million_gradient_error_is_caught_and_located():
    net, X, y, params = _seed_problem()
    report = gradcheck.verify(
        net,
        X,
        y,
        params=params,
        backends=["numpy", Perturbed(1, (2, 0), 1e-6)],
        steps=50,
        reference="numpy",
    )
    assert not report.ok
    [failure] = report.failures
    assert (failure.backend, failure.quantity, failure.layer, failure.param, failure.index) == (
        "perturbed",
        "gradient",
        2,
        "W",
        (2, 0),
    )
    grads = gradcheck.get_backend("numpy").loss_and_grads(net, params, X, y)[1][1]["W"]
    # the error is measured against the size of what the gradient sums, at least its own size
    assert failure.error <= 1e-6 * abs(grads[2, 0]) / np.abs(grads).max() * (1 + 1e-9)
    assert failure.error > 100 * failure.tolerance
    with pytest.raises(AssertionError) as raised:
        report.assert_ok()
    message = str(raised.value)
    for expected in (
        "perturbed",
        "gradient",
        "layer 2 W[2, 0]",
        f"{failure.error:.1e}",
        f"{failure.tolerance:.1e}",
    ):
        assert expected in message
    assert "FAIL" in str(report)


def test_report_table_json_and_reference_row():
    net, X, y, params = _seed_problem()
    report = gradcheck.verify(net, X, y, params=params, steps=30)
    report.assert_ok()
    text = str(report)
    for name in gradcheck.available_backends():
        assert name in text
    assert "tolerance" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True
    assert data["network"]["layers"] == [3, 4, 1]
    assert data["backends"] == gradcheck.available_backends()
    quantities = {c["quantity"] for c in data["checks"]}
    assert quantities == {"predictions", "loss", "gradient", "train losses", "train params"}
    tol = tolerances(net, 4, 30)
    for check in data["checks"]:
        if check["backend"] == "finite differences":
            # held to its own error estimate, never tighter than the policy
            assert tol.point <= check["tolerance"] <= 1e-6
            continue
        expected = (
            tol.point
            if check["quantity"] in ("predictions", "loss", "gradient")
            else (tol.trajectory)
        )
        assert check["tolerance"] == expected
        assert check["error"] <= check["tolerance"]


def test_wrong_shape_and_missing_gradient_fail_with_a_reason():
    """A malformed result fails its backend at that call, before any comparison, saying what
    was expected and what was given."""

    class Flat(Perturbed):
        name = "broken"

        def predict(self, net, params, X):
            return self.inner.predict(net, params, X)[:, 0]  # (N,) instead of (N, 1)

    class Missing(Perturbed):
        name = "broken"

        def loss_and_grads(self, net, params, X, y):
            loss, grads = self.inner.loss_and_grads(net, params, X, y)
            del grads[0]["W"]
            return loss, grads

    net, X, y, params = _seed_problem()
    for broken, quantity, detail in [
        (Flat, "predictions", "broken's predictions must have shape (4, 1); got (4,)"),
        (Missing, "gradient", "broken's gradient of layer 1 must have keys ['W']; got []"),
    ]:
        report = gradcheck.verify(
            net, X, y, params=params, backends=[broken(0, (0, 0), 0)], steps=3, reference="numpy"
        )
        assert {(c.quantity, c.detail) for c in report.failures} == {(quantity, detail)}


def test_a_trajectory_that_leaves_the_reference_is_caught_at_its_step():
    class LateDrift(Perturbed):
        name = "late"

        def train(self, net, params, X, y, steps, lr):
            run = self.inner.train(net, params, X, y, steps, lr)
            run.losses[37] *= 1 + 1e-8
            return run

    net, X, y, params = _seed_problem()
    report = gradcheck.verify(
        net, X, y, params=params, backends=[LateDrift(0, (0, 0), 0)], steps=100, reference="numpy"
    )
    [failure] = report.failures
    assert (failure.quantity, failure.where) == ("train losses", "step 37")


def test_nothing_is_mutated(backend):
    net = Network([3, 5, 2], activation=["tanh", "sigmoid"], loss="mse")
    X, y, params = random_problem(net)
    before = copy_params(params)
    X0, y0 = X.copy(), y.copy()
    backend.predict(net, params, X)
    backend.loss_and_grads(net, params, X, y)
    run = backend.train(net, params, X, y, steps=5, lr=0.1)
    assert same_params(params, before)
    assert not same_params(run.params, before)
    assert np.array_equal(X, X0)
    assert np.array_equal(y, y0)
    gradcheck.verify(net, X, y, params=params, steps=5, lr=0.1).assert_ok()
    assert same_params(params, before)


def test_non_contiguous_and_integer_inputs_are_accepted(backend):
    net = Network([3, 4, 2], activation=["tanh", "identity"], loss="mse")
    X, y, params = random_problem(net)
    expected = backend.loss_and_grads(net, params, X, y)
    wide = np.zeros((X.shape[0], 6))
    wide[:, ::2] = X  # X as a strided view
    transposed = [
        {key: np.asfortranarray(value) for key, value in layer.items()} for layer in params
    ]
    loss, grads = backend.loss_and_grads(net, transposed, wide[:, ::2], y)
    # The same numbers; a BLAS may sum in another order for another memory layout.
    assert loss == pytest.approx(expected[0], rel=1e-14)
    for got, want in zip(grads, expected[1], strict=True):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-13, atol=1e-15)
    Xi, yi = np.rint(X).astype(np.int32), np.rint(y).astype(np.int64)
    loss_int, _ = backend.loss_and_grads(net, params, Xi, yi)
    assert loss_int == backend.loss_and_grads(net, params, Xi.astype(float), yi.astype(float))[0]


def test_trajectory_losses_are_the_loss_before_each_step(backend):
    net = Network([3, 5, 2], activation=["relu", "identity"], loss="half_sse")
    X, y, params = random_problem(net)
    run = backend.train(net, params, X, y, steps=3, lr=0.05)
    assert run.losses.shape == (3,)
    first, _ = backend.loss_and_grads(net, params, X, y)
    assert run.losses[0] == pytest.approx(first, rel=1e-14)
    assert backend.train(net, params, X, y, steps=0, lr=0.05).losses.shape == (0,)


def test_bad_input_is_rejected_before_any_backend_runs():
    calls = []

    class Spy(Perturbed):
        name = "spy"

        def train(self, *args):
            calls.append("train")
            return super().train(*args)

    net, X, y, params = _seed_problem()
    with pytest.raises(
        ValueError, match=r"X must have layers\[0\] = 3 columns; got shape \(4, 2\)"
    ):
        gradcheck.verify(net, X[:, :2], y, params=params, backends=[Spy(0, (0, 0), 0)])
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'torch'"):
        gradcheck.verify(net, X, y, params=params, backends=[Spy(0, (0, 0), 0), "torch"])
    with pytest.raises(ValueError, match="lr must be a positive finite number; got 0"):
        gradcheck.verify(net, X, y, params=params, backends=[Spy(0, (0, 0), 0)], lr=0)
    with pytest.raises(TypeError, match="backends must be names or objects"):
        gradcheck.verify(net, X, y, params=params, backends=[object()])
    with pytest.raises(TypeError, match=r"progress must be a callable .* got 'bar'"):
        gradcheck.verify(net, X, y, params=params, backends=[Spy(0, (0, 0), 0)], progress="bar")
    assert calls == []


class Untrained:
    """A minimal backend: predict and loss_and_grads, no train; its gradient's first layer
    scaled by ``factor``."""

    name = "untrained"

    def __init__(self, factor: float = 1.0):
        self.inner, self.factor, self.calls = gradcheck.get_backend("numpy"), factor, 0

    def predict(self, net, params, X):
        self.calls += 1
        return self.inner.predict(net, params, X)

    def loss_and_grads(self, net, params, X, y):
        self.calls += 1
        loss, grads = self.inner.loss_and_grads(net, params, X, y)
        return loss, [{"W": grads[0]["W"] * self.factor}, *grads[1:]]


def test_a_backend_without_train_is_checked_without_a_training_run():
    """steps=0 compares predictions, loss and gradients only, says so, and still catches a
    wrong gradient; asking a backend without train for a run is a usage error, before any
    work."""
    net, X, y, params = _seed_problem()
    right = gradcheck.verify(net, X, y, params=params, backends=["numpy", Untrained()], steps=0)
    assert right.ok, str(right)
    assert {c.quantity for c in right.checks} == {"predictions", "loss", "gradient"}
    assert "4 samples, no training run (steps=0)" in right.heading()[1]
    assert right.verdict_lines()[0] == "both backends agree with the reference"
    wrong = gradcheck.verify(net, X, y, params=params, backends=[Untrained(1.5)], steps=0)
    assert wrong.verdict_lines()[0] == "DISAGREE: untrained"
    assert any("1.5 ×" in line for line in wrong.verdict_lines()), wrong.verdict_lines()
    alone = gradcheck.verify(net, X, y, params=params, backends=["numpy"], steps=0)
    assert alone.verdict_lines()[0] == "numpy agrees with the reference"
    untrained = Untrained()
    with pytest.raises(ValueError, match=r"steps must be 0 for a backend without a train "
                       r"method \(untrained\), .*; got 5"):  # fmt: skip
        gradcheck.verify(net, X, y, params=params, backends=[untrained], steps=5)
    with pytest.raises(ValueError, match=r"without a train method \(untrained\), "):  # once
        gradcheck.verify(net, X, y, params=params, backends=[untrained], reference=untrained)
    assert untrained.calls == 0


def test_relative_error_definition():
    reference = np.array([[1.0, -4.0], [0.5, 0.0]])
    observed = reference + np.array([[0.0, 0.0], [0.02, 0.0]])
    assert relative_error(observed, reference) == (pytest.approx(0.02 / 4), (1, 0))
    assert relative_error(observed, reference, elementwise=True) == (pytest.approx(0.04), (1, 0))
    observed[0, 1] = np.nan
    assert relative_error(observed, reference) == (np.inf, (0, 1))
    assert relative_error(np.zeros(3), np.zeros(3)) == (0.0, (0,))
    assert relative_error(np.array([0, 1e-300]), np.zeros(2))[0] > 1


def test_gradient_magnitudes_are_the_sums_of_absolute_terms():
    """One identity layer with mse: ∂C/∂W = (2/NK) Xᵀ(a − y), whose terms are bounded by
    (2/NK) |X|ᵀ(|a| + |y|)."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    net = Network([3, 2], activation="identity", loss="mse")
    params = [{"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}]
    a = X @ params[0]["W"] + params[0]["b"]
    [magnitude] = gradient_magnitudes(net, params, X, y)
    np.testing.assert_allclose(magnitude["W"], 2 / 12 * np.abs(X).T @ (np.abs(a) + np.abs(y)))
    np.testing.assert_allclose(magnitude["b"], 2 / 12 * (np.abs(a) + np.abs(y)).sum(axis=0))


def test_prediction_magnitudes_are_the_forward_pass_in_absolute_values():
    """tanh then softmax, written out: the hidden layer's bound is the sum of its terms
    |x||W| + |b| times tanh's ``derivative_terms``; the output's, for that bound m carried through
    the softmax's Jacobian, |a| ⊙ (m + ⟨m, |a|⟩)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 3))
    net = Network([3, 5, 2], activation=["tanh", "softmax"], loss="softmax_ce")
    params = net.init(seed=1)
    (W1, b1), (W2, b2) = ((p["W"], p["b"]) for p in params)
    h = np.tanh(X @ W1 + b1)
    z2 = h @ W2 + b2
    a = np.exp(z2 - z2.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    tanh_terms = gradcheck.ops.ACTIVATIONS["tanh"].derivative_terms(X @ W1 + b1, h)
    m1 = tanh_terms * (np.abs(X) @ np.abs(W1) + np.abs(b1))
    m2 = m1 @ np.abs(W2) + np.abs(b2)
    expected = a * (m2 + np.sum(m2 * a, axis=1, keepdims=True))
    np.testing.assert_allclose(prediction_magnitudes(net, params, X), expected, rtol=1e-12)


def test_a_prediction_that_cancels_is_held_to_the_size_of_its_terms():
    """Found by hypothesis's thorough profile: one sample whose output sums 13 terms that
    nearly cancel; relative to the small prediction four correct backends and the witness part
    by up to 6.7e-13, 25× the policy; relative to the terms they agree to rounding."""
    net = Network([13, 13, 1], activation="tanh", loss="half_sse", bias=False)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1, 13))
    params = net.init(seed=3)
    h = np.tanh(X @ params[0]["W"])
    # the output weights that make the output's terms cancel to 1e-3 of their size
    w = params[1]["W"][:, 0]
    w -= h[0] * (h[0] @ w - 1e-3 * np.abs(h[0]) @ np.abs(w)) / (h[0] @ h[0])
    assert abs(h[0] @ w) < 2e-3 * (np.abs(h[0]) @ np.abs(w))
    report = gradcheck.verify(net, X, np.array([[1.5]]), params=params, steps=5, lr=0.05)
    report.assert_ok()


def test_a_gradient_that_cancels_is_held_to_the_size_of_its_terms():
    """Found by hypothesis: two samples whose contributions nearly cancel, through a saturated
    tanh whose 1 − a² cancels too. Relative to the small result, correct backends differ by more
    than the policy allows; relative to the terms, they agree to rounding."""
    net = Network([1, 1], activation="tanh", loss="half_sse", bias=False)
    X = np.array([[-1.47980844], [1.72406656]])
    y = np.array([[-0.13486275], [-1.98860416]])
    params = [{"W": np.array([[1.70993923]])}]
    report = gradcheck.verify(net, X, y, params=params, steps=5, lr=0.025)
    report.assert_ok()


def test_loss_magnitude_is_the_outputs_rounding_times_the_losss_slope():
    """½Σ(a − y)² through a sigmoid: Σ (|a| + |y|) times the outputs' bound, σ's
    ``derivative_terms`` |a| times the terms |x||W| of z; bce, whose output is its own, takes the
    logits' bound |x||W| times its (|a| + |y|)/NK."""
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    W = rng.normal(size=(3, 2))
    a = 1 / (1 + np.exp(-X @ W))
    terms = np.abs(X) @ np.abs(W)
    for loss, expected in (
        ("half_sse", np.sum((np.abs(a) + y) * np.abs(a) * terms)),
        ("bce", np.sum((np.abs(a) + y) / 10 * terms)),
    ):
        net = Network([3, 2], activation="sigmoid", loss=loss, bias=False)
        assert loss_magnitude(net, [{"W": W}], X, y) == pytest.approx(expected, rel=1e-12)


def _near_a_fit():
    """Found by hypothesis's thorough profile: one sample whose output is 1.2e-3 from its
    target of 0.3, so the loss, 7e-7, is far below the rounding of the a and y it subtracts;
    relative to itself numba and keras part from the reference by 1.8e-13, 7× the policy."""
    net = Network([14, 1, 1], activation=["tanh", "sigmoid"], loss="half_sse", bias=False)
    X = np.array([[0.34558419, 0.82161814, 0.33043708, -1.30315723, 0.90535587, 0.44637457,
                   -0.53695324, 0.5811181, 0.3645724, 0.2941325, 0.02842224, 0.54671299,
                   -0.73645409, -0.16290995]])  # fmt: skip
    W1 = np.array([[-0.14370326, 0.09207267, 0.62023172, -0.20744313, -0.00411272, -0.34710768,
                    -0.38814868, 0.61241041, -0.29555028, 0.42182041, 0.49868518, -0.06901394,
                    0.46879175, -0.49887733]]).T  # fmt: skip
    return net, X, np.array([[0.30319483]]), [{"W": W1}, {"W": np.array([[-1.47065698]])}]


class HalfForgotten(Perturbed):
    """The numpy backend with the ½ of ½Σ(a − y)² forgotten in the loss (not the gradient)."""

    name = "half forgotten"

    def loss_and_grads(self, net, params, X, y):
        loss, grads = self.inner.loss_and_grads(net, params, X, y)
        return 2 * loss, grads


def test_a_loss_near_a_fit_is_held_to_the_rounding_it_inherits_and_a_wrong_one_still_fails():
    net, X, y, params = _near_a_fit()
    gradcheck.verify(net, X, y, params=params, steps=5).assert_ok()
    report = gradcheck.verify(net, X, y, params=params, steps=5, backends=["numpy", "jax",
                              HalfForgotten(0, (0, 0), 0.0)])  # fmt: skip
    assert report.verdict_lines()[0] == "DISAGREE: half forgotten"
    [loss] = [c for c in report.checks if c.backend == "half forgotten" and c.quantity == "loss"]
    assert loss.error > 1e6 * loss.tolerance


def test_a_bias_whose_updates_cancel_is_held_to_its_layers_scale():
    """Found by hypothesis: a bias that starts at 0 and whose updates nearly cancel ends tiny;
    relative to itself correct backends differ, relative to its layer's weights they agree."""
    net = Network([1, 1], activation="sigmoid", loss="bce", bias=True)
    X = np.array([[-1.47980844], [1.72406656]])
    y = np.array([[0.53458417], [0.48679755]])
    params = [{"W": np.array([[1.70993923]]), "b": np.array([0.0])}]
    gradcheck.verify(net, X, y, params=params, steps=5, lr=0.05).assert_ok()


def test_tolerances_grow_with_rounding_unit_size_depth_and_steps():
    small = tolerances(Network([3, 4, 1]), 4, 0)
    assert tolerances(Network([3, 4, 1], dtype="float32"), 4, 0).point == pytest.approx(
        small.point * 2.0**29
    )
    assert tolerances(Network([3, 4, 4, 1]), 4, 0).point == pytest.approx(small.point * 1.5)
    assert tolerances(Network([3, 4, 1]), 16, 0).point == pytest.approx(small.point * 2)
    assert tolerances(Network([3, 4, 1]), 4, 99).trajectory == pytest.approx(small.point * 10)


class Doubled(Perturbed):
    """The numpy backend with every gradient doubled: what a loss averaged over N·K = 2 less
    than the spec's gives."""

    name = "doubled"

    def loss_and_grads(self, net, params, X, y):
        loss, grads = self.inner.loss_and_grads(net, params, X, y)
        return loss, [{key: 2 * value for key, value in layer.items()} for layer in grads]


def test_a_wrong_reference_is_named_by_the_others_and_the_finite_differences():
    net, X, y, params = _seed_problem()
    backends = [n for n in ("numpy", "numba") if n in gradcheck.available_backends()]
    report = gradcheck.verify(
        net, X, y, params=params, backends=backends, reference=Doubled(0, (0, 0), 0), steps=5
    )
    assert {c.backend for c in report.failures} == {*backends, "finite differences"}
    listing = " and ".join([", ".join(backends), "finite differences"])
    [verdict] = report.verdicts
    assert verdict.startswith(f"the reference doubled disagrees with {listing}: gradient")


# --- run to run --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_repeats_reports_zero_for_the_deterministic_built_in_backends(dtype):
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], dtype=dtype)
    report = gradcheck.verify(net, X, y, steps=100, repeats=2, finite_differences=None)
    assert report.ok
    every = {*gradcheck.available_backends(), *([] if dtype == "float64" else ["jax in float64"])}
    assert report.nondeterminism == dict.fromkeys(every, 0.0)
    assert json.loads(json.dumps(report.to_dict()))["nondeterminism"] == report.nondeterminism


class _Jittery:
    """numpy's kernels, with each gradient scaled by 1 ± 2ε on every call: a reduction whose
    order changes from run to run."""

    name = "jittery"

    def __init__(self):
        self.base = gradcheck.get_backend("numpy")
        self.draws = np.random.default_rng(0)

    def _jitter(self, grads):
        factor = 1 + 2 * np.finfo(np.float64).eps * self.draws.choice([-1.0, 1.0])
        return [{k: v * factor for k, v in g.items()} for g in grads]

    def loss_and_grads(self, net, params, X, y):
        loss, grads = self.base.loss_and_grads(net, params, X, y)
        return loss, self._jitter(grads)

    def predict(self, net, params, X):
        return self.base.predict(net, params, X)

    def train(self, net, params, X, y, steps, lr):
        losses, current = [], params
        for _ in range(steps):
            loss, grads = self.loss_and_grads(net, current, X, y)
            losses.append(loss)
            current = [
                {k: v - lr * g[k] for k, v in p.items()}
                for p, g in zip(current, grads, strict=True)
            ]
        return gradcheck.Trajectory(current, np.array(losses))


def test_a_backend_nondeterministic_within_tolerance_is_named_as_such_not_as_wrong():
    X, y = gradcheck.datasets.seed_xor()
    report = gradcheck.verify(
        Network([3, 4, 1]), X, y, steps=50, backends=[_Jittery()], repeats=2,
        finite_differences=None,
    )  # fmt: skip
    assert report.ok, str(report)
    assert 0 < report.nondeterminism["jittery"] < 1e-12
    assert report.run_to_run["jittery"]["gradient"] > 0
    assert any(line.startswith("jittery is nondeterministic") for line in report.verdict_lines())
