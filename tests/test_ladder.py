"""The dtype ladder: float32 layers judged at float64's resolution (`gradcheck.ladder`).

The slips below are the ones a port makes, each too small for float32's finite differences to
resolve: a norm layer's backward taking another framework's ε (Keras's 1e-3 in the forward,
PyTorch's 1e-5 in the backward), a batch norm's backward with the unbiased variance, a softmax
cross-entropy's gradient 0.2% too large. With float32 inputs each is caught at every seed the
plugin gives (0-2 in `make test`, 0-19 in `make test-thorough`), at a realistic size; and no
correct layer is flagged, one that computes in float32 whatever it is given included.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers import NumpyDelegate

import gradcheck
from gradcheck import check_backward, check_jvp
from gradcheck.adapters import from_cache
from gradcheck.ladder import DERIVATIVE, FLOAT64_RUN, PRECISION
from gradcheck.problems import PROBLEMS

KERAS_EPSILON, TORCH_EPSILON = 1e-3, 1e-5
N, D, CLASSES = 128, 64, 10


def batchnorm_forward(x, gamma, beta, eps=KERAS_EPSILON):
    mean, var = x.mean(axis=0), x.var(axis=0)
    xhat = (x - mean) / np.sqrt(var + eps)
    return gamma * xhat + beta, (x, gamma, var)


def batchnorm_backward(dout, cache, eps=KERAS_EPSILON, ddof=0):
    x, gamma, var = cache
    n = dout.shape[0]
    inv = 1 / np.sqrt(var * n / (n - ddof) + eps)
    xhat = (x - x.mean(axis=0)) * inv
    dxhat = dout * gamma
    dx = inv / n * (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def layernorm_forward(x, gamma, beta, eps=KERAS_EPSILON):
    var = x.var(axis=1, keepdims=True)
    xhat = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(var + eps)
    return gamma * xhat + beta, (x, gamma, var)


def layernorm_backward(dout, cache, eps=KERAS_EPSILON):
    x, gamma, var = cache
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - x.mean(axis=1, keepdims=True)) * inv
    d = dout.shape[1]
    dxhat = dout * gamma
    total = dxhat.sum(axis=1, keepdims=True)
    dx = inv / d * (d * dxhat - total - xhat * (dxhat * xhat).sum(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def softmax_ce_forward(x, y):
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y].mean(), (np.exp(log_p), y)


def softmax_ce_backward(dout, cache, scale=1.0):
    p, y = cache
    dx = p.copy()
    dx[np.arange(len(y)), y] -= 1
    return scale * dout * dx / len(y), None


def batchnorm_forward_float32(x, gamma, beta):
    """Computes in float32 whatever it is given, and returns float32."""
    return batchnorm_forward(*(a.astype(np.float32) for a in (x, gamma, beta)))


def batchnorm_forward_cast_inside(x, gamma, beta):
    """Normalises x in float32, then returns the dtype it was given: float64 out, float32
    arithmetic in."""
    out, cache = batchnorm_forward_float32(x, gamma, beta)
    return out.astype(x.dtype), cache


def batchnorm_forward_rounding_xhat(x, gamma, beta, eps=KERAS_EPSILON):
    """Computes in the dtype it is given but rounds the normalised x to float32 on the way:
    float64 out, float32's resolution in."""
    mean, var = x.mean(axis=0), x.var(axis=0)
    xhat = ((x - mean) / np.sqrt(var + eps)).astype(np.float32).astype(x.dtype)
    return gamma * xhat + beta, (x, gamma, var)


def _norm_inputs(rng, dtype, d=D):
    return [
        rng.standard_normal((N, d)).astype(dtype),
        (1 + 0.1 * rng.standard_normal(d)).astype(dtype),
        (0.1 * rng.standard_normal(d)).astype(dtype),
    ]


def _ce_inputs(rng, dtype, n=256):
    return [(2 * rng.standard_normal((n, CLASSES))).astype(dtype), rng.integers(0, CLASSES, n)]


NORM = (_norm_inputs, ("x", "gamma", "beta"), None)
CE = (_ce_inputs, ("x", "y"), ("x",))

#: A correct layer: its forward, backward and inputs.
CORRECT = {
    "batch norm": (batchnorm_forward, batchnorm_backward, *NORM),
    "layer norm": (layernorm_forward, layernorm_backward, *NORM),
    "softmax cross-entropy": (softmax_ce_forward, softmax_ce_backward, *CE),
    "batch norm in float32": (batchnorm_forward_float32, batchnorm_backward, *NORM),
    "batch norm cast inside": (batchnorm_forward_cast_inside, batchnorm_backward, *NORM),
    "batch norm rounding x̂": (batchnorm_forward_rounding_xhat, batchnorm_backward, *NORM),
}
#: A planted slip: its layer's forward, the wrong backward, and the layer's inputs.
SLIPS = {
    "batch norm's backward with PyTorch's epsilon": (
        batchnorm_forward,
        lambda dout, cache: batchnorm_backward(dout, cache, eps=TORCH_EPSILON),
        *NORM,
    ),
    "layer norm's backward with PyTorch's epsilon": (
        layernorm_forward,
        lambda dout, cache: layernorm_backward(dout, cache, eps=TORCH_EPSILON),
        *NORM,
    ),
    "batch norm's backward with the unbiased variance": (
        batchnorm_forward,
        lambda dout, cache: batchnorm_backward(dout, cache, ddof=1),
        *NORM,
    ),
    "softmax cross-entropy's gradient 0.2% too large": (
        softmax_ce_forward,
        lambda dout, cache: softmax_ce_backward(dout, cache, scale=1.002),
        *CE,
    ),
}


