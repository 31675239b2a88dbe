"""The hand-written kernels of ``numpy_backprop``, compiled with Numba: the equations. The
backend that lays a network out for them and calls them is `numba_dense`.

The functions keep the NumPy module's names and equations so the two read side by side; what
changes is how memory is used. Every buffer — activations, deltas, gradients — is given to a
kernel, which writes into it, so the training loop allocates nothing per step and runs as one
compiled call.

Two details keep the arithmetic in the net's dtype. Numba widens ``float32 * 0.5`` to float64, so
every constant is made from the data's own dtype (``dtype.type(1)``) rather than written as a
literal. And small products are written as loops, because a BLAS call costs more than a 4×3 by
3×4 product; large ones go to BLAS through ``np.dot``.

Division follows NumPy's rules rather than Python's (``error_model="numpy"``): no check for a
zero divisor, which no kernel here can meet, and without which LLVM vectorises the divisions of
σ(z) and of the softmax.

Each kernel is compiled once and called, except the scalar helpers used inside hot loops
(`biased`, `sigmoid_from`, `softplus_scalar`, `row_max`, `row_sum`), which Numba inlines so that
the loops vectorise. Each activation's f and f′ of one entry (`sigmoid_of`, `sigmoid_back`, …)
is a compiled function of its own, which LLVM inlines: Numba links a kernel's callees into its
module and optimises the whole, so the loops that call them vectorise as before (the same vector
instructions, the same times), where Numba's own inlining typed and lowered the eight
activations' bodies again at every call site (compiling every catalogue problem's kernels in
float32 took 95 s that way, 84.5 s so). The output layer's loss and δ (`loss_and_delta`, the
four losses' dispatch) is compiled once too, for the wide walk and the layered networks; only
the narrow walk lowers it inline, where a call cost the notebook's step 8%. Thin wrappers are
the other way round: a compiled function is optimised and compiled to machine code together
with everything it calls, so a compiled wrapper costs about as much as the walk beneath it, and
`wide_evaluate` and `loss_and_grads_into` are inlined into the entries that call them. The
dense problems' kernels in float32 compiled in 37.9 s with the wrappers inlined and in 32.7 s
with `loss_and_delta` compiled once as well, against 42.6 s before (one sitting; 33–35 s
against 38–49 s in two more, alternated). The walks over the layers take a network as a few
flat buffers and its widths (see "the layout" below), never as a tuple of per-layer arrays,
whose type would change with the depth: so each entry point (`forward` and `narrow_predict`, the
narrow and the wide walk's `*_loss_and_grads` and `*_train_loop`, `train_with_loop`) is compiled
once per dtype, whatever the network, and cached on disk (``cache=True``). Only the first
process on a machine pays for compilation, and a network of a new depth or width compiles
nothing. A network compiles only the walk its widths choose (the backend chooses it, by
`is_narrow`), except in `train_with_loop`, whose batches may differ in size.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import NamedTuple

import numpy as np
from numba import njit

from gradcheck import ops
from gradcheck.kernels.numba_exp import (
    exp_nonpositive_at,
    exp_normal,
    expm1_normal,
    min_normal_arg,
)
from gradcheck.ops import lookup
from gradcheck.optimizers import Optimizer

#: The codes the compiled dispatch of the losses takes (`loss`, `output_delta`): each name's
#: place in this list; the activations' are listed below their kernels (`Activation`).
Loss = IntEnum("Loss", ["half_sse", "mse", "bce", "softmax_ce"], start=0)
LOSS_CODES = {code.name: int(code) for code in Loss}
LOSS_COUNT = len(Loss)

#: Products of at least this many multiply-adds go to BLAS; smaller ones are cheaper as loops.
BLAS_MIN_WORK = 16 * 16 * 16
#: Fewer than this many sigmoids are cheaper one by one through the C library's exp.
SMALL = 64

jit = njit(cache=True, nogil=True, error_model="numpy")
#: For the scalar helpers inside hot loops: inlined, so that the loops vectorise.
inline = njit(cache=True, nogil=True, inline="always", error_model="numpy")


@inline
def unsigned(k):
    """A flat buffer's index k ≥ 0 as an unsigned integer. Numba wraps a signed index around
    when it is negative, a compare and select at every access, which LLVM can drop only where
    it can prove the index is not negative — not for an offset computed from widths read at run
    time. An unsigned index has none: the notebook's step went from 0.42 to 0.31 µs."""
    return np.uintp(k)


# --- products into preallocated buffers --------------------------------------------------------


@jit
def matmul(a, b, out):
    """out (m, n) = a (m, k) @ b (k, n)."""
    m, k = a.shape
    n = b.shape[1]
    if m * k * n >= BLAS_MIN_WORK:
        np.dot(a, b, out)
        return
    for i in range(m):
        for j in range(n):
            total = out.dtype.type(0)  # a register accumulator: out may alias nothing it reads
            for p in range(k):
                total += a[i, p] * b[p, j]
            out[i, j] = total


@jit
def matmul_tn(a, b, out):
    """out (m, n) = aᵀ @ b for a (k, m) and b (k, n), without making a transposed view."""
    k, m = a.shape
    n = b.shape[1]
    if m * k * n >= BLAS_MIN_WORK:
        np.dot(a.T, b, out)
        return
    for i in range(m):
        for j in range(n):
            total = out.dtype.type(0)
            for p in range(k):
                total += a[p, i] * b[p, j]
            out[i, j] = total


@jit
def matmul_nt(a, b, out):
    """out (m, n) = a @ bᵀ for a (m, k) and b (n, k), without making a transposed view."""
    m, k = a.shape
    n = b.shape[0]
    if m * k * n >= BLAS_MIN_WORK:
        np.dot(a, b.T, out)
        return
    for i in range(m):
        for j in range(n):
            total = out.dtype.type(0)
            for p in range(k):
                total += a[i, p] * b[j, p]
            out[i, j] = total


