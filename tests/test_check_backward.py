"""check_backward's protocol: every way it used to cry wolf on a correct kernel, each as a
regression test, and what it promises about its arguments, its result and its messages."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gallery import KERNELS, relu_backward, relu_forward

import gradcheck
from gradcheck import check_backward, check_jvp
from gradcheck.adapters import from_cache, from_layer

RELU = from_cache(relu_forward, relu_backward)


def tanh(x):
    return np.tanh(x)


def tanh_backward(u, x):
    return u * (1 - np.tanh(x) ** 2)


# --- false alarms that are gone -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_relu_at_a_realistic_size_is_not_flagged(seed):
    """Random directions move all 32768 inputs at once; some cross relu's kink."""
    x = np.random.default_rng(seed).normal(size=(64, 512))
    result = check_backward(*RELU, x, seed=seed)
    assert result.ok


def test_a_kink_crossed_by_the_first_step_is_settled_by_a_smaller_one():
    x = np.array([[3e-7, -0.5, 0.8]])  # 3e-7 lies within the first step (6e-6) of relu's kink
    result = check_backward(*RELU, x)
    [finding] = result.findings
    assert finding.resolved >= 1
    assert finding.kinks == 0


def test_a_point_on_a_kink_is_reported_as_one_not_failed():
    x = np.array([[0.0, -0.5, 0.8]])  # relu′(0) = 0 is the left slope: a kink, not an error
    result = check_backward(*RELU, x)
    [finding] = result.findings
    assert finding.kinks >= 1
    assert "at a kink skipped" in finding.detail


def test_a_skipped_point_is_reported_with_its_own_error():
    """A point on a kink is not compared, but what it hides is shown: at relu's 0 the central
    difference is the mean of the slopes 0 and 1, half the slope 1 beside it, where relu′(0)
    is 0 — a relative error of 0.5 there."""
    result = check_backward(
        lambda x: np.maximum(x, 0).sum(), lambda u, x: u * (x > 0), np.array([0.0, 0.8])
    )
    for finding in result.findings:
        assert finding.kinks == 1
        assert finding.skipped_error == pytest.approx(0.5, rel=1e-6)
        assert "1 at a kink skipped, the largest error there 5.0e-01" in finding.detail


def test_a_wrong_gradient_beside_a_kink_is_still_caught():
    def wrong(u, x):
        return 2 * relu_backward(u, x)

    x = np.array([[0.0, -0.5, 0.8]])
    result = check_backward(RELU[0], wrong, x, raise_exception=False)
    assert not result.ok
    assert "dx0 is 2 × the finite differences" in str(result)
    assert [(e.kind, e.factor) for e in result.explanations] == [("scale", 2)]


def test_float32_code_with_a_float64_output_buffer():
    """The precision is the narrowest dtype involved, not the output's."""

    def forward(x):
        out = np.zeros(x.shape)  # float64, as np.zeros gives
        out[:] = np.tanh(x)  # computed in float32
        return out

    x = np.random.default_rng(1).normal(size=(40, 30)).astype(np.float32)
    result = check_backward(forward, lambda u, x: u * (1 - np.tanh(x) ** 2), x)
    assert result.ok


def test_a_backward_that_updates_its_cotangent_in_place():
    def backward(dout, x):
        dout *= 1 - np.tanh(x) ** 2  # common: dout updated in place and returned
        return dout

    x = np.random.default_rng(2).normal(size=(5, 4))
    result = check_backward(tanh, backward, x)
    assert result.ok
    assert result.notes == ["backward modified its cotangent in place (it was given a copy)"]


def test_a_forward_that_checks_its_domain():
    """Probabilities in, their logs out: the stale-state probe stays within [0, 1], and every
    row keeps its sum."""

    def forward(p):
        if np.any(p <= 0) or np.any(p > 1) or not np.allclose(p.sum(axis=1), 1):
            raise ValueError("p must hold probability rows")
        return np.log(p)

    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(6), size=8)
    result = check_backward(forward, lambda u, p: u / p, p)
    assert result.ok
    assert result.notes == []


