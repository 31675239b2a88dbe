"""Forward-mode rules (`check_jvp`), the dot test (`check_backward(jvp=...)`) and the rules a
framework function carries (`check_rule`): each check passes a correct rule and catches the
realistic bugs planted below, in both dtypes and over the seeds of ``gradcheck_seed``."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck

# --- a dense tanh layer: y = tanh(x W + b), its rules written out ---------------------------------


def _layer(x, W, b):
    return np.tanh(x @ W + b)


def _slope(x, W, b):
    return 1 - np.tanh(x @ W + b) ** 2


def _jvp(v, x, W, b):
    vx, vW, vb = v
    return _slope(x, W, b) * (vx @ W + x @ vW + vb)


def _backward(u, x, W, b):
    du = u * _slope(x, W, b)
    return du @ W.T, x.T @ du, du.sum(axis=0)


JVP_BUGS = {  # a realistic slip in the forward-mode rule, and the input it lies in
    "vW term doubled": (lambda v, x, W, b: _jvp((v[0], 2 * v[1], v[2]), x, W, b), "W"),
    "vb forgotten": (lambda v, x, W, b: _jvp((v[0], v[1], 0 * v[2]), x, W, b), "b"),
    "W transposed in the vx term": (
        lambda v, x, W, b: _slope(x, W, b) * (v[0] @ W.T + x @ v[1] + v[2]),
        "x",
    ),
    "tanh′ unsquared": (
        lambda v, x, W, b: (1 - np.tanh(x @ W + b)) * (v[0] @ W + x @ v[1] + v[2]),
        None,  # every input's tangent is wrong
    ),
}


def _inputs(seed, dtype, n=16, d=12):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, d)).astype(dtype),
        (rng.normal(size=(d, d)) / np.sqrt(d)).astype(dtype),
        rng.normal(size=d).astype(dtype),
    )


NAMES = ["x", "W", "b"]


def test_a_correct_jvp_passes(gradcheck_dtype, gradcheck_seed):
    result = gradcheck.check_jvp(_layer, _jvp, *_inputs(gradcheck_seed, gradcheck_dtype),
                                 names=NAMES, seed=gradcheck_seed)  # fmt: skip
    assert result.ok, str(result)
    # 4 forward passes per tangent: 2 tangents for each of the 3 inputs; and the outputs, twice.
    # In float32 the dtype ladder adds its float64 run's outputs, twice, and its probe: once,
    # then twice per input, moved by two amounts below float32's resolution.
    ladder = 2 + 1 + 2 * 3 if gradcheck_dtype == "float32" else 0
    assert result.forward_passes == 2 + 4 * 2 * 3 + ladder


@pytest.mark.parametrize("bug", list(JVP_BUGS))
def test_a_wrong_jvp_is_caught_and_named_by_input(bug, gradcheck_dtype, gradcheck_seed):
    jvp, wrong = JVP_BUGS[bug]
    inputs = _inputs(gradcheck_seed, gradcheck_dtype)
    result = gradcheck.check_jvp(
        _layer, jvp, *inputs, names=NAMES, seed=gradcheck_seed, raise_exception=False
    )
    assert not result.ok
    failed = {f.input for f in result.findings if not f.ok}
    assert failed == ({wrong} if wrong else set(NAMES)), str(result)


def test_the_jvp_is_compared_with_jax_jvp():
    import jax.numpy as jnp

    x, W, b = _inputs(0, "float64")
    result = gradcheck.check_jvp(
        _layer, JVP_BUGS["vb forgotten"][0], x, W, b, names=NAMES, raise_exception=False,
        jax_forward=lambda x, W, b: jnp.tanh(x @ W + b),
    )  # fmt: skip
    by_oracle = {(f.input, f.oracle): f.ok for f in result.findings}
    assert by_oracle[("b", "jax.jvp")] is False
    assert by_oracle[("x", "jax.jvp")] is True


def test_a_jvp_of_the_wrong_shape_is_refused_with_what_it_returned():
    x, W, b = _inputs(0, "float64")
    with pytest.raises(ValueError, match=r"jvp must return a tangent shaped like .*\(16, 12\)"):
        gradcheck.check_jvp(_layer, lambda v, x, W, b: _jvp(v, x, W, b).T, x, W, b)


# --- the dot test ------------------------------------------------------------------------------


def test_the_dot_test_holds_to_the_rounding_of_its_sums(gradcheck_dtype, gradcheck_seed):
    inputs = _inputs(gradcheck_seed, gradcheck_dtype)
    result = gradcheck.check_backward(_layer, _backward, *inputs, names=NAMES, jvp=_jvp,
                                      seed=gradcheck_seed)  # fmt: skip
    dots = [c for c in result.checks if c.quantity == "dot test"]
    assert len(dots) == 2 * 3
    assert all(c.ok for c in dots)
    eps = float(np.finfo(gradcheck_dtype).eps)
    assert max(c.error for c in dots) < 100 * eps


DOT_BUGS = {  # a backward wrong beside a correct jvp: (backward, the input it lies in)
    "dW transposed": (
        lambda u, x, W, b: (
            *_backward(u, x, W, b)[:1],
            _backward(u, x, W, b)[1].T,
            _backward(u, x, W, b)[2],
        ),
        "W",
    ),
    "dx doubled": (
        lambda u, x, W, b: (2 * _backward(u, x, W, b)[0], *_backward(u, x, W, b)[1:]),
        "x",
    ),
}


@pytest.mark.parametrize("bug", list(DOT_BUGS))
def test_the_dot_test_fails_a_wrong_backward_by_orders_of_magnitude(bug, gradcheck_dtype,
                                                                    gradcheck_seed):  # fmt: skip
    backward, wrong = DOT_BUGS[bug]
    inputs = _inputs(gradcheck_seed, gradcheck_dtype)
    result = gradcheck.check_backward(_layer, backward, *inputs, names=NAMES, jvp=_jvp,
                                      seed=gradcheck_seed, raise_exception=False)  # fmt: skip
    dots = {c.input: c for c in result.checks if c.quantity == "dot test"}
    assert not dots[wrong].ok
    # by orders of magnitude in float64; in float32 a factor of 2 can be diluted in the sum's
    # size to tens of times the tolerance
    assert dots[wrong].error > (1e6 if gradcheck_dtype == "float64" else 10) * dots[wrong].tolerance
    # the finite differences say which rule is wrong: the backward, not the jvp
    failed = {
        (f.backend, f.input) for f in result.findings if not f.ok and f.quantity != "dot test"
    }
    assert failed == {("backward", wrong)}, str(result)


# --- rules a framework function carries --------------------------------------------------------


def _jax_rules():
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def cube(x):
        return x**3

    def cube_fwd(x):
        return x**3, x

    def cube_bwd(x, g):  # right at first order; its own derivative is cut off
        return (3 * jax.lax.stop_gradient(x) ** 2 * g,)

    cube.defvjp(cube_fwd, cube_bwd)

    @jax.custom_vjp
    def cube_ok(x):
        return x**3

    cube_ok.defvjp(cube_fwd, lambda x, g: (3 * x**2 * g,))

    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defjvp(lambda p, t: (softplus(p[0]), jax.nn.sigmoid(p[0]) * t[0]))

    @jax.custom_jvp
    def softplus_sign(x):
        return jnp.logaddexp(x, 0.0)

    softplus_sign.defjvp(lambda p, t: (softplus_sign(p[0]), jax.nn.sigmoid(-p[0]) * t[0]))
    return cube, cube_ok, softplus, softplus_sign


def test_a_stop_gradient_in_the_backward_passes_at_order_1_and_fails_at_order_2(gradcheck_dtype):
    cube, cube_ok, _, _ = _jax_rules()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(gradcheck_dtype)
    assert gradcheck.check_rule(cube, x, modes="rev").ok
    result = gradcheck.check_rule(cube, x, modes="rev", order=2, raise_exception=False)
    failed = {(f.backend, f.input) for f in result.findings if not f.ok}
    assert failed == {("vjp of vjp", "x0")}, str(result)
    assert gradcheck.check_rule(cube_ok, x, modes="rev", order=2).ok


def test_order_2_differentiates_the_vjp_of_a_function_of_two_outputs(gradcheck_dtype):
    """(x³, sin x) with 3x²·g written through a stop_gradient: first order passes, the VJP's
    own derivative names x; with the derivative kept, both orders pass."""
    import jax
    import jax.numpy as jnp

    def pair_with(keep):
        @jax.custom_vjp
        def pair(x):
            return x**3, jnp.sin(x)

        def backward(x, gs):
            held = x if keep else jax.lax.stop_gradient(x)
            return (3 * held**2 * gs[0] + jnp.cos(x) * gs[1],)

        pair.defvjp(lambda x: (pair(x), x), backward)
        return pair

    x = np.random.default_rng(1).normal(size=(3, 4)).astype(gradcheck_dtype)
    assert gradcheck.check_rule(pair_with(False), x, modes="rev").ok
    wrong = gradcheck.check_rule(pair_with(False), x, modes="rev", order=2, raise_exception=False)
    failed = {(f.backend, f.input) for f in wrong.findings if not f.ok}
    assert failed == {("vjp of vjp", "x0")}, str(wrong)
    right = gradcheck.check_rule(pair_with(True), x, modes="rev", order=2)
    assert {f.input for f in right.findings} >= {"x0", "u0", "u1"}


def test_a_custom_jvp_is_checked_in_both_modes_and_against_its_reference(gradcheck_dtype):
    import jax.numpy as jnp

    _, _, softplus, softplus_sign = _jax_rules()
    x = np.linspace(-30, 30, 24).reshape(4, 6).astype(gradcheck_dtype)
    plain = lambda x: jnp.logaddexp(x, 0.0)  # noqa: E731
    result = gradcheck.check_rule(softplus, x, reference=plain)
    assert result.ok, str(result)
    assert set(result.rules) == {"vjp", "jvp"}
    assert {f.oracle for f in result.findings} == {"finite differences", "reference autodiff"}
    wrong = gradcheck.check_rule(softplus_sign, x, reference=plain, raise_exception=False)
    assert {(f.backend, f.oracle) for f in wrong.findings if not f.ok} == {
        (rule, oracle) for rule in ("vjp", "jvp") for oracle in ("finite differences",
                                                                 "reference autodiff")
    }  # fmt: skip


def _dense_rule(bug):
    """A dense tanh layer as a ``jax.custom_vjp`` of (params, x), params a dict; its backward
    written out, with ``bug`` (None, "db doubled" or "dW transposed") planted."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def dense(params, x):
        return jnp.tanh(x @ params["W"] + params["b"])

    def forward(params, x):
        y = dense(params, x)
        return y, (params, x, y)

    def backward(saved, u):
        params, x, y = saved
        du = u * (1 - y**2)
        dW = x.T @ du
        return (
            {
                "W": dW.T if bug == "dW transposed" else dW,
                "b": du.sum(axis=0) * (2 if bug == "db doubled" else 1),
            },
            du @ params["W"].T,
        )

    dense.defvjp(forward, backward)
    return dense


