"""The Numba kernels' own promises: a vectorised exp within one ulp (and expm1 and tanh within a
few), no allocation per step, and
buffers kept between training calls that compute what fresh ones do."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import random_problem

import gradcheck

pytestmark = pytest.mark.skipif(
    "numba" not in gradcheck.available_backends(), reason="numba is not installed"
)


@pytest.mark.parametrize(("dtype", "lowest_normal"), [(np.float64, -708.0), (np.float32, -87.0)])
def test_exp_nonpositive_at_is_within_one_ulp_of_the_correctly_rounded_exp(dtype, lowest_normal):
    from gradcheck.kernels.numba_exp import exp_nonpositive_at

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
    exp_nonpositive_at(result, 0, result.size)
    ulps = np.abs(result.astype(np.float64) - reference) / np.spacing(reference)
    assert ulps.max() <= 1.0
    assert result[x.size - 5] == 1.0  # e^0 exactly


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_nonpositive_at_subnormal_results_are_exact(dtype):
    from gradcheck.kernels.numba_exp import exp_nonpositive_at

    x = np.array([-1.0, -745.0, -744.0, -720.0, -103.0, -100.0, -1e6], dtype=dtype)
    result = x.copy()
    exp_nonpositive_at(result, 0, result.size)
    assert np.array_equal(result, np.exp(x.astype(np.float64)).astype(dtype))


@pytest.mark.parametrize(("dtype", "lowest_normal"), [(np.float64, -708.0), (np.float32, -87.0)])
def test_the_compiled_expm1_and_tanh_are_within_a_few_ulps(dtype, lowest_normal):
    """e^x − 1 for x in [lowest normal, 0] within 2 ulps of the rounded reference (1.38 seen in
    float64 against a long double one, 1.12 in float32), exact at 0 and without the cancellation
    of e^x − 1 near it; tanh = −m/(2 + m), m = e^{−2|v|} − 1, with v's sign, within 3 ulps
    (2.5 seen; the C library's is within 1.2), ±1 where it rounds to 1, and odd. The references
    are math.expm1 and math.tanh in float64, correctly rounded to float32 and within an ulp in
    float64."""
    from numba import njit

    from gradcheck.kernels import numba_backprop as nb
    from gradcheck.kernels.numba_exp import expm1_normal

    @njit(error_model="numpy")
    def both(x, m, t):
        one = x.dtype.type(1)
        for k in range(x.size):
            m[k] = expm1_normal(-abs(x[k]))
            t[k] = nb.tanh_of(x[k], one)

    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.normal(scale=3, size=100_000), np.logspace(-30, 0, 1000), -np.logspace(-30, 0, 1000),
        rng.uniform(lowest_normal, 0, size=10_000), [0.0, 1e-8, 0.35, 0.3466, 20.0, 500.0, -500.0],
    ]).astype(dtype)  # fmt: skip
    m, t = np.empty_like(x), np.empty_like(x)
    both(x, m, t)
    wide = x.astype(np.float64)

    def ulps(got, want):
        want = want.astype(dtype)
        spacing = np.spacing(np.abs(want)).astype(np.float64)
        return np.abs(got.astype(np.float64) - want.astype(np.float64)) / spacing

    inside = -np.abs(wide) >= lowest_normal
    expm1 = np.array([math.expm1(-abs(v)) for v in wide[inside]])
    assert ulps(m[inside], expm1).max() <= 2.0
    assert ulps(t, np.array([math.tanh(v) for v in wide])).max() <= 3.0
    assert m[x.size - 7] == 0.0  # e^0 − 1 exactly
    assert list(t[-2:]) == [1.0, -1.0]
    negated = np.empty_like(x)
    both(-x, m, negated)
    assert np.array_equal(negated, -t)  # odd, exactly


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
    nb.activate(nb.ACTIVATION_CODES["sigmoid"], got, b, True, np.empty(300, dtype))
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(want.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 6.0
    assert got[7, 5] == dtype(math.exp(v[7, 5]))  # subnormal, and exactly e^v


def test_training_allocates_nothing_per_step():
    """Numba's allocation counter reads the same for 10 steps as for 1000."""
    code = """
import numpy as np
from numba.core.runtime import rtsys
import gradcheck
from gradcheck.kernels import numba_dense as backend
from gradcheck.kernels import numba_backprop as nb
X, y = gradcheck.datasets.digits()
X, y = X[:200], y[:200]
net = gradcheck.Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce")
params = net.init(seed=0)
counts = []
for steps in (1, 1, 10, 1000):  # the first call loads the compiled code and starts the runtime
    ws = backend.Workspace(net, params, X)
    losses = np.empty(steps)
    before = rtsys.get_allocation_stats().alloc if counts else 0
    nb.wide_train_loop(ws.net, ws.theta, ws.X, y, 0.5, ws.buffers, losses)
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


# --- buffers kept between training calls ---------------------------------------------------------


def _digits_sized_run(seed: int, dtype: str = "float64"):
    """A 64-32-10 softmax network on 300 digits, 20 steps from the weights of ``seed``."""
    X, y = gradcheck.datasets.digits()
    X, y = X[:300].astype(dtype), y[:300].astype(dtype)
    net = gradcheck.Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce",
                            dtype=dtype)  # fmt: skip
    return net, net.init(seed=seed), X, y


def _trained_on_fresh_buffers(net, params, X, y, steps, lr):
    """`numba_backprop.wide_train_loop` on a workspace of its own, kept by no one."""
    from gradcheck.kernels import numba_backprop as nb
    from gradcheck.kernels import numba_dense as backend

    ws = backend.Workspace(net, params, X)
    losses = np.empty(steps, net.dtype)
    nb.wide_train_loop(ws.net, ws.theta, ws.X, y, net.np_dtype.type(lr), ws.buffers, losses)
    return [layer["W"] for layer in backend.as_params(net, ws.theta)], losses


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


def test_a_layer_list_s_training_call_on_kept_buffers_computes_what_fresh_buffers_do():
    """A CNN with dropout, trained from one set of weights, then another, then the first
    again on this thread's kept buffers (its convolution's phase images, pooled maxima and
    Dropout masks among them): the third run is the first to the bit, and so is a run on
    another thread, on buffers of its own."""
    from concurrent.futures import ThreadPoolExecutor

    from gradcheck.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D

    net = gradcheck.Network(
        [Conv2D(3, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten(), Dropout(0.25),
         Dense(4, "softmax")], input_shape=(6, 6, 2), loss="softmax_ce",
    )  # fmt: skip
    backend = gradcheck.get_backend("numba")
    X, y, first = random_problem(net, n_samples=40, seed=0)
    _, _, other = random_problem(net, n_samples=40, seed=1)
    runs = [backend.train(net, params, X, y, 5, 0.5) for params in (first, other, first)]
    with ThreadPoolExecutor(1) as pool:
        fresh = pool.submit(backend.train, net, first, X, y, 5, 0.5).result()
    assert not np.array_equal(runs[0].losses, runs[1].losses)
    for run in (runs[2], fresh):
        np.testing.assert_array_equal(run.losses, runs[0].losses)
        for got, want in zip(run.params, runs[0].params, strict=True):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_dense_layer_in_blocks_of_rows_agrees_with_numpy(dtype):
    """Below a convolution, whose kernels run on Numba's threads, a Dense layer of 600 rows
    runs in blocks of rows (`numba_rows`), its weight gradients summed per block: the gradients
    and a short training run agree with the NumPy backend's single products."""
    from gradcheck.kernels import numba_layers
    from gradcheck.layers import Conv2D, Dense, Flatten

    net = gradcheck.Network(
        [Conv2D(2, 3, activation="tanh"), Flatten(), Dense(6, "relu"), Dense(3, "softmax")],
        input_shape=(5, 5, 1), loss="softmax_ce", dtype=dtype,
    )  # fmt: skip
    assert numba_layers.row_blocks(net, 600) > 1
    X, y, params = random_problem(net, n_samples=600, seed=3)
    report = gradcheck.verify(net, X, y, params=params, backends=["numpy", "numba"], steps=5)
    report.assert_ok()
    assert {("numba", "gradient"), ("numba", "train params")} <= {
        (c.backend, c.quantity) for c in report.checks
    }


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
    from gradcheck.kernels import numba_dense as nb
    from gradcheck.kernels.numba_threads import KEPT_BUFFERS

    nets = [gradcheck.Network([3, w, 1]) for w in range(2, 3 + KEPT_BUFFERS)]
    first = nb.kept_buffers(nets[0], 5)
    assert nb.kept_buffers(nets[0], 5) is first
    assert nb.kept_buffers(nets[0], 6) is not first  # another batch size
    for net in nets[1:]:
        nb.kept_buffers(net, 5)
    assert nb.kept_buffers(nets[0], 5) is not first  # pushed out by KEPT_BUFFERS newer sizes


