"""The registry of operations: every activation and every loss, declared once.

Each entry says what the operation is — its formula, a float64 reference definition written for
the finite-difference witness, the constraints a network must meet to use it, the bound the
tolerance policy needs, and how JAX and Keras spell it. Network validation, the tolerance policy,
the witness's forward pass, the command line's choices, the docs' tables and the test matrix all
read it. The hand-written kernels keep their own code, since they are what is under test, and
look names up with `lookup`, so a name a kernel does not implement raises instead of
computing something else.

The reference definitions are written for accuracy (within a few ulp), not speed, and
differently from the kernels where a stable form allows (``logaddexp`` where the kernels split on
the sign): a witness that repeats the code it judges repeats its bugs.
"""

from __future__ import annotations

import functools
import operator
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

#: The public names, as the API reference shows them.
__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "Activation",
    "Loss",
    "lookup",
    "ones",
]

Array = np.ndarray
T = TypeVar("T")


@dataclass(frozen=True)
class Activation:
    """An activation a = f(z), applied to a layer's pre-activations z of shape ``(N, n)``."""

    name: str
    #: f(z) as plain text, for the docs' tables.
    formula: str
    #: f in float64, finite and silent for any finite z.
    reference: Callable[[Array], Array]
    #: For an elementwise f: f′ as the kernels write it, ``derivative(z, a)`` from the
    #: pre-activation z, the activation a = f(z) or both (``needs`` says which), in float64.
    #: Every kernel computes f′ from what this reads, the tolerance bounds the rounding of its
    #: terms (``derivative_terms``) and the explanations evaluate it where a kernel may have
    #: passed one tensor for the other. None for a row-wise f (softmax), whose Jacobian the
    #: kernels and the tolerance policy apply whole.
    derivative: Callable[[Array, Array], Array] | None
    #: Which of ``"z"`` and ``"a"`` ``derivative`` reads: σ′ = a(1 − a) needs a alone, silu′
    #: needs z. A kernel keeps z for the backward pass only where it is needed.
    needs: tuple[str, ...] = ()
    #: A bound on the size of the terms ``derivative`` adds up, from (z, a): what its rounding is
    #: relative to (σ′ = a − a² cancels as the unit saturates, so its terms are |a|, not the
    #: small σ′ left).
    derivative_terms: Callable[[Array, Array], Array] | None = None
    #: For an elementwise f: f′(z) in float64, as exactly as a stable formula allows (the
    #: explanations' right slope).
    prime: Callable[[Array], Array] | None = None
    #: Pre-activation values where f has no derivative (relu's 0).
    kinks: tuple[float, ...] = ()
    #: Allowed on the output layer only.
    output_only: bool = False
    #: The fewest units a layer with f may have (a softmax over one unit is the constant 1).
    min_units: int = 1
    #: The function's path in the ``jax`` package, e.g. ``nn.sigmoid``.
    jax: str = ""
    #: Keras's name for it (``keras.activations.get``).
    keras: str = ""
    #: Keyword arguments both frameworks' functions take for it, as (name, value) pairs: GELU's
    #: ``approximate``, whose default is the tanh form in JAX and the exact one in Keras.
    options: tuple[tuple[str, object], ...] = ()
    #: The activations a port computes in its place, by a framework's convention, each with the
    #: convention in words: the explanations try each.
    confusions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not set(self.needs) <= {"z", "a"} or (self.derivative is None) != (not self.needs):
            raise ValueError(
                f"needs must name 'z', 'a' or both for an elementwise activation, and nothing "
                f"for a row-wise one; got {self.needs!r} for {self.name}"
            )

    def jax_function(self, jax: Any) -> Callable[[Any], Any]:
        """The activation as JAX implements it: ``jax.<jax>`` with the ``options``."""
        return functools.partial(operator.attrgetter(self.jax)(jax), **dict(self.options))

    @property
    def elementwise(self) -> bool:
        return self.derivative is not None

    @property
    def prime_terms(self) -> Callable[[Array], Array] | None:
        """Deprecated: ``derivative_terms(z, a)``, which takes z as well."""
        warnings.warn(
            "Activation.prime_terms(a) is deprecated; use derivative_terms(z, a)",
            DeprecationWarning,
            stacklevel=2,
        )
        terms = self.derivative_terms
        return None if terms is None or "z" in self.needs else (lambda a: terms(a, a))

    @property
    def prime_of_a(self) -> Callable[[Array], Array] | None:
        """Deprecated: ``derivative(z, a)``, which takes z as well."""
        warnings.warn(
            "Activation.prime_of_a(a) is deprecated; use derivative(z, a)",
            DeprecationWarning,
            stacklevel=2,
        )
        derivative = self.derivative
        return None if derivative is None or "z" in self.needs else (lambda a: derivative(a, a))