def _params_and_x(seed, dtype, n=16, d=12):
    x, W, b = _inputs(seed, dtype, n, d)
    return {"W": W, "b": b}, x


def test_a_rule_of_a_pytree_is_checked_leaf_by_leaf_and_names_the_leaf(
    gradcheck_dtype, gradcheck_seed
):
    import jax.numpy as jnp

    params, x = _params_and_x(gradcheck_seed, gradcheck_dtype)
    plain = lambda params, x: jnp.tanh(x @ params["W"] + params["b"])  # noqa: E731
    kwargs = {"names": ["params", "x"], "seed": gradcheck_seed, "reference": plain}
    result = gradcheck.check_rule(_dense_rule(None), params, x, **kwargs)
    assert {f.input for f in result.findings} == {"params['W']", "params['b']", "x"}
    for bug, leaf, why in (
        ("db doubled", "params['b']", "why: dparams['b'] is 2 × the finite differences"),
        (
            "dW transposed",
            "params['W']",
            "why: dparams['W'] is the finite differences' gradient transposed",
        ),
    ):
        wrong = gradcheck.check_rule(_dense_rule(bug), params, x, **kwargs, raise_exception=False)
        assert {f.input for f in wrong.findings if not f.ok} == {leaf}, str(wrong)
        assert why in str(wrong)


