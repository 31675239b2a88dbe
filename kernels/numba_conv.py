"""The convolution and pooling kernels of ``numpy_conv``, compiled with Numba.

The names and equations are ``numpy_conv``'s; each kernel writes into the arrays it is given.
A convolution's input arrives unpadded, with its padding and room for its phase images (below)
in an `Input`: the forward pass lays the padded input out there, and the backward pass reads it.

The convolution's two kernels, `conv2d` and `conv2d_backward`, run over the samples with
``prange``, in `numba_blocks`'s fixed blocks of samples (``*_block``, which a process that cannot
use the threads calls in turn: `numba_threads`), a weight gradient summed per block and the
blocks' sums added in order, so that its value does not depend on how many threads ran. Inside
the loops over entries nothing makes a view: a view counts a reference on its array, and two
threads counting on one array wait on each other; the activation's and pooling's kernels take
a view of a group's rows, one per group of samples. The activation, its derivative and a
pooling layer right after the convolution (`Pooling`) run inside the same kernels, on each
group while its images are in cache; a pooling layer elsewhere runs alone, on one thread
(`pool_rows`, `pool_grad_rows`). Below a max pool, δ is zero but at each window's first
maximum: where nothing else wants the convolution's output and δ (`Pooling`'s
``maxima_only``), the forward pass pools from scratch and the backward pass writes δ only at
the maxima.

The convolution is organised for long loops. A loop over a filter's 8 outputs, or a row's 8
positions, spends more on starting than on arithmetic; so each sample's padded input is first
split into its s² *phase images*, one row of ``xp`` for each (a, b, c) holding rows h·s + a and
columns w·s + b of channel c, and the samples' phase images are laid end to end, sample n's at
n·Hq·Wq (Hq × Wq being a phase image's size). The kernels work through them a group of samples
at a time, `GROUP_POSITIONS` positions in all, each group's sums in scratch of its own. In a
group, output position (g, i, j) is numbered t = g·Hq·Wq + i·Wq + j. Then kernel position
(p, q) meets, for every t at once, the run

    xp[(p mod s, q mod s, c), n₀·Hq·Wq + t + (p ÷ s)·Wq + q ÷ s],
    t < span = (G − 1)·Hq·Wq + (Ho − 1)·Wq + Wo,

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
thread, and 2.3 ms with the array kernels, before the later changes to the sums and the
pooling).

Max pooling keeps the position of each window's first maximum, so its gradient routes δ without
searching the window again.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

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


class Input(NamedTuple):
    """A convolution's input as its kernels take it: x (N, H, W, C), the padding of each side,
    and room for x's phase images, padded (`input_of`): (s·s·C, N·Hq·Wq), sample n's at
    n·Hq·Wq. `conv2d` writes x into it, where the backward pass reads it again; the padding
    stays 0."""

    x: np.ndarray
    xp: np.ndarray
    top: int
    bottom: int
    left: int
    right: int


def input_of(x: np.ndarray, pads: tuple, stride: int) -> Input:
    """The `Input` of x padded by ``pads``, ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = pads
    N, H, W, C = x.shape
    rows, cols = -(-(H + top + bottom) // stride), -(-(W + left + right) // stride)
    xp = np.zeros((stride * stride * C, N * rows * cols), x.dtype)
    return Input(x, xp, top, bottom, left, right)


@inline
def phase_width(source, stride):
    """Wq: the width of a phase image of the padded input, ⌈Wp / s⌉."""
    return (source.x.shape[2] + source.left + source.right + stride - 1) // stride


@inline
def phase_size(source, stride):
    """Hq·Wq: the positions of a phase image of the padded input, a sample's slot."""
    rows = (source.x.shape[1] + source.top + source.bottom + stride - 1) // stride
    return rows * phase_width(source, stride)


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
    """shift + t as an unsigned index (`nb.unsigned`): the check for a negative index would keep
    the loops over t from vectorising."""
    return nb.unsigned(shift + t)


@inline
def group_span(count, slot, width, rows, cols):
    """The positions t a group of ``count`` samples spans: to the last one's last output."""
    return (count - 1) * slot + (rows - 1) * width + cols


@jit
def phase_scratch(source, stride, group):
    """Room for a group's phase images (s·s·C, group·Hq·Wq): the input gradient's."""
    channels = stride * stride * source.x.shape[3]
    return np.empty((channels, group * phase_size(source, stride)), source.x.dtype)


@inline
def inside(pad, a, stride, size):
    """The phase positions h whose padded position h·s + a lies inside x (from ``pad`` to
    ``pad`` + ``size``): from the first to one past the last."""
    return max(0, (pad - a + stride - 1) // stride), (size + pad - a + stride - 1) // stride


@jit
def split_phases(source, start, stop, stride):
    """xp[(a·s + b)·C + c, n·Hq·Wq + h·Wq + w] = x[n, h·s + a − top, w·s + b − left, c] for
    samples n from start to stop, where that lies inside x; the rest, the padding, is left as it
    is (0). A phase row at a time, the columns innermost (a loop over the channels innermost,
    one entry long for the digits, made the copy 2.3 times as slow)."""
    x, xp, top, left = source.x, source.xp, source.top, source.left
    _, rows, cols, channels = x.shape
    width, slot = phase_width(source, stride), phase_size(source, stride)
    for n in range(start, stop):
        for a in range(stride):
            for b in range(stride):
                (h0, h1), (w0, w1) = inside(top, a, stride, rows), inside(left, b, stride, cols)
                for c in range(channels):
                    row = (a * stride + b) * channels + c
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            xp[row, n * slot + h * width + w] = x[
                                n, h * stride + a - top, w * stride + b - left, c
                            ]


@jit
def join_phases(dxp, offset, source, stride, n, dx):
    """dx[n, h·s + a − top, w·s + b − left, c] = dxp[(a·s + b)·C + c, offset + h·Wq + w]:
    `split_phases` undone, from a group's phase images, into dx shaped like x; the padding's
    gradient is dropped."""
    _, rows, cols, channels = dx.shape
    top, left, width = source.top, source.left, phase_width(source, stride)
    for a in range(stride):
        for b in range(stride):
            (h0, h1), (w0, w1) = inside(top, a, stride, rows), inside(left, b, stride, cols)
            for c in range(channels):
                row = (a * stride + b) * channels + c
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        dx[n, h * stride + a - top, w * stride + b - left, c] = dxp[
                            row, offset + h * width + w
                        ]


@inline
def tap(i, W, stride, width, start):
    """Tap i of the kernel, its (p, q, c) in row-major order: the kernel position and channel,
    its phase row, and the column of that row that output position t = 0 meets, for a group
    whose phase images begin at column ``start``: start + (p÷s)·Wq + q÷s."""
    _, kw, n_in, _ = W.shape
    p, q, c = i // (kw * n_in), (i // n_in) % kw, i % n_in
    return p, q, c, phase_row(p, q, c, stride, n_in), start + (p // stride) * width + q // stride


@jit
def conv2d_group(xp, start, W, b, stride, width, span, acc):
    """acc[o, t] = b[o] + Σ_{p,q,c} W[p,q,c,o] xp[(p, q, c)'s phase row, start + t + (p÷s)·Wq
    + q÷s], for a group whose phase images begin at column ``start`` of xp. Three taps by two
    filters a pass: a pass over acc per three taps, not per tap, and each entry of xp loaded
    once for two filters (the sums of a digits-CNN forward on one thread took 1.34 ms a tap at a
    time, 0.95 ms three at a time; two filters a pass took the whole forward from 2.23–2.34 ms
    to 1.83–1.96). acc has a spare row when the filters are odd in number: the last one is
    summed twice, into its row and the spare."""
    taps, n_out = W.shape[0] * W.shape[1] * W.shape[2], W.shape[3]
    for o in range(0, n_out, 2):
        o1 = min(o + 1, n_out - 1)  # the filter summed into row o + 1
        for t in range(span):
            acc[o, t], acc[o + 1, t] = b[o], b[o1]
        for i in range(0, taps - 2, 3):
            p0, q0, c0, r0, s0 = tap(i, W, stride, width, start)
            p1, q1, c1, r1, s1 = tap(i + 1, W, stride, width, start)
            p2, q2, c2, r2, s2 = tap(i + 2, W, stride, width, start)
            w0, w1, w2 = W[p0, q0, c0, o], W[p1, q1, c1, o], W[p2, q2, c2, o]
            v0, v1, v2 = W[p0, q0, c0, o1], W[p1, q1, c1, o1], W[p2, q2, c2, o1]
            for t in range(span):
                x0, x1, x2 = xp[r0, shifted(s0, t)], xp[r1, shifted(s1, t)], xp[r2, shifted(s2, t)]
                acc[o, t] += w0 * x0 + w1 * x1 + w2 * x2
                acc[o + 1, t] += v0 * x0 + v1 * x1 + v2 * x2
        for i in range(taps - taps % 3, taps):
            p, q, c, row, shift = tap(i, W, stride, width, start)
            w, v = W[p, q, c, o], W[p, q, c, o1]
            for t in range(span):
                x = xp[row, shifted(shift, t)]
                acc[o, t] += w * x
                acc[o + 1, t] += v * x


#: The pooling a `conv2d` call also does, by code: none, or that of the layer after it.
Pool = IntEnum("Pool", ["none", "max", "avg"], start=0)


class Pooling(NamedTuple):
    """The pooling layer right after a convolution, which the convolution's kernels do too,
    while a block's images are in cache: its `Pool` code, window size and stride, its output and
    its output's gradient (N, Ho′, Wo′, O), and where each window's first maximum lies (a max
    pool's, as `max_pool` keeps it).

    With ``maxima_only`` (a max pool, an f′ that reads a alone, no trace wanted) the kernels
    leave the convolution's output z and its δ unwritten. The forward pass pools a group's z from
    scratch. Below a max pool, ∂C/∂a is zero but at each window's first maximum, where a is the
    pooled value: the backward pass makes the pool's gradient δ there, ⊙ f′(pooled value), in
    place, and routes it to the maxima. A digits-CNN step then writes and reads neither of two
    arrays of 1797 × 8 × 8 × 8, and applies f′ to a quarter of the entries."""

    code: int  # a `Pool` code, as a plain int: Numba types an IntEnum member slowly
    size: int
    stride: int
    out: np.ndarray
    grad: np.ndarray
    first: np.ndarray
    maxima_only: bool


def no_pool(dtype: np.dtype) -> Pooling:
    """The `Pooling` of a convolution followed by no pool."""
    empty = np.empty((0,) * 4, dtype)
    return Pooling(int(Pool.none), 1, 1, empty, empty, np.empty((0,) * 4, np.int64), False)


@jit
def check_pooling(pooling):
    """Refuse an unknown pool code, and ``maxima_only`` but for a max pool."""
    if pooling.code != Pool.none and pooling.code != Pool.max and pooling.code != Pool.avg:
        raise ValueError("check_pooling: unknown pool code")
    if pooling.maxima_only and pooling.code != Pool.max:
        raise ValueError("check_pooling: maxima_only is for a max pool")


@parallel
def conv2d(source, W, b, stride, activation, keep, kept, z, pooling):
    """z[n,i,j,o] = f(Σ_{p,q,c} x[n, i·s+p, j·s+q, c] W[p,q,c,o] + b[o]) on the padded x of
    the `Input` ``source``, whose phase images it writes first (b of zeros: no bias), f by its
    activation code (not the softmax); with ``keep``, kept (like z) ← the sum before f, which
    f′ reads. With a `Pooling` other than none, also its output ← z pooled, a group at a time
    while its z is in cache."""
    nb.check_entrywise(activation)
    check_pooling(pooling)
    blocks = block_count(z.shape[0], SMALLEST_BLOCK)
    for k in prange(blocks):
        conv2d_block(source, W, b, stride, activation, keep, kept, z, pooling, block_index(k),
                     blocks)  # fmt: skip


@jit
def conv2d_block(source, W, b, stride, activation, keep, kept, z, pooling, k, blocks):
    """`conv2d` on block k of the samples, a group at a time: the sums in ``acc``, channels
    first, into the group's z (and kept), then f over the group's rows by
    `nb.activate_entries`, whose loops each run one activation, then the group's pool. With
    ``maxima_only`` nothing reads z after the pool: it goes to scratch the size of a group."""
    start, stop = block_bounds(k, blocks, z.shape[0])
    _, rows, cols, n_out = z.shape
    width, slot = phase_width(source, stride), phase_size(source, stride)
    group = group_size(slot)
    acc = np.empty((n_out + n_out % 2, group * slot), z.dtype)  # see `conv2d_group`
    scratch = np.empty((group if pooling.maxima_only else 0, rows, cols, n_out), z.dtype)
    split_phases(source, start, stop, stride)
    for n0 in range(start, stop, group):
        count = min(group, stop - n0)
        span = group_span(count, slot, width, rows, cols)
        conv2d_group(source.xp, n0 * slot, W, b, stride, width, span, acc)
        out = scratch[:count] if pooling.maxima_only else z[n0 : n0 + count]
        to_channels_last(acc, slot, width, count, out)
        if keep:
            nb.copy_rows(channel_rows(out), channel_rows(kept[n0 : n0 + count]))
        nb.activate_entries(activation, channel_rows(out))
        pool_rows(pooling.code, out, pooling.size, pooling.stride, pooling.out[n0 : n0 + count],
                  pooling.first[n0 : n0 + count], 0, count)  # fmt: skip


@jit
def to_channels_last(acc, slot, width, count, out):
    """out[g, i, j, o] = acc[o, g·Hq·Wq + i·Wq + j]: a group's outputs, channels last."""
    _, rows, cols, n_out = out.shape
    for g in range(count):
        for i in range(rows):
            for j in range(cols):
                for o in range(n_out):
                    out[g, i, j, o] = acc[o, g * slot + i * width + j]


@jit
def to_channels_first(out, slot, width, count, acc):
    """acc[o, g·Hq·Wq + i·Wq + j] = out[g, i, j, o]: `to_channels_last` undone."""
    _, rows, cols, n_out = out.shape
    for g in range(count):
        for i in range(rows):
            for j in range(cols):
                for o in range(n_out):
                    acc[o, g * slot + i * width + j] = out[g, i, j, o]


@inline
def channel_rows(a):
    """a (N, H, W, C) as rows (N·H·W, C), a view: the array kernels' form, one per position."""
    return a.reshape((-1, a.shape[3]))


@jit
def route_maxima(pooling, slot, width, n0, count, d):
    """d[o, t] += ∂C/∂(the pooled output) of each window, at its first maximum t; d's other
    entries are left as they are (zero). Where window position p·size + q lies from the
    window's corner, p·Wq + q, is looked up (`window_offsets`) rather than divided out entry by
    entry (a division, a digits-CNN backward pass on one thread took 2.15 ms; looked up, 1.94
    ms)."""
    size, stride, grad, first = pooling.size, pooling.stride, pooling.grad, pooling.first
    _, rows, cols, channels = grad.shape
    offset = window_offsets(size, width, 1)
    for g in range(count):
        n = n0 + g
        for i in range(rows):
            for j in range(cols):
                corner = g * slot + i * stride * width + j * stride
                for c in range(channels):
                    d[c, corner + offset[first[n, i, j, c]]] += grad[n, i, j, c]


@reassociating
def conv2d_grads_group(xp, start, d, stride, width, span, dW, db):
    """dW[p,q,c,o] += Σ_t xp[(p, q, c)'s phase row, start + t + (p÷s)·Wq + q÷s] d[o, t];
    db[o] += Σ_t d[o, t]. Two taps by four filters a pass: each entry of xp loaded once for four
    products, each of d once for two (the sums of a digits-CNN backward on one thread took 1.56
    ms a filter at a time, 1.32 ms four filters at a time; two taps a pass took the whole
    backward from 1.83–2.04 ms to 1.44–1.47)."""
    taps, n_out = dW.shape[0] * dW.shape[1] * dW.shape[2], dW.shape[3]
    zero = d.dtype.type(0)
    for o in range(n_out):
        total = zero
        for t in range(span):
            total += d[o, t]
        db[o] += total
    for i in range(0, taps - 1, 2):
        p0, q0, c0, r0, s0 = tap(i, dW, stride, width, start)
        p1, q1, c1, r1, s1 = tap(i + 1, dW, stride, width, start)
        for o in range(0, n_out - 3, 4):
            a0, a1, a2, a3 = zero, zero, zero, zero  # tap i's sums, filters o to o + 3
            b0, b1, b2, b3 = zero, zero, zero, zero  # tap i + 1's
            for t in range(span):
                u, v = xp[r0, shifted(s0, t)], xp[r1, shifted(s1, t)]
                e0, e1, e2, e3 = d[o, t], d[o + 1, t], d[o + 2, t], d[o + 3, t]
                a0, a1, a2, a3 = a0 + u * e0, a1 + u * e1, a2 + u * e2, a3 + u * e3
                b0, b1, b2, b3 = b0 + v * e0, b1 + v * e1, b2 + v * e2, b3 + v * e3
            add_four(dW, p0, q0, c0, o, a0, a1, a2, a3)
            add_four(dW, p1, q1, c1, o, b0, b1, b2, b3)
        for o in range(n_out - n_out % 4, n_out):
            a, b = zero, zero
            for t in range(span):
                a += xp[r0, shifted(s0, t)] * d[o, t]
                b += xp[r1, shifted(s1, t)] * d[o, t]
            dW[p0, q0, c0, o] += a
            dW[p1, q1, c1, o] += b
    for i in range(taps - taps % 2, taps):  # an odd tap left: a filter at a time
        p, q, c, row, shift = tap(i, dW, stride, width, start)
        for o in range(n_out):
            total = zero
            for t in range(span):
                total += xp[row, shifted(shift, t)] * d[o, t]
            dW[p, q, c, o] += total


@inline
def add_four(dW, p, q, c, o, s0, s1, s2, s3):
    """dW[p, q, c, o + k] += s_k for k = 0..3."""
    dW[p, q, c, o] += s0
    dW[p, q, c, o + 1] += s1
    dW[p, q, c, o + 2] += s2
    dW[p, q, c, o + 3] += s3


@jit
def conv2d_input_grad_group(d, W, stride, width, span, dxp):
    """dxp[(p, q, c)'s phase row, t + (p÷s)·Wq + q÷s] += W[p,q,c,o] d[o, t], from dxp = 0."""
    taps, n_out = W.shape[0] * W.shape[1] * W.shape[2], W.shape[3]
    fill(dxp, 0, dxp.shape[0], 0)
    for o in range(n_out):
        for i in range(taps):
            p, q, c, row, shift = tap(i, W, stride, width, 0)
            w = W[p, q, c, o]
            for t in range(span):
                dxp[row, shifted(shift, t)] += w * d[o, t]


@parallel
def conv2d_backward(source, delta, W, stride, input_grad, dW_parts, db_parts, dx, activation, kept,
                    a, pooling):  # fmt: skip
    """From ∂C/∂a in delta (N, Ho, Wo, O) — or, with a `Pooling` other than none, from its
    output's gradient, routed through the pool into delta first — δ = ∂C/∂a ⊙ f′ in delta (f′
    from kept z and a, as `nb.activation_backward` reads them), then
    ∂C/∂W[p,q,c,o] = Σ_{n,i,j} x[n, i·s+p, j·s+q, c] δ[n,i,j,o] (x padded, read from the
    phase images `conv2d` wrote into ``source``) and ∂C/∂b = Σ δ, block k's sums into
    dW_parts[k] and db_parts[k] (`numba_blocks.block_sums`, which `add_blocks` adds up), and —
    with ``input_grad`` — ∂C/∂x into dx (shaped like x; entries no window reaches 0), where
    every window's Σ_o δ[n,i,j,o] W[p,q,c,o] adds to x[n, i·s+p, j·s+q, c]. With
    ``maxima_only``, δ is the pooled output's gradient ⊙ f′ in place, at the maxima alone."""
    nb.check_entrywise(activation)
    check_pooling(pooling)
    blocks = dW_parts.shape[0]
    for k in prange(blocks):
        conv2d_backward_block(source, delta, W, stride, input_grad, dW_parts, db_parts, dx,
                              activation, kept, a, pooling, block_index(k), blocks)  # fmt: skip


@jit
def conv2d_backward_block(
    source, delta, W, stride, input_grad, dW_parts, db_parts, dx, activation, kept, a, pooling, k,
    blocks,
):  # fmt: skip
    """`conv2d_backward` on block k of the samples, a group at a time, its sums added to
    dW_parts[k] and db_parts[k]."""
    start, stop = block_bounds(k, blocks, delta.shape[0])
    dW, db = dW_parts[k], db_parts[k]
    if not pooling.maxima_only:
        pool_grad_rows(pooling.code, pooling.grad, pooling.first, pooling.size, pooling.stride,
                       delta, start, stop)  # fmt: skip
    _, rows, cols, n_out = delta.shape
    width, slot = phase_width(source, stride), phase_size(source, stride)
    group = group_size(slot)
    dxp = phase_scratch(source, stride, group if input_grad else 0)
    d = np.zeros((n_out, group * slot), delta.dtype)  # the gaps stay 0
    for n0 in range(start, stop, group):
        count = min(group, stop - n0)
        if pooling.maxima_only:  # δ at the maxima, f′ from a there: the pooled value
            per = pooling.out.shape[1] * pooling.out.shape[2]
            pooled = channel_rows(pooling.out)[n0 * per : (n0 + count) * per]
            grad = channel_rows(pooling.grad)[n0 * per : (n0 + count) * per]
            nb.activation_backward(activation, pooled, pooled, grad)
            fill(d, 0, n_out, 0)
            route_maxima(pooling, slot, width, n0, count, d)
        else:
            lo, hi = n0 * rows * cols, (n0 + count) * rows * cols
            nb.activation_backward(activation, channel_rows(kept)[lo:hi], channel_rows(a)[lo:hi],
                                   channel_rows(delta)[lo:hi])  # fmt: skip
            to_channels_first(delta[n0 : n0 + count], slot, width, count, d)
        span = group_span(count, slot, width, rows, cols)
        conv2d_grads_group(source.xp, n0 * slot, d, stride, width, span, dW, db)
        if input_grad:
            conv2d_input_grad_group(d, W, stride, width, span, dxp)
            for g in range(count):
                join_phases(dxp, g * slot, source, stride, n0 + g, dx)


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


@inline
def window_offsets(size, row, column):
    """Where window position p·size + q lies from the window's corner, p·row + q·column, in a
    buffer whose rows lie ``row`` entries apart and columns ``column``: looked up rather than
    worked out entry by entry."""
    offset = np.empty(size * size, np.int64)
    for p in range(size):
        for q in range(size):
            offset[p * size + q] = p * row + q * column
    return offset


@jit
def max_pool_rows(x, size, stride, y, first, start, stop):
    """y = the maximum of each window; ``first`` its position k = p·size + q, the first in
    row-major order among equals. Each window position is read at its looked-up offset from the
    window's corner (`window_offsets`), in one loop over k, and a window's maximum and its
    position stay in registers, a channel at a time (with two loops over p and q, every position
    reading and writing y and first again, the pooling of a digits-CNN forward on one thread
    took 0.95 ms; so, 0.5 ms)."""
    _, rows, cols, channels = y.shape
    _, height, width, _ = x.shape
    offset = window_offsets(size, width * channels, channels)
    flat = x.reshape(x.size)
    for n in range(start, stop):
        for i in range(rows):
            for j in range(cols):
                corner = ((n * height + i * stride) * width + j * stride) * channels
                for c in range(channels):
                    best, at = flat[nb.unsigned(corner + c)], 0
                    for k in range(1, size * size):
                        value = flat[nb.unsigned(corner + offset[k] + c)]
                        larger = value > best  # strictly: a tie keeps the first
                        best = value if larger else best
                        at = k if larger else at
                    y[n, i, j, c], first[n, i, j, c] = best, at


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
