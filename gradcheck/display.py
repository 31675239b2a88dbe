"""Results as a notebook shows them: HTML tables of a `Report` or a `BackwardCheck`, with each
error's share of its tolerance drawn as a bar, and the figure of a report's training runs.

HTML is written with the standard library; the figure uses matplotlib, imported only when one is
drawn."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gradcheck.tolerance import ratio, relative_errors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gradcheck.tolerance import Horizon


# What the views read of the results they show: `gradcheck.report.Report` and its `Check`s,
# `gradcheck.check_backward.BackwardCheck` and its `InputCheck`s. The results call the views
# (their ``_repr_html_`` and ``plot``), so the views name no result type: imports run one way.


class _Scored(Protocol):
    """A comparison as a row shows it: its error and the tolerance it was held to."""

    @property
    def error(self) -> float: ...
    @property
    def tolerance(self) -> float: ...


class _Row(_Scored, Protocol):
    @property
    def cells(self) -> tuple[str, str, str, str]: ...


class _Report(Protocol):
    @property
    def reference(self) -> str: ...
    @property
    def reference_losses(self) -> np.ndarray | None: ...
    @property
    def losses(self) -> dict[str, np.ndarray]: ...
    @property
    def horizon(self) -> Horizon | None: ...
    @property
    def ok(self) -> bool: ...
    def rows(self) -> Sequence[tuple[str, _Row | None]]: ...
    def heading(self) -> list[str]: ...
    def verdict_lines(self) -> list[str]: ...
    def tolerance_of(self, backend: str, quantity: str) -> float | None: ...


class _Finding(_Scored, Protocol):
    @property
    def input(self) -> str: ...
    @property
    def oracle(self) -> str: ...
    @property
    def mode(self) -> str: ...
    def describe(self) -> str: ...


class _Why(Protocol):
    @property
    def text(self) -> str: ...


class _BackwardCheck(Protocol):
    @property
    def notes(self) -> Sequence[str]: ...
    @property
    def ok(self) -> bool: ...
    @property
    def findings(self) -> Sequence[_Finding]: ...
    @property
    def explanations(self) -> Sequence[_Why]: ...
    def summary(self) -> str: ...


#: Colours of a row within its tolerance and beyond it.
OK_COLOUR, FAIL_COLOUR = "#2e7d32", "#c62828"


def _bar(share: float) -> str:
    """A cell showing error / tolerance as a number and a bar, full at the tolerance."""
    colour = OK_COLOUR if share <= 1 else FAIL_COLOUR
    width = 100 if not math.isfinite(share) else min(share, 1.0) * 100
    return (
        f'<td class="ratio" style="min-width:8em">{share:.2g}'
        f'<div style="background:{colour};height:0.4em;width:{width:.0f}%"></div></td>'
    )


def _table(header: Sequence[str], rows: Sequence[tuple[Sequence[str], float | None]]) -> str:
    """An HTML table of text cells; each row ends with its error / tolerance bar, or nothing."""
    cell = 'style="padding:0.1em 0.8em 0.1em 0"'
    head = "".join(f"<th {cell}>{html.escape(h)}</th>" for h in (*header, "error / tolerance"))
    body = []
    for cells, share in rows:
        tds = "".join(f"<td {cell}>{html.escape(c)}</td>" for c in cells)
        status = "" if share is None else ("ok" if share <= 1 else "fail")
        bar = "<td></td>" if share is None else _bar(share)
        body.append(f'<tr class="{status}">{tds}{bar}</tr>')
    # a class of its own keeps documentation themes' table styles off it
    style = "border-collapse:collapse;font-size:0.85em;text-align:left"
    return (
        f'<table class="gradcheck-table" style="{style}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _lines(css: str, colour: str, lines: Sequence[str]) -> str:
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<ul class="{css}" style="color:{colour}">{items}</ul>' if lines else ""


def report_html(report: _Report) -> str:
    """The report's heading, its verdict and explanations, then one row per check: those
    beyond their tolerance first, worst first, then the rest in the report's order."""
    rows: list[tuple[tuple[str, ...], float | None]] = []
    for name, check in report.rows():
        if check is None:
            rows.append(((name, "(reference)", "", "", ""), None))
            continue
        rows.append(((name, *check.cells), ratio(check.error, check.tolerance)))
    failing = [r for r in rows if r[1] is not None and r[1] > 1]
    failing.sort(key=lambda r: -(r[1] or 0.0))
    rows = failing + [r for r in rows if r not in failing]
    heading, *summary = report.heading()
    verdict, *reasons = report.verdict_lines()
    colour = OK_COLOUR if report.ok else FAIL_COLOUR
    return (
        '<div class="gradcheck-report">'
        f"<p><b>{html.escape(heading)}</b><br>{'<br>'.join(map(html.escape, summary))}</p>"
        f'<p class="verdict" style="color:{colour}"><b>{html.escape(verdict)}</b></p>'
        f"{_lines('reasons', colour, reasons)}"
        f"{_table(('backend', 'quantity', 'where', 'error', 'tolerance'), rows)}</div>"
    )


