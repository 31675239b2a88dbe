"""Check a user's own backward kernel — any function, not only the MLP — against finite differences.

``forward(*inputs)`` returns an array y (or a tuple of arrays); ``backward(u, *inputs)`` returns
one gradient per input, ∂⟨u, y⟩/∂x_i for the cotangent u. With random Gaussian cotangents the
scalar ⟨u, y⟩ sees every output, so no output's gradient can hide (a sum of the outputs, the
usual shortcut, is the single cotangent of ones). Its derivatives are taken by
Richardson-extrapolated central differences in float64 (``gradcheck.finite_diff``), element by
element for small inputs and along random directions for large ones (the same lines for every
cotangent, so one forward pass gives ⟨u, y⟩ for all of them), and, when a jax-traceable
``jax_forward`` is given, compared with ``jax.vjp`` as well.

What real kernels do is not mistaken for a wrong gradient:

- **Kinks.** A step that crosses a kink of a piecewise function (relu, max-pooling, a hinge) is
  retried with smaller steps; a point that sits on one, where the kernel chose a one-sided slope,
  is reported as a kink and not compared, with the largest error among such points shown
  (``finite_diff.near_kinks``). A point is on a kink only where its one-sided slopes stay apart
  as the step grows; a smaller step settles a point only where it can tell the first estimate
  from the kernel's value; and a second look may lower the noise level all the estimates are
  held to, never raise it — so float32 noise cannot pass for a kink, nor loosen the check.
- **float32.** The precision is the narrowest of the differentiated inputs' and the outputs'
  dtypes: it sets the step, the rounding floor and the noise limit. Perturbations are made in
  each input's own dtype.
- **In-place updates.** ``forward`` and ``backward`` get copies: a backward that updates its
  cotangent or an input in place (``dout += …``) is named in a note, and the check is unharmed.
- **Stale state.** ``backward`` is called after ``forward`` has seen another input, so a backward
  that leans on a cache left by the last forward call is caught. That input is a mix of the
  input with a shuffle of its own last axis, so it keeps every box, sign and row-sum constraint
  the input meets; a forward that raises on it is named in a note, not taken for a wrong
  gradient.

Adapters for kernels written as ``(out, cache)`` pairs or as layer objects are in
`gradcheck.adapters`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from gradcheck import display, explain
from gradcheck.arguments import (
    binds,
    check_settings,
    chosen_inputs,
    described,
    float_input,
    input_names,
    narrowest,
)
from gradcheck.autodiff import JAX, as_tuple
from gradcheck.compare import Check, against_reference
from gradcheck.finite_diff import (
    DIRECTIONS,
    ELEMENTWISE_MAX,
    FINITE_DIFFERENCES,
    TINY,
    Comparison,
    Directions,
    Line,
    along,
    differentiate,
    judge,
    memoised,
)
from gradcheck.ladder import (
    DERIVATIVE,
    FLOAT64_RUN,
    PRECISION,
    narrower_than_float64,
    probe,
    widened,
)
from gradcheck.tolerance import drift, ratio, rounding_floor

JAX_VJP, JAX_JVP = "jax.vjp", "jax.jvp"
#: The rules a `check_backward` or `check_jvp` judges, as their checks name them.
BACKWARD, JVP = "backward", "jvp"
_SALT = 0x67726164  # "grad"


#: ``check_backward``'s name for its checks: one `compare.Check` per cotangent, input and
#: oracle.
InputCheck = Check


def _checked(
    input: str, oracle: str, c: Comparison, rule: str = BACKWARD, quantity: str = "gradient"
) -> Check:
    hint = "" if c.ok else _hint(input, oracle, c.observed, c.expected, c.tolerance)
    return Check.of(c, rule, quantity, oracle, input=input, hint=hint)


def _hint(input: str, oracle: str, observed: Any, expected: Any, tolerance: float) -> str:
    """ "dx is 2 × the finite differences" when one factor maps the oracle's values onto the
    kernel's within the tolerance, and the factor is not 1 (`gradcheck.explain`)."""
    found = explain.explain_inputs({input: observed}, {input: expected}, oracle, tolerance)
    return next((e.text for e in found if e.kind in ("scale", "sign")), "")


