"""The samples of a batch split into fixed blocks, for the kernels that run on Numba's threads
(``prange``): the convolution's (`numba_conv`) and the recurrent layers' (`numba_recurrent`).

A parallel kernel runs ``for k in prange(blocks)``, each block k worked through by one thread
with scratch of its own. How many blocks a batch makes depends on its size alone, never on the
threads; a sum over the samples is summed per block, into ``parts[k]``, and the blocks' sums are
then added in order (`add_blocks`). So a kernel computes the same numbers on one thread or many,
and when its blocks run one after another (`numba_threads.launch`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

jit = njit(cache=True, nogil=True, error_model="numpy")
parallel = njit(cache=True, nogil=True, error_model="numpy", parallel=True)
inline = njit(cache=True, nogil=True, inline="always", error_model="numpy")

#: A batch makes at most this many blocks.
BLOCKS = 16


@jit
def block_count(n_samples, smallest):
    """How many blocks n samples make, none of fewer than ``smallest`` samples (one block if
    there are fewer), and at most `BLOCKS`."""
    return min(BLOCKS, max(n_samples // smallest, 1))


@inline
def block_bounds(k, blocks, n_samples):
    """The first and one past the last sample of block k."""
    return k * n_samples // blocks, (k + 1) * n_samples // blocks


@inline
def block_index(k):
    """A prange index as the int64 a block function takes. Numba types a parallel loop's body
    twice, its index first as int64 and then, as the loop becomes parallel, as uint64: each
    type would compile the block function (and all it calls) once more."""
    return np.int64(k)


def block_sums(out: np.ndarray, blocks: int) -> np.ndarray:
    """Zeroed room for the blocks' partial sums, each shaped like ``out``."""
    return np.zeros((blocks, *out.shape), out.dtype)


@jit
def add_blocks(parts, out):
    """out = parts[0] + parts[1] + …, added in that order (a block's sums at a time, in a loop
    that vectorises)."""
    flat, each = out.reshape(out.size), parts.reshape((parts.shape[0], out.size))
    for i in range(out.size):  # not flat[:] = each[0]: see `numba_backprop.copy_rows`
        flat[i] = each[0, i]
    for k in range(1, parts.shape[0]):
        part = each[k]
        for i in range(out.size):
            flat[i] += part[i]
