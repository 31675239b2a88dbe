"""Run backends from the same params, compare them with a reference, and report.

The reference backend (JAX autodiff when it is available) always runs in float64, from the same
params: a float32 backend is compared with what the network truly computes, at float32's
tolerance, rather than with another float32 approximation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from gradcheck import explain, finite_diff, witness
from gradcheck.arguments import is_count
from gradcheck.backends import (
    Backend,
    Trace,
    Training,
    Trajectory,
    available_backends,
    resolve,
)
from gradcheck.finite_diff import FINITE_DIFFERENCES, Check, against_reference
from gradcheck.network import (
    Network,
    Params,
    as_network,
    check_data,
    check_params,
    check_steps_lr,
)
from gradcheck.optimizers import Optimizer, as_optimizer, batch_schedule
from gradcheck.report import Report
from gradcheck.terminal import Progress
from gradcheck.tolerance import (
    Horizon,
    Magnitudes,
    Tolerances,
    backward_magnitudes,
    conditioned,
    drift,
    gradient_magnitudes,
    horizon,
    layer_scales,
    loss_magnitude,
    prediction_magnitudes,
    relative_errors,
    run_error,
    tolerances,
)

#: Runs of the reference from randomly moved params and inputs that measure how much a training
#: run amplifies rounding: how far a chaotic run moves depends on the direction, and the most of a
#: few draws is a steadier measure than one.
SENSITIVITY_DRAWS = 3
#: Networks with at most this many parameters get a finite difference for every one.
ELEMENTWISE_MAX_PARAMS = finite_diff.ELEMENTWISE_MAX


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
    training: Training,
    timing: bool,
) -> _Outputs:
    start = time.perf_counter()
    getattr(backend, "kernels", None)  # a built-in backend imports its framework here
    imported = time.perf_counter() - start
    start = time.perf_counter()
    loss, grads = backend.loss_and_grads(net, params, X, y)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    trajectory = training.run(backend, net, params, X, y)
    first_train = time.perf_counter() - start
    seconds = {"import": imported, "first_call": first_call, "first_train": first_train}
    if timing:
        # The first run paid for compiling (or loading) the training loop; time it again warm.
        start = time.perf_counter()
        training.run(backend, net, params, X, y)
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
    check = against_reference(
        backend, quantity, observed, reference, tolerance, layer=layer, param=param,
        magnitude=magnitude, elementwise=elementwise,
    )  # fmt: skip
    compared = observed is not None and np.shape(observed) == np.shape(reference)
    if quantity == "train losses" and compared and check.error > tolerance:  # where it left
        errors = relative_errors(observed, reference, elementwise=elementwise)
        check = dataclasses.replace(check, first_step=int(np.argmax(errors > tolerance)))
    return check


def _compare_outputs_and_loss(
    backend: str,
    got: _Outputs,
    predictions: np.ndarray,
    loss: float,
    point: float,
    magnitudes: Magnitudes,
) -> list[Check]:
    """``got``'s predictions and loss against ``predictions`` and ``loss`` at the tolerance
    ``point``, each relative to the size its rounding scales with."""
    return [
        _compare(
            backend, "predictions", got.predictions, predictions, point,
            magnitude=magnitudes.predictions,
        ),
        _compare(
            backend, "loss", np.float64(got.loss), np.float64(loss), point, elementwise=True,
            magnitude=np.asarray(magnitudes.loss),
        ),
    ]  # fmt: skip


#: The finite-difference modes ``verify`` accepts, and None for no oracle.
FD_MODES = ("auto", "elementwise", "directional")

#: Quantities voted on together, in the order they are computed; the oracle votes on the first
#: three, which it measures itself.
GROUPS: dict[str, tuple[str, ...]] = {
    "predictions": ("predictions",),
    "loss": ("loss",),
    "gradient": ("gradient",),
    "training run": ("train losses", "train params"),
}
ORACLE_GROUPS = ("predictions", "loss", "gradient")


class _Oracle:
    """The independent witness: the network's predictions and loss from its own float64 forward
    pass (`gradcheck.witness`), and its gradient by finite differences of that loss."""

    def __init__(
        self,
        net: Network,
        params: Params,
        X: np.ndarray,
        y: np.ndarray,
        mode: str,
        progress: Callable[[int, int], None],
    ):
        self.choice = (
            finite_diff.choose_mode(net, params, X, y)
            if mode == "auto"
            else finite_diff.Choice(mode, "as asked")
        )
        self.mode = self.choice.mode
        outputs = witness.forward(net, params, X)
        self.predictions = outputs.outputs
        self.loss = witness.loss(net, outputs, y)
        if self.mode == "elementwise":
            self.elementwise = finite_diff.elementwise_gradient(
                net, params, X, y, progress=progress
            )
        else:
            self.directional = finite_diff.directional_derivatives(
                net, params, X, y, progress=progress
            )

    def describe(self) -> str:
        """How the differences were taken and why, as the report's heading says it."""
        return f"{FINITE_DIFFERENCES} {self.mode}: {self.choice.reason}"

    def compare(
        self, name: str, got: _Outputs, point: float, magnitudes: Magnitudes
    ) -> list[Check]:
        """``got``'s predictions, loss and gradient against the witness's: the first two at the
        policy's tolerance ``point``, the gradient through `finite_diff.compare`."""
        checks = _compare_outputs_and_loss(
            name, got, self.predictions, self.loss, point, magnitudes
        )
        if self.mode == "directional":
            d = self.directional
            c = finite_diff.compare(
                d.project(got.grads),
                d.values,
                d.errors,
                d.kinks,
                floor=point,
                mode="directional",
                rounding=d.roundings,
            )
            checks.append(Check.of(c, name, "gradient", FINITE_DIFFERENCES, param="directional"))
            return checks
        e = self.elementwise
        for layer, (grads, fd, err, kinks, rounding) in enumerate(
            zip(got.grads, e.grads, e.errors, e.kinks, e.roundings, strict=True), start=1
        ):
            for key in fd:
                observed = grads.get(key)
                if observed is None or np.shape(observed) != fd[key].shape:
                    checks.append(_compare(name, "gradient", observed, fd[key], point, layer, key))
                    continue
                c = finite_diff.compare(
                    observed,
                    fd[key],
                    err[key],
                    kinks[key],
                    floor=point,
                    mode="elementwise",
                    rounding=rounding[key],
                )
                checks.append(
                    Check.of(c, name, "gradient", FINITE_DIFFERENCES, layer=layer, param=key)
                )
        return checks


