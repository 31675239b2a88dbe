"""The Numba kernels' own promises: a vectorised exp within one ulp, and no allocation per step."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import gradcheck

pytestmark = pytest.mark.skipif(
    "numba" not in gradcheck.available_backends(), reason="numba is not installed"
)


@pytest.mark.parametrize(
    ("dtype", "bits", "lowest_normal"),
    [(np.float64, np.int64, -708.0), (np.float32, np.int32, -87.0)],
)
def test_exp_nonpositive_is_within_one_ulp_of_the_correctly_rounded_exp(dtype, bits, lowest_normal):
    from gradcheck.kernels.numba_exp import exp_nonpositive_array

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            -np.abs(rng.normal(scale=5, size=100_000)),
            rng.uniform(lowest_normal, 0, size=100_000),
            [0.0, -0.0, -1e-30, -math.log(2) / 2, lowest_normal],
        ]
    ).astype(dtype)
    # math.exp in float64 rounds to within half an ulp of float32, and glibc's is correctly
    # rounded in float64 for all but a vanishing set of inputs.
    reference = np.array([math.exp(v) for v in x.astype(np.float64)]).astype(dtype)
    result = x.copy()
    exp_nonpositive_array(result, np.empty(x.size, bits))
    ulps = np.abs(result.astype(np.float64) - reference) / np.spacing(reference)
    assert ulps.max() <= 1.0
    assert result[x.size - 5] == 1.0  # e^0 exactly


@pytest.mark.parametrize(("dtype", "bits"), [(np.float64, np.int64), (np.float32, np.int32)])
def test_exp_nonpositive_subnormal_results_are_exact(dtype, bits):
    from gradcheck.kernels.numba_exp import exp_nonpositive_array

    x = np.array([-1.0, -745.0, -744.0, -720.0, -103.0, -100.0, -1e6], dtype=dtype)
    result = x.copy()
    exp_nonpositive_array(result, np.empty(x.size, bits))
    assert np.array_equal(result, np.exp(x.astype(np.float64)).astype(dtype))


def test_training_allocates_nothing_per_step():
    """Numba's allocation counter reads the same for 10 steps as for 1000."""
    code = """
import numpy as np
from numba.core.runtime import rtsys
import gradcheck
from gradcheck.kernels import numba_backprop as nb
X, y = gradcheck.datasets.digits()
X, y = X[:200], y[:200]
net = gradcheck.Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce")
params = net.init(seed=0)
counts = []
for steps in (1, 1, 10, 1000):  # the first call loads the compiled code and starts the runtime
    ws = nb.Workspace(net, params, X, copy=True)
    losses = np.empty(steps)
    before = rtsys.get_allocation_stats().alloc if counts else 0
    nb.train_loop(nb.SOFTMAX_CE, ws.activations, ws.Ws, ws.bs, True, y, 0.5, ws.A, ws.logits,
                  ws.log_norm, ws.D, ws.dWs, ws.dbs, ws.scratch, losses)
    counts.append(rtsys.get_allocation_stats().alloc - before)
print(counts[1:])
"""
    env = {**os.environ, "NUMBA_NRT_STATS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    counts = eval(result.stdout.strip())
    assert counts[0] == counts[1] == counts[2], counts


@pytest.mark.parametrize("name", ["numba", "numpy"])
def test_softmax_ce_of_a_confident_row_keeps_its_digits(name):
    """Logits (50, 30, 30): the loss is log(1 + 2e⁻²⁰) ≈ 4.1e-9, written here with log1p. Adding
    the row's maximum back before subtracting the logit would cost |z|·ε ≈ 1e-14 of it."""
    net = gradcheck.Network([1, 3], activation="softmax", loss="softmax_ce", bias=False)
    params = [{"W": np.array([[50.0, 30.0, 30.0]])}]
    X, y = np.ones((1, 1)), np.array([[1.0, 0.0, 0.0]])
    loss, _ = gradcheck.get_backend(name).loss_and_grads(net, params, X, y)
    expected = math.log1p(2 * math.exp(-20))
    assert abs(loss - expected) <= 1e-7 * expected
