"""The recurrent layers of `numpy_recurrent`, compiled with Numba: SimpleRNN and LSTM through time
and back, each pass one compiled call with the time loop inside.

A layer keeps its sequences time-major — x_t, z_t, h_t and δ_t each one (N, ·) block of rows —
so that a step's product h_{t−1} U is one product of contiguous rows, and what does not depend
on the previous step is done for all T·N rows at once:

    xs = x time-major                        (T, N, D)                  to_time_major
    z = xs W                                 (T·N, G), G = blocks·H     one product, every step
    z_t += h_{t−1} U + b                     (N, G)                     add_recurrence
    SimpleRNN: h_t = f(z_t)                  (N, H)                     rnn_cells
    LSTM: i, f, c̃, o = σ, σ, tanh, σ of z_t's blocks  (N, 4H)          lstm_gates
          c_t = f ⊙ c_{t−1} + i ⊙ c̃,  h_t = o ⊙ tanh(c_t)  (N, H)     lstm_cells
    backward, t = T … 1: dh = g_t + δ_{t+1} Uᵀ                          add_from_above
          δ_t as numpy_recurrent                                        rnn_deltas, lstm_deltas
    ∂C/∂W = xsᵀ δ,  ∂C/∂U = [h_0 … h_{T−1}]ᵀ δ,  ∂C/∂b = Σ δ            one product each
    ∂C/∂x = δ Wᵀ, back to (N, T, D)

The sums over steps run as one product over every row, where `numpy_recurrent` adds each
step's share in turn: the same sums in another order. A layer that returns only h_T takes its
output and gradient as (N, 1, H), so that both kinds compile once per dtype.

The element-wise passes run over contiguous runs of one row — an LSTM's four blocks each a
view indexed from 0 (`blocks`) — so that LLVM vectorises them, σ through `exp_normal` and
tanh through `numba_backprop.tanh_of`: an LSTM step's gates on a (64, 128) batch take about
3 µs, against 20 µs one exponential at a time. They run on one thread: entering a parallel
region costs about 1 µs (OpenMP, measured on the 2-core machine), so halving a step's few µs of
element-wise work over two threads, three regions a step, would save nothing; the products take
BLAS's threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gradcheck.kernels import numba_backprop as nb


class Steps(NamedTuple):
    """A recurrent layer's buffers for one batch size, time-major. ``*_rows`` are views of the
    same memory as (T·N, ·) matrices. A SimpleRNN's ``c``, ``carry_c`` are empty (an LSTM's
    gates are kept in ``z``, activated)."""

    xs: np.ndarray  # (T, N, D)
    xs_rows: np.ndarray  # (T·N, D)
    z: np.ndarray  # (T, N, G): z_t; an LSTM's i, f, c̃, o once activated
    z_rows: np.ndarray  # (T·N, G)
    h: np.ndarray  # (T + 1, N, H): h_0 = 0 … h_T
    h_rows: np.ndarray  # (T·N, H): h_0 … h_{T−1}, the states each step read
    c: np.ndarray  # (T + 1, N, H): an LSTM's c_0 = 0 … c_T
    tanh_c: np.ndarray  # (T, N, H): an LSTM's tanh(c_1) … tanh(c_T)
    delta: np.ndarray  # (T, N, G)
    delta_rows: np.ndarray  # (T·N, G)
    hu: np.ndarray  # (N, G): h_{t−1} U
    carry: np.ndarray  # (N, H): δ_{t+1} Uᵀ
    carry_c: np.ndarray  # (N, H): an LSTM's ∂C/∂c_t through step t + 1
    dxs_rows: np.ndarray  # (T·N, D): ∂C/∂x, time-major
    normal: np.ndarray  # (N,) bool: whether a row's e^{−|z|} are all normal floats


def steps(x_shape: tuple[int, ...], units: int, blocks: int, dtype: np.dtype) -> Steps:
    """Buffers for a batch x of ``x_shape`` (N, T, D)."""
    N, T, D = x_shape
    G, lstm = blocks * units, blocks == 4
    xs, z = np.empty((T, N, D), dtype), np.empty((T, N, G), dtype)
    h = np.zeros((T + 1, N, units), dtype)
    c = np.zeros((T + 1 if lstm else 0, N, units), dtype)
    tanh_c = np.empty((T if lstm else 0, N, units), dtype)
    delta = np.empty((T, N, G), dtype)
    return Steps(
        xs, xs.reshape(T * N, D), z, z.reshape(T * N, G), h, h[:T].reshape(T * N, units), c,
        tanh_c, delta, delta.reshape(T * N, G), np.empty((N, G), dtype),
        np.empty((N, units), dtype), np.empty((N if lstm else 0, units), dtype),
        np.empty((T * N, D), dtype), np.empty(N, np.bool_),
    )  # fmt: skip


# --- forward -------------------------------------------------------------------------------------


@nb.jit
def to_time_major(x, xs):
    """xs (T, N, D) ← x (N, T, D); element by element, which is cheaper than a slice's copy."""
    N, T, D = x.shape
    for n in range(N):
        for t in range(T):
            for d in range(D):
                xs[t, n, d] = x[n, t, d]


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
    h[:] = z
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


