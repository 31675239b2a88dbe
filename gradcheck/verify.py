"""Run backends from the same params, compare them with a reference, and report.

The reference backend (JAX autodiff when it is available) always runs in float64, from the same
params: a float32 backend is compared with what the network truly computes, at float32's
tolerance, rather than with another float32 approximation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck import finite_diff
from gradcheck.backends import Backend, available_backends, resolve
from gradcheck.network import (
    Network,
    Params,
    as_network,
    check_data,
    check_params,
    check_steps_lr,
)
from gradcheck.report import FINITE_DIFFERENCES, Check, Report
from gradcheck.tolerance import (
    gradient_magnitudes,
    relative_error,
    relative_errors,
    tolerances,
)

#: Networks with at most this many parameters get a finite difference for every one.
ELEMENTWISE_MAX_PARAMS = 2000


@dataclass(frozen=True)
class _Outputs:
    """Everything one backend computes for one problem, as NumPy arrays."""

    predictions: np.ndarray
    loss: float
    grads: Params
    losses: np.ndarray
    params: Params
    timing: dict[str, float]


def _run(
    backend: Backend,
    net: Network,
    params: Params,
    X: Any,
    y: Any,
    steps: int,
    lr: float,
    timing: bool,
) -> _Outputs:
    start = time.perf_counter()
    loss, grads = backend.loss_and_grads(net, params, X, y)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    trajectory = backend.train(net, params, X, y, steps, lr)
    first_train = time.perf_counter() - start
    seconds = {"first_call": first_call, "first_train": first_train}
    if timing:
        # The first run paid for compiling (or loading) the training loop; time it again warm.
        start = time.perf_counter()
        backend.train(net, params, X, y, steps, lr)
        seconds["train"] = time.perf_counter() - start
        seconds["compile"] = max(first_train - seconds["train"], 0.0)
    return _Outputs(
        predictions=np.asarray(backend.predict(net, params, X)),
        loss=loss,
        grads=grads,
        losses=np.asarray(trajectory.losses),
        params=trajectory.params,
        timing=seconds,
    )


def _compare_params(
    backend: str,
    quantity: str,
    observed: Params,
    reference: Params,
    tolerance: float,
    magnitudes: Params | None = None,
) -> list[Check]:
    checks = []
    for layer, (got, want) in enumerate(zip(observed, reference, strict=True), start=1):
        for key in want:
            magnitude = None if magnitudes is None else magnitudes[layer - 1][key]
            checks.append(
                _compare(
                    backend,
                    quantity,
                    got.get(key),
                    want[key],
                    tolerance,
                    layer,
                    key,
                    magnitude=magnitude,
                )
            )
    return checks


def _compare(
    backend: str,
    quantity: str,
    observed: Any,
    reference: Any,
    tolerance: float,
    layer: int | None = None,
    param: str | None = None,
    elementwise: bool = False,
    magnitude: np.ndarray | None = None,
) -> Check:
    if observed is None:
        return Check(backend, quantity, math.inf, tolerance, layer, param, detail="missing")
    observed, reference = np.asarray(observed), np.asarray(reference)
    if observed.shape != reference.shape:
        detail = f"shape {observed.shape}, expected {reference.shape}"
        return Check(backend, quantity, math.inf, tolerance, layer, param, detail=detail)
    error, index = relative_error(observed, reference, elementwise=elementwise, magnitude=magnitude)
    first_step = None
    if quantity == "train losses" and error > tolerance:  # where the curve first left
        errors = relative_errors(observed, reference, elementwise=elementwise)
        first_step = int(np.argmax(errors > tolerance))
    return Check(backend, quantity, error, tolerance, layer, param, index, first_step=first_step)


class _Oracle:
    """Finite-difference gradients of the float64 network, and comparisons against them."""

    def __init__(self, net: Network, params: Params, X: np.ndarray, y: np.ndarray, mode: str):
        n_params = sum(math.prod(shape) for layer in net.shapes() for shape in layer.values())
        if mode == "auto":
            mode = "elementwise" if n_params <= ELEMENTWISE_MAX_PARAMS else "directional"
        self.mode = mode
        if mode == "elementwise":
            self.elementwise = finite_diff.elementwise_gradient(net, params, X, y)
        elif mode == "directional":
            self.directional = finite_diff.directional_derivatives(net, params, X, y)
        else:
            raise ValueError(
                f"finite_differences must be 'auto', 'elementwise', 'directional' or None; "
                f"got {mode!r}"
            )

    def compare(self, name: str, grads: Params, point: float) -> list[Check]:
        """``grads`` against the finite differences, held to the policy's tolerance or, where
        larger, ten times the differences' own error estimate."""
        if self.mode == "directional":
            d = self.directional
            projected = d.project(grads)  # (k,) ⟨g, v_j⟩
            keep = ~d.kinks
            scale = max(float(np.abs(d.values[keep]).max(initial=0.0)), np.finfo(float).tiny)
            tolerance = max(point, 10 * float(d.errors[keep].max(initial=0.0)) / scale)
            tolerance = min(tolerance, finite_diff.noise_limit(np.float64))
            check = _compare(name, "gradient", projected[keep], d.values[keep], tolerance)
            detail = f"{keep.sum()} random directions" + (
                f", {(~keep).sum()} across a relu kink skipped" if (~keep).any() else ""
            )
            return [dataclasses.replace(check, param="directional", detail=detail)]
        e = self.elementwise
        checks = []
        for layer, (got, fd, err, kinks) in enumerate(
            zip(grads, e.grads, e.errors, e.kinks, strict=True), start=1
        ):
            for key in fd:
                kink = kinks[key]
                expected = np.where(kink, 0.0, fd[key])  # no derivative at a kink: not compared
                observed = got.get(key)
                if observed is not None and np.shape(observed) == expected.shape:
                    observed = np.where(kink, 0.0, observed)
                scale = max(float(np.abs(expected).max()), np.finfo(float).tiny)
                tolerance = max(point, 10 * float(err[key][~kink].max(initial=0)) / scale)
                tolerance = min(tolerance, finite_diff.noise_limit(np.float64))
                check = _compare(name, "gradient", observed, expected, tolerance, layer, key)
                if kink.any():
                    check = dataclasses.replace(
                        check, detail=f"{int(kink.sum())} at a relu kink skipped"
                    )
                checks.append(check)
        return checks


