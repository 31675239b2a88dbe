"""Results in a notebook: `Report._repr_html_`, `Report.plot` and `BackwardCheck._repr_html_`,
read back as a browser and a reader would — the HTML parsed, the figure's lines counted."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
from gallery import relu_backward, relu_forward
from mutants import all_mutants

import gradcheck
from gradcheck import check_backward
from gradcheck.adapters import from_cache

RELU = from_cache(relu_forward, relu_backward)


class Page(HTMLParser):
    """The text of every paragraph, list item and table row of an HTML fragment, and the bar
    widths of the rows."""

    def __init__(self, fragment: str):
        super().__init__()
        self.blocks: list[tuple[str, list[str]]] = []  # (tag, its text cells), in order
        self.row_classes: list[str] = []
        self.bars: list[str] = []
        self._open: list[str] = []
        self.feed(fragment)
        self.close()
        assert self._open == [], f"unclosed tags: {self._open}"

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("p", "li", "tr"):
            self.blocks.append((tag, []))
        if tag == "tr":
            self.row_classes.append(attributes.get("class") or "")
        if tag in ("td", "th"):
            self.blocks[-1][1].append("")
        if tag == "div" and "width" in (attributes.get("style") or ""):
            self.bars.append(attributes["style"])
        if tag not in ("br",):
            self._open.append(tag)

    def handle_endtag(self, tag):
        assert self._open[-1:] == [tag], f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()

    def handle_data(self, data):
        if not self.blocks:
            return
        cells = self.blocks[-1][1]
        if cells:
            cells[-1] += data
        else:
            cells.append(data)

    def rows(self) -> list[list[str]]:
        return [cells for tag, cells in self.blocks if tag == "tr"]

    def texts(self, tag: str) -> list[str]:
        return ["".join(cells) for t, cells in self.blocks if t == tag]


def _seed_problem():
    X, y = gradcheck.datasets.seed_xor()
    return gradcheck.Network([3, 4, 1]), X, y


@pytest.fixture(scope="module")
def agreeing():
    net, X, y = _seed_problem()
    return gradcheck.verify(net, X, y, steps=200, backends=["numpy", "numba", "jax"])


@pytest.fixture(scope="module")
def disagreeing():
    net, X, y = _seed_problem()
    bug = all_mutants()["missing bias gradient"]
    return gradcheck.verify(net, X, y, steps=200, backends=["numpy", bug, "jax"])


def test_the_html_of_an_agreeing_report_has_every_check_and_the_verdict_on_top(agreeing):
    page = Page(agreeing._repr_html_())
    header, *rows = page.rows()
    assert header[:5] == ["backend", "quantity", "where", "error", "tolerance"]
    assert len(rows) == len(agreeing.checks) + 1  # and the reference's row
    assert [r[1] for r in rows].count("(reference)") == 1
    verdict = page.texts("p")[1]
    assert verdict == f"all {len(agreeing.backends)} backends agree with the reference"
    # the rows in the report's order, each ratio error / tolerance (written out here)
    expected = [(name, None if check is None else check) for name, check in agreeing.rows()]
    for row, (name, check) in zip(rows, expected, strict=True):
        assert row[0] == name
        if check is not None:
            assert row[1:3] == [check.quantity, check.where]
            share = check.error / check.tolerance
            assert float(row[-1]) == pytest.approx(share, rel=0.05, abs=1e-9)
    assert set(page.row_classes[1:]) == {"ok", ""}


def test_the_html_of_a_disagreement_puts_failing_rows_first_worst_first(disagreeing):
    page = Page(disagreeing._repr_html_())
    rows = page.rows()[1:]
    failing = [c for c in disagreeing.checks if not c.ok]
    assert failing
    classes = page.row_classes[1:]
    assert classes[: len(failing)] == ["fail"] * len(failing)
    assert "fail" not in classes[len(failing) :]
    shares = [float(r[-1]) for r in rows[: len(failing)]]
    assert shares == sorted(shares, reverse=True)
    assert min(shares) > 1
    # the verdict, who is wrong and why, above the table
    verdict, *reasons = disagreeing.verdict_lines()
    assert page.texts("p")[1] == verdict
    assert page.texts("li") == reasons
    assert any(line.startswith("why: no_bias_grad's bias gradient") for line in reasons)
    # a failing row's bar is full and red, an agreeing row's shorter and green
    assert "width:100%" in page.bars[0]
    assert "#c62828" in page.bars[0]


def test_the_html_escapes_what_it_shows(agreeing):
    import dataclasses

    report = dataclasses.replace(agreeing, backends=["<b>numpy</b>", *agreeing.backends[1:]])
    html = report._repr_html_()
    assert "<b>numpy</b>" not in html
    assert "&lt;b&gt;numpy&lt;/b&gt;" in html
    Page(html)  # still well formed


def test_the_plot_has_every_loss_curve_and_every_error_with_its_tolerance(disagreeing):
    figure = disagreeing.plot()
    curves, errors = figure.axes
    compared = list(disagreeing.losses)
    assert len(curves.get_lines()) == 1 + len(compared)  # the reference's and each one's
    np.testing.assert_array_equal(curves.get_lines()[0].get_ydata(), disagreeing.reference_losses)
    assert errors.get_yscale() == "log"
    lines = errors.get_lines()
    solid = [line for line in lines if line.get_linestyle() == "-"]
    dashed = [line for line in lines if line.get_linestyle() == "--"]
    assert len(solid) == len(compared)
    tolerances = {disagreeing.tolerance_of(name, "train losses") for name in compared}
    assert {line.get_ydata()[0] for line in dashed} == tolerances
    # the mutant's training run leaves its tolerance; the correct ones stay below theirs
    for name, line in zip(compared, solid, strict=True):
        beyond = np.max(line.get_ydata()) > disagreeing.tolerance_of(name, "train losses")
        assert beyond == (name == "no_bias_grad")


def test_a_report_without_training_runs_cannot_be_plotted(agreeing):
    import dataclasses

    with pytest.raises(ValueError, match="no training runs"):
        dataclasses.replace(agreeing, reference_losses=None).plot()


def test_the_html_of_check_backward_shows_its_findings_worst_first():
    x = np.array([[0.3, -0.5, 0.8], [1.2, -0.1, 0.4]])

    def wrong(u, x):
        return 2 * relu_backward(u, x)

    result = check_backward(RELU[0], wrong, x, raise_exception=False)
    page = Page(result._repr_html_())
    assert page.texts("p") == [result.summary()]
    assert any(line.startswith("why: ") and "2 ×" in line for line in page.texts("li"))
    rows = page.rows()[1:]
    assert len(rows) == len(result.findings)
    shares = [float(r[-1]) for r in rows]
    assert shares == sorted(shares, reverse=True)
    assert page.row_classes[1] == "fail"

    correct = check_backward(*RELU, x)
    page = Page(correct._repr_html_())
    assert page.texts("p") == [correct.summary()]
    assert set(page.row_classes[1:]) == {"ok"}
