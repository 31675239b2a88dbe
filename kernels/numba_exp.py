"""e^x and e^x − 1 for x ≤ 0, written so that LLVM vectorises the loops that call them.

Numba compiles ``np.exp`` on a scalar to a call into the C library, one element at a time; NumPy
and XLA use SIMD versions several times faster, and on the digits network the sigmoid's
exponentials would dominate a training step. This is the textbook vector algorithm, with nothing
in the loop that is not plain arithmetic:

    k = round(x / ln 2),  r = x − k ln 2  (|r| ≤ ½ ln 2; Cody–Waite: ln 2 = hi + lo, k·hi exact)
    e^r = Σ_{i≤n} r^i / i!                (n = 13 for float64, 7 for float32: the tail is below
                                           half an ulp; Horner's rule in fused multiply-adds)
    e^x = 2^k · e^r                       (2^k assembled in the exponent bits of a float)

`exp_normal` takes one x and 2^k is bit-cast from an integer, never stored, so the loop that
calls it runs in vector registers and can do its other work (the bias, the sigmoid's division)
in the same pass.

`expm1_normal` is e^x − 1 by the same reduction, without the cancellation of e^x − 1 near 0:
the series without its 1, q = e^r − 1 = r + r²/2! + …, then e^x − 1 = 2^k q + (2^k − 1), exact
for k = 0. It gives `numba_backprop`'s tanh, −(e^{−2|v|} − 1)/(2 + e^{−2|v|} − 1) with v's sign.

It is within one ulp of the correctly rounded result, as the C library's exp and NumPy's are.
Every exponential the kernels need has a non-positive argument (e^{−|z|}, e^{z − max z}), so only
x ≤ 0 is handled; the few x whose e^x is subnormal (below `min_normal_arg`) go to the scalar
``np.exp``, so callers compare their run of x with that bound first.
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


@intrinsic
def as_float(typingctx, bits):
    """The float whose bits are ``bits``: int64 -> float64, int32 -> float32 (LLVM's bitcast),
    so 2^k is assembled in a register rather than through memory."""
    floats = {types.int64: types.float64, types.int32: types.float32}
    if bits not in floats:
        return None
    out = floats[bits]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(out))

    return out(bits), codegen


def exp_normal(x):  # pragma: no cover - the compiled versions below replace it
    """e^x for one x in [min_normal_arg(x), 0], whose result is a normal float. Plain
    arithmetic, so a loop calling it vectorises; for smaller x a caller uses ``np.exp``."""
    raise NotImplementedError("exp_normal runs inside Numba-compiled code only")


def expm1_normal(x):  # pragma: no cover - the compiled versions below replace it
    """e^x − 1 for one x in [min_normal_arg(x), 0], as plain arithmetic (see `exp_normal`)."""
    raise NotImplementedError("expm1_normal runs inside Numba-compiled code only")


def min_normal_arg(x):  # pragma: no cover - the compiled versions below replace it
    """The smallest argument of ``exp_normal`` in x's dtype."""
    raise NotImplementedError("min_normal_arg runs inside Numba-compiled code only")


@njit(cache=True, error_model="numpy")
def _exp_normal_64(x):
    k = np.floor(x * 1.4426950408889634 + 0.5)  # round(x / ln 2)
    r = (x - k * _LN2_HI_64) - k * _LN2_LO_64
    p = _INV_FACTORIAL_64[13]  # Horner from 1/13! down to 1/0!
    for i in range(12, -1, -1):
        p = fma(p, r, _INV_FACTORIAL_64[i])
    return p * as_float((np.int64(k) + 1023) << 52)  # times the float64 2^k


@njit(cache=True, error_model="numpy")
def _exp_normal_32(x):
    k = np.floor(x * _LOG2E_32 + _HALF_32)
    r = (x - k * _LN2_HI_32) - k * _LN2_LO_32
    p = _INV_FACTORIAL_32[7]
    for i in range(6, -1, -1):
        p = fma(p, r, _INV_FACTORIAL_32[i])
    # in int32 throughout: Numba widens int32 arithmetic with int64 literals
    return p * as_float(np.int32((np.int32(k) + np.int32(127)) << np.int32(23)))


@njit(cache=True, error_model="numpy")
def _expm1_normal_64(x):
    k = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - k * _LN2_HI_64) - k * _LN2_LO_64
    q = _INV_FACTORIAL_64[13]  # Horner from 1/13! down to 1/1!, then × r: e^r − 1
    for i in range(12, 0, -1):
        q = fma(q, r, _INV_FACTORIAL_64[i])
    two_k = as_float((np.int64(k) + 1023) << 52)
    return fma(two_k, q * r, two_k - 1.0)


@njit(cache=True, error_model="numpy")
def _expm1_normal_32(x):
    k = np.floor(x * _LOG2E_32 + _HALF_32)
    r = (x - k * _LN2_HI_32) - k * _LN2_LO_32
    q = _INV_FACTORIAL_32[7]
    for i in range(6, 0, -1):
        q = fma(q, r, _INV_FACTORIAL_32[i])
    two_k = as_float(np.int32((np.int32(k) + np.int32(127)) << np.int32(23)))
    return fma(two_k, q * r, two_k - np.float32(1))


def _by_dtype(for_64, for_32):
    """An overload's typing function: the implementation for x's float type, None (no match)
    for any other type."""

    def implementation(x):
        if x == types.float64:
            return for_64
        if x == types.float32:
            return for_32
        return None

    return implementation


overload(expm1_normal)(_by_dtype(lambda x: _expm1_normal_64(x), lambda x: _expm1_normal_32(x)))
overload(exp_normal)(_by_dtype(lambda x: _exp_normal_64(x), lambda x: _exp_normal_32(x)))
overload(min_normal_arg)(_by_dtype(lambda x: _MIN_NORMAL_ARG_64, lambda x: _MIN_NORMAL_ARG_32))


@njit(cache=True, error_model="numpy", inline="always")
def exp_nonpositive_at(x, start, stop):
    """x[start:stop] ← e^x in place, for values ≤ 0, without making a view of the run: through
    `exp_normal` unless some e^x of the run is subnormal (`has_subnormal_result`)."""
    if has_subnormal_result(x, start, stop):
        for j in range(start, stop):
            x[j] = np.exp(x[j])
        return
    for j in range(start, stop):
        x[j] = exp_normal(x[j])


@njit(cache=True, error_model="numpy", inline="always")
def has_subnormal_result(x, start, stop):
    """Whether e^x is subnormal for some x of x[start:stop] (below ``exp_normal``'s range)."""
    bound = min_normal_arg(x.dtype.type(0))
    found = False
    for j in range(start, stop):
        found |= x[j] < bound
    return found
