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
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from gradcheck import display, explain
from gradcheck.finite_diff import (
    ELEMENTWISE_MAX,
    FINITE_DIFFERENCES,
    Check,
    Comparison,
    Directions,
    Line,
    against_reference,
    along,
    differentiate,
    judge,
    memoised,
)
from gradcheck.tolerance import SAFETY, ratio

JAX_VJP = "jax.vjp"
#: The implementation a `check_backward` judges, as its checks name it.
BACKWARD = "backward"
_SALT = 0x67726164  # "grad"


#: ``check_backward``'s name for its checks: one `finite_diff.Check` per cotangent, input and
#: oracle.
InputCheck = Check


def _checked(input: str, oracle: str, c: Comparison) -> Check:
    hint = "" if c.ok else _hint(input, oracle, c.observed, c.expected, c.tolerance)
    return Check.of(c, BACKWARD, "gradient", oracle, input=input, hint=hint)


def _hint(input: str, oracle: str, observed: Any, expected: Any, tolerance: float) -> str:
    """ "dx is 2 × the finite differences" when one factor maps the oracle's values onto the
    kernel's within the tolerance, and the factor is not 1 (`gradcheck.explain`)."""
    found = explain.explain_inputs({input: observed}, {input: expected}, oracle, tolerance)
    return next((e.text for e in found if e.kind in ("scale", "sign")), "")


