"""Convolution and pooling backpropagation in NumPy: the derivation, one small function per
equation.

Images are channels-last, x of shape (N, H, W, C); a Conv2D kernel is (kh, kw, C, O), Keras's
layout. With stride s and x already padded (`pad`), output position (i, j) of filter o sees
the window starting at (i·s, j·s):

    z[n,i,j,o] = Σ_{p,q,c} x[n,i·s+p,j·s+q,c] W[p,q,c,o] + b[o]   (N, Ho, Wo, O)   conv2d
    ∂C/∂b[o] = Σ_{n,i,j} δ[n,i,j,o]                               (O,)             conv2d_grads
    ∂C/∂W[p,q,c,o] = Σ_{n,i,j} x[n,i·s+p,j·s+q,c] δ[n,i,j,o]      (kh, kw, C, O)   conv2d_grads
        — a correlation of the input with the delta
    ∂C/∂x = the dilated δ (s − 1 zeros between entries), padded   (N, H, W, C)     conv2d_input_grad
        by k − 1 on each side, correlated with the kernel flipped
        in both spatial axes and its channels transposed

The same three products through im2col — every window of x unrolled into a row of
``cols`` (N·Ho·Wo, kh·kw·C) — are `im2col`, `conv2d_im2col`, `conv2d_grads_im2col` and
`conv2d_input_grad_im2col` (col2im scatter-adds each row back into its window).

Pooling windows of size k and stride s (Keras's default s = k, no padding):

    max:  y = max over the window;   ∂C/∂x = δ routed to the window's first maximum
          (row-major order within the window: ties go to the first)       max_pool, first_maxima,
                                                                           max_pool_grad
    avg:  y = mean over the window;  ∂C/∂x = δ / k² spread over the window avg_pool, avg_pool_grad
    flatten: (N, H, W, C) → (N, H·W·C) in row-major order, as Keras's Flatten

"same" padding is Keras's: the output has ⌈H / s⌉ rows, and the rows of padding it needs are
split with the extra one at the bottom (and right).
"""

from __future__ import annotations

import functools
import math

import numpy as np

# --- padding -----------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras's "same" padding of one axis: (before, after), the odd one after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def padding(shape: tuple[int, ...], kernel: tuple[int, int], stride: int, mode: str) -> tuple:
    """The (top, bottom), (left, right) padding of an (N, H, W, C) input."""
    if mode == "valid":
        return (0, 0), (0, 0)
    if mode == "same":
        return tuple(same_padding(shape[1 + a], kernel[a], stride) for a in (0, 1))
    raise ValueError(f"padding must be 'valid' or 'same'; got {mode!r}")


def pad(x: np.ndarray, pads: tuple) -> np.ndarray:
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # (N, H+t+b, W+l+r, C)


def output_size(size: int, kernel: int, stride: int) -> int:
    """Windows of ``kernel`` at ``stride`` that fit in ``size`` (padded) positions."""
    return (size - kernel) // stride + 1


def window(x: np.ndarray, p: int, q: int, stride: int, out: tuple[int, int]) -> np.ndarray:
    """x[:, i·s+p, j·s+q, :] for every output position (i, j): the entries that kernel
    position (p, q) meets."""
    return x[
        :, p : p + stride * (out[0] - 1) + 1 : stride, q : q + stride * (out[1] - 1) + 1 : stride
    ]


# --- convolution, written directly -------------------------------------------------------------


def conv2d(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: int) -> np.ndarray:
    """z = Σ_{p,q} x[window p,q] W[p,q] + b on a padded x."""
    kh, kw, _, n_out = W.shape
    out = (output_size(x.shape[1], kh, stride), output_size(x.shape[2], kw, stride))
    z = np.zeros((x.shape[0], *out, n_out), dtype=x.dtype)  # (N, Ho, Wo, O)
    for p in range(kh):
        for q in range(kw):
            z += window(x, p, q, stride, out) @ W[p, q]  # (N, Ho, Wo, C) @ (C, O)
    return z if b is None else z + b