def _verdicts(
    reference: str,
    agree_with_reference: dict[str, bool],
    agree_with_oracle: dict[str, bool],
    checks: list[Check],
) -> list[str]:
    """Name the odd one out: a backend that disagrees where the others agree, or the reference
    when every other implementation agrees with each other and not with it."""

    def worst(name: str) -> str:
        failing = [c for c in checks if c.backend == name and not c.ok]
        return max(failing, key=lambda c: c.error / c.tolerance).finding() if failing else ""

    def listing(names: list[str]) -> str:
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"

    oracle = [FINITE_DIFFERENCES] if agree_with_oracle else []
    failing = [name for name, ok in agree_with_reference.items() if not ok]
    agreeing = [name for name, ok in agree_with_reference.items() if ok]
    if not failing:
        return []
    reference_is_right = agree_with_oracle.get(reference, True)
    if reference_is_right:
        witnesses = [reference, *(n for n in agreeing if n != reference)]
        witnesses += oracle
        return [
            f"{name} disagrees with {listing(witnesses)}: {worst(name)}"
            for name in failing
            if len(witnesses) >= 2
        ]
    others = [n for n in failing if agree_with_oracle.get(n, False)]
    if others and len(others) == len(failing) and not agreeing:
        return [
            f"the reference {reference} disagrees with {listing(others + oracle)}: "
            f"{worst(FINITE_DIFFERENCES)}"
        ]
    return [f"no majority: {', '.join(failing)} disagree with the reference {reference}"]


def _layer_scales(params: Params) -> Params:
    """Each layer's largest parameter, for every parameter of the layer.

    A layer's weights and bias move by updates built from the same deltas, so their rounding is
    on one scale: a bias that stays near zero while its updates nearly cancel is held to the
    layer's scale, not to its own small value.
    """
    scales = []
    for layer in params:
        largest = max(float(np.abs(value).max(initial=0.0)) for value in layer.values())
        scales.append({key: np.full(np.shape(value), largest) for key, value in layer.items()})
    return scales


def _diverged_at(losses: np.ndarray) -> int | None:
    """The first step whose loss is not finite, if any."""
    bad = ~np.isfinite(losses)
    return int(np.argmax(bad)) if bad.any() else None


def _compare_outputs(
    backend: str,
    got: _Outputs,
    want: _Outputs,
    point: float,
    trajectory: float,
    magnitudes: Params,
) -> list[Check]:
    checks = [
        _compare(backend, "predictions", got.predictions, want.predictions, point),
        _compare(
            backend, "loss", np.float64(got.loss), np.float64(want.loss), point, elementwise=True
        ),
        *_compare_params(backend, "gradient", got.grads, want.grads, point, magnitudes),
    ]
    step, reference_step = _diverged_at(got.losses), _diverged_at(want.losses)
    if step is None and reference_step is None:
        return [
            *checks,
            _compare(
                backend, "train losses", got.losses, want.losses, trajectory, elementwise=True
            ),
            *_compare_params(
                backend,
                "train params",
                got.params,
                want.params,
                trajectory,
                _layer_scales(want.params),
            ),
        ]
    # After its first non-finite loss a diverged run has nothing left to compare.
    first = min(s for s in (step, reference_step) if s is not None)
    detail = (
        f"diverged at step {step}"
        if step is not None
        else f"the reference diverged at step {reference_step}"
    )
    diverged = Check(
        backend,
        "train losses",
        math.inf,
        trajectory,
        index=(first,),
        detail=detail,
        first_step=first,
    )
    return [*checks, diverged]