@dataclass(frozen=True)
class BackwardCheck:
    """What `check_backward` compared: ``checks`` has one entry per cotangent, input and
    oracle; ``findings`` the worst of them per input and oracle; ``notes`` what the kernel did
    that is not a wrong gradient (it changed its cotangent in place, its forward raised near the
    input)."""

    checks: list[Check]
    cotangents: int
    forward_passes: int
    notes: list[str] = field(default_factory=list)
    #: What fits the gradients that disagree with the finite differences (`gradcheck.explain`):
    #: a factor, a sign, a transpose, two inputs swapped, or none.
    explanations: list[explain.Explanation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def findings(self) -> list[Check]:
        worst: dict[tuple[str | None, str], Check] = {}
        for check in self.checks:
            key = (check.input, check.oracle)
            if key not in worst or _badness(check) > _badness(worst[key]):
                worst[key] = check
        return list(worst.values())

    def summary(self) -> str:
        status = "backward agrees" if self.ok else "backward disagrees"
        return f"{status} ({self.cotangents} cotangents, {self.forward_passes} forward passes)"

    def heading(self) -> list[str]:
        return []

    def verdict_lines(self) -> list[str]:
        """The summary, then what explains a disagreement and what the kernel did besides."""
        why = [f"why: {e.text}" for e in self.explanations]
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
        lines = [f"{self.summary()}:"]
        lines += [f"  {'ok  ' if f.ok else 'FAIL'} {f.describe()}" for f in self.findings]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  why: {e.text}" for e in self.explanations]
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
        seed: for the cotangents, the directions and the stale-state probe.
        wrt: the inputs to differentiate, by name or position (default: every input).
        rtol: the relative tolerance for the kernel's rounding (default: the tolerance policy's,
            16·ε·√n for the narrowest precision involved).
        elementwise_max: inputs with at most this many elements are checked element by
            element; larger ones along ``directions`` random directions.
        raise_exception: raise AssertionError when a gradient disagrees (the default), or
            return the result with ``ok`` False.

    Returns:
        A `BackwardCheck`.

    Raises:
        AssertionError: with ``raise_exception``, naming for each input that disagrees the
            index (or direction), the kernel's value and the oracle's, the error and the
            tolerance, and a factor when the kernel's values are a multiple of the oracle's.
        ValueError, TypeError: for arguments that check nothing or cannot be checked, before any
            work is done.
    """
    labels = _names(names, len(inputs))
    differentiated = _wrt(wrt, labels)
    _settings(cotangents, directions, seed, rtol, elementwise_max)
    arrays = list(inputs)
    for i in differentiated:
        arrays[i] = _float_array(labels[i], inputs[i])
    # A stream of its own: a user's inputs drawn from default_rng(seed) must not reappear as the
    # cotangent (for batch norm that cotangent lies in the Jacobian's null space: dx ≈ 0).
    rng = np.random.default_rng([seed, _SALT])
    passes = 0

    def evaluate(args: Sequence[Any]) -> tuple[np.ndarray, ...]:
        nonlocal passes
        passes += 1
        return _outputs(forward(*[_copy(a) for a in args]))

    first = forward(*[_copy(a) for a in arrays])
    passes += 1
    ys, tuple_output = _outputs(first), isinstance(first, (tuple, list))
    precision = _narrowest([arrays[i].dtype for i in differentiated] + [y.dtype for y in ys])
    eps = float(np.finfo(precision).eps)
    floor = rtol if rtol is not None else SAFETY * eps * math.sqrt(max(sum(y.size for y in ys), 1))
    checks: list[Check] = []
    notes: list[str] = []
    compared: dict[str, Comparison] = {}  # the first cotangent's, for the explanations
    drawn = [
        tuple(rng.standard_normal(y.shape).astype(y.dtype) for y in ys) for _ in range(cotangents)
    ]
    u64s = [[np.asarray(c, np.float64) for c in us] for us in drawn]

    def pairings(xi: np.ndarray, i: int) -> np.ndarray:
        """⟨u, y⟩ for every cotangent u, with input i replaced by xi: one forward pass."""
        args = list(arrays)
        args[i] = xi.astype(arrays[i].dtype)
        ys = evaluate(args)
        return np.array([sum(np.sum(c * y) for c, y in zip(u64, ys, strict=True)) for u64 in u64s])

    lines = {
        i: _Lines(
            arrays[i],
            Directions.through(
                arrays[i], precision, arrays[i].size <= elementwise_max, directions, rng
            ),
            partial(pairings, i=i),
        )
        for i in differentiated
    }
    for k, us in enumerate(drawn):
        u = us if tuple_output else us[0]
        notes += _probe(evaluate, arrays, differentiated, labels, rng)
        given = (_copy(u), *[_copy(a) for a in arrays])
        grads = backward(*given)
        notes += _modified(given, (u, *arrays), ["its cotangent", *[f"input {n}" for n in labels]])
        grads, problems = _gradients(grads, arrays, differentiated, labels)
        checks += problems
        for i, grad in grads.items():
            comparison = lines[i].against(k, grad, floor, precision)
            checks.append(_checked(labels[i], FINITE_DIFFERENCES, comparison))
            compared.setdefault(labels[i], comparison)
        if jax_forward is not None and grads:
            checks += _against_jax(jax_forward, arrays, us, grads, labels, floor)
    result = BackwardCheck(checks, cotangents, passes, list(dict.fromkeys(notes)))
    if not result.ok and compared:
        result.explanations.extend(
            explain.explain_inputs(
                {name: c.observed for name, c in compared.items()},
                {name: c.expected for name, c in compared.items()},
                FINITE_DIFFERENCES,
                max(c.tolerance for c in compared.values()),
            )
        )
    if raise_exception and not result.ok:
        raise AssertionError(str(result))
    return result


# --- arguments -----------------------------------------------------------------------------------


def _names(names: Sequence[str] | None, count: int) -> list[str]:
    if count == 0:
        raise ValueError("inputs must hold at least one array; got none")
    if names is None:
        return [f"x{i}" for i in range(count)]
    if isinstance(names, str) or len(names) != count:
        raise ValueError(f"names must have one name per input ({count}); got {names!r}")
    return list(names)


def _wrt(wrt: Sequence[str | int] | None, labels: list[str]) -> list[int]:
    if wrt is None:
        return list(range(len(labels)))
    if isinstance(wrt, (str, int)):
        wrt = [wrt]
    chosen = []
    for item in wrt:
        if isinstance(item, str) and item in labels:
            chosen.append(labels.index(item))
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(labels):
            chosen.append(item)
        else:
            raise ValueError(
                f"wrt must name inputs among {labels} or give their positions; got {item!r}"
            )
    if not chosen:
        raise ValueError("wrt must name at least one input; got none")
    return sorted(set(chosen))


def _settings(cotangents: Any, directions: Any, seed: Any, rtol: Any, elementwise_max: Any) -> None:
    for name, value, least in (
        ("cotangents", cotangents, 1),
        ("directions", directions, 1),
        ("elementwise_max", elementwise_max, 0),
        ("seed", seed, 0),
    ):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer of at least {least}; got {value!r}")
    if rtol is not None and not (
        isinstance(rtol, numbers.Real) and not isinstance(rtol, bool) and 0 < float(rtol) < 1
    ):
        raise ValueError(f"rtol must be a number in (0, 1) or None; got {rtol!r}")


def _float_array(label: str, value: Any) -> np.ndarray:
    if value is None:
        raise TypeError(f"input {label} must be a float array to differentiate; got None")
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise TypeError(
            f"input {label} must be a float array to differentiate; got dtype {array.dtype} "
            "(leave it out of wrt= to hold it fixed)"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"input {label} must be finite; it holds NaN or Inf")
    return array


def _outputs(y: Any) -> tuple[np.ndarray, ...]:
    """forward's result as a tuple of float arrays."""
    values = tuple(y) if isinstance(y, (tuple, list)) else (y,)
    arrays = tuple(np.asarray(v) for v in values)
    for array in arrays:
        if array.dtype.kind != "f":
            raise TypeError(
                f"forward must return a float array or a tuple of them; got dtype {array.dtype}"
            )
    return arrays


