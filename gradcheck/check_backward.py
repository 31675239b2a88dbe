"""Check a user's own backward kernel — any function, not only the MLP — against finite differences.

``forward(*inputs)`` returns an array y; ``backward(cotangent, *inputs)`` returns one gradient per
input, ∂⟨u, y⟩/∂x_i for the cotangent u. With random Gaussian cotangents the scalar ⟨u, y⟩ sees
every output, so no output's gradient can hide (a sum of the outputs, the usual shortcut, is the
single cotangent of ones). Its derivatives are taken by Richardson-extrapolated central
differences in float64 (``gradcheck.finite_diff``), element by element for small inputs and along
random directions for large ones, and, when a jax-traceable ``jax_forward`` is given, compared
with ``jax.vjp`` as well.

``backward`` is called after ``forward`` has been evaluated at other inputs, so a backward that
leans on state left behind by the last forward call — a stale cache — is caught too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck.finite_diff import (
    ELEMENTWISE_MAX,
    STEP,
    Comparison,
    along,
    central_difference,
    compare,
)
from gradcheck.tolerance import SAFETY, relative_error


@dataclass(frozen=True)
class InputCheck:
    """One input's gradient against one oracle."""

    input: str
    oracle: str
    error: float
    tolerance: float
    index: tuple[int, ...]
    mode: str
    #: The finite differences were noisier than a smooth function allows (see
    #: ``finite_diff.noise_limit``); the tolerance is held at that limit.
    noisy: bool = False
    #: What else the comparison found (``finite_diff.Comparison.detail``).
    detail: str = ""

    @classmethod
    def from_comparison(cls, input: str, c: Comparison) -> InputCheck:
        """The finite differences' verdict on one input's gradient."""
        return cls(
            input, "finite differences", c.error, c.tolerance, c.index, c.mode, c.noisy, c.detail
        )

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance

    def describe(self) -> str:
        if self.mode == "elementwise":
            where = f"[{', '.join(map(str, self.index))}]"
        else:
            where = f" direction {self.index[0]}" if self.index else ""
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"input {self.input}{where} against {self.oracle} ({self.mode}): relative error "
            f"{self.error:.1e}, tolerance {self.tolerance:.1e}{detail}"
        )


@dataclass(frozen=True)
class BackwardCheck:
    """What :func:`check_backward` compared; ``checks`` has one entry per input and oracle."""

    checks: list[InputCheck]
    cotangents: int
    forward_passes: int

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def check_backward(
    forward: Callable[..., Any],
    backward: Callable[..., Sequence[Any]],
    *inputs: Any,
    names: Sequence[str] | None = None,
    cotangents: int = 2,
    directions: int = 8,
    jax_forward: Callable[..., Any] | None = None,
    seed: int = 0,
) -> BackwardCheck:
    """Check ``backward`` against finite differences of ``forward`` (and ``jax.vjp``).

    Args:
        forward: ``forward(*inputs) -> y``, an array.
        backward: ``backward(u, *inputs) -> (dx_1, …, dx_n)``, one gradient of ⟨u, y⟩ per input,
            each shaped like its input.
        inputs: float arrays; each is checked.
        names: a name per input for the messages (default ``x0``, ``x1``, …).
        cotangents: how many random Gaussian cotangents u to check.
        directions: random directions per input when an input is too large to check element
            by element (more than ``ELEMENTWISE_MAX`` elements).
        jax_forward: the same function written in jax.numpy, to compare with ``jax.vjp``.
        seed: for the random cotangents and directions.

    Returns:
        A :class:`BackwardCheck` when every gradient agrees.

    Raises:
        AssertionError: naming the input, the index (or direction), the error and the tolerance
            of every gradient that does not.
    """
    arrays = [np.asarray(x) for x in inputs]
    if not arrays:
        raise ValueError("inputs must hold at least one array; got none")
    for i, x in enumerate(arrays):
        if x.dtype.kind != "f":
            raise TypeError(f"inputs must be float arrays; input {i} has dtype {x.dtype}")
    labels = list(names) if names is not None else [f"x{i}" for i in range(len(arrays))]
    if len(labels) != len(arrays):
        raise ValueError(f"names must have one name per input ({len(arrays)}); got {len(labels)}")
    rng = np.random.default_rng(seed)
    passes = 0

    def evaluate(xs: list[np.ndarray]) -> np.ndarray:
        nonlocal passes
        passes += 1
        return np.asarray(forward(*xs))

    y = evaluate(arrays)
    eps = float(np.finfo(y.dtype if y.dtype.kind == "f" else np.float64).eps)
    checks: list[InputCheck] = []
    for _ in range(cotangents):
        u = rng.standard_normal(y.shape).astype(y.dtype if y.dtype.kind == "f" else np.float64)
        # Leave forward's last call at other inputs, so backward must rely on its arguments.
        evaluate([x + rng.standard_normal(x.shape).astype(x.dtype) for x in arrays])
        grads = backward(u, *arrays)
        if len(grads) != len(arrays):
            raise AssertionError(
                f"backward must return one gradient per input ({len(arrays)}); got {len(grads)}"
            )
        u64 = u.astype(np.float64)
        for i, (x, grad, label) in enumerate(zip(arrays, grads, labels, strict=True)):
            grad = np.asarray(grad)
            if grad.shape != x.shape:
                raise AssertionError(
                    f"backward's gradient for input {label} has shape {grad.shape}, "
                    f"expected {x.shape}"
                )

            def scalar(xi: np.ndarray, i: int = i, u64: np.ndarray = u64) -> float:
                xs = list(arrays)
                xs[i] = xi.astype(arrays[i].dtype)
                return float(np.sum(u64 * evaluate(xs).astype(np.float64)))  # ⟨u, y⟩

            rounding = SAFETY * eps * math.sqrt(max(y.size, 1))
            precision = y.dtype if y.dtype.kind == "f" else np.dtype(np.float64)
            comparison = _against_finite_differences(
                scalar, x, grad, rounding, precision, directions, rng
            )
            checks.append(InputCheck.from_comparison(label, comparison))
        if jax_forward is not None:
            checks.extend(_against_jax(jax_forward, arrays, u, grads, labels, eps, y.size))
    result = BackwardCheck(checks, cotangents, passes)
    failures = [check for check in checks if not check.ok]
    if failures:
        lines = "\n".join(f"  {check.describe()}" for check in failures)
        raise AssertionError(f"backward disagrees:\n{lines}")
    return result


