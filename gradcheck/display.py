"""Results as a notebook shows them: one HTML table of a `Report` or a `BackwardCheck`, with each
error's share of its tolerance drawn as a bar, and the figure of a report's training runs.

HTML is written with the standard library; the figure uses matplotlib, imported only when one is
drawn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gradcheck.tolerance import ratio, relative_errors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gradcheck.tolerance import Horizon


# What the views read of the results they show: `gradcheck.report.Report`,
# `gradcheck.check_backward.BackwardCheck`, and the `gradcheck.compare.Check`s of both. The
# results call the views (their ``_repr_html_`` and ``plot``), so the views name no result type:
# imports run one way.


class _Scored(Protocol):
    """A comparison as a row shows it: its error and the tolerance it was held to."""

    @property
    def error(self) -> float: ...
    @property
    def tolerance(self) -> float: ...


class _Result(Protocol):
    """What the HTML shows of a result: a `Report` or a `BackwardCheck`."""

    @property
    def ok(self) -> bool: ...
    def heading(self) -> list[str]: ...
    def verdict_lines(self) -> list[str]: ...
    def table(self) -> tuple[tuple[str, ...], Sequence[tuple[tuple[str, ...], _Scored | None]]]: ...


class _Run(Protocol):
    """What the figure shows of a `Report`: the training runs and their tolerances."""

    @property
    def reference(self) -> str: ...
    @property
    def reference_losses(self) -> np.ndarray | None: ...
    @property
    def losses(self) -> dict[str, np.ndarray]: ...
    @property
    def horizon(self) -> Horizon | None: ...
    def tolerance_of(self, backend: str, quantity: str) -> float | None: ...


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
    head = "".join(f"<th {cell}>{escape(h)}</th>" for h in (*header, "error / tolerance"))
    body = []
    for cells, share in rows:
        tds = "".join(f"<td {cell}>{escape(c)}</td>" for c in cells)
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
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<ul class="{css}" style="color:{colour}">{items}</ul>' if lines else ""


def html(result: _Result, css: str) -> str:
    """A result as a notebook shows it: its heading, its verdict with the reasons below it, and
    its table, each row ending with its error / tolerance bar — the rows beyond their tolerance
    first, worst first, then the rest in the result's order. ``css`` is the outer element's
    class."""
    header, table = result.table()
    rows = [(cells, None if c is None else ratio(c.error, c.tolerance)) for cells, c in table]
    failing = sorted((r for r in rows if r[1] is not None and r[1] > 1), key=lambda r: -(r[1] or 0))
    rows = failing + [r for r in rows if r not in failing]
    heading = ""
    if result.heading():
        first, *rest = result.heading()
        heading = f"<p><b>{escape(first)}</b><br>{'<br>'.join(map(escape, rest))}</p>"
    verdict, *reasons = result.verdict_lines()
    colour = OK_COLOUR if result.ok else FAIL_COLOUR
    return (
        f'<div class="{css}">{heading}'
        f'<p class="verdict" style="color:{colour}"><b>{escape(verdict)}</b></p>'
        f"{_lines('reasons', colour, reasons)}{_table(header, rows)}</div>"
    )


def report_figure(report: _Run) -> Figure:
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
