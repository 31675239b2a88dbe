"""Finite differences: the oracle that needs no framework and no derivative.

The network's loss C(θ) is evaluated in float64 by a plain forward pass, and each derivative is a
central difference refined by Richardson extrapolation:

    D(h) = (C(θ + h·v) − C(θ − h·v)) / 2h                   error O(h²)
    R    = D(h/2) + (D(h/2) − D(h)) / 3                      error O(h⁴)

with |R − D(h/2)| as the estimate of the error left, plus the rounding in the differences,
ε·|C| / h. The step is h = ε^{1/3}·max(1, |θ_i|) for a coordinate direction — the balance of
truncation against rounding for a central difference — and ε^{1/3}·max(1, ‖θ‖_∞) for a random
one.

Two modes:

- **element-wise**: v runs over every coordinate, 4 forward passes per parameter; every
  gradient element is checked on its own.
- **directional**: v runs over k random Gaussian directions, 4 forward passes each whatever the
  size of the network; a gradient g is checked through ⟨g, v⟩. For an error vector e, ⟨e, v⟩ is
  N(0, ‖e‖²), so one direction misses an error of norm ‖e‖ — finds |⟨e, v⟩| below a tolerance τ —
  with probability at most √(2/π)·τ/‖e‖, and k independent directions with that probability to
  the k-th power. A sum or mean of the outputs, the usual shortcut, is a single fixed direction
  that whole classes of bugs are orthogonal to; random ones are not.

A relu at 0 has no derivative. Where the steps ±h carry a relu pre-activation across 0 the
estimate is reported as a kink, not compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcheck.network import Network, Params

EPS = float(np.finfo(np.float64).eps)
STEP = EPS ** (1 / 3)


def noise_limit(dtype: np.dtype | type | str) -> float:
    """The largest relative error finite differences of a smooth function computed in
    ``dtype`` can have (100·√ε; a smooth float64 function gives about 1e-9). Beyond it the
    function is not smooth at that precision — a layer computed in a narrower type, say — and the
    differences measure its rounding, not its derivative."""
    return 100 * math.sqrt(float(np.finfo(dtype).eps))


@dataclass(frozen=True)
class Derivative:
    """A Richardson-extrapolated central difference and its estimated absolute error."""

    value: float
    error: float
    kink: bool = False


def central_difference(
    g: Callable[[float], float], h: float, kink: Callable[[float, float], bool] | None = None
) -> Derivative:
    """g′(0) from g at ±h and ±h/2; ``kink(a, b)`` says whether a non-differentiable point lies
    between the arguments a and b."""
    if kink is not None and kink(-h, h):
        return Derivative(math.nan, math.inf, kink=True)
    values = {t: g(t) for t in (-h, -h / 2, h / 2, h)}
    coarse = (values[h] - values[-h]) / (2 * h)
    fine = (values[h / 2] - values[-h / 2]) / h
    extrapolated = fine + (fine - coarse) / 3
    rounding = EPS * max(abs(v) for v in values.values()) / h
    return Derivative(extrapolated, abs(extrapolated - fine) + 4 * rounding)


def along(
    f: Callable[[np.ndarray], float], x: np.ndarray, v: np.ndarray
) -> Callable[[float], float]:
    """t ↦ f(x + t·v): f on the line through x in direction v."""
    return lambda t: f(x + t * v)


# --- the network's loss, in float64, and where its relus switch -----------------------------


def _flat(params: Params) -> np.ndarray:
    return np.concatenate([layer[key].ravel() for layer in params for key in sorted(layer)])


def _unflat(net: Network, theta: np.ndarray) -> Params:
    params: Params = []
    offset = 0
    for shapes in net.shapes():
        layer = {}
        for key in sorted(shapes):
            size = math.prod(shapes[key])
            layer[key] = theta[offset : offset + size].reshape(shapes[key])
            offset += size
        params.append(layer)
    return params


class _NetworkLoss:
    """θ ↦ C(θ) for the flattened params of ``net`` (in float64) on fixed data."""

    def __init__(self, net: Network, X: np.ndarray, y: np.ndarray) -> None:
        from dataclasses import replace

        from kernels import numpy_backprop

        self.kernels = numpy_backprop
        self.net = replace(net, dtype="float64")
        self.X, self.y = X.astype(np.float64), y.astype(np.float64)
        self.passes = 0

    def __call__(self, theta: np.ndarray) -> float:
        self.passes += 1
        cache = self.kernels.forward(self.net, _unflat(self.net, theta), self.X)
        return self.kernels.loss(self.net, cache, self.y)

    def relu_signs(self, theta: np.ndarray) -> list[np.ndarray]:
        """The sign of every pre-activation that feeds a relu."""
        params = _unflat(self.net, theta)
        signs, a = [], self.X
        for layer, activation in zip(params, self.net.activations, strict=True):
            z = self.kernels.pre_activation(a, layer)
            if activation == "relu":
                signs.append(z > 0)
            a = self.kernels.ACTIVATE[activation](z)
        return signs

    def crosses_kink(self, theta: np.ndarray, direction: np.ndarray) -> Callable[..., bool]:
        if "relu" not in self.net.activations:
            return lambda a, b: False

        def kink(a: float, b: float) -> bool:
            before = self.relu_signs(theta + a * direction)
            after = self.relu_signs(theta + b * direction)
            return any(not np.array_equal(p, q) for p, q in zip(before, after, strict=True))

        return kink


@dataclass(frozen=True)
class ElementwiseGradient:
    """Every gradient element by finite differences, structured like params."""

    grads: Params
    errors: Params
    kinks: Params
    passes: int


def elementwise_gradient(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> ElementwiseGradient:
    """∂C/∂θ_i for every parameter: 4 forward passes each (more where relus are checked)."""
    loss = _NetworkLoss(net, X, y)
    theta = _flat(params).astype(np.float64)
    values, errors, kinks = (np.empty_like(theta) for _ in range(3))
    for i in range(theta.size):
        direction = np.zeros_like(theta)
        direction[i] = 1.0
        estimate = central_difference(
            along(loss, theta, direction),
            STEP * max(1.0, abs(theta[i])),
            loss.crosses_kink(theta, direction),
        )
        values[i], errors[i], kinks[i] = estimate.value, estimate.error, estimate.kink
    return ElementwiseGradient(
        _unflat(net, values), _unflat(net, errors), _unflat(net, kinks.astype(bool)), loss.passes
    )


@dataclass(frozen=True)
class DirectionalDerivatives:
    """⟨∇C, v_j⟩ by finite differences for k random Gaussian directions v_j."""

    directions: list[Params]
    values: np.ndarray  # (k,)
    errors: np.ndarray  # (k,)
    kinks: np.ndarray  # (k,) bool
    passes: int

    def project(self, grads: Params) -> np.ndarray:
        """⟨g, v_j⟩ for each direction: what ``values`` estimates for a correct gradient g."""
        flat = _flat(grads).astype(np.float64)
        return np.array([flat @ _flat(v) for v in self.directions])


def directional_derivatives(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, k: int = 8, seed: int = 0
) -> DirectionalDerivatives:
    """⟨∇C, v⟩ for ``k`` random Gaussian directions v: 4k forward passes in all."""
    loss = _NetworkLoss(net, X, y)
    theta = _flat(params).astype(np.float64)
    rng = np.random.default_rng(seed)
    h = STEP * max(1.0, float(np.abs(theta).max()))
    directions, estimates = [], []
    for _ in range(k):
        v = rng.standard_normal(theta.size)
        directions.append(_unflat(net, v))
        estimates.append(central_difference(along(loss, theta, v), h, loss.crosses_kink(theta, v)))
    return DirectionalDerivatives(
        directions,
        np.array([e.value for e in estimates]),
        np.array([e.error for e in estimates]),
        np.array([e.kink for e in estimates]),
        loss.passes,
    )


def miss_probability(error_norm: float, tolerance: float, k: int) -> float:
    """The chance that k random directions all miss an error vector of norm ``error_norm``,
    i.e. that every |⟨e, v⟩| stays below ``tolerance``: (√(2/π)·τ/‖e‖)^k, at most 1."""
    one = min(1.0, math.sqrt(2 / math.pi) * tolerance / error_norm)
    return one**k
