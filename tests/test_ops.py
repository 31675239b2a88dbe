"""The registry of operations: every backend implements exactly its names, every dispatch on a
name raises on one it does not implement, and the witness imports no kernel."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gradcheck
from gradcheck import ops, tolerance, witness
from gradcheck.layers import Dense

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
        np_dtype=np.dtype("float64"),
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
    assert set(nb.ACTIVATE) == ACTIVATIONS
    assert set(nb.PRIME) == ELEMENTWISE
    assert set(nb.LOSS) == LOSSES
    assert set(nb.DELTA) == WITH_OUTPUT
    assert set(nb.LOSS_GRAD) == LOSSES - WITH_OUTPUT


def test_numba_implements_exactly_the_registry():
    nb = kernels("numba")
    assert set(nb.ACTIVATION_CODES) == ACTIVATIONS
    assert len(set(nb.ACTIVATION_CODES.values())) == len(ACTIVATIONS)
    assert set(nb.LOSS_CODES) == LOSSES
    assert len(set(nb.LOSS_CODES.values())) == len(LOSSES)


def test_jax_implements_exactly_the_registry():
    jx = kernels("jax")
    assert set(jx._ACTIVATE) == ACTIVATIONS
    assert set(jx._LOSS) == LOSSES


def test_keras_implements_exactly_the_registry():
    km = kernels("keras")
    import keras

    assert set(km._ACTIVATION) == ACTIVATIONS
    for name in ACTIVATIONS:
        assert callable(keras.activations.get(km._ACTIVATION[name]))
    for name, spec in ops.LOSSES.items():
        # Keras's own class, or the backend's: exactly one of the two.
        assert bool(spec.keras) != (name in km._CUSTOM_LOSSES)
        if spec.keras:
            assert issubclass(getattr(keras.losses, spec.keras), keras.losses.Loss)
    assert set(km._CUSTOM_LOSSES) <= LOSSES


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
        nb.activation_backward("swish", X, Y)


def test_numba_dispatch_raises_on_an_unknown_name_or_code():
    nb = kernels("numba")
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        nb.Workspace(stand_in(activation="swish"), PARAMS, X, copy=True)
    unknown = 99
    z, log_norm = X.copy(), np.empty(2)
    with pytest.raises(ValueError, match="unknown activation code"):
        nb.activate(unknown, z, np.empty(0), False, log_norm)
    with pytest.raises(ValueError, match="unknown activation code"):
        nb.activation_backward(unknown, X.copy(), Y.copy())
    with pytest.raises(ValueError, match="unknown loss code"):
        nb.loss(unknown, X, X, log_norm, Y, len(Y))
    with pytest.raises(ValueError, match="unknown loss code"):
        nb.output_delta(unknown, nb.SIGMOID, X, Y, len(Y), np.empty_like(Y))


def test_jax_dispatch_raises_on_an_unknown_name():
    jx = kernels("jax")
    with pytest.raises(ValueError, match=r"loss must be one of .* got \'hinge\'"):
        jx._loss(PARAMS, X, Y, stand_in(loss="hinge"))
    with pytest.raises(ValueError, match=r"activation must be one of .* got \'swish\'"):
        jx._predict(stand_in(activation="swish"), PARAMS, X)


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


@pytest.mark.parametrize("name", sorted(ACTIVATIONS - {"softmax"}))
def test_reference_activations_match_their_formulas(name):
    """The witness's definitions against the mathematics written out, away from overflow: each
    side within about two ulp of the truth, so within 1e-15 (4.5 ulp) of each other."""
    z = np.linspace(-20, 20, 81)
    literal = {
        "sigmoid": 1 / (1 + np.exp(-z)),
        "tanh": np.tanh(z),
        "relu": np.where(z > 0, z, 0.0),
        "identity": z,
        "softplus": np.log1p(np.exp(z)),  # log(1 + e^z), the 1 + not rounded away
    }[name]
    np.testing.assert_allclose(ops.ACTIVATIONS[name].reference(z), literal, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_registry_derivatives_match_their_formulas(name):
    """f′(z) of the registry against the derivative written out, away from relu's kink, and
    finite and silent at extremes."""
    z = np.linspace(-20, 20, 80)  # no point at 0
    s = 1 / (1 + np.exp(-z))
    literal = {
        "sigmoid": s * (1 - s),
        "tanh": 1 - np.tanh(z) ** 2,
        "relu": (z > 0).astype(float),
        "identity": np.ones_like(z),
        "softplus": s,
    }[name]
    prime = ops.ACTIVATIONS[name].prime
    assert prime is not None
    # the literal forms subtract from 1: each within a few ulp of 1, absolutely
    np.testing.assert_allclose(prime(z), literal, rtol=1e-14, atol=4 * np.finfo(float).eps)
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


def test_the_readme_names_every_operation():
    """The README's description of Network lists what the registry declares."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("- `Network(layers", 1)[1].split("\n- ", 1)[0]
    for name in [*ops.ACTIVATIONS, *ops.LOSSES]:
        assert f"`{name}`" in section, name
