"""Dropout with gradcheck's masks (`gradcheck.masks`), compiled with Numba: the mask hashed unit by
unit as the kept units are scaled, so no mask array is drawn in Python at each step.

    key = mix(mix(mix(seed) ^ step) ^ layer)                                     layer_key
    unit i of the batch (row-major) kept when (mix(key ^ i) >> 8) / 2²⁴ ≥ rate   keep_unit
    y = x ⊙ m / (1 − rate), m kept for the backward, ∂C/∂y ⊙ m / (1 − rate)      dropout
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gradcheck.masks import BITS, MULTIPLIERS, SHIFTS

jit = njit(cache=True, nogil=True, error_model="numpy")
inline = njit(cache=True, nogil=True, inline="always", error_model="numpy")
M1, M2 = np.uint32(MULTIPLIERS[0]), np.uint32(MULTIPLIERS[1])
S1, S2, S3 = np.uint32(SHIFTS[0]), np.uint32(SHIFTS[1]), np.uint32(SHIFTS[2])
DROP = np.uint32(32 - BITS)
UNIT = 1.0 / 2**BITS


@inline
def mix(x):
    """lowbias32 on an unsigned 32-bit integer. Numba widens a product of two uint32 to 64
    bits, so each is cast back: the wrap modulo 2³² the hash means."""
    x = np.uint32((x ^ (x >> S1)) * M1)
    x = np.uint32((x ^ (x >> S2)) * M2)
    return x ^ (x >> S3)


@inline
def layer_key(seed, step, layer):
    return mix(mix(mix(np.uint32(seed)) ^ np.uint32(step)) ^ np.uint32(layer))


@inline
def keep_unit(key, i, rate):
    return np.float64(mix(key ^ np.uint32(i)) >> DROP) * UNIT >= rate


@jit
def dropout(x, rate, scale, draw, layer, out, kept):
    """out = x ⊙ m × ``scale`` (1 / (1 − rate), or 1 when scaled at prediction), and m × scale
    into ``kept``, all (rows, n), with the masks of ``layer`` (its place in the stack) at
    step ``draw[1]`` of a run from seed ``draw[0]``."""
    key = layer_key(draw[0], draw[1], layer)
    flat_x, flat_out, flat_kept = x.reshape(-1), out.reshape(-1), kept.reshape(-1)
    scale, zero = x.dtype.type(scale), x.dtype.type(0)
    for i in range(flat_x.size):
        flat_kept[i] = scale if keep_unit(key, i, rate) else zero
        flat_out[i] = flat_x[i] * flat_kept[i]
