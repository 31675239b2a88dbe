"""The registry of operations: every backend implements exactly its names, every dispatch on a
name raises on one it does not implement, and the witness imports no kernel."""

from __future__ import annotations

import importlib
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gradcheck
from gradcheck import ops, tolerance, witness
from gradcheck.layers import Dense
from gradcheck.optimizers import SGD

ACTIVATIONS = set(ops.ACTIVATIONS)
LOSSES = set(ops.LOSSES)
ELEMENTWISE = {name for name, spec in ops.ACTIVATIONS.items() if spec.elementwise}
WITH_OUTPUT = {name for name, spec in ops.LOSSES.items() if spec.output is not None}
MODULES = {
    "numpy": "numpy_backprop",
    "numba": "numba_backprop",
    "jax": "jax_autodiff",
    "keras": "keras_model",
}


def kernels(backend: str):
    if backend not in gradcheck.available_backends():
        pytest.skip(f"{backend} is not installed")
    return importlib.import_module(f"gradcheck.kernels.{MODULES[backend]}")


def stand_in(activation: str = "sigmoid", loss: str = "half_sse"):
    """A network description carrying a name no backend implements; Network would refuse it."""
    dense = object.__new__(Dense)  # Dense would refuse it too
    for field, value in {"units": 2, "activation": activation, "bias": False}.items():
        object.__setattr__(dense, field, value)
    return SimpleNamespace(
        layers=(2, 2), widths=(2, 2), input_shape=(2,), outputs=2, stack=(dense,),
        activations=(activation,),
        activation=activation, loss=loss, depth=1, bias=False, dtype="float64",
        np_dtype=np.dtype("float64"), parametric=(dense,), weighted=(dense,), takes_ids=False,
        modal=False, inputs=lambda X, dtype=None: np.asarray(X, dtype or np.float64),
    )  # fmt: skip


X = np.array([[0.5, -1.0], [2.0, 0.25]])
Y = np.array([[0.2, 0.8], [1.0, 0.0]])
PARAMS = [{"W": np.array([[0.3, -0.7], [1.1, 0.4]])}]


def test_the_registry_is_consistent():
    for name, spec in ops.ACTIVATIONS.items():
        assert spec.name == name
        assert spec.jax
        assert spec.keras
    for name, spec in ops.LOSSES.items():
        assert spec.name == name
        assert spec.output is None or spec.output in ops.ACTIVATIONS
    assert tuple(ops.ACTIVATIONS) == gradcheck.network.ACTIVATIONS
    assert tuple(ops.LOSSES) == gradcheck.network.LOSSES


def test_numpy_implements_exactly_the_registry():
    nb = kernels("numpy")
    assert set(nb.ACTIVATIONS) == ACTIVATIONS
    assert {name for name, a in nb.ACTIVATIONS.items() if a.prime is not None} == ELEMENTWISE
    assert set(nb.LOSSES) == LOSSES
    assert {name for name, loss in nb.LOSSES.items() if loss.delta is not None} == WITH_OUTPUT
    assert {name for name, loss in nb.LOSSES.items() if loss.grad_a is not None} == (
        LOSSES - WITH_OUTPUT
    )


def test_numba_implements_exactly_the_registry():
    nb = kernels("numba")
    assert set(nb.ACTIVATION_CODES) == ACTIVATIONS
    assert set(nb.LOSS_CODES) == LOSSES
    # and its compiled dispatch has a branch for every code (the array kernels raise on a code
    # they lack; the entry-by-entry dispatch gives NaN for one, and for the softmax's)
    log_norm, flat = np.empty(len(X)), X.reshape(-1)
    for code in nb.ACTIVATION_CODES.values():
        nb.activate(code, X.copy(), np.empty(0), False, log_norm)
        nb.activation_backward(code, X.copy(), X.copy(), Y.copy())
        if code != nb.ACTIVATION_CODES["softmax"]:
            assert np.isfinite(nb.activation_of(code, 0.5, 1.0))
            assert np.isfinite(nb.activation_back(code, 0.5, 0.5, 0.5, 1.0))
    sigmoid = nb.ACTIVATION_CODES["sigmoid"]
    for code in nb.LOSS_CODES.values():  # the loss and δ_L, as the layer walk calls them
        delta = np.full(Y.size, np.nan)
        value = nb.loss_and_delta(code, sigmoid, flat, flat, 0, np.zeros(len(X)), np.abs(Y), delta)
        assert np.isfinite(value)
        assert np.isfinite(delta).all()


def test_jax_implements_exactly_the_registry():
    jx = kernels("jax")
    assert set(jx.ACTIVATIONS) == ACTIVATIONS
    assert set(jx.LOSSES) == LOSSES