def test_a_forward_that_raises_near_the_input_is_a_note_not_a_verdict():
    calls = []

    def forward(x):
        calls.append(x.copy())
        if len(calls) == 3:  # the stale-state probe, after forward twice at the input
            raise RuntimeError("out of range")
        return np.tanh(x)

    x = np.random.default_rng(4).normal(size=(3, 3))
    result = check_backward(forward, tanh_backward, x, cotangents=1)
    assert result.ok
    [note] = result.notes
    assert note.startswith("forward raised on a nearby input (RuntimeError: out of range)")


def test_a_forward_that_warns_near_the_input_is_a_note():
    calls = []

    def forward(x):
        calls.append(1)
        if len(calls) == 3:  # the stale-state probe
            np.log(np.zeros(1))  # divide by zero: a RuntimeWarning, an error under -W error
        return np.tanh(x)

    x = np.random.default_rng(4).normal(size=(3, 3))
    result = check_backward(forward, tanh_backward, x, cotangents=1)
    assert result.ok
    assert result.notes[0].startswith("forward warned on a nearby input: divide by zero")


def test_jax_forward_with_float32_inputs_and_a_float64_output():
    jnp = pytest.importorskip("jax.numpy")

    def forward(x):
        return np.tanh(x).astype(np.float64)

    x = np.random.default_rng(5).normal(size=(6, 5)).astype(np.float32)
    result = check_backward(
        forward,
        tanh_backward,
        x,
        jax_forward=lambda x: jnp.tanh(x).astype(jnp.float64),
        in_float64=False,  # the mixed dtypes themselves, off the dtype ladder
    )
    assert {f.oracle for f in result.findings} == {"finite differences", "jax.vjp"}


# --- still caught -----------------------------------------------------------------------------


def test_a_stale_cache_is_caught():
    state = {}

    def forward(x):
        state["t"] = np.tanh(x)
        return state["t"]

    def backward(u, x):
        return u * (1 - state["t"] ** 2)  # BUG: the last forward call's activations

    x = np.random.default_rng(6).normal(size=(4, 5))
    result = check_backward(forward, backward, x, raise_exception=False)
    assert not result.ok


# --- arguments ----------------------------------------------------------------------------------


X = np.random.default_rng(7).normal(size=(3, 4))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cotangents": 0}, ValueError, "cotangents must be an integer of at least 1; got 0"),
        ({"directions": 0}, ValueError, "directions must be an integer of at least 1; got 0"),
        ({"seed": -1}, ValueError, "seed must be an integer of at least 0; got -1"),
        ({"rtol": 0.0}, ValueError, r"rtol must be a number in \(0, 1\) or None; got 0.0"),
        ({"elementwise_max": -1}, ValueError, "elementwise_max must be an integer"),
        ({"wrt": ["y"]}, ValueError, r"wrt must name inputs among \['x0'\]"),
        ({"names": ["a", "b"]}, ValueError, r"names must have one name per input \(1\)"),
    ],
)
def test_settings_that_check_nothing_are_refused_before_any_work(kwargs, error, message):
    calls = []

    def forward(x):
        calls.append(1)
        return np.tanh(x)

    with pytest.raises(error, match=message):
        check_backward(forward, tanh_backward, X, **kwargs)
    assert calls == []


def test_inputs_that_cannot_be_differentiated_are_refused():
    with pytest.raises(
        TypeError, match="input x0 must be a float array to differentiate; got None"
    ):
        check_backward(tanh, tanh_backward, None)
    with pytest.raises(TypeError, match=r"got dtype int64 \(leave it out of wrt= to hold it"):
        check_backward(tanh, tanh_backward, np.arange(3))
    with pytest.raises(ValueError, match="input x0 must be finite"):
        check_backward(tanh, tanh_backward, np.array([np.nan]))


def test_wrt_holds_labels_and_hyper_parameters_fixed():
    kernel = KERNELS["softmax_loss"]
    x, y = kernel.inputs(np.random.default_rng(0), "float64")
    result = check_backward(*from_cache(kernel.forward, kernel.backward), x, y, names=["x", "y"],
                            wrt=["x"])  # fmt: skip
    assert [f.input for f in result.findings] == ["x"]
    same = check_backward(*from_cache(kernel.forward, kernel.backward), x, y, wrt=[0])
    assert same.ok


