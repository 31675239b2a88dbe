"""Property-based: random networks and data, and every backend and the finite differences agree.

Depth 1 to 4, widths 1 to 16, every valid activation and loss combination, bias on and off, both
dtypes. The "ci" profile (tests/conftest.py) is derandomised; --hypothesis-profile=thorough
searches further.
"""

from __future__ import annotations

import itertools

import numpy as np
from helpers import HIDDEN, OUTPUTS, release_compiled_code
from hypothesis import given
from hypothesis import strategies as st

import gradcheck
from gradcheck import Network

#: The examples run so far in this process.
EXAMPLES = itertools.count(1)


@st.composite
def problems(draw):
    depth = draw(st.integers(1, 4))
    layers = draw(st.lists(st.integers(1, 16), min_size=depth + 1, max_size=depth + 1))
    loss = draw(st.sampled_from(sorted(OUTPUTS)))
    output = draw(st.sampled_from(OUTPUTS[loss]))
    hidden = draw(st.lists(st.sampled_from(HIDDEN), min_size=depth - 1, max_size=depth - 1))
    if output == "softmax":  # a softmax over one output is the constant 1: not a valid network
        layers[-1] = max(layers[-1], 2)
    net = Network(
        layers,
        activation=[*hidden, output],
        loss=loss,
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float64", "float32"])),
    )
    n = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.normal(size=(n, layers[0]))
    K = layers[-1]
    if loss == "softmax_ce":
        y = np.eye(K)[rng.integers(0, K, size=n)]
    elif loss == "bce" or output in ("sigmoid", "softmax"):
        y = rng.uniform(size=(n, K))
    else:
        y = rng.normal(size=(n, K))
    params = net.init(seed=int(rng.integers(0, 2**31)))
    return net, X, y, params


@given(problems())
def test_random_networks_agree_everywhere(problem):
    net, X, y, params = problem
    # A step that keeps the short run in steady descent: ½SSE sums where the others average.
    lr = 0.05 / (X.shape[0] * net.layers[-1]) if net.loss == "half_sse" else 0.05
    report = gradcheck.verify(net, X, y, params=params, steps=5, lr=lr)
    # every example is a new network for JAX and Keras to compile (JAX twice for a float32
    # network: its reference and the reference's own float32 runs), which XLA holds on to
    if next(EXAMPLES) % 20 == 0:
        release_compiled_code()
    report.assert_ok()
