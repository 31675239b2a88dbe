"""Explaining a disagreement: the first tensor that parts, the causes that fit, and nothing at all
for backends that agree. The mutation suite (test_mutations.py) holds each realistic bug to the
explanation it expects; here are the pieces and the contract."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import DTYPES, NumpyDelegate
from mutants import mutant

import gradcheck
from gradcheck import Network, explain
from gradcheck.kernels import numpy_backprop as nb

NET = Network([4, 4, 4, 4], activation=["sigmoid", "tanh", "softmax"], loss="softmax_ce")


def _problem(seed: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(8, 4))
    y = np.eye(4)[rng.integers(0, 4, size=8)]
    return X, y, NET.init(seed=seed)


def _hidden_delta_wrong_below_layer_2(delta, W, activation, z, a_prev, right=nb.hidden_delta):
    if activation == "sigmoid":  # only layer 1 has a sigmoid: δ₁ loses its σ′
        return delta @ W.T
    return right(delta, W, activation, z, a_prev)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_bug_in_the_hidden_delta_of_layer_1_is_localised_to_it(dtype, seed):
    import dataclasses

    net = dataclasses.replace(NET, dtype=dtype)
    X, y, params = _problem(seed)
    backend = mutant("delta_1", hidden_delta=_hidden_delta_wrong_below_layer_2)
    report = gradcheck.verify(net, X, y, params=params, backends=["numpy", backend], steps=5)
    [first] = report.first_differences
    assert (first.backend, first.stage, first.layer, first.tensor) == (
        "delta_1",
        "backward",
        1,
        "δ",
    )
    assert first.error > first.tolerance
    assert first.text.startswith("delta_1: first difference: δ of layer 1 (backward)")
    assert first.text.endswith("forward, loss and output delta agree")
    assert first.text in str(report)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "net",
    [
        NET,
        Network([3, 5, 1], activation=["relu", "sigmoid"], loss="bce"),
        Network([3, 4, 2], activation=["softplus", "identity"], loss="half_sse", bias=False),
    ],
    ids=["sigmoid-tanh-softmax", "relu-sigmoid-bce", "softplus-identity-no-bias"],
)
def test_every_backends_trace_agrees_with_the_references(backend, net, dtype):
    """A correct backend's trace has no first difference: every z, a, δ and gradient it keeps
    agrees with the float64 reference's within the policy's tolerance."""
    import dataclasses

    net = dataclasses.replace(net, dtype=dtype)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(7, net.layers[0]))
    y = rng.uniform(size=(7, net.layers[-1]))
    if net.loss == "softmax_ce":  # soft labels: TF differentiates as if rows summed to 1
        y /= y.sum(axis=1, keepdims=True)
    params = net.init(seed=1)
    net64 = dataclasses.replace(net, dtype="float64")
    params64 = [{k: v.astype(np.float64) for k, v in layer.items()} for layer in params]
    X32, y32 = X.astype(dtype), y.astype(dtype)
    X64, y64 = X32.astype(np.float64), y32.astype(np.float64)
    reference = gradcheck.get_backend("jax").trace(net64, params64, X64, y64)
    trace = backend.trace(net, params, X32, y32)
    assert len(trace.a) == len(trace.delta) == len(trace.z) == net.depth
    point = gradcheck.tolerance.tolerances(net, 7, 0).point
    magnitudes = gradcheck.tolerance.backward_magnitudes(net64, params64, X64, y64)
    assert explain.first_difference(backend.name, trace, reference, net64, params64, X64,
                                    magnitudes, point) is None  # fmt: skip


class _Untraceable(NumpyDelegate):
    """The numpy backend, with a trace that must never be called."""

    name = "untraceable"

    def trace(self, net, params, X, y):
        raise AssertionError("trace runs only when a backend disagrees")


def test_agreement_has_no_explanations_and_never_traces():
    X, y, params = _problem()
    report = gradcheck.verify(NET, X, y, params=params, backends=["numpy", _Untraceable()], steps=5)
    report.assert_ok()
    assert report.explanations == []
    assert report.first_differences == []
    summary = report.to_dict()
    assert summary["explanations"] == []
    assert summary["first_difference"] == []
    assert "why:" not in str(report)


def test_the_report_contract():
    X, y, params = _problem()

    def doubled_delta(net, cache, y, right=nb.output_delta):
        return 2 * right(net, cache, y)

    doubled = mutant("doubled", output_delta=doubled_delta)
    report = gradcheck.verify(NET, X, y, params=params, backends=["numpy", doubled], steps=5)
    summary = report.to_dict()
    [why] = [e for e in summary["explanations"] if e["quantity"] == "gradient"]
    assert why == {
        "backend": "doubled",
        "quantity": "gradient",
        "kind": "scale",
        "factor": 2,
        "layers": [1, 2, 3],
        "text": "doubled's gradients are 2 × the reference's on every layer",
    }
    [first] = summary["first_difference"]
    keys = {"backend", "stage", "layer", "tensor", "error", "tolerance", "step", "blocks"}
    assert set(first) == keys
    assert (first["stage"], first["layer"], first["tensor"]) == ("output_delta", 3, "δ")
    assert f"why: {why['text']}" in str(report)


def test_a_user_backend_without_trace_gets_explanations_but_no_first_difference():
    X, y, params = _problem()
    numpy = gradcheck.get_backend("numpy")

    class Halved:
        name = "halved"
        predict = staticmethod(numpy.predict)

        def loss_and_grads(self, net, params, X, y):
            loss, grads = numpy.loss_and_grads(net, params, X, y)
            return loss, [{k: g / 2 for k, g in layer.items()} for layer in grads]

        def train(self, net, params, X, y, steps, lr):
            return numpy.train(net, params, X, y, steps, lr / 2)

    report = gradcheck.verify(NET, X, y, params=params, backends=["numpy", Halved()], steps=5)
    assert report.first_differences == []
    assert {(e.quantity, e.kind, e.factor) for e in report.explanations} == {
        ("gradient", "scale", 0.5),
        ("training run", "lr_scale", 0.5),
    }


@pytest.mark.parametrize(
    ("factor", "sizes", "named"),
    [
        (0.5, (4, 1), 0.5),  # 2/(N·K): a mean where the reference halves a sum
        (8.0, (8, 4), 8),  # N
        (1 / 32, (8, 4), 1 / 32),  # 1/(N·K)
        (2.0004, (8, 4), 2),  # 0.02% off 2 is named; 0.2% is not
        (2.004, (8, 4), None),
        (1.37, (8, 4), None),
        (-1.0, None, -1),
        (1 / 64 * (1 + 1e-5), None, 1 / 64),
        (12.0, None, 12),
    ],
)
def test_named_factor(factor, sizes, named):
    found = explain.named_factor(factor, sizes)
    if named is None:
        assert found is None
    else:
        assert found is not None
        assert found[0] == pytest.approx(named, rel=1e-12)


def test_the_names_of_the_notebooks_factor():
    _, meaning = explain.named_factor(0.5, (4, 1))
    assert meaning == "a loss averaged over N·K = 4 where the reference halves a sum"


# --- check_backward ---------------------------------------------------------------------------


def _tanh_layer(x, w):
    return np.tanh(x @ w)


def _tanh_layer_backward(u, x, w):
    du = u * (1 - np.tanh(x @ w) ** 2)
    return du @ w.T, x.T @ du


BACKWARD_BUGS = {  # a realistic bug, and what must explain it
    "both doubled": (
        lambda u, x, w: [2 * g for g in _tanh_layer_backward(u, x, w)],
        [("scale", 2)],
    ),
    "dw negated": (
        lambda u, x, w: (_tanh_layer_backward(u, x, w)[0], -_tanh_layer_backward(u, x, w)[1]),
        [("sign", -1)],
    ),
    "dw transposed": (
        lambda u, x, w: (_tanh_layer_backward(u, x, w)[0], _tanh_layer_backward(u, x, w)[1].T),
        [("transpose", None)],
    ),
    "dx averaged over the batch": (
        lambda u, x, w: (
            _tanh_layer_backward(u, x, w)[0] / len(x),
            _tanh_layer_backward(u, x, w)[1],
        ),
        [("scale", 1 / 6)],
    ),
    "tanh′ unsquared": (
        lambda u, x, w: (
            (u * (1 - np.tanh(x @ w))) @ w.T,
            x.T @ (u * (1 - np.tanh(x @ w))),
        ),
        [("none", None)],
    ),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bug", list(BACKWARD_BUGS))
def test_check_backward_explains(bug, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(6, 5)).astype(dtype), rng.normal(size=(5, 5)).astype(dtype)
    backward, expected = BACKWARD_BUGS[bug]
    result = gradcheck.check_backward(_tanh_layer, backward, x, w, names=["x", "w"],
                                      raise_exception=False)  # fmt: skip
    assert [(e.kind, e.factor) for e in result.explanations] == expected
    assert all(f"why: {e.text}" in str(result) for e in result.explanations if e.fits)
    assert "no simple explanation fits" not in str(result)  # what did not fit is not shown


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_backward_finds_two_gradients_swapped(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)).astype(dtype), rng.normal(size=(4, 4)).astype(dtype)
    result = gradcheck.check_backward(
        lambda a, b: a * np.sin(b),
        lambda u, a, b: (u * a * np.cos(b), u * np.sin(b)),  # each input's gradient, swapped
        a,
        b,
        names=["a", "b"],
        raise_exception=False,
    )
    assert [(e.kind, e.quantity) for e in result.explanations] == [("swap", "a, b")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_kernel_has_no_explanations(dtype):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(6, 5)).astype(dtype), rng.normal(size=(5, 5)).astype(dtype)
    result = gradcheck.check_backward(_tanh_layer, _tanh_layer_backward, x, w)
    assert result.explanations == []


def test_a_misplaced_derivative_that_overflows_is_no_hypothesis_and_raises_no_warning():
    """softplus′ written through a, 1 − e^{−a}, given z ≈ −10⁴ overflows: that hypothesis is
    dropped, silently (warnings are errors here), and the other one still forms."""
    net = gradcheck.Network([2, 3, 1], activation=["softplus", "identity"], loss="half_sse")
    params = net.init(seed=0)
    params[0]["W"] = params[0]["W"] * 1e4
    X, y = np.array([[1.0, -1.0], [0.5, 2.0]]), np.zeros((2, 1))
    trace = gradcheck.get_backend("numpy").trace(net, params, X, y)
    derivative = explain.derivative_at_activation(net, params, X, trace)
    assert derivative("softplus", "z") is None
    given_a = derivative("softplus", "a")
    assert all(np.all(np.isfinite(layer[key])) for layer in given_a for key in layer)


def _silu_prime_without_its_z_term(z, a):
    return sigmoid(z)  # BUG: σ(z) alone, the z σ(z) σ(−z) term forgotten  # noqa: F821


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_silus_derivative_is_read_from_z_and_a_slip_in_it_is_named(dtype, seed):
    """silu′ needs z: every backend, the Numba one keeping z for it, agrees with the reference
    and the witness on a silu network; a NumPy kernel that drops a term of silu′ is named alone,
    at the first δ it computes."""
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(64, 6)), np.eye(3)[rng.integers(0, 3, size=64)]
    net = Network([6, 16, 8, 3], activation=["silu", "silu", "softmax"], loss="softmax_ce")
    net = dataclasses.replace(net, dtype=dtype)
    correct = gradcheck.verify(net, X, y, steps=20, lr=0.5)
    assert correct.ok, correct.verdict_lines()
    broken = mutant("silu_prime", silu_prime=_silu_prime_without_its_z_term)
    report = gradcheck.verify(net, X, y, backends=["numpy", broken], steps=20, lr=0.5)
    assert report.verdict_lines()[0] == "DISAGREE: silu_prime"
    [first] = report.first_differences
    assert (first.stage, first.layer, first.tensor) == ("backward", 2, "δ")


def _gelu_as_its_tanh_form(z):
    return gelu_tanh(z)  # BUG: jax.nn.gelu's default form where the exact one is asked for  # noqa: F821


def _gelu_prime_as_its_tanh_form(z, a):
    return gelu_tanh_prime(z, a)  # BUG: likewise  # noqa: F821


def _gelu_tanh_as_the_exact_form(z):
    return gelu(z)  # BUG: Keras's default form where the tanh one is asked for  # noqa: F821


def _gelu_tanh_prime_as_the_exact_form(z, a):
    return gelu_prime(z, a)  # BUG: likewise  # noqa: F821


def _gelu_prime_without_its_density_term(z, a):
    from scipy.special import erfc

    return 0.5 * erfc(-z * np.sqrt(0.5)).astype(z.dtype)  # BUG: Φ(z) alone, z φ(z) forgotten


GELU_FORMS = {
    "gelu": ("gelu_tanh", {"gelu": _gelu_as_its_tanh_form,
                           "gelu_prime": _gelu_prime_as_its_tanh_form}),
    "gelu_tanh": ("gelu", {"gelu_tanh": _gelu_tanh_as_the_exact_form,
                           "gelu_tanh_prime": _gelu_tanh_prime_as_the_exact_form}),
}  # fmt: skip


def _gelu_problem(activation, dtype, seed):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(128, 12)), np.eye(4)[rng.integers(0, 4, size=128)]
    net = Network([12, 32, 16, 4], activation=[activation, activation, "softmax"],
                  loss="softmax_ce", dtype=dtype)  # fmt: skip
    return net, X, y


#: The seeds of the GELU tests: `make test` runs one per case, in turn; the rest are thorough.
GELU_SEEDS = (0, 1, 2)


def _one_seed_in_turn(p):
    case = list(GELU_FORMS).index(p.get("activation", "gelu")) * 2 + DTYPES.index(p["dtype"])
    return p["seed"] == GELU_SEEDS[case % len(GELU_SEEDS)]


@pytest.mark.sweep(keep=_one_seed_in_turn)
@pytest.mark.parametrize("seed", GELU_SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(GELU_FORMS))
def test_each_gelu_form_agrees_and_the_other_form_is_named_with_its_convention(
    activation, dtype, seed
):
    """Both GELUs: every backend agrees with the reference and the witness (Keras's own GELU is
    replaced by one in its ops, whose constants are not rounded to float32), and nothing is
    explained; a NumPy kernel computing the other form is named alone, and its predictions are
    explained as the network's with that form, in the convention's words."""
    other, bugs = GELU_FORMS[activation]
    net, X, y = _gelu_problem(activation, dtype, seed)
    correct = gradcheck.verify(net, X, y, steps=20, lr=0.5)
    assert correct.ok, correct.verdict_lines()
    assert not correct.explanations
    report = gradcheck.verify(
        net, X, y, backends=["numpy", mutant("other_form", **bugs)], steps=20, lr=0.5
    )
    assert report.verdict_lines()[0] == "DISAGREE: other_form"
    [why] = [e for e in report.explanations if e.fits]
    assert (why.quantity, why.kind) == ("predictions", "convention")
    assert why.text.startswith(f"other_form's predictions are the network's with {other} for")
    assert gradcheck.ops.ACTIVATIONS[activation].confusions[0][1] in why.text


@pytest.mark.sweep(keep=_one_seed_in_turn)
@pytest.mark.parametrize("seed", GELU_SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_slip_in_gelus_derivative_is_named_and_not_taken_for_the_other_form(dtype, seed):
    """gelu′ needs z; a NumPy kernel that drops its z φ(z) term is named alone, at the first δ
    it computes, and no form swap is offered for it (its predictions agree)."""
    net, X, y = _gelu_problem("gelu", dtype, seed)
    broken = mutant("gelu_prime", gelu_prime=_gelu_prime_without_its_density_term)
    report = gradcheck.verify(net, X, y, backends=["numpy", broken], steps=20, lr=0.5)
    assert report.verdict_lines()[0] == "DISAGREE: gelu_prime"
    [first] = report.first_differences
    assert (first.stage, first.layer, first.tensor) == ("backward", 2, "δ")
    assert not [e for e in report.explanations if e.kind == "convention"]