def _group_of(quantity: str) -> str:
    return next(group for group, quantities in GROUPS.items() if quantity in quantities)


def _verdicts(
    reference: str,
    blocs: dict[str, list[list[str]]],
    finding: Callable[[str, str, str], str],
) -> list[str]:
    """One sentence per implementation found wrong, from who agrees with whom.

    ``blocs[group]`` partitions the implementations that voted on a group of quantities into
    sets that agree with each other, the reference's first. Where one bloc of at least two is
    larger than every other, everyone outside it is wrong on that group; otherwise there is no
    majority and the sentence says so. An implementation wrong on several groups gets one
    sentence: every implementation that outvoted it, and the finding (``finding(name, group,
    against)``, ``against`` a member of the majority) of the first group where it parted.
    """
    blamed: dict[str, tuple[list[str], str]] = {}
    ties = []
    for group, partition in blocs.items():
        if len(partition) < 2:
            continue
        largest = max(len(bloc) for bloc in partition)
        majority = [bloc for bloc in partition if len(bloc) == largest]
        if largest < 2 or len(majority) > 1:
            described = [
                explain.listing([_label(reference, n) for n in bloc]) for bloc in partition
            ]
            ties.append(f"no majority on the {group}: {' against '.join(described)}")
            continue
        [winners] = majority
        for bloc in partition:
            for name in bloc:
                if bloc is winners:
                    continue
                if name not in blamed:
                    blamed[name] = ([], finding(name, group, winners[0]))
                witnesses, first = blamed[name]
                blamed[name] = ([*witnesses, *(w for w in winners if w not in witnesses)], first)
    sentences = []
    for name, (witnesses, first) in blamed.items():
        subject = _label(reference, name)
        verb = "disagree" if name == FINITE_DIFFERENCES else "disagrees"
        sentences.append(f"{subject} {verb} with {explain.listing(witnesses)}: {first}")
    return sentences + ties


def _label(reference: str, name: str) -> str:
    if name == reference:
        return f"the reference {name}"
    return f"the {name}" if name == FINITE_DIFFERENCES else name


