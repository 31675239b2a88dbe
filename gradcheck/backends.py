"""The backend interface and the registry of built-in backends.

A backend is any object with a ``name`` and three methods — ``predict``, ``loss_and_grads`` and
``train`` — that take a `gradcheck.Network`, params and NumPy arrays, and return NumPy
arrays. A fourth, ``trace``, is optional: it returns a `Trace` of the intermediates, which
``verify`` walks to find the first tensor where a disagreeing backend parts from the reference.
The built-in ones live in ``gradcheck.kernels`` (``kernels/`` in the repository), one module per
implementation; their framework is imported only when the backend is first asked for,
so ``import gradcheck`` stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gradcheck.layers import Dropout
from gradcheck.network import (
    Network,
    Params,
    check_batches,
    check_data,
    check_params,
    check_steps_lr,
    check_X,
)
from gradcheck.optimizers import Optimizer, as_optimizer, batch_schedule, plain_descent


@dataclass(frozen=True)
class Trajectory:
    """A training run: the final ``params``, and ``losses`` of shape ``(steps,)`` where
    ``losses[t]`` is the loss before step t."""

    params: Params
    losses: np.ndarray


@dataclass(frozen=True)
class TimeSteps:
    """One recurrent layer's pass through time in a `Trace`, every array (N, T, ·): each step's
    pre-activation ``z`` (N, T, G), G = units for a SimpleRNN and 4·units for an LSTM, whose
    blocks i, f, c, o lie side by side; an LSTM's ``gates`` σ(z_i), σ(z_f), tanh(z_c), σ(z_o)
    likewise (None for a SimpleRNN); each state ``h`` (N, T, units), h_1 … h_T; and each
    step's ``delta`` δ_t = ∂C/∂z_t (N, T, G). A backend that keeps no copy of z puts None."""

    z: np.ndarray | None
    gates: np.ndarray | None
    h: np.ndarray
    delta: np.ndarray


@dataclass(frozen=True)
class Trace:
    """The intermediates of one gradient evaluation, for layers l = 1..L (list index l − 1):
    pre-activations ``z`` and activations ``a`` of shape ``(N, n_l)``, the ``loss``, the deltas
    ``delta`` (δ_l = ∂C/∂z_l, shape ``(N, n_l)``) and the ``grads``, structured like params'
    trainable entries; the Dense and Conv2D layers are the weight layers l, and on a sequence
    their z, a and δ are (N, T, n_l). ``steps``: one `TimeSteps` per SimpleRNN or LSTM layer,
    in order, which ``verify`` walks to name the time step (and an LSTM's gate block) where a
    backend parts from the reference; a backend may leave it empty.
    A backend that keeps no copy of a hidden layer's z puts None in its place."""

    z: list[np.ndarray | None]
    a: list[np.ndarray]
    loss: float
    delta: list[np.ndarray]
    grads: Params
    steps: list[TimeSteps] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """What ``verify`` needs from an implementation of the network."""

    name: str

    def predict(self, net: Network, params: Params, X: Any) -> np.ndarray:
        """Outputs of shape ``(N, layers[-1])``, in inference mode (a BatchNorm's moving
        statistics, no dropout)."""
        ...

    def loss_and_grads(self, net: Network, params: Params, X: Any, y: Any) -> tuple[float, Params]:
        """The loss and its gradient, in training mode, structured exactly like ``params``'
        trainable entries (`Network.trainable`: a BatchNorm's moving statistics are state and
        have none); a network with Dropout applies `gradcheck.masks.dropout_masks` of seed 0
        and step 0."""
        ...

    def train(
        self, net: Network, params: Params, X: Any, y: Any, steps: int, lr: float
    ) -> Trajectory:
        """``steps`` full-batch gradient-descent steps from ``params``, which stay unchanged;
        step t of a network with Dropout applies ``dropout_masks(net, len(X), 0, t)``, and each
        step moves a BatchNorm's moving statistics (the trajectory's params hold them).
        A backend without it is checked by ``verify(..., steps=0)``: predictions, loss and
        gradients, and no training run.

        A backend that also trains with other optimizers and on mini-batches takes the keywords
        of `KernelBackend.train` — ``optimizer``, ``batch_size`` and ``seed`` — and ``verify``
        passes them only when the run asks for more than plain gradient descent."""
        ...


@dataclass(frozen=True)
class Training:
    """A training run to compare: ``steps`` steps of ``optimizer`` on batches of ``batch_size``
    samples drawn from ``seed`` (None: the full batch)."""

    steps: int
    optimizer: Optimizer
    batch_size: int | None = None
    seed: int = 0

    @property
    def plain(self) -> bool:
        """Plain full-batch gradient descent, the notebook's training."""
        return plain_descent(self.optimizer, self.batch_size)

    def run(self, backend: Backend, net: Network, params: Params, X: Any, y: Any) -> Trajectory:
        """``backend``'s run. Plain gradient descent is asked for as ``train(..., steps, lr)``,
        the form every backend has; anything else — or a network with Dropout trained from
        another seed than 0, whose masks the seed draws — with the ``optimizer``,
        ``batch_size`` and ``seed`` keywords of `KernelBackend.train`. No steps train nothing,
        and need no ``train``."""
        if self.steps == 0:
            return Trajectory(params, np.zeros(0))
        if self.plain and (self.seed == 0 or not _drops(net)):  # the seed draws nothing else
            return backend.train(net, params, X, y, self.steps, self.optimizer.lr)
        return backend.train(  # type: ignore[call-arg]
            net, params, X, y, self.steps,
            optimizer=self.optimizer, batch_size=self.batch_size, seed=self.seed,
        )  # fmt: skip


