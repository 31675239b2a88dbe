"""A gallery of hand-written layers, the way people write them, and the bugs people make in them.

Each kernel is a pair in the ``(out, cache)`` style — ``forward(*inputs) -> (out, cache)``,
``backward(dout, cache) -> gradients`` — with its inputs at a realistic size, and at least two
realistic bugs: a backward with one thing wrong. :func:`layer_class` turns any of them into a
stateful layer object, the other common style. Images are (N, C, H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --- dense ---------------------------------------------------------------------------------------


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b  # (N, D) @ (D, M) -> (N, M)
    return out, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    return dx, dw, dout.sum(axis=0)


def affine_backward_mean_bias(dout, cache):
    dx, dw, _ = affine_backward(dout, cache)
    return dx, dw, dout.mean(axis=0)  # BUG: averaged where the forward sums


def affine_backward_dw_over_n(dout, cache):
    dx, dw, db = affine_backward(dout, cache)
    return dx, dw / dout.shape[0], db  # BUG: a 1/N the loss does not have


# --- activations ---------------------------------------------------------------------------------


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, x):
    return dout * (x > 0)


def relu_backward_no_mask(dout, x):
    return dout.copy()  # BUG: the mask forgotten


def relu_backward_inverted(dout, x):
    return dout * (x < 0)  # BUG: the mask inverted


ALPHA = 0.01


def leaky_relu_forward(x):
    return np.where(x > 0, x, ALPHA * x), x


def leaky_relu_backward(dout, x):
    return np.where(x > 0, dout, ALPHA * dout)


def leaky_relu_backward_no_slope(dout, x):
    return np.where(x > 0, dout, 0 * dout)  # BUG: relu's backward, the slope forgotten


def leaky_relu_backward_slope_everywhere(dout, x):
    return np.where(x > 0, ALPHA * dout, dout)  # BUG: the branches swapped


def leaky_relu_backward_mask_of_dout(dout, x):
    return np.where(dout > 0, dout, ALPHA * dout)  # BUG: the mask taken from dout, not x


def sigmoid_forward(x):
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return out, out


def sigmoid_backward(dout, out):
    return dout * out * (1 - out)


def sigmoid_backward_of_output(dout, out):
    s = sigmoid_forward(out)[0]
    return dout * s * (1 - s)  # BUG: σ′ applied to the output rather than written through it


def sigmoid_backward_no_prime(dout, out):
    return dout * out  # BUG: the (1 − σ) factor forgotten


def gelu_forward(x):
    from scipy.special import erf

    out = 0.5 * x * (1 + erf(x / np.sqrt(2)))  # the exact GELU, as a hand-written layer has it
    return out, x


def _normal_density(x):
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def gelu_backward(dout, x):
    from scipy.special import erf

    return dout * (0.5 * (1 + erf(x / np.sqrt(2))) + x * _normal_density(x))  # Φ(x) + x φ(x)


def gelu_backward_of_the_tanh_form(dout, x):
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)  # BUG: the tanh form's derivative
    du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)
    return dout * (0.5 * (1 + np.tanh(u)) + 0.5 * x * (1 - np.tanh(u) ** 2) * du)


def gelu_backward_no_density(dout, x):
    from scipy.special import erf

    return dout * 0.5 * (1 + erf(x / np.sqrt(2)))  # BUG: Φ(x) alone, the x φ(x) term forgotten


def tanh_forward(x):
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, out):
    return dout * (1 - out**2)


def tanh_backward_unsquared(dout, out):
    return dout * (1 - out)  # BUG: 1 − tanh, not 1 − tanh²


def tanh_backward_sign(dout, out):
    return dout * (out**2 - 1)  # BUG: the sign


def softmax_forward(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    out = e / e.sum(axis=1, keepdims=True)
    return out, out


def softmax_backward(dout, s):
    return s * (dout - (dout * s).sum(axis=1, keepdims=True))


def softmax_backward_diagonal(dout, s):
    return dout * s * (1 - s)  # BUG: the Jacobian's diagonal only


def softmax_backward_no_sum(dout, s):
    return s * dout  # BUG: the ⟨dout, s⟩ term forgotten


# --- normalisation and dropout -------------------------------------------------------------------

EPSILON = 1e-5


def batchnorm_forward(x, gamma, beta):
    mean, var = x.mean(axis=0), x.var(axis=0)
    inv = 1 / np.sqrt(var + EPSILON)
    xhat = (x - mean) * inv
    return gamma * xhat + beta, (xhat, gamma, inv)


def batchnorm_backward(dout, cache):
    xhat, gamma, inv = cache
    N = dout.shape[0]
    dxhat = dout * gamma
    dx = inv / N * (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def batchnorm_backward_no_mean_terms(dout, cache):
    xhat, gamma, inv = cache
    dx = dout * gamma * inv  # BUG: the gradients through the mean and the variance forgotten
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def batchnorm_backward_dgamma_unnormalised(dout, cache):
    xhat, _, inv = cache
    dx, _, dbeta = batchnorm_backward(dout, cache)
    return dx, (dout * xhat / inv).sum(axis=0), dbeta  # BUG: x − μ where x̂ belongs


def batchnorm_backward_epsilon(dout, cache):
    xhat, gamma, inv = cache
    var = 1 / inv**2 - EPSILON
    inv = 1 / np.sqrt(var + 1e-3)  # BUG: the backward's ε is not the forward's 1e-5
    return batchnorm_backward(dout, (xhat, gamma, inv))


def layernorm_forward(x, gamma, beta):
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    inv = 1 / np.sqrt(var + EPSILON)
    xhat = (x - mean) * inv
    return gamma * xhat + beta, (xhat, gamma, inv)


def layernorm_backward(dout, cache):
    xhat, gamma, inv = cache
    D = dout.shape[1]
    dxhat = dout * gamma
    total, projection = dxhat.sum(axis=1, keepdims=True), (dxhat * xhat).sum(axis=1, keepdims=True)
    dx = inv / D * (D * dxhat - total - xhat * projection)
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def layernorm_backward_batch_axis(dout, cache):
    xhat, gamma, inv = cache
    N = dout.shape[0]
    dxhat = dout * gamma
    # BUG: batch norm's backward, summing over the samples instead of the features
    dx = inv / N * (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def layernorm_backward_no_variance_term(dout, cache):
    xhat, gamma, inv = cache
    D = dout.shape[1]
    dxhat = dout * gamma
    dx = inv / D * (D * dxhat - dxhat.sum(axis=1, keepdims=True))  # BUG: variance term dropped
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def spatial_batchnorm_forward(x, gamma, beta):
    N, C, H, W = x.shape
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache  # channels back in place


def spatial_batchnorm_backward(dout, cache):
    N, C, H, W = dout.shape
    dx, dgamma, dbeta = batchnorm_backward(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache)
    return dx.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_batchnorm_backward_reshaped(dout, cache):
    N, C, H, W = dout.shape
    # BUG: (N, C, H, W) reshaped to rows of channels without moving the channels last
    dx, dgamma, dbeta = batchnorm_backward(dout.reshape(-1, C), cache)
    return dx.reshape(N, C, H, W), dgamma, dbeta


def spatial_batchnorm_backward_per_sample(dout, cache):
    N, C, H, W = dout.shape
    rows = dout.transpose(0, 2, 3, 1).reshape(-1, C)
    xhat, gamma, inv = cache
    # BUG: the means over each sample's H·W positions, not over the batch's N·H·W
    dxhat = (rows * gamma).reshape(N, H * W, C)
    xh = xhat.reshape(N, H * W, C)
    dx = inv * (
        dxhat - dxhat.mean(axis=1, keepdims=True) - xh * (dxhat * xh).mean(1, keepdims=True)
    )
    dx = dx.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return dx, (rows * xhat).sum(axis=0), rows.sum(axis=0)


KEEP = 0.8


def dropout_forward(x, mask):
    return x * mask / KEEP, mask  # inverted dropout with a given mask of 0s and 1s


def dropout_backward(dout, mask):
    return dout * mask / KEEP


def dropout_backward_no_mask(dout, mask):
    return dout / KEEP  # BUG: the dropped units get a gradient


def dropout_backward_no_scale(dout, mask):
    return dout * mask  # BUG: the 1/p of inverted dropout forgotten


# --- convolution ---------------------------------------------------------------------------------


def embedding_forward(ids, W):
    return W[ids], (ids, W.shape)  # (N, T) ids -> (N, T, D)


def embedding_backward(dout, cache):
    ids, shape = cache
    dW = np.zeros(shape, dout.dtype)
    np.add.at(dW, ids, dout)  # an id met twice gets both gradients
    return (dW,)


def embedding_backward_buffered(dout, cache):
    ids, shape = cache
    dW = np.zeros(shape, dout.dtype)
    dW[ids] += dout  # BUG: buffered: an id met twice keeps one position's gradient
    return (dW,)


def embedding_backward_mean_of_repeats(dout, cache):
    ids, shape = cache
    dW = np.zeros(shape, dout.dtype)
    np.add.at(dW, ids, dout)
    counts = np.bincount(ids.ravel(), minlength=shape[0])[:, None]
    return (dW / np.maximum(counts, 1),)  # BUG: repeated ids averaged, not summed


def _padded(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def conv_forward_naive(x, w, b, conv_param):
    """Direct correlation: for each kernel offset (i, j), the strided input slice it sees."""
    stride, pad = conv_param["stride"], conv_param["pad"]
    F, _, kh, kw = w.shape
    xp = _padded(x, pad)
    Ho, Wo = _out_size(x.shape[2], kh, stride, pad), _out_size(x.shape[3], kw, stride, pad)
    out = np.zeros((x.shape[0], F, Ho, Wo), np.result_type(x, w))
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]
            out += np.einsum("nchw,fc->nfhw", window, w[:, :, i, j])  # (N, C, Ho, Wo) -> (N, F, …)
    return out + b[None, :, None, None], (x, w, conv_param)


def conv_backward_naive(dout, cache, flip_bug=False, crop_bug=False):
    x, w, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    kh, kw = w.shape[2:]
    Ho, Wo = dout.shape[2:]
    xp = _padded(x, pad)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            ii, jj = (kh - 1 - i, kw - 1 - j) if flip_bug else (i, j)
            sl = (slice(None), slice(None), slice(i, i + stride * Ho, stride))
            sl += (slice(j, j + stride * Wo, stride),)
            dw[:, :, i, j] = np.einsum("nchw,nfhw->fc", xp[sl], dout)
            dxp[sl] += np.einsum("nfhw,fc->nchw", dout, w[:, :, ii, jj])
    start = pad + 1 if crop_bug else pad
    H, W = x.shape[2:]
    dx = dxp[:, :, start : start + H, start : start + W]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv_backward_naive_flipped(dout, cache):
    return conv_backward_naive(dout, cache, flip_bug=True)  # BUG: the kernel flipped in dx


def conv_backward_naive_off_by_one(dout, cache):
    return conv_backward_naive(dout, cache, crop_bug=True)  # BUG: the padding cropped one off


def _im2col(xp, kh, kw, stride, Ho, Wo):
    """(N, C, H, W) -> (N·Ho·Wo, C·kh·kw), one row per output position."""
    N, C = xp.shape[:2]
    cols = np.empty((N, Ho, Wo, C, kh, kw), xp.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]
            cols[:, :, :, :, i, j] = window.transpose(0, 2, 3, 1)
    return cols.reshape(N * Ho * Wo, C * kh * kw)


def _col2im(cols, shape, kh, kw, stride, Ho, Wo, accumulate=True):
    """The adjoint of _im2col: each row's values added back where they came from."""
    N, C = shape[:2]
    xp = np.zeros(shape, cols.dtype)
    cols = cols.reshape(N, Ho, Wo, C, kh, kw)
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None), slice(i, i + stride * Ho, stride))
            sl += (slice(j, j + stride * Wo, stride),)
            if accumulate:
                xp[sl] += cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
            else:
                xp[sl] = cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)  # overlaps overwritten
    return xp


