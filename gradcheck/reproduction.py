"""The reference's reproductions of its own training run, and the limits they set.

A run that amplifies rounding (a loss spike, a large learning rate, a kink) parts from itself
when its start moves by one rounding. The reference trains again from params and inputs moved by
one rounding in random directions, in float64 and, for a float32 net, in float32; how far those
runs part from its own sets the run's horizon (the steps over which it reproduces itself,
`tolerance.horizon`) and the tolerance of the steps compared there (`tolerance.conditioned`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck.compare import Outputs
from gradcheck.network import check_params
from gradcheck.request import Inputs, Request
from gradcheck.tolerance import (
    Horizon,
    Tolerances,
    conditioned,
    horizon,
    relative_errors,
    run_error,
    tolerances,
)

#: The public names, as the API reference shows them.
__all__ = ["SENSITIVITY_DRAWS", "Limits", "Reproduction", "limits", "reproduction"]

#: Runs of the reference from randomly moved params and inputs that measure how much a training
#: run amplifies rounding: how far a chaotic run moves depends on the direction, and the most of a
#: few draws is a steadier measure than one.
SENSITIVITY_DRAWS = 3


@dataclass(frozen=True)
class Reproduction:
    """How far the reference's run moves when its params and inputs move by one rounding:
    ``losses``, per step, the most any draw's loss has parted from the reference's so far
    (relative to it); ``whole``, the most any draw's whole run parted (`run_error`)."""

    losses: np.ndarray
    whole: float

    def worst(self, other: Reproduction) -> Reproduction:
        return Reproduction(np.maximum(self.losses, other.losses), max(self.whole, other.whole))

    def sensitivity(self, horizon: Horizon) -> float:
        """How far one rounding moves the compared part of the run: the whole run's for a
        whole horizon, else the losses' up to the horizon."""
        if horizon.whole:
            return self.whole
        return float(self.losses[horizon.steps - 1]) if horizon.steps else 0.0


def reproduction(request: Request, inputs: Inputs, want: Outputs, rounding: float) -> Reproduction:
    """How far the reference's float64 run ``want`` moves, measured as the checks measure it,
    when the reference trains on ``inputs`` (in their dtype) from params and inputs moved by
    ``rounding`` in random directions: the most of `SENSITIVITY_DRAWS` draws."""
    net, params, X, y = inputs
    rng = np.random.default_rng(0)
    losses, whole = np.zeros(len(want.losses)), 0.0
    for _ in range(SENSITIVITY_DRAWS):
        moved = [
            {key: value + rounding * np.abs(value).max() * rng.choice([-1.0, 1.0], value.shape)
             for key, value in layer.items()}
            for layer in params
        ]  # fmt: skip
        sign = rng.choice([-1.0, 1.0], X.shape)
        X_moved = X if net.takes_ids else X * (1 + rounding * sign)  # ids do not move
        run = request.training.run(
            request.reference.backend, net, check_params(net, moved), net.inputs(X_moved), y
        )
        step_errors = relative_errors(run.losses, want.losses, elementwise=True)
        losses = np.maximum(losses, np.maximum.accumulate(np.nan_to_num(step_errors, nan=np.inf)))
        whole = max(whole, run_error(run.losses, run.params, want.losses, want.params))
    return Reproduction(losses, whole)


@dataclass(frozen=True)
class Limits:
    """What the reference's reproductions of its own run set: the tolerances of the net's dtype
    and of float64, conditioned on how far one rounding moves the run (``sensitivity``), and
    the ``horizon`` of steps over which it reproduces itself."""

    tolerance: Tolerances
    tolerance64: Tolerances
    sensitivity: float
    horizon: Horizon

    def of(self, request: Request, name: str) -> Tolerances:
        """The tolerances the implementation ``name`` is held to: float64's for the runs in
        float64 (the reference's, and the backends' on the dtype ladder), else the net's
        dtype's."""
        return self.tolerance64 if name in request.in_float64 else self.tolerance


def limits(request: Request, want: Outputs) -> Limits:
    """The reference's run ``want`` reproduced from params and inputs moved by one rounding, in
    float64 and, for a float32 net, in float32: each correct run has its own rounding."""
    samples, steps = request.inputs.X.shape[0], request.training.steps
    tol = tolerances(request.net, samples, steps)
    tol64 = tolerances(request.inputs64.net, samples, steps)
    rounding = tol64.rounding
    repro64 = reproduction(request, request.inputs64, want, rounding)
    repro = repro64
    if request.net.dtype != "float64":
        rounding = float(np.finfo(request.net.dtype).eps)
        repro = repro64.worst(reproduction(request, request.inputs, want, rounding))
    reach = horizon(repro.losses, rounding, want.losses)
    sensitivity = repro.sensitivity(reach)
    return Limits(
        conditioned(tol, sensitivity),
        conditioned(tol64, repro64.sensitivity(reach)),
        sensitivity,
        reach,
    )