@inline
def copy_rows(source, out):
    """out (m, n) ← source (m, n), entry by entry: assigning one slice from another compiles
    Numba's message for mismatched shapes, 2 s of compiling per number of axes per process."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = source[i, j]


# --- activations: f(z + b) in place beside its f′(z, a) ---------------------------------------
# Each activation's forward overwrites z (N, n), which holds a_{l-1} W, with f(z + b); its
# backward overwrites grad (N, n), holding ∂C/∂a, with ∂C/∂z, reading z (as the forward pass
# kept it, where NEEDS_Z), a = f(z) or both, as the registry declares f′.


@inline
def biased(z, b, bias, i, j):
    """z_ij + b_j with bias, else z_ij: the bias is added by the pass that reads z."""
    return z[i, j] + b[j] if bias else z[i, j]


@jit
def sigmoid(z, b, bias):
    # σ(z) = 1/(1 + e) for z ≥ 0 and e/(1 + e) below, with e = e^{-|z|} ∈ (0, 1] never
    # overflowing; both are formed so the choice is a select, not an unpredictable jump. A row
    # is read twice while in cache: z + b and its range, then e and σ in vector registers —
    # unless z is too small for vector loops to pay off or one of the row's e is subnormal:
    # then the C library's exp, one at a time.
    one = z.dtype.type(1)
    bound = min_normal_arg(one)
    large = z.size >= SMALL
    N, n = z.shape
    for i in range(N):
        vector = large
        for j in range(n):
            z[i, j] = biased(z, b, bias, i, j)
            vector &= -abs(z[i, j]) >= bound
        if vector:
            for j in range(n):
                z[i, j] = sigmoid_from(z[i, j], exp_normal(-abs(z[i, j])), one)
        else:
            for j in range(n):
                z[i, j] = sigmoid_from(z[i, j], np.exp(-abs(z[i, j])), one)


@inline
def sigmoid_from(v, e, one):
    """σ(v) from e = e^{-|v|}."""
    positive = one / (one + e)
    return positive if v >= 0 else e * positive


@jit
def sigmoid_of(v, one):
    return sigmoid_from(v, np.exp(-abs(v)), one)


@jit
def sigmoid_back(g, z, a, one):
    return g * (a * (one - a))  # σ′ = σ(1 − σ)


@jit
def sigmoid_backward(z, a, grad):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            grad[i, j] = sigmoid_back(grad[i, j], z[i, j], a[i, j], one)


@jit
def tanh_of(v, one):
    """tanh(v) = −m / (2 + m) with v's sign, m = e^{−2|v|} − 1 (`expm1_normal`): plain
    arithmetic, so that the loops calling it vectorise, within 2.5 ulp (measured; the C
    library's tanh is within 1.2). Where e^{−2|v|} is below the normal floats, tanh(v) rounds
    to ±1, which m = −1 gives."""
    two = one + one
    m = expm1_normal(max(-two * abs(v), min_normal_arg(one)))
    t = -m / (two + m)
    return t if v >= one - one else -t


@jit
def tanh_back(g, z, a, one):
    return g * (one - a * a)  # tanh′ = 1 − tanh²


@jit
def tanh(z, b, bias):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] = tanh_of(biased(z, b, bias, i, j), one)


@jit
def tanh_backward(z, a, grad):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            grad[i, j] = tanh_back(grad[i, j], z[i, j], a[i, j], one)


@jit
def relu_of(v, one):
    zero = one - one
    return zero if v < zero else v


@jit
def relu_back(g, z, a, one):
    return one - one if a <= 0 else g  # relu′(0) = 0


@jit
def relu(z, b, bias):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] = relu_of(biased(z, b, bias, i, j), one)


@jit
def relu_backward(z, a, grad):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            grad[i, j] = relu_back(grad[i, j], z[i, j], a[i, j], one)


@jit
def identity_of(v, one):
    return v


@jit
def identity_back(g, z, a, one):
    return g  # ∂C/∂z = ∂C/∂a


@jit
def identity(z, b, bias):
    if bias:  # without one, a = z as it stands
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                z[i, j] = biased(z, b, bias, i, j)


@jit
def identity_backward(z, a, grad):
    pass  # ∂C/∂z = ∂C/∂a


@inline
def softplus_scalar(z, zero):
    return max(z, zero) + np.log1p(np.exp(-abs(z)))  # log(1 + e^z) without overflow


@jit
def softplus_of(v, one):
    return softplus_scalar(v, one - one)


@jit
def softplus_back(g, z, a, one):
    return g * -np.expm1(-a)  # softplus′ = σ(z) = 1 − e^{−a}


@jit
def softplus(z, b, bias):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] = softplus_of(biased(z, b, bias, i, j), one)


@jit
def softplus_backward(z, a, grad):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            grad[i, j] = softplus_back(grad[i, j], z[i, j], a[i, j], one)


@inline
def row_max(x, at, n):
    """max x[at : at + n]: a row of a flat buffer, without making a view of it."""
    largest = x[unsigned(at)]
    for k in range(at + 1, at + n):
        largest = max(largest, x[unsigned(k)])
    return largest


@inline
def row_sum(x, at, n):
    """Σ x[at : at + n] in order, without making a view of the row."""
    total = x.dtype.type(0)
    for k in range(at, at + n):
        total += x[unsigned(k)]
    return total


@jit
def softmax(z, b, bias, log_norm):
    """Also keeps log_norm[i] = log Σ_k e^{z_ik − max_k z_ik}, which the softmax_ce loss needs
    (without the shift added back, so a confident row's small loss keeps its digits)."""
    N, n = z.shape
    if bias:
        for i in range(N):
            for k in range(n):
                z[i, k] += b[k]
    softmax_rows(z.reshape(z.size), 0, N, n, log_norm)  # a view: z is C-contiguous


@inline
def softmax_rows(x, at, N, n, log_norm):
    """`softmax` of the N rows of n at ``at`` of a flat buffer, in place, by index."""
    for i in range(N):
        r = at + i * n
        shift = row_max(x, r, n)
        for k in range(r, r + n):
            x[unsigned(k)] -= shift  # shift so the largest exponent is 0
    exp_nonpositive_at(x, at, at + N * n)
    for i in range(N):
        r = at + i * n
        total = row_sum(x, r, n)
        for k in range(r, r + n):
            x[unsigned(k)] /= total
        log_norm[i] = np.log(total)


@inline
def softmax_back_row(a, grad, at, n):
    # ∂C/∂z = a ⊙ (∂C/∂a − ⟨∂C/∂a, a⟩) per sample: the softmax Jacobian diag(a) − a aᵀ.
    dot = a.dtype.type(0)
    for k in range(at, at + n):
        e = unsigned(k)
        dot += grad[e] * a[e]
    for k in range(at, at + n):
        e = unsigned(k)
        grad[e] = a[e] * (grad[e] - dot)


@jit
def softmax_backward(z, a, grad):
    N, n = a.shape
    a_flat, grad_flat = a.reshape(a.size), grad.reshape(grad.size)  # views: C-contiguous
    for i in range(N):
        softmax_back_row(a_flat, grad_flat, i * n, n)


@jit
def silu_of(v, one):
    return v * sigmoid_of(v, one)  # z σ(z)


@jit
def silu_back(g, z, a, one):
    e = np.exp(-abs(z))
    # silu′ = σ(z)(1 + z σ(−z)), each σ from e = e^{−|z|}
    return g * (sigmoid_from(z, e, one) * (one + z * sigmoid_from(-z, e, one)))


@jit
def silu(z, b, bias):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] = silu_of(biased(z, b, bias, i, j), one)


@jit
def silu_backward(z, a, grad):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            grad[i, j] = silu_back(grad[i, j], z[i, j], a[i, j], one)


@inline
def normal_cdf(v, one):
    # Φ(z) = ½ erfc(−z/√2): no 1 + erf to cancel below 0
    return type(one)(0.5) * math.erfc(-v * type(one)(0.7071067811865476))


@jit
def gelu_of(v, one):
    return v * normal_cdf(v, one)  # z Φ(z)


@jit
def gelu_back(g, z, a, one):
    zc = min(max(z, type(one)(-40)), type(one)(40))  # φ is 0 beyond; zc² cannot overflow
    phi = np.exp(-(zc * zc) / (one + one)) * type(one)(0.3989422804014327)  # e^{−z²/2}/√(2π)
    return g * (normal_cdf(z, one) + z * phi)  # gelu′ = Φ(z) + z φ(z)


@jit
def gelu(z, b, bias):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] = gelu_of(biased(z, b, bias, i, j), one)