class _Jury:
    """Who agrees with whom, group by group, from comparisons made only when a vote needs them.

    Everyone is compared with the reference; two implementations that both part from it are
    compared with each other, so that several that agree among themselves outvote it.
    """

    def __init__(
        self,
        reference: str,
        outputs: dict[str, _Outputs],
        oracle: _Oracle | None,
        tolerance: Callable[[str], Tolerances],
        magnitudes: Magnitudes,
        horizon: Horizon,
    ) -> None:
        self.reference = reference
        self.outputs = outputs
        self.oracle = oracle
        self.tolerance = tolerance
        self.magnitudes = magnitudes
        self.horizon = horizon
        self._checks: dict[tuple[str, str], list[Check]] = {}

    def checks(self, name: str, against: str) -> list[Check]:
        """``name``'s checks against ``against``'s outputs (one of them may be the oracle)."""
        key = (name, against)
        if key not in self._checks:
            # the looser of the two: a float32 run is held to float32's tolerance on either side
            tol = max(self.tolerance(name), self.tolerance(against), key=lambda t: t.point)
            if FINITE_DIFFERENCES in key:
                assert self.oracle is not None
                other = against if name == FINITE_DIFFERENCES else name
                self._checks[key] = self.oracle.compare(
                    name, self.outputs[other], tol.point, self.magnitudes
                )
            else:
                self._checks[key] = _compare_outputs(
                    name,
                    self.outputs[name],
                    self.outputs[against],
                    tol.point,
                    tol.trajectory,
                    self.magnitudes,
                    self.horizon,
                )
            self._checks[key] = [dataclasses.replace(c, oracle=against) for c in self._checks[key]]
        return self._checks[key]

    def agree(self, a: str, b: str, group: str) -> bool:
        if b == self.reference:
            a, b = b, a
        checks = self.checks(b, a)  # measured against the reference when it is one of them
        return all(c.ok for c in checks if _group_of(c.quantity) == group)

    def blocs(self, group: str, members: Sequence[str]) -> list[list[str]]:
        """``members`` partitioned into blocs that agree on ``group``, the reference's first;
        each joins the first bloc whose first member it agrees with."""
        partition: list[list[str]] = []
        for name in members:
            bloc = next((b for b in partition if self.agree(b[0], name, group)), None)
            if bloc is None:
                partition.append([name])
            else:
                bloc.append(name)
        return partition

    def finding(self, name: str, group: str, against: str) -> str:
        """The worst of ``name``'s checks on ``group`` against ``against``. (Agreement within
        a tolerance is not transitive: a member of the reference's bloc can be outvoted by a
        bloc whose first member it happens to agree with.)"""
        checks = [c for c in self.checks(name, against) if _group_of(c.quantity) == group]
        return max(checks, key=lambda c: c.error / c.tolerance).finding()


@dataclass(frozen=True)
class _Reproduction:
    """How far the reference's run moves when its params and inputs move by one rounding:
    ``losses``, per step, the most any draw's loss has parted from the reference's so far
    (relative to it); ``whole``, the most any draw's whole run parted (`run_error`)."""

    losses: np.ndarray
    whole: float

    def worst(self, other: _Reproduction) -> _Reproduction:
        return _Reproduction(np.maximum(self.losses, other.losses), max(self.whole, other.whole))

    def sensitivity(self, horizon: Horizon) -> float:
        """How far one rounding moves the compared part of the run: the whole run's for a
        whole horizon, else the losses' up to the horizon."""
        if horizon.whole:
            return self.whole
        return float(self.losses[horizon.steps - 1]) if horizon.steps else 0.0


