"""The documentation site as a reader's browser shows it, with the network off: every formula
of the derivation rendered, nothing requested from outside the site, no console errors.

Runs headless Chromium (Debian's ``chromium`` package) through Playwright; ``make test``
installs Chromium where it may (as root with apt-get), and elsewhere this test skips and says
how to install it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium for the browser test: apt-get install chromium"
)


def _open_offline(page_path: Path) -> dict:
    """Open a page of the built site in headless Chromium with the network off and MathJax's
    typesetting finished; what the page showed and what went wrong."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    seen: dict = {"outside": [], "errors": [], "failed": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(offline=True)

        def only_files(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                seen["outside"].append(route.request.url)
                route.abort()

        context.route("**/*", only_files)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
        page.on("pageerror", lambda error: seen["errors"].append(str(error)))
        page.on("requestfailed", lambda request: seen["failed"].append(request.url))
        page.goto(page_path.as_uri())
        try:
            page.wait_for_function("() => window.MathJax?.startup?.promise", timeout=15_000)
            page.evaluate("() => MathJax.startup.promise")  # the first typesetting, done
            seen["mathjax"] = True
        except PlaywrightTimeout:
            seen["mathjax"] = False
        seen["text"] = page.inner_text("article")
        seen["math"] = page.locator(".arithmatex").count()
        seen["unrendered"] = page.eval_on_selector_all(
            ".arithmatex", "all => all.filter(e => !e.querySelector('mjx-container svg')).length"
        )
        seen["tex_errors"] = page.locator("mjx-merror").count()
        seen["cut_off"] = page.eval_on_selector_all(
            "article pre > code", "all => all.filter(e => e.scrollWidth > e.clientWidth + 1).length"
        )
        seen["code_blocks"] = page.locator("article pre").count()
        seen["downloads"] = page.eval_on_selector_all(
            "a[href$='.ipynb']", "all => all.map(a => a.getAttribute('href'))"
        )
        page.screenshot(path=str(page_path.parent / "screenshot.png"), full_page=True)
        browser.close()
    return seen


def test_the_derivation_renders_every_formula_offline(site: Path):
    seen = _open_offline(site / "derivation" / "index.html")
    assert seen["mathjax"], "MathJax did not load"
    assert seen["math"] > 20  # the derivation's formulas, as arithmatex marked them
    assert seen["unrendered"] == 0
    assert seen["tex_errors"] == 0
    for delimiter in ("\\(", "\\)", "\\[", "\\]"):
        assert delimiter not in seen["text"]
    assert seen["outside"] == []  # fonts, scripts and styles all come with the site
    assert seen["failed"] == []
    assert seen["errors"] == []


def test_code_wider_than_the_column_wraps_rather_than_being_cut_off(site: Path):
    """Reading a report holds the report's full-width lines; none is cut off at the column."""
    seen = _open_offline(site / "reading-a-report" / "index.html")
    assert seen["code_blocks"] > 5
    assert seen["cut_off"] == 0


def test_the_notebook_page_shows_offline_with_its_figure(site: Path):
    seen = _open_offline(site / "notebook" / "index.html")
    assert seen["mathjax"], "MathJax did not load"
    for delimiter in ("\\(", "\\)", "\\[", "\\]", "$U[0"):
        assert delimiter not in seen["text"]
    assert seen["tex_errors"] == 0
    assert seen["outside"] == []
    assert seen["failed"] == []
    assert seen["errors"] == []
    assert any(href.endswith("notebook.ipynb") for href in seen["downloads"])  # to download
