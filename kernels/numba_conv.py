"""The convolution and pooling kernels of ``numpy_conv``, compiled with Numba.

The names and equations are ``numpy_conv``'s; each kernel writes into the array it is given, so a
training loop that allocates its buffers once allocates nothing per step. Inputs arrive padded,
as in ``numpy_conv`` (`numpy_conv.pad`).

The sums are the same; the order they are taken in is chosen for memory, and every entry is
indexed directly rather than through a view of its row, which keeps the innermost loops free
for the compiler to vectorise. The forward pass and
the weight gradient run over output positions with the filters innermost, where both W and z
are contiguous. The input gradient is the transpose of the forward pass: NumPy gathers it as a
full correlation of the dilated δ with the flipped kernel, while here every window's
Σ_o δ[n,i,j,o] W[p,q,c,o] is scattered back to x[n, i·s+p, j·s+q, c] — the same sum, without
building the dilated δ. Max pooling keeps the position of each window's first maximum, so its
gradient routes δ without searching the window again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

jit = njit(cache=True, nogil=True, error_model="numpy")


@jit
def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, z: np.ndarray) -> None:
    """z[n,i,j,o] = Σ_{p,q,c} x[n, i·s+p, j·s+q, c] W[p,q,c,o] + b[o] (b of zeros: no bias)."""
    n_samples, rows, cols, n_out = z.shape
    kh, kw, n_in, _ = W.shape
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for o in range(n_out):
                    z[n, i, j, o] = b[o]
                for p in range(kh):
                    for q in range(kw):
                        for c in range(n_in):
                            value = x[n, i * stride + p, j * stride + q, c]
                            for o in range(n_out):
                                z[n, i, j, o] += value * W[p, q, c, o]


@jit
def conv2d_grads(
    x: np.ndarray, delta: np.ndarray, stride: int, dW: np.ndarray, db: np.ndarray
) -> None:
    """∂C/∂W[p,q,c,o] = Σ_{n,i,j} x[n, i·s+p, j·s+q, c] δ[n,i,j,o];  ∂C/∂b = Σ δ."""
    n_samples, rows, cols, n_out = delta.shape
    kh, kw, n_in, _ = dW.shape
    dW[:] = 0
    db[:] = 0
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for o in range(n_out):
                    db[o] += delta[n, i, j, o]
                for p in range(kh):
                    for q in range(kw):
                        for c in range(n_in):
                            value = x[n, i * stride + p, j * stride + q, c]
                            for o in range(n_out):
                                dW[p, q, c, o] += value * delta[n, i, j, o]


@jit
def conv2d_input_grad(delta: np.ndarray, W: np.ndarray, stride: int, dx: np.ndarray) -> None:
    """∂C/∂x_padded: Σ_o δ[n,i,j,o] W[p,q,c,o] added to x[n, i·s+p, j·s+q, c] for every window;
    entries no window reaches stay 0."""
    n_samples, rows, cols, n_out = delta.shape
    kh, kw, n_in, _ = W.shape
    dx[:] = 0
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for p in range(kh):
                    for q in range(kw):
                        for c in range(n_in):
                            total = delta[n, i, j, 0] * W[p, q, c, 0]
                            for o in range(1, n_out):
                                total += delta[n, i, j, o] * W[p, q, c, o]
                            dx[n, i * stride + p, j * stride + q, c] += total


@jit
def max_pool(x: np.ndarray, size: int, stride: int, y: np.ndarray, first: np.ndarray) -> None:
    """y = the maximum of each window; ``first`` its position p·size + q, the first in
    row-major order among equals."""
    n_samples, rows, cols, channels = y.shape
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    best, where = x[n, i * stride, j * stride, c], 0
                    for p in range(size):
                        for q in range(size):
                            value = x[n, i * stride + p, j * stride + q, c]
                            if value > best:  # strictly larger: a tie keeps the first
                                best, where = value, p * size + q
                    y[n, i, j, c] = best
                    first[n, i, j, c] = where


@jit
def max_pool_grad(
    delta: np.ndarray, first: np.ndarray, size: int, stride: int, dx: np.ndarray
) -> None:
    """δ of each window added to its first maximum."""
    n_samples, rows, cols, channels = delta.shape
    dx[:] = 0
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    p, q = divmod(first[n, i, j, c], size)
                    dx[n, i * stride + p, j * stride + q, c] += delta[n, i, j, c]


@jit
def avg_pool(x: np.ndarray, size: int, stride: int, y: np.ndarray) -> None:
    n_samples, rows, cols, channels = y.shape
    share = y.dtype.type(1) / y.dtype.type(size * size)
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    total = y.dtype.type(0)
                    for p in range(size):
                        for q in range(size):
                            total += x[n, i * stride + p, j * stride + q, c]
                    y[n, i, j, c] = total * share


@jit
def avg_pool_grad(delta: np.ndarray, size: int, stride: int, dx: np.ndarray) -> None:
    """δ / size² added to every entry of its window."""
    n_samples, rows, cols, channels = delta.shape
    share = dx.dtype.type(1) / dx.dtype.type(size * size)
    dx[:] = 0
    for n in range(n_samples):
        for i in range(rows):
            for j in range(cols):
                for c in range(channels):
                    spread = delta[n, i, j, c] * share
                    for p in range(size):
                        for q in range(size):
                            dx[n, i * stride + p, j * stride + q, c] += spread
