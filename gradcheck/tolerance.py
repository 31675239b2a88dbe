"""The one tolerance policy: how far two implementations may differ, by dtype and problem.

Two correct implementations of the same network differ only by rounding. Rounding in a sum of n
terms grows like √n units in the last place, a chain of L layers compounds it about L times, and
every training step adds a fresh, mostly independent error, so over T steps the differences grow
like √T while the dynamics are stable. The policy writes that estimate down with a safety factor:

    point quantities (predictions, loss, gradients):  rtol = SAFETY · ε · √n · L
    training run (loss curve, final params):          rtol = point rtol · √(T + 1)

where ε is the machine epsilon of the dtype under test (float32 results are compared with a float64
reference at float32's ε), n the longest sum in the problem (samples or widest layer) and L the
number of weight layers. Errors are relative: to the largest magnitude in the reference tensor for
arrays (a normwise error, so tiny entries produced by cancellation are not held to a precision
they never had), and to the value itself for losses. A tolerance is a statement about rounding:
a run whose dynamics amplify rounding (chaos, divergence) is reported as disagreeing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradcheck.network import Network

#: Headroom over the rounding estimate; differences a real bug makes are far larger.
SAFETY = 16.0


@dataclass(frozen=True)
class Tolerances:
    """Relative tolerances for one problem: ``point`` for predictions, loss and gradients,
    ``trajectory`` for a training run's loss curve and final params."""

    point: float
    trajectory: float


def tolerances(net: Network, n_samples: int, steps: int) -> Tolerances:
    """The tolerances for ``net`` on ``n_samples`` samples trained for ``steps`` steps."""
    eps = float(np.finfo(net.dtype).eps)
    longest_sum = max(n_samples, *net.layers)
    point = SAFETY * eps * math.sqrt(longest_sum) * net.depth
    return Tolerances(point=point, trajectory=point * math.sqrt(steps + 1))


def relative_errors(
    observed: np.ndarray, reference: np.ndarray, *, elementwise: bool = False
) -> np.ndarray:
    """``|observed − reference|`` divided by the reference's largest magnitude or, with
    ``elementwise``, by each reference value's own magnitude; non-finite observations count as
    an infinite error. Both arrays must have the same shape."""
    observed = np.asarray(observed, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    magnitude = np.abs(reference)
    scale = magnitude if elementwise or magnitude.size == 0 else magnitude.max()
    scale = np.maximum(scale, np.finfo(np.float64).tiny)  # 0/0 is a mismatch, not NaN
    with np.errstate(invalid="ignore", over="ignore"):
        errors = np.abs(observed - reference) / scale
    return np.where(np.isfinite(errors), errors, np.inf)


def relative_error(
    observed: np.ndarray, reference: np.ndarray, *, elementwise: bool = False
) -> tuple[float, tuple[int, ...]]:
    """The worst of :func:`relative_errors` and where it occurs.

    Returns:
        ``(error, index)``: the largest relative error and its index in the arrays.
    """
    errors = relative_errors(observed, reference, elementwise=elementwise)
    if errors.size == 0:
        return 0.0, ()
    flat = int(np.argmax(errors))
    index = tuple(int(i) for i in np.unravel_index(flat, errors.shape))
    return float(errors.flat[flat]), index