@dataclass(frozen=True)
class BackwardCheck:
    """What `check_backward` (or `check_jvp`) compared: ``checks`` has one entry per cotangent
    (tangent), input, rule and oracle; ``findings`` the worst of them per input, rule and
    oracle; ``notes`` what the kernel did that is not a wrong gradient (it changed its cotangent
    in place, its forward raised near the input)."""

    checks: list[Check]
    #: How many random cotangents (for `check_jvp`, tangents per input) were checked.
    cotangents: int
    forward_passes: int
    notes: list[str] = field(default_factory=list)
    #: What fits the gradients that disagree with the finite differences (`gradcheck.explain`):
    #: a factor, a sign, a transpose, two inputs swapped, or none.
    explanations: list[explain.Explanation] = field(default_factory=list)
    #: The rules judged: ``("backward",)``, ``("backward", "jvp")`` or ``("jvp",)``.
    rules: tuple[str, ...] = (BACKWARD,)
    #: What ``cotangents`` counts, as the summary names it.
    probes: str = "cotangents"
    #: The largest relative run-to-run difference of ``forward`` at the inputs and, with
    #: ``repeats``, of ``backward`` for the same cotangent: 0.0 for a deterministic function.
    nondeterminism: dict[str, float] = field(default_factory=dict)
    #: The narrow dtype judged at float64's resolution by the dtype ladder (`gradcheck.ladder`):
    #: "float32", or "" when the ladder did not run (the notes say why, when it could not).
    ladder: str = ""

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def findings(self) -> list[Check]:
        worst: dict[tuple[str, str | None, str, str], Check] = {}
        for check in self.checks:
            key = (check.backend, check.input, check.oracle, check.part)
            if key not in worst or _badness(check) > _badness(worst[key]):
                worst[key] = check
        return list(worst.values())

    def summary(self) -> str:
        verb = ("agrees", "disagrees") if len(self.rules) == 1 else ("agree", "disagree")
        status = f"{explain.listing(self.rules)} {verb[0] if self.ok else verb[1]}"
        ladder = f"; {self.ladder} judged at float64's resolution" if self.ladder else ""
        return (
            f"{status} ({self.cotangents} {self.probes}, {self.forward_passes} forward passes"
            f"{ladder})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON takes it: the verdict, the checks and what explains them."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "rules": list(self.rules),
            "ladder": self.ladder,
            "forward_passes": self.forward_passes,
            self.probes: self.cotangents,
            "notes": self.notes,
            "explanations": [e.to_dict() for e in self.explanations],
            "nondeterminism": self.nondeterminism,
            "checks": [check.to_dict() for check in self.checks],
        }

    def heading(self) -> list[str]:
        return []

    def verdict_lines(self) -> list[str]:
        """The summary, then what explains a disagreement and what the kernel did besides."""
        why = [f"why: {e.text}" for e in self.explanations if e.fits]
        return [self.summary(), *why, *(f"note: {note}" for note in self.notes)]

    def table(self) -> tuple[tuple[str, ...], list[tuple[tuple[str, ...], Check | None]]]:
        """The HTML table's header and rows: the worst finding per input and oracle."""
        header = ("input", "oracle", "mode", "finding", "error", "tolerance")
        findings = sorted(self.findings, key=lambda f: -_badness(f))  # worst first
        rows: list[tuple[tuple[str, ...], Check | None]] = [
            ((f.input or "", f.oracle, f.mode, f.describe(), *f.cells[2:]), f) for f in findings
        ]
        return header, rows

    def _repr_html_(self) -> str:
        return display.html(self, "gradcheck-backward")

    def __str__(self) -> str:
        why = {e.text for e in self.explanations if e.fits}  # said once, on its own line
        lines = [f"{self.summary()}:"]
        lines += [
            f"  {'ok  ' if f.ok else 'FAIL'} "
            f"{(dataclasses.replace(f, hint='') if f.hint in why else f).describe()}"
            for f in self.findings
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  why: {e.text}" for e in self.explanations if e.fits]
        return "\n".join(lines)


def _badness(check: Check) -> float:
    return ratio(check.error, check.tolerance)


def check_backward(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    *inputs: Any,
    names: Sequence[str] | None = None,
    cotangents: int = 2,
    directions: int = 8,
    jax_forward: Callable[..., Any] | None = None,
    seed: int = 0,
    wrt: Sequence[str | int] | None = None,
    rtol: float | None = None,
    elementwise_max: int = ELEMENTWISE_MAX,
    raise_exception: bool = True,
    jvp: Callable[..., Any] | None = None,
    repeats: int = 1,
    in_float64: bool = True,
) -> BackwardCheck:
    """Check ``backward`` against finite differences of ``forward`` (and ``jax.vjp``).

    Args:
        forward: ``forward(*inputs) -> y``, an array or a tuple of arrays.
        backward: ``backward(u, *inputs)``, the gradient of ⟨u, y⟩ for each differentiated
            input, shaped like it: a tuple with one entry per input (entries for the inputs not
            in ``wrt`` are ignored) or one per differentiated input, or a bare array when only
            one input is differentiated. ``u`` is shaped like y (a tuple for a tuple).
        inputs: the arguments; the differentiated ones must be float arrays, the others
            (labels, masks, hyper-parameters) may be anything and are passed unchanged.
        names: a name per input for the messages (default ``x0``, ``x1``, …).
        cotangents: how many random Gaussian cotangents u to check.
        directions: random directions per input too large to check element by element.
        jax_forward: the same function written in jax.numpy, to compare with ``jax.vjp``.
        jvp: the forward-mode rule, ``jvp(v, *inputs)`` as `check_jvp` takes it; given, it is
            checked against the finite differences too, and the two rules against each other
            by the dot test: ⟨u, J v⟩ from ``jvp`` must equal ⟨Jᵀ u, v⟩ from ``backward`` for
            the random u and v, to the rounding of the two sums.
        repeats: with 2 or more, backward runs that many times for each cotangent, and the
            result's ``nondeterminism`` holds its largest relative run-to-run difference (forward
            always runs twice at the inputs: a forward that is not a function of its inputs, a
            dropout drawing its mask inside it, is named as such and not checked further).
        seed: for the cotangents, the directions and the stale-state probe.
        wrt: the inputs to differentiate, by name or position (default: every input).
        rtol: the relative tolerance for the kernel's rounding (default: the tolerance policy's,
            16·ε·√n for the narrowest precision involved).
        elementwise_max: inputs with at most this many elements are checked element by
            element; larger ones along ``directions`` random directions.
        raise_exception: raise AssertionError when a gradient disagrees (the default), or
            return the result with ``ok`` False.
        in_float64: with float32 (or float16) inputs, judge the code at float64's resolution
            too (`gradcheck.ladder`): run it on float64 copies of the inputs, check that run
            against float64 finite differences at float64's tolerance (the derivative), and
            the narrow run against it at the narrow dtype's rounding (the precision). Code
            that casts to float32 inside, returns float32 or raises on float64 is judged in its
            own dtype, and a note says so. False judges every input in its own dtype only.

    Returns:
        A `BackwardCheck`.

    Raises:
        AssertionError: with ``raise_exception``, naming for each input that disagrees the
            index (or direction), the kernel's value and the oracle's, the error and the
            tolerance, and a factor when the kernel's values are a multiple of the oracle's.
        ValueError, TypeError: for arguments that check nothing or cannot be checked, before any
            work is done.
    """
    __tracebackhide__ = True  # a failing check shows the caller's line, not ours
    check_settings(cotangents, directions, seed, rtol, elementwise_max, repeats)
    rules = {"backward": backward, "jvp": jvp}
    kernel = _Kernel.of(forward, inputs, names, wrt, rtol, rules)
    unsteady = _not_a_function(kernel, cotangents)
    if unsteady is not None:
        return _concluded(unsteady, {}, raise_exception)
    # A stream of its own: a user's inputs drawn from default_rng(seed) must not reappear as the
    # cotangent (for batch norm that cotangent lies in the Jacobian's null space: dx ≈ 0).
    rng = np.random.default_rng([seed, _SALT])
    drawn = [
        tuple(rng.standard_normal(y.shape).astype(y.dtype) for y in kernel.ys)
        for _ in range(cotangents)
    ]
    wide, narrow_only = kernel.widened(rules, drawn[0], in_float64)
    judged = wide or kernel
    judged_cotangents = [widened(us) for us in drawn] if wide else drawn
    run = _against_oracles(
        judged, backward, jvp, jax_forward, judged_cotangents, rng, directions, elementwise_max,
        repeats,
    )  # fmt: skip
    checks = run.checks
    # What explains a disagreement, in order: a stale cache; a backward that ignores its
    # cotangent (no factor then, so the lines' hints go); what explain_inputs finds; a backward
    # not linear in its cotangent, when nothing else fits.
    nonlinear = None if run.stale else _not_linear(judged, backward, judged_cotangents[0], run)
    explanations, compared, otherwise = [], run.compared, nonlinear
    if run.stale:
        explanations, compared = [explain.stale_state()], {}
    elif nonlinear is not None and nonlinear.factor == 1:
        explanations, compared, otherwise = [nonlinear], {}, None
        checks = [dataclasses.replace(check, hint="") for check in checks]
    if wide is not None:
        checks = _part(checks, DERIVATIVE) + _precision(kernel, backward, drawn, run.grads)
        if jvp is not None:
            checks += _tangent_precision(kernel, wide, jvp, rng)
    notes = _narrow_only(kernel, narrow_only) + run.notes
    notes += _steadiness(run.nondeterminism, judged.floor)
    result = BackwardCheck(
        checks,
        cotangents,
        kernel.passes + (wide.passes if wide else 0),
        list(dict.fromkeys(notes)),
        explanations,
        rules=(BACKWARD, JVP) if jvp is not None else (BACKWARD,),
        nondeterminism=run.nondeterminism,
        ladder=np.dtype(kernel.precision).name if wide else "",
    )
    return _concluded(result, compared, raise_exception, otherwise)


@dataclass
class _Run:
    """What a backward's run against the oracles found: the checks, the notes, each input's
    first comparison with finite differences (for the explanations), whether a stale cache
    explains a disagreement, the run-to-run differences, and the gradients per cotangent."""

    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: dict[str, Comparison] = field(default_factory=dict)
    stale: bool = False
    nondeterminism: dict[str, float] = field(default_factory=dict)
    grads: list[dict[int, np.ndarray]] = field(default_factory=list)


def _against_oracles(
    kernel: _Kernel,
    backward: Callable[..., Any],
    jvp: Callable[..., Any] | None,
    jax_forward: Callable[..., Any] | None,
    drawn: list[tuple[np.ndarray, ...]],
    rng: np.random.Generator,
    directions: int,
    elementwise_max: int,
    repeats: int,
) -> _Run:
    """backward, for each cotangent in ``drawn``, against finite differences of forward (and
    ``jax.vjp``, and jvp by the dot test), in the kernel's own dtype; jvp against finite
    differences too."""
    arrays, labels, differentiated = kernel.arrays, kernel.labels, kernel.differentiated
    run = _Run(nondeterminism={"forward": kernel.drift})
    u64s = [[np.asarray(c, np.float64) for c in us] for us in drawn]

    def pairings(xi: np.ndarray, i: int) -> np.ndarray:
        """⟨u, y⟩ for every cotangent u, with input i replaced by xi: one forward pass."""
        ys = kernel.evaluate(kernel.moved(i, xi))
        return np.array([sum(np.sum(c * y) for c, y in zip(u64, ys, strict=True)) for u64 in u64s])

    lines = {
        i: _Lines(
            arrays[i],
            Directions.through(
                arrays[i], kernel.precision, arrays[i].size <= elementwise_max, directions, rng
            ),
            partial(pairings, i=i),
        )
        for i in differentiated
    }
    for k, us in enumerate(drawn):
        u = us if kernel.tuple_output else us[0]
        run.notes += _probe(kernel.evaluate, arrays, differentiated, labels, rng)
        given = (_copy(u), *[_copy(a) for a in arrays])
        grads = backward(*given)
        run.notes += _modified(
            given, (u, *arrays), ["its cotangent", *[f"input {n}" for n in labels]]
        )
        pairs = len(kernel.ys) if kernel.tuple_output else 0
        grads, problems = _gradients(grads, arrays, differentiated, labels, pairs)
        run.checks += problems
        run.grads.append(grads)
        for _ in range(repeats - 1):
            again = _called(kernel, backward, u)
            moved = max((drift(again.get(i), grads[i]) for i in grads), default=0.0)
            run.nondeterminism["backward"] = max(run.nondeterminism.get("backward", 0.0), moved)
        found = {
            i: lines[i].against(k, grad, kernel.floor, kernel.precision)
            for i, grad in grads.items()
        }
        if not all(c.ok for c in found.values()) and not run.stale:
            run.stale = _stale(kernel, backward, u, lines, k, grads)
        for i, comparison in found.items():
            run.checks.append(_checked(labels[i], FINITE_DIFFERENCES, comparison))
            run.compared.setdefault(labels[i], comparison)
        if jax_forward is not None and grads:
            run.checks += _against_jax(jax_forward, arrays, us, grads, labels, kernel.floor)
        if jvp is not None and grads:
            run.checks += _dot_test(kernel, jvp, u, grads, rng)
    if jvp is not None:
        run.checks += _jvp_checks(kernel, jvp, len(drawn), rng, elementwise_max, None)[0]
    return run


def _not_a_function(
    kernel: _Kernel, probes: int, rules: tuple[str, ...] = (BACKWARD,), name: str = "cotangents"
) -> BackwardCheck | None:
    """A failed result when forward gave different outputs for the same inputs beyond the
    tolerance: finite differences of it measure its randomness, not its derivative."""
    if kernel.drift <= kernel.floor:
        return None
    text = (
        "forward gave different outputs for the same inputs, max relative difference "
        f"{kernel.drift:.1e}: fix the randomness with a seed or a mask argument"
    )
    check = Check("forward", "outputs", kernel.drift, kernel.floor, oracle="forward, run again",
                  detail="run twice at the same inputs")  # fmt: skip
    why = explain.Explanation("forward", "outputs", "nondeterministic", None, (), text)
    return BackwardCheck([check], probes, kernel.passes, explanations=[why], rules=rules,
                         probes=name, nondeterminism={"forward": kernel.drift})  # fmt: skip


def _not_linear(
    kernel: _Kernel, backward: Callable[..., Any], us: tuple[np.ndarray, ...], run: _Run
) -> explain.Explanation | None:
    """When backward disagrees with the finite differences: whether its gradients for the
    cotangent 2u are twice those for u, as the gradient of ⟨u, y⟩ is. Doubling is exact in
    floating point, so a linear backward doubles to its rounding; one that ignores its
    cotangent returns the same gradients (`explain.not_linear`)."""
    if all(c.ok for c in run.checks) or not run.grads or not run.grads[0]:
        return None
    grads = run.grads[0]
    doubled = _called(
        kernel, backward, tuple(2 * c for c in us) if kernel.tuple_output else 2 * us[0]
    )
    if set(doubled) != set(grads):
        return None
    once = np.concatenate([np.ravel(grads[i]).astype(np.float64) for i in sorted(grads)])
    twice = np.concatenate([np.ravel(doubled[i]).astype(np.float64) for i in sorted(grads)])
    if drift(twice, 2 * once) <= kernel.floor:
        return None
    norm = float(once @ once)
    factor = float(twice @ once) / norm if 0 < norm < math.inf else None
    if factor is None or not math.isfinite(factor) or drift(twice, factor * once) > kernel.floor:
        factor = None
    return explain.not_linear(factor)


def _stale(
    kernel: _Kernel,
    backward: Callable[..., Any],
    u: Any,
    lines: dict[int, _Lines],
    k: int,
    grads: dict[int, np.ndarray],
) -> bool:
    """Whether a backward that disagrees agrees when called right after forward at the same
    inputs: then it used state another forward call left (the probe's, at a nearby input)."""
    kernel.evaluate(kernel.arrays)
    again = _called(kernel, backward, u)
    return set(again) == set(grads) and all(
        lines[i].against(k, grad, kernel.floor, kernel.precision).ok for i, grad in again.items()
    )


def _called(kernel: _Kernel, backward: Callable[..., Any], u: Any) -> dict[int, np.ndarray]:
    """backward's well-formed gradients for the cotangent u, called on copies of the inputs."""
    found = backward(_copy(u), *[_copy(a) for a in kernel.arrays])
    return _gradients(found, kernel.arrays, kernel.differentiated, kernel.labels)[0]


def _steadiness(nondeterminism: dict[str, float], floor: float) -> list[str]:
    """A note for each function whose runs differ within the tolerance: nondeterministic, not
    wrong."""
    return [
        f"{name} is nondeterministic: its runs at the same inputs differ by up to {drift:.1e} "
        f"(relative), within the tolerance {floor:.1e}"
        for name, drift in nondeterminism.items()
        if 0 < drift <= floor
    ]


def _part(checks: list[Check], part: str) -> list[Check]:
    """The checks, marked as judging one part of the dtype ladder (`gradcheck.ladder`)."""
    return [dataclasses.replace(check, part=part) for check in checks]


def _precision(
    kernel: _Kernel,
    backward: Callable[..., Any],
    drawn: list[tuple[np.ndarray, ...]],
    wide_grads: list[dict[int, np.ndarray]],
) -> list[Check]:
    """The narrow run's gradients against the float64 run's for the same cotangents, held to
    the narrow dtype's rounding (`ladder.PRECISION`)."""
    checks = []
    for us, grads64 in zip(drawn, wide_grads, strict=True):
        grads = _called(kernel, backward, us if kernel.tuple_output else us[0])
        for i in sorted(set(grads) & set(grads64)):
            label = kernel.labels[i]
            checks.append(
                against_reference(
                    BACKWARD,
                    "gradient",
                    grads[i],
                    grads64[i],
                    kernel.floor,
                    oracle=FLOAT64_RUN,
                    input=label,
                )
            )
    return _part(checks, PRECISION)


def _tangent_precision(
    kernel: _Kernel, wide: _Kernel, jvp: Callable[..., Any], rng: np.random.Generator
) -> list[Check]:
    """The narrow run's output tangents against the float64 run's, for one random tangent
    per differentiated input, held to the narrow dtype's rounding (`ladder.PRECISION`)."""
    checks = []
    for i in kernel.differentiated:
        x = kernel.arrays[i]
        v = rng.standard_normal(x.shape).astype(x.dtype)
        narrow, float64 = _tangent_out(kernel, jvp, i, v), _tangent_out(wide, jvp, i, widened(v))
        checks.append(
            against_reference(
                JVP,
                "tangent",
                narrow,
                float64,
                kernel.floor,
                oracle=FLOAT64_RUN,
                input=kernel.labels[i],
            )
        )
    return _part(checks, PRECISION)


def _narrow_only(kernel: _Kernel, why_not: str) -> list[str]:
    """The note that the dtype ladder could not run, and why."""
    if not why_not:
        return []
    return [f"the derivative was judged at {np.dtype(kernel.precision).name}'s resolution only: "
            f"{why_not}"]  # fmt: skip


def check_jvp(
    forward: Callable[..., Any],
    jvp: Callable[..., Any],
    *inputs: Any,
    names: Sequence[str] | None = None,
    wrt: Sequence[str | int] | None = None,
    directions: int = 2,
    seed: int = 0,
    rtol: float | None = None,
    raise_exception: bool = True,
    jax_forward: Callable[..., Any] | None = None,
    elementwise_max: int = ELEMENTWISE_MAX,
    in_float64: bool = True,
) -> BackwardCheck:
    """Check a forward-mode rule ``jvp`` against finite differences of ``forward`` (and
    ``jax.jvp``).

    Each differentiated input gets ``directions`` random Gaussian tangents v of its own, the
    other inputs' tangents zero, so a disagreement names the input whose rule is wrong. The
    output tangent J v is checked element by element (or, for outputs of more than
    ``elementwise_max`` elements, along random projections of it) against the derivative of
    forward along v: 4 forward passes per tangent, whatever the input's size.

    Args:
        forward: ``forward(*inputs) -> y``, an array or a tuple of arrays.
        jvp: ``jvp(v, *inputs)``, the tangent of y (a tuple for a tuple) for the tangents ``v``:
            a tuple with one per differentiated input, or a bare array when only one input is
            differentiated.
        inputs: the arguments, as for `check_backward`.
        names: a name per input for the messages.
        wrt: the inputs to differentiate, by name or position (default: every input).
        directions: how many random tangents each differentiated input gets.
        seed: for the tangents and the output projections.
        rtol: the relative tolerance for the rule's rounding, as for `check_backward`.
        raise_exception: raise AssertionError when a tangent disagrees (the default).
        jax_forward: the same function in jax.numpy, to compare with ``jax.jvp``.
        elementwise_max: outputs with at most this many elements are checked element by
            element; larger ones along random projections.
        in_float64: judge float32 inputs at float64's resolution too, as for `check_backward`.

    Returns:
        A `BackwardCheck` whose checks judge ``jvp``.

    Raises:
        AssertionError: with ``raise_exception``, naming each input whose tangent disagrees.
        ValueError, TypeError: for arguments that check nothing or cannot be checked, before any
            work is done.
    """
    __tracebackhide__ = True  # a failing check shows the caller's line, not ours
    check_settings(1, directions, seed, rtol, elementwise_max)
    rules: dict[str, Callable[..., Any] | None] = {"jvp": jvp}
    kernel = _Kernel.of(forward, inputs, names, wrt, rtol, rules)
    unsteady = _not_a_function(kernel, directions, (JVP,), "tangents")
    if unsteady is not None:
        return _concluded(unsteady, {}, raise_exception)
    rng = np.random.default_rng([seed, _SALT])
    wide, narrow_only = kernel.widened(rules, kernel.ys, in_float64)
    checks, compared = _jvp_checks(wide or kernel, jvp, directions, rng, elementwise_max,
                                   jax_forward)  # fmt: skip
    if wide is not None:
        checks = _part(checks, DERIVATIVE) + _tangent_precision(kernel, wide, jvp, rng)
    result = BackwardCheck(
        checks,
        directions,
        kernel.passes + (wide.passes if wide else 0),
        _narrow_only(kernel, narrow_only),
        rules=(JVP,),
        probes="tangents",
        ladder=np.dtype(kernel.precision).name if wide else "",
    )
    return _concluded(result, compared, raise_exception)


def _concluded(
    result: BackwardCheck,
    compared: dict[str, Comparison],
    raise_exception: bool,
    otherwise: explain.Explanation | None = None,
) -> BackwardCheck:
    """The result with what explains its disagreements with the finite differences, or, when
    nothing does, ``otherwise`` (a backward not linear in its cotangent: a clipping rule is
    not, and is better named as one); raised as an AssertionError with
    ``raise_exception``."""
    __tracebackhide__ = True
    if not result.ok and compared:
        result.explanations.extend(
            explain.explain_inputs(
                {name: c.observed for name, c in compared.items()},
                {name: c.expected for name, c in compared.items()},
                FINITE_DIFFERENCES,
                max(c.tolerance for c in compared.values()),
            )
        )
    if otherwise is not None and not any(e.fits for e in result.explanations):
        result.explanations[:] = [otherwise]
    if raise_exception and not result.ok:
        raise AssertionError(str(result))
    return result


class _Kernel:
    """A forward function and its validated inputs: their names, which are differentiated, the
    outputs at them, the narrowest precision involved and the tolerance floor it sets.
    `evaluate` runs forward on copies and counts the passes."""

    def __init__(
        self,
        forward: Callable[..., Any],
        arrays: list[Any],
        labels: list[str],
        differentiated: list[int],
        rtol: float | None,
    ) -> None:
        self.forward, self.arrays, self.labels = forward, arrays, labels
        self.differentiated, self.rtol = differentiated, rtol
        self.passes = 0
        first = forward(*[_copy(a) for a in arrays])
        self.passes += 1
        self.ys, self.tuple_output = _outputs(first), isinstance(first, (tuple, list))
        _finite(self.ys, arrays, labels, differentiated)
        again = self.evaluate(arrays)
        #: The largest relative difference between two runs of forward at the inputs.
        self.drift = max(drift(z, y) for y, z in zip(self.ys, again, strict=True))
        self.precision = narrowest(
            [arrays[i].dtype for i in differentiated] + [y.dtype for y in self.ys]
        )
        size = sum(y.size for y in self.ys)
        self.floor = rtol if rtol is not None else rounding_floor(self.precision, size)

    @classmethod
    def of(
        cls,
        forward: Callable[..., Any],
        inputs: Sequence[Any],
        names: Sequence[str] | None,
        wrt: Sequence[str | int] | None,
        rtol: float | None,
        rules: dict[str, Callable[..., Any] | None],
    ) -> _Kernel:
        """The kernel, after a clear error for each argument that cannot be checked, forward's
        result first: ``rules`` maps ``"backward"`` or ``"jvp"`` to the rule given for it (or
        None)."""
        if not callable(forward):
            raise TypeError(f"forward must be a callable forward(*inputs); got {forward!r}")
        labels = input_names(names, len(inputs))
        differentiated = chosen_inputs(wrt, labels)
        arrays = list(inputs)
        for i in differentiated:
            arrays[i] = float_input(labels[i], inputs[i])
        _takes_inputs(forward, rules, labels)
        kernel = cls(forward, arrays, labels, differentiated, rtol)  # forward's result checked
        for role, rule in rules.items():
            if rule is not None:
                _takes(role, rule, labels)
        return kernel

    def widened(
        self, rules: dict[str, Callable[..., Any] | None], us: tuple[np.ndarray, ...], wanted: bool
    ) -> tuple[_Kernel | None, str]:
        """The same kernel on float64 copies of the differentiated inputs, when the dtype
        ladder applies (``wanted``, and a precision narrower than float64) and forward and
        each rule compute in float64 there (`ladder.probe`; ``us`` is a cotangent for
        backward's probe). Otherwise None and why not: "" when the ladder does not apply."""
        if not wanted or not narrower_than_float64(self.precision):
            return None, ""
        arrays = [widened(a) if i in self.differentiated else a for i, a in enumerate(self.arrays)]
        try:
            wide = _Kernel(self.forward, arrays, self.labels, self.differentiated, self.rtol)
        except Exception as error:  # the user's forward: an exception is not a verdict
            return None, f"forward raised on float64 copies ({type(error).__name__}: {error})"
        why = probe(wide.evaluate, arrays, self.differentiated, self.labels)
        if why is None and wide.drift > wide.floor:
            why = f"gives different outputs for the same float64 inputs ({wide.drift:.1e})"
        if why is not None:
            self.passes += wide.passes
            return None, f"forward {why}"
        first = {  # what each rule takes before the inputs: a cotangent, the tangents
            "backward": widened(us if self.tuple_output else us[0]),
            "jvp": wide.tangents(self.differentiated[0], arrays[self.differentiated[0]]),
        }
        for role, rule in rules.items():
            if rule is None:
                continue
            given = [first[role], *arrays]
            movable = [0, *(1 + i for i in self.differentiated)]
            what = [f"its {TAKES_FIRST[role][1]}", *self.labels]
            why = probe(partial(_calling, rule), given, movable, what)
            if why is not None:
                self.passes += wide.passes
                return None, f"{role} {why}"
        return wide, ""

    def evaluate(self, args: Sequence[Any]) -> tuple[np.ndarray, ...]:
        self.passes += 1
        return _outputs(self.forward(*[_copy(a) for a in args]))

    def moved(self, i: int, xi: np.ndarray) -> list[Any]:
        """The inputs with input i replaced by xi, in its own dtype."""
        args = list(self.arrays)
        args[i] = np.asarray(xi).astype(self.arrays[i].dtype)
        return args

    def tangents(self, i: int, v: np.ndarray) -> Any:
        """The tangents a jvp is given for v in input i: zero in the other differentiated
        inputs; a bare array when one input is differentiated."""
        vs = [v if j == i else np.zeros_like(self.arrays[j]) for j in self.differentiated]
        return vs[0] if len(vs) == 1 else tuple(vs)


def _tangent_out(kernel: _Kernel, jvp: Callable[..., Any], i: int, v: np.ndarray) -> np.ndarray:
    """jvp's output tangent for v in input i, the outputs' tangents flattened into one."""
    given = (_copy(kernel.tangents(i, v)), *[_copy(a) for a in kernel.arrays])
    out = jvp(*given)
    parts = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    if len(parts) != len(kernel.ys) or any(
        np.shape(p) != y.shape for p, y in zip(parts, kernel.ys, strict=False)
    ):
        shapes = [np.shape(p) for p in parts]
        raise ValueError(
            f"jvp must return a tangent shaped like each of forward's outputs "
            f"{[y.shape for y in kernel.ys]}; got {shapes}"
        )
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts])


