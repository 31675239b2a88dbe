"""The Numba kernels' own promises: a vectorised exp within one ulp, no allocation per step, and
a loop specialised to a network that computes exactly what the general loop does."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import HIDDEN, OUTPUTS

import gradcheck

pytestmark = pytest.mark.skipif(
    "numba" not in gradcheck.available_backends(), reason="numba is not installed"
)


@pytest.mark.parametrize(("dtype", "lowest_normal"), [(np.float64, -708.0), (np.float32, -87.0)])
def test_exp_nonpositive_is_within_one_ulp_of_the_correctly_rounded_exp(dtype, lowest_normal):
    from gradcheck.kernels.numba_exp import exp_nonpositive

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
    exp_nonpositive(result)
    ulps = np.abs(result.astype(np.float64) - reference) / np.spacing(reference)
    assert ulps.max() <= 1.0
    assert result[x.size - 5] == 1.0  # e^0 exactly


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_nonpositive_subnormal_results_are_exact(dtype):
    from gradcheck.kernels.numba_exp import exp_nonpositive

    x = np.array([-1.0, -745.0, -744.0, -720.0, -103.0, -100.0, -1e6], dtype=dtype)
    result = x.copy()
    exp_nonpositive(result)
    assert np.array_equal(result, np.exp(x.astype(np.float64)).astype(dtype))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("dtype", "lowest_normal"), [(np.float64, -708.0), (np.float32, -87.0)])
def test_sigmoid_of_z_plus_b_is_the_formula_in_every_row(dtype, lowest_normal, seed):
    """Rows whose e^{-|z+b|} are all normal take the one-pass vector path, a row with one
    subnormal takes the C library's exp; both give 1/(1 + e^{-v}) (written out here in float64)
    to the worst case of the arithmetic, the subnormal σ exactly, and the bias in every column.
    The worst case: e within one ulp (a relative 2u, u half an ulp of 1) reaches σ whole below 0
    and halved through 1 + e, then 1 + e, the division and the product round once each: 6u
    relative, at most 6 ulps of the result (observed up to 2.75 in float32 over 20 seeds, 3 in
    float64, where the float64 reference rounds as often as the kernel)."""
    from gradcheck.kernels import numba_backprop as nb

    rng = np.random.default_rng(seed)
    z = rng.normal(scale=8, size=(300, 37)).astype(dtype)
    z[7, 5] = 2 * lowest_normal  # a subnormal e: row 7 alone goes one at a time
    b = rng.normal(size=37).astype(dtype)
    v = z.astype(np.float64) + b.astype(np.float64)
    v = v.astype(dtype).astype(np.float64)  # z + b as the kernel forms it, in dtype

    def sigma(x):
        return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))

    want = np.array([[sigma(x) for x in row] for row in v])
    got = z.copy()
    nb.activate(nb.Activation.sigmoid, got, b, True, np.empty(300, dtype))
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(want.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 6.0
    assert got[7, 5] == dtype(math.exp(v[7, 5]))  # subnormal, and exactly e^v


def test_training_allocates_nothing_per_step():
    """Numba's allocation counter reads the same for 10 steps as for 1000, for the general loop
    and for the loop specialised to the network."""
    code = """
import numpy as np
from numba.core.runtime import rtsys
import gradcheck
from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels import numba_specialised as sp
X, y = gradcheck.datasets.digits()
X, y = X[:200], y[:200]
net = gradcheck.Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce")
params = net.init(seed=0)
counts = []
codes = (nb.Activation.sigmoid, nb.Activation.softmax)
specialised = sp.train_loop(net.widths, len(X), codes, nb.Loss.softmax_ce, True)
for steps in (1, 1, 10, 1000):  # the first call loads the compiled code and starts the runtime
    ws = nb.Workspace(net, params, X)
    Ws, bs = nb._weights(net, params)
    losses = np.empty(steps)
    before = rtsys.get_allocation_stats().alloc if counts else 0
    nb.train_loop(nb.Loss.softmax_ce, ws.activations, ws.widths, ws.theta, True, ws.X, y, 0.5,
                  *ws.buffers, losses)
    middle = rtsys.get_allocation_stats().alloc
    specialised(X, y, Ws, bs, 0.5, losses)
    counts.append((middle - before, rtsys.get_allocation_stats().alloc - middle))
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


# --- the loop specialised to one network ------------------------------------------------------

WIDTHS = {1: [3, 2], 2: [4, 6, 2], 3: [5, 6, 4, 3]}


