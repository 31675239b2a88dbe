"""The recurrent layers of `numpy_recurrent`, compiled with Numba: SimpleRNN and LSTM through time
and back, each pass one compiled call with the time loop inside, over the samples with
``prange`` in `numba_blocks`'s fixed blocks (of at least `SMALLEST_BLOCK` samples).

Each block keeps its sequences time-major — x_t, z_t, h_t and δ_t each one (m, ·) run of rows
for its m samples, the block's T runs one after another — so that a step's product h_{t−1} U is
one product of contiguous rows, and what does not depend on the previous step is done for the
block's T·m rows at once:

    xs = x time-major                        (T·m, D)                   to_time_major
    z = xs W                                 (T·m, G), G = blocks·H     one product, every step
    z_t += h_{t−1} U + b                     (m, G)                     add_recurrence
    SimpleRNN: h_t = f(z_t)                  (m, H)                     rnn_cells
    LSTM: i, f, c̃, o = σ, σ, tanh, σ of z_t's blocks  (m, 4H)          lstm_gates
          c_t = f ⊙ c_{t−1} + i ⊙ c̃,  h_t = o ⊙ tanh(c_t)  (m, H)     lstm_cells
    backward, t = T … 1: dh = g_t + δ_{t+1} Uᵀ                          add_from_above
          δ_t as numpy_recurrent                                        rnn_deltas, lstm_deltas
    ∂C/∂W = xsᵀ δ,  ∂C/∂U = [h_0 … h_{T−1}]ᵀ δ,  ∂C/∂b = Σ δ            one product each, a block's
    ∂C/∂x = δ Wᵀ, back to (N, T, D)

The sums over steps run as one product over a block's rows, where `numpy_recurrent` adds each
step's share in turn, and the blocks' sums are added in order (`numba_blocks.add_blocks`): the
same sums in another order, the same on one thread or two. A layer that returns only h_T takes
its output and gradient as (N, 1, H), so that both kinds compile once per dtype.

A block's products run on its thread, BLAS held to one (`numba_threads.on_numba_threads`): two
blocks of the catalogue's 64 samples make an LSTM step's product h_{t−1} U 4.1 µs a thread,
where all 64 rows took 6.3 µs (float32), and the element-wise work halves.

The element-wise passes run over contiguous runs of one row — an LSTM's four blocks each a
view indexed from 0 (`blocks`) — so that LLVM vectorises them, σ through `exp_normal` and
tanh through `numba_backprop.tanh_of`: an LSTM step's gates on a (64, 128) batch take about
3 µs, against 20 µs one exponential at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange

from gradcheck.kernels import numba_backprop as nb
from gradcheck.kernels.numba_blocks import (
    add_blocks,
    block_bounds,
    block_count,
    block_index,
    parallel,
)

#: A block holds at least this many samples: fewer would leave its products too small to pay
#: for themselves.
SMALLEST_BLOCK = 32


class Steps(NamedTuple):
    """A recurrent layer's buffers for one batch size, block by block (`block_rows`), each
    block time-major. A SimpleRNN's ``c``, ``tanh_c``, ``carry_c`` are empty (an LSTM's gates
    are kept in ``z``, activated)."""

    xs: np.ndarray  # (T·N, D)
    z: np.ndarray  # (T·N, G): z_t; an LSTM's i, f, c̃, o once activated
    h: np.ndarray  # ((T + 1)·N, H): h_0 = 0 … h_T
    c: np.ndarray  # ((T + 1)·N, H): an LSTM's c_0 = 0 … c_T
    tanh_c: np.ndarray  # (T·N, H): an LSTM's tanh(c_1) … tanh(c_T)
    delta: np.ndarray  # (T·N, G)
    dxs: np.ndarray  # (T·N, D): ∂C/∂x
    hu: np.ndarray  # (N, G): h_{t−1} U, a block's rows at a time
    carry: np.ndarray  # (N, H): δ_{t+1} Uᵀ
    carry_c: np.ndarray  # (N, H): an LSTM's ∂C/∂c_t through step t + 1
    normal: np.ndarray  # (N,) bool: whether a row's e^{−|z|} are all normal floats
    dW_parts: np.ndarray  # (blocks, D, G): each block's ∂C/∂W
    dU_parts: np.ndarray  # (blocks, H, G)
    db_parts: np.ndarray  # (blocks, G)


def steps(x_shape: tuple[int, ...], units: int, blocks: int, dtype: np.dtype) -> Steps:
    """Buffers for a batch x of ``x_shape`` (N, T, D)."""
    N, T, D = x_shape
    G, lstm, parts = blocks * units, blocks == 4, block_count(N, SMALLEST_BLOCK)
    return Steps(
        np.empty((T * N, D), dtype), np.empty((T * N, G), dtype),
        np.zeros(((T + 1) * N, units), dtype), np.zeros(((T + 1) * N if lstm else 0, units), dtype),
        np.empty((T * N if lstm else 0, units), dtype), np.empty((T * N, G), dtype),
        np.empty((T * N, D), dtype), np.empty((N, G), dtype), np.empty((N, units), dtype),
        np.empty((N if lstm else 0, units), dtype), np.empty(N, np.bool_),
        np.zeros((parts, D, G), dtype), np.zeros((parts, units, G), dtype),
        np.zeros((parts, G), dtype),
    )  # fmt: skip


def block_total(s: Steps) -> int:
    """How many blocks the batch of ``s`` makes."""
    return len(s.db_parts)


@nb.inline
def block_rows(a, k, blocks, n_samples, per_sample):
    """Block k's rows of a `Steps` array holding ``per_sample`` rows a sample — T, or T + 1 for
    h and c — and its sample count m: a (per_sample·m, ·) view, time-major."""
    n0, n1 = block_bounds(k, blocks, n_samples)
    return a[per_sample * n0 : per_sample * n1], n1 - n0


@nb.inline
def at(rows, t, m):
    """Step t's rows (m, ·) of a block's time-major rows."""
    return rows[t * m : (t + 1) * m]


def batch_major(rows: np.ndarray, n_samples: int, blocks: int) -> np.ndarray:
    """A `Steps` array as (N, per_sample, ·), each sample's rows in step order."""
    per_sample = len(rows) // n_samples
    out = np.empty((n_samples, per_sample, rows.shape[1]), rows.dtype)
    for k in range(blocks):
        n0, n1 = block_bounds(k, blocks, n_samples)
        block = rows[per_sample * n0 : per_sample * n1]
        out[n0:n1] = block.reshape(per_sample, n1 - n0, -1).swapaxes(0, 1)
    return out


