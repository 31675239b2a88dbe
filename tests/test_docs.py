"""The docs check what they say: each formula's block fails when the formula is broken, and the
API page shows the public functions.

The docs' blocks run as tests on their own (``pytest --markdown-docs``); here each is run again
with one formula broken — in the block's own transcription of it, or in the kernel it checks —
and must then fail with an AssertionError. A block that passed with its formula broken would be
checking nothing.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gradcheck.kernels import numpy_backprop as nb
from gradcheck.kernels import numpy_conv as nc
from gradcheck.layers import MaxPool2D

DOCS = Path(__file__).resolve().parent.parent / "docs"


def blocks(page: str) -> list[str]:
    """The runnable Python blocks of a docs page, in order."""
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)


def block_with(page: str, text: str) -> str:
    found = [block for block in blocks(page) if text in block]
    assert len(found) == 1, f"{len(found)} blocks of {page} contain {text!r}"
    return found[0]


# Wrong kernels, each a realistic bug in one formula.
def _tanh_prime_unsquared(z, a):
    return 1 - a


def _layer_grads_bias_averaged(a_prev, delta, bias):
    grads = {"W": a_prev.T @ delta}
    if bias:
        grads["b"] = delta.mean(axis=0)
    return grads


def _layer_grads_weights_scaled(a_prev, delta, bias):
    grads = {"W": a_prev.T @ delta * (1 + 1e-7)}
    if bias:
        grads["b"] = delta.sum(axis=0)
    return grads


def _hidden_delta_without_prime(delta, W, activation, z_prev, a_prev):
    return delta @ W.T


def _softmax_ce_naive(a, y):
    return (a - y) / y.shape[0]


def _mse_grad_without_two(a, y):
    return (a - y) / y.size


def _mse_grad_slightly_off(a, y):
    return 2 * (1 + 1e-7) * (a - y) / y.size


def _softmax_backward_elementwise(activation, z, a, grad_a):
    prime = a * (1 - a) if activation == "softmax" else nb.ACTIVATIONS[activation].prime(z, a)
    return grad_a * prime


def _max_pool_grad_spread(layer, a_prev, grad, right=nb.unweighted_grad):
    if isinstance(layer, MaxPool2D):  # δ spread over the window, as for an average
        return nc.avg_pool_grad(a_prev, grad, layer.pool_size, layer.stride)
    return right(layer, a_prev, grad)


@dataclass(frozen=True)
class Break:
    """One formula broken: ``text`` replaced by ``broken`` in the block of ``page`` that holds
    it, or, with ``kernel``, an attribute (``name`` or ``name[key]``) of the numpy kernels
    replaced while the block containing ``text`` runs."""

    page: str
    text: str
    broken: str = ""
    kernel: dict[str, object] = field(default_factory=dict)


BREAKS = {
    # derivation.md
    "f′ of tanh unsquared": Break(
        "derivation.md",
        "nb.ACTIVATIONS[name].prime(z, a)",
        kernel={"ACTIVATIONS[tanh]": nb.Activation(np.tanh, _tanh_prime_unsquared)},
    ),
    "the notebook's sigmoid_derivative": Break(
        "derivation.md", "    return x * (1 - x)", "    return x * (1 - x) + 1e-9"
    ),
    "layer_grads: bias averaged": Break(
        "derivation.md", "def loss_from", kernel={"layer_grads": _layer_grads_bias_averaged}
    ),
    "layer_grads: W off by 1e-7": Break(
        "derivation.md", "def loss_from", kernel={"layer_grads": _layer_grads_weights_scaled}
    ),
    "hidden_delta without f′": Break(
        "derivation.md", "def loss_from", kernel={"hidden_delta": _hidden_delta_without_prime}
    ),
    "vector-Jacobian product without f′": Break(
        "derivation.md",
        "jax.jacobian(lambda z",
        kernel={"hidden_delta": _hidden_delta_without_prime},
    ),
    "softmax Jacobian read element-wise": Break(
        "derivation.md", "np.diag(a) - np.outer(a, a)", "np.diag(a - a * a)"
    ),
    "table: softmax_ce as (a − y)/N": Break(
        "derivation.md",
        "return (a * y.sum(axis=1, keepdims=True) - y) / N",
        "return (a - y) / N",
    ),
    "table: softmax after mse read element-wise": Break(
        "derivation.md",
        "return a * (g[loss](a) - np.sum(g[loss](a) * a, axis=1, keepdims=True))",
        "return g[loss](a) * a * (1 - a)",
    ),
    "table: mse's g without the 2": Break(
        "derivation.md",
        '"mse": lambda a: 2 * (a - y) / (N * K)',
        '"mse": lambda a: (a - y) / (N * K)',
    ),
    "table: bce over N": Break("derivation.md", "return (a - y) / (N * K)", "return (a - y) / N"),
    "output_delta: softmax_ce naive": Break(
        "derivation.md",
        "def table(",
        kernel={"LOSSES[softmax_ce]": nb.LOSSES["softmax_ce"]._replace(delta=_softmax_ce_naive)},
    ),
    "output_delta: softmax Jacobian element-wise": Break(
        "derivation.md", "def table(", kernel={"activation_backward": _softmax_backward_elementwise}
    ),
    "mean vs sum: the ratio off by 1e-7": Break(
        "derivation.md",
        "jax_mean[layer][key] * N * K / 2",
        "jax_mean[layer][key] * N * K / 2 * (1 + 1e-7)",
    ),
    "mean vs sum: mse's gradient 2(1 + 1e-7)/NK": Break(
        "derivation.md",
        "jax_mean[layer][key] * N * K / 2",
        kernel={"LOSSES[mse]": nb.LOSSES["mse"]._replace(grad_a=_mse_grad_slightly_off)},
    ),
    "mean vs sum: bias averaged": Break(
        "derivation.md",
        "jax_mean[layer][key] * N * K / 2",
        kernel={"layer_grads": _layer_grads_bias_averaged},
    ),
    "biases: averaged over the batch": Break(
        "derivation.md",
        "fd = finite_diff.elementwise_gradient",
        kernel={"layer_grads": _layer_grads_bias_averaged},
    ),
    "biases: a dead unit": Break(
        "derivation.md",
        'params[0]["b"] = np.array([0.1, -0.2, 0.3, -0.1])',
        'params[0]["b"] = np.array([0.1, -0.2, 0.3, -9.0])',
    ),
    "worked pass: the output delta's sign": Break(
        "derivation.md", "delta2 = (a2 - y) * a2 * (1 - a2)", "delta2 = (y - a2) * a2 * (1 - a2)"
    ),
    "worked pass: the hidden delta without σ′": Break(
        "derivation.md", "delta1 = (delta2 @ W2.T) * a1 * (1 - a1)", "delta1 = delta2 @ W2.T"
    ),
    "cost: one-sided differences": Break(
        "derivation.md",
        "fd.append((loss(plus) - loss(minus)) / (2 * h))",
        "fd.append((loss(plus) - loss(params)) / h)",
    ),
    # notebook-reproduced.md
    "notebook: the text's sign": Break(
        "notebook-reproduced.md",
        "text = a2.T @ ((y - a3) * a3 * (1 - a3))",
        "text = a2.T @ ((a3 - y) * a3 * (1 - a3))",
    ),
    "notebook: the hidden chain without σ′": Break(
        "notebook-reproduced.md", "X.T @ ((delta3 @ w3.T) * a2 * (1 - a2))", "X.T @ (delta3 @ w3.T)"
    ),
    "notebook: the text's w² not transposed": Break(
        "notebook-reproduced.md", "w2_text = weights1.T", "w2_text = weights1.reshape(4, 3)"
    ),
    "notebook: mse with lr 1 is not the scratch run": Break(
        "notebook-reproduced.md",
        'trained("mse", False, "uniform", 2.0), scratch',
        'trained("mse", False, "uniform", 1.0), scratch',
    ),
    "notebook: the Keras cell's loss summed": Break(
        "notebook-reproduced.md",
        "self.loss = keras.losses.MeanSquaredError()",
        'self.loss = keras.losses.MeanSquaredError(reduction="sum")',
    ),
    "notebook: the mse rows' gradient 1/NK": Break(
        "notebook-reproduced.md",
        "rows = [",
        kernel={"LOSSES[mse]": nb.LOSSES["mse"]._replace(grad_a=_mse_grad_without_two)},
    ),
    # reading-a-report.md
    "report: the tolerance without √n": Break(
        "reading-a-report.md", "point = 16 * eps * math.sqrt(4) * 2", "point = 16 * eps * 2"
    ),
    "report: the scale without the terms of a − y": Break(
        "reading-a-report.md",
        "M = np.abs(a1).T @ ((np.abs(a2) + np.abs(y)) * np.abs(a2))",
        "M = np.abs(a1).T @ np.abs(delta2)",
    ),
    "report: the summed kernel's step not scaled": Break(
        "reading-a-report.md",
        "return self.numpy.train(net, params, X, y, steps, len(X) * lr)",
        "return self.numpy.train(net, params, X, y, steps, lr)",
    ),
    # own-kernel.md
    "own kernel: one dropped term only": Break(
        "own-kernel.md",
        "dropped = inv / D * (-du_hat.sum(1, keepdims=True) "
        "- xhat * (du_hat * xhat).sum(1, keepdims=True))",
        "dropped = inv / D * (-du_hat.sum(1, keepdims=True))",
    ),
    # reading-a-report.md, an optimizer's run
    "the measured tolerance without its safety factor": Break(
        "reading-a-report.md", "measured = 16 * report.sensitivity", "measured = report.sensitivity"
    ),
    # reading-a-report.md, a chaotic run: at a tenth of the step the run is stable to its end
    "a run that amplifies rounding taken for a stable one": Break(
        "reading-a-report.md",
        'backends=["numpy", "numba"], steps=2000, lr=0.5)',
        'backends=["numpy", "numba"], steps=2000, lr=0.05)',
    ),
    # convolution.md
    "the conv's bias left out": Break(
        "convolution.md", "* W[:, :, :, o]) + b[o], rtol", "* W[:, :, :, o]), rtol"
    ),
    "same padding split evenly the other way": Break(
        "convolution.md", "assert pads == ((1, 1), (0, 1))", "assert pads == ((1, 1), (1, 0))"
    ),
    "the input gradient's kernel not flipped": Break(
        "convolution.md",
        "flipped = W[::-1, ::-1].transpose(0, 1, 3, 2)",
        "flipped = W.transpose(0, 1, 3, 2)",
    ),
    "im2col's columns in another order": Break(
        "convolution.md",
        "x[0, 0:2, 0:3, :].ravel()",
        "x[0, 0:2, 0:3, :].transpose(1, 0, 2).ravel()",
    ),
    "a max-pool tie routed to the last maximum": Break(
        "convolution.md",
        "[[0, 0, 20.0, 0], [10.0, 0, 0, 0]]",
        "[[0, 0, 0, 0], [10.0, 0, 0, 20.0]]",
    ),
    "the whole CNN with max pooling's δ spread": Break(
        "convolution.md", "report.assert_ok()", kernel={"unweighted_grad": _max_pool_grad_spread}
    ),
    "pooling that keeps the size": Break(
        "convolution.md", "[(8, 8, 8), (4, 4, 8), (128,)", "[(8, 8, 8), (8, 8, 8), (512,)"
    ),
    # optimizers.md
    "Keras's ε is not scaled": Break(
        "optimizers.md",
        "eps * math.sqrt(1 - beta_2**t))",
        "eps * math.sqrt(1 - beta_2 ** (t + 1)))",
    ),
    "the conventions run alike": Break(
        "optimizers.md",
        'Adam(1e-3, epsilon_placement="paper")',
        'Adam(1e-3, epsilon_placement="keras")',
    ),
    "the first step's ε the wrong way round": Break(
        "optimizers.md",
        "(math.sqrt(v / (1 - beta_2)) + eps)",
        "(math.sqrt(v / (1 - beta_2)) + eps / math.sqrt(1 - beta_2))",
    ),
    "optax's RMSprop ε read as outside": Break(
        "optimizers.md", '["eps_in_sqrt"].default is True', '["eps_in_sqrt"].default is False'
    ),
    "Adam without the bias correction of m": Break(
        "optimizers.md", "/ (1 - 0.9**t)", "/ (1 - 0.9 ** (t + 1))"
    ),
    # recurrent.md
    "the SimpleRNN's definition without its bias": Break(
        "recurrent.md", "h = jnp.tanh(x_t @ W + h @ U + b)", "h = jnp.tanh(x_t @ W + h @ U)"
    ),
    "the LSTM's input and forget gates swapped": Break(
        "recurrent.md",
        "c = jax.nn.sigmoid(z_f) * c + jax.nn.sigmoid(z_i) * jnp.tanh(z_c)",
        "c = jax.nn.sigmoid(z_i) * c + jax.nn.sigmoid(z_f) * jnp.tanh(z_c)",
    ),
}


def _patch(monkeypatch: pytest.MonkeyPatch, target: str, value: object) -> None:
    match = re.fullmatch(r"(\w+)(?:\[(\w+)\])?", target)
    assert match is not None, target
    name, key = match.groups()
    if key is None:
        monkeypatch.setattr(nb, name, value)
    else:
        monkeypatch.setitem(getattr(nb, name), key, value)


def _run(source: str) -> None:
    exec(compile(source, "<docs block>", "exec"), {"__name__": "docs_block"})


@pytest.mark.parametrize("name", list(BREAKS))
def test_a_broken_formula_fails_its_block(name, monkeypatch):
    broken = BREAKS[name]
    # As written, the block passes: the docs' own run (`pytest --markdown-docs`, in make test)
    # shows it, so an AssertionError below is the break's.
    source = block_with(broken.page, broken.text)
    if broken.kernel:
        for target, value in broken.kernel.items():
            _patch(monkeypatch, target, value)
    else:
        assert source.count(broken.text) == 1, "the text to break must be unique in its block"
        source = source.replace(broken.text, broken.broken)
    with pytest.raises(AssertionError):
        _run(source)


def test_every_block_that_checks_a_formula_is_broken_once():
    """Each docs page's blocks that assert something are broken at least once above."""
    pages = (
        "derivation.md",
        "notebook-reproduced.md",
        "reading-a-report.md",
        "optimizers.md",
        "convolution.md",
        "recurrent.md",
    )
    for page in pages:
        broken = {block_with(b.page, b.text) for b in BREAKS.values() if b.page == page}
        unbroken = [b for b in blocks(page) if "assert" in b and b not in broken]
        assert len(unbroken) <= _UNBROKEN[page], (page, [b[:120] for b in unbroken])