def test_a_kernel_with_two_outputs():
    """The LSTM step returns (h, c); its backward takes a cotangent for each."""
    kernel = KERNELS["lstm_step"]
    inputs = kernel.inputs(np.random.default_rng(0), "float64")
    result = check_backward(*from_cache(kernel.forward, kernel.backward), *inputs,
                            names=kernel.names)  # fmt: skip
    assert result.ok


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda u, x, w: u @ w.T, "backward returned one ndarray; expected a tuple with a "
                                  "gradient for each of x, w, or name in wrt= the inputs it "
                                  "returns gradients for (wrt=['x'])"),
        (lambda u, x, w: None, "backward returned None; expected a tuple"),
        (lambda u, x, w: (u @ w.T,) * 3, "backward returned 3 gradients; expected 2"),
    ],
)  # fmt: skip
def test_a_backward_with_the_wrong_number_of_gradients_is_a_usage_error(returned, message):
    """A loss(a, y) whose backward returns da alone: a usage error that suggests wrt=, raised
    before any finite difference, never a FAIL with an infinite error."""
    rng = np.random.default_rng(8)
    x, w = rng.normal(size=(5, 4)), rng.normal(size=(4, 3))
    with pytest.raises(TypeError, match=re.escape(message)):
        check_backward(lambda x, w: x @ w, returned, x, w, names=["x", "w"])
    a, y = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    loss, dloss = (lambda a, y: 0.5 * np.sum((a - y) ** 2)), (lambda u, a, y: u * (a - y))
    assert check_backward(loss, dloss, a, y, wrt=["x0"]).ok


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda u, x, w: (u @ w.T, None), "gradient is None, expected shape (4, 3)"),
        (lambda u, x, w: (u @ w.T, u.T @ x), "gradient has shape (3, 4), expected (4, 3)"),
    ],
)  # fmt: skip
def test_a_misshapen_gradient_fails_saying_what_was_expected(returned, message):
    rng = np.random.default_rng(8)
    x, w = rng.normal(size=(5, 4)), rng.normal(size=(4, 3))
    result = check_backward(lambda x, w: x @ w, returned, x, w, names=["x", "w"],
                            raise_exception=False)  # fmt: skip
    assert not result.ok
    assert message in str(result)


def test_a_rule_that_does_not_take_the_cotangent_is_told_what_it_must_look_like():
    """A layer's ``gradient(x)`` handed over as the backward, and a jvp without its tangents:
    refused once forward has run at the inputs, before any derivative is taken."""

    class Sigmoid:
        calls = 0

        def __call__(self, x):
            Sigmoid.calls += 1
            return 1 / (1 + np.exp(-x))

        def gradient(self, x):
            return self(x) * (1 - self(x))

    sigmoid, x = Sigmoid(), np.linspace(-2, 2, 6)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "backward must take the cotangent and then each input, as backward(u, x); "
            "Sigmoid.gradient(x) cannot: too many positional arguments"
        ),
    ):
        check_backward(sigmoid, sigmoid.gradient, x, names=["x"])
    with pytest.raises(TypeError, match=r"jvp must take the tangents and then each input, as "):
        check_jvp(sigmoid, lambda x: x, x, names=["x"])
    with pytest.raises(TypeError, match=r"jvp must be a callable jvp\(v, x0\); got 3"):
        check_backward(sigmoid, lambda u, x: u, x, jvp=3)
    assert Sigmoid.calls <= 3 * 2  # forward's two runs at the inputs in each call


def test_from_cache_needs_pairs():
    forward, backward = from_cache(lambda x: np.tanh(x), lambda d, c: d)
    with pytest.raises(TypeError, match=r"forward must return a pair \(out, cache\); got ndarray"):
        check_backward(forward, backward, X)


