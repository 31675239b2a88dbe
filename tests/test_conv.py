"""The NumPy and Numba convolution and pooling kernels: forward against the convolution written
out as seven nested loops here, backward against JAX's vector-Jacobian products of
``lax.conv_general_dilated`` and ``lax.reduce_window``, in float64 and float32, over strides,
padding, kernel sizes and channels."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from jax import lax

from gradcheck.kernels import numba_blocks as blocks
from gradcheck.kernels import numba_conv as nb
from gradcheck.kernels import numpy_conv as nc
from gradcheck.kernels.numba_backprop import ACTIVATION_CODES

IDENTITY = ACTIVATION_CODES["identity"]

#: (input H, W), kernel (kh, kw), stride, padding, channels in, filters
CONVS = [
    ((8, 8), (3, 3), 1, "same", 1, 8),
    ((8, 8), (3, 3), 1, "valid", 2, 3),
    ((7, 9), (3, 2), 2, "same", 3, 4),
    ((7, 9), (3, 2), 2, "valid", 3, 4),
    ((8, 8), (2, 2), 3, "valid", 1, 2),
    ((6, 5), (1, 1), 1, "same", 4, 2),
    ((5, 5), (5, 5), 1, "valid", 2, 2),
    ((9, 7), (4, 3), 3, "same", 2, 5),
]


#: The padding of an input that arrives padded.
NO_PADS = ((0, 0), (0, 0))


def _numba_conv2d(x, W, b, stride):
    rows, cols = (nc.output_size(x.shape[1 + a], W.shape[a], stride) for a in (0, 1))
    z = np.empty((x.shape[0], rows, cols, W.shape[3]), dtype=x.dtype)
    nb.conv2d(nb.input_of(x, NO_PADS, stride), W, b, stride, IDENTITY, False, z, z,
              nb.no_pool(x.dtype))  # fmt: skip
    return z


def _block_sums(out, n_samples):
    return blocks.block_sums(out, blocks.block_count(n_samples, nb.SMALLEST_BLOCK))


def _numba_backward(x, delta, W, stride):
    dW, db, dx = np.empty_like(W), np.empty(W.shape[3], dtype=W.dtype), np.empty_like(x)
    delta = delta.copy()  # where the kernel makes ∂C/∂a into δ, by identity′ = 1
    dW_parts, db_parts = _block_sums(dW, len(x)), _block_sums(db, len(x))
    # the forward pass lays x out as the backward pass reads it
    source, z = nb.input_of(x, NO_PADS, stride), np.empty_like(delta)
    nb.conv2d(source, W, np.zeros(W.shape[3], W.dtype), stride, IDENTITY, False, z, z,
              nb.no_pool(x.dtype))  # fmt: skip
    nb.conv2d_backward(source, delta, W, stride, True, dW_parts, db_parts, dx, IDENTITY, delta,
                       delta, nb.no_pool(x.dtype))  # fmt: skip
    blocks.add_blocks(dW_parts, dW)
    blocks.add_blocks(db_parts, db)
    return dx, dW, db


#: Each implementation's forward (padded x, W, b, stride) → z and backward
#: (padded x, δ, W, stride) → (∂C/∂x padded, ∂C/∂W, ∂C/∂b).
FORMS = {
    "numpy direct": (
        nc.conv2d,
        lambda x, d, W, s: (
            nc.conv2d_input_grad(d, W, s, x.shape),
            *nc.conv2d_grads(x, d, W.shape[:2], s),
        ),
    ),
    "numpy im2col": (
        nc.conv2d_im2col,
        lambda x, d, W, s: (
            nc.conv2d_input_grad_im2col(d, W, s, x.shape),
            *nc.conv2d_grads_im2col(x, d, W.shape[:2], s),
        ),
    ),
    "numba": (_numba_conv2d, _numba_backward),
}


def literal_conv(x, W, b, stride):
    """z[n,i,j,o] = Σ_{p,q,c} x[n, i·s+p, j·s+q, c] W[p,q,c,o] + b[o], on a padded x; and the
    same sum of absolute values, the size its rounding scales with."""
    n_samples, height, width, n_in = x.shape
    kh, kw, _, n_out = W.shape
    ho, wo = (height - kh) // stride + 1, (width - kw) // stride + 1
    z, size = np.zeros((n_samples, ho, wo, n_out)), np.zeros((n_samples, ho, wo, n_out))
    for n in range(n_samples):
        for i in range(ho):
            for j in range(wo):
                for o in range(n_out):
                    z[n, i, j, o] = size[n, i, j, o] = 0.0
                    for p in range(kh):
                        for q in range(kw):
                            for c in range(n_in):
                                term = x[n, i * stride + p, j * stride + q, c] * W[p, q, c, o]
                                z[n, i, j, o] += term
                                size[n, i, j, o] += abs(term)
                    z[n, i, j, o] += b[o]
                    size[n, i, j, o] += abs(b[o])
    return z, size


def _tolerance(dtype, terms):
    """Rounding of a sum of ``terms`` products, with the policy's safety factor of 16."""
    return 16 * float(np.finfo(dtype).eps) * np.sqrt(terms)