def _jvp_checks(
    kernel: _Kernel,
    jvp: Callable[..., Any],
    directions: int,
    rng: np.random.Generator,
    elementwise_max: int,
    jax_forward: Callable[..., Any] | None,
) -> tuple[list[Check], dict[str, Comparison]]:
    """``jvp`` along ``directions`` random tangents per differentiated input, against the
    derivative of forward along each (`finite_diff.judge`), and ``jax.jvp`` of
    ``jax_forward``. Returns the checks and, per input, its first comparison."""
    size = sum(y.size for y in kernel.ys)
    outputs = Directions.through(
        np.zeros(size), kernel.precision, size <= elementwise_max, DIRECTIONS, rng
    )
    eps = float(np.finfo(kernel.precision).eps)
    checks: list[Check] = []
    compared: dict[str, Comparison] = {}
    for _ in range(directions):
        for i in kernel.differentiated:
            x, label = kernel.arrays[i], kernel.labels[i]
            line = Directions.through(x, kernel.precision, False, 1, rng)
            v = line.random[0].astype(x.dtype)
            v64, x64 = v.astype(np.float64), x.astype(np.float64)

            def projected(t: float, i: int = i, v64: np.ndarray = v64, x64: np.ndarray = x64):
                ys = kernel.evaluate(kernel.moved(i, x64 + t * v64))
                return outputs.project(np.concatenate([y.astype(np.float64).ravel() for y in ys]))

            values = memoised(projected)
            lines = [Line(partial(_pairing, values, j), line.steps[0]) for j in range(len(outputs))]
            observed = _tangent_out(kernel, jvp, i, v)
            comparison = judge(
                outputs.project(observed),
                lines,
                differentiate(lines, eps),
                floor=kernel.floor,
                mode=outputs.mode,
                dtype=kernel.precision,
            )
            checks.append(_checked(label, FINITE_DIFFERENCES, comparison, JVP, "tangent"))
            compared.setdefault(label, comparison)
            if jax_forward is not None:
                want = _jax_tangent(jax_forward, kernel, i, v)
                check = against_reference(
                    JVP, "tangent", observed, want, kernel.floor, oracle=JAX_JVP, input=label
                )
                checks.append(check)
    return checks, compared