def test_from_layer_with_params_and_grads_dicts():
    class Dense:  # the numpy-ml style: params and grads dicts
        def __init__(self):
            self.params = {"W": None, "b": None}
            self.grads = {}

        def forward(self, x):
            self.x = x
            return x @ self.params["W"] + self.params["b"]

        def backward(self, dout):
            self.grads = {"W": self.x.T @ dout, "b": dout.sum(axis=0)}
            return dout @ self.params["W"].T

    rng = np.random.default_rng(9)
    x, W, b = rng.normal(size=(6, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    result = check_backward(*from_layer(Dense, params=["W", "b"]), x, W, b, names=["x", "W", "b"])
    assert [f.input for f in result.findings] == ["x", "W", "b"]


def test_from_layer_names_a_missing_gradient():
    class NoGrads:
        def forward(self, x):
            return x * self.scale

        def backward(self, dout):
            return dout * self.scale

    forward, backward = from_layer(NoGrads, params=["scale"])
    with pytest.raises(
        AttributeError, match="no gradient for scale: looked for attribute 'dscale'"
    ):
        check_backward(forward, backward, X, np.ones(4))


# --- the result and its messages ------------------------------------------------------------


def test_the_result_has_one_finding_per_input_and_oracle():
    kernel = KERNELS["affine"]
    inputs = kernel.inputs(np.random.default_rng(0), "float64")
    result = check_backward(*from_cache(kernel.forward, kernel.bugs["mean_bias"]), *inputs,
                            names=kernel.names, cotangents=3, raise_exception=False)  # fmt: skip
    assert len(result.checks) == 3 * 3
    assert [f.input for f in result.findings] == ["x", "w", "b"]
    [b] = [f for f in result.findings if f.input == "b"]
    assert not b.ok
    assert np.isfinite(b.observed)
    assert np.isfinite(b.expected)
    assert b.hint == "db is 1/64 × the finite differences"  # averaged over the N = 64 samples
    assert [(e.kind, e.factor) for e in result.explanations] == [("scale", 1 / 64)]
    text = str(result)
    assert len(text.splitlines()) == len(set(text.splitlines()))  # no line twice
    with pytest.raises(AssertionError, match="FAIL input b"):
        check_backward(*from_cache(kernel.forward, kernel.bugs["mean_bias"]), *inputs,
                       names=kernel.names)  # fmt: skip


def test_the_default_still_raises_and_returns_on_success():
    result = check_backward(tanh, tanh_backward, X)
    assert isinstance(result, gradcheck.BackwardCheck)
    assert result.forward_passes > 0
    with pytest.raises(AssertionError, match="backward disagrees"):
        check_backward(tanh, lambda u, x: 3 * tanh_backward(u, x), X)


def test_one_forward_pass_serves_every_cotangent():
    """A smooth kernel of 12 + 8 elements: two passes for the outputs (the second tells whether
    forward is a function of its inputs), one stale-state probe per cotangent, and 4 passes per
    element (±h, ±h/2) whatever the number of cotangents."""
    calls = []

    def forward(x, w):
        calls.append(1)
        return np.tanh(x @ w)

    def backward(u, x, w):
        d = u * (1 - np.tanh(x @ w) ** 2)
        return d @ w.T, x.T @ d

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))
    for cotangents in (1, 3):
        calls.clear()
        result = check_backward(forward, backward, x, w, cotangents=cotangents)
        assert result.forward_passes == len(calls) == 2 + cotangents + 4 * (12 + 8)
        assert len(result.checks) == 2 * cotangents


# --- a forward or backward that is not a function of its inputs ---------------------------------


def test_a_dropout_that_draws_its_mask_inside_forward_is_named_not_taken_for_a_wrong_gradient():
    def forward(x):
        mask = np.random.default_rng().uniform(size=x.shape) > 0.5
        return x * mask * 2

    x = np.random.default_rng(0).normal(size=(4, 5))
    result = check_backward(forward, lambda u, x: u, x, raise_exception=False)
    assert not result.ok
    [why] = result.explanations
    assert why.kind == "nondeterministic"
    assert why.text.startswith("forward gave different outputs for the same inputs")
    assert why.text.endswith("fix the randomness with a seed or a mask argument")
    assert result.forward_passes == 2  # nothing is differentiated
    assert result.nondeterminism["forward"] > 0.1


def test_a_layer_whose_cache_is_shared_between_calls_is_named():
    class Layer:
        def forward(self, x):
            self.x = x
            return np.tanh(x)

        def backward(self, u):
            return u * (1 - np.tanh(self.x) ** 2)

    layer = Layer()
    x = np.random.default_rng(0).normal(size=(4, 5))
    result = check_backward(layer.forward, lambda u, x: layer.backward(u), x, raise_exception=False)
    assert not result.ok
    assert [e.kind for e in result.explanations] == ["stale_state"]
    assert "backward used state from another forward call" in str(result)


