"""The outcome of `gradcheck.verify`: one `Check` per compared quantity, a verdict, a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck import display, terminal
from gradcheck.compare import Check
from gradcheck.explain import Explanation, FirstDifference, listing
from gradcheck.finite_diff import FINITE_DIFFERENCES
from gradcheck.ladder import DERIVATIVE
from gradcheck.network import Network
from gradcheck.optimizers import SGD, Optimizer, plain_descent
from gradcheck.tolerance import Horizon

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Group


#: About how many lines a failing report's message takes (`Report.failure_message`).
MESSAGE_LINES = 15


@dataclass(frozen=True)
class Report:
    """What `verify` found: every backend's checks against the reference, made once at its end."""

    net: Network
    n_samples: int
    steps: int
    lr: float
    reference: str
    backends: list[str]
    #: The training run's optimizer (plain SGD at ``lr`` when None), batch size and seed.
    optimizer: Optimizer | None = None
    batch_size: int | None = None
    seed: int = 0
    #: For a run with an optimizer: how far the reference's run moves when its params and inputs
    #: move by one rounding (the trajectory tolerance is at least ``SAFETY`` times it).
    sensitivity: float | None = None
    #: How much of the training run was compared: the steps over which the reference reproduces
    #: its own run from params and inputs moved by one rounding.
    horizon: Horizon | None = None
    #: How the finite differences were taken and why, e.g. ``finite differences elementwise:
    #: 16 parameters one by one, about 0.013 s``; None without them.
    witness: str | None = None
    checks: list[Check] = field(default_factory=list)
    #: One sentence per implementation found wrong, naming it and what the others agree on.
    verdicts: list[str] = field(default_factory=list)
    #: Seconds per backend: ``import`` (a built-in backend's framework), ``first_call`` (the
    #: first gradient, compile or load included), ``first_train``, and with
    #: ``verify(timing=True)`` a warm ``train`` and their difference, ``compile``; for the finite
    #: differences, the ``elementwise_estimate`` their mode was chosen by.
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Wall seconds of each of verify's stages, by name, in order: the reference's runs, the
    #: horizon, each backend's runs, the finite differences, the verdict and its explanations.
    stages: dict[str, float] = field(default_factory=dict)
    #: For each disagreeing backend with a ``trace``, the first tensor where it parts.
    first_differences: list[FirstDifference] = field(default_factory=list)
    #: Simple causes that fit the disagreements (`gradcheck.explain`), or ``none``.
    explanations: list[Explanation] = field(default_factory=list)
    #: The reference's loss at every training step, and each compared implementation's by name.
    reference_losses: np.ndarray | None = None
    losses: dict[str, np.ndarray] = field(default_factory=dict)
    #: With ``verify(repeats=...)``: each implementation's largest relative difference between
    #: its runs from the same inputs, per quantity; empty when each ran once.
    run_to_run: dict[str, dict[str, float]] = field(default_factory=dict)
    #: On the dtype ladder (`gradcheck.ladder`): each backend that also ran in float64, with
    #: its float64 run's name; and each that could not, with why not.
    float64_runs: dict[str, str] = field(default_factory=dict)
    narrow_only: dict[str, str] = field(default_factory=dict)

    @property
    def nondeterminism(self) -> dict[str, float]:
        """Each implementation's largest relative run-to-run difference (0.0 for a
        deterministic one), with ``verify(repeats=...)``."""
        return {name: max(drift.values(), default=0.0) for name, drift in self.run_to_run.items()}

    def steadiness_lines(self) -> list[str]:
        """What the repeats found: the implementations that are deterministic, and each that
        is not, with how far its runs differ."""
        if not self.run_to_run:
            return []
        steady = [name for name, drift in self.nondeterminism.items() if drift == 0]
        lines = [f"deterministic run to run: {listing(steady)}"] if steady else []
        for name, drift in self.run_to_run.items():
            moving = {q: d for q, d in drift.items() if d > 0}
            if moving:
                worst = ", ".join(f"{q} {d:.1e}" for q, d in moving.items())
                lines.append(f"{name} is nondeterministic: its runs differ by up to {worst}")
        return lines

    @property
    def ok(self) -> bool:
        """True when every check of every backend is within its tolerance."""
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def assert_ok(self) -> None:
        """Raise AssertionError with `failure_message` when a check exceeds its tolerance."""
        __tracebackhide__ = True  # a failing report shows the caller's line, not ours
        if not self.ok:
            raise AssertionError(self.failure_message())

    def failure_message(self, lines: int = MESSAGE_LINES) -> str:
        """What a failing test says, in about ``lines`` lines: who disagrees and with whom,
        where each first parts from the reference, the simple causes that fit (``why:``), and
        as many failing checks as fit; the rest are in `failures`."""
        said = [f"backends disagree on {self.net.describe()}:", *self.verdict_lines()[1:]]
        failing = [f"  {check.describe()}" for check in self.failures]
        room = max(lines - len(said), 2)
        if len(failing) > room:
            rest = len(failing) - (room - 1)
            failing = [*failing[: room - 1], f"  … {rest} more failing checks in report.failures"]
        return "\n".join([*said, *failing])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the problem, the reference, every check and the verdict."""
        return {
            "network": self.net.to_dict(),
            "samples": self.n_samples,
            "steps": self.steps,
            "lr": self.lr,
            "optimizer": self.training_optimizer.settings(),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "sensitivity": self.sensitivity,
            "horizon": None if self.horizon is None else self.horizon.to_dict(),
            "witness": self.witness,
            "reference": self.reference,
            "backends": self.backends,
            "ok": self.ok,
            "verdicts": self.verdicts,
            "first_difference": [d.to_dict() for d in self.first_differences],
            "explanations": [e.to_dict() for e in self.explanations],
            "checks": [check.to_dict() for check in self.checks],
            "nondeterminism": self.nondeterminism,
            "float64_runs": self.float64_runs,
            "narrow_only": self.narrow_only,
            "seconds": self.timings,
            "stages": self.stages,
        }

    @property
    def training_optimizer(self) -> Optimizer:
        """The optimizer of the training run: ``optimizer``, or plain SGD at ``lr``."""
        return self.optimizer or SGD(self.lr)

    def _problem(self) -> str:
        """The header's problem: samples, steps, and the training — ``lr η`` for plain
        full-batch gradient descent, else a line of its own with the optimizer and batches."""
        optimizer = self.training_optimizer
        if self.steps == 0:
            return (
                f"{self.n_samples} samples, no training run (steps=0); reference: {self.reference}"
            )
        line = f"{self.n_samples} samples, {self.steps} steps"
        if plain_descent(optimizer, self.batch_size):
            return f"{line}, lr {self.lr:g}; reference: {self.reference}"
        batches = "full batch" if self.batch_size is None else f"batches of {self.batch_size}"
        moves = ""
        if self.sensitivity is not None:
            moves = f"; one rounding moves the reference's run by {self.sensitivity:.1e}"
        return (
            f"{line}; reference: {self.reference}\n"
            f"training: {optimizer.describe()}, {batches} (seed {self.seed}){moves}"
        )

    def rows(self) -> list[tuple[str, Check | None]]:
        """The table's rows in order: each backend's checks, the finite differences' last, and
        ``None`` for the reference, which is compared with nothing."""
        rows: list[tuple[str, Check | None]] = []
        for backend in [*self.backends, FINITE_DIFFERENCES]:
            checks = [check for check in self.checks if check.backend == backend]
            if not checks and backend != FINITE_DIFFERENCES:
                rows.append((backend, None))
            rows += [(backend, check) for check in checks if check.part != DERIVATIVE]
            run = self.float64_runs.get(backend)  # the derivative, judged in its float64 run
            rows += [(run or backend, check) for check in checks if check.part == DERIVATIVE]
        return rows

    def ladder_lines(self) -> list[str]:
        """How the dtype ladder judged the backends of a network narrower than float64."""
        dtype = self.net.dtype
        lines = []
        if self.float64_runs or self.narrow_only:
            lines.append(
                f"{dtype} judged at float64's resolution: each backend's float64 run against "
                f"the reference (the derivative), its {dtype} run against its own float64 run "
                "(the precision)"
            )
        lines += [
            f"{name}: judged at {dtype}'s resolution only: {why}"
            for name, why in self.narrow_only.items()
        ]
        return lines

    def heading(self) -> list[str]:
        """The lines above the table: the network, the problem, what errors are relative to."""
        reach = None if self.horizon is None else self.horizon.describe()
        return [
            f"gradcheck verify: {self.net.describe()}",
            *self._problem().split("\n"),
            *([reach] if reach else []),
            *([self.witness] if self.witness else []),
            *self.ladder_lines(),
            "relative errors: gradients and predictions to the size of their terms, the loss to "
            "the larger of itself and its outputs' rounding, params to their layer's largest, a "
            "run's losses to themselves",
        ]

    def verdict_lines(self) -> list[str]:
        """The verdict, then for a disagreement who is wrong, where each first parts from the
        reference and the simple explanations that fit."""
        if self.ok:
            return [
                f"{_all(self.backends)} with the reference",
                *self.steadiness_lines(),
            ]
        failed = sorted({check.backend for check in self.failures})
        return [
            f"DISAGREE: {', '.join(failed)}",
            *self.verdicts,
            *(d.text for d in self.first_differences),
            *(f"why: {e.text}" for e in self.explanations if e.fits),
            *self.steadiness_lines(),
        ]

    def table(self) -> tuple[tuple[str, ...], list[tuple[tuple[str, ...], Check | None]]]:
        """The HTML table's header and rows: a row per check, and the reference's, unscored."""
        header = ("backend", "quantity", "where", "error", "tolerance")
        rows: list[tuple[tuple[str, ...], Check | None]] = [
            ((name, *check.cells), check) if check else ((name, "(reference)", "", "", ""), None)
            for name, check in self.rows()
        ]
        return header, rows

    def tolerance_of(self, backend: str, quantity: str) -> float | None:
        """The tolerance ``backend``'s ``quantity`` was held to, or None if it was not checked."""
        return next(
            (c.tolerance for c in self.checks if (c.backend, c.quantity) == (backend, quantity)),
            None,
        )

    def plot(self) -> Figure:
        """A matplotlib Figure: every implementation's training loss per step, and each one's
        per-step error against the reference's with its tolerance, on a log axis."""
        return display.report_figure(self)

    def _repr_html_(self) -> str:
        return display.html(self, "gradcheck-report")

    def __rich__(self) -> Group:
        """The report as the terminal shows it (`gradcheck.terminal`): the heading, a row per
        check with its status in colour, the verdict and the timings."""
        from rich.console import Group
        from rich.text import Text

        rows: list[tuple[str | Text, ...]] = []
        for name, check in self.rows():
            if check is None:
                rows.append((name, "(reference)", "", "", "", ""))
                continue
            status = "ok" if check.ok else "FAIL"
            if check.detail:
                status = f"{status} ({check.detail})"
            colour = "green" if check.ok else "bold red"
            rows.append((name, *check.cells, terminal.styled(status, colour)))
        header = ("backend", "quantity", "where", "error", "tolerance", "")
        verdict, *reasons = self.verdict_lines()
        timings = [
            f"{name}: training {seconds['train'] * 1e3:.3g} ms warm; import "
            f"{seconds['import']:.2g} s, first calls {seconds['first_call']:.3g} s (gradient) and "
            f"+{seconds['compile']:.3g} s (training)"
            for name, seconds in self.timings.items()
            if "train" in seconds
        ]
        if timings:
            stages = ", ".join(f"{label} {s:.2g}" for label, s in self.stages.items())
            timings.append(f"seconds: {stages}; in all {sum(self.stages.values()):.3g}")
        return Group(
            *map(Text, self.heading()),
            Text(),
            terminal.table(header, rows),
            Text(),
            terminal.styled(verdict, "bold green" if self.ok else "bold red"),
            *map(Text, [*reasons, *timings]),
        )

    def __str__(self) -> str:
        return terminal.plain(self)


def _all(backends: list[str]) -> str:
    """Who agrees, as a sentence's subject and verb: ``numpy agrees``, ``both backends
    agree``, ``all 4 backends agree``."""
    if len(backends) == 1:
        return f"{backends[0]} agrees"
    return f"{'both' if len(backends) == 2 else f'all {len(backends)}'} backends agree"