def _specialised_networks():
    """Every (loss, output) pair of the registry at depth 1, 2 or 3 in turn, the hidden
    activations taken in turn, bias on and off in turn; and a large network on the other side
    of the kernels' small/large switches (loops or BLAS, scalar or vector exponentials)."""
    hidden = itertools.cycle(HIDDEN)
    pairs = [(loss, output) for loss, outputs in OUTPUTS.items() for output in outputs]
    for j, (loss, output) in enumerate(pairs):
        depth = 1 + j % 3
        activations = [next(hidden) for _ in range(depth - 1)] + [output]
        yield WIDTHS[depth], activations, loss, j % 2 == 0, 4 + j % 4
    yield [64, 32, 10], ["sigmoid", "softmax"], "softmax_ce", True, 300


NETWORKS = list(_specialised_networks())
#: The default suite's cases: the first network and the large one, in one dtype each.
DEFAULT = {(0, "float32"), (len(NETWORKS) - 1, "float64")}
SPECIALISED = [
    pytest.param(
        *network,
        dtype,
        id=f"{'-'.join(map(str, network[0]))}-{'/'.join(network[1])}-{network[2]}-{dtype}",
        marks=() if (j, dtype) in DEFAULT else pytest.mark.thorough,
    )
    for j, network in enumerate(NETWORKS)
    for dtype in ("float64", "float32")
]


def test_the_specialised_networks_cover_the_registry():
    seen = [case.values for case in SPECIALISED]
    assert {a for values in seen for a in values[1]} == set(HIDDEN) | {
        output for outputs in OUTPUTS.values() for output in outputs
    }
    assert {values[2] for values in seen} == set(OUTPUTS)
    assert {values[3] for values in seen} == {True, False}


@pytest.mark.parametrize(("widths", "activations", "loss", "bias", "samples", "dtype"), SPECIALISED)
def test_the_specialised_loop_is_bit_identical_to_the_general_one(
    widths, activations, loss, bias, samples, dtype
):
    from gradcheck.kernels import numba_backprop as nb
    from gradcheck.kernels import numba_specialised as sp

    net = gradcheck.Network(widths, activation=activations, loss=loss, bias=bias, dtype=dtype)
    rng = np.random.default_rng(len(widths) + samples)
    X = rng.normal(size=(samples, widths[0])).astype(dtype)
    if loss == "softmax_ce":
        y = np.eye(widths[-1], dtype=dtype)[rng.integers(0, widths[-1], samples)]
    else:
        y = rng.uniform(size=(samples, widths[-1])).astype(dtype)
    params, steps, lr = net.init(seed=1), 25, net.np_dtype.type(0.1)
    loss_code = nb.LOSS_CODES[loss]
    general = nb.Workspace(net, params, X)
    general_losses = np.empty(steps, dtype)
    nb.train_loop(loss_code, general.activations, general.widths, general.theta, bias, general.X,
                  y, lr, *general.buffers, general_losses)  # fmt: skip
    Ws, bs = nb._weights(net, params)
    special_losses = np.empty(steps, dtype)
    codes = tuple(nb.ACTIVATION_CODES[a] for a in activations)
    loop = sp.train_loop(tuple(widths), samples, codes, loss_code, bias)
    loop(X, y, Ws, bs, lr, special_losses)
    assert np.array_equal(special_losses, general_losses)
    for W, b, layer in zip(Ws, bs, nb.as_params(net, general.theta), strict=True):
        assert np.array_equal(W, layer["W"])
        assert np.array_equal(b, layer.get("b", np.empty(0, dtype)))
    assert not np.array_equal(Ws[0], np.asarray(params[0]["W"], dtype))  # it trained