# Blocks that assert what the run itself shows rather than a formula: the notebook's XOR and
# Keras-follows-numpy runs, the verify examples, the report's verdict, kink and divergence runs
# (test_verdicts, test_verify, test_keras and test_recurrent_layers break those behaviours).
_UNBROKEN = {
    "derivation.md": 0,
    "notebook-reproduced.md": 4,
    "reading-a-report.md": 3,
    "optimizers.md": 0,
    "convolution.md": 0,
    "recurrent.md": 1,
}


def _text(page: Path) -> str:
    return _text_of(page.read_text())


def test_api_page_shows_verify_and_check_backward(site):
    page = (site / "api" / "index.html").read_text()
    for identifier, first_line, arguments in [
        (
            "gradcheck.verify.verify",
            "Run every backend from the same params and compare each with the reference.",
            ("timing", "finite_differences", "reference"),
        ),
        (
            "gradcheck.check_backward.check_backward",
            "Check backward against finite differences of forward",
            ("wrt", "rtol", "raise_exception"),
        ),
    ]:
        assert f'id="{identifier}"' in page, identifier
        start = page.index(f'id="{identifier}"')
        section = _text_of(page[start : start + 40_000])
        assert first_line in section, identifier
        for argument in arguments:
            assert re.search(rf"\b{argument}\b", section), (identifier, argument)
    assert 'id="kernels.numpy_backprop.layer_grads"' in page