def _problem(case, dtype, seed):
    (height, width), kernel, stride, padding, n_in, n_out = case
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, height, width, n_in)).astype(dtype)
    W = rng.normal(size=(*kernel, n_in, n_out)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    return x, W, b, kernel, stride, padding


@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("form", list(FORMS))
def test_conv_forward_is_the_sum_written_out(case, form, gradcheck_dtype, gradcheck_seed):
    x, W, b, kernel, stride, padding = _problem(case, gradcheck_dtype, gradcheck_seed)
    padded = nc.pad(x, nc.padding(x.shape, kernel, stride, padding))
    z = FORMS[form][0](padded, W, b, stride)
    assert z.dtype == gradcheck_dtype
    want, size = literal_conv(padded.astype(np.float64), W.astype(np.float64), b, stride)
    if padding == "same":
        assert z.shape[1:3] == tuple(-(-n // stride) for n in x.shape[1:3])  # ⌈H / s⌉
    terms = kernel[0] * kernel[1] * x.shape[3] + 1
    assert np.all(np.abs(z - want) <= _tolerance(gradcheck_dtype, terms) * size)


def _jax_conv(x, W, b, stride, padding):
    z = lax.conv_general_dilated(
        x, W, (stride, stride), padding.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return z + b


@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("form", list(FORMS))
def test_conv_backward_is_jaxs_vjp(case, form, gradcheck_dtype, gradcheck_seed):
    x, W, b, kernel, stride, padding = _problem(case, gradcheck_dtype, gradcheck_seed)
    pads = nc.padding(x.shape, kernel, stride, padding)
    padded = nc.pad(x, pads)
    z = nc.conv2d(padded, W, b, stride)
    delta = np.random.default_rng(gradcheck_seed + 1).normal(size=z.shape).astype(gradcheck_dtype)
    dx_padded, dW, db = FORMS[form][1](padded, delta, W, stride)
    dx = nc.unpad(dx_padded, pads)
    with jax.enable_x64(True):
        args = [np.float64(a) for a in (x, W, b)]
        _, vjp = jax.vjp(lambda *a: _jax_conv(*a, stride, padding), *args)
        want = [np.asarray(g) for g in vjp(np.float64(delta))]
    ours = [dx, dW, db]
    # each gradient is a sum of products of δ with x or W: at most N·Ho·Wo (for W, b) or
    # kh·kw·O (for x) terms; held to its largest, with the policy's safety factor
    terms = delta.size + W.size
    for got, expected in zip(ours, want, strict=True):
        assert got.dtype == gradcheck_dtype
        scale = np.abs(expected).max()
        assert np.max(np.abs(got - expected)) <= _tolerance(gradcheck_dtype, terms) * scale


def test_a_stride_that_leaves_rows_unseen_gives_them_no_gradient():
    x = np.ones((1, 6, 6, 1))
    W = np.ones((2, 2, 1, 1))
    delta = np.ones((1, 2, 2, 1))  # windows at rows and columns 0-1 and 3-4 (stride 3)
    dx = nc.conv2d_input_grad(delta, W, 3, x.shape)
    seen = np.zeros((6, 6))
    for i, j, p, q in itertools.product(range(2), range(2), range(2), range(2)):
        seen[3 * i + p, 3 * j + q] += 1
    np.testing.assert_array_equal(dx[0, :, :, 0], seen)
    assert not dx[0, 2].any()  # row 2 and column 5 lie between and after the windows
    assert not dx[0, :, 5].any()


POOLS = [((8, 8), 2, 2), ((7, 9), 2, 2), ((8, 8), 3, 2), ((6, 6), 3, 3), ((5, 7), 2, 1)]


def _jax_pool(kind, x, size, stride):
    init, op = {"max": (-np.inf, lax.max), "avg": (0.0, lax.add)}[kind]
    y = lax.reduce_window(x, init, op, (1, size, size, 1), (1, stride, stride, 1), "VALID")
    return y if kind == "max" else y / (size * size)


def _numba_pool(kind, x, size, stride, delta=None):
    """The Numba pooling of x, or with ``delta`` its gradient, into arrays allocated here."""
    rows, cols = (nc.output_size(n, size, stride) for n in x.shape[1:3])
    y = np.empty((x.shape[0], rows, cols, x.shape[3]), dtype=x.dtype)
    first = np.empty(y.shape, dtype=np.int64)
    code, n = nb.Pool[kind], len(x)
    nb.pool_rows(code, x, size, stride, y, first, 0, n)
    if delta is None:
        return y
    dx = np.empty_like(x)
    nb.pool_grad_rows(code, delta, first, size, stride, dx, 0, n)
    return dx


def _numpy_pool(kind, x, size, stride, delta=None):
    """The NumPy pooling of x, or with ``delta`` its gradient."""
    if delta is None:
        return {"max": nc.max_pool, "avg": nc.avg_pool}[kind](x, size, stride)
    return {"max": nc.max_pool_grad, "avg": nc.avg_pool_grad}[kind](x, delta, size, stride)


#: Each implementation's pooling (kind, x, size, stride) and, given δ, its gradient.
POOLINGS = {"numpy": _numpy_pool, "numba": _numba_pool}


@pytest.mark.parametrize("case", POOLS)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("form", list(POOLINGS))
def test_pooling_and_its_gradient_are_jaxs(case, kind, form, gradcheck_dtype, gradcheck_seed):
    (height, width), size, stride = case
    rng = np.random.default_rng(gradcheck_seed)
    x = rng.normal(size=(3, height, width, 2)).astype(gradcheck_dtype)  # no ties, almost surely
    y = POOLINGS[form](kind, x, size, stride)
    delta = rng.normal(size=y.shape).astype(gradcheck_dtype)
    dx = POOLINGS[form](kind, x, size, stride, delta)
    with jax.enable_x64(True):
        want, vjp = jax.vjp(lambda a: _jax_pool(kind, a, size, stride), np.float64(x))
        (want_dx,) = vjp(np.float64(delta))
    tolerance = _tolerance(gradcheck_dtype, size * size)
    for got, expected in ((y, want), (dx, want_dx)):
        assert got.dtype == gradcheck_dtype
        assert np.max(np.abs(got - np.asarray(expected))) <= tolerance * np.abs(expected).max()


@pytest.mark.parametrize("form", list(POOLINGS))
def test_max_pool_routes_a_tie_to_the_first_maximum(form):
    x = np.array([[3.0, 1.0, 5.0, 5.0], [3.0, 2.0, 5.0, 5.0]]).reshape(1, 2, 4, 1)
    delta = np.array([10.0, 20.0]).reshape(1, 1, 2, 1)
    dx = POOLINGS[form]("max", x, 2, 2, delta)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[10.0, 0, 20.0, 0], [0, 0, 0, 0]])


def test_flatten_is_row_major_over_height_width_channels():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    flat = nc.flatten(x)
    assert flat[1, (2 * 4 + 3) * 5 + 4] == x[1, 2, 3, 4]
    np.testing.assert_array_equal(nc.flatten_grad(flat, x.shape), x)


@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 3, 1), (7, 3, 2), (9, 4, 3), (5, 1, 2)])
def test_same_padding_is_kerass(size, kernel, stride):
    before, after = nc.same_padding(size, kernel, stride)
    assert after - before in (0, 1)
    assert nc.output_size(size + before + after, kernel, stride) == -(-size // stride)


def _unflipped_input_grad(delta, W, stride, padded_shape):
    """The classic mistake: the full correlation with the kernel not flipped (flipping it
    first undoes the kernel's own flip)."""
    return nc.conv2d_input_grad(delta, W[::-1, ::-1], stride, padded_shape)


def _undilated_input_grad(delta, W, stride, padded_shape):
    """The other: a strided convolution's δ correlated without its zeros in between."""
    return nc.conv2d_input_grad(delta, W, 1, padded_shape)


@pytest.mark.parametrize("mistake", [_unflipped_input_grad, _undilated_input_grad])
def test_the_comparison_catches_the_classic_mistakes(mistake, gradcheck_dtype, gradcheck_seed):
    case = ((7, 9), (3, 2), 2, "valid", 3, 4)  # a kernel that is not symmetric, a stride of 2
    x, W, b, _, stride, padding = _problem(case, gradcheck_dtype, gradcheck_seed)
    z = nc.conv2d(x, W, b, stride)
    delta = np.random.default_rng(gradcheck_seed + 1).normal(size=z.shape).astype(gradcheck_dtype)
    with jax.enable_x64(True):
        _, vjp = jax.vjp(lambda a: _jax_conv(a, np.float64(W), np.float64(b), stride, padding),
                         np.float64(x))  # fmt: skip
        (want,) = vjp(np.float64(delta))
    wrong = mistake(delta, W, stride, x.shape)
    tolerance = _tolerance(gradcheck_dtype, delta.size + W.size) * np.abs(want).max()
    assert np.max(np.abs(wrong - np.asarray(want))) > 100 * tolerance


@pytest.mark.parametrize(
    ("code", "message"),
    [(len(ACTIVATION_CODES), "unknown activation code"), (ACTIVATION_CODES["softmax"], "softmax")],
)
def test_an_activation_the_convolution_cannot_apply_is_refused_before_any_work(code, message):
    """An unknown code, or the softmax's (which takes a row, not an entry), raises before z, δ
    or a gradient is written."""
    x, W, b = np.ones((2, 4, 4, 1)), np.ones((3, 3, 1, 2)), np.zeros(2)
    z, delta = np.full((2, 2, 2, 2), 7.0), np.full((2, 2, 2, 2), 7.0)
    source = nb.input_of(x, NO_PADS, 1)
    with pytest.raises(ValueError, match=message):
        nb.conv2d(source, W, b, 1, code, False, z, z, nb.no_pool(x.dtype))
    dW_parts, db_parts = _block_sums(W, len(x)), _block_sums(b, len(x))
    with pytest.raises(ValueError, match=message):
        nb.conv2d_backward(source, delta, W, 1, False, dW_parts, db_parts, np.empty((0,) * 4),
                           code, z, z, nb.no_pool(x.dtype))  # fmt: skip
    assert (z == 7).all()
    assert not source.xp.any()
    assert (delta == 7).all()
    assert not dW_parts.any()
    assert not db_parts.any()
