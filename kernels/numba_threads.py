"""Full-batch training with the batch's rows split over threads.

On a large batch a step is products, which BLAS spreads over the cores, and element-wise work —
the sigmoid's exponentials, the softmax, σ′ — which runs on one core while the others wait.
Splitting the batch instead keeps every core on all of the work. Each of the P threads runs the
whole step of `numba_backprop` on its own share of the rows, with BLAS on one thread:

    thread p:   C_p = Σ_{i in share p} C_i / N,   ∂C_p/∂W,  ∂C_p/∂b     (N rows in the batch)
                ─── all threads meet ───
    thread 0:   C = Σ_p C_p,   ∂C/∂W = Σ_p ∂C_p/∂W,   W ← W − η ∂C/∂W,  likewise b
                ─── all threads meet ───

The sums over p run in a fixed order, so a run is bit-identical to the next with the same number
of threads. It is not bit-identical to the one-thread loop: the sums over rows are grouped by
share, and BLAS sums the shorter products in its own order.

The threads meet at a barrier on a shared counter that each increments atomically on arrival
(`arrive`); a thread waits, spinning, until the count reaches the meeting's total, and after a
while it yields its core at each look, so a busy machine is not made busier. A thread that fails
sets the counter's second slot, which releases the others.

During the call every BLAS library in the process runs on one thread (threadpoolctl), which is
put back when the call returns.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from gradcheck.backends import Trajectory
from gradcheck.kernels import numba_backprop as nb
from gradcheck.network import Network, Params
from gradcheck.ops import lookup

#: A thread takes at least this many rows. Digits in float32, 10-step calls: 256 rows took 187 µs
#: a step split in two against 139 on one thread, 512 rows 186 against 228.
MIN_ROWS = 256
#: Looks at the counter before a waiting thread starts yielding its core at each look.
SPINS = 1 << 14
#: The counter's slots: arrivals so far, and whether a thread failed.
ARRIVED, FAILED = 0, 1

jit = njit(cache=True, nogil=True, inline="always", error_model="numpy")


@intrinsic
def atomic_increment(typingctx, counter, slot):
    """counter[slot] += 1 as one atomic instruction, sequentially consistent: whatever the thread
    wrote before it is seen by a thread that reads the new count."""
    if counter != types.Array(types.int64, 1, "C"):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        builder.atomic_rmw("add", pointer, ir.Constant(ir.IntType(64), 1), "seq_cst")
        return context.get_dummy_value()

    return types.none(counter, types.intp), codegen


@intrinsic
def atomic_read(typingctx, counter, slot):
    """counter[slot], read atomically and not hoisted out of a loop that waits on it."""
    if counter != types.Array(types.int64, 1, "C"):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        return builder.load_atomic(pointer, "seq_cst", 8)

    return types.int64(counter, types.intp), codegen


@intrinsic
def yield_core(typingctx):
    """sched_yield(): let another runnable thread have this core."""

    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"
        )
        builder.call(function, [])
        return context.get_dummy_value()

    return types.none(), codegen


@jit
def arrive(counter, total):
    """Count this thread in and wait until ``total`` arrivals; False if a thread failed."""
    atomic_increment(counter, ARRIVED)
    spins = 0
    while atomic_read(counter, ARRIVED) < total:
        if atomic_read(counter, FAILED) != 0:
            return False
        spins += 1
        if spins > SPINS:
            yield_core()
    return True


@jit
def add_into(total, share):
    """total += share, element by element; both C-contiguous of one shape."""
    flat, other = total.reshape(total.size), share.reshape(share.size)
    for i in range(flat.shape[0]):
        flat[i] += other[i]


@njit(cache=True, nogil=True, error_model="numpy")
def train_share(
    share, counter, loss_code, activations, widths, theta, bias, X, y, samples, lr, acts, logits,
    log_norm, deltas, grads, share_losses, losses,
):  # fmt: skip
    """Thread ``share``'s part of ``len(losses)`` steps on θ, shared by all threads: its rows
    are X and y, of ``samples`` in the batch; grads[p] is share p's gradient."""
    shares = grads.shape[0]
    for t in range(losses.shape[0]):
        share_losses[share] = nb.loss_and_grads_into(
            loss_code, activations, widths, theta, bias, X, y, samples, acts, logits, log_norm,
            deltas, grads[share],
        )  # fmt: skip
        if not arrive(counter, (2 * t + 1) * shares):
            return
        if share == 0:  # the others wait while thread 0 sums the shares and steps
            losses[t] = share_losses[0]
            for p in range(1, shares):
                losses[t] += share_losses[p]
                add_into(grads[0], grads[p])
            nb.descend(theta, grads[0], lr)
        if not arrive(counter, (2 * t + 2) * shares):
            return


