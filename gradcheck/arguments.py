"""The rule a count argument is checked by (a layer's width, a seed, a number of steps), in one
place; each caller words its own message."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["is_count"]


def is_count(value: Any, least: int) -> bool:
    """Whether ``value`` is an integer of at least ``least`` (a bool is not one)."""
    return (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= least
    )
