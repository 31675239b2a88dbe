"""A Dense layer over fixed blocks of rows on Numba's threads, for the networks whose other
kernels run there too (`numba_layers` chooses; `numba_threads` keeps BLAS on one thread
meanwhile).

Each block is `numba_backprop`'s `dense_forward` or `dense_backward` on its rows: one BLAS
product per block and thread, where the whole batch was one product on one thread. ∂C/∂W and
∂C/∂b are summed per block, into ``parts[k]``, and the parts added in order
(`numba_blocks.add_blocks`), so that they do not depend on how many threads ran. A digits CNN's
output layer (1797 rows of 128 → 10) took 255 µs forward and 342 µs backward as one product,
float64, and 89 and 125 µs in four blocks on two threads.
"""

from __future__ import annotations

from numba import prange

from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels.numba_blocks import block_bounds, block_count, block_index, jit, parallel

#: A block holds at least this many rows: fewer make products too small to pay for a thread.
SMALLEST_BLOCK = 256


@parallel
def dense_forward(activation, a_prev, W, b, bias, last, z, kept, log_norm):
    """`nb.dense_forward`, each block of rows (`numba_blocks.block_count`) on a thread."""
    blocks = block_count(a_prev.shape[0], SMALLEST_BLOCK)
    for k in prange(blocks):
        dense_forward_block(activation, a_prev, W, b, bias, last, z, kept, log_norm,
                            block_index(k), blocks)  # fmt: skip


@jit
def dense_forward_block(activation, a_prev, W, b, bias, last, z, kept, log_norm, k, blocks):
    """`dense_forward` on block k of the rows."""
    start, stop = block_bounds(k, blocks, a_prev.shape[0])
    nb.dense_forward(activation, a_prev[start:stop], W, b, bias, last, z[start:stop],
                     kept[start:stop], log_norm[start:stop])  # fmt: skip


@parallel
def dense_backward(activation, turn, z, a, grad, x, bias, dW_parts, db_parts, W, input_grad,
                   below):  # fmt: skip
    """`nb.dense_backward`, each block of rows on a thread, its ∂C/∂W and ∂C/∂b into
    dW_parts[k] and db_parts[k] (`numba_blocks.block_sums`)."""
    blocks = dW_parts.shape[0]
    for k in prange(blocks):
        dense_backward_block(activation, turn, z, a, grad, x, bias, dW_parts, db_parts, W,
                             input_grad, below, block_index(k), blocks)  # fmt: skip


@jit
def dense_backward_block(activation, turn, z, a, grad, x, bias, dW_parts, db_parts, W,
                         input_grad, below, k, blocks):  # fmt: skip
    """`dense_backward` on block k of the rows."""
    start, stop = block_bounds(k, blocks, x.shape[0])
    nb.dense_backward(activation, turn, z[start:stop], a[start:stop], grad[start:stop],
                      x[start:stop], bias, dW_parts[k], db_parts[k], W, input_grad,
                      below[start:stop])  # fmt: skip
