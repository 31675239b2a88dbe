"""A backend's run for verify: each of its calls, timed by stage, and each result checked for
its shape and type before anything is compared with it. A call that raises or returns something
malformed is a `BackendFailure`, naming the backend, the call and what went wrong."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from gradcheck.backends import Backend, Trajectory
from gradcheck.compare import Check, Outputs, shaped_like
from gradcheck.network import Params
from gradcheck.request import Request
from gradcheck.tolerance import drift

#: The public names, as the API reference shows them.
__all__ = ["STAGE_QUANTITIES", "BackendFailure", "run", "run_to_run"]


#: The quantity a backend's failed call is reported under.
STAGE_QUANTITIES = {"predict": "predictions", "loss_and_grads": "gradient", "train": "train losses"}


class BackendFailure(Exception):
    """A backend's call that raised, or returned something of the wrong shape or type:
    ``check`` is its failed check, ``error`` the exception."""

    def __init__(self, name: str, stage: str, error: Exception, malformed: bool) -> None:
        raised = f"{name}'s {stage} raised {type(error).__name__}: {error}"
        detail = str(error) if malformed else raised
        super().__init__(detail)
        self.error = error
        self.check = Check(name, STAGE_QUANTITIES[stage], math.inf, 0.0, detail=detail)


def _called(name: str, stage: str, call: Callable[[], Any], check: Callable[[Any], Any]) -> Any:
    """A backend's ``call()``, its result put through ``check``; a `BackendFailure` naming the
    backend and the stage when either raises."""
    try:
        result = call()
    except Exception as error:  # the backend's code: whatever it raises is its failure
        raise BackendFailure(name, stage, error, malformed=False) from error
    try:
        return check(result)
    except (TypeError, ValueError) as error:
        raise BackendFailure(name, stage, error, malformed=True) from error


def run(request: Request, name: str, backend: Backend, timing: bool | None = None) -> Outputs:
    """Everything ``backend`` computes for the request as the implementation ``name``, on the
    inputs that one runs on (`Request.inputs_of`), timed by stage: the framework's import, the
    first gradient, the first training run and, with ``timing``, the training run again warm.
    Each result is checked for its shape and type (`compare.shaped_like`) before it is
    compared; a `BackendFailure` says which call went wrong and how."""
    inputs, training = request.inputs_of(name), request.training
    timing = request.timing if timing is None else timing
    params = inputs.params
    start = time.perf_counter()
    getattr(backend, "kernels", None)  # a built-in backend imports its framework here
    imported = time.perf_counter() - start
    start = time.perf_counter()
    loss, grads = _called(
        name, "loss_and_grads", partial(backend.loss_and_grads, *inputs),
        partial(_loss_and_gradient, name, inputs.net.trainable(params)),
    )  # fmt: skip
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    trajectory = _called(
        name, "train", partial(training.run, backend, *inputs),
        partial(_trajectory, name, params, training.steps),
    )  # fmt: skip
    first_train = time.perf_counter() - start
    seconds = {"import": imported, "first_call": first_call, "first_train": first_train}
    if timing:
        # The first run paid for compiling (or loading) the training loop; time it again warm.
        start = time.perf_counter()
        training.run(backend, *inputs)
        seconds["train"] = time.perf_counter() - start
        seconds["compile"] = max(first_train - seconds["train"], 0.0)
    predictions = _called(
        name, "predict", partial(backend.predict, *inputs[:3]),
        partial(shaped_like, name, "predictions", like=inputs.y),
    )  # fmt: skip
    return Outputs(
        predictions=predictions,
        loss=loss,
        grads=grads,
        losses=trajectory.losses,
        params=trajectory.params,
        timing=seconds,
    )


def _loss_and_gradient(name: str, params: Params, got: Any) -> tuple[float, Params]:
    """loss_and_grads's result checked: a pair of a number and params-shaped gradients."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise TypeError(
            f"{name}'s loss_and_grads must return a pair (loss, grads); got {got!r:.60}"
        )
    return shaped_like(name, "loss", got[0], 0.0), shaped_like(name, "gradient", got[1], params)


def _trajectory(name: str, params: Params, steps: int, run: Any) -> Trajectory:
    """train's result checked: a loss per step, and params-shaped trained params."""
    losses = getattr(run, "losses", None)
    trained = getattr(run, "params", None)
    return Trajectory(
        shaped_like(name, "trained params", trained, params),
        shaped_like(name, "training run's losses", losses, np.zeros(steps)),
    )


def run_to_run(request: Request, name: str, backend: Backend, first: Outputs) -> dict[str, float]:
    """The largest relative difference of each quantity between ``first`` and
    ``request.repeats - 1`` more runs of the implementation ``name`` from the same inputs."""
    differences: dict[str, float] = {}
    for _ in range(request.repeats - 1):
        again = run(request, name, backend, timing=False)
        pairs: dict[str, list[tuple[Any, Any]]] = {
            "predictions": [(again.predictions, first.predictions)],
            "loss": [(np.float64(again.loss), np.float64(first.loss))],
            "gradient": _pairs(again.grads, first.grads),
            "train losses": [(again.losses, first.losses)],
            "train params": _pairs(again.params, first.params),
        }
        for quantity, arrays in pairs.items():
            worst = max((drift(a, b) for a, b in arrays), default=0.0)
            differences[quantity] = max(differences.get(quantity, 0.0), worst)
    return differences


def _pairs(again: Params, first: Params) -> list[tuple[Any, np.ndarray]]:
    return [(a.get(key), f[key]) for a, f in zip(again, first, strict=True) for key in f]
