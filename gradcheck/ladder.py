"""The dtype ladder: float32 code judged at float64's resolution.

A float32 gradient checked against float32 finite differences is held to what they resolve, a
relative error near 1e-3 for a layer's gradient, so a slip of 0.05% passes: a batch norm whose
backward takes another framework's ε, a loss's gradient 0.2% too large. Most code computes in
whatever dtype it is given, and then gradcheck runs it a second time on float64 copies of the
inputs and judges two things apart (`DERIVATIVE`, `PRECISION`):

=========== ============================================== ====================================
part        what is compared                               held to
=========== ============================================== ====================================
derivative  the float64 run against the float64 oracle     float64's tolerance
            (finite differences, the reference backend)
precision   the float32 run against the float64 run of     float32's rounding of the code's
            the same code, for the same cotangents         own arithmetic
=========== ============================================== ====================================

A float64 result does not prove float64 arithmetic: code may cast to float32 inside. `probe`
tells them apart. It scales an argument's values by 1 + 2⁻²⁸ and by 1 + 2⁻²⁷, changes float32
cannot represent (its half-ulp is at least 2⁻²⁵ of a value): float64 code moves its result in
proportion, twice as far for the second, while code that rounds the argument, or what it
computes from it, to float32 does not move at all or moves by whole float32 rounding steps,
whichever values happen to cross one. An argument that a change of 2⁻⁸ does not move either is
one the result does not depend on here, and says nothing. Code that casts, returns float32, or
raises on float64 copies is judged in its own dtype only, and the result says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: The public names, as the API reference shows them.
__all__ = [
    "BELOW_FLOAT32",
    "DERIVATIVE",
    "FLOAT64_RUN",
    "PRECISION",
    "backend_probe",
    "narrower_than_float64",
    "probe",
    "widened",
]

#: The two parts of a judgement on the ladder, as a `gradcheck.compare.Check` names them.
DERIVATIVE, PRECISION = "derivative", "precision"
#: The oracle of the precision part.
FLOAT64_RUN = "its float64 run"
#: The probe's moves: below float32's resolution, and one any dependence shows.
BELOW_FLOAT32, VISIBLE = 2.0**-28, 2.0**-8
#: How far from proportional a float64 result's moves may be: their rounding, and the
#: function's curvature over the move, are far below it.
PROPORTIONAL = 1e-2


def narrower_than_float64(dtype: Any) -> bool:
    """Whether a float dtype rounds more coarsely than float64 (float32, float16)."""
    return np.finfo(dtype).eps > np.finfo(np.float64).eps


def widened(value: Any) -> Any:
    """A float64 copy of a float array (a float32 one is represented exactly); anything else,
    and the arrays inside lists, tuples and dicts, likewise."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float64)
    if isinstance(value, (list, tuple)):
        return type(value)(widened(v) for v in value)
    if isinstance(value, dict):
        return {key: widened(v) for key, v in value.items()}
    return value


def _arrays(value: Any) -> list[np.ndarray]:
    """Every array in a result: an array, or the arrays in a tuple, list or dict of them."""
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays(v)]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays(v)]
    return [np.asarray(value)] if value is not None else []


def _moved(value: Any, by: float) -> Any:
    """Every float value scaled by 1 + ``by``, in float64."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value * (1 + by)
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(v, by) for v in value)
    if isinstance(value, dict):
        return {key: _moved(v, by) for key, v in value.items()}
    return value


def probe(
    run: Callable[[list[Any]], Any], args: list[Any], movable: Sequence[int], labels: Sequence[str]
) -> str | None:
    """Whether ``run(args)``, given float64 ``args``, computes in float64: None when it does,
    otherwise why not, as a clause ("returns float32 given float64 inputs"). ``movable`` are the
    positions of the arguments to probe, ``labels`` their names (by position)."""
    try:
        base = _arrays(run(args))
        narrow = sorted({str(a.dtype) for a in base if a.dtype != np.float64})
        if narrow:
            return f"returns {', '.join(narrow)} given float64 inputs"
        if not all(np.all(np.isfinite(a)) for a in base):
            return "returns NaN or Inf given float64 inputs"
        for k in movable:

            def moves(by: float, k: int = k) -> np.ndarray:
                """How far the result moves when argument k is scaled by 1 + by."""
                again = _arrays(run([_moved(a, by) if j == k else a for j, a in enumerate(args)]))
                # a move to Inf or NaN is not in proportion, and is not a warning
                with np.errstate(invalid="ignore", over="ignore"):
                    moved = [np.ravel(a - b) for a, b in zip(again, base, strict=True)]
                return np.concatenate(moved or [np.zeros(0)])

            once, twice = moves(BELOW_FLOAT32), moves(2 * BELOW_FLOAT32)
            largest = float(np.max(np.abs(twice), initial=0.0))
            if largest == 0 and not np.any(moves(VISIBLE)):
                continue  # the result does not depend on it here
            with np.errstate(invalid="ignore", over="ignore"):
                off = float(np.max(np.abs(twice - 2 * once), initial=0.0))
            if not (largest > 0 and off <= PROPORTIONAL * largest):  # False for NaN
                return (
                    f"rounds {labels[k]}, or what it computes from it, to float32 or narrower "
                    "inside (a change below float32's resolution did not move its result in "
                    "proportion)"
                )
    except Exception as error:  # the user's code: anything it raises is the answer
        return f"raised on float64 copies ({type(error).__name__}: {error})"
    return None


def backend_probe(backend: Any, net64: Any, params64: Any, X64: Any, y64: Any) -> str | None:
    """Whether a ``verify`` backend computes in float64 given a float64 network (`probe`): its
    predictions and its loss and gradients must follow a move of the params below float32's
    resolution in proportion. None when they do, otherwise why not."""
    for method, run in [
        ("predict", lambda args: backend.predict(net64, args[0], X64)),
        ("loss_and_grads", lambda args: backend.loss_and_grads(net64, args[0], X64, y64)),
    ]:
        why = probe(run, [params64], [0], ["the params"])
        if why is not None:
            return f"its {method} {why}"
    return None