def _drops(net: Network) -> bool:
    """Whether the network has a Dropout layer, whose masks a run's seed draws."""
    return any(isinstance(layer, Dropout) for layer in net.stack)


# name -> (kernels module, the packages it needs)
BUILTIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "numpy": ("gradcheck.kernels.numpy_backprop", ()),
    "numba": ("gradcheck.kernels.numba_backend", ("numba",)),
    "jax": ("gradcheck.kernels.jax_autodiff", ("jax",)),
    "keras": ("gradcheck.kernels.keras_model", ("keras", "tensorflow")),
}


class KernelBackend:
    """A built-in backend: a ``kernels`` module behind the input checks every backend shares.

    The module is imported on first use. Inputs are validated and cast to the net's dtype here,
    before any work, so a kernel only ever sees well-formed arrays.
    """

    def __init__(self, name: str, module_name: str) -> None:
        self.name = name
        self._module_name = module_name
        self._module: ModuleType | None = None

    @property
    def kernels(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self._module_name)
        return self._module

    def predict(self, net: Network, params: Params, X: Any) -> np.ndarray:
        X = check_X(net, X)
        return self.kernels.predict(net, check_params(net, params), X)

    def loss_and_grads(self, net: Network, params: Params, X: Any, y: Any) -> tuple[float, Params]:
        X, y = check_data(net, X, y)
        return self.kernels.loss_and_grads(net, check_params(net, params), X, y)

    def train(
        self,
        net: Network,
        params: Params,
        X: Any,
        y: Any,
        steps: int,
        lr: float | None = None,
        optimizer: Optimizer | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> Trajectory:
        """``steps`` steps of ``optimizer`` (or, given ``lr`` alone, plain gradient descent) on
        batches of ``batch_size`` samples drawn from ``seed`` (None: the full batch), which
        also draws the Dropout layers' masks (`gradcheck.masks`)."""
        X, y = check_data(net, X, y)
        params = check_params(net, params)
        optimizer = as_optimizer(optimizer, lr)
        steps, _ = check_steps_lr(steps, optimizer.lr)
        schedule = batch_schedule(len(X), batch_size, steps, seed)
        check_batches(net, len(X), batch_size)
        if plain_descent(optimizer, batch_size) and (seed == 0 or not _drops(net)):
            return self.kernels.train(net, params, X, y, steps, optimizer.lr)
        train_with = getattr(self.kernels, "train_with", None)
        if train_with is None:
            raise NotImplementedError(
                f"the {self.name} backend trains with plain full-batch gradient descent only; "
                f"got {optimizer.describe()} with batch_size={batch_size!r}"
            )
        return train_with(net, params, X, y, optimizer, schedule, seed=seed)

    def trace(self, net: Network, params: Params, X: Any, y: Any) -> Trace:
        X, y = check_data(net, X, y)
        return self.kernels.trace(net, check_params(net, params), X, y)

    def __repr__(self) -> str:
        return f"<gradcheck backend {self.name!r} ({self._module_name})>"


_instances: dict[str, KernelBackend] = {}


def available_backends() -> list[str]:
    """The built-in backends whose frameworks are installed here, without importing them."""
    return [
        name
        for name, (_, packages) in BUILTIN.items()
        if all(importlib.util.find_spec(package) is not None for package in packages)
    ]


def get_backend(name: str) -> Backend:
    """The built-in backend called ``name`` (see `available_backends`)."""
    if name in _instances:
        return _instances[name]
    if name not in BUILTIN:
        raise ValueError(f"backend must be one of {', '.join(BUILTIN)}; got {name!r}")
    if name not in available_backends():
        needs = ", ".join(BUILTIN[name][1])
        raise ValueError(f"backend {name!r} needs {needs}, which is not installed")
    _instances[name] = KernelBackend(name, BUILTIN[name][0])
    return _instances[name]


def is_builtin(backend: Any) -> bool:
    """Whether ``backend`` is one of the built-in backends (`get_backend`'s)."""
    return _instances.get(str(getattr(backend, "name", ""))) is backend


def release_compiled() -> None:
    """Release what the built-in backends have compiled and keep for networks seen before: JAX's
    executables and Keras's models (each network is a static argument to JAX's jit and a key of
    Keras's cache). A process that checks thousands of networks calls this now and then; the
    next call of a network compiles it again. Backends not yet used are left alone (each
    kernels module that keeps compiled code has a ``release()``)."""
    for module_name, _ in BUILTIN.values():
        release = getattr(sys.modules.get(module_name), "release", None)
        if callable(release):
            release()


def resolve(backend: str | Backend) -> Backend:
    """A backend from a registered name or an object with the backend interface."""
    if isinstance(backend, str):
        return get_backend(backend)
    needs = ("predict", "loss_and_grads")  # and train, for a training run
    if not isinstance(getattr(backend, "name", None), str) or not all(
        callable(getattr(backend, method, None)) for method in needs
    ):
        raise TypeError(
            "backends must be names or objects with name, predict, loss_and_grads and (for a "
            f"training run) train; got {backend!r}"
        )
    return backend
