"""Locating and explaining each backend that disagrees: its first differing tensor, when it and
the reference have a ``trace``, and the simple causes (`gradcheck.explain`) that fit each group
of quantities it fails, tried in the order of the computation."""

from __future__ import annotations

import numpy as np

from gradcheck import explain
from gradcheck.backends import Backend, Trace, Trajectory
from gradcheck.compare import Check, Outputs
from gradcheck.network import Params
from gradcheck.reproduction import Limits
from gradcheck.request import Inputs, Request
from gradcheck.tolerance import backward_magnitudes
from gradcheck.vote import group_of

#: The public names, as the API reference shows them.
__all__ = ["diagnose"]


def diagnose(
    failures: list[Check], request: Request, limits: Limits, outputs: dict[str, Outputs]
) -> tuple[list[explain.FirstDifference], list[explain.Explanation]]:
    """Localise and explain each backend with a failing check among ``failures`` (the finite
    differences and the reference's own float64 run are not explained): its first differing
    tensor, and the explanations of each group of quantities it fails."""
    reference, p64 = request.reference.backend, request.inputs64
    want = outputs[request.reference.name]
    magnitudes = backward_magnitudes(*p64)  # (deltas, gradients)
    reference_trace = _trace(reference, p64)
    first_differences, explanations = [], []
    # on the dtype ladder a backend's derivative is judged, and explained, in its float64 run
    runs = {check.backend: request.run_of(check) for check in failures}
    for name, run in runs.items():
        backend = request.backend_of(run)
        if backend is None:
            continue
        got, inputs = outputs[run], request.inputs_of(run)
        groups = {group_of(c.quantity) for c in failures if c.backend == name}
        trace = _trace(backend, inputs) if reference_trace else None
        if trace is not None and reference_trace is not None:
            found = explain.first_difference(
                name, trace, reference_trace, p64.net, p64.params, p64.X, magnitudes,
                limits.of(request, run).point,
            )  # fmt: skip
            if found is not None:
                first_differences.append(found)
        extra = [
            f"{key} of layer {layer}"
            for layer, (g, w) in enumerate(zip(got.grads, want.grads, strict=True), start=1)
            for key in g
            if key not in w
        ]
        explanations += _explanations(
            name, run, backend, groups, got, want, request, limits, magnitudes[1], extra,
            reference_trace,
        )  # fmt: skip
    return first_differences, explanations


def _trace(backend: Backend, inputs: Inputs) -> Trace | None:
    """The backend's `Trace`, or None when it has no ``trace`` (it is optional)."""
    trace = getattr(backend, "trace", None)
    return trace(*inputs) if callable(trace) else None


def _explanations(
    name: str,
    run: str,
    backend: Backend,
    groups: set[str],
    got: Outputs,
    want: Outputs,
    request: Request,
    limits: Limits,
    magnitudes: Params,
    extra: list[str],
    reference_trace: Trace | None,
) -> list[explain.Explanation]:
    """The hypotheses that fit, group by group in the order of the computation. A forward that
    differs explains everything after it, so the groups after it are not explained again; a
    training run is explained when its gradients agree or differ by one common factor."""
    point, sizes = limits.of(request, run).point, request.sizes
    (net, params, X, y), p64 = request.inputs_of(run), request.inputs64
    # a network's neighbouring convention, or a term its backward leaves out, explains them all
    convention = explain.explain_layer_conventions(
        name, request.reference.backend, (p64.net, p64.params, p64.X, p64.y), request.training,
        groups, got, point,
        limits.tolerance.trajectory, magnitudes,
    )  # fmt: skip
    if convention:
        return convention
    loss = (  # a loss at the outputs of predictions, which a BatchNorm makes in another mode
        explain.explain_loss(name, net, got.loss, got.predictions, y, point, sizes)
        if groups & {"predictions", "loss"} and not net.modal
        else []
    )
    if "predictions" in groups:
        found = explain.explain_own_weights(
            backend, net, params, X, y, "predictions", got.predictions, None, extra
        )
        found += explain.explain_activation_form(
            name, p64.net, p64.params, p64.X, got.predictions, point
        )
        return found + loss or [explain.none(name, "predictions")]
    found = []
    if "loss" in groups:
        found += loss or [explain.none(name, "loss")]
    factors = explain.simple_factors(sizes)
    if "gradient" in groups:
        derivative = (
            explain.derivative_at_activation(p64.net, p64.params, p64.X, reference_trace)
            if reference_trace is not None
            else None
        )
        gradient = explain.explain_gradients(
            name, got.grads, want.grads, magnitudes, point, sizes, derivative
        )
        found += gradient
        common = [
            e.factor
            for e in gradient
            if e.kind in ("scale", "sign") and len(e.layers) == net.depth and e.factor is not None
        ]  # the run of gradients scaled by a factor is the reference's with lr times it
        factors = [explain.named_factor(f, sizes) or (f, "") for f in common[:1]]
    # a run that diverged is reported as such; no simple cause is looked for in it
    losses = got.losses[: limits.horizon.steps]
    if "training run" in groups and factors and np.all(np.isfinite(losses)):
        training = request.training
        if training.plain:  # the factors are hypotheses about gradient descent's steps
            found_run = explain.explain_training(
                name, request.reference.backend, net, p64.params, p64.X, p64.y,
                training.optimizer.lr, losses, factors,
            )  # fmt: skip
        else:
            found_run = explain.explain_optimizer(
                name, request.reference.backend, p64.net, p64.params, p64.X, p64.y, training,
                Trajectory(got.params, got.losses), limits.tolerance.trajectory,
            )  # fmt: skip
        found_run = found_run or explain.explain_own_weights(
            backend, net, params, X, y, "training run", got.losses, training, extra
        )
        found += found_run or [explain.none(name, "training run")]
    return found