@jit
def gelu_backward(z, a, grad):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            grad[i, j] = gelu_back(grad[i, j], z[i, j], a[i, j], one)


@inline
def gelu_tanh_u(z, one):
    """u = √(2/π)(z + 0.044715 z³), z clipped where σ(2u) is 0 or 1 already (z³ cannot
    overflow)."""
    zc = min(max(z, type(one)(-1e4)), type(one)(1e4))
    return type(one)(0.7978845608028654) * (zc + type(one)(0.044715) * (zc * zc * zc))


@jit
def gelu_tanh_of(v, one):
    return v * sigmoid_of((one + one) * gelu_tanh_u(v, one), one)  # ½ z (1 + tanh u) = z σ(2u)


@jit
def gelu_tanh_back(g, z, a, one):
    two = one + one
    w = two * gelu_tanh_u(z, one)  # 2u
    e = np.exp(-abs(w))
    s, s_neg = sigmoid_from(w, e, one), sigmoid_from(-w, e, one)  # σ(2u), σ(−2u)
    zc = min(max(z, type(one)(-1e4)), type(one)(1e4))
    du = type(one)(0.7978845608028654) * (one + type(one)(3 * 0.044715) * (zc * zc))  # u′
    return g * (s + zc * (two * s * s_neg) * du)  # σ(2u) + z σ′(2u)·2u′


@jit
def gelu_tanh(z, b, bias):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j] = gelu_tanh_of(biased(z, b, bias, i, j), one)


@jit
def gelu_tanh_backward(z, a, grad):
    one = z.dtype.type(1)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            grad[i, j] = gelu_tanh_back(grad[i, j], z[i, j], a[i, j], one)


ACTIVATION_NAMES = (
    "sigmoid", "tanh", "relu", "identity", "softplus", "softmax", "silu", "gelu", "gelu_tanh"
)  # fmt: skip
Activation = IntEnum("Activation", ACTIVATION_NAMES, start=0)  # type: ignore[misc]
# The codes the compiled dispatch of the activations takes (`activate`, `activation_backward`):
# each name's place in this list, beneath the kernels, written here rather than read from the
# registry so that a change of codes changes this file and with it Numba's cached code. The
# compiled code compares with ``Activation.sigmoid``; the Python boundary looks a name up in
# ``ACTIVATION_CODES``; a code without a branch raises (`check_code`, before any per-entry
# dispatch). Numba's cache checks only the file of each compiled function, so `numba_conv`,
# whose kernels compile in `activate_entries` and `activation_backward`, repeats this list (a
# test holds the two equal): a new code changes both files, and both files' cached code.
ACTIVATION_CODES = {code.name: int(code) for code in Activation}
#: By activation code: whether f′ reads z (the registry's ``needs``), so that the forward pass
#: keeps a copy of z before f overwrites it.
NEEDS_Z = np.array(
    ["z" in lookup(ops.ACTIVATIONS, code.name, "activation").needs for code in Activation]
)


@inline
def unknown(one):
    """NaN in ``one``'s type: the result of an entry's dispatch on a code it has no branch for
    (0/0, without a check under ``error_model="numpy"``)."""
    zero = one - one
    return zero / zero


@jit
def check_layout(net):
    """`check_codes` for a network's `Layout`, and its loss code."""
    check_codes(net.activations)
    if net.loss < 0 or net.loss >= LOSS_COUNT:
        raise ValueError("check_layout: unknown loss code")


@jit
def check_codes(activations):
    """`check_code` for each of a walk's activation codes."""
    for code in activations:
        check_code(code)


@jit
def check_code(activation):
    """Raise on an unknown activation code. The kernels that dispatch on a code entry by entry
    (`activation_of`, `activation_back`) check it here once, before any work, and the dispatch
    itself returns NaN for a code it has no branch for rather than raising: a ``raise``
    reachable inside a step's loops made the notebook's 3-4-1 step half again as slow (0.46 µs
    against 0.30, measured)."""
    if activation < 0 or activation >= len(ACTIVATION_NAMES):
        raise ValueError("check_code: unknown activation code")


@jit
def check_entrywise(activation):
    """`check_code`, and refuse the softmax, which takes a whole row: for the kernels that
    apply f entry by entry (`activate_entries`)."""
    check_code(activation)
    if activation == Activation.softmax:
        raise ValueError("check_entrywise: the softmax takes whole rows")


@inline
def activation_of(activation, v, one):
    """f(v) of one entry, by activation code; NaN for the softmax, which takes a row, or an
    unknown code (`check_codes`)."""
    if activation == Activation.sigmoid:
        return sigmoid_of(v, one)
    if activation == Activation.tanh:
        return tanh_of(v, one)
    if activation == Activation.relu:
        return relu_of(v, one)
    if activation == Activation.identity:
        return identity_of(v, one)
    if activation == Activation.softplus:
        return softplus_of(v, one)
    if activation == Activation.silu:
        return silu_of(v, one)
    if activation == Activation.gelu:
        return gelu_of(v, one)
    if activation == Activation.gelu_tanh:
        return gelu_tanh_of(v, one)
    return unknown(one)


