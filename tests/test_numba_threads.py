"""A batch split over threads (`numba_threads`): the same training as one thread, to the rounding
of sums grouped by share, bit-identical run to run, and threads that meet at a barrier."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers import DTYPES, in_turn

import gradcheck

pytestmark = pytest.mark.skipif(
    "numba" not in gradcheck.available_backends(), reason="numba is not installed"
)

NETWORKS = [
    ([64, 32, 10], ["sigmoid", "softmax"], "softmax_ce", True),
    ([64, 24, 16, 3], ["tanh", "relu", "sigmoid"], "bce", True),
    ([64, 20, 2], ["softplus", "identity"], "mse", False),
    ([64, 8, 1], ["sigmoid", "sigmoid"], "half_sse", True),
]
#: After 20 steps from the same weights, one thread and a split agree to this distance relative
#: to the largest element: the split only regroups sums. Measured over these networks, seeds 0-2
#: and 2 or 3 threads: at most 2.2e-15 in float64 and 1.2e-6 in float32.
AGREE = {"float64": 1e-13, "float32": 1e-5}


def _run(widths, activations, loss, bias, dtype, samples=600, seed=0):
    X, y = gradcheck.datasets.digits()
    net = gradcheck.Network(widths, activation=activations, loss=loss, bias=bias, dtype=dtype)
    X = X[:samples].astype(dtype)
    if loss != "softmax_ce":
        y = np.random.default_rng(seed).uniform(size=(samples, widths[-1]))
    return net, net.init(seed=seed), X, y[:samples].astype(dtype)


def _distance(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _each_network_once(p):
    """The default slice: each network once, the dtype and the number of threads in turn."""
    return (p["dtype"], p["threads"]) == in_turn(NETWORKS.index(p["network"]), DTYPES, (2, 3))


@pytest.mark.sweep(keep=_each_network_once)
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("network", NETWORKS, ids=[n[2] for n in NETWORKS])
def test_a_split_batch_trains_as_one_thread_does(network, dtype, threads):
    from gradcheck.kernels import numba_backprop as nb
    from gradcheck.kernels import numba_threads as nt

    net, params, X, y = _run(*network, dtype)
    steps, lr = 20, 0.5
    ws = nb.Workspace(net, params, X)
    losses = np.empty(steps, dtype)
    nb.train_loop(nb.LOSS_CODES[net.loss], ws.activations, ws.widths, ws.theta, net.bias, ws.X,
                  y, net.np_dtype.type(lr), *ws.buffers, losses)  # fmt: skip
    split = nt.train(net, params, X, y, steps, lr, threads)
    assert split.losses.dtype == dtype
    assert _distance(split.losses, losses) <= AGREE[dtype]
    for layer, one_thread in zip(split.params, nb.as_params(net, ws.theta), strict=True):
        assert layer["W"].dtype == dtype
        assert _distance(layer["W"], one_thread["W"]) <= AGREE[dtype]
        if net.bias:
            assert _distance(layer["b"], one_thread["b"]) <= AGREE[dtype]
    assert not np.array_equal(split.params[0]["W"], params[0]["W"])  # it trained
    again = nt.train(net, params, X, y, steps, lr, threads)
    assert np.array_equal(again.losses, split.losses)
    for layer, layer_again in zip(split.params, again.params, strict=True):
        assert all(np.array_equal(layer[k], layer_again[k]) for k in layer)


def test_the_backend_splits_a_large_batch_over_numba_s_threads(monkeypatch):
    """One thread per ``NUMBA_NUM_THREADS``, each with at least MIN_ROWS rows; the backend's
    training call takes the split when there are two or more, and puts BLAS's threads back."""
    import numba
    from threadpoolctl import threadpool_info

    from gradcheck.kernels import numba_threads as nt

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 4)
    assert [nt.threads_for(n) for n in (1, 511, 512, 1000, 5000)] == [1, 1, 2, 3, 4]
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    net, params, X, y = _run(*NETWORKS[0], "float64")
    before = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    trained = gradcheck.get_backend("numba").train(net, params, X, y, 5, 0.5)
    split = nt.train(net, params, X, y, 5, 0.5, 2)
    assert np.array_equal(trained.losses, split.losses)
    after = [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]
    assert [pool for pool in after if pool in before] == before