def conv_forward_im2col(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    F, _, kh, kw = w.shape
    N, _, H, W = x.shape
    Ho, Wo = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    cols = _im2col(_padded(x, pad), kh, kw, stride, Ho, Wo)
    out = cols @ w.reshape(F, -1).T + b  # (N·Ho·Wo, C·kh·kw) @ (C·kh·kw, F)
    out = out.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2)
    return out, (x, w, cols, conv_param)


def conv_backward_im2col(dout, cache, overwrite_bug=False, order_bug=False):
    x, w, cols, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    F, C, kh, kw = w.shape
    N, _, H, W = x.shape
    Ho, Wo = dout.shape[2:]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, F)  # (N·Ho·Wo, F)
    dw = d.T @ cols  # (F, C·kh·kw)
    # the (C, kh, kw) order of a column; the bug reads it as (kh, kw, C)
    dw = dw.reshape(F, kh, kw, C).transpose(0, 3, 1, 2) if order_bug else dw.reshape(w.shape)
    dcols = d @ w.reshape(F, -1)
    shape = (N, C, H + 2 * pad, W + 2 * pad)
    dxp = _col2im(dcols, shape, kh, kw, stride, Ho, Wo, accumulate=not overwrite_bug)
    return dxp[:, :, pad : pad + H, pad : pad + W], dw, d.sum(axis=0)