def _reproduction(
    reference: Backend,
    training: Training,
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    want: _Outputs,
    rounding: float,
) -> _Reproduction:
    """How far the reference's float64 run ``want`` moves, measured as the checks measure it,
    when the reference trains in ``net``'s dtype from params and inputs moved by ``rounding`` in
    random directions: the most of `SENSITIVITY_DRAWS` draws."""
    rng = np.random.default_rng(0)
    losses, whole = np.zeros(len(want.losses)), 0.0
    for _ in range(SENSITIVITY_DRAWS):
        moved = [
            {key: value + rounding * np.abs(value).max() * rng.choice([-1.0, 1.0], value.shape)
             for key, value in layer.items()}
            for layer in params
        ]  # fmt: skip
        X_moved = X * (1 + rounding * rng.choice([-1.0, 1.0], X.shape))
        run = training.run(reference, net, check_params(net, moved), X_moved.astype(net.dtype), y)
        step_errors = relative_errors(run.losses, want.losses, elementwise=True)
        losses = np.maximum(losses, np.maximum.accumulate(np.nan_to_num(step_errors, nan=np.inf)))
        whole = max(whole, run_error(run.losses, run.params, want.losses, want.params))
    return _Reproduction(losses, whole)


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
    magnitudes: Magnitudes,
    horizon: Horizon,
) -> list[Check]:
    """``got`` against ``want``: predictions, loss and gradients, and the training run over
    its ``horizon`` — the losses of the steps there, the final params only for a whole run."""
    checks = [
        *_compare_outputs_and_loss(backend, got, want.predictions, want.loss, point, magnitudes),
        *_compare_params(backend, "gradient", got.grads, want.grads, point, magnitudes.gradients),
    ]
    if not horizon.comparable:
        return checks
    losses, reference_losses = got.losses[: horizon.steps], want.losses[: horizon.steps]
    step = _diverged_at(losses)  # the reference reproduces itself, so is finite, up to here
    if step is None:
        checks.append(
            _compare(
                backend, "train losses", losses, reference_losses, trajectory, elementwise=True
            )
        )
        if horizon.whole:
            checks += _compare_params(
                backend, "train params", got.params, want.params, trajectory,
                layer_scales(want.params),
            )  # fmt: skip
        return checks
    # After its first non-finite loss a diverged run has nothing left to compare.
    detail = f"diverged at step {step}"
    diverged = Check(
        backend, "train losses", math.inf, trajectory, index=(step,), detail=detail,
        first_step=step,
    )  # fmt: skip
    return [*checks, diverged]


@dataclass
class _Stages:
    """verify's progress as ``(done, total, label)``: each stage (a backend's runs, the finite
    differences, the verdict) is `STAGE_UNITS` units, and a stage may report its own progress
    within them. ``seconds`` holds each stage's wall time by label, as stages end."""

    progress: Progress | None
    stages: int
    begun: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    _current: tuple[str, float] | None = None

    def begin(self, label: str) -> Callable[[int, int], None]:
        """End the stage running and start the next; the returned ``within(i, n)`` reports
        that it is i/n done."""
        self.then(label)
        start = self.begun * STAGE_UNITS
        self.begun += 1

        def within(i: int, n: int) -> None:
            if self.progress is not None:
                done = start + STAGE_UNITS * i // max(n, 1)
                self.progress(done, self.stages * STAGE_UNITS, label)

        within(0, 1)
        return within

    def then(self, label: str) -> None:
        """End the stage's timing and time what follows under ``label``, within its progress."""
        self._close()
        self._current = (label, time.perf_counter())

    def end(self) -> None:
        self._close()
        if self.progress is not None:
            total = self.stages * STAGE_UNITS
            self.progress(total, total, "done")

    def _close(self) -> None:
        if self._current is not None:
            label, start = self._current
            self.seconds[label] = time.perf_counter() - start
            self._current = None


#: The units of one stage of `verify`'s progress.
STAGE_UNITS = 100


@dataclass(frozen=True)
class _Reference:
    """The backend the others are compared with, and the names of its float64 run: ``name``,
    under which it votes — the backend's own for a float64 net, whose float64 run is the
    reference; ``"jax in float64"`` for a float32 net, whose float32 run is judged like the
    others — and ``label``, as the report shows it."""

    backend: Backend
    dtype: str

    @property
    def label(self) -> str:
        return f"{self.backend.name} in float64"

    @property
    def name(self) -> str:
        return self.backend.name if self.dtype == "float64" else self.label


@dataclass(frozen=True)
class _Call:
    """One verify call's arguments, validated: the problem in the net's dtype, and upcast
    exactly to float64 for the reference."""

    net: Network
    X: np.ndarray
    y: np.ndarray
    params: Params
    backends: list[Backend]
    reference: _Reference
    training: Training

    @cached_property
    def net64(self) -> Network:
        return dataclasses.replace(self.net, dtype="float64")

    @cached_property
    def params64(self) -> Params:
        return check_params(self.net64, self.params)

    @cached_property
    def X64(self) -> np.ndarray:
        return self.X.astype(np.float64)

    @cached_property
    def y64(self) -> np.ndarray:
        return self.y.astype(np.float64)

    @property
    def sizes(self) -> tuple[int, int]:
        """(N, K): samples and outputs, after which a factor is named."""
        return self.X.shape[0], self.net.outputs