#: Trains a small CNN and a small LSTM — the layers whose kernels run on Numba's threads — from
#: two threads at once (or, with "alone", one run after the other) and prints each run's losses,
#: first weights and their gradient at the end, and the last layer's gradient, as hex, for runs
#: to be compared bit for bit (the LSTM's gradients are too small for a last bit of theirs to
#: move its weights).
_RUNS_FROM_THREADS = """
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import gradcheck
from gradcheck.layers import LSTM, Conv2D, Dense, Flatten, MaxPool2D

images, y = gradcheck.datasets.digits(images=True)
cnn = gradcheck.Network(
    [Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten(),
     Dense(10, activation="softmax")],
    loss="softmax_ce", input_shape=(8, 8, 1),
)
lstm = gradcheck.Network([LSTM(16), Dense(10, activation="softmax")], loss="softmax_ce",
                         input_shape=(8, 8))
jobs = [(net, X, seed) for net, X in ((cnn, images), (lstm, images[..., 0])) for seed in (0, 1)]
backend = gradcheck.get_backend("numba")
def train(job):
    net, X, seed = job
    run = backend.train(net, net.init(seed=seed), X[:400], y[:400], 5, 0.5)
    grads = backend.loss_and_grads(net, run.params, X, y)[1]  # the Dense layer's in row blocks
    return run.losses, run.params[0]["W"], grads[0]["W"], grads[-1]["W"]


if sys.argv[1] == "alone":
    runs = [train(job) for job in jobs]
else:
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(train, jobs))
for run in runs:
    print(*(a.tobytes().hex() for a in run))
"""