def _jax_tangent(
    jax_forward: Callable[..., Any], kernel: _Kernel, i: int, v: np.ndarray
) -> np.ndarray:
    """``jax.jvp`` of ``jax_forward`` at the inputs, along v in input i, in x64 mode, the
    outputs' tangents flattened into one."""
    out = JAX.jvp(jax_forward)(v, [i], *kernel.arrays)
    return np.concatenate([np.asarray(t, np.float64).ravel() for t in as_tuple(out)])


def _dot_test(
    kernel: _Kernel,
    jvp: Callable[..., Any],
    u: Any,
    grads: dict[int, np.ndarray],
    rng: np.random.Generator,
) -> list[Check]:
    """The dot test: for a random tangent v in each differentiated input, ⟨u, J v⟩ from
    ``jvp`` against ⟨Jᵀ u, v⟩ from backward's ``grads`` for the cotangent u. The two are one
    number computed two ways; they differ by the rounding of the two sums, held to the
    tolerance floor relative to the larger sum of the products' magnitudes."""
    us = u if isinstance(u, tuple) else (u,)
    u64 = np.concatenate([np.asarray(c, np.float64).ravel() for c in us])
    checks = []
    for i, grad in grads.items():
        x = kernel.arrays[i]
        v = rng.standard_normal(x.shape).astype(x.dtype)
        forward_terms = u64 * _tangent_out(kernel, jvp, i, v)
        backward_terms = grad.astype(np.float64).ravel() * v.astype(np.float64).ravel()
        pairing, adjoint = float(forward_terms.sum()), float(backward_terms.sum())
        scale = max(np.abs(forward_terms).sum(), np.abs(backward_terms).sum(), TINY)
        checks.append(
            Check(
                JVP,
                "dot test",
                abs(pairing - adjoint) / scale,
                kernel.floor,
                oracle=BACKWARD,
                mode="dot test",
                observed=pairing,
                expected=adjoint,
                input=kernel.labels[i],
            )
        )
    return checks