def test_keras_implements_exactly_the_registry():
    km = kernels("keras")
    import keras

    assert set(km.ACTIVATIONS) == ACTIVATIONS
    for name in ACTIVATIONS:
        assert callable(keras.activations.get(km.ACTIVATIONS[name]))
    for name, spec in ops.LOSSES.items():
        # Keras's own class, or the backend's: exactly one of the two.
        assert bool(spec.keras) != (name in km.CUSTOM_LOSSES)
        if spec.keras:
            assert issubclass(getattr(keras.losses, spec.keras), keras.losses.Loss)
    assert set(km.CUSTOM_LOSSES) <= LOSSES


def test_numpy_dispatch_raises_on_an_unknown_name():
    nb = kernels("numpy")
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        nb.forward(stand_in(activation="swish"), PARAMS, X)
    cache = nb.forward(stand_in(), PARAMS, X)
    with pytest.raises(ValueError, match=r"loss must be one of .* got \'hinge\'"):
        nb.loss(stand_in(loss="hinge"), cache, Y)
    with pytest.raises(ValueError, match=r"loss must be one of .* got \'hinge\'"):
        nb.output_delta(stand_in(loss="hinge"), cache, Y)
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        nb.activation_backward("swish", X, X, Y)


def test_numba_dispatch_raises_on_an_unknown_name_or_code():
    nb = kernels("numba")
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        importlib.import_module("gradcheck.kernels.numba_dense").Workspace(
            stand_in(activation="swish"), PARAMS, X
        )
    unknown = 99
    z, log_norm = X.copy(), np.empty(2)
    with pytest.raises(ValueError, match="unknown activation code"):
        nb.activate(unknown, z, np.empty(0), False, log_norm)
    with pytest.raises(ValueError, match="unknown activation code"):
        nb.activation_backward(unknown, X.copy(), X.copy(), Y.copy())
    # the walks that dispatch entry by entry check their codes before any work; the dispatch
    # itself gives NaN for a code it has no branch for (an unknown one, or the softmax's)
    dense = importlib.import_module("gradcheck.kernels.numba_dense")
    ws = dense.Workspace(stand_in(), PARAMS, X)
    theta = ws.theta.copy()
    flat, N, losses = ws.X.reshape(-1), len(X), np.empty(3)
    batches = nb.Batches(np.arange(N)[None], np.array([N]), np.empty(X.size), np.empty(Y.size))
    rule = nb.Rule(*nb.optimizer_settings(SGD(0.5), X.dtype), np.zeros((4, theta.size)))
    for layout in (ws.net._replace(activations=np.array([unknown])),
                   ws.net._replace(loss=unknown)):  # fmt: skip
        for entry in (  # each walk's entries, whichever walk the widths choose
            partial(nb.narrow_train_loop, layout, ws.theta, flat, N, Y, 0.5, ws.buffers, losses),
            partial(nb.wide_train_loop, layout, ws.theta, ws.X, Y, 0.5, ws.buffers, losses),
            partial(nb.narrow_loss_and_grads, layout, ws.theta, flat, N, Y, ws.buffers),
            partial(nb.wide_loss_and_grads, layout, ws.theta, ws.X, Y, ws.buffers),
            partial(
                nb.train_with_loop, layout, ws.theta, ws.X, Y, batches, rule, ws.buffers, losses[:1]
            ),  # either walk, by the batch's N
        ):
            with pytest.raises(ValueError, match=r"unknown (activation|loss) code"):
                entry()
    with pytest.raises(ValueError, match="unknown activation code"):  # predictions: no loss
        nb.narrow_predict(ws.net._replace(activations=np.array([unknown])), ws.theta, flat, N,
                          ws.buffers)  # fmt: skip
    assert np.array_equal(ws.theta, theta)
    with pytest.raises(ValueError, match="unknown activation code"):
        nb.check_code(unknown)
    for code in (unknown, nb.ACTIVATION_CODES["softmax"]):
        assert np.isnan(nb.activation_of(code, 0.5, 1.0))
        assert np.isnan(nb.activation_back(code, 0.5, 0.5, 0.5, 1.0))
    flat = X.reshape(-1)
    assert np.isnan(nb.loss(unknown, flat, flat, 0, log_norm, Y))
    delta = np.zeros(Y.size)
    nb.output_delta(unknown, nb.ACTIVATION_CODES["sigmoid"], flat, flat, 0, Y, delta)
    assert np.isnan(delta).all()


def test_jax_dispatch_raises_on_an_unknown_name():
    jx = kernels("jax")
    with pytest.raises(ValueError, match=r"loss must be one of .* got \'hinge\'"):
        jx.network_loss(PARAMS, [{}], X, Y, stand_in(loss="hinge"))
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        jx.network_outputs(stand_in(activation="swish"), PARAMS, [{}], X)


def test_keras_dispatch_raises_on_an_unknown_name():
    km = kernels("keras")
    with pytest.raises(ValueError, match=r"loss must be one of .* got \'hinge\'"):
        km.keras_loss(stand_in(loss="hinge"))
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        km.build_model(stand_in(activation="swish"))