@nb.jit
def forward(lstm, activation, x, W, U, b, s, out, sequences):
    """The layer over x (N, T, D) from zero states: every h_t into ``out`` (N, T, H) with
    ``sequences``, else h_T into ``out`` (N, 1, H)."""
    if not lstm:  # an LSTM's activations are fixed; its code is -1
        nb.check_entrywise(activation)
    to_time_major(x, s.xs)
    nb.matmul(s.xs_rows, W, s.z_rows)  # (T·N, D) @ (D, G): every step's x_t W at once
    T = x.shape[1]
    for t in range(T):
        if t > 0:
            nb.matmul(s.h[t], U, s.hu)  # (N, H) @ (H, G) -> (N, G)
        if lstm:
            lstm_gates(s.z[t], s.hu, b, t == 0, s.normal)
            lstm_cells(s.z[t], s.c[t], s.c[t + 1], s.tanh_c[t], s.h[t + 1])
        else:
            rnn_cells(activation, s.z[t], s.hu, b, t == 0, s.h[t + 1])
    for n in range(x.shape[0]):
        for t in range(T if sequences else 1):
            step = t + 1 if sequences else T
            for j in range(out.shape[2]):
                out[n, t, j] = s.h[step, n, j]


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
    delta[:] = dh
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


@nb.jit
def backward(lstm, activation, grad, sequences, W, U, s, dW, dU, db, dx, input_grad):
    """BPTT from ``grad``, ∂C/∂(the output) as `forward` wrote it: ∂C/∂W, ∂C/∂U, ∂C/∂b and,
    with ``input_grad``, ∂C/∂x (N, T, D). ``carry`` holds dh = δ_{t+1} Uᵀ + ∂C/∂h_t from above,
    ``carry_c`` an LSTM's dc."""
    T = s.z.shape[0]
    s.carry[:] = 0
    s.carry_c[:] = 0
    for t in range(T - 1, -1, -1):
        add_from_above(s.carry, grad, sequences, t, T)
        if lstm:
            lstm_deltas(s.carry, s.carry_c, s.z[t], s.c[t], s.tanh_c[t], s.delta[t])
        else:
            rnn_deltas(activation, s.carry, s.z[t], s.h[t + 1], s.delta[t])
        if t > 0:
            nb.matmul_nt(s.delta[t], U, s.carry)  # (N, G) @ (G, H) -> (N, H)
    nb.matmul_tn(s.xs_rows, s.delta_rows, dW)  # (D, T·N) @ (T·N, G)
    nb.matmul_tn(s.h_rows, s.delta_rows, dU)  # (H, T·N) @ (T·N, G): h_{t−1}, not h_t
    db[:] = 0
    for r in range(s.delta_rows.shape[0]):
        row = s.delta_rows[r]
        for g in range(db.shape[0]):
            db[g] += row[g]
    if input_grad:
        nb.matmul_nt(s.delta_rows, W, s.dxs_rows)  # (T·N, G) @ (G, D)
        N, D = dx.shape[0], dx.shape[2]
        for n in range(N):
            for t in range(T):
                for d in range(D):
                    dx[n, t, d] = s.dxs_rows[t * N + n, d]