def _against_finite_differences(
    scalar: Callable[[np.ndarray], float],
    x: np.ndarray,
    grad: np.ndarray,
    rounding: float,
    precision: np.dtype,
    directions: int,
    rng: np.random.Generator,
) -> Comparison:
    x64 = x.astype(np.float64)
    step = STEP if x.dtype == np.float64 else float(np.finfo(x.dtype).eps) ** (1 / 3)
    if x.size <= ELEMENTWISE_MAX:
        estimates = np.empty(x.size)
        errors = np.empty(x.size)
        for j in range(x.size):
            unit = np.zeros(x.shape)
            unit.flat[j] = 1.0
            d = central_difference(
                along(scalar, x64, unit), step * max(1.0, abs(float(x64.flat[j])))
            )
            estimates[j], errors[j] = d.value, d.error
        return compare(
            grad,
            estimates.reshape(x.shape),
            errors.reshape(x.shape),
            np.zeros(x.shape, bool),
            floor=rounding,
            mode="elementwise",
            dtype=precision,
        )
    h = step * max(1.0, float(np.abs(x64).max()))
    values, projected, errs = [], [], []
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        d = central_difference(along(scalar, x64, v), h)
        values.append(d.value)
        errs.append(d.error)
        projected.append(float(np.sum(grad.astype(np.float64) * v)))
    return compare(
        np.array(projected),
        np.array(values),
        np.array(errs),
        np.zeros(directions, bool),
        floor=rounding,
        mode="directional",
        dtype=precision,
    )


def _against_jax(
    jax_forward: Callable[..., Any],
    arrays: list[np.ndarray],
    u: np.ndarray,
    grads: Sequence[Any],
    labels: list[str],
    eps: float,
    size: int,
) -> list[InputCheck]:
    import jax

    with jax.enable_x64(True):
        _, vjp = jax.vjp(jax_forward, *arrays)
        expected = [np.array(g) for g in vjp(u)]
    tolerance = SAFETY * eps * math.sqrt(max(size, 1))
    checks = []
    for label, grad, want in zip(labels, grads, expected, strict=True):
        error, index = relative_error(np.asarray(grad), want)
        checks.append(InputCheck(label, "jax.vjp", error, tolerance, index, "elementwise"))
    return checks