def _text_of(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment)))


def test_no_sphinx_roles_in_the_site(site):
    for page in site.rglob("*.html"):
        assert not re.search(r":(func|class|mod|meth|attr):`", _text(page)), page


def test_the_command_line_page_lists_every_option_of_the_parser(site):
    """The page is generated from `build_parser`: every option of every subcommand, with its
    choices and its help, appears on it."""
    import argparse

    from gradcheck.cli import build_parser

    page = _text(site / "cli" / "index.html")
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        assert f"gradcheck {name}" in page
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert flag in page, (name, flag)
            for choice in action.choices or ():
                assert str(choice) in page, (name, choice)
            if action.help and action.help != argparse.SUPPRESS:
                assert re.sub(r"\s+", " ", action.help) in page, (name, action.help)
    assert "Exit status: 0 when every backend agrees" in page


def test_the_notebook_ran_as_the_site_built_and_shows_its_outputs(site):
    """docs/notebook.ipynb is executed by the build (a failing cell fails it): its page has the
    report as a table, the loss curves as an image, and the bug's verdict and explanation."""
    page = (site / "notebook" / "index.html").read_text()
    text = _text_of(page)
    assert "Traceback" not in text
    assert "predictions after training: [0.0" in text  # the literal loop's printed output
    assert page.count('class="gradcheck-report"') == 2  # the agreeing report and the bug's
    assert "all 4 backends agree with the reference" in text
    assert "DISAGREE: sigmoid twice" in text
    assert "applied twice" in text  # the explanation
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', page)) == 1  # the figure