# --- arguments -----------------------------------------------------------------------------------


#: What each rule takes before the inputs: a backward the cotangent u, a jvp the tangents v.
TAKES_FIRST = {"backward": ("u", "cotangent"), "jvp": ("v", "tangents")}


def _takes(role: str, rule: Callable[..., Any], labels: list[str]) -> None:
    """A clear error, before any derivative is taken, for a rule that cannot be called as
    ``role(u, *inputs)`` (``v`` for a jvp): a layer's ``gradient(x)`` given as a backward."""
    first, what = TAKES_FIRST[role]
    form = f"{role}({', '.join([first, *labels])})"
    if not callable(rule):
        raise TypeError(f"{role} must be a callable {form}; got {rule!r}")
    why = binds(rule, 1 + len(labels))
    if why is not None:
        raise TypeError(
            f"{role} must take the {what} and then each input, as {form}; "
            f"{described(rule)} cannot: {why}"
        )


def _takes_inputs(
    forward: Callable[..., Any], rules: dict[str, Callable[..., Any] | None], labels: list[str]
) -> None:
    """A clear error, before forward is called, for a forward that cannot take the inputs;
    when a rule given with it could, and could not take the cotangent too, the two are
    probably swapped and the error asks."""
    why = binds(forward, len(labels))
    if why is None:
        return
    swapped = [
        role
        for role, rule in rules.items()
        if callable(rule) and binds(rule, len(labels)) is None and binds(rule, len(labels) + 1)
    ]
    question = f"; {swapped[0]} could: are forward and {swapped[0]} swapped?" if swapped else ""
    raise TypeError(
        f"forward must take the inputs, as forward({', '.join(labels)}); "
        f"{described(forward)} cannot: {why}{question}"
    )


