"""Backpropagation through time by hand (kernels/numpy_recurrent.py) against JAX's autodiff of the
definitions written out here: a SimpleRNN (Keras's, h_t = f(x_t W + h_{t−1} U + b)) and an LSTM
(Keras's blocks i, f, c, o), both from zero states, returning every step or the last.

The hand-written forward must match the definitions, and its backward JAX's vector-Jacobian
product of them, for a random cotangent, in both dtypes and over seeds; each classic slip of a
hand-written BPTT planted in the kernel must part from JAX's far beyond rounding.
"""

from __future__ import annotations

import mutants
import numpy as np
import pytest
from helpers import DTYPES

from gradcheck.kernels import numpy_backprop as nb
from gradcheck.kernels import numpy_recurrent as nr

jax = pytest.importorskip("jax")
jnp = jax.numpy

N, T, D, H = 5, 6, 3, 4
#: The largest error rounding makes over the T steps, with room: seen up to 7e-16 in float64
#: and 3e-7 in float32 (relative to each tensor's largest magnitude).
TOLERANCE = {"float64": 1e-13, "float32": 2e-5}


def _rnn(params, x, activation):
    W, U, b = params
    h, hs = jnp.zeros((x.shape[0], U.shape[0]), x.dtype), []
    for t in range(x.shape[1]):
        h = activation(x[:, t] @ W + h @ U + b)
        hs.append(h)
    return jnp.stack(hs, axis=1)


def _lstm(params, x):
    W, U, b = params
    h = c = jnp.zeros((x.shape[0], U.shape[0]), x.dtype)
    hs = []
    for t in range(x.shape[1]):
        z_i, z_f, z_c, z_o = jnp.split(x[:, t] @ W + h @ U + b, 4, axis=-1)
        i, f, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jax.nn.sigmoid(z_o)
        c = f * c + i * jnp.tanh(z_c)
        h = o * jnp.tanh(c)
        hs.append(h)
    return jnp.stack(hs, axis=1)


#: Each layer as (hand-written forward and backward, the definition), by name.
ACTIVATION = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def _hand(layer, params, x, grad, return_sequences, kernels=nr):
    W, U, b = params
    if layer == "lstm":
        seq = kernels.lstm_forward(x, W, U, b, nb.sigmoid)
        backward = kernels.lstm_backward(seq, kernels.spread(grad, seq), W, U)
    else:
        f = nb.ACTIVATIONS[layer]
        seq = kernels.rnn_forward(x, W, U, b, f.f)
        backward = kernels.rnn_backward(seq, kernels.spread(grad, seq), W, U, f.prime)
    return kernels.returned(seq, return_sequences), backward


def _definition(layer, params, x, return_sequences):
    every = _lstm(params, x) if layer == "lstm" else _rnn(params, x, ACTIVATION[layer])
    return every if return_sequences else every[:, -1]


def _case(layer, seed, dtype, return_sequences):
    rng = np.random.default_rng(seed)
    width = 4 * H if layer == "lstm" else H
    params = tuple(
        rng.normal(scale=0.5, size=shape).astype(dtype)
        for shape in ((D, width), (H, width), (width,))
    )
    x = rng.normal(size=(N, T, D)).astype(dtype)
    out_shape = (N, T, H) if return_sequences else (N, H)
    grad = rng.normal(size=out_shape).astype(dtype)
    return params, x, grad


def _errors(layer, seed, dtype, return_sequences, kernels=nr):
    """The hand-written output and gradients' largest errors, each relative to the largest
    magnitude of JAX's float64 value of it; ``kernels``: numpy_recurrent, or a copy of it with a
    slip."""
    params, x, grad = _case(layer, seed, dtype, return_sequences)
    out, grads = _hand(layer, params, x, grad, return_sequences, kernels)
    wide = tuple(np.asarray(p, np.float64) for p in params)
    with jax.enable_x64(True):  # the definition in float64, whatever the session's setting
        expected, vjp = jax.vjp(
            lambda p, x: _definition(layer, p, x, return_sequences), wide, x.astype(np.float64)
        )
        (dW, dU, db), dx = vjp(grad.astype(np.float64))
        expected, dW, dU, db, dx = (np.asarray(a) for a in (expected, dW, dU, db, dx))
    pairs = {"h": (out, expected), "W": (grads.W, dW), "U": (grads.U, dU), "b": (grads.b, db),
             "x": (grads.x, dx)}  # fmt: skip
    return {
        name: float(np.max(np.abs(np.asarray(o, np.float64) - e)) / np.max(np.abs(e)))
        for name, (o, e) in pairs.items()
    }


LAYERS = ["tanh", "relu", "lstm"]


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", LAYERS)
def test_bptt_by_hand_is_jaxs_vjp_of_the_definition(layer, dtype, return_sequences, gradcheck_seed):
    errors = _errors(layer, gradcheck_seed, dtype, return_sequences)
    assert max(errors.values()) <= TOLERANCE[dtype], errors


def _gates_c_o_swapped(z_t, sigmoid):  # BUG: CS231n's order i, f, o, g read from Keras's weights
    z_i, z_f, z_o, z_c = np.split(z_t, 4, axis=-1)
    return np.concatenate([sigmoid(z_i), sigmoid(z_f), np.tanh(z_c), sigmoid(z_o)], axis=-1)


#: Each slip: the layer it is planted in, and the numpy_recurrent functions it replaces (the
#: mutants' of tests/mutants.py, but the gates read in CS231n's order, there made at the layer).
SLIPS = {
    "BPTT truncated": ("tanh", mutants.RECURRENT_SLIPS["bptt truncated"]),
    "h_t in dU": ("tanh", mutants.RECURRENT_SLIPS["h_t in dU"]),
    "blocks c and o swapped": ("lstm", {"gates": _gates_c_o_swapped}),
    "forget gate without σ": ("lstm", mutants.RECURRENT_SLIPS["lstm forget gate without sigma"]),
    "cell state not carried": ("lstm", mutants.RECURRENT_SLIPS["lstm cell state not carried"]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slip", list(SLIPS))
def test_each_classic_slip_parts_from_jax_far_beyond_rounding(slip, dtype):
    layer, replacements = SLIPS[slip]
    kernels = mutants.recurrent_kernels(slip, **replacements)
    for seed in range(3):
        errors = _errors(layer, seed, dtype, return_sequences=True, kernels=kernels)
        assert max(errors.values()) > 1000 * TOLERANCE[dtype], (seed, errors)