def test_the_benchmarks_page_times_the_verdict_of_every_catalogue_problem():
    """The time-to-verdict table has a row per catalogue problem, each with a time in both
    dtypes: a problem added to the catalogue and not timed there fails."""
    from gradcheck.problems import PROBLEMS

    section = (DOCS / "benchmarks.md").read_text().split("## Time to verdict")[1]
    table = section[section.index("| problem |") :].split("\n\n")[0].splitlines()[2:]
    assert len(table) == len(PROBLEMS)
    for row in table:
        assert re.fullmatch(r"\| .+ \| [\d.]+ s \| [\d.]+ s \|", row), row


def test_the_recorded_benchmark_times_every_backend_on_every_catalogue_problem(site):
    """docs/bench.json, the run the benchmarks page's table is made from, has a row for every
    built-in backend on every catalogue problem in both dtypes, and the floor on the notebook;
    the built page shows each problem's rows. A problem added to the catalogue and not recorded
    fails, as the stale chart of the past would have."""
    import json

    from gradcheck.backends import BUILTIN
    from gradcheck.benchmarks import FLOOR, PROBLEMS
    from gradcheck.network import DTYPES

    recorded = json.loads((DOCS / "bench.json").read_text())
    rows = {(r["problem"], r["dtype"], r["backend"]) for r in recorded["rows"]}
    wanted = {(p, d, b) for p in PROBLEMS for d in DTYPES for b in BUILTIN}
    assert wanted <= rows, sorted(wanted - rows)
    assert ("notebook", "float64", FLOOR) in rows
    page = _text(site / "benchmarks" / "index.html")
    for problem, dtype, backend in rows:
        assert f"{problem} {dtype} {backend}" in page, (problem, dtype, backend)