def _floats(hexed: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexed), np.float64)


def _runs(how: str, **env: str) -> list[str]:
    """The script's output, run with ``env`` and otherwise Numba's threads on every core: not
    an xdist worker's one (`conftest`), which the process would inherit."""
    inherited = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", _RUNS_FROM_THREADS, how],
        capture_output=True, text=True, env={**inherited, **env}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def runs_alone() -> list[str]:
    """The runs one after another on the default threading layer and both cores."""
    return _runs("alone")


@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_parallel_kernels_entered_from_two_threads_at_once(layer, runs_alone):
    """Numba's workqueue layer aborts the process when two threads enter it at once; the
    backend serialises its calls there, and lets them run together on OpenMP's. Either way each
    run computes what it computes alone (the kernels' blocks do not depend on the threads, nor
    on the layer) — up to a rounding: OpenBLAS, which the Dense layer calls, on one thread but
    from two at once, was seen to round a product's last bit differently."""
    together = _runs("together", NUMBA_THREADING_LAYER=layer)
    assert len(together) == len(runs_alone)
    for run, alone in zip(together, runs_alone, strict=True):
        for ours, theirs in zip(run.split(), alone.split(), strict=True):
            np.testing.assert_allclose(_floats(ours), _floats(theirs), rtol=1e-12, atol=1e-15)


def test_one_thread_and_two_give_the_same_numbers(runs_alone):
    """The samples are split into fixed blocks, each block's sums added in order, and BLAS
    keeps to one thread: a CNN or an LSTM trained on one Numba thread or two is the same to the
    bit."""
    assert _runs("alone", NUMBA_NUM_THREADS="1") == runs_alone


