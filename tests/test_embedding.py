"""The Embedding: integer ids in, each id's row of E out, and a scatter-add that sums repeated ids.

The oracle of the gradient is the sum written out id by id in the test; every backend must
match it, and verify on the digits as tokens must pass every correct backend and name the
backward that overwrites a repeated id's rows instead of adding them. Ids outside the table, and
fractions, are refused before any work.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES
from mutants import embedding_mutants

import gradcheck
from gradcheck import Network
from gradcheck.layers import Dense, Embedding, Flatten, LayerNorm
from gradcheck.optimizers import Adam, RMSprop
from gradcheck.problems import PROBLEMS

BACKENDS = [b for b in ("numpy", "numba", "jax", "keras") if b in gradcheck.available_backends()]
#: The correct backends a mutant is named against besides the reference (Keras is held to the
#: others in the agreement tests: its model costs seconds to build for each network).
CORRECT = [b for b in ("numpy", "numba") if b in gradcheck.available_backends()]
NET = Network([Embedding(5, 3), Flatten(), Dense(2)], input_shape=(4,), loss="half_sse")


def _ids(n: int, seed: int, vocabulary: int = 5, length: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocabulary, size=(n, length))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_backend_sums_the_gradient_of_repeated_ids(dtype):
    """C = ½ Σ (Σ_t E[ids[n,t]] W_t + b − y)², its ∂C/∂E[v] written out: for each position of
    id v, the gradient of that position's row, all added."""
    net = Network(NET.stack, input_shape=(4,), loss="half_sse", dtype=dtype)
    ids, y = _ids(6, 0), np.random.default_rng(1).normal(size=(6, 2))
    params = net.init(2)
    E, W, b = (params[0]["E"].astype(float), params[1]["W"].astype(float),
               params[1]["b"].astype(float))  # fmt: skip
    rows = E[ids].reshape(6, -1)  # (N, T·D)
    error = rows @ W + b - y
    d_rows = (error @ W.T).reshape(6, 4, 3)
    want = np.zeros_like(E)
    for n in range(6):
        for t in range(4):
            want[ids[n, t]] += d_rows[n, t]
    assert len(np.unique(ids)) < ids.size  # some ids repeat: the sum is tested
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for name in BACKENDS:
        backend = gradcheck.get_backend(name)
        loss, grads = backend.loss_and_grads(net, params, ids, y)
        np.testing.assert_allclose(loss, 0.5 * np.sum(error**2), rtol=rtol, err_msg=name)
        np.testing.assert_allclose(grads[0]["E"], want, rtol=rtol, atol=rtol, err_msg=name)
        got = backend.predict(net, params, ids)
        np.testing.assert_allclose(got, rows @ W + b, rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", [Adam(0.01), RMSprop(0.01, momentum=0.5)])
def test_every_backend_trains_an_embedding_with_adaptive_optimizers(optimizer, dtype):
    """Adam and RMSprop as their equations say on the rows of an embedding: Keras's own
    optimizers update a row once per lookup (IndexedSlices), so its backend hands them dense
    gradients."""
    net = Network([Embedding(6, 4), Flatten(), LayerNorm(), Dense(3, "softmax")],
                  input_shape=(5,), loss="softmax_ce", dtype=dtype)  # fmt: skip
    ids = _ids(20, 3, vocabulary=6, length=5)
    y = np.eye(3)[np.random.default_rng(4).integers(0, 3, 20)]
    report = gradcheck.verify(net, ids, y, backends=BACKENDS, steps=9, optimizer=optimizer,
                              batch_size=7)  # fmt: skip
    assert report.ok, report.verdict_lines()


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_names_and_explains_the_backward_that_overwrites_repeated_ids(dtype):
    """On the catalogue's digits_embed, whose epochs end in a batch of 5 samples: a reference
    that pads that batch must not let the padding's positions overwrite the rows."""
    problem = PROBLEMS["digits_embed"]
    X, y = problem.data(dtype)
    training = problem.training(problem.steps)
    assert len(X) % training.batch_size != 0  # a smaller last batch is run
    mutants = embedding_mutants()
    report = gradcheck.verify(
        problem.network(dtype), X, y, params=problem.params(dtype),
        backends=[*CORRECT, *mutants.values()], steps=training.steps,
        optimizer=training.optimizer, batch_size=training.batch_size,
    )  # fmt: skip
    assert {check.backend for check in report.failures} == {b.name for b in mutants.values()}
    for backend in mutants.values():
        assert "gradient" in {c.quantity for c in report.failures if c.backend == backend.name}
        [first] = [f for f in report.first_differences if f.backend == backend.name]
        assert (first.stage, first.layer, first.tensor) == ("backward", 1, "E")
    explained = {e.backend: e.text for e in report.explanations if e.fits}
    overwrites = mutants["embedding overwrites repeated ids"].name
    assert "writing each position's gradient over its id's row" in explained[overwrites]
    assert "over its id's row" not in explained.get(mutants["embedding rows one-based"].name, "")


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.array([[0, 1, 2, 5]]), r"ids must lie in \[0, 5\).*from 0 to 5"),
        (np.array([[0, -1, 2, 3]]), r"ids must lie in \[0, 5\).*from -1 to 3"),
        (np.array([[0, 1.5, 2, 3]]), "whole numbers"),
        (np.array([["a", "b", "c", "d"]]), "integer ids"),
        (np.zeros((1, 3), int), r"X must have shape \(samples, 4\)"),
    ],
)
def test_bad_ids_are_refused_before_any_work(X, message):
    y = np.zeros((len(X), 2))
    for name in ("numpy", "jax"):
        with pytest.raises((ValueError, TypeError), match=message):
            gradcheck.get_backend(name).loss_and_grads(NET, NET.init(0), X, y)
    with pytest.raises((ValueError, TypeError), match=message):
        gradcheck.verify(NET, X, y, backends=["numpy"], steps=1)


def test_whole_floats_are_ids_and_an_embedding_must_come_first():
    ids = _ids(3, 0)
    y = np.zeros((3, 2))
    backend = gradcheck.get_backend("numpy")
    as_float = backend.loss_and_grads(NET, NET.init(0), ids.astype(np.float32), y)
    as_int = backend.loss_and_grads(NET, NET.init(0), ids, y)
    assert as_float[0] == as_int[0]
    with pytest.raises(ValueError, match="must be the first layer"):
        Network([Dense(4), Embedding(5, 3), Flatten(), Dense(2)], input_shape=(4,), loss="mse")
    with pytest.raises(ValueError, match="input_dim must be a positive integer"):
        Embedding(0, 3)


def test_init_draws_the_table_as_keras_does():
    E = Network([Embedding(50, 20), Flatten(), Dense(2)], input_shape=(3,), loss="mse").init(0)
    table = E[0]["E"]
    assert table.shape == (50, 20)
    assert -0.05 <= table.min() < -0.045
    assert 0.045 < table.max() <= 0.05