def test_split_calls_from_several_threads_at_once_each_get_what_they_get_alone():
    """Four user threads train from different weights at the same time, each call split in two;
    each gets what it gets alone, and BLAS has its threads back afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    from gradcheck.kernels import numba_threads as nt

    runs = [_run(*NETWORKS[0], "float64", seed=seed) for seed in range(4)]
    alone = [nt.train(*run, 30, 0.5, 2).losses for run in runs]
    before = [pool["num_threads"] for pool in threadpool_info()]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda run: nt.train(*run, 30, 0.5, 2).losses, runs * 3))
    for i, losses in enumerate(together):
        assert np.array_equal(losses, alone[i % len(runs)])
    assert [pool["num_threads"] for pool in threadpool_info()] == before


@pytest.mark.parametrize("threads", [0, 601])
def test_a_split_needs_between_one_thread_and_one_per_sample(threads):
    from gradcheck.kernels import numba_threads as nt

    net, params, X, y = _run(*NETWORKS[0], "float64")
    with pytest.raises(
        ValueError, match=rf"threads must be between 1 and the 600 samples, got {threads}"
    ):
        nt.train(net, params, X, y, 5, 0.5, threads)


def test_threads_meet_at_the_barrier_in_every_round():
    """Three threads each add the round's number to their slot and meet; then each checks that
    every slot holds the sum so far, and they meet again before the next round. A barrier that
    let a thread through early would let it see a slot a round behind, or ahead."""
    from numba import njit

    from gradcheck.kernels import numba_threads as nt

    @njit(nogil=True)
    def rounds(me, counter, slots, seen, n):
        parties = slots.shape[0]
        for r in range(1, n + 1):
            slots[me] += r
            nt.arrive(counter, (2 * r - 1) * parties)
            for p in range(parties):
                if slots[p] != r * (r + 1) // 2:
                    seen[me] += 1
            nt.arrive(counter, 2 * r * parties)

    counter, slots, seen = np.zeros(2, np.int64), np.zeros(3, np.int64), np.zeros(3, np.int64)
    n = 2000
    workers = [
        threading.Thread(target=rounds, args=(me, counter, slots, seen, n)) for me in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert list(slots) == [n * (n + 1) // 2] * 3
    assert list(seen) == [0, 0, 0]
    assert counter[0] == 2 * n * 3


def test_a_failed_thread_releases_the_others():
    from numba import njit

    from gradcheck.kernels import numba_threads as nt

    @njit(nogil=True)
    def wait(counter, total):
        return nt.arrive(counter, total)

    counter = np.array([0, 0], np.int64)
    assert wait(counter, 1)  # the last to arrive goes straight through
    assert counter[0] == 1
    counter[nt.FAILED] = 1
    assert not wait(counter, 3)  # nobody else will come: released by the failure


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_process_forked_after_a_split_call_splits_with_threads_of_its_own():
    """multiprocessing forks on Linux: the child inherits the parent's pool of helper threads
    but not its threads, and must start its own rather than wait on them. In a process of its
    own, which no other framework's threads share (JAX warns at every fork)."""
    code = """
import multiprocessing
import numpy as np
import gradcheck
from gradcheck.kernels import numba_threads as nt

def split_losses():
    X, y = gradcheck.datasets.digits()
    net = gradcheck.Network([64, 32, 10], activation=["sigmoid", "softmax"], loss="softmax_ce")
    return nt.train(net, net.init(seed=0), X[:600], y[:600], 5, 0.5, 2).losses

if __name__ == "__main__":
    parent = split_losses()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(split_losses).get(timeout=300)
    print(np.array_equal(child, parent))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