# --- forward -------------------------------------------------------------------------------------


@nb.jit
def to_time_major(x, n0, xs):
    """A block's xs (T·m, D) ← its samples' x[n0 : n0 + m] (N, T, D); element by element, which
    is cheaper than a slice's copy."""
    T, D = x.shape[1], x.shape[2]
    m = xs.shape[0] // T
    for i in range(m):
        for t in range(T):
            row = xs[t * m + i]
            for d in range(D):
                row[d] = x[n0 + i, t, d]


@nb.inline
def add_recurrence(z, hu, b, first):
    """z_t += h_{t−1} U + b for one row, h_{t−1} U given in ``hu`` (at the first step h_0 = 0
    adds nothing); returns whether every e^{−|z|} of the row is then a normal float, so that
    its σ vectorise. One pass: the count is an integer sum, which vectorises too."""
    limit, beyond = -nb.min_normal_arg(z.dtype.type(1)), 0
    if first:
        for g in range(z.shape[0]):
            z[g] += b[g]
            beyond += abs(z[g]) > limit
    else:
        for g in range(z.shape[0]):
            z[g] += hu[g] + b[g]
            beyond += abs(z[g]) > limit
    return beyond == 0


@nb.jit
def rnn_cells(activation, z, hu, b, first, h):
    """z_t += h_{t−1} U + b, then h_t = f(z_t) (`activations`), (N, H): passes apart, as the
    activation's loop does not vectorise with the sum in it."""
    for n in range(z.shape[0]):
        add_recurrence(z[n], hu[n], b, first)
    activations(activation, z, h)


@nb.jit
def activations(activation, z, h):
    """h_t = f(z_t), (N, H): z copied into h, then f in place by `nb.activate_entries`, whose
    loops each run one activation, and vectorise. (A loop dispatching entry by entry through
    `nb.activation_of` vectorised only while LLVM chose to split it by code, which depended on
    what the dispatch returns for a code it has no branch for: 8 µs against 0.8 for a digits
    batch's tanh when it did not.)"""
    nb.copy_rows(z, h)
    nb.activate_entries(activation, h)


@nb.inline
def sigmoids(z, normal):
    """z ← σ(z) for a contiguous run z, through `exp_normal` where every e^{−|z|} is normal:
    a loop that vectorises. (Its index runs from 0: one from an offset keeps Numba's check for
    a negative index, and the loop then does not vectorise.)"""
    one = z.dtype.type(1)
    if normal:
        for g in range(z.shape[0]):
            z[g] = nb.sigmoid_from(z[g], nb.exp_normal(-abs(z[g])), one)
    else:
        for g in range(z.shape[0]):
            z[g] = nb.sigmoid_of(z[g], one)


@nb.inline
def blocks(row, H):
    """A row of an LSTM's z, gates or δ as its four blocks i, f, c̃, o: views, each indexed
    from 0, so that the loops over them vectorise."""
    return row[:H], row[H : 2 * H], row[2 * H : 3 * H], row[3 * H :]