def test_a_pytree_output_and_wrt_by_input_name_or_leaf_path():
    import jax.numpy as jnp

    params, x = _params_and_x(0, np.float64, n=5, d=4)
    dense = _dense_rule("db doubled")
    f = lambda params, x: {"y": dense(params, x), "z": jnp.sin(x)}  # noqa: E731
    result = gradcheck.check_rule(
        f, params, x, names=["params", "x"], wrt=["params"], raise_exception=False
    )
    assert {f.input for f in result.findings} == {"params['W']", "params['b']"}
    assert {f.input for f in result.findings if not f.ok} == {"params['b']"}
    one = gradcheck.check_rule(
        f, params, x, names=["params", "x"], wrt=["params['W']", "x"], raise_exception=False
    )
    assert {f.input for f in one.findings} == {"params['W']", "x"}
    assert one.ok, str(one)
    with pytest.raises(
        ValueError, match=r"leaves among \[\"params\['W'\]\".*got \"params\['w'\]\""
    ):
        gradcheck.check_rule(f, params, x, names=["params", "x"], wrt=["params['w']"])


def test_a_leaf_that_cannot_be_differentiated_is_named_by_its_path_before_any_work():
    called = []
    params = {"W": np.ones((2, 2)), "n": np.arange(2)}
    with pytest.raises(TypeError, match=r"input params\['n'\] must be a float array"):
        gradcheck.check_rule(lambda p: called.append(p), params, names=["params"])
    assert called == []


