"""The pytest plugin, run on the README's example test file the way a user runs it."""

from __future__ import annotations

from pathlib import Path

from helpers import NumpyDelegate

import gradcheck

README = Path(__file__).parent.parent / "README.md"


def _readme_example() -> str:
    """The README's example of a user's test file, so the example is what is tested."""
    section = README.read_text().split("### A pytest gate for your own kernels", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


USER_TESTS = _readme_example()


def test_fixture_runs_over_the_chosen_backends(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("--gradcheck-backends", "numpy")
    result.assert_outcomes(passed=2)


def test_a_backend_that_is_not_installed_is_skipped_with_the_reason(pytester):
    pytester.makeconftest(
        """
        import gradcheck.pytest_plugin as plugin
        plugin.available_backends = lambda: ["numpy"]  # as if no framework were installed
        """
    )
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-rs", "--gradcheck-backends", "numpy,keras")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*gradcheck backend 'keras': its framework is not installed*"])


def test_an_unknown_backend_is_a_usage_error(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("--gradcheck-backends", "torch")
    assert result.ret == 4  # pytest's usage error
    result.stderr.fnmatch_lines(["*--gradcheck-backends must name backends among*got 'torch'*"])


def test_every_backend_is_the_default(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    for name in gradcheck.available_backends():
        result.stdout.fnmatch_lines([f"*test_backends_train_the_notebook?{name}?*"])


def test_a_users_suite_runs_in_parallel_with_pytest_xdist(pytester):
    """The same file under ``pytest -n 2``: every worker collects the same parametrisations,
    and every test runs once."""
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "-v", "--gradcheck-backends", "numpy,numba")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*2 workers*"])
    for name in ("numpy", "numba"):
        result.stdout.fnmatch_lines([f"*PASSED*test_backends_train_the_notebook?{name}?*"])


RULE_TESTS = """
import jax
import jax.numpy as jnp
import numpy as np


def softplus_with(slope):
    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defjvp(lambda p, t: (softplus(p[0]), slope(p[0]) * t[0]))
    return softplus


def test_right(gradcheck_rule, gradcheck_dtype):
    x = np.linspace(-5, 5, 11).astype(gradcheck_dtype)
    gradcheck_rule(softplus_with(jax.nn.sigmoid), x, names=["x"])


def test_wrong(gradcheck_rule, gradcheck_dtype):
    x = np.linspace(-5, 5, 11).astype(gradcheck_dtype)
    gradcheck_rule(softplus_with(lambda x: 2 * jax.nn.sigmoid(x)), x, names=["x"])
"""


def test_the_rule_gate_fails_a_wrong_rule_with_its_findings(pytester):
    pytester.makepyfile(test_rules=RULE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        ["*vjp and jvp disagree*", "*FAIL vjp: input x*", "*why: dx is 2 × the finite differences*"]
    )


FAILING_KERNEL = """
import numpy as np
import gradcheck


def test_mine():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    gradcheck.check_backward(np.tanh, lambda u, x: 2 * u * (1 - np.tanh(x) ** 2), x, names=["x"])
"""


def test_a_failing_check_shows_the_users_line_and_the_message_not_gradchecks_source(pytester):
    pytester.makepyfile(test_mine=FAILING_KERNEL)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [">*gradcheck.check_backward(np.tanh*", "E*why: dx is 2 × the finite differences"]
    )
    assert "gradcheck/check_backward.py" not in result.stdout.str()
    lines = result.stdout.lines
    failure = lines[_index(lines, "= FAILURES =") : _index(lines, "short test summary info")]
    assert len(failure) < 15, "\n".join(failure)


def _index(lines: list[str], marker: str) -> int:
    return next(i for i, line in enumerate(lines) if marker in line)


#: A user's backend with the bias gradient of layer 1 averaged where it should be summed.
AVERAGED_BIAS = """
import numpy as np
import gradcheck


class Mine:
    name = "mine"

    def __init__(self):
        self.numpy = gradcheck.get_backend("numpy")

    def predict(self, net, params, X):
        return self.numpy.predict(net, params, X)

    def loss_and_grads(self, net, params, X, y):
        loss, grads = self.numpy.loss_and_grads(net, params, X, y)
        grads[0]["b"] = grads[0]["b"] / len(X)
        return loss, grads

    def train(self, net, params, X, y, steps, lr):
        return self.numpy.train(net, params, X, y, steps, lr)
"""


