"""The one tolerance policy: how far two implementations may differ, by dtype and problem.

Two correct implementations of the same network differ only by rounding. Rounding in a sum of n
terms grows like √n units in the last place, a chain of L layers compounds it about L times, and
every training step adds a fresh, mostly independent error, so over T steps the differences grow
like √T while the dynamics are stable. The policy writes that estimate down with a safety factor:

    point quantities (predictions, loss, gradients):  rtol = SAFETY · ε · √n · L
    training run (loss curve, final params):          rtol = point rtol · √(T + 1)

where ε is the machine epsilon of the dtype under test (float32 results are compared with a float64
reference at float32's ε), n the longest sum in the problem (samples or widest layer) and L the
number of weight layers. Errors are relative, each to the size its rounding scales with: a
gradient to the sum of the magnitudes of the terms it adds up (`gradient_magnitudes`), and
predictions likewise (`prediction_magnitudes`), so tiny values produced by cancellation are not
held to a precision they never had; trained params to their layer's largest; a loss to itself
or, near a fit, to the rounding it inherits from the outputs (`loss_magnitude`);
any other array to its largest element. A tolerance
is a statement about rounding, and so is measured where an estimate cannot be trusted.

Every training run is also measured (`horizon`, `conditioned`). RMSprop and
Adam divide each step by √v, the root of a running mean of g², so a parameter whose gradient has
cancelled to far below the terms it sums still takes a step of about η, its sign set by
rounding: the rounding in g is amplified by (term magnitudes)/√v. Near a minimum RMSprop keeps
stepping ±η with every sign decided this way. On the notebook's network after 2000 full-batch
steps of RMSprop at lr 0.01, four correct float64 implementations part by up to 3.7e-4 — 10⁸
times the √T estimate. So for such a run ``verify`` asks the reference itself how much the run
amplifies rounding: it trains again from params and inputs moved by one float64 rounding
(``rounding`` = point / SAFETY, random signs; the most of three draws) and, for a float32 run,
in float32 from params and inputs moved by one float32 ε (three draws: correct float32
implementations, each with its own rounding); the trajectory tolerance becomes at least
``SAFETY`` times the most those move the run (`conditioned`). Measured over every optimizer and
both ε conventions on the notebook's network (full batch and batches of 2, 5 seeds in float64
and 10 in float32; RMSprop over 20) and on digits (batches of 64, 3 epochs), correct backends
parted from the reference by at most 5× that measure and never by more than 0.31 of the
tolerance; a wrong learning rate, batch order, weight decay, AMSGrad or ε convention still
moves a run far more (tests/test_optimizers.py).

Plain gradient descent amplifies rounding too, where its dynamics are chaotic: three correct
implementations of a 3-13-14-1 tanh network agree to 1e-15 for 45 steps and part by 1e-3 by step
60. So the measured runs also give the run's horizon: the steps over which they stay within
`HORIZON_LIMIT` of the reference's own. The run is compared over those steps only, at a tolerance
of at least ``SAFETY`` times how far they parted there; beyond it nothing is compared, and a run
that reproduces itself for fewer than `MIN_HORIZON` steps is not compared at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from gradcheck import witness
from gradcheck.layers import (
    LSTM,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    MaxPool2D,
    Norm,
    Pooling,
    Recurrent,
    Weighted,
)
from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, LOSSES, lookup

#: The public names, as the API reference shows them.
__all__ = [
    "SAFETY",
    "Horizon",
    "Magnitudes",
    "Tolerances",
    "drift",
    "horizon",
    "relative_error",
    "relative_errors",
    "rounding_floor",
    "run_error",
    "tolerances",
]

#: Headroom over the rounding estimate; differences a real bug makes are far larger.
SAFETY = 16.0


@dataclass(frozen=True)
class Tolerances:
    """Relative tolerances for one problem: ``point`` for predictions, loss and gradients,
    ``trajectory`` for a training run's loss curve and final params."""

    point: float
    trajectory: float

    @property
    def rounding(self) -> float:
        """The rounding estimate itself, ``point`` without the safety factor."""
        return self.point / SAFETY