@inline
def activation_back(activation, g, z, a, one):
    """∂C/∂z = g f′ of one entry from g = ∂C/∂a, by activation code; NaN for the softmax or an
    unknown code (`check_codes`)."""
    if activation == Activation.sigmoid:
        return sigmoid_back(g, z, a, one)
    if activation == Activation.tanh:
        return tanh_back(g, z, a, one)
    if activation == Activation.relu:
        return relu_back(g, z, a, one)
    if activation == Activation.identity:
        return identity_back(g, z, a, one)
    if activation == Activation.softplus:
        return softplus_back(g, z, a, one)
    if activation == Activation.silu:
        return silu_back(g, z, a, one)
    if activation == Activation.gelu:
        return gelu_back(g, z, a, one)
    if activation == Activation.gelu_tanh:
        return gelu_tanh_back(g, z, a, one)
    return unknown(one)


@jit
def activate(activation, z, b, bias, log_norm):
    """a = f(z + b), overwriting z (N, n); b (n,) only with bias. log_norm (N,) is set by
    softmax."""
    if activation == Activation.sigmoid:
        sigmoid(z, b, bias)
    elif activation == Activation.tanh:
        tanh(z, b, bias)
    elif activation == Activation.relu:
        relu(z, b, bias)
    elif activation == Activation.identity:
        identity(z, b, bias)
    elif activation == Activation.softplus:
        softplus(z, b, bias)
    elif activation == Activation.softmax:
        softmax(z, b, bias, log_norm)
    elif activation == Activation.silu:
        silu(z, b, bias)
    elif activation == Activation.gelu:
        gelu(z, b, bias)
    elif activation == Activation.gelu_tanh:
        gelu_tanh(z, b, bias)
    else:
        raise ValueError("activate: unknown activation code")


@jit
def activate_entries(activation, z):
    """a = f(z), overwriting z (N, n), without a bias: `activate` for an activation that
    `check_entrywise` passes, which keeps no row's normaliser."""
    unused = np.empty(0, z.dtype)
    no_bias = unused.size > 0  # False, as a bool: the literal False would compile every
    activate(activation, z, unused, no_bias, unused)  # activation a second time, for itself


@jit
def activation_backward(activation, z, a, grad):
    """Overwrite grad (N, n), holding ∂C/∂a, with ∂C/∂z, from z (read only where NEEDS_Z) and
    a = f(z), both (N, n)."""
    if activation == Activation.sigmoid:
        sigmoid_backward(z, a, grad)
    elif activation == Activation.tanh:
        tanh_backward(z, a, grad)
    elif activation == Activation.relu:
        relu_backward(z, a, grad)
    elif activation == Activation.identity:
        identity_backward(z, a, grad)
    elif activation == Activation.softplus:
        softplus_backward(z, a, grad)
    elif activation == Activation.softmax:
        softmax_backward(z, a, grad)
    elif activation == Activation.silu:
        silu_backward(z, a, grad)
    elif activation == Activation.gelu:
        gelu_backward(z, a, grad)
    elif activation == Activation.gelu_tanh:
        gelu_tanh_backward(z, a, grad)
    else:
        raise ValueError("activation_backward: unknown activation code")


# --- the layout: a network's arrays as blocks of a few flat buffers ----------------------------
# The weights are one vector θ, layer by layer W_l (n_{l-1}·n_l, row-major) then b_l (n_l, empty
# without bias); the gradients are a vector laid out alike. The activations A[1..L] of N rows are
# one buffer, layer by layer (N·n_l each), and so are the pre-activations Z[1..L] (each written
# only where f′ needs z, and for the output layer, whose Z[L] is the logits) and the deltas
# D[0..L-1] (δ of layer l+1 in D[l], the size of A[l+1]). The walks over the layers take views
# of their blocks, so their types do not depend on the depth: one compiled walk serves every
# network of a dtype, and a network never seen before compiles nothing. What travels together
# travels as a named tuple: the network's `Layout`, the `Buffers`, a training run's `Batches`
# and its optimizer's `Rule`.


class Layout(NamedTuple):
    """A network as the walks take it."""

    activations: np.ndarray  # (L,) each weight layer's activation code
    widths: np.ndarray  # (L + 1,) n_0 … n_L
    bias: bool
    loss: int  # the loss's code


class Buffers(NamedTuple):
    """What one evaluation writes before it reads, each a flat buffer in the layout above: the
    activations A[1..L], the pre-activations Z[1..L] (the logits Z[L], and each hidden Z[l]
    whose f′ reads z), each row's log-normaliser, the deltas D[0..L-1] and the gradient."""

    acts: np.ndarray  # (N·Σ_l n_l,)
    zs: np.ndarray  # (N·Σ_l n_l,)
    log_norm: np.ndarray  # (N,), or more
    deltas: np.ndarray  # (N·Σ_l n_l,)
    grad: np.ndarray  # (P,), laid out like θ


@inline
def weights(theta, widths, bias, l):
    """W_l (n_l, n_{l+1}) and b_l (n_{l+1},) of weight layer l (from 0): views of θ."""
    at = 0
    for k in range(l):
        at += widths[k] * widths[k + 1] + (widths[k + 1] if bias else 0)
    m, n = widths[l], widths[l + 1]
    b_at = at + m * n
    return theta[at:b_at].reshape((m, n)), theta[b_at : b_at + (n if bias else 0)]


@inline
def block(arena, widths, N, l):
    """Layer l's (N, n_l) block, l ≥ 1, of a buffer holding layers 1..L in order."""
    at = block_at(widths, N, l)
    return arena[at : at + N * widths[l]].reshape((N, widths[l]))


@inline
def block_at(widths, N, l):
    """Where layer l's block starts, l ≥ 1, in a buffer holding layers 1..L in order."""
    at = 0
    for k in range(1, l):
        at += N * widths[k]
    return at


@inline
def layer_input(X, acts, widths, l):
    """A[l]: the inputs X for l = 0, else layer l's activations."""
    return X if l == 0 else block(acts, widths, X.shape[0], l)


# --- forward -------------------------------------------------------------------------------------


@inline
def pre_activation(a_prev, W, z):
    """z ← a_{l-1} W_l; the bias b_l is added by the pass that reads z next (`activate`, or
    `keep_pre_activation`), which spares a pass over z of its own."""
    matmul(a_prev, W, z)  # (N, n_{l-1}) @ (n_{l-1}, n_l) -> (N, n_l)


