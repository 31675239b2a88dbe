"""Recurrent layers in NumPy: SimpleRNN and LSTM through time and back (backpropagation through
time), one small function per equation, in Keras's conventions.

A sequence x (N, T, D) runs through the layer one step at a time from zero states, h_0 = 0 (and
c_0 = 0 for an LSTM). The layer returns every h_t (N, T, H) or only the last, h_T (N, H).

SimpleRNN, params W (D, H), U (H, H), b (H,), and an activation f with its f′(z, h):

    z_t = x_t W + h_{t−1} U + b                                 (N, H)      rnn_step
    h_t = f(z_t)                                                (N, H)

LSTM, params W (D, 4H), U (H, 4H), b (4H,), the four blocks in Keras's order i, f, c, o:

    z_t = x_t W + h_{t−1} U + b                                 (N, 4H)     lstm_step
    i = σ(z_i),  f = σ(z_f),  c̃ = tanh(z_c),  o = σ(z_o)       (N, H) each gates
    c_t = f ⊙ c_{t−1} + i ⊙ c̃                                  (N, H)      cell
    h_t = o ⊙ tanh(c_t)                                         (N, H)

Backward, from g_t = ∂C/∂h_t as the layer above sees it (zero but at T when only h_T is
returned), the steps taken in reverse: each step's ∂C/∂h_t is g_t plus what h_t feeds into step
t + 1 — the carry, δ_{t+1} Uᵀ — and an LSTM's ∂C/∂c_t adds f_{t+1} ⊙ ∂C/∂c_{t+1} the same way.

    dh = g_t + carry_h                                          (N, H)      (the carry)
    SimpleRNN: δ_t = dh ⊙ f′(z_t, h_t)                          (N, H)      rnn_step_backward
    LSTM:      dc = carry_c + dh ⊙ o ⊙ (1 − tanh²(c_t))         (N, H)      cell_backward
               di = dc ⊙ c̃,  df = dc ⊙ c_{t−1},  dc̃ = dc ⊙ i,  do = dh ⊙ tanh(c_t)
               δ_t = [di ⊙ i(1 − i), df ⊙ f(1 − f), dc̃ ⊙ (1 − c̃²), do ⊙ o(1 − o)]
                                                                (N, 4H)     gates_backward
               carry_c = dc ⊙ f                                 (N, H)
    ∂C/∂W += x_tᵀ δ_t,  ∂C/∂U += h_{t−1}ᵀ δ_t,  ∂C/∂b += Σ_n δ_t          step_grads
    ∂C/∂x_t = δ_t Wᵀ  (N, D),  carry_h = δ_t Uᵀ  (N, H)

The sums over steps are what makes it backpropagation *through time*: W, U and b are shared by
every step, so each step adds its share, and dropping the carry (truncating BPTT to one step)
or reading h_t where h_{t−1} belongs in ∂C/∂U are the classic slips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

#: An activation and its derivative from (z, f(z)), as `numpy_backprop.ACTIVATIONS` holds them:
#: the caller passes the registry's, a SimpleRNN's f and f′ and an LSTM's σ.
Function = Callable[[np.ndarray], np.ndarray]
Prime = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Sequence(NamedTuple):
    """What the backward needs of a SimpleRNN's pass through time: the inputs x (N, T, D),
    every state h_0 … h_T (N, T + 1, H) and every pre-activation z_1 … z_T (N, T, H)."""

    x: np.ndarray
    h: np.ndarray
    z: np.ndarray


class CellSequence(NamedTuple):
    """An LSTM's: x, h and z (N, T, 4H) as a `Sequence`'s, every cell state c_0 … c_T
    (N, T + 1, H) and the gates i, f, c̃, o of each step (N, T, 4H)."""

    x: np.ndarray
    h: np.ndarray
    z: np.ndarray
    c: np.ndarray
    gates: np.ndarray


class Grads(NamedTuple):
    """∂C/∂W, ∂C/∂U, ∂C/∂b and ∂C/∂x (N, T, D); and every step's δ_t (N, T, H or 4H), kept
    for a trace."""

    W: np.ndarray
    U: np.ndarray
    b: np.ndarray
    x: np.ndarray
    delta: np.ndarray


# --- SimpleRNN ---------------------------------------------------------------------------------


def rnn_step(
    x_t: np.ndarray, h_prev: np.ndarray, W: np.ndarray, U: np.ndarray, b: np.ndarray
) -> np.ndarray:
    return x_t @ W + h_prev @ U + b  # z_t = x_t W + h_{t−1} U + b, (N, H)


def rnn_forward(
    x: np.ndarray, W: np.ndarray, U: np.ndarray, b: np.ndarray, f: Function
) -> Sequence:
    """Every h_t of a SimpleRNN over x (N, T, D), from h_0 = 0."""
    N, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((N, T + 1, H), x.dtype)  # h[:, 0] = h_0 = 0
    z = np.empty((N, T, H), x.dtype)
    for t in range(T):
        z[:, t] = rnn_step(x[:, t], h[:, t], W, U, b)
        h[:, t + 1] = f(z[:, t])  # h_t = f(z_t)
    return Sequence(x, h, z)


def rnn_step_backward(dh: np.ndarray, z_t: np.ndarray, h_t: np.ndarray, prime: Prime) -> np.ndarray:
    return dh * prime(z_t, h_t)  # δ_t = dh ⊙ f′(z_t), (N, H)


def rnn_backward(
    seq: Sequence, grad: np.ndarray, W: np.ndarray, U: np.ndarray, prime: Prime
) -> Grads:
    """BPTT through a SimpleRNN from ``grad``, ∂C/∂h_t for every step (N, T, H)."""
    grads = zero_grads(seq.x, W, U)
    carry = np.zeros_like(seq.h[:, 0])  # what h_T feeds into a step T + 1: nothing
    for t in reversed(range(seq.x.shape[1])):
        dh = grad[:, t] + carry
        delta = rnn_step_backward(dh, seq.z[:, t], seq.h[:, t + 1], prime)
        carry = step_grads(grads, delta, seq.x[:, t], seq.h[:, t], W, U, t)
    return grads


# --- LSTM --------------------------------------------------------------------------------------


def gates(z_t: np.ndarray, sigmoid: Function) -> np.ndarray:
    """i, f, c̃, o side by side as z_t's blocks are, (N, 4H)."""
    z_i, z_f, z_c, z_o = np.split(z_t, 4, axis=-1)  # Keras's order
    return np.concatenate([sigmoid(z_i), sigmoid(z_f), np.tanh(z_c), sigmoid(z_o)], axis=-1)