def conv_backward_im2col_overwrite(dout, cache):
    return conv_backward_im2col(dout, cache, overwrite_bug=True)  # BUG: col2im assigns, not adds


def conv_backward_im2col_column_order(dout, cache):
    return conv_backward_im2col(dout, cache, order_bug=True)  # BUG: dW's columns misread


def conv_relu_forward(x, w, b, conv_param):
    z, conv_cache = conv_forward_im2col(x, w, b, conv_param)
    out, relu_cache = relu_forward(z)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache, backward_relu=relu_backward):
    conv_cache, relu_cache = cache
    return conv_backward_im2col(backward_relu(dout, relu_cache), conv_cache)


def conv_relu_backward_no_mask(dout, cache):
    return conv_relu_backward(dout, cache, relu_backward_no_mask)  # BUG: relu's mask forgotten


def conv_relu_backward_overwrite(dout, cache):
    conv_cache, relu_cache = cache
    # BUG: col2im assigns where overlapping windows must add
    return conv_backward_im2col(relu_backward(dout, relu_cache), conv_cache, overwrite_bug=True)


# --- pooling -------------------------------------------------------------------------------------


def _windows(x, size):
    """(N, C, H, W) -> (N, C, H/size, W/size, size·size), one row per window."""
    N, C, H, W = x.shape
    w = x.reshape(N, C, H // size, size, W // size, size).transpose(0, 1, 2, 4, 3, 5)
    return w.reshape(N, C, H // size, W // size, size * size)


def _unwindows(w, size):
    N, C, Ho, Wo, _ = w.shape
    x = w.reshape(N, C, Ho, Wo, size, size).transpose(0, 1, 2, 4, 3, 5)
    return x.reshape(N, C, Ho * size, Wo * size)


POOL = 2


def maxpool_forward(x):
    return _windows(x, POOL).max(axis=-1), x


def maxpool_backward(dout, x, shift=0):
    w = _windows(np.roll(x, shift, axis=3) if shift else x, POOL)
    winner = w.argmax(axis=-1)[..., None]  # ties go to the first maximum
    dw = np.zeros_like(w)
    np.put_along_axis(dw, winner, dout[..., None], axis=-1)
    return _unwindows(dw, POOL)


def maxpool_backward_spread(dout, x):
    w = _windows(x, POOL)
    return _unwindows(np.repeat(dout[..., None], w.shape[-1], axis=-1), POOL)  # BUG: to all


def maxpool_backward_off_by_one(dout, x):
    return maxpool_backward(dout, x, shift=1)  # BUG: the windows read one column off


def avgpool_forward(x):
    return _windows(x, POOL).mean(axis=-1), x.shape


def avgpool_backward(dout, shape):
    spread = np.repeat(dout[..., None] / POOL**2, POOL**2, axis=-1)
    return _unwindows(spread, POOL)


def avgpool_backward_no_mean(dout, shape):
    return _unwindows(np.repeat(dout[..., None], POOL**2, axis=-1), POOL)  # BUG: 1/(k·k) missing


def avgpool_backward_corner(dout, shape):
    spread = np.zeros((*dout.shape, POOL**2), dout.dtype)
    spread[..., 0] = dout  # BUG: the whole gradient to the window's first element
    return _unwindows(spread, POOL)


# --- losses ------------------------------------------------------------------------------------


def softmax_loss_forward(x, y):
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    N = x.shape[0]
    return -log_p[np.arange(N), y].sum() / N, (np.exp(log_p), y)


def softmax_loss_backward(dout, cache):
    p, y = cache
    dx = p.copy()
    dx[np.arange(len(y)), y] -= 1
    return dout * dx / len(y), None


def softmax_loss_backward_no_mean(dout, cache):
    p, y = cache
    dx = p.copy()
    dx[np.arange(len(y)), y] -= 1
    return dout * dx, None  # BUG: the 1/N of the mean forgotten


def softmax_loss_backward_no_target(dout, cache):
    p, y = cache
    return dout * p / len(y), None  # BUG: the −1 at the target forgotten


def svm_loss_forward(x, y):
    N = x.shape[0]
    margins = np.maximum(0, x - x[np.arange(N), y][:, None] + 1)
    margins[np.arange(N), y] = 0
    return margins.sum() / N, (margins, y)


def svm_loss_backward(dout, cache):
    margins, y = cache
    N = len(y)
    d = (margins > 0).astype(margins.dtype)
    d[np.arange(N), y] = -d.sum(axis=1)
    return dout * d / N, None


def svm_loss_backward_no_mean(dout, cache):
    margins, y = cache
    d = (margins > 0).astype(margins.dtype)
    d[np.arange(len(y)), y] = -d.sum(axis=1)
    return dout * d, None  # BUG: the 1/N of the mean forgotten


def svm_loss_backward_no_correct_class(dout, cache):
    margins, y = cache
    d = (margins > 0).astype(margins.dtype)  # BUG: the correct class's −count forgotten
    return dout * d / len(y), None


# --- recurrent steps -----------------------------------------------------------------------------


def rnn_step_forward(x, h_prev, Wx, Wh, b):
    h = np.tanh(x @ Wx + h_prev @ Wh + b)
    return h, (x, h_prev, Wx, Wh, h)


def rnn_step_backward(dh, cache, prime_bug=False, missing_bug=False):
    x, h_prev, Wx, Wh, h = cache
    da = dh * (1 - h**2)
    if prime_bug:
        da = dh * (1 - (x @ Wx + h_prev @ Wh) ** 2)  # BUG: tanh′ through the pre-activation
    if missing_bug:
        da = dh  # BUG: tanh′ forgotten
    return da @ Wx.T, da @ Wh.T, x.T @ da, h_prev.T @ da, da.sum(axis=0)


def rnn_step_backward_prime_of_z(dh, cache):
    return rnn_step_backward(dh, cache, prime_bug=True)


def rnn_step_backward_no_prime(dh, cache):
    return rnn_step_backward(dh, cache, missing_bug=True)


def _sigmoid(z):
    return sigmoid_forward(z)[0]


def lstm_step_forward(x, h_prev, c_prev, Wx, Wh, b):
    """Gates i, f, o, g from one product; returns (h, c): a kernel with two outputs."""
    H = h_prev.shape[1]
    a = x @ Wx + h_prev @ Wh + b  # (N, 4H)
    i, f, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H]), _sigmoid(a[:, 2 * H : 3 * H])
    g = np.tanh(a[:, 3 * H :])
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return (h, c), (x, h_prev, c_prev, Wx, Wh, i, f, o, g, c)


