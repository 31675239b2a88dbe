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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck.backends import Backend, available_backends, resolve
from gradcheck.network import (
    Network,
    Params,
    as_network,
    check_data,
    check_params,
    check_steps_lr,
)
from gradcheck.tolerance import relative_error, tolerances

#: The quantities compared, in the order a report lists them.
QUANTITIES = ("predictions", "loss", "gradient", "train losses", "train params")


@dataclass(frozen=True)
class Check:
    """One comparison: the worst element of one quantity of one backend against the reference.

    ``layer`` is 1-based and ``param`` is ``"W"`` or ``"b"`` for per-layer quantities; ``index``
    is the worst element's index (for ``train losses``, the step).
    """

    backend: str
    quantity: str
    error: float
    tolerance: float
    layer: int | None = None
    param: str | None = None
    index: tuple[int, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance  # False for NaN

    @property
    def where(self) -> str:
        """The worst element, e.g. ``layer 2 W[3, 0]`` or ``step 17``."""
        if self.quantity == "train losses" and self.index:
            return f"step {self.index[0]}"
        if self.quantity == "loss":
            return ""
        index = f"[{', '.join(str(i) for i in self.index)}]" if self.index else ""
        if self.layer is None:
            return index
        return f"layer {self.layer} {self.param}{index}"

    def describe(self) -> str:
        where = f" {self.where}" if self.where else ""
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.backend}: {self.quantity}{where}: relative error {self.error:.1e} "
            f"against tolerance {self.tolerance:.1e}{detail}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "quantity": self.quantity,
            "layer": self.layer,
            "param": self.param,
            "index": list(self.index),
            "error": self.error if math.isfinite(self.error) else str(self.error),
            "tolerance": self.tolerance,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass
class Report:
    """What :func:`verify` found: every backend's checks against the reference."""

    net: Network
    n_samples: int
    steps: int
    lr: float
    reference: str
    backends: list[str]
    checks: list[Check] = field(default_factory=list)
    #: Seconds per backend: ``first_call`` (the first gradient, compile or load included),
    #: ``first_train``, and with ``verify(timing=True)`` a warm ``train`` and their difference,
    #: ``compile``.
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every check of every backend is within its tolerance."""
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def assert_ok(self) -> None:
        """Raise AssertionError listing every check that exceeds its tolerance."""
        if not self.ok:
            lines = "\n".join(f"  {check.describe()}" for check in self.failures)
            raise AssertionError(f"backends disagree on {self.net.describe()}:\n{lines}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the problem, the reference, every check and the verdict."""
        return {
            "network": {
                "layers": list(self.net.layers),
                "activations": list(self.net.activations),
                "loss": self.net.loss,
                "bias": self.net.bias,
                "dtype": self.net.dtype,
            },
            "samples": self.n_samples,
            "steps": self.steps,
            "lr": self.lr,
            "reference": self.reference,
            "backends": self.backends,
            "ok": self.ok,
            "checks": [check.to_dict() for check in self.checks],
            "seconds": self.timings,
        }

    def __str__(self) -> str:
        header = ("backend", "quantity", "where", "error", "tolerance", "")
        rows = [header]
        for name in self.backends:
            checks = [check for check in self.checks if check.backend == name]
            if not checks:
                rows.append((name, "(reference)", "", "", "", ""))
            for check in checks:
                status = "ok" if check.ok else "FAIL"
                rows.append(
                    (
                        name,
                        check.quantity,
                        check.where,
                        f"{check.error:.1e}",
                        f"{check.tolerance:.1e}",
                        status,
                    )
                )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        table = "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        if self.ok:
            verdict = f"all {len(self.backends)} backends agree with the reference"
        else:
            failed = sorted({check.backend for check in self.failures})
            verdict = f"DISAGREE: {', '.join(failed)}"
        timings = "".join(
            f"\n{name}: training {seconds['train'] * 1e3:.3g} ms warm; first calls "
            f"{seconds['first_call']:.3g} s (gradient) and +{seconds['compile']:.3g} s (training)"
            for name, seconds in self.timings.items()
            if "train" in seconds
        )
        return (
            f"gradcheck verify: {self.net.describe()}\n"
            f"{self.n_samples} samples, {self.steps} steps, lr {self.lr:g}; "
            f"reference: {self.reference}\n"
            "errors are relative to the reference's largest magnitude (losses: to each value)\n\n"
            f"{table}\n\n{verdict}{timings}"
        )


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
    backend: str, quantity: str, observed: Params, reference: Params, tolerance: float
) -> list[Check]:
    checks = []
    for layer, (got, want) in enumerate(zip(observed, reference, strict=True), start=1):
        for key in want:
            checks.append(
                _compare(backend, quantity, got.get(key), want[key], tolerance, layer, key)
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
) -> Check:
    if observed is None:
        return Check(backend, quantity, math.inf, tolerance, layer, param, detail="missing")
    observed, reference = np.asarray(observed), np.asarray(reference)
    if observed.shape != reference.shape:
        detail = f"shape {observed.shape}, expected {reference.shape}"
        return Check(backend, quantity, math.inf, tolerance, layer, param, detail=detail)
    error, index = relative_error(observed, reference, elementwise=elementwise)
    return Check(backend, quantity, error, tolerance, layer, param, index)


def _compare_outputs(
    backend: str, got: _Outputs, want: _Outputs, point: float, trajectory: float
) -> list[Check]:
    return [
        _compare(backend, "predictions", got.predictions, want.predictions, point),
        _compare(
            backend, "loss", np.float64(got.loss), np.float64(want.loss), point, elementwise=True
        ),
        *_compare_params(backend, "gradient", got.grads, want.grads, point),
        _compare(backend, "train losses", got.losses, want.losses, trajectory, elementwise=True),
        *_compare_params(backend, "train params", got.params, want.params, trajectory),
    ]


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

    tol = tolerances(net, X.shape[0], steps)
    report = Report(
        net=net,
        n_samples=X.shape[0],
        steps=steps,
        lr=lr,
        reference=f"{reference_backend.name} in float64",
        backends=names,
    )
    for backend in requested:
        if backend is reference_backend and net.dtype == "float64":
            report.timings[backend.name] = want.timing  # the reference itself: nothing to compare
            continue
        got = _run(backend, net, params, X, y, steps, lr, timing)
        report.timings[backend.name] = got.timing
        report.checks.extend(_compare_outputs(backend.name, got, want, tol.point, tol.trajectory))
    return report
