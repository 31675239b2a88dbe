"""verify: run every backend from the same params, compare each with the reference, and report.

The steps, each in its own module: the call is validated into a `request.Request`; the
reference runs in float64 and reproduces its own training run (`reproduction`), which sets the
tolerances and the horizon; every other backend runs in the net's dtype; the finite-difference
witness (`finite_diff.NetworkWitness`) takes its own measurements; every implementation is
compared with the reference (`compare`) and the vote (`vote`) names who is wrong; each one that
disagrees is located and explained (`diagnosis`). A float32 backend is thus compared with what
the network truly computes, at float32's tolerance, rather than with another float32
approximation.

On the dtype ladder (`gradcheck.ladder`), a float32 network's backends that also compute in
float64 (every built-in one; a user's whose code passes the ladder's probe) run a second time in
float64: that run is held to the reference at float64's tolerance (the derivative), and the
float32 run to it at float32's (the precision), so a slip below float32's resolution is caught.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from gradcheck import explain, reproduction, running
from gradcheck.backends import Backend, is_builtin
from gradcheck.compare import Check
from gradcheck.diagnosis import diagnose
from gradcheck.finite_diff import ELEMENTWISE_MAX, FINITE_DIFFERENCES, MODES, NetworkWitness
from gradcheck.ladder import DERIVATIVE, PRECISION, backend_probe, narrower_than_float64
from gradcheck.network import Network, Params
from gradcheck.optimizers import Optimizer
from gradcheck.report import Report
from gradcheck.request import Request
from gradcheck.running import BackendFailure
from gradcheck.stages import Stages
from gradcheck.terminal import Progress
from gradcheck.tolerance import (
    Magnitudes,
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
    raise_backend_errors: bool = False,
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
        raise_backend_errors: a backend whose code raises, or returns something of the wrong
            shape or type, is reported as failed at that stage with what went wrong, and the
            others are still compared; with True its error is raised instead, for debugging.

    Returns:
        A `Report`; ``report.ok`` says whether every backend agrees.

    Raises:
        ValueError, TypeError: for a bad argument, before any work is done; for the
            reference's failure; with ``raise_backend_errors``, for a backend's.
    """
    request = Request.of(
        net=net, X=X, y=y, params=params, backends=backends, steps=steps, lr=lr,
        reference=reference, finite_differences=finite_differences, optimizer=optimizer,
        batch_size=batch_size, seed=seed, progress=progress, repeats=repeats, timing=timing,
    )  # fmt: skip
    runs, narrow_only = _float64_runs(request)
    request = dataclasses.replace(request, float64_runs=runs)
    ref, others = request.reference, request.others
    stages = Stages(progress, 2 + len(others) + len(runs) + (finite_differences is not None) + 1)

    # The reference's own run, then how far the training run amplifies rounding: the tolerance
    # of the run and the horizon beyond which the reference no longer reproduces it.
    stages.begin(f"{ref.backend.name} (the reference)")
    try:
        outputs = {ref.name: running.run(request, ref.name, ref.backend)}
    except BackendFailure as failure:  # nothing to compare with
        raise failure.error from None
    stages.begin("the horizon")
    limits = reproduction.limits(request, outputs[ref.name])

    failed: list[Check] = []  # one for each backend that raised or returned something malformed
    for backend in others:
        for name in [backend.name, *([runs[backend.name]] if backend.name in runs else [])]:
            stages.begin(name)
            try:
                outputs[name] = running.run(request, name, backend)
            except BackendFailure as failure:
                if raise_backend_errors:
                    raise failure.error from None
                failed.append(failure.check)
                break  # nothing of it to compare, in either dtype
    run_to_run = {}
    if repeats > 1:  # every implementation again, from the same inputs
        stages.then("the repeats")
        implementations = {
            ref.name: ref.backend,
            **{b.name: b for b in others if b.name in outputs},
        }
        run_to_run = {
            name: running.run_to_run(request, name, backend, outputs[name])
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
    jury = Jury(
        ref.name,
        outputs,
        witness,
        lambda name: limits.of(request, name),
        # Predictions and gradients are sums; their rounding is relative to what they sum, and
        # a loss's to what it inherits from the outputs.
        Magnitudes(
            prediction_magnitudes(*request.inputs64[:3]),
            gradient_magnitudes(*request.inputs64),
            loss_magnitude(*request.inputs64),
        ),
        limits.horizon,
        # on the dtype ladder a backend votes by its float64 run, its narrow run is judged
        # against that run alone
        voters=[name for name in outputs if request.own_float64_run(name) is None],
    )
    checks = [c for name in jury.members if name != ref.name for c in _judged(jury, request, name)]
    checks += failed
    verdicts = [*jury.verdicts(), *_imprecise(checks), *(check.detail for check in failed)]

    # Locate and explain each implementation that disagrees.
    first_differences: list[explain.FirstDifference] = []
    explanations: list[explain.Explanation] = []
    failures = [c for c in checks if not c.ok and c.backend in outputs]
    if failures:
        stages.then("the explanations")
        first_differences, explanations = diagnose(failures, request, limits, outputs)
    stages.end()
    timings = {b.name: outputs[b.name].timing for b in request.backends if b.name in outputs}
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
        float64_runs=runs,
        narrow_only=narrow_only,
    )


def _float64_runs(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    """On the dtype ladder, for a network narrower than float64: each backend that also runs
    in float64, with its float64 run's name, and each that cannot, with why not. The
    reference's backend has its float64 run already: the reference."""
    if not narrower_than_float64(request.net.dtype):
        return {}, {}
    runs, narrow_only = {}, {}
    for backend in request.others:
        if backend.name == request.reference.backend.name:
            continue
        why = None if is_builtin(backend) else backend_probe(backend, *request.inputs64)
        if why is None:
            runs[backend.name] = f"{backend.name} in float64"
        else:
            narrow_only[backend.name] = why
    return runs, narrow_only


def _imprecise(checks: list[Check]) -> list[str]:
    """A sentence for each narrow run that parts from its own float64 run on the dtype ladder
    while that run is right: its arithmetic, not its derivative, is in question. (A wrong
    derivative can take the two runs apart by itself: a step too large amplifies rounding.)"""
    wrong = {c.backend for c in checks if c.part == DERIVATIVE and not c.ok}
    failing = [c for c in checks if c.part == PRECISION and not c.ok and c.backend not in wrong]
    worst = {c.backend: c for c in sorted(failing, key=lambda c: c.error / c.tolerance)}
    return [
        f"{name} parts from {check.oracle} (its precision): {check.finding()}"
        for name, check in worst.items()
    ]


def _judged(jury: Jury, request: Request, name: str) -> list[Check]:
    """``name``'s checks. On the dtype ladder a narrow run is held to its own float64 run (the
    precision) and a float64 run to the reference (the derivative, under the backend's own
    name); otherwise an implementation is held to the reference."""
    own = request.own_float64_run(name)
    if own is not None:
        return [dataclasses.replace(c, part=PRECISION) for c in jury.checks(name, own)]
    checks = jury.checks(name, request.reference.name)
    backend = request.backend_of(name)
    if backend is not None and name in request.float64_runs.values():
        return [dataclasses.replace(c, part=DERIVATIVE, backend=backend.name) for c in checks]
    return checks