def lstm_step_backward(douts, cache, forget_bug=False, cell_bug=False):
    dh, dc = douts
    x, h_prev, c_prev, Wx, Wh, i, f, o, g, c = cache
    tc = np.tanh(c)
    dc_total = dc if cell_bug else dc + dh * o * (1 - tc**2)  # BUG (cell_bug): h's path to c
    di, dg, do = dc_total * g, dc_total * i, dh * tc
    df = dc_total * (c if forget_bug else c_prev)  # BUG (forget_bug): c where c_prev belongs
    da = np.concatenate(
        [di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)], axis=1
    )
    return da @ Wx.T, da @ Wh.T, dc_total * f, x.T @ da, h_prev.T @ da, da.sum(axis=0)


def lstm_step_backward_forget_on_c(douts, cache):
    return lstm_step_backward(douts, cache, forget_bug=True)


def lstm_step_backward_no_cell_path(douts, cache):
    return lstm_step_backward(douts, cache, cell_bug=True)


def rnn_forward(x, h0, Wx, Wh, b):
    """A whole sequence x (N, T, D) through `rnn_step_forward`, from h0: every h (N, T, H)."""
    h, caches = h0, []
    hs = np.empty((x.shape[0], x.shape[1], h0.shape[1]), x.dtype)
    for t in range(x.shape[1]):
        h, cache = rnn_step_forward(x[:, t], h, Wx, Wh, b)
        hs[:, t] = h
        caches.append(cache)
    return hs, caches