def _validate(
    net: Network,
    X: Any,
    y: Any,
    params: Params | None,
    backends: Sequence[str | Backend] | None,
    steps: int,
    lr: float | None,
    reference: str | Backend | None,
    finite_differences: str | None,
    optimizer: Optimizer | None,
    batch_size: int | None,
    seed: int,
    progress: Progress | None,
    repeats: int,
) -> _Call:
    """verify's arguments checked, before any work is done: a clear error for each bad one."""
    net = as_network(net)
    X, y = check_data(net, X, y)
    params = check_params(net, net.init() if params is None else params)
    optimizer = as_optimizer(optimizer, 1.0 if lr is None and optimizer is None else lr)
    steps, _ = check_steps_lr(steps, optimizer.lr)
    batch_schedule(len(X), batch_size, steps, seed)  # refuses a bad batch_size or seed
    if progress is not None and not callable(progress):
        raise TypeError(
            f"progress must be a callable (done, total, label) or None; got {progress!r}"
        )
    if not is_count(repeats, 1):
        raise ValueError(f"repeats must be an integer of at least 1; got {repeats!r}")
    if finite_differences is not None and finite_differences not in FD_MODES:
        raise ValueError(
            f"finite_differences must be one of {', '.join(FD_MODES)} or None; "
            f"got {finite_differences!r}"
        )
    requested = [resolve(b) for b in (available_backends() if backends is None else backends)]
    if not requested:
        raise ValueError("backends must name at least one backend; got none")
    names = [b.name for b in requested]
    if len(set(names)) != len(names):
        raise ValueError(f"backends must have distinct names; got {names}")
    if reference is None:
        reference = "jax" if "jax" in available_backends() else requested[0]
    reference = resolve(reference)
    untrained = list(
        dict.fromkeys(b.name for b in [*requested, reference] if not hasattr(b, "train"))
    )
    if steps > 0 and untrained:
        raise ValueError(
            f"steps must be 0 for a backend without a train method ({', '.join(untrained)}), "
            f"which compares predictions, loss and gradients only; got {steps}"
        )
    return _Call(
        net,
        X,
        y,
        params,
        requested,
        _Reference(reference, net.dtype),
        Training(steps, optimizer, batch_size, seed),
    )


@dataclass(frozen=True)
class _Limits:
    """What the reference's reproductions of its own run set: the tolerances of the net's dtype
    and of float64, conditioned on how far one rounding moves the run (``sensitivity``), and
    the ``horizon`` of steps over which it reproduces itself."""

    tolerance: Tolerances
    tolerance64: Tolerances
    sensitivity: float
    horizon: Horizon


def _limits(call: _Call, want: _Outputs) -> _Limits:
    """The reference's run ``want`` reproduced from params and inputs moved by one rounding, in
    float64 and, for a float32 net, in float32: each correct run has its own rounding."""
    c, ref = call, call.reference.backend
    tol, tol64 = (tolerances(n, c.X.shape[0], c.training.steps) for n in (c.net, c.net64))
    rounding = tol64.rounding
    repro64 = _reproduction(ref, c.training, c.net64, c.params64, c.X64, c.y64, want, rounding)
    repro = repro64
    if c.net.dtype != "float64":
        rounding = float(np.finfo(c.net.dtype).eps)
        repro = repro64.worst(
            _reproduction(ref, c.training, c.net, c.params, c.X, c.y, want, rounding)
        )
    reach = horizon(repro.losses, rounding, want.losses)
    sensitivity = repro.sensitivity(reach)
    return _Limits(
        conditioned(tol, sensitivity),
        conditioned(tol64, repro64.sensitivity(reach)),
        sensitivity,
        reach,
    )


