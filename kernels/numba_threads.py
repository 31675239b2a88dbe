"""The terms on which the Numba kernels use threads (`numba_layers` calls them through these).

Numba's parallel kernels (``prange``) run on its threading layer. Three things about it matter
to a library that others call:

- **BLAS on one thread meanwhile** (`one_thread_pool`). OpenBLAS's own threads spin for a while
  after each product, on the cores Numba's threads need: that made a digits-CNN step 1.7 times
  slower. threadpoolctl limits BLAS while a kernel runs, scoped, and counted across threads so
  that calls from several at once restore it once, when the last one leaves. A network with no
  kernel on Numba's threads (no Conv2D or recurrent layer) keeps BLAS's threads: a digits_norm
  step in float64 took 203 µs with BLAS on one thread, 175 µs on two.
- **Calls from several threads at once** (`on_numba_threads`). Numba takes TBB where its library
  is found (pip installs none), then OpenMP, then its own workqueue. OpenMP may be entered from
  several threads at once; the workqueue aborts the process when it is, so there — and before
  Numba has chosen, at the first parallel loop — calls take turns.
- **Buffers kept per thread** (`kept`). A training call returns none of its buffers, so the
  next call of the same sizes on the same thread may reuse them: first touching the megabytes
  of a fresh allocation costs a short call more than a step does.
- **A forked process** (`launch`). GNU OpenMP's threads do not survive a fork, and Numba
  terminates a child that enters them; in a process forked after the kernels had started them,
  a kernel's blocks run one after another, which computes the same numbers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from gradcheck.layers import Conv2D, Recurrent

_pool_lock = threading.Lock()
_pool_users = 0
_pool_limit: Any = None


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's handle on the BLAS libraries loaded — NumPy's and the SciPy one Numba's
    ``np.dot`` calls — made once: finding them takes a millisecond, limiting them then 20 µs."""
    import scipy.linalg.cython_blas  # noqa: F401 - loaded, so that it is found
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_thread_pool() -> Iterator[None]:
    """BLAS on one thread while inside, restored when the last of the threads inside leaves (so
    that calls from several threads at once do not restore each other's limits). Meanwhile a
    NumPy product elsewhere in the process runs on one thread too."""
    global _pool_users, _pool_limit
    with _pool_lock:
        if _pool_users == 0:
            _pool_limit = _blas_controller().limit(limits=1, user_api="blas")
        _pool_users += 1
    try:
        yield
    finally:
        with _pool_lock:
            _pool_users -= 1
            if _pool_users == 0:
                _pool_limit.restore_original_limits()


_serial = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Training calls keep the buffers of this many recent sizes (networks, batch sizes) per thread.
KEPT_BUFFERS = 4
_kept = threading.local()


def kept(key: Hashable, make: Callable[[], T]) -> T:
    """What ``make()`` made for ``key`` on this thread's last call with that key, or a new one;
    the `KEPT_BUFFERS` keys this thread used last are kept."""
    made: OrderedDict = _kept.__dict__.setdefault("made", OrderedDict())
    if key not in made:
        made[key] = make()
        if len(made) > KEPT_BUFFERS:
            made.popitem(last=False)  # the least recently used
    made.move_to_end(key)
    return made[key]


def _serialised() -> Any:
    """A lock when Numba's threading layer is its workqueue, which aborts the process when
    entered from two threads at once, or not yet chosen (Numba chooses at the first parallel
    loop: OpenMP where it is found, else the workqueue; TBB is not installed); else nothing."""
    import numba

    try:
        safe = numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel loop has run yet
        safe = False
    return contextlib.nullcontext() if safe else _serial


def runs_on_numba_threads(net: Any) -> bool:
    """Whether ``net`` has layers whose kernels run on Numba's threads: Conv2D, SimpleRNN and
    LSTM layers."""
    return any(isinstance(layer, Conv2D | Recurrent) for layer in net.stack)


def on_numba_threads(function: F) -> F:
    """Run ``function(net, ...)`` inside `one_thread_pool`, one thread at a time where the
    threading layer needs it (`_serialised`), when ``net`` has layers whose kernels run on
    Numba's threads (Conv2D, SimpleRNN, LSTM); a network without them keeps BLAS's threads for
    its products."""

    @functools.wraps(function)
    def wrapped(net: Any, *args: Any, **kwargs: Any) -> Any:
        if not runs_on_numba_threads(net):
            return function(net, *args, **kwargs)
        with _serialised(), one_thread_pool():
            return function(net, *args, **kwargs)

    return wrapped  # type: ignore[return-value]


#: The process whose kernels last ran on Numba's threads.
_threads_started_in: int | None = None


def launch(kernel: Any, block: Any, blocks: int, *args: Any) -> None:
    """``kernel(*args)`` on Numba's threads, over its ``blocks`` blocks of samples. In a process
    forked from one whose kernels had started them, OpenMP's threads are gone and entering them
    terminates the process; there, ``block(*args, k, blocks)`` for each block in turn, which
    computes the same numbers."""
    global _threads_started_in
    if _threads_started_in in (None, os.getpid()):
        _threads_started_in = os.getpid()
        kernel(*args)
        return
    for k in range(blocks):
        block(*args, k, blocks)
