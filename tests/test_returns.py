"""Property-based: whatever a user's functions and backends return, gradcheck's own code does not
crash.

A forward, a backward or a backend's method returns what a first attempt may: NaN, Inf, values
near overflow or underflow, a 0-d array, the wrong shape, a string, a list where a tuple belongs,
too few or too many results, None. check_backward and verify then raise nothing but their
documented TypeError or ValueError, or return a result that says what was wrong; no warning
escapes either (warnings are errors here). The "ci" profile runs 50 examples of check_backward
and 25 of verify, --hypothesis-profile=thorough at least 400 of each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from helpers import NumpyDelegate
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck import BackwardCheck, Network, Report

#: What a value may be turned into: each a first attempt's way of returning the wrong thing.
ARRAY_SLIPS = {
    "as is": lambda v: v,
    "NaN": lambda v: np.full_like(v, np.nan),
    "Inf": lambda v: np.full_like(v, np.inf),
    "-Inf": lambda v: np.full_like(v, -np.inf),
    "one NaN": lambda v: np.where(np.arange(v.size).reshape(v.shape) == 0, np.nan, v),
    "huge": lambda v: v * np.asarray(1e300 if v.dtype == np.float64 else 1e37, v.dtype),
    "tiny": lambda v: v * np.asarray(1e-300 if v.dtype == np.float64 else 1e-37, v.dtype),
    "zeros": np.zeros_like,
    "0-d": lambda v: np.asarray(v).sum(),
    "flattened": lambda v: np.ravel(v),
    "one short": lambda v: np.ravel(v)[:-1],
    "float32": lambda v: np.asarray(v, np.float32),
    "integers": lambda v: np.asarray(v).astype(int),
    "a list": lambda v: np.asarray(v).tolist(),
    "a string": lambda v: "0.5",
    "None": lambda v: None,
    "an object": lambda v: object(),
}
#: What a tuple, list or dict of results may be turned into.
STRUCTURE_SLIPS = {
    "as is": lambda v: v,
    "a list": lambda v: list(v) if isinstance(v, (tuple, list)) else [v],
    "one short": lambda v: v[:-1] if isinstance(v, (tuple, list)) else v,
    "one too many": lambda v: (*v, v[0]) if isinstance(v, (tuple, list)) else (v, v),
    "None": lambda v: None,
    "a dict": lambda v: {"value": v},
}


@st.composite
def slips(draw) -> Any:
    """A function that turns a correct result into one a first attempt may give."""
    structure = draw(st.sampled_from(sorted(STRUCTURE_SLIPS)))
    array = draw(st.sampled_from(sorted(ARRAY_SLIPS)))
    which = draw(st.integers(0, 5))

    def slipped(value: Any) -> Any:
        if isinstance(value, (tuple, list)) and value:
            parts = list(value)
            k = which % len(parts)
            parts[k] = slipped(parts[k])
            value = type(value)(parts)
        elif isinstance(value, dict) and value:
            key = sorted(value)[which % len(value)]
            value = {**value, key: slipped(value[key])}
        elif isinstance(value, (np.ndarray, float, np.floating)):
            value = ARRAY_SLIPS[array](np.asarray(value))
        return STRUCTURE_SLIPS[structure](value) if isinstance(value, (tuple, list)) else value

    return slipped


def _tanh_layer(x, w):
    return np.tanh(x @ w)


def _tanh_layer_backward(u, x, w):
    du = u * (1 - np.tanh(x @ w) ** 2)
    return du @ w.T, x.T @ du


@settings(max_examples=max(50, settings().max_examples))
@given(
    forward_slip=slips(),
    backward_slip=slips(),
    dtype=st.sampled_from(["float64", "float32"]),
    seed=st.integers(0, 2**16),
)
def test_check_backward_raises_only_its_documented_errors(forward_slip, backward_slip, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=(4, 2)).astype(dtype)
    try:
        result = gradcheck.check_backward(
            lambda x, w: forward_slip(_tanh_layer(x, w)),
            lambda u, x, w: backward_slip(_tanh_layer_backward(u, x, w)),
            x, w, names=["x", "w"], raise_exception=False,
        )  # fmt: skip
    except (TypeError, ValueError) as error:  # a usage error
        result = error
    if isinstance(result, Exception):
        assert str(result), "a usage error says what was wrong"
        return
    assert isinstance(result, BackwardCheck)
    str(result), result.to_dict(), result._repr_html_()


NET = Network([3, 4, 2], activation=["tanh", "sigmoid"], loss="mse")


class Slipping(NumpyDelegate):
    """A user's backend: NumPy's kernels, each method's result slipped its own way."""

    def __init__(self, predict, loss_and_grads, train) -> None:
        super().__init__()
        self.slips = {"predict": predict, "loss_and_grads": loss_and_grads, "train": train}

    def predict(self, net, params, X):
        return self.slips["predict"](super().predict(net, params, X))

    def loss_and_grads(self, net, params, X, y):
        return self.slips["loss_and_grads"](super().loss_and_grads(net, params, X, y))

    def train(self, net, params, X, y, steps, lr):
        run = super().train(net, params, X, y, steps, lr)
        slipped = self.slips["train"]((run.params, run.losses))
        if isinstance(slipped, (tuple, list)) and len(slipped) == 2:
            return gradcheck.Trajectory(*slipped)
        return slipped


@settings(max_examples=max(25, settings().max_examples))
@given(
    predict=slips(),
    loss_and_grads=slips(),
    train=slips(),
    dtype=st.sampled_from(["float64", "float32"]),
    seed=st.integers(0, 2**16),
)
def test_verify_reports_a_misbehaving_backend_and_raises_nothing(
    predict, loss_and_grads, train, dtype, seed
):
    rng = np.random.default_rng(seed)
    net = Network(NET.layers, activation=NET.activations, loss=NET.loss, dtype=dtype)
    X, y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    mine = Slipping(predict, loss_and_grads, train)
    report = gradcheck.verify(
        net, X, y, params=net.init(seed=seed), backends=["numpy", mine], reference="numpy",
        steps=3, lr=0.1,
    )  # fmt: skip
    assert isinstance(report, Report)
    assert all(c.ok for c in report.checks if c.backend.startswith("numpy"))
    str(report), report.to_dict(), report._repr_html_()
