"""The convolution and pooling kernels of ``numpy_conv``, compiled with Numba.

The names and equations are ``numpy_conv``'s; each kernel writes into the arrays it is given.
Inputs arrive padded, as in ``numpy_conv`` (`numpy_conv.pad`).

The convolution's two kernels, `conv2d` and `conv2d_backward`, run over the samples with
``prange``, in `numba_blocks`'s fixed blocks of samples (``*_block``, which a process that cannot
use the threads calls in turn: `numba_threads`), a weight gradient summed per block and the
blocks' sums added in order, so that its value does not depend on how many threads ran. Inside
the loops over entries nothing makes a view: a view counts a reference on its array, and two
threads counting on one array wait on each other; the activation's kernels take a view of a
group's rows, one per group of samples. The activation, its derivative and a pooling layer
right after the convolution run inside the same kernels, on each block while its images are in
cache; a pooling layer elsewhere runs alone, on one thread (`pool_rows`, `pool_grad_rows`).

The convolution is organised for long loops. A loop over a filter's 8 outputs, or a row's 8
positions, spends more on starting than on arithmetic; so each sample's padded input is first
split into its s² *phase images*, one row of ``xp`` for each (a, b, c) holding rows h·s + a and
columns w·s + b of channel c, and a group of samples' phase images are laid end to end, sample
g's at g·Hq·Wq (Hq × Wq being a phase image's size, `GROUP_POSITIONS` in all). Every output
position (g, i, j) is numbered t = g·Hq·Wq + i·Wq + j. Then kernel position (p, q) meets, for
every t at once, the run

    xp[(p mod s, q mod s, c), t + (p ÷ s)·Wq + q ÷ s],  t < span = (G − 1)·Hq·Wq + (Ho − 1)·Wq + Wo,

so each (o, p, q, c) is one loop over all of a group's positions — including the gap positions
at the end of each row and of each sample, which are computed and never read. The three sums
are then (``acc`` and ``d`` channels first, numbered by t like the outputs, d zero at the
gaps):

    z[n,i,j,o]     = b[o] + Σ_{p,q,c} W[p,q,c,o] xp[…, t + …]           conv2d_group
    ∂C/∂W[p,q,c,o] = Σ_groups Σ_t xp[…, t + …] d[o, t]                 conv2d_grads_group
    ∂C/∂xp[…, t + …] += W[p,q,c,o] d[o, t]                             conv2d_input_grad_group

The activation, and δ = ∂C/∂a ⊙ f′, are `numba_backprop`'s array kernels
(`nb.activate_entries`, `nb.activation_backward`) on a group's rows of z and δ at once: their
loops each run one activation, in vector registers, where a choice of activation per entry ran
none (the forward over all 1797 digits took 3.0 ms with relu chosen by entry, float64, one
thread, and 2.3 ms now).

Max pooling keeps the position of each window's first maximum, so its gradient routes δ without
searching the window again.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numba import njit, prange

from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels.numba_blocks import block_bounds, block_count, block_index, parallel

jit = njit(cache=True, nogil=True, error_model="numpy")
inline = njit(cache=True, nogil=True, inline="always", error_model="numpy")
#: For the sums over a sample's positions: LLVM may add them in any order (so, in vector
#: registers); the order is fixed for the compiled code, whatever the threads.
reassociating = njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})

#: A block may be a single sample: a sample's convolution is work enough for a thread.
SMALLEST_BLOCK = 1
#: `numba_backprop.ACTIVATION_NAMES`, whose codes these kernels compile in (through
#: `nb.activate_entries` and `nb.activation_backward`): Numba's cache checks only this file, so a
#: new activation must change it too, and with it the cached kernels (a test holds the two equal).
ACTIVATION_NAMES = (
    "sigmoid", "tanh", "relu", "identity", "softplus", "softmax", "silu", "gelu", "gelu_tanh"
)  # fmt: skip
#: A block's samples are worked through in groups whose phase images, end to end, make about
#: this many positions: long loops, and a group's scratch in the core's own cache.
GROUP_POSITIONS = 1024


@inline
def phase_width(x, stride):
    """Wq: the width of a phase image of the padded x, ⌈Wp / s⌉."""
    return (x.shape[2] + stride - 1) // stride


@inline
def phase_size(x, stride):
    """Hq·Wq: the positions of a phase image of the padded x, a sample's slot in a group."""
    return ((x.shape[1] + stride - 1) // stride) * phase_width(x, stride)


@inline
def group_size(slot):
    """How many samples a group lays end to end: about `GROUP_POSITIONS` positions, at least
    one sample."""
    return max(1, GROUP_POSITIONS // slot)


@inline
def phase_row(p, q, c, stride, channels):
    """The row of the phase scratch that kernel position (p, q) meets in channel c."""
    return ((p % stride) * stride + q % stride) * channels + c


@inline
def shifted(shift, t):
    """shift + t as an unsigned index: Numba then skips the check for a negative index, which
    keeps the loops over t from vectorising."""
    return np.uint64(shift) + np.uint64(t)


@inline
def group_span(count, slot, width, rows, cols):
    """The positions t a group of ``count`` samples spans: to the last one's last output."""
    return (count - 1) * slot + (rows - 1) * width + cols


@jit
def phase_scratch(x, stride, group):
    """Zeroed room for a group's phase images (s·s·C, group·Hq·Wq), entries beyond x
    staying 0."""
    return np.zeros((stride * stride * x.shape[3], group * phase_size(x, stride)), x.dtype)


@jit
def split_phases(x, n, stride, xp, offset):
    """xp[(a·s + b)·C + c, offset + h·Wq + w] = x[n, h·s + a, w·s + b, c], a phase row at a
    time, the columns innermost (a loop over the channels innermost, one entry long for the
    digits, made the copy 2.3 times as slow)."""
    _, rows, cols, channels = x.shape
    width = phase_width(x, stride)
    for a in range(stride):
        for b in range(stride):
            for c in range(channels):
                row = (a * stride + b) * channels + c
                for h in range((rows - a + stride - 1) // stride):
                    for w in range((cols - b + stride - 1) // stride):
                        xp[row, offset + h * width + w] = x[n, h * stride + a, w * stride + b, c]


@jit
def join_phases(xp, offset, stride, n, dx):
    """dx[n, h·s + a, w·s + b, c] = xp[(a·s + b)·C + c, offset + h·Wq + w]: `split_phases`
    undone, in its order."""
    _, rows, cols, channels = dx.shape
    width = phase_width(dx, stride)
    for a in range(stride):
        for b in range(stride):
            for c in range(channels):
                row = (a * stride + b) * channels + c
                for h in range((rows - a + stride - 1) // stride):
                    for w in range((cols - b + stride - 1) // stride):
                        dx[n, h * stride + a, w * stride + b, c] = xp[row, offset + h * width + w]


@jit
def conv2d_group(xp, W, b, stride, width, span, acc):
    """acc[o, t] = b[o] + Σ_{p,q,c} W[p,q,c,o] xp[(p, q, c)'s phase row, t + (p÷s)·Wq + q÷s]."""
    kh, kw, n_in, n_out = W.shape
    for o in range(n_out):
        for t in range(span):
            acc[o, t] = b[o]
        for p in range(kh):
            for q in range(kw):
                shift = (p // stride) * width + q // stride
                for c in range(n_in):
                    w, row = W[p, q, c, o], phase_row(p, q, c, stride, n_in)
                    for t in range(span):
                        acc[o, t] += w * xp[row, shifted(shift, t)]


#: The pooling a `conv2d` call also does, by code: none, or that of the layer after it.
Pool = IntEnum("Pool", ["none", "max", "avg"], start=0)


def no_pool(dtype: np.dtype) -> tuple:
    """The pooling arguments of `conv2d` and `conv2d_backward` for a convolution followed by
    no pool: the code, a size and stride of 1, and empty stand-ins for the pooled images and
    their first maxima."""
    return Pool.none, 1, 1, np.empty((0,) * 4, dtype), np.empty((0,) * 4, np.int64)


@parallel
def conv2d(x, W, b, stride, activation, keep, kept, z, pool, size, pool_stride, pooled, first):
    """z[n,i,j,o] = f(Σ_{p,q,c} x[n, i·s+p, j·s+q, c] W[p,q,c,o] + b[o]) on a padded x (b of
    zeros: no bias), f by its activation code (not the softmax); with ``keep``, kept (like z)
    ← the sum before f, which f′ reads. With a `Pool` other than none, also pooled ← z pooled
    (windows of ``size`` at ``pool_stride``; ``first`` as `max_pool` keeps it), while z is in
    cache."""
    nb.check_entrywise(activation)
    blocks = block_count(z.shape[0], SMALLEST_BLOCK)
    for k in prange(blocks):
        conv2d_block(x, W, b, stride, activation, keep, kept, z, pool, size, pool_stride, pooled,
                     first, block_index(k), blocks)  # fmt: skip


@jit
def conv2d_block(
    x, W, b, stride, activation, keep, kept, z, pool, size, pool_stride, pooled, first, k, blocks
):  # fmt: skip
    """`conv2d` on block k of the samples."""
    start, stop = block_bounds(k, blocks, z.shape[0])
    conv2d_rows(x, W, b, stride, activation, keep, kept, z, start, stop)
    pool_rows(pool, z, size, pool_stride, pooled, first, start, stop)


@inline
def channel_rows(a):
    """a (N, H, W, C) as rows (N·H·W, C), a view: the array kernels' form, one per position."""
    return a.reshape((-1, a.shape[3]))


@jit
def conv2d_rows(x, W, b, stride, activation, keep, kept, z, start, stop):
    """`conv2d` on samples start to stop, a group at a time: the sums into z (and kept), then
    f over the group's rows by `nb.activate_entries`, whose loops each run one activation."""
    _, rows, cols, n_out = z.shape
    width, slot = phase_width(x, stride), phase_size(x, stride)
    group = group_size(slot)
    xp = phase_scratch(x, stride, group)
    acc = np.empty((n_out, group * slot), z.dtype)
    z_rows, kept_rows = channel_rows(z), channel_rows(kept)
    for n0 in range(start, stop, group):
        count = min(group, stop - n0)
        for g in range(count):
            split_phases(x, n0 + g, stride, xp, g * slot)
        conv2d_group(xp, W, b, stride, width, group_span(count, slot, width, rows, cols), acc)
        for g in range(count):
            for i in range(rows):
                for j in range(cols):
                    for o in range(n_out):
                        z[n0 + g, i, j, o] = acc[o, g * slot + i * width + j]
        first, last = n0 * rows * cols, (n0 + count) * rows * cols
        if keep:
            nb.copy_rows(z_rows[first:last], kept_rows[first:last])
        nb.activate_entries(activation, z_rows[first:last])


@reassociating
def conv2d_grads_group(xp, d, stride, width, span, dW, db):
    """dW[p,q,c,o] += Σ_t xp[(p, q, c)'s phase row, t + (p÷s)·Wq + q÷s] d[o, t];
    db[o] += Σ_t d[o, t]."""
    kh, kw, n_in, n_out = dW.shape
    for o in range(n_out):
        total = d.dtype.type(0)
        for t in range(span):
            total += d[o, t]
        db[o] += total
        for p in range(kh):
            for q in range(kw):
                shift = (p // stride) * width + q // stride
                for c in range(n_in):
                    row = phase_row(p, q, c, stride, n_in)
                    total = d.dtype.type(0)
                    for t in range(span):
                        total += xp[row, shifted(shift, t)] * d[o, t]
                    dW[p, q, c, o] += total


@jit
def conv2d_input_grad_group(d, W, stride, width, span, dxp):
    """dxp[(p, q, c)'s phase row, t + (p÷s)·Wq + q÷s] += W[p,q,c,o] d[o, t], from dxp = 0."""
    kh, kw, n_in, n_out = W.shape
    fill(dxp, 0, dxp.shape[0], 0)
    for o in range(n_out):
        for p in range(kh):
            for q in range(kw):
                shift = (p // stride) * width + q // stride
                for c in range(n_in):
                    w, row = W[p, q, c, o], phase_row(p, q, c, stride, n_in)
                    for t in range(span):
                        dxp[row, shifted(shift, t)] += w * d[o, t]


@parallel
def conv2d_backward(
    x, delta, W, stride, input_grad, dW_parts, db_parts, dx, activation, kept, a, pool, size,
    pool_stride, dpooled, first,
):  # fmt: skip
    """From ∂C/∂a in delta (N, Ho, Wo, O) — or, with a `Pool` other than none, from the pooled
    output's gradient dpooled, routed through the pool into delta first — δ = ∂C/∂a ⊙ f′ in
    delta (f′ from kept z and a, as `nb.activation_backward` reads them), then
    ∂C/∂W[p,q,c,o] = Σ_{n,i,j} x[n, i·s+p, j·s+q, c] δ[n,i,j,o] and ∂C/∂b = Σ δ, block k's
    sums into dW_parts[k] and db_parts[k] (`numba_blocks.block_sums`, which `add_blocks` adds
    up), and — with ``input_grad`` — ∂C/∂x (padded; entries no window reaches 0) into dx, where
    every window's Σ_o δ[n,i,j,o] W[p,q,c,o] adds to x[n, i·s+p, j·s+q, c]."""
    nb.check_entrywise(activation)
    blocks = dW_parts.shape[0]
    for k in prange(blocks):
        conv2d_backward_block(x, delta, W, stride, input_grad, dW_parts, db_parts, dx,
                              activation, kept, a, pool, size, pool_stride, dpooled, first,
                              block_index(k), blocks)  # fmt: skip


@jit
def conv2d_backward_block(
    x, delta, W, stride, input_grad, dW_parts, db_parts, dx, activation, kept, a, pool, size,
    pool_stride, dpooled, first, k, blocks,
):  # fmt: skip
    """`conv2d_backward` on block k of the samples."""
    start, stop = block_bounds(k, blocks, delta.shape[0])
    pool_grad_rows(pool, dpooled, first, size, pool_stride, delta, start, stop)
    conv2d_backward_rows(x, delta, W, stride, input_grad, dW_parts[k], db_parts[k], dx,
                         activation, kept, a, start, stop)  # fmt: skip


@jit
def conv2d_backward_rows(
    x, delta, W, stride, input_grad, dW, db, dx, activation, kept, a, start, stop
):  # fmt: skip
    """`conv2d_backward` on samples start to stop, a group at a time, its sums added to dW and
    db."""
    _, rows, cols, n_out = delta.shape
    width, slot = phase_width(x, stride), phase_size(x, stride)
    group = group_size(slot)
    xp = phase_scratch(x, stride, group)
    dxp = np.empty_like(xp)
    d = np.zeros((n_out, group * slot), delta.dtype)  # the gaps stay 0
    delta_rows, kept_rows, a_rows = channel_rows(delta), channel_rows(kept), channel_rows(a)
    for n0 in range(start, stop, group):
        count = min(group, stop - n0)
        first, last = n0 * rows * cols, (n0 + count) * rows * cols
        nb.activation_backward(
            activation, kept_rows[first:last], a_rows[first:last], delta_rows[first:last]
        )
        for g in range(count):
            n = n0 + g
            split_phases(x, n, stride, xp, g * slot)
            for i in range(rows):
                for j in range(cols):
                    for o in range(n_out):
                        d[o, g * slot + i * width + j] = delta[n, i, j, o]
        span = group_span(count, slot, width, rows, cols)
        conv2d_grads_group(xp, d, stride, width, span, dW, db)
        if input_grad:
            conv2d_input_grad_group(d, W, stride, width, span, dxp)
            for g in range(count):
                join_phases(dxp, g * slot, stride, n0 + g, dx)


@jit
def fill(x, start, stop, value):
    """x[start:stop] = value, for x of any number of axes, C-contiguous."""
    rows = x[start:stop]
    flat = rows.reshape(rows.size)
    for i in range(rows.size):
        flat[i] = value


# --- pooling, on samples start to stop: within `conv2d`, or over all the samples alone ------------
# A pooling layer not right after a Conv2D (after another pool, or first) runs on one thread:
# rare, and cheap next to a convolution.


@jit
def pool_rows(pool, x, size, stride, y, first, start, stop):
    """The `Pool` given by its code, on samples start to stop."""
    if pool == Pool.max:
        max_pool_rows(x, size, stride, y, first, start, stop)
    elif pool == Pool.avg:
        avg_pool_rows(x, size, stride, y, start, stop)
    elif pool != Pool.none:
        raise ValueError("pool_rows: unknown pool code")


@jit
def pool_grad_rows(pool, delta, first, size, stride, dx, start, stop):
    """The gradient of the `Pool` given by its code, on samples start to stop."""
    if pool == Pool.max:
        max_pool_grad_rows(delta, first, size, stride, dx, start, stop)
    elif pool == Pool.avg:
        avg_pool_grad_rows(delta, size, stride, dx, start, stop)
    elif pool != Pool.none:
        raise ValueError("pool_grad_rows: unknown pool code")


@jit
def max_pool_rows(x, size, stride, y, first, start, stop):
    """y = the maximum of each window; ``first`` its position p·size + q, the first in
    row-major order among equals. The channels are the inner loop, each window position's
    comparison a select over them (vector registers, no jumps)."""
    _, rows, cols, channels = y.shape
    for n in range(start, stop):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    y[n, i, j, c], first[n, i, j, c] = x[n, i * stride, j * stride, c], 0
                for p in range(size):
                    for q in range(size):
                        for c in range(channels):
                            value, best = x[n, i * stride + p, j * stride + q, c], y[n, i, j, c]
                            larger = value > best  # strictly: a tie keeps the first
                            y[n, i, j, c] = value if larger else best
                            first[n, i, j, c] = p * size + q if larger else first[n, i, j, c]


@jit
def max_pool_grad_rows(delta, first, size, stride, dx, start, stop):
    """δ of each window added to its first maximum: each window position (p, q) adds δ where
    it is the first maximum and 0 elsewhere, over the channels at once."""
    _, rows, cols, channels = delta.shape
    zero = dx.dtype.type(0)
    fill(dx, start, stop, 0)
    for n in range(start, stop):
        for i in range(rows):
            for j in range(cols):
                for p in range(size):
                    for q in range(size):
                        for c in range(channels):
                            here = first[n, i, j, c] == p * size + q
                            dx[n, i * stride + p, j * stride + q, c] += (
                                delta[n, i, j, c] if here else zero
                            )


@jit
def avg_pool_rows(x, size, stride, y, start, stop):
    _, rows, cols, channels = y.shape
    share = y.dtype.type(1) / y.dtype.type(size * size)
    for n in range(start, stop):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    total = y.dtype.type(0)
                    for p in range(size):
                        for q in range(size):
                            total += x[n, i * stride + p, j * stride + q, c]
                    y[n, i, j, c] = total * share


@jit
def avg_pool_grad_rows(delta, size, stride, dx, start, stop):
    """δ / size² added to every entry of its window."""
    _, rows, cols, channels = delta.shape
    share = dx.dtype.type(1) / dx.dtype.type(size * size)
    fill(dx, start, stop, 0)
    for n in range(start, stop):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    spread = delta[n, i, j, c] * share
                    for p in range(size):
                        for q in range(size):
                            dx[n, i * stride + p, j * stride + q, c] += spread