@inline
def keep_pre_activation(z, b, bias, kept):
    """z ← z + b, and kept ← z: the logits, which the losses on logits need, or a hidden z
    that f′ reads, after f overwrites z."""
    for i in range(z.shape[0]):
        for k in range(z.shape[1]):
            z[i, k] = biased(z, b, bias, i, k)
            kept[i, k] = z[i, k]


@jit
def dense_forward(activation, a_prev, W, b, bias, last, z, kept, log_norm):
    """a_l = f(a_{l-1} W_l + b_l) into z (N, n_l); z_l itself is kept in ``kept`` for the
    output layer (``last``: the logits) and where f′ reads z (`NEEDS_Z`); a softmax also keeps
    each row's log-normaliser in log_norm."""
    pre_activation(a_prev, W, z)
    dense_activate(activation, b, bias, last, z, kept, log_norm)


@jit
def dense_activate(activation, b, bias, last, z, kept, log_norm):
    """`dense_forward` once z holds a_{l-1} W_l: z ← f(z + b), z + b kept where it is."""
    keep = last or NEEDS_Z[activation]
    if keep:
        keep_pre_activation(z, b, bias, kept)  # adds b to z
    activate(activation, z, b, bias and not keep, log_norm)


@jit
def forward(net, theta, X, buffers):
    """Fill the buffers' acts with the activations A[1..L] of A[0] = X (N rows), zs with the
    logits Z[L] and every hidden Z[l] that f′ reads and, for a softmax output, log_norm with
    each row's log Σ_k e^{z_k − max z}."""
    widths, acts, zs = net.widths, buffers.acts, buffers.zs
    L, N = len(net.activations), X.shape[0]
    for l in range(L):
        W, b = weights(theta, widths, net.bias, l)
        dense_forward(net.activations[l], layer_input(X, acts, widths, l), W, b, net.bias,
                      l == L - 1, block(acts, widths, N, l + 1), block(zs, widths, N, l + 1),
                      buffers.log_norm)  # fmt: skip


# --- loss C and the output delta δ_L = ∂C/∂z_L ---------------------------------------------------


@inline
def loss(loss_code, a, z, at, log_norm, y):
    """C for the outputs a (N, K) with logits z, both at ``at`` of flat buffers (row-major),
    and targets y (N, K); log_norm as forward leaves it. NaN for an unknown loss code (see
    `check_layout`)."""
    N, K = y.shape
    one = a.dtype.type(1)
    zero = one - one
    total = zero
    for i in range(N):
        r = at + i * K  # the row's first entry
        row = zero  # per-row partial sums keep the accumulation short
        if loss_code == Loss.softmax_ce:
            shift = row_max(z, r, K)
            for k in range(K):
                e = unsigned(r + k)
                row -= y[i, k] * ((z[e] - shift) - log_norm[i])  # −y log softmax(z)
        else:
            for k in range(K):
                e = unsigned(r + k)
                if loss_code == Loss.bce:
                    # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z
                    row += softplus_scalar(z[e], zero) - y[i, k] * z[e]
                else:
                    diff = a[e] - y[i, k]
                    row += diff * diff
        total += row
    if loss_code == Loss.half_sse:
        return total / (one + one)
    if loss_code == Loss.softmax_ce:
        return total / a.dtype.type(N)
    if loss_code == Loss.mse or loss_code == Loss.bce:
        return total / a.dtype.type(N * K)
    return unknown(one)


@inline
def output_delta(loss_code, activation, z, a, at, y, delta):
    """Write δ_L = ∂C/∂z_L (N, K) into delta, from the logits z and outputs a: all three at
    ``at`` of flat buffers, row-major. NaN for an unknown loss code (see `check_layout`)."""
    N, K = y.shape
    one = a.dtype.type(1)
    count = a.dtype.type(N * K)
    for i in range(N):
        r = at + i * K
        if loss_code == Loss.bce:
            for k in range(K):
                e = unsigned(r + k)
                delta[e] = (a[e] - y[i, k]) / count  # σ′ cancels 1/(a(1 − a))
        elif loss_code == Loss.softmax_ce:
            n = a.dtype.type(N)
            y_sum = one - one  # a Σ_k y_k − y: the familiar a − y for one-hot rows
            for k in range(K):
                y_sum += y[i, k]
            for k in range(K):
                e = unsigned(r + k)
                delta[e] = (a[e] * y_sum - y[i, k]) / n
        elif loss_code == Loss.half_sse or loss_code == Loss.mse:
            for k in range(K):
                e = unsigned(r + k)
                diff = a[e] - y[i, k]  # ∂/∂a of ½(a − y)², then through f′
                g = diff if loss_code == Loss.half_sse else (one + one) * diff / count
                if activation != Activation.softmax:
                    g = activation_back(activation, g, z[e], a[e], one)
                delta[e] = g
            if activation == Activation.softmax:
                softmax_back_row(a, delta, r, K)
        else:
            for k in range(K):
                delta[unsigned(r + k)] = unknown(one)


# --- backward ------------------------------------------------------------------------------------


@inline
def layer_grads(a_prev, delta, bias, dW, db):
    matmul_tn(a_prev, delta, dW)  # (n_{l-1}, N) @ (N, n_l) -> (n_{l-1}, n_l)
    if bias:
        db[:] = 0  # (N, n_l) summed over rows -> (n_l,)
        for i in range(delta.shape[0]):
            for j in range(db.shape[0]):
                db[j] += delta[i, j]


@inline
def hidden_delta(delta, W, activation, z_prev, a_prev, delta_prev):
    matmul_nt(delta, W, delta_prev)  # (N, n_l) @ (n_l, n_{l-1}) -> (N, n_{l-1})
    activation_backward(activation, z_prev, a_prev, delta_prev)


@jit
def backward(net, theta, X, buffers):
    """Fill the gradient vector from the output delta already in D[L-1]."""
    widths, acts, zs, deltas = net.widths, buffers.acts, buffers.zs, buffers.deltas
    N = X.shape[0]
    for l in range(len(net.activations) - 1, -1, -1):
        dW, db = weights(buffers.grad, widths, net.bias, l)
        delta = block(deltas, widths, N, l + 1)
        layer_grads(layer_input(X, acts, widths, l), delta, net.bias, dW, db)
        if l > 0:
            W, _ = weights(theta, widths, net.bias, l)
            hidden_delta(delta, W, net.activations[l - 1], block(zs, widths, N, l),
                         block(acts, widths, N, l), block(deltas, widths, N, l))  # fmt: skip