def test_repeats_measures_the_run_to_run_difference():
    x = np.random.default_rng(0).normal(size=(4, 5))
    steady = check_backward(tanh, tanh_backward, x, repeats=2)
    assert steady.nondeterminism == {"forward": 0.0, "backward": 0.0}
    assert steady.notes == []

    draws = np.random.default_rng(1)

    def jittery(u, x):  # a reduction whose order changes: differences of a rounding
        return tanh_backward(u, x) * (1 + 4e-16 * draws.choice([-1.0, 1.0]))

    shaky = check_backward(tanh, jittery, x, repeats=3)
    assert shaky.ok  # nondeterministic within the tolerance is not wrong
    assert 0 < shaky.nondeterminism["backward"] < 1e-14
    assert any(note.startswith("backward is nondeterministic") for note in shaky.notes)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _gelu_backward(u, x):
    t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))
    slope = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)
    return u * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * slope)


def test_a_smooth_function_in_float32_is_never_said_to_have_a_kink(gradcheck_seed):
    """GELU is smooth: float32's noisy differences must not be reported as kinks skipped."""
    x = (3 * np.random.default_rng(gradcheck_seed).normal(size=(20, 30))).astype("float32")
    result = check_backward(_gelu, _gelu_backward, x, seed=gradcheck_seed)
    assert all(c.kinks == 0 for c in result.checks), str(result)
    assert "kink" not in str(result)


def test_an_out_cache_kernel_given_without_from_cache_is_told_to_use_it():
    """The two first attempts a user of (out, cache) kernels makes: a cache that is not an
    array, and a cache that is the input itself (relu's)."""

    def affine_forward(x, w):
        return x @ w, (x, w)

    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, x.T @ dout

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(4, 5)), rng.normal(size=(5, 3))
    with pytest.raises(TypeError, match=r"wrap the kernel with gradcheck.adapters.from_cache"):
        check_backward(affine_forward, affine_backward, x, w)
    result = check_backward(relu_forward, relu_backward, x, raise_exception=False)
    [finding] = [f for f in result.findings if not f.ok]
    assert "backward got a cotangent for each of forward's 2 outputs" in finding.detail
    assert finding.detail.endswith("wrap the kernel with gradcheck.adapters.from_cache")
    assert check_backward(*from_cache(relu_forward, relu_backward), x).ok


def test_from_layer_takes_method_names_and_reads_gradients_an_optimizer_was_given():
    """A layer with forward_pass/backward_pass that hands its gradients to an optimizer:
    correct passes, and a dropped bias gradient is caught and named."""
    from gradcheck.adapters import Recorder

    def make_layer(bias_term):
        class Dense:
            def __init__(self):
                self.W_opt, self.b_opt = Recorder(), Recorder()

            def forward_pass(self, X, training=True):
                self.X = X
                return X @ self.W + self.b

            def backward_pass(self, grad):
                self.W_opt.update(self.W, self.X.T @ grad)
                self.b_opt.update(self.b, bias_term(grad))
                return grad @ self.W.T

        return Dense

    read = lambda layer: (layer.W_opt.gradient, layer.b_opt.gradient)  # noqa: E731
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(16, 5)), rng.normal(size=(5, 8)), rng.normal(size=8)
    names = ["x", "W", "b"]
    for bias_term, ok in ((lambda g: g.sum(axis=0), True), (lambda g: 0 * g.sum(axis=0), False)):
        layer = from_layer(make_layer(bias_term), params=["W", "b"], grads=read,
                           forward="forward_pass", backward="backward_pass")  # fmt: skip
        result = check_backward(*layer, x, W, b, names=names, raise_exception=False)
        assert result.ok is ok
        assert {f.input for f in result.findings if not f.ok} == (set() if ok else {"b"})
    with pytest.raises(AttributeError, match=r"no backward method 'backward'.*backward_pass"):
        check_backward(*from_layer(make_layer(bias_term), params=["W", "b"], grads=read,
                                   forward="forward_pass"), x, W, b)  # fmt: skip


# --- a newcomer's first attempts ------------------------------------------------------------------


def _layernorm_forward(x, gamma, beta):
    xhat = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    return gamma * xhat + beta, (xhat, gamma, x.var(axis=1, keepdims=True))