def _check(case, seed, dtype="float32", **options):
    forward, backward, inputs, names, wrt = case
    return check_backward(
        *from_cache(forward, backward),
        *inputs(np.random.default_rng(seed), dtype),
        names=names,
        wrt=wrt,
        seed=seed,
        raise_exception=False,
        **options,
    )


@pytest.mark.parametrize("slip", list(SLIPS))
def test_a_slip_below_float32s_resolution_is_caught_in_float32(slip, gradcheck_seed):
    result = _check(SLIPS[slip], gradcheck_seed)
    assert not result.ok, str(result)
    assert result.ladder == "float32"
    failing = [c for c in result.checks if not c.ok]
    # the derivative parts, and the failing line says so; the precision holds
    assert {c.part for c in failing} == {DERIVATIVE}, str(result)
    assert "FAIL derivative (float64): input" in str(result)


@pytest.mark.parametrize("layer", list(CORRECT))
def test_a_correct_layer_is_not_flagged_in_float32(layer, gradcheck_seed):
    result = _check(CORRECT[layer], gradcheck_seed)
    assert result.ok, str(result)


def test_the_two_parts_are_reported_in_text_html_and_json():
    result = _check(CORRECT["batch norm"], 0)
    assert {(c.part, c.oracle) for c in result.checks} == {
        (DERIVATIVE, "finite differences"),
        (PRECISION, FLOAT64_RUN),
    }
    text = str(result)
    assert "float32 judged at float64's resolution" in text.splitlines()[0]
    assert "derivative (float64): input x" in text
    assert "precision: input x" in text
    assert "precision: input gamma" in result._repr_html_()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ladder"] == "float32"
    assert {c["part"] for c in data["checks"]} == {DERIVATIVE, PRECISION}


@pytest.mark.parametrize(
    ("layer", "why"),
    [
        ("batch norm in float32", "forward returns float32 given float64 inputs"),
        ("batch norm cast inside", "forward rounds x, or what it computes from it, to float32"),
        ("batch norm rounding x̂", "forward rounds x, or what it computes from it, to float32"),
    ],
)
def test_code_that_computes_in_float32_is_judged_in_float32_and_says_so(layer, why):
    result = _check(CORRECT[layer], 0)
    assert result.ladder == ""
    assert {c.part for c in result.checks} == {""}
    assert any(why in note and "float32's resolution only" in note for note in result.notes), (
        result.notes
    )


def test_a_backward_that_computes_in_float32_is_judged_in_float32():
    def backward(dout, cache):
        x, gamma, var = cache
        grads = batchnorm_backward(dout.astype(np.float32), (x, gamma, var))
        return tuple(g.astype(dout.dtype) for g in grads)

    result = _check((batchnorm_forward, backward, *NORM), 0)
    assert result.ok, str(result)
    assert any(
        "backward rounds its cotangent, or what it computes from it" in n for n in result.notes
    )


def test_a_forward_that_raises_on_float64_is_no_verdict():
    def forward(x, gamma, beta):
        if x.dtype != np.float32:
            raise TypeError("float32 only")
        return batchnorm_forward(x, gamma, beta)

    result = _check((forward, batchnorm_backward, *NORM), 0)
    assert result.ok, str(result)
    assert any("raised on float64 copies (TypeError: float32 only)" in n for n in result.notes)


def test_in_float64_false_judges_float32_alone_and_misses_the_slip():
    """The reason for the ladder, measured: off it, float32's own resolution lets PyTorch's ε
    through (at 256 features, where float32's differences of γ's gradient are coarser)."""
    forward, backward, _, names, wrt = SLIPS["batch norm's backward with PyTorch's epsilon"]
    wide = (forward, backward, lambda rng, dtype: _norm_inputs(rng, dtype, d=256), names, wrt)
    assert _check(wide, 0, in_float64=False).ok
    assert not _check(wide, 0).ok


def test_float64_inputs_are_not_laddered():
    result = _check(CORRECT["layer norm"], 0, dtype="float64")
    assert result.ok
    assert (result.ladder, result.notes) == ("", [])


def _tanh_layer(x, W):
    return np.tanh(x @ W)


def _tanh_jvp(v, x, W, scale=1.0):
    vx, vW = v
    return (1 - np.tanh(x @ W) ** 2) * (vx @ W + scale * (x @ vW))


