"""The reference: the network written once in jax.numpy, differentiated by ``jax.value_and_grad``.

Nothing here is derived by hand — the loss is written as its definition and JAX's autodiff supplies
every gradient, so it is independent of the hand-written kernels it checks. Training runs all
steps inside one jit-compiled ``lax.scan``.

float64 needs JAX's x64 mode. It is switched on only inside these functions, with the
``jax.enable_x64`` context manager, so the user's own JAX code keeps whatever setting it had.
Every array here carries an explicit dtype, so a float32 network still computes in float32.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradcheck.backends import Trace, Trajectory
from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, lookup

name = "jax"

#: Each activation as JAX spells it in the registry (``jax.nn.relu`` has derivative 0 at 0, as
#: the spec asks; ``jax.nn.softmax`` normalises the last axis, the outputs of each row).
_ACTIVATE: dict[str, Callable[[jax.Array], jax.Array]] = {
    name: operator.attrgetter(spec.jax)(jax) for name, spec in ACTIVATIONS.items()
}

#: Each loss as its definition, from the logits z, the outputs a and the targets y, all (N, K);
#: bce and softmax_ce through the logits, in forms that stay finite for any z.
_LOSS: dict[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = {
    "half_sse": lambda z, a, y: 0.5 * jnp.sum((a - y) ** 2),
    "mse": lambda z, a, y: jnp.mean((a - y) ** 2),
    "bce": lambda z, a, y: jnp.mean(jax.nn.softplus(z) - y * z),
    "softmax_ce": lambda z, a, y: -jnp.sum(y * jax.nn.log_softmax(z, axis=1)) / y.shape[0],
}


def _logits(net: Network, params: Any, X: jax.Array) -> jax.Array:
    """z_L, shape ``(N, layers[-1])``; the output activation is applied by the caller."""
    a = X
    for index, (layer, activation) in enumerate(zip(params, net.activations, strict=True)):
        z = a @ layer["W"] + layer["b"] if net.bias else a @ layer["W"]
        if index == net.depth - 1:
            return z
        a = lookup(_ACTIVATE, activation, "activation")(z)
    raise AssertionError("a network has at least one weight layer")


def _predict(net: Network, params: Any, X: jax.Array) -> jax.Array:
    return lookup(_ACTIVATE, net.activations[-1], "activation")(_logits(net, params, X))


def _loss(params: Any, X: jax.Array, y: jax.Array, net: Network) -> jax.Array:
    """The loss exactly as the spec defines it."""
    z = _logits(net, params, X)
    a = lookup(_ACTIVATE, net.activations[-1], "activation")(z)  # unused ones are traced away
    return lookup(_LOSS, net.loss, "loss")(z, a, y)


def _traced_loss(
    params: Any, offsets: list[jax.Array], X: jax.Array, y: jax.Array, net: Network
) -> tuple[jax.Array, tuple[list[jax.Array], list[jax.Array]]]:
    """The loss with a zero ``offsets[l]`` added to each z_l, so that its gradient with respect
    to the offsets is δ_l = ∂C/∂z_l; z and a of every layer come back as auxiliary outputs."""
    zs, activations, a = [], [], X
    for layer, activation, offset in zip(params, net.activations, offsets, strict=True):
        z = (a @ layer["W"] + layer["b"] if net.bias else a @ layer["W"]) + offset
        a = lookup(_ACTIVATE, activation, "activation")(z)
        zs.append(z)
        activations.append(a)
    return lookup(_LOSS, net.loss, "loss")(zs[-1], a, y), (zs, activations)


_jit_predict = jax.jit(_predict, static_argnums=0)
_jit_trace = jax.jit(
    jax.value_and_grad(_traced_loss, argnums=(0, 1), has_aux=True), static_argnames="net"
)
_jit_value_and_grad = jax.jit(jax.value_and_grad(_loss), static_argnames="net")


@partial(jax.jit, static_argnames=("net", "steps"))
def _jit_train(
    net: Network, params: Any, X: jax.Array, y: jax.Array, lr: jax.Array, steps: int
) -> tuple[Any, jax.Array]:
    def step(params: Any, _: None) -> tuple[Any, jax.Array]:
        loss, grads = jax.value_and_grad(_loss)(params, X, y, net)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    return jax.lax.scan(step, params, length=steps)


def _to_numpy(tree: Any) -> Any:
    return jax.tree.map(np.array, tree)


def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    with jax.enable_x64(True):
        return np.array(_jit_predict(net, params, X))


def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    with jax.enable_x64(True):
        loss, grads = _jit_value_and_grad(params, X, y, net=net)
        return float(loss), _to_numpy(grads)


def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    with jax.enable_x64(True):
        offsets = [jnp.zeros((X.shape[0], width), net.dtype) for width in net.layers[1:]]
        (loss, (zs, activations)), (grads, deltas) = _jit_trace(params, offsets, X, y, net=net)
        return Trace(
            _to_numpy(zs), _to_numpy(activations), float(loss), _to_numpy(deltas), _to_numpy(grads)
        )


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    with jax.enable_x64(True):
        lr_array = jnp.asarray(lr, dtype=net.dtype)
        final, losses = _jit_train(net, params, X, y, lr_array, steps=steps)
        return Trajectory(_to_numpy(final), np.array(losses))
