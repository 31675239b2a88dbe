"""e^x for x ≤ 0, written so that LLVM vectorises it inside Numba loops.

Numba compiles ``np.exp`` on a scalar to a call into the C library, one element at a time; NumPy
and XLA use SIMD versions several times faster, and on the digits network the sigmoid's
exponentials would dominate a training step. This is the textbook vector algorithm, with nothing
in the loop that is not plain arithmetic:

    k = round(x / ln 2),  r = x − k ln 2  (|r| ≤ ½ ln 2; Cody–Waite: ln 2 = hi + lo, k·hi exact)
    e^r = Σ_{i≤n} r^i / i!                (n = 13 for float64, 7 for float32: the tail is below
                                           half an ulp; Horner's rule in fused multiply-adds)
    e^x = 2^k · e^r                       (2^k assembled in the exponent bits of a float)

It is within one ulp of the correctly rounded result, as the C library's exp and NumPy's are.
Every exponential the kernels need has a non-positive argument (e^{−|z|}, e^{z − max z}), so only
x ≤ 0 is handled; the few x whose e^x is subnormal go to the scalar ``np.exp``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

# float64: fdlibm's split of ln 2, the high part with 32 trailing zero bits.
_LN2_HI_64 = 6.93147180369123816490e-01
_LN2_LO_64 = 1.90821492927058770002e-10
_MIN_NORMAL_ARG_64 = -708.0  # e^x is a normal float64 for x ≥ this
# float32: ln 2 = 0.693359375 (exact in 9 bits) − 2.12194440e-4.
_LN2_HI_32 = np.float32(0.693359375)
_LN2_LO_32 = np.float32(-2.12194440e-4)
_LOG2E_32 = np.float32(1.4426950408889634)
_HALF_32 = np.float32(0.5)
_MIN_NORMAL_ARG_32 = np.float32(-87.0)
_INV_FACTORIAL_64 = tuple(1.0 / math.factorial(i) for i in range(14))
_INV_FACTORIAL_32 = tuple(np.float32(1.0 / math.factorial(i)) for i in range(8))


@intrinsic
def fma(typingctx, a, b, c):
    """a·b + c rounded once (LLVM's fma): the Horner steps run as single fused instructions,
    which Numba does not form on its own without fast-math."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


def exp_nonpositive(x, bits):  # pragma: no cover - the compiled versions below replace it
    """x ← e^x in place for a 1-D array ``x`` of values ≤ 0; ``bits`` is scratch space of the
    same length and the matching integer dtype (int64 for float64, int32 for float32)."""
    raise NotImplementedError("exp_nonpositive runs inside Numba-compiled code only")


def _exp_nonpositive_64(x, bits):
    if has_subnormal_result(x, _MIN_NORMAL_ARG_64):
        return exp_scalar(x)
    scale = bits.view(np.float64)
    for j in range(x.shape[0]):
        k = np.floor(x[j] * 1.4426950408889634 + 0.5)  # round(x / ln 2)
        r = (x[j] - k * _LN2_HI_64) - k * _LN2_LO_64
        p = _INV_FACTORIAL_64[13]  # Horner from 1/13! down to 1/0!
        for i in range(12, -1, -1):
            p = fma(p, r, _INV_FACTORIAL_64[i])
        bits[j] = (np.int64(k) + 1023) << 52  # the float64 2^k
        x[j] = p * scale[j]


def _exp_nonpositive_32(x, bits):
    if has_subnormal_result(x, _MIN_NORMAL_ARG_32):
        return exp_scalar(x)
    scale = bits.view(np.float32)
    for j in range(x.shape[0]):
        k = np.floor(x[j] * _LOG2E_32 + _HALF_32)
        r = (x[j] - k * _LN2_HI_32) - k * _LN2_LO_32
        p = _INV_FACTORIAL_32[7]
        for i in range(6, -1, -1):
            p = fma(p, r, _INV_FACTORIAL_32[i])
        bits[j] = (np.int32(k) + 127) << 23  # the float32 2^k
        x[j] = p * scale[j]


@njit(cache=True, error_model="numpy")
def has_subnormal_result(x, min_normal_arg):
    found = False
    for j in range(x.shape[0]):
        found |= x[j] < min_normal_arg
    return found


@njit(cache=True, error_model="numpy")
def exp_scalar(x):
    for j in range(x.shape[0]):
        x[j] = np.exp(x[j])


@overload(exp_nonpositive)
def _exp_nonpositive(x, bits):
    if x.dtype == types.float64:
        return _exp_nonpositive_64
    if x.dtype == types.float32:
        return _exp_nonpositive_32
    return None


@njit(cache=True, error_model="numpy")
def exp_nonpositive_array(x, bits):
    """``exp_nonpositive`` callable from Python, for testing."""
    exp_nonpositive(x, bits)