#: What a kernel written as ``forward -> (out, cache)`` is told to do.
FROM_CACHE = "if it is (out, cache), wrap the kernel with gradcheck.adapters.from_cache"


def _outputs(y: Any) -> tuple[np.ndarray, ...]:
    """forward's result as a tuple of float arrays."""
    values = tuple(y) if isinstance(y, (tuple, list)) else (y,)
    arrays = []
    for v in values:
        try:
            array = np.asarray(v)
        except ValueError:  # a ragged cache: "setting an array element with a sequence"
            array = np.asarray(None)
        if array.dtype.kind != "f":
            pair = len(values) > 1 and np.asarray(values[0]).dtype.kind == "f"
            raise TypeError(
                "forward returned a tuple whose first element is a float array and whose others "
                f"are not: {FROM_CACHE}"
                if pair
                else f"forward must return a float array or a tuple of them; got dtype "
                f"{array.dtype}"
            )
        arrays.append(array)
    return tuple(arrays)


def _finite(
    ys: tuple[np.ndarray, ...], arrays: list[Any], labels: list[str], differentiated: list[int]
) -> None:
    """A clear error for a forward that is not finite at the inputs given, naming the first
    output element that is not and, for inputs shaped like that output, their values there."""
    for k, y in enumerate(ys):
        bad = ~np.isfinite(y)
        if not bad.any():
            continue
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        index = f"[{', '.join(map(str, at))}]" if at else ""
        output = f"output {k}" if len(ys) > 1 else "its output"
        there = [
            f"{labels[i]}{index} = {float(arrays[i][at]):.6g}"
            for i in differentiated
            if arrays[i].shape == y.shape
        ]
        at_inputs = f", where {', '.join(there)}" if there else ""
        raise ValueError(
            f"forward returned {y[at]} in {output}{' at ' + index if index else ''}{at_inputs} "
            f"({int(bad.sum())} of "
            f"{y.size} values not finite) at the inputs given "
            f"({', '.join(labels[i] for i in differentiated)}): a derivative is checked only "
            "where the function is finite; choose inputs inside its domain (x > 0 for a log, "
            "for instance)"
        )


