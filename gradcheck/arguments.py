"""The checks of arguments that several entry points share: the rule a count argument is checked
by (a layer's width, a seed, a number of steps), in one place, each caller wording its own
message; and the inputs, names and settings of check_backward, check_jvp and check_rule."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "binds",
    "check_settings",
    "chosen_inputs",
    "described",
    "float_input",
    "input_names",
    "is_count",
    "narrowest",
]


def is_count(value: Any, least: int) -> bool:
    """Whether ``value`` is an integer of at least ``least`` (a bool is not one)."""
    return (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= least
    )


def binds(f: Callable[..., Any], count: int) -> str | None:
    """None when ``f`` can be called with ``count`` positional arguments (or its signature
    cannot be read: a builtin, a compiled function); otherwise why not, as Python says it."""
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*range(count))
    except TypeError as error:
        return str(error)
    return None


def described(f: Callable[..., Any]) -> str:
    """A function as a message names it: ``ln_backward(dout, cache)``."""
    name = getattr(f, "__qualname__", type(f).__name__).split("<locals>.")[-1]
    try:
        return f"{name}{inspect.signature(f)}"
    except (TypeError, ValueError):
        return name


def input_names(names: Sequence[str] | None, count: int) -> list[str]:
    """One name per input: ``names`` checked, or x0, x1, … when None."""
    if count == 0:
        raise ValueError("inputs must hold at least one array; got none")
    if names is None:
        return [f"x{i}" for i in range(count)]
    if isinstance(names, str) or len(names) != count:
        raise ValueError(f"names must have one name per input ({count}); got {names!r}")
    return list(names)


def chosen_inputs(wrt: Sequence[str | int] | None, labels: list[str]) -> list[int]:
    """The positions of the inputs ``wrt`` names (by label or position; None: all), sorted."""
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


def check_settings(
    cotangents: Any, directions: Any, seed: Any, rtol: Any, elementwise_max: Any, repeats: Any = 1
) -> None:
    """check_backward's and check_rule's counts and ``rtol``, each refused with its name."""
    for name, value, least in (
        ("cotangents", cotangents, 1),
        ("repeats", repeats, 1),
        ("directions", directions, 1),
        ("elementwise_max", elementwise_max, 0),
        ("seed", seed, 0),
    ):
        if not is_count(value, least):
            raise ValueError(f"{name} must be an integer of at least {least}; got {value!r}")
    if rtol is not None and not (
        isinstance(rtol, numbers.Real) and not isinstance(rtol, bool) and 0 < float(rtol) < 1
    ):
        raise ValueError(f"rtol must be a number in (0, 1) or None; got {rtol!r}")


def float_input(label: str, value: Any) -> np.ndarray:
    """An input to differentiate: a finite float array, or a clear error naming ``label``."""
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


def narrowest(dtypes: Sequence[np.dtype]) -> np.dtype:
    """The dtype of least precision among ``dtypes``."""
    return max(dtypes, key=lambda d: float(np.finfo(d).eps))
