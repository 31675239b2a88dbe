"""Dropout's masks: which units each Dropout layer keeps, drawn by gradcheck so that every backend
applies the same ones.

A mask is a pure function of the run's ``seed``, the training ``step`` (from 0), the layer's
place in the network's stack and each unit's place in the batch. Unit i — row-major over the
batch's (rows, *shape), so that row r's units are the same whatever the number of rows — is kept
when u ≥ rate, u being the top 24 bits of a 32-bit integer hash over 2²⁴:

    key = mix(mix(mix(seed) ^ step) ^ layer),   u_i = (mix(key ^ i) >> 8) / 2²⁴

where mix is Chris Wellons's "lowbias32" (two multiplications and three shifts on unsigned
32-bit integers, which wrap). Any framework computes it from its definition — the JAX and Keras
backends do, inside their compiled training loops — and a user's backend calls `dropout_masks`.

Which masks a computation uses:

- a training run's step t (plain gradient descent or ``train(..., seed=s)``) uses
  ``dropout_masks(net, rows, seed, t)`` for its batch of ``rows`` samples: a smaller last batch
  takes the first rows' masks of the pattern;
- ``loss_and_grads`` is the first step of a run with seed 0: ``dropout_masks(net, len(X), 0, 0)``;
- predictions use none: Dropout is the identity in inference mode.

The kept units are scaled by 1 / (1 − rate) in training (inverted dropout, Keras's and
PyTorch's convention), so that predictions need no scaling; a Dropout declared
``scaling="at_prediction"`` scales every unit by (1 − rate) in predictions instead.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from gradcheck.layers import Dropout
from gradcheck.network import Network

#: The public names, as the API reference shows them.
__all__ = ["dropout_masks", "mix"]

#: lowbias32's multipliers and shifts.
MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
SHIFTS = (16, 15, 16)
#: u's bits: the hash's top 24, so that u is exact in float32 too.
BITS = 24


def mix(x: np.ndarray | int) -> np.ndarray:
    """lowbias32: a 32-bit integer hash whose output bits each depend on every input bit."""
    (m1, m2), (s1, s2, s3) = MULTIPLIERS, SHIFTS
    h: np.ndarray = np.asarray(x, np.uint32)
    with np.errstate(over="ignore"):  # the products wrap modulo 2³², as the hash means them to
        h = (h ^ (h >> np.uint32(s1))) * np.uint32(m1)
        h = (h ^ (h >> np.uint32(s2))) * np.uint32(m2)
    return np.asarray(h ^ (h >> np.uint32(s3)))


def layer_key(seed: int, step: int, layer: int) -> np.uint32:
    """The hash of (seed, step, layer) that a layer's units are hashed with at a step."""
    return np.uint32(mix(mix(mix(seed) ^ np.uint32(step)) ^ np.uint32(layer)))


def keep(rate: float, key: np.uint32, shape: tuple[int, ...]) -> np.ndarray:
    """Which of a batch's units (``shape`` = (rows, *units)) are kept: u_i ≥ rate."""
    index = np.arange(math.prod(shape), dtype=np.uint32).reshape(shape)
    u = (mix(key ^ index) >> np.uint32(32 - BITS)).astype(np.float64) / 2**BITS
    return u >= rate


@functools.lru_cache(maxsize=16)
def dropout_masks(net: Network, rows: int, seed: int = 0, step: int = 0) -> list[np.ndarray]:
    """The masks of the network's Dropout layers, in order, for a batch of ``rows`` samples at
    training ``step`` of a run drawn from ``seed``: each (rows, *the layer's input shape), 1
    where a unit is kept and 0 where it is dropped, in the net's dtype, read-only (the same
    arrays are handed to every caller). The backend scales the kept units by the layer's
    ``scale``, 1 / (1 − rate) for Keras's inverted dropout."""
    masks = [
        keep(layer.rate, layer_key(seed, step, k), (rows, *shape)).astype(net.dtype)
        for k, (layer, shape) in enumerate(zip(net.stack, net.input_shapes, strict=True))
        if isinstance(layer, Dropout)
    ]
    for mask in masks:
        mask.setflags(write=False)
    return masks