def _layernorm_backward(dout, cache):
    xhat, gamma, var = cache
    d, dxhat = xhat.shape[1], dout * gamma
    projection = (dxhat * xhat).sum(axis=1, keepdims=True)
    dx = (d * dxhat - dxhat.sum(axis=1, keepdims=True) - xhat * projection) / (
        d * np.sqrt(var + 1e-5)
    )
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def _layernorm_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(16, 24)), 1 + 0.1 * rng.normal(size=24), 0.1 * rng.normal(size=24)


def test_a_forward_that_is_not_finite_at_the_inputs_names_the_output_and_the_input():
    x = np.random.default_rng(0).normal(size=(4, 5))  # np.log of a normal x: NaN where x < 0
    with pytest.raises(ValueError, match="not finite") as raised, np.errstate(invalid="ignore"):
        check_backward(np.log, lambda u, x: u / x, x, names=["x"])
    at = tuple(int(i) for i in np.argwhere(x < 0)[0])
    where = f"[{at[0]}, {at[1]}]"
    message = str(raised.value)
    assert f"forward returned nan in its output at {where}, where x{where} = " in message
    assert f"{int((x < 0).sum())} of 20 values not finite" in message
    assert "inside its domain" in message


def test_a_backward_that_ignores_its_cotangent_is_named():
    def scalar_forward(x, gamma, beta):  # a loss: one output, its cotangent one number
        out, cache = _layernorm_forward(x, gamma, beta)
        return out.sum(), cache

    def ignoring(dout, cache):  # as if the loss were always the last step: dout taken as 1
        return _layernorm_backward(np.ones_like(cache[0]), cache)

    result = check_backward(
        *from_cache(scalar_forward, ignoring),
        *_layernorm_inputs(),
        names=["x", "gamma", "beta"],
        raise_exception=False,
    )
    assert not result.ok
    [why] = [e.text for e in result.explanations if e.fits]
    assert why.startswith("backward ignores its cotangent")
    assert all(c.hint == "" for c in result.checks), str(result)  # no factor contradicts it
    # a correct backward is linear in its cotangent, so nothing of the kind is said of a slip
    wrong_dbeta = check_backward(
        *from_cache(
            _layernorm_forward,
            lambda dout, cache: (*_layernorm_backward(dout, cache)[:2], 2 * dout.sum(axis=0)),
        ),
        *_layernorm_inputs(),
        names=["x", "gamma", "beta"],
        raise_exception=False,
    )
    assert [e.kind for e in wrong_dbeta.explanations if e.fits] == ["scale"], str(wrong_dbeta)


def test_a_backward_that_is_not_linear_in_its_cotangent_is_named():
    def squared(dout, cache):
        return _layernorm_backward(dout**2, cache)

    result = check_backward(
        *from_cache(_layernorm_forward, squared),
        *_layernorm_inputs(),
        names=["x", "gamma", "beta"],
        raise_exception=False,
    )
    [why] = [e.text for e in result.explanations if e.fits]
    assert why.startswith("backward is not linear in its cotangent"), why


def test_forward_and_backward_swapped_are_recognised():
    inputs = _layernorm_inputs()
    with pytest.raises(TypeError, match="are forward and backward swapped"):
        check_backward(_layernorm_backward, _layernorm_forward, *inputs)
    with pytest.raises(TypeError, match="are forward and backward swapped"):
        check_backward(*from_cache(_layernorm_backward, _layernorm_forward), *inputs)


def test_a_fail_line_says_what_its_error_is_relative_to():
    x, gamma, beta = _layernorm_inputs()

    def wrong(dout, cache):
        dx, dgamma, dbeta = _layernorm_backward(dout, cache)
        return dx, 1.1 * dgamma, dbeta

    result = check_backward(*from_cache(_layernorm_forward, wrong), x, gamma, beta,
                            names=["x", "gamma", "beta"], raise_exception=False)  # fmt: skip
    [line] = [line for line in str(result).splitlines() if "FAIL" in line]
    found = re.search(
        r"observed (\S+), expected (\S+), relative error (\S+) "
        r"\(relative to \|expected\| max of gamma, (\S+)\)",
        line,
    )
    assert found, line
    observed, expected, error, scale = (float(v) for v in found.groups())
    # the line's own numbers give its error, and the scale is no smaller than |expected| there
    assert abs(observed - expected) / scale == pytest.approx(error, rel=0.02)
    assert scale >= abs(expected)