def _narrowest(dtypes: Sequence[np.dtype]) -> np.dtype:
    return max(dtypes, key=lambda d: float(np.finfo(d).eps))


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
    grads: Any, arrays: list[Any], differentiated: list[int], labels: list[str]
) -> tuple[dict[int, np.ndarray], list[Check]]:
    """backward's result as ``{input position: gradient}``, and a failed check for every
    gradient that is missing or misshapen."""
    wanted = [labels[i] for i in differentiated]
    if isinstance(grads, np.ndarray) or not isinstance(grads, (tuple, list)):
        if len(differentiated) == 1 and grads is not None:
            grads = [grads]
        else:
            got = "None" if grads is None else f"one {type(grads).__name__}"
            return {}, [
                _broken(
                    ", ".join(wanted),
                    f"backward returned {got}; expected a tuple with a gradient for each of "
                    f"{', '.join(wanted)}",
                )
            ]
    if len(grads) == len(arrays):
        chosen = [grads[i] for i in differentiated]
    elif len(grads) == len(differentiated):
        chosen = list(grads)
    else:
        return {}, [
            _broken(
                ", ".join(wanted),
                f"backward returned {len(grads)} gradients; expected {len(arrays)} (one per "
                f"input) or {len(differentiated)} (one per input in wrt: {', '.join(wanted)})",
            )
        ]
    found, problems = {}, []
    for i, grad in zip(differentiated, chosen, strict=True):
        expected = arrays[i].shape
        if grad is None:
            problems.append(_broken(labels[i], f"gradient is None, expected shape {expected}"))
            continue
        grad = np.asarray(grad)
        if grad.shape != expected:
            problems.append(
                _broken(labels[i], f"gradient has shape {grad.shape}, expected {expected}")
            )
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
    import jax

    positions = sorted(grads)
    with jax.enable_x64(True):

        def differentiated(*xs: Any) -> Any:
            args = list(arrays)
            for i, x in zip(positions, xs, strict=True):
                args[i] = x
            return jax_forward(*args)

        out, vjp = jax.vjp(differentiated, *[arrays[i] for i in positions])
        leaves = jax.tree.leaves(out)
        cast = [np.asarray(u, leaf.dtype) for u, leaf in zip(us, leaves, strict=True)]
        expected = [np.array(g) for g in vjp(jax.tree.unflatten(jax.tree.structure(out), cast))]
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
