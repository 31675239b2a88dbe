"""Dropout: gradcheck's masks, and every backend applying them as Keras's inverted dropout.

The masks' oracle is their definition written out here in Python's own integers; the layer's is
its equation written out on a one-layer network, whose loss and gradient every backend must
match at step 0 and after training steps that each use their own step's masks. The conventions a
port gets wrong — no rescaling, rescaling at prediction, the rate read as the keep probability —
are mutants verify must name alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES
from mutants import dropout_mutants

import gradcheck
from gradcheck import Network
from gradcheck.layers import Dense, Dropout, Flatten, LayerNorm
from gradcheck.masks import dropout_masks
from gradcheck.optimizers import SGD, Adam

BACKENDS = [b for b in ("numpy", "numba", "jax", "keras") if b in gradcheck.available_backends()]
#: The correct backends a mutant is named against besides the reference (Keras is held to the
#: others in the agreement tests: its model costs seconds to build for each network).
CORRECT = [b for b in ("numpy", "numba") if b in gradcheck.available_backends()]
WORD = 0xFFFFFFFF


def _mix(x: int) -> int:
    """lowbias32, as the masks' docstring defines it, in Python's integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & WORD
    x ^= x >> 15
    x = (x * 0x846CA68B) & WORD
    return x ^ (x >> 16)


def _literal_mask(rate: float, seed: int, step: int, layer: int, shape: tuple) -> np.ndarray:
    key = _mix(_mix(_mix(seed) ^ step) ^ layer)
    units = [(_mix(key ^ i) >> 8) / 2**24 >= rate for i in range(int(np.prod(shape)))]
    return np.array(units, float).reshape(shape)


@pytest.mark.parametrize(("seed", "step"), [(0, 0), (7, 0), (0, 3), (123456, 99)])
def test_the_masks_are_the_documented_hash(seed, step):
    net = Network(
        [Flatten(), Dropout(0.3), Dense(4), Dropout(0.7), Dense(2)], input_shape=(2, 3),
        loss="mse",
    )  # fmt: skip
    first, second = dropout_masks(net, 5, seed, step)
    np.testing.assert_array_equal(first, _literal_mask(0.3, seed, step, 1, (5, 6)))
    np.testing.assert_array_equal(second, _literal_mask(0.7, seed, step, 3, (5, 4)))
    assert first.dtype == np.float64
    assert not first.flags.writeable  # shared between callers: nobody may change them


def test_the_masks_keep_one_minus_rate_of_the_units_and_a_row_keeps_its_mask():
    net = Network([Dropout(0.3), Dense(2)], input_shape=(100,), loss="mse", dtype="float32")
    [mask] = dropout_masks(net, 400, 1, 2)
    kept, n = mask.mean(), mask.size
    assert abs(kept - 0.7) < 4 * np.sqrt(0.7 * 0.3 / n)
    assert mask.dtype == np.float32
    [short] = dropout_masks(net, 7, 1, 2)  # a smaller batch: the first rows of the pattern
    np.testing.assert_array_equal(short, mask[:7])
    [other] = dropout_masks(net, 7, 1, 3)
    assert not np.array_equal(other, short)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_backend_drops_and_rescales_the_same_units(dtype):
    """Dropout(0.4) then Dense with the mean squared error, written out: C = mean((X ⊙ m / 0.6
    W + b − y)²) with step 0's masks of seed 0; then two SGD steps of a run from seed 5, each
    with its own step's masks."""
    net = Network([Dropout(0.4), Dense(3)], input_shape=(6,), loss="mse", dtype=dtype)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(9, 6)), rng.normal(size=(9, 3))
    params = net.init(1)

    def literal(params, mask):
        h = X * mask / 0.6
        error = h @ params[0]["W"] + params[0]["b"] - y
        grad = 2 * error / error.size
        return np.mean(error**2), {"W": h.T @ grad, "b": grad.sum(axis=0)}

    want_loss, want_grads = literal(params, dropout_masks(net, 9, 0, 0)[0].astype(float))
    stepped = params
    for t in range(2):
        _, g = literal(stepped, dropout_masks(net, 9, 5, t)[0].astype(float))
        stepped = [{k: stepped[0][k] - 0.1 * g[k] for k in g}]
    rtol = 1e-12 if dtype == "float64" else 2e-5
    for name in BACKENDS:
        backend = gradcheck.get_backend(name)
        loss, grads = backend.loss_and_grads(net, params, X, y)
        np.testing.assert_allclose(loss, want_loss, rtol=rtol, err_msg=name)
        for key in ("W", "b"):
            np.testing.assert_allclose(grads[0][key], want_grads[key], rtol=rtol, atol=rtol,
                                       err_msg=name)  # fmt: skip
        run = backend.train(net, params, X, y, 2, optimizer=SGD(0.1), seed=5)
        for key in ("W", "b"):
            np.testing.assert_allclose(run.params[0][key], stepped[0][key], rtol=rtol,
                                       atol=rtol, err_msg=name)  # fmt: skip


