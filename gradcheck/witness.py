"""The witness's own network: a float64 forward pass and loss from the registry's definitions.

The finite differences and the tolerance policy evaluate the network here, and this module
imports nothing from ``kernels/``: a bug in a hand-written kernel's forward or loss cannot move
the witness that judges it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, LOSSES, lookup


@dataclass(frozen=True)
class Forward:
    """Every layer's pre-activation ``zs[l]`` and activation ``activations[l + 1]``, with
    ``activations[0] = X``; all float64, ``(N, n_l)``."""

    zs: list[np.ndarray]
    activations: list[np.ndarray]

    @property
    def outputs(self) -> np.ndarray:
        return self.activations[-1]


def forward(net: Network, params: Params, X: np.ndarray) -> Forward:
    """The network's forward pass in float64, whatever ``net.dtype`` says."""
    a = np.asarray(X, np.float64)
    zs, activations = [], [a]
    for layer, name in zip(params, net.activations, strict=True):
        z = a @ np.asarray(layer["W"], np.float64)
        if "b" in layer:
            z = z + np.asarray(layer["b"], np.float64)
        a = lookup(ACTIVATIONS, name, "activation").reference(z)
        zs.append(z)
        activations.append(a)
    return Forward(zs, activations)


def loss(net: Network, outputs: Forward, y: np.ndarray) -> float:
    """C for the forward pass ``outputs`` and targets ``y`` (N, K), in float64."""
    spec = lookup(LOSSES, net.loss, "loss")
    return spec.reference(outputs.zs[-1], outputs.outputs, np.asarray(y, np.float64))


def kink_sides(net: Network, params: Params, X: np.ndarray) -> list[np.ndarray]:
    """For every pre-activation that feeds an activation with kinks, which side of each kink
    it is on: one boolean array per (layer, kink), z > kink."""
    sides: list[np.ndarray] = []
    for name, z in zip(net.activations, forward(net, params, X).zs, strict=True):
        sides.extend(z > kink for kink in ACTIVATIONS[name].kinks)
    return sides