def test_the_picture_of_how_gradcheck_decides_names_what_the_code_has():
    """docs/decides.svg names modules and functions — the callers' modules, the core's steps,
    the explanation engine, the renderer. Each must exist, so the picture cannot outlive a
    rename; and the page must show it."""
    import importlib

    svg = (DOCS / "decides.svg").read_text()
    assert "(decides.svg)" in (DOCS / "how-gradcheck-decides.md").read_text()
    texts = re.findall(r'<text class="(\w+)"[^>]*>(.*?)</text>', svg)
    dotted = re.findall(r"\b(?:gradcheck|explain|display|finite_diff)\.\w+", svg)
    for name in dotted:
        module, attribute = name.rsplit(".", 1)
        path = module if module.startswith("gradcheck") else f"gradcheck.{module}"
        assert hasattr(importlib.import_module(path), attribute), name
    # the core's box: a line per step, each opening on the core's name for it
    start = next(i for i, (_, text) in enumerate(texts) if text.startswith("the core"))
    end = next(i for i, (css, _) in enumerate(texts) if i > start and css == "title")
    steps = [re.match(r"[\w.]+", text).group(0) for _, text in texts[start + 1 : end]]
    assert {"Directions.through", "Line", "differentiate", "judge", "compare", "Check"} <= set(
        steps
    )
    core = [importlib.import_module(f"gradcheck.{m}") for m in ("compare", "finite_diff")]
    for step in steps:  # the result row and its comparisons, then the oracle's steps
        found = None
        for module in core:
            found = module
            for part in step.split("."):
                found = getattr(found, part, None) if part in dir(found) else None
            if found is not None:
                break
        assert found is not None, step
    assert len(dotted) >= 5


# --- the README's first screen is what its examples print -----------------------------------------

README = DOCS.parent / "README.md"
#: The lines a newcomer reads before scrolling: a screen of the rendered README.
FIRST_SCREEN = 40