def _blocs(
    jury: _Jury, outputs: dict[str, _Outputs], oracle: _Oracle | None, reach: Horizon
) -> dict[str, list[list[str]]]:
    """Every group's blocs of implementations that agree (`_Jury.blocs`); the finite
    differences vote on what they measure, and a run that does not reproduce itself leaves
    nothing to vote on."""
    blocs = {}
    for group in GROUPS:
        if group == "training run" and not reach.comparable:
            continue
        members = list(outputs)
        if oracle is not None and group in ORACLE_GROUPS:
            members.append(FINITE_DIFFERENCES)
        blocs[group] = jury.blocs(group, members)
    return blocs


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
    call = _validate(
        net, X, y, params, backends, steps, lr, reference, finite_differences, optimizer,
        batch_size, seed, progress, repeats,
    )  # fmt: skip
    net, X, y, params, ref = call.net, call.X, call.y, call.params, call.reference
    others = [b for b in call.backends if b.name != ref.name]
    judged = {b.name for b in others}  # held to the net's dtype's tolerance; the rest to float64's
    stages = _Stages(progress, 2 + len(others) + (finite_differences is not None) + 1)

    # The reference's own runs, then how far the training call amplifies rounding: the
    # tolerance of the call and the horizon beyond which the reference no longer reproduces it.
    stages.begin(f"{ref.backend.name} (the reference)")
    want = _run(ref.backend, call.net64, call.params64, call.X64, call.y64, call.training, timing)
    stages.begin("the horizon")
    limits = _limits(call, want)

    outputs = {ref.name: want}
    for backend in others:
        stages.begin(backend.name)
        outputs[backend.name] = _run(backend, net, params, X, y, call.training, timing)
    run_to_run = {}
    if repeats > 1:  # every implementation again, from the same inputs
        stages.then("the repeats")
        run_to_run[ref.name] = _run_to_run(
            want, ref.backend, call.net64, call.params64, call.X64, call.y64, call, repeats
        )
        for backend in others:
            run_to_run[backend.name] = _run_to_run(
                outputs[backend.name], backend, net, params, X, y, call, repeats
            )
    oracle = None
    if finite_differences is not None:
        within = stages.begin(f"finite differences ({finite_differences})")
        oracle = _Oracle(call.net64, call.params64, X, y, finite_differences, within)

    # Compare every implementation with the reference, and vote on who is wrong.
    stages.begin("the verdict")
    jury = _Jury(
        ref.name,
        outputs,
        oracle,
        lambda name: limits.tolerance if name in judged else limits.tolerance64,
        # Predictions and gradients are sums; their rounding is relative to what they sum, and
        # a loss's to what it inherits from the outputs.
        Magnitudes(
            prediction_magnitudes(call.net64, call.params64, X),
            gradient_magnitudes(call.net64, call.params64, X, y),
            loss_magnitude(call.net64, call.params64, X, y),
        ),
        limits.horizon,
    )
    compared = [*([FINITE_DIFFERENCES] if oracle is not None else []), *outputs]
    checks = [c for name in compared if name != ref.name for c in jury.checks(name, ref.name)]
    verdicts = _verdicts(ref.name, _blocs(jury, outputs, oracle, limits.horizon), jury.finding)

    # Locate and explain each implementation that disagrees.
    first_differences: list[explain.FirstDifference] = []
    explanations: list[explain.Explanation] = []
    failures = [c for c in checks if not c.ok]
    if failures:
        stages.then("the explanations")
        first_differences, explanations = _explain(
            failures, {b.name: b for b in others}, call, limits, outputs
        )
    stages.end()
    timings = {b.name: outputs[b.name].timing for b in call.backends}
    if oracle is not None and oracle.choice.estimate is not None:
        timings[FINITE_DIFFERENCES] = {"elementwise_estimate": oracle.choice.estimate}
    return Report(
        net=net,
        n_samples=X.shape[0],
        steps=call.training.steps,
        lr=float(call.training.optimizer.lr),
        reference=ref.label,
        backends=[b.name for b in call.backends],
        optimizer=call.training.optimizer,
        batch_size=call.training.batch_size,
        seed=call.training.seed,
        sensitivity=limits.sensitivity,
        horizon=limits.horizon,
        witness=None if oracle is None else oracle.describe(),
        checks=checks,
        verdicts=verdicts,
        timings=timings,
        stages=stages.seconds,
        first_differences=first_differences,
        explanations=explanations,
        reference_losses=want.losses,
        losses={name: got.losses for name, got in outputs.items() if name != ref.name},
        run_to_run=run_to_run,
    )


def _run_to_run(
    first: _Outputs,
    backend: Backend,
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    call: _Call,
    repeats: int,
) -> dict[str, float]:
    """The largest relative difference of each quantity between ``first`` and ``repeats - 1``
    more runs of ``backend`` from the same inputs."""
    differences: dict[str, float] = {}
    for _ in range(repeats - 1):
        again = _run(backend, net, params, X, y, call.training, timing=False)
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