@dataclass(frozen=True)
class Loss:
    """A loss C(z_L, a_L, y) over N samples (rows) and K outputs (columns); on a sequence, over
    N·T rows, every time step's outputs a row (softmax_ce's 1/N is then 1/NT, as in Keras)."""

    name: str
    #: C as plain text, for the docs' tables.
    formula: str
    #: C in float64 from the logits z_L, the outputs a_L = f(z_L) and the targets y, all (N, K).
    reference: Callable[[Array, Array, Array], float]
    #: A bound on the size of the terms of ∂C/∂a (when ``output`` is None, to be carried through
    #: the output activation), or of δ_L = ∂C/∂z_L directly (when the loss is defined together
    #: with its ``output``), from a and y, both (N, K).
    terms: Callable[[Array, Array], Array]
    #: The output activation the loss needs, if any.
    output: str | None = None
    #: The closed interval the targets must lie in, if any.
    targets: tuple[float, float] | None = None
    #: The class in ``keras.losses`` that computes it with Keras's defaults; empty when Keras has
    #: none and the Keras backend defines it.
    keras: str = ""


# --- float64 reference definitions -------------------------------------------------------------


def _log_sum_exp(z: Array) -> Array:
    """log Σ_k e^{z_k} over the last axis, (..., K) -> (..., 1), without overflow:
    m + log Σ_k e^{z_k − m} with m the row's largest, so that every term is at most 1 and one of
    them is 1. Reduced over the columns of zᵀ: NumPy reduces a short last axis row by row,
    several times slower."""
    zt = np.ascontiguousarray(z.reshape(-1, z.shape[-1]).T)  # (K, rows)
    m = zt.max(axis=0)
    return (m + np.log(np.exp(zt - m).sum(axis=0))).reshape(*z.shape[:-1], 1)


def _sigmoid(z: Array) -> Array:
    # e^{min(z, 0)} / (1 + e^{−|z|}): 1/(1 + e^{−z}) for z ≥ 0, e^z/(1 + e^z) below; no overflow.
    return np.exp(np.minimum(z, 0.0)) / (1.0 + np.exp(-np.abs(z)))


def _normal_cdf(z: Array) -> Array:
    """Φ(z), the standard normal distribution function (SciPy's ``ndtr``), accurate in the
    lower tail where 1 + erf(z/√2) cancels."""
    from scipy.special import ndtr

    return ndtr(z)


def _normal_pdf(z: Array) -> Array:
    """φ(z) = e^{−z²/2} / √(2π); z clipped where φ is 0 in float64 already, so z² cannot
    overflow."""
    z = np.clip(z, -40.0, 40.0)
    return np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


#: GELU's tanh form: ½ z (1 + tanh(u)) = z σ(2u), u = √(2/π) (z + 0.044715 z³).
_GELU_TANH_SCALE, _GELU_TANH_CUBIC = np.sqrt(2.0 / np.pi), 0.044715


def _gelu_tanh_u(z: Array) -> Array:
    """u, with z clipped where σ(2u) is 0 or 1 already (so that z³ cannot overflow)."""
    z = np.clip(z, -1e4, 1e4)
    return _GELU_TANH_SCALE * (z + _GELU_TANH_CUBIC * z**3)