def rnn_backward(dh, caches, truncated=False, last_dx=False):
    """Backpropagation through time: step t's gradient is dh[:, t] plus what h_t fed into step
    t + 1; the weights' gradients are summed over the steps."""
    N, T, _ = dh.shape
    x, h_prev, Wx, Wh, _ = caches[0]
    dx = np.zeros((N, T, x.shape[1]), dh.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1], dh.dtype)
    carry = np.zeros_like(h_prev)
    for t in reversed(range(T)):
        dx_t, dh_prev, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + carry, caches[t])
        if not last_dx or t == T - 1:  # BUG (last_dx): the earlier steps' dx dropped
            dx[:, t] = dx_t
        carry = 0 * dh_prev if truncated else dh_prev  # BUG (truncated): nothing carried back
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, carry, dWx, dWh, db


def rnn_backward_truncated(dh, caches):
    return rnn_backward(dh, caches, truncated=True)


def rnn_backward_last_dx(dh, caches):
    return rnn_backward(dh, caches, last_dx=True)


# --- the catalogue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """A gallery kernel: its pair, how to draw its inputs, which of them are differentiated, and
    its bugs by name."""

    name: str
    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., Any]
    #: rng, dtype -> the inputs, at a realistic size.
    inputs: Callable[[np.random.Generator, str], list[Any]]
    names: tuple[str, ...]
    #: The inputs to differentiate; the rest (labels, masks, hyper-parameters) are held fixed.
    wrt: tuple[str, ...]
    bugs: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def params(self) -> tuple[str, ...]:
        """The differentiated inputs after x: a layer object's parameters."""
        return tuple(n for n in self.names[1:] if n in self.wrt)

    @property
    def fixed(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in self.wrt)


