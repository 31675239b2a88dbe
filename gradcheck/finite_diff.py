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
  gradient element is checked on its own. A weight moves only its own layer's pre-activation,
  linearly and in one output channel, so each pass starts there (`witness.slope`,
  `witness.resume`): the layers before it are not recomputed.
- **directional**: v runs over k random Gaussian directions, 4 forward passes each whatever the
  size of the network; a gradient g is checked through ⟨g, v⟩. For an error vector e, ⟨e, v⟩ is
  N(0, ‖e‖²), so one direction misses an error of norm ‖e‖ — finds |⟨e, v⟩| below a tolerance τ —
  with probability at most √(2/π)·τ/‖e‖, and k independent directions with that probability to
  the k-th power. A sum or mean of the outputs, the usual shortcut, is a single fixed direction
  that whole classes of bugs are orthogonal to; random ones are not.

A relu at 0 has no derivative, nor has a max pool where two entries of a window tie. Where the
steps ±h carry a pre-activation across a kink of its activation (the registry's ``kinks``), or
change which entry of a pooling window is its first maximum, smaller steps are tried (h/10,
h/100, h/1000), and the first that carries none gives the estimate, with the larger rounding of
its step; where every one does, the estimate is reported as a kink, not compared. The forward
passes at ±h that give the loss also tell the sides.

A gradient is compared with the estimates in one place, `compare`, for ``verify`` and
``check_backward`` alike: held to the tolerance policy's floor or, where larger, ten times the
estimates' own error, but never looser than the noise limit of a smooth function.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from gradcheck import witness
from gradcheck.layers import Weighted
from gradcheck.network import Network, Params

#: The public names, as the API reference shows them.
__all__ = [
    "DIRECTIONS",
    "ELEMENTWISE_MAX",
    "FINITE_DIFFERENCES",
    "MODES",
    "Choice",
    "Comparison",
    "Derivative",
    "DirectionalDerivatives",
    "Directions",
    "ElementwiseGradient",
    "Line",
    "NetworkWitness",
    "allowed",
    "along",
    "central_difference",
    "choose_mode",
    "compare",
    "differentiate",
    "directional_derivatives",
    "elementwise_gradient",
    "judge",
    "memoised",
    "miss_probability",
    "near_kinks",
    "noise_limit",
]

EPS = float(np.finfo(np.float64).eps)
TINY = float(np.finfo(np.float64).tiny)
STEP = EPS ** (1 / 3)

#: Up to this many parameters (verify) or input elements (check_backward) get a finite difference
#: each; above it, derivatives are taken along random directions.
ELEMENTWISE_MAX = 2000


#: The oracle's name in every report: verify's witness and check_backward's.
FINITE_DIFFERENCES = "finite differences"


def noise_limit(dtype: np.dtype | type | str) -> float:
    """The largest relative error finite differences of a smooth function computed in
    ``dtype`` can have (100·√ε; a smooth float64 function gives about 1e-9). Beyond it the
    function is not smooth at that precision — a layer computed in a narrower type, say — and the
    differences measure its rounding, not its derivative."""
    return 100 * math.sqrt(float(np.finfo(dtype).eps))


#: The smaller steps tried, as fractions of the first, where a step may have crossed a kink.
SHRINKS = (10, 100, 1000)


@dataclass(frozen=True)
class Derivative:
    """A Richardson-extrapolated central difference and its estimated absolute error.

    ``kink``: a non-differentiable point lies within the step and the estimate is not compared;
    ``resolved``: the first step crossed one, and a smaller step gave the estimate."""

    value: float
    error: float
    kink: bool = False
    resolved: bool = False
    #: The part of ``error`` that is rounding in the function's values, ε·|g|/h.
    rounding: float = 0.0


def central_difference(
    g: Callable[[float], float],
    h: float,
    kink: Callable[[float, float], bool] | None = None,
    eps: float = EPS,
) -> Derivative:
    """g′(0) from g at ±h and ±h/2; ``eps`` is the precision g is computed in. ``kink(a, b)``
    says whether a non-differentiable point lies between the arguments a and b: where one lies
    within ±h, the first of the smaller steps ``SHRINKS`` that steps over none gives the
    estimate (``resolved``, its rounding larger by as much as the step is smaller), and where
    every one does, the point is a kink, not estimated."""
    resolved = False
    if kink is not None and kink(-h, h):
        smaller = (h / shrink for shrink in SHRINKS)
        h = next((small for small in smaller if not kink(-small, small)), math.nan)
        if math.isnan(h):
            return Derivative(math.nan, math.inf, kink=True)
        resolved = True
    values = {t: g(t) for t in (-h, -h / 2, h / 2, h)}
    coarse = (values[h] - values[-h]) / (2 * h)
    fine = (values[h / 2] - values[-h / 2]) / h
    extrapolated = fine + (fine - coarse) / 3
    rounding = 4 * eps * max(abs(v) for v in values.values()) / h
    error = abs(extrapolated - fine) + rounding
    return Derivative(extrapolated, error, resolved=resolved, rounding=rounding)


Value = TypeVar("Value")


def memoised(g: Callable[[float], Value]) -> Callable[[float], Value]:
    """g, evaluated once per argument."""
    seen: dict[float, Value] = {}

    def cached(t: float) -> Value:
        if t not in seen:
            seen[t] = g(t)
        return seen[t]

    return cached


def near_kinks(
    g: Callable[[float], float],
    h: float,
    first: Derivative,
    observed: float,
    tolerance: Callable[[Derivative], float],
    eps: float = EPS,
) -> Derivative:
    """A second look at an estimate ``first`` (made with step ``h``) that disagrees with a
    kernel's ``observed`` g′(0), in case the step crossed a kink of a piecewise function (relu,
    max, a hinge) rather than the kernel being wrong. ``tolerance(d)`` is the absolute tolerance
    an estimate is held to; ``g`` should be `memoised`.

    - Smaller steps (``SHRINKS``): the first step had crossed a kink, and a smaller step's
      estimate stands (``resolved``; the closest such), when that estimate agrees with
      ``observed`` within the first's own tolerance (and its own noise is within the limit), or
      within its own looser tolerance while it tells the first apart by more than that: a
      smaller step too noisy to tell ``observed`` from the first settles nothing (a float32
      function at a thousandth of the step).
    - Otherwise, when ``observed`` lies between the one-sided slopes at the smallest step,
      their gap explains the disagreement, and it stays when the step grows tenfold (rounding's
      would shrink tenfold), the point is on a kink and the kernel chose one side (relu′(0) = 0,
      the first of tied maxima): reported as a kink, not compared.
    - Otherwise, when the estimates of the steps whose noise is within the limit never settle
      and the kernel's value lies among them, every step crossed kinks: reported as a kink.
    - Otherwise the most accurate estimate stands, and the kernel disagrees with it.

    A kink keeps the most accurate of the estimates as its value, for the report to show.
    """
    cap = tolerance(Derivative(0.0, math.inf))
    tried = [first, *(central_difference(g, h / shrink, eps=eps) for shrink in SHRINKS)]
    settled = [
        d
        for d in tried[1:]
        if (10 * d.error < cap and abs(observed - d.value) <= tolerance(first))
        or (abs(observed - d.value) <= tolerance(d) < abs(first.value - d.value))
    ]
    if settled:
        best = min(settled, key=lambda d: abs(observed - d.value))
        return dataclasses.replace(best, resolved=True)
    smallest = tried[-1]
    half = h / SHRINKS[-1] / 2
    low, high = _one_sided(g, half)
    slack = tolerance(smallest)
    wider = _one_sided(g, 10 * half)  # a step the previous shrink has evaluated
    gap = high - low
    if (
        low - slack <= observed <= high + slack
        and gap > abs(observed - smallest.value)
        and wider[1] - wider[0] > gap / 2
    ):
        return _skipped(tried)
    # Steps small enough to miss every kink may be too small for the function's precision (a
    # float32 loss over thousands of hinges): then, among the steps whose noise is within the
    # limit, estimates that never settle and bracket the kernel's value are kinks at every step.
    usable = [t for t in tried if 10 * t.error < cap]
    if len(usable) >= 2:
        values = [t.value for t in usable]
        slack = max(tolerance(t) for t in usable)
        unsettled = max(values) - min(values) > slack
        if unsettled and min(values) - slack <= observed <= max(values) + slack:
            return _skipped(tried)
    return min(tried, key=lambda t: t.error)


def _skipped(tried: list[Derivative]) -> Derivative:
    """A point found on a kink: not compared, but its most accurate estimate kept, so that the
    report can show how far the kernel was from it."""
    return Derivative(min(tried, key=lambda t: t.error).value, math.inf, kink=True)


def _one_sided(g: Callable[[float], float], half: float) -> tuple[float, float]:
    """The smaller and the larger of g's one-sided slopes at 0 over ``half``. Across a kink
    they differ by its jump at every step small enough to meet no other; rounding makes them
    differ too, but by ten times as much at a tenth of the step."""
    right, left = (g(half) - g(0.0)) / half, (g(0.0) - g(-half)) / half
    return min(left, right), max(left, right)


def along(
    f: Callable[[np.ndarray], Value], x: np.ndarray, v: np.ndarray
) -> Callable[[float], Value]:
    """t ↦ f(x + t·v): f on the line through x in direction v."""
    return lambda t: f(x + t * v)


# --- the driver: lines, their estimates, and a gradient judged against them ---------------------


@dataclass(frozen=True)
class Line:
    """A scalar function g(t) along one direction through the point checked — g′(0) is the
    derivative estimated — with the step its difference takes and the caller's kink detector:
    ``crosses(a, b)``, whether a non-differentiable point lies between a and b (the witness
    knows where a network's relus switch), or None for a black box, whose estimates that
    disagree get a second look with smaller steps (`near_kinks`)."""

    g: Callable[[float], float]
    step: float
    crosses: Callable[[float, float], bool] | None = None


def differentiate(
    lines: Sequence[Line],
    eps: float = EPS,
    progress: Callable[[int, int], None] | None = None,
) -> list[Derivative]:
    """Every line's `central_difference`: the one place estimates are made, for ``verify``'s
    witness and ``check_backward`` alike. ``progress(i, n)`` is told as lines are done."""
    estimates = []
    for i, line in enumerate(lines):
        if progress is not None:
            progress(i, len(lines))
        estimates.append(central_difference(line.g, line.step, line.crosses, eps))
    return estimates


@dataclass(frozen=True)
class Directions:
    """The directions through an array x along which its derivatives are estimated, and their
    steps: every unit vector (element-wise), h = ε^{1/3}·max(1, |x_i|), or k random Gaussian
    ones, h = ε^{1/3}·max(1, ‖x‖_∞), for the precision ε the function is computed in."""

    shape: tuple[int, ...]
    elementwise: bool
    steps: list[float]
    #: The random directions; none for the unit vectors, made as they are asked for.
    random: list[np.ndarray]

    @classmethod
    def through(
        cls,
        x: np.ndarray,
        precision: np.dtype | type | str,
        elementwise: bool,
        k: int = 0,
        rng: np.random.Generator | None = None,
    ) -> Directions:
        """x's unit vectors, or ``k`` random directions drawn from ``rng``."""
        x64 = np.asarray(x, np.float64)
        step = float(np.finfo(precision).eps) ** (1 / 3)
        if elementwise:
            steps = (step * np.maximum(1.0, np.abs(x64.ravel()))).tolist()
            return cls(x64.shape, True, steps, [])
        if rng is None:
            raise ValueError("rng must be a numpy Generator for random directions; got None")
        h = step * max(1.0, float(np.abs(x64).max(initial=0.0)))
        return cls(x64.shape, False, [h] * k, [rng.standard_normal(x64.shape) for _ in range(k)])

    def __len__(self) -> int:
        return len(self.steps)

    def vector(self, j: int) -> np.ndarray:
        """The j-th direction."""
        if not self.elementwise:
            return self.random[j]
        unit = np.zeros(self.shape)
        unit.flat[j] = 1.0
        return unit

    @property
    def mode(self) -> str:
        return "elementwise" if self.elementwise else "directional"

    def project(self, gradient: np.ndarray) -> np.ndarray:
        """What the estimates along these directions estimate for ``gradient``: its elements,
        or ⟨g, v⟩ per direction."""
        g = np.asarray(gradient, np.float64)
        if self.elementwise:
            return g.reshape(self.shape)
        return np.array([float(np.sum(g * v)) for v in self.random])


#: How often the estimates that disagree are looked at again as the shared noise level settles.
MAX_ROUNDS = 4
#: Estimates confirmed wrong after a second look, beyond which the others are not looked at.
ENOUGH_WRONG = 4


def judge(
    observed: np.ndarray,
    lines: Sequence[Line],
    estimates: Sequence[Derivative],
    *,
    floor: float,
    mode: str,
    dtype: np.dtype | type | str = np.float64,
) -> Comparison:
    """The values a gradient gives along ``lines`` (``observed``, shaped as the comparison
    reports them) against their ``estimates``, by `compare`. Estimates of a black box's lines
    (no kink detector) that disagree are looked at again for kinks (`near_kinks`).

    One scale and noise level holds for all the estimates (`allowed`). Refining the ones that
    disagree changes both, so every estimate is looked at again until they settle (each line
    is memoised: a second look costs nothing). A refinement may lower the noise level the
    others are held to, never raise it (`_settled_errors`)."""
    given = np.asarray(observed, np.float64)
    seen = given.ravel().tolist()
    eps = float(np.finfo(dtype).eps)
    limit = noise_limit(dtype)
    firsts, estimates = list(estimates), list(estimates)
    for _ in range(MAX_ROUNDS):
        usable = [d for d in estimates if not d.kink]
        scale = max(max((abs(d.value) for d in usable), default=0.0), TINY)
        errors, roundings = _settled_errors(estimates, firsts)
        shared = float(np.max(errors, initial=0.0, where=np.isfinite(errors)))
        rounding = float(np.max(roundings, initial=0.0, where=np.isfinite(roundings)))

        def tolerance(
            d: Derivative, scale: float = scale, shared: float = shared, rounding: float = rounding
        ) -> float:
            return allowed(np.array([d.error, shared]), scale, floor, limit, np.array([rounding]))

        changed, wrong = False, 0
        for j, (line, value) in enumerate(zip(lines, seen, strict=True)):
            d = estimates[j]
            if line.crosses is not None or d.kink or abs(value - d.value) <= tolerance(d):
                continue
            again = near_kinks(line.g, line.step, firsts[j], value, tolerance, eps=eps)
            changed |= again != d
            estimates[j] = again
            wrong += not (again.kink or again.resolved)
            if wrong >= ENOUGH_WRONG:  # the verdict cannot change: spare the rest a second look
                break
        if not changed or wrong >= ENOUGH_WRONG:
            break
    errors, roundings = _settled_errors(estimates, firsts)
    return compare(
        given,
        np.array([d.value for d in estimates]).reshape(given.shape),
        errors.reshape(given.shape),
        np.array([d.kink for d in estimates]).reshape(given.shape),
        rounding=roundings.reshape(given.shape),
        floor=floor,
        mode=mode,
        dtype=dtype,
        resolved=sum(d.resolved for d in estimates),
    )


def _settled_errors(
    estimates: list[Derivative], firsts: list[Derivative]
) -> tuple[np.ndarray, np.ndarray]:
    """Each estimate's error and rounding as far as the tolerance shared by all may see them: a
    second look with a smaller step lowers them where its estimate is better, and never raises
    them — a noisier look at one point (a float32 function at a tenth of the step) must not
    loosen the comparison of every other. A point on a kink has none (infinite)."""
    pairs = list(zip(estimates, firsts, strict=True))
    errors = [math.inf if d.kink else min(d.error, f.error) for d, f in pairs]
    roundings = [math.inf if d.kink else min(d.rounding, f.rounding) for d, f in pairs]
    return np.array(errors), np.array(roundings)


# --- the network's loss, in float64, and where its relus switch -----------------------------


def _flat(params: Params) -> np.ndarray:
    return np.concatenate([layer[key].ravel() for layer in params for key in sorted(layer)])


def _unflat(net: Network, theta: np.ndarray) -> Params:
    """The flat trainable parameters (or gradients) ``theta`` structured like ``net``'s
    gradients: a BatchNorm's state left out."""
    params: Params = []
    offset = 0
    for shapes in net.grad_shapes():
        layer = {}
        for key in sorted(shapes):
            size = math.prod(shapes[key])
            layer[key] = theta[offset : offset + size].reshape(shapes[key])
            offset += size
        params.append(layer)
    return params


class NetworkLoss:
    """The loss C of ``net`` on fixed data through the witness's own float64 forward pass
    (`gradcheck.witness`), never through a kernel under test, along lines through the params."""

    def __init__(self, net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> None:
        self.net = net
        self.X, self.y = net.inputs(X, np.float64), np.asarray(y, np.float64)
        self.params = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params]
        self.theta = _flat(
            [{k: layer[k] for k in shapes} for layer, shapes in zip(
                self.params, net.grad_shapes(), strict=True)]
        )  # fmt: skip
        self.outputs = witness.forward(net, self.params, self.X)
        self.kinks = witness.has_kinks(net)
        self.passes = 0

    def at(self, theta: np.ndarray) -> Params:
        """The params with the trainable ones ``theta`` (flat), the state as it was."""
        moved = _unflat(self.net, theta)
        return [{**layer, **part} for layer, part in zip(self.params, moved, strict=True)]

    def along(self, direction: np.ndarray) -> _LossLine:
        """C(θ + t·v) for the flattened trainable params θ: a whole forward pass per t."""
        theta = self.theta
        return _LossLine(
            self, lambda t: witness.forward(self.net, self.at(theta + t * direction), self.X), 0
        )

    def coordinate(self, layer: int, key: str, index: tuple[int, ...]) -> _LossLine:
        """C as the parameter ``key[index]`` of params' layer ``layer`` moves by t. A weight
        layer's moves its pre-activation by t times its `witness.slope`, the layers before it
        not recomputed; a normalisation's runs the whole pass."""
        if not isinstance(self.net.parametric[layer], Weighted):
            shapes = self.net.grad_shapes()
            before = sum(math.prod(s) for part in shapes[:layer] for s in part.values())
            within = sum(math.prod(shapes[layer][k]) for k in sorted(shapes[layer]) if k < key)
            direction = np.zeros_like(self.theta)
            direction[before + within + np.ravel_multi_index(index, shapes[layer][key])] = 1
            return self.along(direction)
        w = sum(isinstance(p, Weighted) for p in self.net.parametric[:layer])  # its z's index
        channel, moves = witness.slope(self.net, self.outputs, w, key, index)
        z = self.outputs.zs[w]

        def forward(t: float) -> witness.Forward:
            moved = z[..., channel : channel + 1] + t * moves[..., None]  # (..., 1)
            return witness.resume(self.net, self.params, self.outputs, w, moved, channel)

        return _LossLine(self, forward, w)


class _LossLine:
    """t ↦ C at the point t of one line, each point's forward pass run once: the loss and, where
    `crosses_kink` asks, which side of every kink it is on from weight layer ``start`` on (the
    layers before it do not move)."""

    def __init__(
        self, loss: NetworkLoss, forward: Callable[[float], witness.Forward], start: int
    ) -> None:
        self.loss, self.forward, self.start = loss, forward, start
        self.values: dict[float, float] = {}
        self.sides: dict[float, list[np.ndarray]] = {}

    def step(self, h: float) -> Line:
        """This line differentiated with step h, the witness's kink sides its kink detector."""
        return Line(self, h, self.crosses_kink)

    def __call__(self, t: float) -> float:
        if t not in self.values:
            self._evaluate(t, sides=False)
        return self.values[t]

    def _evaluate(self, t: float, sides: bool) -> None:
        outputs = self.forward(t)
        self.loss.passes += 1
        self.values[t] = witness.loss(self.loss.net, outputs, self.loss.y)
        if sides:
            self.sides[t] = witness.kink_sides(self.loss.net, outputs, self.start)

    def crosses_kink(self, a: float, b: float) -> bool:
        """Whether moving from a to b carries a pre-activation across a kink of its activation
        (relu's 0) or moves a pooling window's first maximum."""
        if not self.loss.kinks:
            return False
        for t in (a, b):
            if t not in self.sides:
                self._evaluate(t, sides=True)
        return any(
            not np.array_equal(p, q) for p, q in zip(self.sides[a], self.sides[b], strict=True)
        )


#: ``verify`` takes every parameter's difference only while that is estimated to take at most
#: this long (`elementwise_seconds`); above it, `DIRECTIONS` random directions.
ELEMENTWISE_SECONDS = 10.0
#: The random directions of ``verify``'s directional differences.
DIRECTIONS = 8


def elementwise_seconds(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> float:
    """An estimate of `elementwise_gradient`'s time: the median of the first three weights of
    each layer timed, as many times as the layer has parameters."""
    loss = NetworkLoss(net, params, X, y)
    seconds = 0.0
    for layer, shapes in enumerate(net.grad_shapes()):
        times = []
        key = min(shapes)  # W, or a normalisation's beta
        for i in range(min(3, math.prod(shapes[key]))):
            start = time.perf_counter()
            index = tuple(int(j) for j in np.unravel_index(i, shapes[key]))
            differentiate([loss.coordinate(layer, key, index).step(STEP)])
            times.append(time.perf_counter() - start)
        seconds += float(np.median(times)) * sum(map(math.prod, shapes.values()))
    return seconds


@dataclass(frozen=True)
class Choice:
    """How ``verify``'s witness takes its differences, ``"elementwise"`` or ``"directional"``,
    why, and the estimate of the element-wise time it was chosen by (None when the parameter
    count decided)."""

    mode: str
    reason: str
    estimate: float | None = None


def choose_mode(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, budget: float = ELEMENTWISE_SECONDS
) -> Choice:
    """Every parameter's difference when there are at most `ELEMENTWISE_MAX` and they are
    estimated to take at most ``budget`` seconds, else `DIRECTIONS` random directions."""
    n = sum(math.prod(shape) for layer in net.grad_shapes() for shape in layer.values())
    directional = f"{DIRECTIONS} random directions:"
    if n > ELEMENTWISE_MAX:
        reason = (
            f"{directional} {n:,} parameters are more than {ELEMENTWISE_MAX:,} to take one by one"
        )
        return Choice("directional", reason)
    seconds = elementwise_seconds(net, params, X, y)
    if seconds > budget:
        reason = f"{directional} the {n:,} parameters one by one would take over {budget:g} s"
        return Choice("directional", reason, seconds)
    return Choice("elementwise", f"each of the {n:,} parameters, within {budget:g} s", seconds)


@dataclass(frozen=True)
class ElementwiseGradient:
    """Every gradient element by finite differences, structured like params."""

    grads: Params
    errors: Params
    kinks: Params
    passes: int
    #: The part of each error that is rounding in the loss's values (`Derivative.rounding`).
    roundings: Params


def elementwise_gradient(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
) -> ElementwiseGradient:
    """∂C/∂θ_i for every parameter: 4 forward passes each, from the parameter's own layer on.
    ``progress(i, n)`` is told as parameters are done."""
    loss = NetworkLoss(net, params, X, y)
    steps = Directions.through(loss.theta, np.float64, elementwise=True).steps
    coordinates = [
        (layer, key, index)
        for layer, shapes in enumerate(net.grad_shapes())
        for key in sorted(shapes)
        for index in np.ndindex(*shapes[key])
    ]  # in the order of `_flat`
    lines = [loss.coordinate(*c).step(h) for c, h in zip(coordinates, steps, strict=True)]
    estimates = differentiate(lines, progress=progress)

    def unflat(field: str) -> Params:
        return _unflat(net, np.array([getattr(e, field) for e in estimates]))

    return ElementwiseGradient(
        unflat("value"), unflat("error"), unflat("kink"), loss.passes, unflat("rounding")
    )


@dataclass(frozen=True)
class DirectionalDerivatives:
    """⟨∇C, v_j⟩ by finite differences for k random Gaussian directions v_j."""

    directions: list[Params]
    values: np.ndarray  # (k,)
    errors: np.ndarray  # (k,)
    kinks: np.ndarray  # (k,) bool
    passes: int
    roundings: np.ndarray  # (k,): the part of each error that is rounding in the loss's values

    def project(self, grads: Params) -> np.ndarray:
        """⟨g, v_j⟩ for each direction: what ``values`` estimates for a correct gradient g."""
        flat = _flat(grads).astype(np.float64)
        return np.array([flat @ _flat(v) for v in self.directions])


def directional_derivatives(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    k: int = DIRECTIONS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DirectionalDerivatives:
    """⟨∇C, v⟩ for ``k`` random Gaussian directions v: 4k forward passes in all.
    ``progress(j, k)`` is told as directions are done."""
    loss = NetworkLoss(net, params, X, y)
    directions = Directions.through(loss.theta, np.float64, False, k, np.random.default_rng(seed))
    lines = [
        loss.along(v).step(h) for v, h in zip(directions.random, directions.steps, strict=True)
    ]
    estimates = differentiate(lines, progress=progress)
    return DirectionalDerivatives(
        [_unflat(net, v) for v in directions.random],
        np.array([e.value for e in estimates]),
        np.array([e.error for e in estimates]),
        np.array([e.kink for e in estimates]),
        loss.passes,
        np.array([e.rounding for e in estimates]),
    )


def miss_probability(error_norm: float, tolerance: float, k: int) -> float:
    """The chance that k random directions all miss an error vector of norm ``error_norm``,
    i.e. that every |⟨e, v⟩| stays below ``tolerance``: (√(2/π)·τ/‖e‖)^k, at most 1."""
    one = min(1.0, math.sqrt(2 / math.pi) * tolerance / error_norm)
    return one**k


@dataclass(frozen=True)
class Comparison:
    """A gradient against finite-difference estimates: the worst relative error, where it is,
    the tolerance it was held to, and what was compared."""

    error: float
    tolerance: float
    index: tuple[int, ...]
    #: ``"elementwise"`` (one estimate per element) or ``"directional"`` (⟨g, v⟩ per direction).
    mode: str
    #: How many estimates there were, skipped ones included.
    estimates: int
    #: Estimates skipped because they lie on a kink.
    kinks: int = 0
    #: The largest relative error among the skipped estimates that have a value (None when
    #: none has): what the kinks hide, for a reader to judge.
    skipped_error: float | None = None
    #: Estimates that disagreed at the first step and a smaller step settled (the first step
    #: crossed a kink, or was too long for the function's curvature).
    resolved: int = 0
    #: Some estimates were noisier than a smooth function allows; their tolerance is held at the
    #: noise limit rather than widened to them.
    noisy: bool = False
    #: The gradient is so small that the rounding in the loss's values, not its smoothness,
    #: limits what the estimates resolve; the tolerance is widened to that rounding.
    rounded: bool = False
    #: The compared values, kinks set to 0: the kernel's and the finite differences'.
    observed: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    expected: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    #: What the errors are relative to: the largest magnitude among the estimates.
    scale: float = math.nan
    #: The finite differences' own largest error estimate, relative to ``scale``, and what set
    #: the tolerance (`allowance`): said in the detail when the tolerance far exceeds it.
    estimated: float = math.nan
    set_by: str = ""

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance  # False for NaN

    @property
    def detail(self) -> str:
        """What a reader needs besides the error: kinks skipped or resolved, noise."""
        parts = [f"{self.estimates} random directions"] if self.mode == "directional" else []
        if self.kinks:
            there = (
                ""
                if self.skipped_error is None
                else f", the largest error there {self.skipped_error:.1e}"
            )
            parts.append(f"{self.kinks} at a kink skipped{there}")
        if self.resolved:
            parts.append(f"{self.resolved} settled by a smaller step")
        if self.noisy:
            parts.append("finite differences noisier than a smooth function allows")
        if self.rounded:
            parts.append("a gradient this small is resolved only to the loss's rounding")
        if self.set_by and self.tolerance > FAR * self.estimated:
            times = f"{self.tolerance / self.estimated:.0f} ×" if self.estimated > 0 else "above"
            parts.append(
                f"tolerance from {self.set_by}, {times} the finite differences' error estimate"
            )
        return ", ".join(parts)


#: How far above the finite differences' own error estimate a tolerance lies before the
#: detail says what set it.
FAR = 100


def allowed(
    errors: np.ndarray,
    scale: float,
    floor: float,
    limit: float,
    rounding: np.ndarray | None = None,
) -> float:
    """The absolute tolerance of a comparison with finite differences: ``floor`` relative to
    ``scale`` (the rounding the kernel may have), or ten times the largest estimated error where
    larger — every estimate probes the same function with steps of one size, and one whose step
    crossed kinks can look smooth to its own error estimate, so the noise level of them all is the
    measure — that widening capped at ``limit`` relative to ``scale``. The floor itself is never
    capped: a float32 rule judged by float64 differences is held to float32's rounding.

    The cap never falls below ten times the estimates' ``rounding``: a gradient that nearly
    vanishes (a cotangent near the Jacobian's null space) is compared as closely as finite
    differences can resolve it, not more closely."""
    return allowance(errors, scale, floor, limit, rounding)[0]


def allowance(
    errors: np.ndarray,
    scale: float,
    floor: float,
    limit: float,
    rounding: np.ndarray | None = None,
) -> tuple[float, str]:
    """`allowed`'s tolerance, and what sets it: ``"the rounding floor"``, ``"the loss's
    rounding"``, ``"the noise limit"``, or ``""`` for ten times the estimated error."""
    error = float(np.max(errors, initial=0.0))
    rounding_error = 0.0 if rounding is None else float(np.max(rounding, initial=0.0))
    cap = max(limit * scale, 10 * rounding_error)
    widened = min(10 * error, cap)
    if floor * scale >= widened:
        return floor * scale, "the rounding floor"
    if widened < 10 * error:
        return widened, "the loss's rounding" if cap > limit * scale else "the noise limit"
    return widened, ""


def compare(
    observed: np.ndarray,
    values: np.ndarray,
    errors: np.ndarray,
    kinks: np.ndarray,
    *,
    floor: float,
    mode: str,
    dtype: np.dtype | type | str = np.float64,
    resolved: int = 0,
    rounding: np.ndarray | None = None,
) -> Comparison:
    """``observed`` against finite-difference ``values`` with their estimated ``errors``, all
    shaped alike; estimates flagged in ``kinks`` are skipped.

    Errors are relative to the largest estimate, and held to one tolerance (`allowed`):
    ``floor``, the policy's, or ten times the largest estimated error, capped at
    `noise_limit` of ``dtype``, the precision the function was computed in.
    """
    if mode not in ("elementwise", "directional"):
        raise ValueError(f"mode must be 'elementwise' or 'directional'; got {mode!r}")
    kinks = np.asarray(kinks, bool)
    given = np.asarray(observed, np.float64)
    expected = np.where(kinks, 0.0, values)
    observed = np.where(kinks, 0.0, given)
    scale = max(float(np.abs(expected).max(initial=0.0)), float(np.finfo(np.float64).tiny))
    skipped = kinks & np.isfinite(values)
    skipped_error = (
        float(np.max(np.abs(given - values)[skipped])) / scale if skipped.any() else None
    )
    limit = noise_limit(dtype)
    errors = np.where(kinks, 0.0, errors)
    rounding = np.zeros_like(errors) if rounding is None else np.where(kinks, 0.0, rounding)
    tolerance, set_by = allowance(errors, scale, floor, limit, rounding)
    tolerance /= scale
    with np.errstate(invalid="ignore", over="ignore"):
        relative = np.abs(observed - expected) / scale
    relative = np.where(np.isfinite(relative), relative, np.inf)
    worst = int(np.argmax(relative)) if relative.size else 0
    index = tuple(int(i) for i in np.unravel_index(worst, relative.shape)) if relative.size else ()
    return Comparison(
        float(relative.flat[worst]) if relative.size else 0.0,
        tolerance,
        index,
        mode,
        estimates=kinks.size,
        kinks=int(kinks.sum()),
        skipped_error=skipped_error,
        resolved=resolved,
        noisy=bool(10 * float(np.max(errors - rounding, initial=0.0)) > tolerance * scale),
        rounded=bool(10 * float(np.max(rounding, initial=0.0)) > limit * scale),
        observed=observed,
        expected=expected,
        scale=scale,
        estimated=float(np.max(errors, initial=0.0)) / scale,
        set_by=set_by,
    )


# --- verify's witness ------------------------------------------------------------------------

#: The finite-difference modes ``verify`` accepts.
MODES = ("auto", "elementwise", "directional")


@dataclass(frozen=True)
class NetworkWitness:
    """The independent witness of a network: its predictions and loss from its own float64
    forward pass (`gradcheck.witness`), and its gradient by finite differences of that loss,
    element by element or along random directions (the other field None), as ``choice`` says."""

    choice: Choice
    predictions: np.ndarray
    loss: float
    elementwise: ElementwiseGradient | None
    directional: DirectionalDerivatives | None

    @classmethod
    def of(
        cls,
        net: Network,
        params: Params,
        X: np.ndarray,
        y: np.ndarray,
        mode: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> NetworkWitness:
        """The witness of ``net`` at ``params`` on (X, y), its differences taken in ``mode``
        (one of `MODES`; ``"auto"``: `choose_mode`)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        choice = choose_mode(net, params, X, y) if mode == "auto" else Choice(mode, "as asked")
        outputs = witness.forward(net, params, X)  # training mode, the loss's
        predictions = witness.forward(net, params, X, training=False) if net.modal else outputs
        elementwise = directional = None
        if choice.mode == "elementwise":
            elementwise = elementwise_gradient(net, params, X, y, progress=progress)
        else:
            directional = directional_derivatives(net, params, X, y, progress=progress)
        loss = witness.loss(net, outputs, y)
        return cls(choice, predictions.outputs, loss, elementwise, directional)

    def describe(self) -> str:
        """How the differences were taken and why, as the report's heading says it."""
        return f"{FINITE_DIFFERENCES} {self.choice.mode}: {self.choice.reason}"


#: Names that moved to `gradcheck.compare`, still found here with a DeprecationWarning.
_MOVED = {"Check", "against_reference"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"gradcheck.finite_diff.{name} is deprecated; use gradcheck.compare.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        # imported by name when asked for: gradcheck.compare imports this module
        return getattr(importlib.import_module("gradcheck.compare"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