def test_a_tensorflow_function_is_refused_a_pytree():
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(TypeError, match=r"TensorFlow function must be arrays; got a pytree for p"):
        gradcheck.check_rule(tf.function(tf.math.softplus), {"a": np.ones(3)}, names=["p"])


def test_a_tensorflow_custom_gradient_is_checked_in_reverse_mode():
    tf = pytest.importorskip("tensorflow")

    def log1pexp(slope):
        @tf.custom_gradient
        def f(x):
            e = tf.exp(x)
            return tf.math.log(1 + e), lambda g: g * slope(e)

        return f

    right = log1pexp(lambda e: 1 - 1 / (1 + e))
    wrong = log1pexp(lambda e: 1 / (1 + e))
    x = np.linspace(-4, 4, 9)
    result = gradcheck.check_rule(right, x, order=2)
    assert result.ok
    assert result.rules == ("vjp", "vjp of vjp")
    assert any("only the rule's VJP was checked" in note for note in result.notes)
    assert not gradcheck.check_rule(wrong, x, raise_exception=False).ok


def test_a_numpy_function_is_refused_with_a_pointer_to_check_backward():
    with pytest.raises(TypeError, match=r"numpy.ndarray.*gradcheck.check_backward"):
        gradcheck.check_rule(np.tanh, np.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modes": ("rev", "sideways")}, "modes must name modes among rev, fwd"),
        ({"order": 3}, "order must be 1 or 2"),
        ({"wrt": ["y"]}, "wrt must name inputs among"),
        ({"reference": 3}, "reference must be the function without its rule"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(kwargs, message):
    called = []

    def f(x):
        called.append(x)
        return x

    with pytest.raises((ValueError, TypeError), match=message):
        gradcheck.check_rule(f, np.ones(3), **kwargs)
    assert called == []


def test_check_jvp_names_a_forward_that_is_not_a_function_of_its_inputs():
    def dropout(x):
        return x * (np.random.default_rng().uniform(size=x.shape) > 0.5)

    result = gradcheck.check_jvp(dropout, lambda v, x: v, np.ones((4, 5)), raise_exception=False)
    assert [e.kind for e in result.explanations] == ["nondeterministic"]
    assert result.summary().startswith("jvp disagrees (2 tangents")