def _normal(rng, dtype, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


CONV = {"stride": 1, "pad": 1}


def _conv_inputs(rng, dtype):
    return [
        _normal(rng, dtype, 10, 3, 32, 32),
        _normal(rng, dtype, 8, 3, 3, 3, scale=0.3),
        _normal(rng, dtype, 8),
        CONV,
    ]


def _lstm_inputs(rng, dtype):
    N, D, H = 32, 40, 24
    return [
        _normal(rng, dtype, N, D),
        _normal(rng, dtype, N, H),
        _normal(rng, dtype, N, H),
        _normal(rng, dtype, D, 4 * H, scale=0.2),
        _normal(rng, dtype, H, 4 * H, scale=0.2),
        _normal(rng, dtype, 4 * H),
    ]


def _k(name, forward, backward, inputs, names, wrt=None, **bugs) -> Kernel:
    return Kernel(name, forward, backward, inputs, tuple(names), tuple(wrt or names), bugs)


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        _k(
            "affine", affine_forward, affine_backward,
            lambda r, d: [_normal(r, d, 64, 3, 8, 8), _normal(r, d, 192, 100, scale=0.1),
                          _normal(r, d, 100)],
            ["x", "w", "b"],
            mean_bias=affine_backward_mean_bias, dw_over_n=affine_backward_dw_over_n,
        ),
        _k(
            "relu", relu_forward, relu_backward, lambda r, d: [_normal(r, d, 64, 512)], ["x"],
            no_mask=relu_backward_no_mask, inverted_mask=relu_backward_inverted,
        ),
        _k(
            "leaky_relu", leaky_relu_forward, leaky_relu_backward,
            lambda r, d: [_normal(r, d, 64, 512)], ["x"],
            no_slope=leaky_relu_backward_no_slope, swapped=leaky_relu_backward_slope_everywhere,
            mask_of_dout=leaky_relu_backward_mask_of_dout,
        ),
        _k(
            "sigmoid", sigmoid_forward, sigmoid_backward,
            lambda r, d: [_normal(r, d, 64, 512, scale=3)], ["x"],
            prime_of_output=sigmoid_backward_of_output, no_prime=sigmoid_backward_no_prime,
        ),
        _k(
            "gelu", gelu_forward, gelu_backward,
            lambda r, d: [_normal(r, d, 64, 512, scale=2)], ["x"],
            tanh_form=gelu_backward_of_the_tanh_form, no_density=gelu_backward_no_density,
        ),
        _k(
            "tanh", tanh_forward, tanh_backward, lambda r, d: [_normal(r, d, 64, 512)], ["x"],
            unsquared=tanh_backward_unsquared, sign=tanh_backward_sign,
        ),
        _k(
            "softmax", softmax_forward, softmax_backward,
            lambda r, d: [_normal(r, d, 64, 100, scale=2)], ["x"],
            diagonal=softmax_backward_diagonal, no_sum=softmax_backward_no_sum,
        ),
        _k(
            "batchnorm", batchnorm_forward, batchnorm_backward,
            # features of small variance, as after a layer that shrinks them: where ε matters
            lambda r, d: [_normal(r, d, 64, 256, scale=0.2) + 1,
                          1 + _normal(r, d, 256, scale=0.1), _normal(r, d, 256, scale=0.1)],
            ["x", "gamma", "beta"],
            no_mean_terms=batchnorm_backward_no_mean_terms,
            dgamma_unnormalised=batchnorm_backward_dgamma_unnormalised,
            epsilon=batchnorm_backward_epsilon,
        ),
        _k(
            "spatial_batchnorm", spatial_batchnorm_forward, spatial_batchnorm_backward,
            lambda r, d: [_normal(r, d, 16, 8, 12, 12, scale=0.5) + 1,
                          1 + _normal(r, d, 8, scale=0.1), _normal(r, d, 8, scale=0.1)],
            ["x", "gamma", "beta"],
            reshaped=spatial_batchnorm_backward_reshaped,
            per_sample=spatial_batchnorm_backward_per_sample,
        ),
        _k(
            "layernorm", layernorm_forward, layernorm_backward,
            lambda r, d: [_normal(r, d, 64, 256, scale=2) + 1, 1 + _normal(r, d, 256, scale=0.1),
                          _normal(r, d, 256, scale=0.1)],
            ["x", "gamma", "beta"],
            batch_axis=layernorm_backward_batch_axis,
            no_variance_term=layernorm_backward_no_variance_term,
        ),
        _k(
            "dropout", dropout_forward, dropout_backward,
            lambda r, d: [_normal(r, d, 64, 512), (r.random((64, 512)) < KEEP).astype(d)],
            ["x", "mask"], wrt=["x"],
            no_mask=dropout_backward_no_mask, no_scale=dropout_backward_no_scale,
        ),
        _k(
            "embedding", embedding_forward, embedding_backward,
            # 64 sentences of 20 tokens from a vocabulary of 50: ids repeat
            lambda r, d: [r.integers(0, 50, (64, 20)), _normal(r, d, 50, 16, scale=0.05)],
            ["ids", "W"], wrt=["W"],
            buffered=embedding_backward_buffered,
            mean_of_repeats=embedding_backward_mean_of_repeats,
        ),
        _k(
            "conv_naive", conv_forward_naive, conv_backward_naive, _conv_inputs,
            ["x", "w", "b", "conv_param"], wrt=["x", "w", "b"],
            flipped=conv_backward_naive_flipped, off_by_one=conv_backward_naive_off_by_one,
        ),
        _k(
            "conv_im2col", conv_forward_im2col, conv_backward_im2col, _conv_inputs,
            ["x", "w", "b", "conv_param"], wrt=["x", "w", "b"],
            overwrite=conv_backward_im2col_overwrite,
            column_order=conv_backward_im2col_column_order,
        ),
        _k(
            "conv_relu", conv_relu_forward, conv_relu_backward, _conv_inputs,
            ["x", "w", "b", "conv_param"], wrt=["x", "w", "b"],
            no_mask=conv_relu_backward_no_mask, overwrite=conv_relu_backward_overwrite,
        ),
        _k(
            "maxpool", maxpool_forward, maxpool_backward,
            lambda r, d: [_normal(r, d, 8, 16, 32, 32)], ["x"],
            spread=maxpool_backward_spread, off_by_one=maxpool_backward_off_by_one,
        ),
        _k(
            "avgpool", avgpool_forward, avgpool_backward,
            lambda r, d: [_normal(r, d, 8, 16, 32, 32)], ["x"],
            no_mean=avgpool_backward_no_mean, corner=avgpool_backward_corner,
        ),
        _k(
            "softmax_loss", softmax_loss_forward, softmax_loss_backward,
            lambda r, d: [_normal(r, d, 256, 10, scale=2), r.integers(0, 10, 256)],
            ["x", "y"], wrt=["x"],
            no_mean=softmax_loss_backward_no_mean, no_target=softmax_loss_backward_no_target,
        ),
        _k(
            "svm_loss", svm_loss_forward, svm_loss_backward,
            lambda r, d: [_normal(r, d, 256, 10), r.integers(0, 10, 256)],
            ["x", "y"], wrt=["x"],
            no_mean=svm_loss_backward_no_mean,
            no_correct_class=svm_loss_backward_no_correct_class,
        ),
        _k(
            "rnn_step", rnn_step_forward, rnn_step_backward,
            lambda r, d: [_normal(r, d, 32, 40), _normal(r, d, 32, 24),
                          _normal(r, d, 40, 24, scale=0.2), _normal(r, d, 24, 24, scale=0.2),
                          _normal(r, d, 24, scale=0.1)],
            ["x", "h_prev", "Wx", "Wh", "b"],
            prime_of_z=rnn_step_backward_prime_of_z, no_prime=rnn_step_backward_no_prime,
        ),
        _k(
            "rnn_sequence", rnn_forward, rnn_backward,
            lambda r, d: [_normal(r, d, 16, 10, 20), _normal(r, d, 16, 16),
                          _normal(r, d, 20, 16, scale=0.2), _normal(r, d, 16, 16, scale=0.3),
                          _normal(r, d, 16, scale=0.1)],
            ["x", "h0", "Wx", "Wh", "b"],
            truncated=rnn_backward_truncated, last_dx=rnn_backward_last_dx,
        ),
        _k(
            "lstm_step", lstm_step_forward, lstm_step_backward, _lstm_inputs,
            ["x", "h_prev", "c_prev", "Wx", "Wh", "b"],
            forget_on_c=lstm_step_backward_forget_on_c,
            no_cell_path=lstm_step_backward_no_cell_path,
        ),
    )
}  # fmt: skip


def layer_class(kernel: Kernel, backward: Callable[..., Any] | None = None, **fixed: Any) -> type:
    """The kernel as a stateful layer object: parameters as attributes, ``forward(x)`` keeps
    its cache, ``backward(dout)`` returns dx and leaves ``d<name>`` for every parameter.
    ``fixed`` gives the held inputs (labels, masks, hyper-parameters) by name."""
    backward = backward or kernel.backward
    params = kernel.params

    class Layer:
        def forward(self, x):
            args = {"x": x, **{p: getattr(self, p) for p in params}, **fixed}
            out, self.cache = kernel.forward(*(args[n] for n in kernel.names))
            return out

        def backward(self, dout):
            grads = backward(dout, self.cache)
            grads = grads if isinstance(grads, tuple) else (grads,)
            by_name = dict(zip(kernel.names, grads, strict=False))
            for p in params:
                setattr(self, f"d{p}", by_name[p])
            return by_name["x"]

    Layer.__name__ = f"{kernel.name.title().replace('_', '')}Layer"
    return Layer
