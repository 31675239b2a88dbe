"""The optimizers every backend implements, as specifications: their hyper-parameters and the
conventions that tell frameworks' versions of "the same" optimizer apart.

For a parameter θ with gradient g at step t = 1, 2, … (state m, v, … starting at zero), learning
rate η and decoupled weight decay λ (θ ← θ − ηλθ before the update, as Keras and optax's AdamW
do):

    SGD        m ← μ m − η g;  θ ← θ + m                (momentum μ; μ = 0: θ ← θ − η g)
               nesterov:        θ ← θ + μ m − η g        (with m already updated)
    RMSprop    v ← ρ v + (1 − ρ) g²
               centered:        a ← ρ a + (1 − ρ) g;  v̄ = v − a²  (else v̄ = v)
               epsilon "inside" (Keras):  Δ = η g / √(v̄ + ε)
               epsilon "outside" (optax, PyTorch):  Δ = η g / (√v̄ + ε)
               momentum μ > 0:  b ← μ b + Δ;  θ ← θ − b   (else θ ← θ − Δ)
    Adam       m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²
               epsilon "keras":  α = η √(1 − β₂ᵗ) / (1 − β₁ᵗ);  θ ← θ − α m / (√v + ε)
                                amsgrad: the running maximum of v in place of v
               epsilon "paper" (Algorithm 1, optax):  θ ← θ − η m̂ / (√v̂ + ε),
                                m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)
                                amsgrad: the running maximum of v̂ in place of v̂

Keras's conventions are the defaults. Momentum written as a running sum of gradients
(b ← μ b + g; θ ← θ − η b) is Keras's velocity divided by −η, the same run for a constant η, so
it needs no option. Every hyper-parameter is used exactly, in the dtype of the parameters.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from gradcheck.arguments import is_count

#: The public names, as the API reference shows them.
__all__ = [
    "NAMES",
    "SGD",
    "Adam",
    "Optimizer",
    "RMSprop",
    "as_optimizer",
    "batch_schedule",
    "make",
]

#: The names the command line and the JSON use for each optimizer's configuration.
NAMES = ("sgd", "momentum", "nesterov", "rmsprop", "adam")


def _number(name: str, value: Any, low: float, high: float, *, closed_high: bool = False) -> float:
    """``value`` as a float in [low, high) (or [low, high]), else a ValueError naming it."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    number = float(value)
    inside = low <= number <= high if closed_high else low <= number < high
    if not inside:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{bracket}; got {value!r}")
    return number


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


def _positive(name: str, value: Any) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Optimizer:
    """What every optimizer has: a learning rate and decoupled weight decay."""

    lr: float
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        wd = _number("weight_decay", self.weight_decay, 0.0, math.inf)
        object.__setattr__(self, "weight_decay", wd)

    #: The optimizer's family, by which the kernels look up its update: sgd, rmsprop or adam.
    family = ""

    @property
    def name(self) -> str:
        """The family, and for SGD whether it has momentum: sgd, momentum or nesterov."""
        return self.family

    @property
    def plain(self) -> bool:
        """Plain gradient descent, θ ← θ − η g: SGD without momentum or weight decay."""
        return self == SGD(self.lr)

    def settings(self) -> dict[str, Any]:
        """Every hyper-parameter by name, JSON-ready, with the optimizer's ``name``."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def describe(self) -> str:
        """One line for the report's header, e.g. ``adam(lr=0.001, beta_1=0.9, …)``."""
        values = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in self.settings().items() if key != "name")  # fmt: skip
        return f"{self.name}({values})"


@dataclass(frozen=True)
class SGD(Optimizer):
    """Gradient descent, with Keras's momentum (a velocity of −η g) and Nesterov's variant."""

    momentum: float = 0.0
    nesterov: bool = False
    family = "sgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "momentum", _number("momentum", self.momentum, 0.0, 1.0))
        object.__setattr__(self, "nesterov", _flag("nesterov", self.nesterov))
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum in (0, 1); got momentum=0")

    @property
    def name(self) -> str:
        if self.momentum == 0:
            return "sgd"
        return "nesterov" if self.nesterov else "momentum"