def backward_html(result: _BackwardCheck) -> str:
    """`check_backward`'s verdict, notes and explanations, then its worst finding per input
    and oracle, those beyond their tolerance first."""
    findings = sorted(result.findings, key=lambda f: -ratio(f.error, f.tolerance))  # worst first
    rows = [
        (
            (f.input, f.oracle, f.mode, f.describe(), f"{f.error:.1e}", f"{f.tolerance:.1e}"),
            ratio(f.error, f.tolerance),
        )
        for f in findings
    ]
    colour = OK_COLOUR if result.ok else FAIL_COLOUR
    notes = [f"note: {note}" for note in result.notes]
    why = [f"why: {e.text}" for e in result.explanations]
    return (
        '<div class="gradcheck-backward">'
        f'<p class="verdict" style="color:{colour}"><b>{html.escape(result.summary())}</b></p>'
        f"{_lines('reasons', colour, [*why, *notes])}"
        f"{_table(('input', 'oracle', 'mode', 'finding', 'error', 'tolerance'), rows)}</div>"
    )


def report_figure(report: _Report) -> Figure:
    """Left, every implementation's training loss per step on one axis; right, each one's
    per-step relative error against the reference's loss, with its tolerance dashed, on a log
    axis; on both, a dotted line at the horizon where the comparison of the run stops."""
    from matplotlib.figure import Figure

    if report.reference_losses is None:
        raise ValueError("this report has no training runs to plot (it was made without verify)")
    fig = Figure(figsize=(11, 4), layout="constrained")
    curves, errors = fig.subplots(1, 2)
    reference = report.reference_losses
    # an exact match has no place on a log axis; drawn at this floor instead
    floor = np.finfo(np.float64).eps * 1e-3
    curves.plot(reference, linewidth=3, alpha=0.5, label=f"{report.reference} (reference)")
    for name, losses in report.losses.items():
        curves.plot(losses, label=name)
        tolerance = report.tolerance_of(name, "train losses")
        step_errors = relative_errors(losses, reference, elementwise=True)
        (line,) = errors.plot(np.maximum(step_errors, floor), label=name)
        if tolerance is not None:
            errors.axhline(tolerance, color=line.get_color(), linestyle="--", linewidth=1)
    horizon = report.horizon
    if horizon is not None and not horizon.whole:  # where the comparison of the run stops
        for axis in (curves, errors):
            axis.axvline(horizon.steps, color="grey", linestyle=":", label="horizon")
    if np.all(reference > 0):
        curves.set_yscale("log")
    curves.set(xlabel="step", ylabel="loss", title="Training loss of every implementation")
    errors.set_yscale("log")
    errors.set(
        xlabel="step",
        ylabel="relative error of the loss",
        title="Against the reference; dashed: each one's tolerance",
    )
    curves.legend(fontsize=8)
    errors.legend(fontsize=8)
    return fig