def _calling(rule: Callable[..., Any], args: Sequence[Any]) -> Any:
    """The rule called on copies of its arguments."""
    return rule(*map(_copy, args))


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


# --- the protocol --------------------------------------------------------------------------------


def _probe(
    evaluate: Callable[[Sequence[Any]], Any],
    arrays: list[Any],
    differentiated: list[int],
    labels: list[str],
    rng: np.random.Generator,
) -> list[str]:
    """Evaluate forward at another input in the input's neighbourhood, so that backward cannot
    lean on the last forward call's state. Each differentiated input becomes the mean of itself
    and a shuffle of its last axis (its whole, for one column): every value stays within the
    range of its row, and every row keeps its sum. Returns a note when forward raised or warned
    there."""
    nearby = list(arrays)
    for i in differentiated:
        x = arrays[i]
        if x.ndim >= 1 and x.shape[-1] > 1:
            shuffled = x[..., rng.permutation(x.shape[-1])]
        else:
            shuffled = rng.permutation(x.ravel()).reshape(x.shape)
        nearby[i] = ((x + shuffled) / 2).astype(x.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            evaluate(nearby)
        except Exception as error:  # the user's forward: anything it raises is reported
            return [
                f"forward raised on a nearby input ({type(error).__name__}: {error}), so a "
                f"backward relying on a stale cache could not be ruled out for "
                f"{', '.join(labels[i] for i in differentiated)}"
            ]
    return [f"forward warned on a nearby input: {w.message}" for w in caught]


def _modified(given: tuple[Any, ...], originals: tuple[Any, ...], what: list[str]) -> list[str]:
    """Notes for the arguments backward changed in place (it got copies, so nothing is harmed)."""
    notes = []
    for copy, original, name in zip(given, originals, what, strict=True):
        pairs = zip(copy, original, strict=True) if isinstance(copy, tuple) else [(copy, original)]
        if any(
            isinstance(c, np.ndarray) and not np.array_equal(c, o, equal_nan=True) for c, o in pairs
        ):
            notes.append(f"backward modified {name} in place (it was given a copy)")
    return notes


def _gradients(
    grads: Any, arrays: list[Any], differentiated: list[int], labels: list[str], pairs: int = 0
) -> tuple[dict[int, np.ndarray], list[Check]]:
    """backward's result as ``{input position: gradient}``, and a failed check for every
    gradient that is missing or misshapen. ``pairs``: how many outputs forward returned in a
    tuple (0 for one array), to tell a gradient stacked over them. A result with the wrong
    number of gradients is a usage error, raised: ``wrt`` says which inputs backward
    differentiates."""
    wanted = [labels[i] for i in differentiated]
    hint = f"or name in wrt= the inputs it returns gradients for (wrt={[wanted[0]]!r})"
    if isinstance(grads, np.ndarray) or not isinstance(grads, (tuple, list)):
        if len(differentiated) == 1 and grads is not None:
            grads = [grads]
        else:
            got = "None" if grads is None else f"one {type(grads).__name__}"
            raise TypeError(
                f"backward returned {got}; expected a tuple with a gradient for each of "
                f"{', '.join(wanted)}, {hint}"
            )
    if len(grads) == len(arrays):
        chosen = [grads[i] for i in differentiated]
    elif len(grads) == len(differentiated):
        chosen = list(grads)
    else:
        raise TypeError(
            f"backward returned {len(grads)} gradients; expected {len(arrays)} (one per input) "
            f"or {len(differentiated)} (one per input in wrt: {', '.join(wanted)}), {hint}"
        )
    found, problems = {}, []
    for i, grad in zip(differentiated, chosen, strict=True):
        expected = arrays[i].shape
        if grad is None:
            problems.append(_broken(labels[i], f"gradient is None, expected shape {expected}"))
            continue
        grad = np.asarray(grad)
        if grad.shape != expected:
            detail = f"gradient has shape {grad.shape}, expected {expected}"
            if grad.shape[1:] == expected and pairs and grad.shape[0] == pairs:
                detail += f": backward got a cotangent for each of forward's {pairs} outputs; "
                detail += FROM_CACHE
            problems.append(_broken(labels[i], detail))
            continue
        found[i] = grad
    return found, problems


def _broken(label: str, detail: str) -> Check:
    return Check(
        BACKWARD, "gradient", math.inf, 0.0, oracle="backward's result", detail=detail, input=label
    )


# --- the oracles ---------------------------------------------------------------------------------


class _Lines:
    """The lines through one input along which its derivatives are estimated (`Directions`).
    A line's function values are memoised for every cotangent at once, since one forward pass
    gives ⟨u, y⟩ for all of them: the second cotangent's estimates cost no forward pass."""

    def __init__(
        self, x: np.ndarray, directions: Directions, pairings: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        """``pairings(x′)`` is ⟨u, y⟩ at x′ for every cotangent u."""
        x64 = x.astype(np.float64)
        self.directions = directions
        self.values = [
            memoised(along(pairings, x64, directions.vector(j))) for j in range(len(directions))
        ]

    def against(self, k: int, grad: np.ndarray, floor: float, precision: np.dtype) -> Comparison:
        """``grad``, the kernel's gradient of ⟨u_k, y⟩, against finite differences along the
        lines (`finite_diff.judge`: a black box's kinks are looked for by smaller steps)."""
        lines = [
            Line(partial(_pairing, values, k), h)
            for values, h in zip(self.values, self.directions.steps, strict=True)
        ]
        eps = float(np.finfo(precision).eps)
        return judge(
            self.directions.project(grad),
            lines,
            differentiate(lines, eps),
            floor=floor,
            mode=self.directions.mode,
            dtype=precision,
        )


def _pairing(values: Callable[[float], np.ndarray], k: int, t: float) -> float:
    """t ↦ ⟨u_k, y(x + t·v)⟩ on one line."""
    return float(values(t)[k])


def _against_jax(
    jax_forward: Callable[..., Any],
    arrays: list[Any],
    us: tuple[np.ndarray, ...],
    grads: dict[int, np.ndarray],
    labels: list[str],
    floor: float,
) -> list[Check]:
    """``grads`` against ``jax.vjp`` of ``jax_forward`` at the same inputs, in x64 mode; the
    cotangent is cast to each output's dtype, so mixed dtypes work."""
    positions = sorted(grads)
    expected = as_tuple(JAX.vjp(jax_forward)(us, positions, *arrays))
    checks = []
    for i, want in zip(positions, expected, strict=True):
        check = against_reference(
            BACKWARD, "gradient", grads[i], want, floor, oracle=JAX_VJP, input=labels[i]
        )
        if not check.ok:
            hint = _hint(labels[i], JAX_VJP, np.asarray(grads[i], np.float64), want, floor)
            check = dataclasses.replace(check, hint=hint)
        checks.append(check)
    return checks