# --- a list of layers: each layer's pass as one call from `numba_layers`' walk -----------------
# That walk runs in Python, and a call into Numba costs about 0.5 µs to unbox nine arrays, as
# much as a (64, 128) batch's element-wise pass: so a layer's work in one direction is one call.


@jit
def dense_backward(activation, turn, z, a, grad, x, bias, dW, db, W, input_grad, below):
    """A Dense layer on input rows x (N, n_{l-1}): with ``turn``, ∂C/∂a_l in grad (N, n_l)
    made δ_l in place (the output layer's grad is δ_L already); ∂C/∂W_l and ∂C/∂b_l; and with
    ``input_grad``, ∂C/∂a_{l-1} into below."""
    if turn:
        activation_backward(activation, z, a, grad)
    layer_grads(x, grad, bias, dW, db)
    if input_grad:
        matmul_nt(grad, W, below)  # (N, n_l) @ (n_l, n_{l-1}) -> (N, n_{l-1})


@jit
def activation_layer(activation, x, out, log_norm):
    """An Activation layer: out = f(x), (N, n); a softmax's row normalisers into log_norm."""
    copy_rows(x, out)
    no_bias = log_norm.size < 0  # False, as a bool (see `activate_entries`)
    activate(activation, out, log_norm, no_bias, log_norm)


@jit
def activation_layer_backward(activation, x, a, grad, below):
    """An Activation layer's ∂C/∂x = ∂C/∂a ⊙ f′ into below, from its input x and output a."""
    copy_rows(grad, below)
    activation_backward(activation, x, a, below)


@jit
def loss_and_delta(loss_code, activation, z, a, at, log_norm, y, delta):
    """C, and δ_L = ∂C/∂z_L into delta: `loss` and `output_delta` on the output layer's block
    at ``at`` of the flat z, a and delta. Compiled once, for the wide walk and the layered
    networks, rather than typed again in every kernel that calls it (see the module's
    docstring)."""
    value = loss(loss_code, a, z, at, log_norm, y)
    output_delta(loss_code, activation, z, a, at, y, delta)
    return value


#: `loss_and_delta` lowered into the narrow walk rather than called: the call's arguments cost
#: the notebook's step 8% (0.42 µs → 0.46).
loss_and_delta_inline = inline(loss_and_delta.py_func)


# --- narrow networks: the same walks, every entry indexed in the flat buffers -------------------
# On a network whose products are all too small for BLAS (the notebook's 3-4-1 on 4 samples: 60
# multiply-adds and 20 exponentials a step), the views of the walks above and the calls between
# their kernels cost more than the arithmetic: a view counts a reference on its buffer and a
# reshape builds its shape. So such a network walks its layers here, with the same equations
# and sums in the same order, reading and writing θ and the buffers at offsets (`unsigned`), with
# no view at all: the inputs come flat, the softmax's rows, the loss and the output delta index
# the output layer's block, and each entry's f and f′ go through `activation_of` and
# `activation_back`.
# The walk is compiled whole into `narrow_evaluate`, which a training loop of its own calls
# (`narrow_train_loop`), and nothing in a step can raise: measured on the notebook, each of a
# reshape a step, a view of the output layer, the wide walk's calls and a raise left in the
# dispatch cost 0.1–0.3 µs a step, about what its arithmetic takes (the step is now about
# 0.28 µs, the hand-written floor's 0.15). Which walk a call takes depends on its widths and
# N, read at run time: nothing is compiled per network.


@inline
def is_narrow(widths, N):
    """Whether every layer's product, N·n_{l-1}·n_l multiply-adds, is below BLAS's share."""
    for l in range(len(widths) - 1):  # noqa: SIM110 - Numba compiles the loop, not all()
        if N * widths[l] * widths[l + 1] >= BLAS_MIN_WORK:
            return False
    return True


@inline
def narrow_forward(net, theta, inputs, N, buffers):
    """`forward` for a narrow network, from its N inputs as one flat (N·n_0,) array."""
    activations, widths, bias = net.activations, net.widths, net.bias
    acts, zs = buffers.acts, buffers.zs
    L = len(activations)
    one = theta.dtype.type(1)
    w_at, in_at, out_at = 0, 0, 0  # W_l in θ, A[l] and A[l+1] in acts
    for l in range(L):
        m, n, f = widths[l], widths[l + 1], activations[l]
        b_at = w_at + m * n
        source, s_at = (inputs, 0) if l == 0 else (acts, in_at)
        keep = l == L - 1 or NEEDS_Z[f]
        for i in range(N):
            for j in range(n):
                z = theta.dtype.type(0)  # z = a_{l-1} W_l + b_l
                for p in range(m):
                    z += source[unsigned(s_at + i * m + p)] * theta[unsigned(w_at + p * n + j)]
                if bias:
                    z += theta[unsigned(b_at + j)]
                e = unsigned(out_at + i * n + j)
                if keep:
                    zs[e] = z
                acts[e] = z if f == Activation.softmax else activation_of(f, z, one)
        if f == Activation.softmax:  # a row's f, by index as the rest
            softmax_rows(acts, out_at, N, n, buffers.log_norm)
        in_at, out_at = out_at, out_at + N * n
        w_at = b_at + (n if bias else 0)


@jit
def narrow_predict(net, theta, inputs, N, buffers):
    """`forward` for a narrow network, from its N inputs flat: the activations in buffers.acts,
    the codes checked first (`check_codes`)."""
    check_codes(net.activations)
    narrow_forward(net, theta, inputs, N, buffers)


@inline
def narrow_backward(net, theta, inputs, N, buffers):
    """`backward` for a narrow network: the gradient from the output delta in D[L-1]."""
    activations, widths, bias = net.activations, net.widths, net.bias
    acts, zs, deltas, grad = buffers.acts, buffers.zs, buffers.deltas, buffers.grad
    L = len(activations)
    one = theta.dtype.type(1)
    w_end, a_end = 0, 0  # where the top layer's weights and blocks end
    for l in range(L):
        w_end += widths[l] * widths[l + 1] + (widths[l + 1] if bias else 0)
        a_end += N * widths[l + 1]
    for l in range(L - 1, -1, -1):
        m, n = widths[l], widths[l + 1]
        w_at = w_end - m * n - (n if bias else 0)
        b_at = w_at + m * n
        d_at = a_end - N * n  # δ_l in deltas, a_l in acts
        prev_at = d_at - N * m  # a_{l-1}, δ_{l-1} (l > 0)
        source, s_at = (inputs, 0) if l == 0 else (acts, prev_at)
        for p in range(m):  # ∂C/∂W_l = a_{l-1}ᵀ δ_l
            for j in range(n):
                total = theta.dtype.type(0)
                for i in range(N):
                    total += source[unsigned(s_at + i * m + p)] * deltas[unsigned(d_at + i * n + j)]
                grad[unsigned(w_at + p * n + j)] = total
        if bias:  # ∂C/∂b_l = Σ_i δ_l
            for j in range(n):
                grad[unsigned(b_at + j)] = 0
            for i in range(N):
                for j in range(n):
                    grad[unsigned(b_at + j)] += deltas[unsigned(d_at + i * n + j)]
        if l > 0:  # δ_{l-1} = (δ_l W_lᵀ) ⊙ f′(z_{l-1})
            f = activations[l - 1]
            for i in range(N):
                for p in range(m):
                    total = theta.dtype.type(0)
                    for j in range(n):
                        total += (
                            deltas[unsigned(d_at + i * n + j)] * theta[unsigned(w_at + p * n + j)]
                        )
                    e = unsigned(prev_at + i * m + p)
                    deltas[e] = activation_back(f, total, zs[e], acts[e], one)
        w_end, a_end = w_at, d_at