@pytest.mark.thorough  # two processes compiling: 20 s of the default suite's 2 cores
def test_processes_generating_one_loop_at_once_all_get_it(tmp_path):
    """Two processes ask for the same new specialised loop at the same moment, in a fresh
    directory of generated loops (the kernels' own cache is left where it is, so only the loop
    compiles): each gets a complete file and the same losses."""
    code = """
import sys, time
import numpy as np
import gradcheck
net = gradcheck.Network([2, 3, 1], activation="tanh", loss="half_sse", bias=False)
X, y = np.ones((3, 2)), np.zeros((3, 1))
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # start together
losses = gradcheck.get_backend("numba").train(net, net.init(seed=0), X, y, 1000, 0.1).losses
print(repr(losses[-1]))
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    start = str(time.time() + 4)
    processes = [
        subprocess.Popen([sys.executable, "-c", code, start], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [process.communicate() for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    assert len({out for out, _ in outputs}) == 1
    directory = tmp_path / "gradcheck" / "numba_specialised"
    generated = list(directory.glob("train_loop_*.py"))
    assert len(generated) == 1
    assert "def train_loop(" in generated[0].read_text()
    assert not list(directory.glob("*.tmp"))


def test_a_long_run_takes_the_specialised_loop_and_agrees_to_the_bit(monkeypatch):
    """Through the backend: a run just long enough takes the loop specialised to the network,
    one step shorter the general loop, and their losses agree to the last bit."""
    from gradcheck.kernels import numba_backprop as nb
    from gradcheck.kernels import numba_specialised as sp

    asked = []
    specialised = sp.train_loop
    monkeypatch.setattr(sp, "train_loop", lambda *key: asked.append(key) or specialised(*key))
    net = gradcheck.Network([3, 4, 1], bias=False)
    X, y = gradcheck.datasets.seed_xor()
    params = net.init(seed=3, scheme="uniform")
    backend = gradcheck.get_backend("numba")
    long = backend.train(net, params, X, y, nb.SPECIALISE_MIN_STEPS, 1.0)
    assert asked == [
        ((3, 4, 1), 4, (nb.Activation.sigmoid, nb.Activation.sigmoid), nb.Loss.half_sse, False)
    ]
    short = backend.train(net, params, X, y, nb.SPECIALISE_MIN_STEPS - 1, 1.0)
    assert len(asked) == 1
    assert np.array_equal(long.losses[:-1], short.losses)


# --- buffers kept between training calls ---------------------------------------------------------


def _digits_sized_run(seed: int, dtype: str = "float64"):
    """A 64-32-10 softmax network on 300 digits, 20 steps from the weights of ``seed``."""
    X, y = gradcheck.datasets.digits()
    X, y = X[:300].astype(dtype), y[:300].astype(dtype)
    net = gradcheck.Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce",
                            dtype=dtype)  # fmt: skip
    return net, net.init(seed=seed), X, y


def _trained_on_fresh_buffers(net, params, X, y, steps, lr):
    """`numba_backprop.train_loop` on a workspace of its own, kept by no one."""
    from gradcheck.kernels import numba_backprop as nb

    ws = nb.Workspace(net, params, X)
    losses = np.empty(steps, net.dtype)
    nb.train_loop(nb.LOSS_CODES[net.loss], ws.activations, ws.widths, ws.theta, net.bias, ws.X, y,
                  net.np_dtype.type(lr), *ws.buffers, losses)  # fmt: skip
    return [layer["W"] for layer in nb.as_params(net, ws.theta)], losses


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_training_call_on_kept_buffers_computes_what_fresh_buffers_do(dtype):
    """Calls of the same sizes one after another, from different weights, reuse one set of
    buffers; each still computes exactly what a run on buffers of its own does."""
    backend = gradcheck.get_backend("numba")
    runs = []
    for seed in (0, 1, 0):
        net, params, X, y = _digits_sized_run(seed, dtype)
        runs.append(backend.train(net, params, X, y, 20, 0.5))
        Ws, losses = _trained_on_fresh_buffers(net, params, X, y, 20, 0.5)
        assert np.array_equal(runs[-1].losses, losses)
        for layer, W in zip(runs[-1].params, Ws, strict=True):
            assert np.array_equal(layer["W"], W)
    assert not np.array_equal(runs[0].losses, runs[1].losses)


def test_threads_training_at_once_keep_buffers_of_their_own():
    """Two threads train networks of the same sizes from different weights at the same time
    (the compiled loop releases the GIL); each gets what it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    backend = gradcheck.get_backend("numba")
    runs = [_digits_sized_run(seed) for seed in range(4)]
    alone = [_trained_on_fresh_buffers(*run, 200, 0.5)[1] for run in runs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda run: backend.train(*run, 200, 0.5).losses, runs * 3))
    for i, losses in enumerate(together):
        assert np.array_equal(losses, alone[i % len(runs)])


def test_only_the_most_recent_sizes_keep_their_buffers():
    from gradcheck.kernels import numba_backprop as nb

    nets = [gradcheck.Network([3, w, 1]) for w in range(2, 3 + nb.KEPT_BUFFERS)]
    first = nb.kept_buffers(nets[0], 5)
    assert nb.kept_buffers(nets[0], 5) is first
    assert nb.kept_buffers(nets[0], 6) is not first  # another batch size
    for net in nets[1:]:
        nb.kept_buffers(net, 5)
    assert nb.kept_buffers(nets[0], 5) is not first  # pushed out by KEPT_BUFFERS newer sizes