def test_the_readmes_first_screen_shows_what_its_examples_print(capsys):
    """The first screen holds the install line and, in "What it says", each call's failure as
    the README's own examples print it."""
    text = README.read_text()
    said = re.search(r"## What it says.*?```text\n(.*?)```", text, re.S)
    assert "pip install" in text[: said.start()]
    assert text[: said.end()].count("\n") <= FIRST_SCREEN
    examples = text.split("## Check a layer of your own", 1)[1].split("### A pytest gate", 1)[0]
    for block in re.findall(r"^```python\n(.*?)^```", examples, re.S | re.M):
        exec(block, {})
    printed = capsys.readouterr().out.splitlines()
    shown = [line for line in said.group(1).splitlines() if not line.startswith(">>>")]
    assert "  why: dWq is 2 × the finite differences" in shown
    assert any(line.startswith("why: mine's gradients") for line in shown)
    for line in shown:
        assert line in printed


def test_the_home_pages_first_block_is_what_its_example_prints(capsys):
    """The site's home page opens on what check_backward says of a slip, then the code that
    says it: each line shown is printed by that code."""
    text = (DOCS / "index.md").read_text()
    shown = re.search(r"```text\n(.*?)```", text, re.S)
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert shown.start() < code.start()
    exec(code.group(1), {})
    printed = capsys.readouterr().out.splitlines()
    lines = shown.group(1).splitlines()
    assert any(line.startswith("  FAIL input Wq") for line in lines)
    assert "  why: dWq is 2 × the finite differences" in lines
    for line in lines:
        assert line in printed


# --- the user guide says what the code has ------------------------------------------------------

GUIDE = DOCS / "guide.md"


def test_the_guide_shows_verifys_whole_signature():
    """The signature the user guide lists is verify's, every parameter in order."""
    import inspect

    from gradcheck import verify

    listed = re.search(r"`verify\((.*?)\)` runs", GUIDE.read_text(), re.S).group(1)
    names = [part.split("=")[0].strip() for part in listed.replace("\n", " ").split(",")]
    assert names == list(inspect.signature(verify).parameters)


def test_the_guide_lists_every_extra_and_every_core_dependency():
    """The extras a user installs (those ``all`` gathers) and the core's dependencies are
    pyproject's, named in the user guide's install paragraph."""
    import tomllib

    project = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]
    section = GUIDE.read_text().split("To install into an environment of your own", 1)[1]
    paragraph = section.split("\n\n", 1)[0]
    [gathered] = project["optional-dependencies"]["all"]  # gradcheck[jax,numba,…]: a user's
    for extra in re.search(r"\[(.*)\]", gathered).group(1).split(","):
        assert f"`{extra}`" in paragraph, extra
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_-]+", requirement).group(0)
        assert re.search(rf"\b{name}\b", paragraph, re.I), name


def test_the_api_page_shows_headings_signatures_and_only_public_names(site):
    """Each public function under a heading with its signature, the kernels under the path
    they are imported by, and of each module only the names in its ``__all__``."""
    import importlib

    page = (site / "api" / "index.html").read_text()
    text = _text_of(page)
    for identifier, signature in [
        ("gradcheck.verify.verify", "verify( net, X, y, params=None"),
        ("gradcheck.check_backward.check_backward", "check_backward( forward, backward, *inputs"),
        ("gradcheck.check_backward.check_jvp", "check_jvp( forward, jvp, *inputs"),
        ("gradcheck.rules.check_rule", "check_rule( f, *inputs"),
    ]:
        assert re.search(rf'<h2[^>]*id="{re.escape(identifier)}"', page), identifier
        assert re.sub(r"\s+", "", signature) in re.sub(r"\s+", "", text), signature
    assert "gradcheck.kernels.numpy_backprop" in text
    assert "gradcheck.kernels.numpy_conv" in text
    for module in ("explain", "optimizers", "layers", "adapters", "ops", "datasets",
                   "tolerance", "finite_diff"):  # fmt: skip
        public = set(importlib.import_module(f"gradcheck.{module}").__all__)
        shown = set(re.findall(rf'id="gradcheck\.{module}\.(\w+)"', page))
        assert shown, module
        assert shown <= public, (module, sorted(shown - public))


def test_relative_error_is_defined_once_before_the_tolerances_that_use_it():
    """Reading a report says what an error is relative to before the tolerance and the
    optimizer's run; the derivation links that definition rather than giving its own."""
    report = (DOCS / "reading-a-report.md").read_text()
    headings = re.findall(r"^#{2,3} (.*)$", report, re.M)
    order = ["Relative to what", "The tolerance", "A run with an optimizer"]
    assert [h for h in headings if h in order] == order
    assert "(reading-a-report.md#relative-to-what)" in (DOCS / "derivation.md").read_text()