def tolerances(net: Network, n_samples: int, steps: int) -> Tolerances:
    """The tolerances for ``net`` on ``n_samples`` samples trained for ``steps`` steps."""
    eps = float(np.finfo(net.dtype).eps)
    point = SAFETY * eps * math.sqrt(longest_sum(net, n_samples)) * len(net.parametric)
    return Tolerances(point=point, trajectory=point * math.sqrt(steps + 1))


def longest_sum(net: Network, n_samples: int) -> int:
    """The most terms any one value of the forward or backward pass adds up: a weight layer's
    fan-in (forward), its fan-out (the delta it passes down), its gradient's samples times
    output positions, a pooling window."""
    lengths = [n_samples]
    for layer, shape_in, shape_out in zip(
        net.stack, net.input_shapes, net.output_shapes, strict=True
    ):
        if isinstance(layer, Weighted):
            W = layer.param_shapes(shape_in)["W"]  # (fan_in, units) or (kh, kw, C, O)
            positions = math.prod(shape_out[:-1])  # Ho·Wo, or 1
            lengths += [math.prod(W[:-1]), math.prod(W[:-2]) * W[-1], n_samples * positions]
        elif isinstance(layer, Pooling):
            lengths.append(layer.pool_size**2)
        elif isinstance(layer, BatchNorm):  # its statistics over every axis but the last
            lengths.append(n_samples * math.prod(shape_in[:-1]))
        elif isinstance(layer, Norm):  # a LayerNorm's over the last
            lengths.append(shape_in[-1])
        elif isinstance(layer, Embedding):  # a row's gradient: every position of its id
            lengths.append(n_samples * math.prod(shape_in))
        elif isinstance(layer, Recurrent):  # z's fan-in; W's and U's gradients over steps
            steps, fan_in = shape_in
            lengths += [fan_in + layer.units + 1, n_samples * steps]
    return max(lengths)


def conditioned(tolerances: Tolerances, sensitivity: float) -> Tolerances:
    """The tolerances of a training run whose own response to one rounding-sized change of its
    params and inputs is ``sensitivity``: the trajectory tolerance at least ``SAFETY`` times it.
    """
    return replace(tolerances, trajectory=max(tolerances.trajectory, SAFETY * sensitivity))


#: A step is compared while the reference's own runs, started one rounding apart, part by at most
#: this much (relative, on the loss): beyond it the run amplifies rounding so far that two correct
#: implementations may part by as much as a bug would make them.
HORIZON_LIMIT = 1e-3
#: A run that reproduces itself over fewer steps than this is not compared at all.
MIN_HORIZON = 10


@dataclass(frozen=True)
class Horizon:
    """How much of a training run of ``total`` steps can be compared: its first ``steps``
    losses, over which the reference reproduces its own run (see `horizon`)."""

    steps: int
    total: int
    #: How many times the run has amplified a rounding by the first step it no longer
    #: reproduces (None for a run reproducible to its end).
    amplification: float | None = None
    #: The loss's sharpest rise near that step, as (step, from, to), when it rose at least 1.5×.
    rise: tuple[int, float, float] | None = None
    #: The first step whose reference loss is not finite, if any.
    diverged: int | None = None

    @property
    def whole(self) -> bool:
        """The whole run is compared, final params included."""
        return self.steps >= self.total

    @property
    def comparable(self) -> bool:
        """There is a run, and enough of it is reproducible to be compared at all."""
        return self.total > 0 and (self.whole or self.steps >= MIN_HORIZON)

    def describe(self) -> str | None:
        """A line saying where the comparison stops and why; None for a whole run."""
        if self.whole:
            return None
        if self.diverged == self.steps:  # the runs part where the reference's loss overflows
            because = f"the reference diverges at step {self.diverged}: try a smaller lr"
        else:
            because = f"the run amplifies rounding {_fold(self.amplification)}"
            if self.rise is not None:
                step, before, after = self.rise
                because += f" (the loss rose from {before:.2g} to {after:.2g} at step {step})"
            if self.diverged is not None:
                because += f"; the reference diverges at step {self.diverged}: try a smaller lr"
        if not self.comparable:
            return f"training run not comparable: from step {self.steps} {because}"
        return f"training compared over steps 0–{self.steps - 1}: after that {because}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "total": self.total,
            "comparable": self.comparable,
            "amplification": self.amplification,
            "rise": None if self.rise is None else list(self.rise),
            "diverged": self.diverged,
        }