def _gelu_tanh_prime_parts(z: Array) -> tuple[Array, Array]:
    """The two terms of its derivative: σ(2u) and z · 2σ(2u)σ(−2u) · u′, with
    u′ = √(2/π)(1 + 3·0.044715 z²)."""
    u, zc = _gelu_tanh_u(z), np.clip(z, -1e4, 1e4)
    slope = _GELU_TANH_SCALE * (1 + 3 * _GELU_TANH_CUBIC * zc**2)
    return _sigmoid(2 * u), 2 * zc * _sigmoid(2 * u) * _sigmoid(-2 * u) * slope


def _gelu_tanh_prime(z: Array) -> Array:
    first, second = _gelu_tanh_prime_parts(z)
    return first + second


def _tanh_prime(z: Array) -> Array:
    # sech²(z) = 4 e^{−2|z|} / (1 + e^{−2|z|})², without the cancellation of 1 − tanh²
    e = np.exp(-2.0 * np.abs(z))
    return 4.0 * e / (1.0 + e) ** 2


def _softmax(z: Array) -> Array:
    return np.exp(z - _log_sum_exp(z))


def _half_sse(z: Array, a: Array, y: Array) -> float:
    return float(0.5 * np.sum((a - y) ** 2))


def _mse(z: Array, a: Array, y: Array) -> float:
    return float(np.sum((a - y) ** 2) / a.size)


def _bce(z: Array, a: Array, y: Array) -> float:
    # −[y log σ(z) + (1 − y) log(1 − σ(z))] = log(1 + e^z) − y z
    return float(np.sum(np.logaddexp(0.0, z) - y * z) / z.size)


def rows(a: Array) -> int:
    """How many rows of K outputs ``a`` holds: N, or N·T for a sequence's (N, T, K)."""
    return a.size // a.shape[-1]


def _softmax_ce(z: Array, a: Array, y: Array) -> float:
    return float(-np.sum(y * (z - _log_sum_exp(z))) / rows(z))


# --- the registry --------------------------------------------------------------------------------


def ones(x: Array) -> Array:
    """1 for every element of ``x``, in float64: the slope of the identity."""
    return np.ones_like(x, dtype=np.float64)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            "sigmoid",
            "1 / (1 + exp(−z))",
            _sigmoid,
            derivative=lambda z, a: a * (1 - a),
            needs=("a",),
            derivative_terms=lambda z, a: np.abs(a),  # σ′ = a − a²
            prime=lambda z: _sigmoid(z) * _sigmoid(-z),
            jax="nn.sigmoid",
            keras="sigmoid",
        ),
        Activation(
            "tanh",
            "tanh(z)",
            np.tanh,
            derivative=lambda z, a: 1 - a**2,
            needs=("a",),
            derivative_terms=lambda z, a: ones(a),  # tanh′ = 1 − a²
            prime=_tanh_prime,
            jax="nn.tanh",
            keras="tanh",
        ),
        Activation(
            "relu",
            "max(z, 0), with relu′(0) = 0",
            lambda z: np.where(z > 0, z, 0.0),
            derivative=lambda z, a: (a > 0).astype(np.float64),
            needs=("a",),
            derivative_terms=lambda z, a: (a > 0).astype(np.float64),
            prime=lambda z: (z > 0).astype(np.float64),
            kinks=(0.0,),
            jax="nn.relu",
            keras="relu",
        ),
        Activation(
            "identity",
            "z",
            lambda z: z,
            derivative=lambda z, a: ones(a),
            needs=("a",),
            derivative_terms=lambda z, a: ones(a),
            prime=ones,
            jax="nn.identity",
            keras="linear",
        ),
        Activation(
            "softplus",
            "log(1 + exp(z))",
            lambda z: np.logaddexp(0.0, z),
            derivative=lambda z, a: -np.expm1(-a),
            needs=("a",),
            derivative_terms=lambda z, a: ones(a),  # softplus′ = σ(z) = 1 − e^{−a}, at most 1
            prime=_sigmoid,
            jax="nn.softplus",
            keras="softplus",
        ),
        Activation(
            "silu",
            "z / (1 + exp(−z))",
            lambda z: z * _sigmoid(z),
            derivative=lambda z, a: _sigmoid(z) * (1 + z * _sigmoid(-z)),
            needs=("z",),
            derivative_terms=lambda z, a: _sigmoid(z) * (1 + np.abs(z) * _sigmoid(-z)),
            prime=lambda z: _sigmoid(z) * (1 + z * _sigmoid(-z)),
            jax="nn.silu",
            keras="silu",
        ),
        Activation(
            "gelu",
            "z Φ(z) = ½ z (1 + erf(z / √2)): exact",
            lambda z: z * _normal_cdf(z),
            derivative=lambda z, a: _normal_cdf(z) + z * _normal_pdf(z),
            needs=("z",),
            derivative_terms=lambda z, a: _normal_cdf(z) + np.abs(z) * _normal_pdf(z),
            prime=lambda z: _normal_cdf(z) + z * _normal_pdf(z),
            jax="nn.gelu",
            keras="gelu",
            options=(("approximate", False),),
            confusions=(
                (
                    "gelu_tanh",
                    "GELU's tanh approximation where the exact erf form is asked for "
                    "(the default of jax.nn.gelu and keras.ops.gelu)",
                ),
            ),
        ),
        Activation(
            "gelu_tanh",
            "½ z (1 + tanh(√(2/π) (z + 0.044715 z³))): GELU's tanh approximation",
            lambda z: z * _sigmoid(2 * _gelu_tanh_u(z)),
            derivative=lambda z, a: _gelu_tanh_prime(z),
            needs=("z",),
            derivative_terms=lambda z, a: np.abs(_gelu_tanh_prime_parts(z)).sum(axis=0),
            prime=_gelu_tanh_prime,
            jax="nn.gelu",
            keras="gelu",
            options=(("approximate", True),),
            confusions=(
                (
                    "gelu",
                    "GELU's exact erf form where the tanh approximation is asked for "
                    "(the default of keras.activations.gelu and PyTorch's GELU)",
                ),
            ),
        ),
        Activation(
            "softmax",
            "exp(z_k) / Σ_j exp(z_j), per row",
            _softmax,
            derivative=None,
            output_only=True,
            min_units=2,
            jax="nn.softmax",
            keras="softmax",
        ),
    )
}

LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss(
            "half_sse",
            "½ Σ (a − y)²",
            _half_sse,
            terms=lambda a, y: np.abs(a) + np.abs(y),  # ∂C/∂a = a − y
            keras="",
        ),
        Loss(
            "mse",
            "(1/NK) Σ (a − y)²",
            _mse,
            terms=lambda a, y: 2 * (np.abs(a) + np.abs(y)) / a.size,  # ∂C/∂a = 2(a − y)/NK
            keras="MeanSquaredError",
        ),
        Loss(
            "bce",
            "(1/NK) Σ −[y log a + (1 − y) log(1 − a)]",
            _bce,
            terms=lambda a, y: (np.abs(a) + np.abs(y)) / a.size,  # δ_L = (a − y)/NK
            output="sigmoid",
            targets=(0.0, 1.0),
            keras="BinaryCrossentropy",
        ),
        Loss(
            "softmax_ce",
            "(1/N) Σ −Σ_k y log a",
            _softmax_ce,
            # δ_L = (a Σ_k y_k − y)/N
            terms=lambda a, y: (
                (np.abs(a) * np.abs(y).sum(axis=-1, keepdims=True) + np.abs(y)) / rows(a)
            ),
            output="softmax",
            targets=(0.0, 1.0),
            keras="CategoricalCrossentropy",
        ),
    )
}


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``; a name the table does not hold raises, naming the ones it does.

    Every dispatch on an operation's name goes through here, so a name that one implementation
    forgot is an error, never a fall-through to another operation.
    """
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"{what} must be one of {', '.join(table)}; got {name!r}") from None


def hidden_activations() -> tuple[str, ...]:
    """The activations a hidden layer may have."""
    return tuple(name for name, a in ACTIVATIONS.items() if not a.output_only)


def output_activations(loss: str) -> tuple[str, ...]:
    """The output activations ``loss`` may follow."""
    required = lookup(LOSSES, loss, "loss").output
    return tuple(name for name in ACTIVATIONS if required is None or name == required)
