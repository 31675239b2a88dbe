"""The normalisations of ``numpy_norm``, compiled with Numba: the same equations on a batch laid
out as rows, x (R, C) — R = N samples, or N·H·W positions of an image batch.

    BatchNorm: μ, σ² of each column (over the rows); LayerNorm: of each row (over the columns)
    x̂ = (x − μ) r,  r = 1/√(σ² + ε),  y = γ x̂ + β                          *_norm_forward
    ∂C/∂γ = Σ_rows g x̂,  ∂C/∂β = Σ_rows g                                   norm_param_grads
    ∂C/∂x = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)),  ĝ = γ g, the means as above     *_norm_backward
    moving ← m · moving + (1 − m) · the batch's μ or σ² (× R/(R − 1): unbiased)  move_statistics

Each kernel writes into buffers it is given, as `numba_backprop`'s do; constants are made in
the data's dtype. They run on one thread: each reads and writes every value of a layer about
twice, a few microseconds for the catalogue's (64, 128) batches, less than starting Numba's
threads would cost; and the sums run in a fixed order, whatever the number of threads.

A LayerNorm's sums run along a row, and a sum added one entry after another waits for each
addition before the next; LLVM adds in vector registers only where it may change the order. The
row sums are functions of their own that allow it (`reassociating`, as `numba_conv`'s sums over
positions do): a (64, 128) forward went from 7.9 to 1.5 µs in float32, the backward from 5.5 to
2.2. Their order is fixed for the compiled code, the same at every call and on any number of
threads; it differs from an entry-by-entry sum by rounding alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

jit = njit(cache=True, nogil=True, error_model="numpy")
#: For the sums along a row: LLVM may add them in any order (so, in vector registers).
reassociating = njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})


@jit
def batch_norm_forward(x, gamma, beta, epsilon, x_hat, inv_std, mean, var, out):
    """Training: each column's μ and biased σ² over the rows into ``mean`` and ``var`` (C,),
    r into ``inv_std`` (C,), x̂ and y = γ x̂ + β into ``x_hat`` and ``out`` (R, C)."""
    rows, cols = x.shape
    zero, count = x.dtype.type(0), x.dtype.type(rows)
    mean[:] = zero
    for i in range(rows):
        for c in range(cols):
            mean[c] += x[i, c]
    mean /= count
    var[:] = zero
    for i in range(rows):
        for c in range(cols):
            d = x[i, c] - mean[c]
            var[c] += d * d
    var /= count
    eps = x.dtype.type(epsilon)
    for c in range(cols):
        inv_std[c] = x.dtype.type(1) / np.sqrt(var[c] + eps)
    for i in range(rows):
        for c in range(cols):
            x_hat[i, c] = (x[i, c] - mean[c]) * inv_std[c]
            out[i, c] = gamma[c] * x_hat[i, c] + beta[c]


@jit
def batch_norm_inference(x, gamma, beta, moving_mean, moving_var, epsilon, out):
    """Predictions: y = γ (x − moving μ) / √(moving σ² + ε) + β, (R, C)."""
    rows, cols = x.shape
    one, eps = x.dtype.type(1), x.dtype.type(epsilon)
    for i in range(rows):
        for c in range(cols):
            r = one / np.sqrt(moving_var[c] + eps)
            out[i, c] = gamma[c] * ((x[i, c] - moving_mean[c]) * r) + beta[c]


@jit
def layer_norm_forward(x, gamma, beta, epsilon, x_hat, inv_std, out):
    """Each row's μ and biased σ² over its columns; r into ``inv_std`` (R,), x̂ and
    y = γ x̂ + β into ``x_hat`` and ``out`` (R, C)."""
    rows, cols = x.shape
    count, eps = x.dtype.type(cols), x.dtype.type(epsilon)
    for i in range(rows):
        mu = row_sum(x, i) / count
        r = x.dtype.type(1) / np.sqrt(row_square_sum(x, i, mu) / count + eps)
        inv_std[i] = r
        for c in range(cols):
            x_hat[i, c] = (x[i, c] - mu) * r
            out[i, c] = gamma[c] * x_hat[i, c] + beta[c]


@jit
def norm_param_grads(g, x_hat, dgamma, dbeta):
    """∂C/∂γ = Σ_rows g x̂ and ∂C/∂β = Σ_rows g, (C,)."""
    rows, cols = g.shape
    dgamma[:] = g.dtype.type(0)
    dbeta[:] = g.dtype.type(0)
    for i in range(rows):
        for c in range(cols):
            dgamma[c] += g[i, c] * x_hat[i, c]
            dbeta[c] += g[i, c]


@jit
def batch_norm_backward(g, gamma, x_hat, inv_std, dgamma, dbeta, dx):
    """∂C/∂x = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), ĝ = γ g, the means over the rows: they are
    ∂C/∂β γ / R and ∂C/∂γ γ / R."""
    rows, cols = g.shape
    norm_param_grads(g, x_hat, dgamma, dbeta)
    count = g.dtype.type(rows)
    for i in range(rows):
        for c in range(cols):
            mean_g, mean_gx = gamma[c] * dbeta[c] / count, gamma[c] * dgamma[c] / count
            dx[i, c] = inv_std[c] * (gamma[c] * g[i, c] - mean_g - x_hat[i, c] * mean_gx)


@jit
def layer_norm_backward(g, gamma, x_hat, inv_std, dgamma, dbeta, dx):
    """∂C/∂γ and ∂C/∂β (C,), and ∂C/∂x = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), ĝ = γ g, the means
    over each row's columns."""
    rows, cols = g.shape
    norm_param_grads(g, x_hat, dgamma, dbeta)
    count = g.dtype.type(cols)
    for i in range(rows):
        total, total_x = row_scaled_sums(g, gamma, x_hat, i)
        mean_g, mean_gx = total / count, total_x / count
        for c in range(cols):
            dx[i, c] = inv_std[i] * (gamma[c] * g[i, c] - mean_g - x_hat[i, c] * mean_gx)


@jit
def move_statistics(moving_mean, moving_var, mean, var, momentum, unbiased, rows):
    """A BatchNorm's moving statistics moved toward the batch's, in place, (C,); the variance
    toward the unbiased one, R/(R − 1) σ², when ``unbiased``."""
    kept, taken = mean.dtype.type(momentum), mean.dtype.type(1 - momentum)
    scale = mean.dtype.type(rows / (rows - 1)) if unbiased else mean.dtype.type(1)
    for c in range(mean.size):
        moving_mean[c] = moving_mean[c] * kept + mean[c] * taken
        moving_var[c] = moving_var[c] * kept + (var[c] * scale) * taken


# --- the sums along a row, in vector registers ---------------------------------------------------


@reassociating
def row_sum(x, i):
    """Σ_c x_ic."""
    total = x.dtype.type(0)
    for c in range(x.shape[1]):
        total += x[i, c]
    return total


@reassociating
def row_square_sum(x, i, mu):
    """Σ_c (x_ic − μ)²."""
    total = x.dtype.type(0)
    for c in range(x.shape[1]):
        d = x[i, c] - mu
        total += d * d
    return total


@reassociating
def row_scaled_sums(g, gamma, x_hat, i):
    """Σ_c ĝ_ic and Σ_c ĝ_ic x̂_ic, ĝ = γ g."""
    total, total_x = g.dtype.type(0), g.dtype.type(0)
    for c in range(g.shape[1]):
        g_hat = gamma[c] * g[i, c]
        total += g_hat
        total_x += g_hat * x_hat[i, c]
    return total, total_x