def test_a_process_forked_after_the_threads_started_trains_all_the_same():
    """GNU OpenMP's threads do not survive a fork, and Numba terminates a forked child that
    enters them; there the kernels run their blocks in turn, to the same numbers."""
    code = _RUNS_FROM_THREADS.split("if sys.argv[1]")[0] + (
        "import multiprocessing\n"
        "for job in (jobs[0], jobs[-1]):  # the CNN, the LSTM\n"
        "    mine = train(job)\n"
        "    with multiprocessing.get_context('fork').Pool(1) as pool:\n"
        "        child = pool.apply_async(train, (job,)).get(timeout=120)\n"
        "    for ours, theirs in zip(child, mine, strict=True):\n"
        "        assert np.array_equal(ours, theirs), (ours, theirs)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", ["unknown", "softmax"])
def test_a_simple_rnn_refuses_an_activation_it_cannot_apply_before_any_work(name):
    """An unknown code, or the softmax's (which takes a row, not an entry), raises before the
    recurrent layer's kernels write a state or an output."""
    nb = pytest.importorskip("gradcheck.kernels.numba_backprop")
    nr = pytest.importorskip("gradcheck.kernels.numba_recurrent")
    code = nb.ACTIVATION_CODES.get(name, len(nb.ACTIVATION_CODES))
    x, W, U, b = np.ones((4, 3, 2)), np.ones((2, 5)), np.ones((5, 5)), np.zeros(5)
    s, out = nr.steps(x.shape, 5, 1, x.dtype), np.full((4, 1, 5), 7.0)
    with pytest.raises(ValueError, match="unknown activation code" if name == "unknown" else name):
        nr.forward(False, code, x, W, U, b, s, out, False)
    assert (out == 7).all()
    assert not s.h.any()


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu", "identity", "softplus", "silu"])
@pytest.mark.parametrize(
    ("output", "loss"),
    [("sigmoid", "half_sse"), ("identity", "mse"), ("sigmoid", "bce"), ("softmax", "softmax_ce")],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_narrow_walk_computes_what_the_walk_over_views_does(hidden, output, loss, dtype):
    """A network too narrow for BLAS walks its layers by index (`narrow_evaluate`); the walk
    over views (`wide_evaluate`) computes the same sums in the same order, so the loss and every
    activation, δ and gradient are the same to the bit. Both are called through the compiled
    entries the backend calls, which make test has compiled already."""
    from gradcheck.kernels import numba_backprop as nb
    from gradcheck.kernels import numba_dense as backend

    rng = np.random.default_rng(0)
    net = gradcheck.Network([3, 5, 4, 2], activation=[hidden, hidden, output], loss=loss,
                            dtype=dtype)  # fmt: skip
    X = rng.normal(size=(6, 3)).astype(dtype)
    y = (rng.random((6, 2)) < 0.5).astype(dtype)
    if loss == "softmax_ce":
        y[:, 1] = 1 - y[:, 0]
    params = net.init(seed=1)
    N = len(X)
    assert nb.is_narrow.py_func(net.widths, N)  # the rule itself, not compiled on its own
    results = []
    for narrow in (True, False):
        ws = backend.Workspace(net, params, X)
        if narrow:
            value = nb.narrow_loss_and_grads(ws.net, ws.theta, ws.X.reshape(-1), N, y,
                                             ws.buffers)  # fmt: skip
        else:
            value = nb.wide_loss_and_grads(ws.net, ws.theta, ws.X, y, ws.buffers)
        b = ws.buffers
        results.append((np.array(value), b.acts.copy(), b.deltas.copy(), b.grad.copy()))
    for narrow, wide in zip(*results, strict=True):
        assert np.array_equal(narrow, wide)


def test_the_convolutions_file_lists_the_activation_codes_it_compiles_in():
    """Numba's cache checks only the file of each compiled function: the convolution's kernels,
    which compile in the activations' scalar forms, are recompiled after a new activation only
    because numba_conv.py lists the same codes and so changes with them."""
    nb = pytest.importorskip("gradcheck.kernels.numba_backprop")
    nc = pytest.importorskip("gradcheck.kernels.numba_conv")
    assert nc.ACTIVATION_NAMES == nb.ACTIVATION_NAMES