def _explain(
    failures: list[Check],
    backends: dict[str, Backend],
    call: _Call,
    limits: _Limits,
    outputs: dict[str, _Outputs],
) -> tuple[list[explain.FirstDifference], list[explain.Explanation]]:
    """Localise and explain each disagreeing backend (`gradcheck.explain`): its first
    differing tensor when it and the reference have a ``trace``, and the simple causes that fit
    each group of quantities it fails."""
    p, reference = call, call.reference.backend
    want = outputs[call.reference.name]
    magnitudes = backward_magnitudes(p.net64, p.params64, p.X64, p.y64)  # (deltas, gradients)
    reference_trace = _trace(reference, p.net64, p.params64, p.X64, p.y64)
    first_differences, explanations = [], []
    for name in dict.fromkeys(check.backend for check in failures):
        if name not in backends:
            continue  # the finite differences, or the reference's own float64 run
        backend, got = backends[name], outputs[name]
        groups = {_group_of(c.quantity) for c in failures if c.backend == name}
        trace = _trace(backend, p.net, p.params, p.X, p.y) if reference_trace else None
        if trace is not None and reference_trace is not None:
            found = explain.first_difference(
                name, trace, reference_trace, p.net64, p.params64, p.X64, magnitudes,
                limits.tolerance.point,
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
            name, backend, groups, got, want, p, limits, magnitudes[1], extra, reference_trace
        )
    return first_differences, explanations


def _trace(backend: Backend, net: Network, params: Params, X: Any, y: Any) -> Trace | None:
    """The backend's `Trace`, or None when it has no ``trace`` (it is optional)."""
    trace = getattr(backend, "trace", None)
    return trace(net, params, X, y) if callable(trace) else None


def _explanations(
    name: str,
    backend: Backend,
    groups: set[str],
    got: _Outputs,
    want: _Outputs,
    p: _Call,
    limits: _Limits,
    magnitudes: Params,
    extra: list[str],
    reference_trace: Trace | None,
) -> list[explain.Explanation]:
    """The hypotheses that fit, group by group in the order of the computation. A forward that
    differs explains everything after it, so the groups after it are not explained again; a
    training run is explained when its gradients agree or differ by one common factor."""
    point = limits.tolerance.point
    loss = (
        explain.explain_loss(name, p.net, got.loss, got.predictions, p.y, point, p.sizes)
        if groups & {"predictions", "loss"}
        else []
    )
    if "predictions" in groups:
        found = explain.explain_own_weights(
            backend, p.net, p.params, p.X, p.y, "predictions", got.predictions, None, extra
        )
        return found + loss or [explain.none(name, "predictions")]
    found = []
    if "loss" in groups:
        found += loss or [explain.none(name, "loss")]
    factors = explain.simple_factors(p.sizes)
    if "gradient" in groups:
        derivative = (
            explain.derivative_at_activation(p.net64, p.params64, p.X64, reference_trace)
            if reference_trace is not None
            else None
        )
        gradient = explain.explain_gradients(
            name, got.grads, want.grads, magnitudes, point, p.sizes, derivative
        )
        found += gradient
        common = [
            e.factor
            for e in gradient
            if e.kind in ("scale", "sign") and len(e.layers) == p.net.depth and e.factor is not None
        ]  # the run of gradients scaled by a factor is the reference's with lr times it
        factors = [explain.named_factor(f, p.sizes) or (f, "") for f in common[:1]]
    # a run that diverged is reported as such; no simple cause is looked for in it
    losses = got.losses[: limits.horizon.steps]
    if "training run" in groups and factors and np.all(np.isfinite(losses)):
        if p.training.plain:  # the factors are hypotheses about gradient descent's steps
            training = explain.explain_training(
                name, p.reference.backend, p.net, p.params64, p.X64, p.y64, p.training.optimizer.lr,
                losses, factors,
            )  # fmt: skip
        else:
            training = explain.explain_optimizer(
                name, p.reference.backend, p.net64, p.params64, p.X64, p.y64, p.training,
                Trajectory(got.params, got.losses), limits.tolerance.trajectory,
            )  # fmt: skip
        training = training or explain.explain_own_weights(
            backend, p.net, p.params, p.X, p.y, "training run", got.losses, p.training, extra
        )
        found += training or [explain.none(name, "training run")]
    return found