@inline
def loss_and_output_delta(net, y, N, buffers, kernel):
    """C, and δ_L = ∂C/∂z_L into the deltas, from the output layer's block of N rows, by
    ``kernel`` (`loss_and_delta` or its inlined form)."""
    at = block_at(net.widths, N, len(net.widths) - 1)  # the output layer's
    return kernel(net.loss, net.activations[-1], buffers.zs, buffers.acts, at,
                  buffers.log_norm, y, buffers.deltas)  # fmt: skip


@inline
def wide_evaluate(net, theta, X, y, buffers):
    """One evaluation: forward, C, δ_L and backward; returns C, the gradient in buffers.grad.
    Inlined into the entries that call it (`wide_loss_and_grads`, `wide_train_loop`): compiled
    on its own, it cost as much to compile as the walk beneath it (see the module's
    docstring)."""
    forward(net, theta, X, buffers)
    value = loss_and_output_delta(net, y, X.shape[0], buffers, loss_and_delta)
    backward(net, theta, X, buffers)
    return value


@jit
def narrow_evaluate(net, theta, inputs, N, y, buffers):
    """`wide_evaluate` for a narrow network, from its N inputs as one flat (N·n_0,) array."""
    narrow_forward(net, theta, inputs, N, buffers)
    value = loss_and_output_delta(net, y, N, buffers, loss_and_delta_inline)
    narrow_backward(net, theta, inputs, N, buffers)
    return value


@jit
def narrow_loss_and_grads(net, theta, inputs, N, y, buffers):
    """`narrow_evaluate` after `check_layout`: one evaluation of a narrow network, as the
    backend calls it."""
    check_layout(net)
    return narrow_evaluate(net, theta, inputs, N, y, buffers)


@jit
def wide_loss_and_grads(net, theta, X, y, buffers):
    """`wide_evaluate` after `check_layout`: one evaluation, as the backend calls it."""
    check_layout(net)
    return wide_evaluate(net, theta, X, y, buffers)


@inline
def loss_and_grads_into(net, theta, X, y, buffers):
    """One evaluation, by the walk that X's N rows and the widths make the network's
    (`is_narrow`): C, and the gradient in buffers.grad. For a training loop whose batches may
    differ in size (inlined into `train_with_loop`, its one caller); the backend, given one
    batch, chooses the walk itself and calls its entry (`narrow_loss_and_grads`,
    `wide_loss_and_grads`), so that a network compiles only its own walk: the notebook's first
    `gradcheck verify` compiled both, 33 of its 41–44 seconds."""
    if is_narrow(net.widths, X.shape[0]):
        return narrow_loss_and_grads(net, theta, X.reshape(X.size), X.shape[0], y, buffers)
    return wide_loss_and_grads(net, theta, X, y, buffers)


@inline
def descend(theta, grad, lr):
    """θ ← θ − lr · g, in place; both 1-D."""
    for i in range(theta.shape[0]):
        theta[i] -= lr * grad[i]


@jit
def wide_train_loop(net, theta, X, y, lr, buffers, losses):
    """``len(losses)`` gradient-descent steps on θ in place; losses[t] before step t."""
    check_layout(net)
    for t in range(losses.shape[0]):
        losses[t] = wide_evaluate(net, theta, X, y, buffers)
        descend(theta, buffers.grad, lr)


@jit
def narrow_train_loop(net, theta, inputs, N, y, lr, buffers, losses):
    """`wide_train_loop` for a narrow network, from its N inputs flat. A loop of its own: in a
    loop that could also call the wide walk's kernels, which may raise, the notebook's step
    took twice as long."""
    check_layout(net)
    for t in range(losses.shape[0]):
        losses[t] = narrow_evaluate(net, theta, inputs, N, y, buffers)
        descend(theta, buffers.grad, lr)


# --- optimizers: gradcheck.optimizers' equations, element by element, state in buffers ----------

SGD_CODE, RMSPROP_CODE, ADAM_CODE = range(3)


@inline
def decayed(theta, i, lr, decay):
    """θ − ηλθ: decoupled weight decay, before the update."""
    return theta[i] - lr * decay * theta[i] if decay != 0 else theta[i]


# Each rule reads its state into locals and writes each entry once, and its per-entry choices
# (centred, ε's place) are values rather than paths, so LLVM can vectorise the loop; the branches
# left (momentum, AMSGrad) are the same for every entry, and LLVM takes them out of the loop. A
# branch on the optimizer inside the loop, with stores in its arms, kept it element by element
# (18 times slower for Adam).


@jit
def sgd_update(lr, decay, momentum, nesterov, theta, g, m):
    """m ← μ m − η g; θ ← θ + m, or θ + μ m − η g with Nesterov; μ = 0: θ ← θ − η g."""
    for i in range(theta.size):
        th = decayed(theta, i, lr, decay)
        if momentum == 0:
            theta[i] = th - lr * g[i]
        else:
            mi = momentum * m[i] - lr * g[i]
            m[i] = mi
            theta[i] = th + (momentum * mi - lr * g[i] if nesterov else mi)