def test_predictions_do_not_drop():
    with_dropout = Network([Dense(4), Dropout(0.5), Dense(2)], input_shape=(3,), loss="mse")
    without = Network([Dense(4), Dense(2)], input_shape=(3,), loss="mse")
    X = np.random.default_rng(0).normal(size=(5, 3))
    params = without.init(0)
    want = gradcheck.get_backend("numpy").predict(without, params, X)
    for name in BACKENDS:
        got = gradcheck.get_backend(name).predict(with_dropout, params, X)
        np.testing.assert_allclose(got, want, rtol=1e-13, err_msg=name)


MUTANT_NET = ([Dense(8, "relu"), Dropout(0.3), Dense(6), LayerNorm(), Dense(3, "softmax")],
              (5,), "softmax_ce")  # fmt: skip
#: What verify must find: the group each mutant parts in, and the words of its explanation.
PARTS = {
    "dropout not rescaled": ("gradient", "kept units not scaled by 1/0.7 in training"),
    "dropout rate as keep probability": (
        "gradient", "rate read as the probability of keeping a unit (CS231n's p)"
    ),
    "dropout rescaled at prediction": (
        "predictions", "predictions, loss, gradient and training run are the network's with the "
        "Dropout after layer 1 scaled at prediction, the 2012 paper's convention",
    ),
}  # fmt: skip


def test_every_mutant_states_where_it_parts_and_why():
    assert set(PARTS) == set(dropout_mutants())


@pytest.mark.sweep(keep=lambda p: p["dtype"] == DTYPES[list(PARTS).index(p["bug"]) % 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug", list(PARTS))
def test_verify_names_the_mutant_alone_and_explains_it(bug, dtype):
    layers, shape, loss = MUTANT_NET
    net = Network(layers, input_shape=shape, loss=loss, dtype=dtype)
    rng = np.random.default_rng(list(PARTS).index(bug))
    X, y = rng.normal(size=(16, 5)), np.eye(3)[rng.integers(0, 3, 16)]
    backend = dropout_mutants()[bug]
    report = gradcheck.verify(
        net, X, y, backends=[*CORRECT, backend], steps=6, optimizer=Adam(0.01), batch_size=6,
    )  # fmt: skip
    assert not report.ok
    assert {check.backend for check in report.failures} == {backend.name}
    group, words = PARTS[bug]
    assert group in {c.quantity for c in report.failures}
    [explanation] = [e.text for e in report.explanations if e.fits]
    assert words in explanation


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5", True])
def test_a_rate_outside_zero_to_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\)"):
        Dropout(rate)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_2012_convention_scales_at_prediction_in_every_backend(dtype):
    """Dropout(0.4, scaling="at_prediction"), written out: the kept units as they are in
    training, every unit × 0.6 in predictions."""
    net = Network([Dropout(0.4, scaling="at_prediction"), Dense(3)], input_shape=(6,),
                  loss="mse", dtype=dtype)  # fmt: skip
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(9, 6)), rng.normal(size=(9, 3))
    params = net.init(1)
    W, b = params[0]["W"].astype(float), params[0]["b"].astype(float)
    [mask] = dropout_masks(net, 9)
    want_loss = np.mean(((X * mask) @ W + b - y) ** 2)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    for name in BACKENDS:
        backend = gradcheck.get_backend(name)
        np.testing.assert_allclose(backend.predict(net, params, X), (0.6 * X) @ W + b,
                                   rtol=rtol, atol=rtol, err_msg=name)  # fmt: skip
        loss, _ = backend.loss_and_grads(net, params, X, y)
        np.testing.assert_allclose(loss, want_loss, rtol=rtol, err_msg=name)
    with pytest.raises(ValueError, match="scaling must be 'inverted' or 'at_prediction'"):
        Dropout(0.5, scaling="paper")
