"""The result row every check shares, and every comparison that makes one.

A `Check` is one quantity an implementation computed against an oracle: its worst element, the
error there relative to what its rounding scales with, and the tolerance it was held to.
``verify``, ``check_backward`` and ``check_rule`` make them here:

- `against_reference`: an array against a reference implementation's (``verify``'s reference
  backend, ``jax.vjp``);
- `against_outputs`: everything one backend computed (`Outputs`) against another's —
  predictions, loss, gradients, and the training run over the horizon where the reference
  reproduces itself;
- `against_witness`: a backend's outputs against the finite-difference witness
  (`finite_diff.NetworkWitness`), through `finite_diff.compare`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.finite_diff import FINITE_DIFFERENCES, Comparison, NetworkWitness, compare
from gradcheck.ladder import DERIVATIVE, PRECISION
from gradcheck.network import Params
from gradcheck.tolerance import Horizon, Magnitudes, layer_scales, relative_error, relative_errors

#: The public names, as the API reference shows them.
__all__ = [
    "Check",
    "Outputs",
    "against_outputs",
    "against_reference",
    "against_witness",
    "shaped_like",
]


# --- the result row ------------------------------------------------------------------------------

#: How a line names the part of the dtype ladder a check judges.
PARTS = {
    DERIVATIVE: "derivative (float64)",
    PRECISION: "precision",
}


@dataclass(frozen=True)
class Check:
    """One comparison, for ``verify`` and ``check_backward`` alike: the worst element (or
    direction) of one quantity an implementation computed, against an oracle.

    ``backend`` is the implementation judged (``"backward"`` in ``check_backward``). A check of
    a network's quantity has ``layer`` (1-based) and ``param`` (``"W"``, ``"b"``, or
    ``"directional"`` for a gradient seen along random directions) where they apply; a check of
    a named input's gradient has ``input``. ``index`` is the worst element's (for ``train
    losses``, the step; for directions, the direction's).
    """

    backend: str
    quantity: str
    error: float
    tolerance: float
    layer: int | None = None
    param: str | None = None
    index: tuple[int, ...] = ()
    #: What else the comparison found (`Comparison.detail`), or what was wrong with the array.
    detail: str = ""
    #: For ``train losses``: the first step whose loss leaves the tolerance.
    first_step: int | None = None
    #: What it was compared with: the reference, `FINITE_DIFFERENCES`, ``jax.vjp``.
    oracle: str = ""
    #: ``"elementwise"`` or ``"directional"`` (⟨g, v⟩ per random direction).
    mode: str = "elementwise"
    #: The finite differences were noisier than a smooth function allows (`noise_limit`); the
    #: tolerance is held at that limit.
    noisy: bool = False
    #: The implementation's value at ``index`` and the oracle's, where they were kept.
    observed: float = math.nan
    expected: float = math.nan
    #: Estimates skipped on a kink, estimates a smaller step settled, and the largest relative
    #: error among the skipped ones that have a value.
    kinks: int = 0
    resolved: int = 0
    skipped_error: float | None = None
    #: What fits a disagreement of this array alone: "dx is 2 × the finite differences".
    hint: str = ""
    #: The named input whose gradient this is (``check_backward``).
    input: str | None = None
    #: What ``error`` is relative to: "|expected| max of x, 7.5".
    relative_to: str = ""
    #: On the dtype ladder (`gradcheck.ladder`), which part this check judges: the derivative
    #: (the float64 run against the oracle) or the precision (the narrow run against the
    #: float64 run); empty off the ladder.
    part: str = ""

    @classmethod
    def of(
        cls,
        c: Comparison,
        backend: str,
        quantity: str,
        oracle: str,
        *,
        layer: int | None = None,
        param: str | None = None,
        input: str | None = None,
        hint: str = "",
    ) -> Check:
        """The check a `Comparison` with finite differences makes."""
        flat = int(np.ravel_multi_index(c.index, c.expected.shape)) if c.expected.size else 0
        name = input or quantity
        over = f"over {name}'s directions" if c.mode == "directional" else f"of {name}"
        return cls(
            backend,
            quantity,
            c.error,
            c.tolerance,
            layer,
            param,
            c.index,
            c.detail,
            oracle=oracle,
            mode=c.mode,
            noisy=c.noisy,
            observed=float(c.observed.flat[flat]) if c.observed.size else math.nan,
            expected=float(c.expected.flat[flat]) if c.expected.size else math.nan,
            kinks=c.kinks,
            resolved=c.resolved,
            skipped_error=c.skipped_error,
            hint=hint,
            input=input,
            relative_to=f"|expected| max {over}, {c.scale:.6g}" if c.scale > 0 else "",
        )

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance  # False for NaN

    @property
    def where(self) -> str:
        """The worst element: ``layer 2 W[3, 0]``, ``step 17``, ``direction 3``, ``[1, 2]``."""
        if self.quantity == "train losses" and self.index:
            return f"step {self.index[0]}"
        if self.quantity == "loss":
            return ""
        if self.mode == "directional":
            return f"direction {self.index[0]}" if self.index else ""
        index = f"[{', '.join(str(i) for i in self.index)}]" if self.index else ""
        if self.layer is None:
            return index
        return f"layer {self.layer} {self.param}{index}"

    @property
    def cells(self) -> tuple[str, str, str, str]:
        """The row's quantity, where, error and tolerance, as every table shows them."""
        return self.quantity, self.where, f"{self.error:.1e}", f"{self.tolerance:.1e}"

    def describe(self) -> str:
        """One line: ``numpy: gradient layer 2 W[3, 0]: relative error …`` for a network's
        quantity; ``input x[1] against finite differences (elementwise): observed …, expected
        …, relative error …`` for an input's gradient. A failing one says what its error is
        relative to; one on the dtype ladder, which part it judges."""
        part = f"{PARTS[self.part]}: " if self.part else ""
        if self.input is None:
            return f"{part}{self.backend}: {self.finding()}"
        where = self.where if self.mode == "elementwise" else f" {self.where}"
        values = (  # a NaN the implementation gave is shown
            f"observed {self.observed:.6g}, expected {self.expected:.6g}, "
            if math.isfinite(self.expected)
            else ""
        )
        hint = f"; {self.hint}" if self.hint else ""
        detail = f" ({self.detail})" if self.detail else ""
        rule = "" if self.backend == "backward" else f"{self.backend}: "  # another rule named
        return (
            f"{part}{rule}input {self.input}{where.rstrip()} against {self.oracle} ({self.mode}): "
            f"{values}relative error {self.error:.1e}{self._relative_to()}, "
            f"tolerance {self.tolerance:.1e}{hint}{detail}"
        )

    def _relative_to(self) -> str:
        """`` (relative to |expected| max of x, 7.5)`` on a failing check that knows it."""
        return f" (relative to {self.relative_to})" if self.relative_to and not self.ok else ""

    def finding(self) -> str:
        """What was found, without the backend: quantity, where, error against tolerance."""
        where = f" {self.where}" if self.where else ""
        detail = f" ({self.detail})" if self.detail else ""
        first = (
            f", first out of tolerance at step {self.first_step}"
            if self.first_step is not None and not self.ok
            else ""
        )
        return (
            f"{self.quantity}{where}: relative error {self.error:.1e}{self._relative_to()} "
            f"against tolerance {self.tolerance:.1e}{first}{detail}"
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
            "first_step": self.first_step,
            "relative_to": self.relative_to,
            "part": self.part,
            "input": self.input,
            "oracle": self.oracle,
            "mode": self.mode,
        }


def against_reference(
    backend: str,
    quantity: str,
    observed: Any,
    expected: Any,
    tolerance: float,
    *,
    oracle: str = "",
    layer: int | None = None,
    param: str | None = None,
    input: str | None = None,
    magnitude: np.ndarray | None = None,
    elementwise: bool = False,
) -> Check:
    """An array against a reference implementation's (``verify``'s reference backend,
    ``jax.vjp``): its worst relative error as the tolerance policy measures it
    (`tolerance.relative_error`: to the size of its terms, given their ``magnitude``, or with
    ``elementwise`` to each value's own), held to ``tolerance``. A missing or misshapen array
    fails with what was wrong; a training run's losses that leave the tolerance say at
    which step (``first_step``)."""
    failed = Check(backend, quantity, math.inf, tolerance, layer, param, oracle=oracle, input=input)
    if observed is None:
        return dataclasses.replace(failed, detail="missing")
    observed, expected = np.asarray(observed), np.asarray(expected)
    if observed.shape != expected.shape:
        return dataclasses.replace(
            failed, detail=f"shape {observed.shape}, expected {expected.shape}"
        )
    error, index = relative_error(observed, expected, elementwise=elementwise, magnitude=magnitude)
    at = index if index else (0,) * observed.ndim
    first_step = None
    if quantity == "train losses" and error > tolerance:  # where the run left the tolerance
        errors = relative_errors(observed, expected, elementwise=elementwise)
        first_step = int(np.argmax(errors > tolerance))
    return dataclasses.replace(
        failed,
        error=error,
        index=index,
        observed=float(observed[at]) if observed.size else math.nan,
        expected=float(expected[at]) if expected.size else math.nan,
        first_step=first_step,
        relative_to=_relative_to(failed, expected, at, magnitude, elementwise),
    )


def _relative_to(
    check: Check,
    expected: np.ndarray,
    at: tuple[int, ...],
    magnitude: np.ndarray | None,
    elementwise: bool,
) -> str:
    """What `against_reference`'s error is relative to, as a failing line says it."""
    if not expected.size:
        return ""
    if elementwise:
        return f"|expected| there, {abs(float(expected[at])):.6g}"
    largest = float(np.abs(expected).max())
    if magnitude is not None:
        return f"the largest magnitude of the terms summed, {max(largest, magnitude.max()):.6g}"
    name = check.input or (f"layer {check.layer} {check.param}" if check.layer else check.quantity)
    return f"|expected| max of {name}, {largest:.6g}"


@dataclass(frozen=True)
class Outputs:
    """Everything one backend computes for one problem, as NumPy arrays: its predictions, loss
    and gradients at the starting params, its training run's losses and final params, and how
    long each part took (seconds by stage)."""

    predictions: np.ndarray
    loss: float
    grads: Params
    losses: np.ndarray
    params: Params
    timing: dict[str, float]


def shaped_like(backend: str, quantity: str, value: Any, like: Any) -> Any:
    """A backend's ``value`` as NumPy, checked against the structure of ``like``: an array
    (its shape), a number (a loss), or params (one dict of arrays per layer, with at least
    ``like``'s keys; one the network does not have is kept for the explanations). A clear
    TypeError or ValueError, naming the backend, the quantity, and what was expected and
    given, for anything else."""
    what = f"{backend}'s {quantity}"
    if isinstance(like, list):
        if not isinstance(value, (list, tuple)) or len(value) != len(like):
            given = f"{len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
            raise ValueError(
                f"{what} must be a list of one dict per layer with parameters ({len(like)}); "
                f"got {given}"
            )
        checked = []
        for layer, (got, want) in enumerate(zip(value, like, strict=True), start=1):
            if not isinstance(got, dict) or not set(want) <= set(got):
                keys = sorted(got) if isinstance(got, dict) else type(got).__name__
                raise ValueError(
                    f"{what} of layer {layer} must have keys {sorted(want)}; got {keys}"
                )
            named = {key: f"{quantity} {key} of layer {layer}" for key in want}
            # a key the network does not have is kept: it is explained, not refused
            checked.append(
                {**got, **{k: shaped_like(backend, named[k], got[k], want[k]) for k in want}}
            )
        return checked
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        array = np.asarray(None)
    shape = np.shape(like)
    if array.dtype.kind not in "fiu":
        expected = "a number" if shape == () else "a float array"
        raise TypeError(f"{what} must be {expected}; got {type(value).__name__} {value!r:.60}")
    if array.shape != shape and not (shape == () and array.size == 1):
        raise ValueError(f"{what} must have shape {shape}; got {array.shape}")
    return float(array.reshape(())) if shape == () else array


def against_params(
    backend: str,
    quantity: str,
    observed: Params,
    reference: Params,
    tolerance: float,
    magnitudes: Params | None = None,
) -> list[Check]:
    """Each array of ``observed`` (gradients or params, one dict per layer) against
    ``reference``'s, relative to ``magnitudes`` where given."""
    return [
        against_reference(
            backend,
            quantity,
            got.get(key),
            want[key],
            tolerance,
            layer=layer,
            param=key,
            magnitude=None if magnitudes is None else magnitudes[layer - 1][key],
        )
        for layer, (got, want) in enumerate(zip(observed, reference, strict=True), start=1)
        for key in want
    ]


def _predictions_and_loss(
    backend: str,
    got: Outputs,
    predictions: np.ndarray,
    loss: float,
    point: float,
    magnitudes: Magnitudes,
) -> list[Check]:
    """``got``'s predictions and loss against ``predictions`` and ``loss`` at the tolerance
    ``point``, each relative to the size its rounding scales with."""
    return [
        against_reference(
            backend, "predictions", got.predictions, predictions, point,
            magnitude=magnitudes.predictions,
        ),
        against_reference(
            backend, "loss", np.float64(got.loss), np.float64(loss), point, elementwise=True,
            magnitude=np.asarray(magnitudes.loss),
        ),
    ]  # fmt: skip


def against_outputs(
    backend: str,
    got: Outputs,
    want: Outputs,
    point: float,
    trajectory: float,
    magnitudes: Magnitudes,
    horizon: Horizon,
) -> list[Check]:
    """``got`` against ``want``: predictions, loss and gradients at the tolerance ``point``, and
    the training run over its ``horizon`` at ``trajectory`` — the losses of the steps there, the
    final params only for a whole run."""
    checks = [
        *_predictions_and_loss(backend, got, want.predictions, want.loss, point, magnitudes),
        *against_params(backend, "gradient", got.grads, want.grads, point, magnitudes.gradients),
    ]
    if not horizon.comparable:
        return checks
    losses, reference_losses = got.losses[: horizon.steps], want.losses[: horizon.steps]
    step = _diverged_at(losses)  # the reference reproduces itself, so is finite, up to here
    if step is not None:  # after its first non-finite loss a diverged run has nothing to compare
        diverged = Check(
            backend, "train losses", math.inf, trajectory, index=(step,),
            detail=f"diverged at step {step}", first_step=step,
        )  # fmt: skip
        return [*checks, diverged]
    checks.append(
        against_reference(
            backend, "train losses", losses, reference_losses, trajectory, elementwise=True
        )
    )
    if horizon.whole:
        inert = _inert(want.grads, magnitudes.gradients, point)
        trained = [{k: v for k, v in layer.items() if (i, k) not in inert}
                   for i, layer in enumerate(want.params)]  # fmt: skip
        params = against_params(
            backend, "train params", got.params, trained, trajectory, layer_scales(want.params)
        )
        if inert and params:
            names = ", ".join(f"layer {i + 1} {k}" for i, k in sorted(inert))
            note = f"not compared, the loss not depending on it (a zero gradient): {names}"
            params[0] = dataclasses.replace(params[0], detail=note)
        checks += params
    return checks


def _inert(grads: Params, magnitudes: Params, point: float) -> set[tuple[int, str]]:
    """The parameters the loss does not depend on, (layer, key) from 0: every element of the
    reference's gradient zero to within its rounding, as a bias before a BatchNorm has. Their
    training moves only rounding, which an optimizer that normalises its steps (Adam, RMSprop)
    makes as large as any step: two correct runs part there, and nothing else moves with them."""
    return {
        (i, key)
        for i, (layer, bounds) in enumerate(zip(grads, magnitudes, strict=True))
        for key, g in layer.items()
        if key in bounds and np.all(np.abs(g) <= point * bounds[key])
    }


def _diverged_at(losses: np.ndarray) -> int | None:
    """The first step whose loss is not finite, if any."""
    bad = ~np.isfinite(losses)
    return int(np.argmax(bad)) if bad.any() else None


def against_witness(
    backend: str, got: Outputs, witness: NetworkWitness, point: float, magnitudes: Magnitudes
) -> list[Check]:
    """``got``'s predictions, loss and gradient against the witness's: the first two at the
    policy's tolerance ``point``, the gradient through `finite_diff.compare`."""
    checks = _predictions_and_loss(
        backend, got, witness.predictions, witness.loss, point, magnitudes
    )
    if witness.directional is not None:
        d = witness.directional
        c = compare(
            d.project(got.grads), d.values, d.errors, d.kinks, floor=point, mode="directional",
            rounding=d.roundings,
        )  # fmt: skip
        return [*checks, Check.of(c, backend, "gradient", FINITE_DIFFERENCES, param="directional")]
    e = witness.elementwise
    assert e is not None  # the witness took one kind of differences or the other
    for layer, (grads, fd, err, kinks, rounding) in enumerate(
        zip(got.grads, e.grads, e.errors, e.kinks, e.roundings, strict=True), start=1
    ):
        for key in fd:
            observed = grads.get(key)
            if observed is None or np.shape(observed) != fd[key].shape:
                checks.append(
                    against_reference(
                        backend, "gradient", observed, fd[key], point, layer=layer, param=key
                    )
                )
                continue
            c = compare(
                observed, fd[key], err[key], kinks[key], floor=point, mode="elementwise",
                rounding=rounding[key],
            )  # fmt: skip
            checks.append(
                Check.of(c, backend, "gradient", FINITE_DIFFERENCES, layer=layer, param=key)
            )
    return checks