def cell(c_prev: np.ndarray, gates_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, f, c_tilde, o = np.split(gates_t, 4, axis=-1)
    c_t = f * c_prev + i * c_tilde  # c_t = f ⊙ c_{t−1} + i ⊙ c̃
    return c_t, o * np.tanh(c_t)  # h_t = o ⊙ tanh(c_t)


def lstm_forward(
    x: np.ndarray, W: np.ndarray, U: np.ndarray, b: np.ndarray, sigmoid: Function
) -> CellSequence:
    """Every h_t and c_t of an LSTM over x (N, T, D), from h_0 = c_0 = 0."""
    N, T, _ = x.shape
    H = U.shape[0]
    h, c = np.zeros((N, T + 1, H), x.dtype), np.zeros((N, T + 1, H), x.dtype)
    z, g = np.empty((N, T, 4 * H), x.dtype), np.empty((N, T, 4 * H), x.dtype)
    for t in range(T):
        z[:, t] = rnn_step(x[:, t], h[:, t], W, U, b)  # the same affine step, 4H wide
        g[:, t] = gates(z[:, t], sigmoid)
        c[:, t + 1], h[:, t + 1] = cell(c[:, t], g[:, t])
    return CellSequence(x, h, z, c, g)


def cell_backward(
    dh: np.ndarray, carry_c: np.ndarray, c_t: np.ndarray, gates_t: np.ndarray
) -> np.ndarray:
    o = np.split(gates_t, 4, axis=-1)[3]
    tanh_c = np.tanh(c_t)
    return carry_c + dh * o * (1 - tanh_c * tanh_c)  # dc = carry + dh ⊙ o ⊙ tanh′(c_t), (N, H)


def gates_backward(
    dh: np.ndarray, dc: np.ndarray, c_prev: np.ndarray, c_t: np.ndarray, gates_t: np.ndarray
) -> np.ndarray:
    i, f, c_tilde, o = np.split(gates_t, 4, axis=-1)
    di, df, dc_tilde, do = dc * c_tilde, dc * c_prev, dc * i, dh * np.tanh(c_t)
    one = gates_t.dtype.type(1)
    return np.concatenate(  # δ_t = ∂C/∂z_t through σ′ = σ(1 − σ) and tanh′ = 1 − tanh², (N, 4H)
        [di * i * (one - i), df * f * (one - f), dc_tilde * (one - c_tilde * c_tilde),
         do * o * (one - o)], axis=-1,
    )  # fmt: skip


def lstm_backward(seq: CellSequence, grad: np.ndarray, W: np.ndarray, U: np.ndarray) -> Grads:
    """BPTT through an LSTM from ``grad``, ∂C/∂h_t for every step (N, T, H)."""
    grads = zero_grads(seq.x, W, U)
    carry_h, carry_c = np.zeros_like(seq.h[:, 0]), np.zeros_like(seq.c[:, 0])
    for t in reversed(range(seq.x.shape[1])):
        dh = grad[:, t] + carry_h
        dc = cell_backward(dh, carry_c, seq.c[:, t + 1], seq.gates[:, t])
        delta = gates_backward(dh, dc, seq.c[:, t], seq.c[:, t + 1], seq.gates[:, t])
        carry_c = dc * np.split(seq.gates[:, t], 4, axis=-1)[1]  # ∂C/∂c_{t−1} = dc ⊙ f
        carry_h = step_grads(grads, delta, seq.x[:, t], seq.h[:, t], W, U, t)
    return grads


# --- shared by both ----------------------------------------------------------------------------


def zero_grads(x: np.ndarray, W: np.ndarray, U: np.ndarray) -> Grads:
    """Room for the sums over steps, zeroed, and for every step's δ."""
    width = U.shape[1]
    return Grads(np.zeros_like(W), np.zeros_like(U), np.zeros(width, x.dtype), np.zeros_like(x),
                 np.zeros((*x.shape[:2], width), x.dtype))  # fmt: skip


def step_grads(
    grads: Grads, delta: np.ndarray, x_t: np.ndarray, h_prev: np.ndarray, W: np.ndarray,
    U: np.ndarray, t: int,
) -> np.ndarray:  # fmt: skip
    """Step t's share of ∂C/∂W, ∂C/∂U and ∂C/∂b, added in place, its ∂C/∂x_t and δ_t; returns
    the carry δ_t Uᵀ, ∂C/∂h_{t−1} through step t."""
    grads.delta[:, t] = delta
    grads.W[...] += x_t.T @ delta  # (D, N) @ (N, H or 4H)
    grads.U[...] += h_prev.T @ delta  # h_{t−1}, not h_t: the state the step read
    grads.b[...] += delta.sum(axis=0)
    grads.x[:, t] = delta @ W.T  # (N, H or 4H) @ (H or 4H, D) -> (N, D)
    return delta @ U.T  # (N, H)


def returned(seq: Sequence | CellSequence, return_sequences: bool) -> np.ndarray:
    """The layer's output: every h_t (N, T, H), or h_T (N, H)."""
    return seq.h[:, 1:] if return_sequences else seq.h[:, -1]


def spread(grad: np.ndarray, seq: Sequence | CellSequence) -> np.ndarray:
    """∂C/∂h_t for every step (N, T, H) from the gradient of the layer's output: itself for
    every h_t returned, or zero but at the last step when only h_T was."""
    if grad.ndim == 3:
        return grad
    every = np.zeros_like(seq.h[:, 1:])
    every[:, -1] = grad
    return every