@jit
def rmsprop_update(lr, decay, momentum, rho, eps, centered, outside, theta, g, m, v, a):
    """v ← ρ v + (1 − ρ) g²; centred, a ← ρ a + (1 − ρ) g and v̄ = v − a²; Δ = η g / (√v̄ + ε)
    (ε outside) or η g / √(v̄ + ε); with momentum b ← μ b + Δ (kept in m), θ ← θ − b."""
    one = theta.dtype.type(1)
    for i in range(theta.size):
        th = decayed(theta, i, lr, decay)
        gi = g[i]
        vi = rho * v[i] + (one - rho) * (gi * gi)
        v[i] = vi
        ai = rho * a[i] + (one - rho) * gi if centered else a[i]
        a[i] = ai
        v_bar = vi - ai * ai if centered else vi
        delta = lr * gi / (np.sqrt(v_bar) + eps) if outside else lr * gi / np.sqrt(v_bar + eps)
        if momentum == 0:
            theta[i] = th - delta
        else:
            mi = momentum * m[i] + delta
            m[i] = mi
            theta[i] = th - mi


@jit
def adam_update(lr, decay, eps, beta_1, beta_2, amsgrad, paper, t, theta, g, m, v, v_max):
    """m ← β₁ m + (1 − β₁) g, v ← β₂ v + (1 − β₂) g²; Keras's ε: θ ← θ − α m / (√v + ε) with
    α = η √(1 − β₂ᵗ) / (1 − β₁ᵗ); the paper's: θ ← θ − η m̂ / (√v̂ + ε); AMSGrad divides by
    the largest second moment so far."""
    one = theta.dtype.type(1)
    # the bias corrections in float64, then in θ's dtype
    c1 = theta.dtype.type(1.0 - float(beta_1) ** t)
    c2 = theta.dtype.type(1.0 - float(beta_2) ** t)
    alpha = theta.dtype.type(
        float(lr) * np.sqrt(1.0 - float(beta_2) ** t) / (1.0 - float(beta_1) ** t)
    )
    for i in range(theta.size):
        th = decayed(theta, i, lr, decay)
        gi = g[i]
        mi = beta_1 * m[i] + (one - beta_1) * gi
        vi = beta_2 * v[i] + (one - beta_2) * (gi * gi)
        m[i], v[i] = mi, vi
        second = vi / c2 if paper else vi
        if amsgrad:
            second = max(v_max[i], second)
            v_max[i] = second
        step = lr * (mi / c1) if paper else alpha * mi
        theta[i] = th - step / (np.sqrt(second) + eps)


@jit
def optimizer_update(kind, hyper, flags, t, theta, g, m, v, a, v_max):
    """One step of the optimizer on a flat parameter θ with gradient g at step t, in place;
    m, v, a and v_max are its state, as gradcheck.optimizers names it. ``hyper`` holds η, λ,
    μ, ρ, ε, β₁, β₂ in θ's dtype; ``flags`` nesterov, centered, ε outside (RMSprop), AMSGrad,
    ε as the paper places it (Adam)."""
    lr, decay, momentum, rho, eps, beta_1, beta_2 = hyper
    nesterov, centered, outside, amsgrad, paper = flags
    if kind == SGD_CODE:
        sgd_update(lr, decay, momentum, nesterov, theta, g, m)
    elif kind == RMSPROP_CODE:
        rmsprop_update(lr, decay, momentum, rho, eps, centered, outside, theta, g, m, v, a)
    elif kind == ADAM_CODE:
        adam_update(lr, decay, eps, beta_1, beta_2, amsgrad, paper, t, theta, g, m, v, v_max)
    else:
        raise ValueError("optimizer_update: unknown optimizer code")


@jit
def gather(rows, n, source, out):
    """out[:n] = source[rows[:n]], row by row."""
    for i in range(n):
        for j in range(source.shape[1]):
            out[i, j] = source[rows[i], j]


class Batches(NamedTuple):
    """A training run's batches: row t of ``rows`` holds the sample indices of step t's batch,
    the first ``sizes[t]`` of them; ``inputs`` and ``targets`` hold a batch of the largest
    size, flat."""

    rows: np.ndarray  # (T, B) int64
    sizes: np.ndarray  # (T,) int64
    inputs: np.ndarray  # (B·n_0,)
    targets: np.ndarray  # (B·K,)


class Rule(NamedTuple):
    """An optimizer as `optimizer_update` takes it (`optimizer_settings`), with its state."""

    kind: int
    hyper: np.ndarray  # (7,) η, λ, μ, ρ, ε, β₁, β₂
    flags: tuple  # nesterov, centered, ε outside, AMSGrad, ε as the paper places it
    state: np.ndarray  # (4, P) m, v, a, v_max


@jit
def train_with_loop(net, theta, X, y, batches, rule, buffers, losses):
    """One optimizer step per batch, in place on θ; ``buffers`` hold a batch of the largest
    size."""
    state = rule.state
    for t in range(losses.shape[0]):
        n = batches.sizes[t]
        Xb = batches.inputs[: n * X.shape[1]].reshape((n, X.shape[1]))
        yb = batches.targets[: n * y.shape[1]].reshape((n, y.shape[1]))
        gather(batches.rows[t], n, X, Xb)
        gather(batches.rows[t], n, y, yb)
        losses[t] = loss_and_grads_into(net, theta, Xb, yb, buffers)
        optimizer_update(rule.kind, rule.hyper, rule.flags, t + 1, theta, buffers.grad,
                         state[0], state[1], state[2], state[3])  # fmt: skip


# --- the optimizers' arguments, from an Optimizer ------------------------------------------------

#: Each optimizer's code in the compiled loop.
OPTIMIZER_CODES = {"sgd": SGD_CODE, "rmsprop": RMSPROP_CODE, "adam": ADAM_CODE}


def optimizer_settings(optimizer: Optimizer, dtype: np.dtype) -> tuple[int, np.ndarray, tuple]:
    """`optimizer_update`'s arguments: the optimizer's code, its hyper-parameters η, λ, μ, ρ,
    ε, β₁, β₂ in ``dtype`` (0 where it has none), and its flags."""
    o = optimizer
    momentum = getattr(o, "momentum", 0.0)
    rho, eps = getattr(o, "rho", 0.0), getattr(o, "epsilon", 0.0)
    beta_1, beta_2 = getattr(o, "beta_1", 0.0), getattr(o, "beta_2", 0.0)
    hyper = np.array([o.lr, o.weight_decay, momentum, rho, eps, beta_1, beta_2], dtype)
    flags = (
        bool(getattr(o, "nesterov", False)),
        bool(getattr(o, "centered", False)),
        getattr(o, "epsilon_placement", "") == "outside",
        bool(getattr(o, "amsgrad", False)),
        getattr(o, "epsilon_placement", "") == "paper",
    )
    return lookup(OPTIMIZER_CODES, o.family, "optimizer"), hyper, flags