# --- the Python boundary -------------------------------------------------------------------------


def threads_for(samples: int) -> int:
    """How many threads train a batch of ``samples`` rows: one per Numba thread
    (``NUMBA_NUM_THREADS``, one per core unless set), each with at least `MIN_ROWS` rows; one
    where the system cannot yield a core (no ``os.sched_yield``)."""
    if not hasattr(os, "sched_yield"):
        return 1
    return max(1, min(numba.config.NUMBA_NUM_THREADS, samples // MIN_ROWS))  # type: ignore[attr-defined]


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float, threads: int
) -> Trajectory:
    """``steps`` gradient-descent steps on a copy of ``params``, the rows of X and y split over
    ``threads`` threads; the calling thread is one of them."""
    if not 1 <= threads <= len(X):
        raise ValueError(f"threads must be between 1 and the {len(X)} samples, got {threads}")
    theta = nb.flat_weights(net, params)
    X, y = np.ascontiguousarray(X), np.ascontiguousarray(y)
    cuts = [len(X) * p // threads for p in range(threads + 1)]
    rows = [slice(start, end) for start, end in itertools.pairwise(cuts)]
    kept = [nb.kept_buffers(net, r.stop - r.start, share) for share, r in enumerate(rows)]
    grads = np.empty((threads, theta.size), net.np_dtype)
    counter = np.zeros(2, np.int64)
    share_losses = np.empty(threads, net.np_dtype)
    losses = np.empty(steps, net.np_dtype)
    loss_code, activations = lookup(nb.LOSS_CODES, net.loss, "loss"), nb._activation_codes(net)
    widths = np.array(net.widths, np.int64)
    lr = net.np_dtype.type(lr)

    def run(share: int) -> None:
        b = kept[share]
        try:
            train_share(share, counter, loss_code, activations, widths, theta, net.bias,
                        X[rows[share]], y[rows[share]], len(X), lr, b.acts, b.logits, b.log_norm,
                        b.deltas, grads, share_losses, losses)  # fmt: skip
        except BaseException:
            counter[FAILED] = 1  # release the threads waiting for this one
            raise

    with _one_thread_blas:
        helpers = [_pool(threads - 1).submit(run, share) for share in range(1, threads)]
        try:
            run(0)
        finally:
            for helper in helpers:
                helper.result()
    return Trajectory(nb.as_params(net, theta), losses)


@functools.cache
def _pool(helpers: int) -> ThreadPoolExecutor:
    """``helpers`` threads, started on first use and kept: every thread of a call but the
    caller. Each must have its own, or a share would wait for a thread waiting for it."""
    return ThreadPoolExecutor(helpers, "gradcheck-numba")


if hasattr(os, "register_at_fork"):  # a forked process has none of its parent's threads
    os.register_at_fork(after_in_child=_pool.cache_clear)


class _OneThreadBLAS:
    """A context in which every BLAS library in the process runs on one thread. Calls from
    several threads at once share it: the first in sets the limit, the last out puts back
    what the libraries had (threadpoolctl)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._limiter: Any = None  # threadpoolctl's limiter, while anyone is inside

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._limiter = _blas().limit(limits=1, user_api="blas")
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                self._limiter.restore_original_limits()


@functools.cache
def _blas():  # -> threadpoolctl.ThreadpoolController
    """The process's BLAS libraries, found once: Numba's products call SciPy's."""
    import scipy.linalg.cython_blas  # noqa: F401 -- loads the library Numba's np.dot uses
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_one_thread_blas = _OneThreadBLAS()