def verify(
    net: Network,
    X: Any,
    y: Any,
    params: Params | None = None,
    backends: Sequence[str | Backend] | None = None,
    steps: int = 2000,
    lr: float = 1.0,
    reference: str | Backend | None = None,
    timing: bool = False,
    finite_differences: str | None = "auto",
) -> Report:
    """Run every backend from the same params and compare each with the reference.

    Args:
        net: the network.
        X: inputs of shape ``(N, layers[0])``; integers are cast to the net's dtype.
        y: targets of shape ``(N, layers[-1])``.
        params: starting params (default ``net.init()``); never modified.
        backends: names and/or objects with the backend interface (default: every available
            built-in backend).
        steps, lr: the training run compared (default: the notebook's 2000 steps of lr 1).
        reference: the backend the others are compared with, run in float64 (default ``jax``
            when available, else the first of ``backends``).
        timing: also train each backend a second time, warm, so the report's ``timings``
            separate the training time from the first run's compile (or cache-load) time.
        finite_differences: add the finite-difference oracle as a row and a witness for the
            verdict: ``"elementwise"``, ``"directional"``, ``"auto"`` (element-wise up to
            ``ELEMENTWISE_MAX_PARAMS`` parameters) or None.

    Returns:
        A :class:`Report`; ``report.ok`` says whether every backend agrees.
    """
    net = as_network(net)
    X, y = check_data(net, X, y)
    params = check_params(net, net.init() if params is None else params)
    steps, lr = check_steps_lr(steps, lr)
    requested = [resolve(b) for b in (available_backends() if backends is None else backends)]
    if not requested:
        raise ValueError("backends must name at least one backend; got none")
    names = [b.name for b in requested]
    if len(set(names)) != len(names):
        raise ValueError(f"backends must have distinct names; got {names}")
    if reference is None:
        reference = "jax" if "jax" in available_backends() else requested[0]
    reference_backend = resolve(reference)

    # The reference runs in float64 from the same params, exactly upcast.
    net64 = dataclasses.replace(net, dtype="float64")
    params64 = check_params(net64, params)
    want = _run(
        reference_backend,
        net64,
        params64,
        X.astype(np.float64),
        y.astype(np.float64),
        steps,
        lr,
        timing,
    )

    tol_args = (X.shape[0], steps)
    tol = tolerances(net, *tol_args)
    report = Report(
        net=net,
        n_samples=X.shape[0],
        steps=steps,
        lr=lr,
        reference=f"{reference_backend.name} in float64",
        backends=names,
    )
    oracle = (
        None if finite_differences is None else _Oracle(net64, params64, X, y, finite_differences)
    )
    agree_with_reference: dict[str, bool] = {}
    agree_with_oracle: dict[str, bool] = {}
    if oracle is not None:
        fd_checks = oracle.compare(
            FINITE_DIFFERENCES, want.grads, tolerances(net64, *tol_args).point
        )
        agree_with_oracle[reference_backend.name] = all(c.ok for c in fd_checks)
        report.checks.extend(fd_checks)
    # Gradients are sums; their rounding is relative to the size of what they sum.
    magnitudes = gradient_magnitudes(net64, params64, X, y)
    reference_diverged = _diverged_at(want.losses)
    diverged = [] if reference_diverged is None else [f"{reference_backend.name} (the reference)"]
    for backend in requested:
        if backend is reference_backend and net.dtype == "float64":
            report.timings[backend.name] = want.timing  # the reference itself: nothing to compare
            continue
        got = _run(backend, net, params, X, y, steps, lr, timing)
        report.timings[backend.name] = got.timing
        checks = _compare_outputs(backend.name, got, want, tol.point, tol.trajectory, magnitudes)
        report.checks.extend(checks)
        if _diverged_at(got.losses) is not None:
            diverged.append(backend.name)
        # When the reference itself diverged, no training run can be blamed for differing.
        compared = [c for c in checks if reference_diverged is None or c.quantity != "train losses"]
        agree_with_reference[backend.name] = all(c.ok for c in compared)
        if oracle is not None:
            agree_with_oracle[backend.name] = all(
                c.ok for c in oracle.compare(backend.name, got.grads, tol.point)
            )
    report.verdicts = _verdicts(
        reference_backend.name, agree_with_reference, agree_with_oracle, report.checks
    )
    if reference_diverged is not None:
        report.verdicts.insert(
            0,
            f"training diverged ({', '.join(diverged)}; the reference at step "
            f"{reference_diverged}): a diverged run cannot be compared, try a smaller lr",
        )
    return report
