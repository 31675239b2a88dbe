"""verify: run every backend from the same params, compare each with the reference, and report.

The steps, each in its own module: the call is validated into a `request.Request`; the
reference runs in float64 and reproduces its own training run (`reproduction`), which sets the
tolerances and the horizon; every other backend runs in the net's dtype; the finite-difference
witness (`finite_diff.NetworkWitness`) takes its own measurements; every implementation is
compared with the reference (`compare`) and the vote (`vote`) names who is wrong; each one that
disagrees is located and explained (`diagnosis`). A float32 backend is thus compared with what
the network truly computes, at float32's tolerance, rather than with another float32
approximation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradcheck import explain, reproduction
from gradcheck.backends import Backend
from gradcheck.compare import Outputs
from gradcheck.diagnosis import diagnose
from gradcheck.finite_diff import ELEMENTWISE_MAX, FINITE_DIFFERENCES, MODES, NetworkWitness
from gradcheck.network import Network, Params
from gradcheck.optimizers import Optimizer
from gradcheck.report import Report
from gradcheck.request import Request
from gradcheck.stages import Stages
from gradcheck.terminal import Progress
from gradcheck.tolerance import (
    Magnitudes,
    drift,
    gradient_magnitudes,
    loss_magnitude,
    prediction_magnitudes,
)
from gradcheck.vote import Jury

#: The public names, as the API reference shows them.
__all__ = ["ELEMENTWISE_MAX_PARAMS", "FD_MODES", "verify"]

#: Networks with at most this many parameters get a finite difference for every one.
ELEMENTWISE_MAX_PARAMS = ELEMENTWISE_MAX
#: The finite-difference modes ``verify`` accepts, and None for no oracle.
FD_MODES = MODES


def verify(
    net: Network,
    X: Any,
    y: Any,
    params: Params | None = None,
    backends: Sequence[str | Backend] | None = None,
    steps: int = 2000,
    lr: float | None = None,
    reference: str | Backend | None = None,
    timing: bool = False,
    finite_differences: str | None = "auto",
    optimizer: Optimizer | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    repeats: int = 1,
) -> Report:
    """Run every backend from the same params and compare each with the reference.

    Args:
        net: the network.
        X: inputs of shape ``(N, layers[0])``; integers are cast to the net's dtype.
        y: targets of shape ``(N, layers[-1])``.
        params: starting params (default ``net.init()``); never modified.
        backends: names and/or objects with the backend interface (default: every available
            built-in backend).
        steps: the training run's steps (default: the notebook's 2000).
        lr: its learning rate (default: the notebook's 1, for plain gradient descent).
        reference: the backend the others are compared with, run in float64 (default ``jax``
            when available, else the first of ``backends``).
        timing: also train each backend a second time, warm, so the report's ``timings``
            separate the training time from the first run's compile (or cache-load) time.
        finite_differences: add the finite-difference oracle as a row and a witness for the
            verdict: ``"elementwise"``, ``"directional"``, ``"auto"`` (element-wise up to
            ``ELEMENTWISE_MAX_PARAMS`` parameters estimated to take at most
            `finite_diff.ELEMENTWISE_SECONDS`; the report's ``witness`` says which and why) or
            None.
        optimizer: train with this `gradcheck.optimizers` optimizer instead of plain gradient
            descent at ``lr`` (give one or the other).
        batch_size: train on mini-batches of this many samples, drawn once by
            `gradcheck.optimizers.batch_schedule` and handed to every backend (default: the
            full batch).
        seed: the seed the mini-batches are drawn from.
        progress: called as ``progress(done, total, label)`` while the backends run, the
            finite differences are taken and the verdict is reached (`gradcheck.terminal`
            draws it as a progress bar).
        repeats: with 2 or more, every implementation runs that many times from the same
            inputs, and the report's ``nondeterminism`` holds each one's largest relative
            run-to-run difference (0.0 for a deterministic one); the first run is compared.

    Returns:
        A `Report`; ``report.ok`` says whether every backend agrees.
    """
    request = Request.of(
        net=net, X=X, y=y, params=params, backends=backends, steps=steps, lr=lr,
        reference=reference, finite_differences=finite_differences, optimizer=optimizer,
        batch_size=batch_size, seed=seed, progress=progress, repeats=repeats, timing=timing,
    )  # fmt: skip
    ref, others = request.reference, request.others
    stages = Stages(progress, 2 + len(others) + (finite_differences is not None) + 1)

    # The reference's own run, then how far the training run amplifies rounding: the tolerance
    # of the run and the horizon beyond which the reference no longer reproduces it.
    stages.begin(f"{ref.backend.name} (the reference)")
    outputs = {ref.name: _run(request, ref.name, ref.backend)}
    stages.begin("the horizon")
    limits = reproduction.limits(request, outputs[ref.name])

    for backend in others:
        stages.begin(backend.name)
        outputs[backend.name] = _run(request, backend.name, backend)
    run_to_run = {}
    if repeats > 1:  # every implementation again, from the same inputs
        stages.then("the repeats")
        implementations = {ref.name: ref.backend, **{b.name: b for b in others}}
        run_to_run = {
            name: _run_to_run(request, name, backend, outputs[name])
            for name, backend in implementations.items()
        }
    witness = None
    if finite_differences is not None:
        within = stages.begin(f"finite differences ({finite_differences})")
        p64 = request.inputs64
        witness = NetworkWitness.of(
            p64.net, p64.params, request.inputs.X, request.inputs.y, finite_differences, within
        )

    # Compare every implementation with the reference, and vote on who is wrong.
    stages.begin("the verdict")
    judged = {b.name for b in others}  # held to the net's dtype's tolerance; the rest to float64's
    jury = Jury(
        ref.name,
        outputs,
        witness,
        lambda name: limits.tolerance if name in judged else limits.tolerance64,
        # Predictions and gradients are sums; their rounding is relative to what they sum, and
        # a loss's to what it inherits from the outputs.
        Magnitudes(
            prediction_magnitudes(*request.inputs64[:3]),
            gradient_magnitudes(*request.inputs64),
            loss_magnitude(*request.inputs64),
        ),
        limits.horizon,
    )
    checks = [c for name in jury.members if name != ref.name for c in jury.checks(name, ref.name)]
    verdicts = jury.verdicts()

    # Locate and explain each implementation that disagrees.
    first_differences: list[explain.FirstDifference] = []
    explanations: list[explain.Explanation] = []
    failures = [c for c in checks if not c.ok]
    if failures:
        stages.then("the explanations")
        first_differences, explanations = diagnose(failures, request, limits, outputs)
    stages.end()
    timings = {b.name: outputs[b.name].timing for b in request.backends}
    if witness is not None and witness.choice.estimate is not None:
        timings[FINITE_DIFFERENCES] = {"elementwise_estimate": witness.choice.estimate}
    return Report(
        net=request.net,
        n_samples=request.inputs.X.shape[0],
        steps=request.training.steps,
        lr=float(request.training.optimizer.lr),
        reference=ref.label,
        backends=[b.name for b in request.backends],
        optimizer=request.training.optimizer,
        batch_size=request.training.batch_size,
        seed=request.training.seed,
        sensitivity=limits.sensitivity,
        horizon=limits.horizon,
        witness=None if witness is None else witness.describe(),
        checks=checks,
        verdicts=verdicts,
        timings=timings,
        stages=stages.seconds,
        first_differences=first_differences,
        explanations=explanations,
        reference_losses=outputs[ref.name].losses,
        losses={name: got.losses for name, got in outputs.items() if name != ref.name},
        run_to_run=run_to_run,
    )


def _run(request: Request, name: str, backend: Backend, timing: bool | None = None) -> Outputs:
    """Everything ``backend`` computes for the request as the implementation ``name``, on the
    inputs that one runs on (`Request.inputs_of`), timed by stage: the framework's import, the
    first gradient, the first training run and, with ``timing``, the training run again warm."""
    inputs, training = request.inputs_of(name), request.training
    timing = request.timing if timing is None else timing
    start = time.perf_counter()
    getattr(backend, "kernels", None)  # a built-in backend imports its framework here
    imported = time.perf_counter() - start
    start = time.perf_counter()
    loss, grads = backend.loss_and_grads(*inputs)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    trajectory = training.run(backend, *inputs)
    first_train = time.perf_counter() - start
    seconds = {"import": imported, "first_call": first_call, "first_train": first_train}
    if timing:
        # The first run paid for compiling (or loading) the training loop; time it again warm.
        start = time.perf_counter()
        training.run(backend, *inputs)
        seconds["train"] = time.perf_counter() - start
        seconds["compile"] = max(first_train - seconds["train"], 0.0)
    return Outputs(
        predictions=np.asarray(backend.predict(*inputs[:3])),
        loss=loss,
        grads=grads,
        losses=np.asarray(trajectory.losses),
        params=trajectory.params,
        timing=seconds,
    )


def _run_to_run(request: Request, name: str, backend: Backend, first: Outputs) -> dict[str, float]:
    """The largest relative difference of each quantity between ``first`` and
    ``request.repeats - 1`` more runs of the implementation ``name`` from the same inputs."""
    differences: dict[str, float] = {}
    for _ in range(request.repeats - 1):
        again = _run(request, name, backend, timing=False)
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