def test_the_witness_and_the_tolerance_policy_raise_on_an_unknown_name():
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        witness.forward(stand_in(activation="swish"), PARAMS, X)
    with pytest.raises(ValueError, match=r"loss must be one of .* got \'hinge\'"):
        tolerance.gradient_magnitudes(stand_in(loss="hinge"), PARAMS, X, Y)


def _jax_function(name: str):
    """The activation as JAX implements it, found where the registry says JAX spells it, with
    the registry's options."""
    jax = pytest.importorskip("jax")
    return ops.ACTIVATIONS[name].jax_function(jax)


#: JAX writes GELU as ½ z (1 + erf(z/√2)) and ½ z (1 + tanh u): below 0 the sum cancels, and the
#: result is as good as the ulp of 1 it is left from, times |z|/2 (the reference, z Φ(z) and
#: z σ(2u), keeps its relative accuracy there).
CANCELS_IN_JAX = {"gelu", "gelu_tanh"}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_reference_activations_are_jaxs(name):
    """The witness's definitions against JAX's own implementations (an independent library),
    away from overflow: each side within about two ulp of the truth, so within 1e-15 (4.5 ulp)
    of each other; a row-wise one (the softmax, e^{z − log Σ e^z}) also within the rounding of
    its shift z − log Σ e^z, an ulp of |z| ≤ 20 on each side, relatively."""
    import jax

    z = np.linspace(-20, 20, 81).reshape(9, 9)  # rows of 9, for the softmax
    with jax.enable_x64(True):
        theirs = np.asarray(_jax_function(name)(z))
    spec = ops.ACTIVATIONS[name]
    rtol = 1e-15 if spec.elementwise else 1e-15 + 2 * np.finfo(float).eps * np.abs(z).max()
    atol = np.finfo(float).eps * np.abs(z) if name in CANCELS_IN_JAX else 0.0
    assert np.all(np.abs(spec.reference(z) - theirs) <= atol + rtol * np.abs(theirs))


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_registry_derivatives_are_jaxs(name):
    """f′(z) of the registry against JAX's derivative of its own implementation, away from
    relu's kink, and finite and silent at extremes."""
    import jax

    z = np.linspace(-20, 20, 80)  # no point at 0
    with jax.enable_x64(True):
        theirs = np.asarray(jax.vmap(jax.grad(_jax_function(name)))(z))
    prime = ops.ACTIVATIONS[name].prime
    assert prime is not None
    # JAX's derivatives subtract from 1 (1 − tanh², σ(1 − σ)), so they are as good as the
    # values near 1 they subtract: XLA's float64 tanh is up to 7 ulp of 1 off near saturation.
    # GELU's tanh form multiplies that 1 − tanh² by ½ z u′ = ½ z √(2/π)(1 + 0.134145 z²).
    scale = 1 + np.abs(z) * (1 + 3 * 0.044715 * z**2) if name == "gelu_tanh" else 1.0
    excess = np.abs(prime(z) - theirs) - (1e-14 * np.abs(theirs) + 16 * np.finfo(float).eps * scale)
    assert np.all(excess <= 0), (z[excess > 0], excess[excess > 0])
    assert np.all(np.isfinite(prime(np.array([-1e4, 1e4]))))


def test_reference_definitions_are_finite_and_silent_at_extremes():
    z = np.array([[-1e4, 1e4], [1e4, -1e4]])
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    for spec in ops.ACTIVATIONS.values():
        assert np.all(np.isfinite(spec.reference(z)))
    for spec in ops.LOSSES.values():
        a = ops.ACTIVATIONS[spec.output or "sigmoid"].reference(z)
        assert np.isfinite(spec.reference(z, a, y))


def test_the_witness_imports_no_kernel():
    code = (
        "import sys, numpy as np, gradcheck\n"
        "from gradcheck import finite_diff, witness, tolerance\n"
        "net = gradcheck.Network([3, 4, 1], activation=['relu', 'sigmoid'], loss='bce')\n"
        "X, y = gradcheck.datasets.seed_xor()\n"
        "params = net.init(seed=1)\n"
        "finite_diff.elementwise_gradient(net, params, X, y)\n"
        "finite_diff.directional_derivatives(net, params, X, y)\n"
        "tolerance.gradient_magnitudes(net, params, X, y)\n"
        "print(sorted(m for m in sys.modules if m.startswith('gradcheck.kernels')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_user_guide_names_every_operation():
    """The user guide's description of Network lists what the registry declares: the
    activations as the site builds them from it, the losses with their formulas."""
    guide = (Path(__file__).parents[1] / "docs" / "guide.md").read_text()
    section = guide.split("- `Network(layers", 1)[1].split("\n- ", 1)[0]
    assert "<!-- registry: activation names -->" in section
    for name in ops.LOSSES:
        assert f"`{name}`" in section, name