@nb.jit
def lstm_gates(z, hu, b, first, normal):
    """z_t += h_{t−1} U + b, then the gates i, f, c̃, o of z_t (N, 4H), in place: σ, σ, tanh,
    σ of its blocks, each a contiguous run of a row, so that the loops vectorise; ``normal``
    (N,) notes which rows' e^{−|z|} are all normal floats. Two passes: in one, the σ's loops do
    not vectorise."""
    one, H = z.dtype.type(1), z.shape[1] // 4
    for n in range(z.shape[0]):
        normal[n] = add_recurrence(z[n], hu[n], b, first)
    for n in range(z.shape[0]):
        row, finite = z[n], normal[n]
        _, _, c_tilde, o = blocks(row, H)
        sigmoids(row[: 2 * H], finite)  # i and f
        for j in range(H):
            c_tilde[j] = nb.tanh_of(c_tilde[j], one)
        sigmoids(o, finite)


@nb.jit
def lstm_cells(gates, c_prev, c, tanh_c, h):
    """c_t = f ⊙ c_{t−1} + i ⊙ c̃ and h_t = o ⊙ tanh(c_t), (N, H), from the gates (N, 4H);
    tanh(c_t) kept for the backward."""
    one, H = gates.dtype.type(1), h.shape[1]
    for n in range(gates.shape[0]):
        i, f, c_tilde, o = blocks(gates[n], H)
        cell_prev, cell, tanh_cell, state = c_prev[n], c[n], tanh_c[n], h[n]
        for j in range(H):  # each value read once and written once: the loop vectorises
            c_j = f[j] * cell_prev[j] + i[j] * c_tilde[j]
            tanh_j = nb.tanh_of(c_j, one)
            cell[j], tanh_cell[j], state[j] = c_j, tanh_j, o[j] * tanh_j


@parallel
def forward(lstm, activation, x, W, U, b, s, out, sequences):
    """The layer over x (N, T, D) from zero states: every h_t into ``out`` (N, T, H) with
    ``sequences``, else h_T into ``out`` (N, 1, H); a block of samples a thread."""
    if not lstm:  # an LSTM's activations are fixed; its code is -1
        nb.check_entrywise(activation)
    blocks = s.db_parts.shape[0]
    for k in prange(blocks):
        forward_block(lstm, activation, x, W, U, b, s, out, sequences, block_index(k), blocks)


@nb.jit
def forward_block(lstm, activation, x, W, U, b, s, out, sequences, k, blocks):
    """`forward` on block k of the samples."""
    N, T = x.shape[0], x.shape[1]
    n0 = block_bounds(k, blocks, N)[0]
    xs, m = block_rows(s.xs, k, blocks, N, T)
    z, h = block_rows(s.z, k, blocks, N, T)[0], block_rows(s.h, k, blocks, N, T + 1)[0]
    c, tanh_c = block_rows(s.c, k, blocks, N, T + 1)[0], block_rows(s.tanh_c, k, blocks, N, T)[0]
    hu, normal = s.hu[n0 : n0 + m], s.normal[n0 : n0 + m]
    to_time_major(x, n0, xs)
    nb.matmul(xs, W, z)  # (T·m, D) @ (D, G): every step's x_t W at once
    for t in range(T):
        if t > 0:
            nb.matmul(at(h, t, m), U, hu)  # (m, H) @ (H, G) -> (m, G)
        if lstm:
            lstm_gates(at(z, t, m), hu, b, t == 0, normal)
            lstm_cells(at(z, t, m), at(c, t, m), at(c, t + 1, m), at(tanh_c, t, m),
                       at(h, t + 1, m))  # fmt: skip
        else:
            rnn_cells(activation, at(z, t, m), hu, b, t == 0, at(h, t + 1, m))
    for i in range(m):
        for t in range(out.shape[1]):
            state = h[(t + 1 if sequences else T) * m + i]
            for j in range(out.shape[2]):
                out[n0 + i, t, j] = state[j]


# --- backward ------------------------------------------------------------------------------------


@nb.jit
def add_from_above(dh, grad, sequences, t, T):
    """dh (N, H), holding the carry δ_{t+1} Uᵀ, += ∂C/∂h_t from the layer above: its gradient
    of h_t, or of h_T alone."""
    if not sequences and t != T - 1:
        return
    for n in range(dh.shape[0]):
        row, above = dh[n], grad[n, t if sequences else 0]
        for j in range(dh.shape[1]):
            row[j] += above[j]


@nb.jit
def rnn_deltas(activation, dh, z, h, delta):
    """δ_t = dh ⊙ f′(z_t, h_t), (N, H)."""
    nb.copy_rows(dh, delta)
    nb.activation_backward(activation, z, h, delta)  # its own loop per activation vectorises