def horizon(moved: np.ndarray, rounding: float, losses: np.ndarray) -> Horizon:
    """The horizon of a training run whose reference losses are ``losses``, from ``moved``: per
    step, the most the reference's runs started ``rounding`` apart parted from it (relative).
    The run is compared up to the first step where they have parted by more than
    `HORIZON_LIMIT`; a loss that is not finite there counts as parted."""
    moved = np.asarray(moved, np.float64)
    beyond = ~(moved <= HORIZON_LIMIT)  # NaN counts as parted
    if not beyond.any():
        return Horizon(len(moved), len(moved))
    steps = int(np.argmax(beyond))
    amplification = float(moved[steps]) / rounding if np.isfinite(moved[steps]) else math.inf
    finite = np.isfinite(losses)
    diverged = None if finite.all() else int(np.argmin(finite))
    return Horizon(steps, len(moved), amplification, _sharpest_rise(losses, steps), diverged)


def _sharpest_rise(losses: np.ndarray, near: int) -> tuple[int, float, float] | None:
    """The step within 20 of ``near`` whose loss stands highest over the lowest loss before it,
    as (step, lowest before, loss), when it stands at least 1.5 times as high."""
    losses = np.asarray(losses, np.float64)
    window = range(max(near - 20, 1), min(near + 20, len(losses)))
    best, highest = None, 1.5
    for step in window:
        lowest = float(np.min(losses[:step]))
        if lowest > 0 and np.isfinite(losses[step]) and losses[step] >= highest * lowest:
            best, highest = (step, lowest, float(losses[step])), losses[step] / lowest
    return best


def _fold(amplification: float | None) -> str:
    """``10¹³-fold``: the power of ten nearest ``amplification``; or ``without bound``."""
    if amplification is None or not 0 < amplification < math.inf:
        return "without bound"
    digits = str(round(math.log10(amplification)))
    return "10" + digits.translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")) + "-fold"


