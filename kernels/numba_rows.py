"""A Dense layer's products over fixed blocks of rows on Numba's threads, for the networks
whose other kernels run there too (`numba_layers` chooses; `numba_threads` keeps BLAS on one
thread meanwhile).

Each block is one BLAS product per thread, where the whole batch was one product on one
thread; the activation and its derivative stay `numba_backprop`'s, over all the rows. ∂C/∂W and
∂C/∂b are summed per block, into ``parts[k]``, and the parts added in order
(`numba_blocks.add_blocks`), so that they do not depend on how many threads ran. The digits
CNN's output layer (1797 rows of 128 → 10, softmax) took 255 µs forward and 342 µs backward
with one product each, float64, and 135 and 162 µs with its products in blocks on two threads.
The kernels call nothing but the products, which keeps their compiling short (a parallel kernel
compiles what it calls once more): 4 s a dtype, where blocks that ran the whole of
`nb.dense_forward` and `nb.dense_backward`, the activations included, took 10 s and saved
another 50 µs a step.
"""

from __future__ import annotations

from numba import prange

from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels.numba_blocks import block_bounds, block_count, block_index, jit, parallel

#: A block holds at least this many rows: fewer make products too small to pay for a thread.
SMALLEST_BLOCK = 256


@parallel
def pre_activation(a_prev, W, z):
    """z ← a_{l-1} W_l (`nb.pre_activation`), each block of rows (`numba_blocks.block_count`)
    on a thread."""
    blocks = block_count(a_prev.shape[0], SMALLEST_BLOCK)
    for k in prange(blocks):
        pre_activation_block(a_prev, W, z, block_index(k), blocks)


@jit
def pre_activation_block(a_prev, W, z, k, blocks):
    """`pre_activation` on block k of the rows."""
    start, stop = block_bounds(k, blocks, a_prev.shape[0])
    nb.matmul(a_prev[start:stop], W, z[start:stop])


@parallel
def grads(x, delta, bias, dW_parts, db_parts, W, input_grad, below):
    """From δ (N, n_l): block k's ∂C/∂W_l and ∂C/∂b_l into dW_parts[k] and db_parts[k]
    (`numba_blocks.block_sums`), and with ``input_grad`` ∂C/∂a_{l-1} = δ W_lᵀ into below."""
    blocks = dW_parts.shape[0]
    for k in prange(blocks):
        grads_block(x, delta, bias, dW_parts, db_parts, W, input_grad, below, block_index(k),
                    blocks)  # fmt: skip


@jit
def grads_block(x, delta, bias, dW_parts, db_parts, W, input_grad, below, k, blocks):
    """`grads` on block k of the rows."""
    start, stop = block_bounds(k, blocks, x.shape[0])
    nb.layer_grads(x[start:stop], delta[start:stop], bias, dW_parts[k], db_parts[k])
    if input_grad:
        nb.matmul_nt(delta[start:stop], W, below[start:stop])