@dataclass(frozen=True)
class RMSprop(Optimizer):
    """RMSprop with Keras's defaults; ``epsilon`` ``"inside"`` the square root (Keras) or
    ``"outside"`` it (optax, PyTorch)."""

    rho: float = 0.9
    epsilon: float = 1e-7
    momentum: float = 0.0
    centered: bool = False
    epsilon_placement: str = "inside"
    family = "rmsprop"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "rho", _number("rho", self.rho, 0.0, 1.0))
        object.__setattr__(self, "epsilon", _number("epsilon", self.epsilon, 0.0, math.inf))
        object.__setattr__(self, "momentum", _number("momentum", self.momentum, 0.0, 1.0))
        object.__setattr__(self, "centered", _flag("centered", self.centered))
        placement = _choice("epsilon_placement", self.epsilon_placement, ("inside", "outside"))
        object.__setattr__(self, "epsilon_placement", placement)


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam with Keras's defaults; ``epsilon_placement`` ``"keras"`` (ε added after the bias
    correction is folded into the step) or ``"paper"`` (ε added to √v̂, as Algorithm 1 of Kingma
    and Ba and optax do)."""

    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False
    epsilon_placement: str = "keras"
    family = "adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta_1", _number("beta_1", self.beta_1, 0.0, 1.0))
        object.__setattr__(self, "beta_2", _number("beta_2", self.beta_2, 0.0, 1.0))
        object.__setattr__(self, "epsilon", _number("epsilon", self.epsilon, 0.0, math.inf))
        object.__setattr__(self, "amsgrad", _flag("amsgrad", self.amsgrad))
        placement = _choice("epsilon_placement", self.epsilon_placement, ("keras", "paper"))
        object.__setattr__(self, "epsilon_placement", placement)


#: What each name in `NAMES` builds, with the settings the name implies.
_BY_NAME: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (RMSprop, {}),
    "adam": (Adam, {}),
}

#: The learning rate each name takes when none is given: Keras's default for RMSprop and Adam;
#: None for the SGDs, whose learning rate is the problem's.
DEFAULT_LR = {"sgd": None, "momentum": None, "nesterov": None, "rmsprop": 1e-3, "adam": 1e-3}


def accepts(name: str, setting: str) -> bool:
    """Whether the optimizer called ``name`` has the hyper-parameter ``setting``."""
    return setting in {f.name for f in fields(_named(name)[0])} - {"lr"}


def _named(name: str) -> tuple[type[Optimizer], dict[str, Any]]:
    if name not in _BY_NAME:
        raise ValueError(f"optimizer must be one of {', '.join(NAMES)}; got {name!r}")
    return _BY_NAME[name]


def make(name: str, lr: float, **settings: Any) -> Optimizer:
    """The optimizer called ``name`` in `NAMES` (as on the command line), with ``settings``
    over the ones its name implies (``momentum`` is SGD with momentum 0.9)."""
    cls, implied = _named(name)
    for key in settings:
        if not accepts(name, key):
            raise ValueError(f"{key} does not apply to the {name} optimizer")
    optimizer = cls(lr, **{**implied, **settings})
    if optimizer.name != name:  # e.g. momentum=0 turns "momentum" into plain sgd
        raise ValueError(f"the {name} optimizer needs a momentum in (0, 1); got {settings}")
    return optimizer


def as_optimizer(optimizer: Any, lr: Any) -> Optimizer:
    """The optimizer a training call asks for: ``optimizer`` itself, or plain SGD at ``lr``
    when only a learning rate is given (the notebook's training)."""
    if optimizer is None:
        if lr is None:
            raise ValueError("train needs lr or optimizer; got neither")
        return SGD(lr)
    if lr is not None:
        raise ValueError(f"give lr or optimizer, not both; got lr={lr!r} and {optimizer!r}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a gradcheck.optimizers SGD, RMSprop or Adam; got {optimizer!r}"
        )
    return optimizer


def plain_descent(optimizer: Optimizer, batch_size: int | None) -> bool:
    """Whether a run is plain full-batch gradient descent, the notebook's training: the form of
    ``train`` every backend has, and the run the √T tolerance estimate is written for."""
    return optimizer.plain and batch_size is None


#: The samples of one step: indices into X, or ``slice(None)`` for all of them in order.
Batch = np.ndarray | slice


def batch_schedule(n_samples: int, batch_size: int | None, steps: int, seed: int) -> list[Batch]:
    """The samples of each of ``steps`` steps, drawn once and handed to every backend.

    ``batch_size`` None is the full batch, in order, at every step (``slice(None)``, so that
    ``X[batch]`` is X itself). Otherwise each epoch is a fresh permutation from
    ``np.random.default_rng(seed)`` cut into batches of ``batch_size``, the last one smaller when
    the size does not divide the samples; the steps run through the epochs in order.
    """
    if batch_size is None:
        return [slice(None)] * steps
    if not is_count(batch_size, 1) or batch_size > n_samples:
        raise ValueError(
            f"batch_size must be None or an integer from 1 to the {n_samples} samples; "
            f"got {batch_size!r}"
        )
    if not is_count(seed, 0):
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    rng = np.random.default_rng(int(seed))
    batches: list[Batch] = []
    while len(batches) < steps:
        order = rng.permutation(n_samples)
        batches += [order[i : i + batch_size] for i in range(0, n_samples, int(batch_size))]
    return batches[:steps]


def padded(schedule: list[Batch], n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The schedule as arrays a compiled loop can take: ``(indices, sizes)``, the sample
    indices of step t in ``indices[t, :sizes[t]]`` (shape (steps, B), B the largest batch) and
    the rest of the row padded with sample 0."""
    every = np.arange(n_samples)
    rows = [every[batch] for batch in schedule]
    width = max((len(r) for r in rows), default=n_samples)
    indices = np.zeros((len(rows), width), np.int64)
    for step, r in enumerate(rows):
        indices[step, : len(r)] = r
    return indices, np.array([len(r) for r in rows], np.int64)
