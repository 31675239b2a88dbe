"""Proof that the checker catches real bugs: every mutant flagged and blamed, no correct kernel.

The network has square layers (so a transposed weight gradient keeps its shape), a sigmoid and a
tanh hidden layer (so using the wrong layer's activation changes the result), biases, and a
softmax output with the mean cross-entropy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mutants import all_mutants

import gradcheck
from gradcheck import Network, explain

NET = Network([4, 4, 4, 4], activation=["sigmoid", "tanh", "softmax"], loss="softmax_ce")
MUTANTS = list(all_mutants())
CORRECT = [name for name in ("numpy", "numba") if name in gradcheck.available_backends()]
#: Bugs that live in the training loop, not in the gradient: check_backward cannot see them.
TRAINING_ONLY = {"update sign flip"}
#: Bugs verify sees only in the training run: a stale cache needs an earlier forward call, and
#: verify's single gradient has none before it.
SEEN_IN_TRAINING = TRAINING_ONLY | {"stale forward cache"}


#: What verify must say of each mutant: the explanations, as (quantity, kind, factor), and the
#: first tensor that parts, as (stage, layer, tensor) — None where the traces agree (the bug is
#: in the training loop, or in a cache only a second call sees).
EXPLAINED = {
    "update sign flip": ({("training run", "sign", -1)}, None),
    "sigmoid' of the activation": (
        {("gradient", "activation_derivative", None)},
        ("backward", 1, "δ"),
    ),
    "sigmoid' given z": (
        {("gradient", "activation_derivative", None)},
        ("backward", 1, "δ"),
    ),
    "tanh' unsquared": ({("gradient", "none", None)}, ("backward", 2, "δ")),
    "missing bias gradient": ({("gradient", "missing_bias", 0)}, ("backward", 3, "b")),
    "transposed weight gradient": ({("gradient", "transpose", None)}, ("backward", 3, "W")),
    "missing 1/N of the mean": (
        {("gradient", "scale", 8), ("training run", "lr_scale", 8)},  # N = 8 samples
        ("output_delta", 3, "δ"),
    ),
    "softmax-CE gradient without the softmax": (
        {("gradient", "none", None)},
        ("output_delta", 3, "δ"),
    ),
    "wrong layer's activation in backward": ({("gradient", "none", None)}, ("backward", 2, "δ")),
    "stale forward cache": ({("training run", "none", None)}, None),
    "first sample only": ({("gradient", "none", None)}, ("backward", 3, "W")),
    # the first layer's pre-activation z, computed in float16, is where it parts
    "one layer in float16": ({("predictions", "none", None)}, ("forward", 1, "z")),
}
#: What check_backward must say of the gradient mutants, as (kind, factor) per explanation.
EXPLAINED_BY_CHECK_BACKWARD = {
    "missing bias gradient": [("scale", 0)],
    "transposed weight gradient": [("transpose", None)] * 3,
    "missing 1/N of the mean": [("scale", 8)],
    "stale forward cache": [("stale_state", None)],
}


def _unflatten(arrays):
    """(W1, b1, W2, b2, …) back into params."""
    return [{"W": arrays[i], "b": arrays[i + 1]} for i in range(0, len(arrays), 2)]


def _problem(seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(8, 4))
    y = np.eye(4)[rng.integers(0, 4, size=8)]
    return X, y, NET.init(seed=seed)


@pytest.mark.parametrize("bug", MUTANTS)
def test_verify_flags_and_blames_the_mutant(bug):
    backend = all_mutants()[bug]
    X, y, params = _problem()
    report = gradcheck.verify(
        NET, X, y, params=params, backends=[*CORRECT, backend], steps=30, lr=0.5
    )
    assert not report.ok
    assert {check.backend for check in report.failures} == {backend.name}
    [verdict] = report.verdicts
    # The finite differences witness predictions, loss and gradients, never a training run.
    witnesses = ["jax", *CORRECT, *([] if bug in SEEN_IN_TRAINING else ["finite differences"])]
    listing = f"{', '.join(witnesses[:-1])} and {witnesses[-1]}"
    assert verdict.startswith(f"{backend.name} disagrees with {listing}: ")


def test_every_mutant_states_its_explanation():
    assert set(EXPLAINED) == set(MUTANTS)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("bug", MUTANTS)
def test_verify_explains_the_mutant(bug, dtype, seed):
    """Each mutant gets the explanation it expects — kind and factor — and its first differing
    tensor, in both dtypes and over several problems; the correct backend gets none."""
    net = dataclasses.replace(NET, dtype=dtype)
    X, y, params = _problem(seed)
    backend = all_mutants()[bug]
    report = gradcheck.verify(
        net, X, y, params=params, backends=["numpy", backend], steps=30, lr=0.5
    )
    # in float32 too: a first layer in float16 moves the predictions by about 7e-6 of the size
    # of their terms, within float32's tolerance, but the dtype ladder's float64 run shows it
    explained, first = EXPLAINED[bug]
    found = {(e.quantity, e.kind, e.factor) for e in report.explanations}
    assert found == explained, [e.text for e in report.explanations]
    assert {e.backend for e in report.explanations} == {backend.name}
    places = [(d.stage, d.layer, d.tensor) for d in report.first_differences]
    assert places == ([] if first is None else [first])
    assert all(e.text and e.kind in explain.KINDS for e in report.explanations)
    shown = report.verdict_lines()
    assert all(f"why: {e.text}" in shown for e in report.explanations if e.fits)
    assert not any("no simple explanation" in line for line in shown)  # none fit: none shown


@pytest.mark.parametrize("bug", [bug for bug in MUTANTS if bug not in TRAINING_ONLY])
def test_check_backward_flags_the_mutant(bug):
    backend = all_mutants()[bug]
    X, y, params = _problem()
    flat = [layer[key] for layer in params for key in ("W", "b")]

    def forward(*arrays):
        return np.asarray(backend.loss_and_grads(NET, _unflatten(arrays), X, y)[0])

    def backward(u, *arrays):
        _, grads = backend.loss_and_grads(NET, _unflatten(arrays), X, y)
        return [u * layer[key] for layer in grads for key in ("W", "b")]

    with pytest.raises(AssertionError, match="backward disagrees"):
        gradcheck.check_backward(forward, backward, *flat)
    result = gradcheck.check_backward(forward, backward, *flat, raise_exception=False)
    expected = EXPLAINED_BY_CHECK_BACKWARD.get(bug, [("none", None)])
    assert [(e.kind, e.factor) for e in result.explanations] == expected


@pytest.mark.parametrize("name", CORRECT)
def test_check_backward_passes_the_correct_kernels(name):
    backend = gradcheck.get_backend(name)
    X, y, params = _problem()
    flat = [layer[key] for layer in params for key in ("W", "b")]

    result = gradcheck.check_backward(
        lambda *a: np.asarray(backend.loss_and_grads(NET, _unflatten(a), X, y)[0]),
        lambda u, *a: [
            u * g[k]
            for g in backend.loss_and_grads(NET, _unflatten(a), X, y)[1]
            for k in ("W", "b")
        ],
        *flat,
    )
    assert len(result.checks) == 2 * len(flat)  # every input, for each of two cotangents
    # Not only within tolerance (check_backward raises otherwise): with margin, and as close as
    # float64 finite differences of a smooth function get.
    assert max(check.error / check.tolerance for check in result.checks) < 0.25
    assert max(check.error for check in result.checks) < 1e-7