def test_check_jvp_judges_float32_at_float64s_resolution(gradcheck_seed):
    rng = np.random.default_rng(gradcheck_seed)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    W = (rng.standard_normal((32, 16)) / 6).astype(np.float32)
    correct = check_jvp(_tanh_layer, _tanh_jvp, x, W, names=["x", "W"], raise_exception=False)
    assert correct.ok, str(correct)
    assert correct.ladder == "float32"
    assert {c.part for c in correct.checks} == {DERIVATIVE, PRECISION}

    def slipped(v, x, W):  # W's tangent 0.05% too large
        return _tanh_jvp(v, x, W, scale=1.0005)

    wrong = check_jvp(_tanh_layer, slipped, x, W, names=["x", "W"], raise_exception=False)
    assert {c.input for c in wrong.checks if not c.ok} == {"W"}, str(wrong)
    off = check_jvp(
        _tanh_layer, slipped, x, W, names=["x", "W"], raise_exception=False, in_float64=False
    )
    assert off.ok  # below float32's resolution


# --- verify ----------------------------------------------------------------------------------


class Slipped(NumpyDelegate):
    """A user's backend: NumPy's kernels, with one layer's gradient 0.05% too large (a batch
    norm's ε taken from another framework is a slip of that size)."""

    name = "slipped"

    def __init__(self, layer: int = -1, scale: float = 1 + 5e-4) -> None:
        super().__init__()
        self.layer, self.scale = layer, scale

    def loss_and_grads(self, net, params, X, y):
        loss, grads = super().loss_and_grads(net, params, X, y)
        grads[self.layer] = {key: self.scale * g for key, g in grads[self.layer].items()}
        return loss, grads


class Float32Only(Slipped):
    """A correct user's backend that computes in float32 whatever the network's dtype."""

    name = "float32 only"

    def __init__(self) -> None:
        super().__init__(scale=1.0)

    def _narrow(self, net, params, X):
        net = dataclasses.replace(net, dtype="float32")
        params = [{k: v.astype(np.float32) for k, v in layer.items()} for layer in params]
        return net, params, np.asarray(X, np.float32)

    def predict(self, net, params, X):
        return super().predict(*self._narrow(net, params, X))

    def loss_and_grads(self, net, params, X, y):
        return super().loss_and_grads(*self._narrow(net, params, X), np.asarray(y, np.float32))


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_verify_catches_a_slip_below_float32s_resolution_on_every_catalogue_problem(problem):
    problem = PROBLEMS[problem]
    X, y = problem.data("float32")
    report = gradcheck.verify(
        problem.network("float32"), X, y, params=problem.params("float32"),
        backends=["numpy", Slipped()], steps=0, finite_differences=None,
    )  # fmt: skip
    assert not report.ok
    failing = {(c.backend, c.quantity, c.part) for c in report.failures}
    assert failing == {("slipped", "gradient", DERIVATIVE)}, str(report)
    # the slipped float32 run agrees with its float64 run: its precision is not in question
    assert all(c.ok for c in report.checks if c.part == PRECISION), str(report)
    assert report.verdict_lines()[0] == "DISAGREE: slipped"
    [verdict] = report.verdicts
    assert verdict.startswith("slipped in float64 disagrees with"), verdict


def test_verify_in_float32_judges_every_backend_at_float64s_resolution(gradcheck_seed):
    """No correct backend flagged, and each one's float32 run held to its own float64 run."""
    problem = PROBLEMS["notebook"]
    X, y = problem.data("float32")
    params = problem.params("float32", seed=gradcheck_seed)
    report = gradcheck.verify(problem.network("float32"), X, y, params=params, steps=100)
    report.assert_ok()
    builtin = [b for b in report.backends if b != "jax"]  # jax's float64 run is the reference
    assert report.float64_runs == {b: f"{b} in float64" for b in builtin}
    for name in builtin:
        precision = [c for c in report.checks if (c.backend, c.part) == (name, PRECISION)]
        assert {c.oracle for c in precision} == {f"{name} in float64"}
        assert min(c.tolerance for c in precision) > 1e-6  # float32's
        derivative = [c for c in report.checks if (c.backend, c.part) == (name, DERIVATIVE)]
        assert {c.oracle for c in derivative} == {"jax in float64"}
        assert max(c.tolerance for c in derivative) < 1e-10  # float64's, not float32's
        assert {c.quantity for c in derivative} == {c.quantity for c in precision}


def test_a_backend_that_computes_in_float32_is_judged_in_float32_and_the_report_says_so():
    problem = PROBLEMS["digits"]
    X, y = problem.data("float32")
    report = gradcheck.verify(
        problem.network("float32"), X, y, params=problem.params("float32"),
        backends=["numpy", Float32Only()], steps=0, finite_differences=None,
    )  # fmt: skip
    report.assert_ok()
    assert "float32 only" not in report.float64_runs
    assert "returns float32 given float64 inputs" in report.narrow_only["float32 only"]
    assert "float32 only: judged at float32's resolution only" in str(report)
    assert {c.part for c in report.checks if c.backend == "float32 only"} == {""}
