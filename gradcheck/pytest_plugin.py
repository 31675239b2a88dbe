"""gradcheck's pytest plugin, registered through the ``pytest11`` entry point.

- ``--gradcheck-backends numpy,numba``: the backends the fixture runs over (default: every
  built-in backend).
- ``gradcheck_backend``: a test that takes it runs once per selected backend; a backend whose
  framework is not installed is skipped, with the reason.
- ``gradcheck_verify``: :func:`gradcheck.verify`, whose report is asserted before it returns.
"""

from __future__ import annotations

from typing import Any

import pytest

from gradcheck.backends import _BUILTIN, available_backends, get_backend


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck")
    group.addoption(
        "--gradcheck-backends",
        default=None,
        metavar="NAMES",
        help="comma-separated backends for the gradcheck_backend fixture "
        f"(default: all of {', '.join(_BUILTIN)})",
    )


def _selected(config: pytest.Config) -> list[str]:
    option = config.getoption("--gradcheck-backends")
    if option is None:
        return list(_BUILTIN)
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = [name for name in names if name not in _BUILTIN]
    if unknown or not names:
        raise pytest.UsageError(
            f"--gradcheck-backends must name backends among {', '.join(_BUILTIN)}; got {option!r}"
        )
    return names


def pytest_configure(config: pytest.Config) -> None:
    _selected(config)  # a bad --gradcheck-backends is a usage error before any collection


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gradcheck_backend" in metafunc.fixturenames:
        metafunc.parametrize("gradcheck_backend", _selected(metafunc.config), indirect=True)


@pytest.fixture
def gradcheck_backend(request: pytest.FixtureRequest) -> Any:
    """Each selected backend in turn; skipped where its framework is not installed."""
    name = request.param
    if name not in available_backends():
        pytest.skip(f"gradcheck backend {name!r}: its framework is not installed")
    return get_backend(name)


@pytest.fixture
def gradcheck_verify() -> Any:
    """``verify(...)`` that fails the test, with the verdict, when the backends disagree."""
    from gradcheck.verify import verify

    def run(*args: Any, **kwargs: Any) -> Any:
        report = verify(*args, **kwargs)
        report.assert_ok()
        return report

    return run