def conv2d_grads(
    x: np.ndarray, delta: np.ndarray, kernel: tuple[int, int], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """∂C/∂W[p,q] = Σ x[window p,q]ᵀ δ and ∂C/∂b = Σ δ, from the padded input."""
    out = delta.shape[1:3]
    n_in, n_out = x.shape[3], delta.shape[3]
    flat_delta = delta.reshape(-1, n_out)  # (N·Ho·Wo, O)
    dW = np.empty((*kernel, n_in, n_out), dtype=x.dtype)
    for p in range(kernel[0]):
        for q in range(kernel[1]):
            dW[p, q] = window(x, p, q, stride, out).reshape(-1, n_in).T @ flat_delta  # (C, O)
    return dW, flat_delta.sum(axis=0)


def dilate(delta: np.ndarray, stride: int) -> np.ndarray:
    """δ with s − 1 zeros between neighbouring entries of each spatial axis."""
    if stride == 1:
        return delta
    n, ho, wo, o = delta.shape
    dilated = np.zeros((n, (ho - 1) * stride + 1, (wo - 1) * stride + 1, o), dtype=delta.dtype)
    dilated[:, ::stride, ::stride] = delta
    return dilated


def conv2d_input_grad(
    delta: np.ndarray, W: np.ndarray, stride: int, padded_shape: tuple[int, ...]
) -> np.ndarray:
    """∂C/∂x_padded: the full correlation of the dilated δ with the flipped kernel."""
    kh, kw = W.shape[:2]
    full = pad(dilate(delta, stride), ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    flipped = W[::-1, ::-1].transpose(0, 1, 3, 2)  # (kh, kw, O, C)
    reached = conv2d(full, flipped, None, 1)  # (N, (Ho−1)s + kh, (Wo−1)s + kw, C)
    # rows and columns of x that no window reaches (a valid stride that does not divide) get 0
    dx = np.zeros(padded_shape, dtype=delta.dtype)
    dx[:, : reached.shape[1], : reached.shape[2]] = reached
    return dx


def unpad(dx: np.ndarray, pads: tuple) -> np.ndarray:
    """The gradient of the unpadded input: the padding's rows and columns dropped."""
    (top, bottom), (left, right) = pads
    return dx[:, top : dx.shape[1] - bottom, left : dx.shape[2] - right]


# --- convolution through im2col ----------------------------------------------------------------


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: int) -> np.ndarray:
    """Every window of the padded x as a row, its entries in (p, q, c) order, W's order."""
    out = (output_size(x.shape[1], kernel[0], stride), output_size(x.shape[2], kernel[1], stride))
    patches = [window(x, p, q, stride, out) for p in range(kernel[0]) for q in range(kernel[1])]
    cols = np.stack(patches, axis=3)  # (N, Ho, Wo, kh·kw, C)
    return cols.reshape(x.shape[0] * out[0] * out[1], -1)  # (N·Ho·Wo, kh·kw·C)


def conv2d_im2col(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, stride: int) -> np.ndarray:
    kh, kw, _, n_out = W.shape
    out = (output_size(x.shape[1], kh, stride), output_size(x.shape[2], kw, stride))
    z = im2col(x, (kh, kw), stride) @ W.reshape(-1, n_out)  # (N·Ho·Wo, O)
    z = z.reshape(x.shape[0], *out, n_out)
    return z if b is None else z + b


def conv2d_grads_im2col(
    x: np.ndarray, delta: np.ndarray, kernel: tuple[int, int], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    flat_delta = delta.reshape(-1, delta.shape[3])  # (N·Ho·Wo, O)
    dW = im2col(x, kernel, stride).T @ flat_delta  # (kh·kw·C, O)
    return dW.reshape(*kernel, x.shape[3], -1), flat_delta.sum(axis=0)


def conv2d_input_grad_im2col(
    delta: np.ndarray, W: np.ndarray, stride: int, padded_shape: tuple[int, ...]
) -> np.ndarray:
    """col2im of δ Wᵀ: each row of ∂C/∂cols added back into its window of x."""
    kh, kw, n_in, n_out = W.shape
    n, ho, wo, _ = delta.shape
    dcols = (delta.reshape(-1, n_out) @ W.reshape(-1, n_out).T).reshape(n, ho, wo, kh, kw, n_in)
    dx = np.zeros(padded_shape, dtype=delta.dtype)
    for p in range(kh):
        for q in range(kw):
            window(dx, p, q, stride, (ho, wo))[...] += dcols[:, :, :, p, q]
    return dx


# --- pooling -----------------------------------------------------------------------------------


def _windows(x: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    """The entries each window position (p, q) meets, as views, k = p·size + q: size² arrays
    (N, Ho, Wo, C)."""
    out = (output_size(x.shape[1], size, stride), output_size(x.shape[2], size, stride))
    return [window(x, p, q, stride, out) for p in range(size) for q in range(size)]


def max_pool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    return functools.reduce(np.maximum, _windows(x, size, stride))  # (N, Ho, Wo, C)


def first_maxima(x: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    """For each window position k, where it holds its window's first maximum: the entries
    equal to the window's maximum that no earlier position already holds. size² boolean
    arrays (N, Ho, Wo, C), each window True in exactly one of them."""
    windows = _windows(x, size, stride)
    largest = functools.reduce(np.maximum, windows)
    taken = np.zeros(largest.shape, bool)
    firsts = []
    for entries in windows:
        first = (entries == largest) & ~taken
        taken |= first
        firsts.append(first)
    return firsts


def max_pool_grad(x: np.ndarray, delta: np.ndarray, size: int, stride: int) -> np.ndarray:
    """δ routed to the first maximum of each window."""
    dx = np.zeros_like(x)
    for k, first in enumerate(first_maxima(x, size, stride)):
        p, q = divmod(k, size)
        window(dx, p, q, stride, delta.shape[1:3])[...] += np.where(first, delta, 0)
    return dx


def avg_pool(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    return functools.reduce(np.add, _windows(x, size, stride)) / (size * size)  # (N, Ho, Wo, C)


def avg_pool_grad(x: np.ndarray, delta: np.ndarray, size: int, stride: int) -> np.ndarray:
    dx = np.zeros_like(x)
    share = delta / (size * size)
    for p in range(size):
        for q in range(size):
            window(dx, p, q, stride, delta.shape[1:3])[...] += share
    return dx


def flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)  # (N, H·W·C)


def flatten_grad(delta: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return delta.reshape(shape)  # (N, H, W, C)
