"""verify's stages: its progress as ``(done, total, label)``, and each stage's wall time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gradcheck.terminal import Progress

#: The public names, as the API reference shows them.
__all__ = ["STAGE_UNITS", "Stages"]


@dataclass
class Stages:
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
