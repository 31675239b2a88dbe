"""Batch and layer normalisation in NumPy: the derivation, one small function per equation.

A normalisation takes the statistics of x over some axes — a BatchNorm over every axis but the
last (the batch, and height and width after a Conv2D: m = N·H·W values per channel), a
LayerNorm over the last one (m = C values per sample and position) — and, with γ and β of shape
(C,):

    μ = (1/m) Σ x,   σ² = (1/m) Σ (x − μ)²   (the biased variance)          moments
    r = 1 / √(σ² + ε),   x̂ = (x − μ) r                          (x's shape)  normalise
    y = γ x̂ + β                                                 (x's shape)  scale_shift
    ∂C/∂γ = Σ_{all but the last axis} g x̂,  ∂C/∂β = Σ g  (C,)                scale_shift_grads
    ∂C/∂x = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)),  ĝ = γ g   (x's shape)            normalise_backward
        — the three terms: the direct path through x − μ, the path through μ, and the path
        through σ² (whose own path through μ is zero, as Σ (x − μ) = 0); the means over the
        axes the statistics were taken over

A BatchNorm in predictions normalises with its moving statistics instead, which are constants
there (`inference`); after each training step they move (Keras's convention, momentum m):

    moving ← m · moving + (1 − m) · the batch's μ or σ²                      moving_update

or, by PyTorch's convention, toward the unbiased variance m/(m − 1) σ², m the values per channel
(`unbiased`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Normalised(NamedTuple):
    """What the backward needs of one normalisation: x̂, r = 1/√(σ² + ε) (kept with the reduced
    axes, so it broadcasts), and the batch's μ and σ² for the moving statistics."""

    x_hat: np.ndarray
    inv_std: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    axes: tuple[int, ...]


def batch_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the last: the batch, and height and width of an image."""
    return tuple(range(x.ndim - 1))


def moments(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=axes, keepdims=True)  # μ
    var = np.square(x - mean).mean(axis=axes, keepdims=True)  # σ², biased: the mean of squares
    return mean, var


def normalise(
    x: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    inv_std = 1 / np.sqrt(var + x.dtype.type(epsilon))  # r = 1/√(σ² + ε)
    return (x - mean) * inv_std, inv_std  # x̂ = (x − μ) r


def scale_shift(x_hat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return gamma * x_hat + beta  # γ x̂ + β, (C,) broadcast over the last axis


def normalisation(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> Normalised:
    """x̂ from x's own statistics over ``axes``."""
    mean, var = moments(x, axes)
    x_hat, inv_std = normalise(x, mean, var, epsilon)
    return Normalised(x_hat, inv_std, mean, var, axes)


def inference(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
    epsilon: float,
) -> np.ndarray:  # fmt: skip
    """A BatchNorm in predictions: x normalised with the moving statistics, scaled, shifted."""
    return scale_shift(normalise(x, mean, var, epsilon)[0], gamma, beta)


def scale_shift_grads(g: np.ndarray, x_hat: np.ndarray) -> dict[str, np.ndarray]:
    """∂C/∂γ = Σ g x̂ and ∂C/∂β = Σ g over every axis but the last."""
    axes = tuple(range(g.ndim - 1))
    return {"gamma": (g * x_hat).sum(axis=axes), "beta": g.sum(axis=axes)}  # (C,), (C,)


def normalise_backward(g: np.ndarray, gamma: np.ndarray, norm: Normalised) -> np.ndarray:
    """∂C/∂x = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), ĝ = γ g, the means over the statistics' axes."""
    g_hat = g * gamma  # ∂C/∂x̂
    mean_g = g_hat.mean(axis=norm.axes, keepdims=True)  # through μ
    mean_gx = (g_hat * norm.x_hat).mean(axis=norm.axes, keepdims=True)  # through σ²
    return norm.inv_std * (g_hat - mean_g - norm.x_hat * mean_gx)


def unbiased(var: np.ndarray, count: int) -> np.ndarray:
    """The unbiased variance, m/(m − 1) σ², of m = ``count`` values per channel."""
    return var * var.dtype.type(count / (count - 1))


def moving_update(moving: np.ndarray, batch: np.ndarray, momentum: float) -> np.ndarray:
    """m · moving + (1 − m) · the batch's statistic, (C,)."""
    kept, taken = moving.dtype.type(momentum), moving.dtype.type(1 - momentum)
    return moving * kept + batch.reshape(moving.shape) * taken