def test_a_failing_gate_says_why_in_a_screen(pytester):
    """gradcheck_verify's failure carries the report's verdict, what fits (why:) and the
    failing checks, within about 15 lines."""
    pytester.makepyfile(
        mine=AVERAGED_BIAS,
        test_user="""
        import gradcheck
        from mine import Mine


        def test_mine(gradcheck_verify):
            net = gradcheck.Network([3, 4, 1], activation=["tanh", "sigmoid"])
            X, y = gradcheck.datasets.seed_xor()
            gradcheck_verify(net, X, y, backends=["numpy", Mine()], steps=10, reference="numpy")
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: backends disagree on 3-4-1 tanh/sigmoid half_sse, bias, float64:",
            "E * mine disagrees with numpy and finite differences: gradient layer 1 b*",
            "E * why: mine's bias gradient on layer 1 is 1/4 × the reference's: averaged over "
            "the N = 4 samples instead of summed",
        ]
    )
    message = [line for line in result.stdout.lines if line.startswith("E ")]
    assert 3 <= len(message) <= 15


def test_a_long_failure_message_keeps_its_verdict_and_counts_the_rest():
    """A report with more failing checks than fit says how many more, and keeps every verdict
    and why: line."""

    class Doubled(NumpyDelegate):  # every gradient doubled: a failing check per parameter
        name = "doubled"

        def loss_and_grads(self, net, params, X, y):
            loss, grads = super().loss_and_grads(net, params, X, y)
            return loss, [{key: 2 * g for key, g in layer.items()} for layer in grads]

    net = gradcheck.Network([3, 4, 1], activation=["tanh", "sigmoid"])
    X, y = gradcheck.datasets.seed_xor()
    report = gradcheck.verify(net, X, y, backends=["numpy", Doubled()], steps=0)
    lines = report.failure_message(lines=4).splitlines()
    for said in report.verdict_lines()[1:]:
        assert said in lines
    shown = [line for line in lines if line.startswith("  doubled: ")]
    assert 0 < len(shown) < len(report.failures)
    more = len(report.failures) - len(shown)
    assert lines[-1] == f"  … {more} more failing checks in report.failures"


def test_every_fixture_is_listed_with_its_docstring(pytester):
    pytester.makepyfile(test_user="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    for fixture, said in [
        ("gradcheck_backend", "Each selected backend in turn"),
        ("gradcheck_verify", "fails the test, with the verdict"),
        ("gradcheck_rule", "when a JAX or TensorFlow rule disagrees"),
        ("gradcheck_dtype", "Each dtype in turn"),
        ("gradcheck_seed", "Each seed in turn"),
    ]:
        result.stdout.fnmatch_lines([f"{fixture} -- *", f"*{said}*"])


OWN_BENCHMARKS = Path(__file__).parent.parent / "docs" / "own-benchmarks.md"


def _not_an_xdist_worker(monkeypatch) -> None:
    """The user's own pytest run, not one of this suite's xdist workers: pytest-benchmark
    disables itself in a process that looks like a worker."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


def test_gradcheck_bench_times_a_users_loop_beside_the_builtin_backends(pytester, monkeypatch):
    """The docs page's test file, in a project of its own: its rows share one group with the
    built-in backends' on the same problem and dtype."""
    _not_an_xdist_worker(monkeypatch)
    page = OWN_BENCHMARKS.read_text()
    pytester.makepyfile(test_bench=page.split("```python\n", 1)[1].split("```", 1)[0])
    result = pytester.runpytest_subprocess(
        "--benchmark-only", "--benchmark-columns=median,rounds", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*benchmark 'notebook 3-4-1, 2000 steps a round, float64': 3 tests*",
            "test_training_loop[[]*[]]*5",
            "test_training_loop[[]*[]]*5",
            "test_training_loop[[]*[]]*5",
        ]
    )
    for name in ("numba", "mine", "numpy"):
        result.stdout.fnmatch_lines([f"test_training_loop[[]{name}[]]*"])


def test_gradcheck_bench_times_a_network_of_ones_own_and_refuses_bad_backends(
    pytester, monkeypatch
):
    """A network and data of one's own, in a group named after them; a missing part and an
    unknown backend refused before anything is timed."""
    _not_an_xdist_worker(monkeypatch)
    pytester.makepyfile(
        test_bench="""
        import pytest
        import gradcheck

        NET = gradcheck.Network([3, 4, 1], bias=False)
        X, Y = gradcheck.datasets.seed_xor()


        def test_own(gradcheck_bench):
            run = gradcheck_bench("numpy", net=NET, X=X, y=Y, params=NET.init(seed=0),
                                  steps=50, lr=1.0, rounds=2)
            assert len(run.losses) == 50


        def test_own_needs_every_part(gradcheck_bench):
            with pytest.raises(TypeError, match="missing params, steps, lr"):
                gradcheck_bench("numpy", net=NET, X=X, y=Y)


        def test_an_unknown_backend(gradcheck_bench):
            with pytest.raises(ValueError, match="backend must be one of .*; got 'torch'"):
                gradcheck_bench("torch", problem="notebook")
        """
    )
    result = pytester.runpytest_subprocess("--benchmark-only", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*benchmark '3-4-1 sigmoid/sigmoid half_sse, no bias, float64, 4 samples, "
            "50 steps a round'*"
        ]
    )