@nb.jit
def lstm_deltas(dh, dc, gates, c_prev, tanh_c, delta):
    """dc = carry_c + dh ⊙ o ⊙ (1 − tanh²(c_t)), in place of the carry; δ_t the four gates'
    through σ′ and tanh′, (N, 4H); then dc ← dc ⊙ f, the carry to step t − 1."""
    one, H = gates.dtype.type(1), dh.shape[1]
    for n in range(dh.shape[0]):
        i, f, c_tilde, o = blocks(gates[n], H)
        d_i, d_f, d_c, d_o = blocks(delta[n], H)
        up, cell, tanh_cell, prev = dh[n], dc[n], tanh_c[n], c_prev[n]
        for j in range(H):  # each value read once and written once: the loop vectorises
            dh_j, tanh_j, i_j, f_j, c_j, o_j = up[j], tanh_cell[j], i[j], f[j], c_tilde[j], o[j]
            dc_j = cell[j] + dh_j * o_j * (one - tanh_j * tanh_j)
            d_i[j] = dc_j * c_j * i_j * (one - i_j)
            d_f[j] = dc_j * prev[j] * f_j * (one - f_j)
            d_c[j] = dc_j * i_j * (one - c_j * c_j)
            d_o[j] = dh_j * tanh_j * o_j * (one - o_j)
            cell[j] = dc_j * f_j


@parallel
def backward(lstm, activation, grad, sequences, W, U, s, dx, input_grad):
    """BPTT from ``grad``, ∂C/∂(the output) as `forward` wrote it: each block's ∂C/∂W, ∂C/∂U and
    ∂C/∂b into ``s.dW_parts[k]``, ``s.dU_parts[k]``, ``s.db_parts[k]`` (`add_sums` adds them
    up) and, with ``input_grad``, ∂C/∂x (N, T, D); a block of samples a thread."""
    blocks = s.db_parts.shape[0]
    for k in prange(blocks):
        backward_block(lstm, activation, grad, sequences, W, U, s, dx, input_grad,
                       block_index(k), blocks)  # fmt: skip


@nb.jit
def backward_block(lstm, activation, grad, sequences, W, U, s, dx, input_grad, k, blocks):
    """`backward` on block k of the samples. ``carry`` holds dh = δ_{t+1} Uᵀ + ∂C/∂h_t from
    above, ``carry_c`` an LSTM's dc."""
    N, T = grad.shape[0], s.xs.shape[0] // grad.shape[0]
    n0 = block_bounds(k, blocks, N)[0]
    delta, m = block_rows(s.delta, k, blocks, N, T)
    z, h = block_rows(s.z, k, blocks, N, T)[0], block_rows(s.h, k, blocks, N, T + 1)[0]
    c, tanh_c = block_rows(s.c, k, blocks, N, T + 1)[0], block_rows(s.tanh_c, k, blocks, N, T)[0]
    carry, carry_c, above = s.carry[n0 : n0 + m], s.carry_c[n0 : n0 + m], grad[n0 : n0 + m]
    carry[:] = 0
    carry_c[:] = 0
    for t in range(T - 1, -1, -1):
        add_from_above(carry, above, sequences, t, T)
        if lstm:
            lstm_deltas(carry, carry_c, at(z, t, m), at(c, t, m), at(tanh_c, t, m),
                        at(delta, t, m))  # fmt: skip
        else:
            rnn_deltas(activation, carry, at(z, t, m), at(h, t + 1, m), at(delta, t, m))
        if t > 0:
            nb.matmul_nt(at(delta, t, m), U, carry)  # (m, G) @ (G, H) -> (m, H)
    xs = block_rows(s.xs, k, blocks, N, T)[0]
    nb.matmul_tn(xs, delta, s.dW_parts[k])  # (D, T·m) @ (T·m, G)
    nb.matmul_tn(h[: T * m], delta, s.dU_parts[k])  # (H, T·m) @ (T·m, G): h_{t−1}, not h_t
    db = s.db_parts[k]
    db[:] = 0
    for r in range(delta.shape[0]):
        row = delta[r]
        for g in range(db.shape[0]):
            db[g] += row[g]
    if input_grad:
        dxs = block_rows(s.dxs, k, blocks, N, T)[0]
        nb.matmul_nt(delta, W, dxs)  # (T·m, G) @ (G, D)
        for i in range(m):
            for t in range(T):
                row = dxs[t * m + i]
                for d in range(dx.shape[2]):
                    dx[n0 + i, t, d] = row[d]


@nb.jit
def add_sums(s, dW, dU, db):
    """∂C/∂W, ∂C/∂U and ∂C/∂b: the blocks' sums, added in order."""
    add_blocks(s.dW_parts, dW)
    add_blocks(s.dU_parts, dU)
    add_blocks(s.db_parts, db)