def relative_errors(
    observed: np.ndarray,
    reference: np.ndarray,
    *,
    elementwise: bool = False,
    magnitude: np.ndarray | None = None,
) -> np.ndarray:
    """``|observed − reference|`` divided by the reference's largest magnitude or, with
    ``elementwise``, by each reference value's own magnitude; non-finite observations count as
    an infinite error. Both arrays must have the same shape.

    ``magnitude``, when given, is the size of what was summed to make each reference value
    (see `gradient_magnitudes`); the scale is then its largest element, since rounding
    in a sum is relative to its terms, not to a result they nearly cancel to."""
    observed = np.asarray(observed, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    magnitude = np.abs(reference) if magnitude is None else np.maximum(magnitude, np.abs(reference))
    scale = magnitude if elementwise or magnitude.size == 0 else magnitude.max()
    scale = np.maximum(scale, np.finfo(np.float64).tiny)  # 0/0 is a mismatch, not NaN
    with np.errstate(invalid="ignore", over="ignore"):
        errors = np.abs(observed - reference) / scale
    return np.where(np.isfinite(errors), errors, np.inf)


def relative_error(
    observed: np.ndarray,
    reference: np.ndarray,
    *,
    elementwise: bool = False,
    magnitude: np.ndarray | None = None,
) -> tuple[float, tuple[int, ...]]:
    """The worst of `relative_errors` and where it occurs.

    Returns:
        ``(error, index)``: the largest relative error and its index in the arrays.
    """
    errors = relative_errors(observed, reference, elementwise=elementwise, magnitude=magnitude)
    if errors.size == 0:
        return 0.0, ()
    flat = int(np.argmax(errors))
    index = tuple(int(i) for i in np.unravel_index(flat, errors.shape))
    return float(errors.flat[flat]), index


def rounding_floor(dtype: Any, terms: int) -> float:
    """The tolerance a function of ``terms`` summed terms computed in ``dtype`` is held to for
    its own rounding, with nothing known of its structure: SAFETY·ε·√n, the typical growth of a
    sum's rounding."""
    return SAFETY * float(np.finfo(dtype).eps) * math.sqrt(max(terms, 1))


def drift(again: Any, first: Any) -> float:
    """How far a second run's array is from the first's (`relative_error`, relative to the
    first's largest element): 0.0 when they are identical, NaN in the same places included;
    infinite when the second run gave none or another shape."""
    if again is None or np.shape(again) != np.shape(first):
        return math.inf
    a, b = np.asarray(again, np.float64), np.asarray(first, np.float64)
    if np.all((a == b) | (np.isnan(a) & np.isnan(b))):
        return 0.0
    return relative_error(a, b)[0]


def layer_scales(params: Params) -> Params:
    """Each layer's largest parameter, for every parameter of the layer.

    A layer's weights and bias move by updates built from the same deltas, so their rounding is
    on one scale: a bias that stays near zero while its updates nearly cancel is held to the
    layer's scale, not to its own small value.
    """
    scales = []
    for layer in params:
        largest = max(float(np.abs(value).max(initial=0.0)) for value in layer.values())
        scales.append({key: np.full(np.shape(value), largest) for key, value in layer.items()})
    return scales


def run_error(
    losses: np.ndarray, params: Params, reference_losses: np.ndarray, reference_params: Params
) -> float:
    """How far a training run is from a reference run, measured as ``verify`` measures one: the
    largest error of its losses, each to itself, and of its final params, each to its layer's
    largest (`layer_scales`). A missing or misshapen array is infinitely far."""
    losses, reference_losses = np.asarray(losses), np.asarray(reference_losses)
    if losses.shape != reference_losses.shape or len(params) != len(reference_params):
        return math.inf
    errors = [relative_error(losses, reference_losses, elementwise=True)[0]]
    scales = layer_scales(reference_params)
    for got, want, scale in zip(params, reference_params, scales, strict=True):
        for key in want:
            value = got.get(key)
            if value is None or np.shape(value) != np.shape(want[key]):
                return math.inf
            errors.append(relative_error(value, want[key], magnitude=scale[key])[0])
    return max(errors)


@dataclass(frozen=True)
class Magnitudes:
    """The sizes a point comparison's errors are relative to: `prediction_magnitudes`,
    `gradient_magnitudes` and `loss_magnitude`."""

    predictions: np.ndarray
    gradients: Params
    loss: float


def prediction_magnitudes(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    """For every prediction, a bound on the magnitudes of the terms that make it.

    The forward pass run in absolute values: each pre-activation's terms |x||W| + |b|, carried
    through its activation's slope as a rounding of them would be (the registry's
    ``derivative_terms``; for the softmax, `_abs_activation_backward`'s bound of its Jacobian), a
    max pool's bound by the largest in its window. An output whose terms nearly cancel is small,
    but its rounding is as large as they are times the slope.
    """
    return _forward_magnitudes(net, params, X, training=False)[1]


def loss_magnitude(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> float:
    """The size of the rounding a loss inherits from the outputs it is computed from: each
    output's bound (`prediction_magnitudes`; the logits' for a loss with its own output
    activation) times the loss's bound on its slope there (``Loss.terms``), summed.

    Near a fit a loss such as ½Σ(a − y)² is far smaller than the a and y it subtracts, and two
    correct implementations part by a rounding of those, not of the loss: 1.2e-3 apart, a and y
    of 0.3 give a loss of 7e-7 whose float64 results differ by 2e-13 of it. A loss is compared
    relative to the larger of itself and this."""
    spec = lookup(LOSSES, net.loss, "loss")
    a, outputs, logits = _forward_magnitudes(net, params, X)
    slope = spec.terms(a, np.asarray(y, np.float64))
    return float(np.sum(slope * (outputs if spec.output is None else logits)))


def _forward_magnitudes(
    net: Network, params: Params, X: np.ndarray, training: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The witness's outputs a_L, `prediction_magnitudes`' bound on each, and the bound on
    each of the last weight layer's pre-activations z_L; in training or inference mode."""
    forward = witness.forward(net, params, X, training)
    magnitude = z = np.abs(forward.activations[0])
    weights, zs = iter(params), iter(forward.zs)
    steps = zip(net.stack, forward.activations, forward.activations[1:], strict=False)
    for k, (layer, x, a) in enumerate(steps):
        if isinstance(layer, Weighted):
            terms = {key: np.abs(np.asarray(v, np.float64)) for key, v in next(weights).items()}
            z = witness.pre_activation(layer, magnitude, terms)
            magnitude = _abs_activation_backward(layer.activation, next(zs), a, z)
        elif isinstance(layer, Norm):
            magnitude = _abs_norm_forward(layer, x, next(weights), magnitude, training)
        elif isinstance(layer, Activation):
            magnitude = _abs_activation_backward(layer.activation, x, a, magnitude)
        elif isinstance(layer, Dropout):
            scaled = magnitude * layer.prediction_scale
            magnitude = witness.dropped(net, k, magnitude) if training else scaled
        elif isinstance(layer, Embedding):  # a lookup: exact, its bound the rows themselves
            magnitude = np.abs(np.asarray(next(weights)["E"], np.float64))[x]
        elif isinstance(layer, Recurrent):
            magnitude = _abs_through_time(layer, forward.steps[k], next(weights), magnitude)
        elif isinstance(layer, Pooling | Flatten):
            magnitude = witness.pool_or_flatten(layer, magnitude)
        else:
            raise TypeError(f"the tolerance has no forward bound for {layer!r}")
    return forward.outputs, magnitude, z


def _slope(activation: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """A bound on |f′| and on the terms of its rounding, the registry's ``derivative_terms``."""
    terms = lookup(ACTIVATIONS, activation, "activation").derivative_terms
    assert terms is not None  # an elementwise activation
    return terms(z, a)


class _Cell(NamedTuple):
    """An LSTM's step t as its bounds read it: the gates i, f, c̃, o and bounds on their slopes
    (σ′, σ′, tanh′, σ′), |c_{t−1}|, |tanh(c_t)| and a bound on tanh′(c_t); each (N, H)."""

    gates: tuple[np.ndarray, ...]
    slopes: tuple[np.ndarray, ...]
    c_prev: np.ndarray
    tanh_c: np.ndarray
    tanh_slope: np.ndarray


def _cell(rec: witness.Recurrence, t: int) -> _Cell:
    assert rec.c is not None
    assert rec.gates is not None
    z, gates = np.split(rec.z[:, t], 4, axis=1), np.split(rec.gates[:, t], 4, axis=1)
    slopes = tuple(
        _slope(name, z_k, a_k)
        for name, z_k, a_k in zip(("sigmoid", "sigmoid", "tanh", "sigmoid"), z, gates, strict=True)
    )
    c = rec.c[:, t + 1]
    tanh_c = np.tanh(c)
    return _Cell(tuple(np.abs(gates)), slopes, np.abs(rec.c[:, t]), np.abs(tanh_c),
                 _slope("tanh", c, tanh_c))  # fmt: skip


def _abs_through_time(
    layer: Recurrent, rec: witness.Recurrence, values: dict, magnitude: np.ndarray
) -> np.ndarray:
    """A bound on the terms of a recurrent layer's output from one on its input's, step by
    step: z's terms |x_t||W| + m_{h,t−1}|U| + |b|, through the activation's slope; an LSTM's
    c_t = f c_{t−1} + i c̃ bounded by |f| m_c + m_f |c_{t−1}| + |i| m_c̃ + m_i |c̃|, and
    h_t = o tanh(c_t) by m_o |tanh c_t| + |o| m_c."""
    W, U, b = (np.abs(np.asarray(values[key], np.float64)) for key in ("W", "U", "b"))
    m_h, m_c, every = np.zeros_like(rec.h[:, 0]), np.zeros_like(rec.h[:, 0]), []
    for t in range(rec.z.shape[1]):
        m_z = magnitude[:, t] @ W + m_h @ U + b
        if isinstance(layer, LSTM):
            cell = _cell(rec, t)
            i, f, g, o = cell.gates
            m_i, m_f, m_g, m_o = (
                m * slope for m, slope in zip(np.split(m_z, 4, axis=1), cell.slopes, strict=True)
            )
            m_c = f * m_c + m_f * cell.c_prev + i * m_g + m_i * g
            m_h = m_o * cell.tanh_c + o * cell.tanh_slope * m_c
        else:
            m_h = _abs_activation_backward(layer.activation, rec.z[:, t], rec.h[:, t + 1], m_z)
        every.append(m_h)
    return np.stack(every, axis=1) if layer.return_sequences else m_h


def _abs_norm_forward(
    layer: Norm, x: np.ndarray, values: dict, magnitude: np.ndarray, training: bool
) -> np.ndarray:
    """A bound on the terms of γ (x − μ) r + β from one on x's: |γ| r (|x| + |μ|) + |β|, where
    x − μ may cancel; the batch's μ sums x's own bounds."""
    _, inv_std, mean = witness.standardised(layer, x, values, training)
    if isinstance(layer, BatchNorm) and not training:
        centre = np.abs(mean)
    else:
        axes = tuple(range(x.ndim - 1)) if isinstance(layer, BatchNorm) else -1
        centre = magnitude.mean(axis=axes, keepdims=True)
    gamma, beta = (np.abs(np.asarray(values[key], np.float64)) for key in ("gamma", "beta"))
    return gamma * inv_std * (magnitude + centre) + beta


def gradient_magnitudes(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Params:
    """For every gradient element, the sum of the magnitudes of the terms that make it.

    Backpropagation run in absolute values — |a|ᵀ|δ|, |δ||W|ᵀ ⊙ |f′| — from the loss's bound on
    its output terms (``Loss.terms`` in `gradcheck.ops`) bounds what each gradient sums.
    Where those terms nearly cancel, the gradient is small but its rounding is not, and the
    comparison is scaled by this instead. The forward pass is the witness's own.
    """
    return backward_magnitudes(net, params, X, y)[1]


def backward_magnitudes(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[list[np.ndarray], Params]:
    """`gradient_magnitudes` with the bounds on each weight layer's delta δ_l as well:
    ``(deltas, gradients)``, ``deltas[l - 1]`` shaped like z_l, ``(N, n_l)`` for a Dense one."""
    forward = witness.forward(net, params, X)
    values = forward.activations  # values[k]: layer k's input
    spec = lookup(LOSSES, net.loss, "loss")
    grad = spec.terms(values[-1], np.asarray(y, np.float64))  # on ∂C/∂a_L: (N, K)
    deltas: list[np.ndarray] = []
    magnitudes: Params = [{} for _ in params]
    w, p = len(forward.zs), len(params)  # the weight layers' zs, the layers' params
    for k in reversed(range(len(net.stack))):
        layer, x = net.stack[k], values[k]
        if isinstance(layer, Norm):
            p -= 1
            magnitudes[p], grad = _abs_norm_backward(layer, x, params[p], grad)
            continue
        if isinstance(layer, Activation):
            grad = _abs_activation_backward(layer.activation, x, values[k + 1], grad)
            continue
        if isinstance(layer, Dropout):
            grad = witness.dropped(net, k, grad)
            continue
        if isinstance(layer, Embedding):  # the first layer: its rows' scatter-added bounds
            p -= 1
            rows = np.zeros(np.shape(params[p]["E"]))
            np.add.at(rows, x, grad)
            magnitudes[p] = {"E": rows}
            break
        if isinstance(layer, Recurrent):
            p -= 1
            rec = forward.steps[k]
            magnitudes[p], grad = _abs_back_through_time(layer, rec, x, params[p], grad)
            continue
        if isinstance(layer, Pooling | Flatten):
            grad = _abs_layer_backward(layer, x, grad)
            continue
        if not isinstance(layer, Weighted):
            raise TypeError(f"the tolerance has no backward bound for {layer!r}")
        w, p = w - 1, p - 1
        if k < len(net.stack) - 1 or spec.output is None:  # through the activation to ∂C/∂z
            grad = _abs_activation_backward(layer.activation, forward.zs[w], values[k + 1], grad)
        deltas.insert(0, grad)
        W = np.abs(np.asarray(params[p]["W"], np.float64))
        magnitudes[p]["W"], bias = _abs_weight_grads(layer, np.abs(x), grad)
        if "b" in params[p]:
            magnitudes[p]["b"] = bias
        if p == 0:
            break
        grad = _abs_input_grad(layer, x.shape, W, grad)
    return deltas, magnitudes


def _abs_norm_backward(
    layer: Norm, x: np.ndarray, values: dict, grad: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Bounds on the terms of ∂C/∂γ = Σ g x̂, ∂C/∂β = Σ g and
    ∂C/∂x = r (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), ĝ = γ g, from bounds g on ∂C/∂(the output)."""
    x_hat, inv_std, _ = witness.standardised(layer, x, values, training=True)
    x_hat = np.abs(x_hat)
    batch = tuple(range(x.ndim - 1))
    axes = batch if isinstance(layer, BatchNorm) else -1
    g_hat = grad * np.abs(np.asarray(values["gamma"], np.float64))
    mean_g = g_hat.mean(axis=axes, keepdims=True)
    mean_gx = (g_hat * x_hat).mean(axis=axes, keepdims=True)
    grads = {"gamma": (grad * x_hat).sum(axis=batch), "beta": grad.sum(axis=batch)}
    return grads, inv_std * (g_hat + mean_g + x_hat * mean_gx)


def _abs_back_through_time(
    layer: Recurrent, rec: witness.Recurrence, x: np.ndarray, values: dict, grad: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Bounds on the terms of a recurrent layer's ∂C/∂W, ∂C/∂U, ∂C/∂b and ∂C/∂x from bounds
    on ∂C/∂(its output): BPTT in absolute values, each step's δ_t from dh_t = g_t + δ_{t+1}|U|ᵀ
    (and an LSTM's dc_t = dc_{t+1}|f_{t+1}| + dh_t |o| tanh′(c_t)), summed into
    |x_t|ᵀ δ_t, |h_{t−1}|ᵀ δ_t and Σ δ_t."""
    W, U = (np.abs(np.asarray(values[key], np.float64)) for key in ("W", "U"))
    T, H = rec.z.shape[1], layer.units
    if grad.ndim == 2:  # only h_T returned
        grad = np.concatenate([np.zeros((len(grad), T - 1, H)), grad[:, None]], axis=1)
    x, h = np.abs(x), np.abs(rec.h)
    grads = {"W": np.zeros(W.shape), "U": np.zeros(U.shape), "b": np.zeros(U.shape[1])}
    dx, carry_h, carry_c = np.zeros(x.shape), np.zeros_like(h[:, 0]), np.zeros_like(h[:, 0])
    for t in reversed(range(T)):
        dh = grad[:, t] + carry_h
        if isinstance(layer, LSTM):
            cell = _cell(rec, t)
            (i, f, g, o), (s_i, s_f, s_g, s_o) = cell.gates, cell.slopes
            dc = carry_c + dh * o * cell.tanh_slope
            delta = np.concatenate(
                [dc * g * s_i, dc * cell.c_prev * s_f, dc * i * s_g, dh * cell.tanh_c * s_o], axis=1
            )
            carry_c = dc * f
        else:
            delta = _abs_activation_backward(layer.activation, rec.z[:, t], rec.h[:, t + 1], dh)
        grads["W"] += x[:, t].T @ delta
        grads["U"] += h[:, t].T @ delta
        grads["b"] += delta.sum(axis=0)
        dx[:, t] = delta @ W.T
        carry_h = delta @ U.T
    return grads, dx


def _abs_weight_grads(
    layer: Weighted, x: np.ndarray, delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """|x|ᵀ|δ| for a Dense layer, the correlation of |x| with |δ| for a Conv2D one; Σ|δ|."""
    bias = delta.reshape(-1, delta.shape[-1]).sum(axis=0)
    if isinstance(layer, Dense):  # every time step a row of its own on a sequence
        return x.reshape(-1, x.shape[-1]).T @ delta.reshape(-1, delta.shape[-1]), bias
    windows = witness.patches(x, layer.kernel, layer.strides, layer.padding)  # (N,Ho,Wo,C,kh,kw)
    return np.tensordot(windows, delta, axes=([0, 1, 2], [0, 1, 2])).transpose(1, 2, 0, 3), bias


def _abs_input_grad(
    layer: Weighted, shape: tuple[int, ...], W: np.ndarray, delta: np.ndarray
) -> np.ndarray:
    """|δ||W|ᵀ for a Dense layer; for a Conv2D one each window's |δ||W[p,q]|ᵀ added back
    into the window of the padded input, the padding then dropped."""
    if isinstance(layer, Dense):
        return delta @ W.T  # (N, n_l) @ (n_l, n_{l-1})
    (kh, kw), s = layer.kernel, layer.strides
    pads = [
        witness.padding(shape[1 + axis], layer.kernel[axis], s, layer.padding) for axis in (0, 1)
    ]
    padded = np.zeros((shape[0], shape[1] + sum(pads[0]), shape[2] + sum(pads[1]), shape[3]))
    rows, cols = delta.shape[1:3]
    for p in range(kh):
        for q in range(kw):
            padded[:, p : p + s * rows : s, q : q + s * cols : s] += delta @ W[p, q].T
    (top, _), (left, _) = pads
    return padded[:, top : top + shape[1], left : left + shape[2]]


def _abs_layer_backward(layer: Pooling | Flatten, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """A bound on ∂C/∂x from one on ∂C/∂(layer's output), for a layer without weights: a max
    pool's routed to each window's first maximum, an average pool's spread over its window."""
    if isinstance(layer, Flatten):
        return grad.reshape(x.shape)
    size, s = layer.pool_size, layer.stride
    rows, cols = grad.shape[1:3]
    first = witness.first_maxima(layer, x) if isinstance(layer, MaxPool2D) else None
    dx = np.zeros(x.shape)
    for k in range(size * size):
        p, q = divmod(k, size)
        share = grad / size**2 if first is None else np.where(first == k, grad, 0.0)
        dx[:, p : p + s * rows : s, q : q + s * cols : s] += share
    return dx


def _abs_activation_backward(
    activation: str, z: np.ndarray, a: np.ndarray, grad_a: np.ndarray
) -> np.ndarray:
    """A bound on the terms of ∂C/∂z from one on those of ∂C/∂a: elementwise through the
    registry's ``derivative_terms(z, a)``, and for a row-wise activation (the softmax)
    |a| ⊙ (g + ⟨g, |a|⟩), which bounds a ⊙ (g − ⟨g, a⟩). The Jacobian is symmetric, so the same
    bound carries a change of z forward to a."""
    terms = lookup(ACTIVATIONS, activation, "activation").derivative_terms
    if terms is None:
        return np.abs(a) * (grad_a + np.sum(grad_a * np.abs(a), axis=-1, keepdims=True))
    return grad_a * terms(z, a)


def ratio(error: float, tolerance: float) -> float:
    """error / tolerance: below 1 within the tolerance; infinite for a missing or NaN value."""
    if not math.isfinite(error):
        return math.inf
    return error / tolerance if tolerance > 0 else (0.0 if error == 0 else math.inf)
